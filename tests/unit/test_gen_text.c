/* Unit tests for the generators' text utilities: LaTeX spans, MIND chunking
 * (token budgets, boundaries, never inside math), Nemotron-CC segmentation,
 * repetition / overlap measures, token estimates, UTF-8 repair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "generators/gen_internal.h"

/* A tokenizer double: one token per whitespace-separated word. */
static cel_status count_words(void *ud, const char *s, size_t n, size_t *out, cel_error *err)
{
    (void)err;
    if (ud) (*(int *)ud)++;
    *out = cel_gen_count_words(s, n);
    return CEL_OK;
}
static const cel_gen_counter words = {count_words, NULL};

static cel_status count_fail(void *ud, const char *s, size_t n, size_t *out, cel_error *err)
{
    (void)ud;
    (void)s;
    (void)n;
    *out = 0;
    return cel_error_set(err, CEL_ERR_INVALID, "counter failed on purpose");
}

static void spans(const char *t, cel__span **v, size_t *n)
{
    cel_error e;
    assert_int_equal(cel__math_spans(t, strlen(t), v, n, &e), CEL_OK);
}

static void assert_span(const char *t, const cel__span *s, const char *want)
{
    assert_int_equal(s->end - s->start, strlen(want));
    assert_memory_equal(t + s->start, want, strlen(want));
}

static void test_math_spans(void **state)
{
    (void)state;
    cel__span *v;
    size_t n;
    const char *t = "Let $x = 1$ and $$y = 2$$ then \\(a+b\\) or \\[c\\]. Price \\$5 and $5. "
                    "\\begin{align} p &= q \\\\ r &= s \\end{align} done";
    spans(t, &v, &n);
    assert_int_equal(n, 5);
    assert_span(t, &v[0], "$x = 1$");
    assert_span(t, &v[1], "$$y = 2$$");
    assert_span(t, &v[2], "\\(a+b\\)");
    assert_span(t, &v[3], "\\[c\\]");
    assert_span(t, &v[4], "\\begin{align} p &= q \\\\ r &= s \\end{align}");
    free(v);
    /* an unmatched $ stays text, and inline math does not cross a blank line */
    t = "cost $5 today\n\nand $x$ here";
    spans(t, &v, &n);
    assert_int_equal(n, 1);
    assert_span(t, &v[0], "$x$");
    free(v);
    /* nested environments: the outermost matched pair; starred names; non-math environments are text */
    t = "\\begin{equation*}\\begin{cases} a \\end{cases}\\end{equation*} \\begin{itemize} x \\end{itemize}";
    spans(t, &v, &n);
    assert_int_equal(n, 1);
    assert_span(t, &v[0], "\\begin{equation*}\\begin{cases} a \\end{cases}\\end{equation*}");
    free(v);
    /* dollars inside an environment do not start spans of their own */
    t = "\\begin{align} $ \\end{align} $z$";
    spans(t, &v, &n);
    assert_int_equal(n, 2);
    assert_span(t, &v[1], "$z$");
    free(v);
    /* adversarial: 120,000 unterminated \\( and \\[ openers before an environment,
     * in one paragraph, must stay linear (well under a second) */
    cel_buf big;
    cel_buf_init(&big);
    for (int i = 0; i < 60000; i++) cel_buf_puts(&big, "\\( \\[ ");
    cel_buf_puts(&big, "\\begin{align} x \\end{align}");
    double t0 = cel_now_sec();
    spans(big.data, &v, &n);
    assert_true(cel_now_sec() - t0 < 2.0);
    assert_int_equal(n, 1);
    free(v);
    cel_buf_free(&big);
    /* unterminated openers of every kind: no spans, no hang */
    t = "$$ a \\( b \\[ c \\begin{align} d $";
    spans(t, &v, &n);
    assert_int_equal(n, 0);
    free(v);
}

/* Checks the invariants of a chunking: chunks are trimmed, in order, within
 * the budget (unless a single unit exceeds it), their token counts are right,
 * together they hold every word of the text, and no LaTeX span is cut. */
