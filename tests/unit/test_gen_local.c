/* Unit tests for the local (engine) backend with a committed random-weight
 * test model: chat and raw prompts, n > 1, results identical whether the
 * engine is stepped by poll or runs its own thread, the backlog when the
 * engine's queue is full, cancellation at free, and token counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"

#define MODEL CELINE_SOURCE_DIR "/tests/data/models/qwen2-q8_0.gguf"

typedef struct res {
    int calls;
    cel_status status;
    uint32_t n;
    char text[4][512];
    int32_t ntok[4];
    cel_finish fin[4];
    int32_t prompt_tokens;
} res;

static void on_done(void *ud, const cel_gen_result *r)
{
    res *x = ud;
    x->calls++;
    x->status = r->status;
    x->n = r->n;
    x->prompt_tokens = r->n_prompt_tokens;
    for (uint32_t i = 0; i < r->n && i < 4; i++) {
        snprintf(x->text[i], sizeof x->text[i], "%.*s", (int)r->samples[i].len, r->samples[i].text);
        x->ntok[i] = r->samples[i].n_tokens;
        x->fin[i] = r->samples[i].finish;
    }
}

static void submit(cel_gen_backend *b, int k, uint32_t n, int32_t max_tokens, res *out)
{
    char user[64];
    snprintf(user, sizeof user, "Tell me about number %d.", k);
    cel_chat_msg msgs[2] = {{"system", "You are terse."}, {"user", user}};
    cel_gen_request r = {.messages = msgs, .n_messages = 2, .n = n, .cb = on_done, .ud = out};
    r.sampling.temperature = 1.5f;
    r.sampling.top_p = 1.0f;
    r.sampling.max_tokens = max_tokens;
    r.sampling.seed = 1000 + (uint64_t)k;
    r.sampling.repetition_penalty = 1.0f;
    r.sampling.n_logprobs = -1;
    if (k == 3) { /* one raw prompt */
        r.n_messages = 0;
        r.prompt = "Once upon a time";
    }
    cel_error e;
    cel_status st = cel_gen_backend_submit(b, &r, &e);
    if (st) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(st, CEL_OK);
}

static int notified;
static void notify(void *ud)
{
    (void)ud;
    __atomic_add_fetch(&notified, 1, __ATOMIC_RELAXED);
}

/* The test model on a one-thread engine (max_queue 0: the engine's default);
 * the caller frees both. */
static cel_engine *open_engine(int32_t max_queue, cel_model **m)
{
    cel_error e;
    assert_int_equal(cel_model_load(MODEL, NULL, m, &e), CEL_OK);
    cel_engine_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 1;
    p.max_queue = max_queue;
    cel_engine *eng;
    assert_int_equal(cel_engine_create(*m, &p, &eng, &e), CEL_OK);
    return eng;
}

static void run_set(bool threaded, int32_t max_queue, res out[5])
{
    cel_model *m;
    cel_engine *eng = open_engine(max_queue, &m);
    cel_error e;
    if (threaded) assert_int_equal(cel_engine_start(eng, &e), CEL_OK);
    cel_gen_local_opts o = {.chat = CEL_CHAT_AUTO, .engine_threaded = threaded, .notify = notify};
    cel_gen_backend *b;
    assert_int_equal(cel_gen_local_create(eng, &o, &b, &e), CEL_OK);
    assert_string_equal(b->model_name, "qwen2-q8_0");
    for (int k = 0; k < 5; k++) submit(b, k, k == 2 ? 3 : 1, 12, &out[k]);
    assert_int_equal(cel_gen_backend_pending(b), 5);
    assert_int_equal(cel_gen_backend_wait_all(b, &e), CEL_OK);
    for (int k = 0; k < 5; k++) {
        assert_int_equal(out[k].calls, 1);
        assert_int_equal(out[k].status, CEL_OK);
        assert_int_equal(out[k].n, k == 2 ? 3 : 1);
        assert_true(out[k].prompt_tokens > 5);
        for (uint32_t i = 0; i < out[k].n; i++) {
            assert_int_equal(out[k].ntok[i], 12);
            assert_int_equal(out[k].fin[i], CEL_FINISH_LENGTH);
        }
    }
    /* the three samples of one request differ (seeded per sample) */
    assert_true(strcmp(out[2].text[0], out[2].text[1]) != 0 || strcmp(out[2].text[1], out[2].text[2]) != 0);
    cel_gen_backend_free(b);
    if (threaded) cel_engine_stop(eng);
    cel_engine_free(eng);
    cel_model_free(m);
}

