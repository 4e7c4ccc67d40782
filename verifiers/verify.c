/*
 * verify.c - the public verifier API: configuration, creation (PCRE2 patterns
 * compiled once), grading one item (task resolution, format check, reward),
 * batches on a thread pool, and the per-call arena/context machinery.
 */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ---------------------------------------------------------------- names */

const char *cel_task_name(cel_task t)
{
    switch (t) {
    case CEL_TASK_AUTO: return "auto";
    case CEL_TASK_MATH: return "math";
    case CEL_TASK_MCQ: return "mcq";
    case CEL_TASK_OPEN: return "open";
    }
    return "unknown";
}

bool cel_task_parse(const char *s, cel_task *out)
{
    static const struct { const char *n; cel_task t; } tab[] = {
        {"auto", CEL_TASK_AUTO}, {"math", CEL_TASK_MATH}, {"mcq", CEL_TASK_MCQ}, {"open", CEL_TASK_OPEN}};
    if (!s) return false;
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(s, tab[i].n) == 0) {
            *out = tab[i].t;
            return true;
        }
    return false;
}

const char *cel_adv_mode_name(cel_adv_mode m)
{
    switch (m) {
    case CEL_ADV_NONE: return "none";
    case CEL_ADV_GRPO: return "grpo";
    case CEL_ADV_DR_GRPO: return "dr_grpo";
    case CEL_ADV_RLOO: return "rloo";
    }
    return "unknown";
}

bool cel_adv_mode_parse(const char *s, cel_adv_mode *out)
{
    static const struct { const char *n; cel_adv_mode m; } tab[] = {
        {"none", CEL_ADV_NONE}, {"grpo", CEL_ADV_GRPO}, {"dr_grpo", CEL_ADV_DR_GRPO}, {"rloo", CEL_ADV_RLOO}};
    if (!s) return false;
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(s, tab[i].n) == 0) {
            *out = tab[i].m;
            return true;
        }
    return false;
}

const char *cel_extract_source_name(cel_extract_source s)
{
    switch (s) {
    case CEL_EXTRACT_NONE: return "none";
    case CEL_EXTRACT_BOXED: return "boxed";
    case CEL_EXTRACT_ANSWER_PHRASE: return "answer_phrase";
    case CEL_EXTRACT_MCQ_LETTER: return "mcq_letter";
    case CEL_EXTRACT_MCQ_TEXT: return "mcq_text";
    case CEL_EXTRACT_LAST_NUMBER: return "last_number";
    case CEL_EXTRACT_WHOLE: return "whole";
    case CEL_EXTRACT_LAST_MATH: return "last_math";
    }
    return "unknown";
}

/* Accepts "none", "boxed", "answer", "think" or a comma-separated list of the
 * last three. Any other word makes the whole string invalid. */
bool cel_format_parse(const char *s, uint32_t *flags)
{
    if (!s || !*s) return false;
    uint32_t f = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && *p == ' ') p++, n--;
        while (n && p[n - 1] == ' ') n--;
        if (n == 4 && strncmp(p, "none", 4) == 0 && f == 0 && !e && p == s) return *flags = 0, true;
        if (n == 5 && strncmp(p, "boxed", 5) == 0) f |= CEL_FORMAT_BOXED;
        else if (n == 6 && strncmp(p, "answer", 6) == 0) f |= CEL_FORMAT_ANSWER_LINE;
        else if (n == 5 && strncmp(p, "think", 5) == 0) f |= CEL_FORMAT_THINK;
        else return false;
        if (!e) break;
        p = e + 1;
    }
    *flags = f;
    return true;
}

void cel_verify_config_default(cel_verify_config *c)
{
    memset(c, 0, sizeof *c);
    c->format = CEL_FORMAT_NONE;
    c->format_either = true;
    c->reward_correct = 1.0;
    c->reward_correct_bad_format = 0.0;
    c->reward_wrong = 0.0;
    c->reward_wrong_good_format = 0.0;
    c->rel_tol = 1e-6;
    c->abs_tol = 1e-9;
    c->last_number_fallback = true;
    c->max_response_bytes = (size_t)1 << 20;
    c->max_answer_bytes = 4096;
    c->max_depth = 64;
    c->work_budget = 1000000;
    c->seed = 0x5eed5eedULL;
}

