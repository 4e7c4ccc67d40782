/* Unit tests for the operations of engine/ops.h and the CPU kernel tables:
 * every op against a plain loop written here, the fast matmul of every dtype
 * (scalar and AVX2 tables) against the reference within stated error bounds,
 * SIMD vs scalar agreement, batch invariance (a row's result is bit-identical
 * whatever rows share its batch and however many threads run), and the
 * attention step against the reference attention. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu/cpu.h"
#include "engine/ops.h"

static const cel_dtype ALL_DTYPES[] = {CEL_DTYPE_F32,  CEL_DTYPE_F16,  CEL_DTYPE_BF16, CEL_DTYPE_Q8_0,
                                       CEL_DTYPE_Q4_0, CEL_DTYPE_Q5_0, CEL_DTYPE_Q5_1, CEL_DTYPE_Q4_K,
                                       CEL_DTYPE_Q5_K, CEL_DTYPE_Q6_K};
#define N_DTYPES (sizeof ALL_DTYPES / sizeof ALL_DTYPES[0])

static void fill(float *x, int64_t n, uint64_t seed, float scale)
{
    cel_rng r;
    cel_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = (float)((cel_rng_uniform(&r) * 2.0 - 1.0) * scale);
}

/* A weight tensor [n_out][n_in] of dtype t made from random floats; wf gets
 * the dequantized values (what the reference sees). */
static cel_tensor make_weight(cel_dtype t, int64_t n_in, int64_t n_out, uint64_t seed, float **wf)
{
    cel_tensor w;
    memset(&w, 0, sizeof w);
    snprintf(w.name, sizeof w.name, "w_%s", cel_dtype_name(t));
    w.dtype = t;
    w.n_dims = 2;
    w.ne[0] = n_in;
    w.ne[1] = n_out;
    w.ne[2] = w.ne[3] = 1;
    size_t rb = cel_dtype_row_bytes(t, n_in);
    assert_true(rb > 0);
    w.nbytes = rb * (size_t)n_out;
    w.data = malloc(w.nbytes);
    w.owned = true;
    assert_non_null(w.data);
    float *src = malloc((size_t)(n_in * n_out) * sizeof *src);
    *wf = malloc((size_t)(n_in * n_out) * sizeof **wf);
    assert_non_null(src);
    assert_non_null(*wf);
    fill(src, n_in * n_out, seed, 1.0f);
    for (int64_t o = 0; o < n_out; o++) {
        cel_quant_row(t, src + o * n_in, (uint8_t *)w.data + (size_t)o * rb, n_in);
        cel_dequant_row(t, (uint8_t *)w.data + (size_t)o * rb, *wf + o * n_in, n_in);
    }
    free(src);
    return w;
}

static void *aligned(size_t n)
{
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, 64, n ? n : 64), 0);
    return p;
}

/* ------------------------------------------------------- per-row ops */

static void test_rmsnorm(void **state)
{
    (void)state;
    float x[300], w[300], out[300];
    fill(x, 300, 1, 3.0f);
    fill(w, 300, 2, 1.0f);
    cel_op_rmsnorm(out, x, w, 300, 1e-5f);
    double ss = 0;
    for (int i = 0; i < 300; i++) ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / 300 + 1e-5);
    for (int i = 0; i < 300; i++) assert_true(fabs(out[i] - x[i] * r * w[i]) <= 1e-6 * fabs(x[i] * r * w[i]) + 1e-7);
    /* eps matters for tiny inputs */
    float z[4] = {0, 0, 0, 1e-4f}, one[4] = {1, 1, 1, 1}, oz[4];
    cel_op_rmsnorm(oz, z, one, 4, 1e-6f);
    assert_true(fabsf(oz[3] - 1e-4f / sqrtf(1e-8f / 4 + 1e-6f)) < 1e-6f);
}

