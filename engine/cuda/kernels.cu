/*
 * kernels.cu - the CUDA backend's custom kernels and their launchers.
 *
 * Each kernel mirrors one CPU reference op of engine/ops.h and is checked
 * against it by tests/unit/test_cuda_ops.c. They favour plain, obviously
 * correct indexing over cleverness: one block per row for per-row ops, one
 * warp per (token, head) for RoPE, one block per (token, group of q heads
 * sharing a kv head) for attention, one or two weight rows per warp for the
 * small-batch GEMV (which is where the decode step's time goes, so that one
 * is tuned: see cel_k_gemv). The same file compiles for the CPU emulation
 * (CEL_CUDA_EMU, see cu_kernel.h), which is why launches go through
 * CEL_LAUNCH and vector loads have a scalar emulated twin.
 */
#include "cuda_internal.h"

#include "cu_kernel.h"

#define CEL__CU_THREADS 256

/* ------------------------------------------------------------ small helpers */

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the total. Contains __syncthreads: call from all threads. */
static __device__ float cel_d_block_sum(float v)
{
    __shared__ float red[32];
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
    v = cel_d_warp_sum(v);
    if (lane == 0) red[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float t = lane < nw ? red[lane] : 0.0f;
        t = cel_d_warp_sum(t);
        if (lane == 0) red[0] = t;
    }
    __syncthreads();
    return red[0];
}

/* The "last block does the rest" step of a kernel whose blocks each write a
 * share of something and whose final step needs all of it: counts the block
 * in *count once its earlier global stores are visible, and tells whether it
 * is the last of `total` blocks to arrive. The last one resets the counter
 * (zero again for the next launch: CUDA graphs replay it as is) and fences,
 * so it sees the others' stores - read those through L2 (__ldcg). Contains
 * __syncthreads: call from all threads of the block. */
static __device__ bool cel_d_block_arrive_last(int32_t *count, int total)
{
    __shared__ int s_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        s_last = atomicAdd(count, 1) == total - 1;
        if (s_last) *count = 0;
    }
    __syncthreads();
    const bool last = s_last != 0;
    if (last) __threadfence();
    return last;
}

/* An FP16 value stored little-endian at any byte address (quant blocks). */
static __device__ __forceinline__ float cel_d_f16_at(const uint8_t *p)
{
    return cel_d_f16_to_f32((uint16_t)(p[0] | ((unsigned)p[1] << 8)));
}

/* Loads D consecutive FP16 values (aligned to 4 D bytes when D is even). */
template <int D> static __device__ __forceinline__ void cel_d_load_f16(const uint16_t *p, float (&o)[D])
{
#ifndef CEL_CUDA_EMU
    if constexpr (D % 4 == 0) {
        CEL_UNROLL
        for (int c = 0; c < D / 4; c++) {
            uint2 u = reinterpret_cast<const uint2 *>(p)[c];
            o[4 * c + 0] = cel_d_f16_to_f32((uint16_t)(u.x & 0xffffu));
            o[4 * c + 1] = cel_d_f16_to_f32((uint16_t)(u.x >> 16));
            o[4 * c + 2] = cel_d_f16_to_f32((uint16_t)(u.y & 0xffffu));
            o[4 * c + 3] = cel_d_f16_to_f32((uint16_t)(u.y >> 16));
        }
    } else if constexpr (D % 2 == 0) {
        CEL_UNROLL
        for (int c = 0; c < D / 2; c++) {
            uint32_t u = reinterpret_cast<const uint32_t *>(p)[c];
            o[2 * c + 0] = cel_d_f16_to_f32((uint16_t)(u & 0xffffu));
            o[2 * c + 1] = cel_d_f16_to_f32((uint16_t)(u >> 16));
        }
    } else {
        CEL_UNROLL
        for (int d = 0; d < D; d++) o[d] = cel_d_f16_to_f32(p[d]);
    }
#else
    for (int d = 0; d < D; d++) o[d] = cel_d_f16_to_f32(p[d]);
#endif
}

/* Loads 8 consecutive BF16 values (16-byte aligned) as floats. */
static __device__ __forceinline__ void cel_d_load8_bf16(const uint16_t *p, float (&o)[8])
{
#ifndef CEL_CUDA_EMU
    uint4 u = *reinterpret_cast<const uint4 *>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
CEL_UNROLL
    for (int c = 0; c < 4; c++) {
        o[2 * c + 0] = __uint_as_float(w[c] << 16);
        o[2 * c + 1] = __uint_as_float(w[c] & 0xffff0000u);
    }
#else
    for (int d = 0; d < 8; d++) o[d] = cel_d_bf16_to_f32(p[d]);
#endif
}

static unsigned cel__grid_for(int64_t n, int threads)
{
    int64_t g = (n + threads - 1) / threads;
    if (g < 1) g = 1;
    if (g > (1 << 20)) g = 1 << 20; /* grid-stride loops cover the rest */
    return (unsigned)g;
}

/* ------------------------------------------------------------ dequantize */

/* Scale and min of sub-block is (0..7) of a Q4_K / Q5_K super-block: 6-bit
 * values packed in 12 bytes (the first four of each in the low 6 bits of
 * bytes 0-3 / 4-7, the last four split over bytes 8-11 and the top bits). */
static __device__ __forceinline__ void cel_d_kquant_scale(const uint8_t *sc, int is, int &s, int &m)
{
    if (is < 4) {
        s = sc[is] & 63;
        m = sc[is + 4] & 63;
    } else {
        s = (sc[is + 4] & 0xF) | ((sc[is - 4] >> 6) << 4);
        m = (sc[is + 4] >> 4) | ((sc[is] >> 6) << 4);
    }
}

/* Low 4 bits of element j (0..31) of a 32-element block whose 16 nibble
 * bytes start at qs: low nibbles hold elements 0-15, high nibbles 16-31. */
static __device__ __forceinline__ int cel_d_nibble32(const uint8_t *qs, int j)
{
    return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
}

/* Element i of a tensor in ggml layout t (block layouts: Q8_0 = fp16 d + 32
 * int8; Q4_0 = fp16 d + 16 bytes of nibbles, low nibbles first; Q5_0 = fp16
 * d, 4 bytes of high bits (bit j of element j), Q4_0's nibbles; Q5_1 = fp16
 * d, fp16 m, then as Q5_0; Q4_K = fp16 d, fp16 dmin, 12 bytes of 6-bit
 * scales/mins, 128 bytes of nibbles; Q5_K = Q4_K's header, 32 bytes of high
 * bits (bit 2p / 2p+1 of byte l for pair p), 128 bytes of nibbles; Q6_K =
 * 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales, fp16 d). */
static __device__ float cel_d_dequant(const uint8_t *src, int t, int64_t i)
{
    switch (t) {
    case CEL_DTYPE_F32: return reinterpret_cast<const float *>(src)[i];
    case CEL_DTYPE_F16: return cel_d_f16_to_f32(reinterpret_cast<const uint16_t *>(src)[i]);
    case CEL_DTYPE_BF16: return cel_d_bf16_to_f32(reinterpret_cast<const uint16_t *>(src)[i]);
    case CEL_DTYPE_Q8_0: {
        const uint8_t *b = src + (i / 32) * 34;
        return (float)(int8_t)b[2 + i % 32] * cel_d_f16_at(b);
    }
    case CEL_DTYPE_Q4_0: {
        const uint8_t *b = src + (i / 32) * 18;
        return (float)(cel_d_nibble32(b + 2, (int)(i % 32)) - 8) * cel_d_f16_at(b);
    }
    case CEL_DTYPE_Q5_0:
    case CEL_DTYPE_Q5_1: {
        const bool q51 = t == CEL_DTYPE_Q5_1;
        const uint8_t *b = src + (i / 32) * (q51 ? 24 : 22), *qh = b + (q51 ? 4 : 2);
        const int j = (int)(i % 32);
        const uint32_t hb = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
        const int q = cel_d_nibble32(qh + 4, j) | (int)((hb >> j) & 1u) << 4;
        return q51 ? (float)q * cel_d_f16_at(b) + cel_d_f16_at(b + 2) : (float)(q - 16) * cel_d_f16_at(b);
    }
    case CEL_DTYPE_Q4_K:
    case CEL_DTYPE_Q5_K: {
        const bool q5 = t == CEL_DTYPE_Q5_K;
        const uint8_t *b = src + (i / 256) * (q5 ? 176 : 144);
        const uint8_t *qs = b + (q5 ? 48 : 16);
        int j = (int)(i % 256), chunk = j / 64, hi = (j % 64) / 32, l = j % 32;
        int is = 2 * chunk + hi, s, m;
        cel_d_kquant_scale(b + 4, is, s, m);
        int q = qs[chunk * 32 + l];
        q = hi ? q >> 4 : q & 0xF;
        if (q5) q |= ((b[16 + l] >> is) & 1) << 4;
        float d1 = cel_d_f16_at(b) * (float)s, m1 = cel_d_f16_at(b + 2) * (float)m;
        return d1 * (float)q - m1;
    }
    case CEL_DTYPE_Q6_K: {
        const uint8_t *b = src + (i / 256) * 210;
        int j = (int)(i % 256), half = j / 128, r = j % 128, quarter = r / 32, l = r % 32;
        const uint8_t *ql = b + half * 64, *qh = b + 128 + half * 32;
        const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192) + half * 8;
        int is = l / 16, q, s;
        switch (quarter) {
        case 0: q = (ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4); s = sc[is + 0]; break;
        case 1: q = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4); s = sc[is + 2]; break;
        case 2: q = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4); s = sc[is + 4]; break;
        default: q = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4); s = sc[is + 6]; break;
        }
        return cel_d_f16_at(b + 208) * (float)s * (float)(q - 32);
    }
    default: return 0.0f;
    }
}

static __global__ void cel_k_convert(uint16_t *dst_bf16, float *dst_f32, const uint8_t *src, int t, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = cel_d_dequant(src, t, i);
        if (dst_bf16) dst_bf16[i] = cel_d_f32_to_bf16(v);
        else dst_f32[i] = v;
    }
}

extern "C" cudaError_t cel__cuk_convert(cudaStream_t s, uint16_t *dst_bf16, float *dst_f32, const void *src,
                                        cel_dtype t, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    CEL_LAUNCH(cel_k_convert, cel__grid_for(n, CEL__CU_THREADS), CEL__CU_THREADS, 0, s, dst_bf16, dst_f32,
               (const uint8_t *)src, (int)t, n);
    return cudaGetLastError();
}

/* ------------------------------------------------------------ embed, norm */

static __global__ void cel_k_embed(float *x, const uint16_t *emb, const int32_t *tokens, int n_embd)
{
    const int t = blockIdx.x;
    const uint16_t *row = emb + (int64_t)tokens[t] * n_embd;
    for (int e = threadIdx.x; e < n_embd; e += blockDim.x) x[(int64_t)t * n_embd + e] = cel_d_bf16_to_f32(row[e]);
}

extern "C" cudaError_t cel__cuk_embed(cudaStream_t s, float *x, const uint16_t *emb, const int32_t *tokens,
                                      int32_t n_tokens, int32_t n_embd)
{
    if (n_tokens <= 0) return cudaSuccess;
    CEL_LAUNCH(cel_k_embed, n_tokens, CEL__CU_THREADS, 0, s, x, emb, tokens, n_embd);
    return cudaGetLastError();
}

/* 1 / RMS(xr[0..n)) + eps folded in, summed by the block's threads striding
 * by blockDim.x then cel_d_block_sum. The rmsnorm kernel and the GEMV's fused
 * norm both call this with CEL__CU_THREADS threads, so their normalized rows
 * are bit-identical (the fused and unfused decode paths agree exactly).
 * Contains __syncthreads; a caller looping over rows must __syncthreads
 * between calls (cel_d_block_sum's shared slot is reused). */
static __device__ float cel_d_rms_scale(const float *xr, int n, float eps)
{
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = cel_d_block_sum(ss);
    return 1.0f / sqrtf(ss / (float)n + eps);
}

static __global__ void cel_k_rmsnorm(float *out_f32, uint16_t *out_bf16, const float *x, const int32_t *rows,
                                     const float *w, int n, float eps)
{
    const int r = blockIdx.x;
    const float *xr = x + (int64_t)(rows ? rows[r] : r) * n;
    const float scale = cel_d_rms_scale(xr, n, eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i] * scale * w[i];
        if (out_f32) out_f32[(int64_t)r * n + i] = v;
        if (out_bf16) out_bf16[(int64_t)r * n + i] = cel_d_f32_to_bf16(v);
    }
}

extern "C" cudaError_t cel__cuk_rmsnorm(cudaStream_t s, float *out_f32, uint16_t *out_bf16, const float *x,
                                        const int32_t *rows, const float *w, int32_t n_rows, int32_t n, float eps)
{
    if (n_rows <= 0) return cudaSuccess;
    CEL_LAUNCH(cel_k_rmsnorm, n_rows, CEL__CU_THREADS, 0, s, out_f32, out_bf16, x, rows, w, n, eps);
    return cudaGetLastError();
}

/* ------------------------------------------------------ q/k/v post-process */