size_t cel_verify_struct_size(int which)
{
    switch (which) {
    case 0: return sizeof(cel_verify_config);
    case 1: return sizeof(cel_verify_item);
    case 2: return sizeof(cel_verify_result);
    default: return 0;
    }
}

/* ---------------------------------------------------------------- arena */

struct cel__chunk {
    cel__chunk *next;
    size_t cap;
    _Alignas(16) char data[];
};

void cel__arena_init(cel__arena *a, void *buf, size_t cap, size_t limit)
{
    a->cur = buf;
    a->cap = buf ? cap : 0;
    a->used = 0;
    a->chunks = NULL;
    a->total = 0;
    a->limit = limit;
}

void *cel__arena_alloc(cel__arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!n) n = 16;
    if (a->cur && a->cap - a->used >= n) {
        void *p = a->cur + a->used;
        a->used += n;
        memset(p, 0, n);
        return p;
    }
    size_t want = n > 32768 ? n : 32768;
    if (a->total + want > a->limit) {
        if (a->total + n > a->limit) return NULL;
        want = n;
    }
    cel__chunk *ch = malloc(sizeof *ch + want);
    if (!ch) return NULL;
    ch->cap = want;
    ch->next = a->chunks;
    a->chunks = ch;
    a->total += want;
    a->cur = ch->data;
    a->cap = want;
    a->used = n;
    memset(ch->data, 0, n);
    return ch->data;
}

void cel__arena_free(cel__arena *a)
{
    cel__chunk *c = a->chunks;
    while (c) {
        cel__chunk *nx = c->next;
        free(c);
        c = nx;
    }
    a->chunks = NULL;
    a->cur = NULL;
    a->cap = a->used = a->total = 0;
}

void cel__ctx_init(cel__ctx *c, const cel_verifier *v, void *buf, size_t cap)
{
    c->v = v;
    c->cfg = &v->cfg;
    /* memory per item is bounded: 64 bytes per work unit is far above what the
     * parser needs per unit, and at least 1 MiB */
    uint64_t lim = v->cfg.work_budget * 64;
    if (lim < (1u << 20)) lim = 1u << 20;
    if (lim > (256u << 20)) lim = 256u << 20;
    cel__arena_init(&c->arena, buf, cap, (size_t)lim);
    c->work = 0;
    c->budget = v->cfg.work_budget ? v->cfg.work_budget : UINT64_MAX;
    c->fail = NULL;
    c->md = NULL;
}

void cel__ctx_done(cel__ctx *c)
{
    if (c->md) pcre2_match_data_free(c->md);
    c->md = NULL;
    cel__arena_free(&c->arena);
}

void *cel__alloc(cel__ctx *c, size_t n)
{
    void *p = cel__arena_alloc(&c->arena, n);
    if (!p && !c->fail) c->fail = "out_of_memory";
    return p;
}

char *cel__strndup(cel__ctx *c, const char *s, size_t n)
{
    char *p = cel__alloc(c, n + 1);
    if (p) memcpy(p, s, n), p[n] = '\0';
    return p;
}

int cel__re_match(cel__ctx *c, int which, const char *s, size_t n, size_t start, PCRE2_SIZE **ov)
{
    if (!c->md) {
        c->md = pcre2_match_data_create(8, NULL);
        if (!c->md) {
            if (!c->fail) c->fail = "out_of_memory";
            return -1;
        }
    }
    int rc = pcre2_match(c->v->re[which], (PCRE2_SPTR)s, n, start, 0, c->md, c->v->mctx);
    /* a scan costs a unit per 16 bytes it passed over: a caller that walks
     * the matches of a long text pays for the text once, not per match */
    PCRE2_SIZE *o = pcre2_get_ovector_pointer(c->md);
    size_t scanned = rc >= 0 && o[1] >= start ? o[1] - start : n - start;
    if (!cel__charge(c, 1 + scanned / 16)) return -1;
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        if (!c->fail) c->fail = "regex_limit";
        return -1;
    }
    *ov = o;
    return rc == 0 ? 8 : rc;
}

