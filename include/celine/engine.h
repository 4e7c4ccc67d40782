/*
 * celine/engine.h - local LLM inference: models (GGUF, Hugging Face safetensors),
 * tokenizers and chat templates, and the batching engine (paged KV cache with
 * shared prefixes, continuous batching, per-request sampling).
 *
 * The engine knows token ids and sampling parameters, not prompts' meaning or
 * HTTP. Thread model: cel_engine_submit / cel_engine_cancel may be called from
 * any thread; token callbacks run on the engine thread and must not block.
 */
#ifndef CELINE_ENGINE_H
#define CELINE_ENGINE_H

#include "celine/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ dtypes */
/* Values equal ggml's type ids, so GGUF tensor types map 1:1. Q5_0 / Q5_1 /
 * Q8_0 are what llama.cpp's K-quant mixes fall back to for rows that are not
 * whole 256-element super-blocks (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0). */
typedef enum cel_dtype {
    CEL_DTYPE_F32 = 0,
    CEL_DTYPE_F16 = 1,
    CEL_DTYPE_Q4_0 = 2,
    CEL_DTYPE_Q5_0 = 6, /* blocks of 32: fp16 d, 32 high bits, 16 B nibbles; d * (q - 16) */
    CEL_DTYPE_Q5_1 = 7, /* blocks of 32: fp16 d, fp16 m, 32 high bits, 16 B nibbles; d * q + m */
    CEL_DTYPE_Q8_0 = 8,
    CEL_DTYPE_Q4_K = 12,
    CEL_DTYPE_Q5_K = 13, /* super-blocks of 256: Q4_K's scales plus one high bit per element */
    CEL_DTYPE_Q6_K = 14,
    CEL_DTYPE_BF16 = 30,
} cel_dtype;

bool cel_dtype_valid(int t);
const char *cel_dtype_name(cel_dtype t);
int64_t cel_dtype_block_elems(cel_dtype t); /* 1, 32 or 256 */
size_t cel_dtype_block_bytes(cel_dtype t);
/* Bytes of n elements (n must be a multiple of the block size; returns 0 if not). */
size_t cel_dtype_row_bytes(cel_dtype t, int64_t n);

/* A tensor: ne[0] is the innermost (contiguous) dimension, as in GGUF. A weight
 * matrix mapping `in` features to `out` features has ne[0] = in, ne[1] = out
 * (the same memory as a PyTorch [out, in] tensor). */
typedef struct cel_tensor {
    char name[128];
    cel_dtype dtype;
    int32_t n_dims;
    int64_t ne[4];
    void *data;    /* points into a read-only mapping unless `owned` */
    size_t nbytes;
    bool owned;    /* data was allocated by celine (made writable, or converted) */
} cel_tensor;

/* ------------------------------------------------------------------ models */
typedef enum cel_arch { CEL_ARCH_LLAMA = 0, CEL_ARCH_QWEN2, CEL_ARCH_QWEN3, CEL_ARCH_MISTRAL } cel_arch;
const char *cel_arch_name(cel_arch a);

/* How RoPE pairs dimensions: NORM rotates adjacent pairs (2i, 2i+1) (GGUF llama
 * files, whose q/k rows the converter permuted); NEOX rotates (i, i + d/2)
 * (Hugging Face checkpoints of every family, and GGUF qwen2/qwen3). */
typedef enum cel_rope_style { CEL_ROPE_NORM = 0, CEL_ROPE_NEOX = 1 } cel_rope_style;
typedef enum cel_rope_scaling { CEL_ROPE_SCALING_NONE = 0, CEL_ROPE_SCALING_LINEAR, CEL_ROPE_SCALING_LLAMA3 } cel_rope_scaling;

typedef struct cel_hparams {
    cel_arch arch;
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    int32_t n_ctx_train;
    float rms_eps;
    float rope_theta;
    cel_rope_style rope_style;
    cel_rope_scaling rope_scaling;
    float rope_factor;           /* linear / llama3 */
    float rope_low_freq_factor;  /* llama3 */
    float rope_high_freq_factor; /* llama3 */
    int32_t rope_orig_ctx;       /* llama3: original_max_position_embeddings */
    bool tied_embeddings;        /* output projection = token embedding */
    bool has_qkv_bias;           /* qwen2 */
    bool has_qk_norm;            /* qwen3 */
} cel_hparams;

