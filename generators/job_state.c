/*
 * job_state.c - the corpus job's durable records: state.json (the
 * checkpoint: input position, shard lengths, counters, the open frame's side
 * file) and manifest.json (what a finished part produced). Both are JSON so
 * people can read them; state.json is replaced atomically at every
 * checkpoint and parsed strictly on resume (a damaged one is an error naming
 * the key, never a silent restart).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "job_internal.h"

static const char *const input_error_names[CEL_JOB_ERR__COUNT] = {
    [CEL_JOB_ERR_INVALID_LINE] = "invalid_line",
    [CEL_JOB_ERR_LINE_TOO_LONG] = "line_too_long",
    [CEL_JOB_ERR_CORRUPT_SHARD] = "corrupt_shard",
    [CEL_JOB_ERR_UNREADABLE] = "unreadable_file",
};

const char *cel_job_input_error_name(cel_job_input_error e)
{
    return (unsigned)e < CEL_JOB_ERR__COUNT ? input_error_names[e] : "unknown";
}

void cel__pending_name(uint64_t seq, char *out, size_t cap) { snprintf(out, cap, ".pending-%llu.zst", (unsigned long long)seq); }

void cel__job_state_free(cel__job_state *s)
{
    if (!s) return;
    free(s->config);
    free(s->inputs_json);
    free(s->shards);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------- counters */

json_t *cel__job_counts_json(const cel_job_counts *c)
{
    json_t *o = json_object(), *d = json_object(), *e = json_object();
    if (!o || !d || !e) {
        json_decref(o);
        json_decref(d);
        json_decref(e);
        return NULL;
    }
    uint64_t dt = 0, et = 0;
    for (int i = 0; i < CEL_DROP__COUNT; i++) {
        dt += c->dropped[i];
        if (c->dropped[i]) json_object_set_new(d, cel_gen_drop_name((cel_gen_drop)i), json_integer((json_int_t)c->dropped[i]));
    }
    for (int i = 0; i < CEL_JOB_ERR__COUNT; i++) {
        et += c->input_errors[i];
        if (c->input_errors[i]) json_object_set_new(e, input_error_names[i], json_integer((json_int_t)c->input_errors[i]));
    }
    json_object_set_new(o, "lines", json_integer((json_int_t)c->lines));
    json_object_set_new(o, "lines_mine", json_integer((json_int_t)c->lines_mine));
    json_object_set_new(o, "docs", json_integer((json_int_t)c->docs));
    json_object_set_new(o, "records", json_integer((json_int_t)c->records));
    json_object_set_new(o, "record_tokens", json_integer((json_int_t)c->record_tokens));
    json_object_set_new(o, "out_bytes", json_integer((json_int_t)c->out_bytes));
    json_object_set_new(o, "shards", json_integer((json_int_t)c->shards));
    json_object_set_new(o, "dropped_total", json_integer((json_int_t)dt));
    json_object_set_new(o, "dropped", d);
    json_object_set_new(o, "input_errors_total", json_integer((json_int_t)et));
    json_object_set_new(o, "input_errors", e);
    return o;
}

static cel_status get_u64(const json_t *o, const char *key, uint64_t *out, const char *where, cel_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: \"%s\" must be a non-negative integer", where, key);
    *out = (uint64_t)json_integer_value(v);
    return CEL_OK;
}

