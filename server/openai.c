/*
 * openai.c - the OpenAI-compatible endpoints: POST /v1/completions, POST
 * /v1/chat/completions (plain and Server-Sent Events), GET /v1/models, and
 * POST /tokenize, /detokenize.
 *
 * A generation request goes through three threads:
 *   loop    checks the model is ready, defers preparation to a worker;
 *   worker  parses and validates the JSON, renders the chat template,
 *           tokenizes (the slow, size-dependent part stays off the loop);
 *   loop    submits to the engine (so the request id is known before any
 *           event arrives) and registers an abort hook (client gone ->
 *           cel_engine_cancel, which frees the sequences' KV blocks);
 *   engine  calls engine_cb per token; it copies the event and posts it
 *           to the loop (never blocks);
 *   loop    writes SSE chunks or accumulates, and answers once every
 *           sample has its final event.
 * A cel__gen lives until the engine's last final event for it, whatever
 * the client does, so the engine never holds a dangling pointer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAX_STOP 16
#define MAX_STOP_LEN 512
#define MAX_TOP_LOGPROBS 20

typedef struct gen_sample {
    cel_buf text;
    cel_finish finish;
    bool done, role_sent;
    int32_t n_gen;
    uint64_t t_last;
    json_t *lp;           /* accumulated logprobs (non-streaming) */
    size_t text_offset;   /* completions logprobs: offset of the next token's text */
    char *error;
} gen_sample;

struct cel__gen {
    cel_server *s;
    cel_http_req *req;    /* NULL once answered */
    cel__gen *prev, *next;
    bool in_list;
    bool chat, stream, include_usage;
    bool want_logprobs;
    int n_top;            /* alternatives per token */
    uint32_t n;
    char id[48];
    long long created;
    uint64_t engine_id;
    bool submitted, cancelled;
    uint64_t t_start;
    bool first_token;
    uint64_t default_seed; /* drawn on the loop thread */
    /* prepared by the worker */
    int32_t *prompt;
    size_t n_prompt;
    cel_sampling sp;
    char *stops[MAX_STOP];
    size_t n_stops;
    int32_t *stop_ids;
    size_t n_stop_ids;
    int err_status;
    const char *err_code;
    cel_error err;
    /* progress */
    gen_sample *samples;
    uint32_t n_done;
    int32_t n_prompt_tokens, n_cached_tokens;
};

typedef struct gen_event {
    cel__post node;
    cel__gen *g;
    uint32_t sample;
    int32_t token;
    float logprob;
    int32_t n_top;
    cel_top_logprob top[MAX_TOP_LOGPROBS];
    cel_finish finish;
    int32_t n_prompt, n_cached, n_gen;
    uint64_t t;
    char *error;
    size_t text_len;
    char text[];
} gen_event;

static const char *no_model_msg =
    "this server has no model loaded, so it cannot generate; start it with `celine serve --model PATH` "
    "(a .gguf file or a Hugging Face folder). The reward endpoints (POST /v1/reward, POST /get_reward) work "
    "without a model.";

/* Answers 503 unless a model is ready; returns whether it is. */
static bool need_model(cel_http_req *r)
{
    cel_server *s = cel_http_req_server(r);
    switch (s->model_state) {
    case CEL__MODEL_READY: return true;
    case CEL__MODEL_LOADING:
        cel_http_respond_error(r, 503, "service_unavailable", "model_loading",
                               "the model is still loading; retry when GET /health answers 200");
        return false;
    case CEL__MODEL_FAILED:
        cel_http_respond_error(r, 503, "service_unavailable", "model_failed", "the model failed to load: %s",
                               s->model_err.msg);
        return false;
    case CEL__MODEL_NONE: break;
    }
    cel_http_respond_error(r, 503, "service_unavailable", "model_not_loaded", "%s", no_model_msg);
    return false;
}

/* ------------------------------------------------------------ lifetimes */

static void gen_free(cel__gen *g)
{
    cel_server *s = g->s;
    if (g->in_list) {
        if (g->prev)
            g->prev->next = g->next;
        else
            s->gens = g->next;
        if (g->next) g->next->prev = g->prev;
        s->n_gens--;
    }
    if (g->samples) {
        for (uint32_t i = 0; i < g->n; i++) {
            cel_buf_free(&g->samples[i].text);
            json_decref(g->samples[i].lp);
            free(g->samples[i].error);
        }
    }
    free(g->samples);
    free(g->prompt);
    for (size_t i = 0; i < g->n_stops; i++) free(g->stops[i]);
    free(g->stop_ids);
    free(g);
    cel__srv_check_finished(s);
}

static void gen_on_abort(void *ud)
{
    cel__gen *g = ud;
    if (g->submitted && !g->cancelled && g->s->engine) {
        g->cancelled = true;
        g->s->metrics.cancelled_requests++;
        cel_engine_cancel(g->s->engine, g->engine_id);
    }
}

void cel__srv_gen_cancel_all(cel_server *s)
{
    for (cel__gen *g = s->gens; g; g = g->next) gen_on_abort(g);
}

/* ------------------------------------------------------------- helpers */

static void make_id(cel_server *s, const char *prefix, char *out, size_t n)
{
    uint64_t a = cel_mix64(++s->id_counter), b = cel_mix64(a ^ cel_now_ns());
    snprintf(out, n, "%s%016llx%08llx", prefix, (unsigned long long)a, (unsigned long long)(b & 0xffffffffu));
}

