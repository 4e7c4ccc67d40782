/*
 * model.c - loads the model and starts the engine on a background thread, so
 * the server answers (/health 503, rewards, metrics) while a large model
 * maps and warms up. The loader hands its result back to the loop with
 * cel_server_post; until then the loop touches neither s->model nor
 * s->engine (the post queue's mutex orders the loader's writes before the
 * loop's reads).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Loop thread: the loader is done; go READY, or log and shut down. */
static void on_loaded(void *ud)
{
    cel_server *s = ud;
    if (s->model_err.code != CEL_OK) {
        s->model_state = CEL__MODEL_FAILED;
        cel_log(&s->cfg.log, CEL_LOG_ERROR, "server: model '%s' failed to load: %s", s->cfg.model_path,
                s->model_err.msg);
        cel_server_stop(s);
        cel__srv_check_finished(s);
        return;
    }
    s->model_state = CEL__MODEL_READY;
    cel_log(&s->cfg.log, CEL_LOG_INFO, "server: model '%s' ready (%s, chat template %s, context %d)", s->model_name,
            cel_arch_name(s->model->hp.arch), cel_chat_kind_name(s->chat_kind), s->n_ctx);
    cel__srv_check_finished(s);
}

/* Loader thread: model, engine, engine thread; results into s, then a post. */
static void loader_main(void *arg)
{
    cel_server *s = arg;
    cel_error *err = &s->model_err;
    cel_error_clear(err);
    cel_model_load_opts o;
    memset(&o, 0, sizeof o);
    o.tokenizer_path = s->cfg.tokenizer_path;
    o.log = s->cfg.log;
    cel_model *m = NULL;
    cel_engine *e = NULL;
    cel_status st = cel_model_load(s->cfg.model_path, &o, &m, err);
    if (st == CEL_OK && !m->tok)
        st = cel_error_set(err, CEL_ERR_FORMAT, "model '%s' has no tokenizer (pass --tokenizer PATH)",
                           s->cfg.model_path);
    if (st == CEL_OK) {
        cel_engine_params p;
        memset(&p, 0, sizeof p);
        p.backend = s->cfg.backend;
        p.n_threads = s->cfg.engine_threads;
        p.n_ctx = s->cfg.n_ctx;
        p.max_seqs = s->cfg.max_seqs;
        p.max_queue = s->cfg.engine_queue;
        p.log = s->cfg.log;
        st = cel_engine_create(m, &p, &e, err);
    }
    if (st == CEL_OK) st = cel_engine_start(e, err);
    if (st == CEL_OK) {
        s->n_ctx = s->cfg.n_ctx > 0 ? s->cfg.n_ctx : m->hp.n_ctx_train > 0 && m->hp.n_ctx_train < 8192 ? m->hp.n_ctx_train : 8192;
        s->chat_kind = s->cfg.chat_template ? cel_chat_kind_from_name(s->cfg.chat_template) : CEL_CHAT_AUTO;
        if (s->chat_kind == CEL_CHAT_AUTO) s->chat_kind = cel_chat_detect(m->chat_template, m->tok);
        const char *name = s->cfg.model_name ? s->cfg.model_name : m->name;
        if (!name || !*name) {
            name = strrchr(s->cfg.model_path, '/');
            name = name && name[1] ? name + 1 : s->cfg.model_path;
        }
        s->model_name = strdup(name);
        s->model = m;
        s->engine = e;
    } else {
        if (err->code == CEL_OK) err->code = st;
        if (e) cel_engine_free(e);
        if (m) cel_model_free(m);
    }
    if (cel_server_post(s, on_loaded, s) != CEL_OK) {
        /* the server is being torn down: nothing waits for us */
    }
}

void cel__srv_model_start_load(cel_server *s)
{
    s->model_state = CEL__MODEL_LOADING;
    if (uv_thread_create(&s->loader, loader_main, s) != 0) {
        cel_error_set(&s->model_err, CEL_ERR_INTERNAL, "server: cannot start the model loader thread");
        s->model_state = CEL__MODEL_FAILED;
        cel_server_stop(s);
        return;
    }
    s->loader_started = true;
}

void cel__srv_model_join(cel_server *s)
{
    if (!s->loader_started) return;
    uv_thread_join(&s->loader);
    s->loader_started = false;
}

void cel__srv_engine_shutdown(cel_server *s)
{
    if (s->engine) cel_engine_free(s->engine); /* pending requests get CANCELLED events */
    s->engine = NULL;
}

void cel__srv_model_free(cel_server *s)
{
    if (s->model) cel_model_free(s->model);
    s->model = NULL;
    free(s->model_name);
    s->model_name = NULL;
}
