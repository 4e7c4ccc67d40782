/*
 * verifiers/internal.h - what the verifier's source files share and nothing
 * else may rely on: the per-call context (arena + work budget), answer
 * extraction, the LaTeX parser / comparer, and the MCQ and open-ended graders.
 *
 * Everything here is re-entrant: all state of one grading call lives in a
 * cel__ctx on the caller's stack; the cel_verifier is read-only.
 */
#ifndef CELINE_VERIFIERS_INTERNAL_H
#define CELINE_VERIFIERS_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "celine/verify.h"

/* ---- the verifier ---- */
enum { CEL__RE_ANSWER = 0, CEL__RE_MCQ_COMMIT, CEL__RE_COUNT };

struct cel_verifier {
    cel_verify_config cfg;
    pcre2_code *re[CEL__RE_COUNT];
    pcre2_match_context *mctx; /* match/depth limits; read-only, shared by threads */
};

/* ---- per-call arena: bump allocation, first from a caller-provided buffer
 * (usually on the stack), then from malloc'ed chunks, never past `limit`
 * bytes in total. Freed all at once. ---- */
typedef struct cel__chunk cel__chunk;
typedef struct cel__arena {
    char *cur;
    size_t cap, used;
    cel__chunk *chunks;
    size_t total, limit;
} cel__arena;
void cel__arena_init(cel__arena *a, void *buf, size_t cap, size_t limit);
/* Returns 16-byte aligned zeroed memory, or NULL when over the limit / OOM. */
void *cel__arena_alloc(cel__arena *a, size_t n);
void cel__arena_free(cel__arena *a);

/* ---- per-call context ---- */
typedef struct cel__ctx {
    const cel_verifier *v;
    const cel_verify_config *cfg;
    cel__arena arena;
    uint64_t work, budget;
    const char *fail;          /* set once a bound is hit: "work_budget", "too_deep", "out_of_memory", "regex_limit" */
    pcre2_match_data *md;      /* created lazily, freed by cel__ctx_done */
} cel__ctx;
void cel__ctx_init(cel__ctx *c, const cel_verifier *v, void *buf, size_t cap);
void cel__ctx_done(cel__ctx *c);
/* Charges `units` of work; returns false (and records "work_budget") once the budget is spent. */
static inline bool cel__charge(cel__ctx *c, uint64_t units)
{
    c->work += units;
    if (c->work > c->budget) {
        if (!c->fail) c->fail = "work_budget";
        return false;
    }
    return true;
}
void *cel__alloc(cel__ctx *c, size_t n); /* arena alloc that records "out_of_memory" */
char *cel__strndup(cel__ctx *c, const char *s, size_t n);

/* Runs compiled pattern `which` on s[start..n); returns the number of pairs in
 * the ovector (>0) on a match, 0 for no match, -1 when a limit was hit (ctx->fail set). */
int cel__re_match(cel__ctx *c, int which, const char *s, size_t n, size_t start, PCRE2_SIZE **ov);

/* ---- extraction (extract.c) ---- */
typedef struct cel__span {
    const char *p;
    size_t n;
    size_t off; /* offset in the full response */
    cel_extract_source src;
} cel__span;

/* Offset where the answer region starts: after the last "</think>", else 0. */
size_t cel__answer_region(const char *s, size_t n);
/* The last brace-matched \boxed{...} / \fbox{...} (or "\boxed x") in s[0..n). */
bool cel__last_boxed(const char *s, size_t n, cel__span *out);
/* The last "Answer:" / "The answer is" / "final answer is" phrase: its text up
 * to the end of the line (or the next non-empty line when the line is empty). */
bool cel__answer_phrase(cel__ctx *c, const char *s, size_t n, cel__span *out);
/* The last position in s[from..end) where one of the lower-case ASCII
 * keywords kw[0..nkw) starts (any case); SIZE_MAX when none. */
size_t cel__last_keyword(const char *s, size_t from, size_t end, const char *const *kw, size_t nkw);
/* `at` moved to the end of the word it falls in (at most n): a regex window
 * ending there does not cut a word (so \b at the window's end is real). */
