/*
 * routes_jobs.c - the server's corpus-jobs API:
 *
 *   POST   /v1/jobs        start a job: the body is a job spec (`celine job run`'s keys as
 *                          JSON); paths are relative to the server's --data-dir and must stay
 *                          inside it. 201 {"id", "state", "output"}.
 *   GET    /v1/jobs        every job this server ran: [{id, state, ...}]
 *   GET    /v1/jobs/{id}   state (running | done | stopped | failed), progress, result, error
 *   DELETE /v1/jobs/{id}   cancel: the job stops at its next document boundary after a
 *                          checkpoint, keeping what is done (POSTing the same spec again
 *                          continues it, as `celine job run` would)
 *
 * Each job runs on its own thread (they run for hours; the worker pool is for
 * short work); generation goes to the server's model (backend "local") or to
 * the servers the spec names. A job's thread publishes progress under the
 * registry's mutex; the loop thread only reads it. At shutdown the jobs are
 * cancelled and joined before the engine goes away (cel__jobs_stop).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gen_internal.h"

enum { MAX_RUNNING = 4, MAX_KEPT = 256 };

typedef enum { J_RUNNING = 0, J_DONE, J_STOPPED, J_FAILED } jstate;
static const char *const jstate_names[] = {"running", "done", "stopped", "failed"};

typedef struct sjob {
    cel__jobs *reg;
    uint64_t num;
    char id[32];
    cel_job_spec *spec;
    char out_dir[PATH_MAX];
    cel_engine *engine;
    pthread_t thread;
    bool joined;
    atomic_int cancel;
    /* guarded by reg->mu */
    jstate state;
    cel_buf progress; /* last progress JSON */
    cel_buf result;   /* result JSON when finished */
    cel_error err;
    double started;
    struct sjob *next;
} sjob;

struct cel__jobs {
    cel_server *s;
    char *templates_dir;
    pthread_mutex_t mu;
    sjob *head;          /* newest first */
    uint64_t next_num;
    size_t n_running, n_kept;
};

/* ---------------------------------------------------------------- paths */

/* The job's path policy: relative paths inside the server's data folder (as
 * cel_server_data_path), outputs whose parent is inside it, and absolute
 * paths found by expanding an input folder or glob resolved from it. */
cel_status cel__srv_gen_resolve(void *ud, const char *in, bool for_output, char *out, size_t cap, cel_error *err)
{
    cel_server *s = ud;
    if (in[0] == '/') {
        char root[PATH_MAX], real[PATH_MAX];
        CEL_TRY(cel_server_data_path(s, ".", root, sizeof root, err));
        if (!realpath(in, real)) return cel_error_set(err, CEL_ERR_NOT_FOUND, "'%s': %s", in, strerror(errno));
        size_t n = strlen(root);
        if (strncmp(real, root, n) != 0 || (real[n] != '/' && real[n] != 0))
            return cel_error_set(err, CEL_ERR_INVALID, "'%s' resolves outside the data folder", in);
        if (strlen(real) >= cap) return cel_error_set(err, CEL_ERR_LIMIT, "'%s': path too long", in);
        memcpy(out, real, strlen(real) + 1);
        return CEL_OK;
    }
    if (!for_output) return cel_server_data_path(s, in, out, cap, err);
    /* an output folder may not exist yet: its parent must */
    char parent[PATH_MAX];
    const char *slash = strrchr(in, '/');
    const char *base = slash ? slash + 1 : in;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return cel_error_set(err, CEL_ERR_INVALID, "output '%s' must end in a folder name", in);
    snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - in) : 1, slash ? in : ".");
    char rp[PATH_MAX];
    CEL_TRY(cel_server_data_path(s, parent, rp, sizeof rp, err));
    if ((size_t)snprintf(out, cap, "%s/%s", rp, base) >= cap) return cel_error_set(err, CEL_ERR_LIMIT, "'%s': path too long", in);
    return CEL_OK;
}