cel_status cel__job_counts_from_json(const json_t *o, cel_job_counts *c, const char *where, cel_error *err)
{
    memset(c, 0, sizeof *c);
    if (!json_is_object(o)) return cel_error_set(err, CEL_ERR_FORMAT, "%s: \"counts\" must be an object", where);
    CEL_TRY(get_u64(o, "lines", &c->lines, where, err));
    CEL_TRY(get_u64(o, "lines_mine", &c->lines_mine, where, err));
    CEL_TRY(get_u64(o, "docs", &c->docs, where, err));
    CEL_TRY(get_u64(o, "records", &c->records, where, err));
    CEL_TRY(get_u64(o, "record_tokens", &c->record_tokens, where, err));
    CEL_TRY(get_u64(o, "out_bytes", &c->out_bytes, where, err));
    CEL_TRY(get_u64(o, "shards", &c->shards, where, err));
    json_t *d = json_object_get(o, "dropped"), *e = json_object_get(o, "input_errors");
    if (!json_is_object(d) || !json_is_object(e))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: \"dropped\" and \"input_errors\" must be objects", where);
    const char *k;
    json_t *v;
    json_object_foreach(d, k, v)
    {
        int i = 0;
        while (i < CEL_DROP__COUNT && strcmp(cel_gen_drop_name((cel_gen_drop)i), k) != 0) i++;
        if (i == CEL_DROP__COUNT || !json_is_integer(v) || json_integer_value(v) < 0)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: unknown drop reason or bad count \"%s\"", where, k);
        c->dropped[i] = (uint64_t)json_integer_value(v);
    }
    json_object_foreach(e, k, v)
    {
        int i = 0;
        while (i < CEL_JOB_ERR__COUNT && strcmp(input_error_names[i], k) != 0) i++;
        if (i == CEL_JOB_ERR__COUNT || !json_is_integer(v) || json_integer_value(v) < 0)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: unknown input error kind or bad count \"%s\"", where, k);
        c->input_errors[i] = (uint64_t)json_integer_value(v);
    }
    return CEL_OK;
}

/* ----------------------------------------------------------------- state */

static json_t *hex64(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%016" PRIx64, v);
    return json_string(b);
}

static cel_status get_hex64(const json_t *o, const char *key, uint64_t *out, const char *where, cel_error *err)
{
    const char *s = json_string_value(json_object_get(o, key));
    char *end = NULL;
    if (!s || strlen(s) != 16 || (*out = strtoull(s, &end, 16), *end != 0))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: \"%s\" must be 16 hex digits", where, key);
    return CEL_OK;
}

cel_status cel__job_state_to_json(const cel__job_state *s, cel_buf *out)
{
    json_t *o = json_object();
    json_t *cfg = s->config ? json_loads(s->config, 0, NULL) : json_null();
    json_t *inputs = s->inputs_json ? json_loads(s->inputs_json, 0, NULL) : json_array();
    json_t *shards = json_array(), *pos = json_object(), *dig = json_object(), *pend = json_object();
    json_t *counts = cel__job_counts_json(&s->c);
    cel_status st = CEL_OK;
    if (!o || !cfg || !inputs || !shards || !pos || !dig || !pend || !counts) {
        json_decref(cfg);
        json_decref(inputs);
        json_decref(shards);
        json_decref(pos);
        json_decref(dig);
        json_decref(pend);
        json_decref(counts);
        st = CEL_ERR_NOMEM;
        goto done;
    }
    for (uint32_t i = 0; i < s->n_shards; i++) {
        json_t *sh = json_object();
        json_object_set_new(sh, "bytes", json_integer((json_int_t)s->shards[i].bytes));
        json_object_set_new(sh, "records", json_integer((json_int_t)s->shards[i].records));
        json_object_set_new(sh, "frames", json_integer((json_int_t)s->shards[i].frames));
        json_array_append_new(shards, sh);
    }
    json_object_set_new(pos, "file", json_integer(s->file));
    json_object_set_new(pos, "line", json_integer((json_int_t)s->line));
    json_object_set_new(pos, "input_bytes", json_integer((json_int_t)s->input_bytes));
    json_object_set_new(dig, "all", hex64(s->all_digest));
    json_object_set_new(dig, "mine", hex64(s->mine_digest));
    json_object_set_new(pend, "records", json_integer((json_int_t)s->pending_records));
    json_object_set_new(pend, "bytes", json_integer((json_int_t)s->pending_bytes));
    json_object_set_new(o, "version", json_integer(CEL__JOB_STATE_VERSION));
    json_object_set_new(o, "state", json_string(s->done ? "done" : "running"));
    json_object_set_new(o, "seq", json_integer((json_int_t)s->seq));
    json_object_set_new(o, "part", json_integer(s->part));
    json_object_set_new(o, "parts", json_integer(s->parts));
    json_object_set_new(o, "split", json_string(s->split == CEL_JOB_SPLIT_LINE ? "line" : "id"));
    json_object_set_new(o, "position", pos);
    json_object_set_new(o, "counts", counts);
    json_object_set_new(o, "digests", dig);
    json_object_set_new(o, "shards", shards);
    json_object_set_new(o, "rejects_bytes", json_integer((json_int_t)s->rejects_bytes));
    json_object_set_new(o, "errors_bytes", json_integer((json_int_t)s->errors_bytes));
    json_object_set_new(o, "pending", pend);
    json_object_set_new(o, "elapsed_s", json_real(s->elapsed_s));
    json_object_set_new(o, "sessions", json_integer(s->sessions));
    json_object_set_new(o, "config", cfg);
    json_object_set_new(o, "inputs", inputs);
    char *js = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!js || cel_buf_puts(out, js) || cel_buf_putc(out, '\n')) st = CEL_ERR_NOMEM;
    free(js);
