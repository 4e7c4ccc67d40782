/*
 * `celine reward`: grade RL rollouts. JSON Lines in, JSON Lines out, in
 * input order. Each input line is an object with `id`, `task` (math | mcq |
 * open | auto), `response`, `reference`, optional `choices` (option texts;
 * the reference is then the gold letter) and optional `group`. Each output
 * line carries `id`, `reward`, `correct`, `format_ok`, `extracted`,
 * `reason` (plus `task`, `source`, `f1` for open answers) and `advantage`
 * when the item has a group. A bad line gives an error record for that line
 * and the run goes on; the exit status is 1 when any line failed.
 *
 * Lines are read in blocks; each block is parsed, graded and serialized on
 * the thread pool (JSON work dominates, so it is parallel too) and written
 * in order. With advantages on, a group's samples may be anywhere in the
 * input, so each line's serialized result, reward and group are kept until
 * the end (a few hundred bytes per line); with --advantage none memory stays
 * flat on any input size.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/verify.h"
#include "cli.h"

static const cel_cli_cmd *self(void);

#define MAX_LINE ((size_t)64 << 20)
#define BLOCK 4096

/* One input line and, once processed, its result. */
typedef struct row {
    char *line;       /* the raw line (freed once processed) */
    size_t len, lineno;
    bool too_long;
    char *out;        /* the serialized result without advantage (malloc'ed) */
    char *group;      /* copy of the group key, or NULL */
    double reward;
    bool failed, correct;
} row;

/* Reads one line into b (without the newline). Lines over MAX_LINE are
 * drained and reported as too long. Returns false at end of input. */
static bool read_line(FILE *f, cel_buf *b, bool *too_long)
{
    cel_buf_reset(b);
    *too_long = false;
    char chunk[65536];
    bool any = false;
    while (fgets(chunk, sizeof chunk, f)) {
        any = true;
        size_t n = strlen(chunk);
        bool nl = n && chunk[n - 1] == '\n';
        if (nl) n--;
        if (!*too_long) {
            if (b->len + n > MAX_LINE) *too_long = true;
            else if (cel_buf_append(b, chunk, n) != CEL_OK) *too_long = true;
        }
        if (nl) return true;
    }
    return any;
}

static char *num_text(json_t *v)
{
    char tmp[64];
    if (json_is_integer(v)) snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
    else snprintf(tmp, sizeof tmp, "%.17g", json_real_value(v));
    return strdup(tmp);
}

typedef struct {
    const cel_verifier *v;
    cel_task default_task;
    bool keep_groups;
    row *rows;
} job;

/* The error record of a line that could not be graded. */
static json_t *error_record(json_t *id, size_t lineno, const char *msg)
{
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set(o, "id", id ? id : json_null());
    json_object_set_new(o, "line", json_integer((json_int_t)lineno));
    json_object_set_new(o, "reward", json_real(0.0));
    json_object_set_new(o, "correct", json_false());
    json_object_set_new(o, "format_ok", json_false());
    json_object_set_new(o, "extracted", json_null());
    json_object_set_new(o, "reason", json_string("error"));
    char full[640];
    snprintf(full, sizeof full, "line %zu: %s", lineno, msg);
    json_object_set_new(o, "error", json_string(full));
    return o;
}

/* Parses, grades and serializes one line (runs on a pool thread; touches
 * only its own row). */
