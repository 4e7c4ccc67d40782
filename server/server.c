/*
 * server.c - the server's lifecycle (create, run, graceful stop, free), the
 * route table and dispatch (authentication, 404/405), posting callbacks to
 * the loop from other threads, the data-folder guard, and the built-in
 * /health and /metrics handlers.
 */
#include <errno.h>
#include <limits.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void cel_server_config_default(cel_server_config *c)
{
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8080;
    c->max_header_bytes = 16 * 1024;
    c->max_headers = 100;
    c->max_body_bytes = 64u * 1024 * 1024;
    c->header_timeout_ms = 10000;
    c->body_timeout_ms = 60000;
    c->idle_timeout_ms = 30000;
    c->max_connections = 1024;
    c->max_pipeline = 32;
    c->max_queue = 1024;
    c->max_write_bytes = 8u * 1024 * 1024;
    c->shutdown_grace_ms = 10000;
    c->max_n = 64;
}

/* Copies cfg into s->cfg, duplicating its strings into one block and filling
 * zero limits with defaults. */
static cel_status copy_config(cel_server *s, const cel_server_config *cfg, cel_error *err)
{
    cel_server_config d;
    cel_server_config_default(&d);
    s->cfg = *cfg;
    cel_server_config *c = &s->cfg;
#define DEF(f)                                                                                                     \
    if (!c->f) c->f = d.f
    DEF(max_header_bytes);
    DEF(max_headers);
    DEF(max_body_bytes);
    DEF(header_timeout_ms);
    DEF(body_timeout_ms);
    DEF(idle_timeout_ms);
    DEF(max_connections);
    DEF(max_pipeline);
    DEF(max_queue);
    DEF(max_write_bytes);
    DEF(shutdown_grace_ms);
    DEF(max_n);
#undef DEF
    if (!c->host || !*c->host) c->host = d.host;
    if (c->port < 0 || c->port > 65535)
        return cel_error_set(err, CEL_ERR_INVALID, "server: port %d is out of range 0..65535", c->port);
    const char **strs[] = {&c->host,          &c->api_key,       &c->data_dir,      &c->model_path,   &c->model_name,
                           &c->tokenizer_path, &c->chat_template, &c->reward_format, &c->allow_backends};
    size_t n = sizeof strs / sizeof strs[0], total = 0;
    for (size_t i = 0; i < n; i++)
        if (*strs[i]) total += strlen(*strs[i]) + 1;
    s->strings = malloc(total ? total : 1);
    if (!s->strings) return cel_error_set(err, CEL_ERR_NOMEM, "server: out of memory");
    char *p = s->strings;
    for (size_t i = 0; i < n; i++) {
        if (!*strs[i]) continue;
        size_t l = strlen(*strs[i]) + 1;
        memcpy(p, *strs[i], l);
        *strs[i] = p;
        p += l;
    }
    if (c->api_key && !*c->api_key) c->api_key = NULL;
    return CEL_OK;
}

/* ------------------------------------------------------------------ routes */

cel_status cel_server_route(cel_server *s, const char *method, const char *path, unsigned flags, cel_route_fn fn,
                            void *ud, cel_error *err)
{
    if (!method || !path || !fn || path[0] != '/')
        return cel_error_set(err, CEL_ERR_INVALID, "server: a route needs a method, a path starting with '/' "
                                                   "and a handler");
    if (strlen(method) >= sizeof s->routes[0].method || strlen(path) >= sizeof s->routes[0].path)
        return cel_error_set(err, CEL_ERR_INVALID, "server: route %s %s: method or path too long", method, path);
    for (int i = 0; i < s->n_routes; i++) {
        cel__route *r = &s->routes[i];
        if (strcmp(r->method, method) == 0 && strcmp(r->path, path) == 0) {
            r->flags = flags, r->fn = fn, r->ud = ud;
            return CEL_OK;
        }
    }
    if (s->n_routes >= CEL__MAX_ROUTES)
        return cel_error_set(err, CEL_ERR_LIMIT, "server: route %s %s: more than %d routes", method, path,
                             CEL__MAX_ROUTES);
    cel__route *r = &s->routes[s->n_routes++];
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", path);
    r->path_len = strlen(path);
    r->flags = flags, r->fn = fn, r->ud = ud;
    return CEL_OK;
}

