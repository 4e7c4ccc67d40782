/*
 * engine/cpu/cpu.h - internals of the CPU compute backend, shared by its
 * files, its unit tests and bench/bench_kernels.c. Not a public API.
 *
 * Layers inside engine/cpu:
 *   quant.c       number formats, block layouts, dequant/quant (engine/ops.h)
 *   ops.c         the float reference ops of engine/ops.h (plain loops)
 *   kern_*.c      per-ISA kernel tables: dot-product tiles per weight dtype,
 *                 activation quantization, attention block step, SwiGLU ...
 *   matmul.c      the threaded, cache-tiled matmul driver over a kernel table
 *   backend.c     cel_backend_cpu_create: the forward pass over a batch
 *
 * Batch invariance: every kernel computes each (weight row, activation row)
 * dot product with one fixed sequence of operations, whatever the tile shape
 * it happens to be computed in and whichever thread computes it, so a row's
 * result never depends on the other rows of the batch. A process uses one
 * kernel table for its whole life (the best the CPU supports), so results are
 * also stable from call to call. Different tables (scalar vs AVX2) agree only
 * within rounding: they sum in different orders.
 */
#ifndef CEL_ENGINE_CPU_CPU_H
#define CEL_ENGINE_CPU_CPU_H

#include "../ops.h"
#include "celine/common.h"
#include "celine/engine.h"

#include <string.h>

/* ---------------------------------------------------------- block layouts */
/* ggml's block layouts (facts of the GGUF format); read scales with cel__rd16
 * so that no code depends on the alignment of a mapped file. */
#define CEL__QK 32   /* Q8_0 / Q4_0 block */
#define CEL__QKK 256 /* K-quant super-block */

typedef struct cel__blk_q8_0 {
    uint16_t d;
    int8_t qs[32];
} cel__blk_q8_0;
typedef struct cel__blk_q4_0 {
    uint16_t d;
    uint8_t qs[16]; /* element j: low nibble of qs[j]; element 16 + j: high nibble */
} cel__blk_q4_0;
typedef struct cel__blk_q5_0 {
    uint16_t d;
    uint8_t qh[4];  /* bit j of the little-endian u32: the 5th bit of element j */
    uint8_t qs[16]; /* low 4 bits, as Q4_0: element j low nibble, 16 + j high nibble */
} cel__blk_q5_0;
typedef struct cel__blk_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} cel__blk_q5_1;
typedef struct cel__blk_q4_k {
    uint16_t d, dmin;
    uint8_t scales[12]; /* 8 x (6-bit scale, 6-bit min), packed */
    uint8_t qs[128];    /* per 64 elements: 32 bytes, low nibbles first 32, high nibbles next 32 */
} cel__blk_q4_k;
typedef struct cel__blk_q5_k {
    uint16_t d, dmin;
    uint8_t scales[12]; /* as Q4_K */
    uint8_t qh[32];     /* qh[l] bit 2c: 5th bit of element 64c + l; bit 2c+1: of element 64c + 32 + l */
    uint8_t qs[128];    /* low 4 bits, laid out as Q4_K's nibbles */
} cel__blk_q5_k;
typedef struct cel__blk_q6_k {
    uint8_t ql[128]; /* low 4 bits */
    uint8_t qh[64];  /* high 2 bits */
    int8_t scales[16];
    uint16_t d;
} cel__blk_q6_k;

