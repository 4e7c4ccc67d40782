/*
 * test_cuda_ops.c - every CUDA kernel against the CPU reference op of
 * engine/ops.h, through one harness: random inputs, the kernel on the
 * device, the reference on the host, a stated tolerance per op.
 *
 * Built twice: as unit_test_cuda_ops (the real GPU; prints "SKIP: no CUDA
 * device (...)" and passes where there is none, or where celine was built
 * without CUDA) and as unit_test_cuda_ops_emu (CEL_CUDA_EMU: the same
 * kernels run by the CPU emulation in engine/cuda/emu.cpp, everywhere).
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
#include "engine/cuda/cuda_internal.h"
#include "engine/ops.h"
#include "engine/sample.h"
#endif

#ifdef HAVE_KERNELS

#include "test_cuda_util.h"
#include "test_filter.h"

static cublasHandle_t g_blas;

static void bf16_to_f32_arr(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = cel_bf16_to_fp32(src[i]);
}
static void f16_to_f32_arr(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = cel_fp16_to_fp32(src[i]);
}

/* ------------------------------------------------------------ dequantize */
static void test_convert(void **state)
{
    (void)state;
    NEED_DEVICE();
    const cel_dtype types[] = {CEL_DTYPE_F32,  CEL_DTYPE_F16,  CEL_DTYPE_BF16, CEL_DTYPE_Q8_0, CEL_DTYPE_Q5_0,
                               CEL_DTYPE_Q5_1, CEL_DTYPE_Q4_0, CEL_DTYPE_Q4_K, CEL_DTYPE_Q5_K, CEL_DTYPE_Q6_K};
    const int64_t n = 256 * 6;
    float *src = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    uint16_t *gotb = malloc(n * 2);
    float *gotbf = malloc(n * sizeof(float)), *refb = malloc(n * sizeof(float));
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        cel_dtype t = types[k];
        for (int64_t i = 0; i < n; i++) src[i] = frand(2.0f) * (i % 97 == 0 ? 8.0f : 1.0f);
        size_t nb = cel_dtype_row_bytes(t, n);
        assert_true(nb > 0);
        void *raw = malloc(nb);
        cel_quant_row(t, src, raw, n);
        cel_dequant_row(t, raw, ref, n);
        void *d_raw = dup_to_dev(raw, nb);
        float *d_f = dalloc(n * sizeof(float));
        uint16_t *d_b = dalloc(n * 2);
        assert_int_equal(cel__cuk_convert(g_stream, NULL, d_f, d_raw, t, n), cudaSuccess);
        assert_int_equal(cel__cuk_convert(g_stream, d_b, NULL, d_raw, t, n), cudaSuccess);
        to_host(got, d_f, n * sizeof(float));
        to_host(gotb, d_b, n * 2);
        char what[64];
        snprintf(what, sizeof what, "convert %s -> f32", cel_dtype_name(t));
        check_close(what, got, ref, n, 0.0f, 1e-6f);
        bf16_to_f32_arr(gotbf, gotb, n);
        for (int64_t i = 0; i < n; i++) refb[i] = cel_bf16_to_fp32(cel_fp32_to_bf16(ref[i]));
        snprintf(what, sizeof what, "convert %s -> bf16", cel_dtype_name(t));
        check_close(what, gotbf, refb, n, 0.0f, 1.0f / 128); /* at most one BF16 step apart */
        dfree(d_raw);
        dfree(d_f);
        dfree(d_b);
        free(raw);
    }
    free(src);
    free(ref);
    free(got);
    free(gotb);
    free(gotbf);
    free(refb);
}

/* -------------------------------------------------------- embed, rmsnorm */
static void test_embed(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t V = 37, E = 96, T = 9;
    uint16_t *emb = malloc((size_t)V * E * 2);
    for (int64_t i = 0; i < (int64_t)V * E; i++) emb[i] = cel_fp32_to_bf16(frand(1.0f));
    int32_t tok[9] = {0, 36, 5, 5, 17, 2, 35, 1, 20};
    cel_tensor te = {.dtype = CEL_DTYPE_BF16, .n_dims = 2, .ne = {E, V, 1, 1}, .data = emb, .nbytes = (size_t)V * E * 2};
    snprintf(te.name, sizeof te.name, "token_embd.weight");
    float *ref = malloc((size_t)T * E * sizeof(float)), *got = malloc((size_t)T * E * sizeof(float));
    for (int32_t t = 0; t < T; t++) cel_op_embed(ref + (size_t)t * E, &te, tok[t]);
    uint16_t *d_emb = dup_to_dev(emb, (size_t)V * E * 2);
    int32_t *d_tok = dup_to_dev(tok, sizeof tok);
    float *d_x = dalloc((size_t)T * E * sizeof(float));
    assert_int_equal(cel__cuk_embed(g_stream, d_x, d_emb, d_tok, T, E), cudaSuccess);
    to_host(got, d_x, (size_t)T * E * sizeof(float));
    check_close("embed bf16", got, ref, (size_t)T * E, 0.0f, 0.0f);
    dfree(d_emb);
    dfree(d_tok);
    dfree(d_x);
    free(emb);
    free(ref);
    free(got);
}

static void test_rmsnorm(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t N = 200, R = 7, OUT = 4;
    const int32_t rows[4] = {6, 0, 3, 3};
    float *x = malloc((size_t)R * N * sizeof(float)), w[200];
    for (int64_t i = 0; i < (int64_t)R * N; i++) x[i] = frand(3.0f);
    for (int i = 0; i < N; i++) w[i] = 1.0f + frand(0.5f);
    float *ref = malloc((size_t)R * N * sizeof(float)), *got = malloc((size_t)R * N * sizeof(float));
    for (int32_t r = 0; r < R; r++) cel_op_rmsnorm(ref + (size_t)r * N, x + (size_t)r * N, w, N, 1e-5f);
    float *d_x = dup_to_dev(x, (size_t)R * N * sizeof(float)), *d_w = dup_to_dev(w, sizeof w);
    float *d_o = dalloc((size_t)R * N * sizeof(float));
    uint16_t *d_ob = dalloc((size_t)R * N * 2);
    int32_t *d_rows = dup_to_dev(rows, sizeof rows);
    assert_int_equal(cel__cuk_rmsnorm(g_stream, d_o, d_ob, d_x, NULL, d_w, R, N, 1e-5f), cudaSuccess);
    to_host(got, d_o, (size_t)R * N * sizeof(float));
    check_close("rmsnorm f32", got, ref, (size_t)R * N, 1e-6f, 1e-5f);
    uint16_t *gb = malloc((size_t)R * N * 2);
    to_host(gb, d_ob, (size_t)R * N * 2);
    bf16_to_f32_arr(got, gb, (size_t)R * N);
    check_close("rmsnorm bf16", got, ref, (size_t)R * N, 1e-6f, 1.0f / 128);
    /* gathered rows */
    assert_int_equal(cel__cuk_rmsnorm(g_stream, d_o, NULL, d_x, d_rows, d_w, OUT, N, 1e-5f), cudaSuccess);
    to_host(got, d_o, (size_t)OUT * N * sizeof(float));
    float *refg = malloc((size_t)OUT * N * sizeof(float));
    for (int r = 0; r < OUT; r++) memcpy(refg + (size_t)r * N, ref + (size_t)rows[r] * N, N * sizeof(float));
    check_close("rmsnorm gathered rows", got, refg, (size_t)OUT * N, 1e-6f, 1e-5f);
    dfree(d_x);
    dfree(d_w);
    dfree(d_o);
    dfree(d_ob);
    dfree(d_rows);
    free(x);
    free(ref);
    free(got);
    free(gb);
    free(refg);
}

/* ------------------------------------------------------------- qkv + rope */
/* v3: cel__cuk_qkv_rope_v3 (one warp per head-unit, range-reduced SFU
 * sin/cos) against the same reference and tolerances. Position 100000 checks
 * the angle reduction far beyond the prompt lengths the other rows use. */
static void run_qkv_rope(int32_t nh, int32_t nkv, int32_t hd, cel_rope_style style, bool bias, bool qk_norm, bool v3)
{
    const int32_t T = 6, bs = 4, n_blocks = 6, W = (nh + 2 * nkv) * hd;
    const int32_t pos[6] = {0, 3, 4, 17, 1000, 100000};
    const int32_t blk[6] = {2, 2, 5, 1, 0, 3};
    cel_hparams hp = {.head_dim = hd, .rope_theta = 10000.0f, .rope_style = style};
    float inv[128];
    cel_op_rope_freqs(&hp, inv);
    float *qkv = malloc((size_t)T * W * sizeof(float)), *b = malloc((size_t)W * sizeof(float));
    float qn[256], kn[256];
    for (int64_t i = 0; i < (int64_t)T * W; i++) qkv[i] = frand(2.0f);
    for (int i = 0; i < W; i++) b[i] = frand(0.5f);
    for (int i = 0; i < hd; i++) {
        qn[i] = 1.0f + frand(0.3f);
        kn[i] = 1.0f + frand(0.3f);
    }
    /* reference */
    const size_t cache_n = (size_t)n_blocks * nkv * bs * hd;
    float *ref = malloc((size_t)T * W * sizeof(float));
    float *kref = calloc(cache_n, sizeof(float)), *vref = calloc(cache_n, sizeof(float));
    memcpy(ref, qkv, (size_t)T * W * sizeof(float));
    for (int32_t t = 0; t < T; t++) {
        float *row = ref + (size_t)t * W;
        if (bias)
            for (int i = 0; i < W; i++) row[i] += b[i];
        if (qk_norm) {
            for (int32_t h = 0; h < nh; h++) cel_op_rmsnorm(row + h * hd, row + h * hd, qn, hd, 1e-6f);
            for (int32_t h = 0; h < nkv; h++) cel_op_rmsnorm(row + (nh + h) * hd, row + (nh + h) * hd, kn, hd, 1e-6f);
        }
        cel_op_rope(row, nh, hd, pos[t], inv, style);
        cel_op_rope(row + nh * hd, nkv, hd, pos[t], inv, style);
        for (int32_t h = 0; h < nkv; h++)
            for (int32_t d = 0; d < hd; d++) {
                size_t at = (((size_t)blk[t] * nkv + h) * bs + pos[t] % bs) * hd + d;
                kref[at] = cel_fp16_to_fp32(cel_fp32_to_fp16(row[(nh + h) * hd + d]));
                vref[at] = cel_fp16_to_fp32(cel_fp32_to_fp16(row[(nh + nkv + h) * hd + d]));
            }
    }
    float *d_qkv = dup_to_dev(qkv, (size_t)T * W * sizeof(float));
    float *d_b = dup_to_dev(b, (size_t)W * sizeof(float)), *d_qn = dup_to_dev(qn, hd * 4), *d_kn = dup_to_dev(kn, hd * 4);
    float *d_inv = dup_to_dev(inv, (size_t)hd / 2 * 4);
    int32_t *d_pos = dup_to_dev(pos, sizeof pos), *d_blk = dup_to_dev(blk, sizeof blk);
    uint16_t *d_k = dalloc(cache_n * 2), *d_v = dalloc(cache_n * 2);
    dset(d_k, 0, cache_n * 2);
    dset(d_v, 0, cache_n * 2);
    cel__cu_qkv_params p = {T, nh, nkv, hd, bs, (int32_t)style, 1e-6f, 0};
    assert_int_equal((v3 ? cel__cuk_qkv_rope_v3 : cel__cuk_qkv_rope)(g_stream, d_qkv, bias ? d_b : NULL,
                                                                      qk_norm ? d_qn : NULL, qk_norm ? d_kn : NULL,
                                                                      d_inv, d_pos, d_blk, d_k, d_v, p),
                     cudaSuccess);
    float *got = malloc((size_t)T * W * sizeof(float));
    uint16_t *kh = malloc(cache_n * 2), *vh = malloc(cache_n * 2);
    float *kg = malloc(cache_n * sizeof(float)), *vg = malloc(cache_n * sizeof(float));
    to_host(got, d_qkv, (size_t)T * W * sizeof(float));
    to_host(kh, d_k, cache_n * 2);
    to_host(vh, d_v, cache_n * 2);
    f16_to_f32_arr(kg, kh, cache_n);
    f16_to_f32_arr(vg, vh, cache_n);
    char what[96];
    snprintf(what, sizeof what, "qkv_rope%s h%d/%d d%d %s%s%s", v3 ? "_v3" : "", nh, nkv, hd,
             style == CEL_ROPE_NEOX ? "neox" : "norm", bias ? " bias" : "", qk_norm ? " qknorm" : "");
    /* q only (k and v rows in qkv are intermediate) */
    float *gq = malloc((size_t)T * nh * hd * sizeof(float)), *rq = malloc((size_t)T * nh * hd * sizeof(float));
    for (int32_t t = 0; t < T; t++) {
        memcpy(gq + (size_t)t * nh * hd, got + (size_t)t * W, (size_t)nh * hd * sizeof(float));
        memcpy(rq + (size_t)t * nh * hd, ref + (size_t)t * W, (size_t)nh * hd * sizeof(float));
    }
    check_close(what, gq, rq, (size_t)T * nh * hd, 1e-4f, 1e-4f); /* cosf/sinf of pos 1000 differ by ulps */
    check_close("  k cache (f16)", kg, kref, cache_n, 1e-3f, 2e-3f);
    check_close("  v cache (f16)", vg, vref, cache_n, 0.0f, 0.0f);
    dfree(d_qkv);
    dfree(d_b);
    dfree(d_qn);
    dfree(d_kn);
    dfree(d_inv);
    dfree(d_pos);
    dfree(d_blk);
    dfree(d_k);
    dfree(d_v);
    free(qkv);
    free(b);
    free(ref);
    free(kref);
    free(vref);
    free(got);
    free(kh);
    free(vh);
    free(kg);
    free(vg);
    free(gq);
    free(rq);
}

