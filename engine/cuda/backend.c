/*
 * backend.c - the CUDA backend (cel_backend_cuda_create): the transformer
 * forward pass of engine/backend.h on one NVIDIA GPU.
 *
 * Data on the device:
 *   weights     uploaded once (and again on weights_changed) as BF16
 *               [out][in] matrices; q/k/v are concatenated into one matrix
 *               and gate/up into another, so each takes one GEMM. Quantized
 *               tensors are dequantized on the GPU at upload (kernels.cu).
 *               Norm weights, biases and RoPE frequencies are FP32.
 *   KV cache    FP16, [n_layer][n_blocks][n_head_kv][block_size][head_dim]
 *               for K and for V; the scheduler's block tables index it.
 *   activations FP32 residual stream x, BF16 GEMM inputs, FP32 GEMM outputs,
 *               sized for max_batch_tokens rows.
 *   batch meta  tokens, positions, blocks, block tables: one pinned host
 *               buffer copied with one cudaMemcpyAsync per forward.
 *
 * A forward pass: embed -> per layer [RMSNorm -> QKV GEMM -> bias/q-k
 * norm/RoPE + KV write -> paged attention -> O GEMM (+= residual) ->
 * RMSNorm -> gate/up GEMM -> SwiGLU -> down GEMM (+= residual)] -> final
 * RMSNorm of the wanted rows -> output GEMM -> logits to the host (or their
 * argmax, computed on the GPU). GEMMs with at most 8 rows use our GEMV
 * kernel (memory-bound decode), larger ones cuBLAS (BF16 inputs, FP32
 * accumulation and output). Batches of at most 8 rows also fuse: the
 * RMSNorms into the QKV and gate/up GEMVs, SwiGLU into the gate/up GEMV (6
 * launches per layer); CELINE_CUDA_DECODE=v1 selects the first, unfused
 * path (same bits) so a GPU run can time both. CELINE_CUDA_DECODE=v3 (the
 * default) keeps v2's GEMMs and swaps in, for batches of up to 16 rows
 * (cu_v3_kernels), the parallel q/k/v
 * post-process (one warp per head) and the split-context attention (chunks
 * of a fixed length per context length, partial states folded in chunk
 * order; split over several blocks when the (token, head group) grid is
 * too small for the GPU, with scratch allocated here at creation); for
 * batches of at most 8 rows it also runs its own GEMVs (cel__cuk_gemv3):
 * each RMSNorm is computed either by every block of the GEMV that reads it
 * into its shared memory (CELINE_CUDA_NORM=consumer, the default: QKV from
 * layer 1 on, gate/up) or once, by the last block of the GEMV that wrote the
 * residual (producer: O -> ffn norm, down -> next layer's attention norm);
 * the final norm, when every row is an output row, comes from the last down
 * GEMV either way (then the output GEMV reads it directly, see
 * cu_head_in_body), layer 0's from the embedding kernel; the q/k/v
 * post-process may run in the QKV GEMV's epilogue (per head, in the last
 * block to finish the head's rows; CELINE_CUDA_FUSE_QKV=1, off by default:
 * slower on the H100); and narrow matrices split each row over 2-4 warps
 * (CELINE_CUDA_GEMV_SPLIT=1|2|4 forces a split, for A/B timing). v3 is not
 * bit-equal to v2 (other cos/sin, other attention and split-GEMV summation
 * orders) but is batch-invariant in the same way. CELINE_CUDA_PDL=1 (the
 * default) adds programmatic
 * dependent launch to v3's small-batch layer kernels on sm_90+ (see
 * cu_enqueue_body and CEL_LAUNCH_PDL): same bits, fewer idle gaps between
 * kernels.
 *
 * Decode steps (every sequence adds one token) are captured into CUDA graphs
 * keyed by (tokens, output rows, head mode: logits, argmax or sampling) -
 * the whole step, argmax or sampling kernel included, is one graph - the
 * second time a shape is seen and replayed afterwards: the meta buffer and
 * the per-row sampling requests live at fixed addresses, so a replay only
 * needs the new meta and requests copied in first. A capture failure turns
 * graphs off and the step runs eagerly.
 *
 * Sampling on the GPU (can_sample; opt-in with CELINE_CUDA_SAMPLE=1): rows
 * with a cel_batch_sample request are sampled by cel__cuk_sample after the
 * output GEMV and only their token (+ logprob) is copied back; rows without
 * one, and rows the kernel gives back (past its candidate cap, non-finite
 * logits), have their logits copied as before.
 *
 * Batch invariance: rows computed by the GEMV path (batches of <= 8 tokens)
 * and by every custom kernel do not depend on the other rows; cuBLAS may pick
 * different algorithms for different batch sizes, so larger batches agree
 * with smaller ones only within rounding.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops.h"
#include "cuda_internal.h"
#include "prefill.h"

#define CEL__CU_MAX_GRAPHS 32
#define CEL__CU_STAGE_BYTES ((size_t)32 << 20)  /* upload staging (pinned) */
#define CEL__CU_BLAS_WS_BYTES ((size_t)32 << 20) /* cuBLAS workspace (graph capture needs one) */
#define CEL__CU_LOGIT_ROWS 512                   /* output rows per head pass */

typedef struct cu_layer {
    uint16_t *wqkv, *wo, *wgu, *wdown;              /* BF16 */
    float *attn_norm, *ffn_norm, *bqkv, *q_norm, *k_norm; /* FP32; bqkv/q_norm/k_norm may be NULL */
} cu_layer;

typedef struct cu_graph {
    int32_t n_tokens, n_out;
    int mode;                /* cu_head_mode: what follows the output GEMV of the n_out rows */
    bool head_in_body;       /* the final norm ran in the last layer's epilogue (cu_head_in_body) */
    int32_t seen;            /* eager runs of this shape so far */
    cudaGraphExec_t exec;    /* NULL until captured */
    uint64_t last_use;
} cu_graph;

/* What a launch was, for cel_backend_cuda_profile. */
typedef enum cu_kind {
    CU_K_EMBED,
    CU_K_NORM,
    CU_K_QKV,
    CU_K_ROPE,
    CU_K_ATTN,
    CU_K_O,
    CU_K_GATE_UP,
    CU_K_SWIGLU,
    CU_K_DOWN,
    CU_K_HEAD_NORM,
    CU_K_LM_HEAD,
    CU_K_ARGMAX,
    CU_K_SAMPLE,
    CU_K_COUNT
} cu_kind;
static const char *const cu_kind_names[CU_K_COUNT] = {
    "embed", "rmsnorm", "gemv qkv", "qkv rope+kv", "attention", "gemv o", "gemv gate/up", "swiglu",
    "gemv down", "final norm", "gemv lm_head", "argmax", "sample",
};

/* What the head pass ends with. */
typedef enum cu_head_mode { CU_HEAD_LOGITS = 0, CU_HEAD_ARGMAX, CU_HEAD_SAMPLE } cu_head_mode;

/* Profiling state: an event recorded after every launch, and its kind. */
typedef struct cu_prof {
    cudaEvent_t *ev;
    uint8_t *kind;
    double *bytes;
    int n, cap;
    cudaError_t failed; /* first event error */
} cu_prof;

typedef struct cu_backend {
    cel_backend base;
    cel_logger log;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;
    /* sizes */
    int32_t E, Q, KV, F, V, L, hd, nh, nkv, bs, max_tokens, logit_rows;
    bool use_gemv;
    bool decode_v1; /* CELINE_CUDA_DECODE=v1: the first decode path (unfused, v1 GEMV), for A/B timing */
    bool decode_v3; /* CELINE_CUDA_DECODE=v3: split-context attention, parallel q/k/v post-process, v3 GEMVs */
    bool prefill_tiled; /* CELINE_CUDA_PREFILL=tiled: prefill chunks through the tiled kernel (prefill.cu) */
    int32_t gemv_split; /* v3 GEMV warps per row: 0 (shape's choice), or CELINE_CUDA_GEMV_SPLIT = 1, 2, 4 */
    bool pdl;           /* CELINE_CUDA_PDL=1 on sm_90+: v3 small-batch layer kernels launch early (see cu_enqueue_body) */
    int32_t pdl_prefetch; /* bytes per warp a v3 GEMV prefetches into L2 while it waits (CELINE_CUDA_PDL_PREFETCH) */
    int32_t attn_chunk;   /* v3 attention positions per chunk (CELINE_CUDA_ATTN_CHUNK; cel__cu_attn_split.chunk) */
    cu_prof *prof;  /* non-NULL only inside cel_backend_cuda_profile */
    /* weights */
    uint16_t *tok_embd, *output; /* output == tok_embd when tied */
    float *output_norm, *inv_freq;
    cu_layer *layers;
    /* KV cache */
    uint16_t *k_cache, *v_cache;
    size_t kv_layer_elems; /* elements of one layer's K (or V) cache */
    /* activations */
    float *x, *qkv, *gu, *logits;
    uint16_t *xb; /* BF16 GEMM input: norm output, attention output, SwiGLU output */
    uint16_t *xn; /* BF16 [max_tokens][E]: normalized rows when the gate/up GEMV cannot fuse the norm */
    int32_t *argmax_dev;
    float *argmax_part_v;     /* split argmax scratch [logit_rows][CEL__CU_ARGMAX_MAX_SPLIT] */
    int32_t *argmax_part_i;   /* the same, indices */
    int32_t *argmax_count;    /* split argmax arrival counters [logit_rows], zero between launches */
    float *attn_part;    /* v3 attention chunk states (cel__cuk_attn_part_floats) */
    int32_t *attn_count; /* v3 attention arrival counters [CEL__CU_ATTN_SPLIT_ROWS][nh], zero between launches */
    int32_t *gemv_count; /* v3 GEMV norm-epilogue arrival counter, zero between launches */
    int32_t *qkv_count;  /* v3 QKV GEMV q/k/v-epilogue arrival counters [nh + 2 nkv], zero between launches */
    bool fuse_qkv;       /* v3: q/k/v post-process in the QKV GEMV's epilogue (CELINE_CUDA_FUSE_QKV=0: separate) */
    bool norm_consumer;  /* v3: norms in the consuming GEMVs' blocks (CELINE_CUDA_NORM=consumer), not the producers' tails */
    bool rope_in_attn;   /* v3, decode-only batches: q/k/v post-process inside the attention (CELINE_CUDA_ROPE_IN_ATTN=1) */
    /* batch meta: [tokens | pos | blk | seq | out_rows | tab_off] each cap_t, then tables */
    int32_t cap_t, cap_tab;
    int32_t *meta_host, *meta_dev;
    /* host staging */
    void *stage_host, *stage_dev;
    float *logits_host;
    size_t logits_host_floats;
    int32_t *argmax_host;
    /* sampling: requests for every output row [cap_t] (host pinned + device,
     * fixed addresses), tokens and logprobs of one head pass [logit_rows] */
    cel__cu_sample_req *samp_req_host, *samp_req_dev;
    int32_t *samp_tok_dev;
    float *samp_lp_dev;
    int32_t *samp_out_host; /* [2 logit_rows]: tokens, then logprobs (as float bits) */
    /* graphs */
    bool graphs_on;
    cu_graph graphs[CEL__CU_MAX_GRAPHS];
    uint64_t clock;
    cel_cuda_info info;
} cu_backend;

/* device pointers into the meta buffer */
#define META_TOK(be, m) ((m) + 0 * (size_t)(be)->cap_t)
#define META_POS(be, m) ((m) + 1 * (size_t)(be)->cap_t)
#define META_BLK(be, m) ((m) + 2 * (size_t)(be)->cap_t)
#define META_SEQ(be, m) ((m) + 3 * (size_t)(be)->cap_t)
#define META_OUT(be, m) ((m) + 4 * (size_t)(be)->cap_t)
#define META_OFF(be, m) ((m) + 5 * (size_t)(be)->cap_t)
#define META_TAB(be, m) ((m) + 6 * (size_t)(be)->cap_t)

static const cel_backend_vtbl cu_vtbl;

/* ------------------------------------------------------------------ memory */

/* cudaMalloc with a message naming what did not fit. */
static cel_status cu_alloc(void **p, size_t n, const char *what, cel_error *err)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, n ? n : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        cudaGetLastError();
        return cel_error_set(err, CEL_ERR_DEVICE, "cuda: cannot allocate %.1f MiB of device memory for %s: %s",
                             (double)n / (1 << 20), what, cudaGetErrorString(e));
    }
    return CEL_OK;
}

static void cu_free(void *p)
{
    if (p) cudaFree(p);
}

/* --------------------------------------------------------------- uploading */

