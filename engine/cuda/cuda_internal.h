/*
 * cuda_internal.h - what engine/cuda's files share: the CUDA runtime (or its
 * CPU emulation, emu.h), error-checking macros, and the kernel launchers of
 * kernels.cu. The op-by-op test (tests/unit/test_cuda_ops.c) drives the same
 * launchers against the CPU reference ops (engine/ops.h).
 *
 * Conventions: every pointer named d_* or documented "device" is device
 * memory; weights and GEMM inputs are BF16 stored as uint16_t; the residual
 * stream, GEMM outputs and logits are FP32; the KV cache is FP16. Launchers
 * return the launch's cudaError_t (cudaGetLastError) so callers can wrap them
 * in CEL_CUDA_CHECK.
 */
#ifndef CEL_CUDA_INTERNAL_H
#define CEL_CUDA_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../backend.h" /* relative: engine/sched.h must not shadow <sched.h> */

#ifdef CEL_CUDA_EMU
#include "emu.h"
/* Emulated builds link beside the real backend (and beside nocuda.c): every
 * symbol of engine/cuda gets its own name there. */
#define cel_backend_cuda_create cel__emu_backend_cuda_create
#define cel_backend_cuda_forward_argmax cel__emu_backend_cuda_forward_argmax
#define cel_backend_cuda_info cel__emu_backend_cuda_info
#define cel_backend_cuda_set_graphs cel__emu_backend_cuda_set_graphs
#define cel__cuk_convert cel__emuk_convert
#define cel__cuk_embed cel__emuk_embed
#define cel__cuk_rmsnorm cel__emuk_rmsnorm
#define cel__cuk_qkv_rope cel__emuk_qkv_rope
#define cel__cuk_attention cel__emuk_attention
#define cel__cuk_swiglu cel__emuk_swiglu
#define cel__cuk_gemv cel__emuk_gemv
#define cel__cuk_gemv_ex cel__emuk_gemv_ex
#define cel__cuk_gemv_v1 cel__emuk_gemv_v1
#define cel__cuk_gemv3 cel__emuk_gemv3
#define cel__cuk_gemv3_split cel__emuk_gemv3_split
#define cel__cuk_gemv3_fuses_qkv cel__emuk_gemv3_fuses_qkv
#define cel__cuk_embed_norm_v3 cel__emuk_embed_norm_v3
#define cel__cuk_gemv_norm_fits cel__emuk_gemv_norm_fits
#define cel__cuk_spin cel__emuk_spin
#define cel__cuk_pdl_compiled cel__emuk_pdl_compiled
#define cel_backend_cuda_profile cel__emu_backend_cuda_profile
#define cel__cuk_copy_block cel__emuk_copy_block
#define cel__cuk_argmax cel__emuk_argmax
#define cel__cuk_argmax_splits cel__emuk_argmax_splits
#define cel__cuk_sample cel__emuk_sample
#define cel__cuk_attn_group cel__emuk_attn_group
#define cel__cuk_qkv_rope_v3 cel__emuk_qkv_rope_v3
#define cel__cuk_attention_v3 cel__emuk_attention_v3
#define cel__cuk_attn_splits cel__emuk_attn_splits
#define cel__cuk_attn_chunk cel__emuk_attn_chunk
#define cel__cuk_attn_part_floats cel__emuk_attn_part_floats
#define cel__cu_gemm cel__emu_gemm
#else
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifdef CEL_CUDA_EMU
/* backend.h declared the real name; declare the emulated one */
cel_status cel_backend_cuda_create(const cel_model *m, const cel_backend_params *p, cel_backend **out, cel_error *err);
#endif

/* Checks a CUDA runtime call; on failure sets err to CEL_ERR_DEVICE with the
 * file, line, call and cudaGetErrorString, and returns from the function. */
#define CEL_CUDA_CHECK(err, call)                                                                                 \
    do {                                                                                                          \
        cudaError_t cel__e = (call);                                                                              \
        if (cel__e != cudaSuccess) {                                                                              \
            (void)cudaGetLastError(); /* reported here: not the next launch's error */                           \
            return cel_error_set((err), CEL_ERR_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                \
                                 cudaGetErrorString(cel__e));                                                     \
        }                                                                                                         \
    } while (0)
