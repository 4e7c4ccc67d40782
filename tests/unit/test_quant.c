/* Unit tests for the number formats of engine/ops.h: half-precision
 * conversions, dequantization of hand-built blocks with known values,
 * quantization round-trip error bounds per dtype, and the activation
 * quantizers of the CPU kernels (SIMD bytes == scalar bytes). */
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

static float bits_f(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* ------------------------------------------------------------ halves */

static void test_fp16_known(void **state)
{
    (void)state;
    assert_int_equal(cel_fp32_to_fp16(1.0f), 0x3C00);
    assert_int_equal(cel_fp32_to_fp16(-2.0f), 0xC000);
    assert_int_equal(cel_fp32_to_fp16(0.5f), 0x3800);
    assert_int_equal(cel_fp32_to_fp16(65504.0f), 0x7BFF);
    assert_int_equal(cel_fp32_to_fp16(65519.0f), 0x7BFF); /* below the midpoint to infinity */
    assert_int_equal(cel_fp32_to_fp16(65520.0f), 0x7C00); /* the midpoint rounds to even: infinity */
    assert_int_equal(cel_fp32_to_fp16(1e9f), 0x7C00);
    assert_int_equal(cel_fp32_to_fp16(-INFINITY), 0xFC00);
    assert_int_equal(cel_fp32_to_fp16(0x1p-24f), 0x0001);  /* smallest subnormal */
    assert_int_equal(cel_fp32_to_fp16(0x1p-25f), 0x0000);  /* half of it: tie to even (0) */
    assert_int_equal(cel_fp32_to_fp16(0x1.8p-25f), 0x0001); /* above the tie */
    assert_int_equal(cel_fp32_to_fp16(0x3p-24f), 0x0003);
    assert_int_equal(cel_fp32_to_fp16(0x1p-14f), 0x0400); /* smallest normal */
    assert_int_equal(cel_fp32_to_fp16(0x1.ffcp-15f), 0x0400); /* 1023.5 x 2^-24: the tie rounds up into the normals */
    assert_int_equal(cel_fp32_to_fp16(-0.0f), 0x8000);
    /* ties to even in the normal range: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    assert_int_equal(cel_fp32_to_fp16(1.0f + 0x1p-11f), 0x3C00);
    assert_int_equal(cel_fp32_to_fp16(1.0f + 0x3p-11f), 0x3C02);
    assert_int_equal(cel_fp32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);
    uint16_t nan = cel_fp32_to_fp16(NAN);
    assert_true((nan & 0x7C00) == 0x7C00 && (nan & 0x3FF) != 0);
    assert_true(cel_fp16_to_fp32(0x3C00) == 1.0f);
    assert_true(cel_fp16_to_fp32(0x0001) == 0x1p-24f);
    assert_true(cel_fp16_to_fp32(0x03FF) == 0x3FFp-24f);
    assert_true(cel_fp16_to_fp32(0xFBFF) == -65504.0f);
    assert_true(isinf(cel_fp16_to_fp32(0x7C00)));
    assert_true(isnan(cel_fp16_to_fp32(0x7E00)));
}

/* Every half survives half -> float -> half; every float rounds to a nearest
 * half (ties to the even one). */
static void test_fp16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = cel_fp16_to_fp32((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(cel_fp16_to_fp32(cel_fp32_to_fp16(f))));
            continue;
        }
        assert_int_equal(cel_fp32_to_fp16(f), h);
    }
    cel_rng r;
    cel_rng_seed(&r, 1);
    for (int i = 0; i < 200000; i++) {
        /* floats spread over the half range, subnormals included */
        uint32_t b = (uint32_t)cel_rng_next(&r);
        b = (b & 0x807FFFFFu) | ((uint32_t)(96 + (b >> 23) % 48) << 23);
        float f = bits_f(b);
        uint16_t h = cel_fp32_to_fp16(f);
        double v = cel_fp16_to_fp32(h);
        if (isinf(v)) {
            assert_true(fabs(f) >= 65520.0);
            continue;
        }
        double err = fabs((double)f - v);
        /* neighbours (same sign): neither may be strictly closer */
        for (int dlt = -1; dlt <= 1; dlt += 2) {
            int nh = (int)(h & 0x7FFF) + dlt;
            if (nh < 0 || nh > 0x7BFF) continue;
            double nv = cel_fp16_to_fp32((uint16_t)((h & 0x8000) | nh));
            double nerr = fabs((double)f - nv);
            assert_true(err <= nerr);
            if (err == nerr) assert_true((h & 1) == 0); /* tie: the even one */
        }
    }
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(cel_fp32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(cel_fp32_to_bf16(bits_f(0x3F808000u)), 0x3F80); /* tie, even stays */
    assert_int_equal(cel_fp32_to_bf16(bits_f(0x3F818000u)), 0x3F82); /* tie, odd rounds up */
    assert_int_equal(cel_fp32_to_bf16(bits_f(0x3F808001u)), 0x3F81);
    assert_int_equal(cel_fp32_to_bf16(bits_f(0x7F7FFFFFu)), 0x7F80); /* max float rounds to infinity */
    assert_true(isnan(cel_bf16_to_fp32(cel_fp32_to_bf16(NAN))));
    assert_true(cel_bf16_to_fp32(0xC040) == -3.0f);
    for (uint32_t h = 0; h < 65536; h++) {
        float f = cel_bf16_to_fp32((uint16_t)h);
        if (!isnan(f)) assert_int_equal(cel_fp32_to_bf16(f), h);
    }
}

/* ------------------------------------------------- hand-built blocks */

static void test_dequant_q8_0(void **state)
{
    (void)state;
    uint8_t blk[2 * 34];
    put16(blk, 0x3800); /* 0.5 */
    put16(blk + 34, 0xC000); /* -2 */
    for (int j = 0; j < 32; j++) {
        blk[2 + j] = (uint8_t)(int8_t)(j * 8 - 128);
        blk[36 + j] = (uint8_t)(int8_t)(j - 16);
    }
    float out[64];
    cel_dequant_row(CEL_DTYPE_Q8_0, blk, out, 64);
    for (int j = 0; j < 32; j++) {
        assert_true(out[j] == 0.5f * (float)(j * 8 - 128));
        assert_true(out[32 + j] == -2.0f * (float)(j - 16));
    }
}

static void test_dequant_q4_0(void **state)
{
    (void)state;
    uint8_t blk[18];
    put16(blk, 0x4000); /* 2 */
    for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float out[32];
    cel_dequant_row(CEL_DTYPE_Q4_0, blk, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 2.0f * (float)(j - 8));          /* low nibbles: elements 0..15 */
        assert_true(out[16 + j] == 2.0f * (float)(7 - j));     /* high nibbles: elements 16..31 */
    }
}

