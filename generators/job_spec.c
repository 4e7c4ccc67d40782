/*
 * job_spec.c - job specifications: one JSON object of typed keys (the key
 * table below) that the CLI, config files and the server's job and one-shot
 * generation endpoints all fill the same way, and what a spec opens:
 * templates, the backend (local engine or remote servers) and the MIND /
 * rephrase / CrossThink configuration with the generators' defaults, plus
 * the canonical "recorded config" a resumed job must match.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gen_internal.h"
#include "job_internal.h"

#define IO CEL_JOBKEY_IO
#define BK CEL_JOBKEY_BACKEND
#define GN CEL_JOBKEY_GEN
#define MI CEL_JOBKEY_MIND
#define RP CEL_JOBKEY_REPHRASE
#define CT CEL_JOBKEY_CROSSTHINK
#define S CEL_JOBKEY_STR
#define I CEL_JOBKEY_INT
#define N CEL_JOBKEY_NUM
#define B CEL_JOBKEY_BOOL
#define L CEL_JOBKEY_LIST
#define BIG 9.0e15

/* Path lists (input, templates) are never split on commas. */
static const cel_job_key keys[] = {
    {"kind", S, IO | GN, 0, 0, "mind|rephrase|crossthink", "the pipeline"},
    {"input", L, IO, 0, 0, "PATH", "input .jsonl / .jsonl.zst: a file, a folder or a glob (repeatable)"},
    {"output", S, IO, 0, 0, "DIR", "output folder (shards, manifest, state)"},
    {"id_field", S, IO, 0, 0, "NAME", "JSONL id field (default id)"},
    {"text_field", S, IO, 0, 0, "NAME", "JSONL text field (default text)"},
    {"quality_field", S, IO, 0, 0, "NAME", "JSONL quality field (default quality)"},
    {"max_line_bytes", I, IO, 16, BIG, "N", "longer input lines are reported and skipped (default 64 MiB)"},
    {"shard", S, IO, 0, 0, "I/N", "process part I of N (0-based): run N of these for the whole input"},
    {"split", S, IO, 0, 0, "id|line", "what --shard hashes: the document id (default) or file name + line"},
    {"shard_records", I, IO, 0, BIG, "N", "start a new output shard after N records (default 0: no limit)"},
    {"shard_bytes", I, IO, 0, BIG, "N", "... or after N compressed bytes (default 256 MiB; 0: no limit)"},
    {"frame_records", I, IO, 1, BIG, "N", "close a zstd frame at the first document end past N records (1000)"},
    {"frame_bytes", I, IO, 1, BIG, "N", "... or past N uncompressed bytes (default 4 MiB)"},
    {"zstd_level", I, IO, 1, 19, "N", "output compression level (default 3)"},
    {"checkpoint_s", N, IO, 0, 86400, "S", "checkpoint at least every S seconds (default 10; 0: at every document)"},
    {"rejects", B, IO, 0, 0, NULL, "write rejects.jsonl: every dropped unit with its reason"},
    {"restart", B, IO, 0, 0, NULL, "discard an unfinished job in the output folder instead of resuming it"},
    {"backend", L, BK, 0, 0, "local|URL,..", "generate with the local engine (--model) or OpenAI-compatible servers"},
    {"model", S, BK, 0, 0, "PATH", "model for the local engine (.gguf or Hugging Face folder)"},
    {"tokenizer", S, BK, 0, 0, "PATH", "tokenizer.json: exact token counts with remote servers"},
    {"chat_template", S, BK, 0, 0, "NAME", "chatml|llama3|llama2|mistral|raw (default: detect)"},
    {"threads", I, BK, 0, 1024, "N", "engine CPU threads (default all cores)"},
    {"ctx", I, BK, 0, 1 << 22, "N", "engine context per sequence"},
    {"api_key", S, BK, 0, 0, "KEY", "bearer token for the servers (never recorded)"},
    {"remote_model", S, BK, 0, 0, "NAME", "the requests' model field (default \"default\")"},
    {"completions", B, BK, 0, 0, NULL, "use /v1/completions (chat rendered raw)"},
    {"concurrency", I, BK, 1, 100000, "N", "remote requests in flight (default 16)"},
    {"retries", I, BK, 0, 1000, "N", "retries on 429 / 5xx / timeouts / dropped connections (default 5)"},
    {"timeout", N, BK, 0.001, 86400, "S", "per-attempt timeout (default 600)"},
    {"backoff_base", N, BK, 0, 3600, "S", "first retry waits up to S, doubling (default 0.5)"},
    {"backoff_max", N, BK, 0, 86400, "S", "longest wait between retries (default 30)"},
    {"window", I, BK, 1, 100000, "N", "documents in flight (default 64)"},
    {"templates", L, GN, 0, 0, "DIR", "add (or override) templates from DIR/*.tmpl (repeatable)"},
    {"seed", I, GN, 0, BIG, "N", "job seed (default 0): unit seed = hash(seed, unit key)"},
    {"temperature", N, GN, 0, 100, "T", "sampling temperature"},
    {"top_p", N, GN, 0, 1, "P", "nucleus sampling"},
    {"top_k", I, GN, 0, 1 << 20, "K", "top-k sampling (0: off)"},
    {"max_tokens", I, GN, 1, 1 << 20, "N", "generation limit (templates may set their own)"},
    {"styles", L, MI, 0, 0, "A,B", "MIND conversation styles (default all)"},
    {"random_style", B, MI, 0, 0, NULL, "one seeded-random style per chunk"},
    {"chunk_tokens", I, MI | CT, 1, 1 << 20, "N", "chunk budget in model tokens (MIND 500, CrossThink 1000)"},
    {"min_chunk_tokens", I, MI, 0, 1 << 20, "N", "drop smaller chunks (default 0)"},
    {"min_tokens", I, MI, 0, 1 << 20, "N", "drop conversations under N tokens (default 50)"},
    {"min_turns", I, MI, 1, 1000, "N", "turns each speaker needs (default 2)"},
    {"max_repetition", N, MI, 0, 1, "F", "drop above this repeated 5-gram share (0.3)"},
    {"max_echo", N, MI, 0, 1, "F", "drop above this share copied from the instructions (0.2)"},
    {"with_chunk", S, MI, 0, 0, "none|field|concat", "emit the raw chunk too"},
    {"prompts", L, RP, 0, 0, "A,B", "rephrase prompts (default all)"},
    {"route", B, RP, 0, 0, NULL, "route documents with a quality field to their bucket's prompts (default true)"},
    {"high_threshold", I, RP, -1000000, 1000000, "N", "quality buckets >= N are high (default 12)"},
    {"min_doc_tokens", I, RP, 0, 1 << 20, "N", "drop documents under N tokens (default 30)"},
    {"min_segment_tokens", I, RP, 0, 1 << 20, "N", "drop segments under N tokens (default 10)"},
    {"qa_tokens_per_pair", N, RP, 1, 1e9, "N", "diverse QA: one pair per N source tokens (150)"},
    {"formats", L, CT, 0, 0, "mcq,open", "item formats to synthesize (default both)"},
    {"questions", I, CT, 1, 100, "N", "items asked per chunk and format (default 4)"},
    {"max_words", I, CT, 1, 1000, "N", "open answers over N words are dropped (default 10)"},
    {"mcq_to_open", B, CT, 0, 0, NULL, "turn MCQ items into open-ended ones"},
    {"dedup", B, CT, 0, 0, NULL, "drop repeated questions (default true)"},
    {"difficulty_k", I, CT, 0, 64, "K", "sample K answers per item, drop items solved K/K"},
    {"answer_temperature", N, CT, 0, 100, "T", "difficulty filter sampling (default 1.0)"},
    {"answer_max_tokens", I, CT, 1, 1 << 20, "N", "difficulty filter answer limit (default 1024)"},
    {"mcq_template", S, CT, 0, 0, "NAME", "MCQ synthesis template (default qa_mcq)"},
    {"open_template", S, CT, 0, 0, "NAME", "open synthesis template (default qa_open)"},
    {"rl_mcq_template", S, CT, 0, 0, "NAME", "RL prompt for MCQ items (default rl_mcq)"},
    {"rl_open_template", S, CT, 0, 0, "NAME", "RL prompt for open items (default rl_open)"},
};
#undef S
#undef I
#undef N
#undef B
#undef L