static void process_row(const job *j, row *r)
{
    json_t *obj = NULL, *out = NULL, *id = NULL;
    const char **choices = NULL;
    char *ref_buf = NULL, *group_buf = NULL;
    const char *err = NULL;
    char errbuf[400];
    cel_verify_item it;
    memset(&it, 0, sizeof it);
    it.task = j->default_task;
    if (r->too_long) {
        err = "longer than the line limit";
        goto done;
    }
    json_error_t je;
    obj = json_loadb(r->line, r->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!obj) {
        snprintf(errbuf, sizeof errbuf, "invalid JSON at column %d: %s", je.column, je.text);
        err = errbuf;
        goto done;
    }
    if (!json_is_object(obj)) {
        err = "expected a JSON object";
        goto done;
    }
    id = json_object_get(obj, "id");
    json_t *task = json_object_get(obj, "task"), *resp = json_object_get(obj, "response");
    json_t *ref = json_object_get(obj, "reference"), *ch = json_object_get(obj, "choices");
    json_t *group = json_object_get(obj, "group");
    if (task && !json_is_null(task) && (!json_is_string(task) || !cel_task_parse(json_string_value(task), &it.task))) {
        err = "\"task\" must be \"math\", \"mcq\", \"open\" or \"auto\"";
        goto done;
    }
    if (!json_is_string(resp)) {
        err = "\"response\" is missing or not a string";
        goto done;
    }
    it.response = json_string_value(resp);
    it.response_len = json_string_length(resp);
    if (json_is_string(ref)) {
        it.reference = json_string_value(ref);
    } else if (json_is_number(ref)) {
        it.reference = ref_buf = num_text(ref);
    } else {
        err = "\"reference\" is missing or not a string";
        goto done;
    }
    if (ch && !json_is_null(ch)) {
        size_t n = json_is_array(ch) ? json_array_size(ch) : 0;
        if (!json_is_array(ch) || n > 26) {
            err = "\"choices\" must be an array of at most 26 strings";
            goto done;
        }
        choices = calloc(n ? n : 1, sizeof *choices);
        if (!choices) {
            err = "out of memory";
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *c = json_array_get(ch, i);
            if (!json_is_string(c)) {
                err = "\"choices\" must hold strings";
                goto done;
            }
            choices[i] = json_string_value(c);
        }
        it.choices = choices, it.n_choices = n;
    }
    if (group && !json_is_null(group)) {
        if (json_is_string(group)) it.group = json_string_value(group);
        else if (json_is_number(group)) it.group = group_buf = num_text(group);
        else {
            err = "\"group\" must be a string or a number";
            goto done;
        }
    }
    if (json_is_string(id)) it.id = json_string_value(id);
    cel_verify_result res;
    cel_error e;
    cel_error_clear(&e);
    if (cel_verify_grade(j->v, &it, &res, &e) != CEL_OK) {
        snprintf(errbuf, sizeof errbuf, "%.380s", e.msg);
        err = errbuf;
        goto done;
    }
    out = json_object();
    if (!out) {
        err = "out of memory";
        goto done;
    }
    json_object_set(out, "id", id ? id : json_null());
    json_object_set_new(out, "reward", json_real(res.reward));
    json_object_set_new(out, "correct", json_boolean(res.correct));
    json_object_set_new(out, "format_ok", json_boolean(res.format_ok));
    json_object_set_new(out, "extracted", res.has_extracted ? json_string(res.extracted) : json_null());
    json_object_set_new(out, "reason", json_string(res.reason));
    json_object_set_new(out, "task", json_string(cel_task_name(res.task)));
    json_object_set_new(out, "source", json_string(cel_extract_source_name(res.source)));
    if (res.task == CEL_TASK_OPEN) json_object_set_new(out, "f1", json_real(res.f1));
    r->reward = res.reward;
    r->correct = res.correct;
    if (it.group && j->keep_groups) r->group = strdup(it.group);
done:
    if (err) {
        r->failed = true;
        json_decref(out);
        out = error_record(id, r->lineno, err);
    }
    r->out = out ? json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
    if (!r->out) r->failed = true;
    json_decref(out);
    json_decref(obj);
    free(choices);
    free(ref_buf);
    free(group_buf);
    free(r->line);
    r->line = NULL;
}

static void work(void *ctx, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const job *j = ctx;
    for (int64_t i = b; i < e; i++) process_row(j, &j->rows[i]);
}

/* A JSON number as jansson writes reals (always with '.' or an exponent). */
static void put_real(FILE *out, double x)
{
    char tmp[48];
    snprintf(tmp, sizeof tmp, "%.10g", x);
    if (!strpbrk(tmp, ".eEn")) strcat(tmp, ".0");
    fputs(tmp, out);
}

