/*
 * server/internal.h - the server's private structures, shared by its files:
 * http.c (connections, parsing, responses), server.c (lifecycle, routes,
 * dispatch), workq.c (grading/preparation workers), metrics.c (Prometheus),
 * reward.c (/v1/reward, /get_reward), openai.c (generation, tokenization,
 * models) and model.c (background model load, engine events).
 *
 * Everything here is touched only on the loop thread unless a comment says
 * otherwise.
 */
#ifndef CELINE_SERVER_INTERNAL_H
#define CELINE_SERVER_INTERNAL_H

#include <http_parser.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "celine/common.h"
#include "celine/engine.h"
#include "celine/server.h"
#include "celine/verify.h"

#define CEL__MAX_ROUTES 64
#define CEL__READ_BUF (64 * 1024)

/* ----------------------------------------------------------- worker pool */
typedef struct cel__job {
    struct cel__job *next;
    void (*work)(void *ud);                      /* worker thread */
    void (*done)(struct cel__job *job);          /* loop thread; frees the job */
    void *ud;
    cel_http_req *req;                           /* for cel_http_defer jobs */
    void (*req_done)(cel_http_req *r, void *ud);
} cel__job;

typedef struct cel__workq {
    pthread_mutex_t mu;      /* guards the pending queue and counters */
    pthread_cond_t cv;
    cel__job *head, *tail;   /* waiting to run */
    uint32_t n_waiting;
    atomic_uint n_active;    /* waiting + running + done-but-not-delivered */
    uint32_t max;            /* bound on n_active */
    bool stop;
    pthread_mutex_t done_mu; /* guards the done list */
    cel__job *done_head, *done_tail;
    uv_async_t async;        /* wakes the loop when a job is done */
    pthread_t *threads;
    int n_threads;
    bool started;
} cel__workq;

cel_status cel__srv_workq_init(cel__workq *q, uv_loop_t *loop, int n_threads, uint32_t max, cel_error *err);
/* Loop thread. CEL_ERR_BUSY when max jobs are already active. */
cel_status cel__srv_workq_push(cel__workq *q, cel__job *job);
uint32_t cel__srv_workq_active(cel__workq *q);
/* Stops and joins the threads (jobs still waiting are run first so their
 * done callbacks balance), closes the async handle. */
void cel__srv_workq_stop(cel__workq *q);

/* ------------------------------------------------------------- metrics */
#define CEL__HIST_MAX 20
typedef struct cel__hist {
    int n_bounds;
    double bounds[CEL__HIST_MAX];
    uint64_t counts[CEL__HIST_MAX + 1]; /* last: +Inf */
    double sum;
    uint64_t count;
} cel__hist;
void cel__srv_hist_init(cel__hist *h, const double *bounds, int n);
void cel__srv_hist_observe(cel__hist *h, double v);

#define CEL__STATUS_SLOTS 16
typedef struct cel__route_stats {
    uint16_t status[CEL__STATUS_SLOTS];
    uint64_t count[CEL__STATUS_SLOTS];
    uint64_t other; /* statuses past the slots */
    cel__hist latency;
} cel__route_stats;

typedef struct cel__metrics {
    cel__route_stats routes[CEL__MAX_ROUTES + 1]; /* last: unmatched paths */
    uint64_t conn_accepted, conn_rejected, conn_dropped_slow, timeouts;
    uint64_t busy_rejections;
    uint64_t prompt_tokens, gen_tokens, gen_requests, cancelled_requests;
    uint64_t items_graded;
    cel__hist ttft;      /* seconds from request arrival to first token */
    cel__hist tpot;      /* seconds between a sample's tokens */
    cel__hist batch;     /* reward items per request */
} cel__metrics;
void cel__srv_metrics_init(cel__metrics *m);
void cel__srv_metrics_count(cel__metrics *m, int route, int status, double seconds);
/* Appends the Prometheus text exposition of everything to out. */
cel_status cel__srv_metrics_render(cel_server *s, cel_buf *out);

/* ---------------------------------------------------------- connections */
typedef enum cel__phase {
    CEL__PH_NONE = 0, /* waiting for handlers; no timer */
    CEL__PH_FIRST,    /* fresh connection, no byte yet (header timeout) */
    CEL__PH_IDLE,     /* keep-alive, nothing in flight (idle timeout) */
    CEL__PH_HEADER,   /* reading a request's head */
    CEL__PH_BODY,     /* reading its body */
    CEL__PH_WRITE,    /* a write in flight, nothing else to wait for */
    CEL__PH_LINGER,   /* after the last response: drain input until EOF */
} cel__phase;

