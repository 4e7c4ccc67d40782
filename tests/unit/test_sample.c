/* Sampling: masks of top-k / top-p / min-p against a brute-force reference,
 * penalty math, drawn frequencies, seed streams, logprobs, stop strings
 * split across token boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sample.h"

static cel_sampling greedy(void)
{
    cel_sampling s;
    memset(&s, 0, sizeof s);
    s.top_p = 1.0f;
    s.repetition_penalty = 1.0f;
    s.n_logprobs = -1;
    s.max_tokens = 16;
    return s;
}

/* ---- brute-force reference of the pipeline after penalties ---- */
static const float *ref_l;
static int ref_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (ref_l[x] != ref_l[y]) return ref_l[x] > ref_l[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* probs over a fully sorted vocabulary: temperature, then top-k (mass over
 * the k), top-p cut, min-p threshold. */
static void ref_probs(const float *logits, int32_t V, float T, int32_t k, float top_p, float min_p, float *probs)
{
    float *l = malloc((size_t)V * sizeof *l);
    int32_t *idx = malloc((size_t)V * sizeof *idx);
    float mx = -INFINITY;
    for (int32_t i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    for (int32_t i = 0; i < V; i++) {
        l[i] = (logits[i] - mx) * (1.0f / T);
        idx[i] = i;
    }
    ref_l = l;
    qsort(idx, (size_t)V, sizeof *idx, ref_cmp);
    int32_t n = (k > 0 && k < V) ? k : V;
    double z = 0;
    for (int32_t i = 0; i < n; i++) z += exp((double)l[idx[i]]);
    if (top_p < 1.0f) {
        double cum = 0;
        for (int32_t i = 0; i < n; i++) {
            cum += exp((double)l[idx[i]]);
            if (cum >= (double)top_p * z) {
                n = i + 1;
                break;
            }
        }
    }
    if (min_p > 0) {
        int32_t m = 0;
        while (m < n && l[idx[m]] >= logf(min_p)) m++;
        n = m;
    }
    double zz = 0;
    for (int32_t i = 0; i < n; i++) zz += exp((double)l[idx[i]]);
    memset(probs, 0, (size_t)V * sizeof *probs);
    for (int32_t i = 0; i < n; i++) probs[idx[i]] = (float)(exp((double)l[idx[i]]) / zz);
    free(l);
    free(idx);
}

static void random_logits(float *l, int32_t V, uint64_t seed, float scale)
{
    cel_rng r;
    cel_rng_seed(&r, seed);
    for (int32_t i = 0; i < V; i++) l[i] = (float)(cel_rng_uniform(&r) * scale);
}

static void check_against_ref(int32_t V, float scale, float T, int32_t k, float top_p, float min_p)
{
    cel_error err;
    cel_sample_scratch ws;
    assert_int_equal(cel_sample_scratch_init(&ws, V, &err), CEL_OK);
    float *logits = malloc((size_t)V * sizeof *logits), *p = malloc((size_t)V * sizeof *p),
          *q = malloc((size_t)V * sizeof *q);
    random_logits(logits, V, (uint64_t)V * 31 + (uint64_t)k, scale);
    logits[V / 3] = logits[V / 2]; /* a tie: broken by id */
    cel_sampling s = greedy();
    s.temperature = T;
    s.top_k = k;
    s.top_p = top_p;
    s.min_p = min_p;
    cel_sample_state st;
    cel_sample_state_init(&st, 1, 0);
    assert_int_equal(cel_sample_probs(&s, NULL, 0, &st, logits, &ws, p, &err), CEL_OK);
    ref_probs(logits, V, T, k, top_p, min_p, q);
    int32_t nz_p = 0, nz_q = 0;
    for (int32_t i = 0; i < V; i++) {
        nz_p += p[i] > 0;
        nz_q += q[i] > 0;
        assert_true((p[i] > 0) == (q[i] > 0)); /* exactly the same mask */
        assert_true(fabsf(p[i] - q[i]) <= 1e-5f * (q[i] + 1e-3f));
    }
    assert_int_equal(nz_p, nz_q);
    if (k > 0 && k < V) assert_true(nz_p <= k);
    free(logits);
    free(p);
    free(q);
    cel_sample_state_free(&st);
    cel_sample_scratch_free(&ws);
}

static void test_masks_match_reference(void **state)
{
    (void)state;
    check_against_ref(10, 4.0f, 1.0f, 3, 1.0f, 0.0f);      /* top-k */
    check_against_ref(1000, 8.0f, 0.7f, 0, 0.9f, 0.0f);    /* top-p */
    check_against_ref(1000, 8.0f, 1.0f, 0, 1.0f, 0.05f);   /* min-p */
    check_against_ref(1000, 8.0f, 1.3f, 50, 0.8f, 0.1f);   /* all three */
    check_against_ref(50000, 1.0f, 1.0f, 0, 0.9f, 0.0f);   /* flat: top-p grows the sorted head to most of V */
    check_against_ref(50000, 30.0f, 1.0f, 0, 0.95f, 0.0f); /* peaked: a short head */
    check_against_ref(50000, 10.0f, 0.5f, 2000, 0.5f, 0.01f);
    check_against_ref(7, 3.0f, 2.0f, 0, 1.0f, 0.0f);       /* plain softmax */
}

static void test_small_masks_by_hand(void **state)
{
    (void)state;
    cel_error err;
    cel_sample_scratch ws;
    assert_int_equal(cel_sample_scratch_init(&ws, 4, &err), CEL_OK);
    /* probs 0.5, 0.3, 0.15, 0.05 */
    float logits[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)}, p[4];
    cel_sample_state st;
    cel_sample_state_init(&st, 0, 0);
    cel_sampling s = greedy();
    s.temperature = 1.0f;
    s.top_p = 0.75f;
    assert_int_equal(cel_sample_probs(&s, NULL, 0, &st, logits, &ws, p, &err), CEL_OK);
    assert_float_equal(p[0], 0.5f / 0.8f, 1e-5);
    assert_float_equal(p[1], 0.3f / 0.8f, 1e-5);
    assert_true(p[2] == 0 && p[3] == 0);
    s.top_p = 0.85f; /* needs the third token */
    assert_int_equal(cel_sample_probs(&s, NULL, 0, &st, logits, &ws, p, &err), CEL_OK);
    assert_true(p[2] > 0 && p[3] == 0);
    s.top_p = 1.0f;
    s.min_p = 0.25f; /* keeps p >= 0.125 */
    assert_int_equal(cel_sample_probs(&s, NULL, 0, &st, logits, &ws, p, &err), CEL_OK);
    assert_true(p[2] > 0 && p[3] == 0);
    s.min_p = 0.5f;
    assert_int_equal(cel_sample_probs(&s, NULL, 0, &st, logits, &ws, p, &err), CEL_OK);
    assert_true(p[1] > 0 && p[2] == 0);
    s.min_p = 0;
    s.top_k = 1;
    assert_int_equal(cel_sample_probs(&s, NULL, 0, &st, logits, &ws, p, &err), CEL_OK);
    assert_float_equal(p[0], 1.0f, 1e-6);
    /* temperature 2 flattens: p ~ sqrt of the original, renormalised */
    s.top_k = 0;
    s.temperature = 2.0f;
    assert_int_equal(cel_sample_probs(&s, NULL, 0, &st, logits, &ws, p, &err), CEL_OK);
    double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.15) + sqrt(0.05);
    assert_float_equal(p[3], sqrt(0.05) / z, 1e-5);
    cel_sample_scratch_free(&ws);
}

