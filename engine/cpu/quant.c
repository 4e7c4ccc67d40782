/*
 * quant.c - half-precision conversions and the block formats' dequantization
 * and quantization (engine/ops.h). Plain scalar code: it is the definition the
 * SIMD kernels and the CUDA kernels are checked against.
 *
 * Quantizers pick scales with a small search (several candidate scales around
 * the obvious one, each refined by least squares, the lowest squared error
 * wins). They exist to write test models and to measure round-trip error; the
 * engine never quantizes weights on the hot path.
 */
#include "cpu.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------ half floats */

static float f32_from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

float cel_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float f = (float)man * 0x1p-24f;
        return f32_from_bits(f32_bits(f) | sign);
    }
    if (exp == 31) return f32_from_bits(sign | 0x7F800000u | (man << 13)); /* inf / NaN (payload kept) */
    return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

/* Rounds the integer m / 2^shift to nearest, ties to even (shift in 1..31). */
static uint32_t shift_rne(uint32_t m, unsigned shift)
{
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return q;
}

uint16_t cel_fp32_to_fp16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu)); /* NaN stays NaN (quiet) */
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* >= 65520 rounds to infinity */
    if (ax >= 0x38800000u) {                                  /* normal half: rebias exponent 127 -> 15 */
        return (uint16_t)(sign | shift_rne(ax - 0x38000000u, 13));
    }
    /* subnormal half (or zero): the value in units of 2^-24, rounded to even.
     * value = m * 2^(e - 150) with the implicit bit in m, so units = m >> (126 - e). */
    uint32_t e = ax >> 23;
    if (e < 102) return sign; /* below 2^-25: rounds to zero */
    uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    return (uint16_t)(sign | shift_rne(m, 126u - e));
}

float cel_bf16_to_fp32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t cel_fp32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7FFFu + ((x >> 16) & 1u);                                           /* round to nearest even */
    return (uint16_t)(x >> 16);
}

/* ---------------------------------------------------------- dequantization */

static void dequant_q8_0(const uint8_t *src, float *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const cel__blk_q8_0 *b = (const cel__blk_q8_0 *)(src + i * (int64_t)sizeof *b);
        float d = cel_fp16_to_fp32(cel__rd16(&b->d));
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = d * (float)b->qs[j];
    }
}

static void dequant_q4_0(const uint8_t *src, float *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const cel__blk_q4_0 *b = (const cel__blk_q4_0 *)(src + i * (int64_t)sizeof *b);
        float d = cel_fp16_to_fp32(cel__rd16(&b->d));
        for (int j = 0; j < 16; j++) {
            dst[i * 32 + j] = d * (float)((b->qs[j] & 0x0F) - 8);
            dst[i * 32 + 16 + j] = d * (float)((b->qs[j] >> 4) - 8);
        }
    }
}

/* Q5_0 / Q5_1 element j of a block: the low nibble (qs[j] for j < 16, the
 * high nibble of qs[j - 16] otherwise) with bit j of qh on top: 0..31. */
static int q5_value(const uint8_t *qh, const uint8_t *qs, int j)
{
    uint32_t h = cel__rd32(qh);
    int lo = j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
    return lo | (int)((h >> j) & 1u) << 4;
}

static void dequant_q5_0(const uint8_t *src, float *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const cel__blk_q5_0 *b = (const cel__blk_q5_0 *)(src + i * (int64_t)sizeof *b);
        float d = cel_fp16_to_fp32(cel__rd16(&b->d));
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = d * (float)(q5_value(b->qh, b->qs, j) - 16);
    }
}

static void dequant_q5_1(const uint8_t *src, float *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const cel__blk_q5_1 *b = (const cel__blk_q5_1 *)(src + i * (int64_t)sizeof *b);
        float d = cel_fp16_to_fp32(cel__rd16(&b->d)), m = cel_fp16_to_fp32(cel__rd16(&b->m));
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = d * (float)q5_value(b->qh, b->qs, j) + m;
    }
}

/* Q4_K and Q5_K (five: plus the 5th bits in qh): the header (d, dmin,
 * scales) and the nibbles' order are laid out alike. */