/* Checks that t is a [out][in] matrix (ne[0] = in) celine can convert. */
static cel_status cu_check_matrix(const cel_tensor *t, const char *what, int64_t in, int64_t out, cel_error *err)
{
    if (!t) return cel_error_set(err, CEL_ERR_FORMAT, "cuda: model has no %s tensor", what);
    if (t->ne[0] != in || (t->n_dims > 1 ? t->ne[1] : 1) != out || (t->n_dims > 2 && t->ne[2] != 1))
        return cel_error_set(err, CEL_ERR_FORMAT,
                             "cuda: tensor %s (%s) has shape [%lld, %lld], expected [%lld, %lld]", t->name, what,
                             (long long)t->ne[0], (long long)(t->n_dims > 1 ? t->ne[1] : 1), (long long)in,
                             (long long)out);
    switch (t->dtype) {
    case CEL_DTYPE_F32: case CEL_DTYPE_F16: case CEL_DTYPE_BF16: case CEL_DTYPE_Q8_0: case CEL_DTYPE_Q5_0:
    case CEL_DTYPE_Q5_1: case CEL_DTYPE_Q4_0: case CEL_DTYPE_Q4_K: case CEL_DTYPE_Q5_K: case CEL_DTYPE_Q6_K: break;
    default:
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "cuda: tensor %s has dtype %s (%d), which the CUDA backend cannot load",
                             t->name, cel_dtype_name(t->dtype), (int)t->dtype);
    }
    size_t rb = cel_dtype_row_bytes(t->dtype, in);
    if (rb == 0 || !t->data || t->nbytes < rb * (size_t)out)
        return cel_error_set(err, CEL_ERR_FORMAT, "cuda: tensor %s: %zu bytes of data for %lld rows of %zu bytes",
                             t->name, t->nbytes, (long long)out, rb);
    return CEL_OK;
}

/* Uploads matrix t ([out][in], any supported dtype) as BF16 into rows
 * [row0, row0 + out) of dst (a device [*][in] BF16 matrix), in chunks
 * through the pinned staging buffer; conversion runs on the GPU. */
static cel_status cu_upload_matrix(cu_backend *be, uint16_t *dst, int64_t row0, const cel_tensor *t, const char *what,
                                   int64_t in, int64_t out, cel_error *err)
{
    CEL_TRY(cu_check_matrix(t, what, in, out, err));
    const size_t rb = cel_dtype_row_bytes(t->dtype, in);
    if (rb > CEL__CU_STAGE_BYTES)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "cuda: tensor %s: a row of %zu bytes exceeds the staging buffer",
                             t->name, rb);
    const int64_t rows_per = (int64_t)(CEL__CU_STAGE_BYTES / rb);
    for (int64_t r = 0; r < out; r += rows_per) {
        const int64_t n = out - r < rows_per ? out - r : rows_per;
        memcpy(be->stage_host, (const uint8_t *)t->data + (size_t)r * rb, (size_t)n * rb);
        uint16_t *d = dst + (size_t)(row0 + r) * (size_t)in;
        if (t->dtype == CEL_DTYPE_BF16) {
            CEL_CUDA_CHECK(err, cudaMemcpyAsync(d, be->stage_host, (size_t)n * rb, cudaMemcpyHostToDevice, be->stream));
        } else {
            CEL_CUDA_CHECK(err, cudaMemcpyAsync(be->stage_dev, be->stage_host, (size_t)n * rb, cudaMemcpyHostToDevice,
                                                be->stream));
            CEL_CUDA_CHECK(err, cel__cuk_convert(be->stream, d, NULL, be->stage_dev, t->dtype, n * in));
        }
        /* the staging buffers are reused by the next chunk */
        CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
    }
    return CEL_OK;
}

/* Uploads a vector of n values (any dtype, converted on the host) as FP32
 * into dst[off .. off + n). */
static cel_status cu_upload_vec(cu_backend *be, float *dst, int64_t off, const cel_tensor *t, const char *what,
                                int64_t n, cel_error *err)
{
    if (!t) return cel_error_set(err, CEL_ERR_FORMAT, "cuda: model has no %s tensor", what);
    int64_t tn = 1;
    for (int i = 0; i < t->n_dims && i < 4; i++) tn *= t->ne[i];
    size_t rb = cel_dtype_row_bytes(t->dtype, n);
    if (tn != n || rb == 0 || !t->data || t->nbytes < rb || !cel_dtype_valid(t->dtype))
        return cel_error_set(err, CEL_ERR_FORMAT, "cuda: tensor %s (%s) has %lld elements, expected %lld", t->name, what,
                             (long long)tn, (long long)n);
    if ((size_t)n * sizeof(float) > CEL__CU_STAGE_BYTES)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "cuda: tensor %s is too long for the staging buffer", t->name);
    float *h = (float *)be->stage_host;
    cel_dequant_row(t->dtype, t->data, h, n);
    CEL_CUDA_CHECK(err, cudaMemcpyAsync(dst + off, h, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, be->stream));
    CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
    return CEL_OK;
}

/* (Re)uploads every weight of the model into the device buffers. */
static cel_status cu_upload_weights(cu_backend *be, cel_error *err)
{
    const cel_model *m = be->base.model;
    const int64_t E = be->E, Q = be->Q, KV = be->KV, F = be->F, V = be->V;
    CEL_TRY(cu_upload_matrix(be, be->tok_embd, 0, m->tok_embd, "token_embd", E, V, err));
    if (be->output != be->tok_embd) CEL_TRY(cu_upload_matrix(be, be->output, 0, m->output, "output", E, V, err));
    CEL_TRY(cu_upload_vec(be, be->output_norm, 0, m->output_norm, "output_norm", E, err));
    for (int32_t l = 0; l < be->L; l++) {
        const cel_layer *ml = &m->layers[l];
        cu_layer *cl = &be->layers[l];
        char what[64];
#define CU_NAME(s) (snprintf(what, sizeof what, "layer %d %s", (int)l, (s)), what)
        CEL_TRY(cu_upload_matrix(be, cl->wqkv, 0, ml->wq, CU_NAME("attn_q"), E, Q, err));
        CEL_TRY(cu_upload_matrix(be, cl->wqkv, Q, ml->wk, CU_NAME("attn_k"), E, KV, err));
        CEL_TRY(cu_upload_matrix(be, cl->wqkv, Q + KV, ml->wv, CU_NAME("attn_v"), E, KV, err));
        CEL_TRY(cu_upload_matrix(be, cl->wo, 0, ml->wo, CU_NAME("attn_output"), Q, E, err));
        CEL_TRY(cu_upload_matrix(be, cl->wgu, 0, ml->w_gate, CU_NAME("ffn_gate"), E, F, err));
        CEL_TRY(cu_upload_matrix(be, cl->wgu, F, ml->w_up, CU_NAME("ffn_up"), E, F, err));
        CEL_TRY(cu_upload_matrix(be, cl->wdown, 0, ml->w_down, CU_NAME("ffn_down"), F, E, err));
        CEL_TRY(cu_upload_vec(be, cl->attn_norm, 0, ml->attn_norm, CU_NAME("attn_norm"), E, err));
        CEL_TRY(cu_upload_vec(be, cl->ffn_norm, 0, ml->ffn_norm, CU_NAME("ffn_norm"), E, err));
        if (cl->bqkv) {
            CEL_TRY(cu_upload_vec(be, cl->bqkv, 0, ml->bq, CU_NAME("attn_q.bias"), Q, err));
            CEL_TRY(cu_upload_vec(be, cl->bqkv, Q, ml->bk, CU_NAME("attn_k.bias"), KV, err));
            CEL_TRY(cu_upload_vec(be, cl->bqkv, Q + KV, ml->bv, CU_NAME("attn_v.bias"), KV, err));
        }
        if (cl->q_norm) {
            CEL_TRY(cu_upload_vec(be, cl->q_norm, 0, ml->q_norm, CU_NAME("attn_q_norm"), be->hd, err));
            CEL_TRY(cu_upload_vec(be, cl->k_norm, 0, ml->k_norm, CU_NAME("attn_k_norm"), be->hd, err));
        }
#undef CU_NAME
    }
    return CEL_OK;
}

/* ----------------------------------------------------------------- graphs */

static void cu_graphs_clear(cu_backend *be)
{
    for (int i = 0; i < CEL__CU_MAX_GRAPHS; i++) {
        if (be->graphs[i].exec) cudaGraphExecDestroy(be->graphs[i].exec);
        memset(&be->graphs[i], 0, sizeof be->graphs[i]);
    }
}

/* The cache slot for shape (n_tokens, n_out): an existing one, else a free
 * or least recently used one (its graph destroyed). */
static cu_graph *cu_graph_slot(cu_backend *be, int32_t n_tokens, int32_t n_out, int mode, bool head_in_body)
{
    cu_graph *free_slot = NULL, *lru = NULL;
    for (int i = 0; i < CEL__CU_MAX_GRAPHS; i++) {
        cu_graph *g = &be->graphs[i];
        if (g->seen > 0 && g->n_tokens == n_tokens && g->n_out == n_out && g->mode == mode &&
            g->head_in_body == head_in_body)
            return g;
        if (g->seen == 0) {
            if (!free_slot) free_slot = g;
        } else if (!lru || g->last_use < lru->last_use) {
            lru = g;
        }
    }
    cu_graph *victim = free_slot ? free_slot : lru;
    if (victim->exec) cudaGraphExecDestroy(victim->exec);
    memset(victim, 0, sizeof *victim);
    victim->n_tokens = n_tokens;
    victim->n_out = n_out;
    victim->mode = mode;
    victim->head_in_body = head_in_body;
    return victim;
}

/* ---------------------------------------------------------------- forward */

cel_status cel__cu_gemm(cublasHandle_t blas, cudaStream_t s, float *y, const uint16_t *W, const uint16_t *x, int32_t T,
                        int32_t I, int32_t O, bool accumulate, bool allow_gemv, cel_error *err)
{
    if (allow_gemv && T <= CEL__CU_GEMV_MAX_ROWS && I % 8 == 0) {
        CEL_CUDA_CHECK(err, cel__cuk_gemv(s, y, W, x, T, I, O, accumulate ? 1 : 0));
        return CEL_OK;
    }
    /* column-major view: Y^T (O x T) = W^T' (O x I, W stored I x O) . X^T (I x T) */
    const float one = 1.0f, zero = 0.0f;
    CEL_CUBLAS_CHECK(err, cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, O, T, I, &one, W, CUDA_R_16BF, I, x, CUDA_R_16BF,
                                       I, accumulate ? &one : &zero, y, CUDA_R_32F, O, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT));
    return CEL_OK;
}

/* Profiling hook, called after every launch of a forward pass: records an
 * event tagged with what the launch was (no-op unless profiling). */
static void cu_mark(cu_backend *be, cu_kind kind, double bytes)
{
    cu_prof *p = be->prof;
    if (!p || p->failed != cudaSuccess) return;
    if (p->n >= p->cap) {
        p->failed = cudaErrorInvalidValue;
        return;
    }
    cudaError_t e = cudaEventRecord(p->ev[p->n], be->stream);
    if (e != cudaSuccess) {
        p->failed = e;
        return;
    }
    p->kind[p->n] = (uint8_t)kind;
    p->bytes[p->n] = bytes;
    p->n++;
}

static cel_status cu_gemm(cu_backend *be, float *y, const uint16_t *W, const uint16_t *x, int32_t T, int32_t I,
                          int32_t O, bool accumulate, cu_kind kind, cel_error *err)
{
    if (be->decode_v1 && be->use_gemv && T <= CEL__CU_GEMV_MAX_ROWS && I % 8 == 0)
        CEL_CUDA_CHECK(err, cel__cuk_gemv_v1(be->stream, y, W, x, T, I, O, accumulate ? 1 : 0));
    else
        CEL_TRY(cel__cu_gemm(be->blas, be->stream, y, W, x, T, I, O, accumulate, be->use_gemv, err));
    cu_mark(be, kind, (double)O * (double)I * 2.0);
    return CEL_OK;
}

/* The fused decode GEMVs (T <= CEL__CU_GEMV_MAX_ROWS, v2 path): the RMSNorm
 * of x with norm_w feeds W; swiglu_out != NULL selects the gate/up + SwiGLU
 * form (W has 2 n_out rows), else y = result. When the normalized rows do
 * not fit the kernel's shared memory, a separate rmsnorm writes them to
 * `scratch` (T x E BF16, not aliasing the output) first: same bits, see
 * cel__cuk_gemv_ex. */
