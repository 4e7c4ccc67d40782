/*
 * job_internal.h - what the corpus-job files share: input expansion
 * (job_input.c), output shards (shard_writer.c), the state file and the
 * checkpoint record (job_state.c), used by the runner (job.c) and by
 * verify / merge (job_verify.c).
 */
#ifndef CEL_JOB_INTERNAL_H
#define CEL_JOB_INTERNAL_H

#include <jansson.h>

#include "celine/job.h"

/* ---- inputs (job_input.c) ---- */
typedef struct cel__job_input {
    char *path;
    uint64_t size;
} cel__job_input;
/* Expands input specs (files, folders searched recursively for *.jsonl,
 * *.jsonl.zst, *.json, *.json.zst, globs) into files, in spec order, each
 * folder's or glob's matches sorted by path. A spec matching nothing, or a
 * file named twice, is an error. check (optional) vets every file found. */
cel_status cel__job_inputs_expand(const char *const *specs, size_t n,
                                  cel_status (*check)(void *ud, const char *path, cel_error *err), void *check_ud,
                                  cel__job_input **out, size_t *n_out, cel_error *err);
void cel__job_inputs_free(cel__job_input *in, size_t n);

/* Stable 64-bit key hash used by --shard and the coverage digests. */
uint64_t cel__job_key_hash(const char *s, size_t n);
/* Digest contribution of an input position (file name + line). */
uint64_t cel__job_pos_hash(const char *path, uint64_t line);

/* ---- output shards (shard_writer.c) ---- */
typedef struct cel__shard_writer cel__shard_writer;
/* Opens the writer over dir. The shard files are shard-NNNNN.jsonl.zst. */
cel_status cel__shard_writer_open(const char *dir, int level, cel__shard_writer **out, cel_error *err);
void cel__shard_writer_free(cel__shard_writer *w);
/* Compresses data (whole JSON lines) into one independent zstd frame
 * appended to shard `index` (created when missing); *frame_len gets the
 * compressed length. The file is fsync'ed before returning. */
cel_status cel__shard_write_frame(cel__shard_writer *w, uint32_t index, const char *data, size_t len,
                                  uint64_t *frame_len, cel_error *err);
/* Compresses data into a standalone file (write temp + fsync + rename). */
cel_status cel__zstd_write_file(const char *path, const char *data, size_t len, int level, cel_error *err);
/* Decompresses the first max_len bytes (0: all) of a file of zstd frames
 * into out (appended; more than max_bytes decoded is an error, 0: no cap). */
cel_status cel__zstd_read_file(const char *path, uint64_t max_len, size_t max_bytes, cel_buf *out, cel_error *err);
/* Shard file name for index (into out[cap]). */
void cel__shard_name(uint32_t index, char *out, size_t cap);
/* Truncates path to len (a missing file is fine when len is 0). */
cel_status cel__truncate(const char *path, uint64_t len, cel_error *err);
/* Appends data to path and fsyncs it; *new_len gets the file's length. */
cel_status cel__append_sync(const char *path, const char *data, size_t len, uint64_t *new_len, cel_error *err);
/* Writes path atomically: temp file, fsync, rename, fsync of the folder. */
cel_status cel__write_atomic(const char *path, const char *data, size_t len, cel_error *err);
/* mkdir -p. */
cel_status cel__mkdirs(const char *path, cel_error *err);

/* ---- state (job_state.c) ---- */
#define CEL__JOB_STATE_VERSION 1
typedef struct cel__job_shard {
    uint64_t bytes;
    uint64_t records;
    uint64_t frames;
} cel__job_shard;

/* A checkpoint: everything before input position (file, line) is processed. */
typedef struct cel__job_state {
    char *config;           /* canonical config JSON */
    char *inputs_json;      /* [[path, size], ...] */
    uint32_t part, parts;
    cel_job_split split;
    uint64_t seq;           /* checkpoint number */
    bool done;
    uint32_t file;          /* input position: file index ... */
    uint64_t line;          /* ... and lines consumed in it */
    uint64_t input_bytes;   /* compressed bytes of the inputs before the position (progress) */
    cel_job_counts c;
    uint64_t all_digest, mine_digest; /* sums of cel__job_pos_hash over every / this part's line */
    cel__job_shard *shards; /* shards[0..n_shards) */
    uint32_t n_shards;
    uint64_t rejects_bytes, errors_bytes;
    uint64_t pending_records; /* records of the open frame, in .pending-<seq>.zst */
    uint64_t pending_bytes;   /* its uncompressed length */
    double elapsed_s;         /* over every session */
    uint32_t sessions;
} cel__job_state;
void cel__job_state_free(cel__job_state *s);
cel_status cel__job_state_to_json(const cel__job_state *s, cel_buf *out);
cel_status cel__job_state_load(const char *dir, cel__job_state *s, bool *exists, cel_error *err);
/* Parses state.json text (path for messages); strict: every key checked. */
cel_status cel__job_state_parse(const char *text, size_t len, const char *path, cel__job_state *s, cel_error *err);
cel_status cel__job_state_save(const char *dir, const cel__job_state *s, cel_error *err);
/* The counters as JSON (manifest / status / results). */
json_t *cel__job_counts_json(const cel_job_counts *c);
cel_status cel__job_counts_from_json(const json_t *o, cel_job_counts *c, const char *where, cel_error *err);
void cel__pending_name(uint64_t seq, char *out, size_t cap);
/* Writes dir/manifest.json for a finished (or cancelled) part. */
cel_status cel__job_write_manifest(const char *dir, const cel__job_state *s, const char *const *input_paths,
                                   size_t n_inputs, cel_error *err);

#endif
