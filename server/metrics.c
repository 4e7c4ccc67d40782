/*
 * metrics.c - counters and histograms, rendered in Prometheus' text format
 * (version 0.0.4) by GET /metrics. All updates happen on the loop thread, so
 * nothing here needs atomics; engine and worker-pool figures are read through
 * their own thread-safe accessors when rendering.
 */
#include <string.h>

#include "internal.h"

static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,    10,  30};
static const double ttft_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double tpot_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

void cel__srv_hist_init(cel__hist *h, const double *bounds, int n)
{
    memset(h, 0, sizeof *h);
    if (n > CEL__HIST_MAX) n = CEL__HIST_MAX;
    h->n_bounds = n;
    memcpy(h->bounds, bounds, (size_t)n * sizeof *bounds);
}

void cel__srv_hist_observe(cel__hist *h, double v)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

void cel__srv_metrics_init(cel__metrics *m)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i <= CEL__MAX_ROUTES; i++)
        cel__srv_hist_init(&m->routes[i].latency, latency_bounds, N_OF(latency_bounds));
    cel__srv_hist_init(&m->ttft, ttft_bounds, N_OF(ttft_bounds));
    cel__srv_hist_init(&m->tpot, tpot_bounds, N_OF(tpot_bounds));
    cel__srv_hist_init(&m->batch, batch_bounds, N_OF(batch_bounds));
}

void cel__srv_metrics_count(cel__metrics *m, int route, int status, double seconds)
{
    if (route < 0 || route > CEL__MAX_ROUTES) route = CEL__MAX_ROUTES;
    cel__route_stats *rs = &m->routes[route];
    cel__srv_hist_observe(&rs->latency, seconds);
    for (int i = 0; i < CEL__STATUS_SLOTS; i++) {
        if (rs->status[i] == status) {
            rs->count[i]++;
            return;
        }
        if (rs->status[i] == 0) {
            rs->status[i] = (uint16_t)status;
            rs->count[i] = 1;
            return;
        }
    }
    rs->other++;
}

/* Prometheus label values escape backslash, quote and newline. */
static void put_label(cel_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            cel_buf_putc(b, '\\'), cel_buf_putc(b, *v);
        else if (*v == '\n')
            cel_buf_puts(b, "\\n");
        else
            cel_buf_putc(b, *v);
    }
}

