/*
 * text.c - text utilities of the pipelines: approximate token counts, LaTeX
 * span detection, MIND chunking, Nemotron-CC segmentation, n-gram repetition
 * and overlap measures, UTF-8 validation and repair.
 *
 * Every function is linear (or n log n) in its input: documents come from
 * the web and must not be able to make a pipeline hang.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "gen_internal.h"

/* ------------------------------------------------------------------ UTF-8 */

cel_status cel_gen_utf8_sanitize(const char *text, size_t len, cel_buf *out)
{
    return cel_utf8_sanitize(text, len, out);
}

cel_status cel__json_set_str(json_t *obj, const char *key, const char *s, size_t n)
{
    json_t *v;
    if (cel_utf8_valid(s, n) && !memchr(s, 0, n)) {
        v = json_stringn(s, n);
    } else {
        cel_buf b;
        cel_buf_init(&b);
        if (cel_gen_utf8_sanitize(s, n, &b)) {
            cel_buf_free(&b);
            return CEL_ERR_NOMEM;
        }
        v = json_stringn(b.data ? b.data : "", b.len);
        cel_buf_free(&b);
    }
    if (!v || json_object_set_new(obj, key, v)) return CEL_ERR_NOMEM;
    return CEL_OK;
}

/* ------------------------------------------------------------ small bits */

static bool is_sp(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

void cel__trim(const char **s, size_t *len)
{
    const char *p = *s;
    size_t n = *len;
    while (n && is_sp(*p)) {
        p++;
        n--;
    }
    while (n && is_sp(p[n - 1])) n--;
    *s = p;
    *len = n;
}

cel_status cel__count(const cel_gen_counter *c, const char *s, size_t n, size_t *out, cel_error *err)
{
    *out = 0;
    if (n == 0) return CEL_OK;
    return c->fn(c->ud, s, n, out, err);
}

size_t cel_gen_approx_tokens(const char *text, size_t len)
{
    const unsigned char *u = (const unsigned char *)text;
    size_t n = 0, i = 0;
    while (i < len) {
        unsigned char c = u[i];
        if (isalpha(c)) {
            size_t j = i;
            while (j < len && isalpha(u[j])) j++;
            n += (j - i + 5) / 6;
            i = j;
        } else if (isdigit(c)) {
            size_t j = i;
            while (j < len && isdigit(u[j])) j++;
            n += (j - i + 2) / 3;
            i = j;
        } else if (is_sp((char)c)) {
            i++;
        } else if (c >= 0x80) {
            size_t k = cel_utf8_seq_len(u + i, len - i);
            n++;
            i += k ? k : 1;
        } else {
            n++;
            i++;
        }
    }
    return n;
}

static cel_status approx_count(void *ud, const char *text, size_t len, size_t *n, cel_error *err)
{
    (void)ud;
    (void)err;
    *n = cel_gen_approx_tokens(text, len);
    return CEL_OK;
}

cel_gen_counter cel_gen_counter_approx(void) { return (cel_gen_counter){approx_count, NULL}; }

size_t cel_gen_count_words(const char *s, size_t len)
{
    size_t n = 0;
    bool in = false;
    for (size_t i = 0; i < len; i++) {
        bool sp = is_sp(s[i]);
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}

uint64_t cel__norm_hash(const char *s, size_t n)
{
    /* lower-case ASCII letters, drop punctuation, collapse whitespace */
    uint64_t h = 0x9E3779B97F4A7C15ull;
    bool pending_space = false, any = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_sp((char)c)) {
            pending_space = any;
            continue;
        }
        if (c < 0x80 && ispunct(c)) continue;
        if (pending_space) {
            h = cel_mix64(h ^ ' ');
            pending_space = false;
        }
        h = cel_mix64(h ^ (uint64_t)tolower(c));
        any = true;
    }
    return h ? h : 1;
}

/* ----------------------------------------------------------- LaTeX spans */

