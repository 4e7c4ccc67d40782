/* `celine generate`: one-shot text generation with the local engine. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/engine.h"
#include "cli.h"

static const cel_cli_cmd *self(void);

#define MAX_SAMPLES 64

typedef struct gen_out {
    bool stream;            /* print text as it comes (n == 1, no --json) */
    cel_buf text[MAX_SAMPLES];
    int32_t *ids[MAX_SAMPLES];
    size_t n_ids[MAX_SAMPLES], cap[MAX_SAMPLES];
    cel_finish fin[MAX_SAMPLES];
    json_t *lp[MAX_SAMPLES]; /* per-token logprobs when asked for */
    char error[256];
    bool nomem;
    int32_t n_prompt, n_cached;
} gen_out;

/* Token events arrive on this thread (the engine is stepped here). */
static void on_event(void *ud, const cel_token_event *ev)
{
    gen_out *g = ud;
    if (ev->sample >= MAX_SAMPLES) return;
    uint32_t i = ev->sample;
    if (ev->text_len) {
        if (g->stream) {
            fwrite(ev->text, 1, ev->text_len, stdout);
            fflush(stdout);
        }
        if (cel_buf_append(&g->text[i], ev->text, ev->text_len) != CEL_OK) g->nomem = true;
    }
    if (ev->token >= 0) {
        if (g->n_ids[i] == g->cap[i]) {
            size_t c = g->cap[i] ? g->cap[i] * 2 : 64;
            int32_t *p = realloc(g->ids[i], c * sizeof *p);
            if (!p) {
                g->nomem = true;
                return;
            }
            g->ids[i] = p;
            g->cap[i] = c;
        }
        g->ids[i][g->n_ids[i]++] = ev->token;
        if (g->lp[i]) {
            json_t *o = json_object(), *top = json_array();
            for (int32_t k = 0; k < ev->n_top; k++)
                json_array_append_new(top, json_pack("{s:i,s:f}", "token", (json_int_t)ev->top[k].token, "logprob",
                                                     (double)ev->top[k].logprob));
            json_object_set_new(o, "token", json_integer(ev->token));
            json_object_set_new(o, "logprob", json_real(ev->logprob));
            json_object_set_new(o, "top", top);
            if (json_array_append_new(g->lp[i], o)) g->nomem = true;
        }
    }
    g->n_prompt = ev->n_prompt_tokens;
    g->n_cached = ev->n_cached_tokens;
    if (ev->finish != CEL_FINISH_NONE) {
        g->fin[i] = ev->finish;
        if (ev->finish == CEL_FINISH_ERROR && !g->error[0])
            snprintf(g->error, sizeof g->error, "%s", ev->error ? ev->error : "unknown error");
    }
}

/* The prompt as token ids: plain text (BOS etc. as the tokenizer adds them),
 * or one user message rendered with the model's chat template. */
static int build_prompt(const char *name, const cel_model *m, const char *prompt, const char *chat, const char *system,
                        const char *tmpl_name, bool special, int32_t **ids, size_t *n)
{
    cel_error err;
    if (prompt) {
        int flags = CEL_TOKENIZE_ADD_SPECIAL | (special ? CEL_TOKENIZE_PARSE_SPECIAL : 0);
        if (cel_tokenize(m->tok, prompt, strlen(prompt), flags, ids, n, &err))
            return cel_cli_fail(name, "tokenizing the prompt: %s", err.msg);
        return 0;
    }
    cel_chat_kind kind;
    if (tmpl_name) {
        kind = cel_chat_kind_from_name(tmpl_name);
        if (kind == CEL_CHAT_AUTO)
            return cel_cli_fail(name, "unknown --chat-template '%s' (chatml, llama3, llama2, mistral, raw)", tmpl_name);
    } else {
        kind = cel_chat_detect(m->chat_template, m->tok);
    }
    cel_chat_msg msgs[2];
    size_t nm = 0;
    if (system) msgs[nm++] = (cel_chat_msg){"system", system};
    msgs[nm++] = (cel_chat_msg){"user", chat};
    cel_buf text;
    cel_buf_init(&text);
    if (cel_chat_render(kind, msgs, nm, true, m->tok, &text, &err)) {
        cel_buf_free(&text);
        return cel_cli_fail(name, "chat template %s: %s", cel_chat_kind_name(kind), err.msg);
    }
    cel_status st = cel_tokenize(m->tok, text.data ? text.data : "", text.len, CEL_TOKENIZE_PARSE_SPECIAL, ids, n, &err);
    cel_buf_free(&text);
    if (st) return cel_cli_fail(name, "tokenizing the chat prompt: %s", err.msg);
    return 0;
}

