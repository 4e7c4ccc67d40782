/*
 * open.c - short open-ended answers (CrossThink keeps references of at most
 * ten words): exact match after normalization is the reward, token F1 is
 * reported beside it.
 *
 * Normalization: Unicode folded (case, diacritics, full-width forms, odd
 * spaces and dashes), punctuation removed, hyphens and slashes split words,
 * articles (a, an, the) dropped, white space collapsed, and numbers compared
 * as numbers: "1,000" = "1000" = "1e3", "3.0" = "3", "one thousand" = "1000".
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* White space proper (folding also maps dashes and slashes to ' ': those
 * split words later, but do not end a token, so "-5" stays a number). */
static bool isspace_cp(uint32_t cp)
{
    if (cp == '-' || cp == '/' || cp == '_' || (cp >= 0x2010 && cp <= 0x2015) || cp == 0x2212 || cp == 0x2044)
        return false;
    return cel__fold_cp(cp) == ' ';
}

/* Number words: value, and whether it multiplies (hundred, thousand, ...). */
static bool number_word(const char *w, size_t n, double *v, int *mul)
{
    static const char *const small[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                        "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                                        "sixteen", "seventeen", "eighteen", "nineteen"};
    static const char *const tens[] = {"twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"};
    *mul = 0;
    for (int i = 0; i < 20; i++)
        if (strlen(small[i]) == n && memcmp(small[i], w, n) == 0) return *v = i, true;
    for (int i = 0; i < 8; i++)
        if (strlen(tens[i]) == n && memcmp(tens[i], w, n) == 0) return *v = 20 + 10 * i, true;
    if (n == 7 && memcmp(w, "hundred", 7) == 0) return *mul = 1, *v = 100, true;
    if (n == 8 && memcmp(w, "thousand", 8) == 0) return *mul = 2, *v = 1e3, true;
    if (n == 7 && memcmp(w, "million", 7) == 0) return *mul = 2, *v = 1e6, true;
    if (n == 7 && memcmp(w, "billion", 7) == 0) return *mul = 2, *v = 1e9, true;
    return false;
}

static void put_number(cel__obuf *b, double v)
{
    char tmp[48];
    if (v == 0) v = 0; /* -0 -> 0 */
    int k = snprintf(tmp, sizeof tmp, "%.12g", v);
    if (k > 0) cel__obuf_put(b, tmp, (size_t)k);
}

/* One whitespace-separated raw token: a number, or words after folding. The
 * folded words go to `words` (space separated, articles kept; dropped later). */
static size_t fold_token(const char *s, size_t n, char *w, size_t cap)
{
    size_t k = 0, i = 0;
    while (i < n) {
        uint32_t cp = cel__fold_cp(cel__utf8_next(s, n, &i));
        if (cp == 0) continue;
        char tmp[4];
        size_t m = cel_utf8_encode(cp, tmp);
        if (k + m < cap) memcpy(w + k, tmp, m), k += m;
    }
    w[k < cap ? k : cap - 1] = '\0';
    return k;
}

static bool is_article(const char *w, size_t n)
{
    return (n == 1 && w[0] == 'a') || (n == 2 && memcmp(w, "an", 2) == 0) || (n == 3 && memcmp(w, "the", 3) == 0);
}

size_t cel__normalize_open(const char *s, size_t n, char *out, size_t cap)
{
    cel__obuf b = {out, cap, 0};
    char w[256];
    double acc = 0, cur = 0;
    bool in_num = false;
    size_t i = 0;
    /* tokens: split at (Unicode) white space; stop once the output is full
     * (a longer text never equals a reference that fits) */
    while (i < n && b.len < cap + 64) {
        size_t j = i;
        while (j < n) {
            size_t q = j;
            uint32_t cp = cel__utf8_next(s, n, &q);
            if (!isspace_cp(cp)) break;
            j = q;
        }
        size_t e = j;
        while (e < n) {
            size_t q = e;
            uint32_t cp = cel__utf8_next(s, n, &q);
            if (isspace_cp(cp)) break;
            e = q;
        }
        if (e == j) break;
        i = e;
        /* strip punctuation around a number: "(1,000)." "$5" "-3.5" "50%" */
        size_t tb = j, te = e;
        while (tb < te && strchr("([{\"'*:;,", s[tb])) tb++;
        while (te > tb && strchr(")]}\"'*.,;:!?", s[te - 1])) te--;
        double v;
        if (te > tb && cel__parse_plain_number(s + tb, te - tb, &v) && isfinite(v)) {
            if (in_num) put_number(&b, acc + cur), cel__obuf_put(&b, " ", 1), in_num = false, acc = cur = 0;
            put_number(&b, v);
            cel__obuf_put(&b, " ", 1);
            continue;
        }
        /* words: fold, then split at the spaces folding made (hyphens) */
        size_t wl = fold_token(s + j, e - j, w, sizeof w);
        size_t p = 0;
        while (p < wl) {
            while (p < wl && w[p] == ' ') p++;
            size_t q = p;
            while (q < wl && w[q] != ' ') q++;
            if (q == p) break;
            int mul;
            double nv;
            if (number_word(w + p, q - p, &nv, &mul)) {
                if (!in_num) in_num = true, acc = cur = 0;
                if (mul == 0) cur += nv;
                else if (mul == 1) cur = (cur == 0 ? 1 : cur) * nv;
                else acc += (cur == 0 ? 1 : cur) * nv, cur = 0;
            } else {
                if (in_num) put_number(&b, acc + cur), cel__obuf_put(&b, " ", 1), in_num = false, acc = cur = 0;
                if (!is_article(w + p, q - p)) {
                    cel__obuf_put(&b, w + p, q - p);
                    cel__obuf_put(&b, " ", 1);
                }
            }
            p = q;
        }
    }
    if (in_num) put_number(&b, acc + cur), cel__obuf_put(&b, " ", 1);
    size_t len = b.len;
    if (len && len <= cap - 1 && out[len - 1] == ' ') len--;
    if (cap) out[len < cap ? len : cap - 1] = '\0';
    return len;
}

/* Token F1 between two normalized strings (space-separated tokens). */
double cel__token_f1(const char *a, const char *b)
{
    enum { MAXT = 256 };
    const char *ta[MAXT], *tb[MAXT];
    size_t la[MAXT], lb[MAXT];
    int na = 0, nb = 0;
    for (const char *p = a; *p && na < MAXT;) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ') q++;
        if (q > p) ta[na] = p, la[na] = (size_t)(q - p), na++;
        p = q;
    }
    for (const char *p = b; *p && nb < MAXT;) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ') q++;
        if (q > p) tb[nb] = p, lb[nb] = (size_t)(q - p), nb++;
        p = q;
    }
    if (na == 0 || nb == 0) return na == nb ? 1.0 : 0.0;
    bool used[MAXT] = {false};
    int common = 0;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            if (!used[j] && la[i] == lb[j] && memcmp(ta[i], tb[j], la[i]) == 0) {
                used[j] = true;
                common++;
                break;
            }
    if (common == 0) return 0.0;
    double p = (double)common / na, r = (double)common / nb;
    return 2 * p * r / (p + r);
}