static const char *const math_envs[] = {"equation", "align",  "alignat",  "aligned", "gather",      "gathered",
                                        "multline", "flalign", "eqnarray", "split",   "cases",       "array",
                                        "matrix",   "pmatrix", "bmatrix",  "vmatrix", "Vmatrix",     "Bmatrix",
                                        "smallmatrix", "displaymath", "math", "subequations", "dcases"};

/* At s[i] == '\\': is it "\begin{NAME}" / "\end{NAME}" of a math environment?
 * Returns the length of the whole command, and the name span. */
static size_t env_cmd(const char *s, size_t len, size_t i, bool *is_begin, size_t *name_off, size_t *name_len)
{
    size_t k;
    if (len - i >= 7 && memcmp(s + i, "\\begin{", 7) == 0) {
        *is_begin = true;
        k = i + 7;
    } else if (len - i >= 5 && memcmp(s + i, "\\end{", 5) == 0) {
        *is_begin = false;
        k = i + 5;
    } else
        return 0;
    size_t j = k;
    while (j < len && j - k < 32 && isalpha((unsigned char)s[j])) j++;
    size_t base = j - k;
    if (j < len && s[j] == '*') j++;
    if (j >= len || s[j] != '}' || base == 0) return 0;
    bool math = false;
    for (size_t e = 0; e < sizeof math_envs / sizeof math_envs[0]; e++)
        if (strlen(math_envs[e]) == base && memcmp(math_envs[e], s + k, base) == 0) math = true;
    if (!math) return 0;
    *name_off = k;
    *name_len = j - k;
    return j + 1 - i;
}

typedef struct span_vec {
    cel__span *v;
    size_t n, cap;
} span_vec;

static cel_status span_push(span_vec *sv, size_t a, size_t b)
{
    if (sv->n == sv->cap) {
        size_t nc = sv->cap ? sv->cap * 2 : 16;
        cel__span *nv = realloc(sv->v, nc * sizeof *nv);
        if (!nv) return CEL_ERR_NOMEM;
        sv->v = nv;
        sv->cap = nc;
    }
    sv->v[sv->n++] = (cel__span){a, b};
    return CEL_OK;
}

/* Outermost matched math environments, in one pass with a bounded stack:
 * \end{X} closes the nearest open \begin{X}; unmatched commands are text. */
static cel_status env_spans(const char *s, size_t len, span_vec *out)
{
    enum { MAX_DEPTH = 64 };
    struct open_env {
        size_t pos, name_off, name_len;
    } st[MAX_DEPTH];
    size_t depth = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\') continue;
        bool beg;
        size_t no, nl;
        size_t cl = env_cmd(s, len, i, &beg, &no, &nl);
        if (!cl) continue;
        if (beg) {
            if (depth < MAX_DEPTH) st[depth++] = (struct open_env){i, no, nl};
        } else {
            size_t k = depth;
            while (k > 0 && !(st[k - 1].name_len == nl && memcmp(s + st[k - 1].name_off, s + no, nl) == 0)) k--;
            if (k > 0) {
                depth = k - 1;
                if (depth == 0) CEL_TRY(span_push(out, st[0].pos, i + cl));
            }
        }
        i += cl - 1;
    }
    return CEL_OK;
}

/* First index >= from of needle in [from, end), or SIZE_MAX. Escaped (\x)
 * occurrences are skipped for single '$'. */
static size_t find_closer(const char *s, size_t from, size_t end, const char *needle, size_t nlen)
{
    for (size_t i = from; i + nlen <= end; i++) {
        if (s[i] == '\\' && nlen == 1) {
            i++;
            continue;
        }
        if (memcmp(s + i, needle, nlen) == 0) return i;
    }
    return SIZE_MAX;
}

/* End of the paragraph containing i (the next blank line), or len. */
static size_t para_end(const char *s, size_t len, size_t i)
{
    for (size_t k = i; k < len; k++) {
        if (s[k] != '\n') continue;
        size_t j = k + 1;
        while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r')) j++;
        if (j < len && s[j] == '\n') return k;
    }
    return len;
}

