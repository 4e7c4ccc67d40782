/*
 * extract.c - finding the answer in a model response.
 *
 * Priority (what RL users expect, REFERENCE.md section 4): look only after the
 * last "</think>"; the last brace-matched \boxed{} / \fbox{}; else the last
 * answer phrase ("Answer:", "The answer is", "final answer is"); else,
 * optionally, the last number. Every scan here is linear in the response.
 */
#include <ctype.h>
#include <string.h>

#include "internal.h"

/* Positions of byte c in s[b..e), in increasing order, into pos[] (e - b <=
 * CHUNK). memchr on short ranges: fast, and linear under AddressSanitizer
 * too (its memrchr check covers the whole range on every call). */
#define CHUNK 256
static int find_all(const char *s, size_t b, size_t e, char c, size_t *pos)
{
    int k = 0;
    const char *p = memchr(s + b, c, e - b);
    while (p) {
        pos[k++] = (size_t)(p - s);
        size_t nx = (size_t)(p - s) + 1;
        p = nx < e ? memchr(s + nx, c, e - nx) : NULL;
    }
    return k;
}

size_t cel__answer_region(const char *s, size_t n)
{
    static const char tag[] = "</think>";
    size_t m = sizeof tag - 1, pos[CHUNK];
    if (n < m) return 0;
    for (size_t e = n; e > 0;) {
        size_t b = e > CHUNK ? e - CHUNK : 0;
        for (int k = find_all(s, b, e, '<', pos); k-- > 0;)
            if (pos[k] + m <= n && memcmp(s + pos[k], tag, m) == 0) return pos[k] + m;
        e = b;
    }
    return 0;
}

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* One forward pass (linear on any input: a backward search that
 * brace-matches each candidate would be quadratic on "\boxed{\boxed{...").
 * Boxed openers are kept on a small stack with their brace depth; the
 * latest-starting complete one wins. Escaped braces (\{ \}) do not count.
 * Boxes nested deeper than the stack (256) are ignored. */
/* Given s[i] == '{', the index of its matching '}' or n when unbalanced.
 * Escaped braces (\{ \}) do not count. */
static size_t match_brace(const char *s, size_t n, size_t i)
{
    size_t depth = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '\\') {
            i++;
            continue;
        }
        if (c == '{') depth++;
        else if (c == '}' && --depth == 0) return i;
    }
    return n;
}

static bool forward_last_boxed(const char *s, size_t n, cel__span *out);

/* The last \boxed / \fbox, searched from the end (responses end with it):
 * when it is complete it is the answer; when it is unclosed, the linear
 * forward pass finds the last complete one. */
bool cel__last_boxed(const char *s, size_t n, cel__span *out)
{
    size_t pos[CHUNK];
    for (size_t e = n; e > 0;) {
        size_t b = e > CHUNK ? e - CHUNK : 0;
        for (int k = find_all(s, b, e, '\\', pos); k-- > 0;) {
            size_t i = pos[k], c = 0;
            if (n - i >= 6 && memcmp(s + i, "\\boxed", 6) == 0) c = i + 6;
            else if (n - i >= 5 && memcmp(s + i, "\\fbox", 5) == 0) c = i + 5;
            if (!c || (c < n && is_alpha(s[c]))) continue;
            size_t j = c;
            while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
            if (j < n && s[j] == '{') {
                size_t close = match_brace(s, n, j);
                if (close >= n) return forward_last_boxed(s, n, out);
                out->p = s + j + 1, out->n = close - j - 1, out->off = j + 1, out->src = CEL_EXTRACT_BOXED;
                return true;
            }
            /* "\boxed 5" and the rest: the forward pass decides */
            return forward_last_boxed(s, n, out);
        }
        e = b;
    }
    return false;
}

static bool forward_last_boxed(const char *s, size_t n, cel__span *out)
{
    struct {
        size_t open;
        size_t depth;
    } st[256];
    int nst = 0;
    size_t depth = 0, best = 0, bb = 0, be = 0;
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\') {
            size_t k = 0;
            if (n - i >= 6 && memcmp(s + i, "\\boxed", 6) == 0) k = i + 6;
            else if (n - i >= 5 && memcmp(s + i, "\\fbox", 5) == 0) k = i + 5;
            if (!k || (k < n && is_alpha(s[k]))) {
                i++; /* an escaped character or another command's first letter */
                continue;
            }
            size_t j = k;
            while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
            if (j < n && s[j] == '{') {
                depth++;
                if (nst < 256) st[nst].open = j, st[nst].depth = depth, nst++;
                i = j;
                continue;
            }
            if (j > k && j < n) {
                /* "\boxed 5": one token up to white space or '$' */
                size_t e = j;
                while (e < n && s[e] != ' ' && s[e] != '$' && s[e] != '\n' && s[e] != '\t' && s[e] != '\\' &&
                       s[e] != '{' && s[e] != '}')
                    e++;
                if (e > j && (!found || j >= best)) found = true, best = j, bb = j, be = e;
                i = e - 1;
                continue;
            }
            i = k - 1;
            continue;
        }
        if (c == '{') {
            depth++;
        } else if (c == '}' && depth > 0) {
            if (nst > 0 && st[nst - 1].depth == depth) {
                size_t o = st[--nst].open;
                if (!found || o >= best) found = true, best = o, bb = o + 1, be = i;
            }
            depth--;
        }
    }
    if (!found) return false;
    out->p = s + bb;
    out->n = be - bb;
    out->off = bb;
    out->src = CEL_EXTRACT_BOXED;
    return true;
}

