/*
 * celine/generate.h - synthetic data generation: prompt templates, the
 * generation backend interface (local engine | remote OpenAI-compatible
 * servers), and the MIND, Nemotron-CC rephrasing and NEMOTRON-CROSSTHINK
 * pipelines with their post-processors and filters.
 *
 * Shape of the module:
 *
 *   documents --push--> cel_gen_pipeline --requests--> cel_gen_backend
 *                              |   <--completions (callbacks, caller's thread)
 *                              v
 *                  records (JSON objects, input order) + drop counts by reason
 *
 * A pipeline is a function of (document, config, backend) -> records: every
 * unit of work gets a seed hash(job seed, unit key), so its output does not
 * depend on scheduling, batching or which other documents are in flight, and
 * records leave in the order documents were pushed. Nothing is dropped
 * silently: every dropped unit or item is counted under a cel_gen_drop
 * reason (and optionally reported to the sink).
 *
 * Thread model: a pipeline and its backend are driven by one thread (the one
 * calling push / poll / drain); all callbacks run on that thread.
 */
#ifndef CELINE_GENERATE_H
#define CELINE_GENERATE_H

#include <stdio.h>

#include "celine/common.h"
#include "celine/engine.h"
#include "celine/verify.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ templates
 *
 * A template is a text file (*.tmpl) written as a header of `@key value`
 * directives followed by sections. `@system` and `@user` on a line of their
 * own start a section; the section's text runs to the next section line.
 * Placeholders are `{{name}}`; `\{{` writes a literal `{{`. Lines starting
 * with `#` in the header are comments. templates/README.md documents every
 * directive and the placeholders each kind accepts; a template using an
 * unknown placeholder, or missing a required one, is rejected at load with
 * its file and line.
 */
typedef enum cel_tmpl_kind {
    CEL_TMPL_MIND = 0, /* a MIND conversation style: {{text}} (req), {{speaker1}}, {{speaker2}}, {{style}} */
    CEL_TMPL_REPHRASE, /* a Nemotron-CC prompt: {{text}} (req) */
    CEL_TMPL_QA,       /* CrossThink QA synthesis: {{text}} (req), {{n}} */
    CEL_TMPL_RL,       /* an RL prompt: {{question}} (req); MCQ also {{options}} (req) */
} cel_tmpl_kind;
const char *cel_tmpl_kind_name(cel_tmpl_kind k); /* "mind" | "rephrase" | "qa" | "rl" */

/* Post-processor a rephrase template asks for. */
typedef enum cel_tmpl_post {
    CEL_POST_NONE = 0,
    CEL_POST_DIVERSE_QA,     /* parse Question/Answer pairs, shuffle, keep ~1 per 150 source tokens, append to source */
    CEL_POST_KNOWLEDGE_LIST, /* strip list bullets and numbering */
} cel_tmpl_post;

typedef struct cel__tmpl_part cel__tmpl_part; /* compiled section (private) */

/* A loaded template. Fields are read-only for users of the module. */
typedef struct cel_template {
    char *name;         /* @name, or the file name without .tmpl */
    char *path;         /* where it was loaded from ("<memory>" for cel_template_parse without a path) */
    cel_tmpl_kind kind; /* @kind (required) */
    char *description;  /* @description, or NULL */
    char *system_src;   /* raw section text, or NULL when the section is absent */
    char *user_src;     /* raw section text (required) */
    /* MIND */
    char *speakers[2];  /* @speakers A | B: the two labels the conversation must alternate */
    /* rephrase (defaults follow the Nemotron-CC table for the built-in prompts) */
    char *quality;      /* @quality low|high: the quality bucket the prompt is for, or NULL (any) */
    int32_t max_input_tokens;   /* @input_tokens: segment budget (default 512) */
    int32_t max_output_tokens;  /* @output_tokens: generation limit (default 512) */
    int32_t keep_min_tokens;    /* @keep_tokens MIN..MAX: output kept only within these bounds */
    int32_t keep_max_tokens;
    char *lead_in;      /* @lead_in: output must start with it (it is removed), or NULL */
    cel_tmpl_post post; /* @post none|diverse_qa|knowledge_list */
    /* QA and RL */
    cel_task task;      /* @task mcq|open (QA and RL templates; required for them) */
    /* compiled sections */
    cel__tmpl_part *system_parts;
    size_t n_system_parts;
    cel__tmpl_part *user_parts;
    size_t n_user_parts;
} cel_template;

