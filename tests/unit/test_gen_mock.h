/* test_gen_mock.h - a scripted generation backend for the generators' unit
 * tests (a test double: completions come from a function of the prompt, the
 * request seed and the sample index). It completes requests in FIFO, LIFO or
 * seeded-random order, a few per poll, so tests can check that pipeline
 * output does not depend on completion order. Header-only, test code. */
#ifndef TEST_GEN_MOCK_H
#define TEST_GEN_MOCK_H

#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"

typedef enum { MOCK_FIFO = 0, MOCK_LIFO, MOCK_RANDOM } mock_order;

/* Writes the completion of (prompt, seed, sample) into out; returns the finish reason.
 * Return CEL_FINISH_ERROR to fail the whole request. */
typedef cel_finish (*mock_script)(void *ud, const char *prompt, uint64_t seed, uint32_t sample, cel_buf *out);

typedef struct mock_req {
    char *prompt; /* system + "\n" + user (or the raw prompt) */
    uint32_t n;
    cel_sampling s;
    cel_gen_done_fn cb;
    void *ud;
} mock_req;

typedef struct mock_backend {
    cel_gen_backend base;
    mock_req *q;
    size_t n, cap;
    mock_order order;
    cel_rng rng;
    uint32_t per_poll;
    mock_script script;
    void *sud;
    size_t submitted;
    uint64_t seeds[4096]; /* request seeds, in submission order */
    size_t n_seeds;
} mock_backend;

static inline cel_status mock_count(void *ud, const char *s, size_t n, size_t *out, cel_error *err)
{
    (void)ud;
    (void)err;
    *out = cel_gen_count_words(s, n);
    return CEL_OK;
}

static inline cel_status mock_submit(cel_gen_backend *b, const cel_gen_request *r, cel_error *err)
{
    mock_backend *m = (mock_backend *)b;
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 16;
        mock_req *nq = realloc(m->q, nc * sizeof *nq);
        if (!nq) return cel_error_set(err, CEL_ERR_NOMEM, "oom");
        m->q = nq;
        m->cap = nc;
    }
    cel_buf p;
    cel_buf_init(&p);
    if (r->n_messages) {
        for (size_t i = 0; i < r->n_messages; i++)
            cel_buf_printf(&p, "%s%s", i ? "\n" : "", r->messages[i].content);
    } else
        cel_buf_puts(&p, r->prompt);
    m->q[m->n++] = (mock_req){cel_buf_steal(&p), r->n, r->sampling, r->cb, r->ud};
    if (m->n_seeds < sizeof m->seeds / sizeof m->seeds[0]) m->seeds[m->n_seeds++] = r->sampling.seed;
    m->submitted++;
    return CEL_OK;
}

static inline void mock_complete(mock_backend *m, mock_req *rq, bool cancel)
{
    cel_gen_sample smp[64];
    cel_buf txt[64];
    cel_gen_result res = {.status = CEL_OK, .n = rq->n, .samples = smp, .n_prompt_tokens = 7};
    bool fail = false;
    for (uint32_t i = 0; i < rq->n && i < 64; i++) {
        cel_buf_init(&txt[i]);
        cel_finish f = cancel ? CEL_FINISH_CANCELLED : m->script(m->sud, rq->prompt, rq->s.seed, i, &txt[i]);
        if (f == CEL_FINISH_ERROR) fail = true;
        smp[i] = (cel_gen_sample){txt[i].data ? txt[i].data : "", txt[i].len, (int32_t)cel_gen_count_words(txt[i].data ? txt[i].data : "", txt[i].len), f};
    }
    if (cancel) {
        res = (cel_gen_result){.status = CEL_ERR_CANCELLED, .error = "cancelled", .n = 0, .n_prompt_tokens = -1};
    } else if (fail) {
        res = (cel_gen_result){.status = CEL_ERR_IO, .error = "scripted failure", .n = 0, .n_prompt_tokens = -1};
    }
    rq->cb(rq->ud, &res);
    for (uint32_t i = 0; i < rq->n && i < 64; i++) cel_buf_free(&txt[i]);
    free(rq->prompt);
}

static inline cel_status mock_poll(cel_gen_backend *b, int timeout_ms, cel_error *err)
{
    (void)timeout_ms;
    (void)err;
    mock_backend *m = (mock_backend *)b;
    for (uint32_t k = 0; k < m->per_poll && m->n > 0; k++) {
        size_t i = m->order == MOCK_FIFO ? 0 : m->order == MOCK_LIFO ? m->n - 1 : (size_t)(cel_rng_next(&m->rng) % m->n);
        mock_req rq = m->q[i];
        memmove(m->q + i, m->q + i + 1, (m->n - i - 1) * sizeof *m->q);
        m->n--;
        mock_complete(m, &rq, false); /* may submit more (re-entrant append is fine) */
    }
    return CEL_OK;
}

static inline size_t mock_pending(const cel_gen_backend *b) { return ((const mock_backend *)b)->n; }

static inline void mock_free(cel_gen_backend *b)
{
    mock_backend *m = (mock_backend *)b;
    while (m->n > 0) {
        mock_req rq = m->q[--m->n];
        mock_complete(m, &rq, true);
    }
    free(m->q);
    free(m);
}

static const cel_gen_backend_vtbl mock_vtbl = {"mock", mock_submit, mock_poll, mock_pending, mock_free, NULL};

static inline mock_backend *mock_new(mock_script script, void *ud, mock_order order, uint32_t per_poll)
{
    mock_backend *m = calloc(1, sizeof *m);
    m->base.v = &mock_vtbl;
    m->base.counter = (cel_gen_counter){mock_count, NULL};
    strcpy(m->base.model_name, "mock-model");
    m->order = order;
    m->per_poll = per_poll ? per_poll : 1;
    m->script = script;
    m->sud = ud;
    cel_rng_seed(&m->rng, 1234);
    return m;
}

/* A sink collecting JSONL and drop notices into buffers. */
typedef struct collect {
    cel_buf out;
    cel_buf drops; /* "reason unit_id\n" lines */
} collect;

static inline cel_status collect_record(void *ud, const char *json, size_t len, cel_error *err)
{
    (void)err;
    collect *c = ud;
    cel_buf_append(&c->out, json, len);
    cel_buf_putc(&c->out, '\n');
    return CEL_OK;
}

static inline void collect_drop(void *ud, cel_gen_drop reason, const char *unit_id, const char *detail)
{
    (void)detail;
    collect *c = ud;
    cel_buf_printf(&c->drops, "%s %s\n", cel_gen_drop_name(reason), unit_id ? unit_id : "?");
}

#endif