static cel_status cu_gemv_norm(cu_backend *be, float *y, uint16_t *swiglu_out, const uint16_t *W, const float *norm_w,
                               int32_t T, int32_t n_out, uint16_t *scratch, cu_kind kind, cel_error *err)
{
    const cel_hparams *hp = &be->base.model->hp;
    cel__cu_gemv_args a;
    memset(&a, 0, sizeof a);
    a.y = y;
    a.h = swiglu_out;
    a.W = W;
    a.n_rows = T;
    a.n_in = be->E;
    a.n_out = n_out;
    if (cel__cuk_gemv_norm_fits(T, be->E)) {
        /* two blocks per SM, each normalizing once: with 8 weight loads in
         * flight per lane that is ~2000 warps x 4 KiB, more than the
         * bandwidth-latency product of current HBM (~5 MB at 4.8 TB/s x 1 us) */
        a.max_blocks = 2 * (be->info.n_sm > 0 ? be->info.n_sm : 1);
        a.xf = be->x;
        a.norm_w = norm_w;
        a.eps = hp->rms_eps;
    } else {
        CEL_CUDA_CHECK(err, cel__cuk_rmsnorm(be->stream, NULL, scratch, be->x, NULL, norm_w, T, be->E, hp->rms_eps));
        cu_mark(be, CU_K_NORM, 0.0);
        a.x = scratch;
    }
    CEL_CUDA_CHECK(err, cel__cuk_gemv_ex(be->stream, &a));
    cu_mark(be, kind, (double)n_out * (swiglu_out ? 2.0 : 1.0) * (double)be->E * 2.0);
    return CEL_OK;
}

/* One v3 decode GEMV (cel__cuk_gemv3): y (+)= W x, or the SwiGLU form into
 * swiglu_out; with norm_w != NULL the last block then writes the RMSNorm of
 * y's T rows (width O) with norm_w into be->xn, the next GEMV's input. */
static cel_status cu_gemv3(cu_backend *be, float *y, uint16_t *swiglu_out, const uint16_t *W, const uint16_t *x,
                           int32_t T, int32_t I, int32_t O, bool accumulate, const float *norm_w, const float *in_w,
                           const cel__cu_qkv_fuse *qkv, int32_t k_split, bool pdl, cu_kind kind, cel_error *err)
{
    cel__cu_gemv3_args a = cel__cu_gemv3_make(y, swiglu_out, W, x, T, I, O);
    a.accumulate = accumulate ? 1 : 0;
    a.k_split = k_split;
    a.eps = be->base.model->hp.rms_eps;
    if (norm_w) { /* the producer's norm epilogue: RMSNorm(y) * norm_w into xn */
        a.norm_out = be->xn;
        a.norm_w = norm_w;
        a.count = be->gemv_count;
    }
    if (in_w) { /* the consumer's: the input is RMSNorm(x residual) * in_w, computed per block */
        a.in_x = be->x;
        a.in_w = in_w;
    }
    a.qkv = qkv;
    a.pdl = pdl;
    a.pf_bytes = pdl ? be->pdl_prefetch : 0;
    CEL_CUDA_CHECK(err, cel__cuk_gemv3(be->stream, &a));
    cu_mark(be, kind, (double)O * (swiglu_out ? 2.0 : 1.0) * (double)I * 2.0);
    return CEL_OK;
}

/* Whether the v3 per-token kernels (split-context attention, parallel q/k/v
 * post-process) serve a batch of T rows: up to CEL__CU_ATTN_SPLIT_ROWS rows,
 * which leave most of the GPU idle unless each token's context is split over
 * blocks. Larger batches fill it by themselves and take v2's kernels, which
 * do not pay v3's per-chunk merges (v3's were 0.83x v2's decode speed at
 * batch 64 and 256 on an H200). A sequence's bits may then differ between a
 * batch of up to 16 rows and a larger one, as they already do across the
 * GEMV / cuBLAS boundary at CEL__CU_GEMV_MAX_ROWS rows; within each side
 * they do not depend on the batch. */
static bool cu_v3_kernels(const cu_backend *be, int32_t T) { return be->decode_v3 && T <= CEL__CU_ATTN_SPLIT_ROWS; }

/* Blocks per (token, q-head group) of the v3 attention for T rows. */
static int32_t cu_attn_splits(const cu_backend *be, int32_t T)
{
    return cel__cuk_attn_splits(T, be->nh, be->nkv, be->hd, be->info.n_sm);
}

/* Rows of one sequence from which a batch's run goes to the tiled prefill
 * kernel (a wide tile holds 16 tokens at GQA group 4; shorter runs gain
 * little over the per-token kernel). */
#define CU_PREFILL_MIN_ROWS 16

/* The per-token attention kernel (v2 or v3) for batch rows [r0, r0 + n):
 * its row arrays (q, out, pos, seq) are offset, tab_off and tables are not
 * (seq[] still names batch sequences). */
static cel_status cu_attention_rows(cu_backend *be, uint16_t *kc, uint16_t *vc, cel__cu_attn_params ap, int32_t r0,
                                    int32_t n, bool pdl, const cel__cu_qkv_fuse *pp, cel_error *err)
{
    const int32_t *m = be->meta_dev;
    uint16_t *out = be->xb + (size_t)r0 * be->nh * be->hd;
    const float *q = be->qkv + (size_t)r0 * ap.q_stride;
    const bool v3 = cu_v3_kernels(be, ap.n_tokens); /* by the whole batch's rows */
    ap.n_tokens = n;
    if (v3) {
        /* the split and unsplit forms give the same bits */
        const cel__cu_attn_split sp = {be->attn_part, be->attn_count, cu_attn_splits(be, n), pdl, be->attn_chunk, pp};
        CEL_CUDA_CHECK(err, cel__cuk_attention_v3(be->stream, out, q, kc, vc, META_POS(be, m) + r0, META_SEQ(be, m) + r0,
                                                  META_OFF(be, m), META_TAB(be, m), ap, &sp));
    } else {
        CEL_CUDA_CHECK(err, cel__cuk_attention(be->stream, out, q, kc, vc, META_POS(be, m) + r0, META_SEQ(be, m) + r0,
                                               META_OFF(be, m), META_TAB(be, m), ap));
    }
    return CEL_OK;
}

/* Attention for the ap.n_tokens rows of the batch: every run of at least
 * CU_PREFILL_MIN_ROWS consecutive rows of one sequence (a prefill chunk) goes
 * to the tiled prefill kernel (up to CEL__CU_PREFILL_MAX_SEGS runs per
 * launch), the rows between such runs (decode steps, short chunks) to the
 * per-token kernel, one launch per stretch. The batch meta (pos, seq,
 * tab_off, tables) is on the device already - cu_forward_impl / the profile
 * upload it on this stream before the body - and its host copy
 * (be->meta_host, filled by cu_prepare_meta for this batch) gives the runs.
 * A decode-only batch (the graph-captured case) has no run that long, so it
 * takes exactly one per-token launch, as before. */
static cel_status cu_attention(cu_backend *be, uint16_t *kc, uint16_t *vc, cel__cu_attn_params ap, bool pdl,
                               const cel__cu_qkv_fuse *pp, cel_error *err)
{
    const int32_t T = ap.n_tokens, *seq = META_SEQ(be, be->meta_host), *m = be->meta_dev;
    if (pp) return cu_attention_rows(be, kc, vc, ap, 0, T, pdl, pp, err); /* decode-only: one launch */
    if (!be->prefill_tiled) return cu_attention_rows(be, kc, vc, ap, 0, T, pdl, NULL, err);
    cel__cu_prefill_seg segs[CEL__CU_PREFILL_MAX_SEGS];
    int32_t n_segs = 0, tok0 = 0; /* rows [tok0, r) wait for the per-token kernel */
    for (int32_t r = 0; r < T;) {
        int32_t e = r + 1;
        while (e < T && seq[e] == seq[r]) e++;
        if (e - r >= CU_PREFILL_MIN_ROWS) {
            if (r > tok0) CEL_TRY(cu_attention_rows(be, kc, vc, ap, tok0, r - tok0, false, NULL, err));
            segs[n_segs++] = (cel__cu_prefill_seg){r, e - r};
            if (n_segs == CEL__CU_PREFILL_MAX_SEGS) {
                CEL_CUDA_CHECK(err, cel__cuk_prefill_attention(be->stream, be->xb, be->qkv, kc, vc, META_POS(be, m),
                                                               META_SEQ(be, m), META_OFF(be, m), META_TAB(be, m), ap,
                                                               segs, n_segs));
                n_segs = 0;
            }
            tok0 = e;
        }
        r = e;
    }
    /* early launch only when this is the layer's one attention launch (its
     * predecessor is then the q/k/v post-process, which it waits for) */
    if (T > tok0)
        CEL_TRY(cu_attention_rows(be, kc, vc, ap, tok0, T - tok0, pdl && tok0 == 0 && n_segs == 0, NULL, err));
    if (n_segs > 0)
        CEL_CUDA_CHECK(err, cel__cuk_prefill_attention(be->stream, be->xb, be->qkv, kc, vc, META_POS(be, m),
                                                       META_SEQ(be, m), META_OFF(be, m), META_TAB(be, m), ap, segs,
                                                       n_segs));
    return CEL_OK;
}

/* Whether T rows take the small-batch path of GEMV kernels with fused
 * norms, SwiGLU and residuals (not v1's), and whether v3's kernels. */
static bool cu_small_fused(const cu_backend *be, int32_t T)
{
    return !be->decode_v1 && be->use_gemv && T <= CEL__CU_GEMV_MAX_ROWS;
}
static bool cu_small_v3(const cu_backend *be, int32_t T) { return cu_small_fused(be, T) && be->decode_v3; }

/* Programmatic dependent launch (CELINE_CUDA_PDL=1, sm_90+) for the v3
 * small-batch kernels: each - waiting for its predecessor in
 * cel_d_grid_wait before it reads activations - may start while the kernel
 * before it finishes, the GEMVs loading and prefetching their weights
 * meanwhile. Not while profiling: the events recorded between launches are
 * what is being timed. */
static bool cu_pdl(const cu_backend *be) { return be->pdl && !be->prof; }

/* Enqueues embedding and every layer for the n_tokens rows described by the
 * meta buffer (already on the device). No host synchronisation: capturable.
 * Batches of at most CEL__CU_GEMV_MAX_ROWS rows (decode) take the fused
 * path: RMSNorm inside the QKV and gate/up GEMVs, SwiGLU inside the gate/up
 * GEMV, residual adds inside the O and down GEMVs - 6 launches per layer
 * (v1: 9; v3: 6, the norms in the consuming GEMVs' blocks or in the O and
 * down GEMVs' epilogues, 5 with the q/k/v post-process in the QKV GEMV's
 * epilogue; layer 0's norm in the embedding kernel).
 * Larger batches: separate kernels around cuBLAS. head_in_body: the last
 * down GEMV normalizes with the final norm (cu_head_in_body). */
