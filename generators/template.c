/*
 * template.c - prompt templates: parsing *.tmpl files (directives, sections,
 * {{placeholders}}), validation per kind, rendering, and named sets.
 *
 * Rendering is a single pass over pre-compiled parts, so a value that itself
 * contains "{{text}}" is inserted verbatim and never re-expanded: documents
 * cannot inject placeholders.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "celine/generate.h"
#include "gen_internal.h"

#define TMPL_MAX_BYTES (1u << 20)
#define TMPL_NAME_MAX 31
#define TMPL_DIR_DEPTH 4

struct cel__tmpl_part {
    bool is_var;
    char *text; /* literal text or placeholder name (owned) */
    size_t len;
};

const char *cel_tmpl_kind_name(cel_tmpl_kind k)
{
    switch (k) {
    case CEL_TMPL_MIND: return "mind";
    case CEL_TMPL_REPHRASE: return "rephrase";
    case CEL_TMPL_QA: return "qa";
    case CEL_TMPL_RL: return "rl";
    }
    return "?";
}

static void free_parts(cel__tmpl_part *p, size_t n)
{
    for (size_t i = 0; i < n; i++) free(p[i].text);
    free(p);
}

void cel_template_free(cel_template *t)
{
    if (!t) return;
    free(t->name);
    free(t->path);
    free(t->description);
    free(t->system_src);
    free(t->user_src);
    free(t->speakers[0]);
    free(t->speakers[1]);
    free(t->quality);
    free(t->lead_in);
    free_parts(t->system_parts, t->n_system_parts);
    free_parts(t->user_parts, t->n_user_parts);
    free(t);
}

/* ---------------------------------------------------------------- parsing */

/* Placeholders each kind accepts; the first `n_req` are required. */
typedef struct kind_vars {
    const char *names[4];
    size_t n;
    size_t n_req;
} kind_vars;

static kind_vars vars_for(const cel_template *t)
{
    kind_vars kv = {{NULL}, 0, 0};
    switch (t->kind) {
    case CEL_TMPL_MIND: kv = (kind_vars){{"text", "speaker1", "speaker2", "style"}, 4, 1}; break;
    case CEL_TMPL_REPHRASE: kv = (kind_vars){{"text"}, 1, 1}; break;
    case CEL_TMPL_QA: kv = (kind_vars){{"text", "n"}, 2, 1}; break;
    case CEL_TMPL_RL:
        if (t->task == CEL_TASK_MCQ)
            kv = (kind_vars){{"question", "options"}, 2, 2};
        else
            kv = (kind_vars){{"question"}, 1, 1};
        break;
    }
    return kv;
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static bool is_name_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }

/* Compiles a section body into parts. line0 is the file line of the body's
 * first character, for messages. Validates placeholder syntax only; which
 * names are allowed is checked by check_vars. */
static cel_status compile_section(const char *path, const char *src, size_t len, int line0, cel__tmpl_part **out,
                                  size_t *n_out, cel_error *err)
{
    cel__tmpl_part *parts = NULL;
    size_t n = 0, cap = 0;
    cel_buf lit;
    cel_buf_init(&lit);
    int line = line0;
    cel_status st = CEL_OK;
    size_t i = 0;
#define PUSH_PART(isvar, ptr, l)                                                                                   \
    do {                                                                                                           \
        if (n == cap) {                                                                                            \
            size_t nc = cap ? cap * 2 : 8;                                                                         \
            cel__tmpl_part *np = realloc(parts, nc * sizeof *np);                                                  \
            if (!np) { st = CEL_ERR_NOMEM; goto fail; }                                                            \
            parts = np;                                                                                            \
            cap = nc;                                                                                              \
        }                                                                                                          \
        parts[n].is_var = (isvar);                                                                                 \
        parts[n].len = (l);                                                                                        \
        parts[n].text = dupn((ptr), (l));                                                                          \
        if (!parts[n].text) { st = CEL_ERR_NOMEM; goto fail; }                                                     \
        n++;                                                                                                       \
    } while (0)

    while (i < len) {
        char c = src[i];
        if (c == '\\' && i + 2 < len && src[i + 1] == '{' && src[i + 2] == '{') {
            if (cel_buf_append(&lit, "{{", 2)) { st = CEL_ERR_NOMEM; goto fail; }
            i += 3;
            continue;
        }
        if (c == '{' && i + 1 < len && src[i + 1] == '{') {
            size_t j = i + 2;
            while (j < len && is_name_char(src[j])) j++;
            size_t nlen = j - (i + 2);
            if (nlen == 0 || nlen > TMPL_NAME_MAX || j + 1 >= len || src[j] != '}' || src[j + 1] != '}') {
                st = cel_error_set(err, CEL_ERR_FORMAT,
                                   "%s:%d: malformed placeholder (write {{name}} with a-z, 0-9, _; \\{{ for a literal {{)",
                                   path, line);
                goto fail;
            }
            if (lit.len) {
                PUSH_PART(false, lit.data, lit.len);
                cel_buf_reset(&lit);
            }
            PUSH_PART(true, src + i + 2, nlen);
            i = j + 2;
            continue;
        }
        if (c == '\n') line++;
        if (cel_buf_putc(&lit, c)) { st = CEL_ERR_NOMEM; goto fail; }
        i++;
    }
    if (lit.len) PUSH_PART(false, lit.data, lit.len);
#undef PUSH_PART
    cel_buf_free(&lit);
    *out = parts;
    *n_out = n;
    return CEL_OK;
fail:
    if (st == CEL_ERR_NOMEM) cel_error_set(err, st, "%s: out of memory", path);
    cel_buf_free(&lit);
    free_parts(parts, n);
    return st;
}