/* One placeholder value for rendering (value need not be NUL-terminated). */
typedef struct cel_tmpl_var {
    const char *name;
    const char *value;
    size_t len;
} cel_tmpl_var;

/* Parses template source. path is used for messages and the default name
 * (may be NULL). Errors name "path:line". */
cel_status cel_template_parse(const char *path, const char *src, size_t len, cel_template **out, cel_error *err);
cel_status cel_template_load(const char *path, cel_template **out, cel_error *err);
void cel_template_free(cel_template *t);
/* Renders the system (NULL when the template has none) and user sections.
 * Values are inserted verbatim: placeholders inside values are not expanded.
 * Every placeholder used must have a value in vars (CEL_ERR_INVALID if not). */
cel_status cel_template_render(const cel_template *t, const cel_tmpl_var *vars, size_t n_vars, cel_buf *system_out,
                               cel_buf *user_out, cel_error *err);

/* A named collection; later loads override earlier templates of the same name. */
typedef struct cel_template_set cel_template_set;
cel_status cel_template_set_create(cel_template_set **out, cel_error *err);
void cel_template_set_free(cel_template_set *s);
/* Loads every *.tmpl under dir (sub-folders included, 4 levels deep). Two
 * files of one name inside one dir are an error naming both. */
cel_status cel_template_set_load_dir(cel_template_set *s, const char *dir, cel_error *err);
/* Takes ownership of t (freed on error too). */
cel_status cel_template_set_add(cel_template_set *s, cel_template *t, cel_error *err);
const cel_template *cel_template_set_find(const cel_template_set *s, const char *name);
size_t cel_template_set_count(const cel_template_set *s);
const cel_template *cel_template_set_at(const cel_template_set *s, size_t i); /* sorted by name */

/* ========================================================== token counting */
/* Counts the tokens of text (as the generating model would). Pipelines cut
 * chunks and check output bounds with it. */
typedef cel_status (*cel_gen_count_fn)(void *ud, const char *text, size_t len, size_t *n_tokens, cel_error *err);
typedef struct cel_gen_counter {
    cel_gen_count_fn fn;
    void *ud;
} cel_gen_counter;
/* A tokenizer-free estimate for remote backends without a tokenizer: letter
 * runs count ceil(len/6) tokens, digit runs ceil(len/3), every other
 * non-space character one. Close to BPE counts for English prose and LaTeX;
 * use a real tokenizer (--tokenizer) when exact budgets matter. */
size_t cel_gen_approx_tokens(const char *text, size_t len);
cel_gen_counter cel_gen_counter_approx(void);
/* Exact counts with a model's tokenizer (no special tokens added). */
cel_gen_counter cel_gen_counter_tokenizer(const cel_tokenizer *t);

/* ========================================================= text utilities */
/* A byte span of a document. */
typedef struct cel_chunk {
    size_t off;
    size_t len;
    size_t n_tokens;
} cel_chunk;

/* MIND chunking: splits text into trimmed chunks of at most max_tokens tokens,
 * cutting preferably at paragraph breaks (blank lines), then line breaks and
 * sentence ends, then spaces, and never inside a LaTeX expression ($..$, $$..$$,
 * \(..\), \[..\], \begin{..}..\end{..}). An expression longer than the budget
 * makes its chunk longer than the budget rather than being cut. *out is
 * malloc'ed (free() it); an empty or all-space text gives 0 chunks. */
cel_status cel_gen_chunk(const char *text, size_t len, size_t max_tokens, const cel_gen_counter *c, cel_chunk **out,
                         size_t *n_out, cel_error *err);

/* Nemotron-CC segmentation: splits text on newlines, drops lines longer than
 * max_tokens (counted in *n_too_long), joins consecutive lines (with "\n")
 * up to max_tokens, and drops joined segments under min_tokens (*n_too_short). */