size_t cel__last_keyword(const char *s, size_t from, size_t end, const char *const *kw, size_t nkw)
{
    /* which keywords start with each byte (both cases): one table look-up
     * per byte of text, the comparisons only where a keyword could start */
    uint32_t first[256] = {0};
    if (nkw > 32) nkw = 32;
    for (size_t k = 0; k < nkw; k++) {
        unsigned char f = (unsigned char)kw[k][0];
        first[f] |= 1u << k;
        if (f >= 'a' && f <= 'z') first[f - 32] |= 1u << k;
    }
    for (size_t i = end; i-- > from;) {
        uint32_t m = first[(unsigned char)s[i]];
        if (!m || i + 1 >= end) continue;
        char second = (char)(s[i + 1] | 0x20);
        while (m) {
            size_t k = (size_t)__builtin_ctz(m);
            m &= m - 1;
            if (kw[k][1] != second) continue;
            size_t len = strlen(kw[k]);
            if (i + len <= end && strncasecmp(s + i + 2, kw[k] + 2, len - 2) == 0) return i;
        }
    }
    return SIZE_MAX;
}

size_t cel__window_end(const char *s, size_t n, size_t at)
{
    if (at >= n) return n;
    while (at < n && ((s[at] | 0x20) >= 'a' && (s[at] | 0x20) <= 'z')) at++;
    return at;
}

/* Runs `which` on s[start..end) (the text before `start` is still seen by
 * lookbehinds and \b) and returns the end of the last match, or SIZE_MAX. */
static size_t last_match_end(cel__ctx *c, int which, const char *s, size_t start, size_t end)
{
    size_t pos = start, best = SIZE_MAX;
    for (int guard = 0; guard < 100000 && pos < end; guard++) {
        PCRE2_SIZE *ov;
        int rc = cel__re_match(c, which, s, end, pos, &ov);
        if (rc <= 0) break;
        best = ov[1];
        pos = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
    }
    return best;
}

/* Latin-script answer keywords (lower case) for the windowed search. */
static const char *const answer_kw[] = {"answer", "ponse", "respuesta", "antwort", "risposta", "resposta", "jawaban",
                                        "jibu", "cevap", "odpowied"};

/* The end of the last answer-phrase match inside the line s[ls..le), or
 * SIZE_MAX: the regex runs in windows around keyword occurrences, last
 * first, so a long line is not scanned position by position; a line with
 * non-ASCII bytes is scanned whole (its keyword may be Cyrillic, CJK ...). */
static size_t phrase_in_line(cel__ctx *c, const char *s, size_t ls, size_t le)
{
    bool ascii = true;
    for (size_t i = ls; i < le && ascii; i++) ascii = (unsigned char)s[i] < 0x80;
    if (!ascii) return last_match_end(c, CEL__RE_ANSWER, s, ls, le);
    size_t q = le;
    for (int guard = 0; guard < 4096 && !c->fail; guard++) {
        q = cel__last_keyword(s, ls, q, answer_kw, sizeof answer_kw / sizeof answer_kw[0]);
        if (q == SIZE_MAX) return SIZE_MAX;
        size_t wb = q > ls + 32 ? q - 32 : ls, we = cel__window_end(s, le, q + 64);
        size_t e = last_match_end(c, CEL__RE_ANSWER, s, wb, we);
        if (e != SIZE_MAX) return e;
    }
    return SIZE_MAX;
}

