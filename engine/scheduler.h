/*
 * scheduler.h - the engine's core: request queue, continuous batching over a
 * paged KV cache, sampling and token events. engine.c wraps it behind the
 * public cel_engine_* API (creating the backend from a model and wiring the
 * model's tokenizer in as the text hooks); tests drive it directly with a
 * mock backend and fake text hooks.
 *
 * One step:
 *   1. take new requests and cancellations (from any thread, under a mutex);
 *      cancelled requests get their final CANCELLED events, blocks freed;
 *   2. admit waiting sequences (FIFO) while there are sequence slots and KV
 *      blocks for their whole prompt, after reusing its cached prefix;
 *   3. fill the step's token budget: first one decode token of every running
 *      sequence (oldest first), then prompt chunks (oldest first). A prompt
 *      whose next block another sequence computes in this same step waits
 *      one step and then reuses it; when blocks run out the youngest running
 *      sequence is preempted (blocks freed, requeued, recomputed later - its
 *      sampler state is kept, so the output does not change);
 *   4. one backend forward over the batch; publish full blocks to the prefix
 *      cache; sample the sequences whose last token was computed (forking a
 *      request's n samples after its prompt: they share the prompt's blocks);
 *   5. emit token events, retire finished sequences.
 * Events: one per sampled token, the last one with finish set. The token that
 * ends a sample is reported too (an end-of-generation or stop token comes
 * with its id and logprob but no text, as vLLM's token_ids include it); a
 * stop string's text and everything after it is never emitted. Samples that
 * end without a new token (cancel, error) get one event with token -1.
 * Not re-entrant: callbacks must not call cel_sched_step.
 */
#ifndef CEL_ENGINE_SCHEDULER_H
#define CEL_ENGINE_SCHEDULER_H

#include "backend.h"
#include "celine/engine.h"

/* Text hooks: how tokens become text (for events and stop strings) and which
 * tokens end generation. Any hook may be NULL: no text / no EOG tokens. */
typedef struct cel_sched_text {
    void *ctx;
    void (*detok_init)(void *ctx, cel_detok_stream *s);
    cel_status (*detok_push)(void *ctx, cel_detok_stream *s, int32_t token, cel_buf *out, cel_error *err);
    cel_status (*detok_flush)(void *ctx, cel_detok_stream *s, cel_buf *out, cel_error *err);
    bool (*is_eog)(void *ctx, int32_t token);
} cel_sched_text;

typedef struct cel_sched_params {
    int32_t n_ctx;            /* max tokens per sequence (> 0) */
    int32_t max_seqs;         /* running sequences (> 0) */
    int32_t max_batch_tokens; /* tokens per forward (> 0) */
    int32_t max_queue;        /* requests not yet admitted (> 0) */
    cel_logger log;
} cel_sched_params;

typedef struct cel_sched cel_sched;

/* Counters beyond cel_engine_stats, for tests and benchmarks. */
typedef struct cel_sched_counters {
    uint64_t forwards;    /* backend forward calls */
    uint64_t preemptions; /* sequences requeued for lack of KV blocks */
    uint64_t deferrals;   /* prompt chunks delayed to reuse a block computed in the same step */
    uint64_t kv_cow;      /* copy-on-write block copies */
    uint64_t kv_evicted;  /* cached blocks evicted */
    int32_t kv_cached;    /* cached (evictable) blocks now */
    int32_t n_ctx;        /* effective context: min(n_ctx, pool tokens) */
} cel_sched_counters;

/* Creates the scheduler over backend be (borrowed; must outlive it) with
 * be->n_blocks blocks of be->block_size tokens and be->model->hp.n_vocab
 * logits per row. text may be NULL. */
cel_status cel_sched_create(cel_backend *be, const cel_sched_params *p, const cel_sched_text *text, cel_sched **out,
                            cel_error *err);
/* Stops the thread; every request still pending gets CANCELLED events (on
 * the calling thread). */
void cel_sched_free(cel_sched *s);

/* The cel_engine_* functions of the same name, on the scheduler. */
cel_status cel_sched_submit(cel_sched *s, const cel_request *r, uint64_t *request_id, cel_error *err);
void cel_sched_cancel(cel_sched *s, uint64_t request_id);
cel_status cel_sched_step(cel_sched *s, bool *did_work, cel_error *err);
cel_status cel_sched_run_until_idle(cel_sched *s, cel_error *err);
cel_status cel_sched_start(cel_sched *s, cel_error *err);
void cel_sched_stop(cel_sched *s);
void cel_sched_get_stats(cel_sched *s, cel_engine_stats *st);
void cel_sched_get_counters(cel_sched *s, cel_sched_counters *c);
cel_status cel_sched_generate(cel_sched *s, const int32_t *prompt, size_t n_prompt, uint32_t n, const cel_sampling *sp,
                              cel_completion *out, cel_error *err);
/* The weights changed: with the engine thread paused (and nothing in flight,
 * else CEL_ERR_BUSY) forgets every cached prefix, then calls fn (the
 * backend's weights_changed; may be NULL). */
cel_status cel_sched_weights_changed(cel_sched *s, cel_status (*fn)(void *ctx, cel_error *err), void *ctx,
                                     cel_error *err);

#endif
