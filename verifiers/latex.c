/*
 * latex.c - a LaTeX / plain-text answer parser producing the tree in expr.h.
 *
 * It reads what models write in final answers: numbers (thousands
 * separators, decimals, scientific notation), \frac/\dfrac/\tfrac and a/b,
 * mixed numbers (2\frac{1}{2}), \sqrt, powers, \pi, e, i, functions with or
 * without parentheses (\sin^2 x, \log_2 8), implicit multiplication,
 * percentages, degrees, \left/\right, \text{} (units become TEXT nodes the
 * comparer drops), x = ..., \pm, tuples, sets, intervals, unions and
 * matrices. Unicode math symbols (π, √, ×, −, °, ≤ ...) read as their LaTeX.
 *
 * Bounded: recursion depth is capped (max_depth) and every token and node is
 * charged to the context's work budget, so the parser fails closed on
 * adversarial input instead of running long or deep.
 */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "expr.h"

const char *const cel__func_names[CEL__F_COUNT] = {
    "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "acot", "sinh", "cosh", "tanh", "ln", "log",
    "lg", "logb", "exp", "sqrt", "root", "abs", "floor", "ceil", "fact", "binom", "gcd", "lcm", "max", "min"};

typedef enum { TK_END = 0, TK_NUM, TK_VAR, TK_WORD, TK_FUNC, TK_CONST, TK_OP, TK_CMD, TK_DEG, TK_PCT, TK_SUP, TK_BAD } tkind;

enum {
    CMD_FRAC = 1, CMD_SQRT, CMD_TEXT, CMD_STYLE, CMD_PM, CMD_CUP, CMD_CAP, CMD_BEGIN, CMD_END, CMD_BINOM,
    CMD_EMPTY, CMD_LFLOOR, CMD_RFLOOR, CMD_LCEIL, CMD_RCEIL, CMD_REL, CMD_LSET, CMD_RSET, CMD_ROWSEP, CMD_SKIP,
    CMD_SKIPDOT, CMD_DOTS
};

typedef struct tok {
    uint8_t k;
    int id, id2;       /* OP: the char; CMD: CMD_*; FUNC: CEL__F_*; CONST: CEL__C_*; REL: CEL__R_* in id2 */
    size_t b, e;       /* source span */
    int paren_before;  /* lexer paren depth before this token (to re-lex) */
    bool exact, intlit;
    int64_t num, den;
    double approx;
    const char *str;   /* VAR / WORD / BEGIN env name */
    size_t len;
} tok;

typedef struct P {
    cel__ctx *c;
    const char *s;
    size_t n, pos;
    int paren;
    tok pk;
    bool has_pk;
    unsigned depth, max_depth;
    int abs_depth;
    bool decimal_comma; /* the whole answer is one number written with a decimal comma ("2,5") */
    const char **why;
} P;

/* ------------------------------------------------------------ numbers */

