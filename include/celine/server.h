/*
 * celine/server.h - the HTTP/1.1 server behind `celine serve`: OpenAI-compatible
 * generation (through the engine), reward endpoints (through the verifiers),
 * tokenization, health and Prometheus metrics.
 *
 * Threads: one libuv loop does all network I/O and timers; grading and request
 * preparation (JSON parsing, tokenization) run on a bounded worker pool; the
 * engine steps on its own thread. Other threads reach the loop only through
 * queues woken with uv_async_send (cel_server_post).
 *
 * Other modules plug endpoints in with cel_server_route(): a handler receives
 * a cel_http_req on the loop thread and must complete it exactly once, with
 * cel_http_respond*() or cel_http_stream_end(), right away or later (after
 * deferred work, or when its own thread posts back to the loop).
 *
 * The process should ignore SIGPIPE (the CLI does): a client that vanishes
 * mid-write must cost the write an error code, not kill the process. The
 * library itself changes no process-wide state unless install_signals is set.
 */
#ifndef CELINE_SERVER_H
#define CELINE_SERVER_H

#include "celine/common.h"
#include "celine/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cel_server_config {
    const char *host;             /* IP literal to bind; NULL: "127.0.0.1" */
    int port;                     /* 0: an ephemeral port (see cel_server_port) */
    int n_threads;                /* grading / preparation workers; <= 0: CPU count */
    size_t max_header_bytes;      /* request line + headers; over: 431. 0: 16 KiB */
    uint32_t max_headers;         /* header lines; over: 431. 0: 100 */
    size_t max_body_bytes;        /* request body (after de-chunking); over: 413. 0: 64 MiB */
    uint32_t header_timeout_ms;   /* first byte of a request to end of its headers; over: 408. 0: 10 s */
    uint32_t body_timeout_ms;     /* end of headers to end of body; over: 408. 0: 60 s */
    uint32_t idle_timeout_ms;     /* keep-alive connection with nothing in flight; 0: 30 s */
    uint32_t max_connections;     /* open connections; over: 503 and close. 0: 1024 */
    uint32_t max_pipeline;        /* requests queued on one connection before reading pauses; 0: 32 */
    uint32_t max_queue;           /* worker-pool jobs waiting or running; over: 429. 0: 1024 */
    size_t max_write_bytes;       /* unsent response bytes per connection; a stream over it is dropped. 0: 8 MiB */
    uint32_t shutdown_grace_ms;   /* on SIGINT/SIGTERM, how long in-flight work may finish; 0: 10 s */
    const char *api_key;          /* when set, every route but /health needs "Authorization: Bearer KEY" */
    const char *data_dir;         /* requests may name files only inside this folder; NULL: none allowed */
    const char *allow_backends;   /* comma-separated URL prefixes a generation request or job may name in
                                   * "backend" (the server then connects there); NULL: only "local" */
    const char *model_path;       /* .gguf or Hugging Face folder, loaded in the background; NULL: no model */
    const char *model_name;       /* name served in /v1/models; NULL: the model's own name */
    const char *tokenizer_path;   /* tokenizer.json override for the model */
    const char *chat_template;    /* "chatml", "llama3", ...; NULL: detect from the model */
    int backend;                  /* cel_backend_kind: 0 CPU, 1 CUDA */
    int32_t engine_threads;       /* CPU threads for the engine; <= 0: all cores */
    int32_t n_ctx;                /* engine context per sequence; 0: engine default */
    int32_t max_seqs;             /* engine running sequences; 0: engine default */
    int32_t engine_queue;         /* requests waiting for the engine; over: 429. 0: engine default (4096) */
    uint32_t max_n;               /* largest `n` a request may ask; 0: 64 */
    const char *reward_format;    /* default required format for graders ("none", "boxed", ...); NULL: none */
    bool install_signals;         /* SIGINT/SIGTERM start a graceful shutdown (the CLI sets this) */
    cel_logger log;
} cel_server_config;

/* Fills c with the defaults above (host 127.0.0.1, port 8080, ...). */
void cel_server_config_default(cel_server_config *c);

typedef struct cel_server cel_server;

/* Creates a server (verifiers ready, loop and workers initialised) and binds
 * its listening socket; no connection is accepted until cel_server_run. The
 * model, when configured, starts loading in cel_server_run; /health answers
 * 503 until it is ready. */
cel_status cel_server_create(const cel_server_config *cfg, cel_server **out, cel_error *err);
/* Port actually bound (useful with port 0). */
int cel_server_port(const cel_server *s);
/* The bound address as "http://HOST:PORT" (IPv6 hosts in brackets). */
const char *cel_server_url(const cel_server *s);
/* Runs the loop on the calling thread until the server has stopped (after
 * cel_server_stop or a signal, in-flight work finished or cancelled). Returns
 * CEL_OK after a clean shutdown, an error when the model failed to load. */
cel_status cel_server_run(cel_server *s, cel_error *err);
/* Thread-safe and idempotent: starts the graceful shutdown (stop accepting,
 * finish or cancel what is in flight, flush, return from cel_server_run). */
void cel_server_stop(cel_server *s);
/* Frees a server that is not running (never started, or returned from run). */
void cel_server_free(cel_server *s);

/* ------------------------------------------------------------- routes */
typedef struct cel_http_req cel_http_req;
/* Called on the loop thread; must complete req exactly once (see above). */
typedef void (*cel_route_fn)(cel_http_req *req, void *ud);

