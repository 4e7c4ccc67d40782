/*
 * cmd_mind.c - `celine mind`, and the command-line driver it shares with
 * `celine rephrase` and `celine crossthink` (cmd_rephrase.c and
 * cmd_crossthink.c define only their command entries and call
 * cel__gen_cli_run): options, input (--text, stdin, --input), the backend
 * (--model or --remote), templates, output, rejects and the stats line.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "cli.h"

enum { GEN_MIND = 0, GEN_REPHRASE = 1, GEN_CROSSTHINK = 2 };
int cel__gen_cli_run(int kind, const cel_cli_cmd *cmd, int argc, char **argv);

typedef struct gen_opts {
    /* input / output */
    const char *text, *input, *output, *format, *rejects;
    const char *id_field, *text_field, *quality_field;
    /* backend */
    const char *model, *tokenizer, *chat_template, *api_key, *remote_model;
    cel_cli_list remote;
    bool completions;
    int64_t threads, ctx, concurrency, retries;
    double timeout, backoff_base, backoff_max;
    /* generation */
    cel_cli_list templates;
    int64_t seed, top_k, max_tokens, window;
    double temperature, top_p;
    bool quiet, list_templates;
    /* mind */
    const char *styles, *with_chunk;
    bool random_style;
    int64_t chunk_tokens, min_chunk_tokens, min_tokens, min_turns;
    double max_repetition, max_echo;
    /* rephrase */
    const char *prompts;
    bool no_route;
    int64_t high_threshold, min_doc_tokens, min_segment_tokens;
    double qa_tokens_per_pair;
    /* crossthink */
    const char *formats;
    int64_t questions, max_words, difficulty_k, answer_max_tokens;
    bool mcq_to_open, no_dedup;
    double answer_temperature;
} gen_opts;

#define UNSET_I INT64_MIN

/* Splits a comma list into names (pointers into a malloc'ed copy in *store). */
static size_t split_list(const char *s, const char **names, size_t max, char **store)
{
    *store = strdup(s ? s : "");
    size_t n = 0;
    if (!*store) return 0;
    for (char *tok = strtok(*store, ","); tok && n < max; tok = strtok(NULL, ",")) {
        while (*tok == ' ') tok++;
        char *e = tok + strlen(tok);
        while (e > tok && e[-1] == ' ') *--e = 0;
        if (*tok) names[n++] = tok;
    }
    return n;
}

/* The built-in templates: $CELINE_TEMPLATES, else the source tree's
 * templates/ (a build that has not been installed), else the installed copy
 * when the build defines CELINE_TEMPLATES_DIR. */
static const char *builtin_templates_dir(void)
{
    const char *env = getenv("CELINE_TEMPLATES");
    if (env && *env) return env;
#ifdef CELINE_SOURCE_DIR
    if (cel_path_is_dir(CELINE_SOURCE_DIR "/templates")) return CELINE_SOURCE_DIR "/templates";
#endif
#ifdef CELINE_TEMPLATES_DIR
    if (cel_path_is_dir(CELINE_TEMPLATES_DIR)) return CELINE_TEMPLATES_DIR;
#endif
    return NULL;
}

static const char *const kind_names[3] = {"mind", "rephrase", "crossthink"};

/* Sets a int32 config field from an option when the option was given. */
static bool set_i32(const char *cmd, const char *opt, int64_t v, int64_t lo, int64_t hi, int32_t *dst)
{
    if (v == UNSET_I) return true;
    if (v < lo || v > hi) {
        cel_cli_fail(cmd, "--%s must be in %lld..%lld", opt, (long long)lo, (long long)hi);
        return false;
    }
    *dst = (int32_t)v;
    return true;
}