int64_t cel__gcd64(int64_t a, int64_t b)
{
    if (a < 0) a = -a;
    if (b < 0) b = -b;
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

/* ------------------------------------------------------------ lexer */

static bool isd(char c) { return c >= '0' && c <= '9'; }
static bool isal(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

typedef struct {
    const char *name;
    uint8_t k;
    int id, id2;
} kw;

/* Backslash commands. Unknown ones lex as words (text). */
static const kw cmds[] = {
    {"frac", TK_CMD, CMD_FRAC, 0}, {"dfrac", TK_CMD, CMD_FRAC, 0}, {"tfrac", TK_CMD, CMD_FRAC, 0},
    {"cfrac", TK_CMD, CMD_FRAC, 0}, {"sqrt", TK_CMD, CMD_SQRT, 0},
    {"text", TK_CMD, CMD_TEXT, 0}, {"textbf", TK_CMD, CMD_TEXT, 0}, {"textrm", TK_CMD, CMD_TEXT, 0},
    {"textit", TK_CMD, CMD_TEXT, 0}, {"textsf", TK_CMD, CMD_TEXT, 0}, {"texttt", TK_CMD, CMD_TEXT, 0},
    {"mbox", TK_CMD, CMD_TEXT, 0}, {"mathrm", TK_CMD, CMD_TEXT, 0}, {"operatorname", TK_CMD, CMD_TEXT, 0},
    {"textnormal", TK_CMD, CMD_TEXT, 0}, {"hbox", TK_CMD, CMD_TEXT, 0},
    {"mathbf", TK_CMD, CMD_STYLE, 0}, {"boldsymbol", TK_CMD, CMD_STYLE, 0}, {"mathit", TK_CMD, CMD_STYLE, 0},
    {"mathsf", TK_CMD, CMD_STYLE, 0}, {"bm", TK_CMD, CMD_STYLE, 0}, {"mathbb", TK_CMD, CMD_STYLE, 0},
    {"pmb", TK_CMD, CMD_STYLE, 0}, {"overline", TK_CMD, CMD_STYLE, 0}, {"underline", TK_CMD, CMD_STYLE, 0},
    {"boxed", TK_CMD, CMD_STYLE, 0}, {"fbox", TK_CMD, CMD_STYLE, 0}, {"mathcal", TK_CMD, CMD_STYLE, 0},
    {"left", TK_CMD, CMD_SKIPDOT, 0}, {"right", TK_CMD, CMD_SKIPDOT, 0}, {"big", TK_CMD, CMD_SKIP, 0},
    {"Big", TK_CMD, CMD_SKIP, 0}, {"bigg", TK_CMD, CMD_SKIP, 0}, {"Bigg", TK_CMD, CMD_SKIP, 0},
    {"bigl", TK_CMD, CMD_SKIP, 0}, {"bigr", TK_CMD, CMD_SKIP, 0}, {"Bigl", TK_CMD, CMD_SKIP, 0},
    {"Bigr", TK_CMD, CMD_SKIP, 0}, {"biggl", TK_CMD, CMD_SKIP, 0}, {"biggr", TK_CMD, CMD_SKIP, 0},
    {"displaystyle", TK_CMD, CMD_SKIP, 0}, {"textstyle", TK_CMD, CMD_SKIP, 0}, {"limits", TK_CMD, CMD_SKIP, 0},
    {"nolimits", TK_CMD, CMD_SKIP, 0}, {"quad", TK_CMD, CMD_SKIP, 0}, {"qquad", TK_CMD, CMD_SKIP, 0},
    {"space", TK_CMD, CMD_SKIP, 0}, {"thinspace", TK_CMD, CMD_SKIP, 0}, {"negthinspace", TK_CMD, CMD_SKIP, 0},
    {"enspace", TK_CMD, CMD_SKIP, 0}, {"middle", TK_CMD, CMD_SKIP, 0}, {"mathop", TK_CMD, CMD_SKIP, 0},
    {"pi", TK_CONST, CEL__C_PI, 0}, {"infty", TK_CONST, CEL__C_INF, 0}, {"infin", TK_CONST, CEL__C_INF, 0},
    {"imath", TK_CONST, CEL__C_I, 0},
    {"pm", TK_CMD, CMD_PM, 0}, {"mp", TK_CMD, CMD_PM, 1}, {"cdot", TK_OP, '*', 0}, {"times", TK_OP, '*', 0},
    {"ast", TK_OP, '*', 0}, {"div", TK_OP, '/', 0}, {"cup", TK_CMD, CMD_CUP, 0}, {"cap", TK_CMD, CMD_CAP, 0},
    {"le", TK_CMD, CMD_REL, CEL__R_LE}, {"leq", TK_CMD, CMD_REL, CEL__R_LE}, {"leqslant", TK_CMD, CMD_REL, CEL__R_LE},
    {"ge", TK_CMD, CMD_REL, CEL__R_GE}, {"geq", TK_CMD, CMD_REL, CEL__R_GE}, {"geqslant", TK_CMD, CMD_REL, CEL__R_GE},
    {"ne", TK_CMD, CMD_REL, CEL__R_NE}, {"neq", TK_CMD, CMD_REL, CEL__R_NE}, {"lt", TK_CMD, CMD_REL, CEL__R_LT},
    {"gt", TK_CMD, CMD_REL, CEL__R_GT}, {"approx", TK_CMD, CMD_REL, CEL__R_APPROX},
    {"simeq", TK_CMD, CMD_REL, CEL__R_APPROX}, {"sim", TK_CMD, CMD_REL, CEL__R_APPROX},
    {"in", TK_CMD, CMD_REL, CEL__R_IN}, {"begin", TK_CMD, CMD_BEGIN, 0}, {"end", TK_CMD, CMD_END, 0},
    {"binom", TK_CMD, CMD_BINOM, 0}, {"dbinom", TK_CMD, CMD_BINOM, 0}, {"tbinom", TK_CMD, CMD_BINOM, 0},
    {"emptyset", TK_CMD, CMD_EMPTY, 0}, {"varnothing", TK_CMD, CMD_EMPTY, 0},
    {"lfloor", TK_CMD, CMD_LFLOOR, 0}, {"rfloor", TK_CMD, CMD_RFLOOR, 0}, {"lceil", TK_CMD, CMD_LCEIL, 0},
    {"rceil", TK_CMD, CMD_RCEIL, 0}, {"lbrace", TK_CMD, CMD_LSET, 0}, {"rbrace", TK_CMD, CMD_RSET, 0},
    {"langle", TK_OP, '(', 0}, {"rangle", TK_OP, ')', 0}, {"lvert", TK_OP, '|', 0}, {"rvert", TK_OP, '|', 0},
    {"vert", TK_OP, '|', 0}, {"mid", TK_OP, '|', 0}, {"lparen", TK_OP, '(', 0}, {"rparen", TK_OP, ')', 0},
    {"lbrack", TK_OP, '[', 0}, {"rbrack", TK_OP, ']', 0},
    {"circ", TK_DEG, 0, 0}, {"degree", TK_DEG, 0, 0}, {"ldots", TK_CMD, CMD_DOTS, 0},
    {"cdots", TK_CMD, CMD_DOTS, 0}, {"dots", TK_CMD, CMD_DOTS, 0},
    {"sin", TK_FUNC, CEL__F_SIN, 0}, {"cos", TK_FUNC, CEL__F_COS, 0}, {"tan", TK_FUNC, CEL__F_TAN, 0},
    {"cot", TK_FUNC, CEL__F_COT, 0}, {"sec", TK_FUNC, CEL__F_SEC, 0}, {"csc", TK_FUNC, CEL__F_CSC, 0},
    {"arcsin", TK_FUNC, CEL__F_ASIN, 0}, {"arccos", TK_FUNC, CEL__F_ACOS, 0}, {"arctan", TK_FUNC, CEL__F_ATAN, 0},
    {"arccot", TK_FUNC, CEL__F_ACOT, 0}, {"sinh", TK_FUNC, CEL__F_SINH, 0}, {"cosh", TK_FUNC, CEL__F_COSH, 0},
    {"tanh", TK_FUNC, CEL__F_TANH, 0}, {"ln", TK_FUNC, CEL__F_LN, 0}, {"log", TK_FUNC, CEL__F_LOG, 0},
    {"lg", TK_FUNC, CEL__F_LG, 0}, {"exp", TK_FUNC, CEL__F_EXP, 0}, {"gcd", TK_FUNC, CEL__F_GCD, 0},
    {"lcm", TK_FUNC, CEL__F_LCM, 0}, {"max", TK_FUNC, CEL__F_MAX, 0}, {"min", TK_FUNC, CEL__F_MIN, 0},
    {"det", TK_WORD, 0, 0},
};

/* Bare words with a meaning (no backslash). */
static const kw words[] = {
    {"sin", TK_FUNC, CEL__F_SIN, 0}, {"cos", TK_FUNC, CEL__F_COS, 0}, {"tan", TK_FUNC, CEL__F_TAN, 0},
    {"cot", TK_FUNC, CEL__F_COT, 0}, {"sec", TK_FUNC, CEL__F_SEC, 0}, {"csc", TK_FUNC, CEL__F_CSC, 0},
    {"arcsin", TK_FUNC, CEL__F_ASIN, 0}, {"arccos", TK_FUNC, CEL__F_ACOS, 0}, {"arctan", TK_FUNC, CEL__F_ATAN, 0},
    {"sinh", TK_FUNC, CEL__F_SINH, 0}, {"cosh", TK_FUNC, CEL__F_COSH, 0}, {"tanh", TK_FUNC, CEL__F_TANH, 0},
    {"ln", TK_FUNC, CEL__F_LN, 0}, {"log", TK_FUNC, CEL__F_LOG, 0}, {"exp", TK_FUNC, CEL__F_EXP, 0},
    {"sqrt", TK_FUNC, CEL__F_SQRT, 0}, {"abs", TK_FUNC, CEL__F_ABS, 0}, {"pi", TK_CONST, CEL__C_PI, 0},
    {"inf", TK_CONST, CEL__C_INF, 0}, {"infty", TK_CONST, CEL__C_INF, 0}, {"infinity", TK_CONST, CEL__C_INF, 0},
    {"and", TK_OP, ',', 0}, {"or", TK_OP, ',', 0}, {"percent", TK_PCT, 0, 0}, {"percentage", TK_PCT, 0, 0},
    {"pct", TK_PCT, 0, 0},
};

/* Two- and three-letter unit words that must not split into variables. */
static const char *const units[] = {"cm", "mm", "km", "kg", "mg", "ml", "ft", "yd", "mi", "mph", "kph", "hr",
                                    "hrs", "min", "sec", "lb", "lbs", "oz", "gal", "deg", "rad", "sq", "cu", "in",
                                    "am", "pm", "cc", "mL", "kW", "Hz", "kPa", "Pa", "N", "J", "W", "units", "per"};

static const kw *find_kw(const kw *tab, size_t nt, const char *s, size_t n)
{
    for (size_t i = 0; i < nt; i++)
        if (strlen(tab[i].name) == n && memcmp(tab[i].name, s, n) == 0) return &tab[i];
    return NULL;
}

static bool is_unit(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i]) == n && memcmp(units[i], s, n) == 0) return true;
    return false;
}

static void skip_ws(P *p)
{
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '$' || c == '~') p->pos++;
        else if ((unsigned char)c == 0xC2 && p->pos + 1 < p->n && (unsigned char)p->s[p->pos + 1] == 0xA0) p->pos += 2;
        else break;
    }
}

/* Exactly three digits at s[i..i+3) and no digit after them. */
static bool three_digits(const P *p, size_t i)
{
    return i + 3 <= p->n && isd(p->s[i]) && isd(p->s[i + 1]) && isd(p->s[i + 2]) && (i + 3 == p->n || !isd(p->s[i + 3]));
}

/* A number: digits with thousands separators (",", "{,}", "\," or "\!"
 * followed by exactly three digits; "," only outside brackets), an optional
 * fraction and an optional exponent (1e3, 2.5E-4). Exact when the digits fit. */