done:
    json_decref(o);
    return st;
}

cel_status cel__job_state_save(const char *dir, const cel__job_state *s, cel_error *err)
{
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/state.json", dir) >= sizeof path)
        return cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", dir);
    cel_buf b;
    cel_buf_init(&b);
    cel_status st = cel__job_state_to_json(s, &b);
    if (st) st = cel_error_set(err, st, "%s: cannot serialise the job state", path);
    else st = cel__write_atomic(path, b.data, b.len, err);
    cel_buf_free(&b);
    return st;
}

cel_status cel__job_state_load(const char *dir, cel__job_state *s, bool *exists, cel_error *err)
{
    memset(s, 0, sizeof *s);
    *exists = false;
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/state.json", dir) >= sizeof path)
        return cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", dir);
    if (!cel_path_exists(path)) return CEL_OK;
    *exists = true;
    char *text = NULL;
    size_t len = 0;
    CEL_TRY(cel_read_file(path, 64u << 20, &text, &len, err));
    cel_status st = cel__job_state_parse(text, len, path, s, err);
    free(text);
    return st;
}

cel_status cel__job_state_parse(const char *text, size_t len, const char *path, cel__job_state *s, cel_error *err)
{
    memset(s, 0, sizeof *s);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) return cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: invalid JSON: %s", path, je.line, je.text);
    cel_status st = CEL_OK;
    uint64_t v = 0;
    json_t *pos = json_object_get(o, "position"), *shards = json_object_get(o, "shards");
    json_t *pend = json_object_get(o, "pending"), *cfg = json_object_get(o, "config");
    json_t *inputs = json_object_get(o, "inputs"), *dig = json_object_get(o, "digests");
    const char *state = json_string_value(json_object_get(o, "state"));
    const char *split = json_string_value(json_object_get(o, "split"));
    if (!json_is_object(o) || !json_is_object(pos) || !json_is_array(shards) || !json_is_object(pend) ||
        !json_is_object(cfg) || !json_is_array(inputs) || !json_is_object(dig) || !state || !split) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s: not a celine job state (missing position, shards, pending, "
                                                "config, inputs, digests, state or split)", path);
        goto done;
    }
    if (get_u64(o, "version", &v, path, err) || v != CEL__JOB_STATE_VERSION) {
        st = cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: state version %llu is not %d", path, (unsigned long long)v,
                           CEL__JOB_STATE_VERSION);
        goto done;
    }
    s->done = strcmp(state, "done") == 0;
    s->split = strcmp(split, "line") == 0 ? CEL_JOB_SPLIT_LINE : CEL_JOB_SPLIT_ID;
    if ((st = get_u64(o, "seq", &s->seq, path, err))) goto done;
    if ((st = get_u64(o, "part", &v, path, err))) goto done;
    s->part = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    if ((st = get_u64(o, "parts", &v, path, err))) goto done;
    s->parts = v > UINT32_MAX ? 0 : (uint32_t)v;
    if (s->parts == 0 || s->parts > 100000 || s->part >= s->parts) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s: part %u of %u is not a valid split", path, s->part, s->parts);
        goto done;
    }
    if ((st = get_u64(pos, "file", &v, path, err))) goto done;
    if (v > UINT32_MAX) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s: position.file out of range", path);
        goto done;
    }
    s->file = (uint32_t)v;
    if ((st = get_u64(pos, "line", &s->line, path, err)) || (st = get_u64(pos, "input_bytes", &s->input_bytes, path, err)))
        goto done;
    if ((st = cel__job_counts_from_json(json_object_get(o, "counts"), &s->c, path, err))) goto done;
    if ((st = get_hex64(dig, "all", &s->all_digest, path, err)) || (st = get_hex64(dig, "mine", &s->mine_digest, path, err)))
        goto done;
    if ((st = get_u64(o, "rejects_bytes", &s->rejects_bytes, path, err)) ||
        (st = get_u64(o, "errors_bytes", &s->errors_bytes, path, err)) ||
        (st = get_u64(pend, "records", &s->pending_records, path, err)) ||
        (st = get_u64(pend, "bytes", &s->pending_bytes, path, err)))
        goto done;
    if ((st = get_u64(o, "sessions", &v, path, err))) goto done;
    s->sessions = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    s->elapsed_s = json_number_value(json_object_get(o, "elapsed_s"));
    size_t ns = json_array_size(shards);
    if (ns > 10000000) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s: too many shards", path);
        goto done;
    }
    s->shards = calloc(ns ? ns : 1, sizeof *s->shards);
    if (!s->shards) {
        st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        goto done;
    }
    s->n_shards = (uint32_t)ns;
    for (size_t i = 0; i < ns; i++) {
        json_t *sh = json_array_get(shards, i);
        if ((st = get_u64(sh, "bytes", &s->shards[i].bytes, path, err)) ||
            (st = get_u64(sh, "records", &s->shards[i].records, path, err)) ||
            (st = get_u64(sh, "frames", &s->shards[i].frames, path, err)))
            goto done;
    }
    s->config = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
    s->inputs_json = json_dumps(inputs, JSON_COMPACT);
    if (!s->config || !s->inputs_json) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
