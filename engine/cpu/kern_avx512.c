/*
 * kern_avx512.c - the AVX-512 kernel table (F, BW, VL, VNNI; with AVX2, FMA,
 * F16C), compiled with target attributes and chosen at run time.
 *
 * What it adds over AVX2, where prefill and batched decode are compute
 * bound:
 *   float formats (F32, F16, BF16): 16 lanes, 4 x 4 register tiles (16
 *     accumulators: each weight vector is converted once and used for four
 *     activation rows, each activation vector for four weight rows); masked
 *     loads cover any tail, so every element goes through the same vector
 *     path.
 *   Q8_0 / Q4_0 / Q5_0 / Q5_1: two 32-blocks per 512-bit step. The int8 dot product is one
 *     VPDPBUSD of |w| (u8) with x negated where w < 0 (s8); lanes 0..7 carry
 *     the first block's partial sums, lanes 8..15 the second's, so the
 *     scales are applied lane-wise: the activation row stores each pair of
 *     block scales spread over 16 lanes (cel__act_q8_32_dx_offset), the
 *     weight pair's scales are spread once per weight block pair and reused
 *     for every activation row.
 * Per (weight row, activation row) pair the sequence of operations is the
 * same in every tile shape (batch invariance, see cpu.h). K-quants, the
 * activation quantizers and the attention / SwiGLU helpers are the AVX2
 * ones.
 */
#include "cpu.h"
#include "kern_tiles.h"

#include <math.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define T512 "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define AVX512 __attribute__((target(T512)))
#define AVX512_INLINE __attribute__((target(T512), always_inline)) static inline
#define UNROLL _Pragma("GCC unroll 4")

AVX512_INLINE float h2f(const void *p) { return _cvtsh_ss(cel__rd16(p)); }

AVX512_INLINE void prefetch_span(const uint8_t *pf, size_t off, size_t n)
{
    if (!pf) return;
    for (size_t b = 0; b < n; b += 64) _mm_prefetch((const char *)(pf + off + b), _MM_HINT_T0);
}

/* [a x 8 | b x 8] */
AVX512_INLINE __m512 spread2(float a, float b)
{
    __m512d lo = _mm512_castps_pd(_mm512_castps256_ps512(_mm256_set1_ps(a)));
    return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

/* ------------------------------------------------- activation quantization */

/* The AVX2 bytes (qs, d), then the spread scale pairs. */
AVX512 static void quant_q8_32(const float *x, void *dst, int64_t n)
{
    cel__avx2_quant_q8_32(x, dst, n);
    const float *d = (const float *)((const int8_t *)dst + n);
    float *dx = (float *)((uint8_t *)dst + cel__act_q8_32_dx_offset(n));
    int64_t nb = n / 32;
    for (int64_t p = 0; p < (nb + 1) / 2; p++)
        _mm512_storeu_ps(dx + 16 * p, spread2(d[2 * p], 2 * p + 1 < nb ? d[2 * p + 1] : 0.0f));
}

/* ------------------------------------------------ Q8_0 / Q4_0 / Q5_0 / Q5_1 */

/* The 32 weights of one 32-element block as int8: Q8_0 as stored; Q4_0's
 * nibbles (low nibbles are elements 0-15) minus 8; Q5_0 / Q5_1 the same
 * nibbles with the 5th bit (bit j of the 32-bit qh) added as 16 in the lanes
 * whose mask bit is set - Q5_0 instead subtracts 16 where it is clear,
 * giving -16..15 in one masked op. */
AVX512_INLINE __m256i nibbles32(const uint8_t *qs)
{
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}
AVX512_INLINE __m256i q8_0_block(const uint8_t *b) { return _mm256_loadu_si256((const __m256i *)(b + 2)); }
AVX512_INLINE __m256i q4_0_block(const uint8_t *b) { return _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8)); }
AVX512_INLINE __m256i q5_0_block(const uint8_t *b)
{
    __m256i v = nibbles32(b + 6);
    return _mm256_mask_sub_epi8(v, (__mmask32)~cel__rd32(b + 2), v, _mm256_set1_epi8(16));
}
AVX512_INLINE __m256i q5_1_block(const uint8_t *b)
{
    __m256i v = nibbles32(b + 8);
    return _mm256_mask_add_epi8(v, (__mmask32)cel__rd32(b + 4), v, _mm256_set1_epi8(16));
}

