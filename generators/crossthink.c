/*
 * crossthink.c - NEMOTRON-CROSSTHINK QA synthesis: documents -> chunks ->
 * multiple-choice and open-ended items -> verifiability filters (gold among
 * options, short open answers, dedup) -> optional MCQ-to-open conversion ->
 * optional difficulty filter (k sampled answers graded by the verifiers;
 * items solved k of k are dropped) -> RL records {prompt, reference, task,
 * choices} that `celine reward` and trainers read directly.
 *
 * Unit = (document, chunk, format); key "<id>\x1f<chunk>\x1f<mcq|open>". The
 * difficulty filter's request for item i uses key "<unit key>\x1f<i>\x1fsolve".
 */
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "gen_internal.h"

void cel_crossthink_config_default(cel_crossthink_config *c)
{
    memset(c, 0, sizeof *c);
    cel_sampling_default(&c->c.sampling);
    c->c.sampling.temperature = 0.7f;
    c->c.sampling.top_p = 0.9f;
    c->c.sampling.max_tokens = 1024;
    c->c.max_inflight_docs = 64;
    c->mcq = true;
    c->open = true;
    c->mcq_template = "qa_mcq";
    c->open_template = "qa_open";
    c->rl_mcq_template = "rl_mcq";
    c->rl_open_template = "rl_open";
    c->questions = 4;
    c->chunk_tokens = 1000;
    c->max_open_words = 10;
    c->dedup = true;
    c->difficulty_k = 0;
    cel_sampling_default(&c->answer_sampling);
    c->answer_sampling.temperature = 1.0f;
    c->answer_sampling.top_p = 1.0f;
    c->answer_sampling.max_tokens = 1024;
}

typedef struct ct_kind {
    cel_crossthink_config cfg;
    const cel_template *synth[2]; /* [0] mcq, [1] open (NULL when disabled) */
    const cel_template *rl[2];
    char synth_tag[2][96];
    char rl_tag[2][96];
} ct_kind;

typedef struct ct_unit {
    size_t chunk_index;
    int fmt; /* 0 mcq, 1 open */
    size_t unit_ord;
    uint64_t seed;
    char *key;     /* seed key */
    char *unit_id; /* "<id>/<chunk>/<fmt>" */
    /* difficulty-filter requests only */
    cel_qa_item item;
    size_t item_index;
    uint64_t item_seed;
    char *rl_prompt;
} ct_unit;

static void ct_free_unit(void *p)
{
    ct_unit *u = p;
    if (!u) return;
    free(u->key);
    free(u->unit_id);
    free(u->rl_prompt);
    cel_qa_item_free(&u->item);
    free(u);
}

static void ct_free(cel_gen_pipeline *p) { free(p->kind); }

static const char *const fmt_name[2] = {"mcq", "open"};

