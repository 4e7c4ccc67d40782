/*
 * test_cuda_prefill.c - the tiled prefill attention (engine/cuda/prefill.cu)
 * against a plain double-precision causal attention over the same paged
 * FP16 cache, against the per-token kernel cel__cuk_attention, and against
 * itself (determinism, and the same bits whatever rows share a launch).
 *
 * Built twice, like test_cuda_ops.c: unit_test_cuda_prefill (the real GPU;
 * "SKIP: no CUDA device (...)" where there is none) and
 * unit_test_cuda_prefill_emu (the CPU emulation of engine/cuda/emu.cpp).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/common.h"
#include "engine/backend.h"

#if defined(CELINE_HAVE_CUDA) || defined(CEL_CUDA_EMU)
#define HAVE_KERNELS 1
#include "engine/cuda/prefill.h"
#include "engine/ops.h"
#endif

#ifdef HAVE_KERNELS

#include "test_cuda_util.h"
#include "test_filter.h"

/* ------------------------------------------------------------ a problem */

#define MAX_SEQS 160

/* A batch of sequences (n_past cached positions + n_new new rows each, rows
 * consecutive in sequence order) over one paged FP16 K/V cache; host and
 * device copies of everything the kernels read. Sequence s may share its
 * first share[s] blocks with sequence s - 1 (a cached common prefix). */
typedef struct prob {
    int32_t nh, nkv, hd, bs, S, T, qs, n_blocks, n_tab;
    int32_t n_past[MAX_SEQS], n_new[MAX_SEQS], first[MAX_SEQS], off[MAX_SEQS];
    int32_t *tab, *pos, *seq;
    uint16_t *kh, *vh;
    float *q;
    /* device */
    float *d_q;
    uint16_t *d_k, *d_v, *d_out;
    int32_t *d_pos, *d_seq, *d_off, *d_tab;
} prob;

static void prob_init(prob *P, int32_t nh, int32_t nkv, int32_t hd, int32_t bs, int32_t S, const int32_t *n_past,
                      const int32_t *n_new, const int32_t *share)
{
    memset(P, 0, sizeof *P);
    assert_true(S <= MAX_SEQS);
    P->nh = nh;
    P->nkv = nkv;
    P->hd = hd;
    P->bs = bs;
    P->S = S;
    int32_t n_tab = 0;
    for (int32_t s = 0; s < S; s++) {
        P->n_past[s] = n_past[s];
        P->n_new[s] = n_new[s];
        P->first[s] = P->T;
        P->T += n_new[s];
        P->off[s] = n_tab;
        n_tab += (n_past[s] + n_new[s] + bs - 1) / bs;
    }
    P->n_tab = n_tab;
    /* blocks: a permutation of the pool, so that neighbours are not adjacent;
     * shared prefix blocks repeat the previous sequence's entries */
    P->n_blocks = n_tab + 3;
    if (P->n_blocks % 7 == 0) P->n_blocks++; /* so that x 7 permutes */
    P->tab = malloc((size_t)n_tab * sizeof(int32_t));
    int32_t next = 0;
    for (int32_t s = 0; s < S; s++) {
        int32_t nb = (n_past[s] + n_new[s] + bs - 1) / bs;
        for (int32_t i = 0; i < nb; i++) {
            if (share && s > 0 && i < share[s]) P->tab[P->off[s] + i] = P->tab[P->off[s - 1] + i];
            else P->tab[P->off[s] + i] = (int32_t)(((int64_t)next++ * 7 + 2) % P->n_blocks);
        }
    }
    assert_true(next <= P->n_blocks && P->n_blocks % 7 != 0);
    const size_t cache_n = (size_t)P->n_blocks * nkv * bs * hd;
    P->kh = malloc(cache_n * 2);
    P->vh = malloc(cache_n * 2);
    for (size_t i = 0; i < cache_n; i++) {
        P->kh[i] = cel_fp32_to_fp16(frand(2.0f));
        P->vh[i] = cel_fp32_to_fp16(frand(1.0f));
    }
    P->qs = (nh + 2 * nkv) * hd; /* q rows inside a qkv buffer, as in the backend */
    P->q = malloc((size_t)P->T * P->qs * sizeof(float));
    for (int64_t i = 0; i < (int64_t)P->T * P->qs; i++) P->q[i] = frand(1.5f);
    P->pos = malloc((size_t)P->T * sizeof(int32_t));
    P->seq = malloc((size_t)P->T * sizeof(int32_t));
    for (int32_t s = 0; s < S; s++)
        for (int32_t i = 0; i < n_new[s]; i++) {
            P->pos[P->first[s] + i] = n_past[s] + i;
            P->seq[P->first[s] + i] = s;
        }
    P->d_q = dup_to_dev(P->q, (size_t)P->T * P->qs * sizeof(float));
    P->d_k = dup_to_dev(P->kh, cache_n * 2);
    P->d_v = dup_to_dev(P->vh, cache_n * 2);
    P->d_pos = dup_to_dev(P->pos, (size_t)P->T * 4);
    P->d_seq = dup_to_dev(P->seq, (size_t)P->T * 4);
    P->d_off = dup_to_dev(P->off, (size_t)S * 4);
    P->d_tab = dup_to_dev(P->tab, (size_t)n_tab * 4);
    P->d_out = dalloc((size_t)P->T * nh * hd * 2);
}