static cel_status cu_enqueue_body(cu_backend *be, int32_t T, bool head_in_body, bool decode_only, cel_error *err)
{
    const cel_hparams *hp = &be->base.model->hp;
    const int32_t *m = be->meta_dev;
    const int32_t qkv_w = be->Q + 2 * be->KV;
    const bool fused = cu_small_fused(be, T);
    /* v3 small batches: the norms run once per layer (xn), in the epilogue
     * of the GEMV that produced the residual (the first one with the embedding) */
    const bool g3 = cu_small_v3(be, T);
    const bool pdl = g3 && cu_pdl(be);
    /* norms in the consumers (QKV from layer 1 on, gate/up) when the rows fit
     * their shared memory; layer 0's comes from the embedding kernel, the
     * final one from the last down GEMV (the output GEMV's 8000 blocks would
     * each read the rows) */
    const bool nc = g3 && be->norm_consumer && (size_t)T * (size_t)be->E * 2 <= CEL__CU_GEMV3_NORM_IN_SMEM;
    if (g3 && be->L > 0) { /* embed and layer 0's attention norm in one launch */
        CEL_CUDA_CHECK(err, cel__cuk_embed_norm_v3(be->stream, be->x, be->xn, be->tok_embd, META_TOK(be, m),
                                                   be->layers[0].attn_norm, T, be->E, hp->rms_eps));
    } else {
        CEL_CUDA_CHECK(err, cel__cuk_embed(be->stream, be->x, be->tok_embd, META_TOK(be, m), T, be->E));
    }
    cu_mark(be, CU_K_EMBED, 0.0);
    for (int32_t l = 0; l < be->L; l++) {
        const cu_layer *cl = &be->layers[l];
        uint16_t *kc = be->k_cache + (size_t)l * be->kv_layer_elems, *vc = be->v_cache + (size_t)l * be->kv_layer_elems;
        cel__cu_qkv_params qp = {T, be->nh, be->nkv, be->hd, be->bs, (int32_t)hp->rope_style, hp->rms_eps, pdl};
        /* v3: the q/k/v post-process as the QKV GEMV's epilogue when the shape allows */
        const bool fuse_qkv = g3 && be->fuse_qkv && cel__cuk_gemv3_fuses_qkv(qkv_w, be->E, be->hd, be->gemv_split);
        /* the q/k/v post-process's arguments, for the QKV GEMV's epilogue or the attention */
        const cel__cu_qkv_fuse qf = {cl->bqkv, cl->q_norm,      cl->k_norm,      be->inv_freq, META_POS(be, m),
                                     META_BLK(be, m), kc, vc, be->qkv_count, qp};
        if (g3) {
            CEL_TRY(cu_gemv3(be, be->qkv, NULL, cl->wqkv, be->xn, T, be->E, qkv_w, false, NULL,
                             nc && l > 0 ? cl->attn_norm : NULL, fuse_qkv ? &qf : NULL,
                             be->gemv_split, pdl, CU_K_QKV, err));
        } else if (fused) {
            CEL_TRY(cu_gemv_norm(be, be->qkv, NULL, cl->wqkv, cl->attn_norm, T, qkv_w, be->xb, CU_K_QKV, err));
        } else {
            CEL_CUDA_CHECK(err, cel__cuk_rmsnorm(be->stream, NULL, be->xb, be->x, NULL, cl->attn_norm, T, be->E,
                                                 hp->rms_eps));
            cu_mark(be, CU_K_NORM, 0.0);
            CEL_TRY(cu_gemm(be, be->qkv, cl->wqkv, be->xb, T, be->E, qkv_w, false, CU_K_QKV, err));
        }
        /* v3, decode-only batches: the q/k/v post-process inside the attention
         * (CELINE_CUDA_ROPE_IN_ATTN; one kernel and one link of the chain fewer) */
        const bool rope_in_attn = !fuse_qkv && be->rope_in_attn && decode_only && cu_v3_kernels(be, T);
        if (!fuse_qkv && !rope_in_attn) {
            CEL_CUDA_CHECK(err, (cu_v3_kernels(be, T) ? cel__cuk_qkv_rope_v3 : cel__cuk_qkv_rope)(
                                    be->stream, be->qkv, cl->bqkv, cl->q_norm, cl->k_norm, be->inv_freq,
                                    META_POS(be, m), META_BLK(be, m), kc, vc, qp));
            cu_mark(be, CU_K_ROPE, 0.0);
        }
        cel__cu_attn_params ap = {T, be->nh, be->nkv, be->hd, be->bs, qkv_w, 1.0f / sqrtf((float)be->hd)};
        CEL_TRY(cu_attention(be, kc, vc, ap, pdl, rope_in_attn ? &qf : NULL, err));
        cu_mark(be, CU_K_ATTN, 0.0); /* one mark for all of the layer's attention launches */
        if (g3) { /* x += O attn, then xn = ffn_norm(x); gate/up + SwiGLU; x += down h, then xn = next attn_norm(x) */
            CEL_TRY(cu_gemv3(be, be->x, NULL, cl->wo, be->xb, T, be->Q, be->E, true, nc ? NULL : cl->ffn_norm, NULL,
                             NULL, be->gemv_split, pdl, CU_K_O, err));
            CEL_TRY(cu_gemv3(be, NULL, be->xb, cl->wgu, be->xn, T, be->E, be->F, false, NULL, nc ? cl->ffn_norm : NULL,
                             NULL, 1, pdl, CU_K_GATE_UP, err));
            const float *next_norm = l + 1 < be->L ? (nc ? NULL : be->layers[l + 1].attn_norm)
                                     : head_in_body ? be->output_norm : NULL;
            CEL_TRY(cu_gemv3(be, be->x, NULL, cl->wdown, be->xb, T, be->F, be->E, true, next_norm, NULL, NULL,
                             be->gemv_split, pdl, CU_K_DOWN, err));
            continue;
        }
        CEL_TRY(cu_gemm(be, be->x, cl->wo, be->xb, T, be->Q, be->E, true, CU_K_O, err));
        if (fused) {
            /* the output goes to xb, so a separate norm (when needed) writes xn */
            CEL_TRY(cu_gemv_norm(be, NULL, be->xb, cl->wgu, cl->ffn_norm, T, be->F, be->xn, CU_K_GATE_UP, err));
        } else {
            CEL_CUDA_CHECK(err, cel__cuk_rmsnorm(be->stream, NULL, be->xb, be->x, NULL, cl->ffn_norm, T, be->E,
                                                 hp->rms_eps));
            cu_mark(be, CU_K_NORM, 0.0);
            CEL_TRY(cu_gemm(be, be->gu, cl->wgu, be->xb, T, be->E, 2 * be->F, false, CU_K_GATE_UP, err));
            CEL_CUDA_CHECK(err, cel__cuk_swiglu(be->stream, be->xb, be->gu, T, be->F));
            cu_mark(be, CU_K_SWIGLU, 0.0);
        }
        CEL_TRY(cu_gemm(be, be->x, cl->wdown, be->xb, T, be->F, be->E, true, CU_K_DOWN, err));
    }
    return CEL_OK;
}

/* Enqueues final norm + output projection for n output rows whose batch
 * rows are rows_dev[0..n) (device), writing be->logits[0..n); with
 * CU_HEAD_ARGMAX also the argmax of each of those rows into
 * be->argmax_dev[0..n); with CU_HEAD_SAMPLE the rows sampled per
 * be->samp_req_dev[r0..r0+n) into be->samp_tok_dev / samp_lp_dev[0..n). */
static cel_status cu_enqueue_head(cu_backend *be, const int32_t *rows_dev, int32_t n, int mode, int32_t r0,
                                  bool head_in_body, cel_error *err)
{
    const cel_hparams *hp = &be->base.model->hp;
    if (head_in_body) { /* be->xn holds the final norm of rows 0..n-1 (cu_head_in_body) */
        CEL_TRY(cu_gemv3(be, be->logits, NULL, be->output, be->xn, n, be->E, be->V, false, NULL, NULL, NULL, 1,
                         cu_pdl(be), CU_K_LM_HEAD, err));
    } else {
        CEL_CUDA_CHECK(err, cel__cuk_rmsnorm(be->stream, NULL, be->xb, be->x, rows_dev, be->output_norm, n, be->E,
                                             hp->rms_eps));
        cu_mark(be, CU_K_HEAD_NORM, 0.0);
        CEL_TRY(cu_gemm(be, be->logits, be->output, be->xb, n, be->E, be->V, false, CU_K_LM_HEAD, err));
    }
    if (mode == CU_HEAD_ARGMAX) {
        const cel__cu_argmax_split sp = {be->argmax_part_v, be->argmax_part_i, be->argmax_count,
                                         cel__cuk_argmax_splits(n, be->V, be->info.n_sm)};
        CEL_CUDA_CHECK(err, cel__cuk_argmax(be->stream, be->argmax_dev, be->logits, n, be->V, &sp));
        cu_mark(be, CU_K_ARGMAX, 0.0);
    } else if (mode == CU_HEAD_SAMPLE) {
        CEL_CUDA_CHECK(err, cel__cuk_sample(be->stream, be->samp_tok_dev, be->samp_lp_dev, be->logits,
                                            be->samp_req_dev + r0, n, be->V));
        cu_mark(be, CU_K_SAMPLE, 0.0);
    }
    return CEL_OK;
}

/* Validates the batch against the pool and fills the host meta buffer
 * (growing it when the block tables do not fit). */
static cel_status cu_prepare_meta(cu_backend *be, const cel_batch *b, int32_t *n_tab_out, bool *decode_only,
                                  cel_error *err)
{
    const int32_t T = b->n_tokens;
    if (T <= 0 || !b->tokens) return cel_error_set(err, CEL_ERR_INVALID, "cuda: empty batch");
    if (T > be->max_tokens)
        return cel_error_set(err, CEL_ERR_INVALID, "cuda: batch of %d tokens exceeds max_batch_tokens %d", (int)T,
                             (int)be->max_tokens);
    if (b->n_seqs <= 0 || !b->seqs) return cel_error_set(err, CEL_ERR_INVALID, "cuda: batch has no sequences");
    if (b->n_out < 0 || (b->n_out > 0 && !b->out_rows))
        return cel_error_set(err, CEL_ERR_INVALID, "cuda: batch has %d output rows but no row list", (int)b->n_out);
    /* the metadata buffer holds cap_t output rows and cap_t sequence offsets
     * (output rows may repeat, and sequences may have no new rows, so
     * neither count is bounded by the batch's tokens) */
    if (b->n_out > be->cap_t)
        return cel_error_set(err, CEL_ERR_LIMIT, "cuda: %d output rows (at most max_batch_tokens, %d)", (int)b->n_out,
                             (int)be->cap_t);
    if (b->n_seqs > be->cap_t)
        return cel_error_set(err, CEL_ERR_LIMIT, "cuda: %d sequences in one batch (at most max_batch_tokens, %d)",
                             (int)b->n_seqs, (int)be->cap_t);
    /* table space: the blocks each sequence needs */
    int64_t n_tab = 0;
    bool dec = true;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const cel_batch_seq *q = &b->seqs[s];
        if (q->n_new < 0 || q->n_past < 0 || q->first < 0 || q->first + q->n_new > T)
            return cel_error_set(err, CEL_ERR_INVALID, "cuda: sequence %d has rows [%d, %d+%d) outside the batch of %d",
                                 (int)s, (int)q->first, (int)q->first, (int)q->n_new, (int)T);
        int64_t need = ((int64_t)q->n_past + q->n_new + be->bs - 1) / be->bs;
        if (need > q->n_blocks || (need > 0 && !q->block_table))
            return cel_error_set(err, CEL_ERR_INVALID, "cuda: sequence %d needs %lld KV blocks for %d tokens, has %d",
                                 (int)s, (long long)need, (int)(q->n_past + q->n_new), (int)q->n_blocks);
        n_tab += need;
        if (q->n_new != 1) dec = false;
    }
    if (n_tab > INT32_MAX / 2) return cel_error_set(err, CEL_ERR_LIMIT, "cuda: batch block tables too large");
    if (n_tab > be->cap_tab) { /* grow the meta buffers; graphs captured their addresses */
        int32_t cap = be->cap_tab;
        while (cap < n_tab) cap *= 2;
        size_t bytes = ((size_t)6 * be->cap_t + (size_t)cap) * sizeof(int32_t);
        int32_t *h = NULL, *d = NULL;
        CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
        CEL_CUDA_CHECK(err, cudaHostAlloc((void **)&h, bytes, cudaHostAllocDefault));
        cel_status st = cu_alloc((void **)&d, bytes, "batch metadata", err);
        if (st != CEL_OK) {
            cudaFreeHost(h);
            return st;
        }
        cu_graphs_clear(be);
        cudaFreeHost(be->meta_host);
        cu_free(be->meta_dev);
        be->meta_host = h;
        be->meta_dev = d;
        be->cap_tab = cap;
    }
    int32_t *m = be->meta_host;
    int32_t *tok = META_TOK(be, m), *pos = META_POS(be, m), *blk = META_BLK(be, m), *seq = META_SEQ(be, m);
    int32_t *out = META_OUT(be, m), *off = META_OFF(be, m), *tab = META_TAB(be, m);
    for (int32_t t = 0; t < T; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= be->V)
            return cel_error_set(err, CEL_ERR_INVALID, "cuda: token %d at batch row %d is outside the vocabulary (%d)",
                                 (int)b->tokens[t], (int)t, (int)be->V);
        tok[t] = b->tokens[t];
        seq[t] = -1;
    }
    int32_t at = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const cel_batch_seq *q = &b->seqs[s];
        int32_t need = (int32_t)(((int64_t)q->n_past + q->n_new + be->bs - 1) / be->bs);
        for (int32_t i = 0; i < need; i++) {
            if (q->block_table[i] < 0 || q->block_table[i] >= be->base.n_blocks)
                return cel_error_set(err, CEL_ERR_INVALID, "cuda: sequence %d block %d is %d, outside the pool of %d",
                                     (int)s, (int)i, (int)q->block_table[i], (int)be->base.n_blocks);
            tab[at + i] = q->block_table[i];
        }
        off[s] = at;
        for (int32_t i = 0; i < q->n_new; i++) {
            int32_t t = q->first + i;
            if (seq[t] != -1)
                return cel_error_set(err, CEL_ERR_INVALID, "cuda: batch row %d belongs to sequences %d and %d", (int)t,
                                     (int)seq[t], (int)s);
            seq[t] = s;
            pos[t] = q->n_past + i;
            blk[t] = q->block_table[pos[t] / be->bs];
        }
        at += need;
    }
    for (int32_t t = 0; t < T; t++)
        if (seq[t] < 0) return cel_error_set(err, CEL_ERR_INVALID, "cuda: batch row %d belongs to no sequence", (int)t);
    for (int32_t i = 0; i < b->n_out; i++) {
        if (b->out_rows[i] < 0 || b->out_rows[i] >= T)
            return cel_error_set(err, CEL_ERR_INVALID, "cuda: output row %d is outside the batch of %d",
                                 (int)b->out_rows[i], (int)T);
        out[i] = b->out_rows[i];
    }
    *n_tab_out = at;
    *decode_only = dec && b->n_seqs == T;
    return CEL_OK;
}