typedef struct cel_layer {
    cel_tensor *attn_norm, *wq, *wk, *wv, *wo;
    cel_tensor *bq, *bk, *bv;     /* NULL unless has_qkv_bias */
    cel_tensor *q_norm, *k_norm;  /* NULL unless has_qk_norm; [head_dim] */
    cel_tensor *ffn_norm, *w_gate, *w_up, *w_down;
} cel_layer;

typedef struct cel_tokenizer cel_tokenizer;

typedef struct cel_model {
    cel_hparams hp;
    char *path;            /* what was loaded: a .gguf file or a Hugging Face folder */
    char format[16];       /* "gguf" | "safetensors" */
    char *name;            /* general.name or the folder name */
    cel_tensor *tensors;   /* every tensor in the file(s) */
    size_t n_tensors;
    cel_tensor *tok_embd, *output_norm, *output; /* output == tok_embd when tied */
    cel_layer *layers;     /* [hp.n_layer] */
    cel_tokenizer *tok;    /* owned */
    char *chat_template;   /* Jinja source from the metadata, or NULL */
    void *priv;            /* loader state (mappings); owned */
} cel_model;

typedef struct cel_model_load_opts {
    const char *tokenizer_path; /* override: a tokenizer.json to use instead of the model's */
    cel_logger log;
} cel_model_load_opts;

/* Loads a .gguf file or a Hugging Face folder (config.json + *.safetensors
 * [+ model.safetensors.index.json] + tokenizer.json). Weights are mapped, not
 * copied. Every failure names the file, key or tensor. opts may be NULL. */
cel_status cel_model_load(const char *path, const cel_model_load_opts *opts, cel_model **out, cel_error *err);
void cel_model_free(cel_model *m);
cel_tensor *cel_model_find_tensor(cel_model *m, const char *name);
int64_t cel_model_n_params(const cel_model *m);
/* Human-readable summary (architecture, parameters, dtypes, context, tokenizer,
 * chat template) appended to out; `celine info` prints it. */
cel_status cel_model_describe(const cel_model *m, cel_buf *out);

/* For an in-process trainer: gives tensor `name` its own F32/F16/BF16 memory
 * (copying out of the read-only mapping; quantized tensors are dequantized to
 * F32) so the caller may write it. After writing, call
 * cel_engine_weights_changed() so backends re-upload and cached prefixes are
 * dropped. */
cel_status cel_model_make_writable(cel_model *m, const char *name, cel_tensor **out, cel_error *err);

/* -------------------------------------------------------------- tokenizers */
typedef enum cel_tok_kind { CEL_TOK_BPE_BYTE = 0, CEL_TOK_SPM_BPE = 1 } cel_tok_kind;

/* tokenizer.json (a tokenizer_config.json beside it supplies the chat template
 * and special-token settings when present). */
cel_status cel_tokenizer_load_json(const char *path, cel_tokenizer **out, cel_error *err);
void cel_tokenizer_free(cel_tokenizer *t);
cel_tok_kind cel_tokenizer_kind(const cel_tokenizer *t);
int32_t cel_tokenizer_n_vocab(const cel_tokenizer *t);
int32_t cel_tokenizer_bos(const cel_tokenizer *t); /* -1 when none */
int32_t cel_tokenizer_eos(const cel_tokenizer *t);
bool cel_tokenizer_is_eog(const cel_tokenizer *t, int32_t id); /* eos, eot, im_end, ... */
const char *cel_tokenizer_pre_name(const cel_tokenizer *t);  /* "gpt2", "llama3", "qwen2", ... */
/* Token id of an exact token string (special tokens included), or -1. */
int32_t cel_tokenizer_find(const cel_tokenizer *t, const char *piece);

enum {
    CEL_TOKENIZE_ADD_SPECIAL = 1 << 0,   /* BOS etc. as the tokenizer's post-processor adds them */
    CEL_TOKENIZE_PARSE_SPECIAL = 1 << 1, /* "<|im_start|>" in text becomes the special token */
};
/* Encodes UTF-8 text; *ids is malloc'ed (free() it). Invalid UTF-8 is encoded
 * byte-wise as the tokenizer's rules dictate, never rejected. */
cel_status cel_tokenize(const cel_tokenizer *t, const char *text, size_t len, int flags, int32_t **ids,
                        size_t *n_ids, cel_error *err);