cel_status cel__math_spans(const char *text, size_t len, cel__span **out, size_t *n, cel_error *err)
{
    span_vec env = {NULL, 0, 0}, all = {NULL, 0, 0};
    *out = NULL;
    *n = 0;
    cel_status st = env_spans(text, len, &env);
    /* dollar and bracket forms outside environments. A search for a closer
     * that fails up to limit L fails from any later start with the same L, so
     * the failing limit is remembered per form: linear time on adversarial
     * input (thousands of unterminated openers). */
    size_t fail_dd = SIZE_MAX, fail_paren = SIZE_MAX, fail_brack = SIZE_MAX, fail_dollar = SIZE_MAX;
    size_t e = 0; /* next environment span */
    size_t para_limit = 0, para_from = SIZE_MAX; /* cached paragraph end for '$' */
    for (size_t i = 0; st == CEL_OK && i < len; i++) {
        if (e < env.n && i == env.v[e].start) {
            st = span_push(&all, env.v[e].start, env.v[e].end);
            i = env.v[e].end - 1;
            e++;
            continue;
        }
        size_t limit = e < env.n ? env.v[e].start : len; /* spans never straddle an environment */
        char c = text[i];
        if (c == '\\' && i + 1 < len) {
            char d = text[i + 1];
            size_t *fail = d == '(' ? &fail_paren : d == '[' ? &fail_brack : NULL;
            if (fail && *fail != limit) {
                size_t k = find_closer(text, i + 2, limit, d == '(' ? "\\)" : "\\]", 2);
                if (k == SIZE_MAX) {
                    *fail = limit;
                } else {
                    st = span_push(&all, i, k + 2);
                    i = k + 1;
                    continue;
                }
            }
            i++; /* skip the escaped character (\$ included) */
            continue;
        }
        if (c != '$') continue;
        if (i + 1 < len && text[i + 1] == '$') {
            if (fail_dd != limit) {
                size_t k = find_closer(text, i + 2, limit, "$$", 2);
                if (k != SIZE_MAX) {
                    st = span_push(&all, i, k + 2);
                    i = k + 1;
                    continue;
                }
                fail_dd = limit;
            }
            i++;
            continue;
        }
        if (para_from == SIZE_MAX || i >= para_limit) {
            para_limit = para_end(text, len, i);
            para_from = i;
        }
        size_t lim = para_limit < limit ? para_limit : limit;
        if (fail_dollar == lim) continue;
        size_t k = find_closer(text, i + 1, lim, "$", 1);
        if (k == SIZE_MAX) fail_dollar = lim;
        else if (k > i + 1) {
            st = span_push(&all, i, k + 1);
            i = k;
        }
    }
    free(env.v);
    if (st) {
        free(all.v);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    *out = all.v;
    *n = all.n;
    return CEL_OK;
}

/* --------------------------------------------------------------- chunking */

enum { B_END = 0, B_WORD = 1, B_SENT = 2, B_PARA = 3 };

typedef struct unit {
    size_t off, len; /* trimmed text of the unit */
    size_t tokens;
    int after;       /* strength of the boundary after the unit */
} unit;

typedef struct unit_vec {
    unit *v;
    size_t n, cap;
} unit_vec;

static cel_status unit_push(unit_vec *uv, unit u)
{
    if (uv->n == uv->cap) {
        size_t nc = uv->cap ? uv->cap * 2 : 64;
        unit *nv = realloc(uv->v, nc * sizeof *nv);
        if (!nv) return CEL_ERR_NOMEM;
        uv->v = nv;
        uv->cap = nc;
    }
    uv->v[uv->n++] = u;
    return CEL_OK;
}

/* Strength of the whitespace run [a, b) as a cut point, given the text before it. */
static int ws_strength(const char *s, size_t a, size_t b)
{
    int nl = 0;
    for (size_t i = a; i < b; i++)
        if (s[i] == '\n') nl++;
    if (nl >= 2) return B_PARA;
    if (nl == 1) return B_SENT;
    /* sentence end: . ! ? possibly followed by closing quotes / brackets */
    size_t k = a;
    while (k > 0 && (s[k - 1] == '"' || s[k - 1] == '\'' || s[k - 1] == ')' || s[k - 1] == ']')) k--;
    if (k > 0 && (s[k - 1] == '.' || s[k - 1] == '!' || s[k - 1] == '?')) return B_SENT;
    return B_WORD;
}

/* Splits [from, to) at whitespace runs outside math spans whose strength is
 * >= min_strength, appending units (text trimmed). */
static cel_status split_units(const char *s, size_t from, size_t to, const cel__span *ms, size_t n_ms, size_t *msi,
                              int min_strength, unit_vec *out)
{
    size_t start = from, i = from;
    size_t m = *msi;
    while (i < to) {
        while (m < n_ms && ms[m].end <= i) m++;
        if (m < n_ms && ms[m].start <= i) { /* inside math: jump over it */
            i = ms[m].end;
            continue;
        }
        if (!is_sp(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < to && is_sp(s[j])) j++;
        int str = j >= to ? B_END : ws_strength(s, i, j);
        if (j < to && str >= min_strength) {
            if (i > start) CEL_TRY(unit_push(out, (unit){start, i - start, 0, str}));
            start = j;
        }
        i = j;
    }
    *msi = m;
    /* trailing unit (trim trailing space) */
    size_t e = to;
    while (e > start && is_sp(s[e - 1])) e--;
    if (e > start) CEL_TRY(unit_push(out, (unit){start, e - start, 0, B_END}));
    return CEL_OK;
}

cel_status cel_gen_chunk(const char *text, size_t len, size_t max_tokens, const cel_gen_counter *c, cel_chunk **out,
                         size_t *n_out, cel_error *err)
{
    *out = NULL;
    *n_out = 0;
    if (max_tokens == 0) return cel_error_set(err, CEL_ERR_INVALID, "chunk size must be at least 1 token");
    cel__span *ms = NULL;
    size_t n_ms = 0;
    CEL_TRY(cel__math_spans(text, len, &ms, &n_ms, err));
    unit_vec sents = {NULL, 0, 0}, units = {NULL, 0, 0};
    cel_chunk *chunks = NULL;
    size_t n_chunks = 0, cap_chunks = 0;
    cel_status st;
    size_t msi = 0;
    /* sentences first; only over-long sentences are split into words */
    st = split_units(text, 0, len, ms, n_ms, &msi, B_SENT, &sents);
    if (st) goto nomem;
    msi = 0;
    for (size_t i = 0; i < sents.n; i++) {
        unit u = sents.v[i];
        st = cel__count(c, text + u.off, u.len, &u.tokens, err);
        if (st) goto fail;
        if (u.tokens <= max_tokens) {
            if ((st = unit_push(&units, u))) goto nomem;
            continue;
        }
        size_t first = units.n;
        /* re-scan math spans from the sentence start */
        while (msi > 0 && ms[msi - 1].end > u.off) msi--;
        st = split_units(text, u.off, u.off + u.len, ms, n_ms, &msi, B_WORD, &units);
        if (st) goto nomem;
        for (size_t k = first; k < units.n; k++) {
            st = cel__count(c, text + units.v[k].off, units.v[k].len, &units.v[k].tokens, err);
            if (st) goto fail;
        }
        if (units.n > first) units.v[units.n - 1].after = u.after; /* keep the sentence's own boundary */
    }

    /* greedy packing with a preference for strong boundaries past half the budget */
    size_t start = 0;
    while (start < units.n) {
        size_t acc = 0, j = start;
        while (j < units.n && (j == start || acc + units.v[j].tokens <= max_tokens)) acc += units.v[j++].tokens;
        size_t last = j - 1; /* last unit of the chunk */
        if (j < units.n) {
            size_t best = SIZE_MAX;
            for (int want = B_PARA; want >= B_SENT && best == SIZE_MAX; want--) {
                size_t cum = 0;
                for (size_t k = start; k < j; k++) {
                    cum += units.v[k].tokens;
                    if (units.v[k].after >= want && cum * 2 >= max_tokens) best = k;
                }
            }
            if (best != SIZE_MAX) last = best;
        }
        /* exact count of the joined chunk; give back units while over budget */
        size_t off, clen, ntok;
        for (;;) {
            off = units.v[start].off;
            clen = units.v[last].off + units.v[last].len - off;
            st = cel__count(c, text + off, clen, &ntok, err);
            if (st) goto fail;
            if (ntok <= max_tokens || last == start) break;
            last--;
        }
        if (n_chunks == cap_chunks) {
            size_t nc = cap_chunks ? cap_chunks * 2 : 8;
            cel_chunk *np = realloc(chunks, nc * sizeof *np);
            if (!np) goto nomem;
            chunks = np;
            cap_chunks = nc;
        }
        chunks[n_chunks++] = (cel_chunk){off, clen, ntok};
        start = last + 1;
    }
    free(ms);
    free(sents.v);
    free(units.v);
    *out = chunks;
    *n_out = n_chunks;
    return CEL_OK;
nomem:
    st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
fail:
    free(ms);
    free(sents.v);
    free(units.v);
    free(chunks);
    return st;
}

/* ----------------------------------------------------------- segmentation */

cel_status cel_gen_segment(const char *text, size_t len, size_t max_tokens, size_t min_tokens, const cel_gen_counter *c,
                           cel_chunk **out, size_t *n_out, size_t *n_too_long, size_t *n_too_short, cel_error *err)
{
    *out = NULL;
    *n_out = 0;
    *n_too_long = 0;
    *n_too_short = 0;
    if (max_tokens == 0) return cel_error_set(err, CEL_ERR_INVALID, "segment budget must be at least 1 token");
    cel_chunk *segs = NULL;
    size_t n = 0, cap = 0;
    cel_status st = CEL_OK;
    bool open = false; /* a segment is being joined */
    cel_chunk cur = {0, 0, 0};
#define FLUSH()                                                                                                    \
    do {                                                                                                           \
        if (open) {                                                                                                \
            if (cur.n_tokens < min_tokens) {                                                                       \
                (*n_too_short)++;                                                                                  \
            } else {                                                                                               \
                if (n == cap) {                                                                                    \
                    size_t nc = cap ? cap * 2 : 8;                                                                 \
                    cel_chunk *np = realloc(segs, nc * sizeof *np);                                                \
                    if (!np) goto nomem;                                                                           \
                    segs = np;                                                                                     \
                    cap = nc;                                                                                      \
                }                                                                                                  \
                segs[n++] = cur;                                                                                   \
            }                                                                                                      \
            open = false;                                                                                          \
        }                                                                                                          \
    } while (0)

    size_t i = 0;
    while (i <= len) {
        const char *nl = i < len ? memchr(text + i, '\n', len - i) : NULL;
        size_t le = nl ? (size_t)(nl - text) : len;
        const char *ls = text + i;
        size_t ll = le - i;
        cel__trim(&ls, &ll);
        if (ll > 0) {
            size_t t;
            st = cel__count(c, ls, ll, &t, err);
            if (st) goto fail;
            size_t off = (size_t)(ls - text);
            if (t > max_tokens) {
                (*n_too_long)++;
                FLUSH(); /* a dropped line breaks the join: segments stay contiguous */
            } else if (open && cur.n_tokens + 1 + t <= max_tokens) {
                /* +1 for the newline joining them (a token in most vocabularies) */
                size_t joined = off + ll - cur.off;
                size_t jt;
                st = cel__count(c, text + cur.off, joined, &jt, err);
                if (st) goto fail;
                if (jt <= max_tokens) {
                    cur.len = joined;
                    cur.n_tokens = jt;
                } else {
                    FLUSH();
                    cur = (cel_chunk){off, ll, t};
                    open = true;
                }
            } else {
                FLUSH();
                cur = (cel_chunk){off, ll, t};
                open = true;
            }
        }
        if (!nl) break;
        i = le + 1;
    }
    FLUSH();
#undef FLUSH
    *out = segs;
    *n_out = n;
    return CEL_OK;
nomem:
    st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
fail:
    free(segs);
    return st;
}

/* ------------------------------------------------------ n-gram measures */

/* Hashes of the word n-grams of text (words case-folded). */
static cel_status ngram_hashes(const char *s, size_t len, int n, uint64_t **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (n < 1) n = 1;
    size_t words = cel_gen_count_words(s, len);
    if (words < (size_t)n) return CEL_OK;
    uint64_t *wh = malloc(words * sizeof *wh);
    uint64_t *gh = malloc((words - (size_t)n + 1) * sizeof *gh);
    if (!wh || !gh) {
        free(wh);
        free(gh);
        return CEL_ERR_NOMEM;
    }
    size_t w = 0, i = 0;
    while (i < len) {
        while (i < len && is_sp(s[i])) i++;
        if (i >= len) break;
        uint64_t h = 0x84222325CBF29CE4ull;
        while (i < len && !is_sp(s[i])) h = cel_mix64(h ^ (uint64_t)tolower((unsigned char)s[i++]));
        wh[w++] = h;
    }
    size_t ng = w - (size_t)n + 1;
    for (size_t k = 0; k < ng; k++) {
        uint64_t h = (uint64_t)n;
        for (int j = 0; j < n; j++) h = cel_mix64(h * 31 + wh[k + (size_t)j]);
        gh[k] = h ? h : 1;
    }
    free(wh);
    *out = gh;
    *n_out = ng;
    return CEL_OK;
}

/* Open-addressing set of non-zero 64-bit keys. */
typedef struct hset {
    uint64_t *t;
    size_t cap; /* power of two */
} hset;

static bool hset_init(hset *h, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    h->t = calloc(cap, sizeof *h->t);
    h->cap = cap;
    return h->t != NULL;
}
/* Inserts k; returns true when it was already present. */
static bool hset_add(hset *h, uint64_t k)
{
    size_t i = (size_t)k & (h->cap - 1);
    while (h->t[i]) {
        if (h->t[i] == k) return true;
        i = (i + 1) & (h->cap - 1);
    }
    h->t[i] = k;
    return false;
}
static bool hset_has(const hset *h, uint64_t k)
{
    size_t i = (size_t)k & (h->cap - 1);
    while (h->t[i]) {
        if (h->t[i] == k) return true;
        i = (i + 1) & (h->cap - 1);
    }
    return false;
}

double cel_gen_repetition(const char *text, size_t len, int n)
{
    uint64_t *g;
    size_t ng;
    if (ngram_hashes(text, len, n, &g, &ng) || ng == 0) return 0.0;
    hset h;
    if (!hset_init(&h, ng)) {
        free(g);
        return 0.0;
    }
    size_t dup = 0;
    for (size_t i = 0; i < ng; i++) dup += hset_add(&h, g[i]);
    free(h.t);
    free(g);
    return (double)dup / (double)ng;
}

double cel_gen_overlap(const char *out, size_t out_len, const char *ref, size_t ref_len, int n)
{
    uint64_t *go, *gr;
    size_t no, nr;
    if (ngram_hashes(out, out_len, n, &go, &no) || no == 0) return 0.0;
    if (ngram_hashes(ref, ref_len, n, &gr, &nr) || nr == 0) {
        free(go);
        return 0.0;
    }
    hset h;
    double r = 0.0;
    if (hset_init(&h, nr)) {
        for (size_t i = 0; i < nr; i++) hset_add(&h, gr[i]);
        size_t hit = 0;
        for (size_t i = 0; i < no; i++) hit += hset_has(&h, go[i]);
        r = (double)hit / (double)no;
        free(h.t);
    }
    free(go);
    free(gr);
    return r;
}