/* The text of one token (special tokens included), as a JSON string. */
static json_t *piece_json(const cel_tokenizer *t, int32_t id, json_t **bytes_out)
{
    cel_buf b;
    cel_buf_init(&b);
    cel_detokenize(t, &id, 1, false, &b, NULL);
    json_t *s = cel__srv_json_str(b.data ? b.data : "", b.len);
    if (bytes_out) {
        json_t *arr = json_array();
        for (size_t i = 0; i < b.len; i++) json_array_append_new(arr, json_integer((unsigned char)b.data[i]));
        *bytes_out = arr;
    }
    cel_buf_free(&b);
    return s;
}

static const char *finish_name(cel_finish f)
{
    switch (f) {
    case CEL_FINISH_STOP: return "stop";
    case CEL_FINISH_LENGTH: return "length";
    case CEL_FINISH_CANCELLED: return "cancelled";
    case CEL_FINISH_ERROR: return "error";
    case CEL_FINISH_NONE: break;
    }
    return NULL;
}

static json_t *usage_json(const cel__gen *g)
{
    int64_t out = 0;
    for (uint32_t i = 0; i < g->n; i++) out += g->samples[i].n_gen;
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(g->n_prompt_tokens));
    json_object_set_new(u, "completion_tokens", json_integer(out));
    json_object_set_new(u, "total_tokens", json_integer(g->n_prompt_tokens + out));
    json_t *d = json_object();
    json_object_set_new(d, "cached_tokens", json_integer(g->n_cached_tokens));
    json_object_set_new(u, "prompt_tokens_details", d);
    return u;
}

static json_t *chunk_base(const cel__gen *g)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(g->id));
    json_object_set_new(o, "object", json_string(g->chat ? (g->stream ? "chat.completion.chunk" : "chat.completion")
                                                         : "text_completion"));
    json_object_set_new(o, "created", json_integer(g->created));
    json_object_set_new(o, "model", cel__srv_json_str(g->s->model_name, strlen(g->s->model_name)));
    return o;
}

/* One token's logprob entry. Chat: {token, logprob, bytes, top_logprobs};
 * completions: appended to the four parallel arrays of lp. */
static void add_logprob(cel__gen *g, gen_sample *sm, const gen_event *e, json_t *lp, const char *text,
                        size_t text_len)
{
    const cel_tokenizer *t = g->s->model->tok;
    if (g->chat) {
        json_t *bytes = NULL;
        json_t *ent = json_object();
        json_object_set_new(ent, "token", piece_json(t, e->token, &bytes));
        json_object_set_new(ent, "logprob", json_real(e->logprob));
        json_object_set_new(ent, "bytes", bytes);
        json_t *tops = json_array();
        for (int32_t k = 0; k < e->n_top; k++) {
            json_t *tb = NULL, *to = json_object();
            json_object_set_new(to, "token", piece_json(t, e->top[k].token, &tb));
            json_object_set_new(to, "logprob", json_real(e->top[k].logprob));
            json_object_set_new(to, "bytes", tb);
            json_array_append_new(tops, to);
        }
        json_object_set_new(ent, "top_logprobs", tops);
        json_array_append_new(json_object_get(lp, "content"), ent);
    } else {
        json_array_append_new(json_object_get(lp, "tokens"), piece_json(t, e->token, NULL));
        json_array_append_new(json_object_get(lp, "token_logprobs"), json_real(e->logprob));
        json_t *tops = json_object();
        for (int32_t k = 0; k < e->n_top; k++) {
            json_t *key = piece_json(t, e->top[k].token, NULL);
            json_object_set_new(tops, json_string_value(key), json_real(e->top[k].logprob));
            json_decref(key);
        }
        json_array_append_new(json_object_get(lp, "top_logprobs"), tops);
        json_array_append_new(json_object_get(lp, "text_offset"), json_integer((json_int_t)sm->text_offset));
    }
    (void)text;
    sm->text_offset += text_len;
}

static json_t *new_logprobs(bool chat)
{
    json_t *lp = json_object();
    if (chat) {
        json_object_set_new(lp, "content", json_array());
    } else {
        json_object_set_new(lp, "tokens", json_array());
        json_object_set_new(lp, "token_logprobs", json_array());
        json_object_set_new(lp, "top_logprobs", json_array());
        json_object_set_new(lp, "text_offset", json_array());
    }
    return lp;
}

static void sse_write(cel__gen *g, const json_t *chunk)
{
    if (!g->req || cel_http_req_aborted(g->req)) return;
    cel_buf b;
    cel_buf_init(&b);
    cel_buf_puts(&b, "data: ");
    if (cel__srv_json_dump(chunk, &b) == CEL_OK && cel_buf_puts(&b, "\n\n") == CEL_OK)
        cel_http_stream_write(g->req, b.data, b.len); /* a failure aborts the request (abort hook cancels) */
    cel_buf_free(&b);
}

/* A streaming chunk for one choice: text (may be empty), optional logprobs,
 * optional finish reason. */