static bool route_matches(const cel__route *rt, const char *path)
{
    if (rt->flags & CEL_ROUTE_PREFIX) return strncmp(path, rt->path, rt->path_len) == 0;
    return strcmp(path, rt->path) == 0;
}

/* Constant-time comparison so the key cannot be guessed byte by byte from timing. */
static bool key_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++) diff |= (unsigned char)(i < alen ? a[i] ^ b[i] : 1);
    return diff == 0;
}

static bool authorized(cel_http_req *r)
{
    const char *key = r->srv->cfg.api_key;
    if (!key) return true;
    const char *h = cel_http_req_header(r, "Authorization");
    if (!h) return false;
    while (*h == ' ') h++;
    if (strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
    return key_equal(h, n, key);
}

void cel__srv_dispatch(cel_http_req *r)
{
    cel_server *s = r->srv;
    const char *method = cel_http_req_method(r);
    if (r->method == HTTP_HEAD) { /* HEAD is GET without the body (RFC 9110 9.3.2) */
        method = "GET";
        r->head_only = true;
    }
    int found = -1, path_known = -1;
    /* exact routes first, then prefixes (longest first) */
    for (int i = 0; i < s->n_routes; i++) {
        const cel__route *rt = &s->routes[i];
        if ((rt->flags & CEL_ROUTE_PREFIX) || strcmp(r->path, rt->path) != 0) continue;
        if (path_known < 0) path_known = i;
        if (strcmp(rt->method, method) == 0) found = i;
    }
    if (found < 0 && path_known < 0) {
        size_t best = 0;
        for (int i = 0; i < s->n_routes; i++) {
            const cel__route *rt = &s->routes[i];
            if (!(rt->flags & CEL_ROUTE_PREFIX) || !route_matches(rt, r->path)) continue;
            if (rt->path_len < best) continue;
            if (rt->path_len > best) found = -1, path_known = -1;
            best = rt->path_len;
            if (path_known < 0) path_known = i;
            if (strcmp(rt->method, method) == 0) found = i;
        }
    }
    if (found < 0) {
        if (path_known < 0) {
            r->route = CEL__MAX_ROUTES;
            cel_http_respond_error(r, 404, NULL, "not_found", "no route %s %s (see GET /v1/models, POST "
                                   "/v1/chat/completions, POST /v1/reward, ...)", cel_http_req_method(r), r->path);
            return;
        }
        r->route = path_known;
        /* list the methods this path does answer */
        char allow[128] = "Allow: ";
        size_t n = strlen(allow);
        for (int i = 0; i < s->n_routes; i++) {
            const cel__route *rt = &s->routes[i];
            if (strcmp(rt->path, s->routes[path_known].path) != 0) continue;
            n += (size_t)snprintf(allow + n, sizeof allow - n, "%s%s", n > 7 ? ", " : "", rt->method);
            if (n >= sizeof allow - 8) break;
        }
        snprintf(allow + n, sizeof allow - n, "\r\n");
        cel_buf b;
        cel_buf_init(&b);
        char msg[200];
        snprintf(msg, sizeof msg, "method %s is not allowed on %s", cel_http_req_method(r), r->path);
        cel__srv_error_json(&b, 405, NULL, "method_not_allowed", msg);
        cel_http_respond(r, 405, "application/json", b.data, b.len, allow);
        cel_buf_free(&b);
        return;
    }
    r->route = found;
    const cel__route *rt = &s->routes[found];
    if (!(rt->flags & CEL_ROUTE_PUBLIC) && !authorized(r)) {
        cel_http_respond_error(r, 401, "authentication_error", "invalid_api_key",
                               "missing or wrong API key: send \"Authorization: Bearer KEY\"");
        return;
    }
    rt->fn(r, rt->ud);
}

/* ---------------------------------------------------------------- posting */

static void on_post(uv_async_t *a)
{
    cel_server *s = a->data;
    pthread_mutex_lock(&s->post_mu);
    cel__post *p = s->post_head;
    s->post_head = s->post_tail = NULL;
    pthread_mutex_unlock(&s->post_mu);
    while (p) {
        cel__post *next = p->next;
        p->fn(p->ud); /* may free p (engine events embed their node) */
        p = next;
    }
}

cel_status cel__srv_post_node(cel_server *s, cel__post *node)
{
    node->next = NULL;
    pthread_mutex_lock(&s->post_mu);
    if (s->post_closed) {
        pthread_mutex_unlock(&s->post_mu);
        return CEL_ERR_CANCELLED;
    }
    if (s->post_tail)
        s->post_tail->next = node;
    else
        s->post_head = node;
    s->post_tail = node;
    uv_async_send(&s->post_async); /* under the lock: the handle cannot be closed meanwhile */
    pthread_mutex_unlock(&s->post_mu);
    return CEL_OK;
}

typedef struct post_box {
    cel__post node;
    void (*fn)(void *ud);
    void *ud;
} post_box;

static void run_box(void *ud)
{
    post_box *b = ud;
    void (*fn)(void *) = b->fn;
    void *arg = b->ud;
    free(b);
    fn(arg);
}

cel_status cel_server_post(cel_server *s, void (*fn)(void *ud), void *ud)
{
    post_box *b = malloc(sizeof *b);
    if (!b) return CEL_ERR_NOMEM;
    b->fn = fn, b->ud = ud;
    b->node.fn = run_box, b->node.ud = b;
    cel_status st = cel__srv_post_node(s, &b->node);
    if (st != CEL_OK) free(b);
    return st;
}

/* -------------------------------------------------------------- data dir */

cel_status cel_server_data_path(const cel_server *s, const char *rel, char *out, size_t out_size, cel_error *err)
{
    if (!s->data_dir_real)
        return cel_error_set(err, CEL_ERR_INVALID, "file '%s': the server has no data folder (start it with "
                                                   "--data-dir DIR to allow requests to name files)", rel);
    if (!rel || !*rel) return cel_error_set(err, CEL_ERR_INVALID, "empty file name");
    if (rel[0] == '/')
        return cel_error_set(err, CEL_ERR_INVALID, "file '%s': absolute paths are not allowed; name a file "
                                                   "relative to the data folder", rel);
    /* reject ".." components outright, whatever they would resolve to */
    for (const char *p = rel; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return cel_error_set(err, CEL_ERR_INVALID, "file '%s': '..' is not allowed in paths", rel);
        p += n;
        while (*p == '/') p++;
    }
    char joined[PATH_MAX];
    if ((size_t)snprintf(joined, sizeof joined, "%s/%s", s->data_dir_real, rel) >= sizeof joined)
        return cel_error_set(err, CEL_ERR_INVALID, "file '%s': path too long", rel);
    char real[PATH_MAX];
    if (!realpath(joined, real))
        return cel_error_set(err, CEL_ERR_NOT_FOUND, "file '%s' in the data folder: %s", rel, strerror(errno));
    size_t dl = strlen(s->data_dir_real);
    if (strncmp(real, s->data_dir_real, dl) != 0 || (real[dl] != '/' && real[dl] != '\0'))
        return cel_error_set(err, CEL_ERR_INVALID, "file '%s' resolves outside the data folder", rel);
    if (strlen(real) + 1 > out_size) return cel_error_set(err, CEL_ERR_INVALID, "file '%s': path too long", rel);
    memcpy(out, real, strlen(real) + 1);
    return CEL_OK;
}

const cel_logger *cel_server_logger(const cel_server *s) { return &s->cfg.log; }

cel_engine *cel_server_engine(const cel_server *s)
{
    return s->model_state == CEL__MODEL_READY && !s->stopping ? s->engine : NULL;
}

const cel_model *cel_server_model(const cel_server *s)
{
    return s->model_state == CEL__MODEL_READY && !s->stopping ? s->model : NULL;
}

/* ------------------------------------------------------------- verifiers */

cel_status cel__srv_verifier_get(cel_server *s, uint32_t format, const cel_verifier **out, cel_error *err)
{
    format &= 7u;
    pthread_mutex_lock(&s->ver_mu);
    cel_status st = CEL_OK;
    if (!s->verifiers[format]) {
        cel_verify_config vc;
        cel_verify_config_default(&vc);
        vc.format = format;
        st = cel_verifier_create(&vc, &s->verifiers[format], err);
    }
    *out = s->verifiers[format];
    pthread_mutex_unlock(&s->ver_mu);
    return st;
}

/* ------------------------------------------------------- built-in routes */

void cel__srv_route_health(cel_http_req *r, void *ud)
{
    (void)ud;
    cel_server *s = r->srv;
    if (s->model_state == CEL__MODEL_LOADING) {
        static const char body[] = "{\"status\":\"loading\",\"message\":\"the model is loading\"}";
        cel_http_respond(r, 503, "application/json", body, sizeof body - 1, "Retry-After: 1\r\n");
        return;
    }
    if (s->model_state == CEL__MODEL_FAILED) {
        static const char body[] = "{\"status\":\"error\",\"message\":\"the model failed to load\"}";
        cel_http_respond(r, 503, "application/json", body, sizeof body - 1, NULL);
        return;
    }
    if (s->stopping) {
        static const char body[] = "{\"status\":\"stopping\"}";
        cel_http_respond(r, 503, "application/json", body, sizeof body - 1, NULL);
        return;
    }
    static const char ok_model[] = "{\"status\":\"ok\",\"model\":true}";
    static const char ok_none[] = "{\"status\":\"ok\",\"model\":false}";
    if (s->model_state == CEL__MODEL_READY)
        cel_http_respond(r, 200, "application/json", ok_model, sizeof ok_model - 1, NULL);
    else
        cel_http_respond(r, 200, "application/json", ok_none, sizeof ok_none - 1, NULL);
}

void cel__srv_route_metrics(cel_http_req *r, void *ud)
{
    (void)ud;
    cel_buf b;
    cel_buf_init(&b);
    if (cel__srv_metrics_render(r->srv, &b) != CEL_OK) {
        cel_buf_free(&b);
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory rendering metrics");
        return;
    }
    cel_http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    cel_buf_free(&b);
}

/* ---------------------------------------------------------- cel_http_defer */

static void defer_done(cel__job *job)
{
    cel_http_req *r = job->req;
    void (*done)(cel_http_req *, void *) = job->req_done;
    void *ud = job->ud;
    free(job);
    done(r, ud);
}

cel_status cel_http_defer(cel_http_req *r, void (*work)(void *ud), void (*done)(cel_http_req *r, void *ud), void *ud)
{
    cel_server *s = r->srv;
    cel__job *job = calloc(1, sizeof *job);
    if (!job) {
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory");
        return CEL_ERR_NOMEM;
    }
    job->work = work, job->ud = ud, job->req = r, job->req_done = done, job->done = defer_done;
    if (cel__srv_workq_push(&s->wq, job) != CEL_OK) {
        free(job);
        s->metrics.busy_rejections++;
        cel_http_respond_error(r, 429, "rate_limit_error", "queue_full",
                               "the server is busy (%u jobs queued or running); retry after a moment",
                               s->cfg.max_queue);
        return CEL_ERR_BUSY;
    }
    return CEL_OK;
}

/* ------------------------------------------------------------- lifecycle */

static void on_connection(uv_stream_t *listener, int status)
{
    cel_server *s = listener->data;
    if (status < 0 || s->stopping) return;
    cel__srv_conn_accept(s);
}

static void close_cb_noop(uv_handle_t *h) { (void)h; }

/* Loop thread: the grace period is over. First cancel what is still
 * generating (cancelled streams still end with their final chunk and
 * [DONE]); a second later, drop connections still open. */
static void on_grace(uv_timer_t *t)
{
    cel_server *s = t->data;
    if (!s->force) {
        s->force = true;
        cel__srv_gen_cancel_all(s);
        uv_timer_start(&s->grace_timer, on_grace, 1000, 0);
        cel__srv_check_finished(s);
        return;
    }
    for (cel__conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->virt) cel__srv_conn_close(c);
    }
    cel__srv_check_finished(s);
}