/* --------------------------------------------------------------- threads */

static void on_progress(void *ud, const cel_job_progress *p)
{
    sjob *j = ud;
    cel_buf b;
    cel_buf_init(&b);
    if (cel_job_progress_json(p, &b) != CEL_OK) {
        cel_buf_free(&b);
        return;
    }
    pthread_mutex_lock(&j->reg->mu);
    cel_buf_free(&j->progress);
    j->progress = b;
    pthread_mutex_unlock(&j->reg->mu);
}

static bool is_cancelled(void *ud) { return atomic_load(&((sjob *)ud)->cancel) != 0; }

static void *job_main(void *ud)
{
    sjob *j = ud;
    cel_job_env env = {j->reg->templates_dir, j->engine, cel__srv_gen_resolve, j->reg->s, *cel_server_logger(j->reg->s)};
    cel_job_hooks h = {on_progress, 2.0, is_cancelled, j};
    cel_job_result res;
    cel_error err;
    cel_error_clear(&err);
    cel_status st = cel_job_run_spec(j->spec, &env, &h, &res, &err);
    cel_buf b;
    cel_buf_init(&b);
    if (!st) cel_job_result_json(&res, &b);
    pthread_mutex_lock(&j->reg->mu);
    j->state = st ? J_FAILED : res.done ? J_DONE : J_STOPPED;
    j->err = err;
    j->result = b;
    j->reg->n_running--;
    pthread_mutex_unlock(&j->reg->mu);
    cel_log(cel_server_logger(j->reg->s), st ? CEL_LOG_WARN : CEL_LOG_INFO, "jobs: %s %s%s%s", j->id,
            jstate_names[j->state], st ? ": " : "", st ? err.msg : "");
    return NULL;
}

static void sjob_free(sjob *j)
{
    cel_job_spec_free(j->spec);
    cel_buf_free(&j->progress);
    cel_buf_free(&j->result);
    free(j);
}

/* --------------------------------------------------------------- routes */

static json_t *job_json(sjob *j) /* under mu */
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string("job"));
    json_object_set_new(o, "state", json_string(j->state == J_RUNNING && atomic_load(&j->cancel) ? "stopping"
                                                                                                 : jstate_names[j->state]));
    json_object_set_new(o, "kind", json_string(cel_job_spec_str(j->spec, "kind")));
    json_object_set_new(o, "output", json_string(cel_job_spec_str(j->spec, "output")));
    json_object_set_new(o, "elapsed_s", json_real(cel_now_sec() - j->started));
    json_t *p = j->progress.len ? json_loads(j->progress.data, 0, NULL) : NULL;
    json_object_set_new(o, "progress", p ? p : json_null());
    if (j->result.len) {
        json_t *r = json_loads(j->result.data, 0, NULL);
        if (r) json_object_del(r, "dir"); /* server paths stay private */
        json_object_set_new(o, "result", r ? r : json_null());
    }
    if (j->state == J_FAILED) json_object_set_new(o, "error", json_string(j->err.msg));
    return o;
}

static void respond_json(cel_http_req *r, int status, json_t *o)
{
    char *js = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!js) {
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory");
        return;
    }
    cel_http_respond(r, status, "application/json", js, strlen(js), NULL);
    free(js);
}

static sjob *find(cel__jobs *reg, const char *id)
{
    for (sjob *j = reg->head; j; j = j->next)
        if (strcmp(j->id, id) == 0) return j;
    return NULL;
}

/* Forgets the oldest finished jobs past MAX_KEPT (under mu; joins them). */
static void trim(cel__jobs *reg)
{
    sjob **pp = &reg->head;
    size_t seen = 0;
    while (*pp) {
        sjob *j = *pp;
        if (++seen > MAX_KEPT && j->state != J_RUNNING) {
            *pp = j->next;
            if (!j->joined) pthread_join(j->thread, NULL);
            sjob_free(j);
            reg->n_kept--;
            continue;
        }
        pp = &j->next;
    }
}