/* Writes a row, with ,"advantage":X spliced before its closing brace. */
static int write_row(FILE *out, const row *r, bool with_adv, double adv)
{
    if (!r->out) return fputs("{\"reward\":0.0,\"correct\":false,\"reason\":\"error\"}\n", out) < 0 ? -1 : 0;
    size_t n = strlen(r->out);
    if (with_adv && n > 0 && r->out[n - 1] == '}') {
        fwrite(r->out, 1, n - 1, out);
        fputs(",\"advantage\":", out);
        put_real(out, adv);
        fputc('}', out);
    } else {
        fwrite(r->out, 1, n, out);
    }
    return fputc('\n', out) == EOF ? -1 : 0;
}

/* Dense ids for group strings (equal strings, one id); rows without a group
 * or that failed get ids of their own and are left out of advantages. */
static int group_ids(const row *rows, size_t n, uint64_t *ids)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    size_t *slot = calloc(cap, sizeof *slot);
    if (!slot) return -1;
    uint64_t next = 0;
    for (size_t i = 0; i < n; i++) {
        const char *g = rows[i].group;
        if (!g || rows[i].failed) {
            ids[i] = next++;
            continue;
        }
        size_t h = (size_t)cel_hash64(g, strlen(g), 0x51) & (cap - 1);
        for (;;) {
            if (!slot[h]) {
                slot[h] = i + 1;
                ids[i] = next++;
                break;
            }
            if (strcmp(rows[slot[h] - 1].group, g) == 0) {
                ids[i] = ids[slot[h] - 1];
                break;
            }
            h = (h + 1) & (cap - 1);
        }
    }
    free(slot);
    return 0;
}

