/* Unit tests for job specs (typed keys from JSON and from text, refusals
 * naming the key, the recorded config) and for the resume rules that need
 * more than the mind pipeline: CrossThink's question dedup rebuilt on resume
 * (and a proof the test catches its absence), the one-process lock, a
 * damaged state file, and changed inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "celine/job.h"
#include "test_gen_mock.h"
#include "test_gen_fixture.h"

static char root[200];

static void mk_root(void)
{
    snprintf(root, sizeof root, "/tmp/celine_test_job_spec_XXXXXX");
    assert_non_null(mkdtemp(root));
}

static void rm_root(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static void put_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ------------------------------------------------------------------ specs */

/* A new spec holding the JSON object js, which must merge. */
static cel_job_spec *spec_of(const char *js)
{
    cel_job_spec *s;
    cel_error e;
    assert_int_equal(cel_job_spec_create(&s, &e), CEL_OK);
    cel_status st = cel_job_spec_merge_json(s, js, strlen(js), ~0u, "cfg.json", &e);
    if (st) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(st, CEL_OK);
    return s;
}

static void test_spec_keys(void **state)
{
    (void)state;
    cel_error e;
    cel_job_spec *s = spec_of("{\"kind\":\"mind\",\"input\":\"a.jsonl\",\"styles\":\"debate, interview\",\"chunk_tokens\":300,"
                              "\"temperature\":0.7,\"rejects\":true,\"api_key\":\"sekret\"}");
    /* repeated paths add up; comma lists split and trim */
    assert_int_equal(cel_job_spec_set(s, "input", "b/*.jsonl.zst", &e), CEL_OK);
    const char *items[8];
    assert_int_equal(cel_job_spec_list(s, "input", items, 8), 2);
    assert_string_equal(items[1], "b/*.jsonl.zst");
    assert_int_equal(cel_job_spec_list(s, "styles", items, 8), 2);
    assert_string_equal(items[1], "interview");
    assert_int_equal(cel_job_spec_set(s, "shard", "2/8", &e), CEL_OK);
    assert_int_equal(cel_job_spec_validate(s, &e), CEL_OK);
    cel_buf b;
    cel_buf_init(&b);
    assert_int_equal(cel_job_spec_json(s, &b), CEL_OK);
    assert_null(strstr(b.data, "sekret")); /* secrets never leave */
    assert_non_null(strstr(b.data, "\"chunk_tokens\":300"));
    cel_buf_free(&b);

    /* refusals name the key */
    assert_int_equal(cel_job_spec_set(s, "chunk_tokens", "12x", &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "chunk-tokens"));
    assert_int_equal(cel_job_spec_set(s, "chunk_tokens", "0", &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "1..1048576"));
    assert_int_equal(cel_job_spec_set(s, "top_p", "1.5", &e), CEL_ERR_INVALID);
    assert_int_equal(cel_job_spec_set(s, "nope", "1", &e), CEL_ERR_INVALID);
    assert_int_equal(cel_job_spec_set(s, "kind", "poem", &e), CEL_ERR_INVALID);
    const char *bad[] = {"{\"chunk_tokens\":\"300\"}", "{\"styles\":[1]}", "{\"x\":1}", "[1]", "{\"rejects\":1}", "{"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_not_equal(cel_job_spec_merge_json(s, bad[i], strlen(bad[i]), ~0u, "body", &e), CEL_OK);
        assert_non_null(strstr(e.msg, "body"));
    }
    /* scopes: a one-shot request may not name inputs */
    assert_int_equal(cel_job_spec_merge_json(s, "{\"input\":\"x\"}", 13, CEL_JOBKEY_GEN, "request", &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "not accepted here"));
    /* keys of another kind */
    assert_int_equal(cel_job_spec_set(s, "prompts", "distill", &e), CEL_OK);
    assert_int_equal(cel_job_spec_validate(s, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "\"prompts\" does not apply to mind jobs"));
    cel_job_spec_free(s);

    assert_int_equal(cel_job_spec_create(&s, &e), CEL_OK);
    assert_int_equal(cel_job_spec_validate(s, &e), CEL_ERR_INVALID); /* no kind */
    assert_int_equal(cel_job_spec_set(s, "kind", "crossthink", &e), CEL_OK);
    assert_int_equal(cel_job_spec_set(s, "shard", "4/4", &e), CEL_OK);
    assert_int_equal(cel_job_spec_validate(s, &e), CEL_ERR_INVALID);
    assert_int_equal(cel_job_spec_set(s, "shard", "0/4", &e), CEL_OK);
    assert_int_equal(cel_job_spec_set(s, "formats", "mcq,essay", &e), CEL_OK);
    assert_int_equal(cel_job_spec_validate(s, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "essay"));
    cel_job_spec_free(s);
    assert_non_null(cel_job_key_find("frame_records"));
    assert_null(cel_job_key_find("frame-records"));
}