static void test_greedy_and_ties(void **state)
{
    (void)state;
    cel_error err;
    cel_sample_scratch ws;
    assert_int_equal(cel_sample_scratch_init(&ws, 6, &err), CEL_OK);
    float logits[6] = {1, 5, 2, 5, -1, 0};
    cel_sample_state st;
    cel_sample_state_init(&st, 9, 0);
    cel_sampling s = greedy();
    cel_sample_out o;
    assert_int_equal(cel_sample(&s, NULL, 0, &st, logits, &ws, &o, &err), CEL_OK);
    assert_int_equal(o.token, 1); /* lowest id among equal maxima */
    /* greedy draws no randomness */
    cel_sample_state st2;
    cel_sample_state_init(&st2, 9, 0);
    assert_memory_equal(&st.rng, &st2.rng, sizeof st.rng);
    cel_sample_scratch_free(&ws);
}

static void test_penalties_math(void **state)
{
    (void)state;
    cel_error err;
    cel_sample_scratch ws;
    const int32_t V = 6;
    assert_int_equal(cel_sample_scratch_init(&ws, V, &err), CEL_OK);
    float logits[6] = {2.0f, -1.0f, 0.5f, 3.0f, 1.0f, -2.0f}, p[6];
    int32_t prompt[5] = {0, 1, 0, 0, 1}; /* repetition: tokens 0 and 1 */
    int32_t *pset;
    size_t n_pset;
    assert_int_equal(cel_sample_prompt_set(prompt, 5, &pset, &n_pset, &err), CEL_OK);
    assert_int_equal(n_pset, 2);
    cel_sample_state st;
    cel_sample_state_init(&st, 0, 0);
    /* output: token 3 twice, token 5 once */
    assert_int_equal(cel_sample_state_accept(&st, 3, &err), CEL_OK);
    assert_int_equal(cel_sample_state_accept(&st, 5, &err), CEL_OK);
    assert_int_equal(cel_sample_state_accept(&st, 3, &err), CEL_OK);
    assert_int_equal(cel_sample_state_count(&st, 3), 2);
    assert_int_equal(cel_sample_state_count(&st, 4), 0);
    cel_sampling s = greedy();
    s.temperature = 1.0f;
    s.repetition_penalty = 2.0f;
    s.frequency_penalty = 0.25f;
    s.presence_penalty = 0.5f;
    assert_int_equal(cel_sample_probs(&s, pset, n_pset, &st, logits, &ws, p, &err), CEL_OK);
    float want[6] = {
        2.0f / 2,                       /* prompt, positive: divided */
        -1.0f * 2,                      /* prompt, negative: multiplied */
        0.5f,                           /* untouched */
        3.0f / 2 - 0.25f * 2 - 0.5f,    /* output x2: repetition, then frequency + presence */
        1.0f,                           /* untouched */
        -2.0f * 2 - 0.25f * 1 - 0.5f,   /* output x1, negative */
    };
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(want[i]);
    for (int i = 0; i < V; i++) assert_float_equal(p[i], exp(want[i]) / z, 1e-5);
    /* greedy after penalties: token 4 (1.0) beats token 0 (1.0 / ... tie -> lower id 0) */
    s.temperature = 0;
    cel_sample_out o;
    assert_int_equal(cel_sample(&s, pset, n_pset, &st, logits, &ws, &o, &err), CEL_OK);
    assert_int_equal(o.token, 0); /* 0 and 4 both at 1.0: lowest id */
    s.frequency_penalty = 0;
    s.presence_penalty = 0;
    s.repetition_penalty = 1.0f;
    assert_int_equal(cel_sample(&s, pset, n_pset, &st, logits, &ws, &o, &err), CEL_OK);
    assert_int_equal(o.token, 3);
    free(pset);
    cel_sample_state_free(&st);
    cel_sample_scratch_free(&ws);
}

