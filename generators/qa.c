/*
 * qa.c - parsers and post-processors for generated question/answer text:
 * Diverse-QA pairs (Nemotron-CC), the knowledge-list clean-up, and
 * CrossThink items (multiple choice and open-ended) with their
 * verifiability rules.
 *
 * Generated text is loosely formatted: labels may be bold ("**Question:**"),
 * numbered ("Question 3:", "1. Q:"), or headed ("### Question"). The line
 * classifier below accepts those variants and nothing looser, so prose that
 * merely mentions "question" is never taken for a label.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "gen_internal.h"

typedef enum line_kind { L_OTHER = 0, L_QUESTION, L_ANSWER, L_OPTION } line_kind;

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Skips markdown decoration at p: blanks, '#' headings, "**" / "__", list
 * markers ("- ", "* ", "1. ", "1) "). */
static const char *skip_decor(const char *p, const char *e, bool allow_numbering)
{
    for (;;) {
        const char *q = p;
        while (q < e && is_blank(*q)) q++;
        while (q < e && *q == '#') q++;
        while (q < e && is_blank(*q)) q++;
        if (e - q >= 2 && ((q[0] == '*' && q[1] == '*') || (q[0] == '_' && q[1] == '_'))) q += 2;
        else if (e - q >= 2 && (q[0] == '-' || q[0] == '*') && q[1] == ' ') q += 2;
        else if (allow_numbering && q < e && isdigit((unsigned char)*q)) {
            const char *d = q;
            while (d < e && isdigit((unsigned char)*d) && d - q < 4) d++;
            if (d < e - 1 && (*d == '.' || *d == ')') && d[1] == ' ') q = d + 2;
        }
        if (q == p) return p;
        p = q;
    }
}

static bool word_ci(const char *p, const char *e, const char *w, const char **after)
{
    size_t n = strlen(w);
    if ((size_t)(e - p) < n) return false;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)p[i]) != w[i]) return false;
    *after = p + n;
    return true;
}

/* After a label word: optional " 12", optional "**", then ':' (and an
 * optional closing "**"). Returns the content start or NULL. */
static const char *label_tail(const char *p, const char *e)
{
    while (p < e && is_blank(*p)) p++;
    while (p < e && isdigit((unsigned char)*p)) p++;
    if (e - p >= 2 && ((p[0] == '*' && p[1] == '*') || (p[0] == '_' && p[1] == '_'))) p += 2;
    if (p >= e || *p != ':') return NULL;
    p++;
    if (e - p >= 2 && ((p[0] == '*' && p[1] == '*') || (p[0] == '_' && p[1] == '_'))) p += 2;
    while (p < e && is_blank(*p)) p++;
    return p;
}

/* Classifies one line. short_labels: "Q:"/"A:" count as labels (not in MCQ
 * mode, where "A:" starts option A). options: option lines are recognised. */
static line_kind classify(const char *s, const char *e, bool short_labels, bool options, char *letter,
                          const char **content)
{
    const char *p = skip_decor(s, e, true), *a, *c;
    if (word_ci(p, e, "question", &a) && (c = label_tail(a, e))) {
        *content = c;
        return L_QUESTION;
    }
    if (short_labels && word_ci(p, e, "q", &a) && (c = label_tail(a, e))) {
        *content = c;
        return L_QUESTION;
    }
    if ((word_ci(p, e, "answer", &a) || word_ci(p, e, "correct answer", &a) || word_ci(p, e, "correct option", &a) ||
         word_ci(p, e, "final answer", &a)) &&
        (c = label_tail(a, e))) {
        *content = c;
        return L_ANSWER;
    }
    if (short_labels && word_ci(p, e, "a", &a) && (c = label_tail(a, e))) {
        *content = c;
        return L_ANSWER;
    }
    if (options) {
        const char *q = skip_decor(s, e, false);
        bool paren = q < e && *q == '(';
        if (paren) q++;
        if (q < e && *q >= 'A' && *q <= 'J') {
            char L = *q++;
            bool ok = false;
            if (paren) ok = q < e && *q == ')';
            else ok = q < e && (*q == ')' || *q == '.' || *q == ':');
            if (ok) {
                q++;
                if (e - q >= 2 && q[0] == '*' && q[1] == '*') q += 2;
                if (q == e || is_blank(*q)) {
                    while (q < e && is_blank(*q)) q++;
                    *letter = L;
                    *content = q;
                    return L_OPTION;
                }
            }
        }
    }
    return L_OTHER;
}

