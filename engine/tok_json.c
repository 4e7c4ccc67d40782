/*
 * tok_json.c - loads a Hugging Face tokenizer.json (plus tokenizer_config.json
 * beside it for the chat template and bos/eos names), or GPT-2's original
 * encoder.json + vocab.bpe pair.
 *
 * Supported pipeline pieces (anything else is rejected as unsupported, naming it):
 *   model       BPE (merges as "a b" strings or ["a", "b"] pairs; byte_fallback,
 *               fuse_unk, unk_token, ignore_merges)
 *   normalizer  NFC, Prepend("▁"), Replace(" " -> "▁"), Sequence of those
 *   pre_tokenizer Split(Regex, Isolated), ByteLevel(add_prefix_space, use_regex),
 *               Metaspace(replacement ▁, prepend_scheme / add_prefix_space), Sequence
 *   post_processor TemplateProcessing (single), ByteLevel, Sequence
 *   decoder     ByteLevel, Metaspace, Replace/ByteFallback/Fuse/Strip sequences
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

#define MAX_JSON_BYTES ((size_t)1 << 30)

/* ---- GPT-2 byte <-> character mapping ---- */

/* The printable bytes map to themselves; the other 68 (0x00-0x20, 0x7F-0xA0,
 * 0xAD) map to U+0100.. in byte order. Returns the byte, or -1. */
static int bytelevel_char_to_byte(uint32_t cp)
{
    if ((cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp < 0x100 || cp >= 0x100 + 68) return -1;
    uint32_t n = cp - 0x100;
    if (n < 33) return (int)n;
    if (n < 33 + 34) return (int)(0x7F + n - 33);
    return 0xAD;
}

int cel__bytelevel_decode(const char *s, size_t len, char *out)
{
    const unsigned char *u = (const unsigned char *)s;
    int n = 0;
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x80) { /* ASCII fast path */
            if (u[i] < '!' || u[i] > '~') return -1;
            out[n++] = (char)u[i++];
            continue;
        }
        size_t cl = cel_utf8_seq_len(u + i, len - i);
        if (!cl) return -1;
        int b = bytelevel_char_to_byte(cel_utf8_decode(u + i, cl));
        if (b < 0) return -1;
        out[n++] = (char)b;
        i += cl;
    }
    return n;
}

/* ---- helpers ---- */

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool jbool(json_t *o, const char *key, bool dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* A token given as "text" or {"content": "text"} (tokenizer_config.json). */
static const char *token_name(json_t *v)
{
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return jstr(v, "content");
    return NULL;
}

typedef struct load_ctx {
    const char *path;
    cel_tokenizer *t;
    bool byte_level;
    cel_error *err;
} load_ctx;

static cel_status fail(load_ctx *c, cel_status code, const char *fmt, const char *what)
{
    cel_error_set(c->err, code, fmt, what);
    cel_error_prefix(c->err, "%s", c->path);
    return code;
}

/* Stores token text s (JSON string) under id, undoing the byte-level mapping
 * for byte-level vocabularies. */
static cel_status set_token(load_ctx *c, int32_t id, const char *s, size_t len, uint16_t attr)
{
    if (c->byte_level && (attr & CEL__TOK_NORMAL)) {
        char stack[512];
        char *buf = len <= sizeof stack ? stack : malloc(len);
        if (!buf) return cel_error_set(c->err, CEL_ERR_NOMEM, "out of memory");
        int n = cel__bytelevel_decode(s, len, buf);
        cel_status st = n >= 0 ? cel__tok_set(c->t, id, buf, (size_t)n, attr, c->err)
                               : cel__tok_set(c->t, id, s, len, attr, c->err); /* not byte-level text: keep as is */
        if (buf != stack) free(buf);
        return st;
    }
    return cel__tok_set(c->t, id, s, len, attr, c->err);
}

/* ---- normalizer ---- */

static cel_status parse_normalizer(load_ctx *c, json_t *n, bool *prepend, bool *space_to_meta)
{
    if (!n || json_is_null(n)) return CEL_OK;
    const char *type = jstr(n, "type");
    if (!type) return fail(c, CEL_ERR_FORMAT, "normalizer without a \"type\"%s", "");
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(n, "normalizers");
        if (!json_is_array(arr)) return fail(c, CEL_ERR_FORMAT, "normalizer Sequence without \"normalizers\"%s", "");
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) CEL_TRY(parse_normalizer(c, e, prepend, space_to_meta));
        return CEL_OK;
    }
    if (!strcmp(type, "NFC")) {
        c->t->nfc = true;
        return CEL_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(n, "prepend");
        if (!p || strcmp(p, "\xe2\x96\x81") != 0)
            return fail(c, CEL_ERR_UNSUPPORTED, "normalizer Prepend of '%s' (only \"▁\" is supported)", p ? p : "?");
        *prepend = true;
        return CEL_OK;
    }
    if (!strcmp(type, "Replace")) {
        json_t *pat = json_object_get(n, "pattern");
        const char *from = pat ? jstr(pat, "String") : NULL, *to = jstr(n, "content");
        if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, "\xe2\x96\x81") != 0)
            return fail(c, CEL_ERR_UNSUPPORTED, "normalizer Replace%s (only \" \" -> \"▁\" is supported)", "");
        *space_to_meta = true;
        return CEL_OK;
    }
    return fail(c, CEL_ERR_UNSUPPORTED, "normalizer type '%s' is not supported", type);
}

