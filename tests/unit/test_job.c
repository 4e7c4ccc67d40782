/* Unit tests for corpus jobs: the JSONL / zstd line reader (line numbers,
 * caps, truncated and corrupt frames), input expansion, and the runner over a
 * scripted backend: a job stopped at many points and resumed (also after
 * crash leftovers) writes byte-identical shards to an uninterrupted run;
 * parts split the input disjointly and verify; a changed config is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "celine/job.h"
#include "generators/job_internal.h"
#include "test_gen_mock.h"
#include "test_gen_fixture.h"

/* ------------------------------------------------------------- helpers */

static char tmp_root[256];

static void mk_tmp(void)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/celine_test_job_XXXXXX");
    assert_non_null(mkdtemp(tmp_root));
}

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static char *read_all(const char *path, size_t *len)
{
    char *d = NULL;
    size_t n = 0;
    cel_error e;
    if (cel_read_file(path, 0, &d, &n, &e) != CEL_OK) return NULL;
    if (len) *len = n;
    return d;
}

/* zstd frames of the given pieces, concatenated */
static void zstd_pieces(cel_buf *out, const char *const *pieces, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(pieces[i]);
        size_t bound = ZSTD_compressBound(len);
        assert_int_equal(cel_buf_reserve(out, bound), CEL_OK);
        size_t k = ZSTD_compress(out->data + out->len, bound, pieces[i], len, 3);
        assert_false(ZSTD_isError(k));
        out->len += k;
    }
}

/* The next event of r, asserting that reading it succeeds (a corrupt stretch
 * is an event, not a failure); false at the end of the input. */
static bool next_event(cel_jsonl_reader *r, cel_jsonl_kind *k, const char **s, size_t *l, cel_error *e)
{
    assert_int_equal(cel_jsonl_next(r, k, s, l, e), CEL_OK);
    return *k != CEL_JSONL_EOF;
}

typedef struct ev {
    cel_jsonl_kind kind;
    char text[128];
    uint64_t line;
} ev;

static size_t read_events(const void *data, size_t len, size_t max_line, ev *evs, size_t max)
{
    FILE *f = fmemopen((void *)data, len, "rb");
    assert_non_null(f);
    cel_jsonl_reader *r;
    cel_error e;
    assert_int_equal(cel_jsonl_open_stream(f, "mem", max_line, &r, &e), CEL_OK);
    size_t n = 0;
    cel_jsonl_kind k;
    const char *s;
    size_t l;
    while (next_event(r, &k, &s, &l, &e)) {
        assert_true(n < max);
        evs[n].kind = k;
        evs[n].line = cel_jsonl_line_number(r);
        snprintf(evs[n].text, sizeof evs[n].text, "%.*s", (int)(k == CEL_JSONL_LINE ? l : 0), s ? s : "");
        n++;
        if (k == CEL_JSONL_CORRUPT) {
            assert_non_null(strstr(e.msg, "mem"));
        }
    }
    cel_jsonl_free(r);
    fclose(f);
    return n;
}

/* ------------------------------------------------------------- reader */

static void test_reader_plain(void **state)
{
    (void)state;
    const char *txt = "one\n\nthree is longer than ten\nfour\r\nlast";
    ev evs[16];
    size_t n = read_events(txt, strlen(txt), 10, evs, 16);
    assert_int_equal(n, 5);
    assert_string_equal(evs[0].text, "one");
    assert_int_equal(evs[0].line, 1);
    assert_int_equal(evs[1].kind, CEL_JSONL_LINE);
    assert_string_equal(evs[1].text, "");
    assert_int_equal(evs[2].kind, CEL_JSONL_TOO_LONG);
    assert_int_equal(evs[2].line, 3);
    assert_string_equal(evs[3].text, "four\r");
    assert_int_equal(evs[3].line, 4);
    assert_string_equal(evs[4].text, "last"); /* no newline at the end: still a line */
    assert_int_equal(evs[4].line, 5);
    /* empty input */
    assert_int_equal(read_events("", 0, 10, evs, 16), 0);
}

