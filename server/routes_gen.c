/*
 * routes_gen.c - the generators' endpoints on celine's server:
 *
 *   POST /v1/generate/mind | rephrase | crossthink   one-shot generation
 *   POST /v1/jobs, GET /v1/jobs[/{id}], DELETE /v1/jobs/{id}   (routes_jobs.c)
 *
 * A one-shot request carries documents ("documents": [{"id", "text",
 * "quality"}] or "text") and the generation keys of a job spec (seed,
 * styles, chunk_tokens, ... see `celine job run --help`); generation goes to
 * the server's model (backend "local", the default) or to the
 * OpenAI-compatible servers named in "backend". It runs on the worker pool
 * (cel_http_defer) and answers {"records": [...], "dropped": [...],
 * "stats": {...}}: the records `celine mind` and a job would write for these
 * documents. A client that goes away cancels its generation. At most half
 * the CPUs (at least one) run one-shot generations at once, so grading keeps
 * workers; more answer 429.
 *
 * Lifetime: cel_gen_routes_register before cel_server_run,
 * cel_gen_routes_stop after it returns (stops and joins the jobs, which use
 * the engine), cel_gen_routes_free after cel_server_free (deferred work may
 * still be delivered while the server is freed).
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gen_internal.h"

enum { MAX_DOCS = 1000 };

struct cel_gen_routes {
    cel_server *s;
    char *templates_dir;
    atomic_int active; /* one-shot generations running */
    int max_active;    /* they hold pool workers: leave some to grading */
    cel__jobs *jobs;
};

typedef struct oneshot {
    cel_gen_routes *g;
    cel_server *s;
    cel_job_kind kind;
    cel_engine *engine; /* the server's, fetched on the loop thread; NULL: none loaded */
    const char *body;
    size_t len;
    atomic_int cancel;
    int status;
    cel_error err;
    cel_buf out;
    /* the sink collects records (raw JSON) and drops */
    cel_buf records;
    json_t *dropped;
    size_t n_records;
} oneshot;

static cel_status os_record(void *ud, const char *json, size_t len, cel_error *err)
{
    oneshot *o = ud;
    if ((o->n_records && cel_buf_putc(&o->records, ',')) || cel_buf_append(&o->records, json, len))
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    o->n_records++;
    return CEL_OK;
}

static void os_drop(void *ud, cel_gen_drop reason, const char *unit_id, const char *detail)
{
    oneshot *o = ud;
    json_t *d = json_object();
    if (!d) return;
    json_object_set_new(d, "reason", json_string(cel_gen_drop_name(reason)));
    json_object_set_new(d, "id", json_string(unit_id ? unit_id : ""));
    if (detail) json_object_set_new(d, "detail", json_string(detail));
    json_array_append_new(o->dropped, d);
}