static void begin_shutdown(cel_server *s)
{
    if (s->stopping) { /* a second signal: cancel and drop now */
        if (!s->force) on_grace(&s->grace_timer);
        on_grace(&s->grace_timer);
        return;
    }
    s->stopping = true;
    cel_log(&s->cfg.log, CEL_LOG_INFO, "server: shutting down (in flight: %u connections, %u generations, %u jobs)",
            s->n_conns, s->n_gens, cel__srv_workq_active(&s->wq));
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, close_cb_noop);
        s->listening = false;
    }
    for (cel__conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        cel__srv_conn_drain(c);
    }
    uv_timer_start(&s->grace_timer, on_grace, s->cfg.shutdown_grace_ms, 0);
    cel__srv_check_finished(s);
}

static void on_stop_post(void *ud) { begin_shutdown(ud); }

static void on_signal(uv_signal_t *h, int signum)
{
    cel_server *s = h->data;
    cel_log(&s->cfg.log, CEL_LOG_INFO, "server: signal %d", signum);
    begin_shutdown(s);
}

void cel__srv_check_finished(cel_server *s)
{
    if (!s->stopping || s->finished || !s->running) return;
    if (s->n_conns || s->n_lingering_rejects || s->n_gens || cel__srv_workq_active(&s->wq)) return;
    if (s->model_state == CEL__MODEL_LOADING) return; /* the loader posts back; wait for it */
    s->finished = true;
    uv_stop(&s->loop);
}

