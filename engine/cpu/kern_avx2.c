/*
 * kern_avx2.c - the AVX2 + FMA + F16C kernel table, compiled with target
 * attributes (the rest of celine stays baseline x86-64) and chosen at run
 * time when the CPU has those features.
 *
 * Dot products are computed in register tiles: 1 weight row x 4 activation
 * rows for the integer formats (the weight block is unpacked once and used
 * four times), 2 x 4 for the float formats, and 4 weight rows x 1 activation
 * row for decode (four independent accumulators hide the FMA latency). Every
 * tile shape runs the same per-pair sequence of operations (one 8-lane
 * accumulator per pair, blocks in order, one fixed horizontal sum at the
 * end), so a pair's result is the same in every shape: batch invariance.
 *
 * Integer formats (activations quantized to int8 per 32 or per 256):
 *   Q8_0 / Q4_0: per 32-block, |w| (u8) x sign-adjusted x (s8) with
 *     maddubs -> madd -> int32 x 8 -> float, times d_w * d_x, into the
 *     accumulator. The int16 intermediates cannot saturate (|w| <= 128,
 *     |x| <= 127, two products per lane).
 *   Q5_0: as Q4_0, the 5th bits expanded from the 32-bit qh to bytes.
 *   Q5_1: values 0..31 (u8) x x (s8) directly, times d_w * d_x; the offset
 *     term m * d_x * sum(x) comes from the activation row's block sums (s),
 *     one scalar FMA per block into a second, scalar accumulator per pair.
 *   Q4_K / Q5_K: nibbles (+ 5th bit) (u8) x x (s8) -> madd with the sub-block scale -> int32
 *     sums over the super-block, then d * dx; the mins term is
 *     madd(bsums, mins) times dmin * dx, subtracted with an FMA.
 *   Q6_K: 6-bit values (u8, offset 32) x x -> madd with the int8 scales; the
 *     offset is removed exactly in integers via the activation block sums.
 */
#include "cpu.h"
#include "kern_tiles.h"

#include <math.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* ---------------------------------------------------------------- helpers */

AVX2_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_INLINE float hmax8(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_INLINE float h2f(const void *p) { return _cvtsh_ss(cel__rd16(p)); }

/* Decode streams weights from DRAM in tiles of 4 rows; rows of a few KiB are
 * too short for the hardware prefetcher to lock onto 4 interleaved streams,
 * so each step of a tile prefetches its share of the next tile (pf, the
 * rows right after this tile's; NULL: none) linearly. */
AVX2_INLINE void prefetch_span(const uint8_t *pf, size_t off, size_t n)
{
    if (!pf) return;
    for (size_t b = 0; b < n; b += 64) _mm_prefetch((const char *)(pf + off + b), _MM_HINT_T0);
}

/* w . x for int8 w, x in 32 lanes -> 8 int32 partial sums, as floats. */
AVX2_INLINE __m256 dot_i8(__m256i aw, __m256i w, __m256i x)
{
    __m256i p16 = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

/* e^x for 8 floats: 2^k * p(r) with k = round(x / ln 2), r = x - k ln 2 in
 * two parts, p the degree-6 Taylor polynomial (|r| <= 0.347: error ~1 ulp).
 * Inputs below -87.3 give 0, above 88.3 are clamped (finite). */
AVX2_INLINE __m256 exp8(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* ------------------------------------------------- activation quantization */

/* 32 floats -> 32 int8 (x * id rounded to even), in element order. */
AVX2_INLINE __m256i quant32(const float *x, __m256 id)
{
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), id));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), id));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), id));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), id));
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    return _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

AVX2_INLINE __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* Sum of the 32 int8 in q, exact. */
AVX2_INLINE int hsum_i8(__m256i q)
{
    __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(t);
}

AVX2 void cel__avx2_quant_q8_32(const float *x, void *dst, int64_t n)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    float *bs = (float *)((uint8_t *)dst + cel__act_q8_32_s_offset(n));
    for (int64_t i = 0; i < n / 32; i++) {
        const float *v = x + i * 32;
        __m256 m = _mm256_max_ps(_mm256_max_ps(abs8(_mm256_loadu_ps(v)), abs8(_mm256_loadu_ps(v + 8))),
                                 _mm256_max_ps(abs8(_mm256_loadu_ps(v + 16)), abs8(_mm256_loadu_ps(v + 24))));
        float amax = hmax8(m);
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        d[i] = amax / 127.0f;
        __m256i q = quant32(v, _mm256_set1_ps(id));
        _mm256_storeu_si256((__m256i *)(qs + i * 32), q);
        bs[i] = d[i] * (float)hsum_i8(q); /* the scalar table's float op */
    }
}