/* Reads the documents of a request body into docs[] (pointers into body). */
static cel_status read_docs(json_t *body, cel_gen_doc *docs, char (*ids)[32], char (*qual)[64], size_t *n,
                            cel_error *err)
{
    *n = 0;
    json_t *text = json_object_get(body, "text"), *arr = json_object_get(body, "documents");
    if (text && arr) return cel_error_set(err, CEL_ERR_INVALID, "give \"documents\" or \"text\", not both");
    if (json_is_string(text)) {
        docs[0] = (cel_gen_doc){"text", json_string_value(text), json_string_length(text), NULL};
        *n = 1;
        return CEL_OK;
    }
    if (text) return cel_error_set(err, CEL_ERR_INVALID, "\"text\" must be a string");
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return cel_error_set(err, CEL_ERR_INVALID, "give \"documents\": [{\"id\": ..., \"text\": ...}] or \"text\"");
    if (json_array_size(arr) > MAX_DOCS)
        return cel_error_set(err, CEL_ERR_LIMIT, "at most %d documents per request (use POST /v1/jobs for corpora)", MAX_DOCS);
    size_t i;
    json_t *d;
    json_array_foreach(arr, i, d)
    {
        json_t *t = json_object_get(d, "text"), *id = json_object_get(d, "id"), *q = json_object_get(d, "quality");
        if (!json_is_object(d) || !json_is_string(t))
            return cel_error_set(err, CEL_ERR_INVALID, "documents[%zu]: needs a string \"text\"", i);
        docs[i].text = json_string_value(t);
        docs[i].len = json_string_length(t);
        if (json_is_string(id)) docs[i].id = json_string_value(id);
        else if (json_is_integer(id)) {
            snprintf(ids[i], 32, "%lld", (long long)json_integer_value(id));
            docs[i].id = ids[i];
        } else if (!id || json_is_null(id)) {
            snprintf(ids[i], 32, "%zu", i);
            docs[i].id = ids[i];
        } else
            return cel_error_set(err, CEL_ERR_INVALID, "documents[%zu]: \"id\" must be a string or an integer", i);
        if (json_is_string(q)) docs[i].quality = json_string_value(q);
        else if (json_is_number(q)) {
            snprintf(qual[i], 64, "%.17g", json_number_value(q));
            docs[i].quality = qual[i];
        } else if (q && !json_is_null(q))
            return cel_error_set(err, CEL_ERR_INVALID, "documents[%zu]: \"quality\" must be a number or a string", i);
    }
    *n = json_array_size(arr);
    return CEL_OK;
}

