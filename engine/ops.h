/*
 * ops.h - the CPU reference operations of the transformer. The CPU backend
 * is built from them and the CUDA kernels are checked against them op by op
 * (tests/unit/test_cuda_ops.c). Plain float math with sizes spelled out;
 * the fast paths (AVX2/FMA, threads) must give the same per-row results.
 */
#ifndef CEL_ENGINE_OPS_H
#define CEL_ENGINE_OPS_H

#include "celine/engine.h"

/* ---- number formats ---- */
float cel_fp16_to_fp32(uint16_t h);
uint16_t cel_fp32_to_fp16(float f);
float cel_bf16_to_fp32(uint16_t h);
uint16_t cel_fp32_to_bf16(float f); /* round to nearest even */
/* Dequantizes n elements (a multiple of the dtype's block) of src into dst. */
void cel_dequant_row(cel_dtype t, const void *src, float *dst, int64_t n);
/* Quantizes n floats into dtype t (all dtypes; K-quants with the reference
 * scale search), for writing test models and for int8 activations. */
void cel_quant_row(cel_dtype t, const float *src, void *dst, int64_t n);

/* ---- elementwise / per-row ops ---- */
/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i] */
void cel_op_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);
/* RoPE inverse frequencies for head_dim/2 pairs, llama3/linear scaling applied. */
void cel_op_rope_freqs(const cel_hparams *hp, float *inv_freq /* [head_dim/2] */);
/* Rotates n_heads heads of x ([n_heads][head_dim]) for position pos. */
void cel_op_rope(float *x, int32_t n_heads, int32_t head_dim, int32_t pos, const float *inv_freq,
                 cel_rope_style style);
/* out[i] = silu(gate[i]) * up[i] */
void cel_op_swiglu(float *out, const float *gate, const float *up, int64_t n);
/* Row `token` of the embedding table as floats. */
void cel_op_embed(float *out, const cel_tensor *emb, int32_t token);

/* ---- matrix products ---- */
/* y[r][o] = sum_i W[o][i] * x[r][i] for r < n_rows (W is [out][in] as ne[0]=in,
 * ne[1]=out), any weight dtype. pool may be NULL. */
typedef struct cel_pool cel_pool;
void cel_op_matmul(float *y, const cel_tensor *W, const float *x, int64_t n_rows, cel_pool *pool);

/* ---- attention ---- */
/* Causal attention for one sequence: q is [n_new][n_head][head_dim] for
 * positions n_past..n_past+n_new-1; K/V of positions 0..n_past+n_new-1 are
 * read through kv_at(ctx, pos, is_v) which returns [n_head_kv][head_dim]
 * floats. Output out is [n_new][n_head][head_dim]. Scale 1/sqrt(head_dim). */
typedef const float *(*cel_kv_reader)(void *ctx, int32_t pos, int is_v);
void cel_op_attention(float *out, const float *q, int32_t n_new, int32_t n_past, int32_t n_head,
                      int32_t n_head_kv, int32_t head_dim, cel_kv_reader kv_at, void *ctx);

#endif