size_t cel_job_key_count(void) { return sizeof keys / sizeof keys[0]; }
const cel_job_key *cel_job_key_at(size_t i) { return i < cel_job_key_count() ? &keys[i] : NULL; }
const cel_job_key *cel_job_key_find(const char *name)
{
    for (size_t i = 0; i < cel_job_key_count(); i++)
        if (strcmp(keys[i].name, name) == 0) return &keys[i];
    return NULL;
}

static bool is_path_list(const cel_job_key *k) { return strcmp(k->name, "input") == 0 || strcmp(k->name, "templates") == 0; }

static const char *const kind_names[CEL_JOB__KINDS] = {"mind", "rephrase", "crossthink"};
static const unsigned kind_scope[CEL_JOB__KINDS] = {CEL_JOBKEY_MIND, CEL_JOBKEY_REPHRASE, CEL_JOBKEY_CROSSTHINK};

const char *cel_job_kind_name(cel_job_kind k) { return (unsigned)k < CEL_JOB__KINDS ? kind_names[k] : "unknown"; }

cel_status cel_job_kind_from_name(const char *name, cel_job_kind *out, cel_error *err)
{
    for (int i = 0; i < CEL_JOB__KINDS; i++)
        if (name && strcmp(name, kind_names[i]) == 0) {
            *out = (cel_job_kind)i;
            return CEL_OK;
        }
    return cel_error_set(err, CEL_ERR_INVALID, "unknown job kind '%s' (mind, rephrase or crossthink)", name ? name : "");
}

/* ================================================================= specs */

struct cel_job_spec {
    json_t *v; /* key -> value, only what was set */
};

cel_status cel_job_spec_create(cel_job_spec **out, cel_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out || !((*out)->v = json_object())) {
        free(*out);
        *out = NULL;
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    return CEL_OK;
}

void cel_job_spec_free(cel_job_spec *s)
{
    if (!s) return;
    json_decref(s->v);
    free(s);
}

/* Checks (and normalises) a JSON value for key k; returns a new reference. */
static cel_status check_value(const cel_job_key *k, json_t *v, const char *where, json_t **out, cel_error *err)
{
    *out = NULL;
    switch (k->type) {
    case CEL_JOBKEY_STR:
        if (!json_is_string(v) || json_string_length(v) > 4096 || strlen(json_string_value(v)) != json_string_length(v))
            return cel_error_set(err, CEL_ERR_INVALID, "%s: \"%s\" must be a string (at most 4096 bytes)", where, k->name);
        *out = json_incref(v);
        return CEL_OK;
    case CEL_JOBKEY_INT: {
        double d = json_is_integer(v) ? (double)json_integer_value(v) : NAN;
        if (!json_is_integer(v) || d < k->lo || d > k->hi)
            return cel_error_set(err, CEL_ERR_INVALID, "%s: \"%s\" must be an integer in %.0f..%.0f", where, k->name,
                                 k->lo, k->hi);
        *out = json_incref(v);
        return CEL_OK;
    }
    case CEL_JOBKEY_NUM: {
        double d = json_is_number(v) ? json_number_value(v) : NAN;
        if (!(d >= k->lo && d <= k->hi))
            return cel_error_set(err, CEL_ERR_INVALID, "%s: \"%s\" must be a number in %g..%g", where, k->name, k->lo, k->hi);
        *out = json_real(d);
        return *out ? CEL_OK : cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    case CEL_JOBKEY_BOOL:
        if (!json_is_boolean(v)) return cel_error_set(err, CEL_ERR_INVALID, "%s: \"%s\" must be true or false", where, k->name);
        *out = json_incref(v);
        return CEL_OK;
    case CEL_JOBKEY_LIST: {
        json_t *a = json_array();
        if (!a) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        if (json_is_string(v)) { /* "a,b" (paths: one item) */
            const char *s = json_string_value(v);
            if (is_path_list(k)) {
                json_array_append_new(a, json_string(s));
            } else {
                const char *p = s;
                while (*p) {
                    const char *c = strchr(p, ',');
                    size_t n = c ? (size_t)(c - p) : strlen(p);
                    const char *b = p;
                    size_t m = n;
                    cel__trim(&b, &m);
                    if (m) json_array_append_new(a, json_stringn(b, m));
                    p += n + (c ? 1 : 0);
                }
            }
        } else if (json_is_array(v)) {
            size_t i;
            json_t *x;
            json_array_foreach(v, i, x)
            {
                if (!json_is_string(x) || json_string_length(x) == 0 || json_string_length(x) > 4096) {
                    json_decref(a);
                    return cel_error_set(err, CEL_ERR_INVALID, "%s: \"%s\" must hold non-empty strings", where, k->name);
                }
                json_array_append(a, x);
            }
        } else {
            json_decref(a);
            return cel_error_set(err, CEL_ERR_INVALID, "%s: \"%s\" must be a string or an array of strings", where, k->name);
        }
        if (json_array_size(a) == 0 || json_array_size(a) > 1024) {
            json_decref(a);
            return cel_error_set(err, CEL_ERR_INVALID, "%s: \"%s\" must name 1 to 1024 items", where, k->name);
        }
        *out = a;
        return CEL_OK;
    }
    }
    return cel_error_set(err, CEL_ERR_INTERNAL, "bad key type");
}

static cel_status put(cel_job_spec *s, const cel_job_key *k, json_t *v, const char *where, cel_error *err)
{
    json_t *n;
    CEL_TRY(check_value(k, v, where, &n, err));
    if (strcmp(k->name, "kind") == 0) {
        cel_job_kind kk;
        if (cel_job_kind_from_name(json_string_value(n), &kk, err)) {
            json_decref(n);
            cel_error_prefix(err, "%s", where);
            return CEL_ERR_INVALID;
        }
    }
    /* repeated path options add up (--input a --input b) */
    json_t *old = json_object_get(s->v, k->name);
    if (k->type == CEL_JOBKEY_LIST && is_path_list(k) && old && json_is_array(old)) {
        json_t *merged = json_copy(old);
        json_array_extend(merged, n);
        json_decref(n);
        n = merged;
    }
    if (json_object_set_new(s->v, k->name, n)) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    return CEL_OK;
}

cel_status cel_job_spec_merge_json(cel_job_spec *s, const char *json, size_t len, unsigned allowed, const char *where,
                                   cel_error *err)
{
    json_error_t je;
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) return cel_error_set(err, CEL_ERR_INVALID, "%s:%d: invalid JSON: %s", where, je.line, je.text);
    cel_status st = CEL_OK;
    if (!json_is_object(o)) st = cel_error_set(err, CEL_ERR_INVALID, "%s: must be a JSON object", where);
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (st) break;
        const cel_job_key *k = cel_job_key_find(key);
        if (!k) st = cel_error_set(err, CEL_ERR_INVALID, "%s: unknown key \"%s\"", where, key);
        else if (!(k->scope & (allowed | ((allowed & GN) ? (MI | RP | CT) : 0u))))
            st = cel_error_set(err, CEL_ERR_INVALID, "%s: key \"%s\" is not accepted here", where, key);
        else st = put(s, k, v, where, err);
    }
    json_decref(o);
    return st;
}