void cel_server_stop(cel_server *s) { cel_server_post(s, on_stop_post, s); }

static cel_status bind_listener(cel_server *s, cel_error *err)
{
    struct sockaddr_storage addr;
    const char *host = s->cfg.host;
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    bool v6 = strchr(host, ':') != NULL;
    int rc = v6 ? uv_ip6_addr(host, s->cfg.port, (struct sockaddr_in6 *)&addr)
                : uv_ip4_addr(host, s->cfg.port, (struct sockaddr_in *)&addr);
    if (rc != 0)
        return cel_error_set(err, CEL_ERR_INVALID, "server: --host '%s' is not an IP address (use e.g. 127.0.0.1, "
                                                   "0.0.0.0 or ::1)", s->cfg.host);
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    s->listening = true;
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rc != 0)
        return cel_error_set(err, CEL_ERR_IO, "server: cannot listen on %s port %d: %s", s->cfg.host, s->cfg.port,
                             uv_strerror(rc));
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
    s->port = got.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&got)->sin_port);
    snprintf(s->url, sizeof s->url, v6 ? "http://[%s]:%d" : "http://%s:%d", host, s->port);
    return CEL_OK;
}

static cel_status register_builtins(cel_server *s, cel_error *err)
{
    CEL_TRY(cel_server_route(s, "GET", "/health", CEL_ROUTE_PUBLIC, cel__srv_route_health, NULL, err));
    CEL_TRY(cel_server_route(s, "GET", "/metrics", 0, cel__srv_route_metrics, NULL, err));
    CEL_TRY(cel_server_route(s, "GET", "/v1/models", 0, cel__srv_route_models, NULL, err));
    CEL_TRY(cel_server_route(s, "POST", "/v1/completions", 0, cel__srv_route_completions, NULL, err));
    CEL_TRY(cel_server_route(s, "POST", "/v1/chat/completions", 0, cel__srv_route_chat, NULL, err));
    CEL_TRY(cel_server_route(s, "POST", "/tokenize", 0, cel__srv_route_tokenize, NULL, err));
    CEL_TRY(cel_server_route(s, "POST", "/detokenize", 0, cel__srv_route_detokenize, NULL, err));
    CEL_TRY(cel_server_route(s, "POST", "/v1/reward", 0, cel__srv_route_reward, NULL, err));
    CEL_TRY(cel_server_route(s, "POST", "/get_reward", 0, cel__srv_route_get_reward, NULL, err));
    return CEL_OK;
}