cel_status cel_gen_segment(const char *text, size_t len, size_t max_tokens, size_t min_tokens, const cel_gen_counter *c,
                           cel_chunk **out, size_t *n_out, size_t *n_too_long, size_t *n_too_short, cel_error *err);

/* Fraction (0..1) of the word n-grams of text that repeat an earlier n-gram
 * of the same text (degenerate, looping output scores high). 0 when the text
 * has fewer than n words. */
double cel_gen_repetition(const char *text, size_t len, int n);
/* Fraction (0..1) of the word n-grams of out that also occur in ref (prompt
 * echo: output copying the instructions or the source). */
double cel_gen_overlap(const char *out, size_t out_len, const char *ref, size_t ref_len, int n);
/* Appends text with invalid UTF-8 replaced by U+FFFD (JSON needs valid UTF-8). */
cel_status cel_gen_utf8_sanitize(const char *text, size_t len, cel_buf *out);

/* ====================================================== drops and stats */
typedef enum cel_gen_drop {
    CEL_DROP_DOC_EMPTY = 0,        /* document has no text */
    CEL_DROP_DOC_TOO_SHORT,        /* under the pipeline's minimum tokens (rephrase: 30) */
    CEL_DROP_CHUNK_TOO_SHORT,      /* MIND chunk under min_chunk_tokens */
    CEL_DROP_SEGMENT_TOO_LONG,     /* rephrase: a line longer than the prompt's input budget */
    CEL_DROP_SEGMENT_TOO_SHORT,    /* rephrase: a joined segment under the minimum */
    CEL_DROP_GEN_ERROR,            /* the backend failed the request (after retries) */
    CEL_DROP_TRUNCATED,            /* generation hit max_tokens */
    CEL_DROP_EMPTY_OUTPUT,
    CEL_DROP_TOO_SHORT,            /* output under the minimum tokens */
    CEL_DROP_TOO_LONG,             /* output over the keep bound */
    CEL_DROP_NO_LEAD_IN,           /* output does not start with the expected lead-in */
    CEL_DROP_STRUCTURE,            /* conversation: fewer than the required turns per speaker */
    CEL_DROP_NOT_ALTERNATING,      /* conversation: one speaker twice in a row */
    CEL_DROP_REPETITION,           /* degenerate: repeated n-grams */
    CEL_DROP_PROMPT_ECHO,          /* output copies the prompt */
    CEL_DROP_NO_QA_PAIRS,          /* diverse QA: no Question/Answer pair parsed */
    CEL_DROP_QA_UNUSED,            /* diverse QA: parsed pairs beyond the number kept */
    CEL_DROP_NO_ITEMS,             /* CrossThink: synthesis output held no item */
    CEL_DROP_ITEM_MALFORMED,       /* CrossThink: an item missing its question, options or answer */
    CEL_DROP_GOLD_NOT_IN_OPTIONS,  /* CrossThink MCQ: gold letter not among the options */
    CEL_DROP_ANSWER_TOO_LONG,      /* CrossThink open: reference over max words */
    CEL_DROP_DUPLICATE,            /* CrossThink: same question as an earlier item */
    CEL_DROP_TOO_EASY,             /* CrossThink difficulty filter: solved k of k */
    CEL_DROP__COUNT
} cel_gen_drop;
const char *cel_gen_drop_name(cel_gen_drop d); /* "doc_empty", "too_short", ... */

typedef struct cel_gen_stats {
    uint64_t docs;          /* documents pushed */
    uint64_t docs_done;     /* documents whose records were emitted */
    uint64_t units;         /* generation units (chunk x style, segment x prompt, ...) */
    uint64_t requests;      /* backend requests completed */
    uint64_t samples;       /* completions received */
    uint64_t records;       /* records emitted */
    uint64_t record_tokens; /* tokens of emitted records' text */
    uint64_t prompt_tokens; /* as reported by the backend */
    uint64_t gen_tokens;    /* as reported by the backend */
    uint64_t dropped[CEL_DROP__COUNT];
} cel_gen_stats;
uint64_t cel_gen_stats_dropped_total(const cel_gen_stats *s);
/* Appends the stats as one JSON object ({"docs":..,"dropped":{"reason":n,..}}). */
cel_status cel_gen_stats_json(const cel_gen_stats *s, cel_buf *out);