/* cos and sin of the angle pos * inv_freq, the angle rounded to float as the
 * CPU reference (cel_op_rope) rounds it. The angle is reduced to [-pi, pi] in
 * double (k * 2 pi with k < 2^31 loses nothing that matters at float
 * precision), then the SFU takes sin/cos: accurate to ~4e-7 at any position,
 * and no slow path for large angles (precise sincosf switches to a
 * Payne-Hanek reduction above |x| ~ 1e5). */
static __device__ __forceinline__ void cel_d_rope_cs(int pos, float inv_freq, float *c, float *s)
{
    const float th = (float)pos * inv_freq;
    const double k = rint((double)th * 0.15915494309189533577);
    const float r = (float)((double)th - k * 6.28318530717958647693);
    cel_d_fast_sincos(r, s, c);
}

/* One head-unit u of token row x (q heads, then k heads, then v heads),
 * one warp: bias, q/k RMSNorm, the rotation (FAST_CS: cos/sin from
 * cel_d_rope_cs, v3; else precise cosf/sinf, v2), and for k and v the F16 write
 * into slot `slot` of KV block b. */
template <bool FAST_CS>
static __device__ __forceinline__ void cel_d_qkv_unit(float *x, int u, int lane, int ps, int64_t b, int slot,
                                                      const float *bias, const float *q_norm, const float *k_norm,
                                                      const float *inv_freq, uint16_t *k_cache, uint16_t *v_cache,
                                                      const cel__cu_qkv_params &p)
{
    const int hd = p.head_dim, nq = p.n_head, nkv = p.n_head_kv, half = hd / 2;
    if (bias)
        for (int d = lane; d < hd; d += 32) x[d] += bias[(int64_t)u * hd + d];
    const bool is_q = u < nq, is_k = !is_q && u < nq + nkv;
    if (is_q || is_k) {
        const float *nwt = is_q ? q_norm : k_norm;
        if (nwt) { /* same lanes own the same elements as the bias loop: no sync needed */
            float ss = 0.0f;
            for (int d = lane; d < hd; d += 32) ss += x[d] * x[d];
            ss = cel_d_warp_sum(ss);
            const float sc = 1.0f / sqrtf(ss / (float)hd + p.eps);
            for (int d = lane; d < hd; d += 32) x[d] = x[d] * sc * nwt[d];
        }
        __syncwarp();
        for (int i = lane; i < half; i += 32) {
            const int i0 = p.rope_style == CEL_ROPE_NEOX ? i : 2 * i;
            const int i1 = p.rope_style == CEL_ROPE_NEOX ? i + half : 2 * i + 1;
            float c, sn;
            if (FAST_CS) {
                cel_d_rope_cs(ps, inv_freq[i], &c, &sn);
            } else {
                const float th = (float)ps * inv_freq[i];
                c = cosf(th);
                sn = sinf(th);
            }
            const float a = x[i0], bb = x[i1];
            x[i0] = a * c - bb * sn;
            x[i1] = a * sn + bb * c;
        }
        __syncwarp();
    }
    if (!is_q) {
        const int h = is_k ? u - nq : u - nq - nkv;
        uint16_t *dst = (is_k ? k_cache : v_cache) + ((b * nkv + h) * p.block_size + slot) * (int64_t)hd;
        for (int d = lane; d < hd; d += 32) dst[d] = cel_d_f32_to_f16(x[d]);
    }
}

static __global__ void cel_k_qkv_rope(float *qkv, const float *bias, const float *q_norm, const float *k_norm,
                                      const float *inv_freq, const int32_t *pos, const int32_t *blk, uint16_t *k_cache,
                                      uint16_t *v_cache, cel__cu_qkv_params p)
{
    const int t = blockIdx.x, lane = threadIdx.x % 32, w = threadIdx.x / 32, nw = blockDim.x / 32;
    const int units = p.n_head + 2 * p.n_head_kv;
    float *row = qkv + (int64_t)t * units * p.head_dim;
    const int ps = pos[t], slot = ps % p.block_size;
    const int64_t b = blk[t];
    for (int u = w; u < units; u += nw) {
        cel_d_qkv_unit<false>(row + (int64_t)u * p.head_dim, u, lane, ps, b, slot, bias, q_norm, k_norm, inv_freq,
                              k_cache, v_cache, p);
        __syncwarp();
    }
}

extern "C" cudaError_t cel__cuk_qkv_rope(cudaStream_t s, float *qkv, const float *bias, const float *q_norm,
                                         const float *k_norm, const float *inv_freq, const int32_t *pos,
                                         const int32_t *blk, uint16_t *k_cache, uint16_t *v_cache,
                                         cel__cu_qkv_params p)
{
    if (p.n_tokens <= 0) return cudaSuccess;
    CEL_LAUNCH(cel_k_qkv_rope, p.n_tokens, 128, 0, s, qkv, bias, q_norm, k_norm, inv_freq, pos, blk, k_cache, v_cache,
               p);
    return cudaGetLastError();
}

#define CEL__ROPE_WARPS 4

/* v3 q/k/v post-process: one warp per head-unit (q heads, then k heads, then
 * v heads), CEL__ROPE_WARPS units per block, grid (tokens, unit groups), so
 * a token's units run in parallel rather than 12 after another in one block.
 * Per unit the same steps as cel_k_qkv_rope; the rotation takes its cos/sin
 * from cel_d_rope_cs. */
static __global__ void __launch_bounds__(32 * CEL__ROPE_WARPS)
    cel_k_qkv_rope_v3(float *qkv, const float *bias, const float *q_norm, const float *k_norm, const float *inv_freq,
                      const int32_t *pos, const int32_t *blk, uint16_t *k_cache, uint16_t *v_cache,
                      cel__cu_qkv_params p)
{
    const int t = blockIdx.x, lane = threadIdx.x % 32;
    const int units = p.n_head + 2 * p.n_head_kv;
    const int u = blockIdx.y * (blockDim.x / 32) + threadIdx.x / 32;
    if (u >= units) return; /* the whole warp */
    cel_d_grid_wait(); /* qkv comes from the previous kernel (pdl launch) */
    cel_d_grid_launch_next();
    const int ps = pos[t];
    cel_d_qkv_unit<true>(qkv + ((int64_t)t * units + u) * p.head_dim, u, lane, ps, blk[t], ps % p.block_size, bias,
                         q_norm, k_norm, inv_freq, k_cache, v_cache, p);
}

extern "C" cudaError_t cel__cuk_qkv_rope_v3(cudaStream_t s, float *qkv, const float *bias, const float *q_norm,
                                            const float *k_norm, const float *inv_freq, const int32_t *pos,
                                            const int32_t *blk, uint16_t *k_cache, uint16_t *v_cache,
                                            cel__cu_qkv_params p)
{
    if (p.n_tokens <= 0) return cudaSuccess;
    const int units = p.n_head + 2 * p.n_head_kv;
    const dim3 grid((unsigned)p.n_tokens, (unsigned)((units + CEL__ROPE_WARPS - 1) / CEL__ROPE_WARPS));
    CEL_LAUNCH_PDL(p.pdl, cel_k_qkv_rope_v3, grid, 32 * CEL__ROPE_WARPS, 0, s, qkv, bias, q_norm, k_norm, inv_freq,
                   pos, blk, k_cache, v_cache, p);
    return cudaGetLastError();
}

/* -------------------------------------------------------------- attention */

#define CEL__ATT_WARPS 8

/* One warp's pass over the context positions j_first, j_first + NW, ...
 * below j_end, AU at a time: the K/V rows of AU positions are loaded before
 * any is used, so a warp waits for memory once per AU positions instead of
 * once per position (decode at short context is latency-bound, not
 * bandwidth-bound); the arithmetic, and its order, is that of one position
 * at a time. Folds each position into the warp's online-softmax state (m, l,
 * acc) of its G q heads (lane owns dims [lane D, lane D + D) of the head).
 * Shared by cel_k_attention (the whole context) and cel_k_attention_v3 (one
 * chunk), whose bits must agree. kr / vr are scratch the caller declares
 * after its state (see cel_d_gemv_dot: allocations inlined from here would
 * change the kernels' register numbering and allocation). */
template <int D, int G, int AU>
static __device__ __forceinline__ void cel_d_attn_span(const float (&qr)[G][D], float (&acc)[G][D], float (&m)[G],
                                                       float (&l)[G], float (&kr)[AU][D], float (&vr)[AU][D],
                                                       const uint16_t *k_cache, const uint16_t *v_cache,
                                                       const int32_t *tab, const cel__cu_attn_params &p, int kvh,
                                                       int lane, int j_first, int j_end)
{
    constexpr int NW = CEL__ATT_WARPS, HD = 32 * D;
    for (int j0 = j_first; j0 < j_end; j0 += NW * AU) {
CEL_UNROLL
        for (int u = 0; u < AU; u++) {
            const int j = j0 + u * NW;
            if (j < j_end) { /* j is the same for the whole warp */
                const int64_t b = tab[j / p.block_size];
                const int64_t off = ((b * p.n_head_kv + kvh) * p.block_size + j % p.block_size) * HD + lane * D;
                cel_d_load_f16<D>(k_cache + off, kr[u]);
                cel_d_load_f16<D>(v_cache + off, vr[u]);
            }
        }
CEL_UNROLL
        for (int u = 0; u < AU; u++) {
            if (j0 + u * NW >= j_end) break;
CEL_UNROLL
            for (int g = 0; g < G; g++) {
                float sdot = 0.0f;
CEL_UNROLL
                for (int d = 0; d < D; d++) sdot += qr[g][d] * kr[u][d];
                sdot = cel_d_warp_sum(sdot);
                const float mn = fmaxf(m[g], sdot);
                const float corr = cel_d_fast_exp(m[g] - mn), pr = cel_d_fast_exp(sdot - mn);
                l[g] = l[g] * corr + pr;
CEL_UNROLL
                for (int d = 0; d < D; d++) acc[g][d] = acc[g][d] * corr + pr * vr[u][d];
                m[g] = mn;
            }
        }
    }
}

/* Publishes a warp's state (m, l, acc) of its G q heads into the block's
 * shared s_m / s_l / s_acc at slot w, for the merge across warps. */
template <int D, int G>
static __device__ __forceinline__ void cel_d_attn_publish(float (&s_m)[CEL__ATT_WARPS][G], float (&s_l)[CEL__ATT_WARPS][G],
                                                          float (&s_acc)[CEL__ATT_WARPS][G][32 * D],
                                                          const float (&m)[G], const float (&l)[G],
                                                          const float (&acc)[G][D], int lane, int w)
{
CEL_UNROLL
    for (int g = 0; g < G; g++) {
        if (lane == 0) {
            s_m[w][g] = m[g];
            s_l[w][g] = l[g];
        }
CEL_UNROLL
        for (int d = 0; d < D; d++) s_acc[w][g][lane * D + d] = acc[g][d];
    }
}

/* One block per (token, G q heads sharing one kv head). Lane l of each warp
 * owns dims [l*D, l*D + D) of the head; warp w walks positions w, w+8, ...
 * keeping a running max / sum / weighted V per q head (online softmax), and
 * the warps' partial results are merged through shared memory at the end. */
template <int D, int G>
static __global__ void __launch_bounds__(32 * CEL__ATT_WARPS)
    cel_k_attention(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache, const int32_t *pos,
                    const int32_t *seq, const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p)
{
    constexpr int NW = CEL__ATT_WARPS, HD = 32 * D;
    __shared__ float s_m[NW][G], s_l[NW][G];
    __shared__ float s_acc[NW][G][HD];
    const int t = blockIdx.x, h0 = blockIdx.y * G;
    const int kvh = h0 / (p.n_head / p.n_head_kv);
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    const int n_ctx = pos[t] + 1;
    const int32_t *tab = tables + tab_off[seq[t]];

    float qr[G][D], acc[G][D], m[G], l[G];
    const float *qt = q + (int64_t)t * p.q_stride;
CEL_UNROLL
    for (int g = 0; g < G; g++) {
CEL_UNROLL
        for (int d = 0; d < D; d++) {
            qr[g][d] = qt[(h0 + g) * HD + lane * D + d] * p.scale;
            acc[g][d] = 0.0f;
        }
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    /* warp w visits positions w, w + NW, w + 2 NW, ... in that order */
    constexpr int AU = D <= 4 ? 4 : 2;
    float kr[AU][D], vr[AU][D];
    cel_d_attn_span<D, G, AU>(qr, acc, m, l, kr, vr, k_cache, v_cache, tab, p, kvh, lane, w, n_ctx);
    cel_d_attn_publish<D, G>(s_m, s_l, s_acc, m, l, acc, lane, w);
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * HD; idx += blockDim.x) {
        const int g = idx / HD, d = idx % HD;
        float M = -INFINITY;
        for (int ww = 0; ww < NW; ww++) M = fmaxf(M, s_m[ww][g]);
        float L = 0.0f, O = 0.0f;
        for (int ww = 0; ww < NW; ww++) {
            if (s_m[ww][g] == -INFINITY) continue; /* this warp saw no position */
            const float f = cel_d_fast_exp(s_m[ww][g] - M);
            L += s_l[ww][g] * f;
            O += s_acc[ww][g][d] * f;
        }
        out[(int64_t)t * p.n_head * HD + (int64_t)(h0 + g) * HD + d] = cel_d_f32_to_bf16(O / L);
    }
}