cel_status cel_server_create(const cel_server_config *cfg, cel_server **out, cel_error *err)
{
    *out = NULL;
    cel_server_config defaults;
    if (!cfg) {
        cel_server_config_default(&defaults);
        cfg = &defaults;
    }
    cel_server *s = calloc(1, sizeof *s);
    if (!s) return cel_error_set(err, CEL_ERR_NOMEM, "server: out of memory");
    pthread_mutex_init(&s->post_mu, NULL);
    pthread_mutex_init(&s->ver_mu, NULL);
    cel__srv_metrics_init(&s->metrics);
    s->id_counter = cel_mix64(cel_now_ns() ^ (uint64_t)(uintptr_t)s);
    cel_status st = copy_config(s, cfg, err);
    if (st != CEL_OK) goto fail;
    s->default_format = 0;
    if (s->cfg.reward_format && !cel_format_parse(s->cfg.reward_format, &s->default_format)) {
        st = cel_error_set(err, CEL_ERR_INVALID, "server: unknown reward format '%s' (none, boxed, answer, think, "
                                                 "or a comma list)", s->cfg.reward_format);
        goto fail;
    }
    if (s->cfg.data_dir) {
        char real[PATH_MAX];
        if (!realpath(s->cfg.data_dir, real) || !cel_path_is_dir(real)) {
            st = cel_error_set(err, CEL_ERR_INVALID, "server: --data-dir '%s' is not a folder", s->cfg.data_dir);
            goto fail;
        }
        s->data_dir_real = strdup(real);
        if (!s->data_dir_real) {
            st = cel_error_set(err, CEL_ERR_NOMEM, "server: out of memory");
            goto fail;
        }
    }
    if (s->cfg.model_path && !cel_path_exists(s->cfg.model_path)) {
        st = cel_error_set(err, CEL_ERR_NOT_FOUND, "server: --model '%s' does not exist", s->cfg.model_path);
        goto fail;
    }
    /* the default verifier now, so a bad configuration fails at start */
    const cel_verifier *v;
    st = cel__srv_verifier_get(s, s->default_format, &v, err);
    if (st != CEL_OK) goto fail;
    st = register_builtins(s, err);
    if (st != CEL_OK) goto fail;

    int rc = uv_loop_init(&s->loop);
    if (rc != 0) {
        st = cel_error_set(err, CEL_ERR_INTERNAL, "server: uv_loop_init: %s", uv_strerror(rc));
        goto fail;
    }
    s->loop_ok = true;
    uv_async_init(&s->loop, &s->post_async, on_post);
    s->post_async.data = s;
    uv_timer_init(&s->loop, &s->grace_timer);
    s->grace_timer.data = s;
    st = cel__srv_workq_init(&s->wq, &s->loop, s->cfg.n_threads, s->cfg.max_queue, err);
    if (st != CEL_OK) goto fail;
    if (s->cfg.install_signals) {
        uv_signal_init(&s->loop, &s->sig_int);
        uv_signal_init(&s->loop, &s->sig_term);
        s->sig_int.data = s->sig_term.data = s;
        uv_signal_start(&s->sig_int, on_signal, SIGINT);
        uv_signal_start(&s->sig_term, on_signal, SIGTERM);
        s->signals = true;
    }
    st = bind_listener(s, err);
    if (st != CEL_OK) goto fail;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)s->cfg.max_connections + 64)
        cel_log(&s->cfg.log, CEL_LOG_WARN, "server: the open-file limit (%llu) is below max_connections (%u) + 64: "
                "accept() may fail before the cap answers 503", (unsigned long long)rl.rlim_cur,
                s->cfg.max_connections);
    *out = s;
    return CEL_OK;