/* ================================================================ backends */
/* One completion of a request. */
typedef struct cel_gen_sample {
    const char *text; /* NUL-terminated, len bytes */
    size_t len;
    int32_t n_tokens;  /* generated tokens; -1 when the backend did not say */
    cel_finish finish; /* STOP, LENGTH or ERROR */
} cel_gen_sample;

/* Delivered once per request, from cel_gen_backend_poll on the polling thread.
 * On failure status != CEL_OK, error holds the message and n == 0. All
 * pointers live only during the call. */
typedef struct cel_gen_result {
    cel_status status;
    const char *error;
    uint32_t n;
    const cel_gen_sample *samples;
    int32_t n_prompt_tokens; /* -1 when unknown */
} cel_gen_result;
typedef void (*cel_gen_done_fn)(void *ud, const cel_gen_result *r);

/* A generation request: chat messages (rendered by the backend with the
 * model's chat template, or sent to /v1/chat/completions), or a raw prompt
 * when n_messages == 0. Everything is copied at submit. */
typedef struct cel_gen_request {
    const cel_chat_msg *messages;
    size_t n_messages;
    const char *prompt;
    uint32_t n;            /* samples (>= 1) */
    cel_sampling sampling; /* seed, temperature, top_p, top_k, max_tokens, stop strings */
    cel_gen_done_fn cb;
    void *ud;
} cel_gen_request;

typedef struct cel_gen_backend cel_gen_backend;
typedef struct cel_gen_backend_vtbl {
    const char *kind; /* "local" | "remote" | test doubles */
    /* Queues a request (copied); its callback runs later from poll. A failing
     * submit never calls the callback. */
    cel_status (*submit)(cel_gen_backend *b, const cel_gen_request *r, cel_error *err);
    /* Makes progress for at most ~timeout_ms (0: do what is ready, no
     * waiting) and runs the callbacks of finished requests. */
    cel_status (*poll)(cel_gen_backend *b, int timeout_ms, cel_error *err);
    size_t (*pending)(const cel_gen_backend *b); /* submitted, callback not yet run */
    /* Frees the backend; every request still pending first gets its
     * callback with status CEL_ERR_CANCELLED (so no caller state leaks). */
    void (*free)(cel_gen_backend *b);
    /* Optional (may be NULL): cancels every pending request submitted with
     * callback data ud, releasing its engine sequence or HTTP transfer. Its
     * callback still runs once from a later poll (status CEL_ERR_CANCELLED,
     * or the samples' CANCELLED finish). Pipelines call it for the requests
     * of a pipeline freed early (a client that went away). */
    void (*cancel)(cel_gen_backend *b, void *ud);
} cel_gen_backend_vtbl;

struct cel_gen_backend {
    const cel_gen_backend_vtbl *v;
    cel_gen_counter counter; /* tokens as the backend's model counts them */
    char model_name[128];    /* written into records' "model" field */
};

static inline cel_status cel_gen_backend_submit(cel_gen_backend *b, const cel_gen_request *r, cel_error *err)
{
    return b->v->submit(b, r, err);
}
static inline cel_status cel_gen_backend_poll(cel_gen_backend *b, int timeout_ms, cel_error *err)
{
    return b->v->poll(b, timeout_ms, err);
}
static inline size_t cel_gen_backend_pending(const cel_gen_backend *b) { return b->v->pending(b); }
static inline void cel_gen_backend_free(cel_gen_backend *b)
{
    if (b) b->v->free(b);
}
/* Polls until every submitted request's callback has run. */
cel_status cel_gen_backend_wait_all(cel_gen_backend *b, cel_error *err);

/* ---- local: wraps a cel_engine ---- */
typedef struct cel_gen_local_opts {
    cel_chat_kind chat;   /* AUTO: detect from the model */
    bool engine_threaded; /* the engine runs its own thread (cel_engine_start); else poll steps it */
    void (*notify)(void *ud); /* threaded: called on the engine thread when a result is ready (e.g. uv_async_send);
                                 must not block or call back into the backend */
    void *notify_ud;
} cel_gen_local_opts;
/* Wraps an engine the caller keeps owning (it must outlive the backend). */
cel_status cel_gen_local_create(cel_engine *e, const cel_gen_local_opts *opts, cel_gen_backend **out, cel_error *err);
/* Loads a model, creates an unthreaded engine and wraps it; all owned by the backend. */
cel_status cel_gen_local_open(const char *model_path, const cel_model_load_opts *mopts, const cel_engine_params *ep,
                              const cel_gen_local_opts *opts, cel_gen_backend **out, cel_error *err);