static void test_reader_zstd(void **state)
{
    (void)state;
    const char *pieces[] = {"a1\na2\n", "a3\nsplit-", "line\na5\n"};
    cel_buf z;
    cel_buf_init(&z);
    zstd_pieces(&z, pieces, 3);
    ev evs[16];
    size_t n = read_events(z.data, z.len, 100, evs, 16);
    assert_int_equal(n, 5); /* a line may span frames */
    assert_string_equal(evs[3].text, "split-line");
    assert_int_equal(evs[4].line, 5);

    /* truncated: the complete lines come out, then one CORRUPT event */
    size_t first = ZSTD_findFrameCompressedSize(z.data, z.len);
    n = read_events(z.data, first + 5, 100, evs, 16);
    assert_int_equal(n, 3);
    assert_string_equal(evs[1].text, "a2");
    assert_int_equal(evs[2].kind, CEL_JSONL_CORRUPT);
    assert_int_equal(evs[2].line, 3);

    /* garbage after the first frame: CORRUPT, the rest skipped */
    cel_buf g;
    cel_buf_init(&g);
    cel_buf_append(&g, z.data, first);
    cel_buf_append(&g, "\x28\xb5\x2f\xfd garbage garbage garbage", 28);
    n = read_events(g.data, g.len, 100, evs, 16);
    assert_int_equal(n, 3);
    assert_int_equal(evs[2].kind, CEL_JSONL_CORRUPT);
    cel_buf_free(&g);
    cel_buf_free(&z);
}

/* ------------------------------------------------------------ expansion */

static cel_status expand_dir_check(void *ud, const char *path, cel_error *err)
{
    int *calls = ud;
    (*calls)++;
    if (strstr(path, "deny")) return cel_error_set(err, CEL_ERR_INVALID, "%s: denied", path);
    return CEL_OK;
}

static void test_inputs_expand(void **state)
{
    (void)state;
    mk_tmp();
    char p[512];
    snprintf(p, sizeof p, "%s/sub", tmp_root);
    mkdir(p, 0755);
    const char *files[] = {"b.jsonl", "a.jsonl", "sub/c.jsonl.zst", "notes.txt", ".hidden.jsonl", "sub/d.json"};
    for (size_t i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp_root, files[i]);
        write_file(p, "{}\n", 3);
    }
    cel__job_input *in = NULL;
    size_t n = 0;
    cel_error e;
    const char *spec[1] = {tmp_root};
    int calls = 0;
    assert_int_equal(cel__job_inputs_expand(spec, 1, expand_dir_check, &calls, &in, &n, &e), CEL_OK);
    assert_int_equal(n, 4);
    assert_int_equal(calls, 4);
    assert_non_null(strstr(in[0].path, "/a.jsonl"));
    assert_non_null(strstr(in[1].path, "/b.jsonl"));
    assert_non_null(strstr(in[2].path, "/sub/c.jsonl.zst"));
    assert_non_null(strstr(in[3].path, "/sub/d.json"));
    assert_int_equal(in[0].size, 3);
    for (size_t i = 0; i < n; i++) free(in[i].path);
    free(in);
    /* glob, and a file named twice */
    char g[512], f[512];
    snprintf(g, sizeof g, "%s/*.jsonl", tmp_root);
    snprintf(f, sizeof f, "%s/a.jsonl", tmp_root);
    const char *spec2[2] = {g, f};
    assert_int_equal(cel__job_inputs_expand(spec2, 1, NULL, NULL, &in, &n, &e), CEL_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) free(in[i].path);
    free(in);
    assert_int_equal(cel__job_inputs_expand(spec2, 2, NULL, NULL, &in, &n, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "more than once"));
    snprintf(g, sizeof g, "%s/*.nothing", tmp_root);
    assert_int_equal(cel__job_inputs_expand(spec2, 1, NULL, NULL, &in, &n, &e), CEL_ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "matches no file"));
    rm_rf(tmp_root);
}

/* ----------------------------------------------------------------- jobs */

static const char *const mind_src =
    "@name alpha\n@kind mind\n@speakers Alice | Bob\n@user\nTALK between {{speaker1}} and {{speaker2}}\n{{text}}\n";

static cel_finish talk_script(void *ud, const char *prompt, uint64_t seed, uint32_t sample, cel_buf *out)
{
    (void)ud;
    (void)sample;
    if (strstr(prompt, "FAILME")) return CEL_FINISH_ERROR;
    if (strstr(prompt, "SHORTME")) {
        cel_buf_puts(out, "Alice: hi\nBob: hi\nAlice: ok\nBob: ok\n");
        return CEL_FINISH_STOP;
    }
    dialogue(out, "Alice", "Bob", seed);
    return CEL_FINISH_STOP;
}

