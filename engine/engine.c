/*
 * engine.c - the public cel_engine_* API: picks the backend for a model,
 * sizes the KV pool, wires the model's tokenizer in as the scheduler's text
 * hooks (streaming detokenization for events and stop strings, end-of-
 * generation tokens), and forwards everything else to the scheduler
 * (sched.c), which does the batching, sampling and threading.
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "celine/engine.h"
#include "scheduler.h"

struct cel_engine {
    cel_model *model; /* borrowed */
    cel_backend *be;
    cel_sched *s;
};

/* ------------------------------------------------------------ text hooks */

static void tok_detok_init(void *ctx, cel_detok_stream *s)
{
    const cel_model *m = ctx;
    cel_detok_stream_init(s, m->tok, true);
}

static cel_status tok_detok_push(void *ctx, cel_detok_stream *s, int32_t token, cel_buf *out, cel_error *err)
{
    cel_status st = cel_detok_stream_push(s, token, out);
    if (st != CEL_OK) return cel_error_set(err, st, "detokenizing token %d failed (%s)", token, cel_status_name(st));
    return CEL_OK;
}

static cel_status tok_detok_flush(void *ctx, cel_detok_stream *s, cel_buf *out, cel_error *err)
{
    cel_status st = cel_detok_stream_flush(s, out);
    if (st != CEL_OK) return cel_error_set(err, st, "detokenizer flush failed (%s)", cel_status_name(st));
    return CEL_OK;
}

static bool tok_is_eog(void *ctx, int32_t token)
{
    const cel_model *m = ctx;
    return cel_tokenizer_is_eog(m->tok, token);
}

/* ------------------------------------------------------------ lifetime */

#define DEFAULT_BLOCK 16
#define DEFAULT_MAX_SEQS 256
#define DEFAULT_BATCH 512
#define DEFAULT_QUEUE 4096
#define DEFAULT_KV_CAP ((size_t)2 << 30)

static cel_status backend_create(cel_backend_kind kind, const cel_model *m, const cel_backend_params *bp,
                                 cel_backend **out, cel_error *err)
{
    switch (kind) {
    case CEL_BACKEND_CPU: return cel_backend_cpu_create(m, bp, out, err);
    case CEL_BACKEND_CUDA:
#ifdef CELINE_HAVE_CUDA
        return cel_backend_cuda_create(m, bp, out, err);
#else
        *out = NULL;
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "engine: celine was built without the CUDA backend");
#endif
    }
    return cel_error_set(err, CEL_ERR_INVALID, "engine: unknown backend %d", (int)kind);
}