AVX2 void cel__avx2_quant_q8_256(const float *x, void *dst, int64_t n)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int16_t *bs = (int16_t *)(d + n / 256);
    for (int64_t i = 0; i < n / 256; i++) {
        const float *v = x + i * 256;
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 256; j += 8) m = _mm256_max_ps(m, abs8(_mm256_loadu_ps(v + j)));
        float amax = hmax8(m);
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        d[i] = amax / 127.0f;
        __m256 idv = _mm256_set1_ps(id);
        for (int c = 0; c < 8; c++) {
            __m256i q = quant32(v + 32 * c, idv);
            _mm256_storeu_si256((__m256i *)(qs + i * 256 + 32 * c), q);
            /* sums of each 16: pairs (maddubs) -> quads (madd) -> two horizontal adds */
            __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
            s = _mm256_hadd_epi32(s, s);
            s = _mm256_hadd_epi32(s, s);
            bs[i * 16 + 2 * c] = (int16_t)_mm256_extract_epi32(s, 0);
            bs[i * 16 + 2 * c + 1] = (int16_t)_mm256_extract_epi32(s, 4);
        }
    }
}

/* ---------------------------------------------------------------- tiles */
/* Each TILE_* computes NW weight rows x NX activation rows (NW, NX <= 4,
 * constants after inlining; the loops unroll and the accumulators live in
 * registers). Arguments: n elements, w / ws weight rows, x / xs activation
 * rows, y / ys output. */

#define UNROLL _Pragma("GCC unroll 4")
#define UNROLL8 _Pragma("GCC unroll 8")

/* 0xFF in byte j where bit j of qh is set (j = 0..31). */
AVX2_INLINE __m256i bits_to_bytes(uint32_t qh)
{
    /* byte j takes byte j / 8 of qh, then keeps only bit j % 8 */
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                         3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), sel);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* The 32 nibbles of a Q4_0 / Q5_0 / Q5_1 block (low nibbles: elements 0-15). */
AVX2_INLINE __m256i nibbles32(const uint8_t *qs)
{
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

/* The 32 weights of one block as int8, for the formats whose block is an
 * fp16 d then signed values: Q8_0 as stored; Q4_0 the nibbles minus 8; Q5_0
 * the nibble where the 5th bit is set, else nibble - 16 = the nibble with
 * bits 4..7 set (two's complement). */
AVX2_INLINE __m256i w_q8_0(const uint8_t *b) { return _mm256_loadu_si256((const __m256i *)(b + 2)); }
AVX2_INLINE __m256i w_q4_0(const uint8_t *b) { return _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8)); }
AVX2_INLINE __m256i w_q5_0(const uint8_t *b)
{
    const __m256i hi4 = _mm256_set1_epi8((char)0xF0);
    return _mm256_or_si256(nibbles32(b + 6), _mm256_andnot_si256(bits_to_bytes(cel__rd32(b + 2)), hi4));
}

/* Signed 32-element formats (BB-byte blocks, LOADW as above): per block,
 * |w| . sign(x, w) in int8 (dot_i8), scaled by d_w * d_x. */