bool cel__answer_phrase(cel__ctx *c, const char *s, size_t n, cel__span *out)
{
    if (n == 0) return false;
    size_t line_end = n;
    for (;;) {
        size_t ls = line_end;
        while (ls > 0 && s[ls - 1] != '\n') ls--;
        {
            size_t best_end = phrase_in_line(c, s, ls, line_end);
            if (c->fail) return false;
            if (best_end != SIZE_MAX) {
                size_t b = best_end, e = line_end;
                while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '*' || s[b] == '_' || s[b] == ':' ||
                                 s[b] == '}' || s[b] == '\r'))
                    b++;
                if (b == e) {
                    /* "Answer:" alone on its line: take the next non-empty line */
                    size_t k = line_end;
                    while (k < n && (s[k] == '\n' || s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
                    if (k >= n) return false;
                    b = k;
                    e = k;
                    while (e < n && s[e] != '\n') e++;
                }
                out->p = s + b;
                out->n = e - b;
                out->off = b;
                out->src = CEL_EXTRACT_ANSWER_PHRASE;
                return true;
            }
        }
        if (ls == 0) break;
        line_end = ls - 1;
    }
    return false;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool cel__last_number(const char *s, size_t n, cel__span *out)
{
    size_t i = n;
    while (i > 0 && !is_digit(s[i - 1])) i--;
    if (i == 0) return false;
    size_t e = i, b = i - 1;
    /* extend left over digits, a decimal point, thousands commas and a fraction bar */
    while (b > 0) {
        char p = s[b - 1];
        if (is_digit(p)) b--;
        else if ((p == '.' || p == '/') && b >= 2 && is_digit(s[b - 2])) b--;
        else if (p == ',' && b >= 2 && is_digit(s[b - 2]) && e - b >= 3 && is_digit(s[b]) && is_digit(s[b + 1]) &&
                 is_digit(s[b + 2]) && (b + 3 >= n || !is_digit(s[b + 3])))
            b--;
        else break;
    }
    if (b > 0 && s[b - 1] == '.' ) b--; /* ".5" */
    if (b > 0 && s[b - 1] == '-' && (b == 1 || !isalnum((unsigned char)s[b - 2]))) b--;
    out->p = s + b;
    out->n = e - b;
    out->off = b;
    out->src = CEL_EXTRACT_LAST_NUMBER;
    return true;
}

static bool strip_pair(cel__span *sp, const char *open, const char *close)
{
    size_t a = strlen(open), z = strlen(close);
    if (sp->n >= a + z && memcmp(sp->p, open, a) == 0 && memcmp(sp->p + sp->n - z, close, z) == 0) {
        sp->p += a;
        sp->off += a;
        sp->n -= a + z;
        return true;
    }
    return false;
}

void cel__trim_answer(cel__span *sp)
{
    for (int guard = 0; guard < 16; guard++) {
        size_t n0 = sp->n;
        while (sp->n && isspace((unsigned char)sp->p[0])) sp->p++, sp->off++, sp->n--;
        while (sp->n && isspace((unsigned char)sp->p[sp->n - 1])) sp->n--;
        /* a trailing full stop or comma (not a decimal point inside a number) */
        while (sp->n && (sp->p[sp->n - 1] == '.' || sp->p[sp->n - 1] == ',' || sp->p[sp->n - 1] == ';')) sp->n--;
        if (!strip_pair(sp, "$$", "$$") && !strip_pair(sp, "$", "$") && !strip_pair(sp, "\\(", "\\)") &&
            !strip_pair(sp, "\\[", "\\]") && !strip_pair(sp, "**", "**"))
            (void)0;
        /* a lone leading '$' or trailing '$' left by a cut sentence */
        if (sp->n && sp->p[0] == '$' && memchr(sp->p + 1, '$', sp->n - 1) == NULL) sp->p++, sp->off++, sp->n--;
        if (sp->n && sp->p[sp->n - 1] == '$' && memchr(sp->p, '$', sp->n - 1) == NULL) sp->n--;
        if (sp->n == n0) break;
    }
}

void cel__cut_sentence(cel__span *sp)
{
    const char *s = sp->p;
    size_t n = sp->n;
    bool in_math = false;
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\\') {
            i++;
            continue;
        }
        if (ch == '$') in_math = !in_math;
        else if (ch == '{') depth++;
        else if (ch == '}' && depth > 0) depth--;
        if (in_math || depth) continue;
        if ((ch == '.' || ch == '!' || ch == '?' || ch == ';') && (i + 1 == n || s[i + 1] == ' ' || s[i + 1] == '\n')) {
            /* not a decimal point ("3. 5" is rare, "3.5" never reaches here) */
            if (i > 0) {
                sp->n = i;
                return;
            }
        }
        if (ch == ' ' && i > 0) {
            static const char *const stops[] = {" because ", " since ", ", because", ", since", ", which ", ", as ",
                                                ", not "};
            for (size_t k = 0; k < sizeof stops / sizeof stops[0]; k++) {
                size_t m = strlen(stops[k]);
                size_t st = s[i - 1] == ',' ? i - 1 : i;
                if (st + m <= n && strncasecmp(s + st, stops[k], m) == 0) {
                    sp->n = st;
                    return;
                }
            }
        }
    }
}
