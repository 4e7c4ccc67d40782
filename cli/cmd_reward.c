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
 * With advantages on, the whole input is graded as one batch (a group's
 * samples may be anywhere in the file); with --advantage none the input
 * streams through in blocks, so memory stays flat on any input size.
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

/* One input line: a gradable item, or an error for that line. */
typedef struct row {
    size_t line;
    json_t *obj;      /* the parsed line (owns the strings the item points to) */
    json_t *id;       /* borrowed from obj, or NULL */
    char *error;      /* malloc'ed message when the line is bad */
    const char **choices;
    char *group_buf;  /* a numeric group turned into text */
    char *ref_buf;    /* a numeric reference turned into text */
    bool has_group;
    size_t item;      /* index into the batch when !error */
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

static char *line_err(size_t line, const char *msg)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "line %zu: %s", line, msg);
    return strdup(tmp);
}

static char *num_text(json_t *v)
{
    char tmp[64];
    if (json_is_integer(v)) snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
    else snprintf(tmp, sizeof tmp, "%.17g", json_real_value(v));
    return strdup(tmp);
}

/* Turns a parsed line into an item; on a bad line sets r->error. */
static void parse_row(row *r, const char *text, size_t len, cel_task default_task, cel_verify_item *it)
{
    json_error_t je;
    memset(it, 0, sizeof *it);
    r->obj = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!r->obj) {
        char tmp[400];
        snprintf(tmp, sizeof tmp, "line %zu: invalid JSON at column %d: %s", r->line, je.column, je.text);
        r->error = strdup(tmp);
        return;
    }
    if (!json_is_object(r->obj)) {
        r->error = line_err(r->line, "expected a JSON object");
        return;
    }
    r->id = json_object_get(r->obj, "id");
    json_t *task = json_object_get(r->obj, "task");
    json_t *resp = json_object_get(r->obj, "response");
    json_t *ref = json_object_get(r->obj, "reference");
    json_t *choices = json_object_get(r->obj, "choices");
    json_t *group = json_object_get(r->obj, "group");
    it->task = default_task;
    if (task && !json_is_null(task)) {
        if (!json_is_string(task) || !cel_task_parse(json_string_value(task), &it->task)) {
            r->error = line_err(r->line, "\"task\" must be \"math\", \"mcq\", \"open\" or \"auto\"");
            return;
        }
    }
    if (!json_is_string(resp)) {
        r->error = line_err(r->line, "\"response\" is missing or not a string");
        return;
    }
    it->response = json_string_value(resp);
    it->response_len = json_string_length(resp);
    if (it->response_len == 0) it->response = "";
    if (json_is_string(ref)) {
        it->reference = json_string_value(ref);
    } else if (json_is_number(ref)) {
        r->ref_buf = num_text(ref);
        it->reference = r->ref_buf;
    } else {
        r->error = line_err(r->line, "\"reference\" is missing or not a string");
        return;
    }
    if (choices && !json_is_null(choices)) {
        if (!json_is_array(choices) || json_array_size(choices) > 26) {
            r->error = line_err(r->line, "\"choices\" must be an array of at most 26 strings");
            return;
        }
        size_t n = json_array_size(choices);
        r->choices = calloc(n ? n : 1, sizeof *r->choices);
        if (!r->choices) {
            r->error = line_err(r->line, "out of memory");
            return;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *c = json_array_get(choices, i);
            if (!json_is_string(c)) {
                r->error = line_err(r->line, "\"choices\" must hold strings");
                return;
            }
            r->choices[i] = json_string_value(c);
        }
        it->choices = r->choices;
        it->n_choices = n;
    }
    if (group && !json_is_null(group)) {
        if (json_is_string(group)) {
            it->group = json_string_value(group);
        } else if (json_is_number(group)) {
            r->group_buf = num_text(group);
            it->group = r->group_buf;
        } else {
            r->error = line_err(r->line, "\"group\" must be a string or a number");
            return;
        }
        r->has_group = true;
    }
    if (json_is_string(r->id)) it->id = json_string_value(r->id);
}

static void free_row(row *r)
{
    json_decref(r->obj);
    free(r->error);
    free(r->choices);
    free(r->group_buf);
    free(r->ref_buf);
    memset(r, 0, sizeof *r);
}