static cel_status make_mind(void *ud, const cel_gen_sink *sink, cel_gen_pipeline **out, cel_error *err)
{
    job_maker *m = ud;
    cel_mind_config c;
    cel_mind_config_default(&c);
    c.templates = m->set;
    c.chunk_tokens = 40;
    c.min_output_tokens = 10;
    c.c.seed = 77;
    c.c.max_inflight_docs = 5;
    return cel_mind_create(&c, m->be, sink, out, err);
}

/* Writes the test corpus: three files (one zstd), 120 documents of several
 * sizes, with invalid lines, a too-long line and blank lines. */
static void write_corpus(const char *dir)
{
    cel_buf a, b, c;
    cel_buf_init(&a);
    cel_buf_init(&b);
    cel_buf_init(&c);
    for (int i = 0; i < 120; i++) {
        cel_buf *t = i < 50 ? &a : i < 90 ? &b : &c;
        cel_buf_printf(t, "{\"id\":\"doc%03d\",\"text\":\"", i);
        int words = 10 + (i * 37) % 90;
        for (int w = 0; w < words; w++) cel_buf_printf(t, "word%d%s", (i + w) % 13, w % 11 == 10 ? ". " : " ");
        if (i % 17 == 5) cel_buf_puts(t, "FAILME");
        if (i % 19 == 7) cel_buf_puts(t, "SHORTME");
        cel_buf_puts(t, "\"}\n");
        if (i == 20) cel_buf_puts(t, "{\"id\": broken json\n\n");
        if (i == 60) cel_buf_puts(t, "{\"id\":\"no-text\"}\n");
        if (i == 95) {
            cel_buf_puts(t, "{\"id\":\"huge\",\"text\":\"");
            for (int k = 0; k < 3000; k++) cel_buf_puts(t, "x");
            cel_buf_puts(t, "\"}\n");
        }
    }
    char p[512];
    snprintf(p, sizeof p, "%s/in", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/in/a.jsonl", dir);
    write_file(p, a.data, a.len);
    /* b as zstd in two frames */
    cel_buf z;
    cel_buf_init(&z);
    char *half = b.data + b.len / 2;
    while (*half != '\n') half++;
    half++;
    char *first = strndup(b.data, (size_t)(half - b.data));
    const char *pieces[2] = {first, half};
    zstd_pieces(&z, pieces, 2);
    snprintf(p, sizeof p, "%s/in/b.jsonl.zst", dir);
    write_file(p, z.data, z.len);
    snprintf(p, sizeof p, "%s/in/c.jsonl", dir);
    write_file(p, c.data, c.len);
    free(first);
    cel_buf_free(&z);
    cel_buf_free(&a);
    cel_buf_free(&b);
    cel_buf_free(&c);
}

/* Runs (or resumes) a job from dir/in into out; returns the status. */
static cel_status run_job(const char *dir, const char *out, uint32_t part, uint32_t parts, cel_job_split split,
                          const char *config, stopper *stop, mock_order order, cel_job_result *res, cel_error *e)
{
    cel_template_set *set = make_set(&mind_src, 1);
    mock_backend *mb = mock_new(talk_script, NULL, order, 2);
    job_maker mk = {set, &mb->base};
    char in[512];
    snprintf(in, sizeof in, "%s/in", dir);
    const char *inputs[1] = {in};
    cel_job_opts o;
    job_opts_one(&o, inputs, out);
    o.part = part;
    o.parts = parts;
    o.split = split;
    o.frame_records = 7;
    o.frame_bytes = 4096;
    o.shard_records = 30;
    o.max_line_bytes = 2000;
    o.write_rejects = true;
    o.config_json = config ? config : "{\"kind\":\"mind\",\"seed\":77}";
    cel_job_hooks h = stop_hooks(stop);
    cel_status st = cel_job_run(&o, make_mind, &mk, &mb->base, &h, res, e);
    cel_gen_backend_free(&mb->base);
    cel_template_set_free(set);
    return st;
}

/* Every job file of a folder, concatenated with its name (shards compared byte for byte). */
static void dir_digest(const char *dir, cel_buf *out)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    assert_true(n >= 0);
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (strncmp(nm, "shard-", 6) == 0 || strcmp(nm, "input_errors.jsonl") == 0 || strcmp(nm, "rejects.jsonl") == 0) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, nm);
            size_t len = 0;
            char *d = read_all(p, &len);
            assert_non_null(d);
            cel_buf_printf(out, "== %s %zu\n", nm, len);
            cel_buf_append(out, d, len);
            free(d);
        }
        if (nm[0] == '.' && strncmp(nm, ".pending", 8) == 0) cel_buf_printf(out, "== stray %s\n", nm);
        free(names[i]);
    }
    free(names);
}