/* Same, but stores the status in `st` and jumps to `label` (for cleanup). */
#define CEL_CUDA_GOTO(err, st, label, call)                                                                       \
    do {                                                                                                          \
        cudaError_t cel__e = (call);                                                                              \
        if (cel__e != cudaSuccess) {                                                                              \
            (void)cudaGetLastError();                                                                             \
            (st) = cel_error_set((err), CEL_ERR_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                \
                                 cudaGetErrorString(cel__e));                                                     \
            goto label;                                                                                           \
        }                                                                                                         \
    } while (0)
#define CEL_CUBLAS_CHECK(err, call)                                                                               \
    do {                                                                                                          \
        cublasStatus_t cel__b = (call);                                                                           \
        if (cel__b != CUBLAS_STATUS_SUCCESS)                                                                      \
            return cel_error_set((err), CEL_ERR_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                \
                                 cublasGetStatusString(cel__b));                                                  \
    } while (0)

/* ------------------------------------------------------------- launchers */

/* Converts n elements (a multiple of the dtype's block) of src (device, in
 * dtype t's layout: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) into BF16
 * (dst_bf16) or FP32 (dst_f32); exactly one of the two is non-NULL. */
cudaError_t cel__cuk_convert(cudaStream_t s, uint16_t *dst_bf16, float *dst_f32, const void *src, cel_dtype t,
                             int64_t n);

/* x[t][e] = emb[tokens[t]][e] for t < n_tokens (emb BF16 [n_vocab][n_embd]).
 * Token ids must have been checked against n_vocab by the caller. */
cudaError_t cel__cuk_embed(cudaStream_t s, float *x, const uint16_t *emb, const int32_t *tokens, int32_t n_tokens,
                           int32_t n_embd);

/* RMSNorm of n_rows rows of x ([*][n]): row r reads x row (rows ? rows[r] : r)
 * and writes out row r as FP32 (out_f32) and/or BF16 (out_bf16). */
cudaError_t cel__cuk_rmsnorm(cudaStream_t s, float *out_f32, uint16_t *out_bf16, const float *x, const int32_t *rows,
                             const float *w, int32_t n_rows, int32_t n, float eps);

typedef struct cel__cu_qkv_params {
    int32_t n_tokens, n_head, n_head_kv, head_dim;
    int32_t block_size; /* KV block, tokens */
    int32_t rope_style; /* cel_rope_style */
    float eps;          /* q/k norm epsilon */
    int32_t pdl;        /* v3 only: launch early behind the previous kernel (sm_90+, see CEL_LAUNCH_PDL) */
} cel__cu_qkv_params;

/* Per token t of qkv ([n_tokens][(n_head + 2 n_head_kv) head_dim], FP32, in
 * place): adds the bias (when bias != NULL), applies the per-head RMSNorm of
 * q and k (when q_norm/k_norm != NULL), rotates q and k by RoPE at position
 * pos[t] with inv_freq ([head_dim/2]), and writes k and v as FP16 into the
 * layer's cache at block blk[t], slot pos[t] % block_size. Cache layout:
 * [n_blocks][n_head_kv][block_size][head_dim]. */
cudaError_t cel__cuk_qkv_rope(cudaStream_t s, float *qkv, const float *bias, const float *q_norm, const float *k_norm,
                              const float *inv_freq, const int32_t *pos, const int32_t *blk, uint16_t *k_cache,
                              uint16_t *v_cache, cel__cu_qkv_params p);

/* v3 (CELINE_CUDA_DECODE=v3): the same contract, one warp per head-unit over
 * a (tokens, unit groups) grid; cos/sin from a range-reduced angle (SFU), so
 * q and k may differ from cel__cuk_qkv_rope by a few ulps (v is identical). */
