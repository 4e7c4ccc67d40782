/*
 * rephrase.c - Nemotron-CC synthetic rephrasing: documents are routed by
 * quality (low: Wikipedia-style; high: the other prompts), segmented per
 * prompt within its input budget, rephrased, and kept only within the
 * prompt's token bounds and with its lead-in; Diverse-QA and knowledge-list
 * outputs get their post-processing.
 *
 * Unit = (document, prompt, segment); key "<id>\x1f<prompt>\x1f<segment>".
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "gen_internal.h"

void cel_rephrase_config_default(cel_rephrase_config *c)
{
    memset(c, 0, sizeof *c);
    cel_sampling_default(&c->c.sampling);
    c->c.sampling.temperature = 0.5f;
    c->c.sampling.top_p = 0.9f;
    c->c.sampling.max_tokens = 512;
    c->c.max_inflight_docs = 64;
    c->route_by_quality = true;
    c->high_threshold = 12;
    c->min_doc_tokens = 30;
    c->min_segment_tokens = 10;
    c->qa_tokens_per_pair = 150;
}

static bool ieq(const char *a, const char *b)
{
    while (*a && *b && tolower((unsigned char)*a) == tolower((unsigned char)*b)) a++, b++;
    return *a == 0 && *b == 0;
}

const char *cel_rephrase_quality_bucket(const char *q, int32_t high_threshold)
{
    if (!q) return NULL;
    while (*q == ' ') q++;
    if (ieq(q, "high") || ieq(q, "medium-high") || ieq(q, "medium_high")) return "high";
    if (ieq(q, "low") || ieq(q, "medium-low") || ieq(q, "medium_low") || ieq(q, "medium")) return "low";
    char *end;
    errno = 0;
    double v = strtod(q, &end);
    while (*end == ' ') end++;
    if (end == q || *end || errno || v != v) return NULL;
    return v >= high_threshold ? "high" : "low";
}

typedef struct rephrase_kind {
    cel_rephrase_config cfg;
    const cel_template **prompts;
    size_t n_prompts;
    char (*tags)[96];
} rephrase_kind;

typedef struct rephrase_unit {
    size_t prompt;
    size_t seg_index;
    size_t unit_ord;
    size_t off, len, seg_tokens;
    uint64_t seed;
    char *unit_id;
} rephrase_unit;

static void rephrase_free_unit(void *u)
{
    rephrase_unit *r = u;
    if (!r) return;
    free(r->unit_id);
    free(r);
}

static void rephrase_free(cel_gen_pipeline *p)
{
    rephrase_kind *k = p->kind;
    if (!k) return;
    free(k->prompts);
    free(k->tags);
    free(k);
}

/* Does out start with the lead-in (ASCII case and surrounding markdown
 * emphasis ignored)? Sets *rest to the text after it. */
static bool has_lead_in(const char *out, size_t len, const char *lead, const char **rest)
{
    const char *p = out, *e = out + len;
    while (p < e && (*p == '*' || *p == '_' || *p == '#' || *p == ' ')) p++;
    size_t n = strlen(lead);
    if ((size_t)(e - p) < n) return false;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)p[i]) != tolower((unsigned char)lead[i])) return false;
    p += n;
    while (p < e && (*p == '*' || *p == '_')) p++;
    *rest = p;
    return true;
}