static void lex_number(P *p, tok *t)
{
    char dig[48];
    size_t nd = 0, nfrac = 0, ndig_int = 0, group = 0, ngroups = 0;
    bool overflow = false, leading = true;
    const char *s = p->s;
    while (p->pos < p->n) {
        char c = s[p->pos];
        if (isd(c)) {
            group++;
            if (leading && c == '0' && ndig_int == 0) {
                ndig_int++;
                p->pos++;
                continue;
            }
            leading = false;
            if (nd < 40) dig[nd++] = c;
            else overflow = true;
            ndig_int++;
            p->pos++;
            continue;
        }
        /* a thousands separator follows a first group of 1-3 digits (not a
         * lone 0) or a group of exactly 3, and precedes exactly 3 digits */
        size_t sep = 0;
        bool group_ok = ngroups == 0 ? (group >= 1 && group <= 3 && !(group == 1 && leading)) : group == 3;
        if (group_ok && !p->decimal_comma) {
            size_t q = p->pos;
            if (c == ',' && p->paren == 0 && three_digits(p, q + 1)) sep = 1;
            else if (c == ',' && q + 2 < p->n && s[q + 1] == '\\' && s[q + 2] == '!') {
                size_t k = q + 3; /* "32,\! 349": LaTeX ignores the space */
                while (k < p->n && s[k] == ' ') k++;
                if (three_digits(p, k)) sep = k - q;
            }
            else if (c == '{' && q + 3 <= p->n && s[q + 1] == ',' && s[q + 2] == '}' && three_digits(p, q + 3)) sep = 3;
            else if (c == '\\' && q + 1 < p->n && (s[q + 1] == ',' || s[q + 1] == '!' || s[q + 1] == ' ') &&
                     three_digits(p, q + 2))
                sep = 2;
            else if (c == ' ' && p->paren == 0 && three_digits(p, q + 1) && (q + 4 >= p->n || s[q + 4] != '/'))
                sep = 1;
        }
        if (sep) {
            p->pos += sep;
            group = 0;
            ngroups++;
            continue;
        }
        break;
    }
    if (p->decimal_comma && p->pos + 1 < p->n && s[p->pos] == ',' && isd(s[p->pos + 1])) {
        p->pos++;
        while (p->pos < p->n && isd(s[p->pos])) {
            if (nd < 40) dig[nd++] = s[p->pos], nfrac++;
            p->pos++;
        }
    } else if (p->pos < p->n && s[p->pos] == '.' && p->pos + 1 < p->n &&
               (isd(s[p->pos + 1]) || (p->n - p->pos > 10 && memcmp(s + p->pos + 1, "\\overline{", 10) == 0))) {
        p->pos++;
        while (p->pos < p->n && isd(s[p->pos])) {
            if (nd < 40) dig[nd++] = s[p->pos], nfrac++;
            p->pos++;
        }
    }
    /* a repeating block: 0.\overline{3} = 1/3, 0.1\overline{6} = 1/6 */
    int64_t rep = 0;
    int nrep = 0;
    if (nfrac + (p->pos > 0 && s[p->pos - 1] == '.') > 0 && p->n - p->pos > 10 &&
        memcmp(s + p->pos, "\\overline{", 10) == 0) {
        size_t k = p->pos + 10;
        while (k < p->n && isd(s[k]) && nrep < 9) rep = rep * 10 + (s[k] - '0'), nrep++, k++;
        if (nrep > 0 && k < p->n && s[k] == '}') p->pos = k + 1;
        else nrep = 0;
    }
    long ex = 0;
    bool has_exp = false;
    if (p->pos + 1 < p->n && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        size_t j = p->pos + 1;
        bool neg = false;
        if (s[j] == '+' || s[j] == '-') neg = s[j] == '-', j++;
        if (j < p->n && isd(s[j])) {
            size_t k = j;
            long v = 0;
            while (k < p->n && isd(s[k])) {
                if (v < 100000) v = v * 10 + (s[k] - '0');
                k++;
            }
            /* "2e3x" is still 2000x; but "2ex" (no digit) is 2*e*x: handled by not matching */
            has_exp = true;
            ex = neg ? -v : v;
            p->pos = k;
        }
    }
    t->k = TK_NUM;
    t->intlit = nfrac == 0 && !has_exp;
    /* value = digits * 10^(ex - nfrac) */
    long scale = ex - (long)nfrac;
    int64_t m = 0;
    bool fits = !overflow && nd <= 18;
    for (size_t i = 0; i < nd && fits; i++) m = m * 10 + (dig[i] - '0');
    if (fits && scale >= -18 && scale <= 18) {
        int64_t pw = 1;
        for (long i = 0; i < (scale < 0 ? -scale : scale); i++) pw *= 10;
        if (scale >= 0) {
            int64_t r;
            if (!__builtin_mul_overflow(m, pw, &r)) {
                t->exact = true, t->num = r, t->den = 1;
            }
        } else {
            int64_t g = cel__gcd64(m, pw);
            if (g == 0) g = 1;
            t->exact = true, t->num = m / g, t->den = pw / g;
        }
    }
    double v = 0;
    for (size_t i = 0; i < nd; i++) v = v * 10 + (dig[i] - '0');
    if (overflow) v *= pow(10.0, (double)(ndig_int - 40 > 0 ? ndig_int - 40 : 0));
    t->approx = v * pow(10.0, (double)scale);
    if (nrep > 0) {
        /* digits A with f decimals then block R of r digits:
         * (A (10^r - 1) + R) / (10^f (10^r - 1)) */
        int64_t p10r = 1, p10f = 1, num, den, t1;
        for (int i = 0; i < nrep; i++) p10r *= 10;
        bool ok = fits && nfrac <= 9 && !has_exp;
        for (size_t i = 0; ok && i < nfrac; i++) p10f *= 10;
        ok = ok && !__builtin_mul_overflow(m, p10r - 1, &t1) && !__builtin_add_overflow(t1, rep, &num) &&
             !__builtin_mul_overflow(p10f, p10r - 1, &den);
        t->intlit = false;
        if (ok) {
            int64_t g = cel__gcd64(num, den);
            t->exact = true, t->num = num / g, t->den = den / g;
        } else {
            t->exact = false;
            t->approx += (double)rep / ((double)p10f * (double)(p10r - 1));
        }
    }
    if (t->exact) t->approx = (double)t->num / (double)t->den;
}

static void set_op(tok *t, int ch)
{
    t->k = TK_OP;
    t->id = ch;
}

/* Raw content of a brace group starting at s[i] == '{': [*b, *e) and the index
 * after the closing brace; false when unbalanced. */
static bool raw_group(const P *p, size_t i, size_t *b, size_t *e, size_t *after)
{
    if (i >= p->n || p->s[i] != '{') return false;
    int d = 0;
    for (size_t k = i; k < p->n; k++) {
        char c = p->s[k];
        if (c == '\\') {
            k++;
            continue;
        }
        if (c == '{') d++;
        else if (c == '}' && --d == 0) {
            *b = i + 1, *e = k, *after = k + 1;
            return true;
        }
    }
    return false;
}

static bool word_is(const char *s, size_t n, const char *w)
{
    while (n && (*s == ' ')) s++, n--;
    while (n && s[n - 1] == ' ') n--;
    return strlen(w) == n && strncasecmp(s, w, n) == 0;
}