int cel__gen_cli_run(int kind, const cel_cli_cmd *cmd, int argc, char **argv)
{
    const char *name = kind_names[kind];
    gen_opts o;
    memset(&o, 0, sizeof o);
    o.threads = o.ctx = o.concurrency = o.retries = UNSET_I;
    o.seed = o.top_k = o.max_tokens = o.window = UNSET_I;
    o.chunk_tokens = o.min_chunk_tokens = o.min_tokens = o.min_turns = UNSET_I;
    o.high_threshold = o.min_doc_tokens = o.min_segment_tokens = UNSET_I;
    o.questions = o.max_words = o.difficulty_k = o.answer_max_tokens = UNSET_I;
    o.timeout = o.backoff_base = o.backoff_max = o.temperature = o.top_p = o.max_repetition = o.max_echo = o.qa_tokens_per_pair = NAN;
    o.answer_temperature = NAN;

    cel_cli_opt opts[64];
    size_t n = 0;
#define OPT(nm, k, dst, mv, hp) opts[n++] = (cel_cli_opt){nm, k, dst, mv, hp}
    OPT("text", CEL_OPT_STR, &o.text, "TEXT", "one document given on the command line (else stdin or --input)");
    OPT("input", CEL_OPT_STR, &o.input, "PATH", "documents: JSON Lines (.jsonl/.json) or plain text (one document)");
    OPT("format", CEL_OPT_STR, &o.format, "jsonl|text", "input format (default: by extension; stdin: text)");
    OPT("id-field", CEL_OPT_STR, &o.id_field, "NAME", "JSONL id field (default id)");
    OPT("text-field", CEL_OPT_STR, &o.text_field, "NAME", "JSONL text field (default text)");
    if (kind == GEN_REPHRASE)
        OPT("quality-field", CEL_OPT_STR, &o.quality_field, "NAME", "JSONL quality field (default quality)");
    OPT("output", CEL_OPT_STR, &o.output, "PATH", "records as JSON Lines (default stdout)");
    OPT("rejects", CEL_OPT_STR, &o.rejects, "PATH", "write every dropped unit/item with its reason (JSON Lines)");
    OPT("model", CEL_OPT_STR, &o.model, "PATH", "generate with the local engine (.gguf or Hugging Face folder)");
    OPT("threads", CEL_OPT_INT, &o.threads, "N", "engine CPU threads (default all cores)");
    OPT("ctx", CEL_OPT_INT, &o.ctx, "N", "engine context per sequence (default min(model, 8192))");
    OPT("chat-template", CEL_OPT_STR, &o.chat_template, "NAME", "chatml|llama3|llama2|mistral|raw (default: detect)");
    OPT("remote", CEL_OPT_LIST, &o.remote, "URL", "OpenAI-compatible server (repeat for round-robin)");
    OPT("api-key", CEL_OPT_STR, &o.api_key, "KEY", "bearer token (default $CELINE_API_KEY or $OPENAI_API_KEY)");
    OPT("remote-model", CEL_OPT_STR, &o.remote_model, "NAME", "the request's model field (default \"default\")");
    OPT("completions", CEL_OPT_FLAG, &o.completions, NULL, "use /v1/completions (chat rendered raw)");
    OPT("concurrency", CEL_OPT_INT, &o.concurrency, "N", "remote requests in flight (default 16)");
    OPT("retries", CEL_OPT_INT, &o.retries, "N", "remote retries on 429/5xx/timeouts (default 5)");
    OPT("timeout", CEL_OPT_DOUBLE, &o.timeout, "S", "remote per-attempt timeout in seconds (default 600)");
    OPT("backoff-base", CEL_OPT_DOUBLE, &o.backoff_base, "S", "first retry waits up to S seconds, doubling (default 0.5)");
    OPT("backoff-max", CEL_OPT_DOUBLE, &o.backoff_max, "S", "longest wait between retries (default 30)");
    OPT("tokenizer", CEL_OPT_STR, &o.tokenizer, "PATH", "tokenizer.json for exact token counts with --remote");
    OPT("templates", CEL_OPT_LIST, &o.templates, "DIR", "add (or override) templates from DIR/*.tmpl");
    OPT("list-templates", CEL_OPT_FLAG, &o.list_templates, NULL, "list the usable templates and exit");
    OPT("seed", CEL_OPT_INT, &o.seed, "N", "job seed (default 0); unit seeds = hash(seed, unit key)");
    static const char *const temp_help[3] = {"sampling temperature (default 1.0)", "sampling temperature (default 0.5)",
                                             "sampling temperature (default 0.7)"};
    OPT("temperature", CEL_OPT_DOUBLE, &o.temperature, "T", temp_help[kind]);
    OPT("top-p", CEL_OPT_DOUBLE, &o.top_p, "P", "nucleus sampling (default 0.9)");
    OPT("top-k", CEL_OPT_INT, &o.top_k, "K", "top-k sampling (default 0: off)");
    if (kind != GEN_REPHRASE) /* rephrase prompts carry their own output budgets */
        OPT("max-tokens", CEL_OPT_INT, &o.max_tokens, "N", "generation limit unless the template sets one (default 1024)");
    OPT("window", CEL_OPT_INT, &o.window, "N", "documents in flight (default 64)");
    OPT("quiet", CEL_OPT_FLAG, &o.quiet, NULL, "no stats line and no retry warnings on stderr");
    if (kind == GEN_MIND) {
        OPT("styles", CEL_OPT_STR, &o.styles, "all|A,B", "conversation styles (default all)");
        OPT("random-style", CEL_OPT_FLAG, &o.random_style, NULL, "one seeded-random style per chunk (from --styles)");
        OPT("chunk-tokens", CEL_OPT_INT, &o.chunk_tokens, "N", "chunk budget in model tokens (default 500)");
        OPT("min-chunk-tokens", CEL_OPT_INT, &o.min_chunk_tokens, "N", "drop smaller chunks (default 0)");
        OPT("min-tokens", CEL_OPT_INT, &o.min_tokens, "N", "drop conversations under N tokens (default 50)");
        OPT("min-turns", CEL_OPT_INT, &o.min_turns, "N", "turns each speaker needs (default 2)");
        OPT("max-repetition", CEL_OPT_DOUBLE, &o.max_repetition, "F", "drop above this repeated 5-gram share (0.3)");
        OPT("max-echo", CEL_OPT_DOUBLE, &o.max_echo, "F", "drop above this 8-gram share copied from the instructions (0.2)");
        OPT("with-chunk", CEL_OPT_STR, &o.with_chunk, "none|field|concat", "emit the raw chunk too (field) or before the dialogue");
    } else if (kind == GEN_REPHRASE) {
        OPT("prompts", CEL_OPT_STR, &o.prompts, "A,B", "rephrase prompts to run (default all)");
        OPT("no-route", CEL_OPT_FLAG, &o.no_route, NULL, "ignore the quality field (every prompt for every document)");
        OPT("high-threshold", CEL_OPT_INT, &o.high_threshold, "N", "quality buckets >= N are high (default 12)");
        OPT("min-doc-tokens", CEL_OPT_INT, &o.min_doc_tokens, "N", "drop documents under N tokens (default 30)");
        OPT("min-segment-tokens", CEL_OPT_INT, &o.min_segment_tokens, "N", "drop segments under N tokens (default 10)");
        OPT("qa-tokens-per-pair", CEL_OPT_DOUBLE, &o.qa_tokens_per_pair, "N", "diverse QA: keep 1 pair per N source tokens (150)");
    } else {
        OPT("formats", CEL_OPT_STR, &o.formats, "mcq,open", "item formats to synthesize (default both)");
        OPT("questions", CEL_OPT_INT, &o.questions, "N", "items asked per chunk and format (default 4)");
        OPT("chunk-tokens", CEL_OPT_INT, &o.chunk_tokens, "N", "chunk budget in model tokens (default 1000)");
        OPT("max-words", CEL_OPT_INT, &o.max_words, "N", "open answers longer than N words are dropped (default 10)");
        OPT("mcq-to-open", CEL_OPT_FLAG, &o.mcq_to_open, NULL, "turn MCQ items into open-ended ones");
        OPT("no-dedup", CEL_OPT_FLAG, &o.no_dedup, NULL, "keep repeated questions");
        OPT("difficulty-k", CEL_OPT_INT, &o.difficulty_k, "K", "sample K answers per item, drop items solved K/K");
        OPT("answer-temperature", CEL_OPT_DOUBLE, &o.answer_temperature, "T", "difficulty filter sampling (default 1.0)");
        OPT("answer-max-tokens", CEL_OPT_INT, &o.answer_max_tokens, "N", "difficulty filter answer limit (default 1024)");
    }
#undef OPT
    int rc = cel_cli_parse(cmd, argc, argv, opts, n, NULL, 0, NULL);
    if (rc) return cel_cli_exit(rc);

    cel_error err;
    cel_error_clear(&err);
    int exit_code = 1;
    cel_template_set *set = NULL;
    cel_gen_backend *be = NULL;
    cel_gen_pipeline *p = NULL;
    cel_doc_reader *reader = NULL;
    cel_verifier *verifier = NULL;
    FILE *out = stdout, *rej = NULL;
    char *list_store = NULL;
    const char *names[64];
    size_t n_names = 0;
    cel_status st;

    /* templates: built-ins, then each --templates DIR over them */
    if (cel_template_set_create(&set, &err)) goto fail;
    const char *bdir = builtin_templates_dir();
    if (bdir && cel_template_set_load_dir(set, bdir, &err)) goto fail;
    for (size_t i = 0; i < o.templates.n; i++)
        if (cel_template_set_load_dir(set, o.templates.items[i], &err)) goto fail;
    if (o.list_templates) {
        for (size_t i = 0; i < cel_template_set_count(set); i++) {
            const cel_template *t = cel_template_set_at(set, i);
            bool mine = (kind == GEN_MIND && t->kind == CEL_TMPL_MIND) ||
                        (kind == GEN_REPHRASE && t->kind == CEL_TMPL_REPHRASE) ||
                        (kind == GEN_CROSSTHINK && (t->kind == CEL_TMPL_QA || t->kind == CEL_TMPL_RL));
            if (mine)
                printf("%-20s %-9s %s  (%s)\n", t->name, cel_tmpl_kind_name(t->kind), t->description ? t->description : "",
                       t->path);
        }
        exit_code = 0;
        goto done;
    }
    if (!bdir && o.templates.n == 0) {
        cel_error_set(&err, CEL_ERR_NOT_FOUND,
                      "no templates: set CELINE_TEMPLATES to celine's templates/ folder or pass --templates DIR");
        goto fail;
    }
    if (o.text && (o.input || o.format)) {
        exit_code = cel_cli_usage(name, "--text cannot be combined with --input or --format");
        goto done;
    }
    if (!o.model && o.remote.n == 0) {
        exit_code = cel_cli_usage(name, "give a model (--model PATH) or a server (--remote URL)");
        goto done;
    }
    if (o.model && o.remote.n) {
        exit_code = cel_cli_usage(name, "--model and --remote are exclusive");
        goto done;
    }

    /* backend */
    cel_gen_backend_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.model_path = o.model;
    bo.tokenizer_path = o.tokenizer;
    if (!o.quiet) {
        bo.model.log = (cel_logger){cel_cli_stderr_log, NULL, CEL_LOG_WARN};
        bo.engine.log = bo.model.log;
    }
    if (o.threads != UNSET_I) bo.engine.n_threads = (int32_t)o.threads;
    if (o.ctx != UNSET_I) bo.engine.n_ctx = (int32_t)o.ctx;
    if (o.chat_template) {
        bo.local.chat = cel_chat_kind_from_name(o.chat_template);
        if (bo.local.chat == CEL_CHAT_AUTO) {
            exit_code = cel_cli_usage(name, "unknown --chat-template '%s' (chatml, llama3, llama2, mistral, raw)", o.chat_template);
            goto done;
        }
    }
    cel_remote_config_default(&bo.remote);
    bo.remote.urls = o.remote.items;
    bo.remote.n_urls = o.remote.n;
    bo.remote.api_key = o.api_key ? o.api_key : getenv("CELINE_API_KEY") ? getenv("CELINE_API_KEY") : getenv("OPENAI_API_KEY");
    if (o.remote_model) bo.remote.model = o.remote_model;
    bo.remote.use_completions = o.completions;
    if (o.concurrency != UNSET_I) bo.remote.max_concurrency = (int32_t)o.concurrency;
    if (o.retries != UNSET_I) bo.remote.max_retries = (int32_t)o.retries;
    if (!isnan(o.timeout)) bo.remote.timeout_s = o.timeout;
    if (!isnan(o.backoff_base)) bo.remote.backoff_base_s = o.backoff_base;
    if (!isnan(o.backoff_max)) bo.remote.backoff_max_s = o.backoff_max;
    if (!o.quiet) bo.remote.log = (cel_logger){cel_cli_stderr_log, NULL, CEL_LOG_WARN};
    double t0 = cel_now_sec();
    if (cel_gen_backend_open(&bo, &be, &err)) goto fail;
    double t_loaded = cel_now_sec();

    /* the sampling every kind starts from, then the options given */
    cel_gen_common *c = NULL;
    cel_mind_config mc;
    cel_rephrase_config rc2;
    cel_crossthink_config cc;
    if (kind == GEN_MIND) {
        cel_mind_config_default(&mc);
        c = &mc.c;
    } else if (kind == GEN_REPHRASE) {
        cel_rephrase_config_default(&rc2);
        c = &rc2.c;
    } else {
        cel_crossthink_config_default(&cc);
        c = &cc.c;
    }
    if (o.seed != UNSET_I) c->seed = (uint64_t)o.seed;
    if (!isnan(o.temperature)) c->sampling.temperature = (float)o.temperature;
    if (!isnan(o.top_p)) c->sampling.top_p = (float)o.top_p;
    if (!set_i32(name, "top-k", o.top_k, 0, 1 << 20, &c->sampling.top_k) ||
        !set_i32(name, "max-tokens", o.max_tokens, 1, 1 << 20, &c->sampling.max_tokens)) {
        exit_code = 2;
        goto done;
    }
    if (o.window != UNSET_I) {
        if (o.window < 1 || o.window > 100000) {
            exit_code = cel_cli_usage(name, "--window must be in 1..100000");
            goto done;
        }
        c->max_inflight_docs = (uint32_t)o.window;
    }

    FILE *rejf = NULL;
    if (o.rejects && !(rejf = rej = fopen(o.rejects, "w"))) {
        cel_error_set(&err, CEL_ERR_IO, "%s: cannot create: %s", o.rejects, strerror(errno));
        goto fail;
    }
    if (o.output && !(out = fopen(o.output, "w"))) {
        out = stdout;
        cel_error_set(&err, CEL_ERR_IO, "%s: cannot create: %s", o.output, strerror(errno));
        goto fail;
    }
    cel_gen_jsonl_sink sink;
    cel_gen_jsonl_sink_init(&sink, out, o.output ? o.output : "<stdout>", rejf);

    if (kind == GEN_MIND) {
        mc.templates = set;
        if (o.styles && strcmp(o.styles, "all") != 0) {
            n_names = split_list(o.styles, names, 64, &list_store);
            mc.styles = names;
            mc.n_styles = n_names;
        }
        mc.mode = o.random_style ? CEL_MIND_STYLES_RANDOM : CEL_MIND_STYLES_ALL;
        if (!set_i32(name, "chunk-tokens", o.chunk_tokens, 1, 1 << 20, &mc.chunk_tokens) ||
            !set_i32(name, "min-chunk-tokens", o.min_chunk_tokens, 0, 1 << 20, &mc.min_chunk_tokens) ||
            !set_i32(name, "min-tokens", o.min_tokens, 0, 1 << 20, &mc.min_output_tokens) ||
            !set_i32(name, "min-turns", o.min_turns, 1, 1000, &mc.min_turns)) {
            exit_code = 2;
            goto done;
        }
        if (!isnan(o.max_repetition)) mc.max_repetition = o.max_repetition;
        if (!isnan(o.max_echo)) mc.max_echo = o.max_echo;
        if (o.with_chunk) {
            if (strcmp(o.with_chunk, "none") == 0) mc.with_chunk = CEL_MIND_CHUNK_NONE;
            else if (strcmp(o.with_chunk, "field") == 0) mc.with_chunk = CEL_MIND_CHUNK_FIELD;
            else if (strcmp(o.with_chunk, "concat") == 0) mc.with_chunk = CEL_MIND_CHUNK_CONCAT;
            else {
                exit_code = cel_cli_usage(name, "--with-chunk must be none, field or concat");
                goto done;
            }
        }
        st = cel_mind_create(&mc, be, &sink.sink, &p, &err);
    } else if (kind == GEN_REPHRASE) {
        rc2.templates = set;
        if (o.prompts && strcmp(o.prompts, "all") != 0) {
            n_names = split_list(o.prompts, names, 64, &list_store);
            rc2.prompts = names;
            rc2.n_prompts = n_names;
        }
        rc2.route_by_quality = !o.no_route;
        if (!set_i32(name, "high-threshold", o.high_threshold, -1000000, 1000000, &rc2.high_threshold) ||
            !set_i32(name, "min-doc-tokens", o.min_doc_tokens, 0, 1 << 20, &rc2.min_doc_tokens) ||
            !set_i32(name, "min-segment-tokens", o.min_segment_tokens, 0, 1 << 20, &rc2.min_segment_tokens)) {
            exit_code = 2;
            goto done;
        }
        if (!isnan(o.qa_tokens_per_pair)) rc2.qa_tokens_per_pair = o.qa_tokens_per_pair;
        st = cel_rephrase_create(&rc2, be, &sink.sink, &p, &err);
    } else {
        cc.templates = set;
        if (o.formats) {
            n_names = split_list(o.formats, names, 64, &list_store);
            cc.mcq = cc.open = false;
            for (size_t i = 0; i < n_names; i++) {
                if (strcmp(names[i], "mcq") == 0) cc.mcq = true;
                else if (strcmp(names[i], "open") == 0) cc.open = true;
                else {
                    exit_code = cel_cli_usage(name, "--formats takes mcq and/or open, not '%s'", names[i]);
                    goto done;
                }
            }
        }
        if (!set_i32(name, "questions", o.questions, 1, 100, &cc.questions) ||
            !set_i32(name, "chunk-tokens", o.chunk_tokens, 1, 1 << 20, &cc.chunk_tokens) ||
            !set_i32(name, "max-words", o.max_words, 1, 1000, &cc.max_open_words) ||
            !set_i32(name, "difficulty-k", o.difficulty_k, 0, 64, &cc.difficulty_k) ||
            !set_i32(name, "answer-max-tokens", o.answer_max_tokens, 1, 1 << 20, &cc.answer_sampling.max_tokens)) {
            exit_code = 2;
            goto done;
        }
        cc.mcq_to_open = o.mcq_to_open;
        cc.dedup = !o.no_dedup;
        if (!isnan(o.answer_temperature)) cc.answer_sampling.temperature = (float)o.answer_temperature;
        if (cc.difficulty_k > 0) {
            if (cel_verifier_create(NULL, &verifier, &err)) goto fail;
            cc.verifier = verifier;
        }
        st = cel_crossthink_create(&cc, be, &sink.sink, &p, &err);
    }
    if (st) goto fail;

    /* input */
    if (o.text) {
        cel_gen_doc d = {"text", o.text, strlen(o.text), NULL};
        if (cel_gen_pipeline_push(p, &d, &err) || cel_gen_pipeline_drain(p, &err)) goto fail;
    } else {
        cel_doc_reader_opts ro = {o.id_field, o.text_field, o.quality_field, 0, false};
        const char *fmt = o.format;
        if (!fmt) {
            size_t l = o.input ? strlen(o.input) : 0;
            bool jsonl = l > 6 && (strcmp(o.input + l - 6, ".jsonl") == 0);
            jsonl = jsonl || (l > 5 && strcmp(o.input + l - 5, ".json") == 0);
            fmt = jsonl ? "jsonl" : "text";
        }
        if (strcmp(fmt, "text") == 0) ro.plain_text = true;
        else if (strcmp(fmt, "jsonl") != 0) {
            exit_code = cel_cli_usage(name, "--format must be jsonl or text");
            goto done;
        }
        if (cel_doc_reader_open(o.input, &ro, &reader, &err) || cel_gen_run(p, reader, &err)) goto fail;
    }
    if (fflush(out) != 0) {
        cel_error_set(&err, CEL_ERR_IO, "%s: write failed: %s", o.output ? o.output : "<stdout>", strerror(errno));
        goto fail;
    }

    {
        const cel_gen_stats *s = cel_gen_pipeline_stats(p);
        double wall = cel_now_sec() - t_loaded;
        if (!o.quiet) {
            cel_buf js;
            cel_buf_init(&js);
            cel_gen_stats_json(s, &js);
            double eng = cel_gen_local_engine_seconds(be);
            fprintf(stderr,
                    "{\"command\":\"%s\",\"backend\":\"%s\",\"model\":\"%s\",\"load_s\":%.3f,\"elapsed_s\":%.3f,"
                    "\"docs_per_s\":%.3f,\"gen_tokens_per_s\":%.1f,\"record_tokens_per_s\":%.1f",
                    name, be->v->kind, be->model_name, t_loaded - t0, wall, wall > 0 ? s->docs_done / wall : 0.0,
                    wall > 0 ? s->gen_tokens / wall : 0.0, wall > 0 ? s->record_tokens / wall : 0.0);
            if (o.model && eng > 0)
                fprintf(stderr, ",\"engine_s\":%.3f,\"pipeline_overhead_pct\":%.2f", eng, 100.0 * (wall - eng) / wall);
            fprintf(stderr, ",\"stats\":%s}\n", js.data ? js.data : "{}");
            cel_buf_free(&js);
        }
        exit_code = s->dropped[CEL_DROP_GEN_ERROR] > 0 ? 3 : 0;
    }
    goto done;

fail:
    cel_cli_fail(name, "%s", err.msg[0] ? err.msg : cel_status_name(err.code));
    exit_code = 1;
done:
    cel_doc_reader_free(reader);
    cel_gen_pipeline_free(p);
    cel_gen_backend_free(be);
    cel_verifier_free(verifier);
    cel_template_set_free(set);
    free(list_store);
    if (out != stdout) fclose(out);
    if (rej) fclose(rej);
    return exit_code;
}