/* ---- pre-tokenizer ---- */

typedef struct pre_info {
    const char *regex; /* the Split pattern, if any */
    bool byte_level, bl_prefix, bl_regex;
    bool metaspace, ms_prefix_first, ms_prefix_always, ms_split;
} pre_info;

static cel_status parse_pre(load_ctx *c, json_t *p, pre_info *pi)
{
    if (!p || json_is_null(p)) return CEL_OK;
    const char *type = jstr(p, "type");
    if (!type) return fail(c, CEL_ERR_FORMAT, "pre_tokenizer without a \"type\"%s", "");
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(p, "pretokenizers");
        if (!json_is_array(arr)) return fail(c, CEL_ERR_FORMAT, "pre_tokenizer Sequence without \"pretokenizers\"%s", "");
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) CEL_TRY(parse_pre(c, e, pi));
        return CEL_OK;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        const char *re = pat ? jstr(pat, "Regex") : NULL, *beh = jstr(p, "behavior");
        if (!re) return fail(c, CEL_ERR_UNSUPPORTED, "pre_tokenizer Split%s without a Regex pattern", "");
        if (!beh || strcmp(beh, "Isolated") != 0 || jbool(p, "invert", false))
            return fail(c, CEL_ERR_UNSUPPORTED, "pre_tokenizer Split behavior '%s' (only Isolated, not inverted)",
                        beh ? beh : "?");
        if (pi->regex) return fail(c, CEL_ERR_UNSUPPORTED, "more than one Split pre_tokenizer%s", "");
        pi->regex = re;
        return CEL_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        pi->byte_level = true;
        pi->bl_prefix = jbool(p, "add_prefix_space", false);
        pi->bl_regex = jbool(p, "use_regex", true);
        return CEL_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        const char *rep = jstr(p, "replacement");
        if (rep && strcmp(rep, "\xe2\x96\x81") != 0)
            return fail(c, CEL_ERR_UNSUPPORTED, "Metaspace replacement '%s' (only \"▁\")", rep);
        pi->metaspace = true;
        const char *scheme = jstr(p, "prepend_scheme");
        if (scheme) {
            pi->ms_prefix_first = !strcmp(scheme, "first");
            pi->ms_prefix_always = !strcmp(scheme, "always");
        } else
            pi->ms_prefix_always = jbool(p, "add_prefix_space", true);
        pi->ms_split = jbool(p, "split", true);
        return CEL_OK;
    }
    return fail(c, CEL_ERR_UNSUPPORTED, "pre_tokenizer type '%s' is not supported", type);
}

/* ---- post-processor ---- */

