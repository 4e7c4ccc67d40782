/*
 * backend_local.c - generation with celine's own engine: chat messages are
 * rendered with the model's chat template (cel_chat_render), tokenized and
 * submitted; the engine's per-token events are collected per sample and
 * delivered as one result per request from poll, on the polling thread.
 *
 * Two modes. Unthreaded (the CLI): poll drives the engine by calling
 * cel_engine_step on the caller's thread, so no locks are contended and the
 * time spent in the engine is measured exactly. Threaded (the server): the
 * engine runs its own thread and its callbacks hand finished requests over
 * through a mutex-protected list, waking poll (and an optional notify hook,
 * e.g. uv_async_send).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "celine/generate.h"
#include "gen_internal.h"

typedef struct local local;

typedef struct lreq {
    local *L;
    cel_gen_done_fn cb;
    void *ud;
    uint32_t n;
    cel_buf *text;
    int32_t *ntok;
    cel_finish *fin;
    uint32_t finished;      /* engine thread (or stepping thread) */
    int32_t prompt_tokens;
    char *error;            /* first engine error */
    uint64_t engine_id;
    bool submitted;         /* accepted by the engine (else in the backlog) */
    int32_t *ids;           /* prompt, kept until accepted */
    size_t n_ids;
    cel_sampling sampling;  /* stop strings point into stops[] */
    char **stops;
    struct lreq *next;      /* done list / backlog */
    struct lreq *prev_all, *next_all; /* every undelivered request */
} lreq;

struct local {
    cel_gen_backend base;
    cel_engine *e;
    cel_model *model;       /* owned when opened from a path */
    bool own_engine;
    cel_gen_local_opts opts;
    cel_chat_kind chat;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lreq *done_head, *done_tail; /* guarded by mu */
    lreq *backlog_head, *backlog_tail;
    lreq *all;
    size_t pending;
    double engine_s;
};

/* ------------------------------------------------------ token counting */

static cel_status tok_count(void *ud, const char *text, size_t len, size_t *n, cel_error *err)
{
    int32_t *ids = NULL;
    size_t k = 0;
    CEL_TRY(cel_tokenize((const cel_tokenizer *)ud, text, len, 0, &ids, &k, err));
    free(ids);
    *n = k;
    return CEL_OK;
}

cel_gen_counter cel_gen_counter_tokenizer(const cel_tokenizer *t) { return (cel_gen_counter){tok_count, (void *)t}; }

/* ------------------------------------------------------------ requests */

static void lreq_free(lreq *r)
{
    if (!r) return;
    for (uint32_t i = 0; r->text && i < r->n; i++) cel_buf_free(&r->text[i]);
    free(r->text);
    free(r->ntok);
    free(r->fin);
    free(r->error);
    free(r->ids);
    for (size_t i = 0; r->stops && i < r->sampling.n_stop; i++) free(r->stops[i]);
    free(r->stops);
    free(r);
}

/* Appends r to the done list for the polling thread; the caller holds mu. */
static void append_done(local *L, lreq *r)
{
    r->next = NULL;
    if (L->done_tail) L->done_tail->next = r;
    else L->done_head = r;
    L->done_tail = r;
}

/* Finishes a request the engine never ran (rejected, cancelled in the
 * backlog, or the backend freed): every sample counts as finished and r goes
 * on the done list at once. Unlike on_token it neither signals cv nor calls
 * the notify hook: its callers run on the thread that delivers. r->fin is
 * the caller's to set. */
static void finish_at_once(local *L, lreq *r)
{
    r->finished = r->n;
    pthread_mutex_lock(&L->mu);
    append_done(L, r);
    pthread_mutex_unlock(&L->mu);
}

/* Engine callback: one event per token of one sample. Runs on the engine
 * thread (threaded mode) or inside cel_engine_step (unthreaded); must not block. */