/* Seconds the local backend spent inside engine steps (pipeline overhead = wall - this). */
double cel_gen_local_engine_seconds(const cel_gen_backend *b);

/* ---- remote: OpenAI-compatible servers over libcurl's multi interface ---- */
typedef struct cel_remote_config {
    const char *const *urls; /* base URLs ("http://host:port" or ".../v1"); requests go round-robin */
    size_t n_urls;
    const char *api_key;     /* sent as "Authorization: Bearer KEY", or NULL */
    const char *model;       /* the request's "model" field (default "default") */
    bool use_completions;    /* /v1/completions with the chat rendered raw, instead of /v1/chat/completions */
    int32_t max_concurrency; /* requests in flight (default 16) */
    int32_t max_retries;     /* on 429, 5xx, timeouts and dropped connections (default 5) */
    double backoff_base_s;   /* first retry waits up to base; doubles each time (default 0.5) */
    double backoff_max_s;    /* cap on one wait (default 30) */
    double timeout_s;        /* per attempt (default 600) */
    double connect_timeout_s;/* default 10 */
    size_t max_response_bytes; /* larger responses fail the attempt (default 16 MiB) */
    bool send_seed;          /* pass each sample's seed (default true) */
    uint64_t jitter_seed;    /* back-off jitter stream */
    cel_gen_counter counter; /* token counting (e.g. cel_gen_counter_tokenizer); fn NULL: cel_gen_approx_tokens */
    cel_logger log;          /* retries and failures are logged at WARN */
} cel_remote_config;
void cel_remote_config_default(cel_remote_config *c);
cel_status cel_gen_remote_create(const cel_remote_config *cfg, cel_gen_backend **out, cel_error *err);
/* Counters of a remote backend (for tests and stats). */
typedef struct cel_remote_stats {
    uint64_t attempts;
    uint64_t retries;
    uint64_t http_429;
    uint64_t http_5xx;
    uint64_t transport_errors; /* timeouts, refused or dropped connections */
    uint64_t failures;         /* requests failed for good */
} cel_remote_stats;
void cel_gen_remote_stats(const cel_gen_backend *b, cel_remote_stats *out);
/* Delay before retry number `attempt` (0-based): a uniform draw u in [0, 1)
 * times min(max, base * 2^attempt) ("full jitter"). Exposed for tests. */
double cel_gen_backoff_delay(int attempt, double base, double max, double u);

/* ============================================================== pipelines */
/* Where records go. record() receives one JSON object (no newline) per
 * record, in input order; an error from it stops the pipeline. drop() (may
 * be NULL) is told of every dropped unit or item, also in input order, with
 * a detail (may be NULL): the backend's error message, or the generated text
 * that a filter rejected. */
typedef struct cel_gen_sink {
    cel_status (*record)(void *ud, const char *json, size_t len, cel_error *err);
    void (*drop)(void *ud, cel_gen_drop reason, const char *unit_id, const char *detail);
    void *ud;
} cel_gen_sink;

/* A document. quality: a Nemotron-CC quality bucket (0..19) or label, NULL
 * when the input has none. Copied at push. */
typedef struct cel_gen_doc {
    const char *id;
    const char *text;
    size_t len;
    const char *quality;
} cel_gen_doc;

/* Settings every pipeline shares. */
typedef struct cel_gen_common {
    uint64_t seed;          /* job seed; unit seed = hash(seed, unit key) */
    cel_sampling sampling;  /* temperature, top_p, top_k, max_tokens (unit seeds override .seed) */
    uint32_t max_inflight_docs; /* documents in flight before push waits (default 64) */
    const char *model_name; /* records' "model"; NULL: the backend's */
} cel_gen_common;

