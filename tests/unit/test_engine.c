/* The engine API on real (tiny, committed) models and the CPU backend:
 * greedy output equals a plain one-sequence loop over the backend, batch
 * invariance and chunked prefill on real kernels, prefix-cache reuse, n > 1,
 * stop strings on real detokenized text, the engine thread, and weights
 * changing in place. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "test_sampling.h"

#define MODELS CELINE_SOURCE_DIR "/tests/data/models/"

static cel_model *load(const char *name)
{
    cel_model *m = NULL;
    cel_error err;
    char path[512];
    snprintf(path, sizeof path, MODELS "%s", name);
    if (cel_model_load(path, NULL, &m, &err) != CEL_OK) fail_msg("load %s: %s", path, err.msg);
    return m;
}

static cel_engine *engine(cel_model *m, int32_t batch, int32_t max_seqs)
{
    cel_engine_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 2;
    p.max_batch_tokens = batch;
    p.max_seqs = max_seqs;
    p.n_ctx = 512;
    p.kv_bytes = cel_backend_kv_block_bytes(&m->hp, 16, CEL_BACKEND_CPU) * 256;
    cel_engine *e = NULL;
    cel_error err;
    if (cel_engine_create(m, &p, &e, &err) != CEL_OK) fail_msg("engine: %s", err.msg);
    return e;
}

static void prompt_of(int32_t *p, int n, uint64_t seed, int32_t n_vocab)
{
    cel_rng r;
    cel_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) p[i] = (int32_t)(3 + cel_rng_next(&r) % (uint64_t)(n_vocab - 3));
}

/* Greedy tokens from a plain loop over a fresh CPU backend: one sequence,
 * the whole prompt in one forward, then one token per forward. */