static void on_token(void *ud, const cel_token_event *ev)
{
    lreq *r = ud;
    local *L = r->L;
    if (ev->sample >= r->n) return;
    uint32_t s = ev->sample;
    if (ev->text_len && cel_buf_append(&r->text[s], ev->text, ev->text_len) && !r->error)
        r->error = strdup("out of memory collecting tokens");
    if (ev->finish == CEL_FINISH_NONE) return;
    r->fin[s] = ev->finish;
    r->ntok[s] = ev->n_gen_tokens;
    r->prompt_tokens = ev->n_prompt_tokens;
    if (ev->finish == CEL_FINISH_ERROR && !r->error) r->error = strdup(ev->error ? ev->error : "engine error");
    if (++r->finished < r->n) return;
    /* From the moment r is on the done list the polling thread may deliver
     * it and even free the backend: touch nothing after the unlock. The
     * notify hook (non-blocking, e.g. uv_async_send) runs under the lock for
     * that reason, and local_free passes through the lock before freeing. */
    pthread_mutex_lock(&L->mu);
    append_done(L, r);
    pthread_cond_signal(&L->cv);
    if (L->opts.engine_threaded && L->opts.notify) L->opts.notify(L->opts.notify_ud);
    pthread_mutex_unlock(&L->mu);
}

static void unlink_all(local *L, lreq *r)
{
    if (r->prev_all) r->prev_all->next_all = r->next_all;
    else L->all = r->next_all;
    if (r->next_all) r->next_all->prev_all = r->prev_all;
}

/* Runs the callbacks of finished requests (polling thread). Returns how many. */
static size_t deliver(local *L, bool cancelled)
{
    pthread_mutex_lock(&L->mu);
    lreq *list = L->done_head;
    L->done_head = L->done_tail = NULL;
    pthread_mutex_unlock(&L->mu);
    size_t k = 0;
    while (list) {
        lreq *r = list;
        list = r->next;
        unlink_all(L, r);
        L->pending--;
        cel_gen_sample smp[64];
        cel_gen_sample *sv = r->n <= 64 ? smp : malloc(r->n * sizeof *sv);
        cel_gen_result res = {.status = CEL_OK, .n = r->n, .samples = sv, .n_prompt_tokens = r->prompt_tokens};
        if (cancelled) {
            res = (cel_gen_result){.status = CEL_ERR_CANCELLED, .error = "backend freed", .n_prompt_tokens = -1};
        } else if (!sv) {
            res = (cel_gen_result){.status = CEL_ERR_NOMEM, .error = "out of memory", .n_prompt_tokens = -1};
        } else {
            bool all_err = true;
            for (uint32_t i = 0; i < r->n; i++) {
                sv[i] = (cel_gen_sample){r->text[i].data ? r->text[i].data : "", r->text[i].len, r->ntok[i], r->fin[i]};
                if (r->fin[i] != CEL_FINISH_ERROR) all_err = false;
            }
            if (r->error && all_err) /* an engine failure of the whole request */
                res = (cel_gen_result){.status = CEL_ERR_INTERNAL, .error = r->error, .n_prompt_tokens = -1};
        }
        r->cb(r->ud, &res);
        if (sv && sv != smp) free(sv);
        lreq_free(r);
        k++;
    }
    return k;
}

/* Submits the backlog (requests the engine refused as busy) in order. */
static cel_status flush_backlog(local *L, cel_error *err)
{
    while (L->backlog_head) {
        lreq *r = L->backlog_head;
        cel_request rq = {.prompt = r->ids, .n_prompt = r->n_ids, .n = r->n, .sampling = r->sampling, .cb = on_token,
                          .ud = r};
        cel_error e;
        cel_status st = cel_engine_submit(L->e, &rq, &r->engine_id, &e);
        if (st == CEL_ERR_BUSY) return CEL_OK;
        L->backlog_head = r->next;
        if (!L->backlog_head) L->backlog_tail = NULL;
        if (st) {
            /* the engine rejected this request: report it as a failed result */
            r->error = strdup(e.msg);
            for (uint32_t i = 0; i < r->n; i++) r->fin[i] = CEL_FINISH_ERROR;
            finish_at_once(L, r);
            continue;
        }
        r->submitted = true;
        free(r->ids);
        r->ids = NULL;
    }
    (void)err;
    return CEL_OK;
}