static void check_chunks(const char *t, size_t budget, const cel_chunk *c, size_t n, bool allow_oversize)
{
    cel__span *ms;
    size_t nms;
    spans(t, &ms, &nms);
    size_t prev_end = 0, words_total = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(c[i].off >= prev_end);
        assert_true(c[i].len > 0);
        assert_false(t[c[i].off] == ' ' || t[c[i].off] == '\n');
        assert_false(t[c[i].off + c[i].len - 1] == ' ' || t[c[i].off + c[i].len - 1] == '\n');
        assert_int_equal(c[i].n_tokens, cel_gen_count_words(t + c[i].off, c[i].len));
        if (!allow_oversize) assert_true(c[i].n_tokens <= budget);
        for (size_t k = 0; k < nms; k++) {
            bool starts_in = ms[k].start >= c[i].off && ms[k].start < c[i].off + c[i].len;
            bool ends_in = ms[k].end > c[i].off && ms[k].end <= c[i].off + c[i].len;
            assert_int_equal(starts_in, ends_in); /* a span is wholly inside a chunk or outside it */
        }
        /* nothing but whitespace between chunks */
        for (size_t k = prev_end; k < c[i].off; k++) assert_true(t[k] == ' ' || t[k] == '\n' || t[k] == '\t');
        prev_end = c[i].off + c[i].len;
        words_total += c[i].n_tokens;
    }
    for (size_t k = prev_end; t[k]; k++) assert_true(t[k] == ' ' || t[k] == '\n' || t[k] == '\t');
    assert_int_equal(words_total, cel_gen_count_words(t, strlen(t)));
    free(ms);
}

static char *words_text(const char *word, int n, const char *end)
{
    cel_buf b;
    cel_buf_init(&b);
    for (int i = 0; i < n; i++) cel_buf_printf(&b, "%s%s", i ? " " : "", word);
    cel_buf_puts(&b, end);
    return cel_buf_steal(&b);
}

static void test_chunk_paragraphs(void **state)
{
    (void)state;
    /* three paragraphs of 30 words (6 sentences of 5); budget 70: cut at the paragraph break */
    cel_buf b;
    cel_buf_init(&b);
    for (int p = 0; p < 3; p++) {
        if (p) cel_buf_puts(&b, "\n\n");
        for (int s = 0; s < 6; s++) cel_buf_printf(&b, "%sp%d s%d w w end.", s ? " " : "", p, s);
    }
    cel_chunk *c;
    size_t n;
    cel_error e;
    assert_int_equal(cel_gen_chunk(b.data, b.len, 70, &words, &c, &n, &e), CEL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(c[0].n_tokens, 60);
    assert_int_equal(c[1].n_tokens, 30);
    assert_memory_equal(b.data + c[1].off, "p2 s0", 5);
    check_chunks(b.data, 70, c, n, false);
    free(c);
    /* budget 40: a paragraph break is past half the budget (30 >= 20): cut there */
    assert_int_equal(cel_gen_chunk(b.data, b.len, 40, &words, &c, &n, &e), CEL_OK);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) assert_int_equal(c[i].n_tokens, 30);
    check_chunks(b.data, 40, c, n, false);
    free(c);
    /* budget 12: sentence boundaries (5-word sentences -> 10-word chunks) */
    assert_int_equal(cel_gen_chunk(b.data, b.len, 12, &words, &c, &n, &e), CEL_OK);
    assert_int_equal(n, 9);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(c[i].n_tokens, 10);
        assert_int_equal(b.data[c[i].off + c[i].len - 1], '.'); /* ends on a sentence */
    }
    check_chunks(b.data, 12, c, n, false);
    free(c);
    /* a paragraph break before half the budget is not worth a tiny chunk: a
     * 5-word paragraph then 12 sentences of 5 words, budget 40 -> the first
     * chunk fills up to a sentence end (40 words), not just the 5-word paragraph */
    cel_buf_reset(&b);
    cel_buf_puts(&b, "Tiny intro of five words.\n\n");
    for (int s = 0; s < 12; s++) cel_buf_printf(&b, "%ss%d w w w end.", s ? " " : "", s);
    assert_int_equal(cel_gen_chunk(b.data, b.len, 40, &words, &c, &n, &e), CEL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(c[0].n_tokens, 40);
    assert_int_equal(c[1].n_tokens, 25);
    check_chunks(b.data, 40, c, n, false);
    free(c);
    cel_buf_free(&b);
}