#define SIGNED32_TILE(NAME, LOADW, BB)                                                                             \
    AVX2_INLINE void NAME(const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws, const uint8_t *x,   \
                          size_t xs, float *y, size_t ys, const uint8_t *pf)                                       \
    {                                                                                                              \
        __m256 acc[4][4];                                                                                          \
        UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) acc[a][b] = _mm256_setzero_ps();   \
        for (int64_t i = 0; i < n / 32; i++) {                                                                     \
            __m256i xv[4];                                                                                         \
            float xd[4];                                                                                           \
            prefetch_span(pf, (size_t)i * NW * (BB), NW * (BB));                                                   \
            UNROLL for (int b = 0; b < NX; b++)                                                                    \
            {                                                                                                      \
                const int8_t *xr = (const int8_t *)(x + (size_t)b * xs);                                           \
                xv[b] = _mm256_loadu_si256((const __m256i *)(xr + i * 32));                                        \
                xd[b] = ((const float *)(xr + n))[i];                                                              \
            }                                                                                                      \
            UNROLL for (int a = 0; a < NW; a++)                                                                    \
            {                                                                                                      \
                const uint8_t *blk = w + (size_t)a * ws + (size_t)i * (BB);                                        \
                __m256i wv = LOADW(blk);                                                                           \
                __m256i aw = _mm256_sign_epi8(wv, wv);                                                             \
                float dw = h2f(blk);                                                                               \
                UNROLL for (int b = 0; b < NX; b++) acc[a][b] =                                                    \
                    _mm256_fmadd_ps(dot_i8(aw, wv, xv[b]), _mm256_set1_ps(dw * xd[b]), acc[a][b]);                 \
            }                                                                                                      \
        }                                                                                                          \
        UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) y[(size_t)b * ys + (size_t)a] =    \
            hsum8(acc[a][b]);                                                                                      \
    }
SIGNED32_TILE(tile_q8_0, w_q8_0, 34)
SIGNED32_TILE(tile_q4_0, w_q4_0, 18)
SIGNED32_TILE(tile_q5_0, w_q5_0, 22)

AVX2_INLINE void tile_q5_1(const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws, const uint8_t *x,
                           size_t xs, float *y, size_t ys, const uint8_t *pf)
{
    const size_t so = cel__act_q8_32_s_offset(n);
    __m256 acc[4][4];
    float macc[4][4];
    UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++)
    {
        acc[a][b] = _mm256_setzero_ps();
        macc[a][b] = 0.0f;
    }
    for (int64_t i = 0; i < n / 32; i++) {
        __m256i xv[4];
        float xd[4], xsum[4];
        prefetch_span(pf, (size_t)i * NW * 24, NW * 24);
        UNROLL for (int b = 0; b < NX; b++)
        {
            const int8_t *xr = (const int8_t *)(x + (size_t)b * xs);
            xv[b] = _mm256_loadu_si256((const __m256i *)(xr + i * 32));
            xd[b] = ((const float *)(xr + n))[i];
            xsum[b] = ((const float *)((const uint8_t *)xr + so))[i];
        }
        UNROLL for (int a = 0; a < NW; a++)
        {
            const cel__blk_q5_1 *bw = (const cel__blk_q5_1 *)(w + (size_t)a * ws + (size_t)i * 24);
            __m256i wv = _mm256_or_si256(nibbles32(bw->qs), /* 0..31: the unsigned operand as is */
                                         _mm256_and_si256(bits_to_bytes(cel__rd32(bw->qh)), _mm256_set1_epi8(0x10)));
            float dw = h2f(&bw->d), mw = h2f(&bw->m);
            UNROLL for (int b = 0; b < NX; b++)
            {
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv[b]), _mm256_set1_epi16(1));
                acc[a][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * xd[b]), acc[a][b]);
                macc[a][b] = fmaf(mw, xsum[b], macc[a][b]);
            }
        }
    }
    UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) y[(size_t)b * ys + (size_t)a] =
        hsum8(acc[a][b]) + macc[a][b];
}

/* Q4_K / Q5_K: the 8 six-bit scales and mins, four bytes at a time: bytes
 * 0..3 hold scales 0..3 (low 6 bits), 4..7 mins 0..3, 8..11 the low 4 bits
 * of scales / mins 4..7, whose top 2 bits sit in bits 6..7 of bytes 0..3 /
 * 4..7 (cel__q4k_scale_min, one at a time). Returns the scales as 8 bytes
 * (scale j in bits 8j..8j+7); *mins gets each min twice, as int16, in the
 * order of the activation row's 16 block sums. */