typedef struct cel_gen_pipeline cel_gen_pipeline;

/* Serving one-shot requests (what `celine serve` endpoints do): keep one
 * backend for the process, e.g. cel_gen_local_create over the server's
 * started engine with engine_threaded = true and notify = a uv_async_send
 * wrapper. Per HTTP request, create a pipeline (cel_mind_create, ...) over
 * that backend with a sink that collects the records, push the request's
 * document(s) (with max_inflight_docs at least their number, push never
 * waits), and on every notify call cel_gen_pipeline_poll(p, 0, ...) on each
 * live pipeline: a backend poll runs the callbacks of every pipeline's
 * requests, and each pipeline's poll emits its own finished documents. A
 * request is complete when cel_gen_pipeline_inflight(p) == 0; free the
 * pipeline then (or at a client disconnect: its requests still in flight
 * are orphaned, their results discarded when they arrive). Everything runs
 * on the loop thread; only the engine runs elsewhere. */

/* Submits the document's work (copies it). Waits (polling the backend) while
 * max_inflight_docs documents are in flight. Records of finished documents
 * are emitted from push, poll and drain, always in push order. */
cel_status cel_gen_pipeline_push(cel_gen_pipeline *p, const cel_gen_doc *doc, cel_error *err);
cel_status cel_gen_pipeline_poll(cel_gen_pipeline *p, int timeout_ms, cel_error *err);
/* Finishes every pushed document. */
cel_status cel_gen_pipeline_drain(cel_gen_pipeline *p, cel_error *err);
size_t cel_gen_pipeline_inflight(const cel_gen_pipeline *p);
const cel_gen_stats *cel_gen_pipeline_stats(const cel_gen_pipeline *p);
/* Frees the pipeline; documents still in flight are abandoned (drain first).
 * Does not free the backend. */
void cel_gen_pipeline_free(cel_gen_pipeline *p);

/* Per-unit seed: hash of the job seed and a unit key. */
uint64_t cel_gen_unit_seed(uint64_t job_seed, const char *key, size_t len);

/* ---- MIND ---- */
typedef enum cel_mind_styles {
    CEL_MIND_STYLES_ALL = 0, /* every listed style (every MIND template when none listed) for every chunk */
    CEL_MIND_STYLES_RANDOM,  /* one style per chunk, drawn with the chunk's seed from the list (or all) */
} cel_mind_styles;
typedef enum cel_mind_with_chunk {
    CEL_MIND_CHUNK_NONE = 0,
    CEL_MIND_CHUNK_FIELD,  /* record gets a "chunk" field with the raw chunk */
    CEL_MIND_CHUNK_CONCAT, /* record text = chunk + "\n\n" + dialogue */
} cel_mind_with_chunk;
typedef struct cel_mind_config {
    cel_gen_common c;
    const cel_template_set *templates;
    cel_mind_styles mode;
    const char *const *styles; /* template names; NULL/0: every MIND template */
    size_t n_styles;
    int32_t chunk_tokens;      /* default 500 */
    int32_t min_chunk_tokens;  /* chunks under it are dropped (default 0: keep all) */
    int32_t min_output_tokens; /* default 50 */
    int32_t min_turns;         /* per speaker (default 2) */
    double max_repetition;     /* drop when cel_gen_repetition(text, 5) exceeds it (default 0.3) */
    double max_echo;           /* drop when 8-gram overlap with the instructions exceeds it (default 0.2)
                                  or with the whole prompt exceeds 0.8 */
    cel_mind_with_chunk with_chunk;
} cel_mind_config;
void cel_mind_config_default(cel_mind_config *c);
cel_status cel_mind_create(const cel_mind_config *cfg, cel_gen_backend *be, const cel_gen_sink *sink,
                           cel_gen_pipeline **out, cel_error *err);

/* MIND post-processing of one generated conversation (exposed for tests):
 * trims, removes text before the first speaker turn and markdown bold around
 * labels, and checks the structure. Returns CEL_OK with *drop = CEL_DROP__COUNT
 * when kept (cleaned text in out), or the drop reason. Token bounds,
 * repetition and echo are checked by the pipeline. */
