/*
 * backend_remote.c - generation through OpenAI-compatible servers
 * (/v1/chat/completions or /v1/completions) over libcurl's multi interface.
 *
 * One logical request of n samples becomes n HTTP transfers of one sample
 * each (servers such as llama.cpp reject n > 1), sample i seeded with a value
 * derived from (seed, i). At most max_concurrency transfers run at once;
 * 429, 5xx, timeouts and dropped connections are retried with exponential
 * back-off and full jitter (or the server's Retry-After), each attempt on the
 * next URL round-robin. Callbacks run from poll, on the polling thread.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "celine/generate.h"
#include "gen_internal.h"

typedef struct rr_req rr_req;

/* One HTTP transfer (one sample), kept across its retries. */
typedef struct rr_att {
    rr_req *r;
    uint32_t sample;
    int tries;          /* attempts made so far */
    char *body;         /* request JSON, reused across retries */
    CURL *easy;
    struct curl_slist *hdrs;
    cel_buf resp;
    bool too_big;
    double retry_after; /* seconds from a Retry-After header, or -1 */
    double due;         /* when a delayed retry may start */
    size_t limit;       /* response cap */
    char url[1024];     /* URL of the current attempt */
    struct rr_att *next;                 /* wait / delayed lists */
    struct rr_att *act_prev, *act_next;  /* active list */
} rr_att;

/* One submitted request (n samples). */
struct rr_req {
    cel_gen_done_fn cb;
    void *ud;
    uint32_t n;
    uint32_t unresolved; /* samples not yet finished */
    char **text;
    size_t *len;
    int32_t *ntok;
    cel_finish *fin;
    int32_t prompt_tokens;
    cel_status status;
    char *error;
    rr_req *next_done;
};

typedef struct remote {
    cel_gen_backend base;
    cel_remote_config cfg;
    char **endpoints;
    size_t n_endpoints;
    size_t rr; /* round-robin cursor */
    char *auth;
    char *model;
    CURLM *multi;
    rr_att *wait_head, *wait_tail; /* ready to start */
    rr_att *delayed;               /* waiting for their back-off */
    rr_att *active_head;           /* transfers in the multi handle */
    size_t active;
    size_t pending_reqs;
    rr_req *done_head, *done_tail;
    cel_rng jitter;
    cel_remote_stats stats;
} remote;

void cel_remote_config_default(cel_remote_config *c)
{
    memset(c, 0, sizeof *c);
    c->model = "default";
    c->max_concurrency = 16;
    c->max_retries = 5;
    c->backoff_base_s = 0.5;
    c->backoff_max_s = 30;
    c->timeout_s = 600;
    c->connect_timeout_s = 10;
    c->max_response_bytes = 16u << 20;
    c->send_seed = true;
    c->jitter_seed = 0x6A177E4;
}

double cel_gen_backoff_delay(int attempt, double base, double max, double u)
{
    if (attempt < 0) attempt = 0;
    if (attempt > 62) attempt = 62;
    double cap = base * (double)(1ull << attempt);
    if (cap > max) cap = max;
    if (u < 0) u = 0;
    if (u >= 1) u = 0.999999;
    return cap * u;
}

/* ------------------------------------------------------------ requests */

static void req_free(rr_req *r)
{
    if (!r) return;
    for (uint32_t i = 0; i < r->n; i++) free(r->text ? r->text[i] : NULL);
    free(r->text);
    free(r->len);
    free(r->ntok);
    free(r->fin);
    free(r->error);
    free(r);
}

static void att_free(rr_att *a)
{
    if (!a) return;
    if (a->easy) curl_easy_cleanup(a->easy);
    curl_slist_free_all(a->hdrs);
    cel_buf_free(&a->resp);
    free(a->body);
    free(a);
}

static void req_fail(rr_req *r, cel_status st, const char *msg)
{
    if (r->status != CEL_OK) return; /* keep the first failure */
    r->status = st;
    r->error = strdup(msg);
}

static void push_done(remote *m, rr_req *r)
{
    r->next_done = NULL;
    if (m->done_tail) m->done_tail->next_done = r;
    else m->done_head = r;
    m->done_tail = r;
}