size_t cel__window_end(const char *s, size_t n, size_t at);
/* The last number-like token (digits, sign, decimal point, thousands commas, fraction a/b). */
bool cel__last_number(const char *s, size_t n, cel__span *out);
/* Trims white space, enclosing $..$ / \(..\) / \[..\], trailing periods. */
void cel__trim_answer(cel__span *sp);
/* Cuts an answer-phrase span at the end of its first sentence (". ", "; ", ...). */
void cel__cut_sentence(cel__span *sp);

/* ---- math (latex.c / expr.c) ---- */
typedef struct cel__node cel__node;
/* Parses a LaTeX / plain-text answer into a tree allocated in the context's
 * arena. Returns NULL on a syntax error (why in *why, a static string) or when a
 * bound was hit (ctx->fail). */
cel__node *cel__latex_parse(cel__ctx *c, const char *s, size_t n, const char **why);
/* True when the two answers are mathematically equal under the configured
 * tolerances (exact rationals, numeric, symbolic by random evaluation, sets,
 * tuples, intervals, matrices, equations). */
bool cel__math_equal(cel__ctx *c, const cel__node *a, const cel__node *b);
/* Writes a canonical, human-readable form of the tree (for tests/debugging). */
size_t cel__node_print(const cel__node *n, char *out, size_t cap);
/* True when the tree is a plain number (used by auto task detection). */
bool cel__node_is_number(const cel__node *n);
/* Greatest common divisor of |a| and |b| (gcd(0, 0) = 0): the one used by the
 * parser's exact rationals and the comparator's gcd()/lcm() alike. */
int64_t cel__gcd64(int64_t a, int64_t b);

/* ---- text helpers (text.c) ---- */
/* Decodes one UTF-8 code point at s[*i] (advancing *i); invalid bytes give U+FFFD. */
uint32_t cel__utf8_next(const char *s, size_t n, size_t *i);
/* Lower-cases and folds a code point to its base letter (é -> e, Ａ -> a); 0
 * for punctuation/symbols, ' ' for any space. Other code points pass lower-cased. */
uint32_t cel__fold_cp(uint32_t cp);
/* A bounded output buffer: appends keep counting len past cap (so callers
 * learn the full length, as snprintf does) but store at most cap-1 bytes and
 * keep them NUL-terminated (cap 0: nothing is stored). */
typedef struct cel__obuf {
    char *o;
    size_t cap, len;
} cel__obuf;
void cel__obuf_put(cel__obuf *b, const char *s, size_t n);
/* Drops LaTeX wrappers for text comparison: \text{Paris} -> " Paris" ('$',
 * braces and backslash commands go). Writes at most cap-1 bytes + NUL. */
size_t cel__strip_latex(const char *s, size_t n, char *out, size_t cap);
/* Parses a plain number token (1,000 / -3.5 / 1e3 / 2/3 / 50%) as a double. */
bool cel__parse_plain_number(const char *s, size_t n, double *out);

/* ---- graders ---- */
void cel__grade_math(cel__ctx *c, const cel_verify_item *it, const char *resp, size_t n, cel_verify_result *r);
cel_status cel__grade_mcq(cel__ctx *c, const cel_verify_item *it, const char *resp, size_t n, cel_verify_result *r,
                          cel_error *err);
void cel__grade_open(cel__ctx *c, const cel_verify_item *it, const char *resp, size_t n, cel_verify_result *r);
/* Open-ended normalization into out (NUL-terminated, at most cap-1 bytes);
 * returns the length. Exposed for tests. */
size_t cel__normalize_open(const char *s, size_t n, char *out, size_t cap);
double cel__token_f1(const char *a, const char *b);

/* Records the extracted span in the result (truncated to fit). */
void cel__set_extracted(cel_verify_result *r, const char *p, size_t n, size_t off, cel_extract_source src);
void cel__set_reason(cel_verify_result *r, const char *reason);

#endif