cel_status cel_job_spec_set(cel_job_spec *s, const char *key, const char *value, cel_error *err)
{
    const cel_job_key *k = cel_job_key_find(key);
    if (!k) return cel_error_set(err, CEL_ERR_INVALID, "unknown key \"%s\"", key);
    json_t *v = NULL;
    char *end = NULL;
    char opt[64]; /* the option as typed: --chunk-tokens */
    snprintf(opt, sizeof opt, "%s", key);
    for (char *c = opt; *c; c++)
        if (*c == '_') *c = '-';
    key = opt;
    errno = 0;
    switch (k->type) {
    case CEL_JOBKEY_STR:
    case CEL_JOBKEY_LIST: v = json_string(value); break;
    case CEL_JOBKEY_INT: {
        long long x = strtoll(value, &end, 10);
        if (end == value || *end || errno) return cel_error_set(err, CEL_ERR_INVALID, "--%s: '%s' is not an integer", key, value);
        v = json_integer(x);
        break;
    }
    case CEL_JOBKEY_NUM: {
        double x = strtod(value, &end);
        if (end == value || *end || errno) return cel_error_set(err, CEL_ERR_INVALID, "--%s: '%s' is not a number", key, value);
        v = json_real(x);
        break;
    }
    case CEL_JOBKEY_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes")) v = json_true();
        else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no")) v = json_false();
        else return cel_error_set(err, CEL_ERR_INVALID, "--%s: '%s' is not true or false", key, value);
        break;
    }
    if (!v) return cel_error_set(err, CEL_ERR_INVALID, "--%s: '%s' is not valid UTF-8 text", key, value);
    char where[80];
    snprintf(where, sizeof where, "--%s", key);
    cel_status st = put(s, k, v, where, err);
    json_decref(v);
    return st;
}

cel_status cel_job_spec_kind(const cel_job_spec *s, cel_job_kind *out, cel_error *err)
{
    const char *k = json_string_value(json_object_get(s->v, "kind"));
    if (!k) return cel_error_set(err, CEL_ERR_INVALID, "the job's kind is not set (mind, rephrase or crossthink)");
    return cel_job_kind_from_name(k, out, err);
}

cel_status cel_job_spec_validate(const cel_job_spec *s, cel_error *err)
{
    cel_job_kind kind;
    CEL_TRY(cel_job_spec_kind(s, &kind, err));
    const char *key;
    json_t *v;
    json_object_foreach(s->v, key, v)
    {
        const cel_job_key *k = cel_job_key_find(key);
        if (!k) return cel_error_set(err, CEL_ERR_INVALID, "unknown key \"%s\"", key);
        if ((k->scope & (IO | BK | GN)) == 0 && !(k->scope & kind_scope[kind]))
            return cel_error_set(err, CEL_ERR_INVALID, "\"%s\" does not apply to %s jobs", key, kind_names[kind]);
    }
    const char *sh = cel_job_spec_str(s, "shard");
    if (sh) {
        unsigned a, b;
        char tail;
        if (sscanf(sh, "%u/%u%c", &a, &b, &tail) != 2 || b == 0 || a >= b || b > 100000)
            return cel_error_set(err, CEL_ERR_INVALID, "shard '%s' must be I/N with 0 <= I < N <= 100000", sh);
    }
    const char *sp = cel_job_spec_str(s, "split");
    if (sp && strcmp(sp, "id") != 0 && strcmp(sp, "line") != 0)
        return cel_error_set(err, CEL_ERR_INVALID, "split must be id or line, not '%s'", sp);
    const char *wc = cel_job_spec_str(s, "with_chunk");
    if (wc && strcmp(wc, "none") && strcmp(wc, "field") && strcmp(wc, "concat"))
        return cel_error_set(err, CEL_ERR_INVALID, "with_chunk must be none, field or concat, not '%s'", wc);
    const char *items[64];
    size_t n = cel_job_spec_list(s, "formats", items, 64);
    for (size_t i = 0; i < n; i++)
        if (strcmp(items[i], "mcq") != 0 && strcmp(items[i], "open") != 0)
            return cel_error_set(err, CEL_ERR_INVALID, "formats takes mcq and/or open, not '%s'", items[i]);
    const char *ct = cel_job_spec_str(s, "chat_template");
    if (ct && cel_chat_kind_from_name(ct) == CEL_CHAT_AUTO)
        return cel_error_set(err, CEL_ERR_INVALID, "unknown chat_template '%s' (chatml, llama3, llama2, mistral, raw)", ct);
    return CEL_OK;
}