/* One sample finished (successfully or for good). */
static void sample_resolved(remote *m, rr_req *r)
{
    if (--r->unresolved == 0) push_done(m, r);
}

static void deliver(remote *m)
{
    while (m->done_head) {
        rr_req *r = m->done_head;
        m->done_head = r->next_done;
        if (!m->done_head) m->done_tail = NULL;
        m->pending_reqs--;
        cel_gen_sample smp[64];
        cel_gen_sample *sv = r->n <= 64 ? smp : malloc(r->n * sizeof *sv);
        cel_gen_result res = {.status = r->status, .error = r->error, .n = 0, .samples = sv,
                              .n_prompt_tokens = r->prompt_tokens};
        if (!sv) {
            res.status = CEL_ERR_NOMEM;
            res.error = "out of memory";
        } else if (r->status == CEL_OK) {
            res.n = r->n;
            for (uint32_t i = 0; i < r->n; i++)
                sv[i] = (cel_gen_sample){r->text[i] ? r->text[i] : "", r->len[i], r->ntok[i], r->fin[i]};
        }
        r->cb(r->ud, &res);
        if (sv != smp) free(sv);
        req_free(r);
    }
}

/* ------------------------------------------------------------ transfers */

/* Collects the response body; refusing more than the cap makes curl fail
 * the transfer with CURLE_WRITE_ERROR (memory stays bounded). */
static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    rr_att *a = ud;
    size_t n = size * nmemb;
    if (a->resp.len + n > a->limit) {
        a->too_big = true;
        return 0;
    }
    return cel_buf_append(&a->resp, ptr, n) == CEL_OK ? n : 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    rr_att *a = ud;
    size_t n = size * nitems;
    static const char key[] = "retry-after:";
    if (n > sizeof key - 1 && strncasecmp(buf, key, sizeof key - 1) == 0) {
        char tmp[32];
        size_t k = n - (sizeof key - 1);
        if (k >= sizeof tmp) k = sizeof tmp - 1;
        memcpy(tmp, buf + sizeof key - 1, k);
        tmp[k] = 0;
        char *end;
        double v = strtod(tmp, &end);
        if (end != tmp && v >= 0 && v < 1e6) a->retry_after = v; /* seconds; HTTP dates are ignored */
    }
    return n;
}

static cel_status start_transfer(remote *m, rr_att *a, cel_error *err)
{
    const char *ep = m->endpoints[m->rr++ % m->n_endpoints];
    snprintf(a->url, sizeof a->url, "%s", ep);
    cel_buf_reset(&a->resp);
    a->too_big = false;
    a->retry_after = -1;
    a->limit = m->cfg.max_response_bytes;
    if (a->easy) curl_easy_cleanup(a->easy);
    a->easy = curl_easy_init();
    if (!a->easy) return cel_error_set(err, CEL_ERR_NOMEM, "curl_easy_init failed");
    if (!a->hdrs) {
        a->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        if (a->hdrs) a->hdrs = curl_slist_append(a->hdrs, "Expect:");
        if (a->hdrs && m->auth) a->hdrs = curl_slist_append(a->hdrs, m->auth);
        if (!a->hdrs) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    CURL *e = a->easy;
    curl_easy_setopt(e, CURLOPT_URL, a->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->hdrs);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, a->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(a->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(m->cfg.timeout_s * 1000));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(m->cfg.connect_timeout_s * 1000));
    curl_easy_setopt(e, CURLOPT_PRIVATE, a);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)a->limit);
    if (curl_multi_add_handle(m->multi, e) != CURLM_OK)
        return cel_error_set(err, CEL_ERR_INTERNAL, "curl_multi_add_handle failed");
    a->act_prev = NULL;
    a->act_next = m->active_head;
    if (m->active_head) m->active_head->act_prev = a;
    m->active_head = a;
    a->tries++;
    m->active++;
    m->stats.attempts++;
    return CEL_OK;
}

