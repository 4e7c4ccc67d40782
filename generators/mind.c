/*
 * mind.c - MIND: math documents -> chunks -> conversations in chosen styles,
 * post-processed and filtered (structure, length, repetition, prompt echo,
 * truncation).
 *
 * Unit = (document, chunk index, style). Its key "<id>\x1f<chunk>\x1f<style>"
 * seeds the generation, so a conversation does not depend on which other
 * units run beside it.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "gen_internal.h"

void cel_mind_config_default(cel_mind_config *c)
{
    memset(c, 0, sizeof *c);
    cel_sampling_default(&c->c.sampling);
    c->c.sampling.temperature = 1.0f;
    c->c.sampling.top_p = 0.9f;
    c->c.sampling.max_tokens = 1024;
    c->c.max_inflight_docs = 64;
    c->mode = CEL_MIND_STYLES_ALL;
    c->chunk_tokens = 500;
    c->min_chunk_tokens = 0;
    c->min_output_tokens = 50;
    c->min_turns = 2;
    c->max_repetition = 0.3;
    c->max_echo = 0.2;
}

/* ------------------------------------------------------- dialogue check */

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* If the line [s, e) opens a turn of one of the speakers, returns the speaker
 * index (0/1) and the content start; else -1. Accepts "Label:", "**Label:**",
 * "**Label**:", "- Label:" and case differences. */
static int turn_of(const char *s, const char *e, const char *const speakers[2], const char **content)
{
    const char *p = s;
    while (p < e && is_blank(*p)) p++;
    if (e - p >= 2 && p[0] == '-' && p[1] == ' ') p += 2;
    if (e - p >= 2 && ((p[0] == '*' && p[1] == '*') || (p[0] == '_' && p[1] == '_'))) p += 2;
    int best = -1;
    size_t best_len = 0;
    for (int k = 0; k < 2; k++) {
        size_t n = strlen(speakers[k]);
        if ((size_t)(e - p) < n || n <= best_len) continue;
        bool eq = true;
        for (size_t i = 0; i < n && eq; i++) eq = tolower((unsigned char)p[i]) == tolower((unsigned char)speakers[k][i]);
        if (!eq) continue;
        const char *q = p + n;
        if (e - q >= 2 && ((q[0] == '*' && q[1] == '*') || (q[0] == '_' && q[1] == '_'))) q += 2;
        if (q >= e || *q != ':') continue;
        q++;
        if (e - q >= 2 && ((q[0] == '*' && q[1] == '*') || (q[0] == '_' && q[1] == '_'))) q += 2;
        while (q < e && is_blank(*q)) q++;
        best = k;
        best_len = n;
        *content = q;
    }
    return best;
}