/* Line of the first use of placeholder `name` in a section, or 0. */
static int find_var_line(const char *src, size_t len, int line0, const char *name, size_t nlen)
{
    int line = line0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (src[i] == '\n') line++;
        if (src[i] == '{' && src[i + 1] == '{' && (i == 0 || src[i - 1] != '\\') && i + 2 + nlen + 2 <= len &&
            memcmp(src + i + 2, name, nlen) == 0 && src[i + 2 + nlen] == '}')
            return line;
    }
    return 0;
}

typedef struct section_pos {
    int system_line, user_line; /* file line of the section header (0 when absent) */
    int system_body, user_body; /* line of the body's first character */
} section_pos;

/* Checks the placeholders used against what the kind allows and requires. */
static cel_status check_vars(const char *path, const cel_template *t, const section_pos *sp, cel_error *err)
{
    kind_vars kv = vars_for(t);
    const cel__tmpl_part *secs[2] = {t->system_parts, t->user_parts};
    size_t ns[2] = {t->n_system_parts, t->n_user_parts};
    const char *srcs[2] = {t->system_src, t->user_src};
    int lines[2] = {sp->system_body, sp->user_body};
    bool used[4] = {false, false, false, false};
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; i < ns[s]; i++) {
            if (!secs[s][i].is_var) continue;
            size_t k;
            for (k = 0; k < kv.n; k++)
                if (strcmp(secs[s][i].text, kv.names[k]) == 0) break;
            if (k == kv.n) {
                int ln = find_var_line(srcs[s], strlen(srcs[s]), lines[s], secs[s][i].text, secs[s][i].len);
                char allowed[96] = "";
                for (size_t a = 0; a < kv.n; a++) {
                    strncat(allowed, a ? ", " : "", sizeof allowed - strlen(allowed) - 1);
                    strncat(allowed, kv.names[a], sizeof allowed - strlen(allowed) - 1);
                }
                return cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: unknown placeholder {{%s}} (%s%s templates accept: %s)",
                                     path, ln, secs[s][i].text,
                                     t->kind == CEL_TMPL_RL ? (t->task == CEL_TASK_MCQ ? "mcq " : "open ") : "",
                                     cel_tmpl_kind_name(t->kind), allowed);
            }
            used[k] = true;
        }
    }
    for (size_t k = 0; k < kv.n_req; k++)
        if (!used[k])
            return cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: missing placeholder {{%s}} (required in %s templates)",
                                 path, sp->user_line, kv.names[k], cel_tmpl_kind_name(t->kind));
    if (t->kind == CEL_TMPL_MIND && (used[1] || used[2]) && !t->speakers[0])
        return cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: {{speaker1}}/{{speaker2}} used but no @speakers directive",
                             path, sp->user_line);
    return CEL_OK;
}

static const char *skip_ws(const char *s, const char *e)
{
    while (s < e && (*s == ' ' || *s == '\t')) s++;
    return s;
}
static const char *rtrim(const char *s, const char *e)
{
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
    return e;
}