static void test_qkv_rope(void **state)
{
    (void)state;
    NEED_DEVICE();
    for (int v3 = 0; v3 < 2; v3++) {
        run_qkv_rope(4, 2, 64, CEL_ROPE_NEOX, false, false, v3);
        run_qkv_rope(4, 2, 64, CEL_ROPE_NORM, false, false, v3);
        run_qkv_rope(2, 1, 128, CEL_ROPE_NEOX, true, false, v3);
        run_qkv_rope(3, 3, 32, CEL_ROPE_NEOX, false, true, v3);
        run_qkv_rope(8, 2, 96, CEL_ROPE_NORM, true, true, v3);
        run_qkv_rope(32, 8, 64, CEL_ROPE_NEOX, false, false, v3); /* Llama-3.2-1B: 48 units, 12 v3 blocks per token */
    }
}

/* -------------------------------------------------------------- attention */
typedef struct kv_ctx {
    const float *k, *v; /* host float copies of the caches */
    const int32_t *table;
    int32_t bs, nkv, hd;
    float buf[2][8 * 256];
} kv_ctx;

static const float *kv_read(void *ctx, int32_t pos, int is_v)
{
    kv_ctx *c = ctx;
    int32_t b = c->table[pos / c->bs], slot = pos % c->bs;
    for (int32_t h = 0; h < c->nkv; h++)
        memcpy(c->buf[is_v] + (size_t)h * c->hd,
               (is_v ? c->v : c->k) + (((size_t)b * c->nkv + h) * c->bs + slot) * c->hd, (size_t)c->hd * sizeof(float));
    return c->buf[is_v];
}

static void run_attention(int32_t nh, int32_t nkv, int32_t hd)
{
    /* three sequences: a prefill chunk after a cached prefix, a decode token
     * far into its context, and a fresh 1-token prompt */
    enum { S = 3 };
    const int32_t bs = 16, n_blocks = 24;
    const int32_t n_past[S] = {21, 150, 0}, n_new[S] = {6, 1, 1};
    int32_t tables[S][12];
    int32_t nblk[S];
    int32_t T = 0;
    for (int s = 0; s < S; s++) T += n_new[s];
    /* block tables: a permutation so that neighbours are not adjacent */
    int32_t next = 0;
    for (int s = 0; s < S; s++) {
        nblk[s] = (n_past[s] + n_new[s] + bs - 1) / bs;
        for (int i = 0; i < nblk[s]; i++) tables[s][i] = (next++ * 7) % n_blocks;
    }
    assert_true(next <= n_blocks);
    const size_t cache_n = (size_t)n_blocks * nkv * bs * hd;
    uint16_t *kh = malloc(cache_n * 2), *vh = malloc(cache_n * 2);
    float *kf = malloc(cache_n * sizeof(float)), *vf = malloc(cache_n * sizeof(float));
    for (size_t i = 0; i < cache_n; i++) {
        kh[i] = cel_fp32_to_fp16(frand(2.0f));
        vh[i] = cel_fp32_to_fp16(frand(1.0f));
    }
    f16_to_f32_arr(kf, kh, cache_n);
    f16_to_f32_arr(vf, vh, cache_n);
    const int32_t qs = (nh + 2 * nkv) * hd; /* q rows inside a qkv buffer, as in the backend */
    float *q = malloc((size_t)T * qs * sizeof(float));
    for (int64_t i = 0; i < (int64_t)T * qs; i++) q[i] = frand(1.5f);
    int32_t pos[16], seq[16], off[S], flat[64];
    int32_t t = 0, at = 0;
    for (int s = 0; s < S; s++) {
        off[s] = at;
        for (int i = 0; i < nblk[s]; i++) flat[at++] = tables[s][i];
        for (int i = 0; i < n_new[s]; i++, t++) {
            pos[t] = n_past[s] + i;
            seq[t] = s;
        }
    }
    /* reference: cel_op_attention per sequence */
    float *ref = calloc((size_t)T * nh * hd, sizeof(float));
    float *qc = malloc((size_t)T * nh * hd * sizeof(float));
    for (int32_t r = 0; r < T; r++) memcpy(qc + (size_t)r * nh * hd, q + (size_t)r * qs, (size_t)nh * hd * sizeof(float));
    kv_ctx *c = malloc(sizeof *c);
    t = 0;
    for (int s = 0; s < S; s++) {
        c->k = kf;
        c->v = vf;
        c->table = tables[s];
        c->bs = bs;
        c->nkv = nkv;
        c->hd = hd;
        cel_op_attention(ref + (size_t)t * nh * hd, qc + (size_t)t * nh * hd, n_new[s], n_past[s], nh, nkv, hd, kv_read, c);
        t += n_new[s];
    }
    float *d_q = dup_to_dev(q, (size_t)T * qs * sizeof(float));
    uint16_t *d_k = dup_to_dev(kh, cache_n * 2), *d_v = dup_to_dev(vh, cache_n * 2);
    int32_t *d_pos = dup_to_dev(pos, (size_t)T * 4), *d_seq = dup_to_dev(seq, (size_t)T * 4);
    int32_t *d_off = dup_to_dev(off, sizeof off), *d_tab = dup_to_dev(flat, (size_t)at * 4);
    uint16_t *d_out = dalloc((size_t)T * nh * hd * 2);
    cel__cu_attn_params p = {T, nh, nkv, hd, bs, qs, 1.0f / sqrtf((float)hd)};
    assert_int_equal(cel__cuk_attention(g_stream, d_out, d_q, d_k, d_v, d_pos, d_seq, d_off, d_tab, p), cudaSuccess);
    uint16_t *ob = malloc((size_t)T * nh * hd * 2);
    float *got = malloc((size_t)T * nh * hd * sizeof(float));
    to_host(ob, d_out, (size_t)T * nh * hd * 2);
    bf16_to_f32_arr(got, ob, (size_t)T * nh * hd);
    char what[96];
    snprintf(what, sizeof what, "attention h%d/%d d%d (G=%d)", nh, nkv, hd, cel__cuk_attn_group(nh, nkv, hd));
    check_close(what, got, ref, (size_t)T * nh * hd, 2e-3f, 1.0f / 128);
    dfree(d_q);
    dfree(d_k);
    dfree(d_v);
    dfree(d_pos);
    dfree(d_seq);
    dfree(d_off);
    dfree(d_tab);
    dfree(d_out);
    free(kh);
    free(vh);
    free(kf);
    free(vf);
    free(q);
    free(ref);
    free(qc);
    free(c);
    free(ob);
    free(got);
}

static void test_attention(void **state)
{
    (void)state;
    NEED_DEVICE();
    assert_int_equal(cel__cuk_attn_group(32, 8, 64), 4);
    assert_int_equal(cel__cuk_attn_group(14, 2, 64), 1);
    assert_int_equal(cel__cuk_attn_group(16, 2, 256), 4);
    run_attention(8, 2, 64);   /* G = 4 (Llama-3.2-1B's group) */
    run_attention(4, 4, 128);  /* no GQA */
    run_attention(6, 2, 32);   /* group 3 -> G = 1 */
    run_attention(16, 2, 256); /* group 8, G limited to 4 by shared memory */
    run_attention(2, 1, 96);   /* G = 2, odd lane width */
}

/* ------------------------------------------------- split-context attention */

/* One attention problem for cel__cuk_attention_v3: random FP16 K/V caches and
 * up to 8 sequences (n_past cached positions + n_new new tokens each) whose
 * blocks are scattered through the pool. */
#define AP_MAX_SEQ 8
typedef struct attn_prob {
    int32_t nh, nkv, hd, bs, n_blocks, qs, n_seq;
    int32_t n_past[AP_MAX_SEQ], n_new[AP_MAX_SEQ], nblk[AP_MAX_SEQ];
    int32_t *tables[AP_MAX_SEQ];
    float *q[AP_MAX_SEQ]; /* host, [n_new][qs] */
    uint16_t *kh, *vh;
    float *kf, *vf;
    uint16_t *d_k, *d_v;
    float *d_part;
    int32_t *d_count;
    int32_t chunk; /* cel__cu_attn_split.chunk of the runs (0: the default) */
} attn_prob;

static void ap_init(attn_prob *P, int32_t nh, int32_t nkv, int32_t hd, int n_seq, const int32_t *n_past,
                    const int32_t *n_new)
{
    memset(P, 0, sizeof *P);
    P->nh = nh;
    P->nkv = nkv;
    P->hd = hd;
    P->bs = 16;
    P->qs = (nh + 2 * nkv) * hd; /* q rows inside a qkv buffer, as in the backend */
    P->n_seq = n_seq;
    int32_t need = 0;
    for (int s = 0; s < n_seq; s++) {
        P->n_past[s] = n_past[s];
        P->n_new[s] = n_new[s];
        P->nblk[s] = (n_past[s] + n_new[s] + P->bs - 1) / P->bs;
        need += P->nblk[s];
    }
    P->n_blocks = need + 1;
    while (P->n_blocks % 7 == 0) P->n_blocks++; /* 7 coprime: the permutation below visits every block once */
    int32_t next = 0;
    for (int s = 0; s < n_seq; s++) {
        P->tables[s] = malloc((size_t)P->nblk[s] * sizeof(int32_t));
        for (int i = 0; i < P->nblk[s]; i++) P->tables[s][i] = (next++ * 7) % P->n_blocks;
        P->q[s] = malloc((size_t)n_new[s] * P->qs * sizeof(float));
        for (int64_t i = 0; i < (int64_t)n_new[s] * P->qs; i++) P->q[s][i] = frand(1.5f);
    }
    const size_t cache_n = (size_t)P->n_blocks * nkv * P->bs * hd;
    P->kh = malloc(cache_n * 2);
    P->vh = malloc(cache_n * 2);
    P->kf = malloc(cache_n * sizeof(float));
    P->vf = malloc(cache_n * sizeof(float));
    for (size_t i = 0; i < cache_n; i++) {
        P->kh[i] = cel_fp32_to_fp16(frand(2.0f));
        P->vh[i] = cel_fp32_to_fp16(frand(1.0f));
    }
    f16_to_f32_arr(P->kf, P->kh, cache_n);
    f16_to_f32_arr(P->vf, P->vh, cache_n);
    P->d_k = dup_to_dev(P->kh, cache_n * 2);
    P->d_v = dup_to_dev(P->vh, cache_n * 2);
    P->d_part = dalloc(cel__cuk_attn_part_floats(nh, hd) * sizeof(float));
    P->d_count = dalloc((size_t)CEL__CU_ATTN_SPLIT_ROWS * nh * sizeof(int32_t));
    dset(P->d_count, 0, (size_t)CEL__CU_ATTN_SPLIT_ROWS * nh * sizeof(int32_t));
}

static void ap_free(attn_prob *P)
{
    for (int s = 0; s < P->n_seq; s++) {
        free(P->tables[s]);
        free(P->q[s]);
    }
    free(P->kh);
    free(P->vh);
    free(P->kf);
    free(P->vf);
    dfree(P->d_k);
    dfree(P->d_v);
    dfree(P->d_part);
    dfree(P->d_count);
}

/* Sequence s's reference output ([n_new][nh][hd]) from cel_op_attention. */
static void ap_reference(const attn_prob *P, int s, float *ref)
{
    const int32_t nq = P->nh * P->hd;
    float *qc = malloc((size_t)P->n_new[s] * nq * sizeof(float));
    for (int32_t r = 0; r < P->n_new[s]; r++) memcpy(qc + (size_t)r * nq, P->q[s] + (size_t)r * P->qs, nq * sizeof(float));
    kv_ctx *c = malloc(sizeof *c);
    c->k = P->kf;
    c->v = P->vf;
    c->table = P->tables[s];
    c->bs = P->bs;
    c->nkv = P->nkv;
    c->hd = P->hd;
    cel_op_attention(ref, qc, P->n_new[s], P->n_past[s], P->nh, P->nkv, P->hd, kv_read, c);
    free(c);
    free(qc);
}