static void prob_free(prob *P)
{
    dfree(P->d_q);
    dfree(P->d_k);
    dfree(P->d_v);
    dfree(P->d_pos);
    dfree(P->d_seq);
    dfree(P->d_off);
    dfree(P->d_tab);
    dfree(P->d_out);
    free(P->tab);
    free(P->kh);
    free(P->vh);
    free(P->q);
    free(P->pos);
    free(P->seq);
}

static cel__cu_attn_params prob_params(const prob *P)
{
    cel__cu_attn_params p = {P->T, P->nh, P->nkv, P->hd, P->bs, P->qs, 1.0f / sqrtf((float)P->hd)};
    return p;
}

/* Runs the prefill kernel for segs (out rows outside them are left as a
 * 0xFFFF pattern) and copies all T rows of BF16 output to host. */
static void run_prefill(prob *P, const cel__cu_prefill_seg *segs, int32_t n_segs, uint16_t *out)
{
    const size_t n = (size_t)P->T * P->nh * P->hd;
    assert_int_equal(cudaMemsetAsync(P->d_out, 0xff, n * 2, g_stream), cudaSuccess);
    assert_int_equal(cel__cuk_prefill_attention(g_stream, P->d_out, P->d_q, P->d_k, P->d_v, P->d_pos, P->d_seq,
                                                P->d_off, P->d_tab, prob_params(P), segs, n_segs),
                     cudaSuccess);
    to_host(out, P->d_out, n * 2);
}

/* One segment per sequence. */
static void run_prefill_all(prob *P, uint16_t *out)
{
    cel__cu_prefill_seg segs[MAX_SEQS];
    for (int32_t s = 0; s < P->S; s++) segs[s] = (cel__cu_prefill_seg){P->first[s], P->n_new[s]};
    run_prefill(P, segs, P->S, out);
}

/* Plain causal attention in double for every row: out [T][nh][hd]. q is
 * scaled in FP32 first, as the kernels (and the CPU op) do. */