static void route_post(cel_http_req *r, void *ud)
{
    cel__jobs *reg = ud;
    size_t len;
    const char *body = cel_http_req_body(r, &len);
    cel_error err;
    cel_error_clear(&err);
    char root[PATH_MAX];
    if (cel_server_data_path(reg->s, ".", root, sizeof root, &err)) {
        cel_http_respond_error(r, 400, NULL, "no_data_dir", "jobs read and write files: start the server with "
                                                            "--data-dir DIR");
        return;
    }
    sjob *j = calloc(1, sizeof *j);
    if (!j) {
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory");
        return;
    }
    j->reg = reg;
    atomic_init(&j->cancel, 0);
    int status = 400;
    cel_status st = cel_job_spec_create(&j->spec, &err);
    if (!st) st = cel_job_spec_merge_json(j->spec, body, len, ~0u, "request", &err);
    static const char *const refused[] = {"model", "threads", "ctx"};
    for (size_t i = 0; !st && i < sizeof refused / sizeof refused[0]; i++)
        if (cel_job_spec_has(j->spec, refused[i]))
            st = cel_error_set(&err, CEL_ERR_INVALID, "\"%s\" cannot be set in a job request (backend local uses the "
                                                      "server's model)", refused[i]);
    if (!st) st = cel_job_spec_validate(j->spec, &err);
    if (!st && !cel_job_spec_str(j->spec, "output"))
        st = cel_error_set(&err, CEL_ERR_INVALID, "the job needs \"output\": a folder inside the data folder");
    const char *in[1];
    if (!st && cel_job_spec_list(j->spec, "input", in, 1) == 0)
        st = cel_error_set(&err, CEL_ERR_INVALID, "the job needs \"input\": files, folders or globs inside the data folder");
    cel_job_env penv = {NULL, NULL, cel__srv_gen_resolve, reg->s, {0}};
    if (!st) st = cel_job_spec_check_paths(j->spec, &penv, &err);
    if (!st) st = cel_job_spec_out_dir(j->spec, &penv, j->out_dir, sizeof j->out_dir, &err);
    bool local = false;
    if (!st && (st = cel__srv_gen_backend_check(reg->s, j->spec, &local, &err)) != CEL_OK) status = 403;
    if (!st && local) {
        j->engine = cel_server_engine(reg->s);
        if (!j->engine) {
            status = 503;
            st = cel_error_set(&err, CEL_ERR_BUSY, "no model is loaded: start the server with --model, or name "
                                                   "OpenAI-compatible servers in \"backend\"");
        }
    }
    pthread_mutex_lock(&reg->mu);
    if (!st)
        for (sjob *o = reg->head; o; o = o->next)
            if (o->state == J_RUNNING && strcmp(o->out_dir, j->out_dir) == 0) {
                status = 409;
                st = cel_error_set(&err, CEL_ERR_BUSY, "%s is already running into that output folder", o->id);
                break;
            }
    if (!st && reg->n_running >= MAX_RUNNING) {
        status = 429;
        st = cel_error_set(&err, CEL_ERR_BUSY, "%d jobs are running: try again when one has finished", MAX_RUNNING);
    }
    if (!st) {
        j->num = ++reg->next_num;
        snprintf(j->id, sizeof j->id, "job-%06llu", (unsigned long long)j->num);
        j->started = cel_now_sec();
        j->state = J_RUNNING;
        if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
            status = 500;
            st = cel_error_set(&err, CEL_ERR_INTERNAL, "cannot start a thread for the job");
        } else {
            reg->n_running++;
            reg->n_kept++;
            j->next = reg->head;
            reg->head = j;
            trim(reg);
        }
    }
    json_t *o = st ? NULL : job_json(j);
    pthread_mutex_unlock(&reg->mu);
    if (st) {
        const char *code = status == 409 ? "conflict" : status == 429 ? "busy" : status == 503 ? "no_model"
                           : err.code == CEL_ERR_NOT_FOUND ? "file_not_found" : "invalid_request";
        if (err.code == CEL_ERR_NOT_FOUND && status == 400) status = 404;
        cel_http_respond_error(r, status, NULL, code, "%s", err.msg);
        sjob_free(j);
        return;
    }
    cel_log(cel_server_logger(reg->s), CEL_LOG_INFO, "jobs: %s started (%s into %s)", j->id,
            cel_job_spec_str(j->spec, "kind"), cel_job_spec_str(j->spec, "output"));
    respond_json(r, 201, o);
}