/* Runs cel__cuk_attention_v3 on the batch made of sequences which[0..n)
 * (in that order) with `splits` blocks per (token, head group) and chunks of
 * P->chunk positions (0: the default); writes the
 * BF16 output rows to out ([T][nh * hd]) and returns T. Checks that the
 * arrival counters are back to zero afterwards. */
static int32_t ap_run(const attn_prob *P, const int *which, int n, int32_t splits, uint16_t *out)
{
    int32_t T = 0, n_tab = 0;
    for (int i = 0; i < n; i++) {
        T += P->n_new[which[i]];
        n_tab += P->nblk[which[i]];
    }
    float *q = malloc((size_t)T * P->qs * sizeof(float));
    int32_t *pos = malloc((size_t)T * 4), *seq = malloc((size_t)T * 4), *off = malloc((size_t)n * 4);
    int32_t *flat = malloc((size_t)n_tab * 4);
    int32_t t = 0, at = 0;
    for (int i = 0; i < n; i++) {
        const int s = which[i];
        off[i] = at;
        for (int b = 0; b < P->nblk[s]; b++) flat[at++] = P->tables[s][b];
        memcpy(q + (size_t)t * P->qs, P->q[s], (size_t)P->n_new[s] * P->qs * sizeof(float));
        for (int r = 0; r < P->n_new[s]; r++, t++) {
            pos[t] = P->n_past[s] + r;
            seq[t] = i;
        }
    }
    float *d_q = dup_to_dev(q, (size_t)T * P->qs * sizeof(float));
    int32_t *d_pos = dup_to_dev(pos, (size_t)T * 4), *d_seq = dup_to_dev(seq, (size_t)T * 4);
    int32_t *d_off = dup_to_dev(off, (size_t)n * 4), *d_tab = dup_to_dev(flat, (size_t)n_tab * 4);
    uint16_t *d_out = dalloc((size_t)T * P->nh * P->hd * 2);
    cel__cu_attn_params p = {T, P->nh, P->nkv, P->hd, P->bs, P->qs, 1.0f / sqrtf((float)P->hd)};
    const cel__cu_attn_split sp = {P->d_part, P->d_count, splits, 0, P->chunk, NULL};
    assert_int_equal(cel__cuk_attention_v3(g_stream, d_out, d_q, P->d_k, P->d_v, d_pos, d_seq, d_off, d_tab, p, &sp),
                     cudaSuccess);
    to_host(out, d_out, (size_t)T * P->nh * P->hd * 2);
    int32_t cnt[CEL__CU_ATTN_SPLIT_ROWS * 64];
    const size_t n_cnt = (size_t)CEL__CU_ATTN_SPLIT_ROWS * P->nh;
    assert_true(n_cnt <= sizeof cnt / sizeof cnt[0]);
    to_host(cnt, P->d_count, n_cnt * 4);
    for (size_t i = 0; i < n_cnt; i++) assert_int_equal(cnt[i], 0);
    dfree(d_q);
    dfree(d_pos);
    dfree(d_seq);
    dfree(d_off);
    dfree(d_tab);
    dfree(d_out);
    free(q);
    free(pos);
    free(seq);
    free(off);
    free(flat);
    return T;
}

/* Decode tokens at contexts 1, 63, 64, 65, 200 and 1000 positions plus a
 * 6-token prefill chunk that crosses a chunk boundary, in one batch:
 *  - each row against cel_op_attention (the v2 kernel's tolerance);
 *  - the batch run with 1, 2, 3 and 64 splits: the same bits;
 *  - every sequence alone (with the splits the backend would pick): the
 *    same bits as its rows in the batch;
 *  - the batch plus a 12-token chunk (24 rows > CEL__CU_ATTN_SPLIT_ROWS, so
 *    unsplit): the same bits again. */
static void run_attention_v3(int32_t nh, int32_t nkv, int32_t hd, int32_t chunk)
{
    enum { NS = 8 };
    const int32_t n_past[NS] = {0, 62, 63, 64, 199, 999, 60, 5};
    const int32_t n_new[NS] = {1, 1, 1, 1, 1, 1, 6, 12};
    attn_prob P;
    ap_init(&P, nh, nkv, hd, NS, n_past, n_new);
    P.chunk = chunk;
    const int32_t row = nh * hd;
    const int batch[7] = {0, 1, 2, 3, 4, 5, 6};
    int32_t T = 0;
    for (int i = 0; i < 7; i++) T += n_new[batch[i]];
    uint16_t *base = malloc((size_t)(T + 12) * row * 2), *got = malloc((size_t)(T + 12) * row * 2);
    assert_int_equal(ap_run(&P, batch, 7, 1, base), T);
    /* against the reference */
    float *ref = malloc((size_t)T * row * sizeof(float)), *gf = malloc((size_t)T * row * sizeof(float));
    for (int i = 0, t = 0; i < 7; t += n_new[batch[i]], i++) ap_reference(&P, batch[i], ref + (size_t)t * row);
    bf16_to_f32_arr(gf, base, (size_t)T * row);
    char what[96];
    snprintf(what, sizeof what, "attention_v3 h%d/%d d%d (G=%d) chunk %d", nh, nkv, hd, cel__cuk_attn_group(nh, nkv, hd),
             (int)cel__cuk_attn_chunk(1, chunk));
    check_close(what, gf, ref, (size_t)T * row, 2e-3f, 1.0f / 128);
    /* split counts do not change the bits */
    const int32_t splits[] = {2, 3, CEL__CU_ATTN_MAX_CHUNKS};
    for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
        ap_run(&P, batch, 7, splits[k], got);
        if (memcmp(got, base, (size_t)T * row * 2) != 0) fail_msg("%s: %d splits change the bits", what, (int)splits[k]);
    }
    /* alone vs in the batch */
    for (int i = 0, t = 0; i < 7; t += n_new[batch[i]], i++) {
        const int one[1] = {batch[i]};
        const int32_t sp = cel__cuk_attn_splits(n_new[batch[i]], nh, nkv, hd, 132);
        ap_run(&P, one, 1, sp, got);
        if (memcmp(got, base + (size_t)t * row, (size_t)n_new[batch[i]] * row * 2) != 0)
            fail_msg("%s: sequence %d alone (%d splits) differs from its rows in the batch", what, batch[i], (int)sp);
    }
    /* a batch too large to split */
    const int big[8] = {7, 0, 1, 2, 3, 4, 5, 6};
    assert_int_equal(cel__cuk_attn_splits(T + 12, nh, nkv, hd, 132), 1);
    assert_int_equal(ap_run(&P, big, 8, 1, got), T + 12);
    if (memcmp(got + (size_t)12 * row, base, (size_t)T * row * 2) != 0)
        fail_msg("%s: rows of a 24-row batch differ from the same rows in a 12-row batch", what);
    printf("  %-28s split 1/2/3/%d, alone and 24-row batch: identical bits\n", "", CEL__CU_ATTN_MAX_CHUNKS);
    free(base);
    free(got);
    free(ref);
    free(gf);
    ap_free(&P);
}

static void test_attention_v3(void **state)
{
    (void)state;
    NEED_DEVICE();
    assert_int_equal(cel__cuk_attn_chunk(1, 0), CEL__CU_ATTN_CHUNK);
    assert_int_equal(cel__cuk_attn_chunk(CEL__CU_ATTN_CHUNK * CEL__CU_ATTN_MAX_CHUNKS, 0), CEL__CU_ATTN_CHUNK);
    assert_int_equal(cel__cuk_attn_chunk(CEL__CU_ATTN_CHUNK * CEL__CU_ATTN_MAX_CHUNKS + 1, 0), 2 * CEL__CU_ATTN_CHUNK);
    assert_int_equal(cel__cuk_attn_chunk(16 * CEL__CU_ATTN_MAX_CHUNKS, 16), 16);
    assert_int_equal(cel__cuk_attn_chunk(16 * CEL__CU_ATTN_MAX_CHUNKS + 1, 16), 32);
    /* batch 1 of Llama-3.2-1B on 132 SMs: 8 groups x 64 splits; a 64-token batch fills the GPU unsplit */
    assert_int_equal(cel__cuk_attn_splits(1, 32, 8, 64, 132), CEL__CU_ATTN_MAX_CHUNKS);
    assert_int_equal(cel__cuk_attn_splits(64, 32, 8, 64, 132), 1);
    assert_int_equal(cel__cuk_attn_splits(CEL__CU_ATTN_SPLIT_ROWS + 1, 32, 8, 64, 1), 1);
    run_attention_v3(8, 8, 64, 0);   /* G = 1 */
    run_attention_v3(8, 4, 64, 0);   /* G = 2 */
    run_attention_v3(8, 2, 64, 0);   /* G = 4 (Llama-3.2-1B's group) */
    run_attention_v3(16, 2, 64, 0);  /* G = 8 */
    run_attention_v3(4, 4, 128, 0);  /* head_dim 128, G = 1 */
    run_attention_v3(8, 2, 128, 0);  /* head_dim 128, G = 4 */
    run_attention_v3(16, 2, 128, 0); /* head_dim 128, G = 8 */
    run_attention_v3(6, 2, 96, 0);   /* group 3 -> G = 1, odd lane width */
    /* shorter chunks (CELINE_CUDA_ATTN_CHUNK): 16 gives the 1000-position
     * context 63 chunks, 8 (the smallest step) grows past 512 positions */
    run_attention_v3(8, 2, 64, 16);
    run_attention_v3(8, 2, 128, 32);
    run_attention_v3(8, 2, 64, 8);
}

/* A context longer than CEL__CU_ATTN_CHUNK * CEL__CU_ATTN_MAX_CHUNKS: the
 * chunks grow (4500 positions: 36 chunks of 128), still within tolerance and
 * the same bits for every split count. */
static void test_attention_v3_long(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t n_past[1] = {4499}, n_new[1] = {1};
    attn_prob P;
    ap_init(&P, 4, 1, 64, 1, n_past, n_new);
    assert_int_equal(cel__cuk_attn_chunk(4500, 0), 2 * CEL__CU_ATTN_CHUNK);
    const int32_t row = 4 * 64;
    uint16_t base[256], got[256];
    float ref[256], gf[256];
    const int one[1] = {0};
    ap_run(&P, one, 1, 1, base);
    ap_reference(&P, 0, ref);
    bf16_to_f32_arr(gf, base, (size_t)row);
    check_close("attention_v3 ctx 4500", gf, ref, (size_t)row, 2e-3f, 1.0f / 128);
    const int32_t splits[] = {5, 36, CEL__CU_ATTN_MAX_CHUNKS};
    for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
        ap_run(&P, one, 1, splits[k], got);
        if (memcmp(got, base, sizeof got) != 0) fail_msg("ctx 4500: %d splits change the bits", (int)splits[k]);
    }
    ap_free(&P);
}

/* ------------------------------------------------------- swiglu, matmul */
static void test_swiglu(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t T = 3, F = 300;
    float *gu = malloc((size_t)T * 2 * F * sizeof(float)), *ref = malloc((size_t)T * F * sizeof(float));
    for (int64_t i = 0; i < (int64_t)T * 2 * F; i++) gu[i] = frand(6.0f);
    for (int32_t t = 0; t < T; t++)
        cel_op_swiglu(ref + (size_t)t * F, gu + (size_t)t * 2 * F, gu + (size_t)t * 2 * F + F, F);
    float *d_gu = dup_to_dev(gu, (size_t)T * 2 * F * sizeof(float));
    uint16_t *d_h = dalloc((size_t)T * F * 2), *hb = malloc((size_t)T * F * 2);
    assert_int_equal(cel__cuk_swiglu(g_stream, d_h, d_gu, T, F), cudaSuccess);
    to_host(hb, d_h, (size_t)T * F * 2);
    float *got = malloc((size_t)T * F * sizeof(float));
    bf16_to_f32_arr(got, hb, (size_t)T * F);
    check_close("swiglu -> bf16", got, ref, (size_t)T * F, 1e-6f, 1.0f / 128);
    dfree(d_gu);
    dfree(d_h);
    free(gu);
    free(ref);
    free(hb);
    free(got);
}