cudaError_t cel__cuk_qkv_rope_v3(cudaStream_t s, float *qkv, const float *bias, const float *q_norm,
                                 const float *k_norm, const float *inv_freq, const int32_t *pos, const int32_t *blk,
                                 uint16_t *k_cache, uint16_t *v_cache, cel__cu_qkv_params p);

typedef struct cel__cu_attn_params {
    int32_t n_tokens, n_head, n_head_kv, head_dim, block_size;
    int32_t q_stride; /* floats from one token's q to the next's */
    float scale;      /* softmax scale, 1/sqrt(head_dim) */
} cel__cu_attn_params;

/* Causal attention over the paged cache: token t (position pos[t] of
 * sequence seq[t]) attends to positions 0..pos[t] of its sequence, whose
 * blocks are tables[tab_off[seq[t]] + position / block_size]. q is
 * [n_tokens][q_stride] (heads first), out is BF16 [n_tokens][n_head *
 * head_dim]. head_dim must be a multiple of 32, at most 256. */
cudaError_t cel__cuk_attention(cudaStream_t s, uint16_t *out, const float *q, const uint16_t *k_cache,
                               const uint16_t *v_cache, const int32_t *pos, const int32_t *seq, const int32_t *tab_off,
                               const int32_t *tables, cel__cu_attn_params p);
/* The number of q heads one attention block handles for this shape (a
 * divisor of n_head / n_head_kv); exposed for tests. */
int32_t cel__cuk_attn_group(int32_t n_head, int32_t n_head_kv, int32_t head_dim);

/* Split-context attention (v3, flash-decoding): the contract of
 * cel__cuk_attention, computed over chunks of cel__cuk_attn_chunk(n_ctx)
 * positions (CEL__CU_ATTN_CHUNK up to CEL__CU_ATTN_CHUNK *
 * CEL__CU_ATTN_MAX_CHUNKS positions, longer beyond, so a token has at most
 * CEL__CU_ATTN_MAX_CHUNKS chunks) whose partial softmax states are folded in
 * chunk order. `splits` blocks share each (token, q-head group); splits > 1
 * needs n_tokens <= CEL__CU_ATTN_SPLIT_ROWS and the scratch below (part:
 * cel__cuk_attn_part_floats floats; count: CEL__CU_ATTN_SPLIT_ROWS x n_head
 * int32, zeroed once - the kernel leaves it zero). The result depends on the
 * token's own q, context and K/V only: bit-identical for every splits value
 * and every batch (but not bit-equal to cel__cuk_attention). sp may be NULL
 * (splits 1). */
#define CEL__CU_ATTN_CHUNK 64
#define CEL__CU_ATTN_CHUNK_STEP 8  /* a launch's chunk: a multiple of this (one position per warp) */
#define CEL__CU_ATTN_CHUNK_MAX 256 /* ... up to this */
#define CEL__CU_ATTN_MAX_CHUNKS 64
#define CEL__CU_ATTN_SPLIT_ROWS 16
typedef struct cel__cu_attn_split {
    float *part;    /* device scratch for chunk states */
    int32_t *count; /* device arrival counters, zero between launches */
    int32_t splits; /* blocks per (token, q-head group), 1 .. CEL__CU_ATTN_MAX_CHUNKS */
    int32_t pdl;    /* launch early behind the previous kernel (sm_90+, see CEL_LAUNCH_PDL) */
    /* positions per chunk at contexts up to chunk x CEL__CU_ATTN_MAX_CHUNKS
     * (0: CEL__CU_ATTN_CHUNK; else a multiple of CEL__CU_ATTN_CHUNK_STEP up to
     * CEL__CU_ATTN_CHUNK_MAX). Part of the arithmetic: the same chunk gives
     * the same bits, another chunk other bits. Shorter chunks give a short
     * context more blocks (batch-1 decode is latency-bound) and a block more
     * merges. */
    int32_t chunk;
    /* Non-NULL: q, k, v in `q` are the QKV projection's raw rows (q_stride
     * covers all units), and the kernel post-processes them itself with
     * cel__cuk_qkv_rope_v3's step (bias, q/k norm, rotation; K/V into
     * pp->k_cache / v_cache at pp->blk) - same bits as that kernel before
     * this one. Only for batches where each sequence has one row: a row's
     * K/V would otherwise be read by other rows' blocks of this launch.
     * pp->pos and pp->count are unused (pos is the attention's). */
    const struct cel__cu_qkv_fuse *pp;
} cel__cu_attn_split;
cudaError_t cel__cuk_attention_v3(cudaStream_t s, uint16_t *out, const float *q, const uint16_t *k_cache,
                                  const uint16_t *v_cache, const int32_t *pos, const int32_t *seq,
                                  const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p,
                                  const cel__cu_attn_split *sp);