/* Strict non-negative integer in [lo, hi]. */
static bool parse_int(const char *s, const char *e, int64_t lo, int64_t hi, int32_t *out)
{
    if (s == e) return false;
    int64_t v = 0;
    for (const char *p = s; p < e; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (*p - '0');
        if (v > hi) return false;
    }
    if (v < lo) return false;
    *out = (int32_t)v;
    return true;
}

/* Is [s, e) a section line ("@system" / "@user", trailing blanks allowed)? 1 = system, 2 = user. */
static int section_kind(const char *s, const char *e)
{
    e = rtrim(s, e);
    if ((size_t)(e - s) == 7 && memcmp(s, "@system", 7) == 0) return 1;
    if ((size_t)(e - s) == 5 && memcmp(s, "@user", 5) == 0) return 2;
    return 0;
}

/* Trims whole blank lines at both ends of a section body, counting the
 * leading lines removed into *skipped. */
static void trim_body(const char **s, const char **e, int *skipped)
{
    const char *p = *s;
    for (;;) {
        const char *q = p;
        while (q < *e && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < *e && *q == '\n') {
            p = q + 1;
            (*skipped)++;
        } else
            break;
    }
    *s = p;
    const char *q = *e;
    while (q > *s && (q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\r' || q[-1] == '\n')) q--;
    *e = q;
}

/* Ends section sec (1 = system, 2 = user) whose body spans [bs, be) and
 * starts at line body_line: keeps the trimmed body as the template's source
 * and the line its first kept line is on. False when out of memory. */
static bool close_section(cel_template *t, section_pos *sp, int sec, const char *bs, const char *be, int body_line)
{
    int skipped = 0;
    trim_body(&bs, &be, &skipped);
    char **dst = sec == 1 ? &t->system_src : &t->user_src;
    if (!(*dst = dupn(bs, (size_t)(be - bs)))) return false;
    if (sec == 1) sp->system_body = body_line + skipped;
    else sp->user_body = body_line + skipped;
    return true;
}

static bool valid_utf8_text(const char *s, size_t n) { return !memchr(s, 0, n) && cel_utf8_valid(s, n); }

/* Copies src with every "\r\n" turned into "\n" (templates saved on
 * Windows must not put carriage returns into prompts). */
static char *crlf_to_lf(const char *src, size_t len, size_t *out_len)
{
    char *d = malloc(len + 1);
    if (!d) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r' && i + 1 < len && src[i + 1] == '\n') continue;
        d[k++] = src[i];
    }
    d[k] = 0;
    *out_len = k;
    return d;
}

static cel_status parse_lf(const char *path, const char *src, size_t len, cel_template **out, cel_error *err);

cel_status cel_template_parse(const char *path, const char *src, size_t len, cel_template **out, cel_error *err)
{
    *out = NULL;
    if (!path) path = "<memory>";
    if (len > TMPL_MAX_BYTES) return cel_error_set(err, CEL_ERR_LIMIT, "%s: template larger than 1 MiB", path);
    if (!memchr(src, '\r', len)) return parse_lf(path, src, len, out, err);
    size_t n;
    char *lf = crlf_to_lf(src, len, &n);
    if (!lf) return cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory", path);
    cel_status st = parse_lf(path, lf, n, out, err);
    free(lf);
    return st;
}

/* The parser proper, on text with "\n" line ends. */
static cel_status parse_lf(const char *path, const char *src, size_t len, cel_template **out, cel_error *err)
{
    if (!valid_utf8_text(src, len))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: template is not valid UTF-8 text (or holds a NUL byte)", path);
    cel_template *t = calloc(1, sizeof *t);
    if (!t) return cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory", path);
    t->kind = (cel_tmpl_kind)-1;
    t->task = CEL_TASK_AUTO;
    t->max_input_tokens = 512;
    t->max_output_tokens = 512;
    t->keep_min_tokens = -1;
    t->keep_max_tokens = -1;
    cel_status st = CEL_OK;
    section_pos sp = {0, 0, 0, 0};
    /* directive lines, for messages about directives that do not fit the kind */
    int line_speakers = 0, line_quality = 0, line_input = 0, line_output = 0, line_keep = 0, line_lead = 0;
    int line_post = 0, line_task = 0, line_kind = 0;

    const char *p = src, *end = src + len;
    int line = 1;
    int cur_sec = 0;               /* 0 = header */
    const char *body_start = NULL; /* current section body */
    int body_line = 0;
    while (p <= end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        int sk = section_kind(p, le);
        if (sk) {
            /* close the previous section */
            if (cur_sec && !close_section(t, &sp, cur_sec, body_start, p, body_line)) goto nomem;
            if ((sk == 1 && sp.system_line) || (sk == 2 && sp.user_line)) {
                st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: section %s given twice", path, line,
                                   sk == 1 ? "@system" : "@user");
                goto fail;
            }
            if (sk == 1) sp.system_line = line;
            else sp.user_line = line;
            cur_sec = sk;
            body_start = nl ? nl + 1 : end;
            body_line = line + 1;
        } else if (!cur_sec) {
            const char *s = skip_ws(p, le), *e = rtrim(s, le);
            if (s == e || *s == '#') {
                /* blank or comment */
            } else if (*s != '@') {
                st = cel_error_set(err, CEL_ERR_FORMAT,
                                   "%s:%d: expected a directive (@key value), a comment (#) or a section (@system, @user)",
                                   path, line);
                goto fail;
            } else {
                const char *k = s + 1, *ke = k;
                while (ke < e && *ke != ' ' && *ke != '\t') ke++;
                const char *v = skip_ws(ke, e);
                size_t kl = (size_t)(ke - k), vl = (size_t)(e - v);
#define KEY(lit) (kl == sizeof(lit) - 1 && memcmp(k, lit, kl) == 0)
#define DUP_CHECK(field)                                                                                           \
    if (field) {                                                                                                   \
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @%.*s given twice", path, line, (int)kl, k);               \
        goto fail;                                                                                                 \
    }
                if (vl == 0) {
                    st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @%.*s needs a value", path, line, (int)kl, k);
                    goto fail;
                }
                if (KEY("name")) {
                    DUP_CHECK(t->name);
                    for (size_t i = 0; i < vl; i++)
                        if (!is_name_char(v[i]) && v[i] != '-') {
                            st = cel_error_set(err, CEL_ERR_FORMAT,
                                               "%s:%d: @name must use a-z, 0-9, '_' and '-' only", path, line);
                            goto fail;
                        }
                    if (vl > 64) {
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @name longer than 64 characters", path, line);
                        goto fail;
                    }
                    if (!(t->name = dupn(v, vl))) goto nomem;
                } else if (KEY("kind")) {
                    DUP_CHECK(line_kind);
                    line_kind = line;
                    if (vl == 4 && memcmp(v, "mind", 4) == 0) t->kind = CEL_TMPL_MIND;
                    else if (vl == 8 && memcmp(v, "rephrase", 8) == 0) t->kind = CEL_TMPL_REPHRASE;
                    else if (vl == 2 && memcmp(v, "qa", 2) == 0) t->kind = CEL_TMPL_QA;
                    else if (vl == 2 && memcmp(v, "rl", 2) == 0) t->kind = CEL_TMPL_RL;
                    else {
                        st = cel_error_set(err, CEL_ERR_FORMAT,
                                           "%s:%d: unknown @kind '%.*s' (mind, rephrase, qa, rl)", path, line,
                                           (int)vl, v);
                        goto fail;
                    }
                } else if (KEY("description")) {
                    DUP_CHECK(t->description);
                    if (!(t->description = dupn(v, vl))) goto nomem;
                } else if (KEY("speakers")) {
                    DUP_CHECK(line_speakers);
                    line_speakers = line;
                    const char *bar = memchr(v, '|', vl);
                    const char *a0 = v, *a1 = bar ? rtrim(v, bar) : NULL;
                    const char *b0 = bar ? skip_ws(bar + 1, e) : NULL, *b1 = e;
                    if (!bar || a1 == a0 || b1 == b0 || memchr(b0, '|', (size_t)(b1 - b0)) ||
                        memchr(a0, ':', (size_t)(a1 - a0)) || memchr(b0, ':', (size_t)(b1 - b0)) ||
                        a1 - a0 > 48 || b1 - b0 > 48) {
                        st = cel_error_set(err, CEL_ERR_FORMAT,
                                           "%s:%d: @speakers must be two labels 'A | B' (no ':', up to 48 bytes each)",
                                           path, line);
                        goto fail;
                    }
                    if ((size_t)(a1 - a0) == (size_t)(b1 - b0) && memcmp(a0, b0, (size_t)(a1 - a0)) == 0) {
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @speakers names the same label twice", path,
                                           line);
                        goto fail;
                    }
                    if (!(t->speakers[0] = dupn(a0, (size_t)(a1 - a0))) ||
                        !(t->speakers[1] = dupn(b0, (size_t)(b1 - b0))))
                        goto nomem;
                } else if (KEY("quality")) {
                    DUP_CHECK(line_quality);
                    line_quality = line;
                    if (!((vl == 3 && memcmp(v, "low", 3) == 0) || (vl == 4 && memcmp(v, "high", 4) == 0))) {
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @quality must be low or high", path, line);
                        goto fail;
                    }
                    if (!(t->quality = dupn(v, vl))) goto nomem;
                } else if (KEY("input_tokens") || KEY("output_tokens")) {
                    bool in = KEY("input_tokens");
                    DUP_CHECK(in ? line_input : line_output);
                    if (in) line_input = line;
                    else line_output = line;
                    int32_t x;
                    if (!parse_int(v, e, 1, 1 << 20, &x)) {
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @%.*s expects an integer 1..1048576", path,
                                           line, (int)kl, k);
                        goto fail;
                    }
                    if (in) t->max_input_tokens = x;
                    else t->max_output_tokens = x;
                } else if (KEY("keep_tokens")) {
                    DUP_CHECK(line_keep);
                    line_keep = line;
                    const char *dots = NULL;
                    for (const char *q = v; q + 1 < e; q++)
                        if (q[0] == '.' && q[1] == '.') {
                            dots = q;
                            break;
                        }
                    if (!dots || !parse_int(v, dots, 0, 1 << 20, &t->keep_min_tokens) ||
                        !parse_int(dots + 2, e, 0, 1 << 20, &t->keep_max_tokens) ||
                        t->keep_min_tokens > t->keep_max_tokens) {
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @keep_tokens expects MIN..MAX with MIN <= MAX",
                                           path, line);
                        goto fail;
                    }
                } else if (KEY("lead_in")) {
                    DUP_CHECK(line_lead);
                    line_lead = line;
                    if (!(t->lead_in = dupn(v, vl))) goto nomem;
                } else if (KEY("post")) {
                    DUP_CHECK(line_post);
                    line_post = line;
                    if (vl == 4 && memcmp(v, "none", 4) == 0) t->post = CEL_POST_NONE;
                    else if (vl == 10 && memcmp(v, "diverse_qa", 10) == 0) t->post = CEL_POST_DIVERSE_QA;
                    else if (vl == 14 && memcmp(v, "knowledge_list", 14) == 0) t->post = CEL_POST_KNOWLEDGE_LIST;
                    else {
                        st = cel_error_set(err, CEL_ERR_FORMAT,
                                           "%s:%d: unknown @post '%.*s' (none, diverse_qa, knowledge_list)", path,
                                           line, (int)vl, v);
                        goto fail;
                    }
                } else if (KEY("task")) {
                    DUP_CHECK(line_task);
                    line_task = line;
                    if (vl == 3 && memcmp(v, "mcq", 3) == 0) t->task = CEL_TASK_MCQ;
                    else if (vl == 4 && memcmp(v, "open", 4) == 0) t->task = CEL_TASK_OPEN;
                    else {
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @task must be mcq or open", path, line);
                        goto fail;
                    }
                } else {
                    st = cel_error_set(err, CEL_ERR_FORMAT,
                                       "%s:%d: unknown directive @%.*s (name, kind, description, speakers, quality, "
                                       "input_tokens, output_tokens, keep_tokens, lead_in, post, task)",
                                       path, line, (int)kl, k);
                    goto fail;
                }
#undef KEY
#undef DUP_CHECK
            }
        }
        if (!nl) break;
        p = nl + 1;
        line++;
    }
    if (cur_sec && !close_section(t, &sp, cur_sec, body_start, end, body_line)) goto nomem;

    /* whole-file checks */
    if (!line_kind) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:1: missing @kind (mind, rephrase, qa or rl)", path);
        goto fail;
    }
    if (!sp.user_line) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: missing @user section", path, line);
        goto fail;
    }
    if (!t->user_src[0]) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: empty @user section", path, sp.user_line);
        goto fail;
    }
    if (t->kind == CEL_TMPL_MIND && !t->speakers[0]) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: mind templates need @speakers A | B", path, line_kind);
        goto fail;
    }
    if (t->kind != CEL_TMPL_MIND && line_speakers) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @speakers applies to mind templates only", path, line_speakers);
        goto fail;
    }
    if (t->kind != CEL_TMPL_REPHRASE) {
        int bad = line_quality ? line_quality : line_input ? line_input : line_keep ? line_keep
                : line_lead ? line_lead : line_post;
        if (bad) {
            st = cel_error_set(err, CEL_ERR_FORMAT,
                               "%s:%d: @quality, @input_tokens, @keep_tokens, @lead_in and @post apply to rephrase "
                               "templates only",
                               path, bad);
            goto fail;
        }
        if (!line_output) t->max_output_tokens = 0; /* the pipeline's max_tokens */
    }
    if ((t->kind == CEL_TMPL_QA || t->kind == CEL_TMPL_RL) && !line_task) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: %s templates need @task mcq|open", path, line_kind,
                           cel_tmpl_kind_name(t->kind));
        goto fail;
    }
    if (t->kind != CEL_TMPL_QA && t->kind != CEL_TMPL_RL && line_task) {
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @task applies to qa and rl templates only", path, line_task);
        goto fail;
    }
    if (t->kind == CEL_TMPL_REPHRASE) {
        if (t->keep_min_tokens < 0) {
            t->keep_min_tokens = 50;
            t->keep_max_tokens = t->max_output_tokens > 2 ? t->max_output_tokens - 2 : t->max_output_tokens;
        }
        if (t->keep_max_tokens > t->max_output_tokens) {
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s:%d: @keep_tokens maximum exceeds @output_tokens", path,
                               line_keep ? line_keep : line_output);
            goto fail;
        }
    }
    if (!t->name) {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        size_t bl = strlen(base);
        if (bl > 5 && strcmp(base + bl - 5, ".tmpl") == 0) bl -= 5;
        if (bl == 0 || bl > 64) {
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s:1: cannot derive a name from the file name; add @name", path);
            goto fail;
        }
        if (!(t->name = dupn(base, bl))) goto nomem;
    }
    if (!(t->path = dupn(path, strlen(path)))) goto nomem;

    if (t->system_src) {
        st = compile_section(path, t->system_src, strlen(t->system_src), sp.system_body, &t->system_parts,
                             &t->n_system_parts, err);
        if (st) goto fail;
    }
    st = compile_section(path, t->user_src, strlen(t->user_src), sp.user_body, &t->user_parts, &t->n_user_parts, err);
    if (st) goto fail;
    st = check_vars(path, t, &sp, err);
    if (st) goto fail;
    *out = t;
    return CEL_OK;