/* y = x W^T against cel_op_matmul, through the GEMV kernel and cuBLAS. */
static void run_gemm(int32_t T, int32_t I, int32_t O, bool allow_gemv, bool accumulate)
{
    uint16_t *w = malloc((size_t)O * I * 2), *xb = malloc((size_t)T * I * 2);
    float *x = malloc((size_t)T * I * sizeof(float)), *ref = malloc((size_t)T * O * sizeof(float));
    float *y0 = malloc((size_t)T * O * sizeof(float)), *got = malloc((size_t)T * O * sizeof(float));
    for (int64_t i = 0; i < (int64_t)O * I; i++) w[i] = cel_fp32_to_bf16(frand(1.0f));
    for (int64_t i = 0; i < (int64_t)T * I; i++) {
        xb[i] = cel_fp32_to_bf16(frand(1.0f));
        x[i] = cel_bf16_to_fp32(xb[i]);
    }
    for (int64_t i = 0; i < (int64_t)T * O; i++) y0[i] = accumulate ? frand(4.0f) : 0.0f;
    cel_tensor tw = {.dtype = CEL_DTYPE_BF16, .n_dims = 2, .ne = {I, O, 1, 1}, .data = w, .nbytes = (size_t)O * I * 2};
    snprintf(tw.name, sizeof tw.name, "w");
    cel_op_matmul(ref, &tw, x, T, NULL);
    for (int64_t i = 0; i < (int64_t)T * O; i++) ref[i] += y0[i];
    uint16_t *d_w = dup_to_dev(w, (size_t)O * I * 2), *d_x = dup_to_dev(xb, (size_t)T * I * 2);
    float *d_y = dup_to_dev(y0, (size_t)T * O * sizeof(float));
    cel_error err;
    cel_status st = cel__cu_gemm(g_blas, g_stream, d_y, d_w, d_x, T, I, O, accumulate, allow_gemv, &err);
    if (st != CEL_OK) fail_msg("cel__cu_gemm: %s", err.msg);
    to_host(got, d_y, (size_t)T * O * sizeof(float));
    char what[96];
    snprintf(what, sizeof what, "%s T%d %dx%d%s", allow_gemv && T <= 8 ? "gemv" : "cublas", T, I, O,
             accumulate ? " +=" : "");
    /* sums of I products of values <= 1 in FP32, different orders */
    check_close(what, got, ref, (size_t)T * O, 1e-4f * sqrtf((float)I), 1e-4f);
    dfree(d_w);
    dfree(d_x);
    dfree(d_y);
    free(w);
    free(xb);
    free(x);
    free(ref);
    free(y0);
    free(got);
}

static void test_gemm(void **state)
{
    (void)state;
    NEED_DEVICE();
    for (int32_t T = 1; T <= 8; T++) run_gemm(T, 264, 37, true, T % 2 == 0);
    run_gemm(3, 256, 40, false, false); /* cuBLAS, small */
    run_gemm(19, 128, 72, true, true);  /* cuBLAS (T > 8), residual */
    run_gemm(40, 512, 100, false, false);
}

/* gemv rows must not depend on the other rows (batch invariance) */
static void test_gemv_batch_invariance(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t I = 1024, O = 33;
    uint16_t *w = malloc((size_t)O * I * 2), *x = malloc((size_t)8 * I * 2);
    for (int64_t i = 0; i < (int64_t)O * I; i++) w[i] = cel_fp32_to_bf16(frand(1.0f));
    for (int64_t i = 0; i < (int64_t)8 * I; i++) x[i] = cel_fp32_to_bf16(frand(1.0f));
    uint16_t *d_w = dup_to_dev(w, (size_t)O * I * 2), *d_x = dup_to_dev(x, (size_t)8 * I * 2);
    float *d_y = dalloc((size_t)8 * O * sizeof(float));
    float one[33], all[8 * 33];
    assert_int_equal(cel__cuk_gemv(g_stream, d_y, d_w, d_x, 8, I, O, 0), cudaSuccess);
    to_host(all, d_y, sizeof all);
    for (int r = 0; r < 8; r++) {
        assert_int_equal(cel__cuk_gemv(g_stream, d_y, d_w, d_x + (size_t)r * I, 1, I, O, 0), cudaSuccess);
        to_host(one, d_y, sizeof one);
        assert_memory_equal(one, all + (size_t)r * O, sizeof one);
    }
    dfree(d_w);
    dfree(d_x);
    dfree(d_y);
    free(w);
    free(x);
}

/* The v2 decode GEMV forms (fused RMSNorm, fused SwiGLU, two rows per warp)
 * against the unfused kernels they replace - rmsnorm, the v1 GEMV, swiglu -
 * bit for bit, and each row of a batch equal to the same row run alone. */
static void run_gemv_fused(int32_t T, int32_t I, int32_t O)
{
    const float eps = 1e-5f;
    float *xf = malloc((size_t)T * I * sizeof(float)), *nw = malloc((size_t)I * sizeof(float));
    uint16_t *w = malloc((size_t)2 * O * I * 2);
    float *y0 = malloc((size_t)T * 2 * O * sizeof(float));
    for (int64_t i = 0; i < (int64_t)T * I; i++) xf[i] = frand(3.0f);
    for (int32_t i = 0; i < I; i++) nw[i] = 1.0f + frand(0.5f);
    for (int64_t i = 0; i < (int64_t)2 * O * I; i++) w[i] = cel_fp32_to_bf16(frand(0.1f));
    for (int64_t i = 0; i < (int64_t)T * 2 * O; i++) y0[i] = frand(2.0f);
    float *d_xf = dup_to_dev(xf, (size_t)T * I * sizeof(float)), *d_nw = dup_to_dev(nw, (size_t)I * sizeof(float));
    uint16_t *d_w = dup_to_dev(w, (size_t)2 * O * I * 2), *d_xb = dalloc((size_t)T * I * 2);
    float *d_ref = dalloc((size_t)T * 2 * O * sizeof(float)), *d_y = dalloc((size_t)T * 2 * O * sizeof(float));
    uint16_t *d_href = dalloc((size_t)T * O * 2), *d_h = dalloc((size_t)T * O * 2);
    const size_t ny = (size_t)T * 2 * O, nh = (size_t)T * O;
    float *ref = malloc(ny * sizeof(float)), *got = malloc(ny * sizeof(float));
    uint16_t *href = malloc(nh * 2), *hgot = malloc(nh * 2);
    char what[96];

    /* unfused reference: rmsnorm -> v1 GEMV over the 2 O rows -> swiglu */
    assert_int_equal(cel__cuk_rmsnorm(g_stream, NULL, d_xb, d_xf, NULL, d_nw, T, I, eps), cudaSuccess);
    assert_int_equal(cel__cuk_gemv_v1(g_stream, d_ref, d_w, d_xb, T, I, 2 * O, 0), cudaSuccess);
    assert_int_equal(cel__cuk_swiglu(g_stream, d_href, d_ref, T, O), cudaSuccess);
    to_host(ref, d_ref, ny * sizeof(float));
    to_host(href, d_href, nh * 2);

    cel__cu_gemv_args a;
    memset(&a, 0, sizeof a);
    a.W = d_w;
    a.n_rows = T;
    a.n_in = I;
    a.eps = eps;
    /* 1. plain form, BF16 input: the v1 kernel's bits */
    assert_int_equal(cel__cuk_gemv(g_stream, d_y, d_w, d_xb, T, I, 2 * O, 0), cudaSuccess);
    to_host(got, d_y, ny * sizeof(float));
    snprintf(what, sizeof what, "gemv v2 == v1, T%d %dx%d", T, I, 2 * O);
    if (memcmp(got, ref, ny * sizeof(float)) != 0) fail_msg("%s: results differ", what);
    /* 2. plain form with the fused norm, the grid capped to one block (its
     * warps loop over all row tasks) */
    a.max_blocks = 1;
    a.y = d_y;
    a.xf = d_xf;
    a.norm_w = d_nw;
    a.n_out = 2 * O;
    assert_int_equal(cel__cuk_gemv_ex(g_stream, &a), cudaSuccess);
    to_host(got, d_y, ny * sizeof(float));
    if (memcmp(got, ref, ny * sizeof(float)) != 0) fail_msg("gemv+norm T%d %dx%d differs from rmsnorm+gemv", T, I, 2 * O);
    /* 3. SwiGLU form with the fused norm, and 4. without it */
    a.max_blocks = 0;
    a.y = NULL;
    a.h = d_h;
    a.n_out = O;
    assert_int_equal(cel__cuk_gemv_ex(g_stream, &a), cudaSuccess);
    to_host(hgot, d_h, nh * 2);
    if (memcmp(hgot, href, nh * 2) != 0) fail_msg("gemv+norm+swiglu T%d %dx%d differs from the unfused kernels", T, I, O);
    dset(d_h, 0, nh * 2);
    a.x = d_xb;
    assert_int_equal(cel__cuk_gemv_ex(g_stream, &a), cudaSuccess);
    to_host(hgot, d_h, nh * 2);
    if (memcmp(hgot, href, nh * 2) != 0) fail_msg("gemv+swiglu T%d %dx%d differs from the unfused kernels", T, I, O);
    /* 5. accumulate (residual), v2 against v1 */
    float *acc1 = malloc(ny * sizeof(float)), *acc2 = malloc(ny * sizeof(float));
    float *d_a1 = dup_to_dev(y0, ny * sizeof(float)), *d_a2 = dup_to_dev(y0, ny * sizeof(float));
    assert_int_equal(cel__cuk_gemv_v1(g_stream, d_a1, d_w, d_xb, T, I, 2 * O, 1), cudaSuccess);
    assert_int_equal(cel__cuk_gemv(g_stream, d_a2, d_w, d_xb, T, I, 2 * O, 1), cudaSuccess);
    to_host(acc1, d_a1, ny * sizeof(float));
    to_host(acc2, d_a2, ny * sizeof(float));
    if (memcmp(acc1, acc2, ny * sizeof(float)) != 0) fail_msg("gemv += T%d: v2 differs from v1", T);
    for (size_t i = 0; i < ny; i++) assert_true(acc1[i] != y0[i] || ref[i] == 0.0f); /* it did add */
    /* 6. batch invariance of the fused form: each row alone gives the same bits */
    for (int32_t r = 0; r < T && T > 1; r++) {
        a.x = NULL;
        a.xf = d_xf + (size_t)r * I;
        a.n_rows = 1;
        assert_int_equal(cel__cuk_gemv_ex(g_stream, &a), cudaSuccess);
        to_host(hgot, d_h, (size_t)O * 2);
        if (memcmp(hgot, href + (size_t)r * O, (size_t)O * 2) != 0)
            fail_msg("gemv+norm+swiglu row %d alone differs from the same row in a batch of %d", (int)r, (int)T);
    }
    dfree(d_xf);
    dfree(d_nw);
    dfree(d_w);
    dfree(d_xb);
    dfree(d_ref);
    dfree(d_y);
    dfree(d_href);
    dfree(d_h);
    dfree(d_a1);
    dfree(d_a2);
    free(xf);
    free(nw);
    free(w);
    free(y0);
    free(ref);
    free(got);
    free(href);
    free(hgot);
    free(acc1);
    free(acc2);
}

static void test_gemv_fused(void **state)
{
    (void)state;
    NEED_DEVICE();
    run_gemv_fused(1, 264, 37);  /* 33 chunks: a partial load group */
    run_gemv_fused(3, 2048, 20); /* Llama-3.2-1B's hidden size: 8 chunks per lane, 1 group */
    run_gemv_fused(8, 1024, 9);
    run_gemv_fused(2, 64, 4100); /* 2 O = 8200 rows: two rows per warp in the plain form */
    /* the fused norm's rows must fit 48 KiB of shared memory with the
     * kernel's static shared memory: exactly 48 KiB of rows does not */
    assert_true(cel__cuk_gemv_norm_fits(1, 4096));
    assert_true(cel__cuk_gemv_norm_fits(8, 3008)); /* 47 KiB */
    assert_false(cel__cuk_gemv_norm_fits(8, 3072));
    assert_false(cel__cuk_gemv_norm_fits(6, 4096));
    assert_false(cel__cuk_gemv_norm_fits(8, 4096));
    run_gemv_fused(8, 3008, 5); /* the largest fused norm launches */
    cel__cu_gemv_args a;
    memset(&a, 0, sizeof a);
    float dummy = 0.0f;
    a.y = &dummy;
    a.xf = &dummy;
    a.norm_w = &dummy;
    a.n_rows = 8;
    a.n_in = 4096;
    a.n_out = 4;
    assert_int_equal(cel__cuk_gemv_ex(g_stream, &a), cudaErrorInvalidValue);
    a.n_rows = 1;
    a.n_in = 60; /* not a multiple of 8 */
    assert_int_equal(cel__cuk_gemv_ex(g_stream, &a), cudaErrorInvalidValue);
    a.n_in = 64;
    a.y = NULL; /* plain form without an output */
    assert_int_equal(cel__cuk_gemv_ex(g_stream, &a), cudaErrorInvalidValue);
    cudaGetLastError();
}

/* The v3 decode GEMV (cel__cuk_gemv3) in the plain form: against the CPU
 * matmul within rounding; with one warp per row bit-equal to the v1 kernel;
 * every row of the batch bit-equal to the same row run alone (each split);
 * the norm epilogue bit-equal to cel__cuk_rmsnorm of the result, its
 * counter back at zero. ks 0 is the launcher's choice. */