/* The splits the backend uses for n_tokens rows on n_sm SMs: 1 when the
 * (token, group) grid fills the GPU by itself or n_tokens exceeds
 * CEL__CU_ATTN_SPLIT_ROWS, else enough for ~4 blocks per SM (at most
 * CEL__CU_ATTN_MAX_CHUNKS). Splits only change speed, never bits. */
int32_t cel__cuk_attn_splits(int32_t n_tokens, int32_t n_head, int32_t n_head_kv, int32_t head_dim, int32_t n_sm);
/* Positions per chunk for a context of n_ctx positions at the launch's
 * chunk `base` (0: CEL__CU_ATTN_CHUNK); exposed for tests. */
int32_t cel__cuk_attn_chunk(int32_t n_ctx, int32_t base);
/* Floats of chunk-state scratch cel__cuk_attention_v3 needs for splits > 1. */
size_t cel__cuk_attn_part_floats(int32_t n_head, int32_t head_dim);

/* h[t][i] = bf16(silu(gu[t][i]) * gu[t][n_ff + i]); gu is [n_tokens][2 n_ff]. */
cudaError_t cel__cuk_swiglu(cudaStream_t s, uint16_t *h, const float *gu, int32_t n_tokens, int32_t n_ff);

/* Small-batch GEMM for decode: y[t][o] (+)= sum_i W[o][i] x[t][i] for
 * t < n_rows <= CEL__CU_GEMV_MAX_ROWS; W BF16 [n_out][n_in], x BF16
 * [n_rows][n_in], y FP32 [n_rows][n_out]; accumulate adds to y (residual).
 * n_in must be a multiple of 8 and W, x 16-byte aligned. */
#define CEL__CU_GEMV_MAX_ROWS 8
cudaError_t cel__cuk_gemv(cudaStream_t s, float *y, const uint16_t *W, const uint16_t *x, int32_t n_rows, int32_t n_in,
                          int32_t n_out, int accumulate);

/* The decode GEMV family, for n_rows <= CEL__CU_GEMV_MAX_ROWS:
 *   plain  (h == NULL): y[t][o] (+)= W[o] . xin[t] for o < n_out
 *   SwiGLU (h != NULL): h[t][o] = bf16(silu(W[o] . xin[t]) * (W[n_out + o] . xin[t]))
 *                       for o < n_out; W has 2 n_out rows (gate, then up) and y
 *                       is not used: the gate/up GEMV and cel__cuk_swiglu in one.
 * xin is x (BF16 [n_rows][n_in]) or, when x is NULL, the RMSNorm of xf (FP32
 * [n_rows][n_in]) with weight norm_w and epsilon eps, rounded to BF16 exactly
 * as cel__cuk_rmsnorm rounds it (needs cel__cuk_gemv_norm_fits). Results are
 * bit-identical to cel__cuk_rmsnorm + cel__cuk_gemv_v1 + cel__cuk_swiglu, and
 * a row's result does not depend on the other rows (batch invariance).
 * n_in must be a multiple of 8 and W, x 16-byte aligned. */