/* The recorded config: defaults filled, templates named with their hash,
 * backend settings left out. */
static void test_spec_config(void **state)
{
    (void)state;
    cel_error e;
    cel_job_spec *s = spec_of("{\"kind\":\"mind\",\"styles\":[\"debate\"],\"seed\":9,\"backend\":\"http://127.0.0.1:9\","
                              "\"concurrency\":3,\"frame_records\":50}");
    cel_job_env env = {CELINE_SOURCE_DIR "/templates", NULL, NULL, NULL, {0}};
    cel_job_gen *g;
    cel_status st = cel_job_gen_open(s, &env, &g, &e);
    if (st) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(st, CEL_OK);
    const char *c = cel_job_gen_config(g);
    json_t *o = json_loads(c, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "kind")), "mind");
    assert_int_equal(json_integer_value(json_object_get(o, "seed")), 9);
    assert_int_equal(json_integer_value(json_object_get(o, "chunk_tokens")), 500); /* the MIND default */
    assert_int_equal(json_integer_value(json_object_get(o, "frame_records")), 50);
    assert_null(json_object_get(o, "concurrency"));
    assert_null(json_object_get(o, "backend"));
    json_t *t = json_object_get(o, "templates");
    assert_int_equal(json_object_size(t), 1);
    assert_non_null(strstr(json_string_value(json_object_get(t, "debate")), "debate#"));
    assert_false(cel_job_gen_dedups(g));
    json_decref(o);
    cel_job_gen_free(g);
    cel_job_spec_free(s);
    /* an unknown style is an error naming it */
    s = spec_of("{\"kind\":\"mind\",\"styles\":[\"sonnet\"],\"backend\":\"http://127.0.0.1:9\"}");
    assert_int_equal(cel_job_gen_open(s, &env, &g, &e), CEL_OK);
    cel_gen_sink sink = {NULL, NULL, NULL};
    cel_gen_pipeline *p = NULL;
    assert_int_not_equal(cel_job_gen_pipeline(g, &sink, &p, &e), CEL_OK);
    cel_job_gen_free(g);
    cel_job_spec_free(s);
    /* a backend that is neither local nor a URL */
    s = spec_of("{\"kind\":\"rephrase\",\"backend\":\"ftp://x\"}");
    assert_int_equal(cel_job_gen_open(s, &env, &g, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "ftp://x"));
    cel_job_spec_free(s);
}

/* ---------------------------------------------------- CrossThink dedup resume */

/* Every document asks the same shared question (deduplicated) and one of its own. */
static cel_finish dedup_script(void *ud, const char *prompt, uint64_t seed, uint32_t sample, cel_buf *out)
{
    (void)ud;
    (void)sample;
    const char *d = strstr(prompt, "DOC");
    int n = d ? atoi(d + 3) : -1;
    if (strncmp(prompt, "SYNTH mcq", 9) == 0)
        cel_buf_printf(out, "Question: What is the shared constant?\nA) 1\nB) 2\nAnswer: B\n\n"
                            "Question: Which item belongs to doc %d (seed %llu)?\nA) this\nB) that\nAnswer: A\n",
                       n, (unsigned long long)(seed % 1000));
    return CEL_FINISH_STOP;
}

static cel_status make_ct(void *ud, const cel_gen_sink *sink, cel_gen_pipeline **out, cel_error *err)
{
    job_maker *c = ud;
    cel_crossthink_config cfg;
    cel_crossthink_config_default(&cfg);
    cfg.templates = c->set;
    cfg.open = false;
    cfg.c.max_inflight_docs = 3;
    return cel_crossthink_create(&cfg, c->be, sink, out, err);
}

