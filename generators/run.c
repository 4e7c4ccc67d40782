/*
 * run.c - helpers front ends share: opening a backend from options, a JSON
 * Lines sink over FILE streams the caller owns, and the push/drain loop.
 * Nothing here prints on its own: it writes only to the streams it is given.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "gen_internal.h"

/* A remote backend that also owns the tokenizer it counts with: forwards
 * every call to the inner backend and frees the tokenizer after it. */
typedef struct owning {
    cel_gen_backend base;
    cel_gen_backend *inner;
    cel_tokenizer *tok;
} owning;

static cel_status ow_submit(cel_gen_backend *b, const cel_gen_request *r, cel_error *err)
{
    return cel_gen_backend_submit(((owning *)b)->inner, r, err);
}
static cel_status ow_poll(cel_gen_backend *b, int t, cel_error *err) { return cel_gen_backend_poll(((owning *)b)->inner, t, err); }
static size_t ow_pending(const cel_gen_backend *b) { return cel_gen_backend_pending(((const owning *)b)->inner); }
static void ow_free(cel_gen_backend *b)
{
    owning *o = (owning *)b;
    cel_gen_backend_free(o->inner);
    cel_tokenizer_free(o->tok);
    free(o);
}
static void ow_cancel(cel_gen_backend *b, void *ud)
{
    cel_gen_backend *in = ((owning *)b)->inner;
    if (in->v->cancel) in->v->cancel(in, ud);
}
static const cel_gen_backend_vtbl owning_vtbl = {"remote", ow_submit, ow_poll, ow_pending, ow_free, ow_cancel};

cel_status cel_gen_backend_open(const cel_gen_backend_opts *o, cel_gen_backend **out, cel_error *err)
{
    *out = NULL;
    if (o->model_path) return cel_gen_local_open(o->model_path, &o->model, &o->engine, &o->local, out, err);
    if (!o->remote.n_urls) return cel_error_set(err, CEL_ERR_INVALID, "give a model (--model) or a server (--remote)");
    if (!o->tokenizer_path) return cel_gen_remote_create(&o->remote, out, err);
    cel_tokenizer *tok = NULL;
    CEL_TRY(cel_tokenizer_load_json(o->tokenizer_path, &tok, err));
    cel_remote_config rc = o->remote;
    rc.counter = cel_gen_counter_tokenizer(tok);
    cel_gen_backend *inner = NULL;
    cel_status st = cel_gen_remote_create(&rc, &inner, err);
    owning *w = st ? NULL : calloc(1, sizeof *w);
    if (!w) {
        if (!st) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        cel_gen_backend_free(inner);
        cel_tokenizer_free(tok);
        return st;
    }
    w->base = *inner; /* counter and model name */
    w->base.v = &owning_vtbl;
    w->inner = inner;
    w->tok = tok;
    *out = &w->base;
    return CEL_OK;
}

/* ------------------------------------------------------------ JSONL sink */

static cel_status jsonl_record(void *ud, const char *json, size_t len, cel_error *err)
{
    cel_gen_jsonl_sink *s = ud;
    if (fwrite(json, 1, len, s->out) != len || fputc('\n', s->out) == EOF)
        return cel_error_set(err, CEL_ERR_IO, "%s: write failed: %s", s->out_name ? s->out_name : "output",
                             strerror(errno));
    s->lines++;
    return CEL_OK;
}

static void jsonl_drop(void *ud, cel_gen_drop reason, const char *unit_id, const char *detail)
{
    cel_gen_jsonl_sink *s = ud;
    if (!s->rejects || s->reject_failed) return;
    json_t *o = json_object();
    bool bad = !o || json_object_set_new(o, "reason", json_string(cel_gen_drop_name(reason))) ||
               cel__json_set_str(o, "id", unit_id ? unit_id : "", unit_id ? strlen(unit_id) : 0) ||
               (detail && cel__json_set_str(o, "detail", detail, strlen(detail)));
    char *js = bad ? NULL : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!js || fprintf(s->rejects, "%s\n", js) < 0) s->reject_failed = true;
    free(js);
}

void cel_gen_jsonl_sink_init(cel_gen_jsonl_sink *s, FILE *out, const char *out_name, FILE *rejects)
{
    memset(s, 0, sizeof *s);
    s->out = out;
    s->out_name = out_name;
    s->rejects = rejects;
    s->sink = (cel_gen_sink){jsonl_record, rejects ? jsonl_drop : NULL, s};
}

cel_status cel_gen_run(cel_gen_pipeline *p, cel_doc_reader *r, cel_error *err)
{
    for (;;) {
        cel_gen_doc d;
        bool eof;
        CEL_TRY(cel_doc_reader_next(r, &d, &eof, err));
        if (eof) break;
        CEL_TRY(cel_gen_pipeline_push(p, &d, err));
    }
    return cel_gen_pipeline_drain(p, err);
}