typedef enum cel__req_state { CEL__RQ_PARSING = 0, CEL__RQ_HANDLER, CEL__RQ_DONE } cel__req_state;

struct cel_http_req {
    cel_server *srv;
    struct cel__conn *conn;   /* NULL once the client is gone */
    struct cel_http_req *next;
    cel__req_state state;
    int method;               /* enum http_method */
    cel_buf url;              /* raw request target; split into path\0query */
    const char *path, *query;
    cel_buf hdrs;             /* "name\0value\0" pairs */
    uint32_t n_hdrs;
    bool last_was_value;
    cel_buf body;
    cel_buf out;              /* response bytes not yet handed to the socket */
    size_t out_off;
    uint64_t t_start;
    int route;                /* metrics index */
    int status;
    bool keep_alive;          /* this response may leave the connection open */
    bool http10;
    bool streaming, chunked, head_sent;
    bool aborted;
    bool expect_continue;
    bool head_only;           /* HEAD: the GET route answers, the body is not sent */
    void (*on_abort)(void *ud);
    void *abort_ud;
};

typedef struct cel__conn {
    uv_tcp_t tcp;             /* first member: handle <-> conn casts */
    uv_timer_t timer;
    uv_shutdown_t shut;
    uv_write_t wreq;
    cel_server *srv;
    struct cel__conn *prev, *next;
    http_parser parser;
    cel_http_req *head, *tail; /* pipeline: responses go out in this order */
    uint32_t n_reqs;
    cel_http_req *cur;        /* being parsed */
    size_t hdr_bytes;
    int err_status;           /* a limit hit inside a parser callback */
    const char *err_msg;
    cel_buf in;               /* input not parsed yet (parsing paused) */
    size_t in_off;
    char *wbuf;               /* in-flight write */
    size_t wlen;
    size_t queued;            /* bytes in requests' out buffers */
    cel__phase phase;
    uint8_t handles_open;     /* tcp + timer */
    bool reading, writing, in_pump, closing, discard, close_after, shut_started, virt;
    bool rejected;            /* over the connection cap: 503 then close */
    cel_buf *sink;            /* virtual connections (tests, fuzzing): output goes here */
} cel__conn;

/* ------------------------------------------------------------------ routes */
typedef struct cel__route {
    char method[12];
    char path[128];
    size_t path_len;
    unsigned flags;
    cel_route_fn fn;
    void *ud;
} cel__route;

/* ----------------------------------------------------- posted callbacks */
typedef struct cel__post {
    struct cel__post *next;
    void (*fn)(void *ud);
    void *ud;
} cel__post;

/* ------------------------------------------------------------- the model */
typedef enum cel__model_state { CEL__MODEL_NONE = 0, CEL__MODEL_LOADING, CEL__MODEL_READY, CEL__MODEL_FAILED } cel__model_state;

typedef struct cel__gen cel__gen;

/* ------------------------------------------------------------------ server */
struct cel_server {
    cel_server_config cfg;    /* strings point into `strings` */
    char *strings;
    uv_loop_t loop;
    bool loop_ok;
    uv_tcp_t listener;
    bool listening;
    uv_signal_t sig_int, sig_term;
    bool signals;
    uv_async_t post_async;
    pthread_mutex_t post_mu;
    cel__post *post_head, *post_tail;
    bool post_closed;          /* guarded by post_mu */
    uv_timer_t grace_timer;
    bool running, stopping, finished, force;
    cel__workq wq;
    cel__route routes[CEL__MAX_ROUTES];
    int n_routes;
    cel__conn *conns;
    uint32_t n_conns, n_lingering_rejects;
    cel__metrics metrics;
    int port;
    char url[96];
    char *data_dir_real;       /* realpath of data_dir */
    /* verifiers: one per required-format flag set, created on demand */
    pthread_mutex_t ver_mu;
    cel_verifier *verifiers[8];
    uint32_t default_format;
    /* model and engine */
    cel__model_state model_state; /* loop thread; the loader posts its result */
    uv_thread_t loader;
    bool loader_started;
    cel_error model_err;
    cel_model *model;
    cel_engine *engine;
    cel_chat_kind chat_kind;
    int32_t n_ctx;             /* tokens per sequence the engine allows */
    char *model_name;
    cel__gen *gens;            /* in-flight generation requests */
    uint32_t n_gens;
    uint64_t id_counter;
    char read_buf[CEL__READ_BUF];
};