bool cel_job_spec_has(const cel_job_spec *s, const char *key) { return json_object_get(s->v, key) != NULL; }

const char *cel_job_spec_str(const cel_job_spec *s, const char *key)
{
    return json_string_value(json_object_get(s->v, key));
}

size_t cel_job_spec_list(const cel_job_spec *s, const char *key, const char **items, size_t max)
{
    json_t *a = json_object_get(s->v, key);
    size_t n = 0;
    if (json_is_string(a) && max) {
        items[0] = json_string_value(a);
        return 1;
    }
    for (size_t i = 0; i < json_array_size(a) && n < max; i++) items[n++] = json_string_value(json_array_get(a, i));
    return n;
}

cel_status cel_job_spec_json(const cel_job_spec *s, cel_buf *out)
{
    json_t *c = json_copy(s->v);
    if (!c) return CEL_ERR_NOMEM;
    json_object_del(c, "api_key");
    char *js = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(c);
    cel_status st = !js || cel_buf_puts(out, js) ? CEL_ERR_NOMEM : CEL_OK;
    free(js);
    return st;
}

static bool get_int(const cel_job_spec *s, const char *key, int64_t *out)
{
    json_t *v = json_object_get(s->v, key);
    if (!json_is_integer(v)) return false;
    *out = json_integer_value(v);
    return true;
}

/* ======================================================= config fields */

/* A spec key that sets one field of a config struct as it is: one table per
 * struct serves both reading the spec (read_fields) and writing the recorded
 * config (record_fields), so a key cannot be read one way and recorded
 * another, or be read and never recorded. */
typedef enum field_type { F_I32, F_INT, F_U64, F_SIZE, F_F32, F_F64, F_BOOL } field_type;
typedef struct cfg_field {
    const char *key; /* spec key, and the recorded config's */
    field_type type;
    size_t off;      /* of the field in its struct */
} cfg_field;

/* The sizeof term (never evaluated) compares a T * with the member's address:
 * a member of another type draws a distinct-pointer-types diagnostic, an
 * error under the build's -Werror, so a table entry cannot mistype its field. */
#define FIELD(st, key, T, tag, member) {key, tag, offsetof(st, member) + 0 * sizeof((T *)0 == &((st *)0)->member)}
#define FI32(st, key, member) FIELD(st, key, int32_t, F_I32, member)
#define FINT(st, key, member) FIELD(st, key, int, F_INT, member)
#define FU64(st, key, member) FIELD(st, key, uint64_t, F_U64, member)
#define FSIZE(st, key, member) FIELD(st, key, size_t, F_SIZE, member)
#define FF32(st, key, member) FIELD(st, key, float, F_F32, member)
#define FF64(st, key, member) FIELD(st, key, double, F_F64, member)
#define FBOOL(st, key, member) FIELD(st, key, bool, F_BOOL, member)

static const cfg_field common_fields[] = {
    FU64(cel_gen_common, "seed", seed),
    FF32(cel_gen_common, "temperature", sampling.temperature),
    FF32(cel_gen_common, "top_p", sampling.top_p),
    FI32(cel_gen_common, "top_k", sampling.top_k),
    FI32(cel_gen_common, "max_tokens", sampling.max_tokens),
};
static const cfg_field mind_fields[] = {
    FI32(cel_mind_config, "chunk_tokens", chunk_tokens),
    FI32(cel_mind_config, "min_chunk_tokens", min_chunk_tokens),
    FI32(cel_mind_config, "min_tokens", min_output_tokens),
    FI32(cel_mind_config, "min_turns", min_turns),
    FF64(cel_mind_config, "max_repetition", max_repetition),
    FF64(cel_mind_config, "max_echo", max_echo),
};
static const cfg_field rephrase_fields[] = {
    FBOOL(cel_rephrase_config, "route", route_by_quality),
    FI32(cel_rephrase_config, "high_threshold", high_threshold),
    FI32(cel_rephrase_config, "min_doc_tokens", min_doc_tokens),
    FI32(cel_rephrase_config, "min_segment_tokens", min_segment_tokens),
    FF64(cel_rephrase_config, "qa_tokens_per_pair", qa_tokens_per_pair),
};
static const cfg_field crossthink_fields[] = {
    FI32(cel_crossthink_config, "questions", questions),
    FI32(cel_crossthink_config, "chunk_tokens", chunk_tokens),
    FI32(cel_crossthink_config, "max_words", max_open_words),
    FBOOL(cel_crossthink_config, "mcq_to_open", mcq_to_open),
    FBOOL(cel_crossthink_config, "dedup", dedup),
    FI32(cel_crossthink_config, "difficulty_k", difficulty_k),
    FF32(cel_crossthink_config, "answer_temperature", answer_sampling.temperature),
    FI32(cel_crossthink_config, "answer_max_tokens", answer_sampling.max_tokens),
};
/* the backends' knobs: read, never recorded (they do not change what is generated) */
static const cfg_field engine_fields[] = {
    FI32(cel_engine_params, "threads", n_threads),
    FI32(cel_engine_params, "ctx", n_ctx),
};
static const cfg_field remote_fields[] = {
    FBOOL(cel_remote_config, "completions", use_completions),
    FI32(cel_remote_config, "concurrency", max_concurrency),
    FI32(cel_remote_config, "retries", max_retries),
    FF64(cel_remote_config, "timeout", timeout_s),
    FF64(cel_remote_config, "backoff_base", backoff_base_s),
    FF64(cel_remote_config, "backoff_max", backoff_max_s),
};
/* the job's input and output: read only (record_config copies the keys that shape the output as the spec has them) */
static const cfg_field io_fields[] = {
    FSIZE(cel_job_opts, "max_line_bytes", max_line_bytes),
    FU64(cel_job_opts, "shard_records", shard_records),
    FU64(cel_job_opts, "shard_bytes", shard_bytes),
    FU64(cel_job_opts, "frame_records", frame_records),
    FU64(cel_job_opts, "frame_bytes", frame_bytes),
    FINT(cel_job_opts, "zstd_level", zstd_level),
    FF64(cel_job_opts, "checkpoint_s", checkpoint_s),
    FBOOL(cel_job_opts, "rejects", write_rejects),
    FBOOL(cel_job_opts, "restart", restart),
};
#define N_FIELDS(t) (sizeof t / sizeof t[0])