typedef struct cel__cu_gemv_args {
    float *y;                 /* FP32 [n_rows][n_out] (plain form) */
    uint16_t *h;              /* BF16 [n_rows][n_out] (SwiGLU form), else NULL */
    const uint16_t *W;        /* BF16 weights */
    const uint16_t *x;        /* BF16 input, or NULL to normalize xf */
    const float *xf, *norm_w; /* FP32 input rows and RMSNorm weight (x == NULL) */
    float eps;
    int32_t n_rows, n_in, n_out;
    int accumulate;           /* plain form: add to y (residual) */
    int32_t max_blocks;       /* grid cap (0: none); blocks then loop over several row tasks, and a
                               * fused norm is computed once per block rather than once per 8 tasks */
} cel__cu_gemv_args;
cudaError_t cel__cuk_gemv_ex(cudaStream_t s, const cel__cu_gemv_args *a);
/* Whether the fused RMSNorm's n_rows x n_in BF16 rows fit the kernel's
 * shared memory (48 KiB); when not, normalize with cel__cuk_rmsnorm first. */
int cel__cuk_gemv_norm_fits(int32_t n_rows, int32_t n_in);
/* The v3 decode GEMV (CELINE_CUDA_DECODE=v3), for n_rows <= CEL__CU_GEMV_MAX_ROWS:
 *   plain  (h == NULL): y[t][o] (+)= W[o] . x[t] for o < n_out
 *   SwiGLU (h != NULL): h[t][o] = bf16(silu(W[o] . x[t]) * (W[n_out + o] . x[t])),
 *                       W has 2 n_out rows (gate, then up); y must be NULL
 * x is BF16 [n_rows][n_in] (the producer of x normalized it, see norm_out),
 * or NULL with in_x / in_w below: the kernel normalizes the rows itself. Each row is reduced by k_split warps of one block, each over a
 * fixed contiguous slice of the row, their sums added in slice order; the
 * order depends on (n_in, k_split) only, so a row's result does not depend
 * on the other rows (batch invariance), and with k_split 1 the bits are
 * cel__cuk_gemv's. k_split: 1, 2 or 4 (plain form; SwiGLU takes 1 only), 0
 * for cel__cuk_gemv3_split's choice.
 * Norm epilogue (plain form, norm_out != NULL): once all of y is written,
 * norm_out[t] = bf16(RMSNorm(y[t]) * norm_w) with epsilon eps, n_out wide,
 * the bits of cel__cuk_rmsnorm; count is a device int32 that is zero before
 * the launch and zero again after it (one per stream: launches using the
 * same counter must not overlap).
 * n_in must be a multiple of 8 and W, x 16-byte aligned. */
typedef struct cel__cu_gemv3_args {
    float *y;          /* FP32 [n_rows][n_out] (plain form) */
    uint16_t *h;       /* BF16 [n_rows][n_out] (SwiGLU form), else NULL */
    const uint16_t *W; /* BF16 weights */
    const uint16_t *x; /* BF16 input [n_rows][n_in] */
    int32_t n_rows, n_in, n_out;
    int accumulate;    /* plain form: add to y (residual) */
    int32_t k_split;   /* warps per row: 1, 2, 4; 0: cel__cuk_gemv3_split */
    uint16_t *norm_out;    /* BF16 [n_rows][n_out], or NULL: no norm epilogue */
    const float *norm_w;   /* FP32 [n_out] */
    float eps;
    int32_t *count;        /* device arrival counter for the epilogue */
    int32_t pdl;           /* launch early behind the previous kernel (sm_90+, see CEL_LAUNCH_PDL) ... */
    int32_t pf_bytes;      /* ... and meanwhile prefetch this many bytes per warp into L2 (multiple of 16) */
    const struct cel__cu_qkv_fuse *qkv; /* the QKV projection with its post-process fused, or NULL */
    /* Norm in the consumer: with in_x set, every block computes RMSNorm(in_x
     * row) * in_w (eps above; cel__cuk_rmsnorm's bits) for the n_rows FP32
     * rows in_x [n_rows][n_in] into shared memory and reads its input there
     * (x is unused), instead of the producer's norm epilogue writing it:
     * n_rows x n_in x 2 bytes of dynamic shared memory, at most
     * CEL__CU_GEMV3_NORM_IN_SMEM. */
    const float *in_x;
    const float *in_w;
} cel__cu_gemv3_args;
#define CEL__CU_GEMV3_NORM_IN_SMEM 32768
cudaError_t cel__cuk_gemv3(cudaStream_t s, const cel__cu_gemv3_args *a);
/* The arguments for y = W x (h NULL) or the SwiGLU form into h, n_rows rows
 * of n_in inputs and n_out outputs; everything else zero (no epilogue, the
 * default split, no early launch). */