AVX2_INLINE uint64_t kq_scales_mins(const uint8_t *scales, __m256i *mins)
{
    uint32_t q0 = cel__rd32(scales), q1 = cel__rd32(scales + 4), q2 = cel__rd32(scales + 8);
    const uint32_t mlo = q1 & 0x3F3F3F3Fu, mhi = ((q2 >> 4) & 0x0F0F0F0Fu) | (((q1 >> 6) & 0x03030303u) << 4);
    const __m128i mn16 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)mhi, (int)mlo));
    *mins = _mm256_set_m128i(_mm_unpackhi_epi16(mn16, mn16), _mm_unpacklo_epi16(mn16, mn16));
    return (uint64_t)(q0 & 0x3F3F3F3Fu) | (uint64_t)((q2 & 0x0F0F0F0Fu) | (((q0 >> 6) & 0x03030303u) << 4)) << 32;
}

/* Q4_K and Q5_K (FIVE, a constant after inlining): the header (d, dmin,
 * scales) is laid out alike; Q5_K adds the 5th bits: qh[l] bit j belongs to
 * element l of sub-block j, moved to bit 4 of the byte with 16-bit shifts (a
 * byte's low bit never takes a neighbour's bits for shifts below 8). */
AVX2_INLINE void tile_k45(const bool FIVE, const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws,
                          const uint8_t *x, size_t xs, float *y, size_t ys, const uint8_t *pf)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const size_t BB = FIVE ? 176 : 144;
    __m256 acc[4][4];
    UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) acc[a][b] = _mm256_setzero_ps();
    const int64_t nb = n / 256;
    for (int64_t i = 0; i < nb; i++) {
        prefetch_span(pf, (size_t)i * NW * BB, NW * BB);
        UNROLL for (int a = 0; a < NW; a++)
        {
            const uint8_t *blk = w + (size_t)a * ws + (size_t)i * BB;
            const cel__blk_q4_k *bw = (const cel__blk_q4_k *)blk;  /* the header, either type */
            const cel__blk_q5_k *b5 = (const cel__blk_q5_k *)blk;  /* read only when FIVE */
            const uint8_t *qs = FIVE ? b5->qs : bw->qs;
            __m256i mins;
            const uint64_t sc = kq_scales_mins(bw->scales, &mins);
            float d = h2f(&bw->d), dmin = h2f(&bw->dmin);
            __m256i hb = FIVE ? _mm256_loadu_si256((const __m256i *)b5->qh) : _mm256_setzero_si256();
            __m256i isum[4];
            UNROLL for (int b = 0; b < NX; b++) isum[b] = _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if (FIVE) {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
                    hb = _mm256_srli_epi16(hb, 2);
                }
                __m256i slo = _mm256_set1_epi16((short)((sc >> (16 * c)) & 0xFF));
                __m256i shi = _mm256_set1_epi16((short)((sc >> (16 * c + 8)) & 0xFF));
                UNROLL for (int b = 0; b < NX; b++)
                {
                    const int8_t *xq = (const int8_t *)(x + (size_t)b * xs) + i * 256 + 64 * c;
                    __m256i plo = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)xq)), slo);
                    __m256i phi = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(xq + 32))), shi);
                    isum[b] = _mm256_add_epi32(isum[b], _mm256_add_epi32(plo, phi));
                }
            }
            UNROLL for (int b = 0; b < NX; b++)
            {
                const int8_t *xr = (const int8_t *)(x + (size_t)b * xs);
                const float *xd = (const float *)(xr + n);
                const int16_t *bs = (const int16_t *)(xd + nb) + i * 16;
                __m256i ms = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), mins);
                float dx = xd[i];
                acc[a][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[b]), _mm256_set1_ps(d * dx), acc[a][b]);
                acc[a][b] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_set1_ps(dmin * dx), acc[a][b]);
            }
        }
    }
    UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) y[(size_t)b * ys + (size_t)a] =
        hsum8(acc[a][b]);
}
AVX2_INLINE void tile_q4_k(const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws, const uint8_t *x,
                           size_t xs, float *y, size_t ys, const uint8_t *pf)
{
    tile_k45(false, NW, NX, n, w, ws, x, xs, y, ys, pf);
}
AVX2_INLINE void tile_q5_k(const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws, const uint8_t *x,
                           size_t xs, float *y, size_t ys, const uint8_t *pf)
{
    tile_k45(true, NW, NX, n, w, ws, x, xs, y, ys, pf);
}