nomem:
    st = cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory", path);
fail:
    cel_template_free(t);
    return st;
}

cel_status cel_template_load(const char *path, cel_template **out, cel_error *err)
{
    char *src = NULL;
    size_t len = 0;
    *out = NULL;
    CEL_TRY(cel_read_file(path, TMPL_MAX_BYTES, &src, &len, err));
    cel_status st = cel_template_parse(path, src, len, out, err);
    free(src);
    return st;
}

/* -------------------------------------------------------------- rendering */

static cel_status render_parts(const cel_template *t, const cel__tmpl_part *parts, size_t n, const cel_tmpl_var *vars,
                               size_t n_vars, cel_buf *out, cel_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!parts[i].is_var) {
            if (cel_buf_append(out, parts[i].text, parts[i].len)) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
            continue;
        }
        const cel_tmpl_var *v = NULL;
        for (size_t k = 0; k < n_vars; k++)
            if (strcmp(vars[k].name, parts[i].text) == 0) v = &vars[k];
        if (!v)
            return cel_error_set(err, CEL_ERR_INVALID, "%s: no value given for placeholder {{%s}}", t->path,
                                 parts[i].text);
        if (v->len && cel_buf_append(out, v->value, v->len)) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    return CEL_OK;
}

cel_status cel_template_render(const cel_template *t, const cel_tmpl_var *vars, size_t n_vars, cel_buf *system_out,
                               cel_buf *user_out, cel_error *err)
{
    if (system_out && t->system_parts)
        CEL_TRY(render_parts(t, t->system_parts, t->n_system_parts, vars, n_vars, system_out, err));
    if (user_out) CEL_TRY(render_parts(t, t->user_parts, t->n_user_parts, vars, n_vars, user_out, err));
    return CEL_OK;
}

