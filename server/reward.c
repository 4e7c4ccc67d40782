/*
 * reward.c - POST /v1/reward (batches of `celine reward` items, with group
 * advantages) and POST /get_reward (OpenRLHF's remote reward contract).
 *
 * Both parse, grade and serialise on a worker thread (cel_http_defer); the
 * loop thread only hands the body over and sends the answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct reward_job {
    cel_server *s;
    const char *body; /* the request's body, alive until the job's done callback */
    size_t len;
    bool openrlhf;
    cel_buf out;
    int status;
    size_t n_items;
    cel_error err;
} reward_job;

/* Item fields reference memory inside the parsed JSON (kept alive by the caller). */
typedef struct item_store {
    cel_verify_item *items;
    const char **choices; /* all items' choice pointers, back to back */
    char (*numbuf)[32];   /* numbers given as reference / group / id, as text */
    size_t n;
} item_store;

static void store_free(item_store *st)
{
    free(st->items);
    free(st->choices);
    free(st->numbuf);
    memset(st, 0, sizeof *st);
}

/* A string field that may also be given as a number (references like 42). */
static cel_status text_field(json_t *o, const char *key, size_t idx, char *numbuf, const char **out, bool required,
                             cel_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return cel_error_set(err, CEL_ERR_INVALID, "items[%zu]: '%s' is required", idx, key);
        *out = NULL;
        return CEL_OK;
    }
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return CEL_OK;
    }
    if (json_is_integer(v)) {
        snprintf(numbuf, 32, "%lld", (long long)json_integer_value(v));
        *out = numbuf;
        return CEL_OK;
    }
    if (json_is_real(v)) {
        snprintf(numbuf, 32, "%.17g", json_real_value(v));
        *out = numbuf;
        return CEL_OK;
    }
    return cel_error_set(err, CEL_ERR_INVALID, "items[%zu]: '%s' must be a string or a number", idx, key);
}

/* Fills st from a JSON array of item objects. */
static cel_status items_from_json(json_t *arr, item_store *st, cel_error *err)
{
    size_t n = json_array_size(arr);
    memset(st, 0, sizeof *st);
    if (n == 0) return cel_error_set(err, CEL_ERR_INVALID, "'items' is empty; send at least one item");
    size_t n_choices = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        if (!json_is_object(o)) return cel_error_set(err, CEL_ERR_INVALID, "items[%zu] must be an object", i);
        json_t *ch = json_object_get(o, "choices");
        if (ch && json_is_array(ch)) n_choices += json_array_size(ch);
    }
    st->items = calloc(n, sizeof *st->items);
    st->choices = calloc(n_choices ? n_choices : 1, sizeof *st->choices);
    st->numbuf = calloc(n * 3, sizeof *st->numbuf);
    if (!st->items || !st->choices || !st->numbuf) {
        store_free(st);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory for %zu items", n);
    }
    st->n = n;
    size_t ci = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        cel_verify_item *it = &st->items[i];
        cel_status s = CEL_OK;
        const char *resp = NULL;
        json_t *rv = json_object_get(o, "response");
        if (!rv || !json_is_string(rv)) {
            store_free(st);
            return cel_error_set(err, CEL_ERR_INVALID, "items[%zu]: 'response' must be a string", i);
        }
        resp = json_string_value(rv);
        it->response = resp;
        it->response_len = json_string_length(rv);
        if (it->response_len == 0) it->response = "", it->response_len = 0;
        s = text_field(o, "id", i, st->numbuf[3 * i], &it->id, false, err);
        if (s == CEL_OK) s = text_field(o, "reference", i, st->numbuf[3 * i + 1], &it->reference, true, err);
        if (s == CEL_OK) s = text_field(o, "group", i, st->numbuf[3 * i + 2], &it->group, false, err);
        if (s != CEL_OK) {
            store_free(st);
            return s;
        }
        const char *task = "auto";
        if (cel__srv_json_get_str(o, "task", &task, err) != CEL_OK || !cel_task_parse(task, &it->task)) {
            store_free(st);
            return cel_error_set(err, CEL_ERR_INVALID, "items[%zu]: 'task' must be \"math\", \"mcq\", \"open\" or "
                                                       "\"auto\"", i);
        }
        json_t *ch = json_object_get(o, "choices");
        if (ch && !json_is_null(ch)) {
            if (!json_is_array(ch)) {
                store_free(st);
                return cel_error_set(err, CEL_ERR_INVALID, "items[%zu]: 'choices' must be an array of strings", i);
            }
            it->choices = &st->choices[ci];
            it->n_choices = json_array_size(ch);
            for (size_t k = 0; k < it->n_choices; k++) {
                json_t *cv = json_array_get(ch, k);
                if (!json_is_string(cv)) {
                    store_free(st);
                    return cel_error_set(err, CEL_ERR_INVALID, "items[%zu]: choices[%zu] must be a string", i, k);
                }
                st->choices[ci++] = json_string_value(cv);
            }
            if (it->n_choices == 0) it->choices = NULL;
        }
    }
    return CEL_OK;
}

