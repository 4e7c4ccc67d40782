/*
 * http.c - connections: accepting, parsing with Debian's http_parser,
 * limits and timers, the in-order response pipeline, and writing.
 *
 * A connection owns a FIFO of requests in arrival order. Handlers complete
 * requests in any order; bytes leave only from the head, so pipelined
 * requests are answered in order. Parsing pauses (and the socket stops being
 * read) while too many requests are queued or too many response bytes wait
 * for a slow reader, which is the per-connection back-pressure.
 *
 * Limits: header bytes and lines (431), body bytes (413), a timer per
 * connection that covers the header phase and the body phase (408), idle
 * keep-alive, stalled writes and the linger after a final response.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"

#define LINGER_MS 2000

static void conn_pump(cel__conn *c);
static void conn_flush(cel__conn *c);
static void conn_finish_close(cel__conn *c);
static void conn_set_phase(cel__conn *c, cel__phase ph);
static void req_free(cel_http_req *r);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* ------------------------------------------------------------- helpers */

const char *cel__srv_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static const char *default_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 408: return "timeout_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

cel_status cel__srv_error_json(cel_buf *out, int status, const char *type, const char *code, const char *msg)
{
    json_t *e = json_object();
    json_t *root = json_object();
    if (!e || !root) {
        json_decref(e);
        json_decref(root);
        return CEL_ERR_NOMEM;
    }
    /* messages may quote request bytes: jansson rejects invalid UTF-8, so fall back */
    json_t *m = json_string(msg);
    if (!m) m = json_string("(message was not valid UTF-8)");
    json_object_set_new(e, "message", m);
    json_object_set_new(e, "type", json_string(type ? type : default_error_type(status)));
    json_object_set_new(e, "code", code ? json_string(code) : json_null());
    json_object_set_new(root, "error", e);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) return CEL_ERR_NOMEM;
    cel_status st = cel_buf_puts(out, s);
    free(s);
    return st;
}

/* ------------------------------------------------------------ requests */

static cel_http_req *req_new(cel__conn *c)
{
    cel_http_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = c->srv;
    r->conn = c;
    r->t_start = cel_now_ns();
    r->route = CEL__MAX_ROUTES;
    r->path = "";
    r->query = "";
    r->keep_alive = false;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->n_reqs++;
    return r;
}

static void req_free(cel_http_req *r)
{
    cel_buf_free(&r->url);
    cel_buf_free(&r->hdrs);
    cel_buf_free(&r->body);
    cel_buf_free(&r->out);
    free(r);
}

/* Removes the head request from its connection's queue. */
static cel_http_req *conn_pop(cel__conn *c)
{
    cel_http_req *r = c->head;
    if (!r) return NULL;
    c->head = r->next;
    if (!c->head) c->tail = NULL;
    c->n_reqs--;
    r->next = NULL;
    c->queued -= r->out.len - r->out_off;
    return r;
}

const char *cel_http_req_method(const cel_http_req *r) { return http_method_str((enum http_method)r->method); }
const char *cel_http_req_path(const cel_http_req *r) { return r->path; }
const char *cel_http_req_query(const cel_http_req *r) { return r->query; }
cel_server *cel_http_req_server(const cel_http_req *r) { return r->srv; }
bool cel_http_req_aborted(const cel_http_req *r) { return r->aborted; }