static cel_status local_submit(cel_gen_backend *b, const cel_gen_request *q, cel_error *err)
{
    local *L = (local *)b;
    if (!q->cb) return cel_error_set(err, CEL_ERR_INVALID, "request without a callback");
    if (q->n < 1 || q->n > 1024) return cel_error_set(err, CEL_ERR_INVALID, "n must be in 1..1024 (got %u)", q->n);
    if (!q->n_messages && !q->prompt) return cel_error_set(err, CEL_ERR_INVALID, "request without messages or prompt");
    const cel_model *m = cel_engine_model(L->e);
    cel_buf text;
    cel_buf_init(&text);
    int flags;
    cel_status st;
    if (q->n_messages) {
        st = cel_chat_render(L->chat, q->messages, q->n_messages, true, m->tok, &text, err);
        flags = CEL_TOKENIZE_PARSE_SPECIAL; /* the rendered template carries BOS etc. itself */
    } else {
        st = cel_buf_puts(&text, q->prompt) ? cel_error_set(err, CEL_ERR_NOMEM, "out of memory") : CEL_OK;
        flags = CEL_TOKENIZE_ADD_SPECIAL;
    }
    if (st) {
        cel_buf_free(&text);
        return st;
    }
    lreq *r = calloc(1, sizeof *r);
    if (!r) {
        cel_buf_free(&text);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    r->L = L;
    r->cb = q->cb;
    r->ud = q->ud;
    r->n = q->n;
    r->prompt_tokens = -1;
    r->sampling = q->sampling;
    r->text = calloc(q->n, sizeof *r->text);
    r->ntok = calloc(q->n, sizeof *r->ntok);
    r->fin = calloc(q->n, sizeof *r->fin);
    bool bad = !r->text || !r->ntok || !r->fin;
    /* stop strings are copied so a request parked in the backlog stays valid */
    r->sampling.stop = NULL;
    r->sampling.stop_tokens = NULL;
    r->sampling.n_stop_tokens = 0;
    if (!bad && q->sampling.n_stop) {
        r->stops = calloc(q->sampling.n_stop, sizeof *r->stops);
        bad = !r->stops;
        for (size_t i = 0; !bad && i < q->sampling.n_stop; i++) bad = !(r->stops[i] = strdup(q->sampling.stop[i]));
        r->sampling.stop = (const char *const *)r->stops;
    } else
        r->sampling.n_stop = 0;
    if (bad) {
        cel_buf_free(&text);
        lreq_free(r);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    st = cel_tokenize(m->tok, text.data ? text.data : "", text.len, flags, &r->ids, &r->n_ids, err);
    cel_buf_free(&text);
    if (st) {
        lreq_free(r);
        return st;
    }
    /* queue behind any backlog so requests reach the engine in submission order */
    r->next = NULL;
    if (L->backlog_tail) L->backlog_tail->next = r;
    else L->backlog_head = r;
    L->backlog_tail = r;
    r->next_all = L->all;
    if (L->all) L->all->prev_all = r;
    L->all = r;
    L->pending++;
    return flush_backlog(L, err);
}

static cel_status local_poll(cel_gen_backend *b, int timeout_ms, cel_error *err)
{
    local *L = (local *)b;
    double deadline = cel_now_sec() + (timeout_ms > 0 ? timeout_ms / 1000.0 : 0);
    for (;;) {
        CEL_TRY(flush_backlog(L, err));
        if (deliver(L, false)) return CEL_OK;
        if (L->pending == 0) return CEL_OK;
        if (!L->opts.engine_threaded) {
            bool did = false;
            double t0 = cel_now_sec();
            cel_status st = cel_engine_step(L->e, &did, err);
            L->engine_s += cel_now_sec() - t0;
            if (st) return st;
            if (!did && L->backlog_head == NULL) {
                pthread_mutex_lock(&L->mu);
                bool any = L->done_head != NULL;
                pthread_mutex_unlock(&L->mu);
                if (!any)
                    return cel_error_set(err, CEL_ERR_INTERNAL, "engine idle with %zu request(s) unfinished",
                                         L->pending);
            }
            continue; /* step until something finishes: the caller wants results */
        }
        double now = cel_now_sec();
        if (now >= deadline) return CEL_OK;
        pthread_mutex_lock(&L->mu);
        if (!L->done_head) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double wait = deadline - now;
            if (wait > 0.05 && L->backlog_head) wait = 0.05; /* retry the backlog soon */
            long ns = ts.tv_nsec + (long)((wait - (long)wait) * 1e9);
            ts.tv_sec += (time_t)wait + ns / 1000000000L;
            ts.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&L->cv, &L->mu, &ts);
        }
        pthread_mutex_unlock(&L->mu);
    }
}

static size_t local_pending(const cel_gen_backend *b) { return ((const local *)b)->pending; }