static json_t *result_json(const cel_verify_item *it, const cel_verify_result *r, json_t *id_in)
{
    json_t *o = json_object();
    if (!o) return NULL;
    if (id_in)
        json_object_set(o, "id", id_in);
    else if (it->id)
        json_object_set_new(o, "id", cel__srv_json_str(it->id, strlen(it->id)));
    json_object_set_new(o, "reward", json_real(r->reward));
    json_object_set_new(o, "correct", json_boolean(r->correct));
    json_object_set_new(o, "format_ok", json_boolean(r->format_ok));
    json_object_set_new(o, "task", json_string(cel_task_name(r->task)));
    json_object_set_new(o, "extracted",
                        r->has_extracted ? cel__srv_json_str(r->extracted, strnlen(r->extracted, sizeof r->extracted))
                                         : json_null());
    json_object_set_new(o, "source", json_string(cel_extract_source_name(r->source)));
    json_object_set_new(o, "reason", cel__srv_json_str(r->reason, strnlen(r->reason, sizeof r->reason)));
    if (r->task == CEL_TASK_OPEN) json_object_set_new(o, "f1", json_real(r->f1));
    if (r->has_advantage) json_object_set_new(o, "advantage", json_real(r->advantage));
    return o;
}

/* Reads a JSON Lines file of items from the data folder into a JSON array. */
static cel_status load_items_file(cel_server *s, const char *rel, json_t **arr_out, int *status, cel_error *err)
{
    char path[4096];
    cel_status st = cel_server_data_path(s, rel, path, sizeof path, err);
    if (st != CEL_OK) {
        *status = st == CEL_ERR_NOT_FOUND ? 404 : 400;
        return st;
    }
    char *data = NULL;
    size_t len = 0;
    st = cel_read_file(path, s->cfg.max_body_bytes, &data, &len, err);
    if (st != CEL_OK) {
        *status = 400;
        return st;
    }
    json_t *arr = json_array();
    size_t line = 0;
    for (char *p = data, *end = data + len; p < end && st == CEL_OK;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line++;
        size_t k = 0;
        while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
        if (k < n) {
            json_error_t je;
            json_t *v = json_loadb(p, n, 0, &je);
            if (!v || !json_is_object(v)) {
                json_decref(v);
                st = cel_error_set(err, CEL_ERR_FORMAT, "file '%s' line %zu: not a JSON object%s%s", rel, line,
                                   v ? "" : ": ", v ? "" : je.text);
                *status = 400;
            } else {
                json_array_append_new(arr, v);
            }
        }
        p += n + 1;
    }
    free(data);
    if (st != CEL_OK) {
        json_decref(arr);
        return st;
    }
    *arr_out = arr;
    return CEL_OK;
}