cel_status cel_mind_check_dialogue(const char *text, size_t len, const char *const speakers[2], int min_turns,
                                   cel_buf *out, cel_gen_drop *drop);

/* ---- Nemotron-CC rephrasing ---- */
typedef struct cel_rephrase_config {
    cel_gen_common c;       /* sampling default: temperature 0.5, top_p 0.9 (max_tokens from each prompt) */
    const cel_template_set *templates;
    const char *const *prompts; /* template names; NULL/0: every rephrase template */
    size_t n_prompts;
    bool route_by_quality;  /* documents with a quality field get only prompts of their bucket (default true) */
    int32_t high_threshold; /* numeric quality >= it is "high" (default 12, of 0..19) */
    int32_t min_doc_tokens; /* default 30 */
    int32_t min_segment_tokens; /* default 10 */
    double qa_tokens_per_pair;  /* diverse QA: keep ~1 pair per this many source tokens (default 150) */
} cel_rephrase_config;
void cel_rephrase_config_default(cel_rephrase_config *c);
cel_status cel_rephrase_create(const cel_rephrase_config *cfg, cel_gen_backend *be, const cel_gen_sink *sink,
                               cel_gen_pipeline **out, cel_error *err);
/* "high" | "low" for a quality value (bucket number or label); NULL if unrecognised. */
const char *cel_rephrase_quality_bucket(const char *quality, int32_t high_threshold);

/* A parsed Question/Answer pair (spans into the parsed text). */
typedef struct cel_qa_pair {
    const char *q;
    size_t q_len;
    const char *a;
    size_t a_len;
} cel_qa_pair;
/* Parses "Question: ... Answer: ..." pairs (also "Q:"/"A:", numbered or bold
 * labels). *pairs is malloc'ed. */
cel_status cel_gen_parse_qa_pairs(const char *text, size_t len, cel_qa_pair **pairs, size_t *n, cel_error *err);
/* Diverse-QA post-processing: parses pairs from output, shuffles them with
 * seed, keeps max(1, round(source_tokens / tokens_per_pair)) and appends them
 * to source ("\n\nQuestion: ...\nAnswer: ..."). *kept / *parsed receive the
 * counts; out is left empty when no pair parses. */
cel_status cel_gen_diverse_qa(const char *source, size_t source_len, size_t source_tokens, const char *output,
                              size_t output_len, double tokens_per_pair, uint64_t seed, cel_buf *out, size_t *kept,
                              size_t *parsed, cel_error *err);
/* Knowledge-list clean-up: strips bullets ("-", "*", "•", "1.", "(a)") and
 * indentation from each line, drops empty lines. */
cel_status cel_gen_knowledge_list_clean(const char *text, size_t len, cel_buf *out);

/* ---- NEMOTRON-CROSSTHINK ---- */
typedef struct cel_qa_item {
    char *question;
    char *options[10]; /* MCQ: A..J */
    size_t n_options;
    char *answer;      /* MCQ: the gold letter ("B"); open: the short answer */
    cel_task task;     /* CEL_TASK_MCQ | CEL_TASK_OPEN */
} cel_qa_item;
void cel_qa_item_free(cel_qa_item *it);
/* Parses synthesized items. MCQ blocks: "Question: ..." then option lines
 * "A) .." / "A. .." / "(A) .." then "Answer: B"; open blocks: "Question:" and
 * "Answer:". Items failing the verifiability rules are not returned but
 * counted: drops[CEL_DROP_ITEM_MALFORMED], [GOLD_NOT_IN_OPTIONS],
 * [ANSWER_TOO_LONG] (open answers over max_open_words words). An MCQ answer
 * given as an option's text is mapped to its letter. */
cel_status cel_gen_parse_qa_items(const char *text, size_t len, cel_task task, int max_open_words, cel_qa_item **items,
                                  size_t *n, uint64_t drops[CEL_DROP__COUNT], cel_error *err);
/* MCQ -> open: drops the options; the reference becomes the gold option's
 * text. CEL_ERR_INVALID when that text is over max_words words. */
cel_status cel_qa_item_to_open(cel_qa_item *it, int max_words, cel_error *err);
/* Words of a short answer (whitespace-separated). */
size_t cel_gen_count_words(const char *s, size_t len);