enum {
    CEL_ROUTE_PUBLIC = 1 << 0, /* no API key needed */
    CEL_ROUTE_PREFIX = 1 << 1, /* path matches as a prefix ("/v1/jobs/" matches "/v1/jobs/42") */
};
/* Adds a route before cel_server_run. method: "GET", "POST", ...; exact-path
 * routes win over prefix routes; a path known with another method answers 405.
 * Re-registering a (method, path) replaces its handler (so a module can
 * override a built-in). Fails with CEL_ERR_LIMIT past 64 routes. */
cel_status cel_server_route(cel_server *s, const char *method, const char *path, unsigned flags, cel_route_fn fn,
                            void *ud, cel_error *err);

/* Runs fn(ud) on the loop thread soon. Thread-safe: this is how engine or
 * generator threads hand results back. Fails (CEL_ERR_CANCELLED) once
 * cel_server_run has returned; fn is then not called. Callbacks posted
 * before that run, at the latest as cel_server_run returns. Never call it
 * after cel_server_free. */
cel_status cel_server_post(cel_server *s, void (*fn)(void *ud), void *ud);

/* Resolves `rel` (a relative path from a request) inside the configured data
 * folder into out[out_size]. Rejects absolute paths, ".." components, paths
 * that do not exist, and anything (symlinks included) resolving outside the
 * folder; CEL_ERR_INVALID with a message naming the path. */
cel_status cel_server_data_path(const cel_server *s, const char *rel, char *out, size_t out_size, cel_error *err);

const cel_logger *cel_server_logger(const cel_server *s);

/* The engine serving --model, for plug-in routes on the loop thread: NULL
 * while the model loads, without a model, or once shutting down. Submit with
 * cel_engine_submit; token callbacks run on the engine thread and must hand
 * results back with cel_server_post. */
cel_engine *cel_server_engine(const cel_server *s);
/* The loaded model (tokenizer, chat template), or NULL as above. */
const cel_model *cel_server_model(const cel_server *s);

/* ------------------------------------------------------------- requests */
const char *cel_http_req_method(const cel_http_req *r);
const char *cel_http_req_path(const cel_http_req *r);   /* without the query, NUL-terminated */
const char *cel_http_req_query(const cel_http_req *r);  /* after '?', "" when none */
/* Value of a header (case-insensitive name), or NULL. */
const char *cel_http_req_header(const cel_http_req *r, const char *name);
/* The de-chunked body (NUL-terminated; len may be NULL). */
const char *cel_http_req_body(const cel_http_req *r, size_t *len);
cel_server *cel_http_req_server(const cel_http_req *r);
/* True once the client has gone (closed, reset, or dropped for a write cap). */
bool cel_http_req_aborted(const cel_http_req *r);
/* fn(ud) runs on the loop thread when the client goes before req completes
 * (at most once); the handler must still complete req. */
void cel_http_req_on_abort(cel_http_req *r, void (*fn)(void *ud), void *ud);

/* ------------------------------------------------------------- responses */
/* A complete response. extra_headers: NULL or "Name: value\r\n" lines. */
void cel_http_respond(cel_http_req *r, int status, const char *content_type, const void *body, size_t len,
                      const char *extra_headers);
/* An error in OpenAI's shape {"error": {"message", "type", "code"}}; type and
 * code may be NULL (type then follows the status, code is null). */
void cel_http_respond_error(cel_http_req *r, int status, const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* A streamed response: status line and headers now, then pieces with
 * cel_http_stream_write (chunked transfer coding on HTTP/1.1), then
 * cel_http_stream_end, which completes req. */
void cel_http_stream_begin(cel_http_req *r, int status, const char *content_type, const char *extra_headers);
/* CEL_OK, or CEL_ERR_CANCELLED when the client is gone, or CEL_ERR_LIMIT when
 * the client reads too slowly (unsent bytes over max_write_bytes): the
 * connection is then dropped and the handler should stop its work. */
cel_status cel_http_stream_write(cel_http_req *r, const void *data, size_t len);
void cel_http_stream_end(cel_http_req *r);

/* Runs work(ud) on the worker pool, then done(req, ud) on the loop thread
 * (which must complete req; the client may have gone meanwhile: check
 * cel_http_req_aborted). When the pool's queue is full the request is
 * answered 429 with Retry-After, neither function runs, and CEL_ERR_BUSY is
 * returned (req is then completed). */
cel_status cel_http_defer(cel_http_req *r, void (*work)(void *ud), void (*done)(cel_http_req *r, void *ud),
                          void *ud);

/* ------------------------------------------------- generation routes */
/* The generators' endpoints (POST /v1/generate/mind|rephrase|crossthink and the
 * /v1/jobs API, server/routes_gen.c + routes_jobs.c). Lifetime:
 * cel_gen_routes_register before cel_server_run; cel_gen_routes_stop after it
 * returns (stops and joins the jobs, which use the engine); cel_gen_routes_free
 * after cel_server_free. templates_dir NULL: the built-in templates. */
typedef struct cel_gen_routes cel_gen_routes;
cel_status cel_gen_routes_register(cel_server *s, const char *templates_dir, cel_gen_routes **out, cel_error *err);
void cel_gen_routes_stop(cel_gen_routes *g);
void cel_gen_routes_free(cel_gen_routes *g);

#ifdef __cplusplus
}
#endif
#endif