/* clang's UBSan with -fno-sanitize-recover needs minutes on this function
 * when it checks both signed overflow and pointer overflow; the integers
 * here are small block indices, so the signed-overflow checks are dropped
 * for it alone (pointer and all other checks stay). */
#if defined(__clang__)
#define Q6K_NO_SIO __attribute__((no_sanitize("signed-integer-overflow")))
#else
#define Q6K_NO_SIO
#endif

Q6K_NO_SIO AVX2_INLINE void tile_q6_k(const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws, const uint8_t *x,
                           size_t xs, float *y, size_t ys, const uint8_t *pf)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03);
    __m256 acc[4][4];
    UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) acc[a][b] = _mm256_setzero_ps();
    const int64_t nb = n / 256;
    for (int64_t i = 0; i < nb; i++) {
        prefetch_span(pf, (size_t)i * NW * 210, NW * 210);
        UNROLL for (int a = 0; a < NW; a++)
        {
            const cel__blk_q6_k *bw = (const cel__blk_q6_k *)(w + (size_t)a * ws + (size_t)i * 210);
            __m256i isum[4];
            UNROLL for (int b = 0; b < NX; b++) isum[b] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                __m256i ql0 = _mm256_loadu_si256((const __m256i *)(bw->ql + 64 * h));
                __m256i ql1 = _mm256_loadu_si256((const __m256i *)(bw->ql + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(bw->qh + 32 * h));
                for (int g = 0; g < 4; g++) {
                    __m256i lo = (g & 1) ? ql1 : ql0;
                    lo = (g < 2) ? _mm256_and_si256(lo, m4) : _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4);
                    __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), m3);
                    __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 4));
                    int k = 8 * h + 2 * g;
                    __m256i s = _mm256_set_m128i(_mm_set1_epi16(bw->scales[k + 1]), _mm_set1_epi16(bw->scales[k]));
                    UNROLL for (int b = 0; b < NX; b++)
                    {
                        const int8_t *xq = (const int8_t *)(x + (size_t)b * xs) + i * 256 + 128 * h + 32 * g;
                        __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)xq));
                        isum[b] = _mm256_add_epi32(isum[b], _mm256_madd_epi16(p, s));
                    }
                }
            }
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)bw->scales));
            float d = h2f(&bw->d);
            UNROLL for (int b = 0; b < NX; b++)
            {
                const int8_t *xr = (const int8_t *)(x + (size_t)b * xs);
                const float *xd = (const float *)(xr + n);
                const int16_t *bs = (const int16_t *)(xd + nb) + i * 16;
                /* the values carry +32: subtract 32 * sum_s scale_s * bsum_s */
                __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), sc16);
                __m256i t = _mm256_sub_epi32(isum[b], _mm256_slli_epi32(off, 5));
                acc[a][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_set1_ps(d * xd[i]), acc[a][b]);
            }
        }
    }
    UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) y[(size_t)b * ys + (size_t)a] =
        hsum8(acc[a][b]);
}

/* Float weights: 8 elements per step converted to float in registers; a tail
 * (n % 8) is summed with scalar FMAs after the vector part, per pair. */
#define FLOAT_TILE(NAME, LOADW, TAILW, EB)                                                                          \
    AVX2_INLINE void NAME(const int NW, const int NX, int64_t n, const uint8_t *w, size_t ws, const uint8_t *x,   \
                          size_t xs, float *y, size_t ys, const uint8_t *pf)                                       \
    {                                                                                                              \
        __m256 acc[4][4];                                                                                          \
        float tail[4][4];                                                                                          \
        UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++)                                    \
        {                                                                                                          \
            acc[a][b] = _mm256_setzero_ps();                                                                       \
            tail[a][b] = 0.0f;                                                                                     \
        }                                                                                                          \
        int64_t n8 = n & ~(int64_t)7;                                                                              \
        for (int64_t i = 0; i < n8; i += 8) {                                                                      \
            __m256 wv[4];                                                                                          \
            prefetch_span(pf, (size_t)i * NW * (EB), (size_t)(8 * NW * (EB)));                                     \
            UNROLL for (int a = 0; a < NW; a++) wv[a] = LOADW(w + (size_t)a * ws, i);                              \
            UNROLL for (int b = 0; b < NX; b++)                                                                    \
            {                                                                                                      \
                __m256 xv = _mm256_loadu_ps((const float *)(x + (size_t)b * xs) + i);                              \
                UNROLL for (int a = 0; a < NW; a++) acc[a][b] = _mm256_fmadd_ps(wv[a], xv, acc[a][b]);             \
            }                                                                                                      \
        }                                                                                                          \
        for (int64_t i = n8; i < n; i++)                                                                           \
            UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) tail[a][b] =                  \
                fmaf(TAILW(w + (size_t)a * ws, i), ((const float *)(x + (size_t)b * xs))[i], tail[a][b]);          \
        UNROLL for (int a = 0; a < NW; a++) UNROLL for (int b = 0; b < NX; b++) y[(size_t)b * ys + (size_t)a] =    \
            hsum8(acc[a][b]) + tail[a][b];                                                                         \
    }