static void run_gemv3(int32_t T, int32_t I, int32_t O, int32_t ks, bool accumulate, bool norm)
{
    const float eps = 1e-5f;
    const size_t nw_ = (size_t)O * I, nx = (size_t)T * I, ny = (size_t)T * O;
    uint16_t *w = malloc(nw_ * 2), *xb = malloc(nx * 2);
    float *x = malloc(nx * sizeof(float)), *y0 = malloc(ny * sizeof(float)), *ref = malloc(ny * sizeof(float));
    float *got = malloc(ny * sizeof(float)), *v1 = malloc(ny * sizeof(float)), *one = malloc((size_t)O * sizeof(float));
    float *nwt = malloc((size_t)O * sizeof(float));
    uint16_t *xn = malloc(ny * 2), *xn_ref = malloc(ny * 2), *xn_one = malloc((size_t)O * 2);
    for (size_t i = 0; i < nw_; i++) w[i] = cel_fp32_to_bf16(frand(1.0f));
    for (size_t i = 0; i < nx; i++) {
        xb[i] = cel_fp32_to_bf16(frand(1.0f));
        x[i] = cel_bf16_to_fp32(xb[i]);
    }
    for (size_t i = 0; i < ny; i++) y0[i] = accumulate ? frand(4.0f) : 0.0f;
    for (int32_t i = 0; i < O; i++) nwt[i] = 1.0f + frand(0.5f);
    cel_tensor tw = {.dtype = CEL_DTYPE_BF16, .n_dims = 2, .ne = {I, O, 1, 1}, .data = w, .nbytes = nw_ * 2};
    snprintf(tw.name, sizeof tw.name, "w");
    cel_op_matmul(ref, &tw, x, T, NULL);
    for (size_t i = 0; i < ny; i++) ref[i] += y0[i];

    uint16_t *d_w = dup_to_dev(w, nw_ * 2), *d_x = dup_to_dev(xb, nx * 2), *d_xn = dalloc(ny * 2);
    uint16_t *d_xn_ref = dalloc(ny * 2);
    float *d_y = dup_to_dev(y0, ny * sizeof(float)), *d_v1 = dup_to_dev(y0, ny * sizeof(float));
    float *d_nw = dup_to_dev(nwt, (size_t)O * sizeof(float));
    int32_t zero = 0, cnt = -1;
    int32_t *d_cnt = dup_to_dev(&zero, sizeof zero);
    cel__cu_gemv3_args a = cel__cu_gemv3_make(d_y, NULL, d_w, d_x, T, I, O);
    a.accumulate = accumulate;
    a.k_split = ks;
    if (norm) {
        a.norm_out = d_xn;
        a.norm_w = d_nw;
        a.eps = eps;
        a.count = d_cnt;
    }
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
    to_host(got, d_y, ny * sizeof(float));
    const int32_t eff = ks ? ks : cel__cuk_gemv3_split(O, I, 0);
    char what[96];
    snprintf(what, sizeof what, "gemv3 ks%d T%d %dx%d%s%s", (int)eff, T, I, O, accumulate ? " +=" : "",
             norm ? " +norm" : "");
    check_close(what, got, ref, ny, 1e-4f * sqrtf((float)I), 1e-4f);
    /* early launch with L2 prefetch (pdl: sm_90+) changes no bit; prefetches
     * smaller than, as large as and larger than the slices (the emulation
     * checks each request's alignment and bounds) */
    static const int32_t pfs[3] = {16, 2048, 1 << 20};
    for (int k = 0; k < 3; k++) {
        to_dev(d_v1, y0, ny * sizeof(float));
        cel__cu_gemv3_args ap = a;
        ap.y = d_v1;
        ap.norm_out = norm ? d_xn_ref : NULL;
        ap.pdl = 1;
        ap.pf_bytes = pfs[k];
        assert_int_equal(cel__cuk_gemv3(g_stream, &ap), cudaSuccess);
        to_host(v1, d_v1, ny * sizeof(float));
        if (memcmp(v1, got, ny * sizeof(float)) != 0) fail_msg("%s: differs with pdl, prefetch %d", what, (int)pfs[k]);
    }
    to_dev(d_v1, y0, ny * sizeof(float));
    if (eff == 1) { /* one warp per row: the v1 (and v2) order */
        assert_int_equal(cel__cuk_gemv_v1(g_stream, d_v1, d_w, d_x, T, I, O, accumulate), cudaSuccess);
        to_host(v1, d_v1, ny * sizeof(float));
        if (memcmp(v1, got, ny * sizeof(float)) != 0) fail_msg("%s: differs from the v1 kernel", what);
    }
    if (norm) {
        to_host(xn, d_xn, ny * 2);
        to_host(&cnt, d_cnt, sizeof cnt);
        assert_int_equal(cnt, 0);
        assert_int_equal(cel__cuk_rmsnorm(g_stream, NULL, d_xn_ref, d_y, NULL, d_nw, T, O, eps), cudaSuccess);
        to_host(xn_ref, d_xn_ref, ny * 2);
        if (memcmp(xn, xn_ref, ny * 2) != 0) fail_msg("%s: the norm epilogue differs from cel__cuk_rmsnorm", what);
    }
    for (int32_t r = 0; r < T && T > 1; r++) { /* batch invariance */
        to_dev(d_y, y0 + (size_t)r * O, (size_t)O * sizeof(float));
        a.x = d_x + (size_t)r * I;
        a.n_rows = 1;
        assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
        to_host(one, d_y, (size_t)O * sizeof(float));
        if (memcmp(one, got + (size_t)r * O, (size_t)O * sizeof(float)) != 0)
            fail_msg("%s: row %d alone differs from its row in the batch", what, (int)r);
        if (norm) {
            to_host(xn_one, d_xn, (size_t)O * 2);
            if (memcmp(xn_one, xn + (size_t)r * O, (size_t)O * 2) != 0)
                fail_msg("%s: row %d's norm alone differs from its row in the batch", what, (int)r);
        }
    }
    dfree(d_w);
    dfree(d_x);
    dfree(d_xn);
    dfree(d_xn_ref);
    dfree(d_y);
    dfree(d_v1);
    dfree(d_nw);
    dfree(d_cnt);
    free(w);
    free(xb);
    free(x);
    free(y0);
    free(ref);
    free(got);
    free(v1);
    free(one);
    free(nwt);
    free(xn);
    free(xn_ref);
    free(xn_one);
}

/* The norm in the consumer (cel__cu_gemv3_args.in_x / in_w): each block
 * normalizes the FP32 residual rows itself, so the result must be the same
 * GEMV on cel__cuk_rmsnorm's BF16 rows, bit for bit, in the plain form (split
 * ks) and the SwiGLU form, early-launched or not; rows longer than the
 * norm's registers (2048) take its loop. */
static void run_gemv3_norm_in(int32_t T, int32_t I, int32_t O, int32_t ks, bool swiglu)
{
    const float eps = 1e-6f;
    const size_t nw_ = (size_t)O * I * (swiglu ? 2 : 1), nx = (size_t)T * I, ny = (size_t)T * O;
    uint16_t *w = malloc(nw_ * 2);
    float *xr = malloc(nx * sizeof(float)), *nwt = malloc((size_t)I * sizeof(float));
    unsigned char *want = malloc(ny * 4), *got = malloc(ny * 4);
    for (size_t i = 0; i < nw_; i++) w[i] = cel_fp32_to_bf16(frand(0.5f));
    for (size_t i = 0; i < nx; i++) xr[i] = frand(3.0f);
    for (int32_t i = 0; i < I; i++) nwt[i] = 1.0f + frand(0.5f);
    uint16_t *d_w = dup_to_dev(w, nw_ * 2), *d_xn = dalloc(nx * 2);
    float *d_xr = dup_to_dev(xr, nx * sizeof(float)), *d_nw = dup_to_dev(nwt, (size_t)I * sizeof(float));
    void *d_out = dalloc(ny * 4);
    const size_t out_bytes = ny * (swiglu ? 2 : 4);
    assert_int_equal(cel__cuk_rmsnorm(g_stream, NULL, d_xn, d_xr, NULL, d_nw, T, I, eps), cudaSuccess);
    cel__cu_gemv3_args a = cel__cu_gemv3_make(swiglu ? NULL : (float *)d_out, swiglu ? (uint16_t *)d_out : NULL, d_w,
                                              d_xn, T, I, O);
    a.k_split = ks;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
    to_host(want, d_out, out_bytes);
    for (int pdl = 0; pdl < 2; pdl++) {
        dset(d_out, 0, out_bytes);
        cel__cu_gemv3_args b = a;
        b.x = NULL;
        b.in_x = d_xr;
        b.in_w = d_nw;
        b.eps = eps;
        b.pdl = pdl;
        assert_int_equal(cel__cuk_gemv3(g_stream, &b), cudaSuccess);
        to_host(got, d_out, out_bytes);
        if (memcmp(got, want, out_bytes) != 0)
            fail_msg("gemv3%s T%d %dx%d ks%d: the norm in the consumer differs from cel__cuk_rmsnorm + GEMV%s",
                     swiglu ? " swiglu" : "", (int)T, (int)I, (int)O, (int)ks, pdl ? " (pdl)" : "");
    }
    printf("  %-28s T%d %dx%d: bit-equal to rmsnorm + GEMV\n", swiglu ? "gemv3 swiglu, norm in" : "gemv3, norm in", (int)T,
           (int)I, (int)O);
    dfree(d_w);
    dfree(d_xn);
    dfree(d_xr);
    dfree(d_nw);
    dfree(d_out);
    free(w);
    free(xr);
    free(nwt);
    free(want);
    free(got);
}

/* The SwiGLU form of cel__cuk_gemv3 (one warp per gate/up pair) against the
 * v2 kernel's SwiGLU form on the same BF16 input, bit for bit, and each row
 * alone against its row in the batch. */
static void run_gemv3_swiglu(int32_t T, int32_t I, int32_t O)
{
    const size_t nw_ = (size_t)2 * O * I, nx = (size_t)T * I, nh = (size_t)T * O;
    uint16_t *w = malloc(nw_ * 2), *xb = malloc(nx * 2), *h2 = malloc(nh * 2), *h3 = malloc(nh * 2);
    uint16_t *h1 = malloc((size_t)O * 2);
    for (size_t i = 0; i < nw_; i++) w[i] = cel_fp32_to_bf16(frand(0.1f));
    for (size_t i = 0; i < nx; i++) xb[i] = cel_fp32_to_bf16(frand(2.0f));
    uint16_t *d_w = dup_to_dev(w, nw_ * 2), *d_x = dup_to_dev(xb, nx * 2), *d_h2 = dalloc(nh * 2), *d_h3 = dalloc(nh * 2);
    cel__cu_gemv_args a2;
    memset(&a2, 0, sizeof a2);
    a2.h = d_h2;
    a2.W = d_w;
    a2.x = d_x;
    a2.n_rows = T;
    a2.n_in = I;
    a2.n_out = O;
    assert_int_equal(cel__cuk_gemv_ex(g_stream, &a2), cudaSuccess);
    cel__cu_gemv3_args a = cel__cu_gemv3_make(NULL, d_h3, d_w, d_x, T, I, O);
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
    to_host(h2, d_h2, nh * 2);
    to_host(h3, d_h3, nh * 2);
    if (memcmp(h2, h3, nh * 2) != 0) fail_msg("gemv3 swiglu T%d %dx%d differs from the v2 kernel", T, I, O);
    a.pdl = 1; /* early launch with L2 prefetch of gate and up rows: the same bits */
    a.pf_bytes = 4096;
    dset(d_h3, 0, nh * 2);
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
    to_host(h3, d_h3, nh * 2);
    if (memcmp(h2, h3, nh * 2) != 0) fail_msg("gemv3 swiglu T%d %dx%d differs with pdl", T, I, O);
    for (int32_t r = 0; r < T && T > 1; r++) {
        a.x = d_x + (size_t)r * I;
        a.n_rows = 1;
        assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
        to_host(h1, d_h3, (size_t)O * 2);
        if (memcmp(h1, h2 + (size_t)r * O, (size_t)O * 2) != 0)
            fail_msg("gemv3 swiglu T%d %dx%d: row %d alone differs from its row in the batch", T, I, O, (int)r);
    }
    printf("  %-28s bit-equal to v2, rows alone = batch\n", "gemv3 swiglu");
    dfree(d_w);
    dfree(d_x);
    dfree(d_h2);
    dfree(d_h3);
    free(w);
    free(xb);
    free(h2);
    free(h3);
    free(h1);
}

/* The q/k/v epilogue of cel__cuk_gemv3 (cel__cu_qkv_fuse) against the same
 * GEMV followed by cel__cuk_qkv_rope_v3: q in the output and the whole K/V
 * cache bit for bit, the arrival counters back at zero. T rows at
 * positions spread over several KV blocks, nh/nkv heads of hd, GEMV split
 * ks (0: the default). */