/* Sets each field of cfg whose key the spec holds with the right JSON type
 * (the spec's values were range-checked when they were put); leaves the
 * others at what cfg had (the generators' defaults). */
static void read_fields(const cel_job_spec *s, const cfg_field *f, size_t n, void *cfg)
{
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(s->v, f[i].key);
        char *p = (char *)cfg + f[i].off;
        switch (f[i].type) {
        case F_I32:
            if (json_is_integer(v)) *(int32_t *)p = (int32_t)json_integer_value(v);
            break;
        case F_INT:
            if (json_is_integer(v)) *(int *)p = (int)json_integer_value(v);
            break;
        case F_U64:
            if (json_is_integer(v)) *(uint64_t *)p = (uint64_t)json_integer_value(v);
            break;
        case F_SIZE:
            if (json_is_integer(v)) *(size_t *)p = (size_t)json_integer_value(v);
            break;
        case F_F32:
            if (json_is_number(v)) *(float *)p = (float)json_number_value(v);
            break;
        case F_F64:
            if (json_is_number(v)) *(double *)p = json_number_value(v);
            break;
        case F_BOOL:
            if (json_is_boolean(v)) *(bool *)p = json_is_true(v);
            break;
        }
    }
}

static json_t *num6(double f);

/* Writes every field of cfg into the recorded config o under its key (numbers
 * through num6, so a float records as the decimal it was written as). */
static void record_fields(json_t *o, const cfg_field *f, size_t n, const void *cfg)
{
    for (size_t i = 0; i < n; i++) {
        const char *p = (const char *)cfg + f[i].off;
        json_t *v = NULL;
        switch (f[i].type) {
        case F_I32: v = json_integer(*(const int32_t *)p); break;
        case F_INT: v = json_integer(*(const int *)p); break;
        case F_U64: v = json_integer((json_int_t) * (const uint64_t *)p); break;
        case F_SIZE: v = json_integer((json_int_t) * (const size_t *)p); break;
        case F_F32: v = num6(*(const float *)p); break;
        case F_F64: v = num6(*(const double *)p); break;
        case F_BOOL: v = json_boolean(*(const bool *)p); break;
        }
        json_object_set_new(o, f[i].key, v);
    }
}

/* ============================================================ generation */

struct cel_job_gen {
    cel_job_kind kind;
    cel_template_set *set;
    cel_verifier *verifier;
    cel_gen_backend *be;
    cel_mind_config mind;
    cel_rephrase_config rephrase;
    cel_crossthink_config ct;
    const char *names[64];    /* styles / prompts (point into spec copy) */
    size_t n_names;
    json_t *spec;             /* a copy the names point into */
    char *config;             /* canonical recorded config */
};

/* A path of the spec through the front end's policy (or as is). */
static cel_status resolve(const cel_job_env *env, const char *in, bool for_output, char *out, size_t cap, cel_error *err)
{
    if (env && env->resolve) return env->resolve(env->resolve_ud, in, for_output, out, cap, err);
    if ((size_t)snprintf(out, cap, "%s", in) >= cap) return cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", in);
    return CEL_OK;
}

static cel_status open_backend(cel_job_gen *g, const cel_job_spec *s, const cel_job_env *env, cel_error *err)
{
    const char *urls[64];
    size_t n_urls = cel_job_spec_list(s, "backend", urls, 64);
    bool local = n_urls == 0 || (n_urls == 1 && strcmp(urls[0], "local") == 0);
    const char *ct = cel_job_spec_str(s, "chat_template");
    if (local && env && env->engine) {
        if (cel_job_spec_str(s, "model"))
            return cel_error_set(err, CEL_ERR_INVALID, "\"model\" cannot be chosen here: backend local uses the loaded model");
        cel_gen_local_opts lo = {ct ? cel_chat_kind_from_name(ct) : CEL_CHAT_AUTO, true, NULL, NULL};
        return cel_gen_local_create(env->engine, &lo, &g->be, err);
    }
    cel_gen_backend_opts bo;
    memset(&bo, 0, sizeof bo);
    char model[4096], tok[4096];
    if (local) {
        const char *m = cel_job_spec_str(s, "model");
        if (!m) return cel_error_set(err, CEL_ERR_INVALID, "backend local needs a model (--model PATH), or give --backend URL");
        CEL_TRY(resolve(env, m, false, model, sizeof model, err));
        bo.model_path = model;
        if (env) bo.model.log = bo.engine.log = env->log;
        read_fields(s, engine_fields, N_FIELDS(engine_fields), &bo.engine);
        if (ct) bo.local.chat = cel_chat_kind_from_name(ct);
    } else {
        for (size_t i = 0; i < n_urls; i++)
            if (strncmp(urls[i], "http://", 7) != 0 && strncmp(urls[i], "https://", 8) != 0)
                return cel_error_set(err, CEL_ERR_INVALID, "backend '%s' is neither local nor an http(s):// URL", urls[i]);
    }
    cel_remote_config_default(&bo.remote);
    bo.remote.urls = urls;
    bo.remote.n_urls = local ? 0 : n_urls;
    bo.remote.api_key = cel_job_spec_str(s, "api_key");
    if (cel_job_spec_str(s, "remote_model")) bo.remote.model = cel_job_spec_str(s, "remote_model");
    read_fields(s, remote_fields, N_FIELDS(remote_fields), &bo.remote);
    if (env) bo.remote.log = env->log;
    if (!local && cel_job_spec_str(s, "tokenizer")) {
        CEL_TRY(resolve(env, cel_job_spec_str(s, "tokenizer"), false, tok, sizeof tok, err));
        bo.tokenizer_path = tok;
    }
    return cel_gen_backend_open(&bo, &g->be, err);
}

static size_t names_of(cel_job_gen *g, const char *key)
{
    size_t n = 0;
    json_t *a = json_object_get(g->spec, key);
    for (size_t i = 0; i < json_array_size(a) && n < 64; i++) g->names[n++] = json_string_value(json_array_get(a, i));
    g->n_names = n;
    return n;
}