cel_status cel__srv_reward_run(cel_server *s, const char *body, size_t len, cel_buf *out, int *status_out,
                           size_t *n_items, cel_error *err)
{
    *status_out = 400;
    *n_items = 0;
    json_t *root = NULL;
    CEL_TRY(cel__srv_json_parse(body, len, &root, err));
    json_t *items = NULL, *owned_items = NULL;
    cel_adv_mode mode = CEL_ADV_GRPO; /* as `celine reward` */
    bool whiten = false;
    uint32_t format = s->default_format;
    cel_status st = CEL_OK;
    if (json_is_array(root)) {
        items = root;
    } else if (json_is_object(root)) {
        const char *adv = NULL, *fmt = NULL, *file = NULL;
        st = cel__srv_json_get_str(root, "advantage", &adv, err);
        if (st == CEL_OK && adv && !cel_adv_mode_parse(adv, &mode))
            st = cel_error_set(err, CEL_ERR_INVALID, "'advantage' must be \"grpo\", \"dr_grpo\", \"rloo\" or "
                                                     "\"none\", not \"%s\"", adv);
        if (st == CEL_OK) st = cel__srv_json_get_bool(root, "whiten", &whiten, err);
        if (st == CEL_OK) st = cel__srv_json_get_str(root, "format", &fmt, err);
        if (st == CEL_OK && fmt && !cel_format_parse(fmt, &format))
            st = cel_error_set(err, CEL_ERR_INVALID, "'format' must be none, boxed, answer, think or a comma list, "
                                                     "not \"%s\"", fmt);
        if (st == CEL_OK) st = cel__srv_json_get_str(root, "file", &file, err);
        if (st == CEL_OK) {
            items = json_object_get(root, "items");
            if (file && items)
                st = cel_error_set(err, CEL_ERR_INVALID, "send either 'items' or 'file', not both");
            else if (file)
                st = load_items_file(s, file, &owned_items, status_out, err), items = owned_items;
            else if (!items && json_object_get(root, "response"))
                items = NULL; /* a single item: wrapped below */
            else if (!items || !json_is_array(items))
                st = cel_error_set(err, CEL_ERR_INVALID, "'items' must be an array of items ({\"response\", "
                                                         "\"reference\", ...})");
        }
        if (st == CEL_OK && !items) {
            owned_items = json_array();
            json_array_append(owned_items, root);
            items = owned_items;
        }
    } else {
        st = cel_error_set(err, CEL_ERR_INVALID, "the body must be a JSON object with 'items' (or an array of items)");
    }
    item_store is = {0};
    if (st == CEL_OK) st = items_from_json(items, &is, err);
    const cel_verifier *v = NULL;
    if (st == CEL_OK) {
        st = cel__srv_verifier_get(s, format, &v, err);
        if (st != CEL_OK) *status_out = 500;
    }
    cel_verify_result *res = NULL;
    size_t n_err = 0;
    if (st == CEL_OK) {
        res = calloc(is.n, sizeof *res);
        if (!res) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory grading %zu items", is.n), *status_out = 500;
    }
    if (st == CEL_OK) {
        /* a big batch may use as many threads as the pool has workers (at most
         * that many jobs run at once, so threads stay bounded); small ones
         * grade inline on this worker: thread start-up would cost more */
        int threads = is.n >= 2048 ? s->wq.n_threads : 1;
        st = cel_verify_batch(v, is.items, is.n, mode, whiten, threads, res, &n_err, err);
        if (st != CEL_OK) *status_out = st == CEL_ERR_INVALID ? 400 : 500;
        else *n_items = is.n;
    }
    if (st == CEL_OK) {
        json_t *o = json_object(), *results = json_array(), *rewards = json_array();
        json_t *advs = mode != CEL_ADV_NONE ? json_array() : json_null();
        for (size_t i = 0; i < is.n; i++) {
            json_t *id = json_object_get(json_array_get(items, i), "id");
            json_array_append_new(results, result_json(&is.items[i], &res[i], id));
            json_array_append_new(rewards, json_real(res[i].reward));
            if (mode != CEL_ADV_NONE) json_array_append_new(advs, json_real(res[i].advantage));
        }
        json_object_set_new(o, "results", results);
        json_object_set_new(o, "rewards", rewards);
        json_object_set_new(o, "advantages", advs);
        json_object_set_new(o, "advantage_mode", json_string(cel_adv_mode_name(mode)));
        json_object_set_new(o, "errors", json_integer((json_int_t)n_err));
        st = cel__srv_json_dump(o, out);
        json_decref(o);
        if (st != CEL_OK) st = cel_error_set(err, st, "out of memory writing the answer"), *status_out = 500;
        else *status_out = 200;
    }
    free(res);
    store_free(&is);
    json_decref(owned_items);
    json_decref(root);
    return st;
}