static inline cel__cu_gemv3_args cel__cu_gemv3_make(float *y, uint16_t *h, const uint16_t *W, const uint16_t *x,
                                                    int32_t n_rows, int32_t n_in, int32_t n_out)
{
    cel__cu_gemv3_args a;
    memset(&a, 0, sizeof a);
    a.y = y;
    a.h = h;
    a.W = W;
    a.x = x;
    a.n_rows = n_rows;
    a.n_in = n_in;
    a.n_out = n_out;
    return a;
}
/* The q/k/v post-process as the QKV GEMV's epilogue (cel__cu_gemv3_args.qkv,
 * plain form, no norm epilogue, no accumulate, y = qkv with n_out = (n_head +
 * 2 n_head_kv) head_dim): each head-unit's last block to finish its rows
 * runs cel__cuk_qkv_rope_v3's per-unit step on them (one warp per token), so
 * q in y, and the K/V cache, get the same bits as cel__cuk_gemv3 followed by
 * cel__cuk_qkv_rope_v3 - one launch fewer per layer. count: device
 * [n_head + 2 n_head_kv] int32, zero before the launch and after it. */
#define CEL__CU_QKV_FUSE_MAX_HD 256
typedef struct cel__cu_qkv_fuse {
    const float *bias, *q_norm, *k_norm, *inv_freq; /* as cel__cuk_qkv_rope_v3 */
    const int32_t *pos, *blk;
    uint16_t *k_cache, *v_cache;
    int32_t *count;
    cel__cu_qkv_params p; /* p.n_tokens == n_rows */
} cel__cu_qkv_fuse;
/* Whether a QKV GEMV of this shape can take the epilogue: a head's rows must
 * span whole blocks (head_dim a multiple of the rows one block covers at
 * this split, 0: the default split), head_dim a multiple of 32, <= 256. */
int cel__cuk_gemv3_fuses_qkv(int32_t n_out, int32_t n_in, int32_t head_dim, int32_t k_split);
/* The warps per row cel__cuk_gemv3 uses by default: a function of the shape
 * alone (never of n_rows): 1 for SwiGLU and n_out >= 8192; else the largest
 * of 4, 2 with n_out x k_split <= 4096 warps and at least 2 chunks of 8
 * inputs per lane; else 1. */
int32_t cel__cuk_gemv3_split(int32_t n_out, int32_t n_in, int swiglu);
/* cel__cuk_embed, then cel__cuk_rmsnorm's BF16 output with its bits, in one
 * launch (v3: layer 0's attention norm; the other norms come from
 * cel__cuk_gemv3's norm epilogue): x[r] = emb[tokens[r]] (FP32), out[r] =
 * its norm, each thread's loads issued together. */
cudaError_t cel__cuk_embed_norm_v3(cudaStream_t s, float *x, uint16_t *out, const uint16_t *emb, const int32_t *tokens,
                                   const float *w, int32_t n_rows, int32_t n, float eps);
/* The first GEMV kernel (one warp per output, 4-way unrolled loop), kept so
 * one GPU run can time it against cel__cuk_gemv (CELINE_CUDA_DECODE=v1);
 * same contract and same bits as cel__cuk_gemv. */
cudaError_t cel__cuk_gemv_v1(cudaStream_t s, float *y, const uint16_t *W, const uint16_t *x, int32_t n_rows,
                             int32_t n_in, int32_t n_out, int accumulate);
