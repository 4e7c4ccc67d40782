/*
 * prefill.cu - tiled (flash-style) causal attention over the paged KV cache
 * for prefill chunks; contract in prefill.h.
 *
 * Design. A block owns NR query rows: a tile of TQ = NR / G consecutive
 * tokens of one sequence times the G q heads of one kv head (row r is token
 * r / G, head r % G). It walks its sequence's context in key tiles of TK
 * positions: the block's threads copy the tile's K and V rows (FP16 in the
 * cache) into shared memory as FP32, once, and every query row of the block
 * then uses them - K/V global traffic is one pass per TQ tokens instead of
 * one per token. Four threads ("sub" 0..3) share a query row; thread sub
 * owns the float4 chunks sub, sub + 4, sub + 8, ... of the head (so the four
 * threads of a row read four consecutive 16-byte words of a K/V row: no bank
 * conflicts, and the eight rows of a warp read the same words: broadcasts).
 * It keeps its q chunks (pre-scaled) and output accumulators in registers.
 *
 * Per key tile: each thread computes its partial q.k for the TK keys, two
 * xor-shuffles add the four partials (every lane of the row gets the same
 * bits: float addition is commutative), then the row's online-softmax state
 * (max m, sum l, accumulators) is updated once for the whole tile: keys past
 * the row's position get probability 0, and a tile that starts past the
 * row's position is skipped by that row. The key tiles are fixed
 * ([k TK, (k + 1) TK)), so a row's arithmetic - and its bits - depends only
 * on its own q, position and K/V: not on which rows share its block, the
 * segmentation, the block width or the batch.
 *
 * Sizes: NR = 64 rows (256 threads) for long segments, NR = 16 (64 threads)
 * when every segment of the launch is short; TK = 32 (16 for head_dim 256):
 * 2 TK head_dim floats of shared memory (32 KiB at head_dim 128).
 */
#include "prefill.h"

#include "cu_kernel.h"

#define CEL__PF_SUB 4 /* threads per query row */

/* The launch's tile map: segment i covers tiles [tile0[i], tile0[i + 1]). */
typedef struct cel__pf_map {
    int32_t n, tq, group;
    int32_t tile0[CEL__CU_PREFILL_MAX_SEGS + 1];
    int32_t row0[CEL__CU_PREFILL_MAX_SEGS];
    int32_t n_rows[CEL__CU_PREFILL_MAX_SEGS];
} cel__pf_map;

/* 4 floats at p (16-byte aligned shared memory). */
static __device__ __forceinline__ void cel_d_pf_ld4(const float *p, float (&o)[4])
{
#ifndef CEL_CUDA_EMU
    const float4 v = *reinterpret_cast<const float4 *>(p);
    o[0] = v.x;
    o[1] = v.y;
    o[2] = v.z;
    o[3] = v.w;
#else
    for (int c = 0; c < 4; c++) o[c] = p[c];
#endif
}

/* 8 FP16 values at p (16-byte aligned global memory) as floats into dst
 * (16-byte aligned shared memory); zeros when p is NULL. */
static __device__ __forceinline__ void cel_d_pf_copy8(float *dst, const uint16_t *p)
{
    float f[8];
    if (p) {
#ifndef CEL_CUDA_EMU
        const uint4 u = *reinterpret_cast<const uint4 *>(p);
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
        CEL_UNROLL
        for (int c = 0; c < 4; c++) {
            f[2 * c] = cel_d_f16_to_f32((uint16_t)(w[c] & 0xffffu));
            f[2 * c + 1] = cel_d_f16_to_f32((uint16_t)(w[c] >> 16));
        }
#else
        for (int c = 0; c < 8; c++) f[c] = cel_d_f16_to_f32(p[c]);
#endif
    } else {
        for (int c = 0; c < 8; c++) f[c] = 0.0f;
    }
#ifndef CEL_CUDA_EMU
    reinterpret_cast<float4 *>(dst)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4 *>(dst)[1] = make_float4(f[4], f[5], f[6], f[7]);
#else
    for (int c = 0; c < 8; c++) dst[c] = f[c];
#endif
}