/* ---------------------------------------------------------------- create */

/* The answer phrase: "Answer:", "The answer is", "final answer is",
 * "correct answer:", with markdown bold around the keyword. */
static const char *const re_answer =
    "(?i)(?:\\b(?:(?:final|correct|right|best)\\s+)?answer(?:\\s*(?:\\*\\*|__))?\\s*(?:is\\b\\s*:?|:|=|[-\\x{2013}\\x{2014}]\\s)"
    /* the same keyword in the languages of multilingual evaluations */
    "|(?:\\b(?:r\\x{e9}ponse|respuesta|antwort|risposta|resposta|jawaban|jibu|cevap|odpowied\\x{17a})"
    "|\\x{41e}\\x{442}\\x{432}\\x{435}\\x{442}"                                   /* Russian */
    "|\\x{7b54}\\x{6848}|\\x{7b54}\\x{590d}|\\x{7b54}\\x{66f0}|\\x{7b54}\\x{3048}|\\x{89e3}\\x{7b54}|\\x{56de}\\x{7b54}|\\x{7b54}" /* Chinese, Japanese */
    "|\\x{c815}\\x{b2f5}|\\x{b2f5}\\x{bcc0}|\\x{b2f5}"                             /* Korean */
    "|\\x{909}\\x{924}\\x{94d}\\x{924}\\x{930}|\\x{989}\\x{9a4}\\x{9cd}\\x{9a4}\\x{9b0}"  /* Hindi, Bengali */
    "|\\x{627}\\x{644}\\x{625}\\x{62c}\\x{627}\\x{628}\\x{629}|\\x{627}\\x{644}\\x{62c}\\x{648}\\x{627}\\x{628}|\\x{625}\\x{62c}\\x{627}\\x{628}\\x{629}" /* Arabic */
    ")(?:\\s*(?:\\*\\*|__))?\\s*(?::|\\x{ff1a}|\\x{983}))";
/* Committed option phrases for MCQ when no answer phrase exists: "option C is
 * correct", "the correct choice is (C)", "I choose C". Keywords any case, the
 * letter in capitals unless it follows option/choice. */
static const char *const re_mcq =
    "(?i)(?:\\b(?:option|choice)\\s*[\\(\\[]?\\s*([a-z])\\s*[\\)\\]]?\\s*(?:is|seems|appears|would\\s+be)\\s+"
    "(?:the\\s+)?(?:correct|right|best|true|answer)\\b"
    "|\\b(?:correct|right|best|final)\\s+(?:option|choice)\\s*(?:is|would\\s+be|:)\\s*:?\\s*(?:option\\s*|choice\\s*)?"
    "[\\(\\[]?\\s*(?:\\*\\*)?((?-i:[A-Z]))\\b"
    "|\\b(?:I|we)(?:\\s+would|'ll|\\s+will)?\\s+(?:choose|pick|select|go\\s+with)\\s+(?:option\\s*|choice\\s*)?[\\(\\[]?"
    "((?-i:[A-Z]))\\b"
    /* "(D) is correct", "B is the correct answer" */
    "|[\\(\\[]((?-i:[A-Z]))[\\)\\]]\\s+(?:is|would\\s+be)\\s+(?:the\\s+)?(?:correct|right|best|answer)\\b"
    "|(?<![\\w'])((?-i:[A-Z]))(?![\\w'])\\s+(?:is|would\\s+be)\\s+(?:the\\s+)?"
    "(?:(?:correct|right|best)\\s+(?:answer|option|choice)|answer)\\b"
    /* "it is (B)", "it must be option (C)" (parentheses required: "it is A good ...") */
    "|\\b(?:it|this)(?:'s|\\s+is|\\s+must\\s+be|\\s+should\\s+be)\\s+(?:option\\s+|choice\\s+)?[\\(\\[]((?-i:[A-Z]))[\\)\\]])";

