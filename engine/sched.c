/* Continuous batching over the paged KV cache; see scheduler.h for one step. */
#include "scheduler.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv.h"
#include "sample.h"

/* ------------------------------------------------------------ types */

typedef struct sreq {
    uint64_t id;
    int32_t *prompt;
    int32_t n_prompt;
    uint32_t n;
    cel_sampling sp;     /* stop / stop_tokens point at the copies below */
    int32_t *stop_toks;
    char **stops;
    int32_t *pset;       /* sorted unique prompt tokens (repetition penalty) */
    size_t n_pset;
    cel_token_cb cb;
    void *ud;
    uint32_t n_live;     /* samples not finished */
    int32_t n_cached;    /* prompt tokens served from the prefix cache */
    bool first_out;      /* the prompt is done (no more cache accounting) */
    bool hit_counted;
    bool cancelled;
    bool admitted;       /* left the queue once (max_queue accounting) */
    struct sreq *next;   /* incoming list */
} sreq;

enum { SEQ_WAITING = 0, SEQ_RUNNING, SEQ_DONE };

typedef struct seq {
    sreq *r;
    int state;
    uint64_t age;          /* admission order, kept across preemption; children share it */
    uint32_t sample;       /* sample index (first of the group before the fork) */
    uint32_t n_group;      /* samples this sequence stands for: > 1 only before the fork */
    bool has_sampler;
    cel_sample_state st;
    cel_detok_stream dt;
    cel_stopper stop;
    int32_t n_gen;
    int32_t *toks;         /* prompt + generated */
    int32_t n_toks, cap;
    int32_t n_computed;    /* tokens whose K/V are in the cache */
    cel_kv_seq kv;
    /* this step */
    int32_t n_new;
    int32_t row;
    int32_t out;           /* logits row, or -1 */
    double u;              /* the uniform drawn before the forward (device sampling) */
    struct seq *next;      /* waiting list */
} seq;

struct cel_sched {
    cel_backend *be;
    cel_sched_params p;
    cel_sched_text text;
    int32_t n_vocab;
    int32_t n_ctx;         /* effective: min(p.n_ctx, pool tokens) */
    int32_t bs;
    cel_kv kv;
    cel_sample_scratch ws;

    /* shared with submitting threads, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sreq *in_head, *in_tail;
    uint64_t *cancels;
    size_t n_cancels, cap_cancels;
    uint64_t next_id;
    int32_t n_queued;      /* requests not admitted yet */
    bool thread_on, stop_flag;
    pthread_t thread;
    cel_engine_stats stats;
    cel_sched_counters ctr;

    /* engine-thread state */
    seq **run;             /* running, in (age, sample) order */
    int32_t n_run, cap_run;
    seq *wait_head;        /* waiting, oldest first */
    seq *wait_tail;
    int32_t n_wait;
    uint64_t age_counter;
    /* per-step scratch */
    int32_t *b_tokens;
    cel_batch_seq *b_seqs;
    seq **b_ptr;
    int32_t cap_bseqs;
    int32_t *b_out;
    cel_batch_sample *b_samp; /* device sampling requests, [cap_bseqs] (backends with can_sample) */
    int32_t *b_tok;           /* their tokens, [cap_bseqs] */
    float *b_lp;              /* their logprobs, [cap_bseqs] */
    float *logits;
    size_t cap_logits;     /* rows */
    uint64_t *inflight;
    int32_t n_inflight, cap_inflight;
    seq **born;            /* children forked this step */
    int32_t n_born, cap_born;
    cel_buf tb, piece;     /* event text */
    /* local counters, published to stats at the end of a step */
    uint64_t c_prompt, c_cached, c_gen, c_hits, c_preempt, c_defer;
};

/* ------------------------------------------------------------ helpers */

static cel_status copy_block(void *ctx, int32_t src, int32_t dst, int32_t n, cel_error *err)
{
    cel_backend *be = ctx;
    return be->v->copy_block(be, src, dst, n, err);
}

static void req_free(sreq *r)
{
    if (!r) return;
    free(r->prompt);
    free(r->stop_toks);
    if (r->stops)
        for (size_t i = 0; i < r->sp.n_stop; i++) free(r->stops[i]);
    free(r->stops);
    free(r->pset);
    free(r);
}

static cel_status grow(void **p, int32_t *cap, int32_t need, size_t elem, cel_error *err)
{
    if (need <= *cap) return CEL_OK;
    int32_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *np = realloc(*p, (size_t)c * elem);
    if (!np) return cel_error_set(err, CEL_ERR_NOMEM, "sched: out of memory (%d entries)", c);
    *p = np;
    *cap = c;
    return CEL_OK;
}

static cel_status seq_push_tok(seq *q, int32_t t, cel_error *err)
{
    CEL_TRY(grow((void **)&q->toks, &q->cap, q->n_toks + 1, sizeof *q->toks, err));
    q->toks[q->n_toks++] = t;
    return CEL_OK;
}

static void seq_free(cel_sched *s, seq *q)
{
    cel_kv_seq_free(&s->kv, &q->kv);
    if (q->has_sampler) {
        cel_sample_state_free(&q->st);
        cel_stopper_free(&q->stop);
    }
    free(q->toks);
    free(q);
}

static void emit(cel_sched *s, seq *q, uint32_t sample, int32_t token, const cel_sample_out *so, const char *text,
                 size_t text_len, cel_finish finish, const char *error)
{
    sreq *r = q->r;
    if (!r->cb) return;
    cel_token_event ev;
    memset(&ev, 0, sizeof ev);
    ev.request_id = r->id;
    ev.sample = sample;
    ev.token = token;
    if (so) {
        ev.logprob = so->logprob;
        ev.top = so->n_top ? so->top : NULL;
        ev.n_top = so->n_top;
    }
    ev.text = text ? text : "";
    ev.text_len = text_len;
    ev.finish = finish;
    ev.n_prompt_tokens = r->n_prompt;
    ev.n_cached_tokens = r->n_cached;
    ev.n_gen_tokens = q->n_gen;
    ev.error = error;
    r->cb(r->ud, &ev);
}

/* The request left the queue (admitted, or finished while waiting). */
static void mark_admitted(cel_sched *s, sreq *r)
{
    if (r->admitted) return;
    r->admitted = true;
    pthread_mutex_lock(&s->mu);
    s->n_queued--;
    pthread_mutex_unlock(&s->mu);
}

/* Ends every sample q stands for with a token-less final event, frees its
 * blocks and marks it done (removed from the lists by the caller). */
static void finish_seq(cel_sched *s, seq *q, cel_finish f, const char *error)
{
    for (uint32_t i = 0; i < q->n_group; i++) emit(s, q, q->sample + i, -1, NULL, NULL, 0, f, error);
    cel_kv_seq_release(&s->kv, &q->kv);
    q->state = SEQ_DONE;
}