static cel_status run_dedup(const char *out, bool dedup_flag, stopper *stop, cel_job_result *res, cel_error *e)
{
    cel_template_set *set = make_set(ct_srcs, 4); /* the fixture's CrossThink templates */
    mock_backend *mb = mock_new(dedup_script, NULL, MOCK_FIFO, 1);
    job_maker c = {set, &mb->base};
    char in[400];
    snprintf(in, sizeof in, "%s/docs.jsonl", root);
    const char *inputs[1] = {in};
    cel_job_opts o;
    job_opts_one(&o, inputs, out);
    o.frame_records = 3;
    o.dedup = dedup_flag;
    o.config_json = "{\"kind\":\"crossthink\"}";
    cel_job_hooks h = stop_hooks(stop);
    cel_status st = cel_job_run(&o, make_ct, &c, &mb->base, &h, res, e);
    cel_gen_backend_free(&mb->base);
    cel_template_set_free(set);
    return st;
}

static char *slurp(const char *path, size_t *n)
{
    char *d = NULL;
    cel_error e;
    if (cel_read_file(path, 0, &d, n, &e)) return NULL;
    return d;
}

/* Resumes out until done, stopping after k checks each time; returns rounds. */
static int resume_until_done(const char *out, bool dedup_flag)
{
    int rounds = 0;
    cel_job_result res;
    cel_error e;
    for (int k = 2;; k += 3) {
        stopper s = {0, k};
        cel_status st = run_dedup(out, dedup_flag, &s, &res, &e);
        if (st) fprintf(stderr, "%s\n", e.msg);
        assert_int_equal(st, CEL_OK);
        rounds++;
        if (res.done) return rounds;
        assert_true(rounds < 100);
    }
}

static void test_dedup_resume(void **state)
{
    (void)state;
    mk_root();
    char p[600];
    snprintf(p, sizeof p, "%s/docs.jsonl", root);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 30; i++) fprintf(f, "{\"id\":\"d%d\",\"text\":\"DOC%d is a short text about things.\"}\n", i, i);
    fclose(f);
    char a[400], b[400], c[400];
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b", root);
    snprintf(c, sizeof c, "%s/c", root);
    cel_job_result res;
    cel_error e;
    assert_int_equal(run_dedup(a, true, NULL, &res, &e), CEL_OK);
    assert_int_equal(res.c.records, 31); /* one shared question + one per document */
    assert_int_equal(res.c.dropped[CEL_DROP_DUPLICATE], 29);
    assert_true(resume_until_done(b, true) > 3);
    assert_true(resume_until_done(c, false) > 3); /* without rebuilding the dedup set */
    char pa[500], pb[500];
    snprintf(pa, sizeof pa, "%s/shard-00000.jsonl.zst", a);
    snprintf(pb, sizeof pb, "%s/shard-00000.jsonl.zst", b);
    size_t nx, ny;
    char *x = slurp(pa, &nx), *y = slurp(pb, &ny);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(y);
    snprintf(pb, sizeof pb, "%s/shard-00000.jsonl.zst", c);
    y = slurp(pb, &ny);
    assert_non_null(y);
    assert_true(nx != ny || memcmp(x, y, nx) != 0); /* the shared question came back: the check above can fail */
    free(x);
    free(y);

    /* one process per folder */
    snprintf(p, sizeof p, "%s/.lock", a);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
    assert_int_equal(run_dedup(a, true, NULL, &res, &e), CEL_ERR_BUSY);
    assert_non_null(strstr(e.msg, "another process"));
    close(fd);

    /* a damaged checkpoint is an error naming it, not a silent restart */
    stopper s = {0, 3};
    snprintf(c, sizeof c, "%s/d", root);
    assert_int_equal(run_dedup(c, true, &s, &res, &e), CEL_OK);
    assert_false(res.done);
    snprintf(p, sizeof p, "%s/state.json", c);
    put_file(p, "{\"version\":1,\"state\":\"running\"}");
    assert_int_equal(run_dedup(c, true, NULL, &res, &e), CEL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "state.json"));
    /* changed inputs are refused */
    rm_root();
    mk_root();
    snprintf(p, sizeof p, "%s/docs.jsonl", root);
    put_file(p, "{\"id\":\"a\",\"text\":\"DOC1 text\"}\n{\"id\":\"b\",\"text\":\"DOC2 text\"}\n");
    snprintf(c, sizeof c, "%s/e", root);
    s = (stopper){0, 1};
    assert_int_equal(run_dedup(c, true, &s, &res, &e), CEL_OK);
    put_file(p, "{\"id\":\"a\",\"text\":\"DOC1 text\"}\n{\"id\":\"b\",\"text\":\"DOC2 text, longer\"}\n");
    assert_int_equal(run_dedup(c, true, NULL, &res, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "inputs changed"));
    rm_root();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_keys),
        cmocka_unit_test(test_spec_config),
        cmocka_unit_test(test_dedup_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