static cel_status post_special(load_ctx *c, json_t *pp, json_t *item, int32_t *ids, int *n)
{
    json_t *st = json_object_get(item, "SpecialToken");
    const char *name = st ? jstr(st, "id") : NULL;
    if (!name) return fail(c, CEL_ERR_FORMAT, "post_processor template item without a token%s", "");
    json_t *specials = json_object_get(pp, "special_tokens");
    json_t *sp = specials ? json_object_get(specials, name) : NULL;
    json_t *sids = sp ? json_object_get(sp, "ids") : NULL;
    if (!json_is_array(sids) || json_array_size(sids) == 0)
        return fail(c, CEL_ERR_FORMAT, "post_processor special token '%s' has no ids", name);
    size_t i;
    json_t *e;
    json_array_foreach(sids, i, e)
    {
        if (*n >= 4) return fail(c, CEL_ERR_UNSUPPORTED, "post_processor adds more than 4 tokens around '%s'", name);
        json_int_t v = json_integer_value(e);
        if (!json_is_integer(e) || v < 0 || v >= c->t->n_vocab)
            return fail(c, CEL_ERR_FORMAT, "post_processor special token '%s' has an id outside the vocabulary", name);
        ids[(*n)++] = (int32_t)v;
    }
    return CEL_OK;
}

static cel_status parse_post(load_ctx *c, json_t *pp)
{
    if (!pp || json_is_null(pp)) return CEL_OK;
    const char *type = jstr(pp, "type");
    if (!type) return fail(c, CEL_ERR_FORMAT, "post_processor without a \"type\"%s", "");
    if (!strcmp(type, "ByteLevel")) return CEL_OK;
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(pp, "processors");
        if (!json_is_array(arr)) return fail(c, CEL_ERR_FORMAT, "post_processor Sequence without \"processors\"%s", "");
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) CEL_TRY(parse_post(c, e));
        return CEL_OK;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(pp, "single");
        if (!json_is_array(single)) return fail(c, CEL_ERR_FORMAT, "TemplateProcessing without \"single\"%s", "");
        bool seen_seq = false;
        size_t i;
        json_t *e;
        c->t->n_prefix = c->t->n_suffix = 0;
        json_array_foreach(single, i, e)
        {
            if (json_object_get(e, "Sequence")) {
                if (seen_seq) return fail(c, CEL_ERR_UNSUPPORTED, "TemplateProcessing with two sequences%s", "");
                seen_seq = true;
            } else if (!seen_seq)
                CEL_TRY(post_special(c, pp, e, c->t->prefix_ids, &c->t->n_prefix));
            else
                CEL_TRY(post_special(c, pp, e, c->t->suffix_ids, &c->t->n_suffix));
        }
        return CEL_OK;
    }
    return fail(c, CEL_ERR_UNSUPPORTED, "post_processor type '%s' is not supported", type);
}

/* ---- decoder: only whether a leading space is stripped matters here ---- */

static void parse_decoder(load_ctx *c, json_t *d)
{
    if (!d || json_is_null(d)) return;
    const char *type = jstr(d, "type");
    if (!type) return;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(d, "decoders"), i, e) parse_decoder(c, e);
    } else if (!strcmp(type, "Strip")) {
        const char *content = jstr(d, "content");
        json_t *start = json_object_get(d, "start");
        if (content && !strcmp(content, " ") && json_integer_value(start) >= 1) c->t->decode_strip_space = true;
    } else if (!strcmp(type, "Metaspace")) {
        const char *scheme = jstr(d, "prepend_scheme");
        if (scheme ? strcmp(scheme, "never") != 0 : jbool(d, "add_prefix_space", true)) c->t->decode_strip_space = true;
    }
}

/* ---- merges ---- */

