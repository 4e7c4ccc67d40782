/*
 * backend.h - the compute interface behind the engine: one forward pass over a
 * batch mixing sequences (prefill chunks and decode tokens), KV storage in
 * fixed-size blocks addressed by block index. The scheduler (sched.c) owns
 * which blocks a sequence uses; the backend owns the memory behind them.
 * Implementations: engine/cpu (the readable reference), engine/cuda.
 */
#ifndef CEL_ENGINE_BACKEND_H
#define CEL_ENGINE_BACKEND_H

#include "celine/engine.h"

/* One sequence's part of a batch. Its tokens occupy batch rows
 * [first, first + n_new) with positions n_past .. n_past + n_new - 1. */
typedef struct cel_batch_seq {
    const int32_t *block_table; /* block indices covering positions 0 .. n_past + n_new - 1 */
    int32_t n_blocks;
    int32_t n_past;             /* tokens already in the KV cache */
    int32_t n_new;              /* tokens of this sequence in this batch */
    int32_t first;              /* first batch row */
} cel_batch_seq;

/* A request to sample one output row on the device (backends with
 * can_sample). The semantics are engine/sample.h's with no penalties and no
 * logprob alternatives: temperature < CEL_BACKEND_GREEDY_T is argmax (lowest
 * id on ties); else logits l are shifted by their max and scaled by 1/T in
 * float, candidates are ordered by (l desc, id asc) when a filter is on and
 * by id otherwise, top-k, then top-p (smallest prefix whose mass >= p of the
 * top-k set's, or the row's, mass), then min-p (p_i >= min_p * p_max), and
 * the token is the first candidate whose running mass exceeds u times the
 * candidates' mass (sums in double, in a fixed per-row order). */
#define CEL_BACKEND_GREEDY_T 1e-6f     /* = CEL_SAMPLE_GREEDY_T */
#define CEL_BACKEND_SAMPLE_MAX_K 1024  /* largest top_k sampled on the device */
typedef struct cel_batch_sample {
    bool on;            /* false: this row's logits are copied (the default) */
    bool want_logprob;  /* also the chosen token's raw log-softmax */
    float temperature;
    int32_t top_k;      /* 0: off; <= CEL_BACKEND_SAMPLE_MAX_K */
    float top_p;        /* 1: off */
    float min_p;        /* 0: off */
    double u;           /* uniform in [0, 1) for the draw (unused when greedy) */
} cel_batch_sample;

typedef struct cel_batch {
    int32_t n_tokens;
    const int32_t *tokens;      /* [n_tokens], grouped by sequence */
    int32_t n_seqs;
    const cel_batch_seq *seqs;  /* [n_seqs] */
    int32_t n_out;
    const int32_t *out_rows;    /* [n_out] batch rows whose logits are wanted */
    float *logits;              /* [n_out][n_vocab], written by forward */
    /* Device sampling (only read by backends with can_sample; NULL: none).
     * For each output row i with sample[i].on the backend either samples it
     * - tokens_out[i] = the token, logprob_out[i] = its raw log-softmax when
     * want_logprob, logits row i left unspecified - or, when it cannot
     * (a row it cannot finish within its candidate cap, logits that are not
     * finite), copies logits row i and sets tokens_out[i] = -1. Rows without
     * .on get tokens_out[i] = -1 and their logits. Never a wrong token. */
    const cel_batch_sample *sample; /* [n_out] or NULL */
    int32_t *tokens_out;            /* [n_out], needed with sample */
    float *logprob_out;             /* [n_out], needed with sample */
} cel_batch;

typedef struct cel_backend cel_backend;

typedef struct cel_backend_vtbl {
    const char *name;
    /* Writes K/V of every batch token into its block slot, then computes
     * logits for out_rows. A row's result must not depend on the other rows
     * of the batch (batch invariance): fixed per-row reduction order.
     * Malformed batches (a token outside the vocabulary, a row covered by no
     * sequence or by two, a block index outside the pool, a table too short
     * for n_past + n_new, more rows than max_batch_tokens) are rejected with
     * CEL_ERR_INVALID / CEL_ERR_LIMIT before anything is written. */
    cel_status (*forward)(cel_backend *be, const cel_batch *b, cel_error *err);
    /* Copies the first n_tokens slots of block src into block dst, all
     * layers (copy-on-write when a shared block diverges). */
    cel_status (*copy_block)(cel_backend *be, int32_t src, int32_t dst, int32_t n_tokens, cel_error *err);
    /* The model's weights changed in host memory: refresh derived copies. */
    cel_status (*weights_changed)(cel_backend *be, cel_error *err);
    void (*free)(cel_backend *be);
} cel_backend_vtbl;

struct cel_backend {
    const cel_backend_vtbl *v;
    const cel_model *model;
    int32_t block_size; /* tokens per KV block */
    int32_t n_blocks;   /* blocks in the pool */
    bool can_sample;    /* forward honours cel_batch.sample (CUDA); false: always logits */
};

typedef struct cel_backend_params {
    int32_t n_threads;       /* CPU */
    int32_t block_size;
    size_t kv_bytes;         /* KV pool budget; n_blocks derives from it */
    int32_t max_batch_tokens;
    size_t device_mem_bytes; /* CUDA */
    cel_logger log;
} cel_backend_params;

/* Bytes one KV block needs for this model (K and V, all layers): both
 * backends store K and V as F16 (2 * n_layer * n_head_kv * head_dim *
 * block_size * 2 bytes). Implemented in engine/cpu/backend.c. */
size_t cel_backend_kv_block_bytes(const cel_hparams *hp, int32_t block_size, cel_backend_kind kind);

/* The CPU backend (engine/cpu/backend.c). Checks every tensor's presence,
 * dtype and shape against the hyper-parameters (errors name the tensor);
 * block_size 0 means 16 (at most 256), max_batch_tokens 0 means 512,
 * kv_bytes 0 means room for 8192 tokens, n_threads <= 0 all cores. All
 * memory (KV pool, batch scratch) is allocated here; forward never
 * allocates. Kernels: the best of AVX-512 (F/BW/VL/VNNI), AVX2+FMA+F16C or
 * portable C that the CPU supports, chosen at run time. */
cel_status cel_backend_cpu_create(const cel_model *m, const cel_backend_params *p, cel_backend **out, cel_error *err);
/* Returns CEL_ERR_UNSUPPORTED when celine was built without CUDA, CEL_ERR_DEVICE
 * when no usable GPU/driver is present or the model does not fit. */
cel_status cel_backend_cuda_create(const cel_model *m, const cel_backend_params *p, cel_backend **out, cel_error *err);

static inline void cel_backend_free(cel_backend *be)
{
    if (be) be->v->free(be);
}

#endif