const char *cel_http_req_header(const cel_http_req *r, const char *name)
{
    const char *p = r->hdrs.data;
    const char *end = p ? p + r->hdrs.len : NULL;
    for (uint32_t i = 0; i < r->n_hdrs && p < end; i++) {
        const char *v = p + strlen(p) + 1;
        if (v >= end) break;
        if (strcasecmp(p, name) == 0) return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

const char *cel_http_req_body(const cel_http_req *r, size_t *len)
{
    if (len) *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

void cel_http_req_on_abort(cel_http_req *r, void (*fn)(void *ud), void *ud)
{
    r->on_abort = fn;
    r->abort_ud = ud;
}

/* --------------------------------------------------------- responses */

static void put_head(cel_http_req *r, int status, const char *ctype, long long content_length,
                     const char *extra)
{
    cel_server *s = r->srv;
    if (s->stopping) r->keep_alive = false;
    cel_buf *b = &r->out;
    size_t before = b->len;
    cel_status st = cel_buf_printf(b, "HTTP/1.1 %d %s\r\nServer: celine\r\n", status, cel__srv_status_reason(status));
    if (st == CEL_OK && ctype) st = cel_buf_printf(b, "Content-Type: %s\r\n", ctype);
    if (st == CEL_OK) {
        if (content_length >= 0)
            st = cel_buf_printf(b, "Content-Length: %lld\r\n", content_length);
        else if (r->chunked)
            st = cel_buf_puts(b, "Transfer-Encoding: chunked\r\n");
    }
    if (st == CEL_OK) {
        if (!r->keep_alive)
            st = cel_buf_puts(b, "Connection: close\r\n");
        else if (r->http10)
            st = cel_buf_puts(b, "Connection: keep-alive\r\n");
    }
    if (st == CEL_OK && extra) st = cel_buf_puts(b, extra);
    if (st == CEL_OK) st = cel_buf_puts(b, "\r\n");
    if (st != CEL_OK) {
        /* out of memory: drop the connection rather than send half a head */
        b->len = before;
        r->keep_alive = false;
        if (r->conn) r->conn->discard = true;
    }
    r->status = status;
    r->head_sent = true;
    if (r->conn) r->conn->queued += b->len - before;
}

/* Marks r complete: counts it, then either frees it (client gone) or lets
 * the connection flush it. */
static void req_complete(cel_http_req *r)
{
    cel_server *s = r->srv;
    r->state = CEL__RQ_DONE;
    cel__srv_metrics_count(&s->metrics, r->route, r->status ? r->status : 499,
                       (double)(cel_now_ns() - r->t_start) * 1e-9);
    if (!r->conn) {
        req_free(r);
        cel__srv_check_finished(s);
        return;
    }
    conn_flush(r->conn);
}

void cel_http_respond(cel_http_req *r, int status, const char *content_type, const void *body, size_t len,
                      const char *extra_headers)
{
    if (r->state == CEL__RQ_DONE) return; /* a handler bug; never send twice */
    if (r->conn) {
        put_head(r, status, content_type, (long long)len, extra_headers);
        size_t before = r->out.len;
        if (len && !r->head_only && cel_buf_append(&r->out, body, len) != CEL_OK) {
            r->keep_alive = false;
            r->conn->discard = true;
        }
        r->conn->queued += r->out.len - before;
    } else {
        r->status = status;
    }
    req_complete(r);
}

void cel_http_respond_error(cel_http_req *r, int status, const char *type, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cel_buf b;
    cel_buf_init(&b);
    const char *extra = NULL;
    /* Retry-After where waiting helps; not for "no model" (it will not appear) */
    if (status == 429 || (status == 503 && !(code && strcmp(code, "model_not_loaded") == 0)))
        extra = "Retry-After: 1\r\n";
    if (status == 401) extra = "WWW-Authenticate: Bearer\r\n";
    if (cel__srv_error_json(&b, status, type, code, msg) == CEL_OK)
        cel_http_respond(r, status, "application/json", b.data, b.len, extra);
    else
        cel_http_respond(r, 500, "text/plain", "out of memory\n", 14, NULL);
    cel_buf_free(&b);
}

void cel_http_stream_begin(cel_http_req *r, int status, const char *content_type, const char *extra_headers)
{
    if (r->state == CEL__RQ_DONE || r->streaming) return;
    r->streaming = true;
    if (!r->conn) {
        r->status = status;
        return;
    }
    /* HTTP/1.0 has no chunked coding: the body ends when the connection does */
    r->chunked = !r->http10 && !r->head_only;
    if (!r->chunked) r->keep_alive = false;
    put_head(r, status, content_type, -1, extra_headers);
    conn_flush(r->conn);
}

cel_status cel_http_stream_write(cel_http_req *r, const void *data, size_t len)
{
    if (r->state == CEL__RQ_DONE || !r->streaming) return CEL_ERR_INVALID;
    cel__conn *c = r->conn;
    if (!c || r->aborted) return CEL_ERR_CANCELLED;
    if (len == 0 || r->head_only) return CEL_OK;
    if (c->queued + c->wlen + len > r->srv->cfg.max_write_bytes) {
        /* the client does not keep up: drop it rather than buffer without bound */
        r->srv->metrics.conn_dropped_slow++;
        cel_log(&r->srv->cfg.log, CEL_LOG_WARN, "server: dropping a streaming client: %zu bytes unsent (cap %zu)",
                c->queued + c->wlen + len, r->srv->cfg.max_write_bytes);
        cel__srv_conn_close(c);
        return CEL_ERR_LIMIT;
    }
    size_t before = r->out.len;
    cel_status st = CEL_OK;
    if (r->chunked) st = cel_buf_printf(&r->out, "%zx\r\n", len);
    if (st == CEL_OK) st = cel_buf_append(&r->out, data, len);
    if (st == CEL_OK && r->chunked) st = cel_buf_puts(&r->out, "\r\n");
    if (st != CEL_OK) {
        r->out.len = before;
        cel__srv_conn_close(c);
        return CEL_ERR_NOMEM;
    }
    c->queued += r->out.len - before;
    conn_flush(c);
    return CEL_OK;
}

void cel_http_stream_end(cel_http_req *r)
{
    if (r->state == CEL__RQ_DONE) return;
    if (!r->streaming) { /* never begun: an empty 200 keeps the contract simple */
        cel_http_respond(r, 200, NULL, NULL, 0, NULL);
        return;
    }
    if (r->conn && r->chunked) {
        size_t before = r->out.len;
        if (cel_buf_puts(&r->out, "0\r\n\r\n") != CEL_OK) r->keep_alive = false;
        r->conn->queued += r->out.len - before;
    }
    req_complete(r);
}

/* ------------------------------------------------------------- writing */

static void on_write(uv_write_t *w, int status)
{
    cel__conn *c = w->data;
    free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = 0;
    c->writing = false;
    if (c->closing) return;
    if (status < 0) {
        cel__srv_conn_close(c);
        return;
    }
    if (c->phase == CEL__PH_WRITE) conn_set_phase(c, CEL__PH_NONE);
    conn_flush(c);
}

/* Hands len bytes at data to the socket. own: data is a malloc'ed block the
 * write may keep (zero copy). Returns false when the connection failed. */
static bool conn_write(cel__conn *c, char *data, size_t len, bool own, bool *consumed_own)
{
    *consumed_own = false;
    if (c->virt) {
        if (c->sink) cel_buf_append(c->sink, data, len);
        return true;
    }
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS) n = 0;
    if (n < 0) return false;
    if ((size_t)n == len) return true;
    size_t rest = len - (size_t)n;
    char *p;
    if (own && n == 0) {
        p = data;
        *consumed_own = true;
    } else {
        p = malloc(rest);
        if (!p) return false;
        memcpy(p, data + n, rest);
    }
    c->wbuf = p;
    c->wlen = rest;
    c->writing = true;
    c->wreq.data = c;
    b = uv_buf_init(p, (unsigned)rest);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        if (*consumed_own)
            *consumed_own = false; /* the caller still owns (and frees) it */
        else
            free(p);
        c->wbuf = NULL;
        c->wlen = 0;
        c->writing = false;
        return false;
    }
    return true;
}

/* Whether the connection may take another request now: not closing or
 * draining, under the pipeline depth and under the unsent-bytes cap. */
static bool can_parse(const cel__conn *c)
{
    const cel_server *s = c->srv;
    return !c->closing && !c->discard && !c->close_after && !s->stopping && c->n_reqs < s->cfg.max_pipeline &&
           c->queued + c->wlen <= s->cfg.max_write_bytes;
}

/* Sends what the head requests have ready, pops completed ones, then decides
 * what the connection does next (read more, idle, close). */
static void conn_flush(cel__conn *c)
{
    if (c->closing) return;
    while (c->head) {
        cel_http_req *r = c->head;
        if (r->state == CEL__RQ_PARSING) break;
        size_t pending = r->out.len - r->out_off;
        if (pending) {
            if (c->writing) break;
            bool whole = r->out_off == 0;
            bool taken = false;
            char *data = r->out.data + r->out_off;
            if (!conn_write(c, data, pending, whole, &taken)) {
                cel__srv_conn_close(c);
                return;
            }
            c->queued -= pending;
            if (taken)
                cel_buf_init(&r->out); /* the in-flight write owns the memory now */
            else
                cel_buf_reset(&r->out);
            r->out_off = 0;
        }
        if (r->state != CEL__RQ_DONE) break; /* handler still working (or streaming) */
        bool ka = r->keep_alive;
        conn_pop(c);
        req_free(r);
        if (!ka) {
            c->close_after = true;
            c->discard = true;
            break;
        }
    }
    if (c->close_after && !c->head) {
        if (!c->writing) conn_finish_close(c);
        return;
    }
    if (!c->head && !c->cur) {
        if (c->writing)
            conn_set_phase(c, CEL__PH_WRITE);
        else if (c->phase != CEL__PH_FIRST)
            conn_set_phase(c, c->srv->stopping ? CEL__PH_NONE : CEL__PH_IDLE);
        if (c->srv->stopping && !c->writing) {
            cel__srv_conn_close(c);
            return;
        }
    }
    conn_pump(c);
}

/* ---------------------------------------------------------------- timers */

static void on_timer(uv_timer_t *t)
{
    cel__conn *c = t->data;
    cel_server *s = c->srv;
    switch (c->phase) {
    case CEL__PH_HEADER:
    case CEL__PH_BODY:
        s->metrics.timeouts++;
        if (c->cur) {
            cel_http_req *r = c->cur;
            bool in_head = c->phase == CEL__PH_HEADER;
            c->cur = NULL;
            c->discard = true;
            r->state = CEL__RQ_HANDLER;
            r->keep_alive = false;
            conn_set_phase(c, CEL__PH_NONE);
            cel_http_respond_error(r, 408, "timeout_error", "request_timeout",
                                   "request %s not received within %u ms",
                                   in_head ? "headers" : "body",
                                   in_head ? s->cfg.header_timeout_ms : s->cfg.body_timeout_ms);
        } else {
            cel__srv_conn_close(c);
        }
        break;
    case CEL__PH_FIRST:
        s->metrics.timeouts++;
        cel__srv_conn_close(c); /* connected, never sent a byte */
        break;
    case CEL__PH_IDLE:
    case CEL__PH_WRITE:
    case CEL__PH_LINGER:
        cel__srv_conn_close(c);
        break;
    case CEL__PH_NONE: break;
    }
}

/* Moves the connection to phase ph and (re)arms its one timer for it; the
 * timer restarts only when the phase changes (so dribbling bytes cannot
 * extend a header deadline), except WRITE, which restarts on every write. */
static void conn_set_phase(cel__conn *c, cel__phase ph)
{
    if (c->virt || c->closing) {
        c->phase = ph;
        return;
    }
    const cel_server_config *cfg = &c->srv->cfg;
    uint64_t ms = 0;
    switch (ph) {
    case CEL__PH_FIRST:
    case CEL__PH_HEADER: ms = cfg->header_timeout_ms; break;
    case CEL__PH_BODY: ms = cfg->body_timeout_ms; break;
    case CEL__PH_IDLE:
    case CEL__PH_WRITE: ms = cfg->idle_timeout_ms; break;
    case CEL__PH_LINGER: ms = LINGER_MS; break;
    case CEL__PH_NONE: break;
    }
    bool restart = ph != c->phase || ph == CEL__PH_WRITE;
    /* a request that starts on a fresh connection keeps the first timer running */
    if (c->phase == CEL__PH_FIRST && ph == CEL__PH_HEADER) restart = false;
    c->phase = ph;
    if (!restart) return;
    if (ms)
        uv_timer_start(&c->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&c->timer);
}

/* --------------------------------------------------------------- parsing */

static int fail_parse(cel__conn *c, int status, const char *msg)
{
    c->err_status = status;
    c->err_msg = msg;
    /* makes http_parser stop with HPE_CB_*; not 1 or 2, which on_headers_complete
     * would take as "no body" / "upgrade" */
    return -1;
}

/* http_parser callbacks: they build c->cur and enforce the head limits;
 * a nonzero return (fail_parse) stops the parser with c->err_status set. */
static int on_message_begin(http_parser *p)
{
    cel__conn *c = p->data;
    cel_http_req *r = req_new(c);
    if (!r) return fail_parse(c, 500, "out of memory");
    c->cur = r;
    c->hdr_bytes = 0;
    conn_set_phase(c, CEL__PH_HEADER);
    return 0;
}

static int count_head(cel__conn *c, size_t n)
{
    c->hdr_bytes += n;
    if (c->hdr_bytes > c->srv->cfg.max_header_bytes)
        return fail_parse(c, 431, "request line and headers exceed the server's limit");
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    cel__conn *c = p->data;
    if (count_head(c, n)) return -1;
    if (cel_buf_append(&c->cur->url, at, n) != CEL_OK) return fail_parse(c, 500, "out of memory");
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    cel__conn *c = p->data;
    cel_http_req *r = c->cur;
    if (count_head(c, n + 4)) return -1; /* ": " and CRLF count too */
    if (r->last_was_value || r->n_hdrs == 0) {
        if (r->n_hdrs) cel_buf_putc(&r->hdrs, '\0'); /* ends the previous value */
        if (r->n_hdrs >= c->srv->cfg.max_headers)
            return fail_parse(c, 431, "too many header lines");
        r->n_hdrs++;
        r->last_was_value = false;
    }
    if (cel_buf_append(&r->hdrs, at, n) != CEL_OK) return fail_parse(c, 500, "out of memory");
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    cel__conn *c = p->data;
    cel_http_req *r = c->cur;
    if (count_head(c, n)) return -1;
    if (!r->last_was_value) {
        cel_buf_putc(&r->hdrs, '\0'); /* ends the name */
        r->last_was_value = true;
    }
    if (cel_buf_append(&r->hdrs, at, n) != CEL_OK) return fail_parse(c, 500, "out of memory");
    return 0;
}

/* Splits the request target into path and query in place. */
static void split_url(cel_http_req *r)
{
    if (!r->url.data) {
        cel_buf_puts(&r->url, "");
        r->path = r->query = r->url.data ? r->url.data : "";
        return;
    }
    char *u = r->url.data;
    /* absolute-form ("http://host/path") is allowed by HTTP/1.1: keep the path */
    if (strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0) {
        char *slash = strchr(strstr(u, "//") + 2, '/');
        u = slash ? slash : u + r->url.len; /* no path: "" */
    }
    char *q = strchr(u, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    } else {
        r->query = "";
    }
    char *h = strchr(u, '#');
    if (h) *h = '\0';
    r->path = u;
}

/* End of the head: finish the header list, split the target, refuse a
 * declared body over the cap (413 before reading it), answer
 * "Expect: 100-continue", and switch the timer to the body phase. */
static int on_headers_complete(http_parser *p)
{
    cel__conn *c = p->data;
    cel_http_req *r = c->cur;
    cel_server *s = c->srv;
    if (r->n_hdrs && !r->last_was_value) cel_buf_putc(&r->hdrs, '\0'); /* a name with no value */
    if (r->n_hdrs) cel_buf_putc(&r->hdrs, '\0');
    r->method = p->method;
    r->http10 = p->http_major == 1 && p->http_minor == 0;
    split_url(r);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > s->cfg.max_body_bytes)
        return fail_parse(c, 413, "request body exceeds the server's limit");
    const char *expect = cel_http_req_header(r, "Expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0) return fail_parse(c, 417, "unsupported Expect header (only 100-continue)");
        r->expect_continue = true;
        /* only when nothing is ahead of it, so the interim line cannot
         * interleave with an earlier response; otherwise the client's own
         * timeout sends the body anyway */
        if (c->head == r && !c->writing && !c->virt) {
            static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            bool taken;
            if (!conn_write(c, cont, sizeof cont - 1, false, &taken)) return fail_parse(c, 500, "write failed");
        } else if (c->head == r && c->virt && c->sink) {
            cel_buf_puts(c->sink, "HTTP/1.1 100 Continue\r\n\r\n");
        }
    }
    bool has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length > 0);
    conn_set_phase(c, has_body ? CEL__PH_BODY : CEL__PH_NONE);
    if (has_body && (p->flags & F_CONTENTLENGTH) &&
        cel_buf_reserve(&r->body, (size_t)p->content_length) != CEL_OK)
        return fail_parse(c, 500, "out of memory for the request body");
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    cel__conn *c = p->data;
    cel_http_req *r = c->cur;
    if (r->body.len + n > c->srv->cfg.max_body_bytes)
        return fail_parse(c, 413, "request body exceeds the server's limit");
    if (cel_buf_append(&r->body, at, n) != CEL_OK) return fail_parse(c, 500, "out of memory for the request body");
    return 0;
}