done:
    json_decref(o);
    if (st) cel__job_state_free(s);
    return st;
}

/* -------------------------------------------------------------- manifest */

cel_status cel__job_write_manifest(const char *dir, const cel__job_state *s, const char *const *input_paths,
                                   size_t n_inputs, cel_error *err)
{
    json_t *o = json_object(), *shards = json_array(), *inputs = json_array();
    json_t *cfg = s->config ? json_loads(s->config, 0, NULL) : NULL;
    json_t *counts = cel__job_counts_json(&s->c);
    cel_status st = CEL_OK;
    if (!o || !shards || !inputs || !cfg || !counts) {
        json_decref(o);
        json_decref(shards);
        json_decref(inputs);
        json_decref(cfg);
        json_decref(counts);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < s->n_shards; i++) {
        char name[64];
        cel__shard_name(i, name, sizeof name);
        json_t *sh = json_object();
        json_object_set_new(sh, "path", json_string(name));
        json_object_set_new(sh, "bytes", json_integer((json_int_t)s->shards[i].bytes));
        json_object_set_new(sh, "records", json_integer((json_int_t)s->shards[i].records));
        json_object_set_new(sh, "frames", json_integer((json_int_t)s->shards[i].frames));
        json_array_append_new(shards, sh);
    }
    for (size_t i = 0; i < n_inputs; i++) json_array_append_new(inputs, json_string(input_paths[i]));
    json_object_set_new(o, "kind", json_incref(json_object_get(cfg, "kind")));
    json_object_set_new(o, "state", json_string(s->done ? "done" : "partial"));
    json_object_set_new(o, "seed", json_incref(json_object_get(cfg, "seed")));
    json_object_set_new(o, "model", json_incref(json_object_get(cfg, "model")));
    json_object_set_new(o, "part", json_integer(s->part));
    json_object_set_new(o, "parts", json_integer(s->parts));
    json_object_set_new(o, "counts", counts);
    json_object_set_new(o, "shards", shards);
    json_object_set_new(o, "inputs", inputs);
    json_object_set_new(o, "input_errors_file", json_string("input_errors.jsonl"));
    if (s->rejects_bytes) json_object_set_new(o, "rejects_file", json_string("rejects.jsonl"));
    json_object_set_new(o, "elapsed_s", json_real(s->elapsed_s));
    json_object_set_new(o, "sessions", json_integer(s->sessions));
    json_object_set_new(o, "config", cfg);
    char *js = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!js) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/manifest.json", dir) >= sizeof path) st = cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", dir);
    else {
        size_t n = strlen(js);
        js[n] = '\n'; /* json_dumps leaves room for the NUL only: write it as the last byte instead */
        st = cel__write_atomic(path, js, n + 1, err);
    }
    free(js);
    return st;
}