static void test_drawn_frequencies(void **state)
{
    (void)state;
    cel_error err;
    const int32_t V = 8;
    cel_sample_scratch ws;
    assert_int_equal(cel_sample_scratch_init(&ws, V, &err), CEL_OK);
    float logits[8] = {0.1f, 1.2f, -0.5f, 0.7f, 2.0f, 0.0f, -1.0f, 1.5f}, p[8];
    cel_sampling s = greedy();
    s.temperature = 0.9f;
    s.top_k = 6;
    s.top_p = 0.9f;
    cel_sample_state st;
    cel_sample_state_init(&st, 1234, 3);
    assert_int_equal(cel_sample_probs(&s, NULL, 0, &st, logits, &ws, p, &err), CEL_OK);
    int counts[8] = {0};
    const int N = 40000;
    for (int i = 0; i < N; i++) {
        cel_sample_out o;
        assert_int_equal(cel_sample(&s, NULL, 0, &st, logits, &ws, &o, &err), CEL_OK);
        counts[o.token]++;
    }
    for (int i = 0; i < V; i++) {
        double expect = p[i] * N, sd = sqrt(N * p[i] * (1 - p[i])) + 1;
        if (p[i] == 0) assert_int_equal(counts[i], 0);
        else assert_true(fabs(counts[i] - expect) < 5 * sd);
    }
    cel_sample_scratch_free(&ws);
}