static void lex(P *p, tok *t)
{
    memset(t, 0, sizeof *t);
again:
    skip_ws(p);
    t->paren_before = p->paren;
    t->b = p->pos;
    if (!cel__charge(p->c, 1)) {
        t->k = TK_BAD;
        return;
    }
    if (p->pos >= p->n) {
        t->k = TK_END;
        t->e = p->pos;
        return;
    }
    const char *s = p->s;
    char c = s[p->pos];
    if (isd(c) || (c == '.' && p->pos + 1 < p->n && isd(s[p->pos + 1]))) {
        lex_number(p, t);
        t->e = p->pos;
        return;
    }
    if (isal(c)) {
        size_t b = p->pos, e = b;
        while (e < p->n && isal(s[e])) e++;
        size_t n = e - b;
        const kw *k = n > 1 ? find_kw(words, sizeof words / sizeof words[0], s + b, n) : NULL;
        /* "sinx", "lnx": a function name glued to one variable */
        const kw *glued = !k && n >= 3 ? find_kw(words, sizeof words / sizeof words[0], s + b, n - 1) : NULL;
        if (glued && glued->k != TK_FUNC) glued = NULL;
        if (k) {
            t->k = k->k, t->id = k->id, t->id2 = k->id2;
            p->pos = e;
        } else if (glued) {
            t->k = TK_FUNC, t->id = glued->id;
            p->pos = e - 1;
        } else if (n == 1 || (n <= 3 && !is_unit(s + b, n))) {
            /* "xy" is x*y: one letter at a time; e and i are the constants */
            p->pos = b + 1;
            if (c == 'e') t->k = TK_CONST, t->id = CEL__C_E;
            else if (c == 'i') t->k = TK_CONST, t->id = CEL__C_I;
            else t->k = TK_VAR, t->str = s + b, t->len = 1;
        } else {
            t->k = TK_WORD, t->str = s + b, t->len = n;
            p->pos = e;
        }
        t->e = p->pos;
        return;
    }
    if (c == '\\') {
        size_t i = p->pos + 1;
        if (i >= p->n) {
            p->pos = i;
            goto again;
        }
        char d = s[i];
        if (!isal(d)) {
            p->pos = i + 1;
            switch (d) {
            case '{': t->k = TK_CMD, t->id = CMD_LSET; p->paren++; break;
            case '}': t->k = TK_CMD, t->id = CMD_RSET; if (p->paren > 0) p->paren--; break;
            case '\\': t->k = TK_CMD, t->id = CMD_ROWSEP; break;
            case '%': t->k = TK_PCT; break;
            case '|': set_op(t, '|'); break;
            case ',': case ';': case ':': case '!': case ' ': case '$': case '#': case '&': case '>':
                goto again;
            default: t->k = TK_BAD; break;
            }
            t->e = p->pos;
            return;
        }
        size_t e = i;
        while (e < p->n && isal(s[e])) e++;
        const kw *k = find_kw(cmds, sizeof cmds / sizeof cmds[0], s + i, e - i);
        p->pos = e;
        if (!k) {
            /* Greek letters and other symbols: variables named by the command */
            t->k = TK_VAR, t->str = s + i, t->len = e - i;
            if (e - i > 12) t->k = TK_WORD;
            t->e = p->pos;
            return;
        }
        if (k->k == TK_CMD && (k->id == CMD_SKIP || k->id == CMD_SKIPDOT)) {
            if (k->id == CMD_SKIPDOT) {
                skip_ws(p);
                if (p->pos < p->n && s[p->pos] == '.') p->pos++;
            }
            goto again;
        }
        t->k = k->k, t->id = k->id, t->id2 = k->id2;
        if (k->k == TK_CMD && k->id == CMD_TEXT) {
            /* \text{ and } / \text{or} act as list separators */
            size_t gb, ge, after;
            size_t j = p->pos;
            while (j < p->n && s[j] == ' ') j++;
            if (raw_group(p, j, &gb, &ge, &after) &&
                (word_is(s + gb, ge - gb, "and") || word_is(s + gb, ge - gb, "or") || word_is(s + gb, ge - gb, ","))) {
                p->pos = after;
                set_op(t, ',');
            }
        }
        if (k->k == TK_CMD && (k->id == CMD_BEGIN || k->id == CMD_END)) {
            size_t gb, ge, after;
            skip_ws(p);
            if (!raw_group(p, p->pos, &gb, &ge, &after)) {
                t->k = TK_BAD;
            } else {
                t->str = s + gb, t->len = ge - gb;
                p->pos = after;
            }
        }
        if (k->k == TK_OP && (k->id == '(' || k->id == '[')) p->paren++;
        if (k->k == TK_OP && (k->id == ')' || k->id == ']') && p->paren > 0) p->paren--;
        t->e = p->pos;
        return;
    }
    if (c == '^') {
        /* ^\circ, ^{\circ}: degrees */
        size_t j = p->pos + 1;
        while (j < p->n && s[j] == ' ') j++;
        bool br = j < p->n && s[j] == '{';
        if (br) j++;
        while (j < p->n && s[j] == ' ') j++;
        if (j + 5 <= p->n && memcmp(s + j, "\\circ", 5) == 0 && (j + 5 == p->n || !isal(s[j + 5]))) {
            j += 5;
            while (j < p->n && s[j] == ' ') j++;
            if (!br || (j < p->n && s[j] == '}')) {
                p->pos = br ? j + 1 : j;
                t->k = TK_DEG;
                t->e = p->pos;
                return;
            }
        }
        p->pos++;
        set_op(t, '^');
        t->e = p->pos;
        return;
    }
    if ((unsigned char)c < 0x80) {
        p->pos++;
        switch (c) {
        case '(': case '[': p->paren++; set_op(t, c); break;
        case ')': case ']': if (p->paren > 0) p->paren--; set_op(t, c); break;
        case '<':
        case '>':
            if (p->pos < p->n && s[p->pos] == '=') {
                p->pos++;
                t->k = TK_CMD, t->id = CMD_REL, t->id2 = c == '<' ? CEL__R_LE : CEL__R_GE;
            } else {
                t->k = TK_CMD, t->id = CMD_REL, t->id2 = c == '<' ? CEL__R_LT : CEL__R_GT;
            }
            break;
        case '!':
            if (p->pos < p->n && s[p->pos] == '=') {
                p->pos++;
                t->k = TK_CMD, t->id = CMD_REL, t->id2 = CEL__R_NE;
            } else {
                set_op(t, '!');
            }
            break;
        case '%': t->k = TK_PCT; break;
        case '+': case '-': case '*': case '/': case '_': case '{': case '}': case ',': case '=': case '|':
        case '&': case '\'': case ';': case ':':
            set_op(t, c);
            break;
        default: t->k = TK_BAD; break;
        }
        t->e = p->pos;
        return;
    }
    /* UTF-8 symbols */
    size_t i = p->pos;
    uint32_t cp = cel__utf8_next(s, p->n, &i);
    p->pos = i;
    t->e = i;
    switch (cp) {
    case 0x2212: case 0x2013: case 0x2014: set_op(t, '-'); return;
    case 0xD7: case 0xB7: case 0x22C5: case 0x2217: set_op(t, '*'); return;
    case 0xF7: case 0x2215: set_op(t, '/'); return;
    case 0x3C0: t->k = TK_CONST, t->id = CEL__C_PI; return;
    case 0x221E: t->k = TK_CONST, t->id = CEL__C_INF; return;
    case 0xB0: case 0x2218: t->k = TK_DEG; return;
    case 0x221A: t->k = TK_CMD, t->id = CMD_SQRT; return;
    case 0xB1: t->k = TK_CMD, t->id = CMD_PM; return;
    case 0x2213: t->k = TK_CMD, t->id = CMD_PM, t->id2 = 1; return;
    case 0x2264: case 0x2A7D: t->k = TK_CMD, t->id = CMD_REL, t->id2 = CEL__R_LE; return;
    case 0x2265: case 0x2A7E: t->k = TK_CMD, t->id = CMD_REL, t->id2 = CEL__R_GE; return;
    case 0x2260: t->k = TK_CMD, t->id = CMD_REL, t->id2 = CEL__R_NE; return;
    case 0x2248: t->k = TK_CMD, t->id = CMD_REL, t->id2 = CEL__R_APPROX; return;
    case 0x2208: t->k = TK_CMD, t->id = CMD_REL, t->id2 = CEL__R_IN; return;
    case 0x222A: t->k = TK_CMD, t->id = CMD_CUP; return;
    case 0x2229: t->k = TK_CMD, t->id = CMD_CAP; return;
    case 0x2205: t->k = TK_CMD, t->id = CMD_EMPTY; return;
    case 0x2026: t->k = TK_CMD, t->id = CMD_DOTS; return;
    case 0x2032: set_op(t, '\''); return;
    case 0xB2: t->k = TK_SUP, t->id = 2; return;
    case 0xB3: t->k = TK_SUP, t->id = 3; return;
    case 0xB9: t->k = TK_SUP, t->id = 1; return;
    case 0x2070: t->k = TK_SUP, t->id = 0; return;
    case 0x2009: case 0x200A: case 0x2002: case 0x2003: case 0x202F: case 0x3000: goto again;
    default: break;
    }
    if (cp >= 0x2074 && cp <= 0x2079) {
        t->k = TK_SUP, t->id = (int)(cp - 0x2070);
        return;
    }
    if (cp >= 0x391 && cp <= 0x3C9) {
        t->k = TK_VAR, t->str = s + t->b, t->len = i - t->b;
        return;
    }
    if (cp == 0xFFFD) {
        t->k = TK_BAD;
        return;
    }
    /* other letters: words (text) */
    size_t e = i;
    while (e < p->n && ((unsigned char)s[e] >= 0x80 || isal(s[e]))) {
        size_t k = e;
        uint32_t q = cel__utf8_next(s, p->n, &k);
        if (q == 0x2212 || q == 0xD7 || q == 0xB7 || q == 0xF7 || q == 0x3C0 || q == 0x221E || q == 0xB0 ||
            q == 0x221A || q == 0xB1 || (q >= 0x2200 && q <= 0x22FF) || q == 0xFFFD)
            break;
        e = k;
    }
    p->pos = e;
    t->k = TK_WORD, t->str = s + t->b, t->len = e - t->b, t->e = e;
}

static tok *peek(P *p)
{
    if (!p->has_pk) {
        lex(p, &p->pk);
        p->has_pk = true;
    }
    return &p->pk;
}

static tok next(P *p)
{
    peek(p);
    p->has_pk = false;
    return p->pk;
}

/* Drops the peeked token so the next read starts at its first character (for
 * the character-level argument rules of \frac12 and friends). */