/* Parses a successful response body into sample a->sample of its request. */
static cel_status parse_response(rr_att *a, char *msg, size_t cap)
{
    rr_req *r = a->r;
    json_error_t je;
    json_t *root = json_loadb(a->resp.data ? a->resp.data : "", a->resp.len, 0, &je);
    if (!root) {
        snprintf(msg, cap, "%s: response is not JSON (%s)", a->url, je.text);
        return CEL_ERR_FORMAT;
    }
    json_t *choices = json_object_get(root, "choices");
    json_t *c0 = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
    if (!json_is_object(c0)) {
        json_decref(root);
        snprintf(msg, cap, "%s: response has no choices[0]", a->url);
        return CEL_ERR_FORMAT;
    }
    json_t *text = NULL;
    json_t *message = json_object_get(c0, "message");
    if (json_is_object(message)) text = json_object_get(message, "content");
    if (!text) text = json_object_get(c0, "text");
    if (text && !json_is_string(text) && !json_is_null(text)) {
        json_decref(root);
        snprintf(msg, cap, "%s: choices[0] content is not a string", a->url);
        return CEL_ERR_FORMAT;
    }
    if (!text && !json_is_object(message)) {
        json_decref(root);
        snprintf(msg, cap, "%s: choices[0] has neither message.content nor text", a->url);
        return CEL_ERR_FORMAT;
    }
    const char *s = json_is_string(text) ? json_string_value(text) : "";
    size_t n = json_is_string(text) ? json_string_length(text) : 0;
    char *copy = malloc(n + 1);
    if (!copy) {
        json_decref(root);
        snprintf(msg, cap, "out of memory");
        return CEL_ERR_NOMEM;
    }
    memcpy(copy, s, n);
    copy[n] = 0;
    uint32_t i = a->sample;
    r->text[i] = copy;
    r->len[i] = n;
    const char *fr = json_string_value(json_object_get(c0, "finish_reason"));
    r->fin[i] = fr && strcmp(fr, "length") == 0 ? CEL_FINISH_LENGTH : CEL_FINISH_STOP;
    json_t *usage = json_object_get(root, "usage");
    json_t *ct = json_object_get(usage, "completion_tokens"), *pt = json_object_get(usage, "prompt_tokens");
    r->ntok[i] = json_is_integer(ct) ? (int32_t)json_integer_value(ct) : -1;
    if (json_is_integer(pt)) r->prompt_tokens = (int32_t)json_integer_value(pt);
    json_decref(root);
    return CEL_OK;
}

static bool retryable_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return true;
    default: return false;
    }
}

/* A short excerpt of an error body: OpenAI's error.message when present. */
static void error_excerpt(const cel_buf *b, char *out, size_t cap)
{
    out[0] = 0;
    if (!b->data || !b->len) return;
    json_t *root = json_loadb(b->data, b->len, 0, NULL);
    const char *m = root ? json_string_value(json_object_get(json_object_get(root, "error"), "message")) : NULL;
    if (m) snprintf(out, cap, ": %s", m);
    else snprintf(out, cap, ": %.*s", (int)(b->len < 160 ? b->len : 160), b->data);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    json_decref(root);
}

static void schedule_retry(remote *m, rr_att *a, const char *why)
{
    double d = cel_gen_backoff_delay(a->tries - 1, m->cfg.backoff_base_s, m->cfg.backoff_max_s,
                                     cel_rng_uniform(&m->jitter));
    if (a->retry_after >= 0) d = a->retry_after < m->cfg.backoff_max_s ? a->retry_after : m->cfg.backoff_max_s;
    a->due = cel_now_sec() + d;
    a->next = m->delayed;
    m->delayed = a;
    m->stats.retries++;
    cel_log(&m->cfg.log, CEL_LOG_WARN, "remote: %s (%s); retry %d/%d in %.2fs", a->url, why, a->tries,
            m->cfg.max_retries, d);
}