/* Builds the kind's config: the generators' defaults, then the spec's keys. */
static cel_status build_config(cel_job_gen *g, const cel_job_spec *s, cel_error *err)
{
    cel_gen_common *c;
    if (g->kind == CEL_JOB_MIND) {
        cel_mind_config *m = &g->mind;
        cel_mind_config_default(m);
        c = &m->c;
        m->templates = g->set;
        if (names_of(g, "styles") && !(g->n_names == 1 && strcmp(g->names[0], "all") == 0)) {
            m->styles = g->names;
            m->n_styles = g->n_names;
        }
        json_t *rs = json_object_get(s->v, "random_style");
        if (json_is_boolean(rs)) m->mode = json_is_true(rs) ? CEL_MIND_STYLES_RANDOM : CEL_MIND_STYLES_ALL;
        read_fields(s, mind_fields, N_FIELDS(mind_fields), m);
        const char *wc = cel_job_spec_str(s, "with_chunk");
        if (wc) m->with_chunk = !strcmp(wc, "field") ? CEL_MIND_CHUNK_FIELD : !strcmp(wc, "concat") ? CEL_MIND_CHUNK_CONCAT
                                                                                                      : CEL_MIND_CHUNK_NONE;
    } else if (g->kind == CEL_JOB_REPHRASE) {
        cel_rephrase_config *r = &g->rephrase;
        cel_rephrase_config_default(r);
        c = &r->c;
        r->templates = g->set;
        if (names_of(g, "prompts") && !(g->n_names == 1 && strcmp(g->names[0], "all") == 0)) {
            r->prompts = g->names;
            r->n_prompts = g->n_names;
        }
        read_fields(s, rephrase_fields, N_FIELDS(rephrase_fields), r);
    } else {
        cel_crossthink_config *t = &g->ct;
        cel_crossthink_config_default(t);
        c = &t->c;
        t->templates = g->set;
        if (names_of(g, "formats")) {
            t->mcq = t->open = false;
            for (size_t i = 0; i < g->n_names; i++) {
                if (!strcmp(g->names[i], "mcq")) t->mcq = true;
                if (!strcmp(g->names[i], "open")) t->open = true;
            }
        }
        read_fields(s, crossthink_fields, N_FIELDS(crossthink_fields), t);
        const char *v;
        if ((v = json_string_value(json_object_get(g->spec, "mcq_template")))) t->mcq_template = v;
        if ((v = json_string_value(json_object_get(g->spec, "open_template")))) t->open_template = v;
        if ((v = json_string_value(json_object_get(g->spec, "rl_mcq_template")))) t->rl_mcq_template = v;
        if ((v = json_string_value(json_object_get(g->spec, "rl_open_template")))) t->rl_open_template = v;
        if (t->difficulty_k > 0) {
            CEL_TRY(cel_verifier_create(NULL, &g->verifier, err));
            t->verifier = g->verifier;
        }
    }
    int64_t v;
    read_fields(s, common_fields, N_FIELDS(common_fields), c);
    if (get_int(s, "window", &v)) c->max_inflight_docs = (uint32_t)v;
    return CEL_OK;
}

/* The float as the decimal it was written as (0.7, not 0.699999988). */
static json_t *num6(double f)
{
    char b[32];
    snprintf(b, sizeof b, "%.6g", f);
    return json_real(strtod(b, NULL));
}

/* Adds the tags (name#hash) of the templates a job uses to obj["templates"]. */
static void add_tags(cel_job_gen *g, json_t *obj)
{
    json_t *t = json_object();
    const char *want[4] = {0};
    size_t n_want = 0;
    cel_tmpl_kind k1 = CEL_TMPL_MIND, k2 = CEL_TMPL_MIND;
    const char *const *names = NULL;
    size_t n_names = 0;
    if (g->kind == CEL_JOB_MIND) {
        names = g->mind.styles;
        n_names = g->mind.n_styles;
    } else if (g->kind == CEL_JOB_REPHRASE) {
        k1 = k2 = CEL_TMPL_REPHRASE;
        names = g->rephrase.prompts;
        n_names = g->rephrase.n_prompts;
    } else {
        want[0] = g->ct.mcq_template;
        want[1] = g->ct.open_template;
        want[2] = g->ct.rl_mcq_template;
        want[3] = g->ct.rl_open_template;
        n_want = 4;
        names = want;
        n_names = n_want;
        k1 = CEL_TMPL_QA;
        k2 = CEL_TMPL_RL;
    }
    for (size_t i = 0; i < cel_template_set_count(g->set); i++) {
        const cel_template *tp = cel_template_set_at(g->set, i);
        bool use = false;
        if (n_names) {
            for (size_t j = 0; j < n_names && !use; j++) use = strcmp(names[j], tp->name) == 0;
        } else
            use = tp->kind == k1 || tp->kind == k2;
        if (!use) continue;
        char tag[300];
        cel__template_tag(tp, tag, sizeof tag);
        json_object_set_new(t, tp->name, json_string(tag));
    }
    json_object_set_new(obj, "templates", t);
}

static cel_status record_config(cel_job_gen *g, const cel_job_spec *s, cel_error *err)
{
    json_t *o = json_object();
    if (!o) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    const cel_gen_common *c = g->kind == CEL_JOB_MIND ? &g->mind.c : g->kind == CEL_JOB_REPHRASE ? &g->rephrase.c : &g->ct.c;
    json_object_set_new(o, "kind", json_string(kind_names[g->kind]));
    json_object_set_new(o, "model", json_string(g->be->model_name));
    record_fields(o, common_fields, N_FIELDS(common_fields), c);
    json_t *names = json_array();
    for (size_t i = 0; i < g->n_names; i++) json_array_append_new(names, json_string(g->names[i]));
    if (g->kind == CEL_JOB_MIND) {
        const cel_mind_config *m = &g->mind;
        json_object_set_new(o, "styles", names);
        json_object_set_new(o, "random_style", json_boolean(m->mode == CEL_MIND_STYLES_RANDOM));
        record_fields(o, mind_fields, N_FIELDS(mind_fields), m);
        json_object_set_new(o, "with_chunk", json_string(m->with_chunk == CEL_MIND_CHUNK_FIELD ? "field"
                                                         : m->with_chunk == CEL_MIND_CHUNK_CONCAT ? "concat" : "none"));
    } else if (g->kind == CEL_JOB_REPHRASE) {
        const cel_rephrase_config *r = &g->rephrase;
        json_object_set_new(o, "prompts", names);
        record_fields(o, rephrase_fields, N_FIELDS(rephrase_fields), r);
    } else {
        const cel_crossthink_config *t = &g->ct;
        json_decref(names);
        json_t *f = json_array();
        if (t->mcq) json_array_append_new(f, json_string("mcq"));
        if (t->open) json_array_append_new(f, json_string("open"));
        json_object_set_new(o, "formats", f);
        record_fields(o, crossthink_fields, N_FIELDS(crossthink_fields), t);
    }
    add_tags(g, o);
    /* what shapes the output besides the pipeline */
    static const char *const io_keys[] = {"id_field", "text_field", "quality_field", "max_line_bytes", "split",
                                          "shard_records", "shard_bytes", "frame_records", "frame_bytes",
                                          "zstd_level", "rejects"};
    for (size_t i = 0; i < sizeof io_keys / sizeof io_keys[0]; i++) {
        json_t *v = json_object_get(s->v, io_keys[i]);
        if (v) json_object_set(o, io_keys[i], v);
    }
    g->config = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return g->config ? CEL_OK : cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
}