static int run(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *chat = NULL, *system = NULL, *tmpl = NULL, *backend = "cpu";
    int64_t max_tokens = 256, seed = 0, top_k = 0, n = 1, threads = 0, n_ctx = 0, logprobs = -1;
    double temperature = 0.0, top_p = 1.0, min_p = 0.0, rep = 1.0, presence = 0.0, frequency = 0.0;
    bool json = false, special = false, ignore_eos = false, stats = false;
    cel_cli_list stops = {0};
    const cel_cli_opt opts[] = {
        {"model", CEL_OPT_STR, &model, "PATH", "model: a .gguf file or a Hugging Face folder"},
        {"prompt", CEL_OPT_STR, &prompt, "STR", "plain-text prompt (completion)"},
        {"chat", CEL_OPT_STR, &chat, "STR", "user message, rendered with the model's chat template"},
        {"system", CEL_OPT_STR, &system, "STR", "system message (with --chat)"},
        {"chat-template", CEL_OPT_STR, &tmpl, "NAME", "override the detected template: chatml, llama3, llama2, mistral, raw"},
        {"max-tokens", CEL_OPT_INT, &max_tokens, "N", "tokens to generate per sample (default 256; 0: until the context is full)"},
        {"temperature", CEL_OPT_DOUBLE, &temperature, "T", "sampling temperature (default 0: greedy)"},
        {"seed", CEL_OPT_INT, &seed, "S", "seed; sample i uses a stream derived from (seed, i) (default 0)"},
        {"top-k", CEL_OPT_INT, &top_k, "K", "keep the K most likely tokens (0: off)"},
        {"top-p", CEL_OPT_DOUBLE, &top_p, "P", "keep the most likely tokens up to mass P (1: off)"},
        {"min-p", CEL_OPT_DOUBLE, &min_p, "P", "drop tokens less likely than P times the best (0: off)"},
        {"repetition-penalty", CEL_OPT_DOUBLE, &rep, "R", "penalise prompt and output tokens (1: off)"},
        {"presence-penalty", CEL_OPT_DOUBLE, &presence, "X", "subtract X from tokens already generated (0: off)"},
        {"frequency-penalty", CEL_OPT_DOUBLE, &frequency, "X", "subtract X per earlier occurrence (0: off)"},
        {"n", CEL_OPT_INT, &n, "N", "samples of the prompt (they share its KV cache; default 1)"},
        {"stop", CEL_OPT_LIST, &stops, "STR", "stop string (repeatable); the output ends before it"},
        {"ignore-eos", CEL_OPT_FLAG, &ignore_eos, NULL, "keep generating past end-of-generation tokens"},
        {"logprobs", CEL_OPT_INT, &logprobs, "N", "with --json: each token's logprob and its N best alternatives (0..20)"},
        {"special", CEL_OPT_FLAG, &special, NULL, "parse special-token text like <|im_start|> in --prompt"},
        {"threads", CEL_OPT_INT, &threads, "N", "CPU threads (default: all cores)"},
        {"ctx", CEL_OPT_INT, &n_ctx, "N", "context length (default: the model's, at most 8192)"},
        {"backend", CEL_OPT_STR, &backend, "NAME", "cpu or cuda (default cpu)"},
        {"json", CEL_OPT_FLAG, &json, NULL, "print one JSON object per sample: {\"text\", \"ids\", \"finish_reason\"}"},
        {"stats", CEL_OPT_FLAG, &stats, NULL, "print token counts and speed to stderr"},
    };
    int rc = cel_cli_parse(self(), argc, argv, opts, sizeof opts / sizeof opts[0], NULL, 0, NULL);
    if (rc) return cel_cli_exit(rc);
    const char *name = self()->name;
    if (!model) return cel_cli_usage(name, "--model is required (see --help)");
    if (!prompt == !chat) return cel_cli_usage(name, "give exactly one of --prompt or --chat (see --help)");
    if (n < 1 || n > MAX_SAMPLES) {
        return cel_cli_usage(name, "--n must be in 1..%d, got %lld", MAX_SAMPLES, (long long)n);
    }
    if (max_tokens < 0 || max_tokens > INT32_MAX || top_k < 0 || top_k > INT32_MAX || threads < 0 || threads > 4096 ||
        n_ctx < 0 || n_ctx > INT32_MAX || logprobs < -1 || logprobs > 20) {
        return cel_cli_usage(name, "--max-tokens, --top-k, --threads, --ctx must be >= 0 and --logprobs in 0..20");
    }
    cel_backend_kind bk;
    if ((rc = cel_cli_backend(name, backend, &bk))) return rc;

    cel_error err;
    cel_model *m = NULL;
    if ((rc = cel_cli_model_load(name, model, NULL, true, &m))) return rc;
    int status = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    cel_engine *e = NULL;
    gen_out *g = calloc(1, sizeof *g);
    if (!g) {
        status = cel_cli_fail(name, "out of memory");
        goto done;
    }
    if ((status = build_prompt(name, m, prompt, chat, system, tmpl, special, &ids, &n_ids))) goto done;
    if (n_ids == 0) {
        status = cel_cli_fail(name, "the prompt is empty after tokenization");
        goto done;
    }

    cel_engine_params ep;
    cel_cli_engine_params(&ep, bk, threads);
    ep.n_ctx = (int32_t)n_ctx;
    ep.max_seqs = (int32_t)n;
    if (!n_ctx) { /* the engine's default context, but room for this prompt when the model allows it */
        int32_t train = m->hp.n_ctx_train > 0 ? m->hp.n_ctx_train : 8192;
        int32_t want = (int32_t)n_ids + (int32_t)(max_tokens ? max_tokens : 0) + 1;
        ep.n_ctx = train < 8192 ? train : 8192;
        if (want > ep.n_ctx && want <= train) ep.n_ctx = want;
    }
    if (cel_engine_create(m, &ep, &e, &err)) {
        status = cel_cli_fail(name, "%s", err.msg);
        goto done;
    }
    cel_sampling sp;
    cel_sampling_default(&sp);
    sp.temperature = (float)temperature;
    sp.top_k = (int32_t)top_k;
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    sp.repetition_penalty = (float)rep;
    sp.presence_penalty = (float)presence;
    sp.frequency_penalty = (float)frequency;
    sp.seed = (uint64_t)seed;
    sp.max_tokens = (int32_t)max_tokens;
    sp.n_logprobs = (int32_t)logprobs;
    sp.ignore_eos = ignore_eos;
    sp.stop = stops.items;
    sp.n_stop = stops.n;

    for (int i = 0; i < MAX_SAMPLES; i++) cel_buf_init(&g->text[i]);
    g->stream = !json && n == 1;
    if (json && logprobs >= 0)
        for (int64_t i = 0; i < n; i++) g->lp[i] = json_array();
    cel_request rq = {.prompt = ids, .n_prompt = n_ids, .n = (uint32_t)n, .sampling = sp, .cb = on_event, .ud = g};
    uint64_t id;
    double t0 = cel_now_sec();
    if (cel_engine_submit(e, &rq, &id, &err) || cel_engine_run_until_idle(e, &err)) {
        status = cel_cli_fail(name, "%s", err.msg);
        goto done;
    }
    double dt = cel_now_sec() - t0;
    if (g->nomem) {
        status = cel_cli_fail(name, "out of memory collecting the output");
        goto done;
    }
    if (g->error[0]) {
        if (g->stream) fputc('\n', stdout);
        status = cel_cli_fail(name, "generation failed: %s", g->error);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        if (json) {
            json_t *o = json_object();
            json_t *arr = json_array();
            for (size_t k = 0; k < g->n_ids[i]; k++) json_array_append_new(arr, json_integer(g->ids[i][k]));
            json_object_set_new(o, "text", json_stringn(g->text[i].data ? g->text[i].data : "", g->text[i].len));
            json_object_set_new(o, "ids", arr);
            json_object_set_new(o, "finish_reason", json_string(cel_finish_name(g->fin[i])));
            if (n > 1) json_object_set_new(o, "sample", json_integer(i));
            if (g->lp[i]) json_object_set(o, "logprobs", g->lp[i]);
            char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
            json_decref(o);
            if (!s) {
                status = cel_cli_fail(name, "out of memory");
                goto done;
            }
            puts(s);
            free(s);
        } else if (g->stream) {
            fputc('\n', stdout);
        } else {
            printf("--- sample %lld (%s) ---\n", (long long)i, cel_finish_name(g->fin[i]));
            fwrite(g->text[i].data ? g->text[i].data : "", 1, g->text[i].len, stdout);
            fputc('\n', stdout);
        }
    }
    if (stats) {
        size_t gen = 0;
        for (int64_t i = 0; i < n; i++) gen += g->n_ids[i];
        fprintf(stderr, "prompt %d tokens (%d cached), generated %zu tokens in %.3f s (%.1f tokens/s)\n", g->n_prompt,
                g->n_cached, gen, dt, dt > 0 ? (double)gen / dt : 0.0);
    }
done:
    if (g)
        for (int i = 0; i < MAX_SAMPLES; i++) {
            cel_buf_free(&g->text[i]);
            free(g->ids[i]);
            json_decref(g->lp[i]);
        }
    free(g);
    cel_engine_free(e);
    free(ids);
    cel_model_free(m);
    return status;
}

const cel_cli_cmd cel_cli_cmd_generate = {
    "generate",
    "generate text from a prompt or a chat message with the local engine",
    "Usage: celine generate --model PATH (--prompt STR | --chat STR) [options]\n\n"
    "Runs the prompt through the local inference engine and prints the completion\n"
    "(streamed as it is generated when n = 1). --chat renders the message with the\n"
    "model's chat template (recognised from the model; override with --chat-template).\n"
    "With --n N the samples share the prompt's KV cache; sample i draws from its own\n"
    "random stream derived from (--seed, i), so a sample's text does not depend on n\n"
    "or on other requests. --json prints one object per sample per line:\n"
    "{\"text\": ..., \"ids\": [...], \"finish_reason\": \"stop\"|\"length\"}.",
    run,
};

static const cel_cli_cmd *self(void) { return &cel_cli_cmd_generate; }