/* Appends the text of ids to out. skip_special: omit control tokens. */
cel_status cel_detokenize(const cel_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, cel_buf *out,
                          cel_error *err);

/* Streaming detokenizer: emits only complete UTF-8 characters, holding back
 * the bytes of a character split across tokens. */
typedef struct cel_detok_stream {
    const cel_tokenizer *tok;
    bool skip_special;
    unsigned char pending[8];
    size_t n_pending;
    bool at_start; /* SentencePiece: drop the leading space of the first piece */
} cel_detok_stream;
void cel_detok_stream_init(cel_detok_stream *s, const cel_tokenizer *t, bool skip_special);
cel_status cel_detok_stream_push(cel_detok_stream *s, int32_t id, cel_buf *out);
cel_status cel_detok_stream_flush(cel_detok_stream *s, cel_buf *out); /* emits held bytes (as U+FFFD if invalid) */

/* ----------------------------------------------------------- chat templates */
typedef enum cel_chat_kind {
    CEL_CHAT_AUTO = 0, /* recognise from the model's template / tokenizer */
    CEL_CHAT_CHATML,   /* Qwen, SmolLM */
    CEL_CHAT_LLAMA3,
    CEL_CHAT_LLAMA2,
    CEL_CHAT_MISTRAL,
    CEL_CHAT_RAW,      /* messages' contents concatenated, no markup */
} cel_chat_kind;
typedef struct cel_chat_msg {
    const char *role; /* "system" | "user" | "assistant" */
    const char *content;
} cel_chat_msg;
cel_chat_kind cel_chat_kind_from_name(const char *name); /* "chatml", "llama3", ...; AUTO when unknown */
const char *cel_chat_kind_name(cel_chat_kind k);
/* Recognises the family from a Jinja template source and/or tokenizer vocabulary. */
cel_chat_kind cel_chat_detect(const char *jinja_template, const cel_tokenizer *t);
/* Renders messages (plus the assistant lead-in when add_generation_prompt) to out.
 * The text contains special tokens as text: tokenize with CEL_TOKENIZE_PARSE_SPECIAL. */
cel_status cel_chat_render(cel_chat_kind kind, const cel_chat_msg *msgs, size_t n, bool add_generation_prompt,
                           const cel_tokenizer *t, cel_buf *out, cel_error *err);

/* ------------------------------------------------------------------ engine */
typedef enum cel_backend_kind { CEL_BACKEND_CPU = 0, CEL_BACKEND_CUDA = 1 } cel_backend_kind;

typedef struct cel_engine_params {
    cel_backend_kind backend;
    int32_t n_threads;          /* CPU threads; <= 0: all cores */
    int32_t block_size;         /* KV block, tokens; 0: 16 */
    size_t kv_bytes;            /* KV pool budget; 0: enough for max_seqs * n_ctx/4, capped at 2 GiB */
    int32_t n_ctx;              /* max tokens per sequence; 0: min(n_ctx_train, 8192) */
    int32_t max_seqs;           /* max running sequences; 0: 256 */
    int32_t max_batch_tokens;   /* per-step token budget (prefill chunks + decodes); 0: 512 */
    size_t device_mem_bytes;    /* CUDA: device memory budget; 0: 90% of free */
    int32_t max_queue;          /* pending requests before submit returns CEL_ERR_BUSY; 0: 4096 */
    cel_logger log;
} cel_engine_params;

typedef struct cel_sampling {
    float temperature;        /* 0: greedy */
    int32_t top_k;            /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off (over prompt + output) */
    float presence_penalty;   /* 0: off (over output) */
    float frequency_penalty;  /* 0: off (over output) */
    uint64_t seed;            /* per-request; sample i uses a stream derived from (seed, i) */
    int32_t max_tokens;       /* generated tokens per sample; 0: until n_ctx */
    int32_t n_logprobs;       /* top alternatives to report per token (0..20); -1: none, 0: chosen only */
    bool ignore_eos;
    const int32_t *stop_tokens; /* in addition to the tokenizer's end-of-generation tokens */
    size_t n_stop_tokens;
    const char *const *stop;    /* stop strings: output is cut before the match */
    size_t n_stop;
} cel_sampling;
void cel_sampling_default(cel_sampling *s); /* greedy, max_tokens 256, no penalties */