static void test_rope_freqs(void **state)
{
    (void)state;
    cel_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.head_dim = 8;
    hp.rope_theta = 10000.0f;
    float f[4];
    cel_op_rope_freqs(&hp, f);
    const double want[4] = {1.0, 0.1, 0.01, 0.001};
    for (int i = 0; i < 4; i++) assert_true(fabs(f[i] - want[i]) <= 1e-6 * want[i]);
    hp.rope_scaling = CEL_ROPE_SCALING_LINEAR;
    hp.rope_factor = 4.0f;
    cel_op_rope_freqs(&hp, f);
    for (int i = 0; i < 4; i++) assert_true(fabs(f[i] - want[i] / 4) <= 1e-6 * want[i]);
    /* llama3: wavelengths 2pi/f = 6.3, 63, 628, 6283 against orig 8192 / {4, 1} =
     * {2048, 8192}: the first three are short (kept), the last is blended */
    hp.rope_scaling = CEL_ROPE_SCALING_LLAMA3;
    hp.rope_factor = 8.0f;
    hp.rope_low_freq_factor = 1.0f;
    hp.rope_high_freq_factor = 4.0f;
    hp.rope_orig_ctx = 8192;
    cel_op_rope_freqs(&hp, f);
    for (int i = 0; i < 3; i++) assert_true(fabs(f[i] - want[i]) <= 1e-6 * want[i]);
    double wl = 2 * 3.14159265358979 / 0.001, smooth = (8192 / wl - 1.0) / 3.0;
    double w3 = (1 - smooth) * 0.001 / 8 + smooth * 0.001;
    assert_true(fabs(f[3] - w3) <= 1e-6 * w3);
    /* a very long wavelength is divided by the factor */
    hp.head_dim = 64;
    hp.rope_theta = 500000.0f;
    float g[32];
    cel_op_rope_freqs(&hp, g);
    double f31 = 1.0 / pow(500000.0, 62.0 / 64.0);
    assert_true(2 * 3.14159265358979 / f31 > 8192);
    assert_true(fabs(g[31] - f31 / 8) <= 1e-6 * f31);
}

static void test_rope(void **state)
{
    (void)state;
    enum { H = 3, D = 16 };
    float inv[D / 2];
    cel_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.head_dim = D;
    hp.rope_theta = 10000.0f;
    cel_op_rope_freqs(&hp, inv);
    float x[H * D], y[H * D];
    fill(x, H * D, 3, 1.0f);
    for (int style = 0; style < 2; style++) {
        memcpy(y, x, sizeof x);
        cel_op_rope(y, H, D, 0, inv, (cel_rope_style)style);
        assert_memory_equal(x, y, sizeof x); /* position 0: identity */
        int pos = 37;
        memcpy(y, x, sizeof x);
        cel_op_rope(y, H, D, pos, inv, (cel_rope_style)style);
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < D / 2; i++) {
                int a = style == CEL_ROPE_NORM ? 2 * i : i, b = style == CEL_ROPE_NORM ? 2 * i + 1 : i + D / 2;
                double th = (double)pos * inv[i];
                double x0 = x[h * D + a], x1 = x[h * D + b];
                assert_true(fabs(y[h * D + a] - (x0 * cos(th) - x1 * sin(th))) < 1e-5);
                assert_true(fabs(y[h * D + b] - (x0 * sin(th) + x1 * cos(th))) < 1e-5);
            }
        }
    }
}

static void test_swiglu(void **state)
{
    (void)state;
    enum { N = 203 };
    float g[N], u[N], out[N], o2[N];
    fill(g, N, 4, 12.0f);
    fill(u, N, 5, 2.0f);
    g[0] = -100.0f; /* exp overflow side */
    g[1] = 100.0f;
    g[2] = 0.0f;
    cel_op_swiglu(out, g, u, N);
    for (int i = 0; i < N; i++) {
        double want = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        assert_true(fabs(out[i] - want) <= 1e-6 * fabs(want) + 1e-30);
    }
    const cel__kern *ks[4];
    int nk = cel__kern_all(ks, 4);
    for (int k = 0; k < nk; k++) {
        ks[k]->swiglu(o2, g, u, N);
        for (int i = 0; i < N; i++) assert_true(fabsf(o2[i] - out[i]) <= 2e-6f * fabsf(out[i]) + 1e-30f);
    }
}

static void test_embed(void **state)
{
    (void)state;
    for (size_t k = 0; k < N_DTYPES; k++) {
        float *wf;
        cel_tensor e = make_weight(ALL_DTYPES[k], 256, 9, 10 + k, &wf);
        float out[256];
        for (int32_t t = 0; t < 9; t++) {
            cel_op_embed(out, &e, t);
            assert_memory_equal(out, wf + t * 256, sizeof out);
        }
        free(e.data);
        free(wf);
    }
}