static void dequant_k45(const uint8_t *src, float *dst, int64_t nb, bool five)
{
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *blk = src + i * (five ? 176 : 144);
        const cel__blk_q4_k *b = (const cel__blk_q4_k *)blk;  /* the header, either type */
        const cel__blk_q5_k *b5 = (const cel__blk_q5_k *)blk; /* read only when five */
        float d = cel_fp16_to_fp32(cel__rd16(&b->d));
        float dmin = cel_fp16_to_fp32(cel__rd16(&b->dmin));
        float *y = dst + i * 256;
        for (int c = 0; c < 4; c++) { /* 64 elements: sub-blocks 2c (low nibbles, qh bit 2c), 2c+1 (high, bit 2c+1) */
            uint8_t sc0, m0, sc1, m1;
            cel__q4k_scale_min(2 * c, b->scales, &sc0, &m0);
            cel__q4k_scale_min(2 * c + 1, b->scales, &sc1, &m1);
            float d0 = d * (float)sc0, mm0 = dmin * (float)m0;
            float d1 = d * (float)sc1, mm1 = dmin * (float)m1;
            const uint8_t *q = (five ? b5->qs : b->qs) + c * 32;
            for (int l = 0; l < 32; l++) {
                int h0 = five ? (b5->qh[l] >> (2 * c)) & 1 : 0, h1 = five ? (b5->qh[l] >> (2 * c + 1)) & 1 : 0;
                y[c * 64 + l] = d0 * (float)((q[l] & 0x0F) | h0 << 4) - mm0;
                y[c * 64 + 32 + l] = d1 * (float)((q[l] >> 4) | h1 << 4) - mm1;
            }
        }
    }
}

/* Q6_K element e of a super-block: 6-bit value (0..63) and its scale index e / 16. */
static int q6k_value(const cel__blk_q6_k *b, int e)
{
    int h = e / 128, w = e % 128, g = w / 32, l = w % 32;
    uint8_t lo = b->ql[h * 64 + (g & 1) * 32 + l];
    lo = (g < 2) ? (lo & 0x0F) : (lo >> 4);
    int hi = (b->qh[h * 32 + l] >> (2 * g)) & 3;
    return lo | (hi << 4);
}

static void dequant_q6_k(const uint8_t *src, float *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const cel__blk_q6_k *b = (const cel__blk_q6_k *)(src + i * (int64_t)sizeof *b);
        float d = cel_fp16_to_fp32(cel__rd16(&b->d));
        for (int e = 0; e < 256; e++) dst[i * 256 + e] = d * (float)b->scales[e / 16] * (float)(q6k_value(b, e) - 32);
    }
}

void cel_dequant_row(cel_dtype t, const void *src, float *dst, int64_t n)
{
    const uint8_t *s = src;
    switch (t) {
    case CEL_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case CEL_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = cel_fp16_to_fp32(cel__rd16(s + 2 * i));
        break;
    case CEL_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = cel_bf16_to_fp32(cel__rd16(s + 2 * i));
        break;
    case CEL_DTYPE_Q8_0: dequant_q8_0(s, dst, n / 32); break;
    case CEL_DTYPE_Q4_0: dequant_q4_0(s, dst, n / 32); break;
    case CEL_DTYPE_Q5_0: dequant_q5_0(s, dst, n / 32); break;
    case CEL_DTYPE_Q5_1: dequant_q5_1(s, dst, n / 32); break;
    case CEL_DTYPE_Q4_K: dequant_k45(s, dst, n / 256, false); break;
    case CEL_DTYPE_Q5_K: dequant_k45(s, dst, n / 256, true); break;
    case CEL_DTYPE_Q6_K: dequant_q6_k(s, dst, n / 256); break;
    }
}

/* ------------------------------------------------------------ quantization */

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static int round_i(float v) { return (int)lrintf(v); }

/* Fits x[0..n) ~ s * q with integers q in [-nmax, nmax - 1]. Candidates map the
 * largest-magnitude value near -nmax (the asymmetric range's long side), each
 * refined by least squares; returns the best s (0 for an all-zero input). */