/* Q5_0 / Q5_1 blocks written byte by byte from the ggml layout: element j's
 * low 4 bits in qs[j] (low nibble, j < 16) or qs[j - 16] (high nibble), its
 * 5th bit is bit j of the little-endian 32-bit qh (byte j / 8, bit j % 8). */
static void put_q5(uint8_t *qh, uint8_t *qs, const int *val)
{
    memset(qh, 0, 4);
    for (int j = 0; j < 32; j++) qh[j / 8] |= (uint8_t)((val[j] >> 4) << (j % 8));
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((val[j] & 15) | ((val[16 + j] & 15) << 4));
}

static void test_dequant_q5_0(void **state)
{
    (void)state;
    uint8_t blk[2 * 22];
    int val[2][32];
    for (int j = 0; j < 32; j++) {
        val[0][j] = (j * 7 + 3) % 32;
        val[1][j] = 31 - j;
    }
    put16(blk, 0x4000);      /* 2 */
    put16(blk + 22, 0xB400); /* -0.25 */
    put_q5(blk + 2, blk + 6, val[0]);
    put_q5(blk + 24, blk + 28, val[1]);
    float out[64];
    cel_dequant_row(CEL_DTYPE_Q5_0, blk, out, 64);
    for (int j = 0; j < 32; j++) {
        assert_true(out[j] == 2.0f * (float)(val[0][j] - 16));
        assert_true(out[32 + j] == -0.25f * (float)(val[1][j] - 16));
    }
}