static void test_half_kernels(void **state)
{
    (void)state;
    enum { N = 1001 };
    float x[N], a[N], b[N];
    uint16_t h1[N], h2[N];
    fill(x, N, 6, 70000.0f);
    for (int i = 0; i < 100; i++) x[i] *= 1e-9f; /* subnormal halves */
    x[100] = INFINITY;
    const cel__kern *ks[4];
    int nk = cel__kern_all(ks, 4);
    ks[0]->f32_to_fp16(x, h1, N);
    for (int i = 0; i < N; i++) assert_int_equal(h1[i], cel_fp32_to_fp16(x[i]));
    ks[0]->fp16_to_f32(h1, a, N);
    for (int i = 0; i < N; i++) assert_true(a[i] == cel_fp16_to_fp32(h1[i]));
    for (int k = 1; k < nk; k++) {
        ks[k]->f32_to_fp16(x, h2, N);
        assert_memory_equal(h1, h2, sizeof h1);
        ks[k]->fp16_to_f32(h1, b, N);
        assert_memory_equal(a, b, sizeof a);
    }
}

/* --------------------------------------------------------------- matmul */

/* y_ref[r][o] = sum_i wf[o][i] x[r][i] in double */
static void plain_matmul(double *y, const float *wf, const float *x, int64_t n_in, int64_t n_out, int64_t n_rows)
{
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t o = 0; o < n_out; o++) {
            double s = 0;
            for (int64_t i = 0; i < n_in; i++) s += (double)wf[o * n_in + i] * x[r * n_in + i];
            y[r * n_out + o] = s;
        }
}

static void test_matmul_reference(void **state)
{
    (void)state;
    cel_pool *pool;
    cel_error err;
    assert_int_equal(cel_pool_create(2, &pool, &err), CEL_OK);
    const int64_t n_in = 512, n_out = 37, n_rows = 5;
    float *x = malloc(n_in * n_rows * sizeof *x), *y1 = malloc(n_out * n_rows * 4), *y2 = malloc(n_out * n_rows * 4);
    double *yr = malloc(n_out * n_rows * sizeof *yr);
    fill(x, n_in * n_rows, 7, 1.0f);
    for (size_t k = 0; k < N_DTYPES; k++) {
        float *wf;
        cel_tensor w = make_weight(ALL_DTYPES[k], n_in, n_out, 20 + k, &wf);
        plain_matmul(yr, wf, x, n_in, n_out, n_rows);
        cel_op_matmul(y1, &w, x, n_rows, NULL);
        cel_op_matmul(y2, &w, x, n_rows, pool);
        assert_memory_equal(y1, y2, n_out * n_rows * 4);
        for (int64_t i = 0; i < n_out * n_rows; i++) assert_true(fabs(y1[i] - yr[i]) <= 1e-6 * fabs(yr[i]) + 1e-6);
        free(w.data);
        free(wf);
    }
    free(x);
    free(y1);
    free(y2);
    free(yr);
    cel_pool_free(pool);
}

/* Error bound of one fast output against the exact product: float weights
 * only accumulate rounding; integer paths also carry the activation rounding
 * (at most half a step, amax of the block / 254, per element). */
static double fast_bound(cel_dtype t, const float *wrow, const float *xrow, int64_t n)
{
    double sabs = 0, qerr = 0;
    int64_t blk = cel__act_kind_for(t) == CEL__ACT_Q8_32 ? 32 : 256;
    for (int64_t i = 0; i < n; i++) sabs += fabs((double)wrow[i] * xrow[i]);
    if (cel__act_kind_for(t) != CEL__ACT_F32) {
        for (int64_t b = 0; b < n; b += blk) {
            double amax = 0;
            for (int64_t j = b; j < b + blk; j++) amax = fmax(amax, fabs(xrow[j]));
            for (int64_t j = b; j < b + blk; j++) qerr += fabs(wrow[j]) * amax / 254.0;
        }
    }
    return qerr * 1.0001 + 1e-5 * sabs + 1e-6;
}

typedef struct {
    cel__mm mm;
    float *wf;
    cel_tensor w;
} mm_case;

