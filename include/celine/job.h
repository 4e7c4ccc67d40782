/*
 * celine/job.h - corpus jobs: the MIND, rephrase and CrossThink pipelines run
 * over corpora of any size, streaming, resumable and split across machines.
 *
 *   inputs (.jsonl / .jsonl.zst: files, folders, globs)
 *      -> lines -> documents (this part's share, --shard I/N)
 *      -> cel_gen_pipeline (local engine | remote OpenAI-compatible servers)
 *      -> records in input order -> zstd frames -> output shards + manifest
 *
 * Exact resume. Output is cut into zstd frames at document boundaries chosen
 * only from the record stream (a frame closes at the first boundary where it
 * holds frame_records records or frame_bytes bytes), so frame and shard
 * boundaries never depend on timing. A checkpoint (state.json, written to a
 * temporary file, fsync'ed, renamed) records the input position up to which
 * every document's records are on disk, the shards' lengths, the counters,
 * and the records of the frame still open (kept in a small side file,
 * .pending-N.zst). On restart the shards are truncated to their recorded
 * lengths, the open frame is reloaded and reading continues after the
 * recorded position: the output holds every record exactly once and, when
 * generation is deterministic, is byte-identical to an uninterrupted run.
 * Resuming with another configuration or changed inputs is refused.
 *
 * Sharding. --shard I/N keeps the lines whose key hashes to I modulo N (the
 * document id, or file name + line number), so N machines given the same
 * inputs write disjoint outputs (in OUT/part-IIIII-of-NNNNN/) whose union is
 * the whole input; cel_job_verify checks that (counts and position digests),
 * cel_job_merge writes the combined manifest.
 *
 * Bad input never stops a job silently: an invalid JSON line, a line over
 * the length cap, or a corrupt or truncated zstd shard is reported with its
 * file and line (input_errors.jsonl, the log, the counters) and skipped.
 *
 * Memory is bounded by the document window, one frame and one line,
 * whatever the corpus size (CrossThink's question dedup also keeps 16 bytes
 * per emitted record).
 *
 * Thread model: a job runs on the calling thread; hooks run on it too.
 */
#ifndef CELINE_JOB_H
#define CELINE_JOB_H

#include "celine/common.h"
#include "celine/generate.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cel_job_kind {
    CEL_JOB_MIND = 0,
    CEL_JOB_REPHRASE,
    CEL_JOB_CROSSTHINK,
    CEL_JOB__KINDS,
} cel_job_kind;
const char *cel_job_kind_name(cel_job_kind k); /* "mind" | "rephrase" | "crossthink" */
/* CEL_OK and *out set when name is one of the above. */
cel_status cel_job_kind_from_name(const char *name, cel_job_kind *out, cel_error *err);

/* ================================================================ specs
 *
 * A job specification is one JSON object: the config file of `celine job
 * run --config`, the body of the server's POST /v1/jobs, and (for the
 * generation keys) of POST /v1/generate/<kind>. Every key is listed in the
 * key table (cel_job_key_at); the CLI turns each into an option
 * (--chunk-tokens for "chunk_tokens"). Unknown keys, wrong types, values out
 * of range and keys of another kind are errors naming the key.
 */
enum {
    CEL_JOBKEY_IO = 1 << 0,        /* input / output / sharding */
    CEL_JOBKEY_BACKEND = 1 << 1,   /* how to generate (not part of the recorded config) */
    CEL_JOBKEY_GEN = 1 << 2,       /* every pipeline */
    CEL_JOBKEY_MIND = 1 << 3,
    CEL_JOBKEY_REPHRASE = 1 << 4,
    CEL_JOBKEY_CROSSTHINK = 1 << 5,
};
typedef enum cel_job_key_type {
    CEL_JOBKEY_STR = 0,
    CEL_JOBKEY_INT,
    CEL_JOBKEY_NUM,
    CEL_JOBKEY_BOOL,
    CEL_JOBKEY_LIST, /* array of strings; from text: comma-separated */
} cel_job_key_type;
typedef struct cel_job_key {
    const char *name;   /* "chunk_tokens" */
    cel_job_key_type type;
    unsigned scope;     /* CEL_JOBKEY_* */
    double lo, hi;      /* INT / NUM range */
    const char *metavar;
    const char *help;
} cel_job_key;
size_t cel_job_key_count(void);
const cel_job_key *cel_job_key_at(size_t i);
const cel_job_key *cel_job_key_find(const char *name);