static void rephrase_done(cel_gen_pipeline *p, cel__doc *d, void *unit, const cel_gen_result *r)
{
    rephrase_kind *k = p->kind;
    rephrase_unit *u = unit;
    const cel_template *t = k->prompts[u->prompt];
    if (r->status != CEL_OK) {
        cel__add_drop(p, d, CEL__ORD(u->unit_ord, 0), CEL_DROP_GEN_ERROR, u->unit_id, r->error);
        return;
    }
    for (uint32_t s = 0; s < r->n; s++) {
        const cel_gen_sample *smp = &r->samples[s];
        uint64_t ord = CEL__ORD(u->unit_ord, s);
        cel_error e;
        cel_error_clear(&e);
        if (smp->finish == CEL_FINISH_LENGTH) {
            cel__add_drop(p, d, ord, CEL_DROP_TRUNCATED, u->unit_id, smp->text);
            continue;
        }
        if (smp->finish == CEL_FINISH_ERROR || smp->finish == CEL_FINISH_CANCELLED) {
            cel__add_drop(p, d, ord, CEL_DROP_GEN_ERROR, u->unit_id, cel_finish_name(smp->finish));
            continue;
        }
        const char *txt = smp->text ? smp->text : "";
        size_t tl = smp->len;
        cel__trim(&txt, &tl);
        if (tl == 0) {
            cel__add_drop(p, d, ord, CEL_DROP_EMPTY_OUTPUT, u->unit_id, NULL);
            continue;
        }
        size_t ntok;
        if (cel__count(&p->be->counter, txt, tl, &ntok, &e)) {
            cel__fail(p, &e);
            return;
        }
        if ((int64_t)ntok < t->keep_min_tokens) {
            cel__add_drop(p, d, ord, CEL_DROP_TOO_SHORT, u->unit_id, smp->text);
            continue;
        }
        if ((int64_t)ntok > t->keep_max_tokens) {
            cel__add_drop(p, d, ord, CEL_DROP_TOO_LONG, u->unit_id, smp->text);
            continue;
        }
        if (t->lead_in) {
            const char *rest;
            if (!has_lead_in(txt, tl, t->lead_in, &rest)) {
                cel__add_drop(p, d, ord, CEL_DROP_NO_LEAD_IN, u->unit_id, smp->text);
                continue;
            }
            tl -= (size_t)(rest - txt);
            txt = rest;
            cel__trim(&txt, &tl);
            if (tl == 0) {
                cel__add_drop(p, d, ord, CEL_DROP_EMPTY_OUTPUT, u->unit_id, NULL);
                continue;
            }
        }
        cel_buf text;
        cel_buf_init(&text);
        cel_status st = CEL_OK;
        if (t->post == CEL_POST_DIVERSE_QA) {
            size_t kept, parsed;
            st = cel_gen_diverse_qa(d->text + u->off, u->len, u->seg_tokens, txt, tl, k->cfg.qa_tokens_per_pair,
                                    cel_mix64(u->seed + s), &text, &kept, &parsed, &e);
            if (!st && parsed == 0) {
                cel_buf_free(&text);
                cel__add_drop(p, d, ord, CEL_DROP_NO_QA_PAIRS, u->unit_id, smp->text);
                continue;
            }
            for (size_t i = kept; !st && i < parsed; i++)
                st = cel__add_drop(p, d, ord, CEL_DROP_QA_UNUSED, u->unit_id, NULL);
        } else if (t->post == CEL_POST_KNOWLEDGE_LIST) {
            st = cel_gen_knowledge_list_clean(txt, tl, &text);
        } else {
            st = cel_buf_append(&text, txt, tl);
        }
        if (!st && text.len == 0) {
            cel_buf_free(&text);
            cel__add_drop(p, d, ord, CEL_DROP_EMPTY_OUTPUT, u->unit_id, NULL);
            continue;
        }
        size_t out_tok = 0;
        if (!st) st = cel__count(&p->be->counter, text.data, text.len, &out_tok, &e);
        json_t *rec = st ? NULL : json_object();
        char id[1200];
        if (r->n > 1) snprintf(id, sizeof id, "%s/%u", u->unit_id, s);
        else snprintf(id, sizeof id, "%s", u->unit_id);
        if (rec) {
            const char *bucket = cel_rephrase_quality_bucket(d->quality, k->cfg.high_threshold);
            cel_sampling sm = p->c.sampling;
            sm.max_tokens = t->max_output_tokens;
            bool bad = cel__json_set_str(rec, "id", id, strlen(id)) ||
                       cel__json_set_str(rec, "source_id", d->id, strlen(d->id)) ||
                       json_object_set_new(rec, "chunk_index", json_integer((json_int_t)u->seg_index)) ||
                       cel__json_set_str(rec, "prompt", t->name, strlen(t->name)) ||
                       (bucket && cel__json_set_str(rec, "quality", bucket, strlen(bucket))) ||
                       cel__json_set_str(rec, "text", text.data, text.len) ||
                       json_object_set_new(rec, "tokens", json_integer((json_int_t)out_tok)) ||
                       cel__json_set_str(rec, "model", p->model_name, strlen(p->model_name)) ||
                       cel__json_set_str(rec, "template", k->tags[u->prompt], strlen(k->tags[u->prompt])) ||
                       json_object_set_new(rec, "sampling", cel__sampling_json(&sm)) ||
                       json_object_set_new(rec, "seed", json_integer((json_int_t)u->seed));
            if (bad) {
                json_decref(rec);
                rec = NULL;
            }
        }
        cel_buf_free(&text);
        if (!rec) {
            if (!e.code) cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
            cel__fail(p, &e);
            return;
        }
        cel__add_record(p, d, ord, rec, out_tok, 0, id);
    }
}