/* A one-warp kernel that busy-waits about `cycles` GPU clocks (profiling). */
cudaError_t cel__cuk_spin(cudaStream_t s, long long cycles);
/* Whether the kernels were compiled for sm_90+ for this device (their
 * grid-dependency waits exist): programmatic dependent launch needs it. */
int cel__cuk_pdl_compiled(void);

/* Copies the first n_tokens slots of KV block src into block dst for every
 * layer (k and v caches laid out as [n_layer][n_blocks][n_head_kv][bs][hd]). */
cudaError_t cel__cuk_copy_block(cudaStream_t s, uint16_t *k, uint16_t *v, int32_t n_layer, int32_t n_blocks,
                                int32_t n_head_kv, int32_t block_size, int32_t head_dim, int32_t src, int32_t dst,
                                int32_t n_tokens);

/* out[r] = index of the largest of logits[r][0..n_vocab) (lowest index on
 * ties, numbers above NaN), each row cut into `splits` slices, one block each, so a few
 * rows still keep many SMs reading (one 128k-logit row is ~0.5 MB: one block
 * alone needs ~8 round trips to memory). Blocks write their slice's best
 * (value, index) to part_v / part_i ([n_rows][splits]); the last block of a
 * row to arrive (count[r], zero before the launch and again after it) picks
 * the row's best. The order is total, so the result equals the unsplit one.
 * sp NULL or splits 1: one block per row, no scratch. */
#define CEL__CU_ARGMAX_MAX_SPLIT 16
typedef struct cel__cu_argmax_split {
    float *part_v;   /* device [n_rows][splits] */
    int32_t *part_i; /* device [n_rows][splits] */
    int32_t *count;  /* device [n_rows], zero between launches */
    int32_t splits;  /* 1 .. CEL__CU_ARGMAX_MAX_SPLIT */
} cel__cu_argmax_split;
cudaError_t cel__cuk_argmax(cudaStream_t s, int32_t *out, const float *logits, int32_t n_rows, int32_t n_vocab,
                               const cel__cu_argmax_split *sp);
/* The splits the backend uses: enough for ~n_sm blocks in all, slices of at
 * least 16384 logits, at most CEL__CU_ARGMAX_MAX_SPLIT. */
int32_t cel__cuk_argmax_splits(int32_t n_rows, int32_t n_vocab, int32_t n_sm);

/* One output row's sampling request on the device (built by the backend
 * from cel_batch_sample; lmin and inv_t are computed on the host with the
 * very expressions engine/sample.c uses, so the kernel's thresholds carry
 * the CPU's bits). */
typedef struct cel__cu_sample_req {
    double u;          /* uniform in [0, 1) */
    float temperature; /* < CEL_BACKEND_GREEDY_T: argmax */
    float inv_t;       /* 1.0f / temperature */
    float top_p;       /* 1: off */
    float min_p;       /* 0: off */
    float lmin;        /* logf(min_p) (when min_p > 0) */
    int32_t top_k;     /* 0: off; <= CEL_BACKEND_SAMPLE_MAX_K */
    int32_t on;        /* 0: tok = -1 (the row's logits are wanted) */
    int32_t want_logprob;
} cel__cu_sample_req;

/* One block per row r < n_rows of logits ([n_rows][n_vocab]): samples it
 * per reqs[r] into tok[r] (and, with want_logprob, the token's raw
 * log-softmax into lp[r]), or writes tok[r] = -1 when the row is off, holds
 * a NaN or a non-finite maximum, or needs more than CEL_BACKEND_SAMPLE_MAX_K
 * candidates (top-p / min-p without top-k reaching past them): the caller
 * then samples those rows' logits on the CPU. */
cudaError_t cel__cuk_sample(cudaStream_t s, int32_t *tok, float *lp, const float *logits,
                            const cel__cu_sample_req *reqs, int32_t n_rows, int32_t n_vocab);