/* Whether the batch's head can start from the final norm computed in the
 * last layer's down-GEMV epilogue (v3 small batches): every row is an output
 * row, in order, in one head pass. The output GEMV then runs as a v3 GEMV
 * with one warp per row - the bits of the v2 GEMV cu_gemm uses there - on
 * the same normalized rows (the epilogue has cel__cuk_rmsnorm's bits), so
 * the logits are the same either way; one launch fewer. */
static bool cu_head_in_body(const cu_backend *be, const cel_batch *b)
{
    const int32_t T = b->n_tokens;
    if (!cu_small_v3(be, T) || be->L <= 0 || b->n_out != T || T > be->logit_rows) return false;
    for (int32_t i = 0; i < T; i++)
        if (b->out_rows[i] != i) return false;
    return true;
}

/* Runs body + head (+ argmax or sampling of the head rows, per `mode`) for
 * the batch, through a graph when possible: a decode step - every layer, the
 * final norm, the output GEMV and the argmax / sampling - is one graph launch. On
 * return be->logits holds the first min(n_out, logit_rows) rows' logits
 * (the caller handles larger n_out by extra head passes). */
static cel_status cu_run(cu_backend *be, const cel_batch *b, bool decode_only, int mode, cel_error *err)
{
    const int32_t T = b->n_tokens, n_head_rows = b->n_out < be->logit_rows ? b->n_out : be->logit_rows;
    const int32_t *out_dev = META_OUT(be, be->meta_dev);
    const bool hb = cu_head_in_body(be, b);
    if (be->graphs_on && decode_only) {
        cu_graph *g = cu_graph_slot(be, T, n_head_rows, mode, hb);
        g->last_use = ++be->clock;
        if (!g->exec && g->seen >= 1) { /* second sighting: capture */
            cudaGraph_t graph = NULL;
            cudaError_t ce = cudaStreamBeginCapture(be->stream, cudaStreamCaptureModeThreadLocal);
            cel_status st = CEL_OK;
            cel_error cap_err;
            cel_error_clear(&cap_err);
            if (ce == cudaSuccess) {
                st = cu_enqueue_body(be, T, hb, true, &cap_err);
                if (st == CEL_OK && n_head_rows > 0)
                    st = cu_enqueue_head(be, out_dev, n_head_rows, mode, 0, hb, &cap_err);
                ce = cudaStreamEndCapture(be->stream, &graph);
                if (ce == cudaSuccess && st == CEL_OK) ce = cudaGraphInstantiate(&g->exec, graph, 0);
                if (graph) cudaGraphDestroy(graph);
            }
            if (ce != cudaSuccess || st != CEL_OK) {
                cel_log(&be->log, CEL_LOG_WARN, "cuda: graph capture failed (%s%s%s); running steps without graphs",
                        ce != cudaSuccess ? cudaGetErrorString(ce) : "", st != CEL_OK ? " " : "",
                        st != CEL_OK ? cap_err.msg : "");
                cudaGetLastError();
                g->exec = NULL;
                cu_graphs_clear(be);
                be->graphs_on = false;
                be->info.graphs = false;
            }
        }
        if (g->exec) {
            CEL_CUDA_CHECK(err, cudaGraphLaunch(g->exec, be->stream));
            return CEL_OK;
        }
        g->seen++;
    }
    CEL_TRY(cu_enqueue_body(be, T, hb, decode_only, err));
    if (n_head_rows > 0) CEL_TRY(cu_enqueue_head(be, out_dev, n_head_rows, mode, 0, hb, err));
    return CEL_OK;
}

/* Checks b's sampling requests and stages them (host pinned -> device, on
 * the stream, before the forward's launches). */
static cel_status cu_stage_samples(cu_backend *be, const cel_batch *b, cel_error *err)
{
    if (!b->tokens_out || !b->logprob_out || !b->logits)
        return cel_error_set(err, CEL_ERR_INVALID, "cuda: a sampling batch needs tokens_out, logprob_out and logits");
    if (b->n_out > be->cap_t)
        return cel_error_set(err, CEL_ERR_INVALID, "cuda: %d output rows exceed max_batch_tokens %d", (int)b->n_out,
                             (int)be->cap_t);
    for (int32_t i = 0; i < b->n_out; i++) {
        const cel_batch_sample *q = &b->sample[i];
        if (q->on && (!(q->temperature >= 0.0f) || !isfinite(q->temperature) || q->top_k < 0 ||
                      q->top_k > CEL_BACKEND_SAMPLE_MAX_K || !(q->top_p > 0.0f && q->top_p <= 1.0f) ||
                      !(q->min_p >= 0.0f && q->min_p <= 1.0f) || !(q->u >= 0.0 && q->u < 1.0)))
            return cel_error_set(err, CEL_ERR_INVALID,
                                 "cuda: output row %d: sampling request out of range (temperature %g, top_k %d, "
                                 "top_p %g, min_p %g, u %g)",
                                 (int)i, (double)q->temperature, (int)q->top_k, (double)q->top_p, (double)q->min_p, q->u);
        cel__cu_sample_req_fill(&be->samp_req_host[i], q);
    }
    CEL_CUDA_CHECK(err, cudaMemcpyAsync(be->samp_req_dev, be->samp_req_host, (size_t)b->n_out * sizeof *be->samp_req_host,
                                        cudaMemcpyHostToDevice, be->stream));
    return CEL_OK;
}

/* After a sampling head pass over output rows [r0, r0 + n): tokens and
 * logprobs to the batch, and the logits of the rows left to the CPU (runs of
 * consecutive rows in one copy each). */
static cel_status cu_collect_samples(cu_backend *be, const cel_batch *b, int32_t r0, int32_t n, cel_error *err)
{
    int32_t *tok = be->samp_out_host;
    float *lp = (float *)(be->samp_out_host + be->logit_rows);
    CEL_CUDA_CHECK(err, cudaMemcpyAsync(tok, be->samp_tok_dev, (size_t)n * sizeof *tok, cudaMemcpyDeviceToHost, be->stream));
    CEL_CUDA_CHECK(err, cudaMemcpyAsync(lp, be->samp_lp_dev, (size_t)n * sizeof *lp, cudaMemcpyDeviceToHost, be->stream));
    CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
    const size_t V = (size_t)be->V;
    for (int32_t i = 0; i < n; i++) {
        const cel_batch_sample *q = &b->sample[r0 + i];
        const int32_t t = q->on ? tok[i] : -1;
        if (t >= be->V) return cel_error_set(err, CEL_ERR_INTERNAL, "cuda: sampled token %d outside the vocabulary", (int)t);
        b->tokens_out[r0 + i] = t;
        b->logprob_out[r0 + i] = t >= 0 && q->want_logprob ? lp[i] : 0.0f;
        if (t >= 0) be->info.sampled_rows++;
        else if (q->on) be->info.sample_given_back++;
    }
    for (int32_t i = 0; i < n;) {
        if (b->tokens_out[r0 + i] >= 0) {
            i++;
            continue;
        }
        int32_t j = i + 1;
        while (j < n && b->tokens_out[r0 + j] < 0) j++;
        CEL_CUDA_CHECK(err, cudaMemcpyAsync(b->logits + (size_t)(r0 + i) * V, be->logits + (size_t)i * V,
                                            (size_t)(j - i) * V * sizeof(float), cudaMemcpyDeviceToHost, be->stream));
        i = j;
    }
    CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
    return CEL_OK;
}

/* The forward pass; logits to b->logits, or argmax ids to tokens_out. */
static cel_status cu_forward_run(cu_backend *be, const cel_batch *b, float *logits_out, int32_t *tokens_out,
                                 cel_error *err)
{
    int32_t n_tab = 0;
    bool decode_only = false;
    CEL_CUDA_CHECK(err, cudaSetDevice(be->device));
    if (b->n_out > 0 && !logits_out && !tokens_out)
        return cel_error_set(err, CEL_ERR_INVALID, "cuda: batch wants %d output rows but has no logits buffer",
                             (int)b->n_out);
    CEL_TRY(cu_prepare_meta(be, b, &n_tab, &decode_only, err));
    const int mode = tokens_out ? CU_HEAD_ARGMAX
                     : b->sample && b->n_out > 0 && be->base.can_sample ? CU_HEAD_SAMPLE
                                                                         : CU_HEAD_LOGITS;
    if (mode == CU_HEAD_SAMPLE) CEL_TRY(cu_stage_samples(be, b, err));
    CEL_CUDA_CHECK(err, cudaMemcpyAsync(be->meta_dev, be->meta_host, ((size_t)6 * be->cap_t + (size_t)n_tab) * sizeof(int32_t),
                                        cudaMemcpyHostToDevice, be->stream));
    CEL_TRY(cu_run(be, b, decode_only, mode, err));

    /* logits of the wanted rows, logit_rows at a time */
    const size_t V = (size_t)be->V;
    bool direct = false;
    if (logits_out) {
        struct cudaPointerAttributes pa;
        if (cudaPointerGetAttributes(&pa, logits_out) == cudaSuccess)
            direct = pa.type == cudaMemoryTypeHost;
        else
            cudaGetLastError();
    }
    for (int32_t r0 = 0; r0 < b->n_out; r0 += be->logit_rows) {
        const int32_t n = b->n_out - r0 < be->logit_rows ? b->n_out - r0 : be->logit_rows;
        /* the first head pass (and its argmax / sampling) ran in cu_run */
        if (r0 > 0) CEL_TRY(cu_enqueue_head(be, META_OUT(be, be->meta_dev) + r0, n, mode, r0, false, err));
        if (mode == CU_HEAD_SAMPLE) {
            CEL_TRY(cu_collect_samples(be, b, r0, n, err));
        } else if (tokens_out) {
            CEL_CUDA_CHECK(err, cudaMemcpyAsync(be->argmax_host, be->argmax_dev, (size_t)n * sizeof(int32_t),
                                                cudaMemcpyDeviceToHost, be->stream));
            CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
            memcpy(tokens_out + r0, be->argmax_host, (size_t)n * sizeof(int32_t));
        } else if (direct) {
            CEL_CUDA_CHECK(err, cudaMemcpyAsync(logits_out + (size_t)r0 * V, be->logits, (size_t)n * V * sizeof(float),
                                                cudaMemcpyDeviceToHost, be->stream));
            CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
        } else {
            CEL_CUDA_CHECK(err, cudaMemcpyAsync(be->logits_host, be->logits, (size_t)n * V * sizeof(float),
                                                cudaMemcpyDeviceToHost, be->stream));
            CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
            memcpy(logits_out + (size_t)r0 * V, be->logits_host, (size_t)n * V * sizeof(float));
        }
    }
    CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
    return CEL_OK;
}

/* st, after draining the stream when it is a failure: a call that fails
 * part way (a forward pass, a weight upload) may leave copies from pinned
 * host buffers (metadata, sampling requests, weight staging), and kernels
 * that read them, queued; the next call rewrites those buffers from the
 * host. The first error is the one reported. */
static cel_status cu_drain_on_error(cu_backend *be, cel_status st)
{
    if (st != CEL_OK) {
        (void)cudaStreamSynchronize(be->stream);
        (void)cudaGetLastError();
    }
    return st;
}

static cel_status cu_forward_impl(cu_backend *be, const cel_batch *b, float *logits_out, int32_t *tokens_out,
                                  cel_error *err)
{
    return cu_drain_on_error(be, cu_forward_run(be, b, logits_out, tokens_out, err));
}

static cel_status cu_forward(cel_backend *base, const cel_batch *b, cel_error *err)
{
    return cu_forward_impl((cu_backend *)base, b, b->logits, NULL, err);
}