static void run_gemv3_qkv(int32_t T, int32_t I, int32_t nh, int32_t nkv, int32_t hd, int32_t ks, cel_rope_style style,
                          bool bias, bool qk_norm)
{
    const int32_t units = nh + 2 * nkv, O = units * hd, bs = 4, n_blocks = 12;
    const size_t nw_ = (size_t)O * I, nx = (size_t)T * I, ny = (size_t)T * O, cache_n = (size_t)n_blocks * nkv * bs * hd;
    uint16_t *w = malloc(nw_ * 2), *xb = malloc(nx * 2), *ka = malloc(cache_n * 2), *kb = malloc(cache_n * 2);
    uint16_t *va = malloc(cache_n * 2), *vb = malloc(cache_n * 2);
    float *b = malloc((size_t)O * sizeof(float)), *qn = malloc((size_t)hd * 4), *kn = malloc((size_t)hd * 4);
    float *inv = malloc((size_t)hd / 2 * 4), *ya = malloc(ny * sizeof(float)), *yb = malloc(ny * sizeof(float));
    int32_t pos[8], blk[8], cnt[64];
    for (size_t i = 0; i < nw_; i++) w[i] = cel_fp32_to_bf16(frand(0.2f));
    for (size_t i = 0; i < nx; i++) xb[i] = cel_fp32_to_bf16(frand(1.0f));
    for (int32_t i = 0; i < O; i++) b[i] = frand(0.5f);
    for (int32_t i = 0; i < hd; i++) {
        qn[i] = 1.0f + frand(0.3f);
        kn[i] = 1.0f + frand(0.3f);
    }
    for (int32_t i = 0; i < hd / 2; i++) inv[i] = powf(10000.0f, -2.0f * (float)i / (float)hd);
    for (int32_t t = 0; t < T; t++) { /* distinct slots: token t at position 5 t + 3 */
        pos[t] = 5 * t + 3;
        blk[t] = (pos[t] / bs) % n_blocks;
    }
    uint16_t *d_w = dup_to_dev(w, nw_ * 2), *d_x = dup_to_dev(xb, nx * 2);
    uint16_t *d_ka = dalloc(cache_n * 2), *d_kb = dalloc(cache_n * 2), *d_va = dalloc(cache_n * 2),
             *d_vb = dalloc(cache_n * 2);
    float *d_ya = dalloc(ny * sizeof(float)), *d_yb = dalloc(ny * sizeof(float));
    float *d_b = dup_to_dev(b, (size_t)O * 4), *d_qn = dup_to_dev(qn, (size_t)hd * 4), *d_kn = dup_to_dev(kn, (size_t)hd * 4);
    float *d_inv = dup_to_dev(inv, (size_t)hd / 2 * 4);
    int32_t *d_pos = dup_to_dev(pos, sizeof pos), *d_blk = dup_to_dev(blk, sizeof blk), *d_cnt = dalloc(sizeof cnt);
    dset(d_cnt, 0, sizeof cnt);
    uint16_t *caches[4] = {d_ka, d_kb, d_va, d_vb};
    for (int i = 0; i < 4; i++) dset(caches[i], 0, cache_n * 2);
    cel__cu_qkv_params qp = {T, nh, nkv, hd, bs, (int32_t)style, 1e-6f, 0};
    cel__cu_gemv3_args a = cel__cu_gemv3_make(d_ya, NULL, d_w, d_x, T, I, O);
    a.k_split = ks;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
    assert_int_equal(cel__cuk_qkv_rope_v3(g_stream, d_ya, bias ? d_b : NULL, qk_norm ? d_qn : NULL,
                                          qk_norm ? d_kn : NULL, d_inv, d_pos, d_blk, d_ka, d_va, qp),
                     cudaSuccess);
    const cel__cu_qkv_fuse qf = {bias ? d_b : NULL, qk_norm ? d_qn : NULL, qk_norm ? d_kn : NULL, d_inv, d_pos, d_blk,
                                 d_kb, d_vb, d_cnt, qp};
    assert_true(cel__cuk_gemv3_fuses_qkv(O, I, hd, ks));
    a.y = d_yb;
    a.qkv = &qf;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
    to_host(ya, d_ya, ny * sizeof(float));
    to_host(yb, d_yb, ny * sizeof(float));
    to_host(ka, d_ka, cache_n * 2);
    to_host(kb, d_kb, cache_n * 2);
    to_host(va, d_va, cache_n * 2);
    to_host(vb, d_vb, cache_n * 2);
    to_host(cnt, d_cnt, sizeof cnt);
    char what[96];
    snprintf(what, sizeof what, "gemv3+qkv T%d h%d/%d d%d ks%d %s%s%s", T, nh, nkv, hd, ks,
             style == CEL_ROPE_NEOX ? "neox" : "norm", bias ? " bias" : "", qk_norm ? " qknorm" : "");
    for (int32_t t = 0; t < T; t++)
        if (memcmp(ya + (size_t)t * O, yb + (size_t)t * O, (size_t)nh * hd * sizeof(float)) != 0)
            fail_msg("%s: token %d's q differs from gemv3 + qkv_rope_v3", what, (int)t);
    if (memcmp(ka, kb, cache_n * 2) != 0 || memcmp(va, vb, cache_n * 2) != 0)
        fail_msg("%s: the K/V cache differs from gemv3 + qkv_rope_v3", what);
    for (int32_t u = 0; u < units; u++) assert_int_equal(cnt[u], 0);
    printf("  %-40s bit-equal to gemv3 + qkv_rope_v3\n", what);
    cel__cu_qkv_fuse bad = qf; /* what the epilogue cannot take */
    bad.p.n_tokens = T + 1;
    a.qkv = &bad;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.qkv = &qf;
    a.accumulate = 1;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    dfree(d_w);
    dfree(d_x);
    for (int i = 0; i < 4; i++) dfree(caches[i]);
    dfree(d_ya);
    dfree(d_yb);
    dfree(d_b);
    dfree(d_qn);
    dfree(d_kn);
    dfree(d_inv);
    dfree(d_pos);
    dfree(d_blk);
    dfree(d_cnt);
    free(w);
    free(xb);
    free(ka);
    free(kb);
    free(va);
    free(vb);
    free(b);
    free(qn);
    free(kn);
    free(inv);
    free(ya);
    free(yb);
}

static void test_gemv3_qkv(void **state)
{
    (void)state;
    NEED_DEVICE();
    run_gemv3_qkv(1, 256, 4, 2, 64, 0, CEL_ROPE_NEOX, false, false);
    run_gemv3_qkv(3, 264, 4, 2, 64, 1, CEL_ROPE_NORM, true, false);
    run_gemv3_qkv(8, 128, 4, 1, 128, 2, CEL_ROPE_NEOX, false, true);
    run_gemv3_qkv(5, 64, 2, 2, 32, 4, CEL_ROPE_NEOX, true, true);
    run_gemv3_qkv(2, 2048, 32, 8, 64, 0, CEL_ROPE_NEOX, false, false); /* Llama-3.2-1B's shape */
    assert_true(cel__cuk_gemv3_fuses_qkv(3072, 2048, 64, 1));
    assert_true(cel__cuk_gemv3_fuses_qkv(4608, 2048, 96, 0));
    assert_true(cel__cuk_gemv3_fuses_qkv(10240, 8192, 128, 1)); /* 16 rows per block (n_out >= 8192) */
    /* shapes it refuses */
    assert_false(cel__cuk_gemv3_fuses_qkv(9216, 4096, 48, 1)); /* not a multiple of 32 */
    assert_false(cel__cuk_gemv3_fuses_qkv(9216, 4096, 512, 1)); /* longer than the epilogue's buffer */
    assert_false(cel__cuk_gemv3_fuses_qkv(3072, 2048, 64, 3));
}

static void test_gemv3(void **state)
{
    (void)state;
    NEED_DEVICE();
    /* the default split is a function of the shape (Llama-3.2-1B: o and down split in 2, qkv not) */
    assert_int_equal(cel__cuk_gemv3_split(2048, 2048, 0), 2);
    assert_int_equal(cel__cuk_gemv3_split(3072, 2048, 0), 1);
    assert_int_equal(cel__cuk_gemv3_split(2048, 8192, 0), 2);
    assert_int_equal(cel__cuk_gemv3_split(1024, 2048, 0), 4);
    assert_int_equal(cel__cuk_gemv3_split(8192, 2048, 1), 1);
    assert_int_equal(cel__cuk_gemv3_split(128256, 2048, 0), 1);
    assert_int_equal(cel__cuk_gemv3_split(100, 256, 0), 1); /* 32 chunks: < 2 per lane at ks 2 */
    static const int32_t splits[4] = {0, 1, 2, 4};
    for (int32_t T = 1; T <= 8; T++) /* 33 chunks: uneven slices, partial load groups */
        run_gemv3(T, 264, 37, splits[T % 4], T % 2 == 0, T % 3 != 0);
    for (int k = 1; k < 4; k++) {
        run_gemv3(3, 2048, 20, splits[k], true, true); /* Llama-3.2-1B's hidden size */
        run_gemv3(1, 8, 1, splits[k], false, true);    /* one chunk: the other slices are empty */
        run_gemv3(2, 8192, 24, splits[k], true, true); /* the down projection's width */
    }
    run_gemv3(8, 1024, 9, 2, true, true);
    run_gemv3(8, 1024, 9, 4, false, false);
    run_gemv3(2, 64, 4097, 0, true, true);   /* norm rows longer than the registers hold (4096) */
    run_gemv3(1, 16, 8201, 0, false, false); /* n_out >= 8192: two rows per warp, a half task at the end */
    run_gemv3(3, 16, 8201, 0, true, true);
    run_gemv3_swiglu(1, 264, 37);
    run_gemv3_swiglu(5, 2048, 12);
    run_gemv3_swiglu(8, 64, 300);
    run_gemv3_norm_in(1, 2048, 37, 0, false); /* Llama-3.2-1B's hidden size, one row */
    run_gemv3_norm_in(3, 264, 41, 2, false);
    run_gemv3_norm_in(8, 2048, 9, 4, false);  /* 32 KiB of rows: the limit */
    run_gemv3_norm_in(4, 4096, 5, 1, false);  /* longer than the norm's registers */
    run_gemv3_norm_in(2, 2048, 12, 0, true);  /* gate/up */
    run_gemv3_norm_in(1, 4104, 3, 0, true);
    /* invalid arguments */
    cel__cu_gemv3_args a;
    memset(&a, 0, sizeof a);
    float dummy[4] = {0};
    uint16_t hd[8] = {0};
    a.y = dummy;
    a.W = hd;
    a.x = hd;
    a.n_rows = 9; /* more than CEL__CU_GEMV_MAX_ROWS */
    a.n_in = 8;
    a.n_out = 1;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.n_rows = 1;
    a.n_in = 12; /* not a multiple of 8 */
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.n_in = 8;
    a.pf_bytes = 8; /* not a multiple of 16 */
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.pf_bytes = 0;
    a.k_split = 3;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.k_split = 0;
    a.norm_out = hd; /* norm epilogue without weight and counter */
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.norm_out = NULL;
    a.in_x = dummy; /* norm in the consumer without weight */
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.in_w = dummy; /* ... with more rows than its shared memory holds */
    a.n_in = CEL__CU_GEMV3_NORM_IN_SMEM / 2 + 8;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.n_in = 8; /* ... with its rows overlapping the output */
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.in_x = NULL;
    a.in_w = NULL;
    a.h = hd; /* SwiGLU form with y set */
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.y = NULL;
    a.k_split = 2; /* SwiGLU splits only 1 */
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.h = NULL; /* plain form without y */
    a.k_split = 0;
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaErrorInvalidValue);
    a.n_rows = 0; /* nothing to do */
    assert_int_equal(cel__cuk_gemv3(g_stream, &a), cudaSuccess);
    cudaGetLastError();
}

/* cel__cuk_embed_norm_v3 gives the embedding rows (as cel__cuk_embed) and
 * cel__cuk_rmsnorm's BF16 bits of them (rows shorter and longer than the 16
 * x 256 elements its threads hold in registers). */