static cel_status rephrase_start(cel_gen_pipeline *p, cel__doc *d, cel_error *err)
{
    rephrase_kind *k = p->kind;
    const char *t0 = d->text;
    size_t l0 = d->len;
    cel__trim(&t0, &l0);
    if (l0 == 0) return cel__add_drop(p, d, 0, CEL_DROP_DOC_EMPTY, d->id, NULL);
    size_t doc_tokens;
    CEL_TRY(cel__count(&p->be->counter, t0, l0, &doc_tokens, err));
    if ((int64_t)doc_tokens < k->cfg.min_doc_tokens) return cel__add_drop(p, d, 0, CEL_DROP_DOC_TOO_SHORT, d->id, NULL);
    const char *bucket = NULL;
    if (k->cfg.route_by_quality && d->quality) {
        bucket = cel_rephrase_quality_bucket(d->quality, k->cfg.high_threshold);
        if (!bucket)
            return cel_error_set(err, CEL_ERR_INVALID,
                                 "document %s: quality '%s' is neither a bucket number nor low/medium/high", d->id,
                                 d->quality);
    }
    size_t ord = 0;
    cel_status st = CEL_OK;
    cel_buf key, sys, usr;
    cel_buf_init(&key);
    cel_buf_init(&sys);
    cel_buf_init(&usr);
    for (size_t pi = 0; pi < k->n_prompts && st == CEL_OK; pi++) {
        const cel_template *t = k->prompts[pi];
        if (bucket && t->quality && strcmp(bucket, t->quality) != 0) continue;
        cel_chunk *segs;
        size_t n_segs, n_long, n_short;
        st = cel_gen_segment(d->text, d->len, (size_t)t->max_input_tokens, (size_t)k->cfg.min_segment_tokens,
                             &p->be->counter, &segs, &n_segs, &n_long, &n_short, err);
        if (st) break;
        cel_buf_reset(&key);
        if ((st = cel_buf_printf(&key, "%s/%s", d->id, t->name))) {
            free(segs);
            break;
        }
        /* segment drops go first in the prompt's block of records */
        for (size_t i = 0; i < n_long && !st; i++)
            st = cel__add_drop(p, d, CEL__ORD(ord, i), CEL_DROP_SEGMENT_TOO_LONG, key.data, NULL);
        for (size_t i = 0; i < n_short && !st; i++)
            st = cel__add_drop(p, d, CEL__ORD(ord, n_long + i), CEL_DROP_SEGMENT_TOO_SHORT, key.data, NULL);
        ord++;
        for (size_t si = 0; si < n_segs && st == CEL_OK; si++) {
            rephrase_unit *u = calloc(1, sizeof *u);
            if (!u) {
                st = CEL_ERR_NOMEM;
                break;
            }
            *u = (rephrase_unit){.prompt = pi, .seg_index = si, .unit_ord = ord++, .off = segs[si].off,
                                 .len = segs[si].len, .seg_tokens = segs[si].n_tokens};
            cel_buf_reset(&key);
            if ((st = cel_buf_printf(&key, "%s\x1f%s\x1f%zu", d->id, t->name, si))) {
                rephrase_free_unit(u);
                break;
            }
            u->seed = cel_gen_unit_seed(p->c.seed, key.data, key.len);
            cel_buf_reset(&key);
            if ((st = cel_buf_printf(&key, "%s/%s/%zu", d->id, t->name, si))) {
                rephrase_free_unit(u);
                break;
            }
            u->unit_id = cel_buf_steal(&key);
            cel_tmpl_var var = {"text", d->text + segs[si].off, segs[si].len};
            cel_buf_reset(&sys);
            cel_buf_reset(&usr);
            st = cel_template_render(t, &var, 1, &sys, &usr, err);
            if (st) {
                rephrase_free_unit(u);
                break;
            }
            st = cel__submit_rendered(p, d, t, &sys, &usr, u->seed, rephrase_done, u, err);
        }
        free(segs);
    }
    if (st == CEL_ERR_NOMEM) cel_error_set(err, st, "out of memory");
    cel_buf_free(&key);
    cel_buf_free(&sys);
    cel_buf_free(&usr);
    return st;
}

static const cel__pipe_ops rephrase_ops = {"rephrase", rephrase_start, rephrase_free_unit, rephrase_free};

cel_status cel_rephrase_create(const cel_rephrase_config *cfg, cel_gen_backend *be, const cel_gen_sink *sink,
                               cel_gen_pipeline **out, cel_error *err)
{
    *out = NULL;
    if (cfg->min_doc_tokens < 0 || cfg->min_segment_tokens < 0)
        return cel_error_set(err, CEL_ERR_INVALID, "rephrase: token minimums must be >= 0");
    cel_gen_pipeline *p;
    CEL_TRY(cel__pipeline_new(sizeof(rephrase_kind), &rephrase_ops, &cfg->c, be, sink, &p, err));
    rephrase_kind *k = p->kind;
    k->cfg = *cfg;
    k->cfg.prompts = NULL;
    k->cfg.n_prompts = 0;
    cel_status st = cel__resolve_tagged(cfg->templates, CEL_TMPL_REPHRASE, cfg->prompts, cfg->n_prompts, &k->prompts,
                                        &k->n_prompts, &k->tags, err);
    if (st) {
        cel_gen_pipeline_free(p);
        return st;
    }
    *out = p;
    return CEL_OK;
}