/* wpair_T: the 64 weights of blocks i and i + 1 (or block i and zeros when
 * !two) as int8; dpair_T: their scales d spread over 8 lanes each. Every
 * format here starts its BB-byte block with the fp16 d. */
#define BLOCK_PAIR(T, BB)                                                                                          \
    AVX512_INLINE __m512i wpair_##T(const uint8_t *row, int64_t i, int two)                                        \
    {                                                                                                              \
        const uint8_t *b = row + (size_t)i * (BB);                                                                 \
        __m256i hi = two ? T##_block(b + (BB)) : _mm256_setzero_si256();                                          \
        return _mm512_inserti64x4(_mm512_castsi256_si512(T##_block(b)), hi, 1);                                    \
    }                                                                                                              \
    AVX512_INLINE __m512 dpair_##T(const uint8_t *row, int64_t i, int two)                                         \
    {                                                                                                              \
        const uint8_t *b = row + (size_t)i * (BB);                                                                 \
        return spread2(h2f(b), two ? h2f(b + (BB)) : 0.0f);                                                        \
    }
BLOCK_PAIR(q8_0, 34)
BLOCK_PAIR(q4_0, 18)
BLOCK_PAIR(q5_0, 22)
BLOCK_PAIR(q5_1, 24)

/* Q5_1's offsets m of blocks i and i + 1 (0 for the missing one). */
AVX512_INLINE void mpair_q5_1(const uint8_t *row, int64_t i, int two, float *m0, float *m1)
{
    const uint8_t *b = row + (size_t)i * 24;
    *m0 = h2f(b + 2);
    *m1 = two ? h2f(b + 26) : 0.0f;
}
AVX512_INLINE void mpair_none(const uint8_t *row, int64_t i, int two, float *m0, float *m1)
{
    (void)row, (void)i, (void)two;
    *m0 = *m1 = 0.0f;
}

/* NW x NX tile over pairs of 32-blocks; BB: bytes per weight block.
 * SIGNED formats (Q8_0, Q4_0, Q5_0) feed |w| and x negated where w < 0 to
 * VPDPBUSD; unsigned ones (Q5_1, values 0..31) feed w as is, and add the
 * offset term m * d_x * sum(x) per block from the activation row's block
 * sums (MPAIR) with scalar FMAs into a second accumulator per pair. */
#define INT8_TILE(NAME, WPAIR, DPAIR, BB, SIGNED, MPAIR)                                                          \
    AVX512_INLINE void NAME(const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, \
                            size_t xs, float *y, size_t ys, const uint8_t *pf)                                     \
    {                                                                                                              \
        const int64_t nb = n / 32, np = (nb + 1) / 2;                                                              \
        const size_t dxo = cel__act_q8_32_dx_offset(n), so = cel__act_q8_32_s_offset(n);                          \
        __m512 acc[4][4];                                                                                          \
        float macc[4][4];                                                                                          \
        UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++)                                    \
        {                                                                                                          \
            acc[a][b] = _mm512_setzero_ps();                                                                       \
            macc[a][b] = 0.0f;                                                                                     \
        }                                                                                                          \
        for (int64_t p = 0; p < np; p++) {                                                                         \
            const int two = 2 * p + 1 < nb;                                                                        \
            prefetch_span(pf, (size_t)p * NW * 2 * (BB), (size_t)NW * 2 * (BB));                                   \
            __m512i xv[4];                                                                                         \
            UNROLL for (int b = 0; b < NX; b++)                                                                    \
            {                                                                                                      \
                const int8_t *xq = (const int8_t *)(x + (size_t)b * xs) + 64 * p;                                  \
                xv[b] = two ? _mm512_loadu_si512((const void *)xq)                                                 \
                            : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)xq));                     \
            }                                                                                                      \
            UNROLL for (int a = 0; a < NW; a++)                                                                    \
            {                                                                                                      \
                const uint8_t *wr = w + (size_t)a * ws;                                                            \
                __m512i wv = WPAIR(wr, 2 * p, two);                                                                \
                __m512 dw = DPAIR(wr, 2 * p, two);                                                                 \
                __m512i aw = SIGNED ? _mm512_abs_epi8(wv) : wv;                                                    \
                __mmask64 neg = SIGNED ? _mm512_movepi8_mask(wv) : 0;                                              \
                float m0, m1;                                                                                      \
                MPAIR(wr, 2 * p, two, &m0, &m1);                                                                   \
                UNROLL for (int b = 0; b < NX; b++)                                                                \
                {                                                                                                  \
                    __m512i sx = SIGNED ? _mm512_mask_sub_epi8(xv[b], neg, _mm512_setzero_si512(), xv[b]) : xv[b]; \
                    __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx));            \
                    const float *dx = (const float *)(x + (size_t)b * xs + dxo) + 16 * p;                          \
                    acc[a][b] = _mm512_fmadd_ps(_mm512_mul_ps(f, _mm512_loadu_ps(dx)), dw, acc[a][b]);             \
                    if (!SIGNED) {                                                                                 \
                        const float *sb = (const float *)(x + (size_t)b * xs + so) + 2 * p;                        \
                        macc[a][b] = fmaf(m0, sb[0], macc[a][b]);                                                  \
                        if (two) macc[a][b] = fmaf(m1, sb[1], macc[a][b]);                                         \
                    }                                                                                              \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
        UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) y[(size_t)b * ys + (size_t)a] =    \
            SIGNED ? _mm512_reduce_add_ps(acc[a][b]) : _mm512_reduce_add_ps(acc[a][b]) + macc[a][b];               \
    }

