/*
 * prefill.h - tiled (flash-style) causal attention for prefill chunks
 * (engine/cuda/prefill.cu).
 *
 * cel__cuk_attention gives every query token its own block, which then
 * streams the token's whole context from the paged cache: a prompt of P
 * tokens reads its sequence's K/V P times. Here a block owns a tile of
 * consecutive query rows of ONE sequence times one kv head (all G q heads
 * sharing it), loads each K/V tile of the cache into shared memory once and
 * uses it for every query row of the tile, so K/V is read about
 * P / tile_tokens times.
 *
 * Same data layout and contract as cel__cuk_attention (cuda_internal.h):
 * q FP32 [n_tokens][q_stride] (heads first), K/V FP16 caches laid out as
 * ((block * n_head_kv + kvh) * block_size + slot) * head_dim, out BF16
 * [n_tokens][n_head * head_dim], row t attends positions 0..pos[t] of
 * sequence seq[t], whose blocks are tables[tab_off[seq[t]] + position /
 * block_size]. Only the rows named by the segments are computed (written).
 */
#ifndef CEL_CUDA_PREFILL_H
#define CEL_CUDA_PREFILL_H

#include "cuda_internal.h"

#ifdef CEL_CUDA_EMU
/* the emulated object links beside the real one: its own names */
#define cel__cuk_prefill_attention cel__emuk_prefill_attention
#define cel__cuk_prefill_tile_tokens cel__emuk_prefill_tile_tokens
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* A run of batch rows [row0, row0 + n_rows) that all belong to one sequence
 * (the kernel takes the block table of seq[row0] for the whole run; rows of
 * a sequence are consecutive in a cel_batch). Positions need not be
 * consecutive, but a run's K/V tiles span 0..max(pos) of its rows. */
typedef struct cel__cu_prefill_seg {
    int32_t row0, n_rows;
} cel__cu_prefill_seg;

/* At most this many segments go into one kernel launch (the tile map is a
 * kernel argument); the launcher issues more launches for more segments. */
#define CEL__CU_PREFILL_MAX_SEGS 128

/* Causal attention for the rows of segs[0..n_segs) (host array) with the
 * contract above. head_dim: 32, 64, 96, 128 or 256; n_head / n_head_kv (the
 * GQA group) at most 64; every segment non-empty and inside [0, n_tokens).
 * Numerics: FP32 accumulation, online softmax over fixed key tiles
 * (positions [k * TK, (k + 1) * TK), TK = 32, 16 for head_dim 256); a row
 * skips the tiles past its own position, so its bits depend only on its q,
 * its position and its sequence's K/V - not on the other rows of its tile,
 * the segmentation or the rest of the batch. Close to, not bit-equal with,
 * cel__cuk_attention. Returns cudaErrorInvalidValue for an unsupported
 * shape or a bad segment, else the launch status. */
cudaError_t cel__cuk_prefill_attention(cudaStream_t s, uint16_t *out, const float *q, const uint16_t *k_cache,
                                       const uint16_t *v_cache, const int32_t *pos, const int32_t *seq,
                                       const int32_t *tab_off, const int32_t *tables, cel__cu_attn_params p,
                                       const cel__cu_prefill_seg *segs, int32_t n_segs);

/* Query tokens per block for a GQA group of `group` q heads per kv head
 * (blocks hold 64 query rows = tokens x group; 16 rows when wide is 0, the
 * variant used when every segment is short); 0 for an unsupported group.
 * Exposed for tests and the backend's choice of threshold. */
int32_t cel__cuk_prefill_tile_tokens(int32_t group, int wide);

#ifdef __cplusplus
}
#endif
#endif