static void test_embed_norm_v3(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const int32_t ns[4] = {8, 2048, 4096, 5000};
    const int32_t T = 3, V = 5, tok[3] = {4, 0, 4};
    for (int k = 0; k < 4; k++) {
        const int32_t n = ns[k];
        const size_t nx = (size_t)T * n;
        uint16_t *emb = malloc((size_t)V * n * 2);
        float *x = malloc(nx * sizeof(float)), *w = malloc((size_t)n * sizeof(float)), *xo = malloc(nx * sizeof(float));
        for (int64_t i = 0; i < (int64_t)V * n; i++) emb[i] = cel_fp32_to_bf16(frand(3.0f));
        for (int32_t t = 0; t < T; t++)
            for (int32_t i = 0; i < n; i++) x[(size_t)t * n + i] = cel_bf16_to_fp32(emb[(size_t)tok[t] * n + i]);
        for (int32_t i = 0; i < n; i++) w[i] = 1.0f + frand(0.5f);
        float *d_x = dup_to_dev(x, nx * sizeof(float)), *d_w = dup_to_dev(w, (size_t)n * sizeof(float));
        float *d_xo = dalloc(nx * sizeof(float));
        uint16_t *d_emb = dup_to_dev(emb, (size_t)V * n * 2);
        int32_t *d_tok = dup_to_dev(tok, sizeof tok);
        uint16_t *d_a = dalloc(nx * 2), *d_c = dalloc(nx * 2);
        uint16_t *ha = malloc(nx * 2), *hc = malloc(nx * 2);
        assert_int_equal(cel__cuk_rmsnorm(g_stream, NULL, d_a, d_x, NULL, d_w, T, n, 1e-6f), cudaSuccess);
        assert_int_equal(cel__cuk_embed_norm_v3(g_stream, d_xo, d_c, d_emb, d_tok, d_w, T, n, 1e-6f), cudaSuccess);
        to_host(ha, d_a, nx * 2);
        to_host(hc, d_c, nx * 2);
        to_host(xo, d_xo, nx * sizeof(float));
        if (memcmp(ha, hc, nx * 2) != 0) fail_msg("embed_norm_v3 n=%d: the norm differs from rmsnorm", (int)n);
        if (memcmp(x, xo, nx * sizeof(float)) != 0) fail_msg("embed_norm_v3 n=%d: x differs from the embedding", (int)n);
        dfree(d_x);
        dfree(d_w);
        dfree(d_xo);
        dfree(d_emb);
        dfree(d_tok);
        dfree(d_a);
        dfree(d_c);
        free(emb);
        free(x);
        free(w);
        free(xo);
        free(ha);
        free(hc);
    }
    printf("  %-28s the embedding, and bit-equal to rmsnorm (n 8, 2048, 4096, 5000)\n", "embed_norm_v3");
}

/* ---------------------------------------------------------- copy, argmax */
static void test_copy_block(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t L = 3, NB = 5, nkv = 2, bs = 4, hd = 32;
    const size_t n = (size_t)L * NB * nkv * bs * hd;
    uint16_t *k = malloc(n * 2), *v = malloc(n * 2), *k2 = malloc(n * 2), *v2 = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        k[i] = (uint16_t)(cel_rng_next(&g_rng) & 0x3bff);
        v[i] = (uint16_t)(cel_rng_next(&g_rng) & 0x3bff);
    }
    uint16_t *d_k = dup_to_dev(k, n * 2), *d_v = dup_to_dev(v, n * 2);
    assert_int_equal(cel__cuk_copy_block(g_stream, d_k, d_v, L, NB, nkv, bs, hd, 3, 1, 3), cudaSuccess);
    to_host(k2, d_k, n * 2);
    to_host(v2, d_v, n * 2);
    for (int32_t l = 0; l < L; l++)
        for (int32_t b = 0; b < NB; b++)
            for (int32_t h = 0; h < nkv; h++)
                for (int32_t s = 0; s < bs; s++)
                    for (int32_t d = 0; d < hd; d++) {
                        size_t at = ((((size_t)l * NB + b) * nkv + h) * bs + s) * hd + d;
                        size_t from = ((((size_t)l * NB + 3) * nkv + h) * bs + s) * hd + d;
                        bool copied = b == 1 && s < 3;
                        assert_int_equal(k2[at], copied ? k[from] : k[at]);
                        assert_int_equal(v2[at], copied ? v[from] : v[at]);
                    }
    dfree(d_k);
    dfree(d_v);
    free(k);
    free(v);
    free(k2);
    free(v2);
}

/* cel__cuk_argmax with every split count on R rows of V logits (device
 * d_l) gives want[] (the unsplit answer), and leaves its counters at zero. */
static void check_argmax_splits(const float *d_l, int32_t R, int32_t V, const int32_t *want)
{
    const size_t parts = (size_t)R * CEL__CU_ARGMAX_MAX_SPLIT;
    float *d_pv = dalloc(parts * sizeof(float));
    int32_t *d_pi = dalloc(parts * sizeof(int32_t)), *d_cnt = dalloc((size_t)R * sizeof(int32_t));
    int32_t *d_o = dalloc((size_t)R * sizeof(int32_t)), *got = malloc((size_t)R * sizeof(int32_t));
    int32_t *cnt = malloc((size_t)R * sizeof(int32_t));
    dset(d_cnt, 0, (size_t)R * sizeof(int32_t));
    for (int32_t S = 1; S <= CEL__CU_ARGMAX_MAX_SPLIT; S++) {
        const cel__cu_argmax_split sp = {d_pv, d_pi, d_cnt, S};
        dset(d_o, 0xff, (size_t)R * sizeof(int32_t));
        assert_int_equal(cel__cuk_argmax(g_stream, d_o, d_l, R, V, &sp), cudaSuccess);
        to_host(got, d_o, (size_t)R * sizeof(int32_t));
        to_host(cnt, d_cnt, (size_t)R * sizeof(int32_t));
        for (int32_t r = 0; r < R; r++) {
            if (got[r] != want[r]) fail_msg("argmax V %d, %d splits: row %d gives %d, unsplit %d", V, S, r, got[r], want[r]);
            assert_int_equal(cnt[r], 0);
        }
    }
    const cel__cu_argmax_split bad = {d_pv, d_pi, d_cnt, CEL__CU_ARGMAX_MAX_SPLIT + 1};
    assert_int_equal(cel__cuk_argmax(g_stream, d_o, d_l, R, V, &bad), cudaErrorInvalidValue);
    const cel__cu_argmax_split noscratch = {NULL, NULL, NULL, 2};
    assert_int_equal(cel__cuk_argmax(g_stream, d_o, d_l, R, V, &noscratch), cudaErrorInvalidValue);
    dfree(d_pv);
    dfree(d_pi);
    dfree(d_cnt);
    dfree(d_o);
    free(got);
    free(cnt);
}

static void test_argmax(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int32_t R = 4, V = 1000;
    float *l = malloc((size_t)R * V * sizeof(float));
    for (int64_t i = 0; i < (int64_t)R * V; i++) l[i] = frand(5.0f);
    l[0 * V + 999] = 9.0f;
    l[1 * V + 0] = 9.0f;
    l[2 * V + 700] = 9.0f; /* tie: the lower index wins */
    l[2 * V + 300] = 9.0f;
    for (int i = 0; i < V; i++) l[3 * V + i] = -INFINITY;
    l[3 * V + 513] = -1e30f;
    float *d_l = dup_to_dev(l, (size_t)R * V * sizeof(float));
    int32_t *d_o = dalloc(R * 4), o[4];
    assert_int_equal(cel__cuk_argmax(g_stream, d_o, d_l, R, V, NULL), cudaSuccess);
    to_host(o, d_o, sizeof o);
    assert_int_equal(o[0], 999);
    assert_int_equal(o[1], 0);
    assert_int_equal(o[2], 300);
    assert_int_equal(o[3], 513);
    check_argmax_splits(d_l, R, V, o);
    int32_t w5 = 0; /* one row of 5: more splits than 4-float groups, empty slices */
    for (int32_t i = 1; i < 5; i++)
        if (l[i] > l[w5]) w5 = i;
    check_argmax_splits(d_l, 1, 5, &w5);
    /* the backend's choice: slices of >= 16384 logits, ~one block per SM in all */
    assert_int_equal(cel__cuk_argmax_splits(1, 128256, 132), 7);
    assert_int_equal(cel__cuk_argmax_splits(64, 128256, 132), 3);
    assert_int_equal(cel__cuk_argmax_splits(256, 128256, 132), 1);
    assert_int_equal(cel__cuk_argmax_splits(1, 1000, 132), 1);
    assert_int_equal(cel__cuk_argmax_splits(1, 1 << 24, 132), CEL__CU_ARGMAX_MAX_SPLIT);
    dfree(d_l);
    dfree(d_o);
    free(l);

    /* long rows (the 16-byte path when V % 4 == 0, scalar otherwise), NaNs
     * ranked below numbers, ties across far-apart threads */
    for (int32_t VV = 40000; VV <= 40001; VV++) {
        float *m = malloc((size_t)4 * VV * sizeof(float));
        for (int64_t i = 0; i < (int64_t)4 * VV; i++) m[i] = frand(5.0f);
        m[0 * (size_t)VV + 39999] = 7.0f;
        m[0 * (size_t)VV + 5] = NAN;
        m[1 * (size_t)VV + 31000] = 8.0f; /* tie: 4097 wins */
        m[1 * (size_t)VV + 4097] = 8.0f;
        for (int32_t i = 0; i < VV; i++) m[2 * (size_t)VV + i] = NAN;
        m[3 * (size_t)VV + 0] = NAN;
        m[3 * (size_t)VV + 12345] = 6.0f;
        float *d_m = dup_to_dev(m, (size_t)4 * VV * sizeof(float));
        int32_t *d_r = dalloc(4 * 4), res[4];
        assert_int_equal(cel__cuk_argmax(g_stream, d_r, d_m, 4, VV, NULL), cudaSuccess);
        to_host(res, d_r, sizeof res);
        assert_int_equal(res[0], 39999);
        assert_int_equal(res[1], 4097);
        assert_int_equal(res[2], 0); /* all NaN: the first */
        assert_int_equal(res[3], 12345);
        check_argmax_splits(d_m, 4, VV, res);
        dfree(d_m);
        dfree(d_r);
        free(m);
    }
}

/* ---------------------------------------------------------- sampling */

/* Logits like a model's: a few strong tokens over a long tail (shape 0), a
 * flat row (1), a row of many exact ties at the top (2), coarse values with
 * ties everywhere (3). */
static void sample_row(float *l, int32_t V, int shape)
{
    for (int32_t i = 0; i < V; i++) {
        switch (shape) {
        case 0: l[i] = frand(3.0f) - 4.0f; break;
        case 1: l[i] = frand(0.5f); break;
        case 2: l[i] = frand(2.0f); break;
        default: l[i] = (float)(int)(frand(4.0f)); break;
        }
    }
    if (shape == 0)
        for (int j = 0; j < 6; j++) l[cel_rng_next(&g_rng) % (uint64_t)V] = 4.0f + frand(3.0f);
    if (shape == 2)
        for (int j = 0; j < 5; j++) l[cel_rng_next(&g_rng) % (uint64_t)V] = 5.0f;
}

typedef struct samp_stats {
    int rows, mismatches, given_back, lp_bits_differ;
} samp_stats;

/* Samples R rows of V logits on the device with requests rq and checks each
 * against cel_sample_u (same u): same token, logprob within 1e-5; a row
 * given back (-1) must be one the kernel may give back: off, or needing
 * more than the candidate cap (checked through cel_sample_probs). */
static void check_sample_rows(const float *l, int32_t R, int32_t V, const cel_batch_sample *rq, samp_stats *stt)
{
    cel__cu_sample_req *dr = malloc((size_t)R * sizeof *dr);
    for (int32_t r = 0; r < R; r++) cel__cu_sample_req_fill(&dr[r], &rq[r]);
    float *d_l = dup_to_dev(l, (size_t)R * V * sizeof(float));
    cel__cu_sample_req *d_rq = dup_to_dev(dr, (size_t)R * sizeof *dr);
    int32_t *d_t = dalloc((size_t)R * 4), *tok = malloc((size_t)R * 4);
    float *d_p = dalloc((size_t)R * 4), *lp = malloc((size_t)R * 4), *probs = malloc((size_t)V * sizeof(float));
    assert_int_equal(cel__cuk_sample(g_stream, d_t, d_p, d_l, d_rq, R, V), cudaSuccess);
    to_host(tok, d_t, (size_t)R * 4);
    to_host(lp, d_p, (size_t)R * 4);
    cel_sample_scratch ws;
    cel_error err;
    assert_int_equal(cel_sample_scratch_init(&ws, V, &err), CEL_OK);
    cel_sample_state st;
    cel_sample_state_init(&st, 0, 0);
    for (int32_t r = 0; r < R; r++) {
        const float *row = l + (size_t)r * V;
        stt->rows++;
        if (!rq[r].on) {
            assert_int_equal(tok[r], -1);
            continue;
        }
        cel_sampling sp;
        cel_sampling_default(&sp);
        sp.temperature = rq[r].temperature;
        sp.top_k = rq[r].top_k;
        sp.top_p = rq[r].top_p;
        sp.min_p = rq[r].min_p;
        sp.n_logprobs = rq[r].want_logprob ? 0 : -1;
        cel_sample_out so;
        assert_int_equal(cel_sample_u(&sp, NULL, 0, &st, row, &ws, rq[r].u, &so, &err), CEL_OK);
        if (tok[r] < 0) {
            /* given back: only when the candidates past the filters exceed the cap */
            stt->given_back++;
            assert_int_equal(rq[r].top_k, 0);
            assert_int_equal(cel_sample_probs(&sp, NULL, 0, &st, row, &ws, probs, &err), CEL_OK);
            int32_t nz = 0;
            for (int32_t i = 0; i < V; i++) nz += probs[i] > 0.0f;
            if (nz <= CEL_BACKEND_SAMPLE_MAX_K)
                fail_msg("row %d (V %d, T %g, p %g, min_p %g) given back with %d candidates", r, V,
                         (double)sp.temperature, (double)sp.top_p, (double)sp.min_p, nz);
            continue;
        }
        assert_true(tok[r] < V);
        if (tok[r] != so.token) {
            stt->mismatches++;
            printf("  sample mismatch: row %d V %d T %g k %d p %g min_p %g u %.17g: device %d, cpu %d\n", r, V,
                   (double)sp.temperature, sp.top_k, (double)sp.top_p, (double)sp.min_p, rq[r].u, tok[r], so.token);
            continue;
        }
        if (rq[r].want_logprob) {
            assert_true(fabsf(lp[r] - so.logprob) <= 1e-5f);
            if (memcmp(&lp[r], &so.logprob, 4) != 0) stt->lp_bits_differ++;
        }
    }
    cel_sample_scratch_free(&ws);
    cel_sample_state_free(&st);
    dfree(d_l);
    dfree(d_rq);
    dfree(d_t);
    dfree(d_p);
    free(dr);
    free(tok);
    free(lp);
    free(probs);
}