/* http.c */
cel_status cel__srv_conn_accept(cel_server *s);
/* A connection with no socket whose output is appended to sink (tests, fuzzing). */
cel__conn *cel__srv_conn_virtual(cel_server *s, cel_buf *sink);
void cel__srv_conn_feed(cel__conn *c, const char *data, size_t len);
/* Closes (if still open) and frees a virtual connection. */
void cel__srv_conn_virtual_free(cel__conn *c);
/* Client gone / server closing: aborts pending requests, closes the handles. */
void cel__srv_conn_close(cel__conn *c);
/* During shutdown: closes the connection now if nothing is in flight,
 * otherwise lets in-flight responses finish and then closes. */
void cel__srv_conn_drain(cel__conn *c);
const char *cel__srv_status_reason(int status);
/* The OpenAI error body {"error": {...}} for status/type/code/message into out. */
cel_status cel__srv_error_json(cel_buf *out, int status, const char *type, const char *code, const char *msg);

/* server.c */
void cel__srv_dispatch(cel_http_req *r);
#define CEL__SRV_MAX_BACKENDS 64 /* "backend" URLs one request or job may name (the job opener's cap) */
void cel__srv_check_finished(cel_server *s);
cel_status cel__srv_post_node(cel_server *s, cel__post *node);
/* The verifier for a required format (thread-safe; created on first use). */
cel_status cel__srv_verifier_get(cel_server *s, uint32_t format, const cel_verifier **out, cel_error *err);
/* Built-in routes. */
void cel__srv_route_health(cel_http_req *r, void *ud);
void cel__srv_route_metrics(cel_http_req *r, void *ud);
void cel__srv_route_reward(cel_http_req *r, void *ud);
void cel__srv_route_get_reward(cel_http_req *r, void *ud);
void cel__srv_route_models(cel_http_req *r, void *ud);
void cel__srv_route_completions(cel_http_req *r, void *ud);
void cel__srv_route_chat(cel_http_req *r, void *ud);
void cel__srv_route_tokenize(cel_http_req *r, void *ud);
void cel__srv_route_detokenize(cel_http_req *r, void *ud);

/* model.c */
void cel__srv_model_start_load(cel_server *s);
void cel__srv_model_join(cel_server *s);
/* Cancels every in-flight generation (shutdown grace over). */
void cel__srv_gen_cancel_all(cel_server *s);
/* Frees the engine (in-flight requests end with CANCELLED events, posted). */
void cel__srv_engine_shutdown(cel_server *s);
void cel__srv_model_free(cel_server *s);

/* json.c */
/* Parses a request body; CEL_ERR_INVALID with line/column on bad JSON. */
cel_status cel__srv_json_parse(const char *body, size_t len, json_t **out, cel_error *err);
/* A JSON string from bytes that may not be valid UTF-8 (invalid bytes
 * become U+FFFD); NULL only when out of memory. */
json_t *cel__srv_json_str(const char *s, size_t n);
/* Appends the compact serialisation of v to out. */
cel_status cel__srv_json_dump(const json_t *v, cel_buf *out);
bool cel__srv_utf8_valid(const char *s, size_t n);
/* Typed getters that fail with a message naming the key. A missing key (or
 * JSON null) leaves *out unchanged and succeeds. */
cel_status cel__srv_json_get_bool(const json_t *o, const char *key, bool *out, cel_error *err);
cel_status cel__srv_json_get_int(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out, cel_error *err);
cel_status cel__srv_json_get_num(const json_t *o, const char *key, double lo, double hi, double *out, cel_error *err);
cel_status cel__srv_json_get_str(const json_t *o, const char *key, const char **out, cel_error *err);

/* reward.c: pure helpers, exposed for unit tests */
/* Grades a /v1/reward body; fills out with the JSON answer or returns an
 * error (status_out = HTTP status to answer with) with err set. */
cel_status cel__srv_reward_run(cel_server *s, const char *body, size_t len, cel_buf *out, int *status_out,
                           size_t *n_items, cel_error *err);
cel_status cel__srv_get_reward_run(cel_server *s, const char *body, size_t len, cel_buf *out, int *status_out,
                               size_t *n_items, cel_error *err);

#endif