static float fit_symmetric(const float *x, int n, int nmax)
{
    float amax = 0.0f, vmax = 0.0f;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            vmax = x[i];
        }
    }
    if (amax < 1e-30f) return 0.0f;
    double sxx = 0.0;
    for (int i = 0; i < n; i++) sxx += (double)x[i] * x[i];
    float best_s = -vmax / (float)nmax;
    double best_err = INFINITY;
    for (int k = -8; k <= 8; k++) {
        float iscale = -((float)nmax + 0.1f * (float)k) / vmax;
        double sxq = 0.0, sqq = 0.0;
        for (int i = 0; i < n; i++) {
            int q = clampi(round_i(iscale * x[i]), -nmax, nmax - 1);
            sxq += (double)x[i] * q;
            sqq += (double)q * q;
        }
        if (sqq <= 0.0) continue;
        double err = sxx - sxq * sxq / sqq;
        if (err < best_err) {
            best_err = err;
            best_s = (float)(sxq / sqq);
        }
    }
    return best_s;
}

/* Fits x[0..n) ~ s * q - m with q in [0, nmax] and s >= 0; with nonneg_min,
 * also m >= 0 (the K-quant convention: mins are stored as non-negative
 * offsets), otherwise m takes either sign (Q5_1 stores the offset as is). */
static void fit_affine(const float *x, int n, int nmax, bool nonneg_min, float *s_out, float *m_out)
{
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    if (nonneg_min && lo > 0.0f) lo = 0.0f;
    if (hi <= lo) {
        *s_out = 0.0f;
        *m_out = -lo;
        return;
    }
    float best_s = (hi - lo) / (float)nmax, best_o = lo;
    double best_err = INFINITY;
    for (int k = -5; k <= 10; k++) {
        float iscale = ((float)nmax + 0.1f * (float)k) / (hi - lo);
        double sq = 0, sqq = 0, sx = 0, sxq = 0;
        int q[256];
        for (int i = 0; i < n; i++) {
            q[i] = clampi(round_i(iscale * (x[i] - lo)), 0, nmax);
            sq += q[i];
            sqq += (double)q[i] * q[i];
            sx += x[i];
            sxq += (double)x[i] * q[i];
        }
        double det = n * sqq - sq * sq;
        double s, o;
        if (det <= 0.0) continue;
        s = (n * sxq - sq * sx) / det;
        o = (sqq * sx - sq * sxq) / det;
        if (nonneg_min && o > 0.0) { /* the offset must stay <= 0: refit through the origin */
            o = 0.0;
            s = sqq > 0 ? sxq / sqq : 0.0;
        }
        if (s < 0.0) continue;
        double err = 0.0;
        for (int i = 0; i < n; i++) {
            double r = x[i] - (s * q[i] + o);
            err += r * r;
        }
        if (err < best_err) {
            best_err = err;
            best_s = (float)s;
            best_o = (float)o;
        }
    }
    *s_out = best_s;
    *m_out = -best_o;
}

static void quant_q8_0(const float *x, uint8_t *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        cel__blk_q8_0 b;
        const float *v = x + i * 32;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        uint16_t dh = cel_fp32_to_fp16(d);
        memcpy(&b.d, &dh, 2);
        for (int j = 0; j < 32; j++) b.qs[j] = (int8_t)clampi(round_i(v[j] * id), -127, 127);
        memcpy(dst + i * (int64_t)sizeof b, &b, sizeof b);
    }
}

static void quant_q4_0(const float *x, uint8_t *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        cel__blk_q4_0 b;
        const float *v = x + i * 32;
        float amax = 0.0f, vmax = 0.0f;
        for (int j = 0; j < 32; j++) {
            if (fabsf(v[j]) > amax) {
                amax = fabsf(v[j]);
                vmax = v[j];
            }
        }
        /* the largest-magnitude value maps to -8, the long side of [-8, 7] */
        float d = vmax / -8.0f;
        uint16_t dh = cel_fp32_to_fp16(d);
        float dr = cel_fp16_to_fp32(dh), id = dr != 0.0f ? 1.0f / dr : 0.0f;
        memcpy(&b.d, &dh, 2);
        for (int j = 0; j < 16; j++) {
            int q0 = clampi(round_i(v[j] * id) + 8, 0, 15);
            int q1 = clampi(round_i(v[16 + j] * id) + 8, 0, 15);
            b.qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
        memcpy(dst + i * (int64_t)sizeof b, &b, sizeof b);
    }
}

