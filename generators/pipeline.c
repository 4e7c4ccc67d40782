/*
 * pipeline.c - the core every pipeline kind plugs into: document window,
 * request bookkeeping, in-order emission of records and drops, dedup, stats.
 *
 * Documents are kept in a list in push order. A document is complete when
 * its kind's start() has returned and none of its requests is in flight;
 * complete documents at the head of the list are emitted (records sorted by
 * their order key) and freed, so output order never depends on which
 * request the backend finished first.
 */
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "gen_internal.h"

struct cel__item {
    uint64_t ord;
    uint64_t seq;   /* insertion order within the document (stable sort) */
    bool is_drop;
    cel_gen_drop reason;
    json_t *rec;
    size_t tokens;
    uint64_t dedup;
    char *unit_id;
    char *detail;
};

/* A request in flight; orphaned (p == NULL) when the pipeline is freed first. */
typedef struct cel__req {
    cel_gen_pipeline *p;
    cel__doc *d;
    cel__unit_done done;
    void *unit;
    void (*free_unit)(void *);
    struct cel__req *prev, *next;
} cel__req;

static const char *const drop_names[CEL_DROP__COUNT] = {
    [CEL_DROP_DOC_EMPTY] = "doc_empty",
    [CEL_DROP_DOC_TOO_SHORT] = "doc_too_short",
    [CEL_DROP_CHUNK_TOO_SHORT] = "chunk_too_short",
    [CEL_DROP_SEGMENT_TOO_LONG] = "segment_too_long",
    [CEL_DROP_SEGMENT_TOO_SHORT] = "segment_too_short",
    [CEL_DROP_GEN_ERROR] = "gen_error",
    [CEL_DROP_TRUNCATED] = "truncated",
    [CEL_DROP_EMPTY_OUTPUT] = "empty_output",
    [CEL_DROP_TOO_SHORT] = "too_short",
    [CEL_DROP_TOO_LONG] = "too_long",
    [CEL_DROP_NO_LEAD_IN] = "no_lead_in",
    [CEL_DROP_STRUCTURE] = "structure",
    [CEL_DROP_NOT_ALTERNATING] = "not_alternating",
    [CEL_DROP_REPETITION] = "repetition",
    [CEL_DROP_PROMPT_ECHO] = "prompt_echo",
    [CEL_DROP_NO_QA_PAIRS] = "no_qa_pairs",
    [CEL_DROP_QA_UNUSED] = "qa_unused",
    [CEL_DROP_NO_ITEMS] = "no_items",
    [CEL_DROP_ITEM_MALFORMED] = "item_malformed",
    [CEL_DROP_GOLD_NOT_IN_OPTIONS] = "gold_not_in_options",
    [CEL_DROP_ANSWER_TOO_LONG] = "answer_too_long",
    [CEL_DROP_DUPLICATE] = "duplicate",
    [CEL_DROP_TOO_EASY] = "too_easy",
};

const char *cel_gen_drop_name(cel_gen_drop d)
{
    return (unsigned)d < CEL_DROP__COUNT && drop_names[d] ? drop_names[d] : "unknown";
}

uint64_t cel_gen_stats_dropped_total(const cel_gen_stats *s)
{
    uint64_t t = 0;
    for (int i = 0; i < CEL_DROP__COUNT; i++) t += s->dropped[i];
    return t;
}

cel_status cel_gen_stats_json(const cel_gen_stats *s, cel_buf *out)
{
    CEL_TRY(cel_buf_printf(out,
                           "{\"docs\":%llu,\"docs_done\":%llu,\"units\":%llu,\"requests\":%llu,\"samples\":%llu,"
                           "\"records\":%llu,\"record_tokens\":%llu,\"prompt_tokens\":%llu,\"gen_tokens\":%llu,"
                           "\"dropped_total\":%llu,\"dropped\":{",
                           (unsigned long long)s->docs, (unsigned long long)s->docs_done,
                           (unsigned long long)s->units, (unsigned long long)s->requests,
                           (unsigned long long)s->samples, (unsigned long long)s->records,
                           (unsigned long long)s->record_tokens, (unsigned long long)s->prompt_tokens,
                           (unsigned long long)s->gen_tokens, (unsigned long long)cel_gen_stats_dropped_total(s)));
    bool first = true;
    for (int i = 0; i < CEL_DROP__COUNT; i++) {
        if (!s->dropped[i]) continue;
        CEL_TRY(cel_buf_printf(out, "%s\"%s\":%llu", first ? "" : ",", drop_names[i],
                               (unsigned long long)s->dropped[i]));
        first = false;
    }
    return cel_buf_puts(out, "}}");
}