/* The device request for a cel_batch_sample (host side). */
static inline void cel__cu_sample_req_fill(cel__cu_sample_req *d, const cel_batch_sample *s)
{
    memset(d, 0, sizeof *d);
    if (!s || !s->on) return;
    d->on = 1;
    d->want_logprob = s->want_logprob;
    d->u = s->u;
    d->temperature = s->temperature;
    d->inv_t = s->temperature > 0.0f ? 1.0f / s->temperature : 0.0f;
    d->top_k = s->top_k;
    d->top_p = s->top_p;
    d->min_p = s->min_p;
    d->lmin = s->min_p > 0.0f ? 0.0f + logf(s->min_p) : -INFINITY; /* sample.c: mx + logf(min_p), mx = 0 */
}

/* y[T][O] (+)= x[T][I] . W[O][I]^T: W and x BF16, y FP32 (accumulate adds
 * to y). Our GEMV kernel when allow_gemv and T <= CEL__CU_GEMV_MAX_ROWS,
 * else cuBLAS (BF16 tensor cores, FP32 accumulation) on stream s. */
cel_status cel__cu_gemm(cublasHandle_t blas, cudaStream_t s, float *y, const uint16_t *W, const uint16_t *x, int32_t T,
                        int32_t I, int32_t O, bool accumulate, bool allow_gemv, cel_error *err);

/* ------------------------------------------------------ backend extensions */

/* What the CUDA backend runs on, for logs and benchmarks. */
typedef struct cel_cuda_info {
    char device[256];
    int cc_major, cc_minor;
    int n_sm;
    size_t total_mem, weight_bytes, kv_bytes, act_bytes;
    double mem_bandwidth_gbs; /* from the memory clock and bus width; 0 when unknown */
    int driver_version, runtime_version;
    bool graphs;              /* CUDA graphs used for decode steps */
    uint64_t sampled_rows;    /* output rows sampled on the GPU so far */
    uint64_t sample_given_back; /* rows asked to be sampled that came back as logits (cap, non-finite) */
} cel_cuda_info;
cel_status cel_backend_cuda_info(cel_backend *be, cel_cuda_info *out);

/* Greedy decoding on the GPU: like forward, but instead of copying logits to
 * the host it writes argmax(logits of out_rows[i]) to tokens_out[i] (b->logits
 * is not touched and may be NULL). */
cel_status cel_backend_cuda_forward_argmax(cel_backend *be, const cel_batch *b, int32_t *tokens_out, cel_error *err);

/* Where the GPU time of one forward pass goes: the pass runs eagerly (no
 * graph) behind a spin kernel, with an event after every launch, so each
 * launch's time is its own kernel time; launches are summed by kind. Then,
 * when graphs are on and the batch is a decode step, the same step's graph
 * is captured (if needed) and `graph_reps` replays are timed with events
 * around the launches (GPU time, no host sync inside): graph_ms - kernel_ms
 * is what launches cost beyond the kernels themselves. The head ends with
 * the argmax when `argmax`, else with the sampling kernel when b->sample
 * is set (b->tokens_out / logprob_out / logits needed), else logits. */
#define CEL_CUDA_PROF_KINDS 16
typedef struct cel_cuda_profile {
    int n_kinds;
    struct {
        const char *name; /* static string */
        int launches;
        double ms;        /* sum of this kind's kernel times */
        double bytes;     /* weight bytes these launches read (GEMVs; 0 for the rest) */
    } kind[CEL_CUDA_PROF_KINDS];
    int launches;
    double kernel_ms;     /* sum over kinds */
    double graph_ms;      /* one graph replay, averaged (0 when no graph ran) */
    const char *decode;   /* decode path: "v1", "v2" or "v3" */
    int attn_splits;      /* v3: blocks per (token, q-head group) the attention used (1: none) */
} cel_cuda_profile;
cel_status cel_backend_cuda_profile(cel_backend *be, const cel_batch *b, bool argmax, int graph_reps,
                                    cel_cuda_profile *out, cel_error *err);

/* Turns CUDA graphs for decode steps on or off (default on, or off when the
 * environment sets CELINE_CUDA_GRAPHS=0). */
void cel_backend_cuda_set_graphs(cel_backend *be, bool on);

#ifdef __cplusplus
}
#endif
#endif