AVX2_INLINE __m256 load_f32(const uint8_t *w, int64_t i) { return _mm256_loadu_ps((const float *)w + i); }
AVX2_INLINE __m256 load_f16(const uint8_t *w, int64_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * i)));
}
AVX2_INLINE __m256 load_bf16(const uint8_t *w, int64_t i)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 2 * i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
AVX2_INLINE float tail_f32(const uint8_t *w, int64_t i) { return ((const float *)w)[i]; }
AVX2_INLINE float tail_f16(const uint8_t *w, int64_t i) { return h2f(w + 2 * i); }
AVX2_INLINE float tail_bf16(const uint8_t *w, int64_t i) { return cel_bf16_to_fp32(cel__rd16(w + 2 * i)); }

FLOAT_TILE(tile_f32, load_f32, tail_f32, 4)
FLOAT_TILE(tile_f16, load_f16, tail_f16, 2)
FLOAT_TILE(tile_bf16, load_bf16, tail_bf16, 2)

/* The K-quant dot functions and the float helpers are shared with the
 * AVX-512 table (kern_avx512.c), hence their cel__avx2_ names. The tile
 * driver (shapes, loops, prefetch) is kern_tiles.h's. */
#define TILE_SHAPE(TILE, NW, NX) CEL__TILE_SHAPE(AVX2, TILE, NW, NX)
#define TILE_SHAPES(TILE) CEL__TILE_SHAPES(AVX2, TILE)
#define DOT_FN(LINK, NAME, TILE, NWB) CEL__DOT_FN(AVX2, LINK, NAME, TILE, NWB)

TILE_SHAPE(tile_f32, 2, 4)
TILE_SHAPE(tile_f16, 2, 4)
TILE_SHAPE(tile_bf16, 2, 4)
TILE_SHAPES(tile_q8_0)
TILE_SHAPES(tile_q4_0)
TILE_SHAPES(tile_q5_0)
TILE_SHAPES(tile_q5_1)
TILE_SHAPES(tile_q4_k)
TILE_SHAPES(tile_q5_k)
TILE_SHAPES(tile_q6_k)
TILE_SHAPES(tile_f32)
TILE_SHAPES(tile_f16)
TILE_SHAPES(tile_bf16)

DOT_FN(static, dot_q8_0, tile_q8_0, 1)
DOT_FN(static, dot_q4_0, tile_q4_0, 1)
DOT_FN(static, dot_q5_0, tile_q5_0, 1)
DOT_FN(static, dot_q5_1, tile_q5_1, 1)
DOT_FN(, cel__avx2_dot_q4_k, tile_q4_k, 1)
DOT_FN(, cel__avx2_dot_q5_k, tile_q5_k, 1)
DOT_FN(, cel__avx2_dot_q6_k, tile_q6_k, 1)
DOT_FN(static, dot_f32, tile_f32, 2)
DOT_FN(static, dot_f16, tile_f16, 2)
DOT_FN(static, dot_bf16, tile_bf16, 2)

/* ------------------------------------------------------------- float ops */

/* Scores of 8 keys (transposed block, kt[i * ldk + j]) for query q[d]: four
 * partial sums over i (i mod 4) keep four FMA chains in flight, added in a
 * fixed order. */