/* Decoded records of every shard of a folder, one JSON line each. */
static void dir_records(const char *dir, cel_buf *out)
{
    for (int i = 0;; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/shard-%05d.jsonl.zst", dir, i);
        if (access(p, F_OK) != 0) break;
        cel_jsonl_reader *r;
        cel_error e;
        assert_int_equal(cel_jsonl_open(p, 0, &r, &e), CEL_OK);
        cel_jsonl_kind k;
        const char *s;
        size_t l;
        while (next_event(r, &k, &s, &l, &e)) {
            assert_int_equal(k, CEL_JSONL_LINE);
            cel_buf_append(out, s, l);
            cel_buf_putc(out, '\n');
        }
        cel_jsonl_free(r);
    }
}

static void test_job_resume_exact(void **state)
{
    (void)state;
    mk_tmp();
    write_corpus(tmp_root);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/outA", tmp_root);
    snprintf(b, sizeof b, "%s/outB", tmp_root);
    cel_job_result res;
    cel_error e;
    cel_status st = run_job(tmp_root, a, 0, 1, CEL_JOB_SPLIT_ID, NULL, NULL, MOCK_FIFO, &res, &e);
    if (st) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(st, CEL_OK);
    assert_true(res.done);
    assert_int_equal(res.c.docs, 120);
    assert_int_equal(res.c.input_errors[CEL_JOB_ERR_INVALID_LINE], 2);
    assert_int_equal(res.c.input_errors[CEL_JOB_ERR_LINE_TOO_LONG], 1);
    assert_true(res.c.dropped[CEL_DROP_GEN_ERROR] > 0);
    assert_true(res.c.records > 120);
    assert_true(res.c.shards >= 3);
    cel_buf da, db;
    cel_buf_init(&da);
    cel_buf_init(&db);
    dir_digest(a, &da);
    /* the error report names file and line */
    char p[600];
    snprintf(p, sizeof p, "%s/input_errors.jsonl", a);
    char *errs = read_all(p, NULL);
    assert_non_null(errs);
    assert_non_null(strstr(errs, "a.jsonl\",\"line\":22,\"kind\":\"invalid_line\""));
    assert_non_null(strstr(errs, "\"kind\":\"line_too_long\""));
    free(errs);

    /* stopped after k checks, again and again, in another completion order: same bytes */
    int rounds = 0;
    for (int k = 3;; k += 5) {
        stopper s = {0, k};
        st = run_job(tmp_root, b, 0, 1, CEL_JOB_SPLIT_ID, NULL, &s, MOCK_RANDOM, &res, &e);
        if (st) fprintf(stderr, "%s\n", e.msg);
        assert_int_equal(st, CEL_OK);
        rounds++;
        if (res.done) break;
        assert_true(rounds < 200);
        if (rounds == 4) {
            /* crash leftovers: a half-written frame, a stray shard and pending file */
            char q[600];
            snprintf(q, sizeof q, "%s/shard-00000.jsonl.zst", b);
            FILE *f = fopen(q, "ab");
            fputs("partial frame bytes", f);
            fclose(f);
            snprintf(q, sizeof q, "%s/shard-00042.jsonl.zst", b);
            write_file(q, "x", 1);
            snprintf(q, sizeof q, "%s/.pending-999.zst", b);
            write_file(q, "y", 1);
        }
    }
    assert_true(rounds > 5);
    dir_digest(b, &db);
    assert_int_equal(da.len, db.len);
    assert_memory_equal(da.data, db.data, da.len);
    /* and running a finished job again does nothing */
    st = run_job(tmp_root, b, 0, 1, CEL_JOB_SPLIT_ID, NULL, NULL, MOCK_FIFO, &res, &e);
    assert_int_equal(st, CEL_OK);
    assert_true(res.already_done);
    /* another config is refused, naming the folder */
    st = run_job(tmp_root, b, 0, 1, CEL_JOB_SPLIT_ID, "{\"kind\":\"mind\",\"seed\":78}", NULL, MOCK_FIFO, &res, &e);
    assert_int_equal(st, CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "outB"));
    cel_buf report;
    cel_buf_init(&report);
    st = cel_job_verify(b, true, &report, &e);
    if (st) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(st, CEL_OK);
    cel_buf_free(&report);
    cel_buf_free(&da);
    cel_buf_free(&db);
    rm_rf(tmp_root);
}