static void test_modes_agree(void **state)
{
    (void)state;
    res a[5], b[5], c[5];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    memset(c, 0, sizeof c);
    run_set(false, 0, a);
    notified = 0;
    run_set(true, 0, b);
    assert_true(__atomic_load_n(&notified, __ATOMIC_RELAXED) >= 5);
    run_set(false, 1, c); /* a queue of one: the rest waits in the backend's backlog */
    for (int k = 0; k < 5; k++)
        for (uint32_t i = 0; i < a[k].n; i++) {
            assert_string_equal(a[k].text[i], b[k].text[i]);
            assert_string_equal(a[k].text[i], c[k].text[i]);
        }
}

static void test_cancel_and_count(void **state)
{
    (void)state;
    cel_gen_backend *b;
    cel_error e;
    cel_engine_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 1;
    assert_int_equal(cel_gen_local_open(MODEL, NULL, &p, NULL, &b, &e), CEL_OK);
    /* token counts are the model tokenizer's */
    const char *s = "Hello world, $x^2$!";
    size_t n;
    assert_int_equal(b->counter.fn(b->counter.ud, s, strlen(s), &n, &e), CEL_OK);
    assert_true(n > 3 && n < 40);
    res r[3];
    memset(r, 0, sizeof r);
    for (int k = 0; k < 3; k++) submit(b, k, 1, 4000, &r[k]);
    assert_int_equal(cel_gen_backend_poll(b, 0, &e), CEL_OK); /* steps until something finishes... */
    cel_gen_backend_free(b);                                   /* ...then the rest is cancelled */
    int cancelled = 0;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(r[k].calls, 1);
        cancelled += r[k].status == CEL_ERR_CANCELLED;
    }
    assert_true(cancelled >= 2);
    /* a missing model is an error naming the file */
    assert_int_not_equal(cel_gen_local_open("/nonexistent/model.gguf", NULL, &p, NULL, &b, &e), CEL_OK);
    assert_non_null(strstr(e.msg, "/nonexistent/model.gguf"));
}

/* A pipeline freed while its requests run (a client that went away) cancels
 * them: the engine stops generating instead of finishing 4000 tokens each. */
static void test_pipeline_free_cancels(void **state)
{
    (void)state;
    cel_model *m;
    cel_engine *eng = open_engine(0, &m);
    cel_error e;
    cel_gen_backend *b;
    assert_int_equal(cel_gen_local_create(eng, NULL, &b, &e), CEL_OK);
    cel_template_set *set;
    assert_int_equal(cel_template_set_create(&set, &e), CEL_OK);
    assert_int_equal(cel_template_set_load_dir(set, CELINE_SOURCE_DIR "/templates", &e), CEL_OK);
    cel_mind_config cfg;
    cel_mind_config_default(&cfg);
    cfg.templates = set;
    cfg.c.sampling.max_tokens = 4000;
    cfg.c.sampling.temperature = 1.5f;
    cfg.c.sampling.top_p = 1.0f;
    cel_buf out;
    cel_buf_init(&out);
    cel_gen_sink sink = {NULL, NULL, &out};
    sink.record = NULL;
    cel_gen_pipeline *pl;
    /* a sink without record() is refused */
    assert_int_equal(cel_mind_create(&cfg, b, &sink, &pl, &e), CEL_ERR_INVALID);
    cel_gen_jsonl_sink js;
    cel_gen_jsonl_sink_init(&js, stdout, "stdout", NULL);
    assert_int_equal(cel_mind_create(&cfg, b, &js.sink, &pl, &e), CEL_OK);
    cel_gen_doc d = {"x", "Two and two make $2+2=4$.", 25, NULL};
    assert_int_equal(cel_gen_pipeline_push(pl, &d, &e), CEL_OK);
    assert_int_equal(cel_gen_backend_pending(b), 7);
    for (int i = 0; i < 20; i++) {
        bool did;
        assert_int_equal(cel_engine_step(eng, &did, &e), CEL_OK);
    }
    cel_gen_pipeline_free(pl);
    assert_int_equal(cel_gen_backend_wait_all(b, &e), CEL_OK);
    cel_engine_stats st;
    cel_engine_get_stats(eng, &st);
    assert_true(st.gen_tokens < 7 * 100); /* far from 7 x 4000 */
    assert_int_equal(st.running, 0);
    cel_gen_backend_free(b);
    cel_engine_free(eng);
    cel_model_free(m);
    cel_template_set_free(set);
    cel_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modes_agree),
        cmocka_unit_test(test_cancel_and_count),
        cmocka_unit_test(test_pipeline_free_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