typedef struct cel_job_spec cel_job_spec;
cel_status cel_job_spec_create(cel_job_spec **out, cel_error *err);
void cel_job_spec_free(cel_job_spec *s);
/* Merges a JSON object into s (later values win). allowed: the CEL_JOBKEY_*
 * scopes accepted (others are errors naming the key); where names the
 * source in messages. */
cel_status cel_job_spec_merge_json(cel_job_spec *s, const char *json, size_t len, unsigned allowed, const char *where,
                                   cel_error *err);
/* Sets one key from text ("300", "true", "a,b"); "kind" is accepted too. */
cel_status cel_job_spec_set(cel_job_spec *s, const char *key, const char *value, cel_error *err);
/* Checks the keys against the kind (which must be set). */
cel_status cel_job_spec_validate(const cel_job_spec *s, cel_error *err);
cel_status cel_job_spec_kind(const cel_job_spec *s, cel_job_kind *out, cel_error *err);
bool cel_job_spec_has(const cel_job_spec *s, const char *key);
/* A string / list value (NULL / 0 when unset): for front ends. */
const char *cel_job_spec_str(const cel_job_spec *s, const char *key);
size_t cel_job_spec_list(const cel_job_spec *s, const char *key, const char **items, size_t max);
/* The spec as compact JSON, secrets ("api_key") left out. */
cel_status cel_job_spec_json(const cel_job_spec *s, cel_buf *out);

/* What a front end lends a spec: templates, an engine, a path policy. */
typedef struct cel_job_env {
    const char *templates_dir; /* built-in templates (celine's templates/), or NULL */
    /* backend "local": when set, generation goes to this engine, which runs
     * its own thread (the server's); else the spec's "model" is loaded. */
    cel_engine *engine;
    /* When set, every path of the spec goes through it (the server keeps
     * requests inside its data folder): in -> out[cap]. for_output: the path
     * may not exist yet (its parent must). Files found in input folders and
     * globs come through it too, as absolute paths. */
    cel_status (*resolve)(void *ud, const char *in, bool for_output, char *out, size_t cap, cel_error *err);
    void *resolve_ud;
    cel_logger log;
} cel_job_env;

/* Templates, verifier and backend opened from a spec, ready to build
 * pipelines (one per job session or per one-shot request). */
typedef struct cel_job_gen cel_job_gen;
cel_status cel_job_gen_open(const cel_job_spec *s, const cel_job_env *env, cel_job_gen **out, cel_error *err);
void cel_job_gen_free(cel_job_gen *g);
cel_gen_backend *cel_job_gen_backend(cel_job_gen *g);
cel_job_kind cel_job_gen_kind(const cel_job_gen *g);
/* A new pipeline writing to sink (free it with cel_gen_pipeline_free before g). */
cel_status cel_job_gen_pipeline(cel_job_gen *g, const cel_gen_sink *sink, cel_gen_pipeline **out, cel_error *err);
/* The recorded configuration: kind, every generation key with defaults
 * filled, the templates used (name#hash), the model; canonical (sorted keys). */
const char *cel_job_gen_config(const cel_job_gen *g);
/* True when the pipeline drops repeated questions (state a resumed job must rebuild). */
bool cel_job_gen_dedups(const cel_job_gen *g);

/* ================================================================= jobs */
typedef enum cel_job_split { CEL_JOB_SPLIT_ID = 0, CEL_JOB_SPLIT_LINE } cel_job_split;

/* Input errors by kind (counters, manifest keys "invalid_line", ...). */
typedef enum cel_job_input_error {
    CEL_JOB_ERR_INVALID_LINE = 0, /* not JSON, not an object, no text field, bad id/quality */
    CEL_JOB_ERR_LINE_TOO_LONG,
    CEL_JOB_ERR_CORRUPT_SHARD,    /* zstd data that does not decode, or a truncated frame */
    CEL_JOB_ERR_UNREADABLE,       /* a file that cannot be opened or read */
    CEL_JOB_ERR__COUNT,
} cel_job_input_error;
const char *cel_job_input_error_name(cel_job_input_error e);