/* Packs 32 values q[j] in 0..31 into Q5_0 / Q5_1's high bits and nibbles. */
static void pack_q5(const int *q, uint8_t qh[4], uint8_t qs[16])
{
    uint32_t h = 0;
    for (int j = 0; j < 32; j++) h |= (uint32_t)(q[j] >> 4) << j;
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0x0F) | (q[16 + j] & 0x0F) << 4);
    memcpy(qh, &h, 4); /* little-endian host, as the file */
}

static void quant_q5_0(const float *x, uint8_t *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        cel__blk_q5_0 b;
        const float *v = x + i * 32;
        uint16_t dh = cel_fp32_to_fp16(fit_symmetric(v, 32, 16));
        float d = cel_fp16_to_fp32(dh);
        memcpy(&b.d, &dh, 2);
        int q[32];
        for (int j = 0; j < 32; j++) q[j] = (d != 0.0f ? clampi(round_i(v[j] / d), -16, 15) : 0) + 16;
        pack_q5(q, b.qh, b.qs);
        memcpy(dst + i * (int64_t)sizeof b, &b, sizeof b);
    }
}

static void quant_q5_1(const float *x, uint8_t *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        cel__blk_q5_1 b;
        const float *v = x + i * 32;
        float sc, mn;
        fit_affine(v, 32, 31, false, &sc, &mn);
        uint16_t dh = cel_fp32_to_fp16(sc), mh = cel_fp32_to_fp16(-mn);
        float d = cel_fp16_to_fp32(dh), m = cel_fp16_to_fp32(mh);
        memcpy(&b.d, &dh, 2);
        memcpy(&b.m, &mh, 2);
        int q[32];
        for (int j = 0; j < 32; j++) q[j] = d > 0.0f ? clampi(round_i((v[j] - m) / d), 0, 31) : 0;
        pack_q5(q, b.qh, b.qs);
        memcpy(dst + i * (int64_t)sizeof b, &b, sizeof b);
    }
}

/* The K-quant super-block header shared by Q4_K and Q5_K: fits the 8
 * sub-blocks of v[256] as s * q - m with q in 0..nmax, stores d / dmin and
 * the packed 6-bit scales and mins, and returns each sub-block's step and
 * offset as decoded (d * sc, dmin * mn). */