static void local_free(cel_gen_backend *b)
{
    local *L = (local *)b;
    if (!L) return;
    /* requests never accepted by the engine finish at once */
    while (L->backlog_head) {
        lreq *r = L->backlog_head;
        L->backlog_head = r->next;
        finish_at_once(L, r);
    }
    L->backlog_tail = NULL;
    /* cancel the rest and wait for their final events */
    for (lreq *r = L->all; r; r = r->next_all)
        if (r->submitted) cel_engine_cancel(L->e, r->engine_id);
    while (L->pending) {
        if (deliver(L, true)) continue;
        if (!L->opts.engine_threaded) {
            bool did = false;
            cel_error e;
            if (cel_engine_step(L->e, &did, &e) || !did) break; /* nothing more will come */
        } else {
            pthread_mutex_lock(&L->mu);
            if (!L->done_head) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += 1;
                pthread_cond_timedwait(&L->cv, &L->mu, &ts);
            }
            pthread_mutex_unlock(&L->mu);
        }
    }
    deliver(L, true);
    /* an engine-thread callback may still be inside its critical section */
    pthread_mutex_lock(&L->mu);
    pthread_mutex_unlock(&L->mu);
    if (L->own_engine) {
        cel_engine_free(L->e);
        cel_model_free(L->model);
    }
    pthread_cond_destroy(&L->cv);
    pthread_mutex_destroy(&L->mu);
    free(L);
}

/* Cancels the requests submitted with callback data ud: parked ones finish at
 * once, the engine's get their final CANCELLED events at its next step. */
static void local_cancel(cel_gen_backend *b, void *ud)
{
    local *L = (local *)b;
    lreq **pp = &L->backlog_head, *prev = NULL;
    while (*pp) {
        lreq *r = *pp;
        if (r->ud != ud) {
            prev = r;
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        if (L->backlog_tail == r) L->backlog_tail = prev;
        for (uint32_t i = 0; i < r->n; i++) r->fin[i] = CEL_FINISH_CANCELLED;
        finish_at_once(L, r);
    }
    for (lreq *r = L->all; r; r = r->next_all)
        if (r->ud == ud && r->submitted) cel_engine_cancel(L->e, r->engine_id);
}

static const cel_gen_backend_vtbl local_vtbl = {"local", local_submit, local_poll, local_pending, local_free,
                                                local_cancel};

double cel_gen_local_engine_seconds(const cel_gen_backend *b)
{
    return b->v == &local_vtbl ? ((const local *)b)->engine_s : 0.0;
}

cel_status cel_gen_local_create(cel_engine *e, const cel_gen_local_opts *opts, cel_gen_backend **out, cel_error *err)
{
    *out = NULL;
    if (!e) return cel_error_set(err, CEL_ERR_INVALID, "local backend needs an engine");
    local *L = calloc(1, sizeof *L);
    if (!L) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    L->base.v = &local_vtbl;
    L->e = e;
    if (opts) L->opts = *opts;
    const cel_model *m = cel_engine_model(e);
    L->chat = L->opts.chat != CEL_CHAT_AUTO ? L->opts.chat : cel_chat_detect(m->chat_template, m->tok);
    L->base.counter = cel_gen_counter_tokenizer(m->tok);
    snprintf(L->base.model_name, sizeof L->base.model_name, "%s", m->name ? m->name : "local");
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv, NULL);
    *out = &L->base;
    return CEL_OK;
}

cel_status cel_gen_local_open(const char *model_path, const cel_model_load_opts *mopts, const cel_engine_params *ep,
                              const cel_gen_local_opts *opts, cel_gen_backend **out, cel_error *err)
{
    *out = NULL;
    cel_model *m = NULL;
    cel_engine *e = NULL;
    CEL_TRY(cel_model_load(model_path, mopts, &m, err));
    cel_engine_params p;
    if (ep) p = *ep;
    else memset(&p, 0, sizeof p);
    cel_status st = cel_engine_create(m, &p, &e, err);
    if (st) {
        cel_model_free(m);
        return st;
    }
    cel_gen_local_opts o = opts ? *opts : (cel_gen_local_opts){0};
    o.engine_threaded = false;
    st = cel_gen_local_create(e, &o, out, err);
    if (st) {
        cel_engine_free(e);
        cel_model_free(m);
        return st;
    }
    local *L = (local *)*out;
    L->own_engine = true;
    L->model = m;
    return CEL_OK;
}