cel_status cel_job_gen_open(const cel_job_spec *s, const cel_job_env *env, cel_job_gen **out, cel_error *err)
{
    *out = NULL;
    CEL_TRY(cel_job_spec_validate(s, err));
    cel_job_gen *g = calloc(1, sizeof *g);
    if (!g) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    cel_status st = cel_job_spec_kind(s, &g->kind, err);
    if (!st && !(g->spec = json_deep_copy(s->v))) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    if (!st) st = cel_template_set_create(&g->set, err);
    if (!st && env && env->templates_dir) st = cel_template_set_load_dir(g->set, env->templates_dir, err);
    const char *dirs[64];
    size_t nd = st ? 0 : cel_job_spec_list(s, "templates", dirs, 64);
    for (size_t i = 0; i < nd && !st; i++) {
        char p[4096];
        st = resolve(env, dirs[i], false, p, sizeof p, err);
        if (!st) st = cel_template_set_load_dir(g->set, p, err);
    }
    if (!st && cel_template_set_count(g->set) == 0)
        st = cel_error_set(err, CEL_ERR_NOT_FOUND, "no templates: set CELINE_TEMPLATES to celine's templates/ folder or "
                                                   "give templates DIR");
    if (!st) st = build_config(g, s, err);
    if (!st) st = open_backend(g, s, env, err);
    if (!st) st = record_config(g, s, err);
    if (st) {
        cel_job_gen_free(g);
        return st;
    }
    *out = g;
    return CEL_OK;
}

void cel_job_gen_free(cel_job_gen *g)
{
    if (!g) return;
    cel_gen_backend_free(g->be);
    cel_verifier_free(g->verifier);
    cel_template_set_free(g->set);
    json_decref(g->spec);
    free(g->config);
    free(g);
}

cel_gen_backend *cel_job_gen_backend(cel_job_gen *g) { return g->be; }
cel_job_kind cel_job_gen_kind(const cel_job_gen *g) { return g->kind; }
const char *cel_job_gen_config(const cel_job_gen *g) { return g->config; }
bool cel_job_gen_dedups(const cel_job_gen *g) { return g->kind == CEL_JOB_CROSSTHINK && g->ct.dedup; }

cel_status cel_job_gen_pipeline(cel_job_gen *g, const cel_gen_sink *sink, cel_gen_pipeline **out, cel_error *err)
{
    switch (g->kind) {
    case CEL_JOB_MIND: return cel_mind_create(&g->mind, g->be, sink, out, err);
    case CEL_JOB_REPHRASE: return cel_rephrase_create(&g->rephrase, g->be, sink, out, err);
    default: return cel_crossthink_create(&g->ct, g->be, sink, out, err);
    }
}

/* ================================================================= runs */

static cel_status make_pipeline(void *ud, const cel_gen_sink *sink, cel_gen_pipeline **out, cel_error *err)
{
    return cel_job_gen_pipeline(ud, sink, out, err);
}

typedef struct input_policy {
    const cel_job_env *env;
} input_policy;

/* Every file an input expands to goes through the front end's path policy. */
static cel_status check_input(void *ud, const char *path, cel_error *err)
{
    const input_policy *ip = ud;
    char tmp[4096];
    return ip->env->resolve(ip->env->resolve_ud, path, false, tmp, sizeof tmp, err);
}

/* Input specs through the front end's policy: a glob's folder part is
 * resolved, its pattern kept (only the last component may hold * ? [). */
static cel_status resolve_inputs(const cel_job_env *env, const char *const *raw, size_t n_in, char (*paths)[4096],
                                 const char **inputs, cel_error *err)
{
    cel_status st = CEL_OK;
    for (size_t i = 0; i < n_in && !st; i++) {
        const char *glob_at = strpbrk(raw[i], "*?[");
        if (glob_at && env && env->resolve) {
            const char *slash = strrchr(raw[i], '/');
            if (slash && slash > glob_at)
                return cel_error_set(err, CEL_ERR_INVALID, "input '%s': only the last path component may hold * ? [", raw[i]);
            char dir[4096];
            snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - raw[i]) : 1, slash ? raw[i] : ".");
            st = resolve(env, dir, false, paths[i], sizeof paths[i], err);
            size_t l = strlen(paths[i]);
            if (!st && (size_t)snprintf(paths[i] + l, sizeof paths[i] - l, "/%s", slash ? slash + 1 : raw[i]) >= sizeof paths[i] - l)
                st = cel_error_set(err, CEL_ERR_LIMIT, "input '%s': path too long", raw[i]);
        } else {
            st = resolve(env, raw[i], false, paths[i], sizeof paths[i], err);
        }
        inputs[i] = paths[i];
    }
    return st;
}

cel_status cel_job_spec_check_paths(const cel_job_spec *s, const cel_job_env *env, cel_error *err)
{
    const char *raw[1024];
    size_t n_in = cel_job_spec_list(s, "input", raw, 1024);
    char (*paths)[4096] = calloc(n_in + 1, sizeof *paths);
    const char **inputs = calloc(n_in + 1, sizeof *inputs);
    cel_status st = !paths || !inputs ? cel_error_set(err, CEL_ERR_NOMEM, "out of memory") : CEL_OK;
    if (!st) st = resolve_inputs(env, raw, n_in, paths, inputs, err);
    const char *dirs[64];
    size_t nd = cel_job_spec_list(s, "templates", dirs, 64);
    for (size_t i = 0; i < nd && !st; i++) st = resolve(env, dirs[i], false, paths[0], sizeof paths[0], err);
    if (!st && cel_job_spec_str(s, "tokenizer"))
        st = resolve(env, cel_job_spec_str(s, "tokenizer"), false, paths[0], sizeof paths[0], err);
    if (!st && cel_job_spec_str(s, "output")) st = resolve(env, cel_job_spec_str(s, "output"), true, paths[0], sizeof paths[0], err);
    free(paths);
    free(inputs);
    return st;
}