static void test_sample_kernel(void **state)
{
    (void)state;
    NEED_DEVICE();
    samp_stats stt = {0};
    const float temps[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.5f, 2.0f};
    const int32_t ks[] = {0, 1, 40, 1024};
    const float ps[] = {1.0f, 0.1f, 0.5f, 0.9f, 0.95f, 1.0f};
    const float mps[] = {0.0f, 0.0f, 0.05f, 0.3f};
    /* small and middling vocabularies: every combination, random u */
    const int32_t Vs[] = {37, 1000, 1500, 5003};
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++) {
        const int32_t V = Vs[vi], R = V > 2000 ? 96 : 288;
        float *l = malloc((size_t)R * V * sizeof(float));
        cel_batch_sample *rq = calloc((size_t)R, sizeof *rq);
        for (int32_t r = 0; r < R; r++) {
            sample_row(l + (size_t)r * V, V, r % 4);
            cel_batch_sample *q = &rq[r];
            q->on = r % 17 != 5; /* some rows want logits */
            q->want_logprob = r % 3 != 0;
            q->temperature = temps[(r / 4) % 6];
            q->top_k = ks[(r / 24) % 4];
            q->top_p = ps[(r / 96) % 6 + 0 * r] < 1.0f ? ps[(r / 96) % 6] : ps[r % 6];
            q->min_p = mps[(r / 7) % 4];
            q->u = cel_rng_uniform(&g_rng);
        }
        check_sample_rows(l, R, V, rq, &stt);
        free(l);
        free(rq);
    }
    /* Llama 3's vocabulary: a few rows of each kind */
    {
        const int32_t V = 128256, R = 24;
        float *l = malloc((size_t)R * V * sizeof(float));
        cel_batch_sample *rq = calloc((size_t)R, sizeof *rq);
        for (int32_t r = 0; r < R; r++) {
            sample_row(l + (size_t)r * V, V, r % 3 == 2 ? 2 : 0);
            cel_batch_sample *q = &rq[r];
            q->on = true;
            q->want_logprob = true;
            q->temperature = temps[r % 6];
            q->top_k = ks[(r / 6) % 4];
            q->top_p = r % 2 ? 0.95f : 1.0f;
            q->min_p = r % 5 == 1 ? 0.05f : 0.0f;
            q->u = cel_rng_uniform(&g_rng);
        }
        check_sample_rows(l, R, V, rq, &stt);
        /* the candidate cap: flat rows, top-p 0.99 and no top-k need ~all
         * 128256 candidates: given back; with top_k 1024 they are sampled */
        for (int32_t r = 0; r < 4; r++) {
            for (int32_t i = 0; i < V; i++) l[(size_t)r * V + i] = frand(0.01f);
            rq[r] = (cel_batch_sample){.on = true, .temperature = 1.0f, .top_p = 0.99f, .u = 0.5, .top_k = r < 2 ? 0 : 1024};
        }
        int32_t gb = stt.given_back;
        check_sample_rows(l, 4, V, rq, &stt);
        assert_int_equal(stt.given_back - gb, 2);
        free(l);
        free(rq);
    }
    /* greedy ties across threads far apart, and a lone candidate from top-k 1 */
    {
        const int32_t V = 50000, R = 3;
        float *l = malloc((size_t)R * V * sizeof(float));
        for (int64_t i = 0; i < (int64_t)R * V; i++) l[i] = frand(1.0f);
        l[0 * (size_t)V + 40000] = 3.0f;
        l[0 * (size_t)V + 123] = 3.0f;
        l[1 * (size_t)V + 777] = 2.5f;
        l[1 * (size_t)V + 49999] = 2.5f;
        l[2 * (size_t)V + 9] = NAN; /* given back: the CPU reports such rows */
        cel_batch_sample rq[3] = {{.on = true, .temperature = 0.0f},
                                  {.on = true, .temperature = 1.0f, .top_k = 1, .top_p = 1.0f, .u = 0.99},
                                  {.on = true, .temperature = 1.0f, .top_p = 1.0f, .u = 0.3}};
        float *d_l = dup_to_dev(l, (size_t)R * V * sizeof(float));
        cel__cu_sample_req dr[3];
        for (int r = 0; r < 3; r++) cel__cu_sample_req_fill(&dr[r], &rq[r]);
        cel__cu_sample_req *d_rq = dup_to_dev(dr, sizeof dr);
        int32_t *d_t = dalloc(12), tok[3];
        float *d_p = dalloc(12);
        assert_int_equal(cel__cuk_sample(g_stream, d_t, d_p, d_l, d_rq, R, V), cudaSuccess);
        to_host(tok, d_t, sizeof tok);
        assert_int_equal(tok[0], 123);
        assert_int_equal(tok[1], 777);
        assert_int_equal(tok[2], -1);
        dfree(d_l);
        dfree(d_rq);
        dfree(d_t);
        dfree(d_p);
        free(l);
    }
    printf("  %-28s %d rows vs cel_sample_u: %d token mismatches, %d given back (cap), %d logprobs not bit-equal\n",
           "sample", stt.rows, stt.mismatches, stt.given_back, stt.lp_bits_differ);
    assert_true(stt.given_back >= 2);
    /* tokens may differ only when u lands within rounding of a boundary */
    assert_true(stt.mismatches <= 2);
}

/* Errors surface as codes, never as crashes: bad shapes are refused. */
/* The emulation runs queued work when the host waits for the stream, not at
 * the call, so what a device would get wrong the tests get wrong too: a
 * result read before the wait is stale, and a pinned buffer rewritten
 * before the wait is what the copy sends. On a device the same checks
 * would race, so they run in the emulation only. */
static void test_emu_async(void **state)
{
    (void)state;
#ifdef CEL_CUDA_EMU
    enum { N = 64 };
    unsigned char *h = NULL, *src = NULL;
    assert_int_equal(cudaHostAlloc((void **)&h, N, cudaHostAllocDefault), cudaSuccess);
    assert_int_equal(cudaHostAlloc((void **)&src, N, cudaHostAllocDefault), cudaSuccess);
    unsigned char *d = dalloc(N);
    memset(h, 0, N);
    dset(d, 1, N);
    assert_int_equal(cudaMemcpyAsync(h, d, N, cudaMemcpyDeviceToHost, g_stream), cudaSuccess);
    assert_int_equal(h[0], 0); /* not yet: the host has not waited */
    assert_int_equal(cudaStreamSynchronize(g_stream), cudaSuccess);
    assert_int_equal(h[0], 1);
    assert_int_equal(h[N - 1], 1);
    memset(src, 7, N);
    assert_int_equal(cudaMemcpyAsync(d, src, N, cudaMemcpyHostToDevice, g_stream), cudaSuccess);
    memset(src, 9, N); /* staging rewritten before the copy ran */
    to_host(h, d, N);
    assert_int_equal(h[0], 9);
    /* pageable memory: the data is taken at the call */
    unsigned char pg[N];
    memset(pg, 5, N);
    assert_int_equal(cudaMemcpyAsync(d, pg, N, cudaMemcpyHostToDevice, g_stream), cudaSuccess);
    memset(pg, 6, N);
    to_host(h, d, N);
    assert_int_equal(h[0], 5);
    dfree(d);
    assert_int_equal(cudaFreeHost(h), cudaSuccess);
    assert_int_equal(cudaFreeHost(src), cudaSuccess);
#else
    skip(); /* on a device these would be races, not checks */
#endif
}

static void test_launch_errors(void **state)
{
    (void)state;
    NEED_DEVICE();
    assert_int_not_equal(cel__cuk_gemv(g_stream, NULL, NULL, NULL, 9, 64, 4, 0), cudaSuccess);
    assert_int_not_equal(cel__cuk_gemv(g_stream, NULL, NULL, NULL, 2, 60, 4, 0), cudaSuccess);
    cel__cu_attn_params p = {1, 4, 4, 48, 16, 48 * 12, 0.1f};
    assert_int_not_equal(cel__cuk_attention(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p), cudaSuccess);
    assert_int_not_equal(cel__cuk_attention_v3(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p, NULL),
                         cudaSuccess);
    /* splits > 1: scratch required, at most CEL__CU_ATTN_SPLIT_ROWS tokens; splits within 1..MAX_CHUNKS */
    cel__cu_attn_params p2 = {1, 4, 4, 64, 16, 64 * 12, 0.1f};
    cel__cu_attn_split sp = {NULL, NULL, 2, 0, 0, NULL};
    assert_int_not_equal(cel__cuk_attention_v3(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p2, &sp),
                         cudaSuccess);
    float dummy_f;
    int32_t dummy_i;
    sp.part = &dummy_f;
    sp.count = &dummy_i;
    sp.splits = 0;
    assert_int_not_equal(cel__cuk_attention_v3(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p2, &sp),
                         cudaSuccess);
    sp.splits = CEL__CU_ATTN_MAX_CHUNKS + 1;
    assert_int_not_equal(cel__cuk_attention_v3(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p2, &sp),
                         cudaSuccess);
    sp.splits = 2;
    p2.n_tokens = CEL__CU_ATTN_SPLIT_ROWS + 1;
    assert_int_not_equal(cel__cuk_attention_v3(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p2, &sp),
                         cudaSuccess);
    /* chunks: multiples of CEL__CU_ATTN_CHUNK_STEP up to CEL__CU_ATTN_CHUNK_MAX */
    p2.n_tokens = 1;
    const int32_t bad_chunks[] = {-8, CEL__CU_ATTN_CHUNK_STEP + 1, CEL__CU_ATTN_CHUNK_MAX + CEL__CU_ATTN_CHUNK_STEP};
    for (size_t i = 0; i < sizeof bad_chunks / sizeof bad_chunks[0]; i++) {
        sp.chunk = bad_chunks[i];
        assert_int_not_equal(cel__cuk_attention_v3(g_stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p2, &sp),
                             cudaSuccess);
    }
    cudaGetLastError();
}

static int setup(void **state)
{
    (void)state;
    if (!cuda_test_open(20240607)) return 0;
    if (cublasCreate(&g_blas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(g_blas, g_stream) != CUBLAS_STATUS_SUCCESS) {
        printf("SKIP: no CUDA device (setup failed)\n");
        cudaStreamDestroy(g_stream);
        g_device = false;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (g_device) cublasDestroy(g_blas);
    cuda_test_close();
    return 0;
}

int main(void)
{
    cel_test_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert),   cmocka_unit_test(test_embed),
        cmocka_unit_test(test_rmsnorm),   cmocka_unit_test(test_qkv_rope),
        cmocka_unit_test(test_attention), cmocka_unit_test(test_attention_v3),
        cmocka_unit_test(test_attention_v3_long), cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_gemm),      cmocka_unit_test(test_gemv_batch_invariance),
        cmocka_unit_test(test_gemv_fused), cmocka_unit_test(test_gemv3), cmocka_unit_test(test_gemv3_qkv),
        cmocka_unit_test(test_embed_norm_v3),
        cmocka_unit_test(test_copy_block), cmocka_unit_test(test_argmax), cmocka_unit_test(test_sample_kernel),
        cmocka_unit_test(test_emu_async),        cmocka_unit_test(test_launch_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

#else /* built without CUDA: the backend must say so */

static void test_no_cuda(void **state)
{
    (void)state;
    printf("SKIP: no CUDA device (celine was built without CUDA)\n");
    cel_backend *be = (cel_backend *)1;
    cel_error err;
    cel_error_clear(&err);
    assert_int_equal(cel_backend_cuda_create(NULL, NULL, &be, &err), CEL_ERR_UNSUPPORTED);
    assert_null(be);
    assert_non_null(strstr(err.msg, "built without CUDA"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