static void transfer_done(remote *m, rr_att *a, CURLcode cc)
{
    long http = 0;
    curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &http);
    curl_multi_remove_handle(m->multi, a->easy);
    curl_easy_cleanup(a->easy);
    a->easy = NULL;
    if (a->act_prev) a->act_prev->act_next = a->act_next;
    else m->active_head = a->act_next;
    if (a->act_next) a->act_next->act_prev = a->act_prev;
    a->act_prev = a->act_next = NULL;
    m->active--;
    char msg[1536];
    rr_req *r = a->r;
    bool can_retry = a->tries <= m->cfg.max_retries;
    if (cc == CURLE_OK && http == 200) {
        cel_status st = parse_response(a, msg, sizeof msg);
        if (st) {
            m->stats.failures++;
            req_fail(r, st, msg);
        }
        sample_resolved(m, r);
        att_free(a);
        return;
    }
    if (cc == CURLE_OK && (http == 429 || http >= 500)) {
        if (http == 429) m->stats.http_429++;
        else m->stats.http_5xx++;
        char ex[200];
        error_excerpt(&a->resp, ex, sizeof ex);
        snprintf(msg, sizeof msg, "%s: HTTP %ld%s", a->url, http, ex);
        if (can_retry) {
            char why[32];
            snprintf(why, sizeof why, "HTTP %ld", http);
            schedule_retry(m, a, why);
            return;
        }
    } else if (cc != CURLE_OK && retryable_curl(cc)) {
        m->stats.transport_errors++;
        snprintf(msg, sizeof msg, "%s: %s", a->url, curl_easy_strerror(cc));
        if (can_retry) {
            schedule_retry(m, a, curl_easy_strerror(cc));
            return;
        }
    } else if (a->too_big || cc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(msg, sizeof msg, "%s: response larger than %zu bytes", a->url, m->cfg.max_response_bytes);
    } else if (cc != CURLE_OK) {
        snprintf(msg, sizeof msg, "%s: %s", a->url, curl_easy_strerror(cc));
    } else {
        char ex[200];
        error_excerpt(&a->resp, ex, sizeof ex);
        snprintf(msg, sizeof msg, "%s: HTTP %ld%s", a->url, http, ex);
    }
    if (!can_retry) {
        size_t l = strlen(msg);
        snprintf(msg + l, sizeof msg - l, " (gave up after %d attempts)", a->tries);
    }
    m->stats.failures++;
    cel_log(&m->cfg.log, CEL_LOG_WARN, "remote: request failed: %s", msg);
    req_fail(r, CEL_ERR_IO, msg);
    sample_resolved(m, r);
    att_free(a);
}

/* Starts what may start: due retries first, then new transfers. */
static cel_status start_ready(remote *m, cel_error *err)
{
    double now = cel_now_sec();
    rr_att **pp = &m->delayed;
    while (*pp) {
        rr_att *a = *pp;
        if (a->due <= now) {
            *pp = a->next;
            a->next = m->wait_head; /* retries go first */
            m->wait_head = a;
            if (!m->wait_tail) m->wait_tail = a;
        } else
            pp = &a->next;
    }
    while ((int64_t)m->active < m->cfg.max_concurrency && m->wait_head) {
        rr_att *a = m->wait_head;
        m->wait_head = a->next;
        if (!m->wait_head) m->wait_tail = NULL;
        a->next = NULL;
        cel_status st = start_transfer(m, a, err);
        if (st) {
            req_fail(a->r, st, err->msg);
            sample_resolved(m, a->r);
            att_free(a);
        }
    }
    return CEL_OK;
}

static void reap(remote *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        rr_att *a = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&a);
        transfer_done(m, a, msg->data.result);
    }
}