cel_status cel_verifier_create(const cel_verify_config *cfg, cel_verifier **out, cel_error *err)
{
    *out = NULL;
    cel_verifier *v = calloc(1, sizeof *v);
    if (!v) return cel_error_set(err, CEL_ERR_NOMEM, "verifier: out of memory");
    if (cfg) v->cfg = *cfg;
    else cel_verify_config_default(&v->cfg);
    cel_verify_config *c = &v->cfg;
    if (!(c->rel_tol >= 0) || !(c->abs_tol >= 0)) {
        free(v);
        return cel_error_set(err, CEL_ERR_INVALID, "verifier config: rel_tol and abs_tol must be >= 0");
    }
    if (c->max_depth == 0 || c->max_depth > 1000) {
        unsigned d = c->max_depth;
        free(v);
        return cel_error_set(err, CEL_ERR_INVALID, "verifier config: max_depth must be in 1..1000 (got %u)", d);
    }
    if (c->format & ~(uint32_t)(CEL_FORMAT_BOXED | CEL_FORMAT_ANSWER_LINE | CEL_FORMAT_THINK)) {
        unsigned f = c->format;
        free(v);
        return cel_error_set(err, CEL_ERR_INVALID, "verifier config: unknown format flags 0x%x", f);
    }
    if (c->max_response_bytes == 0) c->max_response_bytes = (size_t)1 << 20;
    if (c->max_answer_bytes == 0) c->max_answer_bytes = 4096;
    const char *pats[CEL__RE_COUNT] = {re_answer, re_mcq};
    for (int i = 0; i < CEL__RE_COUNT; i++) {
        int ec;
        PCRE2_SIZE eo;
        /* UTF mode for the multilingual keywords; responses are checked for
         * valid UTF-8 by PCRE2 itself (invalid input: no match, not a crash) */
        v->re[i] = pcre2_compile((PCRE2_SPTR)pats[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec,
                                 &eo, NULL);
        if (!v->re[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            cel_verifier_free(v);
            return cel_error_set(err, CEL_ERR_INTERNAL, "verifier: pattern %d does not compile at %zu: %s", i,
                                 (size_t)eo, (const char *)msg);
        }
        /* JIT when available; the interpreter is the fallback */
        (void)pcre2_jit_compile(v->re[i], PCRE2_JIT_COMPLETE);
    }
    v->mctx = pcre2_match_context_create(NULL);
    if (!v->mctx) {
        cel_verifier_free(v);
        return cel_error_set(err, CEL_ERR_NOMEM, "verifier: out of memory");
    }
    pcre2_set_match_limit(v->mctx, 200000);
    pcre2_set_depth_limit(v->mctx, 2000);
    pcre2_set_heap_limit(v->mctx, 2048); /* KiB */
    *out = v;
    return CEL_OK;
}

void cel_verifier_free(cel_verifier *v)
{
    if (!v) return;
    for (int i = 0; i < CEL__RE_COUNT; i++)
        if (v->re[i]) pcre2_code_free(v->re[i]);
    if (v->mctx) pcre2_match_context_free(v->mctx);
    free(v);
}

/* ---------------------------------------------------------------- results */

void cel__set_extracted(cel_verify_result *r, const char *p, size_t n, size_t off, cel_extract_source src)
{
    if (n >= CEL_VERIFY_EXTRACT_MAX) {
        n = CEL_VERIFY_EXTRACT_MAX - 1;
        /* do not cut a UTF-8 sequence in half */
        while (n > 0 && ((unsigned char)p[n] & 0xC0) == 0x80) n--;
    }
    memcpy(r->extracted, p, n);
    r->extracted[n] = '\0';
    r->has_extracted = true;
    r->extracted_offset = off;
    r->source = src;
}

void cel__set_reason(cel_verify_result *r, const char *reason)
{
    size_t n = strlen(reason);
    if (n >= sizeof r->reason) n = sizeof r->reason - 1;
    memcpy(r->reason, reason, n);
    r->reason[n] = '\0';
}

/* ---------------------------------------------------------------- format */

static const char *find_str(const char *s, size_t n, const char *lit, size_t from)
{
    size_t m = strlen(lit);
    if (m > n) return NULL;
    for (size_t i = from; i + m <= n; i++) {
        const char *q = memchr(s + i, lit[0], n - m + 1 - i);
        if (!q) return NULL;
        if (memcmp(q, lit, m) == 0) return q;
        i = (size_t)(q - s);
    }
    return NULL;
}

/* True when some line of s[0..n) reads "Answer: <something>" (also "Final
 * answer:", markdown bold or a heading mark before it, any case). */
static bool has_answer_line(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        size_t j = i;
        while (j < e && (s[j] == ' ' || s[j] == '\t' || s[j] == '*' || s[j] == '#' || s[j] == '_' || s[j] == '>'))
            j++;
        if (e - j >= 6 && strncasecmp(s + j, "final", 5) == 0) {
            j += 5;
            while (j < e && s[j] == ' ') j++;
        }
        if (e - j >= 7 && strncasecmp(s + j, "answer", 6) == 0) {
            j += 6;
            while (j < e && (s[j] == ' ' || s[j] == '*' || s[j] == '_')) j++;
            if (j < e && s[j] == ':') {
                j++;
                while (j < e && (s[j] == ' ' || s[j] == '\t' || s[j] == '*' || s[j] == '_' || s[j] == '\r')) j++;
                if (j < e) return true;
                /* "Answer:" alone: the answer may be on the next non-empty line */
                size_t k = e;
                while (k < n && (s[k] == '\n' || s[k] == ' ' || s[k] == '\r' || s[k] == '\t')) k++;
                if (k < n) return true;
            }
        }
        i = e + 1;
    }
    return false;
}

static bool all_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) return false;
    return true;
}