/* A whole request: hand it to its route. Parsing pauses here when the
 * connection must not take more (pipeline full, close requested, ...). */
static int on_message_complete(http_parser *p)
{
    cel__conn *c = p->data;
    cel_http_req *r = c->cur;
    c->cur = NULL;
    conn_set_phase(c, CEL__PH_NONE);
    r->keep_alive = http_should_keep_alive(p) && !p->upgrade && !c->srv->stopping;
    if (!r->keep_alive) c->discard = true; /* nothing after this request is read */
    r->state = CEL__RQ_HANDLER;
    cel__srv_dispatch(r);
    /* stop at this message boundary when we must not read on */
    if (!can_parse(c)) http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Answers a request that failed to parse and stops reading the connection. */
static void parse_failed(cel__conn *c, int status, const char *msg)
{
    cel_http_req *r = c->cur;
    c->cur = NULL;
    if (!r) r = req_new(c);
    c->discard = true;
    conn_set_phase(c, CEL__PH_NONE);
    if (!r) {
        cel__srv_conn_close(c);
        return;
    }
    r->state = CEL__RQ_HANDLER;
    r->keep_alive = false;
    const char *code = status == 431 ? "header_too_large" : status == 413 ? "body_too_large" : "bad_request";
    cel_http_respond_error(r, status, NULL, code, "%s", msg);
}

/* Parses [data, data+len); returns how much was consumed. */
static size_t conn_parse(cel__conn *c, const char *data, size_t len)
{
    c->err_status = 0;
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        http_parser_pause(&c->parser, 0);
        return n;
    }
    if (c->closing) return len;
    if (c->err_status) {
        parse_failed(c, c->err_status, c->err_msg);
        return len;
    }
    if (e != HPE_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
        parse_failed(c, e == HPE_HEADER_OVERFLOW ? 431 : 400, msg);
        return len;
    }
    if (c->parser.upgrade) { /* protocol switch requested: we answer, then close */
        c->discard = true;
        return len;
    }
    return n;
}