static int run_mind(int argc, char **argv);

const cel_cli_cmd cel_cli_cmd_mind = {
    "mind",
    "MIND: turn math documents into multi-turn conversations (7 styles)",
    "Usage: celine mind (--model PATH | --remote URL...) [--text TEXT | --input PATH] [options]\n\n"
    "Splits each document into chunks of about --chunk-tokens model tokens (cut at paragraph or\n"
    "sentence boundaries, never inside LaTeX), asks the generator for a conversation about each\n"
    "chunk in every chosen style (templates/mind/*.tmpl, or your own with --templates DIR), and\n"
    "keeps conversations whose speakers alternate with at least --min-turns turns each, of at\n"
    "least --min-tokens tokens, not degenerate (repetition, prompt echo) and not truncated.\n"
    "Records (JSON Lines): id, source_id, chunk_index, style, text, tokens, model, template,\n"
    "sampling, seed. Reads stdin as one document when neither --text nor --input is given.\n"
    "A stats line (JSON) goes to stderr. Exit status: 0, 1 on errors, 2 on usage errors,\n"
    "3 when some generation requests failed (counted as gen_error).",
    run_mind,
};

static int run_mind(int argc, char **argv) { return cel__gen_cli_run(GEN_MIND, &cel_cli_cmd_mind, argc, argv); }