extern "C" int32_t cel__cuk_attn_group(int32_t n_head, int32_t n_head_kv, int32_t head_dim)
{
    if (n_head_kv <= 0 || n_head % n_head_kv != 0) return 0;
    const int32_t group = n_head / n_head_kv;
    for (int32_t g = 8; g > 1; g /= 2)
        if (group % g == 0 && g * head_dim <= 1024) return g;
    return 1;
}

template <int D>
static cudaError_t cel__attn_launch_d(cudaStream_t s, int G, uint16_t *out, const float *q, const uint16_t *k,
                                      const uint16_t *v, const int32_t *pos, const int32_t *seq, const int32_t *tab_off,
                                      const int32_t *tables, cel__cu_attn_params p)
{
    const dim3 grid((unsigned)p.n_tokens, (unsigned)(p.n_head / G));
    const unsigned threads = 32 * CEL__ATT_WARPS;
    void (*kern)(uint16_t *, const float *, const uint16_t *, const uint16_t *, const int32_t *, const int32_t *,
                 const int32_t *, const int32_t *, cel__cu_attn_params) = nullptr;
    /* cel__cuk_attn_group keeps G * head_dim <= 1024 (32 KiB of shared memory) */
    if constexpr (D <= 4) {
        if (G == 8) kern = cel_k_attention<D, 8>;
    }
    if constexpr (D <= 8) {
        if (G == 4) kern = cel_k_attention<D, 4>;
    }
    if (G == 2) kern = cel_k_attention<D, 2>;
    else if (G == 1) kern = cel_k_attention<D, 1>;
    if (G * D > 32 || (G != 1 && G != 2 && G != 4 && G != 8)) return cudaErrorInvalidValue;
    CEL_LAUNCH(kern, grid, threads, 0, s, out, q, k, v, pos, seq, tab_off, tables, p);
    return cudaGetLastError();
}

extern "C" cudaError_t cel__cuk_attention(cudaStream_t s, uint16_t *out, const float *q, const uint16_t *k_cache,
                                          const uint16_t *v_cache, const int32_t *pos, const int32_t *seq,
                                          const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p)
{
    if (p.n_tokens <= 0) return cudaSuccess;
    const int G = cel__cuk_attn_group(p.n_head, p.n_head_kv, p.head_dim);
    if (G <= 0 || p.head_dim % 32 != 0) return cudaErrorInvalidValue;
    switch (p.head_dim / 32) {
    case 1: return cel__attn_launch_d<1>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p);
    case 2: return cel__attn_launch_d<2>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p);
    case 3: return cel__attn_launch_d<3>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p);
    case 4: return cel__attn_launch_d<4>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p);
    case 8: return cel__attn_launch_d<8>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p);
    default: return cudaErrorInvalidValue;
    }
}

/* ------------------------------------------------- split-context attention */

/* v3 attention (flash-decoding). A token's context 0..n_ctx-1 is cut into
 * chunks of cel_d_attn_chunk(n_ctx, chunk) positions - a function of n_ctx
 * and the backend's fixed chunk setting alone, so the partition never
 * depends on the batch or on the split count. For
 * each chunk, a block of CEL__ATT_WARPS warps computes the partial softmax
 * state (max m, sum l, un-normalised weighted V) of its G q heads exactly as
 * cel_k_attention does for a whole context (warp w visits the chunk's
 * positions w, w + 8, ...; the warps merge through shared memory). The chunk
 * states are then folded in chunk order with cel_d_attn_fold.
 *
 * The grid is (tokens, q-head groups, splits): block z handles chunks z,
 * z + splits, ... When only one block has work (splits == 1, or one chunk),
 * it folds each chunk state into registers as it goes. Otherwise each block
 * writes its chunk states to `part`; the last block to finish (an atomic
 * counter per (token, group), which that block resets to 0) folds all of
 * them in chunk order. Both ways run the same float operations on the same
 * values (the fold uses non-contractible multiplies and FMAs), so the result
 * is bit-identical for any splits and any batch. */
#define CEL__ATT3_THREADS (32 * CEL__ATT_WARPS)

/* Chunk length for a context of n_ctx positions: base (the launch's chunk,
 * CEL__CU_ATTN_CHUNK by default), grown in steps of base so a context has at
 * most CEL__CU_ATTN_MAX_CHUNKS. */
static __device__ __host__ __forceinline__ int cel_d_attn_chunk(int n_ctx, int base)
{
    const int span = base * CEL__CU_ATTN_MAX_CHUNKS;
    return base * ((n_ctx + span - 1) / span);
}

/* Folds one chunk's (mc, lc, oc) into the running (M, L, O). From the empty
 * state (-inf, 0, 0) the first fold yields (mc, lc, oc) up to exp(0) == 1. */
static __device__ __forceinline__ void cel_d_attn_fold(float &M, float &L, float &O, float mc, float lc, float oc)
{
    const float mn = fmaxf(M, mc);
    const float a = cel_d_fast_exp(M - mn), b = cel_d_fast_exp(mc - mn);
    L = cel_d_fma(lc, b, cel_d_mul(L, a));
    O = cel_d_fma(oc, b, cel_d_mul(O, a));
    M = mn;
}

template <int D, int G>
static __global__ void __launch_bounds__(CEL__ATT3_THREADS)
    cel_k_attention_v3(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                       const int32_t *pos, const int32_t *seq, const int32_t *tab_off, const int32_t *tables,
                       cel__cu_attn_params p, float *part, int32_t *count, int chunk, cel__cu_qkv_fuse pp)
{
    constexpr int NW = CEL__ATT_WARPS, HD = 32 * D, NT = CEL__ATT3_THREADS;
    constexpr int EPT = (G * HD + NT - 1) / NT; /* output elements per thread */
    constexpr int AU = D <= 4 ? 4 : 2;
    __shared__ float s_m[NW][G], s_l[NW][G];
    __shared__ float s_acc[NW][G][HD];
    const int t = blockIdx.x, h0 = blockIdx.y * G, z = blockIdx.z, S = gridDim.z;
    const int kvh = h0 / (p.n_head / p.n_head_kv);
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    /* The batch metadata (pos, seq, tab_off, tables) is copied to the device
     * before the step's first kernel, which is never launched early, and no
     * kernel writes it: it may be read before the wait. So the chain of
     * metadata loads (seq -> tab_off -> block table entry) runs while the
     * previous kernel finishes (pdl launch), the warp's first table entry
     * is brought into L1, and blocks with no chunk leave at once; after the
     * wait only the q and K/V loads remain. */
    const int n_ctx = pos[t] + 1;
    const int csz = cel_d_attn_chunk(n_ctx, chunk), n_chunks = (n_ctx + csz - 1) / csz;
    if (z >= n_chunks) return; /* the whole block: no chunk for it */
    const int n_work = S < n_chunks ? S : n_chunks;
    const bool direct = n_work == 1;
    const int32_t *tab = tables + tab_off[seq[t]];
    if (z * csz + w < n_ctx) cel_d_prefetch_l1(tab + (z * csz + w) / p.block_size);
    cel_d_grid_wait(); /* q and the new K/V come from the previous kernel (pdl launch) */
    cel_d_grid_launch_next();

    /* The q/k/v post-process here (pp.k_cache set; decode-only batches,
     * CELINE_CUDA_ROPE_IN_ATTN): warps take the block's G q units, then -
     * in the one block per (token, group) that handles the chunk holding
     * the token's own position, the only chunk that reads it - its kv
     * head's k and v units, with cel__cuk_qkv_rope_v3's per-unit step
     * (cel_d_qkv_unit: same bits), writing K/V into the cache. That block
     * then reads them back after the barrier (its own stores, or the same
     * bits from a block of another q-head group sharing the kv head); no
     * other block reads the position. q stays in shared memory. */
    const float *qt = q + (int64_t)t * p.q_stride + (int64_t)h0 * HD;
    __shared__ float s_pp[(G + 2) * HD];
    if (pp.k_cache) {
        const int ps = n_ctx - 1;
        const bool kv_here = z == (n_chunks - 1) % S;
        const float *row = q + (int64_t)t * p.q_stride;
        for (int i = w; i < G + 2; i += NW) {
            if (i >= G && !kv_here) break;
            const int u = i < G ? h0 + i : i == G ? p.n_head + kvh : p.n_head + p.n_head_kv + kvh;
            float *x = s_pp + i * HD;
            for (int d = lane; d < HD; d += 32) x[d] = row[(int64_t)u * HD + d];
            __syncwarp();
            cel_d_qkv_unit<true>(x, u, lane, ps, pp.blk[t], ps % pp.p.block_size, pp.bias, pp.q_norm, pp.k_norm,
                                 pp.inv_freq, pp.k_cache, pp.v_cache, pp.p);
        }
        __syncthreads();
        qt = s_pp;
    }

    float qr[G][D];
CEL_UNROLL
    for (int g = 0; g < G; g++)
CEL_UNROLL
        for (int d = 0; d < D; d++) qr[g][d] = qt[g * HD + lane * D + d] * p.scale;
    float fM[EPT], fL[EPT], fO[EPT];
CEL_UNROLL
    for (int e = 0; e < EPT; e++) {
        fM[e] = -INFINITY;
        fL[e] = 0.0f;
        fO[e] = 0.0f;
    }

    for (int c = z; c < n_chunks; c += S) {
        const int j_end = (c + 1) * csz < n_ctx ? (c + 1) * csz : n_ctx;
        float acc[G][D], m[G], l[G];
CEL_UNROLL
        for (int g = 0; g < G; g++) {
CEL_UNROLL
            for (int d = 0; d < D; d++) acc[g][d] = 0.0f;
            m[g] = -INFINITY;
            l[g] = 0.0f;
        }
        /* as cel_k_attention, over the chunk's positions only */
        float kr[AU][D], vr[AU][D];
        cel_d_attn_span<D, G, AU>(qr, acc, m, l, kr, vr, k_cache, v_cache, tab, p, kvh, lane, c * csz + w, j_end);
        __syncthreads(); /* the previous chunk's merge has read s_* */
        cel_d_attn_publish<D, G>(s_m, s_l, s_acc, m, l, acc, lane, w);
        __syncthreads();
CEL_UNROLL
        for (int e = 0; e < EPT; e++) {
            const int idx = threadIdx.x + e * NT;
            if (idx >= G * HD) break;
            const int g = idx / HD, d = idx % HD;
            float Mc = -INFINITY;
            for (int ww = 0; ww < NW; ww++) Mc = fmaxf(Mc, s_m[ww][g]);
            float Lc = 0.0f, Oc = 0.0f;
            for (int ww = 0; ww < NW; ww++) {
                if (s_m[ww][g] == -INFINITY) continue; /* this warp saw no position of the chunk */
                const float f = cel_d_fast_exp(s_m[ww][g] - Mc);
                Lc = cel_d_fma(s_l[ww][g], f, Lc);
                Oc = cel_d_fma(s_acc[ww][g][d], f, Oc);
            }
            if (direct) {
                cel_d_attn_fold(fM[e], fL[e], fO[e], Mc, Lc, Oc);
            } else {
                float *pp = part + (((int64_t)t * p.n_head + h0 + g) * CEL__CU_ATTN_MAX_CHUNKS + c) * (HD + 2);
                pp[d] = Oc;
                if (d == 0) {
                    pp[HD] = Mc;
                    pp[HD + 1] = Lc;
                }
            }
        }
    }
    if (!direct) { /* the last block of this (token, group) folds the chunk states */
        if (!cel_d_block_arrive_last(count + (int64_t)t * gridDim.y + blockIdx.y, n_work)) return;
CEL_UNROLL
        for (int e = 0; e < EPT; e++) {
            const int idx = threadIdx.x + e * NT;
            if (idx >= G * HD) break;
            const int g = idx / HD, d = idx % HD;
            const float *pp = part + ((int64_t)t * p.n_head + h0 + g) * CEL__CU_ATTN_MAX_CHUNKS * (HD + 2);
            for (int c = 0; c < n_chunks; c++, pp += HD + 2) /* L2 reads (__ldcg): other blocks wrote these */
                cel_d_attn_fold(fM[e], fL[e], fO[e], __ldcg(pp + HD), __ldcg(pp + HD + 1), __ldcg(pp + d));
        }
    }
CEL_UNROLL
    for (int e = 0; e < EPT; e++) {
        const int idx = threadIdx.x + e * NT;
        if (idx >= G * HD) break;
        const int g = idx / HD, d = idx % HD;
        out[(int64_t)t * p.n_head * HD + (int64_t)(h0 + g) * HD + d] = cel_d_f32_to_bf16(fO[e] / fL[e]);
    }
}

extern "C" int32_t cel__cuk_attn_chunk(int32_t n_ctx, int32_t base)
{
    return cel_d_attn_chunk(n_ctx, base > 0 ? base : CEL__CU_ATTN_CHUNK);
}

extern "C" int32_t cel__cuk_attn_splits(int32_t n_tokens, int32_t n_head, int32_t n_head_kv, int32_t head_dim,
                                        int32_t n_sm)
{
    const int32_t G = cel__cuk_attn_group(n_head, n_head_kv, head_dim);
    if (G <= 0 || n_tokens <= 0 || n_tokens > CEL__CU_ATTN_SPLIT_ROWS) return 1;
    const int64_t blocks = (int64_t)n_tokens * (n_head / G), want = 4 * (int64_t)(n_sm > 0 ? n_sm : 1);
    if (blocks >= want / 2) return 1; /* the grid fills the GPU already */
    int64_t s = (want + blocks - 1) / blocks;
    if (s > CEL__CU_ATTN_MAX_CHUNKS) s = CEL__CU_ATTN_MAX_CHUNKS;
    return (int32_t)s;
}