/* OpenRLHF: {"query": [full texts], "prompts": [prompts], "labels": [answers]}
 * -> {"rewards": [...]}. A query that starts with its prompt is graded on the
 * rest (the response). */
cel_status cel__srv_get_reward_run(cel_server *s, const char *body, size_t len, cel_buf *out, int *status_out,
                               size_t *n_items, cel_error *err)
{
    *status_out = 400;
    *n_items = 0;
    json_t *root = NULL;
    CEL_TRY(cel__srv_json_parse(body, len, &root, err));
    cel_status st = CEL_OK;
    json_t *q = json_object_get(root, "query");
    json_t *p = json_object_get(root, "prompts");
    json_t *l = json_object_get(root, "labels");
    if (!json_is_object(root) || !json_is_array(q))
        st = cel_error_set(err, CEL_ERR_INVALID, "'query' must be an array of strings ({\"query\": [...], "
                                                 "\"prompts\": [...], \"labels\": [...]})");
    else if (!json_is_array(l))
        st = cel_error_set(err, CEL_ERR_INVALID, "'labels' must be an array (the reference answers)");
    else if (json_array_size(l) != json_array_size(q))
        st = cel_error_set(err, CEL_ERR_INVALID, "'labels' has %zu entries but 'query' has %zu",
                           json_array_size(l), json_array_size(q));
    else if (p && !json_is_null(p) && (!json_is_array(p) || json_array_size(p) != json_array_size(q)))
        st = cel_error_set(err, CEL_ERR_INVALID, "'prompts' must be an array as long as 'query' (%zu)",
                           json_array_size(q));
    else if (json_array_size(q) == 0)
        st = cel_error_set(err, CEL_ERR_INVALID, "'query' is empty");
    size_t n = st == CEL_OK ? json_array_size(q) : 0;
    cel_verify_item *items = NULL;
    cel_verify_result *res = NULL;
    char (*nb)[32] = NULL;
    if (st == CEL_OK) {
        items = calloc(n, sizeof *items);
        res = calloc(n, sizeof *res);
        nb = calloc(n, sizeof *nb);
        if (!items || !res || !nb) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory"), *status_out = 500;
    }
    for (size_t i = 0; st == CEL_OK && i < n; i++) {
        json_t *qi = json_array_get(q, i), *li = json_array_get(l, i);
        if (!json_is_string(qi)) {
            st = cel_error_set(err, CEL_ERR_INVALID, "query[%zu] must be a string", i);
            break;
        }
        const char *text = json_string_value(qi);
        size_t tlen = json_string_length(qi);
        json_t *pi = p ? json_array_get(p, i) : NULL;
        if (pi && !json_is_null(pi)) {
            if (!json_is_string(pi)) {
                st = cel_error_set(err, CEL_ERR_INVALID, "prompts[%zu] must be a string", i);
                break;
            }
            size_t pl = json_string_length(pi);
            if (pl <= tlen && memcmp(text, json_string_value(pi), pl) == 0) text += pl, tlen -= pl;
        }
        if (json_is_string(li))
            items[i].reference = json_string_value(li);
        else if (json_is_integer(li))
            snprintf(nb[i], 32, "%lld", (long long)json_integer_value(li)), items[i].reference = nb[i];
        else if (json_is_real(li))
            snprintf(nb[i], 32, "%.17g", json_real_value(li)), items[i].reference = nb[i];
        else {
            st = cel_error_set(err, CEL_ERR_INVALID, "labels[%zu] must be a string or a number", i);
            break;
        }
        items[i].task = CEL_TASK_AUTO;
        items[i].response = tlen ? text : "";
        items[i].response_len = tlen;
    }
    const cel_verifier *v = NULL;
    if (st == CEL_OK) {
        st = cel__srv_verifier_get(s, s->default_format, &v, err);
        if (st != CEL_OK) *status_out = 500;
    }
    if (st == CEL_OK) {
        st = cel_verify_batch(v, items, n, CEL_ADV_NONE, false, n >= 2048 ? s->wq.n_threads : 1, res, NULL, err);
        if (st != CEL_OK) *status_out = 500;
        else *n_items = n;
    }
    if (st == CEL_OK) {
        json_t *o = json_object(), *rw = json_array(), *sc = json_array(), *correct = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(rw, json_real(res[i].reward));
            json_array_append_new(sc, json_real(res[i].reward));
            json_array_append_new(correct, json_real(res[i].correct ? 1.0 : 0.0));
        }
        json_t *logs = json_object();
        json_object_set_new(logs, "correct", correct);
        json_object_set_new(o, "rewards", rw);
        json_object_set_new(o, "scores", sc);
        json_object_set_new(o, "extra_logs", logs);
        st = cel__srv_json_dump(o, out);
        json_decref(o);
        if (st != CEL_OK) st = cel_error_set(err, st, "out of memory writing the answer"), *status_out = 500;
        else *status_out = 200;
    }
    free(items);
    free(res);
    free(nb);
    json_decref(root);
    return st;
}