static void test_dequant_q5_1(void **state)
{
    (void)state;
    uint8_t blk[24];
    int val[32];
    for (int j = 0; j < 32; j++) val[j] = (j * 13 + 1) % 32;
    put16(blk, 0x3800);     /* d = 0.5 */
    put16(blk + 2, 0xC200); /* m = -3 */
    put_q5(blk + 4, blk + 8, val);
    float out[32];
    cel_dequant_row(CEL_DTYPE_Q5_1, blk, out, 32);
    for (int j = 0; j < 32; j++) assert_true(out[j] == 0.5f * (float)val[j] - 3.0f);
}

/* Q5_K: Q4_K's header and nibbles plus qh[32]: bit 2c of qh[l] is the 5th
 * bit of element 64c + l, bit 2c + 1 that of element 64c + 32 + l. */
static void test_dequant_q5_k(void **state)
{
    (void)state;
    const int sc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
    const int mn[8] = {0, 5, 10, 15, 20, 40, 61, 63};
    uint8_t blk[176] = {0};
    put16(blk, 0x3C00);     /* d = 1 */
    put16(blk + 2, 0x3800); /* dmin = 0.5 */
    uint8_t *s = blk + 4, *qh = blk + 16, *qs = blk + 48;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    int val[256];
    for (int e = 0; e < 256; e++) {
        val[e] = (e * 11 + 5) % 32;
        int c = e / 64, within = e % 64, l = within % 32, second = within >= 32;
        qs[c * 32 + l] |= (uint8_t)(second ? (val[e] & 15) << 4 : (val[e] & 15));
        qh[l] |= (uint8_t)((val[e] >> 4) << (2 * c + second));
    }
    float out[256];
    cel_dequant_row(CEL_DTYPE_Q5_K, blk, out, 256);
    for (int e = 0; e < 256; e++) {
        int j = e / 32;
        float want = 1.0f * (float)sc[j] * (float)val[e] - 0.5f * (float)mn[j];
        assert_true(fabsf(out[e] - want) <= 1e-6f * fabsf(want) + 1e-6f);
    }
}

/* Q4_K: 8 sub-blocks of 32 with 6-bit scales/mins; values >= 16 exercise the
 * high bits stored in the top of bytes 0..7. */
static void test_dequant_q4_k(void **state)
{
    (void)state;
    const int sc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
    const int mn[8] = {0, 5, 10, 15, 20, 40, 61, 63};
    uint8_t blk[144] = {0};
    put16(blk, 0x3C00);     /* d = 1 */
    put16(blk + 2, 0x3800); /* dmin = 0.5 */
    uint8_t *s = blk + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6)); /* scale j, top bits of scale j+4 */
        s[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6)); /* min j, top bits of min j+4 */
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    uint8_t *qs = blk + 16;
    /* element e's 4-bit value: e % 16; 64 elements per 32 bytes, low nibbles first */
    for (int e = 0; e < 256; e++) {
        int c = e / 64, within = e % 64;
        if (within < 32) qs[c * 32 + within] |= (uint8_t)(e % 16);
        else qs[c * 32 + within - 32] |= (uint8_t)((e % 16) << 4);
    }
    float out[256];
    cel_dequant_row(CEL_DTYPE_Q4_K, blk, out, 256);
    for (int e = 0; e < 256; e++) {
        int j = e / 32;
        float want = 1.0f * (float)sc[j] * (float)(e % 16) - 0.5f * (float)mn[j];
        assert_true(fabsf(out[e] - want) <= 1e-6f * fabsf(want) + 1e-6f);
    }
}