cel_status cel_backend_cuda_forward_argmax(cel_backend *base, const cel_batch *b, int32_t *tokens_out, cel_error *err)
{
    if (!base || base->v != &cu_vtbl) return cel_error_set(err, CEL_ERR_INVALID, "cuda: not a CUDA backend");
    if (b->n_out > 0 && !tokens_out) return cel_error_set(err, CEL_ERR_INVALID, "cuda: no output token buffer");
    return cu_forward_impl((cu_backend *)base, b, NULL, tokens_out, err);
}

static cel_status cu_copy_block(cel_backend *base, int32_t src, int32_t dst, int32_t n_tokens, cel_error *err)
{
    cu_backend *be = (cu_backend *)base;
    if (src < 0 || src >= base->n_blocks || dst < 0 || dst >= base->n_blocks || n_tokens < 0 || n_tokens > be->bs)
        return cel_error_set(err, CEL_ERR_INVALID, "cuda: copy_block(%d -> %d, %d tokens) outside the pool of %d x %d",
                             (int)src, (int)dst, (int)n_tokens, (int)base->n_blocks, (int)be->bs);
    if (src == dst || n_tokens == 0) return CEL_OK;
    CEL_CUDA_CHECK(err, cudaSetDevice(be->device));
    CEL_CUDA_CHECK(err, cel__cuk_copy_block(be->stream, be->k_cache, be->v_cache, be->L, base->n_blocks, be->nkv, be->bs,
                                            be->hd, src, dst, n_tokens));
    CEL_CUDA_CHECK(err, cudaStreamSynchronize(be->stream));
    return CEL_OK;
}

static cel_status cu_weights_changed(cel_backend *base, cel_error *err)
{
    cu_backend *be = (cu_backend *)base;
    CEL_CUDA_CHECK(err, cudaSetDevice(be->device));
    /* same buffers, same addresses: captured graphs stay valid */
    return cu_drain_on_error(be, cu_upload_weights(be, err));
}

static void cu_destroy(cel_backend *base)
{
    cu_backend *be = (cu_backend *)base;
    if (!be) return;
    cudaSetDevice(be->device);
    if (be->stream) cudaStreamSynchronize(be->stream);
    cu_graphs_clear(be);
    if (be->layers) {
        for (int32_t l = 0; l < be->L; l++) {
            cu_layer *cl = &be->layers[l];
            cu_free(cl->wqkv);
            cu_free(cl->wo);
            cu_free(cl->wgu);
            cu_free(cl->wdown);
            cu_free(cl->attn_norm);
            cu_free(cl->ffn_norm);
            cu_free(cl->bqkv);
            cu_free(cl->q_norm);
            cu_free(cl->k_norm);
        }
        free(be->layers);
    }
    if (be->output != be->tok_embd) cu_free(be->output);
    cu_free(be->tok_embd);
    cu_free(be->output_norm);
    cu_free(be->inv_freq);
    cu_free(be->k_cache);
    cu_free(be->v_cache);
    cu_free(be->x);
    cu_free(be->qkv);
    cu_free(be->gu);
    cu_free(be->logits);
    cu_free(be->xb);
    cu_free(be->xn);
    cu_free(be->argmax_dev);
    cu_free(be->argmax_part_v);
    cu_free(be->argmax_part_i);
    cu_free(be->argmax_count);
    cu_free(be->samp_req_dev);
    cu_free(be->samp_tok_dev);
    cu_free(be->samp_lp_dev);
    if (be->samp_req_host) cudaFreeHost(be->samp_req_host);
    if (be->samp_out_host) cudaFreeHost(be->samp_out_host);
    cu_free(be->attn_part);
    cu_free(be->attn_count);
    cu_free(be->gemv_count);
    cu_free(be->qkv_count);
    cu_free(be->meta_dev);
    cu_free(be->stage_dev);
    cu_free(be->blas_ws);
    if (be->meta_host) cudaFreeHost(be->meta_host);
    if (be->stage_host) cudaFreeHost(be->stage_host);
    if (be->logits_host) cudaFreeHost(be->logits_host);
    if (be->argmax_host) cudaFreeHost(be->argmax_host);
    if (be->blas) cublasDestroy(be->blas);
    if (be->stream) cudaStreamDestroy(be->stream);
    free(be);
}

static const cel_backend_vtbl cu_vtbl = {
    .name = "cuda",
    .forward = cu_forward,
    .copy_block = cu_copy_block,
    .weights_changed = cu_weights_changed,
    .free = cu_destroy,
};

/* ----------------------------------------------------------------- create */

/* Finds the device, checks driver and compute capability. */
static cel_status cu_open_device(cu_backend *be, cel_error *err)
{
    int drv = 0, rt = 0, n = 0;
    cudaRuntimeGetVersion(&rt);
    cudaError_t e = cudaDriverGetVersion(&drv);
    if (e != cudaSuccess || drv == 0)
        return cel_error_set(err, CEL_ERR_DEVICE, "cuda: no NVIDIA driver found (cudaDriverGetVersion: %s)",
                             e != cudaSuccess ? cudaGetErrorString(e) : "version 0");
    if (drv < rt)
        return cel_error_set(err, CEL_ERR_DEVICE,
                             "cuda: the NVIDIA driver supports CUDA %d.%d but celine was built with CUDA %d.%d: "
                             "update the driver or rebuild with an older toolkit",
                             drv / 1000, (drv % 1000) / 10, rt / 1000, (rt % 1000) / 10);
    e = cudaGetDeviceCount(&n);
    if (e == cudaErrorInsufficientDriver)
        return cel_error_set(err, CEL_ERR_DEVICE, "cuda: the NVIDIA driver is too old for CUDA %d.%d (%s)", rt / 1000,
                             (rt % 1000) / 10, cudaGetErrorString(e));
    if (e != cudaSuccess || n <= 0) {
        cudaGetLastError();
        return cel_error_set(err, CEL_ERR_DEVICE, "cuda: no CUDA device found (cudaGetDeviceCount: %s)",
                             e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    const char *env = getenv("CELINE_CUDA_DEVICE");
    be->device = env && *env ? atoi(env) : 0;
    if (be->device < 0 || be->device >= n)
        return cel_error_set(err, CEL_ERR_DEVICE, "cuda: CELINE_CUDA_DEVICE=%d but only %d device(s) exist", be->device, n);
    CEL_CUDA_CHECK(err, cudaSetDevice(be->device));
    struct cudaDeviceProp prop;
    CEL_CUDA_CHECK(err, cudaGetDeviceProperties(&prop, be->device));
    if (prop.major < 8)
        return cel_error_set(err, CEL_ERR_DEVICE, "cuda: %s has compute capability %d.%d; celine needs 8.0 or newer (BF16)",
                             prop.name, prop.major, prop.minor);
    snprintf(be->info.device, sizeof be->info.device, "%s", prop.name);
    be->info.cc_major = prop.major;
    /* griddepcontrol needs sm_90, in the device and in the code that runs on
     * it (an sm_80-only build JIT-compiled for this device has no waits) */
    if (be->pdl && (prop.major < 9 || !cel__cuk_pdl_compiled())) {
        cel_log(&be->log, CEL_LOG_WARN,
                "cuda: CELINE_CUDA_PDL=1 ignored: %s", prop.major < 9 ? "the device is older than sm_90"
                                                                    : "the kernels were not built for sm_90 or newer");
        be->pdl = false;
    }
    be->info.cc_minor = prop.minor;
    be->info.n_sm = prop.multiProcessorCount;
    be->info.total_mem = prop.totalGlobalMem;
    be->info.driver_version = drv;
    be->info.runtime_version = rt;
    int clk = 0, bus = 0;
    if (cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, be->device) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, be->device) == cudaSuccess && clk > 0 && bus > 0)
        be->info.mem_bandwidth_gbs = 2.0 * (double)clk * 1e3 * (double)bus / 8.0 / 1e9; /* DDR: 2 transfers per clock */
    cudaGetLastError();
    return CEL_OK;
}

/* Checks the model's shapes against what the kernels support. */
static cel_status cu_check_model(const cel_model *m, cel_error *err)
{
    const cel_hparams *hp = &m->hp;
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->n_ff <= 0 ||
        hp->n_vocab <= 0 || hp->head_dim <= 0 || !m->layers)
        return cel_error_set(err, CEL_ERR_FORMAT, "cuda: model hyper-parameters are incomplete");
    if (hp->n_head % hp->n_head_kv != 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "cuda: n_head %d is not a multiple of n_head_kv %d", (int)hp->n_head,
                             (int)hp->n_head_kv);
    if (hp->head_dim % 32 != 0 || hp->head_dim > 256 || hp->head_dim / 32 == 5 || hp->head_dim / 32 == 6 ||
        hp->head_dim / 32 == 7)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED,
                             "cuda: head_dim %d is not supported by the CUDA attention kernel (32, 64, 96, 128 or 256)",
                             (int)hp->head_dim);
    if (!m->tok_embd || !m->output_norm)
        return cel_error_set(err, CEL_ERR_FORMAT, "cuda: model has no token embedding or output norm");
    return CEL_OK;
}

/* The paths a backend takes when the environment names none. An opt-in
 * path becomes a default here, and only here, once a GPU run has checked
 * and timed it (tests/gpu/run.sh: summary.json's "recommend"; bench/README
 * "After a GPU run"). The CELINE_CUDA_* variables pick either way, so A/B
 * runs (bench_gpu, the tests) name every path they mean whatever these are.
 * H200 run of 2026-11-27 (bench/results/gpu-h200-2026-11-27-*): v3 at batch
 * 1 45.7% of the roofline vs v2's 36.8%, with PDL and no L2 prefetch 48.1%
 * (2 KiB: 44.5%); the tiled prefill 1.78x the per-token kernel at 8 x 1024
 * tokens; every CUDA test passed on each path. H100 run of the same day
 * (gpu-h100-2026-11-27-*): v3 + PDL without prefetch 56.8%, with the q/k/v
 * post-process as its own kernel 58.0%, with attention chunks of 16
 * positions 60.2% (53.0 -> 55.2% at a 1024-token prompt); two runs later,
 * with the norms in the consuming GEMVs 67.3 / 67.5 / 67.5% against 63.2 /
 * 63.4 / 63.4% in their producers' epilogues (same processes). */
static const struct cu_defaults {
    int decode;           /* CELINE_CUDA_DECODE: v1, v2 or v3 (1, 2, 3) */
    bool prefill_tiled;   /* CELINE_CUDA_PREFILL: tiled or per-token */
    bool pdl;             /* CELINE_CUDA_PDL: 1 or 0 (v3 decode, sm_90+) */
    int32_t pdl_prefetch; /* CELINE_CUDA_PDL_PREFETCH: L2 prefetch bytes per warp */
    bool fuse_qkv;        /* CELINE_CUDA_FUSE_QKV: 1 or 0 (v3) */
    bool sample;          /* CELINE_CUDA_SAMPLE: 1 or 0 (sampling on the GPU) */
    int32_t attn_chunk;   /* CELINE_CUDA_ATTN_CHUNK: v3 attention positions per chunk (cu_attn_chunks) */
    bool norm_consumer;   /* CELINE_CUDA_NORM: consumer or producer (v3: where each RMSNorm runs) */
    bool rope_in_attn;    /* CELINE_CUDA_ROPE_IN_ATTN: 1 or 0 (v3 decode-only batches; not yet timed) */
} cu_defaults = {.decode = 3, .prefill_tiled = true, .pdl = true, .pdl_prefetch = 0, .fuse_qkv = false,
                 .sample = false, .attn_chunk = 16, .norm_consumer = true, .rope_in_attn = false};

/* The values CELINE_CUDA_ATTN_CHUNK takes (multiples of CEL__CU_ATTN_CHUNK_STEP). */
static const char *const cu_attn_chunks[] = {"16", "32", "64", "128", NULL};

static const char *const cu_off_on[] = {"0", "1", NULL}; /* the values of a CELINE_CUDA_* switch */

/* The value of a CELINE_CUDA_* variable: the index of its text in `names`
 * (NULL-terminated), or def when it is unset; a value not in the list is
 * logged and ignored. */
static int cu_env_pick(const cu_backend *be, const char *var, const char *const *names, int def)
{
    const char *v = getenv(var);
    if (!v || !*v) return def;
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i])) return i;
    cel_log(&be->log, CEL_LOG_WARN, "cuda: %s=%s is not one of the values it takes; ignored", var, v);
    return def;
}