/* The configured format requirement. For THINK: at most one "<think>", exactly
 * one "</think>" after it, and something other than white space after the
 * closing tag. */
static bool check_format(const cel_verify_config *cfg, const char *s, size_t n)
{
    uint32_t f = cfg->format;
    if (!f) return true;
    size_t region = 0;
    if (f & CEL_FORMAT_THINK) {
        const char *o1 = find_str(s, n, "<think>", 0);
        const char *o2 = o1 ? find_str(s, n, "<think>", (size_t)(o1 - s) + 7) : NULL;
        const char *c1 = find_str(s, n, "</think>", 0);
        const char *c2 = c1 ? find_str(s, n, "</think>", (size_t)(c1 - s) + 8) : NULL;
        if (!c1 || c2 || o2 || (o1 && o1 > c1)) return false;
        region = (size_t)(c1 - s) + 8;
        if (all_space(s + region, n - region)) return false;
    } else {
        region = cel__answer_region(s, n);
    }
    bool need_box = f & CEL_FORMAT_BOXED, need_line = f & CEL_FORMAT_ANSWER_LINE;
    if (!need_box && !need_line) return true;
    cel__span sp;
    bool has_box = need_box && cel__last_boxed(s + region, n - region, &sp);
    bool has_line = need_line && has_answer_line(s + region, n - region);
    if (need_box && need_line) return cfg->format_either ? (has_box || has_line) : (has_box && has_line);
    return need_box ? has_box : has_line;
}

/* ---------------------------------------------------------------- grading */

static bool is_letter_reference(const char *s)
{
    while (*s == ' ' || *s == '(' || *s == '[') s++;
    if (!((*s >= 'A' && *s <= 'Z'))) return false;
    s++;
    while (*s == ' ' || *s == ')' || *s == ']' || *s == '.') s++;
    return *s == '\0';
}

/* auto: options given or a lone capital letter -> MCQ; a reference that
 * parses as mathematics (numbers, operators, LaTeX) -> math; else open. */