_Static_assert(sizeof(cel__blk_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(cel__blk_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(cel__blk_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(cel__blk_q5_1) == 24, "Q5_1 block is 24 bytes");
_Static_assert(sizeof(cel__blk_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(cel__blk_q5_k) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(cel__blk_q6_k) == 210, "Q6_K block is 210 bytes");

static inline uint16_t cel__rd16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline uint32_t cel__rd32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Q4_K / Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. */
static inline void cel__q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* ------------------------------------------------------------ activations */
/* The activation row format a weight dtype's dot product wants:
 *   F32   (F32, F16, BF16 weights): the float row itself;
 *   Q8_32 (Q8_0, Q4_0, Q5_0, Q5_1): int8 qs[n] | float d[n/32] | float s[n/32]
 *          | pad to 64 | float dx[ceil(n/64)][16]
 *          (x ~ d * qs per 32; s = d * (sum of the block's qs), exactly
 *          (float)sum times d, for Q5_1's offset term m * sum(x); dx,
 *          written and read only by the AVX-512 table, holds each pair of
 *          block scales spread over 16 lanes: 8 x d[2p], 8 x d[2p + 1] (0
 *          past the last block));
 *   Q8_256 (Q4_K, Q5_K, Q6_K): int8 qs[n] | float d[n/256] | int16 bsum[n/16]
 *          (one scale per 256, plus the sums of each 16 qs for the K-quants'
 *          min / offset terms).
 * Quantized rows are padded to 64 bytes so rows never share a cache line. */
typedef enum cel__act_kind { CEL__ACT_F32 = 0, CEL__ACT_Q8_32 = 1, CEL__ACT_Q8_256 = 2 } cel__act_kind;

cel__act_kind cel__act_kind_for(cel_dtype t);
/* Offset of the block sums (s) and of the expanded scale pairs (dx) in a
 * Q8_32 row of n elements. */
static inline size_t cel__act_q8_32_s_offset(int64_t n) { return (size_t)n + (size_t)(n / 32) * 4; }
static inline size_t cel__act_q8_32_dx_offset(int64_t n) { return ((size_t)n + (size_t)(n / 32) * 8 + 63) & ~(size_t)63; }
/* Bytes of one quantized activation row of n elements (kind Q8_32 / Q8_256;
 * n a multiple of 32 / 256); for F32, 4 * n rounded up to 64. */
size_t cel__act_row_bytes(cel__act_kind k, int64_t n);

/* ---------------------------------------------------------- kernel tables */
/* Computes the nw x nx dot products of weight rows w[0..nw) (each w_stride
 * bytes apart, dtype of the table slot) with activation rows x[0..nx) (each
 * x_stride bytes apart, in the dtype's activation format), n elements each:
 * y[r * y_stride + o] = dot(w row o, x row r). */
typedef void (*cel__dot_fn)(int64_t n, const void *w, size_t w_stride, int nw, const void *x, size_t x_stride,
                            int nx, float *y, size_t y_stride);

typedef struct cel__kern {
    const char *name; /* "scalar", "avx2" */
    cel__dot_fn dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0, dot_q5_0, dot_q5_1, dot_q4_k, dot_q5_k, dot_q6_k;
    /* x[n] -> one activation row (formats above). n: multiple of 32 / 256. */
    void (*quant_q8_32)(const float *x, void *dst, int64_t n);
    void (*quant_q8_256)(const float *x, void *dst, int64_t n);
    /* One online-softmax step of attention for one query q[d] over n keys:
     * keys transposed, kt[i * ldk + j] = key j's element i (ldk a multiple
     * of 8, >= n; lanes j >= n may hold any finite value), values v[j * d + i].
     * s_j = scale * q.k_j; with m the running max and l the running sum of
     * exp(s - m), rescales acc[d] and adds sum_j exp(s_j - m) v_j. *m starts
     * at -INFINITY, *l and acc at 0. n <= 256. */
    void (*attn_step)(const float *q, const float *kt, int ldk, const float *v, int n, int d, float scale, float *m,
                      float *l, float *acc);
    void (*swiglu)(float *out, const float *gate, const float *up, int64_t n);
    void (*fp16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*f32_to_fp16)(const float *src, uint16_t *dst, int64_t n);
} cel__kern;

const cel__kern *cel__kern_scalar(void);
/* NULL when the CPU (checked at run time) lacks AVX2 + FMA + F16C or the
 * compiler could not build the AVX2 kernels. */
const cel__kern *cel__kern_avx2(void);
/* NULL without AVX-512 F/BW/VL/VNNI (plus AVX2/FMA/F16C). Float formats and
 * Q8_0 / Q4_0 / Q5_0 / Q5_1 at 16 lanes (VNNI dot products); K-quants and
 * the float helpers are the AVX2 ones. */
const cel__kern *cel__kern_avx512(void);
/* The table this process uses: the best the CPU supports. */
const cel__kern *cel__kern_best(void);
/* Every table this CPU can run, scalar first (for tests and benchmarks);
 * returns how many were written to out (at most max). */
int cel__kern_all(const cel__kern **out, int max);
/* The table named name ("scalar", "avx2", "avx512") when this CPU runs it;
 * NULL otherwise. */
const cel__kern *cel__kern_named(const char *name);

/* AVX2 functions the AVX-512 table reuses (kern_avx2.c). */
void cel__avx2_quant_q8_32(const float *x, void *dst, int64_t n);
void cel__avx2_quant_q8_256(const float *x, void *dst, int64_t n);
void cel__avx2_dot_q4_k(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx, float *y,
                        size_t ys);
void cel__avx2_dot_q5_k(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx, float *y,
                        size_t ys);
void cel__avx2_dot_q6_k(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx, float *y,
                        size_t ys);
void cel__avx2_attn_step(const float *q, const float *kt, int ldk, const float *v, int n, int d, float scale, float *m,
                         float *l, float *acc);
void cel__avx2_swiglu(float *out, const float *gate, const float *up, int64_t n);
void cel__avx2_fp16_to_f32(const uint16_t *src, float *dst, int64_t n);
void cel__avx2_f32_to_fp16(const float *src, uint16_t *dst, int64_t n);
/* The dot kernel of a weight dtype, or NULL if unsupported. */
cel__dot_fn cel__kern_dot(const cel__kern *k, cel_dtype t);

/* ----------------------------------------------------------------- matmul */
/* One product y[r][o] = sum_i W[o][i] x[r][i] of a multi-output matmul. */
typedef struct cel__mm {
    const cel_tensor *w; /* ne[0] = n_in, ne[1] = n_out */
    float *y;
    size_t y_stride; /* floats between rows of y */
} cel__mm;

/* Scratch for the quantized activations of up to max_rows rows of up to
 * max_in elements (both quantized formats). */
size_t cel__matmul_scratch_bytes(int64_t max_rows, int64_t max_in);

/* Computes n_mm products that share the activations x ([n_rows] rows of n_in
 * floats, x_stride floats apart): the activations are quantized once per
 * format, then the weight rows of all products are split over the pool's
 * threads; each thread runs its weight rows against every activation row
 * (cache-blocked), so weights are read from memory once per call whatever
 * n_rows is. Shapes must have been validated (W->ne[0] == n_in, dtype
 * supported, data present); scratch must hold cel__matmul_scratch_bytes
 * (n_rows, n_in) bytes, 64-byte aligned. pool may be NULL. */
void cel__matmul(const cel__kern *k, cel_pool *pool, const float *x, size_t x_stride, int64_t n_rows, int64_t n_in,
                 const cel__mm *mm, int n_mm, void *scratch);

/* ------------------------------------------------------------- rope bits */
/* cos/sin of pos * inv_freq[i] for i < half (what cel_op_rope computes). */
void cel__rope_cs(int32_t pos, const float *inv_freq, int32_t half, float *cosv, float *sinv);
/* Rotates n_heads heads of x with precomputed cos/sin (cel_op_rope's math). */
void cel__rope_apply(float *x, int32_t n_heads, int32_t head_dim, const float *cosv, const float *sinv,
                     cel_rope_style style);

#endif
