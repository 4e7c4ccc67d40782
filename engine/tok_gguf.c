/*
 * tok_gguf.c - builds a tokenizer from GGUF metadata (tokenizer.ggml.*), the
 * way llama.cpp reads the same keys:
 *   model       "gpt2" (byte-level BPE: .tokens + .merges + .pre) or "llama"
 *               (SentencePiece: .tokens + .scores, <0xNN> byte tokens)
 *   token_type  1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
 *   bos/eos/unknown/eot/eom_token_id, add_bos_token, add_eos_token, add_space_prefix
 *   tokenizer.chat_template
 */
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

static cel_status get_id(const cel_gguf *g, const char *key, int32_t n_vocab, int32_t *out, cel_error *err)
{
    int64_t v;
    cel_status st = cel_gguf_get_i64(g, key, &v, err);
    if (st == CEL_ERR_NOT_FOUND) {
        cel_error_clear(err);
        return CEL_OK;
    }
    CEL_TRY(st);
    if (v >= 0 && v < n_vocab) *out = (int32_t)v; /* some converters write -1 or n_vocab for "none" */
    return CEL_OK;
}

static cel_status get_flag(const cel_gguf *g, const char *key, bool *out, cel_error *err)
{
    cel_status st = cel_gguf_get_bool(g, key, out, err);
    if (st == CEL_ERR_NOT_FOUND) {
        cel_error_clear(err);
        return CEL_OK;
    }
    return st;
}

static uint16_t attr_of_type(int64_t type)
{
    switch (type) {
    case 2: return CEL__TOK_UNKNOWN;
    case 3: return CEL__TOK_CONTROL;
    case 4: return CEL__TOK_USER;
    case 5: return CEL__TOK_UNUSED;
    case 6: return CEL__TOK_BYTE;
    default: return CEL__TOK_NORMAL; /* 0 (undefined) and 1 */
    }
}

static int64_t arr_int(cel_gguf_type et, const void *data, uint64_t i)
{
    const unsigned char *p = data;
    switch (et) {
    case CEL_GGUF_U8: return p[i];
    case CEL_GGUF_I8: return (int8_t)p[i];
    case CEL_GGUF_U16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case CEL_GGUF_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case CEL_GGUF_U32: { uint32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case CEL_GGUF_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case CEL_GGUF_U64: { uint64_t v; memcpy(&v, p + 8 * i, 8); return (int64_t)v; }
    case CEL_GGUF_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return v; }
    default: return 1;
    }
}