cel_status cel_job_spec_out_dir(const cel_job_spec *s, const cel_job_env *env, char *out, size_t cap, cel_error *err)
{
    const char *o = cel_job_spec_str(s, "output");
    if (!o) return cel_error_set(err, CEL_ERR_INVALID, "the job needs an output folder (--output DIR)");
    char base[4096];
    CEL_TRY(resolve(env, o, true, base, sizeof base, err));
    unsigned a = 0, b = 1;
    const char *sh = cel_job_spec_str(s, "shard");
    if (sh && sscanf(sh, "%u/%u", &a, &b) != 2) return cel_error_set(err, CEL_ERR_INVALID, "shard '%s' must be I/N", sh);
    int n = b > 1 ? snprintf(out, cap, "%s/part-%05u-of-%05u", base, a, b) : snprintf(out, cap, "%s", base);
    if (n < 0 || (size_t)n >= cap) return cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", base);
    return CEL_OK;
}

cel_status cel_job_run_spec(const cel_job_spec *s, const cel_job_env *env, const cel_job_hooks *hooks,
                            cel_job_result *res, cel_error *err)
{
    memset(res, 0, sizeof *res);
    CEL_TRY(cel_job_spec_validate(s, err));
    const char *raw[1024];
    size_t n_in = cel_job_spec_list(s, "input", raw, 1024);
    if (!n_in) return cel_error_set(err, CEL_ERR_INVALID, "the job needs input (--input PATH: a file, a folder or a glob)");
    const char *o = cel_job_spec_str(s, "output");
    if (!o) return cel_error_set(err, CEL_ERR_INVALID, "the job needs an output folder (--output DIR)");
    char (*paths)[4096] = calloc(n_in + 1, sizeof *paths);
    const char **inputs = calloc(n_in, sizeof *inputs);
    cel_status st = !paths || !inputs ? cel_error_set(err, CEL_ERR_NOMEM, "out of memory") : CEL_OK;
    if (!st) st = resolve_inputs(env, raw, n_in, paths, inputs, err);
    char out_dir[4096];
    if (!st) st = resolve(env, o, true, out_dir, sizeof out_dir, err);
    cel_job_gen *g = NULL;
    if (!st) st = cel_job_gen_open(s, env, &g, err);
    if (st) {
        free(paths);
        free(inputs);
        return st;
    }
    cel_job_opts jo;
    cel_job_opts_default(&jo);
    jo.inputs = inputs;
    jo.n_inputs = n_in;
    jo.id_field = cel_job_spec_str(s, "id_field");
    jo.text_field = cel_job_spec_str(s, "text_field");
    jo.quality_field = cel_job_spec_str(s, "quality_field");
    read_fields(s, io_fields, N_FIELDS(io_fields), &jo);
    jo.out_dir = out_dir;
    const char *sh = cel_job_spec_str(s, "shard");
    if (sh) sscanf(sh, "%u/%u", &jo.part, &jo.parts);
    const char *sp = cel_job_spec_str(s, "split");
    jo.split = sp && strcmp(sp, "line") == 0 ? CEL_JOB_SPLIT_LINE : CEL_JOB_SPLIT_ID;
    jo.config_json = cel_job_gen_config(g);
    jo.dedup = cel_job_gen_dedups(g);
    input_policy ip = {env};
    if (env && env->resolve) {
        jo.input_check = check_input;
        jo.input_check_ud = &ip;
    }
    if (env) jo.log = env->log;
    st = cel_job_run(&jo, make_pipeline, g, cel_job_gen_backend(g), hooks, res, err);
    cel_job_gen_free(g);
    free(paths);
    free(inputs);
    return st;
}

/* ================================================================ JSON */

static cel_status dump_into(json_t *o, cel_buf *out)
{
    char *js = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    cel_status st = !js || cel_buf_puts(out, js) ? CEL_ERR_NOMEM : CEL_OK;
    free(js);
    return st;
}

cel_status cel_job_result_json(const cel_job_result *r, cel_buf *out)
{
    json_t *o = json_object();
    if (!o) return CEL_ERR_NOMEM;
    json_object_set_new(o, "state", json_string(r->done ? "done" : "stopped"));
    json_object_set_new(o, "dir", json_string(r->dir));
    json_object_set_new(o, "resumed", json_boolean(r->resumed));
    if (r->already_done) json_object_set_new(o, "already_done", json_true());
    json_object_set_new(o, "counts", cel__job_counts_json(&r->c));
    json_object_set_new(o, "elapsed_s", json_real(r->elapsed_s));
    json_object_set_new(o, "docs", json_integer((json_int_t)r->docs_session));
    json_object_set_new(o, "units", json_integer((json_int_t)r->units_session)); /* chunk x style (MIND), segment x prompt, ... */
    json_object_set_new(o, "requests", json_integer((json_int_t)r->requests_session));
    json_object_set_new(o, "gen_tokens", json_integer((json_int_t)r->gen_tokens_session));
    double e = r->elapsed_s > 0 ? r->elapsed_s : 1e-9;
    json_object_set_new(o, "docs_per_s", json_real(r->docs_session / e));
    json_object_set_new(o, "gen_tokens_per_s", json_real(r->gen_tokens_session / e));
    json_object_set_new(o, "records_per_s", json_real(r->records_session / e));
    if (r->engine_s > 0) {
        json_object_set_new(o, "engine_s", json_real(r->engine_s));
        json_object_set_new(o, "pipeline_overhead_pct", json_real(100.0 * (r->elapsed_s - r->engine_s) / e));
    }
    return dump_into(o, out);
}

cel_status cel_job_progress_json(const cel_job_progress *p, cel_buf *out)
{
    json_t *o = json_object();
    if (!o) return CEL_ERR_NOMEM;
    json_object_set_new(o, "progress", json_real(p->input_bytes_total ? (double)p->input_bytes_done / (double)p->input_bytes_total : 1.0));
    json_object_set_new(o, "input_bytes", json_integer((json_int_t)p->input_bytes_done));
    json_object_set_new(o, "input_bytes_total", json_integer((json_int_t)p->input_bytes_total));
    json_object_set_new(o, "docs_done", json_integer((json_int_t)p->docs_done));
    json_object_set_new(o, "counts", cel__job_counts_json(&p->c));
    json_object_set_new(o, "elapsed_s", json_real(p->elapsed_s));
    json_object_set_new(o, "docs_per_s", json_real(p->docs_per_s));
    json_object_set_new(o, "records_per_s", json_real(p->records_per_s));
    json_object_set_new(o, "gen_tokens_per_s", json_real(p->gen_tokens_per_s));
    json_object_set_new(o, "eta_s", p->eta_s >= 0 ? json_real(p->eta_s) : json_null());
    json_object_set_new(o, "units", json_integer((json_int_t)p->units));
    json_object_set_new(o, "final", json_boolean(p->final));
    return dump_into(o, out);
}