static cel_task resolve_task(cel__ctx *c, const cel_verify_item *it)
{
    if (it->task != CEL_TASK_AUTO) return it->task;
    if (it->n_choices > 0 || is_letter_reference(it->reference)) return CEL_TASK_MCQ;
    const char *r = it->reference;
    size_t n = strlen(r);
    bool mathy = false;
    for (size_t i = 0; i < n; i++) {
        char ch = r[i];
        if ((ch >= '0' && ch <= '9') || ch == '\\' || ch == '^' || ch == '=' || ch == '+' || ch == '/') mathy = true;
    }
    if (!mathy) {
        /* one or two letters, e.g. "x" or "2x": mathematical too */
        size_t letters = 0;
        for (size_t i = 0; i < n; i++)
            if (r[i] != ' ') letters++;
        if (letters == 1) mathy = true;
    }
    if (!mathy) return CEL_TASK_OPEN;
    /* a number with words around it ("1,000 people") is still math: units
     * drop. A reference that does not parse (or hits a bound) is graded as
     * open text; the bound is not held against the response. */
    const char *why = NULL;
    cel__node *t = cel__latex_parse(c, r, n, &why);
    c->fail = NULL;
    return t ? CEL_TASK_MATH : CEL_TASK_OPEN;
}

static double reward_of(const cel_verify_config *cfg, bool correct, bool fmt)
{
    if (correct) return fmt ? cfg->reward_correct : cfg->reward_correct_bad_format;
    return fmt ? cfg->reward_wrong_good_format : cfg->reward_wrong;
}

cel_status cel_verify_grade(const cel_verifier *v, const cel_verify_item *it, cel_verify_result *r, cel_error *err)
{
    if (!r) return cel_error_set(err, CEL_ERR_INVALID, "verify: result is NULL");
    memset(r, 0, sizeof *r);
    cel__set_reason(r, "error");
    if (!v || !it) return cel_error_set(err, CEL_ERR_INVALID, "verify: verifier or item is NULL");
    if (!it->response) return cel_error_set(err, CEL_ERR_INVALID, "verify: item '%s': response is NULL",
                                            it->id ? it->id : "");
    if (!it->reference) return cel_error_set(err, CEL_ERR_INVALID, "verify: item '%s': reference is NULL",
                                             it->id ? it->id : "");
    if ((unsigned)it->task > CEL_TASK_OPEN)
        return cel_error_set(err, CEL_ERR_INVALID, "verify: item '%s': unknown task %d", it->id ? it->id : "",
                             (int)it->task);
    if (it->n_choices && !it->choices)
        return cel_error_set(err, CEL_ERR_INVALID, "verify: item '%s': n_choices > 0 but choices is NULL",
                             it->id ? it->id : "");
    const cel_verify_config *cfg = &v->cfg;
    size_t n = it->response_len ? it->response_len : strlen(it->response);
    r->task = it->task;
    /* a reference may be a worked solution (its \boxed{} is the answer): it
     * gets the response's size cap; the parser caps what it reads of it */
    if (n > cfg->max_response_bytes || strlen(it->reference) > cfg->max_response_bytes) {
        r->reward = cfg->reward_wrong;
        cel__set_reason(r, "too_long");
        return CEL_OK;
    }
    _Alignas(16) char stackbuf[16384];
    cel__ctx c;
    cel__ctx_init(&c, v, stackbuf, sizeof stackbuf);
    r->task = resolve_task(&c, it);
    r->format_ok = check_format(cfg, it->response, n);
    cel_status st = CEL_OK;
    switch (r->task) {
    case CEL_TASK_MCQ: st = cel__grade_mcq(&c, it, it->response, n, r, err); break;
    case CEL_TASK_OPEN: cel__grade_open(&c, it, it->response, n, r); break;
    default: r->task = CEL_TASK_MATH; cel__grade_math(&c, it, it->response, n, r); break;
    }
    if (st != CEL_OK) {
        cel__ctx_done(&c);
        r->correct = false;
        r->reward = 0;
        cel__set_reason(r, "error");
        return st;
    }
    if (c.fail) {
        r->correct = false;
        cel__set_reason(r, c.fail);
    }
    r->reward = reward_of(cfg, r->correct, r->format_ok);
    if (r->correct && !r->format_ok) cel__set_reason(r, "bad_format");
    cel__ctx_done(&c);
    return CEL_OK;
}

/* ---------------------------------------------------------------- batch */

typedef struct {
    const cel_verifier *v;
    const cel_verify_item *items;
    cel_verify_result *res;
    size_t errors[64]; /* per thread */
} batch_job;