static void route_list(cel_http_req *r, void *ud)
{
    cel__jobs *reg = ud;
    json_t *arr = json_array();
    pthread_mutex_lock(&reg->mu);
    for (sjob *j = reg->head; j; j = j->next) json_array_append_new(arr, job_json(j));
    pthread_mutex_unlock(&reg->mu);
    json_t *o = json_object();
    json_object_set_new(o, "object", json_string("list"));
    json_object_set_new(o, "data", arr);
    respond_json(r, 200, o);
}

static void route_one(cel_http_req *r, void *ud)
{
    cel__jobs *reg = ud;
    const char *id = cel_http_req_path(r) + strlen("/v1/jobs/");
    bool del = strcmp(cel_http_req_method(r), "DELETE") == 0;
    pthread_mutex_lock(&reg->mu);
    sjob *j = find(reg, id);
    if (!j) {
        pthread_mutex_unlock(&reg->mu);
        cel_http_respond_error(r, 404, NULL, "job_not_found", "no job '%.64s' on this server", id);
        return;
    }
    if (del && j->state == J_RUNNING) atomic_store(&j->cancel, 1);
    json_t *o = job_json(j);
    pthread_mutex_unlock(&reg->mu);
    respond_json(r, del ? 202 : 200, o);
}

/* -------------------------------------------------------------- lifetime */

cel_status cel__jobs_create(cel_server *s, const char *templates_dir, cel__jobs **out, cel_error *err)
{
    *out = NULL;
    cel__jobs *reg = calloc(1, sizeof *reg);
    if (!reg) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    reg->s = s;
    pthread_mutex_init(&reg->mu, NULL);
    if (templates_dir && !(reg->templates_dir = strdup(templates_dir))) {
        cel__jobs_free(reg);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    cel_status st = cel_server_route(s, "POST", "/v1/jobs", 0, route_post, reg, err);
    if (!st) st = cel_server_route(s, "GET", "/v1/jobs", 0, route_list, reg, err);
    if (!st) st = cel_server_route(s, "GET", "/v1/jobs/", CEL_ROUTE_PREFIX, route_one, reg, err);
    if (!st) st = cel_server_route(s, "DELETE", "/v1/jobs/", CEL_ROUTE_PREFIX, route_one, reg, err);
    if (st) {
        cel__jobs_free(reg);
        return st;
    }
    *out = reg;
    return CEL_OK;
}

void cel__jobs_stop(cel__jobs *reg)
{
    if (!reg) return;
    pthread_mutex_lock(&reg->mu);
    for (sjob *j = reg->head; j; j = j->next) atomic_store(&j->cancel, 1);
    pthread_mutex_unlock(&reg->mu);
    /* the threads take mu to publish: join without holding it */
    for (sjob *j = reg->head; j; j = j->next)
        if (!j->joined) {
            pthread_join(j->thread, NULL);
            j->joined = true;
        }
}

void cel__jobs_free(cel__jobs *reg)
{
    if (!reg) return;
    cel__jobs_stop(reg);
    sjob *j = reg->head;
    while (j) {
        sjob *n = j->next;
        sjob_free(j);
        j = n;
    }
    pthread_mutex_destroy(&reg->mu);
    free(reg->templates_dir);
    free(reg);
}
