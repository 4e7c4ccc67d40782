/*
 * chat.c - chat templates of the supported families, rendered in C (no Jinja):
 * each renderer reproduces what the family's official Jinja template produces
 * for system/user/assistant conversations.
 *
 *   CHATML   Qwen2.5 / Qwen3 / SmolLM: <|im_start|>role\ncontent<|im_end|>\n ...
 *            (Qwen3 templates, recognised by "</think>", also drop the reasoning
 *            of assistant turns before the last user turn, as that template does)
 *   LLAMA3   <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> ...
 *            (content trimmed, as the Meta template does; the first release's template,
 *            which has no add_generation_prompt, always ends with the assistant header)
 *   LLAMA2   <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] ...
 *   MISTRAL  <s>[INST] user[/INST] answer</s>[INST] ... (Mistral-7B-Instruct-v0.3;
 *            the system prompt joins the final user turn, as that template does)
 *   RAW      contents concatenated
 * Output holds special tokens as text (BOS included, as Hugging Face templates
 * write it): tokenize it with CEL_TOKENIZE_PARSE_SPECIAL and without
 * CEL_TOKENIZE_ADD_SPECIAL, or BOS appears twice.
 */
#include <string.h>

#include "tok_impl.h"

static const struct {
    cel_chat_kind kind;
    const char *name;
} kind_names[] = {
    {CEL_CHAT_AUTO, "auto"},       {CEL_CHAT_CHATML, "chatml"},   {CEL_CHAT_LLAMA3, "llama3"},
    {CEL_CHAT_LLAMA2, "llama2"},   {CEL_CHAT_MISTRAL, "mistral"}, {CEL_CHAT_RAW, "raw"},
};

cel_chat_kind cel_chat_kind_from_name(const char *name)
{
    if (!name) return CEL_CHAT_AUTO;
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (!strcmp(name, kind_names[i].name)) return kind_names[i].kind;
    if (!strcmp(name, "qwen") || !strcmp(name, "qwen2") || !strcmp(name, "qwen3") || !strcmp(name, "smollm"))
        return CEL_CHAT_CHATML;
    if (!strcmp(name, "llama-3") || !strcmp(name, "llama-2")) return !strcmp(name, "llama-3") ? CEL_CHAT_LLAMA3 : CEL_CHAT_LLAMA2;
    return CEL_CHAT_AUTO;
}

const char *cel_chat_kind_name(cel_chat_kind k)
{
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (kind_names[i].kind == k) return kind_names[i].name;
    return "unknown";
}

/* Recognises the family by the markers its Jinja source writes; without a
 * template, by the vocabulary's special tokens. RAW when nothing matches. */
cel_chat_kind cel_chat_detect(const char *tmpl, const cel_tokenizer *t)
{
    if (!tmpl && t) tmpl = cel_tokenizer_chat_template(t);
    if (tmpl) {
        if (strstr(tmpl, "<|im_start|>")) return CEL_CHAT_CHATML;
        if (strstr(tmpl, "<|start_header_id|>")) return CEL_CHAT_LLAMA3;
        if (strstr(tmpl, "[INST]")) return strstr(tmpl, "<<SYS>>") ? CEL_CHAT_LLAMA2 : CEL_CHAT_MISTRAL;
    }
    if (t) {
        if (cel_tokenizer_find(t, "<|im_start|>") >= 0) return CEL_CHAT_CHATML;
        if (cel_tokenizer_find(t, "<|start_header_id|>") >= 0) return CEL_CHAT_LLAMA3;
        if (cel_tokenizer_find(t, "[INST]") >= 0) return CEL_CHAT_MISTRAL;
        if (cel_tokenizer_kind(t) == CEL_TOK_SPM_BPE) return CEL_CHAT_LLAMA2;
    }
    return CEL_CHAT_RAW;
}

/* ---- small string helpers over [p, p + n) ---- */

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static void trim(const char **p, size_t *n) /* Python's str.strip() / Jinja's trim for ASCII whitespace */
{
    while (*n && is_space(**p)) (*p)++, (*n)--;
    while (*n && is_space((*p)[*n - 1])) (*n)--;
}

static void strip_nl(const char **p, size_t *n, bool left, bool right)
{
    while (left && *n && **p == '\n') (*p)++, (*n)--;
    while (right && *n && (*p)[*n - 1] == '\n') (*n)--;
}

static const char *find_in(const char *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(p + i, needle, k)) return p + i;
    return NULL;
}

static const char *find_last_in(const char *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
        if (!memcmp(p + i, needle, k)) return p + i;
    return NULL;
}