static size_t count_words(const char *s, size_t n)
{
    size_t w = 0;
    bool in = false;
    for (size_t i = 0; i < n; i++) {
        bool sp = s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r';
        if (!sp && !in) w++;
        in = !sp;
    }
    return w;
}

void cel__grade_open(cel__ctx *c, const cel_verify_item *it, const char *resp, size_t n, cel_verify_result *r)
{
    size_t reg = cel__answer_region(resp, n);
    const char *s = resp + reg;
    size_t sn = n - reg;
    const char *ref = it->reference;
    size_t rn = strlen(ref);
    size_t ref_words = count_words(ref, rn);
    size_t max_words = ref_words * 3 > 12 ? ref_words * 3 : 12;
    cel__span sp;
    bool got = cel__last_boxed(s, sn, &sp);
    if (!got && cel__answer_phrase(c, s, sn, &sp)) {
        got = true;
        cel__cut_sentence(&sp);
    }
    if (!got && !c->fail) {
        /* a short response is the answer itself; else its short last line */
        cel__span w = {s, sn, 0, CEL_EXTRACT_WHOLE};
        cel__trim_answer(&w);
        if (w.n && count_words(w.p, w.n) <= max_words) {
            sp = w;
            got = true;
        } else if (w.n) {
            size_t e = w.off + w.n, b = e;
            while (b > w.off && s[b - 1] != '\n') b--;
            if (count_words(s + b, e - b) <= max_words && b > w.off) {
                sp.p = s + b, sp.n = e - b, sp.off = b, sp.src = CEL_EXTRACT_WHOLE;
                got = true;
            }
        }
    }
    double dummy;
    if (!got && !c->fail && c->cfg->last_number_fallback && cel__parse_plain_number(ref, rn, &dummy))
        got = cel__last_number(s, sn, &sp);
    if (!got) {
        cel__set_reason(r, c->fail ? c->fail : "no_answer");
        return;
    }
    cel__trim_answer(&sp);
    sp.off += reg;
    cel__set_extracted(r, sp.p, sp.n, sp.off, sp.src);
    char na[1024], nr[1024], raw[1024];
    const char *ap = sp.p;
    size_t an = sp.n;
    if (memchr(ap, '\\', an) || memchr(ap, '$', an)) {
        /* \boxed{\text{mitochondria}}: compare the words, not the markup */
        an = cel__strip_latex(ap, an, raw, sizeof raw);
        ap = raw;
    }
    size_t la = cel__normalize_open(ap, an, na, sizeof na);
    size_t lr = cel__normalize_open(ref, rn, nr, sizeof nr);
    if (!cel__charge(c, 1 + (an + rn) / 16)) {
        cel__set_reason(r, c->fail);
        return;
    }
    r->f1 = cel__token_f1(na, nr);
    r->correct = lr > 0 && la == lr && la < sizeof na && memcmp(na, nr, la) == 0;
    if (!r->correct && la == 0 && lr == 0) r->correct = false;
    cel__set_reason(r, r->correct ? "correct" : "wrong_answer");
}
