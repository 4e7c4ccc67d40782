/*
 * cmd_job.c - `celine job run|status|verify|merge`: corpus jobs from the
 * command line. `run` builds a job spec from --config FILE (JSON) and one
 * option per spec key (--chunk-tokens for "chunk_tokens", generated from the
 * key table, so the CLI, config files and the server's POST /v1/jobs accept
 * the same keys), runs it with a progress bar on a terminal or JSON progress
 * lines otherwise, stops cleanly on SIGINT/SIGTERM (the checkpoint keeps
 * what is done; the same command continues), and prints a JSON summary.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "celine/job.h"
#include "cli.h"

static const char *const run_usage =
    "Usage: celine job run (--config FILE | --kind mind|rephrase|crossthink) --input PATH... --output DIR\n"
    "                      [--backend local --model PATH | --backend URL[,URL...]] [options]\n\n"
    "Runs a MIND, rephrase or CrossThink job over a corpus: .jsonl and .jsonl.zst inputs (files, folders,\n"
    "globs; --id-field / --text-field choose the fields) stream through the pipeline into zstd shards\n"
    "in DIR (shard-NNNNN.jsonl.zst, rotated by --shard-records / --shard-bytes) with manifest.json,\n"
    "input_errors.jsonl (bad lines and corrupt shards, with file and line; they are skipped) and\n"
    "state.json, the checkpoint. Kill the job at any moment and run the same command again: it goes on\n"
    "from its last checkpoint, and the output holds every record once, byte-identical to an\n"
    "uninterrupted run when generation is deterministic. A changed configuration is refused\n"
    "(--restart starts over). --shard I/N processes one of N disjoint parts (DIR/part-I-of-N);\n"
    "`celine job verify DIR` checks that the parts cover the input, `celine job merge DIR` writes the\n"
    "job's manifest. --config FILE holds the same keys as JSON ({\"kind\": \"mind\", \"chunk_tokens\": 500,\n"
    "...}); options given on the command line override it. Progress: a bar on a terminal, JSON lines\n"
    "on stderr otherwise. Prints a JSON summary on stdout. Exit status: 0 done, 3 done but some\n"
    "generation requests failed, 4 stopped by a signal (run again to continue), 1 error, 2 usage.";

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    g_stop = 1;
    signal(sig, SIG_DFL); /* a second signal ends the process at once */
}
static bool job_cancelled(void *ud)
{
    (void)ud;
    return g_stop != 0;
}

typedef struct progress_out {
    bool bar;
    bool quiet;
    bool drawn;
} progress_out;