static void test_seed_streams(void **state)
{
    (void)state;
    cel_error err;
    const int32_t V = 100;
    cel_sample_scratch ws;
    assert_int_equal(cel_sample_scratch_init(&ws, V, &err), CEL_OK);
    float logits[100];
    random_logits(logits, V, 5, 2.0f);
    cel_sampling s = greedy();
    s.temperature = 1.0f;
    int32_t seq[4][32];
    const uint64_t seeds[4] = {7, 7, 8, 7};
    const uint32_t idx[4] = {0, 0, 0, 1};
    for (int r = 0; r < 4; r++) {
        cel_sample_state st;
        cel_sample_state_init(&st, seeds[r], idx[r]);
        for (int i = 0; i < 32; i++) {
            cel_sample_out o;
            assert_int_equal(cel_sample(&s, NULL, 0, &st, logits, &ws, &o, &err), CEL_OK);
            seq[r][i] = o.token;
        }
    }
    assert_memory_equal(seq[0], seq[1], sizeof seq[0]);     /* same (seed, index): same tokens */
    assert_memory_not_equal(seq[0], seq[2], sizeof seq[0]); /* another seed */
    assert_memory_not_equal(seq[0], seq[3], sizeof seq[0]); /* another sample of the same request */
    cel_sample_scratch_free(&ws);
}

static void test_logprobs(void **state)
{
    (void)state;
    cel_error err;
    const int32_t V = 5;
    cel_sample_scratch ws;
    assert_int_equal(cel_sample_scratch_init(&ws, V, &err), CEL_OK);
    float logits[5] = {1.0f, 3.0f, 2.0f, 3.0f, -4.0f};
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(logits[i]);
    cel_sampling s = greedy();
    s.n_logprobs = 3;
    s.presence_penalty = 10.0f; /* changes the choice, not the reported logprobs */
    cel_sample_state st;
    cel_sample_state_init(&st, 0, 0);
    assert_int_equal(cel_sample_state_accept(&st, 1, &err), CEL_OK);
    assert_int_equal(cel_sample_state_accept(&st, 3, &err), CEL_OK);
    cel_sample_out o;
    assert_int_equal(cel_sample(&s, NULL, 0, &st, logits, &ws, &o, &err), CEL_OK);
    assert_int_equal(o.token, 2);
    assert_float_equal(o.logprob, 2.0 - log(z), 1e-5);
    assert_int_equal(o.n_top, 3);
    assert_int_equal(o.top[0].token, 1);
    assert_int_equal(o.top[1].token, 3);
    assert_int_equal(o.top[2].token, 2);
    assert_float_equal(o.top[0].logprob, 3.0 - log(z), 1e-5);
    s.n_logprobs = -1;
    assert_int_equal(cel_sample(&s, NULL, 0, &st, logits, &ws, &o, &err), CEL_OK);
    assert_int_equal(o.n_top, 0);
    cel_sample_state_free(&st);
    cel_sample_scratch_free(&ws);
}

static void test_validate(void **state)
{
    (void)state;
    cel_error err;
    cel_sampling s = greedy();
    assert_int_equal(cel_sampling_validate(&s, 10, &err), CEL_OK);
    s.top_p = 0;
    assert_int_equal(cel_sampling_validate(&s, 10, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "top_p"));
    s = greedy();
    s.temperature = -1;
    assert_int_equal(cel_sampling_validate(&s, 10, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "temperature"));
    s = greedy();
    int32_t bad = 10;
    s.stop_tokens = &bad;
    s.n_stop_tokens = 1;
    assert_int_equal(cel_sampling_validate(&s, 10, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "stop token 10"));
    s = greedy();
    const char *empty[1] = {""};
    s.stop = empty;
    s.n_stop = 1;
    assert_int_equal(cel_sampling_validate(&s, 10, &err), CEL_ERR_INVALID);
    s = greedy();
    s.n_logprobs = 21;
    assert_int_equal(cel_sampling_validate(&s, 10, &err), CEL_ERR_INVALID);
    s = greedy();
    s.min_p = NAN;
    assert_int_equal(cel_sampling_validate(&s, 10, &err), CEL_ERR_INVALID);
}

/* Pushes pieces through a stopper; returns the concatenated output. */
static char *run_stop(const char *const *stops, size_t n_stop, const char *const *pieces, size_t n, bool *stopped,
                      size_t *stopped_at)
{
    cel_stopper s;
    cel_stopper_init(&s, stops, n_stop);
    cel_buf out;
    cel_buf_init(&out);
    cel_error err;
    *stopped = false;
    *stopped_at = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        bool st;
        assert_int_equal(cel_stopper_push(&s, pieces[i], strlen(pieces[i]), &out, &st, &err), CEL_OK);
        if (st && !*stopped) {
            *stopped = true;
            *stopped_at = i;
        }
    }
    if (!*stopped) assert_int_equal(cel_stopper_flush(&s, &out, &err), CEL_OK);
    cel_stopper_free(&s);
    cel_buf_putc(&out, '\0');
    return cel_buf_steal(&out);
}