uint64_t cel_gen_unit_seed(uint64_t job_seed, const char *key, size_t len)
{
    /* 63 bits: records carry the seed as a JSON integer */
    return cel_hash64(key, len, cel_mix64(job_seed ^ 0x5EED5EED5EEDull)) & 0x7FFFFFFFFFFFFFFFull;
}

/* A float parameter as the decimal it was written as (0.7, not 0.699999988). */
static json_t *real6(float f)
{
    char b[32];
    snprintf(b, sizeof b, "%.6g", (double)f);
    return json_real(strtod(b, NULL));
}

json_t *cel__sampling_json(const cel_sampling *s)
{
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "temperature", real6(s->temperature));
    json_object_set_new(o, "top_p", real6(s->top_p));
    if (s->top_k > 0) json_object_set_new(o, "top_k", json_integer(s->top_k));
    if (s->min_p > 0) json_object_set_new(o, "min_p", real6(s->min_p));
    json_object_set_new(o, "max_tokens", json_integer(s->max_tokens));
    return o;
}

void cel__template_tag(const cel_template *t, char *out, size_t cap)
{
    uint64_t h = cel_hash64(t->user_src, strlen(t->user_src), 0x7E4D);
    if (t->system_src) h = cel_hash64(t->system_src, strlen(t->system_src), h);
    snprintf(out, cap, "%s#%08x", t->name, (unsigned)(h >> 32));
}

cel_status cel_gen_backend_wait_all(cel_gen_backend *b, cel_error *err)
{
    while (cel_gen_backend_pending(b) > 0) CEL_TRY(cel_gen_backend_poll(b, 100, err));
    return CEL_OK;
}

/* ------------------------------------------------------------------ core */

cel_status cel__pipeline_init(cel_gen_pipeline *p, const cel__pipe_ops *ops, const cel_gen_common *c,
                              cel_gen_backend *be, const cel_gen_sink *sink, cel_error *err)
{
    if (!be || !sink || !sink->record) return cel_error_set(err, CEL_ERR_INVALID, "pipeline needs a backend and a sink");
    p->ops = ops;
    p->be = be;
    p->sink = *sink;
    p->c = *c;
    if (!p->c.max_inflight_docs) p->c.max_inflight_docs = 64;
    snprintf(p->model_name, sizeof p->model_name, "%s", c->model_name ? c->model_name : be->model_name);
    return CEL_OK;
}