static void reference(const prob *P, float *out)
{
    const int32_t hd = P->hd, group = P->nh / P->nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    int32_t max_ctx = 1;
    for (int32_t s = 0; s < P->S; s++)
        if (P->n_past[s] + P->n_new[s] > max_ctx) max_ctx = P->n_past[s] + P->n_new[s];
    double *sc = malloc((size_t)max_ctx * sizeof(double));
    double *acc = malloc((size_t)hd * sizeof(double));
    for (int32_t s = 0; s < P->S; s++) {
        const int32_t *tab = P->tab + P->off[s];
        for (int32_t i = 0; i < P->n_new[s]; i++) {
            const int32_t t = P->first[s] + i, pos = P->pos[t];
            for (int32_t h = 0; h < P->nh; h++) {
                const int32_t kvh = h / group;
                const float *qr = P->q + (size_t)t * P->qs + (size_t)h * hd;
                double mx = -INFINITY, sum = 0.0;
                for (int32_t j = 0; j <= pos; j++) {
                    const size_t base = (((size_t)tab[j / P->bs] * P->nkv + kvh) * P->bs + j % P->bs) * hd;
                    double d = 0.0;
                    for (int32_t e = 0; e < hd; e++)
                        d += (double)(qr[e] * scale) * (double)cel_fp16_to_fp32(P->kh[base + e]);
                    sc[j] = d;
                    if (d > mx) mx = d;
                }
                for (int32_t e = 0; e < hd; e++) acc[e] = 0.0;
                for (int32_t j = 0; j <= pos; j++) {
                    const size_t base = (((size_t)tab[j / P->bs] * P->nkv + kvh) * P->bs + j % P->bs) * hd;
                    const double w = exp(sc[j] - mx);
                    sum += w;
                    for (int32_t e = 0; e < hd; e++) acc[e] += w * (double)cel_fp16_to_fp32(P->vh[base + e]);
                }
                float *o = out + (size_t)t * P->nh * hd + (size_t)h * hd;
                for (int32_t e = 0; e < hd; e++) o[e] = (float)(acc[e] / sum);
            }
        }
    }
    free(sc);
    free(acc);
}

static void bf16_to_f32_arr(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = cel_bf16_to_fp32(src[i]);
}

/* The common checks of one problem: every row against the double reference
 * (the tolerance of the existing attention tests), against
 * cel__cuk_attention (close), the same bits on a second run, and the same
 * bits when each sequence runs alone in its own launch. */
static void check_problem(prob *P, const char *name)
{
    const size_t n = (size_t)P->T * P->nh * P->hd;
    uint16_t *got = calloc(n, 2), *again = calloc(n, 2), *alone = calloc(n, 2), *tok = calloc(n, 2);
    float *gf = calloc(n, sizeof(float)), *ref = calloc(n, sizeof(float)), *tf = calloc(n, sizeof(float));
    char what[128];
    run_prefill_all(P, got);
    reference(P, ref);
    bf16_to_f32_arr(gf, got, n);
    snprintf(what, sizeof what, "%s vs double", name);
    check_close(what, gf, ref, n, 2e-3f, 1.0f / 128);

    assert_int_equal(cel__cuk_attention(g_stream, P->d_out, P->d_q, P->d_k, P->d_v, P->d_pos, P->d_seq, P->d_off,
                                        P->d_tab, prob_params(P)),
                     cudaSuccess);
    to_host(tok, P->d_out, n * 2);
    bf16_to_f32_arr(tf, tok, n);
    snprintf(what, sizeof what, "%s vs per-token kernel", name);
    check_close(what, gf, tf, n, 2e-3f, 1.0f / 64);

    run_prefill_all(P, again);
    if (memcmp(got, again, n * 2) != 0) fail_msg("%s: a second run gives other bits", name);

    const size_t row = (size_t)P->nh * P->hd;
    for (int32_t s = 0; s < P->S; s++) {
        const cel__cu_prefill_seg one = {P->first[s], P->n_new[s]};
        run_prefill(P, &one, 1, alone);
        if (memcmp(got + (size_t)P->first[s] * row, alone + (size_t)P->first[s] * row, (size_t)P->n_new[s] * row * 2))
            fail_msg("%s: sequence %d alone gives other bits than in the batch", name, (int)s);
        /* rows outside the segment are not written */
        for (int32_t t = 0; t < P->T; t++) {
            if (t >= P->first[s] && t < P->first[s] + P->n_new[s]) continue;
            for (size_t e = 0; e < row; e++)
                if (alone[(size_t)t * row + e] != 0xffffu) fail_msg("%s: row %d written by sequence %d's launch", name, (int)t, (int)s);
        }
    }
    free(got);
    free(again);
    free(alone);
    free(tok);
    free(gf);
    free(ref);
    free(tf);
}

/* ------------------------------------------------------------------ tests */