/* Q6_K: per 128 elements, ql[0..31] low nibbles = elements 0..31, ql[32..63]
 * low = 32..63, ql[0..31] high = 64..95, ql[32..63] high = 96..127; qh[l]
 * holds the top 2 bits of elements l, l+32, l+64, l+96 at bits 0, 2, 4, 6. */
static void test_dequant_q6_k(void **state)
{
    (void)state;
    uint8_t blk[210] = {0};
    uint8_t *ql = blk, *qh = blk + 128;
    int8_t *scales = (int8_t *)(blk + 192);
    put16(blk + 208, 0x3400); /* d = 0.25 */
    for (int s = 0; s < 16; s++) scales[s] = (int8_t)(s * 9 - 70);
    int val[256];
    for (int e = 0; e < 256; e++) val[e] = (e * 7 + 3) % 64;
    for (int half = 0; half < 2; half++) {
        const int *v = val + 128 * half;
        uint8_t *L = ql + 64 * half, *H = qh + 32 * half;
        for (int l = 0; l < 32; l++) {
            L[l] = (uint8_t)((v[l] & 15) | ((v[l + 64] & 15) << 4));
            L[l + 32] = (uint8_t)((v[l + 32] & 15) | ((v[l + 96] & 15) << 4));
            H[l] = (uint8_t)((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) | ((v[l + 96] >> 4) << 6));
        }
    }
    float out[256];
    cel_dequant_row(CEL_DTYPE_Q6_K, blk, out, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.25f * (float)scales[e / 16] * (float)(val[e] - 32);
        assert_true(out[e] == want);
    }
}

/* ---------------------------------------------------- round-trip bounds */

static void fill_normalish(float *x, int64_t n, uint64_t seed, float scale)
{
    cel_rng r;
    cel_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < 4; k++) s += cel_rng_uniform(&r);
        x[i] = (float)((s - 2.0) * scale);
    }
    x[n / 3] = 4.0f * scale; /* an outlier */
}

static double rel_rmse(const float *a, const float *b, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)a[i] * a[i];
    }
    return sqrt(e / s);
}

static void roundtrip(cel_dtype t, int64_t n, float scale, float *x, float *y)
{
    size_t rb = cel_dtype_row_bytes(t, n);
    assert_true(rb > 0);
    uint8_t *q = malloc(rb);
    assert_non_null(q);
    cel_quant_row(t, x, q, n);
    cel_dequant_row(t, q, y, n);
    free(q);
    (void)scale;
}

