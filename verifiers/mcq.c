/*
 * mcq.c - multiple-choice grading: the final *committed* option letter.
 *
 * Where the letter comes from, in order: the last \boxed{}; the last answer
 * phrase ("The answer is (C)."); a committing phrase ("option C is
 * correct", "I choose C"); a short last line that is just a letter ("**C**",
 * "(C)", "C) Paris"); and, when the item lists its options, an answer given
 * as an option's text. A hedge ("A or B"), several letters ("A, C") or a
 * letter outside the options is wrong, with its own reason.
 */
#include <string.h>

#include "internal.h"

typedef enum { PICK_NONE = 0, PICK_LETTER, PICK_HEDGE, PICK_MULTI, PICK_INVALID } pick_kind;

typedef struct {
    pick_kind kind;
    int idx;       /* option index for PICK_LETTER */
    bool by_text;  /* matched an option's text */
} pick;

/* A token of a span: letters/digits run, with what separates it from the previous one. */
typedef struct {
    const char *p;
    size_t n;
    char sep;       /* the last non-space separator before it (0 if none) */
    bool cmd;       /* a LaTeX command name (\text) */
    bool paren_before, close_after; /* '(' / '[' just before, ')' / ']' / '.' / ':' just after */
} mtok;

#define MAXTOK 48