static cel_status add_merge_strings(load_ctx *c, size_t idx, const char *a, size_t al, const char *b, size_t bl)
{
    cel_tokenizer *t = c->t;
    int32_t l, r;
    if (c->byte_level) {
        char stack[1024];
        char *buf = al + bl <= sizeof stack ? stack : malloc(al + bl);
        if (!buf) return cel_error_set(c->err, CEL_ERR_NOMEM, "out of memory");
        int na = cel__bytelevel_decode(a, al, buf), nb = cel__bytelevel_decode(b, bl, buf + al);
        l = na < 0 ? -1 : cel__tok_lookup(t, buf, (size_t)na);
        r = nb < 0 ? -1 : cel__tok_lookup(t, buf + al, (size_t)nb);
        if (buf != stack) free(buf);
    } else {
        l = cel__tok_lookup(t, a, al);
        r = cel__tok_lookup(t, b, bl);
    }
    cel_status st = l < 0 || r < 0 ? CEL_ERR_NOT_FOUND : cel__tok_add_merge(t, l, r, (int32_t)idx, c->err);
    if (st != CEL_ERR_NOT_FOUND) return st;
    cel_error_set(c->err, CEL_ERR_FORMAT, "merge %zu ('%.*s' '%.*s') refers to a token that is not in the vocabulary",
                  idx, (int)(al > 64 ? 64 : al), a, (int)(bl > 64 ? 64 : bl), b);
    cel_error_prefix(c->err, "%s", c->path);
    return CEL_ERR_FORMAT;
}

static cel_status parse_merges(load_ctx *c, json_t *merges)
{
    if (!json_is_array(merges)) return fail(c, CEL_ERR_FORMAT, "model.merges is not an array%s", "");
    CEL_TRY(cel__tok_merges_reserve(c->t, json_array_size(merges), c->err));
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m)
    {
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t len = json_string_length(m);
            const char *sp = memchr(s, ' ', len);
            if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
                cel_error_set(c->err, CEL_ERR_FORMAT, "merge %zu is not two tokens separated by one space", i);
                cel_error_prefix(c->err, "%s", c->path);
                return CEL_ERR_FORMAT;
            }
            CEL_TRY(add_merge_strings(c, i, s, (size_t)(sp - s), sp + 1, len - (size_t)(sp + 1 - s)));
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            CEL_TRY(add_merge_strings(c, i, json_string_value(a), json_string_length(a), json_string_value(b),
                                      json_string_length(b)));
        } else {
            cel_error_set(c->err, CEL_ERR_FORMAT, "merge %zu is neither \"a b\" nor [\"a\", \"b\"]", i);
            cel_error_prefix(c->err, "%s", c->path);
            return CEL_ERR_FORMAT;
        }
    }
    return CEL_OK;
}

/* ---- tokenizer_config.json ---- */

static char *sibling(const char *path, const char *name)
{
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0;
    char *p = malloc(dir + strlen(name) + 1);
    if (!p) return NULL;
    memcpy(p, path, dir);
    strcpy(p + dir, name);
    return p;
}

/* Reads chat_template and bos/eos names from tokenizer_config.json beside path
 * (absent file: nothing to do; malformed file: an error naming it). */
static cel_status load_config(load_ctx *c)
{
    char *cfg = sibling(c->path, "tokenizer_config.json");
    if (!cfg) return cel_error_set(c->err, CEL_ERR_NOMEM, "out of memory");
    if (!cel_path_exists(cfg)) {
        free(cfg);
        return CEL_OK;
    }
    json_error_t je;
    json_t *root = json_load_file(cfg, JSON_DECODE_INT_AS_REAL, &je); /* model_max_length can be 1e30 */
    if (!json_is_object(root)) {
        cel_error_set(c->err, CEL_ERR_FORMAT, "%s:%d:%d: %s", cfg, je.line, je.column,
                      root ? "not a JSON object" : je.text);
        json_decref(root);
        free(cfg);
        return CEL_ERR_FORMAT;
    }
    cel_tokenizer *t = c->t;
    json_t *tmpl = json_object_get(root, "chat_template");
    const char *src = NULL;
    if (json_is_string(tmpl)) src = json_string_value(tmpl);
    else if (json_is_array(tmpl)) { /* [{"name": "default", "template": ...}, ...] */
        size_t i;
        json_t *e;
        json_array_foreach(tmpl, i, e)
        {
            const char *name = jstr(e, "name");
            if (!src || (name && !strcmp(name, "default"))) src = jstr(e, "template");
        }
    }
    cel_status st = CEL_OK;
    if (src && !(t->chat_template = strdup(src))) st = cel_error_set(c->err, CEL_ERR_NOMEM, "out of memory");
    const char *bos = token_name(json_object_get(root, "bos_token"));
    const char *eos = token_name(json_object_get(root, "eos_token"));
    if (bos) t->bos = cel_tokenizer_find(t, bos);
    if (eos) t->eos = cel_tokenizer_find(t, eos);
    json_decref(root);
    free(cfg);
    return st;
}