/* Drops a finished sequence; frees the request after its last sample. */
static void retire(cel_sched *s, seq *q)
{
    sreq *r = q->r;
    mark_admitted(s, r);
    r->n_live -= q->n_group;
    seq_free(s, q);
    if (r->n_live == 0) req_free(r);
}

/* Drops from the running list what no longer runs: finished sequences are
 * retired (freed), preempted ones already sit in the waiting list. */
static void compact_run(cel_sched *s)
{
    int32_t k = 0;
    for (int32_t i = 0; i < s->n_run; i++) {
        seq *q = s->run[i];
        if (q->state == SEQ_RUNNING) s->run[k++] = q;
        else if (q->state == SEQ_DONE) retire(s, q);
    }
    s->n_run = k;
}

/* Adds q to the waiting list: never-admitted sequences (age 0) at the end,
 * in arrival order (O(1) through the tail); requeued ones by age, ahead of
 * them (they are older than anything never admitted). */
static void wait_insert(cel_sched *s, seq *q)
{
    q->state = SEQ_WAITING;
    s->n_wait++;
    if (q->age == 0 || !s->wait_head) {
        q->next = NULL;
        if (s->wait_tail) s->wait_tail->next = q;
        else s->wait_head = q;
        s->wait_tail = q;
        return;
    }
    seq **pp = &s->wait_head;
    while (*pp && (*pp)->age != 0 && ((*pp)->age < q->age || ((*pp)->age == q->age && (*pp)->sample < q->sample)))
        pp = &(*pp)->next;
    q->next = *pp;
    *pp = q;
    if (!q->next) s->wait_tail = q;
}

/* Unlinks the head of the waiting list. */
static seq *wait_pop(cel_sched *s)
{
    seq *q = s->wait_head;
    s->wait_head = q->next;
    if (!s->wait_head) s->wait_tail = NULL;
    q->next = NULL;
    s->n_wait--;
    return q;
}

static bool run_before(const seq *a, const seq *b) { return a->age < b->age || (a->age == b->age && a->sample < b->sample); }

static cel_status run_insert(cel_sched *s, seq *q, cel_error *err)
{
    CEL_TRY(grow((void **)&s->run, &s->cap_run, s->n_run + 1, sizeof *s->run, err));
    int32_t i = s->n_run;
    while (i > 0 && run_before(q, s->run[i - 1])) {
        s->run[i] = s->run[i - 1];
        i--;
    }
    s->run[i] = q;
    s->n_run++;
    q->state = SEQ_RUNNING;
    return CEL_OK;
}

/* Moves q back to the waiting list: its blocks are freed (the full ones stay
 * cached and may be reused when it returns), its tokens and sampler kept. */
static void preempt(cel_sched *s, seq *q)
{
    cel_kv_seq_release(&s->kv, &q->kv);
    q->n_computed = 0;
    q->n_new = 0;
    wait_insert(s, q);
    s->c_preempt++;
}



/* ------------------------------------------------------------ create / free */

cel_status cel_sched_create(cel_backend *be, const cel_sched_params *p, const cel_sched_text *text, cel_sched **out,
                            cel_error *err)
{
    *out = NULL;
    if (!be || !be->model || be->n_blocks <= 0 || be->block_size <= 0)
        return cel_error_set(err, CEL_ERR_INVALID, "sched: backend without a model or KV blocks");
    if (p->n_ctx <= 0 || p->max_seqs <= 0 || p->max_batch_tokens <= 0 || p->max_queue <= 0)
        return cel_error_set(err, CEL_ERR_INVALID,
                             "sched: n_ctx %d, max_seqs %d, max_batch_tokens %d, max_queue %d must be > 0", p->n_ctx,
                             p->max_seqs, p->max_batch_tokens, p->max_queue);
    cel_sched *s = calloc(1, sizeof *s);
    if (!s) return cel_error_set(err, CEL_ERR_NOMEM, "sched: out of memory");
    s->be = be;
    s->p = *p;
    if (text) s->text = *text;
    s->n_vocab = be->model->hp.n_vocab;
    s->bs = be->block_size;
    int64_t pool_tokens = (int64_t)be->n_blocks * be->block_size;
    s->n_ctx = pool_tokens < p->n_ctx ? (int32_t)pool_tokens : p->n_ctx;
    s->next_id = 1;
    cel_buf_init(&s->tb);
    cel_buf_init(&s->piece);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    cel_status st = cel_kv_init(&s->kv, be->n_blocks, be->block_size, copy_block, be, err);
    if (st == CEL_OK) st = cel_sample_scratch_init(&s->ws, s->n_vocab, err);
    if (st == CEL_OK) {
        s->b_tokens = malloc((size_t)p->max_batch_tokens * sizeof *s->b_tokens);
        if (!s->b_tokens) st = cel_error_set(err, CEL_ERR_NOMEM, "sched: out of memory");
    }
    if (st != CEL_OK) {
        cel_sched_free(s);
        return st;
    }
    s->stats.kv_blocks_total = be->n_blocks;
    *out = s;
    return CEL_OK;
}