/* ------------------------------------------------------------------- sets */

struct cel_template_set {
    cel_template **items; /* sorted by name */
    size_t n, cap;
};

cel_status cel_template_set_create(cel_template_set **out, cel_error *err)
{
    *out = calloc(1, sizeof **out);
    return *out ? CEL_OK : cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
}

void cel_template_set_free(cel_template_set *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) cel_template_free(s->items[i]);
    free(s->items);
    free(s);
}

/* Binary search: index of name, or the insertion point with *found = false. */
static size_t set_lookup(const cel_template_set *s, const char *name, bool *found)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->items[mid]->name, name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = false;
    return lo;
}

cel_status cel_template_set_add(cel_template_set *s, cel_template *t, cel_error *err)
{
    bool found;
    size_t i = set_lookup(s, t->name, &found);
    if (found) {
        cel_template_free(s->items[i]);
        s->items[i] = t;
        return CEL_OK;
    }
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        cel_template **ni = realloc(s->items, nc * sizeof *ni);
        if (!ni) {
            cel_template_free(t);
            return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        }
        s->items = ni;
        s->cap = nc;
    }
    memmove(s->items + i + 1, s->items + i, (s->n - i) * sizeof *s->items);
    s->items[i] = t;
    s->n++;
    return CEL_OK;
}