/* ---- tokenizer.json ---- */

static int32_t max_id_in(json_t *vocab, json_t *added, load_ctx *c, cel_status *st)
{
    int64_t mx = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24)) {
            *st = fail(c, CEL_ERR_FORMAT, "model.vocab entry '%s' has no valid id", k);
            return -1;
        }
        if (json_integer_value(v) > mx) mx = json_integer_value(v);
    }
    size_t i;
    json_array_foreach(added, i, v)
    {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24) ||
            !json_is_string(json_object_get(v, "content"))) {
            *st = fail(c, CEL_ERR_FORMAT, "added_tokens entry %s has no valid id or content", "");
            return -1;
        }
        if (json_integer_value(id) > mx) mx = json_integer_value(id);
    }
    return (int32_t)(mx + 1);
}

static bool is_byte_token(const char *s, size_t len)
{
    return len == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>';
}

static cel_status build_from_hf(load_ctx *c, json_t *root)
{
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return fail(c, CEL_ERR_FORMAT, "no \"model\" object%s", "");
    const char *mtype = jstr(model, "type");
    json_t *vocab = json_object_get(model, "vocab");
    if (mtype && strcmp(mtype, "BPE") != 0)
        return fail(c, CEL_ERR_UNSUPPORTED, "model type '%s' is not supported (only BPE)", mtype);
    if (!json_is_object(vocab)) return fail(c, CEL_ERR_FORMAT, "model.vocab is not an object%s", "");
    const char *cont = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((cont && *cont) || (eow && *eow))
        return fail(c, CEL_ERR_UNSUPPORTED, "BPE with subword prefix/suffix%s is not supported", "");
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added) && !json_is_null(added))
        return fail(c, CEL_ERR_FORMAT, "\"added_tokens\" is not an array%s", "");

    pre_info pi = {0};
    bool prepend = false, space_to_meta = false;
    cel_status st = CEL_OK;
    int32_t n_vocab = max_id_in(vocab, added, c, &st);
    if (st) return st;
    /* parse the pipeline first: it decides how token strings are stored */
    json_t *probe = json_object_get(root, "pre_tokenizer");
    CEL_TRY(parse_pre(c, probe, &pi));
    json_t *dec = json_object_get(root, "decoder");
    const char *dtype = dec ? jstr(dec, "type") : NULL;
    c->byte_level = pi.byte_level || (dtype && !strcmp(dtype, "ByteLevel"));
    bool byte_fallback = jbool(model, "byte_fallback", false);
    if (c->byte_level && byte_fallback)
        return fail(c, CEL_ERR_UNSUPPORTED, "byte-level BPE with byte_fallback%s", "");

    CEL_TRY(cel__tok_new(c->byte_level ? CEL_TOK_BPE_BYTE : CEL_TOK_SPM_BPE, n_vocab, &c->t, c->err));
    cel_tokenizer *t = c->t;
    CEL_TRY(parse_normalizer(c, json_object_get(root, "normalizer"), &prepend, &space_to_meta));

    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v)
    {
        int32_t id = (int32_t)json_integer_value(v);
        size_t len = strlen(k);
        uint16_t attr = CEL__TOK_NORMAL;
        if (!c->byte_level && byte_fallback && is_byte_token(k, len)) attr = CEL__TOK_BYTE;
        CEL_TRY(set_token(c, id, k, len, attr));
    }
    const char *unk = jstr(model, "unk_token");
    size_t i;
    json_array_foreach(added, i, v)
    {
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
        json_t *content = json_object_get(v, "content");
        uint16_t attr = jbool(v, "special", false) ? CEL__TOK_CONTROL : CEL__TOK_USER;
        if (jbool(v, "lstrip", false)) attr |= CEL__TOK_LSTRIP;
        if (jbool(v, "rstrip", false)) attr |= CEL__TOK_RSTRIP;
        if (jbool(v, "single_word", false)) attr |= CEL__TOK_SINGLE_WORD;
        if (unk && !strcmp(unk, json_string_value(content))) attr |= CEL__TOK_UNKNOWN;
        CEL_TRY(cel__tok_set(t, id, json_string_value(content), json_string_length(content), attr, c->err));
    }
    CEL_TRY(cel__tok_index(t, c->err));
    if (unk) {
        t->unk = cel_tokenizer_find(t, unk);
        if (t->unk < 0) return fail(c, CEL_ERR_FORMAT, "unk_token '%s' is not in the vocabulary", unk);
    }
    t->byte_fallback = byte_fallback;
    t->fuse_unk = jbool(model, "fuse_unk", false);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    json_t *merges = json_object_get(model, "merges");
    if (merges) CEL_TRY(parse_merges(c, merges));

    if (c->byte_level) {
        const char *re = pi.regex;
        if (!re && pi.bl_regex) re = cel__tok_regex_for("gpt2");
        if (re) CEL_TRY(cel__tok_set_regex(t, re, c->err));
        const char *names[] = {"gpt2", "llama3", "qwen2"};
        snprintf(t->pre_name, sizeof t->pre_name, "%s", re ? "custom" : "none");
        for (size_t n = 0; re && n < 3; n++)
            if (!strcmp(re, cel__tok_regex_for(names[n]))) snprintf(t->pre_name, sizeof t->pre_name, "%s", names[n]);
        t->byte_level_prefix = pi.bl_prefix;
        if (space_to_meta || prepend || pi.metaspace)
            return fail(c, CEL_ERR_UNSUPPORTED, "byte-level BPE with ▁ handling%s", "");
    } else {
        if (pi.regex) return fail(c, CEL_ERR_UNSUPPORTED, "Split pre_tokenizer in a SentencePiece-style BPE%s", "");
        if (pi.metaspace) {
            t->spm_prefix = pi.ms_prefix_always ? CEL__SPM_PREFIX_SEGMENT
                            : pi.ms_prefix_first ? CEL__SPM_PREFIX_FIRST
                                                 : CEL__SPM_PREFIX_NONE;
            t->spm_split_all = pi.ms_split; /* split=true: every ▁ starts a piece */
        } else {
            if (!space_to_meta && !prepend && !byte_fallback)
                return fail(c, CEL_ERR_UNSUPPORTED, "BPE without byte-level or ▁ handling%s", "");
            t->spm_prefix = prepend ? CEL__SPM_PREFIX_SEGMENT : CEL__SPM_PREFIX_NONE;
        }
    }
    CEL_TRY(parse_post(c, json_object_get(root, "post_processor")));
    parse_decoder(c, dec);
    if (t->n_prefix > 0) t->bos = t->prefix_ids[0];
    return CEL_OK;
}