fail:
    cel_server_free(s);
    return st;
}

int cel_server_port(const cel_server *s) { return s->port; }
const char *cel_server_url(const cel_server *s) { return s->url; }

cel_status cel_server_run(cel_server *s, cel_error *err)
{
    if (s->running || s->finished)
        return cel_error_set(err, CEL_ERR_INVALID, "server: cel_server_run called twice");
    s->running = true;
    if (s->cfg.model_path) cel__srv_model_start_load(s);
    cel__srv_check_finished(s); /* a stop requested before run */
    while (!s->finished) uv_run(&s->loop, UV_RUN_DEFAULT);
    s->running = false;
    /* nothing runs callbacks any more: refuse new posts, deliver queued ones */
    pthread_mutex_lock(&s->post_mu);
    s->post_closed = true;
    pthread_mutex_unlock(&s->post_mu);
    on_post(&s->post_async);
    if (s->model_state == CEL__MODEL_FAILED) {
        if (err) *err = s->model_err;
        return s->model_err.code ? s->model_err.code : CEL_ERR_INTERNAL;
    }
    return CEL_OK;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void cel_server_free(cel_server *s)
{
    if (!s) return;
    cel__srv_model_join(s);
    if (s->loop_ok) {
        /* virtual connections (tests) are freed by their owners; drop any left */
        while (s->conns && s->conns->virt) cel__srv_conn_virtual_free(s->conns);
        for (cel__conn *c = s->conns; c; c = c->next) cel__srv_conn_close(c);
        cel__srv_workq_stop(&s->wq);        /* delivers finished jobs */
        cel__srv_gen_cancel_all(s);
        cel__srv_engine_shutdown(s);        /* posts the last (CANCELLED) events */
        on_post(&s->post_async);        /* delivers them: every generation is freed */
        pthread_mutex_lock(&s->post_mu);
        s->post_closed = true;
        pthread_mutex_unlock(&s->post_mu);
        on_post(&s->post_async);
        cel__srv_model_free(s);
        uv_walk(&s->loop, close_walk, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
    }
    for (int i = 0; i < 8; i++) cel_verifier_free(s->verifiers[i]);
    pthread_mutex_destroy(&s->post_mu);
    pthread_mutex_destroy(&s->ver_mu);
    free(s->data_dir_real);
    free(s->strings);
    free(s);
}