cel_status cel_mind_check_dialogue(const char *text, size_t len, const char *const speakers[2], int min_turns,
                                   cel_buf *out, cel_gen_drop *drop)
{
    *drop = CEL_DROP__COUNT;
    const char *p = text, *end = text + len;
    int turns[2] = {0, 0};
    int last = -1;
    bool alternating = true, empty_turn = false;
    /* current turn's content, accumulated before being written */
    cel_buf turn;
    cel_buf_init(&turn);
    cel_status st = CEL_OK;
#define CLOSE_TURN()                                                                                               \
    do {                                                                                                           \
        if (last >= 0) {                                                                                           \
            const char *ts = turn.data ? turn.data : "";                                                           \
            size_t tl = turn.len;                                                                                  \
            cel__trim(&ts, &tl);                                                                                   \
            if (tl == 0) empty_turn = true;                                                                        \
            if (out->len && !st) st = cel_buf_puts(out, "\n\n");                                                   \
            if (!st) st = cel_buf_puts(out, speakers[last]);                                                       \
            if (!st) st = cel_buf_puts(out, ": ");                                                                 \
            if (!st) st = cel_buf_append(out, ts, tl);                                                             \
            cel_buf_reset(&turn);                                                                                  \
        }                                                                                                          \
    } while (0)
    while (p < end && st == CEL_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *content;
        int who = turn_of(p, le, speakers, &content);
        if (who >= 0) {
            CLOSE_TURN();
            if (who == last) alternating = false;
            turns[who]++;
            last = who;
            st = cel_buf_append(&turn, content, (size_t)(le - content));
        } else if (last >= 0) {
            /* continuation of the current turn (text before the first turn is a preamble and dropped) */
            st = cel_buf_putc(&turn, '\n');
            if (!st) {
                const char *e = le;
                while (e > p && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
                st = cel_buf_append(&turn, p, (size_t)(e - p));
            }
        }
        p = nl ? nl + 1 : end;
    }
    CLOSE_TURN();
#undef CLOSE_TURN
    cel_buf_free(&turn);
    if (st) return CEL_ERR_NOMEM;
    if (turns[0] < min_turns || turns[1] < min_turns || empty_turn) *drop = CEL_DROP_STRUCTURE;
    else if (!alternating) *drop = CEL_DROP_NOT_ALTERNATING;
    if (!out->data) CEL_TRY(cel_buf_puts(out, ""));
    return CEL_OK;
}

/* ------------------------------------------------------------- pipeline */

typedef struct mind_kind {
    cel_mind_config cfg;
    const cel_template **styles;
    size_t n_styles;
    char (*tags)[96]; /* template tag per style */
} mind_kind;

typedef struct mind_unit {
    size_t chunk_index;
    size_t style; /* index into styles */
    size_t unit_ord;
    size_t chunk_off, chunk_len;
    uint64_t seed;
    char *instructions; /* the prompt with an empty {{text}}: what an echo would copy */
    char *prompt;       /* the whole prompt (instructions + chunk) */
    char *unit_id;
} mind_unit;

static void mind_free_unit(void *u)
{
    mind_unit *m = u;
    if (!m) return;
    free(m->instructions);
    free(m->prompt);
    free(m->unit_id);
    free(m);
}

static void mind_free(cel_gen_pipeline *p)
{
    mind_kind *k = p->kind;
    if (!k) return;
    free(k->styles);
    free(k->tags);
    free(k);
}

static void drop_unit(cel_gen_pipeline *p, cel__doc *d, mind_unit *u, uint32_t sample, cel_gen_drop why,
                      const char *detail)
{
    cel__add_drop(p, d, CEL__ORD(u->unit_ord, sample), why, u->unit_id, detail);
}

static void mind_done(cel_gen_pipeline *p, cel__doc *d, void *unit, const cel_gen_result *r)
{
    mind_kind *k = p->kind;
    mind_unit *u = unit;
    const cel_template *t = k->styles[u->style];
    if (r->status != CEL_OK) {
        drop_unit(p, d, u, 0, CEL_DROP_GEN_ERROR, r->error);
        return;
    }
    const char *sp[2] = {t->speakers[0], t->speakers[1]};
    for (uint32_t s = 0; s < r->n; s++) {
        const cel_gen_sample *smp = &r->samples[s];
        if (smp->finish == CEL_FINISH_LENGTH) {
            drop_unit(p, d, u, s, CEL_DROP_TRUNCATED, smp->text);
            continue;
        }
        if (smp->finish == CEL_FINISH_ERROR || smp->finish == CEL_FINISH_CANCELLED) {
            drop_unit(p, d, u, s, CEL_DROP_GEN_ERROR, cel_finish_name(smp->finish));
            continue;
        }
        const char *txt = smp->text ? smp->text : "";
        size_t tl = smp->len;
        cel__trim(&txt, &tl);
        if (tl == 0) {
            drop_unit(p, d, u, s, CEL_DROP_EMPTY_OUTPUT, NULL);
            continue;
        }
        cel_buf clean, text;
        cel_buf_init(&clean);
        cel_buf_init(&text);
        cel_gen_drop why;
        cel_error e;
        cel_error_clear(&e);
        cel_status st = cel_mind_check_dialogue(txt, tl, sp, k->cfg.min_turns, &clean, &why);
        if (st) {
            cel_error_set(&e, st, "out of memory");
            goto fail;
        }
        if (why != CEL_DROP__COUNT) {
            drop_unit(p, d, u, s, why, smp->text);
            goto next;
        }
        size_t ntok;
        if ((st = cel__count(&p->be->counter, clean.data, clean.len, &ntok, &e))) goto fail;
        if ((int64_t)ntok < k->cfg.min_output_tokens) {
            drop_unit(p, d, u, s, CEL_DROP_TOO_SHORT, smp->text);
            goto next;
        }
        if (cel_gen_repetition(clean.data, clean.len, 5) > k->cfg.max_repetition) {
            drop_unit(p, d, u, s, CEL_DROP_REPETITION, smp->text);
            goto next;
        }
        if (cel_gen_overlap(clean.data, clean.len, u->instructions, strlen(u->instructions), 8) > k->cfg.max_echo ||
            cel_gen_overlap(clean.data, clean.len, u->prompt, strlen(u->prompt), 8) > 0.8) {
            drop_unit(p, d, u, s, CEL_DROP_PROMPT_ECHO, smp->text);
            goto next;
        }
        const char *chunk = d->text + u->chunk_off;
        if (k->cfg.with_chunk == CEL_MIND_CHUNK_CONCAT) {
            if (cel_buf_append(&text, chunk, u->chunk_len) || cel_buf_puts(&text, "\n\n") ||
                cel_buf_append(&text, clean.data, clean.len)) {
                cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
                goto fail;
            }
            if ((st = cel__count(&p->be->counter, text.data, text.len, &ntok, &e))) goto fail;
        } else {
            text = clean;
            cel_buf_init(&clean);
        }
        {
            json_t *rec = json_object();
            char id[1200];
            if (r->n > 1) snprintf(id, sizeof id, "%s/%u", u->unit_id, s);
            else snprintf(id, sizeof id, "%s", u->unit_id);
            bool bad = !rec || cel__json_set_str(rec, "id", id, strlen(id)) ||
                       cel__json_set_str(rec, "source_id", d->id, strlen(d->id)) ||
                       json_object_set_new(rec, "chunk_index", json_integer((json_int_t)u->chunk_index)) ||
                       cel__json_set_str(rec, "style", t->name, strlen(t->name)) ||
                       cel__json_set_str(rec, "text", text.data, text.len) ||
                       json_object_set_new(rec, "tokens", json_integer((json_int_t)ntok)) ||
                       cel__json_set_str(rec, "model", p->model_name, strlen(p->model_name)) ||
                       cel__json_set_str(rec, "template", k->tags[u->style], strlen(k->tags[u->style]));
            if (!bad) {
                cel_sampling sm = p->c.sampling;
                if (t->max_output_tokens > 0) sm.max_tokens = t->max_output_tokens;
                bad = json_object_set_new(rec, "sampling", cel__sampling_json(&sm)) ||
                      json_object_set_new(rec, "seed", json_integer((json_int_t)u->seed));
            }
            if (!bad && k->cfg.with_chunk == CEL_MIND_CHUNK_FIELD)
                bad = cel__json_set_str(rec, "chunk", chunk, u->chunk_len);
            if (bad) {
                json_decref(rec);
                cel_error_set(&e, CEL_ERR_NOMEM, "out of memory");
                goto fail;
            }
            cel__add_record(p, d, CEL__ORD(u->unit_ord, s), rec, ntok, 0, id);
        }
    next:
        cel_buf_free(&clean);
        cel_buf_free(&text);
        continue;
    fail:
        cel_buf_free(&clean);
        cel_buf_free(&text);
        cel__fail(p, &e);
        return;
    }
}

static cel_status mind_start(cel_gen_pipeline *p, cel__doc *d, cel_error *err)
{
    mind_kind *k = p->kind;
    cel_chunk *chunks;
    size_t n_chunks;
    cel_status st = cel__chunk_doc(p, d, k->cfg.chunk_tokens, &chunks, &n_chunks, err);
    if (st || !chunks) return st;
    size_t ord = 0;
    cel_buf key, sys, usr, instr;
    cel_buf_init(&key);
    cel_buf_init(&sys);
    cel_buf_init(&usr);
    cel_buf_init(&instr);
    for (size_t ci = 0; ci < n_chunks && st == CEL_OK; ci++) {
        const cel_chunk *ch = &chunks[ci];
        if ((int64_t)ch->n_tokens < k->cfg.min_chunk_tokens) {
            cel_buf_reset(&key);
            if ((st = cel_buf_printf(&key, "%s/%zu", d->id, ci))) break;
            st = cel__add_drop(p, d, CEL__ORD(ord++, 0), CEL_DROP_CHUNK_TOO_SHORT, key.data, NULL);
            continue;
        }
        /* styles for this chunk */
        size_t first = 0, count = k->n_styles;
        if (k->cfg.mode == CEL_MIND_STYLES_RANDOM) {
            cel_buf_reset(&key);
            if ((st = cel_buf_printf(&key, "%s\x1f%zu\x1fstyle", d->id, ci))) break;
            cel_rng rng;
            cel_rng_seed(&rng, cel_gen_unit_seed(p->c.seed, key.data, key.len));
            first = (size_t)(cel_rng_next(&rng) % k->n_styles);
            count = 1;
        }
        for (size_t si = first; si < first + count && st == CEL_OK; si++) {
            const cel_template *t = k->styles[si];
            mind_unit *u = calloc(1, sizeof *u);
            if (!u) {
                st = CEL_ERR_NOMEM;
                break;
            }
            u->chunk_index = ci;
            u->style = si;
            u->unit_ord = ord++;
            u->chunk_off = ch->off;
            u->chunk_len = ch->len;
            cel_buf_reset(&key);
            if ((st = cel_buf_printf(&key, "%s\x1f%zu\x1f%s", d->id, ci, t->name))) {
                mind_free_unit(u);
                break;
            }
            u->seed = cel_gen_unit_seed(p->c.seed, key.data, key.len);
            cel_buf_reset(&key);
            if ((st = cel_buf_printf(&key, "%s/%zu/%s", d->id, ci, t->name))) {
                mind_free_unit(u);
                break;
            }
            u->unit_id = cel_buf_steal(&key);
            cel_tmpl_var vars[4] = {{"text", d->text + ch->off, ch->len},
                                    {"speaker1", t->speakers[0], strlen(t->speakers[0])},
                                    {"speaker2", t->speakers[1], strlen(t->speakers[1])},
                                    {"style", t->name, strlen(t->name)}};
            cel_buf_reset(&sys);
            cel_buf_reset(&usr);
            cel_buf_reset(&instr);
            st = cel_template_render(t, vars, 4, &sys, &usr, err);
            if (!st) {
                vars[0].len = 0;
                st = cel_template_render(t, vars, 4, &instr, &instr, err);
            }
            if (!st && (cel_buf_puts(&sys, "") || cel_buf_puts(&instr, ""))) st = CEL_ERR_NOMEM;
            if (st) {
                mind_free_unit(u);
                break;
            }
            cel_buf prompt;
            cel_buf_init(&prompt);
            if (cel_buf_append(&prompt, sys.data, sys.len) || cel_buf_putc(&prompt, '\n') ||
                cel_buf_append(&prompt, usr.data, usr.len)) {
                cel_buf_free(&prompt);
                mind_free_unit(u);
                st = CEL_ERR_NOMEM;
                break;
            }
            u->prompt = cel_buf_steal(&prompt);
            u->instructions = cel_buf_steal(&instr);
            st = cel__submit_rendered(p, d, t, &sys, &usr, u->seed, mind_done, u, err);
        }
    }
    if (st == CEL_ERR_NOMEM) cel_error_set(err, st, "out of memory");
    cel_buf_free(&key);
    cel_buf_free(&sys);
    cel_buf_free(&usr);
    cel_buf_free(&instr);
    free(chunks);
    return st;
}

static const cel__pipe_ops mind_ops = {"mind", mind_start, mind_free_unit, mind_free};

cel_status cel__resolve_templates(const cel_template_set *set, cel_tmpl_kind kind, const char *const *names, size_t n,
                                  const cel_template ***out, size_t *n_out, cel_error *err)
{
    *out = NULL;
    *n_out = 0;
    if (!set) return cel_error_set(err, CEL_ERR_INVALID, "no template set given");
    size_t cap = n ? n : cel_template_set_count(set);
    const cel_template **v = calloc(cap ? cap : 1, sizeof *v);
    if (!v) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    size_t nv = 0;
    if (n) {
        for (size_t i = 0; i < n; i++) {
            const cel_template *t = cel_template_set_find(set, names[i]);
            if (!t) {
                free(v);
                return cel_error_set(err, CEL_ERR_NOT_FOUND, "no template named '%s'", names[i]);
            }
            if (t->kind != kind) {
                free(v);
                return cel_error_set(err, CEL_ERR_INVALID, "template '%s' (%s) is a %s template, not %s", names[i],
                                     t->path, cel_tmpl_kind_name(t->kind), cel_tmpl_kind_name(kind));
            }
            for (size_t j = 0; j < nv; j++)
                if (v[j] == t) {
                    free(v);
                    return cel_error_set(err, CEL_ERR_INVALID, "template '%s' listed twice", names[i]);
                }
            v[nv++] = t;
        }
    } else {
        for (size_t i = 0; i < cel_template_set_count(set); i++) {
            const cel_template *t = cel_template_set_at(set, i);
            if (t->kind == kind) v[nv++] = t;
        }
    }
    if (nv == 0) {
        free(v);
        return cel_error_set(err, CEL_ERR_NOT_FOUND, "no %s templates loaded", cel_tmpl_kind_name(kind));
    }
    *out = v;
    *n_out = nv;
    return CEL_OK;
}

cel_status cel__resolve_tagged(const cel_template_set *set, cel_tmpl_kind kind, const char *const *names, size_t n,
                               const cel_template ***out, size_t *n_out, char (**tags)[96], cel_error *err)
{
    *tags = NULL;
    CEL_TRY(cel__resolve_templates(set, kind, names, n, out, n_out, err));
    *tags = calloc(*n_out, sizeof **tags);
    if (!*tags) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < *n_out; i++) cel__template_tag((*out)[i], (*tags)[i], sizeof (*tags)[i]);
    return CEL_OK;
}

cel_status cel_mind_create(const cel_mind_config *cfg, cel_gen_backend *be, const cel_gen_sink *sink,
                           cel_gen_pipeline **out, cel_error *err)
{
    *out = NULL;
    if (cfg->chunk_tokens < 1) return cel_error_set(err, CEL_ERR_INVALID, "mind: chunk_tokens must be >= 1");
    if (cfg->min_turns < 1) return cel_error_set(err, CEL_ERR_INVALID, "mind: min_turns must be >= 1");
    cel_gen_pipeline *p;
    CEL_TRY(cel__pipeline_new(sizeof(mind_kind), &mind_ops, &cfg->c, be, sink, &p, err));
    mind_kind *k = p->kind;
    k->cfg = *cfg;
    k->cfg.styles = NULL; /* not kept: resolved below */
    k->cfg.n_styles = 0;
    cel_status st = cel__resolve_tagged(cfg->templates, CEL_TMPL_MIND, cfg->styles, cfg->n_styles, &k->styles,
                                        &k->n_styles, &k->tags, err);
    if (st) {
        cel_gen_pipeline_free(p);
        return st;
    }
    *out = p;
    return CEL_OK;
}