extern "C" size_t cel__cuk_attn_part_floats(int32_t n_head, int32_t head_dim)
{
    return (size_t)CEL__CU_ATTN_SPLIT_ROWS * (size_t)n_head * CEL__CU_ATTN_MAX_CHUNKS * ((size_t)head_dim + 2);
}

template <int D>
static cudaError_t cel__attn_v3_launch_d(cudaStream_t s, int G, uint16_t *out, const float *q, const uint16_t *k,
                                         const uint16_t *v, const int32_t *pos, const int32_t *seq,
                                         const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p,
                                         const cel__cu_attn_split *sp)
{
    void (*kern)(uint16_t *, const float *, const uint16_t *, const uint16_t *, const int32_t *, const int32_t *,
                 const int32_t *, const int32_t *, cel__cu_attn_params, float *, int32_t *, int,
                 cel__cu_qkv_fuse) = nullptr;
    if constexpr (D <= 4) {
        if (G == 8) kern = cel_k_attention_v3<D, 8>;
    }
    if constexpr (D <= 8) {
        if (G == 4) kern = cel_k_attention_v3<D, 4>;
    }
    if (G == 2) kern = cel_k_attention_v3<D, 2>;
    else if (G == 1) kern = cel_k_attention_v3<D, 1>;
    if (!kern || G * D > 32) return cudaErrorInvalidValue;
    const int splits = sp ? sp->splits : 1, chunk = sp && sp->chunk > 0 ? sp->chunk : CEL__CU_ATTN_CHUNK;
    cel__cu_qkv_fuse pp;
    if (sp && sp->pp) pp = *sp->pp;
    else memset(&pp, 0, sizeof pp);
    const dim3 grid((unsigned)p.n_tokens, (unsigned)(p.n_head / G), (unsigned)splits);
    CEL_LAUNCH_PDL(sp ? sp->pdl : 0, kern, grid, CEL__ATT3_THREADS, 0, s, out, q, k, v, pos, seq, tab_off, tables, p,
                   splits > 1 ? sp->part : nullptr, splits > 1 ? sp->count : nullptr, chunk, pp);
    return cudaGetLastError();
}

extern "C" cudaError_t cel__cuk_attention_v3(cudaStream_t s, uint16_t *out, const float *q, const uint16_t *k_cache,
                                             const uint16_t *v_cache, const int32_t *pos, const int32_t *seq,
                                             const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p,
                                             const cel__cu_attn_split *sp)
{
    if (p.n_tokens <= 0) return cudaSuccess;
    const int G = cel__cuk_attn_group(p.n_head, p.n_head_kv, p.head_dim);
    if (G <= 0 || p.head_dim % 32 != 0) return cudaErrorInvalidValue;
    if (sp && (sp->splits < 1 || sp->splits > CEL__CU_ATTN_MAX_CHUNKS || sp->chunk < 0 ||
               sp->chunk % CEL__CU_ATTN_CHUNK_STEP != 0 || sp->chunk > CEL__CU_ATTN_CHUNK_MAX ||
               (sp->pp && (!sp->pp->k_cache || !sp->pp->v_cache || !sp->pp->blk || !sp->pp->inv_freq ||
                           sp->pp->p.head_dim != p.head_dim || sp->pp->p.n_head != p.n_head ||
                           sp->pp->p.n_head_kv != p.n_head_kv || sp->pp->p.block_size <= 0 ||
                           p.q_stride < (p.n_head + 2 * p.n_head_kv) * p.head_dim)) ||
               (sp->splits > 1 && (!sp->part || !sp->count || p.n_tokens > CEL__CU_ATTN_SPLIT_ROWS))))
        return cudaErrorInvalidValue;
    switch (p.head_dim / 32) {
    case 1: return cel__attn_v3_launch_d<1>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, sp);
    case 2: return cel__attn_v3_launch_d<2>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, sp);
    case 3: return cel__attn_v3_launch_d<3>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, sp);
    case 4: return cel__attn_v3_launch_d<4>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, sp);
    case 8: return cel__attn_v3_launch_d<8>(s, G, out, q, k_cache, v_cache, pos, seq, tab_off, tables, p, sp);
    default: return cudaErrorInvalidValue;
    }
}

/* ----------------------------------------------------------------- SwiGLU */

static __global__ void cel_k_swiglu(uint16_t *h, const float *gu, int64_t n, int n_ff)
{
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = idx / n_ff, i = idx % n_ff;
        const float g = gu[t * 2 * n_ff + i], u = gu[t * 2 * n_ff + n_ff + i];
        h[idx] = cel_d_f32_to_bf16(g / (1.0f + expf(-g)) * u);
    }
}