/* The RL prompt of an item (rl template of its final task). */
static cel_status render_rl(const cel_template *t, const cel_qa_item *it, cel_buf *out, cel_error *err)
{
    cel_buf opts, sys;
    cel_buf_init(&opts);
    cel_buf_init(&sys);
    cel_status st = CEL_OK;
    for (size_t i = 0; i < it->n_options && !st; i++)
        st = cel_buf_printf(&opts, "%s%c) %s", i ? "\n" : "", (char)('A' + i), it->options[i]);
    if (!st && cel_buf_puts(&opts, "")) st = CEL_ERR_NOMEM;
    if (st) {
        cel_buf_free(&opts);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    cel_tmpl_var vars[2] = {{"question", it->question, strlen(it->question)}, {"options", opts.data, opts.len}};
    st = cel_template_render(t, vars, 2, &sys, out, err);
    if (!st && sys.len) { /* RL records carry one prompt string: system text first */
        cel_buf both;
        cel_buf_init(&both);
        if (cel_buf_append(&both, sys.data, sys.len) || cel_buf_puts(&both, "\n\n") ||
            cel_buf_append(&both, out->data, out->len))
            st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        else {
            cel_buf_free(out);
            *out = both;
            cel_buf_init(&both);
        }
        cel_buf_free(&both);
    }
    cel_buf_free(&opts);
    cel_buf_free(&sys);
    return st;
}

/* Queues the record of an item (solve_rate < 0: no difficulty filter). */
static void emit_item(cel_gen_pipeline *p, cel__doc *d, const ct_unit *u, const cel_qa_item *it, size_t idx,
                      uint64_t item_seed, const char *rl_prompt, double solve_rate)
{
    ct_kind *k = p->kind;
    int rl = it->task == CEL_TASK_MCQ ? 0 : 1;
    char id[1200];
    snprintf(id, sizeof id, "%s/%zu", u->unit_id, idx);
    json_t *rec = json_object();
    bool bad = !rec || cel__json_set_str(rec, "id", id, strlen(id)) ||
               cel__json_set_str(rec, "source_id", d->id, strlen(d->id)) ||
               json_object_set_new(rec, "chunk_index", json_integer((json_int_t)u->chunk_index)) ||
               cel__json_set_str(rec, "task", cel_task_name(it->task), strlen(cel_task_name(it->task))) ||
               cel__json_set_str(rec, "prompt", rl_prompt, strlen(rl_prompt)) ||
               cel__json_set_str(rec, "question", it->question, strlen(it->question)) ||
               cel__json_set_str(rec, "reference", it->answer, strlen(it->answer));
    if (!bad && it->task == CEL_TASK_MCQ) {
        json_t *ch = json_array();
        bad = !ch || json_object_set_new(rec, "choices", ch);
        for (size_t i = 0; !bad && i < it->n_options; i++) bad = json_array_append_new(ch, json_string(it->options[i]));
    }
    if (!bad)
        bad = cel__json_set_str(rec, "model", p->model_name, strlen(p->model_name)) ||
              cel__json_set_str(rec, "template", k->synth_tag[u->fmt], strlen(k->synth_tag[u->fmt])) ||
              cel__json_set_str(rec, "rl_template", k->rl_tag[rl], strlen(k->rl_tag[rl])) ||
              json_object_set_new(rec, "sampling", cel__sampling_json(&p->c.sampling)) ||
              json_object_set_new(rec, "seed", json_integer((json_int_t)u->seed));
    if (!bad && solve_rate >= 0)
        bad = json_object_set_new(rec, "solve_rate", json_real(solve_rate)) ||
              json_object_set_new(rec, "solve_seed", json_integer((json_int_t)item_seed));
    if (bad) {
        json_decref(rec);
        cel_error e;
        cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
        cel__fail(p, &e);
        return;
    }
    uint64_t key = k->cfg.dedup ? cel__norm_hash(it->question, strlen(it->question)) : 0;
    cel__add_record(p, d, CEL__ORD(u->unit_ord, idx + 1), rec, 0, key, id);
}

static void solve_done(cel_gen_pipeline *p, cel__doc *d, void *unit, const cel_gen_result *r)
{
    ct_kind *k = p->kind;
    ct_unit *u = unit;
    uint64_t ord = CEL__ORD(u->unit_ord, u->item_index + 1);
    char id[1200];
    snprintf(id, sizeof id, "%s/%zu", u->unit_id, u->item_index);
    if (r->status != CEL_OK) {
        cel__add_drop(p, d, ord, CEL_DROP_GEN_ERROR, id, r->error);
        return;
    }
    const char *choices[10];
    for (size_t i = 0; i < u->item.n_options; i++) choices[i] = u->item.options[i];
    uint32_t solved = 0;
    for (uint32_t s = 0; s < r->n; s++) {
        cel_verify_item vi = {.id = id,
                              .task = u->item.task,
                              .response = r->samples[s].text ? r->samples[s].text : "",
                              .response_len = r->samples[s].len,
                              .reference = u->item.answer,
                              .choices = u->item.n_options ? choices : NULL,
                              .n_choices = u->item.n_options};
        if (vi.response_len == 0) continue; /* an empty answer never solves it */
        cel_verify_result res;
        cel_error e;
        if (cel_verify_grade(k->cfg.verifier, &vi, &res, &e) == CEL_OK && res.correct) solved++;
    }
    if (r->n > 0 && solved == r->n) {
        cel__add_drop(p, d, ord, CEL_DROP_TOO_EASY, id, NULL);
        return;
    }
    emit_item(p, d, u, &u->item, u->item_index, u->item_seed, u->rl_prompt,
              r->n ? (double)solved / (double)r->n : 0.0);
}

static void synth_done(cel_gen_pipeline *p, cel__doc *d, void *unit, const cel_gen_result *r)
{
    ct_kind *k = p->kind;
    ct_unit *u = unit;
    uint64_t ord0 = CEL__ORD(u->unit_ord, 0);
    cel_error e;
    cel_error_clear(&e);
    if (r->status != CEL_OK) {
        cel__add_drop(p, d, ord0, CEL_DROP_GEN_ERROR, u->unit_id, r->error);
        return;
    }
    if (r->n == 0 || r->samples[0].finish == CEL_FINISH_ERROR || r->samples[0].finish == CEL_FINISH_CANCELLED) {
        cel__add_drop(p, d, ord0, CEL_DROP_GEN_ERROR, u->unit_id, r->n ? cel_finish_name(r->samples[0].finish) : NULL);
        return;
    }
    /* a truncated synthesis still holds its complete items; the cut one is malformed */
    const cel_gen_sample *smp = &r->samples[0];
    cel_qa_item *items = NULL;
    size_t n_items = 0;
    uint64_t drops[CEL_DROP__COUNT] = {0};
    cel_task task = u->fmt == 0 ? CEL_TASK_MCQ : CEL_TASK_OPEN;
    if (cel_gen_parse_qa_items(smp->text ? smp->text : "", smp->len, task, k->cfg.max_open_words, &items, &n_items,
                               drops, &e)) {
        cel__fail(p, &e);
        return;
    }
    for (int why = 0; why < CEL_DROP__COUNT; why++)
        for (uint64_t i = 0; i < drops[why]; i++) cel__add_drop(p, d, ord0, (cel_gen_drop)why, u->unit_id, NULL);
    if (n_items == 0) { /* nothing parsed and nothing rejected: the output held no item at all */
        uint64_t any = 0;
        for (int why = 0; why < CEL_DROP__COUNT; why++) any += drops[why];
        if (!any) cel__add_drop(p, d, ord0, CEL_DROP_NO_ITEMS, u->unit_id, smp->text);
    }
    cel_buf prompt;
    cel_buf_init(&prompt);
    for (size_t i = 0; i < n_items && !p->failed; i++) {
        cel_qa_item *it = &items[i];
        if (k->cfg.mcq_to_open && it->task == CEL_TASK_MCQ) {
            cel_error ce;
            if (cel_qa_item_to_open(it, k->cfg.max_open_words, &ce)) {
                char id[1200];
                snprintf(id, sizeof id, "%s/%zu", u->unit_id, i);
                cel__add_drop(p, d, CEL__ORD(u->unit_ord, i + 1), CEL_DROP_ANSWER_TOO_LONG, id, ce.msg);
                continue;
            }
        }
        int rl = it->task == CEL_TASK_MCQ ? 0 : 1;
        cel_buf_reset(&prompt);
        if (render_rl(k->rl[rl], it, &prompt, &e) || cel_buf_puts(&prompt, "")) {
            if (!e.code) cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
            cel__fail(p, &e);
            break;
        }
        if (k->cfg.difficulty_k <= 0) {
            emit_item(p, d, u, it, i, 0, prompt.data, -1.0);
            continue;
        }
        ct_unit *su = calloc(1, sizeof *su);
        cel_buf key;
        cel_buf_init(&key);
        if (!su || cel_buf_printf(&key, "%s\x1f%zu\x1fsolve", u->key, i)) {
            free(su);
            cel_buf_free(&key);
            cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
            cel__fail(p, &e);
            break;
        }
        *su = (ct_unit){.chunk_index = u->chunk_index, .fmt = u->fmt, .unit_ord = u->unit_ord, .seed = u->seed,
                        .item = *it, .item_index = i};
        memset(it, 0, sizeof *it); /* moved into the unit */
        su->item_seed = cel_gen_unit_seed(p->c.seed, key.data, key.len);
        cel_buf_free(&key);
        su->unit_id = strdup(u->unit_id);
        su->key = strdup(u->key);
        su->rl_prompt = cel_buf_steal(&prompt);
        if (!su->unit_id || !su->key || !su->rl_prompt) {
            ct_free_unit(su);
            cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
            cel__fail(p, &e);
            break;
        }
        cel_chat_msg msg = {"user", su->rl_prompt};
        cel_gen_request rq = {.messages = &msg, .n_messages = 1, .n = (uint32_t)k->cfg.difficulty_k,
                              .sampling = k->cfg.answer_sampling};
        rq.sampling.seed = su->item_seed;
        if (cel__submit(p, d, &rq, solve_done, su, &e)) {
            cel__fail(p, &e);
            break;
        }
    }
    cel_buf_free(&prompt);
    for (size_t i = 0; i < n_items; i++) cel_qa_item_free(&items[i]);
    free(items);
}

static cel_status ct_start(cel_gen_pipeline *p, cel__doc *d, cel_error *err)
{
    ct_kind *k = p->kind;
    cel_chunk *chunks;
    size_t n_chunks;
    cel_status st = cel__chunk_doc(p, d, k->cfg.chunk_tokens, &chunks, &n_chunks, err);
    if (st || !chunks) return st;
    char nbuf[16];
    snprintf(nbuf, sizeof nbuf, "%d", k->cfg.questions);
    cel_buf key, sys, usr;
    cel_buf_init(&key);
    cel_buf_init(&sys);
    cel_buf_init(&usr);
    for (size_t ci = 0; ci < n_chunks && st == CEL_OK; ci++) {
        for (int f = 0; f < 2 && st == CEL_OK; f++) {
            const cel_template *t = k->synth[f];
            if (!t) continue;
            ct_unit *u = calloc(1, sizeof *u);
            if (!u) {
                st = CEL_ERR_NOMEM;
                break;
            }
            u->chunk_index = ci;
            u->fmt = f;
            u->unit_ord = ci * 2 + (size_t)f;
            cel_buf_reset(&key);
            if ((st = cel_buf_printf(&key, "%s\x1f%zu\x1f%s", d->id, ci, fmt_name[f]))) {
                ct_free_unit(u);
                break;
            }
            u->seed = cel_gen_unit_seed(p->c.seed, key.data, key.len);
            u->key = cel_buf_steal(&key);
            if ((st = cel_buf_printf(&key, "%s/%zu/%s", d->id, ci, fmt_name[f]))) {
                ct_free_unit(u);
                break;
            }
            u->unit_id = cel_buf_steal(&key);
            cel_tmpl_var vars[2] = {{"text", d->text + chunks[ci].off, chunks[ci].len}, {"n", nbuf, strlen(nbuf)}};
            cel_buf_reset(&sys);
            cel_buf_reset(&usr);
            st = cel_template_render(t, vars, 2, &sys, &usr, err);
            if (st) {
                ct_free_unit(u);
                break;
            }
            st = cel__submit_rendered(p, d, t, &sys, &usr, u->seed, synth_done, u, err);
        }
    }
    if (st == CEL_ERR_NOMEM) cel_error_set(err, st, "out of memory");
    cel_buf_free(&key);
    cel_buf_free(&sys);
    cel_buf_free(&usr);
    free(chunks);
    return st;
}

static const cel__pipe_ops ct_ops = {"crossthink", ct_start, ct_free_unit, ct_free};

static cel_status find_kind(const cel_template_set *s, const char *name, cel_tmpl_kind kind, cel_task task,
                            const cel_template **out, cel_error *err)
{
    const cel_template *t = name ? cel_template_set_find(s, name) : NULL;
    if (!t) return cel_error_set(err, CEL_ERR_NOT_FOUND, "no template named '%s'", name ? name : "(null)");
    if (t->kind != kind || t->task != task)
        return cel_error_set(err, CEL_ERR_INVALID, "template '%s' (%s) is not a %s template for %s items", name,
                             t->path, cel_tmpl_kind_name(kind), cel_task_name(task));
    *out = t;
    return CEL_OK;
}

cel_status cel_crossthink_create(const cel_crossthink_config *cfg, cel_gen_backend *be, const cel_gen_sink *sink,
                                 cel_gen_pipeline **out, cel_error *err)
{
    *out = NULL;
    if (!cfg->templates) return cel_error_set(err, CEL_ERR_INVALID, "crossthink: no template set given");
    if (!cfg->mcq && !cfg->open) return cel_error_set(err, CEL_ERR_INVALID, "crossthink: enable mcq and/or open");
    if (cfg->chunk_tokens < 1 || cfg->questions < 1 || cfg->max_open_words < 1)
        return cel_error_set(err, CEL_ERR_INVALID, "crossthink: chunk_tokens, questions and max_open_words must be >= 1");
    if (cfg->difficulty_k > 64) return cel_error_set(err, CEL_ERR_INVALID, "crossthink: difficulty_k must be <= 64");
    if (cfg->difficulty_k > 0 && !cfg->verifier)
        return cel_error_set(err, CEL_ERR_INVALID, "crossthink: the difficulty filter needs a verifier");
    cel_gen_pipeline *p;
    CEL_TRY(cel__pipeline_new(sizeof(ct_kind), &ct_ops, &cfg->c, be, sink, &p, err));
    ct_kind *k = p->kind;
    k->cfg = *cfg;
    cel_status st = CEL_OK;
    if (cfg->mcq) st = find_kind(cfg->templates, cfg->mcq_template, CEL_TMPL_QA, CEL_TASK_MCQ, &k->synth[0], err);
    if (!st && cfg->open)
        st = find_kind(cfg->templates, cfg->open_template, CEL_TMPL_QA, CEL_TASK_OPEN, &k->synth[1], err);
    /* MCQ items keep their RL template unless converted; open ones always need one */
    if (!st && cfg->mcq && !cfg->mcq_to_open)
        st = find_kind(cfg->templates, cfg->rl_mcq_template, CEL_TMPL_RL, CEL_TASK_MCQ, &k->rl[0], err);
    if (!st) st = find_kind(cfg->templates, cfg->rl_open_template, CEL_TMPL_RL, CEL_TASK_OPEN, &k->rl[1], err);
    for (int f = 0; !st && f < 2; f++) {
        if (k->synth[f]) cel__template_tag(k->synth[f], k->synth_tag[f], sizeof k->synth_tag[f]);
        if (k->rl[f]) cel__template_tag(k->rl[f], k->rl_tag[f], sizeof k->rl_tag[f]);
    }
    k->cfg.mcq_template = k->cfg.open_template = k->cfg.rl_mcq_template = k->cfg.rl_open_template = NULL;
    if (st) {
        cel_gen_pipeline_free(p);
        return st;
    }
    *out = p;
    return CEL_OK;
}