cel_status cel_backend_cuda_create(const cel_model *m, const cel_backend_params *p, cel_backend **out, cel_error *err)
{
    if (!out) return cel_error_set(err, CEL_ERR_INVALID, "cuda: no output pointer");
    *out = NULL;
    if (!m) return cel_error_set(err, CEL_ERR_INVALID, "cuda: no model");
    CEL_TRY(cu_check_model(m, err));
    cu_backend *be = (cu_backend *)calloc(1, sizeof *be);
    if (!be) return cel_error_set(err, CEL_ERR_NOMEM, "cuda: out of host memory");
    be->base.v = &cu_vtbl;
    be->base.model = m;
    if (p) be->log = p->log;
    cel_status st = CEL_OK;
    const cel_hparams *hp = &m->hp;
    be->E = hp->n_embd;
    be->nh = hp->n_head;
    be->nkv = hp->n_head_kv;
    be->hd = hp->head_dim;
    be->Q = hp->n_head * hp->head_dim;
    be->KV = hp->n_head_kv * hp->head_dim;
    be->F = hp->n_ff;
    be->V = hp->n_vocab;
    be->L = hp->n_layer;
    be->bs = p && p->block_size > 0 ? p->block_size : 16;
    be->max_tokens = p && p->max_batch_tokens > 0 ? p->max_batch_tokens : 512;
    be->logit_rows = be->max_tokens < CEL__CU_LOGIT_ROWS ? be->max_tokens : CEL__CU_LOGIT_ROWS;
    be->use_gemv = be->E % 8 == 0 && be->Q % 8 == 0 && be->F % 8 == 0;
    static const char *const decodes[] = {"v1", "v2", "v3", NULL}, *const prefills[] = {"per-token", "tiled", NULL},
                             *const splits[] = {"0", "1", "2", "4", NULL};
    const int dec = cu_env_pick(be, "CELINE_CUDA_DECODE", decodes, cu_defaults.decode - 1);
    be->decode_v1 = dec == 0;
    be->decode_v3 = dec == 2;
    be->prefill_tiled = cu_env_pick(be, "CELINE_CUDA_PREFILL", prefills, cu_defaults.prefill_tiled) == 1;
    /* v3 A/B timing of the split-K GEMV (0: the split the shape picks) */
    be->gemv_split = atoi(splits[cu_env_pick(be, "CELINE_CUDA_GEMV_SPLIT", splits, 0)]);
    /* programmatic dependent launch; cu_open_device turns it off where the
     * device or the kernels' build cannot wait on the grid */
    be->pdl = cu_env_pick(be, "CELINE_CUDA_PDL", cu_off_on, cu_defaults.pdl) == 1;
    be->pdl_prefetch = cu_defaults.pdl_prefetch;
    const char *pf_env = getenv("CELINE_CUDA_PDL_PREFETCH");
    if (pf_env && *pf_env) {
        char *end = NULL;
        long v = strtol(pf_env, &end, 10);
        if (*end == '\0' && v >= 0 && v <= (1 << 20)) be->pdl_prefetch = (int32_t)(v / 16 * 16);
        else cel_log(&be->log, CEL_LOG_WARN, "cuda: CELINE_CUDA_PDL_PREFETCH=%s is not 0..1048576; ignored", pf_env);
    }
    be->fuse_qkv = cu_env_pick(be, "CELINE_CUDA_FUSE_QKV", cu_off_on, cu_defaults.fuse_qkv) == 1;
    static const char *const norms[] = {"producer", "consumer", NULL};
    be->norm_consumer = cu_env_pick(be, "CELINE_CUDA_NORM", norms, cu_defaults.norm_consumer) == 1;
    be->rope_in_attn = cu_env_pick(be, "CELINE_CUDA_ROPE_IN_ATTN", cu_off_on, cu_defaults.rope_in_attn) == 1;
    {
        int def = 0;
        while (cu_attn_chunks[def] && atoi(cu_attn_chunks[def]) != cu_defaults.attn_chunk) def++;
        const int pick = cu_env_pick(be, "CELINE_CUDA_ATTN_CHUNK", cu_attn_chunks, def);
        /* a default outside the list (a slip in cu_defaults) takes the kernel's own */
        be->attn_chunk = cu_attn_chunks[pick] ? atoi(cu_attn_chunks[pick]) : 0;
    }
    be->graphs_on = cu_env_pick(be, "CELINE_CUDA_GRAPHS", cu_off_on, 1) == 1;
    be->base.block_size = be->bs;

    if ((st = cu_open_device(be, err)) != CEL_OK) goto fail;
    CEL_CUDA_GOTO(err, st, fail, cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking));
    {
        cublasStatus_t bs = cublasCreate(&be->blas);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            be->blas = NULL;
            st = cel_error_set(err, CEL_ERR_DEVICE, "cuda: cublasCreate: %s", cublasGetStatusString(bs));
            goto fail;
        }
    }

    /* ---- memory plan: weights + activations must fit the budget, the KV pool gets what it asks (or what is left) */
    const size_t E = (size_t)be->E, Q = (size_t)be->Q, KV = (size_t)be->KV, F = (size_t)be->F, V = (size_t)be->V;
    const size_t T = (size_t)be->max_tokens, L = (size_t)be->L;
    const bool tied = m->output == NULL || m->output == m->tok_embd || m->output->data == m->tok_embd->data;
    size_t w_bytes = (V * E * (tied ? 1 : 2)) * 2 + L * ((Q + 2 * KV) * E + Q * E + 2 * F * E + F * E) * 2 +
                     L * (2 * E + (Q + 2 * KV) + 2 * (size_t)be->hd) * 4 + E * 4 + (size_t)be->hd * 2;
    size_t xb_w = E > Q ? E : Q;
    if (F > xb_w) xb_w = F;
    size_t act_bytes = T * E * 4 + T * (Q + 2 * KV) * 4 + T * 2 * F * 4 + T * xb_w * 2 + T * E * 2 +
                       (size_t)be->logit_rows * V * 4 + CEL__CU_BLAS_WS_BYTES + CEL__CU_STAGE_BYTES + (1 << 20) +
                       (size_t)be->logit_rows * (CEL__CU_ARGMAX_MAX_SPLIT * 8 + 4) +
                       cel__cuk_attn_part_floats(be->nh, be->hd) * 4 + (size_t)CEL__CU_ATTN_SPLIT_ROWS * be->nh * 4;
    size_t free_b = 0, total_b = 0;
    CEL_CUDA_GOTO(err, st, fail, cudaMemGetInfo(&free_b, &total_b));
    size_t budget = p && p->device_mem_bytes ? p->device_mem_bytes : (size_t)((double)free_b * 0.9);
    if (budget > free_b) {
        st = cel_error_set(err, CEL_ERR_DEVICE, "cuda: device memory budget %.0f MiB exceeds the %.0f MiB free on %s",
                           (double)budget / (1 << 20), (double)free_b / (1 << 20), be->info.device);
        goto fail;
    }
    const size_t blk_bytes = 2 * L * (size_t)be->bs * KV * 2;
    if (w_bytes + act_bytes + 2 * blk_bytes > budget) {
        st = cel_error_set(err, CEL_ERR_DEVICE,
                           "cuda: model does not fit: %.0f MiB of weights + %.0f MiB of activations (max_batch_tokens %d) "
                           "+ KV cache exceed the device memory budget of %.0f MiB on %s (%.0f MiB free of %.0f)",
                           (double)w_bytes / (1 << 20), (double)act_bytes / (1 << 20), (int)be->max_tokens,
                           (double)budget / (1 << 20), be->info.device, (double)free_b / (1 << 20),
                           (double)total_b / (1 << 20));
        goto fail;
    }
    size_t kv_want = p && p->kv_bytes ? p->kv_bytes : ((size_t)2 << 30);
    size_t kv_room = budget - w_bytes - act_bytes;
    if (kv_want > kv_room) {
        cel_log(&be->log, CEL_LOG_WARN, "cuda: KV cache cut from %.0f MiB to %.0f MiB to fit the device memory budget",
                (double)kv_want / (1 << 20), (double)kv_room / (1 << 20));
        kv_want = kv_room;
    }
    size_t nblk = kv_want / blk_bytes;
    if (nblk > INT32_MAX / 2) nblk = INT32_MAX / 2;
    if (nblk < 2) {
        st = cel_error_set(err, CEL_ERR_DEVICE, "cuda: KV budget of %zu bytes holds fewer than 2 blocks of %zu bytes",
                           kv_want, blk_bytes);
        goto fail;
    }
    be->base.n_blocks = (int32_t)nblk;
    be->kv_layer_elems = nblk * (size_t)be->nkv * (size_t)be->bs * (size_t)be->hd;
    be->info.weight_bytes = w_bytes;
    be->info.act_bytes = act_bytes;
    be->info.kv_bytes = nblk * blk_bytes;

    /* ---- allocations */
    if ((st = cu_alloc((void **)&be->tok_embd, V * E * 2, "token_embd", err)) != CEL_OK) goto fail;
    if (tied) be->output = be->tok_embd;
    else if ((st = cu_alloc((void **)&be->output, V * E * 2, "output", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->output_norm, E * 4, "output_norm", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->inv_freq, (size_t)be->hd / 2 * 4, "rope frequencies", err)) != CEL_OK) goto fail;
    be->layers = (cu_layer *)calloc(L, sizeof *be->layers);
    if (!be->layers) {
        st = cel_error_set(err, CEL_ERR_NOMEM, "cuda: out of host memory");
        goto fail;
    }
    for (size_t l = 0; l < L; l++) {
        cu_layer *cl = &be->layers[l];
        const cel_layer *ml = &m->layers[l];
        if ((st = cu_alloc((void **)&cl->wqkv, (Q + 2 * KV) * E * 2, "attn_qkv", err)) != CEL_OK) goto fail;
        if ((st = cu_alloc((void **)&cl->wo, Q * E * 2, "attn_output", err)) != CEL_OK) goto fail;
        if ((st = cu_alloc((void **)&cl->wgu, 2 * F * E * 2, "ffn_gate_up", err)) != CEL_OK) goto fail;
        if ((st = cu_alloc((void **)&cl->wdown, F * E * 2, "ffn_down", err)) != CEL_OK) goto fail;
        if ((st = cu_alloc((void **)&cl->attn_norm, E * 4, "attn_norm", err)) != CEL_OK) goto fail;
        if ((st = cu_alloc((void **)&cl->ffn_norm, E * 4, "ffn_norm", err)) != CEL_OK) goto fail;
        if (hp->has_qkv_bias || ml->bq) {
            if ((st = cu_alloc((void **)&cl->bqkv, (Q + 2 * KV) * 4, "attn_qkv.bias", err)) != CEL_OK) goto fail;
        }
        if (hp->has_qk_norm || ml->q_norm) {
            if ((st = cu_alloc((void **)&cl->q_norm, (size_t)be->hd * 4, "attn_q_norm", err)) != CEL_OK) goto fail;
            if ((st = cu_alloc((void **)&cl->k_norm, (size_t)be->hd * 4, "attn_k_norm", err)) != CEL_OK) goto fail;
        }
    }
    if ((st = cu_alloc((void **)&be->k_cache, L * be->kv_layer_elems * 2, "KV cache (K)", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->v_cache, L * be->kv_layer_elems * 2, "KV cache (V)", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->x, T * E * 4, "activations", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->qkv, T * (Q + 2 * KV) * 4, "activations", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->gu, T * 2 * F * 4, "activations", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->xb, T * xb_w * 2, "activations", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->xn, T * E * 2, "activations", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->logits, (size_t)be->logit_rows * V * 4, "logits", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->argmax_dev, (size_t)be->logit_rows * 4, "argmax", err)) != CEL_OK) goto fail;
    {
        const size_t parts = (size_t)be->logit_rows * CEL__CU_ARGMAX_MAX_SPLIT;
        if ((st = cu_alloc((void **)&be->argmax_part_v, parts * 4, "argmax scratch", err)) != CEL_OK ||
            (st = cu_alloc((void **)&be->argmax_part_i, parts * 4, "argmax scratch", err)) != CEL_OK ||
            (st = cu_alloc((void **)&be->argmax_count, (size_t)be->logit_rows * 4, "argmax counters", err)) != CEL_OK)
            goto fail;
    }
    if ((st = cu_alloc((void **)&be->attn_part, cel__cuk_attn_part_floats(be->nh, be->hd) * 4, "attention scratch",
                       err)) != CEL_OK)
        goto fail;
    if ((st = cu_alloc((void **)&be->attn_count, (size_t)CEL__CU_ATTN_SPLIT_ROWS * be->nh * 4, "attention counters",
                       err)) != CEL_OK)
        goto fail;
    if ((st = cu_alloc((void **)&be->gemv_count, 64, "GEMV counter", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->qkv_count, (size_t)(be->nh + 2 * be->nkv) * 4, "q/k/v counters", err)) != CEL_OK)
        goto fail;
    if ((st = cu_alloc(&be->blas_ws, CEL__CU_BLAS_WS_BYTES, "cuBLAS workspace", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc(&be->stage_dev, CEL__CU_STAGE_BYTES, "upload staging", err)) != CEL_OK) goto fail;
    be->cap_t = be->max_tokens;
    be->cap_tab = be->max_tokens * 4 > 1024 ? be->max_tokens * 4 : 1024;
    {
        size_t mb = ((size_t)6 * be->cap_t + (size_t)be->cap_tab) * sizeof(int32_t);
        if ((st = cu_alloc((void **)&be->meta_dev, mb, "batch metadata", err)) != CEL_OK) goto fail;
        CEL_CUDA_GOTO(err, st, fail, cudaHostAlloc((void **)&be->meta_host, mb, cudaHostAllocDefault));
    }
    CEL_CUDA_GOTO(err, st, fail, cudaHostAlloc(&be->stage_host, CEL__CU_STAGE_BYTES, cudaHostAllocDefault));
    CEL_CUDA_GOTO(err, st, fail,
                  cudaHostAlloc((void **)&be->logits_host, (size_t)be->logit_rows * V * 4, cudaHostAllocDefault));
    be->logits_host_floats = (size_t)be->logit_rows * V;
    CEL_CUDA_GOTO(err, st, fail, cudaHostAlloc((void **)&be->argmax_host, (size_t)be->logit_rows * 4, cudaHostAllocDefault));
    if ((st = cu_alloc((void **)&be->samp_req_dev, (size_t)be->cap_t * sizeof(cel__cu_sample_req), "sampling requests",
                       err)) != CEL_OK)
        goto fail;
    if ((st = cu_alloc((void **)&be->samp_tok_dev, (size_t)be->logit_rows * 4, "sampled tokens", err)) != CEL_OK) goto fail;
    if ((st = cu_alloc((void **)&be->samp_lp_dev, (size_t)be->logit_rows * 4, "sampled logprobs", err)) != CEL_OK) goto fail;
    CEL_CUDA_GOTO(err, st, fail,
                  cudaHostAlloc((void **)&be->samp_req_host, (size_t)be->cap_t * sizeof(cel__cu_sample_req),
                                cudaHostAllocDefault));
    CEL_CUDA_GOTO(err, st, fail,
                  cudaHostAlloc((void **)&be->samp_out_host, (size_t)be->logit_rows * 8, cudaHostAllocDefault));
    be->base.can_sample = cu_env_pick(be, "CELINE_CUDA_SAMPLE", cu_off_on, cu_defaults.sample) == 1;
    {
        cublasStatus_t bs = cublasSetStream(be->blas, be->stream);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(be->blas, be->blas_ws, CEL__CU_BLAS_WS_BYTES);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            st = cel_error_set(err, CEL_ERR_DEVICE, "cuda: cuBLAS setup: %s", cublasGetStatusString(bs));
            goto fail;
        }
    }

    /* ---- contents */
    {
        float *f = (float *)be->stage_host;
        cel_op_rope_freqs(hp, f);
        CEL_CUDA_GOTO(err, st, fail,
                      cudaMemcpyAsync(be->inv_freq, f, (size_t)be->hd / 2 * 4, cudaMemcpyHostToDevice, be->stream));
        CEL_CUDA_GOTO(err, st, fail, cudaStreamSynchronize(be->stream));
    }
    if (!tied && !m->output) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "cuda: model has no output tensor");
        goto fail;
    }
    if ((st = cu_upload_weights(be, err)) != CEL_OK) goto fail;
    /* a fresh pool: zero K/V so stray reads are finite */
    CEL_CUDA_GOTO(err, st, fail, cudaMemsetAsync(be->k_cache, 0, L * be->kv_layer_elems * 2, be->stream));
    CEL_CUDA_GOTO(err, st, fail, cudaMemsetAsync(be->v_cache, 0, L * be->kv_layer_elems * 2, be->stream));
    CEL_CUDA_GOTO(err, st, fail,
                  cudaMemsetAsync(be->attn_count, 0, (size_t)CEL__CU_ATTN_SPLIT_ROWS * be->nh * 4, be->stream));
    CEL_CUDA_GOTO(err, st, fail, cudaMemsetAsync(be->gemv_count, 0, 64, be->stream));
    CEL_CUDA_GOTO(err, st, fail, cudaMemsetAsync(be->qkv_count, 0, (size_t)(be->nh + 2 * be->nkv) * 4, be->stream));
    CEL_CUDA_GOTO(err, st, fail, cudaMemsetAsync(be->argmax_count, 0, (size_t)be->logit_rows * 4, be->stream));
    CEL_CUDA_GOTO(err, st, fail, cudaStreamSynchronize(be->stream));
    be->info.graphs = be->graphs_on;
    cel_log(&be->log, CEL_LOG_INFO,
            "cuda: %s (sm_%d%d, %d SMs), weights %.0f MiB, KV %d blocks (%.0f MiB), activations %.0f MiB, graphs %s",
            be->info.device, be->info.cc_major, be->info.cc_minor, be->info.n_sm, (double)w_bytes / (1 << 20),
            (int)nblk, (double)be->info.kv_bytes / (1 << 20), (double)act_bytes / (1 << 20),
            be->graphs_on ? "on" : "off");
    if (be->pdl)
        cel_log(&be->log, CEL_LOG_INFO, "cuda: programmatic dependent launch on (v3 decode: %s; L2 prefetch %d B per warp)",
                be->decode_v3 ? "active" : "inactive, CELINE_CUDA_DECODE is not v3", (int)be->pdl_prefetch);
    *out = &be->base;
    return CEL_OK;