INT8_TILE(tile_q8_0, wpair_q8_0, dpair_q8_0, 34, 1, mpair_none)
INT8_TILE(tile_q4_0, wpair_q4_0, dpair_q4_0, 18, 1, mpair_none)
INT8_TILE(tile_q5_0, wpair_q5_0, dpair_q5_0, 22, 1, mpair_none)
INT8_TILE(tile_q5_1, wpair_q5_1, dpair_q5_1, 24, 0, mpair_q5_1)

/* ------------------------------------------------------------------ floats */

AVX512_INLINE __mmask16 tail_mask(int64_t left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u); }

AVX512_INLINE __m512 load_f32(const uint8_t *w, int64_t i, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, (const float *)w + i);
}
AVX512_INLINE __m512 load_f16(const uint8_t *w, int64_t i, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + 2 * i));
}
AVX512_INLINE __m512 load_bf16(const uint8_t *w, int64_t i, __mmask16 m)
{
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + 2 * i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

#define FLOAT_TILE(NAME, LOADW, EB)                                                                                \
    AVX512_INLINE void NAME(const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, \
                            size_t xs, float *y, size_t ys, const uint8_t *pf)                                     \
    {                                                                                                              \
        __m512 acc[4][4];                                                                                          \
        UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) acc[a][b] = _mm512_setzero_ps();   \
        for (int64_t i = 0; i < n; i += 16) {                                                                      \
            __mmask16 m = tail_mask(n - i);                                                                        \
            prefetch_span(pf, (size_t)i * NW * (EB), (size_t)(16 * NW * (EB)));                                    \
            __m512 wv[4];                                                                                          \
            UNROLL for (int a = 0; a < NW; a++) wv[a] = LOADW(w + (size_t)a * ws, i, m);                           \
            UNROLL for (int b = 0; b < NX; b++)                                                                    \
            {                                                                                                      \
                __m512 xv = _mm512_maskz_loadu_ps(m, (const float *)(x + (size_t)b * xs) + i);                     \
                UNROLL for (int a = 0; a < NW; a++) acc[a][b] = _mm512_fmadd_ps(wv[a], xv, acc[a][b]);             \
            }                                                                                                      \
        }                                                                                                          \
        UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) y[(size_t)b * ys + (size_t)a] =    \
            _mm512_reduce_add_ps(acc[a][b]);                                                                       \
    }

FLOAT_TILE(tile_f32, load_f32, 4)
FLOAT_TILE(tile_f16, load_f16, 2)
FLOAT_TILE(tile_bf16, load_bf16, 2)

/* The tile driver (shapes, loops, prefetch) is kern_tiles.h's. */
#define TILE_SHAPE(TILE, NW, NX) CEL__TILE_SHAPE(AVX512, TILE, NW, NX)
#define TILE_SHAPES(TILE) CEL__TILE_SHAPES(AVX512, TILE)
#define DOT_FN(NAME, TILE, NWB) CEL__DOT_FN(AVX512, static, NAME, TILE, NWB)