static void kquant_scales(const float *v, int nmax, uint8_t hdr[16], float step[8], float off[8])
{
    float s[8], m[8], smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 8; j++) {
        fit_affine(v + 32 * j, 32, nmax, true, &s[j], &m[j]);
        smax = fmaxf(smax, s[j]);
        mmax = fmaxf(mmax, m[j]);
    }
    uint16_t dh = cel_fp32_to_fp16(smax / 63.0f), mh = cel_fp32_to_fp16(mmax / 63.0f);
    float d = cel_fp16_to_fp32(dh), dmin = cel_fp16_to_fp32(mh);
    memcpy(hdr, &dh, 2);
    memcpy(hdr + 2, &mh, 2);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(d > 0.0f ? clampi(round_i(s[j] / d), 0, 63) : 0);
        mn[j] = (uint8_t)(dmin > 0.0f ? clampi(round_i(m[j] / dmin), 0, 63) : 0);
        step[j] = d * (float)sc[j];
        off[j] = dmin * (float)mn[j];
    }
    /* pack: bytes 0..3 scales 0..3 (+ top bits of scales 4..7), bytes 4..7 mins 0..3
     * (+ top bits of mins 4..7), bytes 8..11 low 4 bits of scale and min 4..7 */
    uint8_t *p = hdr + 4;
    for (int j = 0; j < 4; j++) {
        p[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        p[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        p[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
    }
}

/* Q4_K (values 0..15) and Q5_K (five: 0..31, the 5th bits in qh): one
 * header from kquant_scales, then each value rounded to its sub-block's
 * step. */
static void quant_k45(const float *x, uint8_t *dst, int64_t nb, bool five)
{
    for (int64_t i = 0; i < nb; i++) {
        cel__blk_q5_k b; /* Q4_K: the same header, and no qh */
        memset(&b, 0, sizeof b);
        const float *v = x + i * 256;
        uint8_t hdr[16];
        float step[8], off[8];
        kquant_scales(v, five ? 31 : 15, hdr, step, off);
        memcpy(&b.d, hdr, 2);
        memcpy(&b.dmin, hdr + 2, 2);
        memcpy(b.scales, hdr + 4, 12);
        for (int j = 0; j < 8; j++) {
            for (int l = 0; l < 32; l++) {
                int e = 32 * j + l;
                int q = step[j] > 0.0f ? clampi(round_i((v[e] + off[j]) / step[j]), 0, five ? 31 : 15) : 0;
                b.qs[(j / 2) * 32 + l] |= (uint8_t)((j & 1) ? (q & 0x0F) << 4 : (q & 0x0F));
                b.qh[l] |= (uint8_t)((q >> 4) << j); /* sub-block j's 5th bits: bit j (2c / 2c + 1) */
            }
        }
        uint8_t *o = dst + i * (five ? 176 : 144);
        memcpy(o, &b, 16); /* d, dmin, scales */
        if (five) memcpy(o + 16, b.qh, 32);
        memcpy(o + (five ? 48 : 16), b.qs, 128);
    }
}

static void quant_q6_k(const float *x, uint8_t *dst, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        cel__blk_q6_k b;
        memset(&b, 0, sizeof b);
        const float *v = x + i * 256;
        float s[16], amax = 0.0f;
        for (int j = 0; j < 16; j++) {
            s[j] = fit_symmetric(v + 16 * j, 16, 32);
            amax = fmaxf(amax, fabsf(s[j]));
        }
        uint16_t dh = cel_fp32_to_fp16(amax / 127.0f);
        float d = cel_fp16_to_fp32(dh);
        memcpy(&b.d, &dh, 2);
        for (int j = 0; j < 16; j++) b.scales[j] = (int8_t)(d > 0.0f ? clampi(round_i(s[j] / d), -127, 127) : 0);
        for (int e = 0; e < 256; e++) {
            float ds = d * (float)b.scales[e / 16];
            int q = (ds != 0.0f ? clampi(round_i(v[e] / ds), -32, 31) : 0) + 32;
            int h = e / 128, w = e % 128, g = w / 32, l = w % 32;
            uint8_t *lo = &b.ql[h * 64 + (g & 1) * 32 + l];
            *lo |= (uint8_t)(g < 2 ? (q & 0x0F) : (q & 0x0F) << 4);
            b.qh[h * 32 + l] |= (uint8_t)((q >> 4) << (2 * g));
        }
        memcpy(dst + i * (int64_t)sizeof b, &b, sizeof b);
    }
}

void cel_quant_row(cel_dtype t, const float *src, void *dst, int64_t n)
{
    uint8_t *d = dst;
    switch (t) {
    case CEL_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case CEL_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = cel_fp32_to_fp16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        break;
    case CEL_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = cel_fp32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        break;
    case CEL_DTYPE_Q8_0: quant_q8_0(src, d, n / 32); break;
    case CEL_DTYPE_Q4_0: quant_q4_0(src, d, n / 32); break;
    case CEL_DTYPE_Q5_0: quant_q5_0(src, d, n / 32); break;
    case CEL_DTYPE_Q5_1: quant_q5_1(src, d, n / 32); break;
    case CEL_DTYPE_Q4_K: quant_k45(src, d, n / 256, false); break;
    case CEL_DTYPE_Q5_K: quant_k45(src, d, n / 256, true); break;
    case CEL_DTYPE_Q6_K: quant_q6_k(src, d, n / 256); break;
    }
}

/* -------------------------------------------------------- activation rows */

cel__act_kind cel__act_kind_for(cel_dtype t)
{
    switch (t) {
    case CEL_DTYPE_Q8_0:
    case CEL_DTYPE_Q4_0:
    case CEL_DTYPE_Q5_0:
    case CEL_DTYPE_Q5_1: return CEL__ACT_Q8_32;
    case CEL_DTYPE_Q4_K:
    case CEL_DTYPE_Q5_K:
    case CEL_DTYPE_Q6_K: return CEL__ACT_Q8_256;
    default: return CEL__ACT_F32;
    }
}

size_t cel__act_row_bytes(cel__act_kind k, int64_t n)
{
    size_t b;
    switch (k) {
    case CEL__ACT_Q8_32: b = cel__act_q8_32_dx_offset(n) + (size_t)((n + 63) / 64) * 64; break;
    case CEL__ACT_Q8_256: b = (size_t)n + (size_t)(n / 256) * 4 + (size_t)(n / 16) * 2; break;
    default: b = (size_t)n * 4; break;
    }
    return (b + 63) & ~(size_t)63;
}
