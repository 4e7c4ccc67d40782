/* Golden tests: every committed test model (tests/data/models) is loaded and
 * run through the CPU backend, and its logits and greedy continuation are
 * compared with tests/data/golden/<model>.{json,logits}, which
 * tools/reference_forward.py wrote with an independent float64 PyTorch
 * forward pass over the same files (see tests/data/models/regen.sh).
 *
 * Per model:
 *  - prefill of the prompt: the logits of every position within
 *    rtol * logit_scale of the reference (rtol is in the golden file: 2e-4
 *    for F32/F16/BF16 weights, where the only difference is float32
 *    arithmetic: the reference rounds K/V to F16 as celine's cache does, but
 *    from float64, so an element near a rounding tie can land one F16 ulp
 *    away, which shows up as ~1e-4 of the logit scale at worst;
 *    4e-2 for quantized weights, which celine multiplies with int8-quantized
 *    activations). Quantized models are then run again with every quantized
 *    tensor dequantized to F32 by cel_model_make_writable, at 2e-4 and with
 *    the strict greedy rule: that checks the block decoding exactly;
 *  - 64 greedy decode steps, one token per forward: each step's logits within
 *    the same tolerance and the chosen ids equal to the reference's while the
 *    reference's top-1 margin exceeds 4 * rtol * logit_scale (after a closer
 *    call the two runs may legitimately diverge; the test then stops, and
 *    for F32 math requires at least 16 matching steps);
 *  - batching: the prompt and a second prompt in one batch, and a batch that
 *    mixes a continuation at n_past = 8 with a fresh prompt, give the same
 *    logits as each sequence alone (bit for bit: batch invariance) and match
 *    the reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

#include "engine/backend.h"

#define DATA CELINE_SOURCE_DIR "/tests/data"
#define BLOCK 16
#define SET_BLOCKS 6 /* blocks per sequence slot: 96 tokens */
#define N_SETS 6

typedef struct golden {
    char name[64];
    char model[256];
    int32_t n_vocab;
    int32_t *prompt, *prompt2, *greedy;
    size_t np, np2, ng;
    double *margins;
    float *logits;  /* [np + ng - 1][V] then [np2][V] */
    double scale, rtol, rtol_deq;
} golden;