static void fmt_duration(double s, char *out, size_t cap)
{
    if (s < 0) snprintf(out, cap, "?");
    else if (s < 60) snprintf(out, cap, "%.0fs", s);
    else if (s < 3600) snprintf(out, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(out, cap, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

static void on_progress(void *ud, const cel_job_progress *p)
{
    progress_out *po = ud;
    if (po->quiet) return;
    if (po->bar) {
        double f = p->input_bytes_total ? (double)p->input_bytes_done / (double)p->input_bytes_total : 1.0;
        if (f > 1) f = 1;
        char bar[31];
        int k = (int)(f * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < k ? '#' : '.';
        bar[30] = 0;
        char eta[32];
        fmt_duration(p->eta_s, eta, sizeof eta);
        uint64_t drops = 0;
        for (int i = 0; i < CEL_DROP__COUNT; i++) drops += p->c.dropped[i];
        fprintf(stderr, "\r[%s] %5.1f%%  %llu docs  %llu records  %llu dropped  %.1f docs/s  %.0f tok/s  ETA %s   ", bar,
                100 * f, (unsigned long long)p->docs_done, (unsigned long long)p->c.records, (unsigned long long)drops,
                p->docs_per_s, p->gen_tokens_per_s, eta);
        if (p->final) fputc('\n', stderr);
        po->drawn = !p->final;
    } else {
        cel_buf b;
        cel_buf_init(&b);
        if (cel_job_progress_json(p, &b) == CEL_OK) fprintf(stderr, "%s\n", b.data);
        cel_buf_free(&b);
    }
    fflush(stderr);
}

/* The templates shipped with celine: $CELINE_TEMPLATES, else the source tree's. */
static const char *shipped_templates(void)
{
    const char *dir = getenv("CELINE_TEMPLATES");
#ifdef CELINE_SOURCE_DIR
    if (!dir || !*dir) dir = cel_path_is_dir(CELINE_SOURCE_DIR "/templates") ? CELINE_SOURCE_DIR "/templates" : NULL;
#endif
    return dir && *dir ? dir : NULL;
}

/* One CLI option per spec key: values are kept as text and set afterwards. */
typedef struct key_opt {
    const cel_job_key *k;
    const char *text;     /* STR / INT / NUM / comma lists */
    cel_cli_list list;    /* input, templates (repeatable) */
    bool yes, no;         /* BOOL: --name / --no-name */
    char name[64], no_name[72];
} key_opt;

static int job_run(int argc, char **argv);
static int job_status(int argc, char **argv);
static int job_verify(int argc, char **argv);
static int job_merge(int argc, char **argv);

static const cel_cli_cmd run_cmd = {"job run", "run or resume a corpus job", NULL, job_run};

static int job_run(int argc, char **argv)
{
    cel_cli_cmd cmd = run_cmd;
    cmd.usage = run_usage;
    size_t nk = cel_job_key_count();
    key_opt *ko = calloc(nk, sizeof *ko);
    cel_cli_opt *opts = calloc(2 * nk + 8, sizeof *opts);
    if (!ko || !opts) {
        free(ko);
        free(opts);
        return cel_cli_fail("job", "out of memory");
    }
    const char *config = NULL, *progress = "auto";
    double interval = 0;
    bool quiet = false;
    size_t n = 0;
    opts[n++] = (cel_cli_opt){"config", CEL_OPT_STR, &config, "FILE", "job spec as JSON (the keys below)"};
    for (size_t i = 0; i < nk; i++) {
        const cel_job_key *k = cel_job_key_at(i);
        key_opt *o = &ko[i];
        o->k = k;
        snprintf(o->name, sizeof o->name, "%s", k->name);
        for (char *c = o->name; *c; c++)
            if (*c == '_') *c = '-';
        if (k->type == CEL_JOBKEY_BOOL) {
            snprintf(o->no_name, sizeof o->no_name, "no-%s", o->name);
            opts[n++] = (cel_cli_opt){o->name, CEL_OPT_FLAG, &o->yes, NULL, k->help};
            opts[n++] = (cel_cli_opt){o->no_name, CEL_OPT_FLAG, &o->no, NULL, "(the opposite)"};
        } else if (k->type == CEL_JOBKEY_LIST && (!strcmp(k->name, "input") || !strcmp(k->name, "templates"))) {
            opts[n++] = (cel_cli_opt){o->name, CEL_OPT_LIST, &o->list, k->metavar, k->help};
        } else {
            opts[n++] = (cel_cli_opt){o->name, CEL_OPT_STR, &o->text, k->metavar, k->help};
        }
    }
    opts[n++] = (cel_cli_opt){"progress", CEL_OPT_STR, &progress, "auto|bar|json|none",
                              "progress on stderr: a bar on a terminal (auto), JSON lines otherwise"};
    opts[n++] = (cel_cli_opt){"progress-interval", CEL_OPT_DOUBLE, &interval, "S",
                              "seconds between progress updates (bar 0.5, JSON 10)"};
    opts[n++] = (cel_cli_opt){"quiet", CEL_OPT_FLAG, &quiet, NULL, "no progress, no warnings"};
    int exit_code = 1;
    int rc = cel_cli_parse(&cmd, argc, argv, opts, n, NULL, 0, NULL);
    if (rc) {
        free(ko);
        free(opts);
        return cel_cli_exit(rc);
    }
    cel_error err;
    cel_error_clear(&err);
    cel_job_spec *spec = NULL;
    char *text = NULL;
    if (cel_job_spec_create(&spec, &err)) goto fail;
    if (config) {
        size_t len;
        if (cel_read_file(config, 16u << 20, &text, &len, &err) ||
            cel_job_spec_merge_json(spec, text, len, ~0u, config, &err))
            goto fail;
    }
    for (size_t i = 0; i < nk; i++) {
        key_opt *o = &ko[i];
        if (o->yes && o->no) {
            cel_cli_fail("job", "--%s and --%s contradict each other", o->name, o->no_name);
            exit_code = 2;
            goto done;
        }
        cel_status st = CEL_OK;
        if (o->yes || o->no) st = cel_job_spec_set(spec, o->k->name, o->yes ? "true" : "false", &err);
        else if (o->text) st = cel_job_spec_set(spec, o->k->name, o->text, &err);
        for (size_t j = 0; j < o->list.n && !st; j++) st = cel_job_spec_set(spec, o->k->name, o->list.items[j], &err);
        if (st) {
            cel_cli_fail("job", "%s", err.msg);
            exit_code = 2;
            goto done;
        }
    }
    if (!cel_job_spec_str(spec, "api_key")) {
        const char *k = getenv("CELINE_API_KEY");
        if (!k || !*k) k = getenv("OPENAI_API_KEY");
        if (k && *k && cel_job_spec_set(spec, "api_key", k, &err)) goto fail;
    }
    if (cel_job_spec_validate(spec, &err)) {
        cel_cli_fail("job", "%s", err.msg);
        exit_code = 2;
        goto done;
    }

    progress_out po = {false, quiet, false};
    if (!strcmp(progress, "auto")) po.bar = isatty(STDERR_FILENO);
    else if (!strcmp(progress, "bar")) po.bar = true;
    else if (!strcmp(progress, "none")) po.quiet = true;
    else if (strcmp(progress, "json") != 0) {
        cel_cli_fail("job", "--progress must be auto, bar, json or none");
        exit_code = 2;
        goto done;
    }
    cel_job_hooks hooks = {on_progress, interval > 0 ? interval : po.bar ? 0.5 : 10.0, job_cancelled, &po};
    cel_job_env env = {shipped_templates(), NULL, NULL, NULL, {NULL, NULL, CEL_LOG_WARN}};
    if (!quiet) env.log = (cel_logger){cel_cli_stderr_log, NULL, CEL_LOG_WARN};
    g_stop = 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    cel_job_result res;
    cel_status st = cel_job_run_spec(spec, &env, &hooks, &res, &err);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (po.drawn) fputc('\n', stderr);
    if (st) goto fail;
    cel_buf b;
    cel_buf_init(&b);
    cel_job_result_json(&res, &b);
    printf("%s\n", b.data ? b.data : "{}");
    fflush(stdout);
    cel_buf_free(&b);
    exit_code = !res.done ? 4 : res.c.dropped[CEL_DROP_GEN_ERROR] > 0 ? 3 : 0;
    if (!res.done && !quiet)
        fprintf(stderr, "celine job: stopped; the checkpoint in %s keeps what is done: run the same command to continue\n",
                res.dir);
    goto done;
fail:
    cel_cli_fail("job", "%s", err.msg[0] ? err.msg : cel_status_name(err.code));
    exit_code = 1;
done:
    cel_job_spec_free(spec);
    free(text);
    free(ko);
    free(opts);
    return exit_code;
}

/* ------------------------------------------------------- status, verify, merge */

static int dir_command(const char *name, const char *usage, int argc, char **argv, int which)
{
    cel_cli_cmd cmd = {name, NULL, usage, NULL};
    bool deep = false;
    const cel_cli_opt opts[] = {{"deep", CEL_OPT_FLAG, &deep, NULL, "decode every frame and count its records"}};
    const char *pos[1];
    size_t npos = 0;
    int rc = cel_cli_parse(&cmd, argc, argv, opts, which == 0 ? 0 : 1, pos, 1, &npos);
    if (rc) return cel_cli_exit(rc);
    if (npos != 1) {
        fprintf(stderr, "%s\n", usage);
        return 2;
    }
    cel_buf out;
    cel_buf_init(&out);
    cel_error err;
    cel_error_clear(&err);
    cel_status st = which == 0   ? cel_job_status(pos[0], &out, &err)
                    : which == 1 ? cel_job_verify(pos[0], deep, &out, &err)
                                 : cel_job_merge(pos[0], deep, &out, &err);
    if (st == CEL_OK) printf("%s\n", out.data ? out.data : "{}");
    cel_buf_free(&out);
    if (st) return cel_cli_fail("job", "%s", err.msg);
    return 0;
}

static int job_status(int argc, char **argv)
{
    return dir_command("job status", "Usage: celine job status DIR\n\nPrints the state of the job in DIR (or of "
                                     "each of its parts) as JSON: position, counters, checkpoints.", argc, argv, 0);
}
static int job_verify(int argc, char **argv)
{
    return dir_command("job verify", "Usage: celine job verify DIR [--deep]\n\nChecks a finished job: every part "
                                     "present and finished, one configuration, the parts together covering every "
                                     "input line once, each shard as long as recorded (--deep: every frame decodes "
                                     "to the recorded records). Exit 0 when it holds.", argc, argv, 1);
}
static int job_merge(int argc, char **argv)
{
    return dir_command("job merge", "Usage: celine job merge DIR [--deep]\n\nVerifies the parts of DIR, then writes "
                                    "DIR/manifest.json: totals and every shard's path.", argc, argv, 2);
}

static int run_job(int argc, char **argv);

const cel_cli_cmd cel_cli_cmd_job = {
    "job",
    "corpus jobs: streaming shards, exact resume, --shard I/N, remote backends (run|status|verify|merge)",
    "Usage: celine job run|status|verify|merge ...\n\n"
    "  run     run or resume a MIND / rephrase / CrossThink job over .jsonl(.zst) shards\n"
    "  status  the state of a job folder (JSON)\n"
    "  verify  check a finished job, or that the parts of a --shard I/N job cover the input once\n"
    "  merge   verify, then write the manifest of the whole job\n\n"
    "`celine job <sub> --help` explains each.",
    run_job,
};

static int run_job(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        printf("%s\n", cel_cli_cmd_job.usage);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "run")) return job_run(argc - 1, argv + 1);
    if (!strcmp(sub, "status")) return job_status(argc - 1, argv + 1);
    if (!strcmp(sub, "verify")) return job_verify(argc - 1, argv + 1);
    if (!strcmp(sub, "merge")) return job_merge(argc - 1, argv + 1);
    return cel_cli_usage("job", "unknown subcommand '%s' (run, status, verify, merge)", sub);
}