template <int HD, int NR>
static __global__ void __launch_bounds__(NR * CEL__PF_SUB, HD <= 128 ? 2 : 1)
    cel_k_prefill(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache, const int32_t *pos,
                  const int32_t *seq, const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p,
                  cel__pf_map map)
{
    constexpr int TK = HD >= 256 ? 16 : 32; /* keys per tile */
    constexpr int NC = HD / 16;             /* float4 chunks per thread */
    constexpr int NT = NR * CEL__PF_SUB;
    constexpr int C8 = HD / 8;              /* 8-value copy units per K/V row */
    __align__(16) __shared__ float ks[TK][HD];
    __align__(16) __shared__ float vs[TK][HD];

    /* this block's segment: the last one whose first tile is <= blockIdx.x */
    const int tile = (int)blockIdx.x;
    int lo = 0, hi = map.n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (map.tile0[mid] <= tile) lo = mid;
        else hi = mid - 1;
    }
    const int G = map.group, tq = map.tq;
    const int t_first = map.row0[lo] + (tile - map.tile0[lo]) * tq;
    const int seg_end = map.row0[lo] + map.n_rows[lo];
    const int t_end = t_first + tq < seg_end ? t_first + tq : seg_end;
    const int kvh = (int)blockIdx.y;
    const int r = (int)threadIdx.x / CEL__PF_SUB, sub = (int)threadIdx.x % CEL__PF_SUB;
    const int tok = r / G, g = r % G, t = t_first + tok;
    const bool live = tok < tq && t < t_end;
    const int my_pos = live ? pos[t] : -1; /* -1: an idle row, never updated */
    int maxpos = 0;
    for (int u = t_first; u < t_end; u++) maxpos = pos[u] > maxpos ? pos[u] : maxpos;
    const int32_t *tab = tables + tab_off[seq[t_first]];
    const int h = kvh * G + g;

    float qr[NC][4], acc[NC][4];
    float m = -INFINITY, l = 0.0f;
    const float *qt = q + (int64_t)(live ? t : t_first) * p.q_stride + (int64_t)h * HD;
    CEL_UNROLL
    for (int i = 0; i < NC; i++) {
        CEL_UNROLL
        for (int c = 0; c < 4; c++) {
            qr[i][c] = live ? qt[4 * (sub + CEL__PF_SUB * i) + c] * p.scale : 0.0f;
            acc[i][c] = 0.0f;
        }
    }

    const int n_kt = maxpos / TK + 1;
    for (int kt = 0; kt < n_kt; kt++) {
        const int j0 = kt * TK;
        __syncthreads(); /* every row is done with the previous tile */
        for (int e = (int)threadIdx.x; e < TK * C8; e += NT) {
            const int j = e / C8, c = e % C8, jp = j0 + j;
            const uint16_t *kp = NULL, *vp = NULL;
            if (jp <= maxpos) { /* past maxpos the table may end: zeros */
                const int64_t b = tab[jp / p.block_size];
                const int64_t off = ((b * p.n_head_kv + kvh) * p.block_size + jp % p.block_size) * HD + c * 8;
                kp = k_cache + off;
                vp = v_cache + off;
            }
            cel_d_pf_copy8(&ks[j][c * 8], kp);
            cel_d_pf_copy8(&vs[j][c * 8], vp);
        }
        __syncthreads();

        /* scores of the tile's keys (all rows, idle ones too: the shuffles
         * need every lane) */
        float s[TK];
        CEL_UNROLL
        for (int j = 0; j < TK; j++) {
            float a = 0.0f;
            CEL_UNROLL
            for (int i = 0; i < NC; i++) {
                float kv[4];
                cel_d_pf_ld4(&ks[j][4 * (sub + CEL__PF_SUB * i)], kv);
                CEL_UNROLL
                for (int c = 0; c < 4; c++) a += qr[i][c] * kv[c];
            }
            a += __shfl_xor_sync(0xffffffffu, a, 1);
            a += __shfl_xor_sync(0xffffffffu, a, 2);
            s[j] = a;
        }
        if (j0 > my_pos) continue; /* the whole tile is in this row's future */
        float mt = -INFINITY;
        CEL_UNROLL
        for (int j = 0; j < TK; j++) {
            if (j0 + j > my_pos) s[j] = -INFINITY; /* causal mask */
            mt = fmaxf(mt, s[j]);
        }
        const float mn = fmaxf(m, mt); /* finite: key j0 <= my_pos is unmasked */
        const float corr = cel_d_fast_exp(m - mn); /* 0 on the first tile (m = -inf) */
        float ls = 0.0f;
        CEL_UNROLL
        for (int j = 0; j < TK; j++) {
            s[j] = cel_d_fast_exp(s[j] - mn); /* masked: exp(-inf) = 0 */
            ls += s[j];
        }
        l = l * corr + ls;
        CEL_UNROLL
        for (int i = 0; i < NC; i++) {
            CEL_UNROLL
            for (int c = 0; c < 4; c++) acc[i][c] *= corr;
        }
        CEL_UNROLL
        for (int j = 0; j < TK; j++) {
            CEL_UNROLL
            for (int i = 0; i < NC; i++) {
                float vv[4];
                cel_d_pf_ld4(&vs[j][4 * (sub + CEL__PF_SUB * i)], vv);
                CEL_UNROLL
                for (int c = 0; c < 4; c++) acc[i][c] += s[j] * vv[c];
            }
        }
        m = mn;
    }
    if (!live) return;
    uint16_t *ot = out + (int64_t)t * p.n_head * HD + (int64_t)h * HD;
    const float inv = 1.0f / l;
    CEL_UNROLL
    for (int i = 0; i < NC; i++) {
        CEL_UNROLL
        for (int c = 0; c < 4; c++) ot[4 * (sub + CEL__PF_SUB * i) + c] = cel_d_f32_to_bf16(acc[i][c] * inv);
    }
}