cel_status cel_engine_create(cel_model *m, const cel_engine_params *p, cel_engine **out, cel_error *err)
{
    *out = NULL;
    if (!m) return cel_error_set(err, CEL_ERR_INVALID, "engine: no model");
    cel_engine_params dp;
    memset(&dp, 0, sizeof dp);
    if (!p) p = &dp;
    const cel_hparams *hp = &m->hp;
    if (hp->n_vocab <= 0) return cel_error_set(err, CEL_ERR_INVALID, "engine: model has no vocabulary");
    if (p->block_size < 0 || p->n_ctx < 0 || p->max_seqs < 0 || p->max_batch_tokens < 0 || p->max_queue < 0)
        return cel_error_set(err, CEL_ERR_INVALID, "engine: negative block_size, n_ctx, max_seqs, max_batch_tokens "
                                                   "or max_queue");

    int32_t bs = p->block_size ? p->block_size : DEFAULT_BLOCK;
    int32_t n_ctx = p->n_ctx;
    if (!n_ctx) n_ctx = hp->n_ctx_train > 0 && hp->n_ctx_train < 8192 ? hp->n_ctx_train : 8192;
    int32_t max_seqs = p->max_seqs ? p->max_seqs : DEFAULT_MAX_SEQS;
    int32_t batch = p->max_batch_tokens ? p->max_batch_tokens : DEFAULT_BATCH;
    int32_t queue = p->max_queue ? p->max_queue : DEFAULT_QUEUE;
    size_t kv_bytes = p->kv_bytes;
    if (!kv_bytes) {
        /* room for max_seqs sequences of a quarter context each, at least one
         * full context, at most 2 GiB */
        size_t block_bytes = cel_backend_kv_block_bytes(hp, bs, p->backend);
        uint64_t tokens = (uint64_t)max_seqs * (uint64_t)n_ctx / 4;
        if (tokens < (uint64_t)n_ctx) tokens = (uint64_t)n_ctx;
        uint64_t blocks = (tokens + (uint64_t)bs - 1) / (uint64_t)bs;
        uint64_t bytes = blocks * block_bytes;
        if (bytes > DEFAULT_KV_CAP) bytes = DEFAULT_KV_CAP / block_bytes * block_bytes;
        kv_bytes = (size_t)bytes;
    }

    cel_engine *e = calloc(1, sizeof *e);
    if (!e) return cel_error_set(err, CEL_ERR_NOMEM, "engine: out of memory");
    e->model = m;
    cel_backend_params bp = {
        .n_threads = p->n_threads,
        .block_size = bs,
        .kv_bytes = kv_bytes,
        .max_batch_tokens = batch,
        .device_mem_bytes = p->device_mem_bytes,
        .log = p->log,
    };
    cel_status st = backend_create(p->backend, m, &bp, &e->be, err);
    if (st != CEL_OK) {
        free(e);
        return st;
    }
    cel_sched_params sp = {
        .n_ctx = n_ctx,
        .max_seqs = max_seqs,
        .max_batch_tokens = batch,
        .max_queue = queue,
        .log = p->log,
    };
    cel_sched_text text = {m, tok_detok_init, tok_detok_push, tok_detok_flush, tok_is_eog};
    st = cel_sched_create(e->be, &sp, m->tok ? &text : NULL, &e->s, err);
    if (st != CEL_OK) {
        cel_backend_free(e->be);
        free(e);
        return st;
    }
    cel_log(&p->log, CEL_LOG_INFO, "engine: %s backend, context %d, %d KV blocks of %d tokens, batch %d tokens",
            e->be->v->name, n_ctx, e->be->n_blocks, bs, batch);
    *out = e;
    return CEL_OK;
}

void cel_engine_free(cel_engine *e)
{
    if (!e) return;
    cel_sched_free(e->s);
    cel_backend_free(e->be);
    free(e);
}

/* ------------------------------------------------------------ forwarding */

cel_status cel_engine_submit(cel_engine *e, const cel_request *r, uint64_t *request_id, cel_error *err)
{
    return cel_sched_submit(e->s, r, request_id, err);
}

void cel_engine_cancel(cel_engine *e, uint64_t request_id) { cel_sched_cancel(e->s, request_id); }

cel_status cel_engine_step(cel_engine *e, bool *did_work, cel_error *err) { return cel_sched_step(e->s, did_work, err); }

cel_status cel_engine_run_until_idle(cel_engine *e, cel_error *err) { return cel_sched_run_until_idle(e->s, err); }

cel_status cel_engine_start(cel_engine *e, cel_error *err) { return cel_sched_start(e->s, err); }

void cel_engine_stop(cel_engine *e) { cel_sched_stop(e->s); }

void cel_engine_get_stats(cel_engine *e, cel_engine_stats *s) { cel_sched_get_stats(e->s, s); }

const cel_model *cel_engine_model(const cel_engine *e) { return e->model; }

static cel_status backend_weights_changed(void *ctx, cel_error *err)
{
    cel_backend *be = ctx;
    return be->v->weights_changed ? be->v->weights_changed(be, err) : CEL_OK;
}

cel_status cel_engine_weights_changed(cel_engine *e, cel_error *err)
{
    return cel_sched_weights_changed(e->s, backend_weights_changed, e->be, err);
}

cel_status cel_engine_generate(cel_engine *e, const int32_t *prompt, size_t n_prompt, uint32_t n, const cel_sampling *s,
                               cel_completion *out, cel_error *err)
{
    cel_sampling d;
    if (!s) {
        cel_sampling_default(&d);
        s = &d;
    }
    return cel_sched_generate(e->s, prompt, n_prompt, n, s, out, err);
}