static void send_choice_chunk(cel__gen *g, uint32_t idx, const char *text, size_t len, json_t *lp /* stolen */,
                              const char *finish)
{
    gen_sample *sm = &g->samples[idx];
    json_t *o = chunk_base(g);
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(idx));
    if (g->chat) {
        json_t *delta = json_object();
        if (!sm->role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            sm->role_sent = true;
        }
        if (len || !finish) json_object_set_new(delta, "content", cel__srv_json_str(text, len));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", cel__srv_json_str(text, len));
    }
    json_object_set_new(choice, "logprobs", lp ? lp : json_null());
    json_object_set_new(choice, "finish_reason", finish ? json_string(finish) : json_null());
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(o, "choices", choices);
    if (g->include_usage) json_object_set_new(o, "usage", json_null());
    sse_write(g, o);
    json_decref(o);
}

/* Every sample has finished: answer (or just release an aborted request). */
static void gen_finish(cel__gen *g)
{
    cel_http_req *r = g->req;
    g->req = NULL;
    const char *error = NULL;
    for (uint32_t i = 0; i < g->n; i++)
        if (g->samples[i].finish == CEL_FINISH_ERROR) error = g->samples[i].error ? g->samples[i].error : "engine error";
    if (r && cel_http_req_aborted(r)) {
        cel_http_respond(r, 499, NULL, NULL, 0, NULL); /* nobody hears it; releases the request */
    } else if (r && g->stream) {
        g->req = r;
        if (error) {
            cel_buf b;
            cel_buf_init(&b);
            cel_buf_puts(&b, "data: ");
            cel__srv_error_json(&b, 500, "server_error", "engine_error", error);
            cel_buf_puts(&b, "\n\n");
            cel_http_stream_write(r, b.data, b.len);
            cel_buf_free(&b);
        }
        if (g->include_usage) {
            json_t *o = chunk_base(g);
            json_object_set_new(o, "choices", json_array());
            json_object_set_new(o, "usage", usage_json(g));
            sse_write(g, o);
            json_decref(o);
        }
        static const char done[] = "data: [DONE]\n\n";
        if (!cel_http_req_aborted(r)) cel_http_stream_write(r, done, sizeof done - 1);
        g->req = NULL;
        cel_http_stream_end(r);
    } else if (r) {
        if (error) {
            cel_http_respond_error(r, 500, "server_error", "engine_error", "generation failed: %s", error);
        } else {
            json_t *o = chunk_base(g);
            json_t *choices = json_array();
            for (uint32_t i = 0; i < g->n; i++) {
                gen_sample *sm = &g->samples[i];
                json_t *c = json_object();
                json_object_set_new(c, "index", json_integer(i));
                json_t *txt = cel__srv_json_str(sm->text.data, sm->text.len);
                if (g->chat) {
                    json_t *m = json_object();
                    json_object_set_new(m, "role", json_string("assistant"));
                    json_object_set_new(m, "content", txt);
                    json_object_set_new(c, "message", m);
                } else {
                    json_object_set_new(c, "text", txt);
                }
                json_object_set_new(c, "logprobs", sm->lp ? json_incref(sm->lp) : json_null());
                json_object_set_new(c, "finish_reason", json_string(finish_name(sm->finish)));
                json_array_append_new(choices, c);
            }
            json_object_set_new(o, "choices", choices);
            json_object_set_new(o, "usage", usage_json(g));
            cel_buf b;
            cel_buf_init(&b);
            if (cel__srv_json_dump(o, &b) == CEL_OK)
                cel_http_respond(r, 200, "application/json", b.data, b.len, NULL);
            else
                cel_http_respond_error(r, 500, NULL, NULL, "out of memory writing the answer");
            cel_buf_free(&b);
            json_decref(o);
        }
    }
    gen_free(g);
}

/* Loop thread: one engine event. */
static void on_event(void *ud)
{
    gen_event *e = ud;
    cel__gen *g = e->g;
    cel_server *s = g->s;
    if (e->sample >= g->n) { /* an engine bug; never index out of bounds */
        free(e->error);
        free(e);
        return;
    }
    gen_sample *sm = &g->samples[e->sample];
    g->n_prompt_tokens = e->n_prompt;
    g->n_cached_tokens = e->n_cached;
    if (e->token >= 0) {
        s->metrics.gen_tokens++;
        if (!g->first_token) {
            g->first_token = true;
            cel__srv_hist_observe(&s->metrics.ttft, (double)(e->t - g->t_start) * 1e-9);
        } else if (sm->t_last) {
            cel__srv_hist_observe(&s->metrics.tpot, (double)(e->t - sm->t_last) * 1e-9);
        }
        sm->t_last = e->t;
        sm->n_gen = e->n_gen;
    }
    bool alive = g->req && !cel_http_req_aborted(g->req);
    json_t *lp = NULL;
    if (alive && g->want_logprobs && e->token >= 0) {
        if (g->stream) {
            lp = new_logprobs(g->chat);
            add_logprob(g, sm, e, lp, e->text, e->text_len);
        } else {
            if (!sm->lp) sm->lp = new_logprobs(g->chat);
            add_logprob(g, sm, e, sm->lp, e->text, e->text_len);
        }
    }
    if (alive && !g->stream && e->text_len) cel_buf_append(&sm->text, e->text, e->text_len);
    const char *finish = e->finish != CEL_FINISH_NONE ? finish_name(e->finish) : NULL;
    if (alive && g->stream && (e->text_len || lp || finish))
        send_choice_chunk(g, e->sample, e->text, e->text_len, lp, e->finish == CEL_FINISH_ERROR ? NULL : finish);
    else
        json_decref(lp);
    if (e->finish != CEL_FINISH_NONE && !sm->done) {
        sm->done = true;
        sm->finish = e->finish;
        if (e->error) sm->error = e->error, e->error = NULL;
        g->n_done++;
    }
    free(e->error);
    free(e);
    if (g->n_done == g->n) gen_finish(g);
}