/* Parses buffered input while the connection may take more requests, then
 * starts or stops reading the socket accordingly. Not re-entrant: a nested
 * call (a handler completing synchronously) returns at once and the outer
 * loop re-checks. */
static void conn_pump(cel__conn *c)
{
    if (c->in_pump || c->closing) return;
    c->in_pump = true;
    while (c->in.len > c->in_off && can_parse(c)) {
        size_t n = conn_parse(c, c->in.data + c->in_off, c->in.len - c->in_off);
        c->in_off += n;
        if (c->closing) break;
    }
    if (c->in_off >= c->in.len || c->discard) {
        c->in_off = 0;
        cel_buf_reset(&c->in);
        if (c->in.cap > 4 * CEL__READ_BUF) cel_buf_free(&c->in);
    }
    c->in_pump = false;
    if (c->closing || c->virt) return;
    bool want = can_parse(c) || c->discard; /* keep reading while draining to see EOF */
    if (c->phase == CEL__PH_NONE && c->close_after) want = true;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

void cel__srv_conn_feed(cel__conn *c, const char *data, size_t len)
{
    if (c->closing || len == 0) return;
    if (c->discard) return; /* after a final response: ignore what follows */
    if (c->in.len > c->in_off || !can_parse(c) || c->in_pump) {
        /* keep order: behind what is already waiting */
        if (cel_buf_append(&c->in, data, len) != CEL_OK) cel__srv_conn_close(c);
        conn_pump(c);
        return;
    }
    c->in_pump = true;
    size_t n = conn_parse(c, data, len);
    c->in_pump = false;
    if (c->closing) return;
    if (n < len && !c->discard && cel_buf_append(&c->in, data + n, len - n) != CEL_OK) {
        cel__srv_conn_close(c);
        return;
    }
    conn_pump(c);
}

/* -------------------------------------------------------------- sockets */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    cel__conn *c = (cel__conn *)h;
    /* one loop-wide buffer: on_read consumes or copies it before the next read */
    *buf = uv_buf_init(c->srv->read_buf, sizeof c->srv->read_buf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    cel__conn *c = (cel__conn *)st;
    if (nread < 0) {
        cel__srv_conn_close(c); /* EOF or reset: the client is gone */
        return;
    }
    if (nread == 0) return;
    if (c->phase == CEL__PH_FIRST || c->phase == CEL__PH_IDLE) conn_set_phase(c, CEL__PH_NONE);
    cel__srv_conn_feed(c, buf->base, (size_t)nread);
}

/* Both handles (tcp, timer) closed: unlink and free the connection. */
static void on_handle_closed(uv_handle_t *h)
{
    cel__conn *c = h->data;
    if (--c->handles_open > 0) return;
    cel_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else if (s->conns == c)
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->rejected)
        s->n_lingering_rejects--;
    else
        s->n_conns--;
    cel_buf_free(&c->in);
    free(c->wbuf);
    free(c);
    cel__srv_check_finished(s);
}