/* Fresh prompts of every length around the tile sizes, in one launch. */
static void test_prompt_lengths(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t n_new[] = {1, 15, 16, 17, 63, 64, 65, 200};
    int32_t n_past[8] = {0};
    const int32_t S = (int32_t)(sizeof n_new / sizeof n_new[0]);
    prob P;
    prob_init(&P, 8, 2, 64, 16, S, n_past, n_new, NULL); /* G = 4 */
    check_problem(&P, "lengths 1..200 h8/2 d64 bs16");
    prob_free(&P);
    prob_init(&P, 4, 4, 128, 32, S, n_past, n_new, NULL); /* G = 1 */
    check_problem(&P, "lengths 1..200 h4/4 d128 bs32");
    prob_free(&P);
}

/* A long prompt: 700 tokens, 22 key tiles. */
static void test_long_prompt(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t n_past[1] = {0}, n_new[1] = {700};
    prob P;
    prob_init(&P, 2, 1, 128, 32, 1, n_past, n_new, NULL); /* G = 2 */
    check_problem(&P, "700 tokens h2/1 d128 bs32");
    prob_free(&P);
    prob_init(&P, 8, 1, 64, 16, 1, n_past, n_new, NULL); /* G = 8 */
    check_problem(&P, "700 tokens h8/1 d64 bs16");
    prob_free(&P);
}

/* Chunked prefill: chunks that continue a cached prefix (n_past > 0, not on
 * a tile or block boundary), two of them reading the blocks of the sequence
 * before them (a shared prompt prefix), beside a decode row and a fresh
 * prompt. */
static void test_chunked_prefill(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t n_past[] = {100, 96, 37, 250, 0}, n_new[] = {65, 33, 30, 1, 20};
    const int32_t share[] = {0, 6, 2, 0, 0}; /* seq 1 reads seq 0's first 6 blocks (96 positions at bs 16) */
    prob P;
    prob_init(&P, 4, 2, 128, 16, 5, n_past, n_new, share); /* G = 2 */
    assert_int_equal(P.tab[P.off[1]], P.tab[P.off[0]]);
    check_problem(&P, "chunked h4/2 d128 bs16 shared prefix");
    prob_free(&P);
    const int32_t share32[] = {0, 3, 1, 0, 0};
    prob_init(&P, 16, 2, 64, 32, 5, n_past, n_new, share32); /* G = 8 */
    check_problem(&P, "chunked h16/2 d64 bs32 shared prefix");
    prob_free(&P);
}

/* The other supported shapes: group 3 (rows of a tile that no token fills),
 * head_dim 32, 96 and 256, a group of 16. */
static void test_shapes(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t n_past[] = {5, 0}, n_new[] = {40, 9};
    prob P;
    prob_init(&P, 6, 2, 96, 16, 2, n_past, n_new, NULL);
    check_problem(&P, "h6/2 d96 bs16 (group 3)");
    prob_free(&P);
    prob_init(&P, 2, 2, 32, 32, 2, n_past, n_new, NULL);
    check_problem(&P, "h2/2 d32 bs32");
    prob_free(&P);
    prob_init(&P, 4, 2, 256, 16, 2, n_past, n_new, NULL);
    check_problem(&P, "h4/2 d256 bs16");
    prob_free(&P);
    prob_init(&P, 16, 1, 64, 16, 2, n_past, n_new, NULL);
    check_problem(&P, "h16/1 d64 bs16 (group 16)");
    prob_free(&P);
}

/* A sequence cut into several segments, and more segments than one launch
 * takes: the same bits as one segment per sequence. */