static void run_fast(const cel__kern *k, cel_pool *pool, const cel_tensor *w, const float *x, int64_t n_in,
                     int64_t n_rows, float *y)
{
    cel__mm mm = {w, y, (size_t)w->ne[1]};
    void *scratch = aligned(cel__matmul_scratch_bytes(n_rows, n_in));
    cel__matmul(k, pool, x, (size_t)n_in, n_rows, n_in, &mm, 1, scratch);
    free(scratch);
}

static void test_matmul_fast(void **state)
{
    (void)state;
    cel_pool *pool;
    cel_error err;
    assert_int_equal(cel_pool_create(2, &pool, &err), CEL_OK);
    const cel__kern *tables[4];
    int nt = cel__kern_all(tables, 4);
    print_message("kernel tables on this CPU: %d (best: %s)\n", nt, cel__kern_best()->name);
    /* odd row counts exercise every tile shape; 1056 = 33 blocks of 32 (an odd
     * count: the AVX-512 pair loop's single-block tail) */
    const int64_t n_rows = 11;
    for (size_t k = 0; k < N_DTYPES; k++) {
        cel_dtype t = ALL_DTYPES[k];
        int64_t be = cel_dtype_block_elems(t);
        int64_t widths[3] = {512, be == 1 ? 100 : 1024, be == 1 ? 37 : be == 32 ? 1056 : 256};
        for (int wi = 0; wi < 3; wi++) {
            int64_t n_in = widths[wi], n_out = 37;
            float *wf, *x = malloc(n_in * n_rows * sizeof *x);
            fill(x, n_in * n_rows, 30 + wi, 2.0f);
            x[5] = 40.0f; /* an outlier widens one activation block */
            cel_tensor w = make_weight(t, n_in, n_out, 40 + k, &wf);
            double *yr = malloc(n_out * n_rows * sizeof *yr);
            float *y[4];
            plain_matmul(yr, wf, x, n_in, n_out, n_rows);
            for (int ti = 0; ti < nt; ti++) {
                y[ti] = malloc(n_out * n_rows * 4);
                run_fast(tables[ti], pool, &w, x, n_in, n_rows, y[ti]);
                for (int64_t r = 0; r < n_rows; r++)
                    for (int64_t o = 0; o < n_out; o++) {
                        double b = fast_bound(t, wf + o * n_in, x + r * n_in, n_in);
                        double e = fabs(y[ti][r * n_out + o] - yr[r * n_out + o]);
                        if (e > b)
                            fail_msg("%s %s n_in %lld row %lld out %lld: error %g > bound %g", tables[ti]->name,
                                     cel_dtype_name(t), (long long)n_in, (long long)r, (long long)o, e, b);
                    }
            }
            /* SIMD vs scalar: same integer sums, float sums in another order */
            for (int ti = 1; ti < nt; ti++)
                for (int64_t r = 0; r < n_rows; r++)
                    for (int64_t o = 0; o < n_out; o++) {
                        double sabs = 0;
                        for (int64_t i = 0; i < n_in; i++) sabs += fabs((double)wf[o * n_in + i] * x[r * n_in + i]);
                        if (fabs(y[0][r * n_out + o] - y[ti][r * n_out + o]) > 2e-6 * sabs + 1e-6)
                            fail_msg("%s vs scalar, %s: row %lld out %lld differ by %g", tables[ti]->name,
                                     cel_dtype_name(t), (long long)r, (long long)o,
                                     fabs(y[0][r * n_out + o] - y[ti][r * n_out + o]));
                    }
            free(w.data);
            free(wf);
            free(x);
            free(yr);
            for (int ti = 0; ti < nt; ti++) free(y[ti]);
        }
    }
    cel_pool_free(pool);
}

/* A row's output is bit-identical whether it is computed alone, in batches of
 * several sizes (which change the kernels' tile shapes and the thread split),
 * with or without threads. */