AVX2_INLINE __m256 scores8(const float *q, const float *kt, int ldk, int d)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 4 <= d; i += 4) {
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + i), _mm256_loadu_ps(kt + (size_t)i * ldk), a0);
        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + i + 1), _mm256_loadu_ps(kt + (size_t)(i + 1) * ldk), a1);
        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + i + 2), _mm256_loadu_ps(kt + (size_t)(i + 2) * ldk), a2);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + i + 3), _mm256_loadu_ps(kt + (size_t)(i + 3) * ldk), a3);
    }
    for (; i < d; i++) a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + i), _mm256_loadu_ps(kt + (size_t)i * ldk), a0);
    return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
}

AVX2 void cel__avx2_attn_step(const float *q, const float *kt, int ldk, const float *v, int n, int d, float scale,
                              float *m, float *l, float *acc)
{
    float s[256 + 8];
    const __m256 sc = _mm256_set1_ps(scale);
    for (int j = 0; j < n; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(scores8(q, kt + j, ldk, d), sc));
    float mx = *m;
    for (int j = 0; j < n; j++) mx = fmaxf(mx, s[j]);
    for (int j = n; j < n + 8; j++) s[j] = mx; /* the last vector's spare lanes: exp(0), never summed */
    float corr = *m == -INFINITY ? 0.0f : expf(*m - mx);
    __m256 mxv = _mm256_set1_ps(mx);
    for (int j = 0; j < n; j += 8) _mm256_storeu_ps(s + j, exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mxv)));
    float sum = *l * corr;
    for (int j = 0; j < n; j++) sum += s[j];
    int i = 0;
    __m256 cv = _mm256_set1_ps(corr);
    /* 64 outputs at a time: eight independent FMA chains over the keys */
    for (; i + 64 <= d; i += 64) {
        __m256 a[8];
        UNROLL8 for (int c = 0; c < 8; c++) a[c] = _mm256_mul_ps(_mm256_loadu_ps(acc + i + 8 * c), cv);
        for (int j = 0; j < n; j++) {
            __m256 p = _mm256_set1_ps(s[j]);
            const float *vj = v + (size_t)j * d + i;
            UNROLL8 for (int c = 0; c < 8; c++) a[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8 * c), a[c]);
        }
        UNROLL8 for (int c = 0; c < 8; c++) _mm256_storeu_ps(acc + i + 8 * c, a[c]);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 a = _mm256_mul_ps(_mm256_loadu_ps(acc + i), cv);
        for (int j = 0; j < n; j++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), _mm256_loadu_ps(v + (size_t)j * d + i), a);
        _mm256_storeu_ps(acc + i, a);
    }
    for (; i < d; i++) {
        float a = acc[i] * corr;
        for (int j = 0; j < n; j++) a = fmaf(s[j], v[(size_t)j * d + i], a);
        acc[i] = a;
    }
    *m = mx;
    *l = sum;
}

AVX2 void cel__avx2_swiglu(float *out, const float *gate, const float *up, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 r = _mm256_div_ps(_mm256_mul_ps(g, _mm256_loadu_ps(up + i)), _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, r);
    }
    for (; i < n; i++) out[i] = gate[i] * up[i] / (1.0f + expf(-gate[i]));
}

AVX2 void cel__avx2_fp16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = cel_fp16_to_fp32(src[i]);
}

AVX2 void cel__avx2_f32_to_fp16(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = cel_fp32_to_fp16(src[i]);
}

static const cel__kern kern_avx2 = {
    .name = "avx2",
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
    .quant_q8_32 = cel__avx2_quant_q8_32,
    .quant_q8_256 = cel__avx2_quant_q8_256,
    .attn_step = cel__avx2_attn_step,
    .swiglu = cel__avx2_swiglu,
    .fp16_to_f32 = cel__avx2_fp16_to_f32,
    .f32_to_fp16 = cel__avx2_f32_to_fp16,
};

/* AVX2 and FMA through the compiler's run-time check (which also verifies
 * that the OS saves YMM state); F16C straight from CPUID leaf 1 (ECX bit 29),
 * which not every compiler's __builtin_cpu_supports knows. */
static bool cpu_has_avx2(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    return (c & (1u << 29)) != 0;
}

const cel__kern *cel__kern_avx2(void) { return cpu_has_avx2() ? &kern_avx2 : NULL; }

#else /* not x86-64 */

const cel__kern *cel__kern_avx2(void) { return NULL; }

#endif