static void direct_greedy(cel_model *m, const int32_t *prompt, int n_prompt, int n_gen, int32_t *out)
{
    cel_backend_params bp;
    memset(&bp, 0, sizeof bp);
    bp.n_threads = 1;
    bp.block_size = 16;
    bp.kv_bytes = cel_backend_kv_block_bytes(&m->hp, 16, CEL_BACKEND_CPU) * 32;
    bp.max_batch_tokens = 512;
    cel_backend *be;
    cel_error err;
    if (cel_backend_cpu_create(m, &bp, &be, &err) != CEL_OK) fail_msg("backend: %s", err.msg);
    int32_t table[32];
    for (int i = 0; i < 32; i++) table[i] = i;
    const int32_t V = m->hp.n_vocab;
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t toks[512];
    memcpy(toks, prompt, (size_t)n_prompt * sizeof *toks);
    int n_past = 0, n = n_prompt;
    for (int g = 0; g < n_gen; g++) {
        cel_batch_seq s = {.block_table = table, .n_blocks = (n + 15) / 16, .n_past = n_past, .n_new = n - n_past,
                           .first = 0};
        int32_t row = n - n_past - 1;
        cel_batch b = {.n_tokens = n - n_past, .tokens = toks + n_past, .n_seqs = 1, .seqs = &s, .n_out = 1,
                       .out_rows = &row, .logits = logits};
        if (be->v->forward(be, &b, &err) != CEL_OK) fail_msg("forward: %s", err.msg);
        int32_t best = 0;
        for (int32_t v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        out[g] = best;
        n_past = n;
        toks[n++] = best;
    }
    free(logits);
    cel_backend_free(be);
}

static void test_greedy_matches_direct_loop(void **state)
{
    (void)state;
    const char *names[] = {"llama-f32.gguf", "qwen2-q8_0.gguf"};
    for (int k = 0; k < 2; k++) {
        cel_model *m = load(names[k]);
        int32_t prompt[37];
        prompt_of(prompt, 37, 1 + (uint64_t)k, m->hp.n_vocab);
        int32_t want[20];
        direct_greedy(m, prompt, 37, 20, want);
        cel_engine *e = engine(m, 8, 16); /* chunked: 8 tokens a step */
        cel_completion c;
        cel_error err;
        cel_sampling s = test_sampling(0, 0, 20, true);
        assert_int_equal(cel_engine_generate(e, prompt, 37, 1, &s, &c, &err), CEL_OK);
        assert_int_equal(c.n_ids, 20);
        assert_memory_equal(c.ids, want, sizeof want);
        assert_int_equal(c.finish, CEL_FINISH_LENGTH);
        /* the streamed text is the detokenized ids */
        cel_buf t;
        cel_buf_init(&t);
        assert_int_equal(cel_detokenize(m->tok, c.ids, c.n_ids, true, &t, &err), CEL_OK);
        assert_int_equal(strlen(c.text), t.len);
        if (t.len) assert_memory_equal(c.text, t.data, t.len);
        for (size_t i = 0; i < c.n_ids; i++) assert_true(c.logprobs[i] <= 0 && isfinite(c.logprobs[i]));
        cel_buf_free(&t);
        cel_completion_free(&c);
        cel_engine_free(e);
        cel_model_free(m);
    }
}

typedef struct collected {
    int32_t ids[4][64];
    float lp[4][64];
    int n[4];
    cel_finish fin[4];
    int32_t cached;
} collected;

static void on_token(void *ud, const cel_token_event *ev)
{
    collected *c = ud;
    if (ev->token >= 0 && c->n[ev->sample] < 64) {
        c->ids[ev->sample][c->n[ev->sample]] = ev->token;
        c->lp[ev->sample][c->n[ev->sample]++] = ev->logprob;
    }
    c->cached = ev->n_cached_tokens;
    if (ev->finish) c->fin[ev->sample] = ev->finish;
}

static void submit(cel_engine *e, const int32_t *p, size_t n, uint32_t ns, cel_sampling s, collected *out)
{
    cel_request r = {.prompt = p, .n_prompt = n, .n = ns, .sampling = s, .cb = on_token, .ud = out};
    cel_error err;
    uint64_t id;
    if (cel_engine_submit(e, &r, &id, &err) != CEL_OK) fail_msg("submit: %s", err.msg);
}

static void test_batch_invariance_cpu(void **state)
{
    (void)state;
    cel_model *m = load("qwen2-q8_0.gguf");
    enum { NR = 4 };
    int lens[NR] = {23, 5, 41, 16};
    uint32_t ns[NR] = {1, 3, 1, 2};
    int32_t prompts[NR][64];
    collected alone[NR], together[NR];
    memset(alone, 0, sizeof alone);
    memset(together, 0, sizeof together);
    for (int i = 0; i < NR; i++) {
        prompt_of(prompts[i], lens[i], 50 + (uint64_t)i, m->hp.n_vocab);
        cel_engine *e = engine(m, 512, 16);
        cel_sampling s = test_sampling(0.9f, 7 + (uint64_t)i, 12, true);
        s.n_logprobs = 2;
        submit(e, prompts[i], (size_t)lens[i], ns[i], s, &alone[i]);
        cel_error err;
        assert_int_equal(cel_engine_run_until_idle(e, &err), CEL_OK);
        cel_engine_free(e);
    }
    cel_engine *e = engine(m, 10, 16); /* prompts chunked and mixed with decodes */
    for (int i = 0; i < NR; i++) {
        cel_sampling s = test_sampling(0.9f, 7 + (uint64_t)i, 12, true);
        s.n_logprobs = 2;
        submit(e, prompts[i], (size_t)lens[i], ns[i], s, &together[i]);
    }
    cel_error err;
    assert_int_equal(cel_engine_run_until_idle(e, &err), CEL_OK);
    for (int i = 0; i < NR; i++)
        for (uint32_t k = 0; k < ns[i]; k++) {
            assert_int_equal(together[i].n[k], 12);
            assert_memory_equal(together[i].ids[k], alone[i].ids[k], 12 * sizeof(int32_t));
            for (int t = 0; t < 12; t++) assert_float_equal(together[i].lp[k][t], alone[i].lp[k][t], 1e-4);
        }
    cel_engine_free(e);
    cel_model_free(m);
}

static void test_prefix_cache_and_n_samples(void **state)
{
    (void)state;
    cel_model *m = load("llama-f32.gguf");
    cel_engine *e = engine(m, 512, 16);
    int32_t p[50];
    prompt_of(p, 50, 99, m->hp.n_vocab);
    collected a = {0}, b = {0};
    submit(e, p, 50, 1, test_sampling(0, 0, 6, true), &a);
    cel_error err;
    assert_int_equal(cel_engine_run_until_idle(e, &err), CEL_OK);
    cel_engine_stats st0, st1;
    cel_engine_get_stats(e, &st0);
    submit(e, p, 50, 3, test_sampling(0.8f, 5, 6, true), &b);
    assert_int_equal(cel_engine_run_until_idle(e, &err), CEL_OK);
    cel_engine_get_stats(e, &st1);
    assert_int_equal(b.cached, 48);
    assert_int_equal(st1.prompt_tokens - st0.prompt_tokens, 2); /* 50 - 48, once for all three samples */
    assert_int_equal(st1.prefix_hits, 1);
    for (int k = 0; k < 3; k++) assert_int_equal(b.n[k], 6);
    cel_engine_free(e);
    cel_model_free(m);
}

static void test_stop_string_on_real_text(void **state)
{
    (void)state;
    cel_model *m = load("qwen2-q8_0.gguf");
    cel_engine *e = engine(m, 512, 16);
    int32_t p[12];
    prompt_of(p, 12, 3, m->hp.n_vocab);
    cel_sampling s = test_sampling(1.0f, 11, 40, true); /* sampled: varied text */
    cel_completion full;
    cel_error err;
    assert_int_equal(cel_engine_generate(e, p, 12, 1, &s, &full, &err), CEL_OK);
    /* a stop string that starts in one token's text and ends in a later one,
     * around the middle of the output */
    cel_buf pre;
    cel_buf_init(&pre);
    size_t cut = 0;
    for (size_t k = full.n_ids / 2; k < full.n_ids && !cut; k++) {
        cel_buf_reset(&pre);
        assert_int_equal(cel_detokenize(m->tok, full.ids, k, true, &pre, &err), CEL_OK);
        if (pre.len >= 2 && pre.len + 2 <= strlen(full.text)) cut = pre.len;
    }
    assert_true(cut > 0);
    char stop[5];
    memcpy(stop, full.text + cut - 2, 4);
    stop[4] = '\0';
    const char *first = strstr(full.text, stop);
    assert_non_null(first);
    const char *stops[1] = {stop};
    s.stop = stops;
    s.n_stop = 1;
    cel_completion c;
    assert_int_equal(cel_engine_generate(e, p, 12, 1, &s, &c, &err), CEL_OK);
    assert_int_equal(c.finish, CEL_FINISH_STOP);
    assert_int_equal(strlen(c.text), (size_t)(first - full.text));
    assert_memory_equal(c.text, full.text, strlen(c.text));
    assert_true(c.n_ids < full.n_ids);
    cel_buf_free(&pre);
    cel_completion_free(&c);
    cel_completion_free(&full);
    cel_engine_free(e);
    cel_model_free(m);
}

static void test_thread_and_weights_changed(void **state)
{
    (void)state;
    cel_model *m = load("llama-f32.gguf");
    cel_engine *e = engine(m, 64, 16);
    cel_error err;
    assert_int_equal(cel_engine_start(e, &err), CEL_OK);
    int32_t p[40];
    prompt_of(p, 40, 8, m->hp.n_vocab);
    cel_sampling s = test_sampling(0, 0, 10, true);
    cel_completion a, b, c;
    assert_int_equal(cel_engine_generate(e, p, 40, 1, &s, &a, &err), CEL_OK);
    cel_engine_stats st;
    cel_engine_get_stats(e, &st);
    assert_true(st.kv_blocks_total > 0);
    /* change the final norm in place: output changes, and the cached prefix is gone */
    cel_tensor *t;
    assert_int_equal(cel_model_make_writable(m, "output_norm.weight", &t, &err), CEL_OK);
    assert_int_equal(t->dtype, CEL_DTYPE_F32);
    float *w = t->data;
    for (int64_t i = 0; i < t->ne[0]; i++) w[i] = (i % 2) ? -w[i] * 3.0f : w[i];
    assert_int_equal(cel_engine_weights_changed(e, &err), CEL_OK);
    assert_int_equal(cel_engine_generate(e, p, 40, 1, &s, &b, &err), CEL_OK);
    assert_memory_not_equal(a.ids, b.ids, 10 * sizeof(int32_t));
    int32_t want[10];
    direct_greedy(m, p, 40, 10, want);
    assert_memory_equal(b.ids, want, sizeof want);
    cel_engine_get_stats(e, &st);
    assert_int_equal(st.cached_tokens, 0); /* the first run's blocks were dropped with the old weights */
    assert_int_equal(cel_engine_generate(e, p, 40, 1, &s, &c, &err), CEL_OK);
    assert_memory_equal(c.ids, b.ids, 10 * sizeof(int32_t));
    cel_engine_get_stats(e, &st);
    assert_int_equal(st.cached_tokens, 32); /* the second run's blocks are reused */
    cel_completion_free(&a);
    cel_completion_free(&b);
    cel_completion_free(&c);
    cel_engine_stop(e);
    cel_engine_free(e);
    cel_model_free(m);
}

static void test_bad_params(void **state)
{
    (void)state;
    cel_model *m = load("llama-f32.gguf");
    cel_engine_params p;
    memset(&p, 0, sizeof p);
    p.max_seqs = -1;
    cel_engine *e;
    cel_error err;
    assert_int_equal(cel_engine_create(m, &p, &e, &err), CEL_ERR_INVALID);
    memset(&p, 0, sizeof p);
    p.backend = (cel_backend_kind)7;
    assert_int_equal(cel_engine_create(m, &p, &e, &err), CEL_ERR_INVALID);
    memset(&p, 0, sizeof p);
    p.kv_bytes = 1; /* less than one block */
    assert_int_equal(cel_engine_create(m, &p, &e, &err), CEL_ERR_LIMIT);
    assert_string_equal(cel_finish_name(CEL_FINISH_STOP), "stop");
    assert_string_equal(cel_finish_name(CEL_FINISH_LENGTH), "length");
    cel_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_direct_loop),
        cmocka_unit_test(test_batch_invariance_cpu),
        cmocka_unit_test(test_prefix_cache_and_n_samples),
        cmocka_unit_test(test_stop_string_on_real_text),
        cmocka_unit_test(test_thread_and_weights_changed),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