static cel_status build(const cel_gguf *g, cel_tokenizer **out, cel_error *err)
{
    cel_gguf_str model;
    cel_status st = cel_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (st) return st;
    cel_tok_kind kind;
    if (model.len == 4 && !memcmp(model.p, "gpt2", 4)) kind = CEL_TOK_BPE_BYTE;
    else if (model.len == 5 && !memcmp(model.p, "llama", 5)) kind = CEL_TOK_SPM_BPE;
    else
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "tokenizer.ggml.model '%.*s' is not supported (gpt2, llama)",
                             (int)(model.len > 64 ? 64 : model.len), model.p);
    const cel_gguf_str *toks;
    uint64_t n;
    CEL_TRY(cel_gguf_get_strs(g, "tokenizer.ggml.tokens", &toks, &n, err));
    if (n == 0 || n > (1u << 24))
        return cel_error_set(err, CEL_ERR_FORMAT, "tokenizer.ggml.tokens has %llu entries", (unsigned long long)n);
    cel_gguf_type et = CEL_GGUF_I32;
    uint64_t nt = 0;
    const void *types = NULL;
    st = cel_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &nt, &types, err);
    if (st == CEL_ERR_NOT_FOUND) {
        cel_error_clear(err);
        types = NULL;
    } else if (st)
        return st;
    else if (nt != n || et == CEL_GGUF_F32 || et == CEL_GGUF_F64 || et == CEL_GGUF_BOOL || et == CEL_GGUF_STRING)
        return cel_error_set(err, CEL_ERR_FORMAT, "tokenizer.ggml.token_type: %llu integers expected (one per token)",
                             (unsigned long long)n);

    CEL_TRY(cel__tok_new(kind, (int32_t)n, out, err));
    cel_tokenizer *t = *out;
    char *buf = NULL;
    size_t buf_cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint16_t attr = types ? attr_of_type(arr_int(et, types, i)) : CEL__TOK_NORMAL;
        const char *s = toks[i].p;
        size_t len = (size_t)toks[i].len;
        if (kind == CEL_TOK_BPE_BYTE && (attr & CEL__TOK_NORMAL)) {
            if (len > buf_cap) {
                char *b = realloc(buf, len);
                if (!b) {
                    free(buf);
                    return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
                }
                buf = b;
                buf_cap = len;
            }
            int bn = cel__bytelevel_decode(s, len, buf);
            if (bn >= 0) {
                s = buf;
                len = (size_t)bn;
            }
        }
        st = cel__tok_set(t, (int32_t)i, s, len, attr, err);
        if (st) {
            free(buf);
            cel_error_prefix(err, "tokenizer.ggml.tokens[%llu]", (unsigned long long)i);
            return st;
        }
    }
    free(buf);
    CEL_TRY(cel__tok_index(t, err));

    int32_t unk = -1, eot = -1, eom = -1;
    CEL_TRY(get_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err));
    CEL_TRY(get_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err));
    CEL_TRY(get_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &unk, err));
    CEL_TRY(get_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &eot, err));
    CEL_TRY(get_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, &eom, err));
    if (eot >= 0) t->tok_attr[eot] |= CEL__TOK_EOG;
    if (eom >= 0) t->tok_attr[eom] |= CEL__TOK_EOG;

    bool add_bos = kind == CEL_TOK_SPM_BPE, add_eos = false, add_space = kind == CEL_TOK_SPM_BPE;
    if (kind == CEL_TOK_SPM_BPE) {
        const void *sc;
        uint64_t ns;
        cel_gguf_type st_t;
        CEL_TRY(cel_gguf_get_arr(g, "tokenizer.ggml.scores", &st_t, &ns, &sc, err));
        if (st_t != CEL_GGUF_F32 || ns != n)
            return cel_error_set(err, CEL_ERR_FORMAT, "tokenizer.ggml.scores: %llu f32 values expected",
                                 (unsigned long long)n);
        t->scores = malloc(n * sizeof *t->scores);
        if (!t->scores) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        memcpy(t->scores, sc, n * sizeof *t->scores);
        CEL_TRY(cel__tok_merges_from_scores(t, err));
        t->byte_fallback = true;
        t->unk = unk >= 0 ? unk : cel_tokenizer_find(t, "<unk>");
        snprintf(t->pre_name, sizeof t->pre_name, "spm");
    } else {
        const cel_gguf_str *merges;
        uint64_t nm;
        CEL_TRY(cel_gguf_get_strs(g, "tokenizer.ggml.merges", &merges, &nm, err));
        CEL_TRY(cel__tok_merges_reserve(t, nm, err));
        char *buf = NULL;
        size_t buf_cap = 0;
        for (uint64_t i = 0; i < nm; i++) {
            const char *s = merges[i].p;
            size_t len = (size_t)merges[i].len;
            const char *sp = memchr(s, ' ', len);
            int32_t l = -1, r = -1;
            if (sp) {
                if (len > buf_cap) {
                    char *nb = realloc(buf, len);
                    if (!nb) {
                        free(buf);
                        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
                    }
                    buf = nb;
                    buf_cap = len;
                }
                size_t al = (size_t)(sp - s);
                int na = cel__bytelevel_decode(s, al, buf), nb = cel__bytelevel_decode(sp + 1, len - al - 1, buf + al);
                if (na >= 0) l = cel__tok_lookup(t, buf, (size_t)na);
                if (nb >= 0) r = cel__tok_lookup(t, buf + al, (size_t)nb);
            }
            st = l >= 0 && r >= 0 ? cel__tok_add_merge(t, l, r, (int32_t)i, err) : CEL_ERR_NOT_FOUND;
            if (st) {
                free(buf);
                if (st != CEL_ERR_NOT_FOUND) return st;
                return cel_error_set(err, CEL_ERR_FORMAT,
                                     "tokenizer.ggml.merges[%llu] ('%.*s') is not two tokens of the vocabulary",
                                     (unsigned long long)i, (int)(len > 64 ? 64 : len), s);
            }
        }
        free(buf);
        cel_gguf_str pre = {"default", 7};
        st = cel_gguf_get_str(g, "tokenizer.ggml.pre", &pre, err);
        if (st == CEL_ERR_NOT_FOUND) cel_error_clear(err);
        else if (st)
            return st;
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(pre.len > 31 ? 31 : pre.len), pre.p);
        const char *re = cel__tok_regex_for(name);
        if (!re)
            return cel_error_set(err, CEL_ERR_UNSUPPORTED,
                                 "tokenizer.ggml.pre '%s' is not supported (gpt-2, default, llama-bpe/llama3, qwen2)",
                                 name);
        CEL_TRY(cel__tok_set_regex(t, re, err));
        t->ignore_merges = re == cel__tok_regex_for("llama3");
        if (t->ignore_merges) add_bos = true;
        snprintf(t->pre_name, sizeof t->pre_name, "%s", re == cel__tok_regex_for("llama3") ? "llama3"
                                                        : re == cel__tok_regex_for("qwen2") ? "qwen2"
                                                                                              : "gpt2");
    }
    CEL_TRY(get_flag(g, "tokenizer.ggml.add_bos_token", &add_bos, err));
    CEL_TRY(get_flag(g, "tokenizer.ggml.add_eos_token", &add_eos, err));
    CEL_TRY(get_flag(g, "tokenizer.ggml.add_space_prefix", &add_space, err));
    if (kind == CEL_TOK_SPM_BPE) {
        t->spm_prefix = add_space ? CEL__SPM_PREFIX_SEGMENT : CEL__SPM_PREFIX_NONE;
        t->decode_strip_space = add_space;
    }
    if (add_bos && t->bos >= 0) t->prefix_ids[t->n_prefix++] = t->bos;
    if (add_eos && t->eos >= 0) t->suffix_ids[t->n_suffix++] = t->eos;

    cel_gguf_str tmpl;
    st = cel_gguf_get_str(g, "tokenizer.chat_template", &tmpl, err);
    if (st == CEL_ERR_NOT_FOUND) cel_error_clear(err);
    else if (st)
        return st;
    else {
        t->chat_template = malloc((size_t)tmpl.len + 1);
        if (!t->chat_template) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        memcpy(t->chat_template, tmpl.p, (size_t)tmpl.len);
        t->chat_template[tmpl.len] = 0;
    }
    return cel__tok_finish(t, err);
}

cel_status cel_tokenizer_from_gguf(const cel_gguf *g, cel_tokenizer **out, cel_error *err)
{
    *out = NULL;
    cel_tokenizer *t = NULL;
    cel_status st = build(g, &t, err);
    if (st) {
        cel_tokenizer_free(t);
        return st;
    }
    *out = t;
    return CEL_OK;
}