const cel_template *cel_template_set_find(const cel_template_set *s, const char *name)
{
    bool found;
    size_t i = set_lookup(s, name, &found);
    return found ? s->items[i] : NULL;
}

size_t cel_template_set_count(const cel_template_set *s) { return s->n; }
const cel_template *cel_template_set_at(const cel_template_set *s, size_t i) { return i < s->n ? s->items[i] : NULL; }

typedef struct path_list {
    char **p;
    size_t n, cap;
} path_list;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Collects *.tmpl paths under dir (depth-limited, symlinked dirs not followed). */
static cel_status collect(const char *dir, int depth, path_list *pl, cel_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return cel_error_set(err, CEL_ERR_IO, "%s: cannot open template folder: %s", dir, strerror(errno));
    cel_status st = CEL_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (nm[0] == '.') continue;
        size_t nl = strlen(nm);
        cel_buf full;
        cel_buf_init(&full);
        if (cel_buf_printf(&full, "%s/%s", dir, nm)) {
            st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
            break;
        }
        struct stat sb;
        if (lstat(full.data, &sb) != 0) {
            cel_buf_free(&full);
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            if (depth < TMPL_DIR_DEPTH) st = collect(full.data, depth + 1, pl, err);
            cel_buf_free(&full);
            if (st) break;
            continue;
        }
        if (nl <= 5 || strcmp(nm + nl - 5, ".tmpl") != 0 || !(S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode))) {
            cel_buf_free(&full);
            continue;
        }
        if (pl->n == pl->cap) {
            size_t nc = pl->cap ? pl->cap * 2 : 16;
            char **np = realloc(pl->p, nc * sizeof *np);
            if (!np) {
                cel_buf_free(&full);
                st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
                break;
            }
            pl->p = np;
            pl->cap = nc;
        }
        pl->p[pl->n++] = cel_buf_steal(&full);
    }
    closedir(d);
    return st;
}