extern "C" cudaError_t cel__cuk_swiglu(cudaStream_t s, uint16_t *h, const float *gu, int32_t n_tokens, int32_t n_ff)
{
    const int64_t n = (int64_t)n_tokens * n_ff;
    if (n <= 0) return cudaSuccess;
    CEL_LAUNCH(cel_k_swiglu, cel__grid_for(n, CEL__CU_THREADS), CEL__CU_THREADS, 0, s, h, gu, n, n_ff);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------- GEMV */

/* 16-byte weight loads each lane keeps in flight (per group of chunks). */
#define CEL__GEMV_LOADS 8

/* 16 bytes at p (16-byte aligned). Weights are streamed once per step, so
 * they are loaded with the evict-first hint (__ldcs) to leave L2 to the
 * activations and the KV cache; activations use plain loads. */
static __device__ __forceinline__ uint4 cel_d_ld16_stream(const uint16_t *p)
{
#ifndef CEL_CUDA_EMU
    return __ldcs(reinterpret_cast<const uint4 *>(p));
#else
    uint4 u;
    memcpy(&u, p, 16);
    return u;
#endif
}
static __device__ __forceinline__ uint4 cel_d_ld16(const uint16_t *p)
{
#ifndef CEL_CUDA_EMU
    return *reinterpret_cast<const uint4 *>(p);
#else
    uint4 u;
    memcpy(&u, p, 16);
    return u;
#endif
}
/* The 8 BF16 values of u (element 0 in the low half of u.x) as floats. */
static __device__ __forceinline__ void cel_d_bf16x8(uint4 u, float (&o)[8])
{
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
CEL_UNROLL
    for (int c = 0; c < 4; c++) {
        o[2 * c + 0] = __uint_as_float(w[c] << 16);
        o[2 * c + 1] = __uint_as_float(w[c] & 0xffff0000u);
    }
}

/* Weight row n of a row task: SWIGLU tasks own gate row `task` and up row
 * n_out + task, plain tasks NR consecutive rows. */
template <int NR, bool SWIGLU>
static __device__ __forceinline__ int cel_d_gemv_row(int task, int n, int n_out)
{
    return SWIGLU ? task + n * n_out : task * NR + n;
}

/* Points wr at task's NR weight rows and loads their first group of chunks
 * (c_first, c_first + 32, ... below c_end) into nxt. Rows past the end read
 * row 0 (valid memory) and store nothing. Shared by cel_k_gemv (the chunk
 * range is the whole row) and cel_k_gemv3 (its warp's slice of the row). */
template <int U, int NR, bool SWIGLU>
static __device__ __forceinline__ void cel_d_gemv_start(const uint16_t *W, int task, int n_tasks, int n_out, int w_rows,
                                                        int n_in, int c_first, int c_end, int (&row)[NR],
                                                        const uint16_t *(&wr)[NR], uint4 (&nxt)[U][NR])
{
CEL_UNROLL
    for (int n = 0; n < NR; n++) {
        row[n] = cel_d_gemv_row<NR, SWIGLU>(task, n, n_out);
        wr[n] = W + (int64_t)(task < n_tasks && row[n] < w_rows ? row[n] : 0) * n_in;
    }
CEL_UNROLL
    for (int u = 0; u < U; u++) {
        const int c = c_first + 32 * u;
        if (c < c_end)
CEL_UNROLL
            for (int n = 0; n < NR; n++) nxt[u][n] = cel_d_ld16_stream(wr[n] + (int64_t)c * 8);
    }
}

/* acc[n][r] = the dot product of weight row wr[n] with input row r of x (R
 * rows of n_in BF16) over the chunks c_first, c_first + 32, ... below c_end,
 * summed over the warp (every lane gets it). nxt holds the first group of
 * loads (cel_d_gemv_start); each group's successor is issued before the group
 * is used (double buffering). The order of the additions - per lane in
 * ascending chunk order, then the xor-butterfly - is the numerics contract
 * of cel_k_gemv and cel_k_gemv3 (and v1's), which is why both call this one
 * loop rather than each keeping a copy. cur, wf and xv are scratch the
 * caller declares after row / wr / nxt: with them declared here instead,
 * inlining moves their allocations ahead of the caller's, nvcc numbers the
 * PTX registers differently and ptxas allocates cel_k_gemv's registers
 * differently (+-3 for some shapes); declared by the caller, the machine
 * code of cel_k_gemv is byte-identical to the hand-inlined loop's. */
template <int U, int NR, int R>
static __device__ __forceinline__ void cel_d_gemv_dot(float (&acc)[NR][R], uint4 (&nxt)[U][NR],
                                                      const uint16_t *(&wr)[NR], const uint16_t *x, int n_in,
                                                      int c_first, int c_end, uint4 (&cur)[U][NR],
                                                      float (&wf)[NR][8], float (&xv)[8])
{
CEL_UNROLL
    for (int n = 0; n < NR; n++)
CEL_UNROLL
        for (int r = 0; r < R; r++) acc[n][r] = 0.0f;
    for (int c0 = c_first; c0 < c_end; c0 += 32 * U) {
CEL_UNROLL
        for (int u = 0; u < U; u++)
CEL_UNROLL
            for (int n = 0; n < NR; n++) cur[u][n] = nxt[u][n];
        if (c0 + 32 * U < c_end) {
CEL_UNROLL
            for (int u = 0; u < U; u++) {
                const int c = c0 + 32 * (U + u);
                if (c < c_end)
CEL_UNROLL
                    for (int n = 0; n < NR; n++) nxt[u][n] = cel_d_ld16_stream(wr[n] + (int64_t)c * 8);
            }
        }
CEL_UNROLL
        for (int u = 0; u < U; u++) {
            const int c = c0 + 32 * u;
            if (c >= c_end) break;
CEL_UNROLL
            for (int n = 0; n < NR; n++) cel_d_bf16x8(cur[u][n], wf[n]);
CEL_UNROLL
            for (int r = 0; r < R; r++) {
                cel_d_bf16x8(cel_d_ld16(x + (int64_t)r * n_in + (int64_t)c * 8), xv);
CEL_UNROLL
                for (int n = 0; n < NR; n++)
CEL_UNROLL
                    for (int k = 0; k < 8; k++) acc[n][r] += wf[n][k] * xv[k];
            }
        }
    }
CEL_UNROLL
    for (int n = 0; n < NR; n++)
CEL_UNROLL
        for (int r = 0; r < R; r++) acc[n][r] = cel_d_warp_sum(acc[n][r]);
}

/* Stores a task's results (called by one lane): SWIGLU: h[r][task] =
 * bf16(silu(gate) * up) with gate acc[0], up acc[NR - 1] (cel_k_swiglu's
 * expression); otherwise y[r][row[n]] = (or +=) acc[n][r] for the rows
 * below n_out. */
template <int R, int NR, bool SWIGLU>
static __device__ __forceinline__ void cel_d_gemv_store(const float (&acc)[NR][R], const int (&row)[NR], int task,
                                                        float *y, uint16_t *h, int n_out, int accumulate)
{
    if constexpr (SWIGLU) {
CEL_UNROLL
        for (int r = 0; r < R; r++) {
            const float g = acc[0][r], u = acc[NR - 1][r];
            h[(int64_t)r * n_out + task] = cel_d_f32_to_bf16(g / (1.0f + expf(-g)) * u);
        }
    } else {
CEL_UNROLL
        for (int n = 0; n < NR; n++) {
            if (row[n] >= n_out) break;
CEL_UNROLL
            for (int r = 0; r < R; r++) {
                float *dst = y + (int64_t)r * n_out + row[n];
                *dst = accumulate ? *dst + acc[n][r] : acc[n][r];
            }
        }
    }
}

/* The decode GEMV (see cel__cuk_gemv_ex). Each warp owns NR weight rows and
 * computes their dot products with all R input rows, so every weight byte is
 * read once per step. Lane l handles 16-byte chunks l, l + 32, l + 64, ...
 * of a row: U = CEL__GEMV_LOADS / NR chunks of each row are loaded as one
 * group, and the next group's loads are issued before the current group's
 * multiply-adds (double buffering), so a lane always has 8 loads in flight.
 *
 * Numerics: for every (weight row, input row) pair, one FP32 accumulator per
 * lane adds w[k] * x[k] chunk by chunk in ascending order, then the warp sums
 * its lanes by xor-butterfly: exactly the order of the v1 kernel, independent
 * of R, NR and the fusions, hence batch-invariant and equal to v1 bit for bit.
 *
 * NORM: x is the RMSNorm of xf (FP32) with weight nw, computed by the block
 * into shared memory (R * n_in BF16) with cel_d_rms_scale, as cel_k_rmsnorm
 * does; the first group of weight loads is issued before it.
 * SWIGLU: warp o owns rows o (gate) and n_out + o (up) and writes
 * h = bf16(silu(gate) * up), the expression of cel_k_swiglu. */
template <int R, int NR, bool NORM, bool SWIGLU>
static __global__ void __launch_bounds__(CEL__CU_THREADS)
    cel_k_gemv(float *y, uint16_t *h, const uint16_t *W, const uint16_t *x, const float *xf, const float *nw, float eps,
               int n_in, int n_out, int accumulate)
{
    constexpr int U = CEL__GEMV_LOADS / NR;
    const int lane = threadIdx.x % 32;
    const int stride = gridDim.x * (CEL__CU_THREADS / 32);
    const int n_tasks = SWIGLU ? n_out : (n_out + NR - 1) / NR;
    const int w_rows = SWIGLU ? 2 * n_out : n_out;
    const int nch = n_in / 8;
    int task = blockIdx.x * (CEL__CU_THREADS / 32) + threadIdx.x / 32;
    int row[NR];
    const uint16_t *wr[NR];
    uint4 nxt[U][NR] = {}, cur[U][NR];
    float wf[NR][8], xv[8];
    cel_d_gemv_start<U, NR, SWIGLU>(W, task, n_tasks, n_out, w_rows, n_in, lane, nch, row, wr, nxt);
    /* ^ before the norm, so the weights are on their way meanwhile */
    const uint16_t *xs = x;
    if constexpr (NORM) {
        CEL_DYN_SMEM(uint16_t, sx);
        for (int r = 0; r < R; r++) {
            const float *xr = xf + (int64_t)r * n_in;
            const float sc = cel_d_rms_scale(xr, n_in, eps);
            for (int i = threadIdx.x; i < n_in; i += blockDim.x)
                sx[(int64_t)r * n_in + i] = cel_d_f32_to_bf16(xr[i] * sc * nw[i]);
            __syncthreads(); /* sx complete; cel_d_block_sum's slot free for the next row */
        }
        xs = sx;
    }
    /* Grid-stride over tasks (the launcher may cap the grid so a block
     * normalizes once and then serves several tasks); no barrier below, so
     * warps leave independently. */
    for (bool first = true; task < n_tasks; task += stride, first = false) {
        if (!first) cel_d_gemv_start<U, NR, SWIGLU>(W, task, n_tasks, n_out, w_rows, n_in, lane, nch, row, wr, nxt);
        float acc[NR][R];
        cel_d_gemv_dot<U, NR, R>(acc, nxt, wr, xs, n_in, lane, nch, cur, wf, xv);
        if (lane != 0) continue;
        cel_d_gemv_store<R, NR, SWIGLU>(acc, row, task, y, h, n_out, accumulate);
    }
}

/* Whether a plain decode GEMV gives each warp two weight rows: that halves
 * the x loads where there are rows enough to keep every SM busy (the output
 * projection); otherwise one, for more warps. v2 and v3 (at one warp per
 * row) choose alike, which is what keeps their bits equal. */
static bool cel__gemv_two_rows(int32_t n_out) { return n_out >= 8192; }

/* Bytes of shared memory the fused norm needs, and whether they fit the
 * 48 KiB a kernel gets without opting in. The 48 KiB hold the kernel's
 * static shared memory too (cel_d_block_sum's 128 bytes of partial sums:
 * ptxas -v), so 1 KiB is kept for it: a launch asking for exactly 48 KiB of
 * dynamic memory fails on the device (E 4096 at 6 rows, E 3072 at 8). */
enum { CEL__CU_STATIC_SMEM_RESERVE = 1024 };
static size_t cel__gemv_norm_smem(int32_t n_rows, int32_t n_in) { return (size_t)n_rows * (size_t)n_in * 2; }
extern "C" int cel__cuk_gemv_norm_fits(int32_t n_rows, int32_t n_in)
{
    return n_rows > 0 && n_in > 0 && cel__gemv_norm_smem(n_rows, n_in) <= 48 * 1024 - CEL__CU_STATIC_SMEM_RESERVE;
}

template <int NR, bool NORM, bool SWIGLU>
static cudaError_t cel__gemv_launch(cudaStream_t s, const cel__cu_gemv_args *a)
{
    void (*kern)(float *, uint16_t *, const uint16_t *, const uint16_t *, const float *, const float *, float, int, int,
                 int);
    switch (a->n_rows) {
    case 1: kern = cel_k_gemv<1, NR, NORM, SWIGLU>; break;
    case 2: kern = cel_k_gemv<2, NR, NORM, SWIGLU>; break;
    case 3: kern = cel_k_gemv<3, NR, NORM, SWIGLU>; break;
    case 4: kern = cel_k_gemv<4, NR, NORM, SWIGLU>; break;
    case 5: kern = cel_k_gemv<5, NR, NORM, SWIGLU>; break;
    case 6: kern = cel_k_gemv<6, NR, NORM, SWIGLU>; break;
    case 7: kern = cel_k_gemv<7, NR, NORM, SWIGLU>; break;
    default: kern = cel_k_gemv<8, NR, NORM, SWIGLU>; break;
    }
    const int64_t tasks = SWIGLU ? a->n_out : ((int64_t)a->n_out + NR - 1) / NR;
    int64_t grid = (tasks + CEL__CU_THREADS / 32 - 1) / (CEL__CU_THREADS / 32);
    if (a->max_blocks > 0 && grid > a->max_blocks) grid = a->max_blocks;
    const size_t smem = NORM ? cel__gemv_norm_smem(a->n_rows, a->n_in) : 0;
    CEL_LAUNCH(kern, (unsigned)grid, CEL__CU_THREADS, smem, s, a->y, a->h, a->W, a->x, a->xf, a->norm_w, a->eps,
               a->n_in, a->n_out, a->accumulate);
    return cudaGetLastError();
}

extern "C" cudaError_t cel__cuk_gemv_ex(cudaStream_t s, const cel__cu_gemv_args *a)
{
    if (a->n_rows <= 0 || a->n_out <= 0) return cudaSuccess;
    if (a->n_rows > CEL__CU_GEMV_MAX_ROWS || a->n_in <= 0 || a->n_in % 8 != 0) return cudaErrorInvalidValue;
    const bool norm = a->x == NULL, swiglu = a->h != NULL;
    if (norm && (!a->xf || !a->norm_w || !cel__cuk_gemv_norm_fits(a->n_rows, a->n_in))) return cudaErrorInvalidValue;
    if (!swiglu && !a->y) return cudaErrorInvalidValue;
    if ((int64_t)a->n_out * (swiglu ? 2 : 1) > INT32_MAX) return cudaErrorInvalidValue;
    const bool two = cel__gemv_two_rows(a->n_out);
    if (swiglu) return norm ? cel__gemv_launch<2, true, true>(s, a) : cel__gemv_launch<2, false, true>(s, a);
    if (norm) return two ? cel__gemv_launch<2, true, false>(s, a) : cel__gemv_launch<1, true, false>(s, a);
    return two ? cel__gemv_launch<2, false, false>(s, a) : cel__gemv_launch<1, false, false>(s, a);
}

extern "C" cudaError_t cel__cuk_gemv(cudaStream_t s, float *y, const uint16_t *W, const uint16_t *x, int32_t n_rows,
                                     int32_t n_in, int32_t n_out, int accumulate)
{
    cel__cu_gemv_args a;
    memset(&a, 0, sizeof a);
    a.y = y;
    a.W = W;
    a.x = x;
    a.n_rows = n_rows;
    a.n_in = n_in;
    a.n_out = n_out;
    a.accumulate = accumulate;
    if (n_rows > 0 && n_out > 0 && !x) return cudaErrorInvalidValue; /* plain form: x is required */
    return cel__cuk_gemv_ex(s, &a);
}

/* ---------------------------------------------------------- GEMV, v3 path */

/* Elements of a row each thread holds in registers while normalizing it;
 * longer rows (n > 256 x this) read the rest from memory in a loop. */
#define CEL__NORM_REGS 16

/* out[i] = bf16(xr[i] * scale * w[i]), scale = 1 / sqrt(mean(xr^2) + eps),
 * for the row xr of n floats: the arithmetic of cel_k_rmsnorm in its order
 * (thread t sums elements t, t + blockDim.x, ... then cel_d_block_sum), so
 * with CEL__CU_THREADS threads the bits are cel__cuk_rmsnorm's. What differs
 * is the memory side: each thread issues its loads of x (then of w) together
 * instead of one L2 round trip per loop iteration, and x is read through L2
 * (__ldcg) because other blocks of the same launch may have written it.
 * Contains __syncthreads: call from all threads, with a __syncthreads
 * between two calls (cel_d_block_sum's slot is reused). */
template <int NREG = CEL__NORM_REGS>
static __device__ void cel_d_norm_row_bf16(uint16_t *out, const float *xr, const float *w, int n, float eps)
{
    const int nt = (int)blockDim.x, tid = (int)threadIdx.x;
    float v[NREG], wv[NREG];
CEL_UNROLL
    for (int k = 0; k < NREG; k++) { /* x and w in one round trip, not w after the sum */
        const int i = tid + k * nt;
        v[k] = i < n ? __ldcg(xr + i) : 0.0f;
        wv[k] = i < n ? w[i] : 0.0f;
    }
    float ss = 0.0f;
CEL_UNROLL
    for (int k = 0; k < NREG; k++)
        if (tid + k * nt < n) ss += v[k] * v[k];
    for (int i = tid + NREG * nt; i < n; i += nt) {
        const float t = __ldcg(xr + i);
        ss += t * t;
    }
    ss = cel_d_block_sum(ss);
    const float sc = 1.0f / sqrtf(ss / (float)n + eps);
CEL_UNROLL
    for (int k = 0; k < NREG; k++) {
        const int i = tid + k * nt;
        if (i < n) out[i] = cel_d_f32_to_bf16(v[k] * sc * wv[k]);
    }
    for (int i = tid + NREG * nt; i < n; i += nt) out[i] = cel_d_f32_to_bf16(__ldcg(xr + i) * sc * w[i]);
}

/* x row r = the BF16 embedding row of tokens[r] (as cel_k_embed writes
 * it), then out row r = its norm: embed and layer 0's norm in one launch.
 * The block's own x stores are visible to its L2 reads after the barrier. */
static __global__ void __launch_bounds__(CEL__CU_THREADS)
    cel_k_embed_norm_v3(uint16_t *out, float *x, const float *w, int n, float eps, const uint16_t *emb,
                        const int32_t *tokens)
{
    const int64_t r = blockIdx.x;
    const uint16_t *row = emb + (int64_t)tokens[r] * n;
    for (int e = threadIdx.x; e < n; e += blockDim.x) x[r * n + e] = cel_d_bf16_to_f32(row[e]);
    __syncthreads();
    cel_d_norm_row_bf16(out + r * n, x + r * n, w, n, eps);
}

extern "C" cudaError_t cel__cuk_embed_norm_v3(cudaStream_t s, float *x, uint16_t *out, const uint16_t *emb,
                                              const int32_t *tokens, const float *w, int32_t n_rows, int32_t n,
                                              float eps)
{
    if (n_rows <= 0) return cudaSuccess;
    if (n <= 0 || !out || !x || !w || !emb || !tokens) return cudaErrorInvalidValue;
    CEL_LAUNCH(cel_k_embed_norm_v3, (unsigned)n_rows, CEL__CU_THREADS, 0, s, out, x, w, n, eps, emb, tokens);
    return cudaGetLastError();
}

/* 16-byte loads per lane and weight row in one group of cel_k_gemv3 (for
 * KS == 1; KS warps share a row, so each takes 1/KS of that - except at
 * KS == 2 and one input row, which keeps the whole group: the down GEMV's
 * long slices need the loads in flight, and 64 registers still hold them). With the next
 * group issued before the current one is used, twice that is in flight -
 * a whole 2048-wide row at KS == 1 - while the registers stay low enough
 * for CEL__GEMV3_MIN_BLOCKS blocks per SM at one input row, 3 up to 4 rows
 * (64 and 80 registers: no spills; v2's kernel, with 8 per group,
 * fits 2: 2112 warps on 132 SMs, fewer than the 3072 rows of a QKV). */
#define CEL__GEMV3_LOADS 4
#define CEL__GEMV3_MIN_BLOCKS 4

/* What cel_k_gemv3 takes (cel__cu_gemv3_args without the launch choices). */
typedef struct cel__gemv3_kp {
    float *y;
    uint16_t *h;
    const uint16_t *W, *x;
    uint16_t *norm_out;
    const float *norm_w;
    int32_t *count;
    float eps;
    int n_in, n_out, accumulate;
    int pf_bytes; /* per warp: L2 prefetch of its slice beyond the first group, before cel_d_grid_wait */
    cel__cu_qkv_fuse qf; /* qf.count != NULL: the q/k/v post-process as epilogue */
    const float *in_x, *in_w; /* in_x != NULL: the input is RMSNorm(in_x) * in_w, computed by each block */
} cel__gemv3_kp;

/* The v3 decode GEMV (see cel__cuk_gemv3). A row task - NR weight rows (one,
 * two for wide plain matrices, or gate + up for SwiGLU) against all R input
 * rows - belongs to KS warps of one block: warp k of the task takes the
 * contiguous chunk slice [k cps, (k + 1) cps) of the row (cps = ceil(chunks
 * / KS), a chunk = 8 BF16 = 16 bytes), lane l of it chunks l, l + 32, ... of
 * the slice in ascending order, U chunks per row loaded as one group and the
 * next group issued before the current one is used (as cel_k_gemv). Each
 * warp sums its lanes by xor-butterfly; the KS warp sums are added in slice
 * order through shared memory. The order depends on n_in and KS only, never
 * on R, so a row's result is the same alone or in a batch; with KS == 1 it
 * is exactly cel_k_gemv's order (same bits as v2 and v1).
 *
 * Norm epilogue (norm_out != NULL, plain form): every block fences its y
 * stores and counts itself in *count; the last block resets the counter and
 * writes norm_out[r] = RMSNorm(y[r]) * norm_w in BF16 for every input row r
 * (cel_d_norm_row_bf16: cel__cuk_rmsnorm's bits), which is the next GEMV's
 * input - the norm runs once per layer instead of once per consuming block. */
template <int R, int NR, int KS, bool SWIGLU>
static __global__ void __launch_bounds__(CEL__CU_THREADS, R == 1 ? CEL__GEMV3_MIN_BLOCKS : R <= 4 ? 3 : 2)
    cel_k_gemv3(cel__gemv3_kp p)
{
    constexpr int NW = CEL__CU_THREADS / 32, TPB = NW / KS;
    constexpr int U = KS == 2 && R == 1                       ? CEL__GEMV3_LOADS / NR
                      : CEL__GEMV3_LOADS / (NR * KS) > 0 ? CEL__GEMV3_LOADS / (NR * KS)
                                                          : 1;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, ks = w % KS;
    const int task = blockIdx.x * TPB + w / KS;
    const int n_tasks = SWIGLU ? p.n_out : (p.n_out + NR - 1) / NR;
    const int w_rows = SWIGLU ? 2 * p.n_out : p.n_out;
    const int nch = p.n_in / 8, cps = (nch + KS - 1) / KS;
    const int c_beg = ks * cps, c_end = c_beg + cps < nch ? c_beg + cps : nch;
    int row[NR];
    const uint16_t *wr[NR];
    uint4 nxt[U][NR] = {}, cur[U][NR];
    float wf[NR][8], xv[8];
    /* Launched early (pdl), the block gets here while the previous kernel
     * still runs: lane n asks L2 for pf_bytes / NR of row n's slice past
     * the first group, and the first group goes into registers, so memory
     * stays busy across the kernel boundary. Only weights are read before
     * the wait. (The prefetch comes first so that its registers are free
     * again before the loads'.) */
    if (p.pf_bytes > 0 && task < n_tasks && lane < NR) {
        const int r = cel_d_gemv_row<NR, SWIGLU>(task, lane, p.n_out);
        const int c0 = c_beg + 32 * U, lim = p.pf_bytes / (16 * NR);
        const int n_ch = c_end - c0 < lim ? c_end - c0 : lim;
        if (r < w_rows && n_ch > 0) cel_d_prefetch_l2(p.W + (int64_t)r * p.n_in + (int64_t)c0 * 8, (uint32_t)n_ch * 16u);
    }
    cel_d_gemv_start<U, NR, SWIGLU>(p.W, task, n_tasks, p.n_out, w_rows, p.n_in, c_beg + lane, c_end, row, wr, nxt);
    cel_d_grid_wait();
    cel_d_grid_launch_next();
    /* The residual a summing GEMV (O, down) adds to, read by the lane that
     * stores it before the dot product rather than after: its L2 round trip
     * overlaps the weight loads instead of adding to the kernel's tail (the
     * H100 profile: the O and down GEMVs at 1.3 TB/s). old + acc is the
     * float add *y + acc, so the bits are the same. Few rows only: it holds
     * NR x R registers through the loop. */
    constexpr bool PRE = !SWIGLU && NR * R <= 2;
    float old[NR][R];
    const bool pre = PRE && p.accumulate && ks == 0 && lane == 0 && task < n_tasks;
    if constexpr (PRE) {
CEL_UNROLL
        for (int n = 0; n < NR; n++)
CEL_UNROLL
            for (int r = 0; r < R; r++) old[n][r] = pre && row[n] < p.n_out ? p.y[(int64_t)r * p.n_out + row[n]] : 0.0f;
    }
    /* Norm in the consumer: the block normalizes the input rows itself, into
     * shared memory, while its first weight groups are in flight; the
     * producer then needs no "last block normalizes" tail (one block running
     * alone at the end of the O and down GEMVs). */
    const uint16_t *x = p.x;
    if (p.in_x) {
        CEL_DYN_SMEM(uint16_t, s_xn);
        for (int r = 0; r < R; r++) {
            if (r > 0) __syncthreads();
            /* 8 values per thread in registers (a 2048-wide row at once), not
             * 16: the weight groups in flight hold registers too */
            cel_d_norm_row_bf16<8>(s_xn + (int64_t)r * p.n_in, p.in_x + (int64_t)r * p.n_in, p.in_w, p.n_in, p.eps);
        }
        __syncthreads();
        x = s_xn;
    }
    float acc[NR][R];
    cel_d_gemv_dot<U, NR, R>(acc, nxt, wr, x, p.n_in, c_beg + lane, c_end, cur, wf, xv);
    if constexpr (KS > 1) { /* the task's first warp adds the slice sums in slice order */
        __shared__ float s_part[NW][NR][R];
        if (lane == 0)
CEL_UNROLL
            for (int n = 0; n < NR; n++)
CEL_UNROLL
                for (int r = 0; r < R; r++) s_part[w][n][r] = acc[n][r];
        __syncthreads();
        if (ks == 0)
CEL_UNROLL
            for (int n = 0; n < NR; n++)
CEL_UNROLL
                for (int r = 0; r < R; r++) {
                    float t = s_part[w][n][r];
CEL_UNROLL
                    for (int k = 1; k < KS; k++) t += s_part[w + k][n][r];
                    acc[n][r] = t;
                }
    }
    if (ks == 0 && lane == 0 && task < n_tasks) {
        if constexpr (PRE) {
            if (pre)
CEL_UNROLL
                for (int n = 0; n < NR; n++)
CEL_UNROLL
                    for (int r = 0; r < R; r++) acc[n][r] = old[n][r] + acc[n][r];
        }
        cel_d_gemv_store<R, NR, SWIGLU>(acc, row, task, p.y, p.h, p.n_out, pre ? 0 : p.accumulate);
    }
    if constexpr (!SWIGLU) {
        if (p.qf.count) { /* q/k/v epilogue: the last block of each head-unit post-processes it */
            constexpr int RPB = TPB * NR; /* weight rows per block; a unit's rows span whole blocks */
            const int hd = p.qf.p.head_dim, u = blockIdx.x * RPB / hd;
            if (!cel_d_block_arrive_last(p.qf.count + u, hd / RPB)) return;
            __shared__ float s_x[NW][CEL__CU_QKV_FUSE_MAX_HD];
            if (w >= R) return; /* warp w: token w */
            float *g = p.y + (int64_t)w * p.n_out + (int64_t)u * hd, *x = s_x[w];
            for (int d = lane; d < hd; d += 32) x[d] = __ldcg(g + d);
            __syncwarp();
            const int ps = p.qf.pos[w];
            cel_d_qkv_unit<true>(x, u, lane, ps, p.qf.blk[w], ps % p.qf.p.block_size, p.qf.bias, p.qf.q_norm,
                                 p.qf.k_norm, p.qf.inv_freq, p.qf.k_cache, p.qf.v_cache, p.qf.p);
            __syncwarp();
            if (u < p.qf.p.n_head) /* attention reads q from here; k and v went to the cache */
                for (int d = lane; d < hd; d += 32) g[d] = x[d];
            return;
        }
        if (p.norm_out) { /* the same for the whole grid: the last block normalizes */
            if (!cel_d_block_arrive_last(p.count, (int)gridDim.x)) return;
            for (int r = 0; r < R; r++) {
                if (r > 0) __syncthreads();
                cel_d_norm_row_bf16(p.norm_out + (int64_t)r * p.n_out, p.y + (int64_t)r * p.n_out, p.norm_w,
                                    p.n_out, p.eps);
            }
        }
    }
}

/* Warps the split aims at: 31 per SM of a 132-SM part, about what
 * CEL__GEMV3_MIN_BLOCKS blocks of 8 warps per SM keep resident in one wave. */
#define CEL__GEMV3_WARPS 4096

extern "C" int32_t cel__cuk_gemv3_split(int32_t n_out, int32_t n_in, int swiglu)
{
    if (swiglu || cel__gemv_two_rows(n_out) || n_out <= 0) return 1;
    int32_t ks = 4;
    while (ks > 1 && ((int64_t)n_out * ks > CEL__GEMV3_WARPS || n_in / 8 < 64 * ks)) ks /= 2;
    return ks;
}

/* Weight rows one block of cel_k_gemv3 covers (plain form). */
static int32_t cel__gemv3_rows_per_block(int32_t n_out, int32_t k_split)
{
    return CEL__CU_THREADS / 32 / k_split * (k_split == 1 && cel__gemv_two_rows(n_out) ? 2 : 1);
}

extern "C" int cel__cuk_gemv3_fuses_qkv(int32_t n_out, int32_t n_in, int32_t head_dim, int32_t k_split)
{
    const int32_t ks = k_split ? k_split : cel__cuk_gemv3_split(n_out, n_in, 0);
    if (ks != 1 && ks != 2 && ks != 4) return 0;
    return head_dim > 0 && head_dim <= CEL__CU_QKV_FUSE_MAX_HD && head_dim % 32 == 0 &&
           head_dim % cel__gemv3_rows_per_block(n_out, ks) == 0;
}

template <int NR, int KS, bool SWIGLU>
static cudaError_t cel__gemv3_launch(cudaStream_t s, const cel__cu_gemv3_args *a)
{
    void (*kern)(cel__gemv3_kp);
    switch (a->n_rows) {
    case 1: kern = cel_k_gemv3<1, NR, KS, SWIGLU>; break;
    case 2: kern = cel_k_gemv3<2, NR, KS, SWIGLU>; break;
    case 3: kern = cel_k_gemv3<3, NR, KS, SWIGLU>; break;
    case 4: kern = cel_k_gemv3<4, NR, KS, SWIGLU>; break;
    case 5: kern = cel_k_gemv3<5, NR, KS, SWIGLU>; break;
    case 6: kern = cel_k_gemv3<6, NR, KS, SWIGLU>; break;
    case 7: kern = cel_k_gemv3<7, NR, KS, SWIGLU>; break;
    default: kern = cel_k_gemv3<8, NR, KS, SWIGLU>; break;
    }
    constexpr int TPB = CEL__CU_THREADS / 32 / KS;
    const int64_t tasks = SWIGLU ? a->n_out : ((int64_t)a->n_out + NR - 1) / NR;
    const int64_t grid = (tasks + TPB - 1) / TPB;
    cel__gemv3_kp kp;
    kp.y = a->y;
    kp.h = a->h;
    kp.W = a->W;
    kp.x = a->x;
    kp.norm_out = a->norm_out;
    kp.norm_w = a->norm_w;
    kp.count = a->count;
    kp.eps = a->eps;
    kp.n_in = a->n_in;
    kp.n_out = a->n_out;
    kp.accumulate = a->accumulate;
    kp.pf_bytes = a->pdl ? a->pf_bytes : 0;
    if (a->qkv) kp.qf = *a->qkv;
    else memset(&kp.qf, 0, sizeof kp.qf);
    kp.in_x = a->in_x;
    kp.in_w = a->in_w;
    const size_t smem = a->in_x ? (size_t)a->n_rows * (size_t)a->n_in * 2 : 0;
    CEL_LAUNCH_PDL(a->pdl, kern, (unsigned)grid, CEL__CU_THREADS, smem, s, kp);
    return cudaGetLastError();
}

extern "C" cudaError_t cel__cuk_gemv3(cudaStream_t s, const cel__cu_gemv3_args *a)
{
    if (a->n_rows <= 0 || a->n_out <= 0) return cudaSuccess;
    if (a->n_rows > CEL__CU_GEMV_MAX_ROWS || a->n_in <= 0 || a->n_in % 8 != 0 || !a->W || (!a->x && !a->in_x))
        return cudaErrorInvalidValue;
    if (a->in_x && (!a->in_w || (int64_t)a->n_rows * a->n_in * 2 > CEL__CU_GEMV3_NORM_IN_SMEM))
        return cudaErrorInvalidValue;
    /* every block reads all of in_x while others store y: they must not overlap */
    if (a->in_x && a->y && (const char *)a->in_x < (const char *)(a->y + (size_t)a->n_rows * a->n_out) &&
        (const char *)a->y < (const char *)(a->in_x + (size_t)a->n_rows * a->n_in))
        return cudaErrorInvalidValue;
    const bool swiglu = a->h != NULL;
    if (swiglu ? (a->y || a->norm_out) : !a->y) return cudaErrorInvalidValue;
    if (a->norm_out && (!a->norm_w || !a->count)) return cudaErrorInvalidValue;
    if ((int64_t)a->n_out * (swiglu ? 2 : 1) > INT32_MAX) return cudaErrorInvalidValue;
    if (a->pf_bytes < 0 || a->pf_bytes % 16 != 0) return cudaErrorInvalidValue;
    const int32_t ks = a->k_split ? a->k_split : cel__cuk_gemv3_split(a->n_out, a->n_in, swiglu);
    if (a->qkv) {
        const cel__cu_qkv_fuse *q = a->qkv;
        if (swiglu || a->norm_out || a->accumulate || !q->count || !q->inv_freq || !q->pos || !q->blk ||
            !q->k_cache || !q->v_cache || q->p.n_tokens != a->n_rows || q->p.block_size <= 0 || q->p.n_head <= 0 ||
            q->p.n_head_kv <= 0 || (int64_t)(q->p.n_head + 2 * q->p.n_head_kv) * q->p.head_dim != a->n_out ||
            !cel__cuk_gemv3_fuses_qkv(a->n_out, a->n_in, q->p.head_dim, ks))
            return cudaErrorInvalidValue;
    }
    if (swiglu) return ks == 1 ? cel__gemv3_launch<2, 1, true>(s, a) : cudaErrorInvalidValue;
    switch (ks) {
    case 1:
        return cel__gemv_two_rows(a->n_out) ? cel__gemv3_launch<2, 1, false>(s, a) : cel__gemv3_launch<1, 1, false>(s, a);
    case 2: return cel__gemv3_launch<1, 2, false>(s, a);
    case 4: return cel__gemv3_launch<1, 4, false>(s, a);
    default: return cudaErrorInvalidValue;
    }
}

/* ------------------------------------------------------------------- GEMV */

/* v1 (kept for A/B timing, CELINE_CUDA_DECODE=v1): one warp per output
 * feature; lanes stride over the input in 8-element (16-byte) chunks. The
 * reduction order of a row does not depend on R. */
template <int R>
static __global__ void __launch_bounds__(CEL__CU_THREADS)
    cel_k_gemv_v1(float *y, const uint16_t *W, const uint16_t *x, int n_in, int n_out, int accumulate)
{
    const int o = blockIdx.x * (CEL__CU_THREADS / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (o >= n_out) return; /* the whole warp leaves together */
    const uint16_t *wr = W + (int64_t)o * n_in;
    float a[R];
CEL_UNROLL
    for (int r = 0; r < R; r++) a[r] = 0.0f;
CEL_UNROLL_4
    for (int i = lane * 8; i < n_in; i += 32 * 8) {
        float wf[8];
        cel_d_load8_bf16(wr + i, wf);
CEL_UNROLL
        for (int r = 0; r < R; r++) {
            float xf[8];
            cel_d_load8_bf16(x + (int64_t)r * n_in + i, xf);
CEL_UNROLL
            for (int k = 0; k < 8; k++) a[r] += wf[k] * xf[k];
        }
    }
CEL_UNROLL
    for (int r = 0; r < R; r++) a[r] = cel_d_warp_sum(a[r]);
    if (lane == 0) {
CEL_UNROLL
        for (int r = 0; r < R; r++) {
            float *dst = y + (int64_t)r * n_out + o;
            *dst = accumulate ? *dst + a[r] : a[r];
        }
    }
}

extern "C" cudaError_t cel__cuk_gemv_v1(cudaStream_t s, float *y, const uint16_t *W, const uint16_t *x, int32_t n_rows,
                                     int32_t n_in, int32_t n_out, int accumulate)
{
    if (n_rows <= 0 || n_out <= 0) return cudaSuccess;
    if (n_rows > CEL__CU_GEMV_MAX_ROWS || n_in % 8 != 0) return cudaErrorInvalidValue;
    const unsigned grid = (unsigned)((n_out + CEL__CU_THREADS / 32 - 1) / (CEL__CU_THREADS / 32));
    void (*kern)(float *, const uint16_t *, const uint16_t *, int, int, int);
    switch (n_rows) {
    case 1: kern = cel_k_gemv_v1<1>; break;
    case 2: kern = cel_k_gemv_v1<2>; break;
    case 3: kern = cel_k_gemv_v1<3>; break;
    case 4: kern = cel_k_gemv_v1<4>; break;
    case 5: kern = cel_k_gemv_v1<5>; break;
    case 6: kern = cel_k_gemv_v1<6>; break;
    case 7: kern = cel_k_gemv_v1<7>; break;
    default: kern = cel_k_gemv_v1<8>; break;
    }
    CEL_LAUNCH(kern, grid, CEL__CU_THREADS, 0, s, y, W, x, n_in, n_out, accumulate);
    return cudaGetLastError();
}

/* ------------------------------------------------------------ KV, argmax */

static __global__ void cel_k_copy_block(uint16_t *k, uint16_t *v, int n_blocks, int n_head_kv, int block_size,
                                        int head_dim, int src, int dst, int n_tokens)
{
    const int bi = blockIdx.x;
    const int layer = bi / (2 * n_head_kv), is_v = (bi / n_head_kv) % 2, h = bi % n_head_kv;
    const int64_t span = (int64_t)block_size * head_dim;
    uint16_t *base = (is_v ? v : k) + (int64_t)layer * n_blocks * n_head_kv * span;
    const uint16_t *from = base + ((int64_t)src * n_head_kv + h) * span;
    uint16_t *to = base + ((int64_t)dst * n_head_kv + h) * span;
    for (int64_t i = threadIdx.x; i < (int64_t)n_tokens * head_dim; i += blockDim.x) to[i] = from[i];
}

extern "C" cudaError_t cel__cuk_copy_block(cudaStream_t s, uint16_t *k, uint16_t *v, int32_t n_layer,
                                           int32_t n_blocks, int32_t n_head_kv, int32_t block_size, int32_t head_dim,
                                           int32_t src, int32_t dst, int32_t n_tokens)
{
    if (n_tokens <= 0 || n_layer <= 0) return cudaSuccess;
    CEL_LAUNCH(cel_k_copy_block, (unsigned)(n_layer * 2 * n_head_kv), CEL__CU_THREADS, 0, s, k, v, n_blocks, n_head_kv,
               block_size, head_dim, src, dst, n_tokens);
    return cudaGetLastError();
}

/* (v, i) is better than (bv, bi) when larger, or equal with a lower index;
 * NaN ranks below every number (and NaNs among themselves by index), so the
 * order is total and the winner does not depend on the visiting order. */
static __device__ __forceinline__ bool cel_d_better(float v, int i, float bv, int bi)
{
    if (i < 0) return false;
    if (bi < 0) return true;
    const bool vn = v != v, bn = bv != bv;
    if (vn || bn) return vn == bn ? i < bi : bn;
    return v > bv || (v == bv && i < bi);
}

#define CEL__ARGMAX_THREADS 1024

/* One block of 1024 threads per row slice (gridDim.y slices per row, see
 * cel__cuk_argmax). Thread t visits the slice's 4-float groups t, t +
 * 1024, ... (16-byte loads, 4 groups loaded before they are compared, so
 * each thread has several loads in flight); a row of 128256 logits is then
 * 32 loads per thread instead of 500 dependent ones. The block reduces the
 * (value, index) pairs with cel_d_better, a total order, which makes the
 * result exact whatever the slicing. */
static __global__ void __launch_bounds__(CEL__ARGMAX_THREADS)
    cel_k_argmax(int32_t *out, const float *logits, int n_vocab, float *part_v, int32_t *part_i, int32_t *count)
{
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    const int r = blockIdx.x, z = blockIdx.y, S = gridDim.y;
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
    const float *row = logits + (int64_t)r * n_vocab;
    /* the slice: whole 4-float groups, [4 g_beg, min(4 g_end, n_vocab)) */
    const int n4c = (n_vocab + 3) / 4;
    const int g_beg = (int)((int64_t)n4c * z / S), g_end = (int)((int64_t)n4c * (z + 1) / S);
    const int i_end = 4 * g_end < n_vocab ? 4 * g_end : n_vocab;
    float bv = -INFINITY;
    int bi = -1;
    int i_from = 4 * g_beg; /* first element left for the scalar loop */
#ifndef CEL_CUDA_EMU
    if (n_vocab % 4 == 0 && (reinterpret_cast<uintptr_t>(row) & 15) == 0) {
        const float4 *r4 = reinterpret_cast<const float4 *>(row);
        constexpr int AU = 4;
        for (int g0 = g_beg + threadIdx.x; g0 < g_end; g0 += AU * CEL__ARGMAX_THREADS) {
            float4 v[AU];
CEL_UNROLL
            for (int u = 0; u < AU; u++) {
                const int g = g0 + u * CEL__ARGMAX_THREADS;
                v[u] = g < g_end ? r4[g] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
CEL_UNROLL
            for (int u = 0; u < AU; u++) {
                const int g = g0 + u * CEL__ARGMAX_THREADS;
                if (g >= g_end) break;
                const float e[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
CEL_UNROLL
                for (int k = 0; k < 4; k++)
                    if (cel_d_better(e[k], 4 * g + k, bv, bi)) {
                        bv = e[k];
                        bi = 4 * g + k;
                    }
            }
        }
        i_from = i_end; /* all visited */
    }
#endif
    for (int i = i_from + threadIdx.x; i < i_end; i += blockDim.x)
        if (cel_d_better(row[i], i, bv, bi)) {
            bv = row[i];
            bi = i;
        }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (cel_d_better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    if (lane == 0) {
        s_v[wid] = bv;
        s_i[wid] = bi;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    for (int w = 1; w < nw; w++)
        if (cel_d_better(s_v[w], s_i[w], bv, bi)) {
            bv = s_v[w];
            bi = s_i[w];
        }
    if (S > 1) { /* one thread per block from here on */
        part_v[(int64_t)r * S + z] = bv;
        part_i[(int64_t)r * S + z] = bi;
        __threadfence(); /* the slice's best is visible before the block is counted */
        if (atomicAdd(count + r, 1) != S - 1) return;
        count[r] = 0; /* every slice has arrived: ready for the next launch */
        __threadfence();
        bv = -INFINITY;
        bi = -1;
        for (int k = 0; k < S; k++) { /* L2 reads (__ldcg): other blocks wrote these */
            const float v = __ldcg(part_v + (int64_t)r * S + k);
            const int i = __ldcg(part_i + (int64_t)r * S + k);
            if (cel_d_better(v, i, bv, bi)) {
                bv = v;
                bi = i;
            }
        }
    }
    out[r] = bi < 0 ? 0 : bi;
}

extern "C" int32_t cel__cuk_argmax_splits(int32_t n_rows, int32_t n_vocab, int32_t n_sm)
{
    if (n_rows <= 0 || n_vocab <= 0) return 1;
    int64_t s = n_vocab / 16384; /* slices of >= 16384 logits: 4 16-byte loads per thread */
    const int64_t fill = ((int64_t)(n_sm > 0 ? n_sm : 1) + n_rows - 1) / n_rows;
    if (s > fill) s = fill;
    if (s > CEL__CU_ARGMAX_MAX_SPLIT) s = CEL__CU_ARGMAX_MAX_SPLIT;
    return s < 1 ? 1 : (int32_t)s;
}

extern "C" cudaError_t cel__cuk_argmax(cudaStream_t s, int32_t *out, const float *logits, int32_t n_rows,
                                          int32_t n_vocab, const cel__cu_argmax_split *sp)
{
    if (n_rows <= 0) return cudaSuccess;
    if (n_vocab <= 0 || !out || !logits) return cudaErrorInvalidValue;
    const int splits = sp ? sp->splits : 1;
    if (splits < 1 || splits > CEL__CU_ARGMAX_MAX_SPLIT || (splits > 1 && (!sp->part_v || !sp->part_i || !sp->count)))
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)n_rows, (unsigned)splits);
    CEL_LAUNCH(cel_k_argmax, grid, CEL__ARGMAX_THREADS, 0, s, out, logits, n_vocab, splits > 1 ? sp->part_v : nullptr,
               splits > 1 ? sp->part_i : nullptr, splits > 1 ? sp->count : nullptr);
    return cudaGetLastError();
}

/* ---------------------------------------------------------------- sampling */

/* Sampling one row per block (engine/sample.h's semantics; backend.h's
 * cel_batch_sample). Every pass walks the row in per-thread contiguous id
 * ranges [t * chunk, (t + 1) * chunk); per-thread double sums are combined
 * by cel_d_block_dsum in an order fixed by the block size alone, so a row's
 * token depends only on its logits and u, never on the batch. */
#define CEL__SAMPLE_THREADS 1024
#define CEL__SAMPLE_CAP 1024 /* = CEL_BACKEND_SAMPLE_MAX_K: candidates a filtered row keeps */

/* An order-preserving map of a float (no NaN) to an unsigned key. */
static __device__ __forceinline__ uint32_t cel_d_fkey(float f)
{
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Sum over the block of v (one per thread) in a fixed order: 32 groups of
 * 32 consecutive threads summed in thread order, then the groups in order.
 * When excl is non-NULL, *excl gets this thread's exclusive prefix (the
 * group's prefix, then the group's threads in order). sd: shared
 * double[blockDim.x]; sw: shared double[33]. Call from all threads. */
static __device__ double cel_d_block_dsum(double v, double *sd, double *sw, double *excl)
{
    const int t = threadIdx.x, ng = blockDim.x / 32;
    sd[t] = v;
    __syncthreads();
    if (t < ng) {
        double a = 0;
        for (int j = 0; j < 32; j++) a += sd[32 * t + j];
        sw[t] = a;
    }
    __syncthreads();
    if (t == 0) {
        double a = 0;
        for (int g = 0; g < ng; g++) {
            const double x = sw[g];
            sw[g] = a;
            a += x;
        }
        sw[32] = a;
    }
    __syncthreads();
    if (excl) {
        if (t < ng) {
            double a = sw[t];
            for (int j = 0; j < 32; j++) {
                const double x = sd[32 * t + j];
                sd[32 * t + j] = a;
                a += x;
            }
        }
        __syncthreads();
        *excl = sd[t];
    }
    const double tot = sw[32];
    __syncthreads(); /* sd / sw may be reused at once */
    return tot;
}

/* Largest v over the block (every thread gets it). si: shared int[32]. */
static __device__ int cel_d_block_imax(int v, int *si)
{
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
    for (int o = 16; o > 0; o >>= 1) {
        const int x = __shfl_xor_sync(0xffffffffu, v, o);
        v = x > v ? x : v;
    }
    if (lane == 0) si[wid] = v;
    __syncthreads();
    int m = si[0];
    for (int w = 1; w < nw; w++) m = si[w] > m ? si[w] : m;
    __syncthreads();
    return m;
}

static __device__ __forceinline__ bool cel_d_cand_before(float la, int ia, float lb, int ib)
{
    return la > lb || (la == lb && ia < ib);
}

static __global__ void __launch_bounds__(CEL__SAMPLE_THREADS)
    cel_k_sample(int32_t *tok_out, float *lp_out, const float *logits, const cel__cu_sample_req *reqs, int n_vocab)
{
    __shared__ float s_bv[32];
    __shared__ int s_bi[32], s_int[32];
    __shared__ double s_d[CEL__SAMPLE_THREADS], s_w[33];
    __shared__ float c_l[CEL__SAMPLE_CAP];
    __shared__ int c_i[CEL__SAMPLE_CAP];
    __shared__ double c_e[CEL__SAMPLE_CAP];
    __shared__ unsigned s_hist[256];
    __shared__ unsigned long long s_prefix;
    __shared__ int s_krem, s_done, s_nsel, s_nan, s_tok;

    const int r = blockIdx.x, t = threadIdx.x, nt = blockDim.x;
    const cel__cu_sample_req q = reqs[r];
    if (!q.on) {
        if (t == 0) tok_out[r] = -1;
        return;
    }
    const float *row = logits + (int64_t)r * n_vocab;
    const int chunk = (n_vocab + nt - 1) / nt;
    const int lo = t * chunk < n_vocab ? t * chunk : n_vocab;
    const int hi = lo + chunk < n_vocab ? lo + chunk : n_vocab;

    /* 1. max (lowest id on ties), and whether the row holds a NaN */
    if (t == 0) s_nan = 0;
    __syncthreads();
    float bv = -INFINITY;
    int bi = -1;
    for (int i = lo; i < hi; i++) {
        const float x = row[i];
        if (x != x) s_nan = 1;
        else if (bi < 0 || x > bv) {
            bv = x;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
        }
    }
    if (t % 32 == 0) {
        s_bv[t / 32] = bv;
        s_bi[t / 32] = bi;
    }
    __syncthreads();
    bv = s_bv[0];
    bi = s_bi[0];
    for (int w = 1; w < nt / 32; w++)
        if (s_bi[w] >= 0 && (bi < 0 || s_bv[w] > bv || (s_bv[w] == bv && s_bi[w] < bi))) {
            bv = s_bv[w];
            bi = s_bi[w];
        }
    const bool bad = s_nan || bi < 0 || !isfinite(bv); /* the CPU reports (or handles) these: give the row back */
    __syncthreads();
    if (bad) {
        if (t == 0) tok_out[r] = -1;
        return;
    }

    /* 2. raw log-sum-exp, for the chosen token's logprob */
    double lse = 0;
    if (q.want_logprob) {
        double a = 0;
        for (int i = lo; i < hi; i++) a += exp((double)(row[i] - bv));
        lse = (double)bv + log(cel_d_block_dsum(a, s_d, s_w, NULL));
    }

    int tok = -1; /* final token (valid in thread 0), -1: give the row back */
    if (q.temperature < CEL_BACKEND_GREEDY_T) {
        tok = bi;
    } else {
        const float top = bv, inv_t = q.inv_t;
        const bool use_k = q.top_k > 0 && q.top_k < n_vocab, use_p = q.top_p < 1.0f, use_min_p = q.min_p > 0.0f;
#define CEL__SCALED(x) cel_d_mul((x) - top, inv_t)
        if (!use_k && !use_p && !use_min_p) {
            /* 3a. no filter: candidates in id order; the thread whose range
             * holds u * total walks it */
            double a = 0;
            for (int i = lo; i < hi; i++) a += exp((double)CEL__SCALED(row[i]));
            double pre = 0;
            const double z = cel_d_block_dsum(a, s_d, s_w, &pre);
            const double thr = q.u * z;
            if (t == 0) s_tok = n_vocab - 1;
            /* the walker: the last thread with mass whose prefix is <= thr */
            const int w = cel_d_block_imax(a > 0 && pre <= thr ? t : -1, s_int);
            if (t == w) {
                double acc = pre;
                int pick = -1, last = lo;
                for (int i = lo; i < hi; i++) {
                    const double e = exp((double)CEL__SCALED(row[i]));
                    if (e > 0) last = i;
                    acc += e;
                    if (acc > thr) {
                        pick = i;
                        break;
                    }
                }
                s_tok = pick >= 0 ? pick : last;
            }
            __syncthreads();
            tok = s_tok;
        } else {
            /* 3b. filters: the K best (scaled logit desc, id asc) by radix
             * select on the 64-bit key (logit key, ~id) */
            const int K = use_k ? q.top_k : (n_vocab < CEL__SAMPLE_CAP ? n_vocab : CEL__SAMPLE_CAP);
            double zfull = 0;
            if (use_p && !use_k) {
                double a = 0;
                for (int i = lo; i < hi; i++) a += exp((double)CEL__SCALED(row[i]));
                zfull = cel_d_block_dsum(a, s_d, s_w, NULL);
            }
            if (t == 0) {
                s_prefix = 0;
                s_krem = K;
                s_done = 0;
                s_nsel = 0;
            }
            int shift = 64;
            for (int d = 0; d < 8; d++) {
                shift = 56 - 8 * d;
                for (int j = t; j < 256; j += nt) s_hist[j] = 0;
                __syncthreads();
                const unsigned long long prefix = s_prefix;
                for (int i = lo; i < hi; i++) {
                    const unsigned long long key =
                        ((unsigned long long)cel_d_fkey(CEL__SCALED(row[i])) << 32) | (0xffffffffu - (uint32_t)i);
                    if (d == 0 || (key >> (shift + 8)) == prefix)
                        atomicAdd(&s_hist[(unsigned)(key >> shift) & 255u], 1u);
                }
                __syncthreads();
                if (t == 0) {
                    unsigned cum = 0;
                    int b = 255;
                    for (; b > 0; b--) {
                        if (cum + s_hist[b] >= (unsigned)s_krem) break;
                        cum += s_hist[b];
                    }
                    s_krem -= (int)cum;
                    s_prefix = (prefix << 8) | (unsigned)b;
                    if (s_hist[b] == (unsigned)s_krem) s_done = 1;
                }
                __syncthreads();
                if (s_done) break;
            }
            /* the selection: keys whose top bits are >= the prefix (exactly K) */
            {
                const unsigned long long prefix = s_prefix;
                for (int i = lo; i < hi; i++) {
                    const float l = CEL__SCALED(row[i]);
                    const unsigned long long key =
                        ((unsigned long long)cel_d_fkey(l) << 32) | (0xffffffffu - (uint32_t)i);
                    if ((key >> shift) >= prefix) {
                        const int at = atomicAdd(&s_nsel, 1);
                        if (at < CEL__SAMPLE_CAP) {
                            c_l[at] = l;
                            c_i[at] = i;
                        }
                    }
                }
            }
            __syncthreads();
            const int nsel = s_nsel < CEL__SAMPLE_CAP ? s_nsel : CEL__SAMPLE_CAP; /* == K */
            int n2 = 32;
            while (n2 < nsel) n2 <<= 1;
            for (int j = nsel + t; j < n2; j += nt) {
                c_l[j] = -INFINITY;
                c_i[j] = 0x7fffffff;
            }
            __syncthreads();
            /* bitonic sort of c[0..n2) by (l desc, id asc) */
            for (int k = 2; k <= n2; k <<= 1)
                for (int j = k >> 1; j > 0; j >>= 1) {
                    for (int i = t; i < n2; i += nt) {
                        const int ixj = i ^ j;
                        if (ixj > i) {
                            const bool first = (i & k) == 0;
                            const float la = c_l[i], lb = c_l[ixj];
                            const int ia = c_i[i], ib = c_i[ixj];
                            if (first ? cel_d_cand_before(lb, ib, la, ia) : cel_d_cand_before(la, ia, lb, ib)) {
                                c_l[i] = lb;
                                c_i[i] = ib;
                                c_l[ixj] = la;
                                c_i[ixj] = ia;
                            }
                        }
                    }
                    __syncthreads();
                }
            for (int i = t; i < nsel; i += nt) c_e[i] = exp((double)c_l[i]);
            __syncthreads();
            if (t == 0) {
                /* min-p keeps a prefix of the sorted list */
                int n_mp = nsel;
                if (use_min_p) {
                    n_mp = 0;
                    while (n_mp < nsel && c_l[n_mp] >= q.lmin) n_mp++;
                }
                /* whether every candidate past the filters is in the list */
                const bool all_in = use_k || nsel == n_vocab || n_mp < nsel;
                int n = n_mp;
                bool ok = true;
                if (use_p) {
                    double zp = zfull;
                    if (use_k) {
                        zp = 0;
                        for (int i = 0; i < nsel; i++) zp += c_e[i];
                    }
                    const double target = (double)q.top_p * zp;
                    double cum = 0;
                    int cut = -1;
                    for (int i = 0; i < n_mp; i++) {
                        cum += c_e[i];
                        if (cum >= target) {
                            cut = i + 1;
                            break;
                        }
                    }
                    if (cut > 0) n = cut;
                    else ok = all_in;
                } else {
                    ok = all_in;
                }
                if (ok) {
                    double z = 0;
                    for (int i = 0; i < n; i++) z += c_e[i];
                    const double thr = q.u * z;
                    double acc = 0;
                    s_tok = c_i[n - 1];
                    for (int i = 0; i < n; i++) {
                        acc += c_e[i];
                        if (acc > thr) {
                            s_tok = c_i[i];
                            break;
                        }
                    }
                } else {
                    s_tok = -1; /* past the candidate cap: the CPU samples it */
                }
            }
            __syncthreads();
            tok = s_tok;
        }
#undef CEL__SCALED
    }
    if (t == 0) {
        tok_out[r] = tok;
        if (q.want_logprob && tok >= 0) lp_out[r] = (float)((double)row[tok] - lse);
    }
}

extern "C" cudaError_t cel__cuk_sample(cudaStream_t s, int32_t *tok, float *lp, const float *logits,
                                       const cel__cu_sample_req *reqs, int32_t n_rows, int32_t n_vocab)
{
    if (n_rows <= 0) return cudaSuccess;
    CEL_LAUNCH(cel_k_sample, n_rows, CEL__SAMPLE_THREADS, 0, s, tok, lp, logits, reqs, n_vocab);
    return cudaGetLastError();
}

/* ---------------------------------------------------------------- profiling */

/* Keeps the SM busy for about `cycles` clock cycles. The profiler queues it
 * first so the host can enqueue a whole step behind it: the step's kernels
 * then run back to back and the events between them time the kernels, not
 * the host's launch rate. A no-op in the emulation. */
static __global__ void cel_k_spin(long long cycles)
{
#ifndef CEL_CUDA_EMU
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
#else
    (void)cycles;
#endif
}

extern "C" cudaError_t cel__cuk_spin(cudaStream_t s, long long cycles)
{
    CEL_LAUNCH(cel_k_spin, 1, 32, 0, s, cycles);
    return cudaGetLastError();
}

/* Whether this file's kernels run on the current device as code built for
 * sm_90 or newer. cel_d_grid_wait compiles to nothing below sm_90, so a
 * build that gives an sm_90 device only compute_80 PTX (JIT-compiled there
 * with __CUDA_ARCH__ 800) has kernels that would not wait: launching them
 * with programmatic dependent launch would race. Every kernel of this file
 * comes from the same fatbinary entry, so one kernel's PTX version answers
 * for all. The emulation runs launches in order: always 1. */
extern "C" int cel__cuk_pdl_compiled(void)
{
#ifndef CEL_CUDA_EMU
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, cel_k_spin) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return fa.ptxVersion >= 90;
#else
    return 1;
#endif
}