static void on_shutdown(uv_shutdown_t *sh, int status)
{
    cel__conn *c = sh->data;
    if (c->closing) return;
    if (status < 0) {
        cel__srv_conn_close(c);
        return;
    }
    /* FIN sent: read (and drop) until the client closes, briefly, so that
     * unread input does not turn our last response into a reset */
    conn_set_phase(c, CEL__PH_LINGER);
    if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
}

/* The last response has been handed over: shut down our side, linger, close. */
static void conn_finish_close(cel__conn *c)
{
    if (c->closing || c->shut_started) return;
    if (c->virt) {
        cel__srv_conn_close(c);
        return;
    }
    c->shut_started = true;
    c->discard = true;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) cel__srv_conn_close(c);
}

/* Idempotent. Requests a handler still owns are marked aborted (their abort
 * hooks run now) and freed when completed; the rest are freed here. */
void cel__srv_conn_close(cel__conn *c)
{
    if (c->closing) return;
    c->closing = true;
    /* every request still queued loses its client */
    if (c->cur) c->cur = NULL;
    cel_http_req *r = c->head;
    c->head = c->tail = NULL;
    c->n_reqs = 0;
    while (r) {
        cel_http_req *next = r->next;
        r->next = NULL;
        r->conn = NULL;
        if (r->state == CEL__RQ_HANDLER) {
            r->aborted = true; /* freed when its handler completes it */
            if (r->on_abort) {
                void (*fn)(void *) = r->on_abort;
                r->on_abort = NULL;
                fn(r->abort_ud);
            }
        } else {
            req_free(r);
        }
        r = next;
    }
    if (c->virt) return; /* freed by cel__srv_conn_virtual_free, never under the parser */
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

void cel__srv_conn_drain(cel__conn *c)
{
    if (c->closing) return;
    if (!c->head) {
        if (c->writing) {
            c->close_after = true;
            c->discard = true;
        } else {
            cel__srv_conn_close(c);
        }
        return;
    }
    /* a request still being received is dropped; complete ones get answered */
    if (c->cur) {
        cel_http_req *r = c->cur;
        c->cur = NULL;
        /* it is the tail of the queue: remove it */
        cel_http_req **pp = &c->head;
        while (*pp && *pp != r) pp = &(*pp)->next;
        if (*pp) {
            *pp = r->next;
            c->tail = NULL;
            for (cel_http_req *q = c->head; q; q = q->next) c->tail = q;
            c->n_reqs--;
            req_free(r);
        }
    }
    c->discard = true;
    for (cel_http_req *q = c->head; q; q = q->next) q->keep_alive = false;
    if (!c->head) {
        cel__srv_conn_close(c);
        return;
    }
    conn_flush(c);
}

static cel__conn *conn_new(cel_server *s)
{
    cel__conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    return c;
}

cel__conn *cel__srv_conn_virtual(cel_server *s, cel_buf *sink)
{
    cel__conn *c = conn_new(s);
    if (!c) return NULL;
    c->virt = true;
    c->sink = sink;
    c->phase = CEL__PH_FIRST;
    s->n_conns++;
    return c;
}

void cel__srv_conn_virtual_free(cel__conn *c)
{
    cel_server *s = c->srv;
    cel__srv_conn_close(c);
    if (s->conns == c) s->conns = c->next;
    if (c->prev) c->prev->next = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    cel_buf_free(&c->in);
    free(c);
    cel__srv_check_finished(s);
}

/* Accepts one connection; over the cap it gets a canned 503, then close. */
cel_status cel__srv_conn_accept(cel_server *s)
{
    cel__conn *c = conn_new(s);
    if (!c) return CEL_ERR_NOMEM;
    uv_tcp_init(&s->loop, &c->tcp);
    uv_timer_init(&s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    bool over = s->n_conns >= s->cfg.max_connections;
    if (over) {
        c->rejected = true;
        s->n_lingering_rejects++;
    } else {
        s->n_conns++;
    }
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
        cel__srv_conn_close(c);
        return CEL_ERR_IO;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (over) {
        s->metrics.conn_rejected++;
        /* answer 503 without reading; too many lingering rejects: just close */
        if (s->n_lingering_rejects > 64) {
            cel__srv_conn_close(c);
            return CEL_OK;
        }
        cel_buf b;
        cel_buf_init(&b);
        cel__srv_error_json(&b, 503, "service_unavailable", "too_many_connections",
                        "the server has reached its connection limit; retry later");
        cel_buf resp;
        cel_buf_init(&resp);
        cel_buf_printf(&resp,
                       "HTTP/1.1 503 Service Unavailable\r\nServer: celine\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                       b.len, b.data ? b.data : "");
        cel_buf_free(&b);
        cel__srv_metrics_count(&s->metrics, CEL__MAX_ROUTES, 503, 0);
        c->close_after = true;
        c->discard = true;
        bool taken = false;
        size_t len = resp.len;
        char *data = cel_buf_steal(&resp);
        bool ok = conn_write(c, data, len, true, &taken);
        if (!taken) free(data);
        if (!ok) {
            cel__srv_conn_close(c);
            return CEL_OK;
        }
        if (!c->writing) conn_finish_close(c);
        return CEL_OK;
    }
    s->metrics.conn_accepted++;
    conn_set_phase(c, CEL__PH_FIRST);
    conn_pump(c);
    return CEL_OK;
}