static void unpeek(P *p)
{
    if (p->has_pk) {
        p->pos = p->pk.b;
        p->paren = p->pk.paren_before;
        p->has_pk = false;
    }
}

static bool is_op(const tok *t, int ch) { return t->k == TK_OP && t->id == ch; }
static bool is_cmd(const tok *t, int id) { return t->k == TK_CMD && t->id == id; }

/* ------------------------------------------------------------ nodes */

static void *fail(P *p, const char *why)
{
    if (p->why && !*p->why) *p->why = why;
    return NULL;
}

static cel__node *mk(P *p, int kind, uint32_t nkid)
{
    if (!cel__charge(p->c, 1)) return NULL;
    cel__node *n = cel__alloc(p->c, sizeof *n + nkid * sizeof(cel__node *));
    if (!n) return NULL;
    n->kind = (uint8_t)kind;
    n->nkid = nkid;
    n->kid = nkid ? (cel__node **)(n + 1) : NULL;
    return n;
}

static uint8_t inherit(const cel__node *a) { return a ? a->flags & (CEL__NF_HAS_PM | CEL__NF_HAS_VAR) : 0; }

static cel__node *mk1(P *p, int kind, cel__node *a)
{
    if (!a) return NULL;
    cel__node *n = mk(p, kind, 1);
    if (n) n->kid[0] = a, n->flags = inherit(a);
    return n;
}

static cel__node *mk2(P *p, int kind, cel__node *a, cel__node *b)
{
    if (!a || !b) return NULL;
    cel__node *n = mk(p, kind, 2);
    if (n) n->kid[0] = a, n->kid[1] = b, n->flags = inherit(a) | inherit(b);
    return n;
}

static cel__node *mknum(P *p, int64_t num, int64_t den)
{
    cel__node *n = mk(p, CEL__N_NUM, 0);
    if (n) n->exact = true, n->num = num, n->den = den, n->approx = (double)num / (double)den;
    return n;
}

/* A growable list of kids in the arena. */
typedef struct {
    cel__node **v;
    uint32_t n, cap;
} kids;

static bool kids_push(P *p, kids *k, cel__node *x)
{
    if (!x) return false;
    if (k->n == k->cap) {
        uint32_t nc = k->cap ? k->cap * 2 : 4;
        if (nc > 100000) return fail(p, "too many elements"), false;
        cel__node **nv = cel__alloc(p->c, nc * sizeof *nv);
        if (!nv) return false;
        if (k->n) memcpy(nv, k->v, k->n * sizeof *nv);
        k->v = nv, k->cap = nc;
    }
    k->v[k->n++] = x;
    return true;
}

static cel__node *mkn(P *p, int kind, const kids *k)
{
    cel__node *n = mk(p, kind, k->n);
    if (!n) return NULL;
    for (uint32_t i = 0; i < k->n; i++) n->kid[i] = k->v[i], n->flags |= inherit(k->v[i]);
    return n;
}

/* ------------------------------------------------------------ parser */

static cel__node *parse_list(P *p);
static cel__node *parse_rel(P *p);
static cel__node *parse_sum(P *p);
static cel__node *parse_power(P *p);
static cel__node *parse_primary(P *p);
static cel__node *parse_unary(P *p);

static bool enter(P *p)
{
    if (++p->depth > p->max_depth) {
        if (!p->c->fail) p->c->fail = "too_deep";
        return false;
    }
    return true;
}
static void leave(P *p) { p->depth--; }

static bool expect_op(P *p, int ch)
{
    tok t = next(p);
    if (!is_op(&t, ch)) {
        fail(p, ch == ')' ? "expected ')'" : ch == '}' ? "expected '}'" : ch == '|' ? "expected '|'" : "expected a closing bracket");
        return false;
    }
    return true;
}

/* Parses the content of s[b..e) with a fresh lexer sharing the context. */
static cel__node *parse_sub(P *p, size_t b, size_t e)
{
    P q = *p;
    q.pos = b, q.n = e, q.paren = 0, q.has_pk = false, q.abs_depth = 0;
    if (!enter(p)) return NULL;
    q.depth = p->depth;
    cel__node *r = parse_list(&q);
    if (r && peek(&q)->k != TK_END) r = fail(p, "unexpected text after the expression");
    leave(p);
    return r;
}

static cel__node *mktext(P *p, const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    cel__node *t = mk(p, CEL__N_TEXT, 0);
    if (t) t->str = s, t->len = n;
    return t;
}

/* True when a \text{} body reads as mathematics rather than words. */
static bool texty_math(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] == ' ') i++;
    if (i == n) return false;
    bool digit = false;
    for (size_t k = i; k < n; k++) {
        char c = s[k];
        if (isd(c)) digit = true;
        else if (!strchr(" .,+-*/^()[]=", c)) return false;
    }
    return digit;
}

/* One argument of \frac, \sqrt, \binom, \text...: a brace group, else a single
 * character (\frac12 = 1/2) or a single command. */
static cel__node *parse_arg(P *p, bool raw_text)
{
    unpeek(p);
    skip_ws(p);
    if (p->pos >= p->n) return fail(p, "missing argument");
    char c = p->s[p->pos];
    if (c == '{') {
        size_t b, e, after;
        if (!raw_group(p, p->pos, &b, &e, &after)) return fail(p, "unbalanced '{'");
        if (raw_text && !texty_math(p->s + b, e - b)) {
            p->pos = after;
            return mktext(p, p->s + b, e - b);
        }
        cel__node *r = parse_sub(p, b, e);
        p->pos = after;
        return r;
    }
    if (isd(c)) {
        p->pos++;
        cel__node *r = mknum(p, c - '0', 1);
        if (r) r->flags |= CEL__NF_INTLIT;
        return r;
    }
    if (isal(c)) {
        p->pos++;
        cel__node *r = mk(p, c == 'e' || c == 'i' ? CEL__N_CONST : CEL__N_VAR, 0);
        if (!r) return NULL;
        if (c == 'e') r->op = CEL__C_E;
        else if (c == 'i') r->op = CEL__C_I;
        else r->str = p->s + p->pos - 1, r->len = 1, r->flags |= CEL__NF_HAS_VAR;
        return r;
    }
    return parse_primary(p);
}

/* An exponent: a brace group, a signed exponent, or one primary with its own
 * right-associative power (2^3^2 = 2^9). */
static cel__node *parse_exponent(P *p)
{
    if (!enter(p)) return NULL;
    cel__node *r;
    tok *t = peek(p);
    if (is_op(t, '-')) {
        next(p);
        r = mk1(p, CEL__N_NEG, parse_exponent(p));
    } else if (is_op(t, '+')) {
        next(p);
        r = parse_exponent(p);
    } else if (is_op(t, '{')) {
        r = parse_arg(p, false);
    } else {
        r = parse_primary(p);
        if (r && is_op(peek(p), '^')) {
            next(p);
            r = mk2(p, CEL__N_POW, r, parse_exponent(p));
        }
    }
    leave(p);
    return r;
}

static bool starts_primary(const P *p, const tok *t)
{
    switch (t->k) {
    case TK_NUM: case TK_VAR: case TK_WORD: case TK_FUNC: case TK_CONST: return true;
    case TK_OP: return t->id == '(' || t->id == '{' || (t->id == '|' && p->abs_depth == 0);
    case TK_CMD:
        return t->id == CMD_FRAC || t->id == CMD_SQRT || t->id == CMD_TEXT || t->id == CMD_STYLE ||
               t->id == CMD_BINOM || t->id == CMD_LFLOOR || t->id == CMD_LCEIL || t->id == CMD_BEGIN ||
               t->id == CMD_LSET;
    default: return false;
    }
}