static void test_segments(void **state)
{
    (void)state;
    NEED_DEVICE();
    int32_t n_past[140], n_new[140];
    for (int32_t s = 0; s < 140; s++) {
        n_past[s] = s % 5 == 0 ? 0 : (s * 13) % 40;
        n_new[s] = s == 0 ? 90 : 1 + s % 3;
    }
    prob P;
    prob_init(&P, 4, 1, 64, 16, 140, n_past, n_new, NULL);
    check_problem(&P, "140 sequences h4/1 d64 bs16");
    const size_t n = (size_t)P.T * P.nh * P.hd;
    uint16_t *base = calloc(n, 2), *cut = calloc(n, 2);
    run_prefill_all(&P, base);
    cel__cu_prefill_seg segs[MAX_SEQS + 3];
    int32_t k = 0;
    segs[k++] = (cel__cu_prefill_seg){0, 17};  /* sequence 0 (90 rows) in three pieces */
    segs[k++] = (cel__cu_prefill_seg){17, 1};
    segs[k++] = (cel__cu_prefill_seg){18, 72};
    for (int32_t s = 1; s < P.S; s++) segs[k++] = (cel__cu_prefill_seg){P.first[s], P.n_new[s]};
    assert_true(k > CEL__CU_PREFILL_MAX_SEGS);
    run_prefill(&P, segs, k, cut);
    if (memcmp(base, cut, n * 2) != 0) fail_msg("cutting sequence 0 into segments changes the bits");
    free(base);
    free(cut);
    prob_free(&P);
}

static void test_tile_tokens_and_errors(void **state)
{
    (void)state;
    NEED_DEVICE();
    assert_int_equal(cel__cuk_prefill_tile_tokens(1, 1), 64);
    assert_int_equal(cel__cuk_prefill_tile_tokens(1, 0), 16);
    assert_int_equal(cel__cuk_prefill_tile_tokens(4, 1), 16);
    assert_int_equal(cel__cuk_prefill_tile_tokens(3, 1), 21);
    assert_int_equal(cel__cuk_prefill_tile_tokens(8, 0), 2);
    assert_int_equal(cel__cuk_prefill_tile_tokens(32, 0), 0);
    assert_int_equal(cel__cuk_prefill_tile_tokens(65, 1), 0);
    assert_int_equal(cel__cuk_prefill_tile_tokens(0, 1), 0);
    cel__cu_attn_params p = {10, 8, 2, 64, 16, 12 * 64, 0.125f};
    const cel__cu_prefill_seg ok = {0, 10}, past = {5, 6}, empty = {3, 0}, neg = {-1, 2};
    /* nothing to do: success without touching any pointer */
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p, NULL, 0),
                     cudaSuccess);
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p, &past, 1),
                     cudaErrorInvalidValue);
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p, &empty, 1),
                     cudaErrorInvalidValue);
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p, &neg, 1),
                     cudaErrorInvalidValue);
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p, NULL, 1),
                     cudaErrorInvalidValue);
    cel__cu_attn_params bad = p;
    bad.head_dim = 48;
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, bad, &ok, 1),
                     cudaErrorInvalidValue);
    bad = p;
    bad.n_head = 7; /* not a multiple of n_head_kv */
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, bad, &ok, 1),
                     cudaErrorInvalidValue);
    bad = p;
    bad.n_head = 130, bad.n_head_kv = 2; /* group 65 */
    bad.q_stride = 200 * 64;
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, bad, &ok, 1),
                     cudaErrorInvalidValue);
    bad = p;
    bad.q_stride = 8 * 64 - 1; /* q rows overlap */
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, bad, &ok, 1),
                     cudaErrorInvalidValue);
    bad = p;
    bad.block_size = 0;
    assert_int_equal(cel__cuk_prefill_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, bad, &ok, 1),
                     cudaErrorInvalidValue);
}

static int setup(void **state)
{
    (void)state;
    cuda_test_open(20250114);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cuda_test_close();
    return 0;
}

int main(void)
{
    cel_test_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tile_tokens_and_errors), cmocka_unit_test(test_prompt_lengths),
        cmocka_unit_test(test_long_prompt),            cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_shapes),                 cmocka_unit_test(test_segments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

#else /* built without CUDA: nothing to run, and the backend must say so */

static void test_no_cuda(void **state)
{
    (void)state;
    printf("SKIP: no CUDA device (celine was built without CUDA)\n");
    cel_backend *be = (cel_backend *)1;
    cel_error err;
    cel_error_clear(&err);
    assert_int_equal(cel_backend_cuda_create(NULL, NULL, &be, &err), CEL_ERR_UNSUPPORTED);
    assert_null(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