/* Lines of a buffer sorted (a multiset of records). */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static size_t sorted_lines(cel_buf *b, char ***out)
{
    size_t n = 0;
    for (size_t i = 0; i < b->len; i++) n += b->data[i] == '\n';
    char **v = calloc(n + 1, sizeof *v);
    char *s = b->data;
    for (size_t i = 0; i < n; i++) {
        char *nl = strchr(s, '\n');
        *nl = 0;
        v[i] = s;
        s = nl + 1;
    }
    qsort(v, n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

static void test_job_parts(void **state)
{
    (void)state;
    mk_tmp();
    write_corpus(tmp_root);
    char a[512], parts[512], pd[600];
    snprintf(a, sizeof a, "%s/whole", tmp_root);
    cel_job_result res;
    cel_error e;
    assert_int_equal(run_job(tmp_root, a, 0, 1, CEL_JOB_SPLIT_ID, NULL, NULL, MOCK_FIFO, &res, &e), CEL_OK);
    uint64_t whole_records = res.c.records;
    cel_buf all;
    cel_buf_init(&all);
    dir_records(a, &all);
    for (int split = 0; split < 2; split++) {
        snprintf(parts, sizeof parts, "%s/parts%d", tmp_root, split);
        uint64_t recs = 0, errs = 0;
        cel_buf u;
        cel_buf_init(&u);
        for (uint32_t i = 0; i < 3; i++) {
            cel_status st = run_job(tmp_root, parts, i, 3, (cel_job_split)split, NULL, NULL, MOCK_LIFO, &res, &e);
            if (st) fprintf(stderr, "%s\n", e.msg);
            assert_int_equal(st, CEL_OK);
            assert_true(res.c.docs > 10 && res.c.docs < 110);
            recs += res.c.records;
            errs += res.c.input_errors[CEL_JOB_ERR_INVALID_LINE] + res.c.input_errors[CEL_JOB_ERR_LINE_TOO_LONG];
            snprintf(pd, sizeof pd, "%s/part-%05u-of-00003", parts, i);
            dir_records(pd, &u);
        }
        assert_int_equal(recs, whole_records);
        assert_int_equal(errs, 3); /* each bad line reported by exactly one part */
        char **x, **y;
        size_t nx = sorted_lines(&all, &x);
        cel_buf copy;
        cel_buf_init(&copy);
        size_t ny = sorted_lines(&u, &y);
        assert_int_equal(nx, ny);
        for (size_t i = 0; i < nx; i++) assert_string_equal(x[i], y[i]);
        free(x);
        free(y);
        cel_buf_free(&copy);
        cel_buf_free(&u);
        cel_buf_reset(&all);
        dir_records(a, &all);
        cel_buf report;
        cel_buf_init(&report);
        cel_status st = cel_job_merge(parts, true, &report, &e);
        if (st) fprintf(stderr, "%s\n", e.msg);
        assert_int_equal(st, CEL_OK);
        snprintf(pd, sizeof pd, "%s/manifest.json", parts);
        char *man = read_all(pd, NULL);
        assert_non_null(man);
        json_t *mj = json_loads(man, 0, NULL);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(mj, "counts"), "records")), whole_records);
        json_decref(mj);
        free(man);
        /* a missing part fails verification, naming it */
        snprintf(pd, sizeof pd, "rm -rf '%s/part-00001-of-00003'", parts);
        assert_int_equal(system(pd), 0);
        cel_buf_reset(&report);
        assert_int_not_equal(cel_job_verify(parts, false, &report, &e), CEL_OK);
        assert_non_null(strstr(e.msg, "part 1"));
        cel_buf_free(&report);
    }
    cel_buf_free(&all);
    rm_rf(tmp_root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_plain),
        cmocka_unit_test(test_reader_zstd),
        cmocka_unit_test(test_inputs_expand),
        cmocka_unit_test(test_job_resume_exact),
        cmocka_unit_test(test_job_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