typedef struct cel_job_counts {
    uint64_t lines;          /* non-blank lines (and error spots) of every input, all parts */
    uint64_t lines_mine;     /* of them, this part's */
    uint64_t docs;           /* documents pushed (this part) */
    uint64_t records;
    uint64_t record_tokens;
    uint64_t dropped[CEL_DROP__COUNT];
    uint64_t input_errors[CEL_JOB_ERR__COUNT];
    uint64_t out_bytes;      /* compressed bytes in shards */
    uint64_t shards;
} cel_job_counts;

typedef struct cel_job_progress {
    cel_job_counts c;           /* totals over every session of the job */
    uint64_t docs_done;         /* documents whose records were emitted */
    uint64_t input_bytes_done;  /* position in the inputs (compressed bytes) */
    uint64_t input_bytes_total;
    double elapsed_s;           /* this session */
    double docs_per_s, records_per_s, gen_tokens_per_s; /* this session */
    double eta_s;               /* < 0: unknown */
    uint64_t gen_tokens;        /* this session, as the backend reports */
    uint64_t units;             /* this session: chunk x style units */
    bool resumed;
    bool final;
} cel_job_progress;

typedef struct cel_job_hooks {
    /* Called about every progress_interval_s (default 2) and once at the end. */
    void (*progress)(void *ud, const cel_job_progress *p);
    double progress_interval_s;
    /* Polled often; returning true stops the job after a checkpoint (what
     * is done is kept; running the job again continues it). */
    bool (*cancelled)(void *ud);
    void *ud;
} cel_job_hooks;

/* Everything a job needs besides its pipeline. */
typedef struct cel_job_opts {
    const char *const *inputs;  /* files, folders (their *.jsonl, *.jsonl.zst, *.json) or globs */
    size_t n_inputs;
    const char *id_field, *text_field, *quality_field; /* defaults id / text / quality */
    size_t max_line_bytes;      /* longer lines are reported and skipped (default 64 MiB) */
    const char *out_dir;        /* created when missing */
    uint32_t part, parts;       /* --shard part/parts (parts 0 or 1: no split) */
    cel_job_split split;        /* what --shard hashes (default: the document id) */
    uint64_t shard_records;     /* a shard is closed after this many records (0: no limit) */
    uint64_t shard_bytes;       /* ... or this many compressed bytes (default 256 MiB; 0: no limit) */
    uint64_t frame_records;     /* a zstd frame closes at the first document boundary past this (default 1000) */
    uint64_t frame_bytes;       /* ... or this many uncompressed bytes (default 4 MiB) */
    int zstd_level;             /* default 3 */
    double checkpoint_s;        /* checkpoint at least this often when documents finish (default 10; 0: at every one) */
    bool write_rejects;         /* rejects.jsonl: every dropped unit with its reason */
    bool restart;               /* discard an unfinished job in out_dir instead of resuming it */
    const char *config_json;    /* recorded; a resumed job must have the same (canonical JSON) */
    bool dedup;                 /* the pipeline dedups records: rebuild its set on resume */
    /* optional: vets every input file found (a server keeps jobs inside its data folder) */
    cel_status (*input_check)(void *ud, const char *path, cel_error *err);
    void *input_check_ud;
    cel_logger log;
} cel_job_opts;
void cel_job_opts_default(cel_job_opts *o);

/* Makes the job's pipeline over the job's sink (called once per session). */
typedef cel_status (*cel_job_pipeline_fn)(void *ud, const cel_gen_sink *sink, cel_gen_pipeline **out, cel_error *err);

typedef struct cel_job_result {
    cel_job_counts c;
    bool done;                  /* every input processed (false: cancelled) */
    bool resumed;               /* continued an earlier session */
    bool already_done;          /* nothing to do: the job had finished */
    double elapsed_s;           /* this session */
    double engine_s;            /* local backend: time inside engine steps (overhead = elapsed - engine) */
    uint64_t docs_session, records_session, gen_tokens_session, units_session, requests_session;
    char dir[1024];             /* where this part's files are */
} cel_job_result;