/* Function application: \sin^2 x, \sin^{-1}(x), \log_2 8, \ln(x), sin x. */
static cel__node *parse_func(P *p, int id)
{
    cel__node *pw = NULL, *base = NULL;
    for (int guard = 0; guard < 4; guard++) {
        tok *t = peek(p);
        if (is_op(t, '^')) {
            next(p);
            pw = parse_exponent(p);
            if (!pw) return NULL;
            /* \sin^{-1} is the inverse function */
            if (pw->kind == CEL__N_NEG && pw->kid[0]->kind == CEL__N_NUM && pw->kid[0]->exact &&
                pw->kid[0]->num == 1 && pw->kid[0]->den == 1 && id <= CEL__F_COT) {
                static const int inv[] = {CEL__F_ASIN, CEL__F_ACOS, CEL__F_ATAN, CEL__F_ACOT, -1, -1};
                if (inv[id] >= 0) {
                    id = inv[id];
                    pw = NULL;
                }
            }
        } else if (is_op(t, '_') && (id == CEL__F_LOG || id == CEL__F_LG || id == CEL__F_LN)) {
            next(p);
            base = parse_exponent(p);
            if (!base) return NULL;
            id = CEL__F_LOGB;
        } else {
            break;
        }
    }
    cel__node *arg;
    tok *t = peek(p);
    if (is_op(t, '(')) {
        next(p);
        if (!enter(p)) return NULL;
        arg = parse_list(p);
        leave(p);
        if (!arg || !expect_op(p, ')')) return NULL;
        if (arg->flags & CEL__NF_INTLIT) arg->flags &= (uint8_t)~CEL__NF_INTLIT;
    } else if (is_op(t, '{')) {
        arg = parse_arg(p, false);
    } else if (starts_primary(p, t) && t->k != TK_FUNC) {
        /* an implicit product up to the next function or operator: \sin 2x */
        arg = parse_power(p);
        while (arg) {
            tok *u = peek(p);
            if (!starts_primary(p, u) || u->k == TK_FUNC || u->k == TK_WORD) break;
            arg = mk2(p, CEL__N_MUL, arg, parse_power(p));
        }
    } else if (t->k == TK_FUNC) {
        arg = parse_power(p); /* \sin \cos x = sin(cos x) */
    } else {
        return fail(p, "function without an argument");
    }
    if (!arg) return NULL;
    cel__node *f;
    if (arg->kind == CEL__N_LIST && (id == CEL__F_GCD || id == CEL__F_LCM || id == CEL__F_MAX || id == CEL__F_MIN)) {
        f = mk(p, CEL__N_FUNC, arg->nkid);
        if (!f) return NULL;
        for (uint32_t i = 0; i < arg->nkid; i++) f->kid[i] = arg->kid[i], f->flags |= inherit(arg->kid[i]);
    } else if (base) {
        f = mk2(p, CEL__N_FUNC, arg, base);
    } else {
        f = mk1(p, CEL__N_FUNC, arg);
    }
    if (!f) return NULL;
    f->op = (uint8_t)id;
    if (pw) f = mk2(p, CEL__N_POW, f, pw);
    return f;
}

/* \begin{pmatrix} a & b \\ c & d \end{pmatrix} (also bmatrix, matrix,
 * vmatrix, Bmatrix, smallmatrix, array with its column spec). */
static cel__node *parse_matrix(P *p, const tok *begin)
{
    if (begin->len == 5 && memcmp(begin->str, "array", 5) == 0) {
        size_t b, e, after;
        unpeek(p);
        skip_ws(p);
        if (raw_group(p, p->pos, &b, &e, &after)) p->pos = after;
    } else if (!(begin->len >= 6 && memcmp(begin->str + begin->len - 6, "matrix", 6) == 0) &&
               !(begin->len == 5 && memcmp(begin->str, "cases", 5) == 0)) {
        return fail(p, "unsupported environment");
    }
    kids k = {0};
    uint32_t rows = 0, cols = 0, c = 0;
    for (;;) {
        tok *t = peek(p);
        if (is_cmd(t, CMD_END)) {
            next(p);
            if (c > 0) {
                if (rows > 0 && c != cols) return fail(p, "ragged matrix");
                cols = c, rows++;
            }
            break;
        }
        if (t->k == TK_END) return fail(p, "missing \\end");
        if (!enter(p)) return NULL;
        cel__node *x = parse_rel(p);
        leave(p);
        if (!kids_push(p, &k, x)) return NULL;
        c++;
        t = peek(p);
        if (is_op(t, '&')) {
            next(p);
        } else if (is_cmd(t, CMD_ROWSEP)) {
            next(p);
            if (rows > 0 && c != cols) return fail(p, "ragged matrix");
            cols = c, rows++, c = 0;
        } else if (!is_cmd(t, CMD_END)) {
            return fail(p, "unexpected token in matrix");
        }
    }
    if (rows == 0 || cols == 0 || rows > 1000 || cols > 1000) return fail(p, "empty matrix");
    cel__node *m = mkn(p, CEL__N_MATRIX, &k);
    if (m) m->rows = (uint16_t)rows, m->cols = (uint16_t)cols;
    return m;
}

/* ( ... ) and [ ... ]: a group, a tuple or an interval; the closer may differ
 * from the opener ([0, 1) is half-open). */
static cel__node *parse_bracketed(P *p, char open)
{
    tok *t = peek(p);
    if (is_op(t, ')') || is_op(t, ']')) {
        tok cl = next(p);
        cel__node *e = mk(p, CEL__N_TUPLE, 0);
        if (e) e->lb = open, e->rb = (char)cl.id;
        return e;
    }
    int saved_abs = p->abs_depth;
    p->abs_depth = 0;
    cel__node *l = parse_list(p);
    p->abs_depth = saved_abs;
    if (!l) return NULL;
    tok cl = next(p);
    if (!(is_op(&cl, ')') || is_op(&cl, ']'))) return fail(p, "expected a closing bracket");
    if (l->kind == CEL__N_LIST) {
        l->kind = CEL__N_TUPLE;
        l->lb = open, l->rb = (char)cl.id;
        return l;
    }
    if ((open == '(' && cl.id == ')') || (open == '[' && cl.id == ']')) {
        l->flags &= (uint8_t)~(CEL__NF_INTLIT | CEL__NF_FRACLIT);
        return l;
    }
    return fail(p, "mismatched brackets");
}