TILE_SHAPE(tile_q8_0, 2, 4)
TILE_SHAPE(tile_q4_0, 2, 4)
TILE_SHAPE(tile_q5_0, 2, 4)
TILE_SHAPE(tile_q5_1, 2, 4)
TILE_SHAPE(tile_f32, 4, 4)
TILE_SHAPE(tile_f16, 4, 4)
TILE_SHAPE(tile_bf16, 4, 4)
TILE_SHAPES(tile_q8_0)
TILE_SHAPES(tile_q4_0)
TILE_SHAPES(tile_q5_0)
TILE_SHAPES(tile_q5_1)
TILE_SHAPE(tile_f32, 1, 4)
TILE_SHAPE(tile_f16, 1, 4)
TILE_SHAPE(tile_bf16, 1, 4)
TILE_SHAPE(tile_f32, 1, 1)
TILE_SHAPE(tile_f16, 1, 1)
TILE_SHAPE(tile_bf16, 1, 1)

/* Decode (one activation row) with float weights: 4 weight rows per pass,
 * each 16-element step also prefetching 64-byte lines of the next tile (pf,
 * 4 rows), spread evenly over the pass. Measured on the 2-core EPYC (Zen 4)
 * against the shared 4 x NX tile: 38 -> 43 tok/s single-stream F16 decode of
 * a Qwen2.5-0.5B shape; prefetching further ahead (8 or 16 rows) or into L2
 * only was slower. */
#define FLOAT_ROWS4(TILE, LOADW, EB)                                                                               \
    AVX512 __attribute__((noinline)) static void TILE##_4x1(int64_t n, const uint8_t *w, size_t ws,               \
                                                           const uint8_t *x, size_t xs, float *y, size_t ys,      \
                                                           const uint8_t *pf)                                     \
    {                                                                                                              \
        (void)xs;                                                                                                  \
        (void)ys;                                                                                                  \
        const float *xf = (const float *)x;                                                                        \
        __m512 acc[4];                                                                                             \
        for (int a = 0; a < 4; a++) acc[a] = _mm512_setzero_ps();                                                  \
        const size_t pfn = 4 * ws, steps = (size_t)(n + 15) / 16;                                                  \
        const size_t per = (pfn / steps + 63) & ~(size_t)63;                                                       \
        size_t off = 0;                                                                                            \
        for (int64_t i = 0; i < n; i += 16) {                                                                      \
            __mmask16 m = tail_mask(n - i);                                                                        \
            if (pf)                                                                                                \
                for (size_t b = 0; b < per && off < pfn; b += 64, off += 64)                                       \
                    _mm_prefetch((const char *)(pf + off), _MM_HINT_T0);                                           \
            __m512 xv = _mm512_maskz_loadu_ps(m, xf + i);                                                          \
            UNROLL for (int a = 0; a < 4; a++) acc[a] = _mm512_fmadd_ps(LOADW(w + (size_t)a * ws, i, m), xv, acc[a]); \
        }                                                                                                          \
        for (int a = 0; a < 4; a++) y[a] = _mm512_reduce_add_ps(acc[a]);                                          \
    }
FLOAT_ROWS4(tile_f32, load_f32, 4)
FLOAT_ROWS4(tile_f16, load_f16, 2)
FLOAT_ROWS4(tile_bf16, load_bf16, 2)

DOT_FN(dot_q8_0, tile_q8_0, 2)
DOT_FN(dot_q4_0, tile_q4_0, 2)
DOT_FN(dot_q5_0, tile_q5_0, 2)
DOT_FN(dot_q5_1, tile_q5_1, 2)
DOT_FN(dot_f32, tile_f32, 4)
DOT_FN(dot_f16, tile_f16, 4)
DOT_FN(dot_bf16, tile_bf16, 4)

static const cel__kern kern_avx512 = {
    .name = "avx512",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .dot_q5_0 = dot_q5_0,
    .dot_q5_1 = dot_q5_1,
    .dot_q4_k = cel__avx2_dot_q4_k,
    .dot_q5_k = cel__avx2_dot_q5_k,
    .dot_q6_k = cel__avx2_dot_q6_k,
    .quant_q8_32 = quant_q8_32,
    .quant_q8_256 = cel__avx2_quant_q8_256,
    .attn_step = cel__avx2_attn_step,
    .swiglu = cel__avx2_swiglu,
    .fp16_to_f32 = cel__avx2_fp16_to_f32,
    .f32_to_fp16 = cel__avx2_f32_to_fp16,
};

/* The compiler's run-time checks cover the OS side too (the ZMM and mask
 * state enabled in XCR0). */
static bool cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return cel__kern_avx2() != NULL && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

const cel__kern *cel__kern_avx512(void) { return cpu_has_avx512() ? &kern_avx512 : NULL; }

#else /* not x86-64 */

const cel__kern *cel__kern_avx512(void) { return NULL; }

#endif