/* Engine thread: copy and post; never block, never touch g's fields. */
static void engine_cb(void *ud, const cel_token_event *ev)
{
    cel__gen *g = ud;
    size_t tl = ev->text ? ev->text_len : 0;
    gen_event *e = malloc(sizeof *e + tl + 1);
    if (!e) return;
    e->node.fn = on_event;
    e->node.ud = e;
    e->g = g;
    e->sample = ev->sample;
    e->token = ev->token;
    e->logprob = ev->logprob;
    e->n_top = ev->top && ev->n_top > 0 ? (ev->n_top > MAX_TOP_LOGPROBS ? MAX_TOP_LOGPROBS : ev->n_top) : 0;
    if (e->n_top) memcpy(e->top, ev->top, (size_t)e->n_top * sizeof *e->top);
    e->finish = ev->finish;
    e->n_prompt = ev->n_prompt_tokens;
    e->n_cached = ev->n_cached_tokens;
    e->n_gen = ev->n_gen_tokens;
    e->t = cel_now_ns();
    e->error = ev->error ? strdup(ev->error) : NULL;
    e->text_len = tl;
    if (tl) memcpy(e->text, ev->text, tl);
    e->text[tl] = '\0';
    if (cel__srv_post_node(g->s, &e->node) != CEL_OK) {
        free(e->error);
        free(e);
    }
}

/* ------------------------------------------------------------ preparing */

static cel_status bad(cel__gen *g, const char *code)
{
    g->err_status = 400;
    g->err_code = code;
    return g->err.code;
}