/* Writes one output line. */
static int emit(FILE *out, const row *r, const cel_verify_result *res)
{
    json_t *o = json_object();
    if (!o) return -1;
    json_object_set(o, "id", r->id ? r->id : json_null());
    if (r->error) {
        json_object_set_new(o, "line", json_integer((json_int_t)r->line));
        json_object_set_new(o, "reward", json_real(0.0));
        json_object_set_new(o, "correct", json_false());
        json_object_set_new(o, "format_ok", json_false());
        json_object_set_new(o, "extracted", json_null());
        json_object_set_new(o, "reason", json_string("error"));
        json_object_set_new(o, "error", json_string(r->error));
    } else {
        bool is_err = strncmp(res->reason, "error", 5) == 0;
        json_object_set_new(o, "reward", json_real(res->reward));
        json_object_set_new(o, "correct", json_boolean(res->correct));
        json_object_set_new(o, "format_ok", json_boolean(res->format_ok));
        json_object_set_new(o, "extracted", res->has_extracted ? json_string(res->extracted) : json_null());
        json_object_set_new(o, "reason", json_string(is_err ? "error" : res->reason));
        if (is_err) {
            json_object_set_new(o, "line", json_integer((json_int_t)r->line));
            json_object_set_new(o, "error", json_string(res->reason[5] == ':' ? res->reason + 7 : res->reason));
        } else {
            json_object_set_new(o, "task", json_string(cel_task_name(res->task)));
            json_object_set_new(o, "source", json_string(cel_extract_source_name(res->source)));
            if (res->task == CEL_TASK_OPEN) json_object_set_new(o, "f1", json_real(res->f1));
        }
        if (r->has_group && res->has_advantage) json_object_set_new(o, "advantage", json_real(res->advantage));
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(o);
    if (!s) return -1;
    int rc = fputs(s, out) < 0 || fputc('\n', out) == EOF ? -1 : 0;
    free(s);
    return rc;
}

typedef struct {
    row *rows;
    size_t n, cap;
    cel_verify_item *items;
    size_t n_items, cap_items;
} batch;

static int grow(batch *b)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 1024;
        row *nr = realloc(b->rows, nc * sizeof *nr);
        if (!nr) return -1;
        b->rows = nr, b->cap = nc;
    }
    if (b->n_items == b->cap_items) {
        size_t nc = b->cap_items ? b->cap_items * 2 : 1024;
        cel_verify_item *ni = realloc(b->items, nc * sizeof *ni);
        if (!ni) return -1;
        b->items = ni, b->cap_items = nc;
    }
    return 0;
}

/* Grades the block's items and writes every row in order; frees the rows. */
static int flush(const cel_verifier *v, batch *b, cel_adv_mode mode, bool whiten, int threads, FILE *out,
                 size_t *failed, size_t *graded, size_t *correct)
{
    cel_verify_result *res = b->n_items ? malloc(b->n_items * sizeof *res) : NULL;
    if (b->n_items && !res) return cel_cli_fail(self()->name, "out of memory for %zu results", b->n_items);
    cel_error err;
    cel_error_clear(&err);
    size_t nerr = 0;
    if (b->n_items && cel_verify_batch(v, b->items, b->n_items, mode, whiten, threads, res, &nerr, &err) != CEL_OK) {
        free(res);
        return cel_cli_fail(self()->name, "%s", err.msg);
    }
    int rc = 0;
    for (size_t i = 0; i < b->n; i++) {
        row *r = &b->rows[i];
        const cel_verify_result *x = r->error ? NULL : &res[r->item];
        if (r->error || strncmp(x->reason, "error", 5) == 0) (*failed)++;
        else {
            (*graded)++;
            *correct += x->correct;
        }
        if (rc == 0 && emit(out, r, x) != 0) rc = cel_cli_fail(self()->name, "write failed: %s", strerror(errno));
        free_row(r);
    }
    free(res);
    b->n = b->n_items = 0;
    return rc;
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
        cel_cli_fail(name, "--advantage must be grpo, dr_grpo, rloo or none (got '%s')", adv);
        return 2;
    }
    if (!cel_format_parse(format, &cfg.format)) {
        cel_cli_fail(name, "--format must be none, boxed, answer, think or a comma list (got '%s')", format);
        return 2;
    }
    if (!cel_task_parse(task_s, &dtask)) {
        cel_cli_fail(name, "--task must be auto, math, mcq or open (got '%s')", task_s);
        return 2;
    }
    if (threads < 0 || threads > 256) {
        cel_cli_fail(name, "--threads must be in 0..256");
        return 2;
    }
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
    if (cel_verifier_create(&cfg, &v, &err) != CEL_OK) {
        cel_cli_fail(name, "%s", err.msg);
        return 2;
    }
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
    batch b;
    memset(&b, 0, sizeof b);
    cel_buf line;
    cel_buf_init(&line);
    size_t lineno = 0, failed = 0, graded = 0, correct = 0;
    bool too_long;
    int status = 0;
    while (status == 0 && read_line(in, &line, &too_long)) {
        lineno++;
        size_t k = 0;
        while (k < line.len && (line.data[k] == ' ' || line.data[k] == '\t' || line.data[k] == '\r')) k++;
        if (k == line.len && !too_long) continue; /* blank lines carry nothing */
        if (grow(&b) != 0) {
            status = cel_cli_fail(name, "out of memory at line %zu", lineno);
            break;
        }
        row *r = &b.rows[b.n++];
        memset(r, 0, sizeof *r);
        r->line = lineno;
        if (too_long) {
            r->error = line_err(lineno, "longer than the line limit");
        } else {
            cel_verify_item *it = &b.items[b.n_items];
            parse_row(r, line.data, line.len, dtask, it);
            if (!r->error) r->item = b.n_items++;
        }
        if (mode == CEL_ADV_NONE && b.n >= BLOCK)
            status = flush(v, &b, mode, whiten, (int)threads, out, &failed, &graded, &correct);
    }
    if (status == 0 && ferror(in)) status = cel_cli_fail(name, "read error: %s", strerror(errno));
    if (status == 0) status = flush(v, &b, mode, whiten, (int)threads, out, &failed, &graded, &correct);
    for (size_t i = 0; i < b.n; i++) free_row(&b.rows[i]);
    free(b.rows);
    free(b.items);
    cel_buf_free(&line);
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