/* Worker thread: parse, generate, serialise. Sets o->status. */
static void oneshot_work(void *ud)
{
    oneshot *o = ud;
    o->status = 400;
    json_t *body = NULL;
    cel_job_spec *spec = NULL;
    cel_job_gen *gen = NULL;
    cel_gen_pipeline *p = NULL;
    cel_gen_doc *docs = calloc(MAX_DOCS, sizeof *docs);
    char (*ids)[32] = calloc(MAX_DOCS, sizeof *ids);
    char (*qual)[64] = calloc(MAX_DOCS, sizeof *qual);
    size_t n = 0;
    if (!docs || !ids || !qual) {
        o->status = 500;
        cel_error_set(&o->err, CEL_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (cel__srv_json_parse(o->body, o->len, &body, &o->err)) goto done;
    if (!json_is_object(body)) {
        cel_error_set(&o->err, CEL_ERR_INVALID, "the body must be a JSON object");
        goto done;
    }
    if (read_docs(body, docs, ids, qual, &n, &o->err)) goto done;
    /* everything else is job-spec keys: generation and backend ones */
    json_t *keys = json_copy(body);
    json_object_del(keys, "documents");
    json_object_del(keys, "text");
    static const char *const refused[] = {"model", "threads", "ctx", "kind"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (json_object_get(keys, refused[i])) {
            cel_error_set(&o->err, CEL_ERR_INVALID, "\"%s\" cannot be set in a request%s", refused[i],
                          strcmp(refused[i], "kind") == 0 ? " (the path names it)" : " (the server's model is used)");
            json_decref(keys);
            goto done;
        }
    char *ks = json_dumps(keys, JSON_COMPACT);
    json_decref(keys);
    cel_status st = ks ? cel_job_spec_create(&spec, &o->err) : cel_error_set(&o->err, CEL_ERR_NOMEM, "out of memory");
    if (!st) st = cel_job_spec_merge_json(spec, ks, strlen(ks), CEL_JOBKEY_GEN | CEL_JOBKEY_BACKEND, "request", &o->err);
    free(ks);
    if (!st) st = cel_job_spec_set(spec, "kind", cel_job_kind_name(o->kind), &o->err);
    if (st) goto done;
    bool local;
    if (cel__srv_gen_backend_check(o->s, spec, &local, &o->err)) {
        o->status = 403;
        goto done;
    }
    if (local && !o->engine) {
        o->status = 503;
        cel_error_set(&o->err, CEL_ERR_BUSY, "no model is loaded: start the server with --model, or name "
                                             "OpenAI-compatible servers in \"backend\"");
        goto done;
    }
    cel_job_env env = {o->g->templates_dir, local ? o->engine : NULL, cel__srv_gen_resolve, o->s,
                       *cel_server_logger(o->s)};
    if (cel_job_gen_open(spec, &env, &gen, &o->err)) goto done;
    cel_gen_sink sink = {os_record, os_drop, o};
    if (cel_job_gen_pipeline(gen, &sink, &p, &o->err)) goto done;
    o->status = 500;
    for (size_t i = 0; i < n && !atomic_load(&o->cancel); i++)
        if (cel_gen_pipeline_push(p, &docs[i], &o->err)) goto done;
    while (cel_gen_pipeline_inflight(p) > 0 && !atomic_load(&o->cancel)) {
        if (cel_gen_backend_pending(cel_job_gen_backend(gen)) == 0) {
            if (cel_gen_pipeline_drain(p, &o->err)) goto done;
        } else if (cel_gen_pipeline_poll(p, 100, &o->err))
            goto done;
    }
    if (atomic_load(&o->cancel)) {
        o->status = 499;
        cel_error_set(&o->err, CEL_ERR_CANCELLED, "the client went away");
        goto done;
    }
    cel_buf stats;
    cel_buf_init(&stats);
    cel_gen_stats_json(cel_gen_pipeline_stats(p), &stats);
    char *dropped = json_dumps(o->dropped, JSON_COMPACT);
    if (!dropped || cel_buf_printf(&o->out, "{\"object\":\"generation\",\"kind\":\"%s\",\"model\":\"%s\",\"records\":[",
                                   cel_job_kind_name(o->kind), cel_job_gen_backend(gen)->model_name) ||
        cel_buf_append(&o->out, o->records.data ? o->records.data : "", o->records.len) ||
        cel_buf_printf(&o->out, "],\"dropped\":%s,\"stats\":%s}", dropped, stats.data ? stats.data : "{}")) {
        cel_error_set(&o->err, CEL_ERR_NOMEM, "out of memory");
    } else {
        o->status = 200;
    }
    free(dropped);
    cel_buf_free(&stats);
done:
    cel_gen_pipeline_free(p);
    cel_job_gen_free(gen);
    cel_job_spec_free(spec);
    json_decref(body);
    free(docs);
    free(ids);
    free(qual);
    atomic_fetch_sub(&o->g->active, 1);
}

static void oneshot_free(oneshot *o)
{
    cel_buf_free(&o->out);
    cel_buf_free(&o->records);
    json_decref(o->dropped);
    free(o);
}

static void oneshot_abort(void *ud)
{
    oneshot *o = ud;
    atomic_store(&o->cancel, 1);
}

/* Loop thread: answer and free. */
static void oneshot_done(cel_http_req *r, void *ud)
{
    oneshot *o = ud;
    if (o->status == 200)
        cel_http_respond(r, 200, "application/json", o->out.data, o->out.len, NULL);
    else {
        int status = o->status == 499 ? 400 : o->status;
        if (o->err.code == CEL_ERR_NOT_FOUND && status == 400) status = 404;
        cel_http_respond_error(r, status, NULL, status >= 500 ? "generation_failed" : "invalid_request", "%s",
                               o->err.msg[0] ? o->err.msg : "generation failed");
    }
    oneshot_free(o);
}

static void route_generate(cel_http_req *r, void *ud)
{
    cel_gen_routes *g = ud;
    const char *path = cel_http_req_path(r);
    const char *name = strrchr(path, '/') + 1;
    cel_job_kind kind;
    cel_error err;
    if (cel_job_kind_from_name(name, &kind, &err)) {
        cel_http_respond_error(r, 404, NULL, "not_found", "%s", err.msg);
        return;
    }
    if (atomic_fetch_add(&g->active, 1) >= g->max_active) {
        atomic_fetch_sub(&g->active, 1);
        static const char busy[] = "{\"error\":{\"message\":\"too many generation requests in flight\","
                                   "\"type\":\"rate_limit_error\",\"code\":\"busy\"}}";
        cel_http_respond(r, 429, "application/json", busy, sizeof busy - 1, "Retry-After: 1\r\n");
        return;
    }
    oneshot *o = calloc(1, sizeof *o);
    if (!o || !(o->dropped = json_array())) {
        free(o);
        atomic_fetch_sub(&g->active, 1);
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory");
        return;
    }
    o->g = g;
    o->s = cel_http_req_server(r);
    o->kind = kind;
    o->engine = cel_server_engine(o->s);
    o->body = cel_http_req_body(r, &o->len);
    cel_http_req_on_abort(r, oneshot_abort, o);
    if (cel_http_defer(r, oneshot_work, oneshot_done, o) != CEL_OK) { /* answered 429 */
        atomic_fetch_sub(&g->active, 1);
        oneshot_free(o);
    }
}

cel_status cel_gen_routes_register(cel_server *s, const char *templates_dir, cel_gen_routes **out, cel_error *err)
{
    *out = NULL;
    cel_gen_routes *g = calloc(1, sizeof *g);
    if (!g) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    g->s = s;
    atomic_init(&g->active, 0);
    g->max_active = cel_cpu_count() / 2 > 1 ? cel_cpu_count() / 2 : 1;
    if (templates_dir && cel_path_is_dir(templates_dir) && !(g->templates_dir = strdup(templates_dir))) {
        free(g);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    cel_status st = CEL_OK;
    static const char *const paths[] = {"/v1/generate/mind", "/v1/generate/rephrase", "/v1/generate/crossthink"};
    for (size_t i = 0; i < 3 && !st; i++) st = cel_server_route(s, "POST", paths[i], 0, route_generate, g, err);
    if (!st) st = cel__jobs_create(s, g->templates_dir, &g->jobs, err);
    if (st) {
        cel_gen_routes_free(g);
        return st;
    }
    *out = g;
    return CEL_OK;
}

void cel_gen_routes_stop(cel_gen_routes *g)
{
    if (g) cel__jobs_stop(g->jobs);
}

void cel_gen_routes_free(cel_gen_routes *g)
{
    if (!g) return;
    cel__jobs_free(g->jobs);
    free(g->templates_dir);
    free(g);
}

/* ---------------------------------------------------------- remote backends */

/* A request's "backend" list makes the server open connections, so each URL
 * must start with one of the operator's --allow-backends prefixes, and the
 * prefix must end where a URL part ends ("http://h:80" does not admit
 * "http://h:8080"). "local" decides as the job's backend opener does: only a
 * list of exactly "local" (or none) is the server's own engine. */
cel_status cel__srv_gen_backend_check(const cel_server *s, const cel_job_spec *spec, bool *local, cel_error *err)
{
    const char *urls[CEL__SRV_MAX_BACKENDS + 1];
    size_t n = cel_job_spec_list(spec, "backend", urls, CEL__SRV_MAX_BACKENDS + 1);
    *local = n == 0 || (n == 1 && strcmp(urls[0], "local") == 0);
    if (*local) return CEL_OK;
    if (n > CEL__SRV_MAX_BACKENDS)
        return cel_error_set(err, CEL_ERR_INVALID, "at most %d backends may be named", CEL__SRV_MAX_BACKENDS);
    const char *allow = s->cfg.allow_backends;
    for (size_t i = 0; i < n; i++) {
        const char *u = urls[i] ? urls[i] : "";
        bool ok = false;
        for (const char *p = allow; p && *p && !ok;) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            while (l && p[0] == ' ') p++, l--;
            while (l && p[l - 1] == ' ') l--;
            ok = l && strncmp(u, p, l) == 0 && (p[l - 1] == '/' || u[l] == '\0' || u[l] == '/');
            p = e ? e + 1 : p + l;
        }
        if (!ok)
            return cel_error_set(err, CEL_ERR_INVALID,
                                 allow ? "backend '%s' is not among the servers this server may call (--allow-backends)"
                                       : "backend '%s': this server calls no remote backends (start it with "
                                         "--allow-backends URL,... to let requests name them)",
                                 u);
    }
    return CEL_OK;
}