cel_status cel__pipeline_new(size_t kind_size, const cel__pipe_ops *ops, const cel_gen_common *c, cel_gen_backend *be,
                             const cel_gen_sink *sink, cel_gen_pipeline **out, cel_error *err)
{
    *out = NULL;
    cel_gen_pipeline *p = calloc(1, sizeof *p);
    void *k = calloc(1, kind_size);
    if (!p || !k) {
        free(p);
        free(k);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    p->kind = k;
    p->ops = ops;
    cel_status st = cel__pipeline_init(p, ops, c, be, sink, err);
    if (st) {
        cel_gen_pipeline_free(p);
        return st;
    }
    *out = p;
    return CEL_OK;
}

static void free_items(cel__doc *d)
{
    for (size_t i = 0; i < d->n_items; i++) {
        json_decref(d->items[i].rec);
        free(d->items[i].unit_id);
        free(d->items[i].detail);
    }
    free(d->items);
    d->items = NULL;
    d->n_items = d->cap_items = 0;
}

static void free_doc(cel__doc *d)
{
    free_items(d);
    if (d->kstate && d->free_kstate) d->free_kstate(d->kstate);
    free(d->id);
    free(d->text);
    free(d->quality);
    free(d);
}

void cel__fail(cel_gen_pipeline *p, const cel_error *e)
{
    if (p->failed) return;
    p->failed = e && e->code ? e->code : CEL_ERR_INTERNAL;
    if (e) p->fail_err = *e;
    else cel_error_set(&p->fail_err, CEL_ERR_INTERNAL, "pipeline failed");
}

static cel_status push_item(cel_gen_pipeline *p, cel__doc *d, struct cel__item *it)
{
    if (d->n_items == d->cap_items) {
        size_t nc = d->cap_items ? d->cap_items * 2 : 8;
        struct cel__item *ni = realloc(d->items, nc * sizeof *ni);
        if (!ni) {
            cel_error e;
            cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
            cel__fail(p, &e);
            return CEL_ERR_NOMEM;
        }
        d->items = ni;
        d->cap_items = nc;
    }
    it->seq = d->n_items;
    d->items[d->n_items++] = *it;
    return CEL_OK;
}

static char *sdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

cel_status cel__add_record(cel_gen_pipeline *p, cel__doc *d, uint64_t ord, json_t *rec, size_t tokens,
                           uint64_t dedup_key, const char *unit_id)
{
    struct cel__item it = {.ord = ord, .rec = rec, .tokens = tokens, .dedup = dedup_key, .unit_id = sdup(unit_id)};
    if (!rec || (unit_id && !it.unit_id) || push_item(p, d, &it)) {
        json_decref(rec);
        free(it.unit_id);
        cel_error e;
        cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
        cel__fail(p, &e);
        return CEL_ERR_NOMEM;
    }
    return CEL_OK;
}

cel_status cel__add_drop(cel_gen_pipeline *p, cel__doc *d, uint64_t ord, cel_gen_drop reason, const char *unit_id,
                         const char *detail)
{
    struct cel__item it = {.ord = ord, .is_drop = true, .reason = reason};
    if (p->sink.drop) { /* the strings are only needed to report the drop */
        it.unit_id = sdup(unit_id);
        it.detail = sdup(detail);
    }
    if (push_item(p, d, &it)) {
        free(it.unit_id);
        free(it.detail);
        return CEL_ERR_NOMEM;
    }
    return CEL_OK;
}

static void req_unlink(cel_gen_pipeline *p, cel__req *r)
{
    if (r->prev) r->prev->next = r->next;
    else p->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
}

static void on_done(void *ud, const cel_gen_result *res)
{
    cel__req *r = ud;
    cel_gen_pipeline *p = r->p;
    if (p) {
        req_unlink(p, r);
        p->stats.requests++;
        p->stats.samples += res->n;
        if (res->n_prompt_tokens > 0) p->stats.prompt_tokens += (uint64_t)res->n_prompt_tokens;
        for (uint32_t i = 0; i < res->n; i++)
            if (res->samples[i].n_tokens > 0) p->stats.gen_tokens += (uint64_t)res->samples[i].n_tokens;
        r->d->outstanding--;
        if (!p->failed) r->done(p, r->d, r->unit, res);
    }
    if (r->free_unit) r->free_unit(r->unit);
    free(r);
}

cel_status cel__submit(cel_gen_pipeline *p, cel__doc *d, const cel_gen_request *req, cel__unit_done done, void *unit,
                       cel_error *err)
{
    cel__req *r = calloc(1, sizeof *r);
    if (!r) {
        if (p->ops->free_unit) p->ops->free_unit(unit);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    *r = (cel__req){.p = p, .d = d, .done = done, .unit = unit, .free_unit = p->ops->free_unit};
    cel_gen_request q = *req;
    q.cb = on_done;
    q.ud = r;
    cel_status st = cel_gen_backend_submit(p->be, &q, err);
    if (st) {
        if (r->free_unit) r->free_unit(unit);
        free(r);
        return st;
    }
    r->next = p->reqs;
    if (p->reqs) p->reqs->prev = r;
    p->reqs = r;
    d->outstanding++;
    return CEL_OK;
}

cel_status cel__chunk_doc(cel_gen_pipeline *p, cel__doc *d, int chunk_tokens, cel_chunk **chunks, size_t *n_chunks,
                          cel_error *err)
{
    *chunks = NULL;
    *n_chunks = 0;
    const char *t0 = d->text;
    size_t l0 = d->len;
    cel__trim(&t0, &l0);
    if (l0 == 0) return cel__add_drop(p, d, 0, CEL_DROP_DOC_EMPTY, d->id, NULL);
    cel_status st = cel_gen_chunk(d->text, d->len, (size_t)chunk_tokens, &p->be->counter, chunks, n_chunks, err);
    if (st) cel_error_prefix(err, "document %s", d->id);
    return st;
}

cel_status cel__submit_rendered(cel_gen_pipeline *p, cel__doc *d, const cel_template *t, const cel_buf *sys,
                                const cel_buf *usr, uint64_t seed, cel__unit_done done, void *unit, cel_error *err)
{
    cel_chat_msg msgs[2];
    size_t nm = 0;
    if (t->system_parts && sys->data) msgs[nm++] = (cel_chat_msg){"system", sys->data};
    msgs[nm++] = (cel_chat_msg){"user", usr->data};
    cel_gen_request rq = {.messages = msgs, .n_messages = nm, .n = 1, .sampling = p->c.sampling};
    rq.sampling.seed = seed;
    if (t->max_output_tokens > 0) rq.sampling.max_tokens = t->max_output_tokens;
    p->stats.units++;
    return cel__submit(p, d, &rq, done, unit, err);
}

static int cmp_item(const void *a, const void *b)
{
    const struct cel__item *x = a, *y = b;
    if (x->ord != y->ord) return x->ord < y->ord ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Inserts a dedup key; true when it was seen before. */
static bool seen_add(cel_gen_pipeline *p, uint64_t k, bool *oom)
{
    if ((p->seen_n + 1) * 2 > p->seen_cap) {
        size_t nc = p->seen_cap ? p->seen_cap * 2 : 1024;
        uint64_t *nt = calloc(nc, sizeof *nt);
        if (!nt) {
            *oom = true;
            return false;
        }
        for (size_t i = 0; i < p->seen_cap; i++) {
            uint64_t v = p->seen[i];
            if (!v) continue;
            size_t j = (size_t)v & (nc - 1);
            while (nt[j]) j = (j + 1) & (nc - 1);
            nt[j] = v;
        }
        free(p->seen);
        p->seen = nt;
        p->seen_cap = nc;
    }
    size_t j = (size_t)k & (p->seen_cap - 1);
    while (p->seen[j]) {
        if (p->seen[j] == k) return true;
        j = (j + 1) & (p->seen_cap - 1);
    }
    p->seen[j] = k;
    p->seen_n++;
    return false;
}

cel_status cel__pipeline_seen_add(cel_gen_pipeline *p, uint64_t key)
{
    bool oom = false;
    if (key) seen_add(p, key, &oom);
    return oom ? CEL_ERR_NOMEM : CEL_OK;
}

/* Emits one complete document's items in order. */
static void emit_doc(cel_gen_pipeline *p, cel__doc *d)
{
    qsort(d->items, d->n_items, sizeof *d->items, cmp_item);
    for (size_t i = 0; i < d->n_items && !p->failed; i++) {
        struct cel__item *it = &d->items[i];
        if (!it->is_drop && it->dedup) {
            bool oom = false;
            if (seen_add(p, it->dedup, &oom)) {
                it->is_drop = true;
                it->reason = CEL_DROP_DUPLICATE;
            } else if (oom) {
                cel_error e;
                cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
                cel__fail(p, &e);
                return;
            }
        }
        if (it->is_drop) {
            p->stats.dropped[it->reason]++;
            if (p->sink.drop) p->sink.drop(p->sink.ud, it->reason, it->unit_id ? it->unit_id : d->id, it->detail);
            continue;
        }
        char *js = json_dumps(it->rec, JSON_COMPACT);
        if (!js) {
            cel_error e;
            cel_error_set(&e, CEL_ERR_NOMEM, "record of %s: JSON serialisation failed", d->id);
            cel__fail(p, &e);
            return;
        }
        cel_error e;
        cel_error_clear(&e);
        cel_status st = p->sink.record(p->sink.ud, js, strlen(js), &e);
        free(js);
        if (st) {
            if (!e.code) cel_error_set(&e, st, "record sink failed");
            cel__fail(p, &e);
            return;
        }
        p->stats.records++;
        p->stats.record_tokens += it->tokens;
    }
    p->stats.docs_done++;
}

static void flush(cel_gen_pipeline *p)
{
    while (p->head && p->head->started && p->head->outstanding == 0 && !p->failed) {
        cel__doc *d = p->head;
        p->head = d->next;
        if (!p->head) p->tail = NULL;
        p->n_inflight--;
        emit_doc(p, d);
        free_doc(d);
    }
}

static cel_status failed_status(cel_gen_pipeline *p, cel_error *err)
{
    if (err) *err = p->fail_err;
    return p->failed;
}

cel_status cel_gen_pipeline_poll(cel_gen_pipeline *p, int timeout_ms, cel_error *err)
{
    if (p->failed) return failed_status(p, err);
    cel_status st = cel_gen_backend_poll(p->be, timeout_ms, err);
    if (st) return st;
    flush(p);
    if (p->failed) return failed_status(p, err);
    return CEL_OK;
}

cel_status cel_gen_pipeline_push(cel_gen_pipeline *p, const cel_gen_doc *doc, cel_error *err)
{
    if (p->failed) return failed_status(p, err);
    while (p->n_inflight >= p->c.max_inflight_docs) {
        flush(p);
        if (p->n_inflight < p->c.max_inflight_docs) break;
        if (cel_gen_backend_pending(p->be) == 0)
            return cel_error_set(err, CEL_ERR_INTERNAL, "pipeline window full but no request in flight");
        CEL_TRY(cel_gen_pipeline_poll(p, 50, err));
    }
    cel__doc *d = calloc(1, sizeof *d);
    if (!d) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    const char *id = doc->id ? doc->id : "";
    d->id = sdup(id);
    d->len = doc->len;
    d->text = malloc(doc->len + 1);
    d->quality = doc->quality ? sdup(doc->quality) : NULL;
    if (!d->id || !d->text || (doc->quality && !d->quality)) {
        free_doc(d);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    if (doc->len) memcpy(d->text, doc->text, doc->len);
    d->text[doc->len] = 0;
    d->seq = p->next_seq++;
    if (p->tail) p->tail->next = d;
    else p->head = d;
    p->tail = d;
    p->n_inflight++;
    p->stats.docs++;
    cel_status st = p->ops->start(p, d, err);
    d->started = true;
    if (st) {
        cel__fail(p, err);
        return st;
    }
    flush(p);
    if (p->failed) return failed_status(p, err);
    return CEL_OK;
}

cel_status cel_gen_pipeline_drain(cel_gen_pipeline *p, cel_error *err)
{
    for (;;) {
        if (p->failed) return failed_status(p, err);
        flush(p);
        if (!p->head) return p->failed ? failed_status(p, err) : CEL_OK;
        if (cel_gen_backend_pending(p->be) == 0 && p->head->outstanding > 0)
            return cel_error_set(err, CEL_ERR_INTERNAL, "document %s waits for requests the backend does not hold",
                                 p->head->id);
        CEL_TRY(cel_gen_pipeline_poll(p, 100, err));
    }
}

size_t cel_gen_pipeline_inflight(const cel_gen_pipeline *p) { return p->n_inflight; }
const cel_gen_stats *cel_gen_pipeline_stats(const cel_gen_pipeline *p) { return &p->stats; }

void cel_gen_pipeline_free(cel_gen_pipeline *p)
{
    if (!p) return;
    /* requests still in flight: cancelled where the backend can; their
     * callbacks will only free themselves */
    for (cel__req *r = p->reqs; r;) {
        cel__req *next = r->next;
        r->p = NULL;
        if (p->be->v->cancel) p->be->v->cancel(p->be, r);
        r = next;
    }
    cel__doc *d = p->head;
    while (d) {
        cel__doc *n = d->next;
        free_doc(d);
        d = n;
    }
    free(p->seen);
    if (p->ops->free) p->ops->free(p);
    free(p);
}