extern "C" int32_t cel__cuk_prefill_tile_tokens(int32_t group, int wide)
{
    const int32_t rows = wide ? 64 : 16;
    if (group < 1 || group > rows) return 0;
    return rows / group;
}

template <int HD>
static cudaError_t cel__pf_launch_d(cudaStream_t s, bool wide, int n_tiles, uint16_t *out, const float *q,
                                    const uint16_t *k, const uint16_t *v, const int32_t *pos, const int32_t *seq,
                                    const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p,
                                    const cel__pf_map &map)
{
    const dim3 grid((unsigned)n_tiles, (unsigned)p.n_head_kv);
    if (wide)
        CEL_LAUNCH((cel_k_prefill<HD, 64>), grid, 64 * CEL__PF_SUB, 0, s, out, q, k, v, pos, seq, tab_off, tables, p,
                   map);
    else
        CEL_LAUNCH((cel_k_prefill<HD, 16>), grid, 16 * CEL__PF_SUB, 0, s, out, q, k, v, pos, seq, tab_off, tables, p,
                   map);
    return cudaGetLastError();
}

extern "C" cudaError_t cel__cuk_prefill_attention(cudaStream_t s, uint16_t *out, const float *q, const uint16_t *k_cache,
                                                  const uint16_t *v_cache, const int32_t *pos, const int32_t *seq,
                                                  const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p,
                                                  const cel__cu_prefill_seg *segs, int32_t n_segs)
{
    if (n_segs < 0 || (n_segs > 0 && !segs) || p.n_tokens < 0 || p.n_head_kv <= 0 || p.n_head <= 0 ||
        p.n_head % p.n_head_kv != 0 || p.block_size <= 0 || p.n_head_kv > 65535)
        return cudaErrorInvalidValue;
    if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 96 && p.head_dim != 128 && p.head_dim != 256)
        return cudaErrorInvalidValue;
    const int32_t group = p.n_head / p.n_head_kv;
    if (group > 64 || p.q_stride < p.n_head * p.head_dim) return cudaErrorInvalidValue;
    int32_t longest = 0;
    for (int32_t i = 0; i < n_segs; i++) {
        if (segs[i].n_rows <= 0 || segs[i].row0 < 0 || segs[i].row0 > p.n_tokens - segs[i].n_rows)
            return cudaErrorInvalidValue;
        if (segs[i].n_rows > longest) longest = segs[i].n_rows;
    }
    if (n_segs == 0) return cudaSuccess;
    /* the narrow block (16 rows) when no segment fills a wide one's rows */
    const bool wide = group > 16 || (int64_t)longest * group >= 64;
    const int32_t tq = cel__cuk_prefill_tile_tokens(group, wide);
    cel__pf_map map;
    memset(&map, 0, sizeof map);
    map.tq = tq;
    map.group = group;
    for (int32_t at = 0; at < n_segs; at += CEL__CU_PREFILL_MAX_SEGS) {
        const int32_t n = n_segs - at < CEL__CU_PREFILL_MAX_SEGS ? n_segs - at : CEL__CU_PREFILL_MAX_SEGS;
        int64_t tiles = 0;
        map.n = n;
        for (int32_t i = 0; i < n; i++) {
            map.tile0[i] = (int32_t)tiles;
            map.row0[i] = segs[at + i].row0;
            map.n_rows[i] = segs[at + i].n_rows;
            tiles += (segs[at + i].n_rows + tq - 1) / tq;
        }
        if (tiles > INT32_MAX) return cudaErrorInvalidValue;
        map.tile0[n] = (int32_t)tiles;
        cudaError_t e;
        switch (p.head_dim) {
        case 32: e = cel__pf_launch_d<32>(s, wide, (int)tiles, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, map); break;
        case 64: e = cel__pf_launch_d<64>(s, wide, (int)tiles, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, map); break;
        case 96: e = cel__pf_launch_d<96>(s, wide, (int)tiles, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, map); break;
        case 128: e = cel__pf_launch_d<128>(s, wide, (int)tiles, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, map); break;
        default: e = cel__pf_launch_d<256>(s, wide, (int)tiles, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, map); break;
        }
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}