static int run(int argc, char **argv)
{
    const char *input = NULL, *output = NULL, *adv = "grpo", *format = "none", *task_s = "auto";
    int64_t threads = 1, max_bytes = 0, budget = 0, seed = -1;
    double rel_tol = -1, abs_tol = -1, r_ok = 1, r_ok_bad = 0, r_wrong = 0, r_wrong_good = 0;
    bool whiten = false, no_fallback = false, stats = false, format_both = false;
    const cel_cli_opt opts[] = {
        {"input", CEL_OPT_STR, &input, "PATH", "JSON Lines to grade ('-' or absent: stdin)"},
        {"output", CEL_OPT_STR, &output, "PATH", "where to write the results ('-' or absent: stdout)"},
        {"advantage", CEL_OPT_STR, &adv, "MODE", "group advantages: grpo (default), dr_grpo, rloo or none"},
        {"whiten", CEL_OPT_FLAG, &whiten, NULL, "normalise the advantages over the whole batch"},
        {"format", CEL_OPT_STR, &format, "LIST", "required format: none (default), boxed, answer, think, or a list (think,boxed)"},
        {"format-both", CEL_OPT_FLAG, &format_both, NULL, "with boxed,answer: require both (default: either)"},
        {"task", CEL_OPT_STR, &task_s, "TASK", "task for lines without one: auto (default), math, mcq, open"},
        {"threads", CEL_OPT_INT, &threads, "N", "grading threads (default 1; 0 = all CPUs)"},
        {"rel-tol", CEL_OPT_DOUBLE, &rel_tol, "X", "relative numeric tolerance (default 1e-6)"},
        {"abs-tol", CEL_OPT_DOUBLE, &abs_tol, "X", "absolute numeric tolerance (default 1e-9)"},
        {"no-fallback", CEL_OPT_FLAG, &no_fallback, NULL, "do not fall back to the last number of a response"},
        {"reward-correct", CEL_OPT_DOUBLE, &r_ok, "X", "reward when correct and well formatted (default 1)"},
        {"reward-correct-bad-format", CEL_OPT_DOUBLE, &r_ok_bad, "X", "correct but badly formatted (default 0)"},
        {"reward-wrong", CEL_OPT_DOUBLE, &r_wrong, "X", "wrong and badly formatted (default 0)"},
        {"reward-wrong-good-format", CEL_OPT_DOUBLE, &r_wrong_good, "X", "wrong but well formatted (default 0)"},
        {"max-response-bytes", CEL_OPT_INT, &max_bytes, "N", "longer responses score 0 (default 1 MiB)"},
        {"work-budget", CEL_OPT_INT, &budget, "N", "work units per item before it scores 0 (default 1000000)"},
        {"seed", CEL_OPT_INT, &seed, "N", "seed for symbolic equality's random points"},
        {"stats", CEL_OPT_FLAG, &stats, NULL, "print a summary (items, accuracy, failures, time) to stderr"},
    };
    int rc = cel_cli_parse(self(), argc, argv, opts, sizeof opts / sizeof opts[0], NULL, 0, NULL);
    if (rc) return cel_cli_exit(rc);
    const char *name = self()->name;
    cel_verify_config cfg;
    cel_verify_config_default(&cfg);
    cel_adv_mode mode;
    cel_task dtask;
    if (!cel_adv_mode_parse(adv, &mode)) {
        return cel_cli_usage(name, "--advantage must be grpo, dr_grpo, rloo or none (got '%s')", adv);
    }
    if (!cel_format_parse(format, &cfg.format)) {
        return cel_cli_usage(name, "--format must be none, boxed, answer, think or a comma list (got '%s')", format);
    }
    if (!cel_task_parse(task_s, &dtask)) {
        return cel_cli_usage(name, "--task must be auto, math, mcq or open (got '%s')", task_s);
    }
    if (threads < 0 || threads > 256) return cel_cli_usage(name, "--threads must be in 0..256");
    if (threads == 0) threads = cel_cpu_count();
    cfg.format_either = !format_both;
    if (rel_tol >= 0) cfg.rel_tol = rel_tol;
    if (abs_tol >= 0) cfg.abs_tol = abs_tol;
    cfg.last_number_fallback = !no_fallback;
    cfg.reward_correct = r_ok, cfg.reward_correct_bad_format = r_ok_bad;
    cfg.reward_wrong = r_wrong, cfg.reward_wrong_good_format = r_wrong_good;
    if (max_bytes > 0) cfg.max_response_bytes = (size_t)max_bytes;
    if (budget > 0) cfg.work_budget = (uint64_t)budget;
    if (seed >= 0) cfg.seed = (uint64_t)seed;
    cel_verifier *v = NULL;
    cel_error err;
    cel_error_clear(&err);
    if (cel_verifier_create(&cfg, &v, &err) != CEL_OK) return cel_cli_usage(name, "%s", err.msg);
    FILE *in = stdin, *out = stdout;
    if (input && strcmp(input, "-") != 0 && !(in = fopen(input, "rb"))) {
        cel_verifier_free(v);
        return cel_cli_fail(name, "cannot open %s: %s", input, strerror(errno));
    }
    if (output && strcmp(output, "-") != 0 && !(out = fopen(output, "wb"))) {
        if (in != stdin) fclose(in);
        cel_verifier_free(v);
        return cel_cli_fail(name, "cannot create %s: %s", output, strerror(errno));
    }
    double t0 = cel_now_sec();
    /* jansson seeds its hash function on first use: do it here, before the
     * pool's threads parse in parallel */
    json_object_seed(0);
    cel_pool *pool = NULL;
    if (threads > 1 && cel_pool_create((int)threads, &pool, &err) != CEL_OK) {
        if (in != stdin) fclose(in);
        if (out != stdout) fclose(out);
        cel_verifier_free(v);
        return cel_cli_fail(name, "%s", err.msg);
    }
    bool keep = mode != CEL_ADV_NONE;
    row *rows = NULL;
    size_t n = 0, cap = 0, done = 0; /* rows [done, n) are read but not yet processed */
    cel_buf line;
    cel_buf_init(&line);
    size_t lineno = 0, failed = 0, graded = 0, correct = 0;
    bool too_long, eof = false;
    int status = 0;
    job j = {v, dtask, keep, NULL};
    while (status == 0 && !eof) {
        /* read a block */
        while (n - done < BLOCK) {
            if (!read_line(in, &line, &too_long)) {
                eof = true;
                break;
            }
            lineno++;
            size_t k = 0;
            while (k < line.len && (line.data[k] == ' ' || line.data[k] == '\t' || line.data[k] == '\r')) k++;
            if (k == line.len && !too_long) continue; /* blank lines carry nothing */
            if (n == cap) {
                size_t nc = cap ? cap * 2 : BLOCK;
                row *nr = realloc(rows, nc * sizeof *nr);
                if (!nr) {
                    status = cel_cli_fail(name, "out of memory at line %zu", lineno);
                    break;
                }
                rows = nr, cap = nc;
            }
            row *r = &rows[n++];
            memset(r, 0, sizeof *r);
            r->lineno = lineno;
            r->too_long = too_long;
            if (!too_long) {
                r->line = malloc(line.len + 1);
                if (!r->line) {
                    status = cel_cli_fail(name, "out of memory at line %zu", lineno);
                    break;
                }
                memcpy(r->line, line.data, line.len + 1);
                r->len = line.len;
            }
        }
        if (status) break;
        /* parse, grade and serialize the block in parallel */
        j.rows = rows + done;
        if (pool && n - done > 1) cel_pool_run(pool, (int64_t)(n - done), 16, work, &j);
        else work(&j, 0, (int64_t)(n - done), 0);
        for (size_t i = done; i < n; i++) {
            if (rows[i].failed) failed++;
            else graded++, correct += rows[i].correct;
        }
        if (!keep) {
            for (size_t i = done; i < n; i++) {
                if (status == 0 && write_row(out, &rows[i], false, 0) != 0)
                    status = cel_cli_fail(name, "write failed: %s", strerror(errno));
                free(rows[i].out);
            }
            n = done = 0; /* reuse the rows: memory stays flat */
        } else {
            done = n;
        }
    }
    if (status == 0 && ferror(in)) status = cel_cli_fail(name, "read error: %s", strerror(errno));
    if (status == 0 && keep && n > 0) {
        /* advantages over the whole input, then every row in order */
        uint64_t *ids = malloc(n * sizeof *ids);
        double *rw = malloc(n * sizeof *rw), *adv = malloc(n * sizeof *adv);
        if (!ids || !rw || !adv || group_ids(rows, n, ids) != 0) {
            status = cel_cli_fail(name, "out of memory for %zu advantages", n);
        } else {
            for (size_t i = 0; i < n; i++) rw[i] = rows[i].failed ? 0.0 : rows[i].reward;
            if (cel_advantages(rw, ids, n, mode, whiten, adv, &err) != CEL_OK)
                status = cel_cli_fail(name, "%s", err.msg);
        }
        for (size_t i = 0; i < n && status == 0; i++)
            if (write_row(out, &rows[i], rows[i].group && !rows[i].failed, adv[i]) != 0)
                status = cel_cli_fail(name, "write failed: %s", strerror(errno));
        free(ids), free(rw), free(adv);
    }
    for (size_t i = 0; i < n; i++) free(rows[i].out), free(rows[i].group), free(rows[i].line);
    free(rows);
    cel_buf_free(&line);
    cel_pool_free(pool);
    if (fflush(out) != 0 && status == 0) status = cel_cli_fail(name, "write failed: %s", strerror(errno));
    if (in != stdin) fclose(in);
    if (out != stdout) fclose(out);
    cel_verifier_free(v);
    if (stats) {
        double dt = cel_now_sec() - t0;
        fprintf(stderr, "celine reward: %zu graded, %zu correct (%.1f%%), %zu failed lines, %.3f s (%.0f items/s)\n",
                graded, correct, graded ? 100.0 * (double)correct / (double)graded : 0.0, failed, dt,
                dt > 0 ? (double)(graded + failed) / dt : 0.0);
    }
    if (status) return status;
    if (failed) {
        fprintf(stderr, "celine reward: %zu line(s) failed (see their \"error\" records)\n", failed);
        return 1;
    }
    return 0;
}

const cel_cli_cmd cel_cli_cmd_reward = {
    "reward",
    "grade RL rollouts (math, multiple choice, short answers): JSONL rewards + group advantages",
    "Usage: celine reward [--input FILE] [--output FILE] [--advantage grpo|dr_grpo|rloo|none] [options]\n\n"
    "Reads JSON Lines with id, task (math|mcq|open|auto), response, reference, optional choices\n"
    "(option texts; the reference is then the gold letter) and optional group; writes one line per\n"
    "input line, in order, with id, reward, correct, format_ok, extracted, reason, task, source\n"
    "(f1 for open answers) and advantage when the item has a group. A bad line gives a record with\n"
    "\"error\" and the run goes on; the exit status is 1 when any line failed, 2 on usage errors.",
    run,
};

static const cel_cli_cmd *self(void) { return &cel_cli_cmd_reward; }