static void test_batch_invariance(void **state)
{
    (void)state;
    cel_pool *pool;
    cel_error err;
    assert_int_equal(cel_pool_create(2, &pool, &err), CEL_OK);
    const cel__kern *tables[4];
    int nt = cel__kern_all(tables, 4);
    const int64_t n_in = 256, n_out = 70, max_rows = 70;
    float *x = malloc(n_in * max_rows * sizeof *x);
    fill(x, n_in * max_rows, 50, 1.5f);
    float *solo = malloc(n_out * max_rows * 4), *y = malloc(n_out * max_rows * 4);
    for (size_t k = 0; k < N_DTYPES; k++) {
        float *wf;
        cel_tensor w = make_weight(ALL_DTYPES[k], n_in, n_out, 60 + k, &wf);
        for (int ti = 0; ti < nt; ti++) {
            for (int64_t r = 0; r < max_rows; r++) run_fast(tables[ti], NULL, &w, x + r * n_in, n_in, 1, solo + r * n_out);
            const int64_t sizes[] = {2, 3, 4, 5, 8, 16, 17, 64, 70};
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
                for (int p = 0; p < 2; p++) {
                    /* rows [off, off + n) as one batch */
                    int64_t n = sizes[si], off = max_rows - n;
                    run_fast(tables[ti], p ? pool : NULL, &w, x + off * n_in, n_in, n, y);
                    if (memcmp(y, solo + off * n_out, (size_t)(n * n_out) * 4) != 0)
                        fail_msg("%s %s: batch of %lld rows differs from the rows alone", tables[ti]->name,
                                 cel_dtype_name(ALL_DTYPES[k]), (long long)n);
                }
            }
        }
        free(w.data);
        free(wf);
    }
    free(x);
    free(solo);
    free(y);
    cel_pool_free(pool);
}

/* Products sharing their input (one call, mixed dtypes) equal separate calls. */
static void test_matmul_multi(void **state)
{
    (void)state;
    cel_pool *pool;
    cel_error err;
    assert_int_equal(cel_pool_create(2, &pool, &err), CEL_OK);
    const cel__kern *k = cel__kern_best();
    const int64_t n_in = 512, n_rows = 9;
    const cel_dtype ts[4] = {CEL_DTYPE_Q5_1, CEL_DTYPE_Q6_K, CEL_DTYPE_F16, CEL_DTYPE_Q4_K};
    const int64_t outs[4] = {64, 33, 17, 100};
    cel_tensor w[4];
    float *wf[4], *ya[4], *yb[4];
    float *x = malloc(n_in * n_rows * sizeof *x);
    fill(x, n_in * n_rows, 70, 1.0f);
    cel__mm mm[4];
    for (int i = 0; i < 4; i++) {
        w[i] = make_weight(ts[i], n_in, outs[i], 80 + i, &wf[i]);
        ya[i] = malloc(outs[i] * n_rows * 4);
        yb[i] = malloc(outs[i] * n_rows * 4);
        mm[i] = (cel__mm){&w[i], ya[i], (size_t)outs[i]};
        run_fast(k, pool, &w[i], x, n_in, n_rows, yb[i]);
    }
    void *scratch = aligned(cel__matmul_scratch_bytes(n_rows, n_in));
    cel__matmul(k, pool, x, (size_t)n_in, n_rows, n_in, mm, 4, scratch);
    for (int i = 0; i < 4; i++) {
        assert_memory_equal(ya[i], yb[i], outs[i] * n_rows * 4);
        free(w[i].data);
        free(wf[i]);
        free(ya[i]);
        free(yb[i]);
    }
    free(scratch);
    free(x);
    cel_pool_free(pool);
}

/* ------------------------------------------------------------ attention */

typedef struct {
    const float *k, *v; /* [pos][n_head_kv][head_dim] */
    int32_t row;        /* floats per position */
} kv_ctx;

static const float *kv_at(void *ctx, int32_t pos, int is_v)
{
    kv_ctx *c = ctx;
    return (is_v ? c->v : c->k) + (size_t)pos * c->row;
}

enum { AH = 6, AHKV = 2, AD = 32, APAST = 45, ANEW = 7, ATOT = APAST + ANEW };