cel_status cel_template_set_load_dir(cel_template_set *s, const char *dir, cel_error *err)
{
    path_list pl = {NULL, 0, 0};
    cel_status st = collect(dir, 0, &pl, err);
    cel_template **loaded = NULL;
    size_t n_loaded = 0;
    if (st == CEL_OK && pl.n) {
        qsort(pl.p, pl.n, sizeof *pl.p, cmp_str);
        loaded = calloc(pl.n, sizeof *loaded);
        if (!loaded) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; st == CEL_OK && i < pl.n; i++) {
        st = cel_template_load(pl.p[i], &loaded[n_loaded], err);
        if (st) break;
        for (size_t k = 0; k < n_loaded; k++)
            if (strcmp(loaded[k]->name, loaded[n_loaded]->name) == 0) {
                st = cel_error_set(err, CEL_ERR_FORMAT, "%s: template name '%s' already used by %s", pl.p[i],
                                   loaded[n_loaded]->name, loaded[k]->path);
                break;
            }
        n_loaded++;
    }
    if (st == CEL_OK) {
        for (size_t i = 0; i < n_loaded; i++) {
            st = cel_template_set_add(s, loaded[i], err);
            loaded[i] = NULL;
            if (st) break;
        }
    }
    if (loaded)
        for (size_t i = 0; i < n_loaded; i++) cel_template_free(loaded[i]);
    free(loaded);
    for (size_t i = 0; i < pl.n; i++) free(pl.p[i]);
    free(pl.p);
    return st;
}