static cel__node *parse_primary(P *p)
{
    if (!enter(p)) return NULL;
    cel__node *r = NULL;
    tok t = next(p);
    switch (t.k) {
    case TK_NUM: {
        r = mk(p, CEL__N_NUM, 0);
        if (!r) break;
        r->exact = t.exact, r->num = t.num, r->den = t.den, r->approx = t.approx;
        r->str = p->s + t.b, r->len = t.e - t.b; /* the digits as written (big integers compare by them) */
        if (t.intlit && t.exact) r->flags |= CEL__NF_INTLIT;
        break;
    }
    case TK_VAR: {
        r = mk(p, CEL__N_VAR, 0);
        if (r) r->str = t.str, r->len = t.len, r->flags |= CEL__NF_HAS_VAR;
        break;
    }
    case TK_CONST: {
        r = mk(p, CEL__N_CONST, 0);
        if (r) r->op = (uint8_t)t.id;
        break;
    }
    case TK_WORD: r = mktext(p, t.str, t.len); break;
    case TK_FUNC: r = parse_func(p, t.id); break;
    case TK_OP:
        if (t.id == '(' || t.id == '[') {
            r = parse_bracketed(p, (char)t.id);
        } else if (t.id == '{') {
            if (is_op(peek(p), '}')) {
                next(p);
                r = mktext(p, "", 0);
                break;
            }
            /* LaTeX braces only group: {1,3} is the list 1,3 (\{1,3\} is a set) */
            r = parse_list(p);
            if (r && !expect_op(p, '}')) r = NULL;
        } else if (t.id == '|') {
            p->abs_depth++;
            cel__node *x = parse_sum(p);
            p->abs_depth--;
            if (x && expect_op(p, '|')) {
                r = mk1(p, CEL__N_FUNC, x);
                if (r) r->op = CEL__F_ABS;
            }
        } else {
            r = fail(p, "unexpected operator");
        }
        break;
    case TK_CMD:
        switch (t.id) {
        case CMD_FRAC: {
            cel__node *a = parse_arg(p, false);
            cel__node *b = a ? parse_arg(p, false) : NULL;
            r = mk2(p, CEL__N_DIV, a, b);
            if (r && a->kind == CEL__N_NUM && b->kind == CEL__N_NUM && (a->flags & CEL__NF_INTLIT) &&
                (b->flags & CEL__NF_INTLIT))
                r->flags |= CEL__NF_FRACLIT;
            break;
        }
        case CMD_SQRT: {
            unpeek(p);
            skip_ws(p);
            cel__node *idx = NULL;
            if (p->pos < p->n && p->s[p->pos] == '[') {
                size_t k = p->pos + 1, d = 1;
                while (k < p->n && d) {
                    if (p->s[k] == '[') d++;
                    else if (p->s[k] == ']') d--;
                    if (d) k++;
                }
                if (k >= p->n) {
                    r = fail(p, "unbalanced \\sqrt[");
                    break;
                }
                idx = parse_sub(p, p->pos + 1, k);
                p->pos = k + 1;
                if (!idx) break;
            }
            cel__node *x = parse_arg(p, false);
            if (idx) {
                r = mk2(p, CEL__N_FUNC, x, idx);
                if (r) r->op = CEL__F_ROOT;
            } else {
                r = mk1(p, CEL__N_FUNC, x);
                if (r) r->op = CEL__F_SQRT;
            }
            break;
        }
        case CMD_TEXT: r = parse_arg(p, true); break;
        case CMD_STYLE: r = parse_arg(p, false); break;
        case CMD_BINOM: {
            cel__node *a = parse_arg(p, false);
            cel__node *b = a ? parse_arg(p, false) : NULL;
            r = mk2(p, CEL__N_FUNC, a, b);
            if (r) r->op = CEL__F_BINOM;
            break;
        }
        case CMD_LSET: {
            kids k = {0};
            if (is_cmd(peek(p), CMD_RSET)) {
                next(p);
                r = mkn(p, CEL__N_SET, &k);
                break;
            }
            cel__node *l = parse_list(p);
            if (!l) break;
            tok cl = next(p);
            if (!is_cmd(&cl, CMD_RSET)) {
                r = fail(p, "expected '\\}'");
                break;
            }
            if (l->kind == CEL__N_LIST) {
                l->kind = CEL__N_SET;
                r = l;
            } else if (kids_push(p, &k, l)) {
                r = mkn(p, CEL__N_SET, &k);
            }
            break;
        }
        case CMD_EMPTY: {
            kids k = {0};
            r = mkn(p, CEL__N_SET, &k);
            break;
        }
        case CMD_LFLOOR:
        case CMD_LCEIL: {
            cel__node *x = parse_sum(p);
            tok cl = next(p);
            if (!x) break;
            if (!is_cmd(&cl, t.id == CMD_LFLOOR ? CMD_RFLOOR : CMD_RCEIL)) {
                r = fail(p, "unbalanced floor/ceiling");
                break;
            }
            r = mk1(p, CEL__N_FUNC, x);
            if (r) r->op = t.id == CMD_LFLOOR ? CEL__F_FLOOR : CEL__F_CEIL;
            break;
        }
        case CMD_BEGIN: r = parse_matrix(p, &t); break;
        case CMD_DOTS: r = mktext(p, "...", 3); break;
        default: r = fail(p, "unexpected command"); break;
        }
        break;
    case TK_END: r = fail(p, "unexpected end of answer"); break;
    default: r = fail(p, "unexpected character"); break;
    }
    leave(p);
    return r;
}

static cel__node *parse_postfix(P *p)
{
    cel__node *x = parse_primary(p);
    for (int guard = 0; x && guard < 64; guard++) {
        tok *t = peek(p);
        if (is_op(t, '!')) {
            next(p);
            x = mk1(p, CEL__N_FUNC, x);
            if (x) x->op = CEL__F_FACT;
        } else if (t->k == TK_PCT) {
            next(p);
            x = mk1(p, CEL__N_PCT, x);
        } else if (t->k == TK_DEG) {
            next(p);
            x = mk1(p, CEL__N_DEG, x);
        } else if (t->k == TK_SUP) {
            tok s = next(p);
            x = mk2(p, CEL__N_POW, x, mknum(p, s.id, 1));
        } else if (is_op(t, '_')) {
            /* subscripts name variables: x_1, a_{n+1} */
            next(p);
            unpeek(p);
            skip_ws(p);
            size_t b = p->pos, e, after;
            if (p->pos < p->n && p->s[p->pos] == '{') {
                size_t gb, ge;
                if (!raw_group(p, p->pos, &gb, &ge, &after)) return fail(p, "unbalanced '{'");
                e = after;
            } else if (p->pos < p->n && (isal(p->s[p->pos]) || isd(p->s[p->pos]))) {
                e = p->pos + 1;
            } else {
                return fail(p, "bad subscript");
            }
            p->pos = e;
            if (x->kind == CEL__N_VAR && x->str + x->len == p->s + b - 1) {
                x->len = e - (size_t)(x->str - p->s);
            }
        } else if (is_op(t, '\'')) {
            next(p);
        } else {
            break;
        }
    }
    return x;
}

static cel__node *parse_power(P *p)
{
    if (!enter(p)) return NULL;
    cel__node *b = parse_postfix(p);
    if (b && is_op(peek(p), '^')) {
        next(p);
        b = mk2(p, CEL__N_POW, b, parse_exponent(p));
        /* postfix after a power: 5^2% is rare; x^2! is (x^2)! */
        for (int guard = 0; b && guard < 8; guard++) {
            tok *t = peek(p);
            if (t->k == TK_PCT) next(p), b = mk1(p, CEL__N_PCT, b);
            else if (t->k == TK_DEG) next(p), b = mk1(p, CEL__N_DEG, b);
            else break;
        }
    }
    leave(p);
    return b;
}

static cel__node *parse_unary(P *p)
{
    if (!enter(p)) return NULL;
    cel__node *r;
    tok *t = peek(p);
    if (is_op(t, '-')) {
        next(p);
        r = mk1(p, CEL__N_NEG, parse_unary(p));
    } else if (is_op(t, '+')) {
        next(p);
        r = parse_unary(p);
    } else if (is_cmd(t, CMD_PM)) {
        next(p);
        r = mk1(p, CEL__N_PM, parse_unary(p));
        if (r) r->flags |= CEL__NF_HAS_PM;
    } else {
        r = parse_power(p);
    }
    leave(p);
    return r;
}

static bool is_intlit(const cel__node *x)
{
    if (x->kind == CEL__N_NEG) x = x->kid[0];
    return x->kind == CEL__N_NUM && (x->flags & CEL__NF_INTLIT);
}

/* After an integer literal w: " n/d" (spaces only, no line break) with
 * integer literals n and d makes the mixed number w + n/d (sign of w applied
 * to the whole). A zero denominator makes the whole answer invalid. */
static cel__node *parse_spaced_mixed(P *p, cel__node *w)
{
    tok *t = peek(p);
    size_t gap_b = t->b;
    while (gap_b > 0 && (p->s[gap_b - 1] == ' ' || p->s[gap_b - 1] == '\t')) gap_b--;
    if (gap_b == t->b || !t->intlit || !t->exact) return NULL;
    for (size_t i = gap_b; i < t->b; i++)
        if (p->s[i] != ' ' && p->s[i] != '\t') return NULL;
    if (t->e >= p->n || p->s[t->e] != '/' || t->e + 1 >= p->n || !isd(p->s[t->e + 1])) return NULL;
    tok num = next(p);
    next(p); /* '/' */
    tok den = next(p);
    if (den.k != TK_NUM || !den.intlit || !den.exact) return fail(p, "bad mixed number");
    if (den.num == 0) return fail(p, "zero denominator");
    cel__node *fr = mk2(p, CEL__N_DIV, mknum(p, num.num, 1), mknum(p, den.num, 1));
    cel__node *r = w->kind == CEL__N_NEG ? mk1(p, CEL__N_NEG, mk2(p, CEL__N_ADD, w->kid[0], fr))
                                         : mk2(p, CEL__N_ADD, w, fr);
    /* "4 4/9%" scales the whole mixed number */
    for (int guard = 0; r && guard < 4; guard++) {
        tok *u = peek(p);
        if (u->k == TK_PCT) next(p), r = mk1(p, CEL__N_PCT, r);
        else break;
    }
    return r;
}