/* Reads the sampling parameters shared by both endpoints. */
static cel_status parse_sampling(cel__gen *g, json_t *o)
{
    cel_server *s = g->s;
    cel_error *err = &g->err;
    cel_sampling *sp = &g->sp;
    cel_sampling_default(sp);
    sp->temperature = 1.0f;
    sp->max_tokens = g->chat ? 0 : 16;
    double x;
    int64_t i;
    bool b;
#define NUM(key, lo, hi, field)                                                                                    \
    x = (double)sp->field;                                                                                         \
    if (cel__srv_json_get_num(o, key, lo, hi, &x, err) != CEL_OK) return bad(g, "invalid_parameter");                 \
    sp->field = (float)x
    NUM("temperature", 0, 100, temperature);
    NUM("top_p", 0, 1, top_p);
    NUM("min_p", 0, 1, min_p);
    NUM("presence_penalty", -2, 2, presence_penalty);
    NUM("frequency_penalty", -2, 2, frequency_penalty);
    NUM("repetition_penalty", 0.01, 100, repetition_penalty);
#undef NUM
    if (sp->top_p <= 0) {
        cel_error_set(err, CEL_ERR_INVALID, "'top_p' must be greater than 0");
        return bad(g, "invalid_parameter");
    }
    i = 0;
    if (cel__srv_json_get_int(o, "top_k", -1, 1 << 20, &i, err) != CEL_OK) return bad(g, "invalid_parameter");
    sp->top_k = i < 0 ? 0 : (int32_t)i;
    i = (int64_t)(g->default_seed & INT64_MAX);
    if (cel__srv_json_get_int(o, "seed", INT64_MIN, INT64_MAX, &i, err) != CEL_OK) return bad(g, "invalid_parameter");
    sp->seed = (uint64_t)i;
    i = sp->max_tokens;
    const char *mt_key = g->chat && json_object_get(o, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (cel__srv_json_get_int(o, mt_key, 1, s->n_ctx, &i, err) != CEL_OK) return bad(g, "invalid_parameter");
    sp->max_tokens = (int32_t)i;
    i = 1;
    if (cel__srv_json_get_int(o, "n", 1, s->cfg.max_n, &i, err) != CEL_OK) return bad(g, "invalid_parameter");
    g->n = (uint32_t)i;
    b = false;
    if (cel__srv_json_get_bool(o, "ignore_eos", &b, err) != CEL_OK) return bad(g, "invalid_parameter");
    sp->ignore_eos = b;
    if (cel__srv_json_get_bool(o, "stream", &g->stream, err) != CEL_OK) return bad(g, "invalid_parameter");
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            cel_error_set(err, CEL_ERR_INVALID, "'stream_options' must be an object");
            return bad(g, "invalid_parameter");
        }
        if (cel__srv_json_get_bool(so, "include_usage", &g->include_usage, err) != CEL_OK)
            return bad(g, "invalid_parameter");
    }
    /* logprobs: completions take a count, chat takes a flag plus top_logprobs */
    json_t *lpv = json_object_get(o, "logprobs");
    if (g->chat) {
        b = false;
        if (cel__srv_json_get_bool(o, "logprobs", &b, err) != CEL_OK) return bad(g, "invalid_parameter");
        i = 0;
        if (cel__srv_json_get_int(o, "top_logprobs", 0, MAX_TOP_LOGPROBS, &i, err) != CEL_OK)
            return bad(g, "invalid_parameter");
        if (i > 0 && !b) {
            cel_error_set(err, CEL_ERR_INVALID, "'top_logprobs' needs 'logprobs': true");
            return bad(g, "invalid_parameter");
        }
        g->want_logprobs = b;
        g->n_top = (int)i;
    } else if (lpv && !json_is_null(lpv)) {
        i = 0;
        if (cel__srv_json_get_int(o, "logprobs", 0, MAX_TOP_LOGPROBS, &i, err) != CEL_OK) return bad(g, "invalid_parameter");
        g->want_logprobs = true;
        g->n_top = (int)i;
    }
    sp->n_logprobs = g->want_logprobs ? g->n_top : -1;
    /* stop strings */
    json_t *st = json_object_get(o, "stop");
    if (st && !json_is_null(st)) {
        size_t n = json_is_array(st) ? json_array_size(st) : 1;
        if (!json_is_string(st) && !json_is_array(st)) {
            cel_error_set(err, CEL_ERR_INVALID, "'stop' must be a string or an array of strings");
            return bad(g, "invalid_parameter");
        }
        if (n > MAX_STOP) {
            cel_error_set(err, CEL_ERR_INVALID, "'stop' has %zu strings; at most %d are allowed", n, MAX_STOP);
            return bad(g, "invalid_parameter");
        }
        for (size_t k = 0; k < n; k++) {
            json_t *v = json_is_array(st) ? json_array_get(st, k) : st;
            if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > MAX_STOP_LEN) {
                cel_error_set(err, CEL_ERR_INVALID, "'stop'[%zu] must be a non-empty string of at most %d bytes", k,
                              MAX_STOP_LEN);
                return bad(g, "invalid_parameter");
            }
            g->stops[g->n_stops] = strdup(json_string_value(v));
            if (!g->stops[g->n_stops]) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
            g->n_stops++;
        }
        sp->stop = (const char *const *)g->stops;
        sp->n_stop = g->n_stops;
    }
    json_t *sti = json_object_get(o, "stop_token_ids");
    if (sti && !json_is_null(sti)) {
        if (!json_is_array(sti) || json_array_size(sti) > 64) {
            cel_error_set(err, CEL_ERR_INVALID, "'stop_token_ids' must be an array of at most 64 token ids");
            return bad(g, "invalid_parameter");
        }
        g->n_stop_ids = json_array_size(sti);
        g->stop_ids = calloc(g->n_stop_ids ? g->n_stop_ids : 1, sizeof *g->stop_ids);
        if (!g->stop_ids) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        int32_t nv = cel_tokenizer_n_vocab(s->model->tok);
        for (size_t k = 0; k < g->n_stop_ids; k++) {
            json_t *v = json_array_get(sti, k);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= nv) {
                cel_error_set(err, CEL_ERR_INVALID, "'stop_token_ids'[%zu] is not a token id (0..%d)", k, nv - 1);
                return bad(g, "invalid_parameter");
            }
            g->stop_ids[k] = (int32_t)json_integer_value(v);
        }
        sp->stop_tokens = g->stop_ids;
        sp->n_stop_tokens = g->n_stop_ids;
    }
    json_t *echo = json_object_get(o, "echo");
    if (echo && json_is_true(echo)) {
        cel_error_set(err, CEL_ERR_INVALID, "'echo' is not supported");
        return bad(g, "unsupported_parameter");
    }
    json_t *bo = json_object_get(o, "best_of");
    if (bo && json_is_integer(bo) && json_integer_value(bo) > 1) {
        cel_error_set(err, CEL_ERR_INVALID, "'best_of' is not supported; use 'n'");
        return bad(g, "unsupported_parameter");
    }
    return CEL_OK;
}

static cel_status ids_from_json(cel__gen *g, json_t *arr)
{
    size_t n = json_array_size(arr);
    int32_t nv = cel_tokenizer_n_vocab(g->s->model->tok);
    g->prompt = malloc((n ? n : 1) * sizeof *g->prompt);
    if (!g->prompt) return cel_error_set(&g->err, CEL_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < n; k++) {
        json_t *v = json_array_get(arr, k);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= nv) {
            cel_error_set(&g->err, CEL_ERR_INVALID, "prompt token %zu is not a token id (0..%d)", k, nv - 1);
            return bad(g, "invalid_prompt");
        }
        g->prompt[k] = (int32_t)json_integer_value(v);
    }
    g->n_prompt = n;
    return CEL_OK;
}

static cel_status tokenize_text(cel__gen *g, const char *text, size_t len, int flags)
{
    cel_status st = cel_tokenize(g->s->model->tok, text, len, flags, &g->prompt, &g->n_prompt, &g->err);
    if (st != CEL_OK) {
        g->err_status = 400;
        g->err_code = "invalid_prompt";
    }
    return st;
}