static int32_t *int_array(json_t *a, size_t *n)
{
    *n = json_array_size(a);
    int32_t *v = calloc(*n ? *n : 1, sizeof *v);
    for (size_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

static void golden_load(const char *name, golden *g)
{
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    char path[512];
    snprintf(path, sizeof path, DATA "/golden/%s.json", name);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fail_msg("%s: %s", path, je.text);
    snprintf(g->model, sizeof g->model, DATA "/models/%s", json_string_value(json_object_get(j, "model")));
    g->n_vocab = (int32_t)json_integer_value(json_object_get(j, "n_vocab"));
    g->prompt = int_array(json_object_get(j, "prompt"), &g->np);
    g->prompt2 = int_array(json_object_get(j, "prompt2"), &g->np2);
    g->greedy = int_array(json_object_get(j, "greedy"), &g->ng);
    json_t *mg = json_object_get(j, "greedy_margins");
    g->margins = calloc(g->ng, sizeof *g->margins);
    for (size_t i = 0; i < g->ng; i++) g->margins[i] = json_number_value(json_array_get(mg, i));
    g->scale = json_number_value(json_object_get(j, "logit_scale"));
    g->rtol = json_number_value(json_object_get(j, "rtol"));
    g->rtol_deq = json_number_value(json_object_get(j, "rtol_dequantized"));
    snprintf(path, sizeof path, DATA "/golden/%s", json_string_value(json_object_get(j, "logits_file")));
    json_decref(j);
    char *raw;
    size_t len;
    cel_error err;
    if (cel_read_file(path, 0, &raw, &len, &err) != CEL_OK) fail_msg("%s", err.msg);
    size_t rows = g->np + g->ng - 1 + g->np2;
    assert_int_equal(len, rows * (size_t)g->n_vocab * sizeof(float));
    g->logits = malloc(len);
    memcpy(g->logits, raw, len); /* little-endian host */
    free(raw);
}

static void golden_free(golden *g)
{
    free(g->prompt);
    free(g->prompt2);
    free(g->greedy);
    free(g->margins);
    free(g->logits);
}

static const float *ref_row(const golden *g, size_t row) { return g->logits + row * (size_t)g->n_vocab; }
static const float *ref_row2(const golden *g, size_t i) { return ref_row(g, g->np + g->ng - 1 + i); }

static double max_abs_diff(const float *a, const float *b, int32_t n)
{
    double m = 0;
    for (int32_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* One sequence of a batch: tokens, KV slot (a set of blocks), n_past. */
typedef struct seq_in {
    const int32_t *tok;
    int32_t n_new, n_past, set;
} seq_in;

/* Runs one forward over the sequences (all rows wanted); logits [rows][V]. */
static void run(cel_backend *be, const seq_in *s, int n, float *logits)
{
    int32_t tokens[256], rows[256], tables[N_SETS][SET_BLOCKS];
    cel_batch_seq seqs[8];
    int32_t nt = 0;
    for (int i = 0; i < n; i++) {
        for (int b = 0; b < SET_BLOCKS; b++) tables[i][b] = s[i].set * SET_BLOCKS + b;
        assert_true(s[i].n_past + s[i].n_new <= SET_BLOCKS * BLOCK);
        seqs[i].block_table = tables[i];
        seqs[i].n_blocks = (s[i].n_past + s[i].n_new + BLOCK - 1) / BLOCK;
        seqs[i].n_past = s[i].n_past;
        seqs[i].n_new = s[i].n_new;
        seqs[i].first = nt;
        for (int32_t k = 0; k < s[i].n_new; k++, nt++) {
            tokens[nt] = s[i].tok[k];
            rows[nt] = nt;
        }
    }
    cel_batch b = {.n_tokens = nt, .tokens = tokens, .n_seqs = n, .seqs = seqs, .n_out = nt, .out_rows = rows,
                   .logits = logits};
    cel_error err;
    cel_error_clear(&err);
    if (be->v->forward(be, &b, &err) != CEL_OK) fail_msg("forward: %s", err.msg);
}

static void check_rows(const golden *g, const char *what, const float *got, const float *want, size_t n_rows,
                       double *worst)
{
    double tol = g->rtol * g->scale;
    for (size_t r = 0; r < n_rows; r++) {
        double d = max_abs_diff(got + r * (size_t)g->n_vocab, want + r * (size_t)g->n_vocab, g->n_vocab);
        if (!(d <= tol)) fail_msg("%s: %s row %zu: max |diff| %.3g > tolerance %.3g", g->name, what, r, d, tol);
        if (d > *worst) *worst = d;
    }
}

/* Runs every check of the header comment on model m against g with
 * tolerance rtol * logit_scale. strict: the greedy run must also match at
 * least 16 steps (or all) before any near-tie. */
static void check_model(const golden *g, cel_model *m, double rtol, bool strict, const char *label)
{
    golden gg = *g;
    gg.rtol = rtol;
    cel_error err;
    cel_error_clear(&err);
    assert_int_equal(m->hp.n_vocab, g->n_vocab);
    cel_backend_params bp = {.n_threads = 2, .block_size = BLOCK, .max_batch_tokens = 128};
    bp.kv_bytes = cel_backend_kv_block_bytes(&m->hp, BLOCK, CEL_BACKEND_CPU) * SET_BLOCKS * N_SETS;
    cel_backend *be = NULL;
    if (cel_backend_cpu_create(m, &bp, &be, &err) != CEL_OK) fail_msg("%s", err.msg);
    const int32_t V = g->n_vocab;
    const int32_t np = (int32_t)g->np, np2 = (int32_t)g->np2;
    float *alone = malloc((size_t)(np + np2) * V * sizeof(float));
    float *alone2 = alone + (size_t)np * V;
    float *batch = malloc((size_t)(np + np2) * V * sizeof(float));
    double worst = 0;

    /* 1. prefill alone, each prompt */
    seq_in a = {g->prompt, np, 0, 0}, b2 = {g->prompt2, np2, 0, 1};
    run(be, &a, 1, alone);
    check_rows(&gg, "prefill", alone, ref_row(g, 0), (size_t)np, &worst);
    run(be, &b2, 1, alone2);
    check_rows(&gg, "prefill of prompt2", alone2, ref_row2(g, 0), (size_t)np2, &worst);

    /* 2. greedy decode from the prefill's KV (slot 0), one token per step */
    int32_t tok = argmax(alone + (size_t)(np - 1) * V, V);
    double need = 4 * rtol * g->scale;
    size_t matched = 0;
    float *step = malloc((size_t)V * sizeof(float));
    for (size_t i = 0; i < g->ng; i++) {
        if (tok != g->greedy[i]) {
            if (g->margins[i] > need)
                fail_msg("%s: greedy step %zu: celine chose %d, reference %d (reference margin %.4g > %.4g)", g->name,
                         i, tok, g->greedy[i], g->margins[i], need);
            break; /* a near-tie: the runs may diverge from here */
        }
        matched++;
        if (i + 1 == g->ng) break;
        seq_in d = {&tok, 1, np + (int32_t)i, 0};
        run(be, &d, 1, step);
        check_rows(&gg, "decode step", step, ref_row(g, (size_t)np + i), 1, &worst);
        tok = argmax(step, V);
    }
    if (strict && matched < 16 && matched < g->ng)
        fail_msg("%s: only %zu greedy steps before a near-tie", g->name, matched);

    /* 3. both prompts in one batch (fresh KV slots): bit-identical to alone */
    seq_in ab[2] = {{g->prompt, np, 0, 2}, {g->prompt2, np2, 0, 3}};
    run(be, ab, 2, batch);
    for (int32_t r = 0; r < np + np2; r++)
        if (memcmp(batch + (size_t)r * V, alone + (size_t)r * V, (size_t)V * sizeof(float)) != 0)
            fail_msg("%s: batched row %d differs from the sequence alone (max |diff| %.3g)", g->name, r,
                     max_abs_diff(batch + (size_t)r * V, alone + (size_t)r * V, V));

    /* 4. positions per sequence: prompt[0..8) alone, then a batch of
     * prompt[8..] at n_past 8 together with prompt2 from position 0 */
    seq_in head = {g->prompt, 8, 0, 4};
    run(be, &head, 1, batch);
    seq_in mix[2] = {{g->prompt2, np2, 0, 5}, {g->prompt + 8, np - 8, 8, 4}};
    run(be, mix, 2, batch);
    for (int32_t r = 0; r < np2; r++)
        if (memcmp(batch + (size_t)r * V, alone2 + (size_t)r * V, (size_t)V * sizeof(float)) != 0)
            fail_msg("%s: mixed batch: prompt2 row %d differs from alone", g->name, r);
    for (int32_t r = 0; r < np - 8; r++) {
        const float *got = batch + (size_t)(np2 + r) * V;
        double d = max_abs_diff(got, alone + (size_t)(8 + r) * V, V);
        check_rows(&gg, "mixed batch continuation", got, ref_row(g, (size_t)(8 + r)), 1, &worst);
        if (d != 0)
            fail_msg("%s: mixed batch: row %d at n_past 8 differs from the one-pass prefill by %.3g", g->name, 8 + r,
                     d);
    }
    print_message("%-14s %-11s max |diff| %.3g (tolerance %.3g = %.0e x %.2f), greedy %zu/%zu steps compared\n",
                  g->name, label, worst, rtol * g->scale, rtol, g->scale, matched, g->ng);
    free(step);
    free(alone);
    free(batch);
    cel_backend_free(be);
}

static bool is_quant(cel_dtype t)
{
    return t != CEL_DTYPE_F32 && t != CEL_DTYPE_F16 && t != CEL_DTYPE_BF16;
}

static void golden_test(void **state)
{
    const char *name = *state;
    golden g;
    golden_load(name, &g);
    cel_model *m = NULL;
    cel_error err;
    cel_error_clear(&err);
    if (cel_model_load(g.model, NULL, &m, &err) != CEL_OK) fail_msg("%s", err.msg);
    bool quant = false;
    for (size_t i = 0; i < m->n_tensors; i++) quant |= is_quant(m->tensors[i].dtype);
    check_model(&g, m, g.rtol, !quant, quant ? "native" : "");
    if (quant) {
        /* the same weights dequantized by cel_model_make_writable: F32 math, tight tolerance */
        assert_true(g.rtol_deq > 0);
        for (size_t i = 0; i < m->n_tensors; i++) {
            cel_tensor *t = &m->tensors[i], *w = NULL;
            if (!is_quant(t->dtype)) continue;
            if (cel_model_make_writable(m, t->name, &w, &err) != CEL_OK) fail_msg("%s", err.msg);
            assert_ptr_equal(w, t);
            assert_int_equal(t->dtype, CEL_DTYPE_F32);
            assert_true(t->owned);
        }
        check_model(&g, m, g.rtol_deq, true, "dequantized");
    }
    cel_model_free(m);
    golden_free(&g);
}

static const char *const GOLDENS[] = {
    "llama-f32",      "llama-f16",     "llama-bf16",     "llama-q8_0",   "llama-q4_0", "llama-hf",
    "llama31-f32",    "llama31-hf",    "qwen2-q8_0",     "qwen2-hf",     "qwen2-q4_k_m", "qwen2-q6_k",
    "qwen2-h128-q4_k_m", "qwen2-q5_k_m",
    "qwen3-f16",      "qwen3-hf",      "mistral-q8_0",   "mistral-hf",
};
#define N_GOLDENS (sizeof GOLDENS / sizeof GOLDENS[0])

/* Every golden file in the folder is in the list above (none silently skipped). */
static void test_all_listed(void **state)
{
    (void)state;
    DIR *d = opendir(DATA "/golden");
    assert_non_null(d);
    struct dirent *e;
    size_t n = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0) continue;
        bool found = false;
        for (size_t i = 0; i < N_GOLDENS; i++)
            if (strlen(GOLDENS[i]) == l - 5 && strncmp(GOLDENS[i], e->d_name, l - 5) == 0) found = true;
        if (!found) fail_msg("golden %s is not in test_golden.c's list", e->d_name);
        n++;
    }
    closedir(d);
    assert_int_equal(n, N_GOLDENS);
}

/* The fallback models carry the types they exist for (llama.cpp's mixes at
 * rows that are not whole super-blocks): counts per dtype, as mkmodel writes
 * them (see tests/data/models/regen.sh). */
static void test_fallback_mix(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        int n[5]; /* Q5_0, Q5_1, Q5_K, Q8_0, Q6_K */
    } want[] = {{"qwen2-h128-q4_k_m.gguf", {23, 0, 0, 2, 2}}, {"qwen2-q5_k_m.gguf", {0, 2, 18, 1, 1}}};
    static const cel_dtype ts[5] = {CEL_DTYPE_Q5_0, CEL_DTYPE_Q5_1, CEL_DTYPE_Q5_K, CEL_DTYPE_Q8_0, CEL_DTYPE_Q6_K};
    for (size_t f = 0; f < sizeof want / sizeof want[0]; f++) {
        char path[512];
        snprintf(path, sizeof path, DATA "/models/%s", want[f].file);
        cel_model *m = NULL;
        cel_error err;
        if (cel_model_load(path, NULL, &m, &err) != CEL_OK) fail_msg("%s", err.msg);
        for (int k = 0; k < 5; k++) {
            int c = 0;
            for (size_t i = 0; i < m->n_tensors; i++) c += m->tensors[i].dtype == ts[k];
            if (c != want[f].n[k])
                fail_msg("%s: %d %s tensors, expected %d", want[f].file, c, cel_dtype_name(ts[k]), want[f].n[k]);
        }
        cel_model_free(m);
    }
}

/* Same weights, two files: the GGUF (q/k rows permuted, NORM RoPE) and the HF
 * folder (NEOX RoPE) must give the same logits; so must llama3 scaling read
 * from rope_freqs.weight and from config.json. */
static void test_gguf_equals_hf(void **state)
{
    (void)state;
    const char *pairs[][2] = {{"llama-f32.gguf", "llama-hf"}, {"llama31-f32.gguf", "llama31-hf"}};
    for (size_t p = 0; p < 2; p++) {
        float *out[2];
        int32_t V = 0;
        static const int32_t prompt[] = {5, 9, 100, 37, 1, 250, 18, 77, 60, 3};
        for (int k = 0; k < 2; k++) {
            char path[512];
            snprintf(path, sizeof path, DATA "/models/%s", pairs[p][k]);
            cel_model *m = NULL;
            cel_error err;
            if (cel_model_load(path, NULL, &m, &err) != CEL_OK) fail_msg("%s", err.msg);
            cel_backend_params bp = {.n_threads = 1, .block_size = BLOCK, .max_batch_tokens = 64};
            bp.kv_bytes = cel_backend_kv_block_bytes(&m->hp, BLOCK, CEL_BACKEND_CPU) * SET_BLOCKS;
            cel_backend *be = NULL;
            if (cel_backend_cpu_create(m, &bp, &be, &err) != CEL_OK) fail_msg("%s", err.msg);
            V = m->hp.n_vocab;
            out[k] = malloc(10 * (size_t)V * sizeof(float));
            seq_in s = {prompt, 10, 0, 0};
            run(be, &s, 1, out[k]);
            cel_backend_free(be);
            cel_model_free(m);
        }
        double d = max_abs_diff(out[0], out[1], 10 * V);
        if (d > 1e-3) fail_msg("%s vs %s: max |diff| %.3g", pairs[p][0], pairs[p][1], d);
        free(out[0]);
        free(out[1]);
    }
}

int main(void)
{
    struct CMUnitTest tests[N_GOLDENS + 3];
    for (size_t i = 0; i < N_GOLDENS; i++) {
        tests[i] = (struct CMUnitTest)cmocka_unit_test_prestate(golden_test, (void *)GOLDENS[i]);
        tests[i].name = GOLDENS[i];
    }
    tests[N_GOLDENS] = (struct CMUnitTest)cmocka_unit_test(test_all_listed);
    tests[N_GOLDENS + 1] = (struct CMUnitTest)cmocka_unit_test(test_gguf_equals_hf);
    tests[N_GOLDENS + 2] = (struct CMUnitTest)cmocka_unit_test(test_fallback_mix);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