static cel__node *parse_term(P *p)
{
    if (!enter(p)) return NULL;
    cel__node *f = parse_unary(p);
    int factors = 1;
    while (f) {
        tok *t = peek(p);
        if (is_op(t, '*')) {
            next(p);
            f = mk2(p, CEL__N_MUL, f, parse_unary(p));
            factors++;
        } else if (is_op(t, '/')) {
            next(p);
            f = mk2(p, CEL__N_DIV, f, parse_unary(p));
            factors++;
        } else if (starts_primary(p, t)) {
            if (t->k == TK_NUM && !(f->kind == CEL__N_TEXT)) {
                /* "4 4/9" is a mixed number; any other "2 3" is not a product
                 * anyone writes on purpose */
                cel__node *m = factors == 1 && is_intlit(f) ? parse_spaced_mixed(p, f) : NULL;
                if (!m) {
                    f = fail(p, "two numbers in a row");
                    break;
                }
                f = m;
                factors++;
                continue;
            }
            cel__node *g = parse_power(p);
            if (!g) {
                f = NULL;
                break;
            }
            if (factors == 1 && is_intlit(f) && (g->flags & CEL__NF_FRACLIT)) {
                /* a mixed number: 2\frac{1}{2} = 5/2, -2\frac{1}{2} = -5/2 */
                if (f->kind == CEL__N_NEG) f = mk1(p, CEL__N_NEG, mk2(p, CEL__N_ADD, f->kid[0], g));
                else f = mk2(p, CEL__N_ADD, f, g);
            } else {
                f = mk2(p, CEL__N_MUL, f, g);
            }
            factors++;
        } else {
            break;
        }
    }
    leave(p);
    return f;
}

static cel__node *parse_sum(P *p)
{
    if (!enter(p)) return NULL;
    cel__node *t = parse_term(p);
    while (t) {
        tok *o = peek(p);
        if (is_op(o, '+')) {
            next(p);
            t = mk2(p, CEL__N_ADD, t, parse_term(p));
        } else if (is_op(o, '-')) {
            next(p);
            t = mk2(p, CEL__N_ADD, t, mk1(p, CEL__N_NEG, parse_term(p)));
        } else if (is_cmd(o, CMD_PM)) {
            next(p);
            t = mk2(p, CEL__N_PM, t, parse_term(p));
            if (t) t->flags |= CEL__NF_HAS_PM;
        } else {
            break;
        }
    }
    leave(p);
    return t;
}

static cel__node *parse_union(P *p)
{
    cel__node *a = parse_sum(p);
    if (!a || !(is_cmd(peek(p), CMD_CUP))) return a;
    kids k = {0};
    if (!kids_push(p, &k, a)) return NULL;
    while (is_cmd(peek(p), CMD_CUP)) {
        next(p);
        if (!kids_push(p, &k, parse_sum(p))) return NULL;
    }
    return mkn(p, CEL__N_UNION, &k);
}

static cel__node *parse_rel(P *p)
{
    if (!enter(p)) return NULL;
    cel__node *l = parse_union(p);
    while (l) {
        tok *t = peek(p);
        int op;
        if (is_op(t, '=')) op = CEL__R_EQ;
        else if (is_cmd(t, CMD_REL)) op = t->id2;
        else break;
        next(p);
        l = mk2(p, CEL__N_REL, l, parse_union(p));
        if (l) l->op = (uint8_t)op;
    }
    leave(p);
    return l;
}

static cel__node *parse_list(P *p)
{
    if (!enter(p)) return NULL;
    cel__node *first = parse_rel(p);
    if (!first) {
        leave(p);
        return NULL;
    }
    if (!is_op(peek(p), ',') && !is_op(peek(p), ';')) {
        leave(p);
        return first;
    }
    kids k = {0};
    kids_push(p, &k, first);
    while (is_op(peek(p), ',') || is_op(peek(p), ';')) {
        next(p);
        tok *t = peek(p);
        if (t->k == TK_END || is_op(t, ')') || is_op(t, ']') || is_op(t, '}')) break; /* "1, 2," */
        if (!kids_push(p, &k, parse_rel(p))) {
            leave(p);
            return NULL;
        }
    }
    leave(p);
    return mkn(p, CEL__N_LIST, &k);
}

/* The whole answer is one number with a decimal comma: "2,5", "1000,99",
 * "0,111" - but not "1,000" (a thousands separator). */
static bool lone_decimal_comma(const char *s, size_t n)
{
    size_t i = 0, e = n;
    while (i < e && (s[i] == ' ' || s[i] == '$')) i++;
    while (e > i && (s[e - 1] == ' ' || s[e - 1] == '$')) e--;
    if (i < e && (s[i] == '-' || s[i] == '+')) i++;
    size_t a = i;
    while (i < e && isd(s[i])) i++;
    size_t int_len = i - a;
    if (int_len == 0 || i >= e || s[i] != ',') return false;
    size_t b = ++i;
    while (i < e && isd(s[i])) i++;
    size_t frac_len = i - b;
    if (i != e || frac_len == 0) return false;
    /* "0,5" and two or more decimals read as a decimal comma; "2,3" stays
     * the list of two roots and "1,000" a thousands separator */
    if (int_len == 1 && s[a] == '0') return true;
    if (frac_len == 1) return false;
    bool thousands = frac_len == 3 && int_len <= 3;
    return !thousands;
}

cel__node *cel__latex_parse(cel__ctx *c, const char *s, size_t n, const char **why)
{
    const char *dummy = NULL;
    if (!why) why = &dummy;
    *why = NULL;
    if (n > c->cfg->max_answer_bytes) {
        *why = "answer too long";
        return NULL;
    }
    P p;
    memset(&p, 0, sizeof p);
    p.c = c, p.s = s, p.n = n, p.max_depth = c->cfg->max_depth, p.why = why;
    p.decimal_comma = lone_decimal_comma(s, n);
    cel__node *r = parse_list(&p);
    if (r && peek(&p)->k != TK_END) {
        *why = "unexpected text after the expression";
        r = NULL;
    }
    if (!r && !*why) *why = c->fail ? c->fail : "syntax error";
    return r;
}

/* ------------------------------------------------------------ printing */

static void puts_(cel__obuf *b, const char *s) { cel__obuf_put(b, s, strlen(s)); }

static void print_node(cel__obuf *b, const cel__node *x, int depth)
{
    static const char *const kn[] = {"num", "const", "var", "text", "+", "*", "/", "neg", "^", "f", "pm", "%",
                                     "deg", "rel", "list", "tuple", "set", "union", "matrix"};
    static const char *const rn[] = {"=", "<", "<=", ">", ">=", "!=", "~", "in"};
    static const char *const cn[] = {"pi", "e", "i", "inf"};
    char tmp[64];
    if (!x || depth > 200) {
        puts_(b, "?");
        return;
    }
    switch (x->kind) {
    case CEL__N_NUM:
        if (x->exact && x->den == 1) snprintf(tmp, sizeof tmp, "%lld", (long long)x->num);
        else if (x->exact) snprintf(tmp, sizeof tmp, "%lld/%lld", (long long)x->num, (long long)x->den);
        else snprintf(tmp, sizeof tmp, "%.17g", x->approx);
        puts_(b, tmp);
        return;
    case CEL__N_CONST: puts_(b, cn[x->op & 3]); return;
    case CEL__N_VAR: cel__obuf_put(b, x->str, x->len); return;
    case CEL__N_TEXT: puts_(b, "\""); cel__obuf_put(b, x->str, x->len); puts_(b, "\""); return;
    default: break;
    }
    puts_(b, "(");
    if (x->kind == CEL__N_FUNC) puts_(b, x->op < CEL__F_COUNT ? cel__func_names[x->op] : "?");
    else if (x->kind == CEL__N_REL) puts_(b, rn[x->op & 7]);
    else if (x->kind == CEL__N_TUPLE) {
        char br[3] = {x->lb, x->rb, 0};
        puts_(b, br);
    } else if (x->kind == CEL__N_MATRIX) {
        snprintf(tmp, sizeof tmp, "matrix%ux%u", x->rows, x->cols);
        puts_(b, tmp);
    } else puts_(b, kn[x->kind]);
    for (uint32_t i = 0; i < x->nkid; i++) {
        puts_(b, " ");
        print_node(b, x->kid[i], depth + 1);
    }
    puts_(b, ")");
}

size_t cel__node_print(const cel__node *n, char *out, size_t cap)
{
    cel__obuf b = {out, cap, 0};
    if (cap) out[0] = '\0';
    print_node(&b, n, 0);
    return b.len;
}

bool cel__node_is_number(const cel__node *n) { return n && n->kind == CEL__N_NUM; }