static void test_roundtrip_bounds(void **state)
{
    (void)state;
    const int64_t n = 8192;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    const float scales[3] = {1.0f, 0.02f, 300.0f};
    for (int si = 0; si < 3; si++) {
        float sc = scales[si];
        fill_normalish(x, n, 11 + (uint64_t)si, sc);

        roundtrip(CEL_DTYPE_F32, n, sc, x, y);
        assert_memory_equal(x, y, n * sizeof *x);

        roundtrip(CEL_DTYPE_F16, n, sc, x, y);
        for (int64_t i = 0; i < n; i++) assert_true(fabsf(x[i] - y[i]) <= fabsf(x[i]) * 0x1p-11f + 0x1p-25f);

        roundtrip(CEL_DTYPE_BF16, n, sc, x, y);
        for (int64_t i = 0; i < n; i++) assert_true(fabsf(x[i] - y[i]) <= fabsf(x[i]) * 0x1p-8f);

        /* Q8_0: half a step (amax/254) plus the fp16 rounding of the scale */
        roundtrip(CEL_DTYPE_Q8_0, n, sc, x, y);
        for (int64_t b = 0; b < n / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            for (int j = 0; j < 32; j++)
                assert_true(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= amax * (1.0f / 254 + 1.0f / 2048) * 1.001f);
        }
        double e8 = rel_rmse(x, y, n);

        /* Q4_0: half a step (amax/16), one full step on the clamped side */
        roundtrip(CEL_DTYPE_Q4_0, n, sc, x, y);
        for (int64_t b = 0; b < n / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            for (int j = 0; j < 32; j++)
                assert_true(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= amax * (1.0f / 8 + 1.0f / 256) * 1.001f);
        }
        double e4 = rel_rmse(x, y, n);

        roundtrip(CEL_DTYPE_Q4_K, n, sc, x, y);
        double e4k = rel_rmse(x, y, n);
        roundtrip(CEL_DTYPE_Q6_K, n, sc, x, y);
        double e6k = rel_rmse(x, y, n);

        /* Q5_0: within one step (the fitted |d| <= amax / 15 or so) of each value */
        roundtrip(CEL_DTYPE_Q5_0, n, sc, x, y);
        for (int64_t b = 0; b < n / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            for (int j = 0; j < 32; j++) assert_true(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= amax / 15.0f);
        }
        double e5 = rel_rmse(x, y, n);
        /* Q5_1: d * q + m spans [min, max] in 31 steps: within a step of each value */
        roundtrip(CEL_DTYPE_Q5_1, n, sc, x, y);
        for (int64_t b = 0; b < n / 32; b++) {
            float lo = x[b * 32], hi = x[b * 32];
            for (int j = 0; j < 32; j++) lo = fminf(lo, x[b * 32 + j]), hi = fmaxf(hi, x[b * 32 + j]);
            for (int j = 0; j < 32; j++) assert_true(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= (hi - lo) / 31.0f * 1.001f);
        }
        double e51 = rel_rmse(x, y, n);
        roundtrip(CEL_DTYPE_Q5_K, n, sc, x, y);
        double e5k = rel_rmse(x, y, n);
        print_message("scale %g: relative RMS error Q8_0 %.4f Q6_K %.4f Q5_K %.4f Q5_1 %.4f Q5_0 %.4f Q4_K %.4f "
                      "Q4_0 %.4f\n",
                      (double)sc, e8, e6k, e5k, e51, e5, e4k, e4);
        /* one more bit than the 4-bit formats: about half their error */
        assert_true(e5 < 0.6 * e4);
        assert_true(e5k < 0.6 * e4k);
        assert_true(e6k < e5k && e6k < e51 && e6k < e5);
        assert_true(e51 < e4k);
        /* relative RMS error on bell-shaped data (measured: Q4_0 0.082,
         * Q4_K 0.070, Q6_K 0.017, Q8_0 0.005); the scale search must make
         * Q4_K beat the plain 4-bit format */
        assert_true(e8 < 0.008);
        assert_true(e6k < 0.025);
        assert_true(e4k < 0.09);
        assert_true(e4 < 0.10);
        assert_true(e8 < e6k && e6k < e4k && e4k < e4);
    }
    /* zeros stay zeros; a constant row is (nearly) exact */
    memset(x, 0, n * sizeof *x);
    const cel_dtype all[] = {CEL_DTYPE_F16,  CEL_DTYPE_BF16, CEL_DTYPE_Q8_0, CEL_DTYPE_Q4_0, CEL_DTYPE_Q5_0,
                             CEL_DTYPE_Q5_1, CEL_DTYPE_Q4_K, CEL_DTYPE_Q5_K, CEL_DTYPE_Q6_K};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        roundtrip(all[k], n, 1, x, y);
        for (int64_t i = 0; i < n; i++) assert_true(y[i] == 0.0f);
    }
    for (int64_t i = 0; i < n; i++) x[i] = 0.75f;
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        roundtrip(all[k], n, 1, x, y);
        for (int64_t i = 0; i < n; i++) assert_true(fabsf(y[i] - 0.75f) <= 0.75f * 0.01f);
    }
    free(x);
    free(y);
}

/* ------------------------------------------------ activation quantizers */

