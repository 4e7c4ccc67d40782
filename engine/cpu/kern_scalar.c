/*
 * kern_scalar.c - the portable kernel table: plain C, one (weight row,
 * activation row) pair at a time, summing block by block in element order.
 * Always compiled; used where the CPU lacks AVX2 and as the reference the
 * SIMD tables are tested against.
 */
#include "cpu.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------- activation quantization */

/* One int8 block: d = amax / 127, q = round-to-even(x * 127 / amax). The SIMD
 * tables compute exactly these floats and roundings, so they produce the same
 * bytes. */
static float quant_block(const float *x, int8_t *q, int n)
{
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < n; j++) q[j] = (int8_t)lrintf(x[j] * id);
    return amax / 127.0f;
}

static void quant_q8_32(const float *x, void *dst, int64_t n)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    float *bs = (float *)((uint8_t *)dst + cel__act_q8_32_s_offset(n));
    for (int64_t i = 0; i < n / 32; i++) {
        d[i] = quant_block(x + i * 32, qs + i * 32, 32);
        int s = 0;
        for (int j = 0; j < 32; j++) s += qs[i * 32 + j];
        bs[i] = d[i] * (float)s;
    }
}

static void quant_q8_256(const float *x, void *dst, int64_t n)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int16_t *bs = (int16_t *)(d + n / 256);
    for (int64_t i = 0; i < n / 256; i++) d[i] = quant_block(x + i * 256, qs + i * 256, 256);
    for (int64_t i = 0; i < n / 16; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += qs[i * 16 + j];
        bs[i] = (int16_t)s;
    }
}

/* ---------------------------------------------------------- pair products */

static float pair_f32(int64_t n, const uint8_t *w, const float *x)
{
    const float *wf = (const float *)w;
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) acc += wf[i] * x[i];
    return acc;
}

static float pair_f16(int64_t n, const uint8_t *w, const float *x)
{
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) acc += cel_fp16_to_fp32(cel__rd16(w + 2 * i)) * x[i];
    return acc;
}

static float pair_bf16(int64_t n, const uint8_t *w, const float *x)
{
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) acc += cel_bf16_to_fp32(cel__rd16(w + 2 * i)) * x[i];
    return acc;
}

static float pair_q8_0(int64_t n, const uint8_t *w, const int8_t *xq)
{
    const float *xd = (const float *)(xq + n);
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        const cel__blk_q8_0 *b = (const cel__blk_q8_0 *)(w + i * 34);
        int s = 0;
        for (int j = 0; j < 32; j++) s += b->qs[j] * xq[i * 32 + j];
        acc += (float)s * (cel_fp16_to_fp32(cel__rd16(&b->d)) * xd[i]);
    }
    return acc;
}

static float pair_q4_0(int64_t n, const uint8_t *w, const int8_t *xq)
{
    const float *xd = (const float *)(xq + n);
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        const cel__blk_q4_0 *b = (const cel__blk_q4_0 *)(w + i * 18);
        const int8_t *x = xq + i * 32;
        int s = 0;
        for (int j = 0; j < 16; j++) s += ((b->qs[j] & 0x0F) - 8) * x[j] + ((b->qs[j] >> 4) - 8) * x[16 + j];
        acc += (float)s * (cel_fp16_to_fp32(cel__rd16(&b->d)) * xd[i]);
    }
    return acc;
}

/* Q5_0 / Q5_1 value j (0..31) of a block: nibble plus bit j of qh. */
static int q5_val(uint32_t qh, const uint8_t *qs, int j)
{
    int lo = j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
    return lo | (int)((qh >> j) & 1u) << 4;
}

static float pair_q5_0(int64_t n, const uint8_t *w, const int8_t *xq)
{
    const float *xd = (const float *)(xq + n);
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        const cel__blk_q5_0 *b = (const cel__blk_q5_0 *)(w + i * 22);
        const int8_t *x = xq + i * 32;
        uint32_t qh = cel__rd32(b->qh);
        int s = 0;
        for (int j = 0; j < 32; j++) s += (q5_val(qh, b->qs, j) - 16) * x[j];
        acc += (float)s * (cel_fp16_to_fp32(cel__rd16(&b->d)) * xd[i]);
    }
    return acc;
}

/* Q5_1: d * dx * sum(q x) for the steps plus m * (dx * sum x), the block sum
 * the activation row carries. */