static cel_status remote_poll(cel_gen_backend *b, int timeout_ms, cel_error *err)
{
    remote *m = (remote *)b;
    double deadline = cel_now_sec() + (timeout_ms > 0 ? timeout_ms / 1000.0 : 0);
    for (;;) {
        CEL_TRY(start_ready(m, err));
        int running = 0;
        if (curl_multi_perform(m->multi, &running) != CURLM_OK)
            return cel_error_set(err, CEL_ERR_INTERNAL, "curl_multi_perform failed");
        reap(m);
        if (m->done_head) {
            deliver(m);
            return CEL_OK;
        }
        double now = cel_now_sec();
        if (now >= deadline || m->pending_reqs == 0) return CEL_OK;
        /* wait for socket activity, the next due retry, or the deadline */
        double wait = deadline - now;
        for (rr_att *a = m->delayed; a; a = a->next)
            if (a->due - now < wait) wait = a->due - now;
        if (wait < 0) wait = 0;
        int ms = (int)(wait * 1000) + 1;
        if (m->active > 0) {
            if (curl_multi_poll(m->multi, NULL, 0, ms, NULL) != CURLM_OK)
                return cel_error_set(err, CEL_ERR_INTERNAL, "curl_multi_poll failed");
        } else {
            struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

static size_t remote_pending(const cel_gen_backend *b) { return ((const remote *)b)->pending_reqs; }

/* --------------------------------------------------------------- submit */

/* The request body of one sample. */
static char *build_body(remote *m, const cel_gen_request *r, uint32_t sample)
{
    json_t *o = json_object();
    if (!o) return NULL;
    bool bad = json_object_set_new(o, "model", json_string(m->model)) != 0;
    if (!m->cfg.use_completions) {
        json_t *msgs = json_array();
        bad = bad || !msgs || json_object_set_new(o, "messages", msgs);
        if (r->n_messages) {
            for (size_t i = 0; !bad && i < r->n_messages; i++) {
                json_t *mo = json_object();
                bad = !mo || json_array_append_new(msgs, mo) ||
                      json_object_set_new(mo, "role", json_string(r->messages[i].role)) ||
                      cel__json_set_str(mo, "content", r->messages[i].content, strlen(r->messages[i].content));
            }
        } else {
            json_t *mo = json_object();
            bad = bad || !mo || json_array_append_new(msgs, mo) || json_object_set_new(mo, "role", json_string("user")) ||
                  cel__json_set_str(mo, "content", r->prompt, strlen(r->prompt));
        }
    } else {
        cel_buf p;
        cel_buf_init(&p);
        if (r->n_messages)
            for (size_t i = 0; i < r->n_messages; i++)
                bad = bad || cel_buf_printf(&p, "%s%s", i ? "\n\n" : "", r->messages[i].content);
        else
            bad = bad || cel_buf_puts(&p, r->prompt);
        bad = bad || cel__json_set_str(o, "prompt", p.data ? p.data : "", p.len);
        cel_buf_free(&p);
    }
    const cel_sampling *s = &r->sampling;
    if (!bad) {
        bad = json_object_set_new(o, "temperature", json_real(s->temperature)) ||
              json_object_set_new(o, "top_p", json_real(s->top_p));
        if (s->max_tokens > 0) bad = bad || json_object_set_new(o, "max_tokens", json_integer(s->max_tokens));
        if (s->top_k > 0) bad = bad || json_object_set_new(o, "top_k", json_integer(s->top_k));
        if (s->min_p > 0) bad = bad || json_object_set_new(o, "min_p", json_real(s->min_p));
        if (s->presence_penalty != 0) bad = bad || json_object_set_new(o, "presence_penalty", json_real(s->presence_penalty));
        if (s->frequency_penalty != 0)
            bad = bad || json_object_set_new(o, "frequency_penalty", json_real(s->frequency_penalty));
        if (m->cfg.send_seed) {
            uint64_t seed = sample == 0 ? s->seed : cel_mix64(s->seed ^ (0x9E3779B97F4A7C15ull * sample));
            bad = bad || json_object_set_new(o, "seed", json_integer((json_int_t)(seed & 0x7FFFFFFFFFFFFFFFull)));
        }
        if (s->n_stop) {
            json_t *st = json_array();
            bad = bad || !st || json_object_set_new(o, "stop", st);
            for (size_t i = 0; !bad && i < s->n_stop; i++) bad = json_array_append_new(st, json_string(s->stop[i]));
        }
    }
    char *out = bad ? NULL : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return out;
}

static cel_status remote_submit(cel_gen_backend *b, const cel_gen_request *r, cel_error *err)
{
    remote *m = (remote *)b;
    if (!r->cb) return cel_error_set(err, CEL_ERR_INVALID, "request without a callback");
    if (r->n < 1 || r->n > 1024) return cel_error_set(err, CEL_ERR_INVALID, "n must be in 1..1024 (got %u)", r->n);
    if (!r->n_messages && !r->prompt) return cel_error_set(err, CEL_ERR_INVALID, "request without messages or prompt");
    rr_req *q = calloc(1, sizeof *q);
    if (!q) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    q->cb = r->cb;
    q->ud = r->ud;
    q->n = r->n;
    q->unresolved = r->n;
    q->prompt_tokens = -1;
    q->text = calloc(r->n, sizeof *q->text);
    q->len = calloc(r->n, sizeof *q->len);
    q->ntok = calloc(r->n, sizeof *q->ntok);
    q->fin = calloc(r->n, sizeof *q->fin);
    rr_att **atts = calloc(r->n, sizeof *atts);
    bool bad = !q->text || !q->len || !q->ntok || !q->fin || !atts;
    for (uint32_t i = 0; !bad && i < r->n; i++) {
        atts[i] = calloc(1, sizeof **atts);
        if (!atts[i] || !(atts[i]->body = build_body(m, r, i))) bad = true;
        else {
            atts[i]->r = q;
            atts[i]->sample = i;
        }
    }
    if (bad) {
        for (uint32_t i = 0; atts && i < r->n; i++) att_free(atts[i]);
        free(atts);
        req_free(q);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory building the request");
    }
    for (uint32_t i = 0; i < r->n; i++) {
        if (m->wait_tail) m->wait_tail->next = atts[i];
        else m->wait_head = atts[i];
        m->wait_tail = atts[i];
    }
    free(atts);
    m->pending_reqs++;
    return CEL_OK;
}

/* --------------------------------------------------------------- free */

static void remote_free(cel_gen_backend *b)
{
    remote *m = (remote *)b;
    if (!m) return;
    /* abort transfers; every pending request gets a CANCELLED callback */
    for (rr_att *a = m->active_head; a;) {
        rr_att *next = a->act_next;
        curl_multi_remove_handle(m->multi, a->easy);
        a->next = m->wait_head;
        m->wait_head = a;
        a = next;
    }
    m->active_head = NULL;
    rr_att *lists[2] = {m->wait_head, m->delayed};
    for (int l = 0; l < 2; l++) {
        for (rr_att *a = lists[l]; a;) {
            rr_att *next = a->next;
            rr_req *r = a->r;
            if (r->status == CEL_OK) req_fail(r, CEL_ERR_CANCELLED, "backend freed");
            sample_resolved(m, r);
            att_free(a);
            a = next;
        }
    }
    deliver(m);
    if (m->multi) curl_multi_cleanup(m->multi);
    for (size_t i = 0; i < m->n_endpoints; i++) free(m->endpoints[i]);
    free(m->endpoints);
    free(m->auth);
    free(m->model);
    free(m);
    curl_global_cleanup();
}

/* Removes one attempt of a cancelled request and resolves its sample. */
static void cancel_attempt(remote *m, rr_att *a)
{
    if (a->r->status == CEL_OK) req_fail(a->r, CEL_ERR_CANCELLED, "cancelled");
    sample_resolved(m, a->r);
    att_free(a);
}

/* Cancels the requests submitted with callback data ud: waiting and delayed
 * attempts are dropped, running transfers aborted; the callback runs from
 * the next poll with CEL_ERR_CANCELLED. */
static void remote_cancel(cel_gen_backend *b, void *ud)
{
    remote *m = (remote *)b;
    rr_att **pp = &m->wait_head;
    m->wait_tail = NULL;
    while (*pp) {
        rr_att *a = *pp;
        if (a->r->ud == ud) {
            *pp = a->next;
            cancel_attempt(m, a);
        } else {
            m->wait_tail = a;
            pp = &a->next;
        }
    }
    pp = &m->delayed;
    while (*pp) {
        rr_att *a = *pp;
        if (a->r->ud == ud) {
            *pp = a->next;
            cancel_attempt(m, a);
        } else
            pp = &a->next;
    }
    for (rr_att *a = m->active_head; a;) {
        rr_att *next = a->act_next;
        if (a->r->ud == ud) {
            curl_multi_remove_handle(m->multi, a->easy);
            if (a->act_prev) a->act_prev->act_next = a->act_next;
            else m->active_head = a->act_next;
            if (a->act_next) a->act_next->act_prev = a->act_prev;
            m->active--;
            cancel_attempt(m, a);
        }
        a = next;
    }
}

static const cel_gen_backend_vtbl remote_vtbl = {"remote", remote_submit, remote_poll, remote_pending, remote_free,
                                                 remote_cancel};

void cel_gen_remote_stats(const cel_gen_backend *b, cel_remote_stats *out)
{
    if (b->v != &remote_vtbl) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = ((const remote *)b)->stats;
}

cel_status cel_gen_remote_create(const cel_remote_config *cfg, cel_gen_backend **out, cel_error *err)
{
    *out = NULL;
    if (!cfg->urls || cfg->n_urls == 0) return cel_error_set(err, CEL_ERR_INVALID, "remote backend needs at least one URL");
    if (cfg->max_concurrency < 1 || cfg->max_retries < 0 || cfg->backoff_base_s < 0 ||
        cfg->backoff_max_s < cfg->backoff_base_s || cfg->timeout_s <= 0 || cfg->connect_timeout_s <= 0 ||
        cfg->max_response_bytes < 1024)
        return cel_error_set(err, CEL_ERR_INVALID,
                             "remote backend: concurrency >= 1, retries >= 0, 0 <= backoff base <= max, timeouts > 0, "
                             "response cap >= 1 KiB");
    for (size_t i = 0; i < cfg->n_urls; i++) {
        const char *u = cfg->urls[i];
        if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
            return cel_error_set(err, CEL_ERR_INVALID, "remote URL '%s' must start with http:// or https://", u);
        if (strlen(u) > 900) return cel_error_set(err, CEL_ERR_INVALID, "remote URL longer than 900 bytes");
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return cel_error_set(err, CEL_ERR_INTERNAL, "curl_global_init failed");
    remote *m = calloc(1, sizeof *m);
    if (!m) {
        curl_global_cleanup();
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    m->base.v = &remote_vtbl;
    m->cfg = *cfg;
    m->cfg.urls = NULL;
    m->cfg.api_key = NULL;
    m->cfg.model = NULL;
    m->base.counter = cfg->counter.fn ? cfg->counter : cel_gen_counter_approx();
    const char *model = cfg->model ? cfg->model : "default";
    snprintf(m->base.model_name, sizeof m->base.model_name, "%s", model);
    m->model = strdup(model);
    m->endpoints = calloc(cfg->n_urls, sizeof *m->endpoints);
    m->multi = curl_multi_init();
    cel_rng_seed(&m->jitter, cfg->jitter_seed);
    bool bad = !m->model || !m->endpoints || !m->multi;
    for (size_t i = 0; !bad && i < cfg->n_urls; i++) {
        cel_buf u;
        cel_buf_init(&u);
        const char *s = cfg->urls[i];
        size_t l = strlen(s);
        while (l && s[l - 1] == '/') l--;
        bool has_v1 = l >= 3 && memcmp(s + l - 3, "/v1", 3) == 0;
        if (cel_buf_append(&u, s, l) || cel_buf_puts(&u, has_v1 ? "" : "/v1") ||
            cel_buf_puts(&u, cfg->use_completions ? "/completions" : "/chat/completions"))
            bad = true;
        m->endpoints[i] = cel_buf_steal(&u);
        m->n_endpoints++;
        if (!m->endpoints[i]) bad = true;
    }
    if (!bad && cfg->api_key) {
        cel_buf a;
        cel_buf_init(&a);
        if (cel_buf_printf(&a, "Authorization: Bearer %s", cfg->api_key)) bad = true;
        m->auth = cel_buf_steal(&a);
    }
    if (bad) {
        remote_free(&m->base);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    curl_multi_setopt(m->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)cfg->max_concurrency);
    *out = &m->base;
    return CEL_OK;
}