/* GPT-2's encoder.json (token -> id) with vocab.bpe (merges) beside it. */
static cel_status build_from_encoder(load_ctx *c, json_t *vocab)
{
    c->byte_level = true;
    json_t *none = json_array();
    cel_status st = CEL_OK;
    int32_t n_vocab = max_id_in(vocab, none, c, &st);
    json_decref(none);
    if (st) return st;
    CEL_TRY(cel__tok_new(CEL_TOK_BPE_BYTE, n_vocab, &c->t, c->err));
    cel_tokenizer *t = c->t;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v)
    {
        uint16_t attr = !strcmp(k, "<|endoftext|>") ? CEL__TOK_CONTROL : CEL__TOK_NORMAL;
        CEL_TRY(set_token(c, (int32_t)json_integer_value(v), k, strlen(k), attr));
    }
    CEL_TRY(cel__tok_index(t, c->err));
    char *bpe = sibling(c->path, "vocab.bpe");
    if (!bpe) return cel_error_set(c->err, CEL_ERR_NOMEM, "out of memory");
    char *data = NULL;
    size_t len = 0;
    st = cel_read_file(bpe, MAX_JSON_BYTES, &data, &len, c->err);
    if (st) {
        cel_error_prefix(c->err, "GPT-2 encoder.json needs vocab.bpe beside it");
        free(bpe);
        return st;
    }
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += data[i] == '\n';
    st = cel__tok_merges_reserve(t, lines + 1, c->err);
    size_t rank = 0, line_no = 0;
    const char *saved = c->path;
    c->path = bpe;
    for (size_t i = 0; !st && i < len;) {
        const char *line = data + i, *nl = memchr(line, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - line) : len - i;
        i += ll + 1;
        line_no++;
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll == 0 || (line_no == 1 && line[0] == '#')) continue;
        const char *sp = memchr(line, ' ', ll);
        if (!sp) {
            st = cel_error_set(c->err, CEL_ERR_FORMAT, "%s:%zu: a merge line needs two tokens", bpe, line_no);
            break;
        }
        st = add_merge_strings(c, rank++, line, (size_t)(sp - line), sp + 1, ll - (size_t)(sp + 1 - line));
    }
    c->path = saved;
    free(data);
    free(bpe);
    if (st) return st;
    CEL_TRY(cel__tok_set_regex(t, cel__tok_regex_for("gpt2"), c->err));
    snprintf(t->pre_name, sizeof t->pre_name, "gpt2");
    t->bos = t->eos = cel_tokenizer_find(t, "<|endoftext|>");
    return CEL_OK;
}