typedef enum cel_finish {
    CEL_FINISH_NONE = 0, /* more tokens follow */
    CEL_FINISH_STOP,     /* end-of-generation token or stop string */
    CEL_FINISH_LENGTH,   /* max_tokens or context full */
    CEL_FINISH_CANCELLED,
    CEL_FINISH_ERROR,
} cel_finish;
const char *cel_finish_name(cel_finish f); /* "stop", "length", ... */

typedef struct cel_top_logprob {
    int32_t token;
    float logprob;
} cel_top_logprob;

/* One event per generated token of one sample, and a final one with finish set.
 * text is the newly completed UTF-8 text (stop strings held back until they can
 * no longer match, and never emitted). All pointers live only during the call. */
typedef struct cel_token_event {
    uint64_t request_id;
    uint32_t sample;          /* 0 .. n-1 */
    int32_t token;            /* -1 on a final event without a token */
    float logprob;
    const cel_top_logprob *top;
    int32_t n_top;
    const char *text;
    size_t text_len;
    cel_finish finish;
    int32_t n_prompt_tokens;
    int32_t n_cached_tokens;  /* prompt tokens served from the prefix cache */
    int32_t n_gen_tokens;     /* generated so far by this sample */
    const char *error;        /* set when finish == CEL_FINISH_ERROR */
} cel_token_event;
typedef void (*cel_token_cb)(void *ud, const cel_token_event *ev);

typedef struct cel_request {
    const int32_t *prompt;  /* copied at submit */
    size_t n_prompt;
    uint32_t n;             /* samples (>= 1); they share the prompt's KV blocks */
    cel_sampling sampling;  /* copied at submit (stop strings too) */
    cel_token_cb cb;
    void *ud;
} cel_request;

typedef struct cel_engine cel_engine;

typedef struct cel_engine_stats {
    uint64_t steps;
    uint64_t prompt_tokens;     /* computed (not served from cache) */
    uint64_t cached_tokens;     /* served from the prefix cache */
    uint64_t gen_tokens;
    uint64_t prefix_hits;       /* requests that reused at least one cached block */
    int32_t running;            /* sequences in the batch */
    int32_t queued;             /* requests waiting */
    int32_t kv_blocks_total;
    int32_t kv_blocks_used;
    int32_t last_batch_tokens;
} cel_engine_stats;

cel_status cel_engine_create(cel_model *m, const cel_engine_params *p, cel_engine **out, cel_error *err);
void cel_engine_free(cel_engine *e); /* stops the thread; pending requests finish CANCELLED */
/* Thread-safe. The request is copied. CEL_ERR_BUSY when the queue is full. */
cel_status cel_engine_submit(cel_engine *e, const cel_request *r, uint64_t *request_id, cel_error *err);
/* Thread-safe. Each sample still running gets a final CANCELLED event. */
void cel_engine_cancel(cel_engine *e, uint64_t request_id);
/* Runs one scheduling step on the caller's thread (only when the engine
 * thread is not started). *did_work = false when there was nothing to do. */
cel_status cel_engine_step(cel_engine *e, bool *did_work, cel_error *err);
/* Runs steps until every submitted request has finished (caller's thread). */
cel_status cel_engine_run_until_idle(cel_engine *e, cel_error *err);
/* Starts / stops the engine's own thread, which steps while there is work. */
cel_status cel_engine_start(cel_engine *e, cel_error *err);
void cel_engine_stop(cel_engine *e);
void cel_engine_get_stats(cel_engine *e, cel_engine_stats *s); /* thread-safe */
const cel_model *cel_engine_model(const cel_engine *e);
/* After a trainer wrote weights (cel_model_make_writable): drop cached
 * prefixes and re-upload to the device. Call with no request in flight. */
cel_status cel_engine_weights_changed(cel_engine *e, cel_error *err);

/* Convenience for one-shot use: runs one request to completion on the caller's
 * thread and collects each sample's text and ids. */
typedef struct cel_completion {
    char *text;          /* malloc'ed; without a matched stop string or the end token's text */
    int32_t *ids;        /* malloc'ed; every sampled id, including the stop / end token that ended it */
    size_t n_ids;
    float *logprobs;     /* [n_ids], malloc'ed */
    cel_finish finish;
} cel_completion;
cel_status cel_engine_generate(cel_engine *e, const int32_t *prompt, size_t n_prompt, uint32_t n,
                               const cel_sampling *s, cel_completion *out /* [n] */, cel_error *err);
void cel_completion_free(cel_completion *c);

#ifdef __cplusplus
}
#endif
#endif