static bool alnum(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

static int tokenize(const char *s, size_t n, mtok *t, int cap)
{
    int k = 0;
    char sep = 0;
    bool paren = false;
    size_t i = 0;
    while (i < n && k < cap) {
        unsigned char c = (unsigned char)s[i];
        if (alnum(c) || c >= 0x80) {
            size_t b = i;
            while (i < n && (alnum((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80 || s[i] == '\'')) i++;
            t[k].p = s + b;
            t[k].n = i - b;
            t[k].sep = sep;
            t[k].cmd = b > 0 && s[b - 1] == '\\';
            t[k].paren_before = paren;
            size_t j = i;
            while (j < n && (s[j] == '*' || s[j] == '}' || s[j] == '$' || s[j] == '_')) j++;
            t[k].close_after = j < n && (s[j] == ')' || s[j] == ']' || s[j] == '.' || s[j] == ':');
            k++;
            sep = 0;
            paren = false;
            continue;
        }
        if (c == '(' || c == '[') paren = true;
        else if (c == ',' || c == '/' || c == '&' || c == ';') sep = (char)c;
        i++;
    }
    return k;
}

static bool tok_is(const mtok *t, const char *w) { return strlen(w) == t->n && strncasecmp(t->p, w, t->n) == 0; }

static bool filler(const mtok *t)
{
    static const char *const w[] = {"option", "options", "choice", "answer", "is", "the", "correct", "final",
                                    "my", "letter", "be", "would", "should", "its", "it's", "so", "therefore",
                                    "thus", "hence", "best", "right", "boxed", "text", "textbf", "mathrm",
                                    "mathbf", "bf", "fbox", "mbox", "textrm", "texttt"};
    if (t->cmd) return true;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        if (tok_is(t, w[i])) return true;
    return false;
}

static bool is_upper1(const mtok *t) { return t->n == 1 && t->p[0] >= 'A' && t->p[0] <= 'Z'; }
static bool is_lower1(const mtok *t) { return t->n == 1 && t->p[0] >= 'a' && t->p[0] <= 'z'; }

/* Words after a capital 'A' that show it is the article ("A dog"), not the option. */
static bool article_follows(const mtok *t)
{
    static const char *const conn[] = {"or", "and", "because", "since", "as", "is", "with", "option", "which",
                                       "from", "for", "it", "this", "that", "the", "but"};
    if (!(t->p[0] >= 'a' && t->p[0] <= 'z')) return false;
    for (size_t i = 0; i < sizeof conn / sizeof conn[0]; i++)
        if (tok_is(t, conn[i])) return false;
    return true;
}

/* Normalized option text for matching an answer given as text. */
static size_t norm(const char *s, size_t n, char *o, size_t cap) { return cel__normalize_open(s, n, o, cap); }

static int match_choice_text(const cel_verify_item *it, const char *s, size_t n)
{
    if (!it->n_choices || n == 0 || n > 2000) return -1;
    char a[512], b[512], raw[512];
    if (memchr(s, '\\', n) || memchr(s, '$', n) || memchr(s, '{', n)) {
        n = cel__strip_latex(s, n, raw, sizeof raw);
        s = raw;
    }
    size_t la = norm(s, n, a, sizeof a);
    if (la == 0 || la >= sizeof a - 1) return -1;
    int found = -1;
    for (size_t i = 0; i < it->n_choices; i++) {
        if (!it->choices[i]) continue;
        size_t lb = norm(it->choices[i], strlen(it->choices[i]), b, sizeof b);
        if (lb == la && memcmp(a, b, la) == 0) {
            if (found >= 0) return -1; /* two options with the same text: ambiguous */
            found = (int)i;
        }
    }
    return found;
}

/* Reads the committed letter at the start of an answer span ("(C)", "C.",
 * "**C**", "\text{(B)}", "answer: b", "C or D"). strict: the span is a whole
 * line, so the letter must stand alone or be followed by ')' '.' ':'. */
static pick parse_span(const cel_verify_item *it, int nopt, const char *s, size_t n, bool strict)
{
    pick pk = {PICK_NONE, -1, false};
    /* full-width forms ("Ｃ", "（Ｂ）") read as their ASCII letters */
    char folded[1024];
    bool wide = false;
    for (size_t i = 0; i < n && !wide; i++) wide = (unsigned char)s[i] >= 0x80;
    if (wide) {
        size_t i = 0, k = 0;
        while (i < n && k + 4 < sizeof folded) {
            size_t b = i;
            uint32_t cp = cel__utf8_next(s, n, &i);
            /* Arabic and Bengali option letters as multilingual MMLU writes them */
            static const uint32_t ar[] = {0x623, 0x628, 0x62C, 0x62F}, bn[] = {0x985, 0x9AC, 0x9A1, 0x9A2};
            int letter = -1;
            for (int q = 0; q < 4; q++)
                if (cp == ar[q] || cp == bn[q]) letter = q;
            if (letter >= 0 && (i >= n || (unsigned char)s[i] < 0x80) && (b == 0 || (unsigned char)s[b - 1] < 0x80))
                folded[k++] = (char)('A' + letter); /* a lone letter, not inside a word */
            else if (cp >= 0xFF01 && cp <= 0xFF5E) folded[k++] = (char)(cp - 0xFEE0);
            else if (cp == 0x3000) folded[k++] = ' ';
            else memcpy(folded + k, s + b, i - b), k += i - b;
        }
        s = folded, n = k;
    }
    mtok t[MAXTOK];
    int k = tokenize(s, n, t, MAXTOK);
    int i = 0;
    while (i < k && filler(&t[i]) && !(is_upper1(&t[i]))) i++;
    if (i < k) {
        mtok *a = &t[i];
        bool alone = i + 1 == k;
        bool letter = false;
        if (is_upper1(a)) {
            letter = true;
            if ((a->p[0] == 'A' || a->p[0] == 'I') && !alone && !a->close_after && !a->paren_before &&
                article_follows(&t[i + 1]))
                letter = false;
        } else if (is_lower1(a)) {
            letter = alone || a->close_after || a->paren_before;
            if (a->p[0] == 'a' && !alone && !a->close_after && !a->paren_before) letter = false;
        }
        if (letter && strict && !alone && !a->close_after && !a->paren_before) {
            /* in a free line "C is the one" is fine, "C something" is not a commitment */
            if (!(tok_is(&t[i + 1], "is") || tok_is(&t[i + 1], "or") || tok_is(&t[i + 1], "and"))) letter = false;
        }
        if (letter) {
            int idx = (a->p[0] | 0x20) - 'a';
            /* hedges and several letters: "A or B", "A, C", "A and C", "A/B" */
            int j = i + 1;
            bool more = false, hedge = false;
            while (j < k) {
                if ((tok_is(&t[j], "or") || tok_is(&t[j], "and")) && j + 1 < k &&
                    (is_upper1(&t[j + 1]) || (is_lower1(&t[j + 1]) && t[j + 1].close_after))) {
                    hedge |= tok_is(&t[j], "or");
                    more = true;
                    j += 2;
                } else if (t[j].sep && (is_upper1(&t[j]) || is_lower1(&t[j])) && t[j].sep != ';') {
                    more = true;
                    hedge |= t[j].sep == '/';
                    j++;
                } else {
                    break;
                }
            }
            if (more) {
                pk.kind = hedge ? PICK_HEDGE : PICK_MULTI;
                return pk;
            }
            if (idx >= nopt) {
                pk.kind = PICK_INVALID;
                return pk;
            }
            pk.kind = PICK_LETTER;
            pk.idx = idx;
            return pk;
        }
        /* "AC" as the whole answer: several letters */
        if (alone && a->n >= 2 && a->n <= 4) {
            bool caps = true;
            for (size_t q = 0; q < a->n; q++)
                caps &= a->p[q] >= 'A' && a->p[q] < 'A' + nopt && (q == 0 || a->p[q] > a->p[q - 1]);
            if (caps && match_choice_text(it, a->p, a->n) < 0) {
                pk.kind = PICK_MULTI;
                return pk;
            }
        }
    }
    /* the option's text */
    int ti = match_choice_text(it, s, n);
    if (ti < 0 && it->n_choices && i < k) {
        /* "Paris, because ..." -> the text before the first sentence break */
        cel__span sp = {s, n, 0, CEL_EXTRACT_NONE};
        cel__cut_sentence(&sp);
        cel__trim_answer(&sp);
        if (sp.n < n) ti = match_choice_text(it, sp.p, sp.n);
    }
    if (ti >= 0) {
        pk.kind = PICK_LETTER;
        pk.idx = ti;
        pk.by_text = true;
    }
    return pk;
}

/* The gold option: a letter ("B", "(B)", "b") or, with options, the text of one. */
static int gold_index(const cel_verify_item *it, int *nopt)
{
    const char *r = it->reference;
    size_t n = strlen(r);
    size_t b = 0, e = n;
    while (b < e && (r[b] == ' ' || r[b] == '(' || r[b] == '[' || r[b] == '*')) b++;
    while (e > b && (r[e - 1] == ' ' || r[e - 1] == ')' || r[e - 1] == ']' || r[e - 1] == '.' || r[e - 1] == '*' ||
                     r[e - 1] == '\n'))
        e--;
    if (e - b == 1 && ((r[b] | 0x20) >= 'a' && (r[b] | 0x20) <= 'z')) {
        int idx = (r[b] | 0x20) - 'a';
        if (!it->n_choices && idx >= *nopt) *nopt = idx + 1;
        return idx < *nopt ? idx : -1;
    }
    return match_choice_text(it, r, n);
}

static void set_letter(cel_verify_result *r, int idx, size_t off, cel_extract_source src)
{
    char l = (char)('A' + idx);
    cel__set_extracted(r, &l, 1, off, src);
}

static const char *pick_reason(pick_kind k)
{
    switch (k) {
    case PICK_HEDGE: return "hedged";
    case PICK_MULTI: return "multiple_answers";
    case PICK_INVALID: return "invalid_option";
    default: return "no_answer";
    }
}

/* The last non-empty line of s[0..n) as a span. */
static bool last_line(const char *s, size_t n, cel__span *sp)
{
    size_t e = n;
    while (e > 0 && (s[e - 1] == '\n' || s[e - 1] == ' ' || s[e - 1] == '\r' || s[e - 1] == '\t')) e--;
    if (e == 0) return false;
    size_t b = e;
    while (b > 0 && s[b - 1] != '\n') b--;
    sp->p = s + b, sp->n = e - b, sp->off = b, sp->src = CEL_EXTRACT_MCQ_LETTER;
    return true;
}

cel_status cel__grade_mcq(cel__ctx *c, const cel_verify_item *it, const char *resp, size_t n, cel_verify_result *r,
                          cel_error *err)
{
    int nopt = it->n_choices ? (int)it->n_choices : 10;
    if (it->n_choices > 26)
        return cel_error_set(err, CEL_ERR_INVALID, "verify: item '%s': %zu options (at most 26)", it->id ? it->id : "",
                             it->n_choices);
    int gold = gold_index(it, &nopt);
    if (gold < 0)
        return cel_error_set(err, CEL_ERR_INVALID, "verify: item '%s': MCQ reference '%.40s' is not a letter of the %d options",
                             it->id ? it->id : "", it->reference, nopt);
    size_t reg = cel__answer_region(resp, n);
    const char *s = resp + reg;
    size_t sn = n - reg;
    cel__span sp;
    pick pk = {PICK_NONE, -1, false};
    bool have_span = false;
    if (cel__last_boxed(s, sn, &sp)) {
        have_span = true;
        pk = parse_span(it, nopt, sp.p, sp.n, false);
    }
    if (pk.kind == PICK_NONE && !c->fail && cel__answer_phrase(c, s, sn, &sp)) {
        have_span = true;
        cel__span cut = sp;
        pk = parse_span(it, nopt, sp.p, sp.n, false);
        if (pk.kind == PICK_NONE) {
            cel__cut_sentence(&cut);
            pk = parse_span(it, nopt, cut.p, cut.n, false);
        }
    }
    if (pk.kind == PICK_NONE && !c->fail) {
        /* committing phrases anywhere in the answer region: the last one.
         * The regex runs in windows around its keywords, last first, so a
         * long response is not scanned position by position. */
        static const char *const kw[] = {"option", "choice", "correct", "right", "best", "final", "choose",
                                         "pick", "select", "go with", "answer", "it is", "it's", "this is",
                                         "must be", "should be"};
        int letter = -1;
        size_t loff = 0, q = sn;
        for (int guard = 0; guard < 4096 && letter < 0 && !c->fail; guard++) {
            q = cel__last_keyword(s, 0, q, kw, sizeof kw / sizeof kw[0]);
            if (q == SIZE_MAX) break;
            size_t pos = q > 40 ? q - 40 : 0, we = cel__window_end(s, sn, q + 90);
            for (int g2 = 0; g2 < 64 && pos < we; g2++) {
                PCRE2_SIZE *ov;
                int rc = cel__re_match(c, CEL__RE_MCQ_COMMIT, s, we, pos, &ov);
                if (rc <= 0) break;
                for (int g = 1; g < rc; g++)
                    if (ov[2 * g] != PCRE2_UNSET) {
                        letter = (s[ov[2 * g]] | 0x20) - 'a';
                        loff = ov[2 * g];
                        break;
                    }
                pos = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
            }
        }
        if (letter >= 0) {
            sp.p = s + loff, sp.n = 1, sp.off = loff, sp.src = CEL_EXTRACT_MCQ_LETTER;
            have_span = true;
            pk.kind = letter < nopt ? PICK_LETTER : PICK_INVALID;
            pk.idx = letter;
        }
    }
    if (pk.kind == PICK_NONE && !c->fail && last_line(s, sn, &sp) && sp.n <= 80) {
        pick q = parse_span(it, nopt, sp.p, sp.n, true);
        if (q.kind != PICK_NONE) pk = q, have_span = true;
    }
    if (c->fail) {
        cel__set_reason(r, c->fail);
        return CEL_OK;
    }
    if (pk.kind == PICK_LETTER) {
        cel_extract_source src = pk.by_text ? CEL_EXTRACT_MCQ_TEXT : sp.src;
        set_letter(r, pk.idx, sp.off + reg, src);
        r->correct = pk.idx == gold;
        cel__set_reason(r, r->correct ? "correct" : "wrong_answer");
        return CEL_OK;
    }
    if (have_span && pk.kind != PICK_NONE) {
        cel__span t = sp;
        cel__trim_answer(&t);
        cel__set_extracted(r, t.p, t.n, t.off + reg, t.src);
    }
    cel__set_reason(r, pick_reason(pk.kind));
    return CEL_OK;
}