/* -------------------------------------------------------------- routes */

static void reward_work(void *ud)
{
    reward_job *j = ud;
    cel_error_clear(&j->err);
    if (j->openrlhf)
        cel__srv_get_reward_run(j->s, j->body, j->len, &j->out, &j->status, &j->n_items, &j->err);
    else
        cel__srv_reward_run(j->s, j->body, j->len, &j->out, &j->status, &j->n_items, &j->err);
}

static void reward_done(cel_http_req *r, void *ud)
{
    reward_job *j = ud;
    cel_server *s = j->s;
    if (j->n_items) {
        s->metrics.items_graded += j->n_items;
        cel__srv_hist_observe(&s->metrics.batch, (double)j->n_items);
    }
    if (j->status == 200) {
        cel_http_respond(r, 200, "application/json", j->out.data, j->out.len, NULL);
    } else {
        const char *code = j->status == 404 ? "file_not_found" : j->status >= 500 ? "internal_error" : "invalid_request";
        cel_http_respond_error(r, j->status, NULL, code, "%s", j->err.msg);
    }
    cel_buf_free(&j->out);
    free(j);
}

static void start(cel_http_req *r, bool openrlhf)
{
    reward_job *j = calloc(1, sizeof *j);
    if (!j) {
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory");
        return;
    }
    j->s = cel_http_req_server(r);
    j->body = cel_http_req_body(r, &j->len);
    j->openrlhf = openrlhf;
    j->status = 500;
    if (cel_http_defer(r, reward_work, reward_done, j) != CEL_OK) free(j);
}

void cel__srv_route_reward(cel_http_req *r, void *ud)
{
    (void)ud;
    start(r, false);
}

void cel__srv_route_get_reward(cel_http_req *r, void *ud)
{
    (void)ud;
    start(r, true);
}
