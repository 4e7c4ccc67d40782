/*
 * ops.h - the CPU reference operations of the transformer (engine/cpu/ops.c,
 * engine/cpu/quant.c). The CPU backend uses the per-row ops directly
 * (RMSNorm, RoPE, embedding); its fast matmul and attention kernels
 * (engine/cpu/cpu.h) and the CUDA kernels are checked against these op by op
 * (tests/unit/test_ops.c, tests/unit/test_cuda_ops.c). Plain float math with
 * sizes spelled out. The fast paths quantize activations to int8 for the
 * integer formats and sum in other orders, so they agree with these within
 * stated tolerances, not bit for bit.
 *
 * Block layouts (ggml's): Q8_0 {fp16 d; int8 qs[32]}; Q4_0 {fp16 d; u8 qs[16]},
 * value (nibble - 8) * d, low nibbles = elements 0..15; Q4_K super-blocks of
 * 256 {fp16 d, dmin; 12 bytes of 6-bit scales/mins; 128 bytes of nibbles},
 * value d * sc * q - dmin * m per 32; Q6_K {ql[128], qh[64], int8 scales[16],
 * fp16 d}, value d * sc * (q - 32) per 16.
 */
#ifndef CEL_ENGINE_OPS_H
#define CEL_ENGINE_OPS_H

#include "celine/engine.h"

/* ---- number formats ---- */
float cel_fp16_to_fp32(uint16_t h);
uint16_t cel_fp32_to_fp16(float f);
float cel_bf16_to_fp32(uint16_t h);
uint16_t cel_fp32_to_bf16(float f); /* round to nearest even */
/* Dequantizes n elements (a multiple of the dtype's block) of src into dst.
 * src needs no alignment. */
void cel_dequant_row(cel_dtype t, const void *src, float *dst, int64_t n);
/* Quantizes n floats (a multiple of the block) into dtype t, writing
 * cel_dtype_row_bytes(t, n) bytes: every dtype, the scales chosen by a small
 * search (candidate scales refined by least squares, lowest squared error
 * wins). For writing test models and measuring round-trip error; not a hot
 * path. */
void cel_quant_row(cel_dtype t, const float *src, void *dst, int64_t n);

/* ---- elementwise / per-row ops ---- */
/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i] (sum of squares in double).
 * out may equal x. */
void cel_op_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);
/* RoPE inverse frequencies rope_theta^(-2i/head_dim) for head_dim/2 pairs,
 * LINEAR (all divided by rope_factor) or LLAMA3 (long wavelengths divided,
 * short kept, blended between rope_orig_ctx / low and / high freq factor)
 * scaling applied. */
void cel_op_rope_freqs(const cel_hparams *hp, float *inv_freq /* [head_dim/2] */);
/* Rotates n_heads heads of x ([n_heads][head_dim]) for position pos, angle
 * pos * inv_freq[i] in float; NORM pairs (2i, 2i+1), NEOX (i, i + head_dim/2).
 * head_dim <= 1024 (larger: x is left unchanged). */
void cel_op_rope(float *x, int32_t n_heads, int32_t head_dim, int32_t pos, const float *inv_freq,
                 cel_rope_style style);
/* out[i] = silu(gate[i]) * up[i] */
void cel_op_swiglu(float *out, const float *gate, const float *up, int64_t n);
/* Row `token` of the embedding table as floats. */
void cel_op_embed(float *out, const cel_tensor *emb, int32_t token);

/* ---- matrix products ---- */
/* y[r][o] = sum_i W[o][i] * x[r][i] for r < n_rows (W is [out][in] as ne[0]=in,
 * ne[1]=out; x is [n_rows][in], y is [n_rows][out]), any weight dtype: the
 * reference, i.e. W dequantized, x in full float precision, sums in double.
 * Slow; the backend's fast matmul is cel__matmul (engine/cpu/cpu.h). pool
 * may be NULL (threads split the output features; results do not depend on
 * it). */
typedef struct cel_pool cel_pool;
void cel_op_matmul(float *y, const cel_tensor *W, const float *x, int64_t n_rows, cel_pool *pool);

/* ---- attention ---- */
/* Causal attention for one sequence: q is [n_new][n_head][head_dim] for
 * positions n_past..n_past+n_new-1; K/V of positions 0..n_past+n_new-1 are
 * read through kv_at(ctx, pos, is_v) which returns [n_head_kv][head_dim]
 * floats. Output out is [n_new][n_head][head_dim]. Scale 1/sqrt(head_dim);
 * query head h reads kv head h / (n_head / n_head_kv) (GQA). Two passes in
 * double per (query, head), no scratch; head_dim <= 1024. */
typedef const float *(*cel_kv_reader)(void *ctx, int32_t pos, int is_v);
void cel_op_attention(float *out, const float *q, int32_t n_new, int32_t n_past, int32_t n_head,
                      int32_t n_head_kv, int32_t head_dim, cel_kv_reader kv_at, void *ctx);

#endif