static void test_act_quant(void **state)
{
    (void)state;
    const cel__kern *ks = cel__kern_scalar();
    const int64_t n = 1024;
    float x[1024];
    fill_normalish(x, n, 5, 3.0f);
    for (int k = 0; k < 32; k++) x[64 + k] = 0.0f; /* an all-zero block */
    uint8_t a[2][4096] __attribute__((aligned(64)));
    size_t rb32 = cel__act_row_bytes(CEL__ACT_Q8_32, n), rb256 = cel__act_row_bytes(CEL__ACT_Q8_256, n);
    assert_true(rb32 <= sizeof a[0] && rb256 <= sizeof a[0]);
    assert_int_equal(rb32 % 64, 0);

    /* the scalar quantizer against its definition */
    memset(a, 0, sizeof a);
    ks->quant_q8_32(x, a[0], n);
    const int8_t *qs = (const int8_t *)a[0];
    const float *d = (const float *)(a[0] + n);
    const float *bsum = (const float *)(a[0] + cel__act_q8_32_s_offset(n));
    assert_true(cel__act_q8_32_s_offset(n) + (size_t)(n / 32) * 4 <= cel__act_q8_32_dx_offset(n));
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        int sum = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j])), sum += qs[b * 32 + j];
        assert_true(d[b] == amax / 127.0f);
        assert_true(bsum[b] == d[b] * (float)sum);
        for (int j = 0; j < 32; j++) {
            assert_true(abs(qs[b * 32 + j]) <= 127);
            assert_true(fabsf(d[b] * qs[b * 32 + j] - x[b * 32 + j]) <= d[b] * 0.5001f + 1e-30f);
        }
    }
    memset(a, 0, sizeof a);
    ks->quant_q8_256(x, a[0], n);
    const int16_t *bs = (const int16_t *)(a[0] + n + (n / 256) * 4);
    for (int64_t g = 0; g < n / 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += ((const int8_t *)a[0])[g * 16 + j];
        assert_int_equal(bs[g], s);
    }
    /* every SIMD table writes the scalar bytes (the AVX-512 one appends the
     * spread scale pairs, checked against d) */
    const cel__kern *ks_all[4];
    int nk = cel__kern_all(ks_all, 4);
    size_t common32 = cel__act_q8_32_s_offset(n) + (size_t)(n / 32) * 4; /* qs, d, s */
    for (int k = 1; k < nk; k++) {
        memset(a, 0, sizeof a);
        ks->quant_q8_32(x, a[0], n);
        ks_all[k]->quant_q8_32(x, a[1], n);
        assert_memory_equal(a[0], a[1], common32);
        if (ks_all[k] == cel__kern_avx512()) {
            const float *d1 = (const float *)(a[1] + n);
            const float *dx = (const float *)(a[1] + cel__act_q8_32_dx_offset(n));
            assert_true(cel__act_q8_32_dx_offset(n) + (size_t)(n / 64) * 64 <= rb32);
            for (int64_t b = 0; b < n / 32; b++)
                for (int l = 0; l < 8; l++) assert_true(dx[(b / 2) * 16 + (b % 2) * 8 + l] == d1[b]);
        }
        memset(a, 0, sizeof a);
        ks->quant_q8_256(x, a[0], n);
        ks_all[k]->quant_q8_256(x, a[1], n);
        assert_memory_equal(a[0], a[1], rb256);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_known),   cmocka_unit_test(test_fp16_exhaustive),
        cmocka_unit_test(test_bf16),         cmocka_unit_test(test_dequant_q8_0),
        cmocka_unit_test(test_dequant_q4_0), cmocka_unit_test(test_dequant_q4_k),
        cmocka_unit_test(test_dequant_q6_k), cmocka_unit_test(test_dequant_q5_0),
        cmocka_unit_test(test_dequant_q5_1), cmocka_unit_test(test_dequant_q5_k),
        cmocka_unit_test(test_roundtrip_bounds),
        cmocka_unit_test(test_act_quant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