/* ---- renderers ---- */

typedef struct rctx {
    const cel_chat_msg *m;
    size_t n;
    bool gen;
    const cel_tokenizer *t;
    cel_buf *out;
    cel_error *err;
} rctx;

#define PUT(s) CEL_TRY(cel_buf_puts(c->out, (s)) ? cel_error_set(c->err, CEL_ERR_NOMEM, "out of memory") : CEL_OK)
#define PUTN(p, n) CEL_TRY(cel_buf_append(c->out, (p), (n)) ? cel_error_set(c->err, CEL_ERR_NOMEM, "out of memory") : CEL_OK)

static bool role_is(const cel_chat_msg *m, const char *r) { return !strcmp(m->role, r); }

static cel_status render_chatml(rctx *c)
{
    /* Qwen3's template: reasoning ("<think>...</think>") of assistant turns
     * before the last user turn is dropped; later turns keep it, normalized. */
    const char *src = c->t ? cel_tokenizer_chat_template(c->t) : NULL;
    bool qwen3 = src && strstr(src, "</think>") != NULL;
    size_t last_query = c->n ? c->n - 1 : 0;
    for (size_t i = c->n; i-- > 0;) {
        if (!role_is(&c->m[i], "user")) continue;
        const char *s = c->m[i].content;
        size_t len = strlen(s);
        bool tool = len >= 31 && !strncmp(s, "<tool_response>", 15) && !strcmp(s + len - 16, "</tool_response>");
        if (!tool) {
            last_query = i;
            break;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        const cel_chat_msg *m = &c->m[i];
        const char *content = m->content;
        size_t clen = strlen(content);
        if (!qwen3 || !role_is(m, "assistant")) {
            PUT("<|im_start|>");
            PUT(m->role);
            PUT("\n");
            PUTN(content, clen);
            PUT("<|im_end|>\n");
            continue;
        }
        const char *reason = "";
        size_t rlen = 0;
        const char *end = find_in(content, clen, "</think>");
        if (end) {
            /* content = after the last </think>, lstrip('\n');
             * reasoning = before the first </think>, rstrip('\n'), after the last <think>, lstrip('\n') */
            const char *last_end = find_last_in(content, clen, "</think>");
            const char *after = last_end + 8;
            size_t alen = clen - (size_t)(after - content);
            reason = content;
            rlen = (size_t)(end - content);
            strip_nl(&reason, &rlen, false, true);
            const char *open = find_last_in(reason, rlen, "<think>");
            if (open) {
                rlen -= (size_t)(open + 7 - reason);
                reason = open + 7;
            }
            strip_nl(&reason, &rlen, true, false);
            content = after;
            clen = alen;
            strip_nl(&content, &clen, true, false);
        }
        PUT("<|im_start|>assistant\n");
        if (i > last_query && (i + 1 == c->n || rlen > 0)) {
            strip_nl(&reason, &rlen, true, true);
            PUT("<think>\n");
            PUTN(reason, rlen);
            PUT("\n</think>\n\n");
            strip_nl(&content, &clen, true, false);
        }
        PUTN(content, clen);
        PUT("<|im_end|>\n");
    }
    if (c->gen) PUT("<|im_start|>assistant\n");
    return CEL_OK;
}

static cel_status render_llama3(rctx *c)
{
    /* the first Llama 3 release's template writes the assistant header whether or
     * not a generation prompt was asked for: follow the model's own template */
    const char *src = c->t ? cel_tokenizer_chat_template(c->t) : NULL;
    if (src && strstr(src, "<|start_header_id|>") && !strstr(src, "add_generation_prompt")) c->gen = true;
    PUT("<|begin_of_text|>");
    for (size_t i = 0; i < c->n; i++) {
        const char *p = c->m[i].content;
        size_t len = strlen(p);
        trim(&p, &len);
        PUT("<|start_header_id|>");
        PUT(c->m[i].role);
        PUT("<|end_header_id|>\n\n");
        PUTN(p, len);
        PUT("<|eot_id|>");
    }
    if (c->gen) PUT("<|start_header_id|>assistant<|end_header_id|>\n\n");
    return CEL_OK;
}

/* Llama 2 and Mistral require user/assistant turns alternating, starting with
 * the user, after an optional leading system message (their templates raise
 * an exception otherwise). */
static cel_status check_alternating(rctx *c, size_t first)
{
    for (size_t i = first; i < c->n; i++) {
        bool want_user = (i - first) % 2 == 0;
        if (!role_is(&c->m[i], want_user ? "user" : "assistant"))
            return cel_error_set(c->err, CEL_ERR_INVALID,
                                 "chat message %zu has role '%s': this template needs user/assistant turns alternating "
                                 "(after one optional leading system message)",
                                 i, c->m[i].role);
    }
    return CEL_OK;
}

static cel_status render_llama2(rctx *c)
{
    size_t first = c->n && role_is(&c->m[0], "system") ? 1 : 0;
    CEL_TRY(check_alternating(c, first));
    for (size_t i = first; i < c->n; i++) {
        const cel_chat_msg *m = &c->m[i];
        const char *p = m->content;
        size_t len = strlen(p);
        if (role_is(m, "user")) {
            /* the system prompt joins the first user turn; the template strips the combined text */
            cel_buf tmp;
            cel_buf_init(&tmp);
            bool oom = false;
            if (i == first && first == 1) {
                oom |= cel_buf_puts(&tmp, "<<SYS>>\n") != CEL_OK;
                oom |= cel_buf_puts(&tmp, c->m[0].content) != CEL_OK;
                oom |= cel_buf_puts(&tmp, "\n<</SYS>>\n\n") != CEL_OK;
            }
            oom |= cel_buf_append(&tmp, p, len) != CEL_OK;
            const char *q = tmp.data ? tmp.data : "";
            size_t qn = tmp.len;
            trim(&q, &qn);
            cel_status st = oom ? CEL_ERR_NOMEM : cel_buf_puts(c->out, "<s>[INST] ");
            if (!st) st = cel_buf_append(c->out, q, qn);
            cel_buf_free(&tmp);
            if (st) return cel_error_set(c->err, CEL_ERR_NOMEM, "out of memory");
            PUT(" [/INST]");
        } else {
            trim(&p, &len);
            PUT(" ");
            PUTN(p, len);
            PUT(" </s>");
        }
    }
    return CEL_OK;
}

static cel_status render_mistral(rctx *c)
{
    size_t first = c->n && role_is(&c->m[0], "system") ? 1 : 0;
    CEL_TRY(check_alternating(c, first));
    PUT("<s>");
    for (size_t i = first; i < c->n; i++) {
        const cel_chat_msg *m = &c->m[i];
        if (role_is(m, "user")) {
            PUT("[INST] ");
            if (first == 1 && i + 1 == c->n) {
                PUT(c->m[0].content);
                PUT("\n\n");
            }
            PUT(m->content);
            PUT("[/INST]");
        } else {
            const char *p = m->content;
            size_t len = strlen(p);
            trim(&p, &len);
            PUT(" ");
            PUTN(p, len);
            PUT("</s>");
        }
    }
    return CEL_OK;
}

cel_status cel_chat_render(cel_chat_kind kind, const cel_chat_msg *msgs, size_t n, bool add_generation_prompt,
                           const cel_tokenizer *t, cel_buf *out, cel_error *err)
{
    if (n && !msgs) return cel_error_set(err, CEL_ERR_INVALID, "cel_chat_render: NULL messages");
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return cel_error_set(err, CEL_ERR_INVALID, "chat message %zu has no %s", i, msgs[i].role ? "content" : "role");
        if (!role_is(&msgs[i], "system") && !role_is(&msgs[i], "user") && !role_is(&msgs[i], "assistant"))
            return cel_error_set(err, CEL_ERR_INVALID, "chat message %zu has role '%s' (system, user or assistant)", i,
                                 msgs[i].role);
    }
    if (kind == CEL_CHAT_AUTO) kind = cel_chat_detect(NULL, t);
    rctx c = {msgs, n, add_generation_prompt, t, out, err};
    size_t mark = out->len;
    cel_status st;
    switch (kind) {
    case CEL_CHAT_CHATML: st = render_chatml(&c); break;
    case CEL_CHAT_LLAMA3: st = render_llama3(&c); break;
    case CEL_CHAT_LLAMA2: st = render_llama2(&c); break;
    case CEL_CHAT_MISTRAL: st = render_mistral(&c); break;
    case CEL_CHAT_RAW:
        st = CEL_OK;
        for (size_t i = 0; i < n && !st; i++)
            if (cel_buf_puts(out, msgs[i].content)) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        break;
    default: st = cel_error_set(err, CEL_ERR_INVALID, "unknown chat template kind %d", (int)kind);
    }
    if (st && out->data) { /* leave out as it was */
        out->len = mark;
        out->data[mark] = 0;
    }
    return st;
}