static void put_hist(cel_buf *b, const char *name, const char *labels, const cel__hist *h)
{
    uint64_t cum = 0;
    const char *sep = labels && *labels ? "," : "";
    if (!labels) labels = "";
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        cel_buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i],
                       (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    cel_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    if (*labels) {
        cel_buf_printf(b, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, h->sum, name, labels,
                       (unsigned long long)h->count);
    } else {
        cel_buf_printf(b, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
    }
}

static void route_label(cel_buf *b, const cel_server *s, int i)
{
    cel_buf_puts(b, "route=\"");
    if (i < s->n_routes)
        put_label(b, s->routes[i].path);
    else
        cel_buf_puts(b, "other");
    cel_buf_puts(b, "\"");
}

cel_status cel__srv_metrics_render(cel_server *s, cel_buf *b)
{
    const cel__metrics *m = &s->metrics;
    size_t before = b->len;

    cel_buf_puts(b, "# HELP celine_http_requests_total HTTP requests answered, by route and status.\n"
                    "# TYPE celine_http_requests_total counter\n");
    for (int i = 0; i <= CEL__MAX_ROUTES; i++) {
        if (i >= s->n_routes && i != CEL__MAX_ROUTES) continue;
        const cel__route_stats *rs = &m->routes[i];
        for (int k = 0; k < CEL__STATUS_SLOTS && rs->status[k]; k++) {
            cel_buf_puts(b, "celine_http_requests_total{");
            route_label(b, s, i);
            cel_buf_printf(b, ",status=\"%u\"} %llu\n", rs->status[k], (unsigned long long)rs->count[k]);
        }
        if (rs->other) {
            cel_buf_puts(b, "celine_http_requests_total{");
            route_label(b, s, i);
            cel_buf_printf(b, ",status=\"other\"} %llu\n", (unsigned long long)rs->other);
        }
    }
    cel_buf_puts(b, "# HELP celine_http_request_duration_seconds Time from a request's first byte to its "
                    "complete response, by route.\n# TYPE celine_http_request_duration_seconds histogram\n");
    for (int i = 0; i <= CEL__MAX_ROUTES; i++) {
        if (i >= s->n_routes && i != CEL__MAX_ROUTES) continue;
        if (m->routes[i].latency.count == 0) continue;
        cel_buf lb;
        cel_buf_init(&lb);
        route_label(&lb, s, i);
        put_hist(b, "celine_http_request_duration_seconds", lb.data, &m->routes[i].latency);
        cel_buf_free(&lb);
    }

    cel_buf_printf(b,
                   "# HELP celine_http_connections Open client connections.\n"
                   "# TYPE celine_http_connections gauge\nceline_http_connections %u\n"
                   "# HELP celine_http_connections_total Connections accepted.\n"
                   "# TYPE celine_http_connections_total counter\nceline_http_connections_total %llu\n"
                   "# HELP celine_http_connections_rejected_total Connections refused with 503 (connection cap).\n"
                   "# TYPE celine_http_connections_rejected_total counter\n"
                   "celine_http_connections_rejected_total %llu\n"
                   "# HELP celine_http_slow_clients_dropped_total Streaming clients dropped for reading too slowly.\n"
                   "# TYPE celine_http_slow_clients_dropped_total counter\n"
                   "celine_http_slow_clients_dropped_total %llu\n"
                   "# HELP celine_http_timeouts_total Connections timed out while sending a request.\n"
                   "# TYPE celine_http_timeouts_total counter\nceline_http_timeouts_total %llu\n",
                   s->n_conns, (unsigned long long)m->conn_accepted, (unsigned long long)m->conn_rejected,
                   (unsigned long long)m->conn_dropped_slow, (unsigned long long)m->timeouts);

    cel_engine_stats es;
    memset(&es, 0, sizeof es);
    /* the loader thread writes s->engine; it is ours to read only once READY was posted */
    if (s->model_state == CEL__MODEL_READY && s->engine) cel_engine_get_stats(s->engine, &es);
    cel_buf_printf(b,
                   "# HELP celine_queue_depth Work waiting or running, by queue.\n"
                   "# TYPE celine_queue_depth gauge\n"
                   "celine_queue_depth{queue=\"workers\"} %u\n"
                   "celine_queue_depth{queue=\"engine\"} %d\n"
                   "# HELP celine_queue_rejections_total Requests answered 429 because a queue was full.\n"
                   "# TYPE celine_queue_rejections_total counter\nceline_queue_rejections_total %llu\n",
                   cel__srv_workq_active(&s->wq), es.queued, (unsigned long long)m->busy_rejections);
    cel_buf_printf(b,
                   "# HELP celine_model_ready 1 when a model is loaded and generation is available.\n"
                   "# TYPE celine_model_ready gauge\nceline_model_ready %d\n"
                   "# HELP celine_generation_requests_total Generation requests submitted to the engine.\n"
                   "# TYPE celine_generation_requests_total counter\nceline_generation_requests_total %llu\n"
                   "# HELP celine_generation_cancelled_total Generation requests cancelled (client gone, "
                   "shutdown).\n# TYPE celine_generation_cancelled_total counter\n"
                   "celine_generation_cancelled_total %llu\n"
                   "# HELP celine_generations_in_flight Generation requests in the engine.\n"
                   "# TYPE celine_generations_in_flight gauge\nceline_generations_in_flight %u\n"
                   "# HELP celine_prompt_tokens_total Prompt tokens of generation requests.\n"
                   "# TYPE celine_prompt_tokens_total counter\nceline_prompt_tokens_total %llu\n"
                   "# HELP celine_generated_tokens_total Tokens generated.\n"
                   "# TYPE celine_generated_tokens_total counter\nceline_generated_tokens_total %llu\n",
                   s->model_state == CEL__MODEL_READY, (unsigned long long)m->gen_requests,
                   (unsigned long long)m->cancelled_requests, s->n_gens, (unsigned long long)m->prompt_tokens,
                   (unsigned long long)m->gen_tokens);
    cel_buf_printf(b,
                   "# HELP celine_engine_steps_total Engine scheduling steps (forward passes).\n"
                   "# TYPE celine_engine_steps_total counter\nceline_engine_steps_total %llu\n"
                   "# HELP celine_engine_batch_sequences Sequences in the engine's running batch.\n"
                   "# TYPE celine_engine_batch_sequences gauge\nceline_engine_batch_sequences %d\n"
                   "# HELP celine_engine_batch_tokens Tokens in the engine's last step.\n"
                   "# TYPE celine_engine_batch_tokens gauge\nceline_engine_batch_tokens %d\n"
                   "# HELP celine_kv_blocks_used KV-cache blocks in use.\n"
                   "# TYPE celine_kv_blocks_used gauge\nceline_kv_blocks_used %d\n"
                   "# HELP celine_kv_blocks_total KV-cache blocks in the pool.\n"
                   "# TYPE celine_kv_blocks_total gauge\nceline_kv_blocks_total %d\n"
                   "# HELP celine_prefix_cache_hits_total Requests that reused cached prompt blocks.\n"
                   "# TYPE celine_prefix_cache_hits_total counter\nceline_prefix_cache_hits_total %llu\n"
                   "# HELP celine_prefix_cache_tokens_total Prompt tokens served from the prefix cache.\n"
                   "# TYPE celine_prefix_cache_tokens_total counter\nceline_prefix_cache_tokens_total %llu\n",
                   (unsigned long long)es.steps, es.running, es.last_batch_tokens, es.kv_blocks_used,
                   es.kv_blocks_total, (unsigned long long)es.prefix_hits, (unsigned long long)es.cached_tokens);

    cel_buf_puts(b, "# HELP celine_time_to_first_token_seconds From a generation request's arrival to its "
                    "first token.\n# TYPE celine_time_to_first_token_seconds histogram\n");
    put_hist(b, "celine_time_to_first_token_seconds", NULL, &m->ttft);
    cel_buf_puts(b, "# HELP celine_time_per_output_token_seconds Time between consecutive tokens of a sample.\n"
                    "# TYPE celine_time_per_output_token_seconds histogram\n");
    put_hist(b, "celine_time_per_output_token_seconds", NULL, &m->tpot);
    cel_buf_printf(b, "# HELP celine_reward_items_total Reward items graded.\n"
                      "# TYPE celine_reward_items_total counter\nceline_reward_items_total %llu\n",
                   (unsigned long long)m->items_graded);
    cel_buf_puts(b, "# HELP celine_reward_batch_items Items per reward request.\n"
                    "# TYPE celine_reward_batch_items histogram\n");
    put_hist(b, "celine_reward_batch_items", NULL, &m->batch);
    cel_buf_printf(b, "# HELP celine_resident_memory_bytes Resident set size of the server process.\n"
                      "# TYPE celine_resident_memory_bytes gauge\nceline_resident_memory_bytes %zu\n",
                   cel_current_rss_bytes());
    /* cel_buf_* only fail on allocation; one check at the end is enough */
    if (b->data == NULL || b->len == before) return CEL_ERR_NOMEM;
    return CEL_OK;
}