/* Chat messages -> rendered text (appended to out). */
static cel_status render_messages(cel_server *s, json_t *msgs, bool add_gen, cel_buf *out, cel_error *err)
{
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return cel_error_set(err, CEL_ERR_INVALID, "'messages' must be a non-empty array of {\"role\", \"content\"}");
    size_t n = json_array_size(msgs);
    cel_chat_msg *m = calloc(n, sizeof *m);
    cel_buf *parts = calloc(n, sizeof *parts);
    cel_status st = CEL_OK;
    if (!m || !parts) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == CEL_OK && i < n; i++) {
        json_t *o = json_array_get(msgs, i);
        const char *role = NULL;
        if (!json_is_object(o) || cel__srv_json_get_str(o, "role", &role, err) != CEL_OK || !role) {
            st = cel_error_set(err, CEL_ERR_INVALID, "messages[%zu] needs a string 'role'", i);
            break;
        }
        if (strcmp(role, "developer") == 0) role = "system";
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
            st = cel_error_set(err, CEL_ERR_INVALID, "messages[%zu]: role '%s' is not supported (system, developer, "
                                                     "user, assistant)", i, role);
            break;
        }
        m[i].role = role;
        json_t *c = json_object_get(o, "content");
        if (json_is_string(c)) {
            m[i].content = json_string_value(c);
        } else if (json_is_array(c)) { /* [{"type": "text", "text": ...}, ...] */
            for (size_t k = 0; k < json_array_size(c); k++) {
                json_t *p = json_array_get(c, k);
                json_t *ty = json_object_get(p, "type"), *tx = json_object_get(p, "text");
                if (!json_is_string(ty) || strcmp(json_string_value(ty), "text") != 0 || !json_is_string(tx)) {
                    st = cel_error_set(err, CEL_ERR_INVALID, "messages[%zu].content[%zu]: only {\"type\": \"text\", "
                                                             "\"text\": ...} parts are supported", i, k);
                    break;
                }
                cel_buf_append(&parts[i], json_string_value(tx), json_string_length(tx));
            }
            m[i].content = parts[i].data ? parts[i].data : "";
        } else if (!c || json_is_null(c)) {
            m[i].content = "";
        } else {
            st = cel_error_set(err, CEL_ERR_INVALID, "messages[%zu]: 'content' must be a string or an array of text "
                                                     "parts", i);
        }
    }
    if (st == CEL_OK) st = cel_chat_render(s->chat_kind, m, n, add_gen, s->model->tok, out, err);
    if (parts)
        for (size_t i = 0; i < n; i++) cel_buf_free(&parts[i]);
    free(parts);
    free(m);
    return st;
}