static void test_attention_reference(void **state)
{
    (void)state;
    float *k = malloc(ATOT * AHKV * AD * 4), *v = malloc(ATOT * AHKV * AD * 4);
    float *q = malloc(ANEW * AH * AD * 4), *out = malloc(ANEW * AH * AD * 4);
    fill(k, ATOT * AHKV * AD, 90, 2.0f);
    fill(v, ATOT * AHKV * AD, 91, 1.0f);
    fill(q, ANEW * AH * AD, 92, 2.0f);
    kv_ctx c = {k, v, AHKV * AD};
    cel_op_attention(out, q, ANEW, APAST, AH, AHKV, AD, kv_at, &c);
    /* plain softmax over the causal window, head h reads kv head h / (AH / AHKV) */
    for (int t = 0; t < ANEW; t++)
        for (int h = 0; h < AH; h++) {
            int g = h / (AH / AHKV), n = APAST + t + 1;
            double s[ATOT], mx = -1e300, sum = 0;
            for (int p = 0; p < n; p++) {
                double d = 0;
                for (int i = 0; i < AD; i++) d += (double)q[(t * AH + h) * AD + i] * k[(p * AHKV + g) * AD + i];
                s[p] = d / sqrt((double)AD);
                if (s[p] > mx) mx = s[p];
            }
            for (int p = 0; p < n; p++) sum += (s[p] = exp(s[p] - mx));
            for (int i = 0; i < AD; i++) {
                double o = 0;
                for (int p = 0; p < n; p++) o += s[p] / sum * v[(p * AHKV + g) * AD + i];
                assert_true(fabs(out[(t * AH + h) * AD + i] - o) < 1e-5);
            }
        }
    free(k);
    free(v);
    free(q);
    free(out);
}

/* The kernels' online-softmax step, fed 16 keys at a time, against the
 * reference attention. */
static void test_attn_step(void **state)
{
    (void)state;
    float *k = malloc(ATOT * AHKV * AD * 4), *v = malloc(ATOT * AHKV * AD * 4);
    float *q = malloc(ANEW * AH * AD * 4), *ref = malloc(ANEW * AH * AD * 4);
    fill(k, ATOT * AHKV * AD, 93, 3.0f);
    fill(v, ATOT * AHKV * AD, 94, 1.0f);
    fill(q, ANEW * AH * AD, 95, 3.0f);
    kv_ctx c = {k, v, AHKV * AD};
    cel_op_attention(ref, q, ANEW, APAST, AH, AHKV, AD, kv_at, &c);
    const cel__kern *tables[4];
    int nt = cel__kern_all(tables, 4);
    float kb[16 * AD], vb[16 * AD], acc[AD];
    static float out[4][ANEW * AH * AD];
    for (int ti = 0; ti < nt; ti++) {
        for (int t = 0; t < ANEW; t++)
            for (int h = 0; h < AH; h++) {
                int g = h / (AH / AHKV), n = APAST + t + 1;
                float m = -INFINITY, l = 0;
                memset(acc, 0, sizeof acc);
                for (int p0 = 0; p0 < n; p0 += 16) {
                    int nb = n - p0 < 16 ? n - p0 : 16;
                    /* keys transposed into rows of 16 (the spare lanes hold junk, finite) */
                    for (int i = 0; i < 16 * AD; i++) kb[i] = 1e3f;
                    for (int j = 0; j < nb; j++) {
                        for (int i = 0; i < AD; i++) kb[i * 16 + j] = k[((p0 + j) * AHKV + g) * AD + i];
                        memcpy(vb + j * AD, v + ((p0 + j) * AHKV + g) * AD, AD * 4);
                    }
                    tables[ti]->attn_step(q + (t * AH + h) * AD, kb, 16, vb, nb, AD, 1.0f / sqrtf((float)AD), &m, &l,
                                          acc);
                }
                for (int i = 0; i < AD; i++) {
                    float o = acc[i] / l;
                    out[ti][(t * AH + h) * AD + i] = o;
                    assert_true(fabsf(o - ref[(t * AH + h) * AD + i]) < 2e-5f);
                }
            }
    }
    for (int ti = 1; ti < nt; ti++)
        for (int i = 0; i < ANEW * AH * AD; i++) assert_true(fabsf(out[0][i] - out[ti][i]) < 1e-5f);
    free(k);
    free(v);
    free(q);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope_freqs),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_half_kernels),
        cmocka_unit_test(test_matmul_reference),
        cmocka_unit_test(test_matmul_fast),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_matmul_multi),
        cmocka_unit_test(test_attention_reference),
        cmocka_unit_test(test_attn_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