void cel_sched_free(cel_sched *s)
{
    if (!s) return;
    cel_sched_stop(s);
    /* everything still pending ends CANCELLED */
    sreq *in = s->in_head;
    s->in_head = s->in_tail = NULL;
    while (in) {
        sreq *nx = in->next;
        if (in->cb)
            for (uint32_t i = 0; i < in->n; i++) {
                cel_token_event ev;
                memset(&ev, 0, sizeof ev);
                ev.request_id = in->id;
                ev.sample = i;
                ev.token = -1;
                ev.text = "";
                ev.finish = CEL_FINISH_CANCELLED;
                ev.n_prompt_tokens = in->n_prompt;
                in->cb(in->ud, &ev);
            }
        req_free(in);
        in = nx;
    }
    for (int32_t i = 0; i < s->n_run; i++) {
        finish_seq(s, s->run[i], CEL_FINISH_CANCELLED, NULL);
        retire(s, s->run[i]);
    }
    s->n_run = 0;
    while (s->wait_head) {
        seq *q = wait_pop(s);
        finish_seq(s, q, CEL_FINISH_CANCELLED, NULL);
        retire(s, q);
    }
    cel_kv_free(&s->kv);
    cel_sample_scratch_free(&s->ws);
    free(s->run);
    free(s->b_tokens);
    free(s->b_seqs);
    free(s->b_ptr);
    free(s->b_out);
    free(s->b_samp);
    free(s->b_tok);
    free(s->b_lp);
    free(s->logits);
    free(s->inflight);
    free(s->born);
    free(s->cancels);
    cel_buf_free(&s->tb);
    cel_buf_free(&s->piece);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* ------------------------------------------------------------ submit / cancel */

cel_status cel_sched_submit(cel_sched *s, const cel_request *rq, uint64_t *request_id, cel_error *err)
{
    if (request_id) *request_id = 0;
    if (!rq || !rq->prompt || rq->n_prompt == 0)
        return cel_error_set(err, CEL_ERR_INVALID, "request: empty prompt");
    if (rq->n_prompt > (size_t)INT32_MAX / 2)
        return cel_error_set(err, CEL_ERR_LIMIT, "request: prompt of %zu tokens", rq->n_prompt);
    uint32_t n = rq->n ? rq->n : 1;
    if (n > (uint32_t)s->p.max_seqs)
        return cel_error_set(err, CEL_ERR_LIMIT, "request: n = %u samples but max_seqs is %d", n, s->p.max_seqs);
    for (size_t i = 0; i < rq->n_prompt; i++)
        if (rq->prompt[i] < 0 || rq->prompt[i] >= s->n_vocab)
            return cel_error_set(err, CEL_ERR_INVALID, "request: prompt token %zu is %d, outside the vocabulary (0..%d)",
                                 i, rq->prompt[i], s->n_vocab - 1);
    CEL_TRY(cel_sampling_validate(&rq->sampling, s->n_vocab, err));

    sreq *r = calloc(1, sizeof *r);
    if (!r) return cel_error_set(err, CEL_ERR_NOMEM, "request: out of memory");
    r->n = n;
    r->n_live = n;
    r->n_prompt = (int32_t)rq->n_prompt;
    r->sp = rq->sampling;
    r->cb = rq->cb;
    r->ud = rq->ud;
    r->prompt = malloc(rq->n_prompt * sizeof *r->prompt);
    if (!r->prompt) goto nomem;
    memcpy(r->prompt, rq->prompt, rq->n_prompt * sizeof *r->prompt);
    if (r->sp.n_stop_tokens) {
        r->stop_toks = malloc(r->sp.n_stop_tokens * sizeof *r->stop_toks);
        if (!r->stop_toks) goto nomem;
        memcpy(r->stop_toks, rq->sampling.stop_tokens, r->sp.n_stop_tokens * sizeof *r->stop_toks);
    }
    r->sp.stop_tokens = r->stop_toks;
    if (r->sp.n_stop) {
        r->stops = calloc(r->sp.n_stop, sizeof *r->stops);
        if (!r->stops) goto nomem;
        for (size_t i = 0; i < r->sp.n_stop; i++)
            if (!(r->stops[i] = strdup(rq->sampling.stop[i]))) goto nomem;
    }
    r->sp.stop = (const char *const *)r->stops;
    if (r->sp.repetition_penalty != 1.0f &&
        cel_sample_prompt_set(r->prompt, rq->n_prompt, &r->pset, &r->n_pset, err) != CEL_OK) {
        req_free(r);
        return CEL_ERR_NOMEM;
    }

    pthread_mutex_lock(&s->mu);
    if (s->n_queued >= s->p.max_queue) {
        int32_t q = s->n_queued;
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return cel_error_set(err, CEL_ERR_BUSY, "engine queue full (%d requests waiting; max_queue %d)", q,
                             s->p.max_queue);
    }
    r->id = s->next_id++;
    if (s->in_tail) s->in_tail->next = r;
    else s->in_head = r;
    s->in_tail = r;
    s->n_queued++;
    s->stats.queued = s->n_queued;
    if (request_id) *request_id = r->id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return CEL_OK;
nomem:
    req_free(r);
    return cel_error_set(err, CEL_ERR_NOMEM, "request: out of memory");
}

void cel_sched_cancel(cel_sched *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    /* a cancel list longer than the requests that can exist is pointless */
    if (s->n_cancels < (size_t)s->p.max_queue + (size_t)s->p.max_seqs + 64) {
        if (s->n_cancels == s->cap_cancels) {
            size_t c = s->cap_cancels ? s->cap_cancels * 2 : 16;
            uint64_t *nc = realloc(s->cancels, c * sizeof *nc);
            if (nc) {
                s->cancels = nc;
                s->cap_cancels = c;
            }
        }
        if (s->n_cancels < s->cap_cancels) s->cancels[s->n_cancels++] = id;
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ the step */

static cel_status new_seq(cel_sched *s, sreq *r, seq **out, cel_error *err)
{
    seq *q = calloc(1, sizeof *q);
    if (!q) return cel_error_set(err, CEL_ERR_NOMEM, "sched: out of memory");
    q->r = r;
    q->n_group = r->n;
    q->out = -1;
    cel_kv_seq_init(&q->kv);
    q->toks = malloc((size_t)r->n_prompt * sizeof *q->toks);
    if (!q->toks) {
        free(q);
        return cel_error_set(err, CEL_ERR_NOMEM, "sched: out of memory for a prompt of %d tokens", r->n_prompt);
    }
    memcpy(q->toks, r->prompt, (size_t)r->n_prompt * sizeof *q->toks);
    q->n_toks = q->cap = r->n_prompt;
    *out = q;
    return CEL_OK;
}

/* Takes new requests and cancellations from the shared side. */
static cel_status intake(cel_sched *s, bool *did, cel_error *err)
{
    pthread_mutex_lock(&s->mu);
    sreq *in = s->in_head;
    s->in_head = s->in_tail = NULL;
    size_t nc = s->n_cancels;
    uint64_t *cancels = NULL;
    if (nc) {
        cancels = s->cancels;
        s->cancels = NULL;
        s->n_cancels = s->cap_cancels = 0;
    }
    pthread_mutex_unlock(&s->mu);

    cel_status st = CEL_OK;
    while (in) {
        sreq *nx = in->next;
        in->next = NULL;
        seq *q = NULL;
        if (st == CEL_OK) st = new_seq(s, in, &q, err);
        if (st != CEL_OK) { /* out of memory: fail the request rather than lose it silently */
            seq tmp;
            memset(&tmp, 0, sizeof tmp);
            tmp.r = in;
            tmp.n_group = in->n;
            for (uint32_t i = 0; i < in->n; i++) emit(s, &tmp, i, -1, NULL, NULL, 0, CEL_FINISH_ERROR, "out of memory");
            mark_admitted(s, in);
            req_free(in);
        } else {
            wait_insert(s, q);
        }
        *did = true;
        in = nx;
    }
    for (size_t c = 0; c < nc; c++) {
        for (int32_t i = 0; i < s->n_run; i++)
            if (s->run[i]->r->id == cancels[c]) s->run[i]->r->cancelled = true;
        for (seq *q = s->wait_head; q; q = q->next)
            if (q->r->id == cancels[c]) q->r->cancelled = true;
    }
    free(cancels);
    return st;
}

/* Finishes and removes every sequence of a cancelled request. */
static void reap_cancelled(cel_sched *s, bool *did)
{
    bool any = false;
    for (int32_t i = 0; i < s->n_run; i++)
        if (s->run[i]->r->cancelled) {
            finish_seq(s, s->run[i], CEL_FINISH_CANCELLED, NULL);
            any = true;
        }
    seq **pp = &s->wait_head;
    s->wait_tail = NULL;
    while (*pp) {
        seq *q = *pp;
        if (q->r->cancelled) {
            *pp = q->next;
            s->n_wait--;
            finish_seq(s, q, CEL_FINISH_CANCELLED, NULL);
            retire(s, q);
            any = true;
        } else {
            s->wait_tail = q;
            pp = &q->next;
        }
    }
    if (!any) return;
    *did = true;
    compact_run(s);
}

static void count_cached(cel_sched *s, seq *q, int32_t matched_blocks)
{
    if (matched_blocks <= 0) return;
    int32_t toks = matched_blocks * s->bs;
    s->c_cached += (uint64_t)toks;
    if (!q->r->first_out) {
        q->r->n_cached += toks;
        if (!q->r->hit_counted) {
            q->r->hit_counted = true;
            s->c_hits++;
        }
    }
}

/* Admits waiting sequences in order while slots and blocks allow. */
static cel_status admit(cel_sched *s, bool *did, cel_error *err)
{
    const int32_t watermark = s->kv.n_blocks / 100 > 0 ? s->kv.n_blocks / 100 : 1;
    while (s->wait_head) {
        seq *q = s->wait_head;
        if (s->n_run > 0 && s->n_run + (int32_t)q->n_group > s->p.max_seqs) break;
        if (q->n_toks >= s->n_ctx) { /* can never run: fail it */
            char msg[200];
            if (q->n_toks >= s->p.n_ctx)
                snprintf(msg, sizeof msg, "prompt of %d tokens does not fit the context of %d tokens", q->n_toks,
                         s->p.n_ctx);
            else
                snprintf(msg, sizeof msg,
                         "prompt of %d tokens does not fit the KV pool (%d blocks of %d tokens); raise kv_bytes",
                         q->n_toks, s->kv.n_blocks, s->bs);
            wait_pop(s);
            finish_seq(s, q, CEL_FINISH_ERROR, msg);
            retire(s, q);
            *did = true;
            continue;
        }
        int32_t matched = 0;
        if (q->kv.n_blocks == 0) matched = cel_kv_seq_match(&s->kv, &q->kv, q->toks, q->n_toks - 1, err);
        int32_t n_past = q->kv.n_keyed * s->bs;
        int32_t need = cel_kv_seq_blocks_needed(&s->kv, &q->kv, n_past, q->n_toks);
        int32_t margin = s->n_run > 0 ? watermark : 0;
        if (need + margin > cel_kv_n_available(&s->kv)) {
            cel_kv_seq_release(&s->kv, &q->kv); /* do not pin cached blocks while waiting */
            break;
        }
        cel_status st = cel_kv_seq_reserve(&s->kv, &q->kv, n_past, q->n_toks, err);
        if (st == CEL_ERR_LIMIT) {
            cel_kv_seq_release(&s->kv, &q->kv);
            break;
        }
        CEL_TRY(st);
        wait_pop(s);
        q->n_computed = n_past;
        if (q->age == 0) q->age = ++s->age_counter;
        count_cached(s, q, matched);
        mark_admitted(s, q->r);
        CEL_TRY(run_insert(s, q, err));
        *did = true;
    }
    return CEL_OK;
}

/* The youngest running sequence not scheduled in this step (q counts as
 * unscheduled), or NULL. */
static seq *pick_victim(cel_sched *s)
{
    for (int32_t i = s->n_run - 1; i >= 0; i--) {
        seq *v = s->run[i];
        if (v->state == SEQ_RUNNING && v->n_new == 0) return v;
    }
    return NULL;
}

/* Gets blocks for q's next n tokens, preempting younger sequences while the
 * pool is short. Returns false when q itself had to be preempted. */
static cel_status reserve_or_preempt(cel_sched *s, seq *q, int32_t n, bool *ok, cel_error *err)
{
    *ok = false;
    for (;;) {
        cel_status st = cel_kv_seq_reserve(&s->kv, &q->kv, q->n_computed, q->n_computed + n, err);
        if (st == CEL_OK) {
            *ok = true;
            return CEL_OK;
        }
        if (st != CEL_ERR_LIMIT) return st;
        seq *v = pick_victim(s);
        if (!v || v == q) {
            bool alone = true;
            for (int32_t i = 0; i < s->n_run; i++)
                if (s->run[i] != q && s->run[i]->state == SEQ_RUNNING) alone = false;
            if (alone) /* cannot happen while n_ctx <= pool tokens; never spin on it */
                return cel_error_set(err, CEL_ERR_INTERNAL, "sched: a lone sequence of %d tokens found no KV block",
                                     q->n_toks);
            preempt(s, q);
            return CEL_OK;
        }
        preempt(s, v);
    }
}

static bool inflight_has(const cel_sched *s, uint64_t key)
{
    for (int32_t i = 0; i < s->n_inflight; i++)
        if (s->inflight[i] == key) return true;
    return false;
}

/* Records the keys of the blocks that q's chunk of n tokens completes. */
static cel_status inflight_add(cel_sched *s, seq *q, int32_t n, cel_error *err)
{
    const int32_t bs = s->bs;
    int32_t end = (q->n_computed + n) / bs;
    uint64_t parent = q->kv.n_keyed ? q->kv.keys[q->kv.n_keyed - 1] : CEL_KV_ROOT_KEY;
    for (int32_t i = q->kv.n_keyed; i < end; i++) {
        parent = cel_kv_block_key(parent, q->toks + (size_t)i * (size_t)bs, bs);
        CEL_TRY(grow((void **)&s->inflight, &s->cap_inflight, s->n_inflight + 1, sizeof *s->inflight, err));
        s->inflight[s->n_inflight++] = parent;
    }
    return CEL_OK;
}

static cel_status add_to_batch(cel_sched *s, seq *q, int32_t n, int32_t *n_tok, int32_t *n_bs, cel_error *err)
{
    if (*n_bs + 1 > s->cap_bseqs) { /* b_seqs, b_ptr, b_out, b_samp, b_tok, b_lp share one capacity */
        int32_t cap = s->cap_bseqs ? s->cap_bseqs * 2 : 64;
        void *a = realloc(s->b_seqs, (size_t)cap * sizeof *s->b_seqs);
        if (a) s->b_seqs = a;
        void *b = realloc(s->b_ptr, (size_t)cap * sizeof *s->b_ptr);
        if (b) s->b_ptr = b;
        void *c = realloc(s->b_out, (size_t)cap * sizeof *s->b_out);
        if (c) s->b_out = c;
        void *d = realloc(s->b_samp, (size_t)cap * sizeof *s->b_samp);
        if (d) s->b_samp = d;
        void *e = realloc(s->b_tok, (size_t)cap * sizeof *s->b_tok);
        if (e) s->b_tok = e;
        void *f = realloc(s->b_lp, (size_t)cap * sizeof *s->b_lp);
        if (f) s->b_lp = f;
        if (!a || !b || !c || !d || !e || !f)
            return cel_error_set(err, CEL_ERR_NOMEM, "sched: out of memory for %d batch entries", cap);
        s->cap_bseqs = cap;
    }
    q->n_new = n;
    q->row = *n_tok;
    memcpy(s->b_tokens + *n_tok, q->toks + q->n_computed, (size_t)n * sizeof *s->b_tokens);
    s->b_ptr[*n_bs] = q;
    (*n_bs)++;
    *n_tok += n;
    return CEL_OK;
}

/* Fills the step's batch: decode tokens first, then prompt chunks. */
static cel_status build_batch(cel_sched *s, int32_t *n_tok_out, int32_t *n_bs_out, cel_error *err)
{
    int32_t budget = s->p.max_batch_tokens, n_tok = 0, n_bs = 0;
    s->n_inflight = 0;
    for (int32_t i = 0; i < s->n_run; i++) {
        s->run[i]->n_new = 0;
        s->run[i]->out = -1;
    }
    for (int32_t i = 0; i < s->n_run; i++)
        if (s->run[i]->n_toks <= s->run[i]->n_computed) /* an invariant broke: end it rather than hang */
            finish_seq(s, s->run[i], CEL_FINISH_ERROR, "internal error: a sequence with nothing to compute");
    compact_run(s);
    /* pass 1: decodes, oldest first */
    for (int32_t i = 0; i < s->n_run && budget > 0; i++) {
        seq *q = s->run[i];
        if (q->state != SEQ_RUNNING || q->n_toks - q->n_computed != 1) continue;
        bool ok;
        CEL_TRY(reserve_or_preempt(s, q, 1, &ok, err));
        if (!ok) continue;
        CEL_TRY(add_to_batch(s, q, 1, &n_tok, &n_bs, err));
        budget--;
    }
    /* pass 2: prompt chunks (new prompts and requeued sequences), oldest first */
    for (int32_t i = 0; i < s->n_run && budget > 0; i++) {
        seq *q = s->run[i];
        if (q->state != SEQ_RUNNING || q->n_new || q->n_toks - q->n_computed <= 1) continue;
        const int32_t bs = s->bs;
        if (q->n_computed == q->kv.n_keyed * bs) {
            /* another sequence may have published our next blocks since */
            int32_t m = cel_kv_seq_match(&s->kv, &q->kv, q->toks, q->n_toks - 1, err);
            if (m) {
                q->n_computed += m * bs;
                count_cached(s, q, m);
            }
            /* ... or be computing the next one right now: wait a step for it */
            if (q->n_computed + bs <= q->n_toks - 1) {
                uint64_t parent = q->kv.n_keyed ? q->kv.keys[q->kv.n_keyed - 1] : CEL_KV_ROOT_KEY;
                uint64_t key = cel_kv_block_key(parent, q->toks + q->n_computed, bs);
                if (inflight_has(s, key)) {
                    s->c_defer++;
                    continue;
                }
            }
        }
        int32_t n = q->n_toks - q->n_computed;
        if (n > budget) n = budget;
        bool ok;
        CEL_TRY(reserve_or_preempt(s, q, n, &ok, err));
        if (!ok) continue;
        CEL_TRY(inflight_add(s, q, n, err));
        CEL_TRY(add_to_batch(s, q, n, &n_tok, &n_bs, err));
        budget -= n;
    }
    /* preempted sequences left the running list */
    compact_run(s);
    *n_tok_out = n_tok;
    *n_bs_out = n_bs;
    return CEL_OK;
}

/* ------------------------------------------------------------ sampling and events */

static bool is_stop_token(const sreq *r, int32_t t)
{
    for (size_t i = 0; i < r->sp.n_stop_tokens; i++)
        if (r->sp.stop_tokens[i] == t) return true;
    return false;
}

/* Records q's sampled token, decides whether the sample is finished (stop
 * token, end-of-generation token, stop string, max_tokens, context full)
 * and emits its event with the text that became final. */
static cel_status accept_token(cel_sched *s, seq *q, const cel_sample_out *so, cel_error *err)
{
    sreq *r = q->r;
    const int32_t t = so->token;
    CEL_TRY(seq_push_tok(q, t, err));
    q->n_gen++;
    s->c_gen++;
    CEL_TRY(cel_sample_state_accept(&q->st, t, err));
    cel_buf_reset(&s->tb);
    cel_buf_reset(&s->piece);
    cel_finish f = CEL_FINISH_NONE;
    bool stopped = false;
    bool eog = is_stop_token(r, t) || (!r->sp.ignore_eos && s->text.is_eog && s->text.is_eog(s->text.ctx, t));
    if (eog) {
        f = CEL_FINISH_STOP; /* the stop token's own text is never emitted */
    } else {
        if (s->text.detok_push) CEL_TRY(s->text.detok_push(s->text.ctx, &q->dt, t, &s->piece, err));
        CEL_TRY(cel_stopper_push(&q->stop, s->piece.data, s->piece.len, &s->tb, &stopped, err));
        if (stopped) f = CEL_FINISH_STOP;
    }
    if (f == CEL_FINISH_NONE && ((r->sp.max_tokens > 0 && q->n_gen >= r->sp.max_tokens) || q->n_toks >= s->n_ctx))
        f = CEL_FINISH_LENGTH;
    if (f != CEL_FINISH_NONE && !stopped) {
        /* the end: release bytes held for an unfinished character, then
         * the text held for a possible stop string */
        cel_buf_reset(&s->piece);
        if (s->text.detok_flush) CEL_TRY(s->text.detok_flush(s->text.ctx, &q->dt, &s->piece, err));
        CEL_TRY(cel_stopper_push(&q->stop, s->piece.data, s->piece.len, &s->tb, &stopped, err));
        if (stopped) f = CEL_FINISH_STOP;
        else CEL_TRY(cel_stopper_flush(&q->stop, &s->tb, err));
    }
    emit(s, q, q->sample, t, so, s->tb.data, s->tb.len, f, NULL);
    if (f != CEL_FINISH_NONE) q->state = SEQ_DONE;
    return CEL_OK;
}

static void init_sampler(cel_sched *s, seq *q)
{
    cel_sample_state_init(&q->st, q->r->sp.seed, q->sample);
    memset(&q->dt, 0, sizeof q->dt);
    if (s->text.detok_init) s->text.detok_init(s->text.ctx, &q->dt);
    cel_stopper_init(&q->stop, q->r->sp.stop, q->r->sp.n_stop);
    q->has_sampler = true;
}

/* Samples q's next token from logits (drawing its uniform now), or - when
 * req is an on device request - takes the backend's token dev_tok, or, when
 * the backend gave the row back (dev_tok < 0), samples its logits on the CPU
 * with the uniform drawn before the forward. */
static cel_status sample_one(cel_sched *s, seq *q, const float *logits, const cel_batch_sample *req, int32_t dev_tok,
                             float dev_lp, cel_error *err)
{
    cel_sample_out so;
    if (!req || !req->on) {
        CEL_TRY(cel_sample(&q->r->sp, q->r->pset, q->r->n_pset, &q->st, logits, &s->ws, &so, err));
    } else if (dev_tok < 0) {
        CEL_TRY(cel_sample_u(&q->r->sp, q->r->pset, q->r->n_pset, &q->st, logits, &s->ws, q->u, &so, err));
    } else {
        if (dev_tok >= s->n_vocab)
            return cel_error_set(err, CEL_ERR_DEVICE, "sched: backend %s sampled token %d outside the vocabulary (%d)",
                                 s->be->v->name, dev_tok, s->n_vocab);
        memset(&so, 0, sizeof so);
        so.token = dev_tok;
        so.logprob = req->want_logprob ? dev_lp : 0.0f;
    }
    return accept_token(s, q, &so, err);
}

/* Samples q's next token (see sample_one); a failure (out of memory, logits
 * that are not finite) ends this sample with an error event and nothing
 * else. */
static void sample_or_fail(cel_sched *s, seq *q, const float *logits, const cel_batch_sample *req, int32_t dev_tok,
                           float dev_lp)
{
    cel_error e;
    cel_error_clear(&e);
    if (sample_one(s, q, logits, req, dev_tok, dev_lp, &e) == CEL_OK) return;
    cel_log(&s->p.log, CEL_LOG_ERROR, "request %llu sample %u: %s", (unsigned long long)q->r->id, q->sample, e.msg);
    if (q->state != SEQ_DONE) finish_seq(s, q, CEL_FINISH_ERROR, e.msg);
}

/* Whether q's next token can be sampled by the backend: a sample already
 * running (forks sample on the CPU) whose sampling has no penalties and no
 * logprob alternatives, and top_k within the device's cap. Fills *req and
 * draws the sample's uniform (one per token, sample.h's contract). */
static bool device_request(cel_sched *s, seq *q, cel_batch_sample *req)
{
    memset(req, 0, sizeof *req);
    const cel_sampling *sp = &q->r->sp;
    if (!q->has_sampler || sp->repetition_penalty != 1.0f || sp->presence_penalty != 0.0f ||
        sp->frequency_penalty != 0.0f || sp->n_logprobs > 0)
        return false;
    int32_t k = sp->top_k >= s->n_vocab ? 0 : sp->top_k; /* top_k >= V is off (sample.c) */
    if (k > CEL_BACKEND_SAMPLE_MAX_K) return false;
    req->on = true;
    req->want_logprob = sp->n_logprobs == 0;
    req->temperature = sp->temperature;
    req->top_k = k;
    req->top_p = sp->top_p;
    req->min_p = sp->min_p;
    q->u = cel_sample_draws(sp) ? cel_rng_uniform(&q->st.rng) : 0.0;
    req->u = q->u;
    return true;
}

/* q's prompt is done: it becomes sample q->sample and forks one child per
 * other sample of its group. The children share every prompt block (the
 * partly filled last one is copied when a child first writes to it); each
 * draws its first token from the same logits with its own RNG stream. */
static void fork_and_sample(cel_sched *s, seq *q, const float *logits)
{
    sreq *r = q->r;
    const uint32_t n = q->n_group;
    r->first_out = true;
    q->n_group = 1;
    int32_t first_born = s->n_born;
    for (uint32_t i = 1; i < n; i++) {
        cel_error e;
        cel_error *err = &e;
        seq *c = calloc(1, sizeof *c);
        cel_status st = c ? CEL_OK : CEL_ERR_NOMEM;
        if (c) {
            c->r = r;
            c->age = q->age;
            c->sample = q->sample + i;
            c->n_group = 1;
            c->out = -1;
            c->state = SEQ_RUNNING;
            cel_kv_seq_init(&c->kv);
            c->toks = malloc((size_t)q->cap * sizeof *c->toks);
            st = c->toks ? cel_kv_seq_fork(&s->kv, &c->kv, &q->kv, err) : CEL_ERR_NOMEM;
            if (st == CEL_OK) {
                memcpy(c->toks, q->toks, (size_t)q->n_toks * sizeof *c->toks);
                c->n_toks = q->n_toks;
                c->cap = q->cap;
                c->n_computed = q->n_computed;
                st = grow((void **)&s->born, &s->cap_born, s->n_born + 1, sizeof *s->born, err);
            }
        }
        if (st != CEL_OK) { /* this sample fails; the others go on */
            seq tmp;
            memset(&tmp, 0, sizeof tmp);
            tmp.r = r;
            emit(s, &tmp, q->sample + i, -1, NULL, NULL, 0, CEL_FINISH_ERROR, "out of memory forking a sample");
            r->n_live--;
            if (c) seq_free(s, c);
            continue;
        }
        s->born[s->n_born++] = c;
    }
    /* every sample gets its first token or, failing that, its final event */
    for (int32_t i = first_born - 1; i < s->n_born; i++) {
        seq *t = i < first_born ? q : s->born[i];
        init_sampler(s, t);
        sample_or_fail(s, t, logits, NULL, -1, 0.0f);
    }
}

/* ------------------------------------------------------------ step */

static void publish_stats(cel_sched *s, int32_t n_tok, bool stepped)
{
    pthread_mutex_lock(&s->mu);
    if (stepped) {
        s->stats.steps++;
        s->stats.last_batch_tokens = n_tok;
        s->ctr.forwards++;
    }
    s->stats.prompt_tokens += s->c_prompt;
    s->stats.cached_tokens += s->c_cached;
    s->stats.gen_tokens += s->c_gen;
    s->stats.prefix_hits += s->c_hits;
    s->ctr.preemptions += s->c_preempt;
    s->ctr.deferrals += s->c_defer;
    s->c_prompt = s->c_cached = s->c_gen = s->c_hits = s->c_preempt = s->c_defer = 0;
    s->stats.running = s->n_run;
    s->stats.queued = s->n_queued;
    s->stats.kv_blocks_used = cel_kv_n_used(&s->kv);
    s->ctr.kv_cow = s->kv.n_cow;
    s->ctr.kv_evicted = s->kv.n_evicted;
    s->ctr.kv_cached = cel_kv_n_cached(&s->kv);
    s->ctr.n_ctx = s->n_ctx;
    pthread_mutex_unlock(&s->mu);
}

/* Removes finished sequences from the running list and adds this step's
 * children. */
static cel_status settle(cel_sched *s, cel_error *err)
{
    compact_run(s);
    cel_status st = CEL_OK;
    for (int32_t i = 0; i < s->n_born; i++) {
        seq *c = s->born[i];
        if (c->state == SEQ_DONE || st != CEL_OK) {
            if (c->state != SEQ_DONE) { /* could not list it: end it visibly */
                finish_seq(s, c, CEL_FINISH_ERROR, "out of memory");
            }
            retire(s, c);
            continue;
        }
        st = run_insert(s, c, err);
        if (st != CEL_OK) {
            finish_seq(s, c, CEL_FINISH_ERROR, "out of memory");
            retire(s, c);
        }
    }
    s->n_born = 0;
    return st;
}

static cel_status step(cel_sched *s, bool *did, cel_error *err)
{
    *did = false;
    CEL_TRY(intake(s, did, err));
    reap_cancelled(s, did);
    CEL_TRY(admit(s, did, err));
    int32_t n_tok = 0, n_bs = 0;
    CEL_TRY(build_batch(s, &n_tok, &n_bs, err));
    if (n_bs == 0) {
        publish_stats(s, 0, false);
        return CEL_OK;
    }
    *did = true;

    /* the batch */
    int32_t n_out = 0;
    for (int32_t i = 0; i < n_bs; i++) {
        seq *q = s->b_ptr[i];
        cel_batch_seq *b = &s->b_seqs[i];
        b->block_table = q->kv.blocks;
        b->n_past = q->n_computed;
        b->n_new = q->n_new;
        b->n_blocks = (q->n_computed + q->n_new + s->bs - 1) / s->bs;
        b->first = q->row;
        q->out = -1;
        if (q->n_computed + q->n_new == q->n_toks) {
            q->out = n_out;
            s->b_out[n_out++] = q->row + q->n_new - 1;
        }
        if (q->n_new > 1 || !q->has_sampler) s->c_prompt += (uint64_t)q->n_new;
    }
    if ((size_t)n_out > s->cap_logits) {
        size_t rows = s->cap_logits ? s->cap_logits : 16;
        while (rows < (size_t)n_out) rows *= 2;
        float *nl = realloc(s->logits, rows * (size_t)s->n_vocab * sizeof *nl);
        if (!nl) return cel_error_set(err, CEL_ERR_NOMEM, "sched: out of memory for %zu logit rows", rows);
        s->logits = nl;
        s->cap_logits = rows;
    }
    cel_batch batch = {
        .n_tokens = n_tok,
        .tokens = s->b_tokens,
        .n_seqs = n_bs,
        .seqs = s->b_seqs,
        .n_out = n_out,
        .out_rows = s->b_out,
        .logits = s->logits,
    };
    bool dev = false; /* any row sampled by the backend */
    if (s->be->can_sample) {
        for (int32_t i = 0; i < n_bs; i++) {
            seq *q = s->b_ptr[i];
            if (q->out >= 0) dev |= device_request(s, q, &s->b_samp[q->out]);
        }
        if (dev) {
            batch.sample = s->b_samp;
            batch.tokens_out = s->b_tok;
            batch.logprob_out = s->b_lp;
        }
    }
    cel_error ferr;
    cel_error_clear(&ferr);
    cel_status fst = s->be->v->forward(s->be, &batch, &ferr);
    if (fst != CEL_OK) {
        /* the sequences of this batch fail; the engine goes on */
        cel_log(&s->p.log, CEL_LOG_ERROR, "forward over %d tokens failed: %s", n_tok, ferr.msg);
        for (int32_t i = 0; i < n_bs; i++) finish_seq(s, s->b_ptr[i], CEL_FINISH_ERROR, ferr.msg);
        CEL_TRY(settle(s, err));
        publish_stats(s, n_tok, true);
        return CEL_OK;
    }
    for (int32_t i = 0; i < n_bs; i++) {
        seq *q = s->b_ptr[i];
        q->n_computed += q->n_new;
        CEL_TRY(cel_kv_seq_publish(&s->kv, &q->kv, q->toks, q->n_computed, err));
    }
    for (int32_t i = 0; i < n_bs; i++) {
        seq *q = s->b_ptr[i];
        if (q->out < 0 || q->state != SEQ_RUNNING) continue;
        const float *row = s->logits + (size_t)q->out * (size_t)s->n_vocab;
        if (!q->has_sampler) fork_and_sample(s, q, row);
        else if (dev) sample_or_fail(s, q, row, &s->b_samp[q->out], s->b_tok[q->out], s->b_lp[q->out]);
        else sample_or_fail(s, q, row, NULL, -1, 0.0f);
    }
    CEL_TRY(settle(s, err));
    publish_stats(s, n_tok, true);
    return CEL_OK;
}

cel_status cel_sched_step(cel_sched *s, bool *did_work, cel_error *err)
{
    bool dummy;
    if (!did_work) did_work = &dummy;
    *did_work = false;
    pthread_mutex_lock(&s->mu);
    bool on = s->thread_on;
    pthread_mutex_unlock(&s->mu);
    if (on) return cel_error_set(err, CEL_ERR_INVALID, "engine: step called while the engine thread runs");
    return step(s, did_work, err);
}

static bool idle(cel_sched *s)
{
    pthread_mutex_lock(&s->mu);
    bool in = s->in_head != NULL || s->n_cancels > 0;
    pthread_mutex_unlock(&s->mu);
    return !in && s->n_run == 0 && s->wait_head == NULL;
}

cel_status cel_sched_run_until_idle(cel_sched *s, cel_error *err)
{
    for (;;) {
        bool did;
        CEL_TRY(cel_sched_step(s, &did, err));
        if (idle(s)) return CEL_OK;
        if (!did) return cel_error_set(err, CEL_ERR_INTERNAL, "engine: no progress with %d running, %d waiting",
                                       s->n_run, s->n_wait);
    }
}

/* ------------------------------------------------------------ thread */

static void *thread_main(void *arg)
{
    cel_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop_flag) {
        /* n_run and wait_head belong to this thread; the rest is shared */
        bool work = s->in_head || s->n_cancels || s->n_run || s->wait_head;
        if (!work) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        bool did;
        cel_error err;
        cel_error_clear(&err);
        cel_status st = step(s, &did, &err);
        if (st != CEL_OK) cel_log(&s->p.log, CEL_LOG_ERROR, "engine step failed: %s", err.msg);
        pthread_mutex_lock(&s->mu);
        if (st != CEL_OK && !did) { /* a persistent failure: do not spin; wait for news */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

cel_status cel_sched_start(cel_sched *s, cel_error *err)
{
    pthread_mutex_lock(&s->mu);
    if (s->thread_on) {
        pthread_mutex_unlock(&s->mu);
        return CEL_OK;
    }
    s->stop_flag = false;
    int rc = pthread_create(&s->thread, NULL, thread_main, s);
    if (rc == 0) s->thread_on = true;
    pthread_mutex_unlock(&s->mu);
    if (rc) return cel_error_set(err, CEL_ERR_INTERNAL, "engine: cannot start its thread (%s)", strerror(rc));
    return CEL_OK;
}

void cel_sched_stop(cel_sched *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->thread_on) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->stop_flag = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_lock(&s->mu);
    s->thread_on = false;
    pthread_mutex_unlock(&s->mu);
}

void cel_sched_get_stats(cel_sched *s, cel_engine_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->stats;
    st->queued = s->n_queued;
    pthread_mutex_unlock(&s->mu);
}

void cel_sched_get_counters(cel_sched *s, cel_sched_counters *c)
{
    pthread_mutex_lock(&s->mu);
    *c = s->ctr;
    c->n_ctx = s->n_ctx;
    pthread_mutex_unlock(&s->mu);
}

cel_status cel_sched_weights_changed(cel_sched *s, cel_status (*fn)(void *ctx, cel_error *err), void *ctx,
                                     cel_error *err)
{
    pthread_mutex_lock(&s->mu);
    bool was_on = s->thread_on;
    pthread_mutex_unlock(&s->mu);
    cel_sched_stop(s); /* the thread must not step while the weights change */
    cel_status st = CEL_OK;
    if (!idle(s))
        st = cel_error_set(err, CEL_ERR_BUSY,
                           "engine: %d sequences running and %d waiting; weights can change only when idle", s->n_run,
                           s->n_wait);
    if (st == CEL_OK) {
        cel_kv_drop_cache(&s->kv);
        publish_stats(s, 0, false);
        if (fn) st = fn(ctx, err);
    }
    if (was_on) {
        cel_error e2;
        cel_status st2 = cel_sched_start(s, &e2);
        if (st == CEL_OK && st2 != CEL_OK) {
            if (err) *err = e2;
            st = st2;
        }
    }
    return st;
}

/* ------------------------------------------------------------ generate */

typedef struct gen_sample {
    cel_buf text;
    int32_t *ids;
    float *lps;
    size_t n, cap;
    cel_finish fin;
} gen_sample;

typedef struct gen_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t n, done;
    gen_sample *smp;
    bool nomem;
    char error[256];
} gen_ctx;

static void gen_cb(void *ud, const cel_token_event *ev)
{
    gen_ctx *g = ud;
    pthread_mutex_lock(&g->mu);
    if (ev->sample < g->n) {
        gen_sample *x = &g->smp[ev->sample];
        if (ev->text_len && cel_buf_append(&x->text, ev->text, ev->text_len) != CEL_OK) g->nomem = true;
        if (ev->token >= 0) {
            if (x->n == x->cap) {
                size_t c = x->cap ? x->cap * 2 : 64;
                int32_t *ni = realloc(x->ids, c * sizeof *ni);
                if (ni) x->ids = ni;
                float *nl = realloc(x->lps, c * sizeof *nl);
                if (nl) x->lps = nl;
                if (ni && nl) x->cap = c;
            }
            if (x->n < x->cap) {
                x->ids[x->n] = ev->token;
                x->lps[x->n] = ev->logprob;
                x->n++;
            } else {
                g->nomem = true;
            }
        }
        if (ev->finish != CEL_FINISH_NONE) {
            x->fin = ev->finish;
            if (ev->finish == CEL_FINISH_ERROR && !g->error[0])
                snprintf(g->error, sizeof g->error, "%s", ev->error ? ev->error : "unknown error");
            g->done++;
            pthread_cond_broadcast(&g->cv);
        }
    }
    pthread_mutex_unlock(&g->mu);
}

cel_status cel_sched_generate(cel_sched *s, const int32_t *prompt, size_t n_prompt, uint32_t n, const cel_sampling *sp,
                              cel_completion *out, cel_error *err)
{
    if (n == 0) return cel_error_set(err, CEL_ERR_INVALID, "generate: n must be >= 1");
    memset(out, 0, n * sizeof *out);
    if (n_prompt >= (size_t)s->n_ctx)
        return cel_error_set(err, CEL_ERR_LIMIT, "generate: prompt of %zu tokens does not fit the context of %d tokens",
                             n_prompt, s->n_ctx);
    gen_ctx g;
    memset(&g, 0, sizeof g);
    g.n = n;
    g.smp = calloc(n, sizeof *g.smp);
    if (!g.smp) return cel_error_set(err, CEL_ERR_NOMEM, "generate: out of memory");
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    cel_request rq = {.prompt = prompt, .n_prompt = n_prompt, .n = n, .sampling = *sp, .cb = gen_cb, .ud = &g};
    if (rq.sampling.n_logprobs < 0) rq.sampling.n_logprobs = 0; /* completions carry logprobs */
    uint64_t id;
    cel_status st = cel_sched_submit(s, &rq, &id, err);
    if (st == CEL_OK) {
        pthread_mutex_lock(&s->mu);
        bool on = s->thread_on;
        pthread_mutex_unlock(&s->mu);
        if (on) {
            pthread_mutex_lock(&g.mu);
            while (g.done < n) pthread_cond_wait(&g.cv, &g.mu);
            pthread_mutex_unlock(&g.mu);
        } else {
            while (st == CEL_OK && g.done < n) {
                bool did;
                st = cel_sched_step(s, &did, err);
                if (st == CEL_OK && !did && g.done < n)
                    st = cel_error_set(err, CEL_ERR_INTERNAL, "generate: the engine made no progress");
            }
            if (st != CEL_OK && g.done < n) { /* leave nothing behind */
                cel_sched_cancel(s, id);
                bool did;
                cel_error e2;
                cel_sched_step(s, &did, &e2);
            }
        }
    }
    if (st == CEL_OK && g.nomem) st = cel_error_set(err, CEL_ERR_NOMEM, "generate: out of memory collecting output");
    if (st == CEL_OK && g.error[0]) st = cel_error_set(err, CEL_ERR_INTERNAL, "generate: %s", g.error);
    for (uint32_t i = 0; i < n; i++) {
        gen_sample *x = &g.smp[i];
        if (st == CEL_OK) {
            out[i].text = cel_buf_steal(&x->text); /* "" when nothing was emitted */
            if (!out[i].text) {
                st = cel_error_set(err, CEL_ERR_NOMEM, "generate: out of memory");
            } else {
                out[i].ids = x->ids;
                out[i].logprobs = x->lps;
                out[i].n_ids = x->n;
                out[i].finish = x->fin;
                continue;
            }
        }
        cel_buf_free(&x->text);
        free(x->ids);
        free(x->lps);
    }
    if (st != CEL_OK)
        for (uint32_t i = 0; i < n; i++) cel_completion_free(&out[i]);
    free(g.smp);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    return st;
}

void cel_completion_free(cel_completion *c)
{
    if (!c) return;
    free(c->text);
    free(c->ids);
    free(c->logprobs);
    memset(c, 0, sizeof *c);
}