static void test_chunk_latex(void **state)
{
    (void)state;
    /* long sentences full of inline math with spaces and periods inside */
    const char *t =
        "We have $a . b = c . d$ and so on. Then $$ x + y = z . w $$ holds here for all. "
        "Also \\begin{align} f(x) &= x^2 . \\\\ g(x) &= 2 x \\end{align} is true. More words follow here. "
        "And $ p q r s t u v w $ again. End of text.";
    for (size_t budget = 3; budget <= 40; budget++) {
        cel_chunk *c;
        size_t n;
        cel_error e;
        assert_int_equal(cel_gen_chunk(t, strlen(t), budget, &words, &c, &n, &e), CEL_OK);
        assert_true(n >= 1);
        /* the align environment has 13 words: smaller budgets give one oversize chunk holding it */
        check_chunks(t, budget, c, n, budget < 13);
        free(c);
    }
}

static void test_chunk_words_and_edges(void **state)
{
    (void)state;
    /* one 100-word sentence without punctuation: word-level cuts within the budget */
    char *t = words_text("word", 100, "");
    cel_chunk *c;
    size_t n;
    cel_error e;
    assert_int_equal(cel_gen_chunk(t, strlen(t), 30, &words, &c, &n, &e), CEL_OK);
    assert_int_equal(n, 4);
    check_chunks(t, 30, c, n, false);
    free(c);
    free(t);
    /* empty and all-space text: no chunks */
    assert_int_equal(cel_gen_chunk("", 0, 10, &words, &c, &n, &e), CEL_OK);
    assert_int_equal(n, 0);
    free(c);
    assert_int_equal(cel_gen_chunk(" \n\n \t ", 6, 10, &words, &c, &n, &e), CEL_OK);
    assert_int_equal(n, 0);
    free(c);
    /* a text within the budget is one trimmed chunk */
    const char *s = "\n  Short text. Two sentences.  \n";
    assert_int_equal(cel_gen_chunk(s, strlen(s), 500, &words, &c, &n, &e), CEL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c[0].len, strlen("Short text. Two sentences."));
    free(c);
    /* budget 0 is invalid; a failing counter's error comes back */
    assert_int_equal(cel_gen_chunk(s, strlen(s), 0, &words, &c, &n, &e), CEL_ERR_INVALID);
    cel_gen_counter bad = {count_fail, NULL};
    assert_int_equal(cel_gen_chunk(s, strlen(s), 10, &bad, &c, &n, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "on purpose"));
}

static void test_chunk_real_counts_fit(void **state)
{
    (void)state;
    /* with the approximate counter (sums of parts differ from the whole), chunks still fit the budget */
    cel_buf b;
    cel_buf_init(&b);
    for (int i = 0; i < 200; i++)
        cel_buf_printf(&b, "Sentence %d computes $\\frac{%d}{%d}$ quickly, then stops.%s", i, i, i + 1,
                       i % 7 == 6 ? "\n\n" : " ");
    cel_gen_counter approx = cel_gen_counter_approx();
    cel_chunk *c;
    size_t n;
    cel_error e;
    assert_int_equal(cel_gen_chunk(b.data, b.len, 100, &approx, &c, &n, &e), CEL_OK);
    assert_true(n > 5);
    size_t total_words = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(c[i].n_tokens <= 100);
        assert_int_equal(c[i].n_tokens, cel_gen_approx_tokens(b.data + c[i].off, c[i].len));
        total_words += cel_gen_count_words(b.data + c[i].off, c[i].len);
    }
    assert_int_equal(total_words, cel_gen_count_words(b.data, b.len));
    free(c);
    cel_buf_free(&b);
}