static void prep_work(void *ud)
{
    cel__gen *g = ud;
    cel_server *s = g->s;
    cel_error *err = &g->err;
    size_t len;
    const char *body = cel_http_req_body(g->req, &len);
    json_t *o = NULL;
    g->err_status = 0;
    if (cel__srv_json_parse(body, len, &o, err) != CEL_OK) {
        bad(g, "invalid_json");
        return;
    }
    if (!json_is_object(o)) {
        cel_error_set(err, CEL_ERR_INVALID, "the body must be a JSON object");
        bad(g, "invalid_request");
        json_decref(o);
        return;
    }
    if (parse_sampling(g, o) != CEL_OK) {
        if (!g->err_status) g->err_status = 500;
        json_decref(o);
        return;
    }
    if (g->chat) {
        cel_buf text;
        cel_buf_init(&text);
        if (render_messages(s, json_object_get(o, "messages"), true, &text, err) != CEL_OK)
            bad(g, "invalid_messages");
        else
            tokenize_text(g, text.data ? text.data : "", text.len, CEL_TOKENIZE_PARSE_SPECIAL);
        cel_buf_free(&text);
    } else {
        json_t *p = json_object_get(o, "prompt");
        bool add_special = true;
        if (cel__srv_json_get_bool(o, "add_special_tokens", &add_special, err) != CEL_OK) {
            bad(g, "invalid_parameter");
            json_decref(o);
            return;
        }
        int flags = CEL_TOKENIZE_PARSE_SPECIAL | (add_special ? CEL_TOKENIZE_ADD_SPECIAL : 0);
        /* one prompt: "text", ["text"], [ids] or [[ids]] */
        if (json_is_array(p) && json_array_size(p) == 1 &&
            (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
            p = json_array_get(p, 0);
        if (json_is_string(p)) {
            tokenize_text(g, json_string_value(p), json_string_length(p), flags);
        } else if (json_is_array(p) && (json_array_size(p) == 0 || json_is_integer(json_array_get(p, 0)))) {
            ids_from_json(g, p);
        } else if (json_is_array(p)) {
            cel_error_set(err, CEL_ERR_INVALID, "'prompt' holds %zu prompts; send one prompt per request (use 'n' "
                                                "for several samples)", json_array_size(p));
            bad(g, "invalid_prompt");
        } else {
            cel_error_set(err, CEL_ERR_INVALID, "'prompt' must be a string or an array of token ids");
            bad(g, "invalid_prompt");
        }
    }
    json_decref(o);
    if (g->err_status) return;
    if (g->n_prompt == 0) {
        cel_error_set(err, CEL_ERR_INVALID, "the prompt is empty");
        bad(g, "invalid_prompt");
        return;
    }
    if ((int64_t)g->n_prompt + (g->sp.max_tokens > 0 ? g->sp.max_tokens : 1) > s->n_ctx) {
        cel_error_set(err, CEL_ERR_INVALID, "the prompt is %zu tokens and max_tokens is %d, but the context holds %d "
                                            "tokens", g->n_prompt, g->sp.max_tokens, s->n_ctx);
        bad(g, "context_length_exceeded");
        return;
    }
}

static void prep_done(cel_http_req *r, void *ud)
{
    cel__gen *g = ud;
    cel_server *s = g->s;
    if (cel_http_req_aborted(r)) {
        cel_http_respond(r, 499, NULL, NULL, 0, NULL);
        gen_free(g);
        return;
    }
    if (g->err_status) {
        cel_http_respond_error(r, g->err_status, NULL, g->err_code, "%s", g->err.msg);
        gen_free(g);
        return;
    }
    if (!s->engine || s->stopping) {
        cel_http_respond_error(r, 503, "service_unavailable", "shutting_down", "the server is shutting down");
        gen_free(g);
        return;
    }
    g->samples = calloc(g->n, sizeof *g->samples);
    if (!g->samples) {
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory");
        gen_free(g);
        return;
    }
    cel_request rq;
    memset(&rq, 0, sizeof rq);
    rq.prompt = g->prompt;
    rq.n_prompt = g->n_prompt;
    rq.n = g->n;
    rq.sampling = g->sp;
    rq.cb = engine_cb;
    rq.ud = g;
    g->n_prompt_tokens = (int32_t)g->n_prompt;
    cel_error err;
    cel_error_clear(&err);
    cel_status st = cel_engine_submit(s->engine, &rq, &g->engine_id, &err);
    if (st != CEL_OK) {
        if (st == CEL_ERR_BUSY) {
            s->metrics.busy_rejections++;
            cel_http_respond_error(r, 429, "rate_limit_error", "engine_queue_full",
                                   "the engine's queue is full; retry after a moment");
        } else {
            cel_http_respond_error(r, st == CEL_ERR_INVALID ? 400 : 500, NULL, NULL, "cannot start generation: %s",
                                   err.msg);
        }
        gen_free(g);
        return;
    }
    g->submitted = true;
    g->next = s->gens;
    if (s->gens) s->gens->prev = g;
    s->gens = g;
    g->in_list = true;
    s->n_gens++;
    s->metrics.gen_requests++;
    s->metrics.prompt_tokens += g->n_prompt;
    cel_http_req_on_abort(r, gen_on_abort, g);
    if (g->stream) cel_http_stream_begin(r, 200, "text/event-stream", "Cache-Control: no-cache\r\n");
    /* free the prompt now: the engine copied it */
    free(g->prompt);
    g->prompt = NULL;
}

static void start_gen(cel_http_req *r, bool chat)
{
    if (!need_model(r)) return;
    cel_server *s = cel_http_req_server(r);
    cel__gen *g = calloc(1, sizeof *g);
    if (!g) {
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory");
        return;
    }
    g->s = s;
    g->req = r;
    g->chat = chat;
    g->n = 1;
    g->t_start = cel_now_ns();
    g->created = (long long)time(NULL);
    make_id(s, chat ? "chatcmpl-" : "cmpl-", g->id, sizeof g->id);
    g->default_seed = cel_mix64(++s->id_counter ^ cel_now_ns());
    if (cel_http_defer(r, prep_work, prep_done, g) != CEL_OK) free(g);
}

void cel__srv_route_completions(cel_http_req *r, void *ud)
{
    (void)ud;
    start_gen(r, false);
}

void cel__srv_route_chat(cel_http_req *r, void *ud)
{
    (void)ud;
    start_gen(r, true);
}

/* ---------------------------------------------------------------- models */

void cel__srv_route_models(cel_http_req *r, void *ud)
{
    (void)ud;
    cel_server *s = cel_http_req_server(r);
    json_t *o = json_object(), *data = json_array();
    json_object_set_new(o, "object", json_string("list"));
    if (s->model_state == CEL__MODEL_READY) {
        json_t *m = json_object();
        json_object_set_new(m, "id", cel__srv_json_str(s->model_name, strlen(s->model_name)));
        json_object_set_new(m, "object", json_string("model"));
        json_object_set_new(m, "created", json_integer(0));
        json_object_set_new(m, "owned_by", json_string("celine"));
        json_object_set_new(m, "max_model_len", json_integer(s->n_ctx));
        json_object_set_new(m, "architecture", json_string(cel_arch_name(s->model->hp.arch)));
        json_array_append_new(data, m);
    }
    json_object_set_new(o, "data", data);
    cel_buf b;
    cel_buf_init(&b);
    cel__srv_json_dump(o, &b);
    cel_http_respond(r, 200, "application/json", b.data, b.len, NULL);
    cel_buf_free(&b);
    json_decref(o);
}

/* ------------------------------------------------------ tokenize / detokenize */

typedef struct tok_job {
    cel_server *s;
    cel_http_req *r;
    bool detok;
    int status;
    const char *code;
    cel_error err;
    cel_buf out;
} tok_job;

static void tok_work(void *ud)
{
    tok_job *j = ud;
    cel_server *s = j->s;
    const cel_tokenizer *t = s->model->tok;
    size_t len;
    const char *body = cel_http_req_body(j->r, &len);
    json_t *o = NULL;
    j->status = 400;
    j->code = "invalid_request";
    if (cel__srv_json_parse(body, len, &o, &j->err) != CEL_OK) return;
    json_t *ans = json_object();
    if (!json_is_object(o)) {
        cel_error_set(&j->err, CEL_ERR_INVALID, "the body must be a JSON object");
    } else if (j->detok) {
        json_t *ids = json_object_get(o, "tokens");
        bool skip = false;
        if (!json_is_array(ids)) {
            cel_error_set(&j->err, CEL_ERR_INVALID, "'tokens' must be an array of token ids");
        } else if (cel__srv_json_get_bool(o, "skip_special_tokens", &skip, &j->err) == CEL_OK) {
            size_t n = json_array_size(ids);
            int32_t *v = malloc((n ? n : 1) * sizeof *v);
            int32_t nv = cel_tokenizer_n_vocab(t);
            bool ok = v != NULL;
            for (size_t k = 0; ok && k < n; k++) {
                json_t *x = json_array_get(ids, k);
                if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= nv) {
                    cel_error_set(&j->err, CEL_ERR_INVALID, "tokens[%zu] is not a token id (0..%d)", k, nv - 1);
                    ok = false;
                } else {
                    v[k] = (int32_t)json_integer_value(x);
                }
            }
            cel_buf text;
            cel_buf_init(&text);
            if (ok && cel_detokenize(t, v, n, skip, &text, &j->err) == CEL_OK) {
                json_object_set_new(ans, "content", cel__srv_json_str(text.data, text.len));
                json_object_set_new(ans, "prompt", cel__srv_json_str(text.data, text.len));
                j->status = 200;
            }
            cel_buf_free(&text);
            free(v);
        }
    } else {
        const char *text = NULL;
        bool add_special = true, pieces = false;
        cel_buf rendered;
        cel_buf_init(&rendered);
        json_t *msgs = json_object_get(o, "messages");
        json_t *tv = json_object_get(o, "content");
        if (!tv) tv = json_object_get(o, "prompt");
        cel_status st = cel__srv_json_get_bool(o, "add_special", &add_special, &j->err);
        if (st == CEL_OK) st = cel__srv_json_get_bool(o, "add_special_tokens", &add_special, &j->err);
        if (st == CEL_OK) st = cel__srv_json_get_bool(o, "with_pieces", &pieces, &j->err);
        size_t tlen = 0;
        int flags = CEL_TOKENIZE_PARSE_SPECIAL;
        if (st == CEL_OK && msgs) {
            bool add_gen = true;
            st = cel__srv_json_get_bool(o, "add_generation_prompt", &add_gen, &j->err);
            if (st == CEL_OK) st = render_messages(s, msgs, add_gen, &rendered, &j->err);
            text = rendered.data ? rendered.data : "";
            tlen = rendered.len;
        } else if (st == CEL_OK) {
            if (!json_is_string(tv)) {
                st = cel_error_set(&j->err, CEL_ERR_INVALID, "send 'content' (or 'prompt') as a string, or 'messages'");
            } else {
                text = json_string_value(tv);
                tlen = json_string_length(tv);
                if (add_special) flags |= CEL_TOKENIZE_ADD_SPECIAL;
            }
        }
        int32_t *ids = NULL;
        size_t n = 0;
        if (st == CEL_OK) st = cel_tokenize(t, text, tlen, flags, &ids, &n, &j->err);
        if (st == CEL_OK) {
            json_t *arr = json_array();
            for (size_t k = 0; k < n; k++) {
                if (pieces) {
                    json_t *p = json_object();
                    json_object_set_new(p, "id", json_integer(ids[k]));
                    json_object_set_new(p, "piece", piece_json(t, ids[k], NULL));
                    json_array_append_new(arr, p);
                } else {
                    json_array_append_new(arr, json_integer(ids[k]));
                }
            }
            json_object_set_new(ans, "tokens", arr);
            json_object_set_new(ans, "count", json_integer((json_int_t)n));
            json_object_set_new(ans, "max_model_len", json_integer(s->n_ctx));
            j->status = 200;
        }
        free(ids);
        cel_buf_free(&rendered);
    }
    if (j->status == 200 && cel__srv_json_dump(ans, &j->out) != CEL_OK) {
        j->status = 500;
        cel_error_set(&j->err, CEL_ERR_NOMEM, "out of memory writing the answer");
    }
    json_decref(ans);
    json_decref(o);
}

static void tok_done(cel_http_req *r, void *ud)
{
    tok_job *j = ud;
    if (j->status == 200)
        cel_http_respond(r, 200, "application/json", j->out.data, j->out.len, NULL);
    else
        cel_http_respond_error(r, j->status, NULL, j->code, "%s", j->err.msg);
    cel_buf_free(&j->out);
    free(j);
}

static void start_tok(cel_http_req *r, bool detok)
{
    if (!need_model(r)) return;
    tok_job *j = calloc(1, sizeof *j);
    if (!j) {
        cel_http_respond_error(r, 500, NULL, NULL, "out of memory");
        return;
    }
    j->s = cel_http_req_server(r);
    j->r = r;
    j->detok = detok;
    if (cel_http_defer(r, tok_work, tok_done, j) != CEL_OK) free(j);
}

void cel__srv_route_tokenize(cel_http_req *r, void *ud)
{
    (void)ud;
    start_tok(r, false);
}

void cel__srv_route_detokenize(cel_http_req *r, void *ud)
{
    (void)ud;
    start_tok(r, true);
}