/* Appends [s, e) with markdown emphasis markers ("**", "__") removed and
 * blanks trimmed. */
static cel_status put_clean(cel_buf *b, const char *s, const char *e)
{
    while (s < e && is_blank(*s)) s++;
    while (e > s && is_blank(e[-1])) e--;
    for (const char *p = s; p < e; p++) {
        if (p + 1 < e && ((p[0] == '*' && p[1] == '*') || (p[0] == '_' && p[1] == '_'))) {
            p++;
            continue;
        }
        CEL_TRY(cel_buf_putc(b, *p));
    }
    return CEL_OK;
}

static void trim_buf(cel_buf *b)
{
    if (!b->data) return;
    size_t s = 0;
    while (s < b->len && (is_blank(b->data[s]) || b->data[s] == '\n')) s++;
    size_t e = b->len;
    while (e > s && (is_blank(b->data[e - 1]) || b->data[e - 1] == '\n')) e--;
    memmove(b->data, b->data + s, e - s);
    b->len = e - s;
    b->data[b->len] = 0;
}

/* ------------------------------------------------------------- QA pairs */

cel_status cel_gen_parse_qa_pairs(const char *text, size_t len, cel_qa_pair **pairs, size_t *n, cel_error *err)
{
    *pairs = NULL;
    *n = 0;
    cel_qa_pair *v = NULL;
    size_t nv = 0, cap = 0;
    /* current pair: spans into text */
    const char *qs = NULL, *qe = NULL, *as = NULL, *ae = NULL;
    const char *p = text, *end = text + len;
#define CLOSE_PAIR()                                                                                               \
    do {                                                                                                           \
        if (qs && as) {                                                                                            \
            size_t ql = (size_t)(qe - qs), al = (size_t)(ae - as);                                                 \
            cel__trim(&qs, &ql);                                                                                   \
            cel__trim(&as, &al);                                                                                   \
            if (ql && al) {                                                                                        \
                if (nv == cap) {                                                                                   \
                    size_t nc = cap ? cap * 2 : 8;                                                                 \
                    cel_qa_pair *np = realloc(v, nc * sizeof *np);                                                 \
                    if (!np) {                                                                                     \
                        free(v);                                                                                   \
                        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");                                 \
                    }                                                                                              \
                    v = np;                                                                                        \
                    cap = nc;                                                                                      \
                }                                                                                                  \
                v[nv++] = (cel_qa_pair){qs, ql, as, al};                                                           \
            }                                                                                                      \
        }                                                                                                          \
        qs = qe = as = ae = NULL;                                                                                  \
    } while (0)
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        char letter;
        const char *content;
        line_kind k = classify(p, le, true, false, &letter, &content);
        if (k == L_QUESTION) {
            CLOSE_PAIR();
            qs = content;
            qe = le;
        } else if (k == L_ANSWER && qs && !as) {
            as = content;
            ae = le;
        } else if (as) {
            ae = le; /* answer continues */
        } else if (qs) {
            qe = le; /* question continues (options of a multiple-choice question, ...) */
        }
        p = nl ? nl + 1 : end;
    }
    CLOSE_PAIR();
#undef CLOSE_PAIR
    *pairs = v;
    *n = nv;
    return CEL_OK;
}

/* Appends a span with its markdown emphasis removed, line by line. */
static cel_status put_clean_lines(cel_buf *b, const char *s, size_t n)
{
    const char *p = s, *e = s + n;
    bool first = true;
    while (p < e) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        const char *le = nl ? nl : e;
        if (!first) CEL_TRY(cel_buf_putc(b, '\n'));
        CEL_TRY(put_clean(b, p, le));
        first = false;
        p = nl ? nl + 1 : e;
    }
    return CEL_OK;
}

cel_status cel_gen_diverse_qa(const char *source, size_t source_len, size_t source_tokens, const char *output,
                              size_t output_len, double tokens_per_pair, uint64_t seed, cel_buf *out, size_t *kept,
                              size_t *parsed, cel_error *err)
{
    *kept = 0;
    *parsed = 0;
    cel_qa_pair *pairs;
    size_t n;
    CEL_TRY(cel_gen_parse_qa_pairs(output, output_len, &pairs, &n, err));
    *parsed = n;
    if (n == 0) {
        free(pairs);
        return CEL_OK;
    }
    cel_rng rng;
    cel_rng_seed(&rng, seed);
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = (size_t)(cel_rng_next(&rng) % (i + 1));
        cel_qa_pair t = pairs[i];
        pairs[i] = pairs[j];
        pairs[j] = t;
    }
    if (tokens_per_pair <= 0) tokens_per_pair = 150;
    size_t want = (size_t)((double)source_tokens / tokens_per_pair + 0.5);
    if (want < 1) want = 1;
    if (want > n) want = n;
    const char *s = source;
    size_t sl = source_len;
    cel__trim(&s, &sl);
    cel_status st = cel_buf_append(out, s, sl);
    for (size_t i = 0; st == CEL_OK && i < want; i++) {
        st = cel_buf_puts(out, "\n\nQuestion: ");
        if (!st) st = put_clean_lines(out, pairs[i].q, pairs[i].q_len);
        if (!st) st = cel_buf_puts(out, "\nAnswer: ");
        if (!st) st = put_clean_lines(out, pairs[i].a, pairs[i].a_len);
    }
    free(pairs);
    if (st) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    *kept = want;
    return CEL_OK;
}

/* ------------------------------------------------------- knowledge list */

cel_status cel_gen_knowledge_list_clean(const char *text, size_t len, cel_buf *out)
{
    const char *p = text, *end = text + len;
    bool first = true;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p;
        while (s < le && is_blank(*s)) s++;
        /* one bullet or number marker */
        if (le - s >= 3 && (unsigned char)s[0] == 0xE2 && (unsigned char)s[1] == 0x80 &&
            ((unsigned char)s[2] == 0xA2 || (unsigned char)s[2] == 0xA3 || (unsigned char)s[2] == 0x93)) {
            s += 3; /* • ‣ – */
        } else if (s < le && (*s == '-' || *s == '*' || *s == '+') && (s + 1 == le || is_blank(s[1]))) {
            s++;
        } else if (s < le && isdigit((unsigned char)*s)) {
            const char *d = s;
            while (d < le && isdigit((unsigned char)*d) && d - s < 4) d++;
            if (d < le && (*d == '.' || *d == ')') && (d + 1 == le || is_blank(d[1]))) s = d + 1;
        } else if (le - s >= 3 && s[0] == '(' && (isdigit((unsigned char)s[1]) || islower((unsigned char)s[1])) &&
                   s[2] == ')') {
            s += 3;
        } else if (le - s >= 2 && islower((unsigned char)s[0]) && s[1] == ')') {
            s += 2;
        }
        const char *e = le;
        while (s < e && is_blank(*s)) s++;
        while (e > s && is_blank(e[-1])) e--;
        if (e > s) {
            if (!first) CEL_TRY(cel_buf_putc(out, '\n'));
            CEL_TRY(put_clean(out, s, e));
            first = false;
        }
        p = nl ? nl + 1 : end;
    }
    if (!out->data) CEL_TRY(cel_buf_puts(out, ""));
    return CEL_OK;
}

/* ------------------------------------------------------- CrossThink items */

void cel_qa_item_free(cel_qa_item *it)
{
    if (!it) return;
    free(it->question);
    for (size_t i = 0; i < it->n_options; i++) free(it->options[i]);
    free(it->answer);
    memset(it, 0, sizeof *it);
}

typedef struct raw_item {
    cel_buf q;
    cel_buf opt[10];
    size_t n_opt;
    cel_buf ans;
    bool answered;
    bool bad_order; /* option letters out of sequence, or more than 10 */
    bool extra;     /* content where none belongs (options in an open item) */
} raw_item;

static void raw_free(raw_item *r)
{
    cel_buf_free(&r->q);
    for (size_t i = 0; i < 10; i++) cel_buf_free(&r->opt[i]);
    cel_buf_free(&r->ans);
    memset(r, 0, sizeof *r);
}

/* The letter an MCQ answer names: "B", "(B)", "B)", "Option B", "B) text";
 * or, failing that, the option whose text equals the answer. -1: none. */
static int gold_index(const cel_buf *ans, const raw_item *r, bool *looks_letter)
{
    const char *s = ans->data, *e = ans->data + ans->len;
    *looks_letter = false;
    const char *a;
    if (word_ci(s, e, "option ", &a)) s = a;
    while (s < e && (*s == '(' || *s == '[')) s++;
    if (s < e && *s >= 'A' && *s <= 'J' && (s + 1 == e || !isalnum((unsigned char)s[1]))) {
        *looks_letter = true;
        int idx = *s - 'A';
        return (size_t)idx < r->n_opt ? idx : -1;
    }
    uint64_t h = cel__norm_hash(ans->data, ans->len);
    for (size_t i = 0; i < r->n_opt; i++)
        if (cel__norm_hash(r->opt[i].data, r->opt[i].len) == h) return (int)i;
    return -1;
}

static char *buf_to_str(cel_buf *b)
{
    if (!b->data && cel_buf_puts(b, "")) return NULL;
    return cel_buf_steal(b);
}

/* Finishes one raw item: validates it and appends it to the vector, or counts the drop. */
static cel_status finish_item(raw_item *r, cel_task task, int max_open_words, cel_qa_item **v, size_t *nv, size_t *cap,
                              uint64_t drops[CEL_DROP__COUNT])
{
    trim_buf(&r->q);
    trim_buf(&r->ans);
    for (size_t i = 0; i < r->n_opt; i++) trim_buf(&r->opt[i]);
    cel_qa_item it = {.task = task};
    if (r->q.len == 0 || !r->answered || r->ans.len == 0 || r->bad_order) {
        drops[CEL_DROP_ITEM_MALFORMED]++;
        return CEL_OK;
    }
    if (task == CEL_TASK_MCQ) {
        if (r->n_opt < 2) {
            drops[CEL_DROP_ITEM_MALFORMED]++;
            return CEL_OK;
        }
        for (size_t i = 0; i < r->n_opt; i++)
            if (r->opt[i].len == 0) {
                drops[CEL_DROP_ITEM_MALFORMED]++;
                return CEL_OK;
            }
        bool letter;
        int g = gold_index(&r->ans, r, &letter);
        if (g < 0) {
            drops[CEL_DROP_GOLD_NOT_IN_OPTIONS]++;
            return CEL_OK;
        }
        char gl[2] = {(char)('A' + g), 0};
        it.answer = malloc(2);
        if (!it.answer) return CEL_ERR_NOMEM;
        memcpy(it.answer, gl, 2);
        for (size_t i = 0; i < r->n_opt; i++) {
            it.options[i] = buf_to_str(&r->opt[i]);
            if (!it.options[i]) {
                cel_qa_item_free(&it);
                return CEL_ERR_NOMEM;
            }
            it.n_options = i + 1;
        }
    } else {
        if (r->n_opt > 0 || r->extra) {
            drops[CEL_DROP_ITEM_MALFORMED]++;
            return CEL_OK;
        }
        if (cel_gen_count_words(r->ans.data, r->ans.len) > (size_t)max_open_words) {
            drops[CEL_DROP_ANSWER_TOO_LONG]++;
            return CEL_OK;
        }
        it.answer = buf_to_str(&r->ans);
        if (!it.answer) return CEL_ERR_NOMEM;
    }
    it.question = buf_to_str(&r->q);
    if (!it.question) {
        cel_qa_item_free(&it);
        return CEL_ERR_NOMEM;
    }
    if (*nv == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        cel_qa_item *np = realloc(*v, nc * sizeof *np);
        if (!np) {
            cel_qa_item_free(&it);
            return CEL_ERR_NOMEM;
        }
        *v = np;
        *cap = nc;
    }
    (*v)[(*nv)++] = it;
    return CEL_OK;
}

cel_status cel_gen_parse_qa_items(const char *text, size_t len, cel_task task, int max_open_words, cel_qa_item **items,
                                  size_t *n, uint64_t drops[CEL_DROP__COUNT], cel_error *err)
{
    *items = NULL;
    *n = 0;
    if (task != CEL_TASK_MCQ && task != CEL_TASK_OPEN)
        return cel_error_set(err, CEL_ERR_INVALID, "QA items are mcq or open");
    bool mcq = task == CEL_TASK_MCQ;
    cel_qa_item *v = NULL;
    size_t nv = 0, cap = 0;
    raw_item r;
    memset(&r, 0, sizeof r);
    bool have = false;
    cel_status st = CEL_OK;
    const char *p = text, *end = text + len;
    while (p < end && st == CEL_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        char letter = 0;
        const char *c = NULL;
        /* option lines are recognised in open mode too: an open item with
         * options is malformed (an MCQ in disguise, its answer a letter) */
        line_kind k = classify(p, le, !mcq, true, &letter, &c);
        const char *ls = p;
        while (ls < le && is_blank(*ls)) ls++;
        bool blank = ls == le;
        if (k == L_QUESTION) {
            if (have) st = finish_item(&r, task, max_open_words, &v, &nv, &cap, drops);
            raw_free(&r);
            have = true;
            if (!st) st = put_clean(&r.q, c, le);
        } else if (!have) {
            /* preamble before the first question */
        } else if (k == L_OPTION && !r.answered) {
            size_t idx = (size_t)(letter - 'A');
            if (idx != r.n_opt || r.n_opt >= 10) r.bad_order = true;
            else {
                st = put_clean(&r.opt[r.n_opt], c, le);
                r.n_opt++;
            }
        } else if (k == L_ANSWER && !r.answered) {
            r.answered = true;
            st = put_clean(&r.ans, c, le);
        } else if (r.answered) {
            /* an open answer given on the line after its label; anything else
             * after the answer (explanations) is ignored */
            if (!blank && r.ans.len == 0) st = put_clean(&r.ans, ls, le);
        } else if (!blank) {
            if (r.n_opt > 0) { /* option text wrapped onto the next line */
                st = cel_buf_putc(&r.opt[r.n_opt - 1], ' ');
                if (!st) st = put_clean(&r.opt[r.n_opt - 1], ls, le);
            } else {
                if (r.q.len) st = cel_buf_putc(&r.q, '\n');
                if (!st) st = put_clean(&r.q, ls, le);
            }
        }
        p = nl ? nl + 1 : end;
    }
    if (st == CEL_OK && have) st = finish_item(&r, task, max_open_words, &v, &nv, &cap, drops);
    raw_free(&r);
    if (st) {
        for (size_t i = 0; i < nv; i++) cel_qa_item_free(&v[i]);
        free(v);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    *items = v;
    *n = nv;
    return CEL_OK;
}

cel_status cel_qa_item_to_open(cel_qa_item *it, int max_words, cel_error *err)
{
    if (it->task != CEL_TASK_MCQ || !it->answer || it->answer[0] < 'A' ||
        (size_t)(it->answer[0] - 'A') >= it->n_options)
        return cel_error_set(err, CEL_ERR_INVALID, "not a valid multiple-choice item");
    char *gold = it->options[it->answer[0] - 'A'];
    if (cel_gen_count_words(gold, strlen(gold)) > (size_t)max_words)
        return cel_error_set(err, CEL_ERR_INVALID, "gold option has more than %d words", max_words);
    it->options[it->answer[0] - 'A'] = NULL;
    free(it->answer);
    it->answer = gold;
    for (size_t i = 0; i < it->n_options; i++) {
        free(it->options[i]);
        it->options[i] = NULL;
    }
    it->n_options = 0;
    it->task = CEL_TASK_OPEN;
    return CEL_OK;
}