/* Runs (or resumes) a job. be: the backend the pipelines use (for the
 * token counters in the progress). Returns CEL_OK when done or cancelled
 * (see res->done); an error otherwise (the last checkpoint stays valid). */
cel_status cel_job_run(const cel_job_opts *o, cel_job_pipeline_fn make, void *make_ud, cel_gen_backend *be,
                       const cel_job_hooks *hooks, cel_job_result *res, cel_error *err);
/* A job from a spec: cel_job_gen_open + cel_job_run with the spec's IO keys. */
cel_status cel_job_run_spec(const cel_job_spec *s, const cel_job_env *env, const cel_job_hooks *hooks,
                            cel_job_result *res, cel_error *err);
/* Runs every path of the spec (inputs, templates, tokenizer, output)
 * through env->resolve, opening nothing: a server refuses a job early. */
cel_status cel_job_spec_check_paths(const cel_job_spec *s, const cel_job_env *env, cel_error *err);
/* The job's output folder for a spec (OUT, or OUT/part-I-of-N). */
cel_status cel_job_spec_out_dir(const cel_job_spec *s, const cel_job_env *env, char *out, size_t cap, cel_error *err);

/* The result (or a progress snapshot) as one JSON object. */
cel_status cel_job_result_json(const cel_job_result *r, cel_buf *out);
cel_status cel_job_progress_json(const cel_job_progress *p, cel_buf *out);

/* ======================================================== status, verify */
/* State of the job in dir (a part folder or a single-part job) as JSON:
 * {"state": "running|done|...", "counts": ..., "config": ...}. */
cel_status cel_job_status(const char *dir, cel_buf *out, cel_error *err);
/* Checks the job in dir: a finished single-part job, or every part
 * folder part-*-of-N present, finished, with one config and the same
 * inputs, disjoint and together covering every input line (counts and
 * position digests); each shard's length as recorded, and (deep) every
 * frame decodes to the recorded number of JSON records. report gets JSON;
 * CEL_ERR_FORMAT names the first problem. */
cel_status cel_job_verify(const char *dir, bool deep, cel_buf *report, cel_error *err);
/* Verifies, then writes dir/manifest.json for the whole job (totals, every
 * shard's path relative to dir, the parts). */
cel_status cel_job_merge(const char *dir, bool deep, cel_buf *report, cel_error *err);

/* ============================================ the input reader (exposed for tests and fuzzing) */
/* Reads lines from JSON Lines, plain or zstd-compressed (detected by the
 * frame magic), with a cap on line length. Lines over the cap and corrupt
 * or truncated zstd data are reported (kind) and skipped, never fatal. */
typedef struct cel_jsonl_reader cel_jsonl_reader;
typedef enum cel_jsonl_kind {
    CEL_JSONL_LINE = 0,  /* *line / *len: the line without its newline */
    CEL_JSONL_EOF,
    CEL_JSONL_TOO_LONG,  /* skipped; msg says where */
    CEL_JSONL_CORRUPT,   /* zstd data did not decode, or ended inside a frame: the rest is skipped */
} cel_jsonl_kind;
cel_status cel_jsonl_open(const char *path, size_t max_line_bytes, cel_jsonl_reader **out, cel_error *err);
/* Over a stream the caller keeps owning (name for messages). */
cel_status cel_jsonl_open_stream(FILE *f, const char *name, size_t max_line_bytes, cel_jsonl_reader **out,
                                 cel_error *err);
/* The next line or event. The line stays valid until the next call. A
 * read error is CEL_ERR_IO. msg (optional) explains TOO_LONG / CORRUPT. */
cel_status cel_jsonl_next(cel_jsonl_reader *r, cel_jsonl_kind *kind, const char **line, size_t *len, cel_error *msg);
uint64_t cel_jsonl_line_number(const cel_jsonl_reader *r); /* of the last line / event (1-based) */
uint64_t cel_jsonl_bytes_read(const cel_jsonl_reader *r);  /* of the file consumed so far (compressed) */
bool cel_jsonl_compressed(const cel_jsonl_reader *r);
void cel_jsonl_free(cel_jsonl_reader *r);

#ifdef __cplusplus
}
#endif
#endif