static void test_stop_strings(void **state)
{
    (void)state;
    bool stopped;
    size_t at;
    const char *stops[] = {"END", "\n\n", "aab"};
    {
        const char *p[] = {"foo E", "N", "D bar", "more"};
        char *o = run_stop(stops, 3, p, 4, &stopped, &at);
        assert_true(stopped);
        assert_int_equal(at, 2);
        assert_string_equal(o, "foo ");
        free(o);
    }
    {   /* a prefix that does not complete is released */
        const char *p[] = {"x EN", "Dx"};
        const char *one[] = {"END!"};
        char *o = run_stop(one, 1, p, 2, &stopped, &at);
        assert_false(stopped);
        assert_string_equal(o, "x ENDx");
        free(o);
    }
    {   /* overlapping prefix: "aaab" contains "aab" starting at 1 */
        const char *p[] = {"a", "a", "a", "b", "c"};
        char *o = run_stop(stops, 3, p, 5, &stopped, &at);
        assert_true(stopped);
        assert_int_equal(at, 3);
        assert_string_equal(o, "a");
        free(o);
    }
    {   /* earliest of several stop strings wins, even inside one piece */
        const char *p[] = {"hi\n\nthere END"};
        char *o = run_stop(stops, 3, p, 1, &stopped, &at);
        assert_true(stopped);
        assert_string_equal(o, "hi");
        free(o);
    }
    {   /* held text is emitted as soon as it can no longer match */
        cel_stopper s;
        const char *one[] = {"STOP"};
        cel_stopper_init(&s, one, 1);
        cel_buf out;
        cel_buf_init(&out);
        cel_error err;
        bool st;
        assert_int_equal(cel_stopper_push(&s, "abST", 4, &out, &st, &err), CEL_OK);
        assert_int_equal(out.len, 2); /* "ST" held */
        assert_int_equal(cel_stopper_push(&s, "O", 1, &out, &st, &err), CEL_OK);
        assert_int_equal(out.len, 2);
        assert_int_equal(cel_stopper_push(&s, "x", 1, &out, &st, &err), CEL_OK);
        assert_false(st);
        assert_int_equal(out.len, 6);
        assert_memory_equal(out.data, "abSTOx", 6);
        assert_int_equal(cel_stopper_push(&s, "S", 1, &out, &st, &err), CEL_OK);
        assert_int_equal(cel_stopper_flush(&s, &out, &err), CEL_OK); /* generation ended: release */
        assert_memory_equal(out.data, "abSTOxS", 7);
        cel_buf_free(&out);
        cel_stopper_free(&s);
    }
    {   /* no stop strings: pass-through */
        const char *p[] = {"a", "b"};
        char *o = run_stop(NULL, 0, p, 2, &stopped, &at);
        assert_string_equal(o, "ab");
        free(o);
    }
}

/* The RNG contract: a non-greedy sample draws exactly one uniform per token
 * (also when a filter leaves one candidate), greedy none, and cel_sample is
 * that draw followed by cel_sample_u with the same uniform. */