static void test_segment(void **state)
{
    (void)state;
    /* lines of 4, 3, 50 (too long), 2, 2, 1 words; budget 8, min 3 */
    const char *t = "a b c d\ne f g\n" "x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x\n"
                    "h i\nj k\n\n   \nl\n";
    cel_chunk *s;
    size_t n, nl, ns;
    cel_error e;
    assert_int_equal(cel_gen_segment(t, strlen(t), 8, 3, &words, &s, &n, &nl, &ns, &e), CEL_OK);
    assert_int_equal(nl, 1);
    /* [a..g] (7 words) ; [h i / j k / l] = 5 words joined across blank lines */
    assert_int_equal(n, 2);
    assert_int_equal(ns, 0);
    assert_int_equal(s[0].n_tokens, 7);
    assert_memory_equal(t + s[0].off, "a b c d\ne f g", s[0].len);
    assert_int_equal(s[1].n_tokens, 5);
    assert_memory_equal(t + s[1].off, "h i\nj k\n\n   \nl", s[1].len);
    free(s);
    /* min 6 drops the second segment */
    assert_int_equal(cel_gen_segment(t, strlen(t), 8, 6, &words, &s, &n, &nl, &ns, &e), CEL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ns, 1);
    free(s);
    /* budget 4: "a b c d" alone, "e f g" alone (joining would make 7) */
    assert_int_equal(cel_gen_segment(t, strlen(t), 4, 1, &words, &s, &n, &nl, &ns, &e), CEL_OK);
    assert_int_equal(s[0].n_tokens, 4);
    assert_int_equal(s[1].n_tokens, 3);
    free(s);
}

static void test_repetition_overlap(void **state)
{
    (void)state;
    const char *fresh = "The derivative of a polynomial is computed term by term using the power rule and the sum rule";
    assert_true(cel_gen_repetition(fresh, strlen(fresh), 5) == 0.0);
    char *loop = words_text("again and again we say the same thing", 20, "");
    double r = cel_gen_repetition(loop, strlen(loop), 5);
    assert_true(r > 0.9);
    free(loop);
    /* fewer words than n */
    assert_true(cel_gen_repetition("a b", 3, 5) == 0.0);
    /* case-folded */
    assert_true(cel_gen_repetition("A B C a b c", 11, 3) > 0.2);
    const char *ref = "Rewrite the context below as a conversation between a teacher and a student";
    const char *echo = "Rewrite the context below as a conversation between a teacher and a student please";
    assert_true(cel_gen_overlap(echo, strlen(echo), ref, strlen(ref), 8) > 0.8);
    assert_true(cel_gen_overlap(fresh, strlen(fresh), ref, strlen(ref), 8) == 0.0);
}

static void test_approx_and_utf8(void **state)
{
    (void)state;
    assert_int_equal(cel_gen_approx_tokens("", 0), 0);
    assert_int_equal(cel_gen_approx_tokens("hello world", 11), 2);
    assert_int_equal(cel_gen_approx_tokens("internationalization", 20), 4);
    assert_int_equal(cel_gen_approx_tokens("12345", 5), 2);
    assert_int_equal(cel_gen_approx_tokens("\\frac{a}{b}", 11), 8);
    assert_int_equal(cel_gen_approx_tokens("\xe4\xb8\xad\xe6\x96\x87", 6), 2); /* two CJK characters */
    cel_buf b;
    cel_buf_init(&b);
    assert_int_equal(cel_gen_utf8_sanitize("ok \xff x \xc3\xa9 \xe4\xb8", 12, &b), CEL_OK);
    assert_string_equal(b.data, "ok \xef\xbf\xbd x \xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd");
    cel_buf_reset(&b);
    assert_int_equal(cel_gen_utf8_sanitize("a\0b", 3, &b), CEL_OK);
    assert_string_equal(b.data, "a\xef\xbf\xbd" "b");
    cel_buf_free(&b);
    assert_true(cel_utf8_valid("\xf0\x9f\x98\x80", 4));
    assert_false(cel_utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
    assert_false(cel_utf8_valid("\xc0\xaf", 2));     /* overlong */
    assert_int_equal(cel_gen_count_words("  two\n words ", 13), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_math_spans),
        cmocka_unit_test(test_chunk_paragraphs),
        cmocka_unit_test(test_chunk_latex),
        cmocka_unit_test(test_chunk_words_and_edges),
        cmocka_unit_test(test_chunk_real_counts_fit),
        cmocka_unit_test(test_segment),
        cmocka_unit_test(test_repetition_overlap),
        cmocka_unit_test(test_approx_and_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