typedef struct cel_crossthink_config {
    cel_gen_common c;
    const cel_template_set *templates;
    bool mcq;                    /* synthesize multiple-choice items (default true) */
    bool open;                   /* synthesize open-ended items (default true) */
    const char *mcq_template;    /* default "qa_mcq" */
    const char *open_template;   /* default "qa_open" */
    const char *rl_mcq_template; /* RL prompt for MCQ items, default "rl_mcq" */
    const char *rl_open_template;/* default "rl_open" */
    int32_t questions;           /* {{n}}: items asked per chunk (default 4) */
    int32_t chunk_tokens;        /* documents are chunked like MIND (default 1000) */
    int32_t max_open_words;      /* default 10 */
    bool mcq_to_open;            /* convert MCQ items to open-ended ones */
    bool dedup;                  /* drop repeated questions (default true) */
    /* difficulty filter: k > 0 samples k answers per item and drops items
     * solved k of k times (graded by verifier). */
    int32_t difficulty_k;
    cel_sampling answer_sampling; /* default temperature 1.0, top_p 1, max_tokens 1024 */
    const cel_verifier *verifier; /* required when difficulty_k > 0 */
} cel_crossthink_config;
void cel_crossthink_config_default(cel_crossthink_config *c);
cel_status cel_crossthink_create(const cel_crossthink_config *cfg, cel_gen_backend *be, const cel_gen_sink *sink,
                                 cel_gen_pipeline **out, cel_error *err);

/* ========================================================== input helpers */
/* Reads documents from JSON Lines (fields by name) or as one plain-text
 * document. Lines longer than max_line_bytes (plain text: the whole input),
 * invalid JSON, or a missing / non-string text field are errors naming
 * path:line. */
typedef struct cel_doc_reader cel_doc_reader;
typedef struct cel_doc_reader_opts {
    const char *id_field;      /* default "id"; missing id: "<line number>" */
    const char *text_field;    /* default "text" */
    const char *quality_field; /* default "quality"; absent in a line: no quality */
    size_t max_line_bytes;     /* default 64 MiB */
    bool plain_text;           /* the whole input is one document (id "text") */
} cel_doc_reader_opts;
/* path NULL or "-" reads stdin. */
cel_status cel_doc_reader_open(const char *path, const cel_doc_reader_opts *opts, cel_doc_reader **out, cel_error *err);
/* *doc points into the reader (valid until the next call); *eof at the end. */
cel_status cel_doc_reader_next(cel_doc_reader *r, cel_gen_doc *doc, bool *eof, cel_error *err);
void cel_doc_reader_free(cel_doc_reader *r);

/* ============================================== front-end (CLI / server) helpers */
/* Opens a backend from front-end options: the local engine when model_path
 * is set (unthreaded: poll steps it), else the remote servers in
 * remote.urls. tokenizer_path (a tokenizer.json) gives a remote backend
 * exact token counts; the returned backend owns that tokenizer. */
typedef struct cel_gen_backend_opts {
    const char *model_path;
    cel_model_load_opts model;
    cel_engine_params engine;
    cel_gen_local_opts local;
    cel_remote_config remote;
    const char *tokenizer_path;
} cel_gen_backend_opts;
cel_status cel_gen_backend_open(const cel_gen_backend_opts *o, cel_gen_backend **out, cel_error *err);

/* A sink writing records as JSON Lines to out and dropped units to rejects
 * ({"reason","id","detail"} per line; rejects may be NULL). Write errors
 * stop the pipeline with CEL_ERR_IO. */
typedef struct cel_gen_jsonl_sink {
    cel_gen_sink sink;
    FILE *out;
    FILE *rejects;
    const char *out_name; /* for messages */
    uint64_t lines;
    bool reject_failed;
} cel_gen_jsonl_sink;
void cel_gen_jsonl_sink_init(cel_gen_jsonl_sink *s, FILE *out, const char *out_name, FILE *rejects);

/* Pushes every document of the reader through the pipeline and drains it. */
cel_status cel_gen_run(cel_gen_pipeline *p, cel_doc_reader *r, cel_error *err);

#ifdef __cplusplus
}
#endif
#endif
