/*
 * text.c - small text utilities for the graders: UTF-8 decoding and encoding,
 * a case/diacritic fold covering Latin, Greek, Cyrillic and full-width forms
 * (enough to compare short answers without a Unicode library), and plain
 * number parsing ("1,000", "1e3", "-3.50", "2/3", "50%").
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

uint32_t cel__utf8_next(const char *s, size_t n, size_t *i)
{
    const unsigned char *u = (const unsigned char *)s + *i;
    size_t len = cel_utf8_seq_len(u, n - *i);
    if (!len) {
        *i += 1;
        return 0xFFFD;
    }
    *i += len;
    return cel_utf8_decode(u, len);
}

void cel__obuf_put(cel__obuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b->len + 1 < b->cap) b->o[b->len] = s[i];
        b->len++;
    }
    if (b->cap) b->o[b->len < b->cap ? b->len : b->cap - 1] = '\0';
}

/* Base letters of U+00C0..U+00FF ('0' = a symbol: dropped). */
static const char latin1[64] = "aaaaaaaceeeeiiiidnooooo0ouuuuyts"
                               "aaaaaaaceeeeiiiidnooooo0ouuuuyty";
/* Base letters of Latin Extended-A, U+0100..U+017F. */
static const char latin_ext_a[129] = "aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiiiiijjkkkllllllllllnnnnnnnnn"
                                     "oooooooorrrrrrssssssssttttttuuuuuuuuuuuuwwyyyzzzzzzs";

uint32_t cel__fold_cp(uint32_t cp)
{
    if (cp < 0x80) {
        if (cp >= 'A' && cp <= 'Z') return cp + 32;
        if ((cp >= 'a' && cp <= 'z') || (cp >= '0' && cp <= '9')) return cp;
        if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\f' || cp == '\v') return ' ';
        if (cp == '-' || cp == '/' || cp == '_') return ' '; /* "well-known" = "well known" */
        return 0;
    }
    if (cp == 0xA0) return ' ';
    if (cp == 0xB2) return '2';
    if (cp == 0xB3) return '3';
    if (cp == 0xB9) return '1';
    if (cp == 0xAA) return 'a';
    if (cp == 0xBA) return 'o';
    if (cp == 0xB5) return 0x3BC; /* micro sign = mu */
    if (cp < 0xC0) return 0;
    if (cp < 0x100) return latin1[cp - 0xC0] == '0' ? 0 : (uint32_t)latin1[cp - 0xC0];
    if (cp < 0x180) return (uint32_t)latin_ext_a[cp - 0x100];
    if (cp >= 0x300 && cp < 0x370) return 0; /* combining diacritics */
    if (cp >= 0x391 && cp <= 0x3A9 && cp != 0x3A2) return cp + 32;
    if (cp >= 0x410 && cp <= 0x42F) return cp + 32;
    if (cp >= 0x400 && cp <= 0x40F) return cp + 80;
    if ((cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F || cp == 0x3000) return ' ';
    if (cp >= 0x200B && cp <= 0x200D) return 0; /* zero-width */
    if ((cp >= 0x2010 && cp <= 0x2015) || cp == 0x2212 || cp == 0x2044) return ' ';
    if (cp >= 0x2016 && cp <= 0x206F) return 0; /* quotes, bullets, ellipsis ... */
    if (cp >= 0x3001 && cp <= 0x3003) return 0;
    if (cp >= 0xFF01 && cp <= 0xFF5E) return cel__fold_cp(cp - 0xFEE0);
    if (cp == 0xFEFF || cp == 0xFFFD) return 0;
    return cp;
}

/* A plain number: optional sign and '$', digits with optional thousands
 * commas (groups of exactly three), optional fraction, optional exponent,
 * optional "/denominator" or trailing '%'. The whole of s[0..n) must be used. */
bool cel__parse_plain_number(const char *s, size_t n, double *out)
{
    char buf[96];
    size_t k = 0, i = 0;
    if (n == 0 || n > 80) return false;
    bool neg = false;
    if (s[i] == '+' || s[i] == '-') neg = s[i] == '-', i++;
    if (i < n && s[i] == '$') i++;
    if (i < n && (s[i] == '+' || s[i] == '-') && !neg) neg = s[i] == '-', i++;
    size_t d0 = i, run = 0;
    bool grouped = false;
    while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == ',')) {
        if (s[i] == ',') {
            /* a separator needs 1-3 digits before (first group) or exactly 3 */
            if (run == 0 || (grouped && run != 3) || (!grouped && run > 3)) return false;
            grouped = true;
            run = 0;
        } else {
            buf[k++] = s[i];
            run++;
        }
        i++;
    }
    if (grouped && run != 3) return false;
    if (i < n && s[i] == '.') {
        buf[k++] = '.';
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') buf[k++] = s[i++];
    }
    if (k == 0 || (k == 1 && buf[0] == '.') || i == d0) return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E') && i + 1 < n) {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-') j++;
        if (j < n && s[j] >= '0' && s[j] <= '9') {
            buf[k++] = 'e';
            if (s[i + 1] == '-') buf[k++] = '-';
            while (j < n && s[j] >= '0' && s[j] <= '9' && k < 90) buf[k++] = s[j++];
            i = j;
        }
    }
    buf[k] = '\0';
    errno = 0;
    double v = strtod(buf, NULL);
    if (errno == ERANGE && !isfinite(v)) return false;
    if (i < n && s[i] == '%') {
        v /= 100.0;
        i++;
    } else if (i < n && s[i] == '/') {
        double den;
        if (!cel__parse_plain_number(s + i + 1, n - i - 1, &den) || den == 0 || s[i + 1] == '-' || s[i + 1] == '+')
            return false;
        v /= den;
        i = n;
    }
    if (i != n) return false;
    *out = neg ? -v : v;
    return true;
}

/* Drops LaTeX wrappers from a span: \text{Paris} -> Paris ($, braces and
 * backslash commands go; \, and friends become spaces). */
size_t cel__strip_latex(const char *s, size_t n, char *o, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        char c = s[i];
        if (c == '\\') {
            size_t j = i + 1;
            while (j < n && ((s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z')) j++;
            if (j == i + 1 && j < n) j++;
            i = j - 1;
            o[k++] = ' ';
            continue;
        }
        if (c == '{' || c == '}' || c == '$') continue;
        o[k++] = c;
    }
    o[k] = '\0';
    return k;
}