static void batch_fn(void *ctx, int64_t b, int64_t e, int tid)
{
    batch_job *j = ctx;
    for (int64_t i = b; i < e; i++) {
        cel_error er;
        cel_error_clear(&er);
        if (cel_verify_grade(j->v, &j->items[i], &j->res[i], &er) != CEL_OK) {
            cel_verify_result *r = &j->res[i];
            char buf[sizeof r->reason];
            memcpy(buf, "error: ", 7);
            size_t m = strnlen(er.msg, sizeof buf - 8);
            memcpy(buf + 7, er.msg, m);
            buf[7 + m] = '\0';
            memset(r, 0, sizeof *r);
            cel__set_reason(r, buf);
            j->errors[tid & 63]++;
        }
    }
}

/* Dense group ids: items with equal group strings share an id; items without
 * a group get one of their own. Open addressing keyed by the string hash. */
static cel_status group_ids(const cel_verify_item *items, size_t n, uint64_t *ids, cel_error *err)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    size_t *slot = malloc(cap * sizeof *slot); /* item index + 1, 0 = empty */
    if (!slot) return cel_error_set(err, CEL_ERR_NOMEM, "verify batch: out of memory");
    memset(slot, 0, cap * sizeof *slot);
    uint64_t next = 0;
    for (size_t i = 0; i < n; i++) {
        const char *g = items[i].group;
        if (!g) {
            ids[i] = next++;
            continue;
        }
        size_t gl = strlen(g);
        size_t h = (size_t)cel_hash64(g, gl, 0x9e3779b9) & (cap - 1);
        for (;;) {
            if (!slot[h]) {
                slot[h] = i + 1;
                ids[i] = next++;
                break;
            }
            if (strcmp(items[slot[h] - 1].group, g) == 0) {
                ids[i] = ids[slot[h] - 1];
                break;
            }
            h = (h + 1) & (cap - 1);
        }
    }
    free(slot);
    return CEL_OK;
}

cel_status cel_verify_batch(const cel_verifier *v, const cel_verify_item *items, size_t n, cel_adv_mode mode,
                            bool whiten, int n_threads, cel_verify_result *res, size_t *err_count, cel_error *err)
{
    if (err_count) *err_count = 0;
    if (!v || (n && (!items || !res))) return cel_error_set(err, CEL_ERR_INVALID, "verify batch: NULL argument");
    if ((unsigned)mode > CEL_ADV_RLOO) return cel_error_set(err, CEL_ERR_INVALID, "verify batch: unknown mode %d", mode);
    if (n == 0) return CEL_OK;
    batch_job job;
    memset(&job, 0, sizeof job);
    job.v = v, job.items = items, job.res = res;
    if (n_threads > 64) n_threads = 64;
    if (n_threads > 1 && n > 1) {
        cel_pool *pool = NULL;
        CEL_TRY(cel_pool_create(n_threads, &pool, err));
        int64_t grain = (int64_t)(n / ((size_t)n_threads * 8)) + 1;
        cel_pool_run(pool, (int64_t)n, grain, batch_fn, &job);
        cel_pool_free(pool);
    } else {
        batch_fn(&job, 0, (int64_t)n, 0);
    }
    size_t ne = 0;
    for (int i = 0; i < 64; i++) ne += job.errors[i];
    if (err_count) *err_count = ne;
    if (mode == CEL_ADV_NONE) return CEL_OK;
    uint64_t *ids = malloc(n * sizeof *ids);
    double *r = malloc(n * sizeof *r);
    double *a = malloc(n * sizeof *a);
    cel_status st = (ids && r && a) ? CEL_OK : cel_error_set(err, CEL_ERR_NOMEM, "verify batch: out of memory");
    if (st == CEL_OK) st = group_ids(items, n, ids, err);
    if (st == CEL_OK) {
        for (size_t i = 0; i < n; i++) r[i] = res[i].reward;
        st = cel_advantages(r, ids, n, mode, whiten, a, err);
    }
    if (st == CEL_OK)
        for (size_t i = 0; i < n; i++) res[i].has_advantage = true, res[i].advantage = a[i];
    free(ids), free(r), free(a);
    return st;
}