static float pair_q5_1(int64_t n, const uint8_t *w, const int8_t *xq)
{
    const float *xd = (const float *)(xq + n);
    const float *xs = (const float *)((const uint8_t *)xq + cel__act_q8_32_s_offset(n));
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        const cel__blk_q5_1 *b = (const cel__blk_q5_1 *)(w + i * 24);
        const int8_t *x = xq + i * 32;
        uint32_t qh = cel__rd32(b->qh);
        int s = 0;
        for (int j = 0; j < 32; j++) s += q5_val(qh, b->qs, j) * x[j];
        acc += (float)s * (cel_fp16_to_fp32(cel__rd16(&b->d)) * xd[i]) + cel_fp16_to_fp32(cel__rd16(&b->m)) * xs[i];
    }
    return acc;
}

/* Q4_K and Q5_K (five: the 5th bit of each value from qh): per super-block,
 * sum_j sc_j * (q . x)_j and sum_j m_j * (sum x)_j in integers, then
 * d * dx * first - dmin * dx * second. The header (d, dmin, scales) is laid
 * out alike in both. */
static float pair_k45(int64_t n, const uint8_t *w, const int8_t *xq, bool five)
{
    const float *xd = (const float *)(xq + n);
    const int16_t *bs = (const int16_t *)(xd + n / 256);
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++) {
        const uint8_t *blk = w + i * (five ? 176 : 144);
        const cel__blk_q4_k *b4 = (const cel__blk_q4_k *)blk; /* the header, either type */
        const cel__blk_q5_k *b5 = (const cel__blk_q5_k *)blk; /* read only when five */
        const uint8_t *scales = b4->scales, *qs = five ? b5->qs : b4->qs;
        const int8_t *x = xq + i * 256;
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, mn;
            cel__q4k_scale_min(j, scales, &sc, &mn);
            const uint8_t *q = qs + (j / 2) * 32;
            int s = 0;
            for (int l = 0; l < 32; l++) {
                int v = (j & 1) ? (q[l] >> 4) : (q[l] & 0x0F);
                if (five) v |= ((b5->qh[l] >> j) & 1) << 4;
                s += v * x[32 * j + l];
            }
            sumi += sc * s;
            summ += mn * (bs[i * 16 + 2 * j] + bs[i * 16 + 2 * j + 1]);
        }
        float dx = xd[i];
        acc += cel_fp16_to_fp32(cel__rd16(&b4->d)) * dx * (float)sumi -
               cel_fp16_to_fp32(cel__rd16(&b4->dmin)) * dx * (float)summ;
    }
    return acc;
}
static float pair_q4_k(int64_t n, const uint8_t *w, const int8_t *xq) { return pair_k45(n, w, xq, false); }
static float pair_q5_k(int64_t n, const uint8_t *w, const int8_t *xq) { return pair_k45(n, w, xq, true); }

static float pair_q6_k(int64_t n, const uint8_t *w, const int8_t *xq)
{
    const float *xd = (const float *)(xq + n);
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++) {
        const cel__blk_q6_k *b = (const cel__blk_q6_k *)(w + i * 210);
        const int8_t *x = xq + i * 256;
        int sumi = 0;
        for (int s16 = 0; s16 < 16; s16++) {
            int s = 0;
            for (int e = 16 * s16; e < 16 * s16 + 16; e++) {
                int h = e / 128, r = e % 128, g = r / 32, l = r % 32;
                uint8_t lo = b->ql[h * 64 + (g & 1) * 32 + l];
                int q = ((g < 2) ? (lo & 0x0F) : (lo >> 4)) | (((b->qh[h * 32 + l] >> (2 * g)) & 3) << 4);
                s += (q - 32) * x[e];
            }
            sumi += b->scales[s16] * s;
        }
        acc += cel_fp16_to_fp32(cel__rd16(&b->d)) * xd[i] * (float)sumi;
    }
    return acc;
}

#define PAIR_LOOP(PAIR, XT)                                                                                       \
    for (int r = 0; r < nx; r++)                                                                                  \
        for (int o = 0; o < nw; o++)                                                                              \
            y[(size_t)r * ys + (size_t)o] =                                                                       \
                PAIR(n, (const uint8_t *)w + (size_t)o * ws, (const XT *)((const uint8_t *)x + (size_t)r * xs));

/* dot_T: every (weight row, activation row) pair through pair_T. */
#define SCALAR_DOT(NAME, PAIR, XT)                                                                                \
    static void NAME(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx, float *y,     \
                     size_t ys)                                                                                   \
    {                                                                                                             \
        PAIR_LOOP(PAIR, XT)                                                                                       \
    }