static void test_one_uniform_contract(void **state)
{
    (void)state;
    cel_error err;
    const int32_t V = 300;
    cel_sample_scratch ws;
    assert_int_equal(cel_sample_scratch_init(&ws, V, &err), CEL_OK);
    float *logits = malloc((size_t)V * sizeof *logits);
    const struct {
        float t;
        int32_t k;
        float p, minp, rep;
    } cfg[] = {
        {1.0f, 0, 1.0f, 0.0f, 1.0f},  {0.7f, 40, 1.0f, 0.0f, 1.0f}, {1.0f, 1, 1.0f, 0.0f, 1.0f}, /* one candidate */
        {1.3f, 0, 0.9f, 0.0f, 1.0f},  {1.0f, 0, 1e-6f, 0.0f, 1.0f}, /* top-p leaves the best token only */
        {0.5f, 0, 1.0f, 0.999f, 1.0f}, {1.0f, 20, 0.5f, 0.05f, 1.3f}, {0.0f, 0, 1.0f, 0.0f, 1.0f}, /* greedy */
    };
    int32_t prompt[3] = {1, 5, 9};
    int n_single = 0;
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        cel_sampling s = greedy();
        s.temperature = cfg[c].t;
        s.top_k = cfg[c].k;
        s.top_p = cfg[c].p;
        s.min_p = cfg[c].minp;
        s.repetition_penalty = cfg[c].rep;
        s.n_logprobs = 0;
        assert_int_equal(cel_sample_draws(&s), cfg[c].t > 0.0f);
        for (int it = 0; it < 50; it++) {
            random_logits(logits, V, 1000 * c + (uint64_t)it, 8.0f);
            cel_sample_state a, b, ref;
            cel_sample_state_init(&a, 77 + (uint64_t)it, 3);
            cel_sample_state_init(&b, 77 + (uint64_t)it, 3);
            cel_sample_state_init(&ref, 77 + (uint64_t)it, 3);
            cel_sample_out oa, ob;
            assert_int_equal(cel_sample(&s, prompt, 3, &a, logits, &ws, &oa, &err), CEL_OK);
            double u = cel_sample_draws(&s) ? cel_rng_uniform(&b.rng) : 0.0;
            assert_int_equal(cel_sample_u(&s, prompt, 3, &b, logits, &ws, u, &ob, &err), CEL_OK);
            assert_int_equal(oa.token, ob.token);
            assert_memory_equal(&oa.logprob, &ob.logprob, sizeof oa.logprob);
            /* exactly one uniform consumed (none when greedy) */
            if (cel_sample_draws(&s)) cel_rng_uniform(&ref.rng);
            assert_memory_equal(&a.rng, &ref.rng, sizeof a.rng);
            float probs[300];
            assert_int_equal(cel_sample_probs(&s, prompt, 3, &a, logits, &ws, probs, &err), CEL_OK);
            int nz = 0;
            for (int32_t i = 0; i < V; i++) nz += probs[i] > 0.0f;
            if (nz == 1 && cel_sample_draws(&s)) n_single++;
            cel_sample_state_free(&a);
            cel_sample_state_free(&b);
            cel_sample_state_free(&ref);
        }
    }
    assert_true(n_single >= 100); /* the single-candidate case was exercised (top_k 1, top-p 1e-6) */
    /* the uniform decides: u just below 1 takes the last candidate, 0 the first */
    float l3[4] = {0.0f, 1.0f, 1.0f, 0.5f};
    cel_sampling s = greedy();
    s.temperature = 1.0f;
    cel_sample_state st;
    cel_sample_state_init(&st, 1, 0);
    cel_sample_scratch ws4;
    assert_int_equal(cel_sample_scratch_init(&ws4, 4, &err), CEL_OK);
    cel_sample_out o;
    assert_int_equal(cel_sample_u(&s, NULL, 0, &st, l3, &ws4, 0.0, &o, &err), CEL_OK);
    assert_int_equal(o.token, 0); /* no filter: id order */
    assert_int_equal(cel_sample_u(&s, NULL, 0, &st, l3, &ws4, 0.999999, &o, &err), CEL_OK);
    assert_int_equal(o.token, 3);
    s.top_k = 3; /* a filter: (logit desc, id asc) order, so ties 1 then 2 */
    assert_int_equal(cel_sample_u(&s, NULL, 0, &st, l3, &ws4, 0.0, &o, &err), CEL_OK);
    assert_int_equal(o.token, 1);
    assert_int_equal(cel_sample_u(&s, NULL, 0, &st, l3, &ws4, 0.999999, &o, &err), CEL_OK);
    assert_int_equal(o.token, 3);
    cel_sample_state_free(&st);
    cel_sample_scratch_free(&ws4);
    free(logits);
    cel_sample_scratch_free(&ws);
}

static void test_count_map_grows(void **state)
{
    (void)state;
    cel_error err;
    cel_sample_state st;
    cel_sample_state_init(&st, 0, 0);
    for (int r = 0; r < 3; r++)
        for (int32_t t = 0; t < 5000; t += 7) assert_int_equal(cel_sample_state_accept(&st, t * 13, &err), CEL_OK);
    for (int32_t t = 0; t < 5000; t += 7) assert_int_equal(cel_sample_state_count(&st, t * 13), 3);
    assert_int_equal(cel_sample_state_count(&st, 1), 0);
    assert_int_equal(cel_sample_state_accept(&st, -1, &err), CEL_ERR_INVALID);
    cel_sample_state_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masks_match_reference),
        cmocka_unit_test(test_small_masks_by_hand),
        cmocka_unit_test(test_greedy_and_ties),
        cmocka_unit_test(test_penalties_math),
        cmocka_unit_test(test_drawn_frequencies),
        cmocka_unit_test(test_seed_streams),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_count_map_grows),
        cmocka_unit_test(test_one_uniform_contract),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