/* GPT-2's encoder.json: a non-empty object of token -> integer id. */
static bool looks_like_encoder(json_t *root)
{
    const char *k;
    json_t *v;
    if (json_object_size(root) == 0) return false;
    json_object_foreach(root, k, v) if (!json_is_integer(v)) return false;
    return true;
}

/* Parses the JSON text of a tokenizer (data, len); with_config: also read the
 * tokenizer_config.json beside c->path. */
static cel_status load_json_impl(load_ctx *c, const char *data, size_t len, bool with_config)
{
    json_error_t je;
    json_t *root = json_loadb(data, len, 0, &je);
    if (!root) {
        cel_error_set(c->err, CEL_ERR_FORMAT, "%s:%d:%d: invalid JSON: %s", c->path, je.line, je.column, je.text);
        return CEL_ERR_FORMAT;
    }
    cel_status st;
    if (!json_is_object(root)) st = fail(c, CEL_ERR_FORMAT, "not a JSON object%s", "");
    else if (!json_is_object(json_object_get(root, "model")) && looks_like_encoder(root)) /* "model" is a GPT-2 token */
        st = with_config ? build_from_encoder(c, root)
                         : fail(c, CEL_ERR_UNSUPPORTED, "GPT-2 encoder.json needs vocab.bpe beside it%s", "");
    else
        st = build_from_hf(c, root);
    json_decref(root);
    if (!st && with_config) st = load_config(c);
    if (!st && c->t->eos < 0) {
        const char *names[] = {"</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>"};
        for (size_t i = 0; i < 4 && c->t->eos < 0; i++) c->t->eos = cel_tokenizer_find(c->t, names[i]);
    }
    if (!st) st = cel__tok_finish(c->t, c->err);
    return st;
}

cel_status cel__tok_load_json_mem(const char *data, size_t len, const char *label, cel_tokenizer **out, cel_error *err)
{
    *out = NULL;
    load_ctx c = {.path = label ? label : "<memory>", .err = err};
    cel_status st = load_json_impl(&c, data, len, false);
    if (st) {
        cel_tokenizer_free(c.t);
        return st;
    }
    *out = c.t;
    return CEL_OK;
}

cel_status cel_tokenizer_load_json(const char *path, cel_tokenizer **out, cel_error *err)
{
    *out = NULL;
    if (!path) return cel_error_set(err, CEL_ERR_INVALID, "cel_tokenizer_load_json: no path");
    load_ctx c = {.path = path, .err = err};
    char *data = NULL;
    size_t len = 0;
    CEL_TRY(cel_read_file(path, MAX_JSON_BYTES, &data, &len, err));
    cel_status st = load_json_impl(&c, data, len, true);
    free(data);
    if (st) {
        cel_tokenizer_free(c.t);
        return st;
    }
    *out = c.t;
    return CEL_OK;
}