SCALAR_DOT(dot_f32, pair_f32, float)
SCALAR_DOT(dot_f16, pair_f16, float)
SCALAR_DOT(dot_bf16, pair_bf16, float)
SCALAR_DOT(dot_q8_0, pair_q8_0, int8_t)
SCALAR_DOT(dot_q4_0, pair_q4_0, int8_t)
SCALAR_DOT(dot_q5_0, pair_q5_0, int8_t)
SCALAR_DOT(dot_q5_1, pair_q5_1, int8_t)
SCALAR_DOT(dot_q5_k, pair_q5_k, int8_t)
SCALAR_DOT(dot_q4_k, pair_q4_k, int8_t)
SCALAR_DOT(dot_q6_k, pair_q6_k, int8_t)

/* ------------------------------------------------------------- float ops */

static void attn_step(const float *q, const float *kt, int ldk, const float *v, int n, int d, float scale, float *m,
                      float *l, float *acc)
{
    float s[256];
    float mx = *m;
    for (int j = 0; j < n; j++) {
        float dot = 0.0f;
        for (int i = 0; i < d; i++) dot += q[i] * kt[(size_t)i * ldk + j];
        s[j] = dot * scale;
        mx = fmaxf(mx, s[j]);
    }
    float corr = *m == -INFINITY ? 0.0f : expf(*m - mx);
    float sum = *l * corr;
    for (int i = 0; i < d; i++) acc[i] *= corr;
    for (int j = 0; j < n; j++) {
        float p = expf(s[j] - mx);
        sum += p;
        for (int i = 0; i < d; i++) acc[i] += p * v[(size_t)j * d + i];
    }
    *m = mx;
    *l = sum;
}

static void swiglu(float *out, const float *gate, const float *up, int64_t n) { cel_op_swiglu(out, gate, up, n); }

static void fp16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = cel_fp16_to_fp32(src[i]);
}

static void f32_to_fp16(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = cel_fp32_to_fp16(src[i]);
}

static const cel__kern kern_scalar = {
    .name = "scalar",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .dot_q5_0 = dot_q5_0,
    .dot_q5_1 = dot_q5_1,
    .dot_q4_k = dot_q4_k,
    .dot_q5_k = dot_q5_k,
    .dot_q6_k = dot_q6_k,
    .quant_q8_32 = quant_q8_32,
    .quant_q8_256 = quant_q8_256,
    .attn_step = attn_step,
    .swiglu = swiglu,
    .fp16_to_f32 = fp16_to_f32,
    .f32_to_fp16 = f32_to_fp16,
};

const cel__kern *cel__kern_scalar(void) { return &kern_scalar; }

cel__dot_fn cel__kern_dot(const cel__kern *k, cel_dtype t)
{
    switch (t) {
    case CEL_DTYPE_F32: return k->dot_f32;
    case CEL_DTYPE_F16: return k->dot_f16;
    case CEL_DTYPE_BF16: return k->dot_bf16;
    case CEL_DTYPE_Q8_0: return k->dot_q8_0;
    case CEL_DTYPE_Q4_0: return k->dot_q4_0;
    case CEL_DTYPE_Q5_0: return k->dot_q5_0;
    case CEL_DTYPE_Q5_1: return k->dot_q5_1;
    case CEL_DTYPE_Q4_K: return k->dot_q4_k;
    case CEL_DTYPE_Q5_K: return k->dot_q5_k;
    case CEL_DTYPE_Q6_K: return k->dot_q6_k;
    }
    return NULL;
}

const cel__kern *cel__kern_best(void)
{
    const cel__kern *k = cel__kern_avx512();
    if (!k) k = cel__kern_avx2();
    return k ? k : &kern_scalar;
}

int cel__kern_all(const cel__kern **out, int max)
{
    const cel__kern *all[3] = {&kern_scalar, cel__kern_avx2(), cel__kern_avx512()};
    int n = 0;
    for (int i = 0; i < 3; i++)
        if (all[i] && n < max) out[n++] = all[i];
    return n;
}

const cel__kern *cel__kern_named(const char *name)
{
    const cel__kern *all[4];
    int n = cel__kern_all(all, 4);
    for (int i = 0; name && i < n; i++)
        if (strcmp(all[i]->name, name) == 0) return all[i];
    return NULL;
}