fail:
    cu_destroy(&be->base);
    return st;
}

cel_status cel_backend_cuda_info(cel_backend *base, cel_cuda_info *out)
{
    if (!base || base->v != &cu_vtbl || !out) return CEL_ERR_INVALID;
    *out = ((cu_backend *)base)->info;
    return CEL_OK;
}

/* Frees the profiling events (those created so far). */
static void cu_prof_free(cu_prof *p)
{
    if (p->ev)
        for (int i = 0; i < p->cap; i++)
            if (p->ev[i]) cudaEventDestroy(p->ev[i]);
    free(p->ev);
    free(p->kind);
    free(p->bytes);
}

cel_status cel_backend_cuda_profile(cel_backend *base, const cel_batch *b, bool argmax, int graph_reps,
                                    cel_cuda_profile *out, cel_error *err)
{
    if (!base || base->v != &cu_vtbl || !b || !out)
        return cel_error_set(err, CEL_ERR_INVALID, "cuda: profile needs a CUDA backend, a batch and an output");
    cu_backend *be = (cu_backend *)base;
    memset(out, 0, sizeof *out);
    out->decode = be->decode_v1 ? "v1" : be->decode_v3 ? "v3" : "v2";
    out->attn_splits = cu_v3_kernels(be, b->n_tokens) ? cu_attn_splits(be, b->n_tokens) : 1;
    CEL_CUDA_CHECK(err, cudaSetDevice(be->device));
    int32_t n_tab = 0;
    bool decode_only = false;
    CEL_TRY(cu_prepare_meta(be, b, &n_tab, &decode_only, err));
    /* argmax, else sampling when the batch carries requests, else logits */
    const int mode = argmax ? CU_HEAD_ARGMAX : b->sample && b->n_out > 0 ? CU_HEAD_SAMPLE : CU_HEAD_LOGITS;
    if (mode == CU_HEAD_SAMPLE) CEL_TRY(cu_stage_samples(be, b, err));
    CEL_CUDA_CHECK(err, cudaMemcpyAsync(be->meta_dev, be->meta_host, ((size_t)6 * be->cap_t + (size_t)n_tab) * sizeof(int32_t),
                                        cudaMemcpyHostToDevice, be->stream));
    const int32_t n_head = b->n_out < be->logit_rows ? b->n_out : be->logit_rows;

    /* 1. one eager pass, an event after every launch */
    cu_prof p;
    memset(&p, 0, sizeof p);
    p.cap = 12 * be->L + 16;
    p.ev = (cudaEvent_t *)calloc((size_t)p.cap, sizeof *p.ev);
    p.kind = (uint8_t *)calloc((size_t)p.cap, 1);
    p.bytes = (double *)calloc((size_t)p.cap, sizeof *p.bytes);
    cel_status st = CEL_OK;
    if (!p.ev || !p.kind || !p.bytes) {
        st = cel_error_set(err, CEL_ERR_NOMEM, "cuda: profile: out of host memory");
        goto done;
    }
    for (int i = 0; i < p.cap; i++) CEL_CUDA_GOTO(err, st, done, cudaEventCreate(&p.ev[i]));
    /* ~10 ms of spinning at ~2 GHz: the host enqueues the whole pass meanwhile */
    CEL_CUDA_GOTO(err, st, done, cel__cuk_spin(be->stream, 20000000LL));
    be->prof = &p;
    cu_mark(be, CU_K_EMBED, 0.0); /* event 0: the start; its kind is not used */
    const bool hb = cu_head_in_body(be, b);
    st = cu_enqueue_body(be, b->n_tokens, hb, decode_only, err);
    if (st == CEL_OK && n_head > 0) st = cu_enqueue_head(be, META_OUT(be, be->meta_dev), n_head, mode, 0, hb, err);
    be->prof = NULL;
    if (st != CEL_OK) goto done;
    if (p.failed != cudaSuccess) {
        st = cel_error_set(err, CEL_ERR_DEVICE, "cuda: profile: cudaEventRecord: %s", cudaGetErrorString(p.failed));
        goto done;
    }
    CEL_CUDA_GOTO(err, st, done, cudaStreamSynchronize(be->stream));
    for (int i = 1; i < p.n; i++) {
        float ms = 0.0f;
        CEL_CUDA_GOTO(err, st, done, cudaEventElapsedTime(&ms, p.ev[i - 1], p.ev[i]));
        int k = p.kind[i];
        out->kind[k].ms += ms;
        out->kind[k].launches++;
        out->kind[k].bytes += p.bytes[i];
        out->kernel_ms += ms;
        out->launches++;
    }
    for (int k = 0; k < CU_K_COUNT && k < CEL_CUDA_PROF_KINDS; k++) out->kind[k].name = cu_kind_names[k];
    out->n_kinds = CU_K_COUNT < CEL_CUDA_PROF_KINDS ? CU_K_COUNT : CEL_CUDA_PROF_KINDS;

    /* 2. the same step as a graph: capture it (second sighting), then time replays */
    if (graph_reps > 0 && be->graphs_on && decode_only) {
        cu_graph *g = NULL;
        for (int tries = 0; tries < 3; tries++) {
            g = cu_graph_slot(be, b->n_tokens, n_head, mode, hb);
            if (g->exec) break;
            if ((st = cu_run(be, b, decode_only, mode, err)) != CEL_OK) goto done;
            CEL_CUDA_GOTO(err, st, done, cudaStreamSynchronize(be->stream));
            if (!be->graphs_on) break; /* capture failed: no graph figure */
        }
        g = be->graphs_on ? cu_graph_slot(be, b->n_tokens, n_head, mode, hb) : NULL;
        if (g && g->exec) {
            CEL_CUDA_GOTO(err, st, done, cudaGraphLaunch(g->exec, be->stream)); /* warm */
            CEL_CUDA_GOTO(err, st, done, cudaEventRecord(p.ev[0], be->stream));
            for (int r = 0; r < graph_reps; r++) CEL_CUDA_GOTO(err, st, done, cudaGraphLaunch(g->exec, be->stream));
            CEL_CUDA_GOTO(err, st, done, cudaEventRecord(p.ev[1], be->stream));
            CEL_CUDA_GOTO(err, st, done, cudaStreamSynchronize(be->stream));
            float ms = 0.0f;
            CEL_CUDA_GOTO(err, st, done, cudaEventElapsedTime(&ms, p.ev[0], p.ev[1]));
            out->graph_ms = ms / graph_reps;
        }
    }
done:
    be->prof = NULL;
    cudaStreamSynchronize(be->stream);
    cu_prof_free(&p);
    return st;
}

void cel_backend_cuda_set_graphs(cel_backend *base, bool on)
{
    if (!base || base->v != &cu_vtbl) return;
    cu_backend *be = (cu_backend *)base;
    if (!on) cu_graphs_clear(be);
    be->graphs_on = on;
    be->info.graphs = on;
}
