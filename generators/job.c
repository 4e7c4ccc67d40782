/*
 * job.c - the corpus job runner: streams input lines into a pipeline,
 * writes its records into zstd frames and shards, and checkpoints so that a
 * job killed at any moment continues exactly where its output ends.
 *
 * Document indices. The pipeline emits each document's items (records and
 * drops) together, in push order, and counts the document in docs_done
 * right after; so an item seen by the sink belongs to document docs_done
 * (session index), and when docs_done (or the next item's document) moves
 * past d, every item of documents < d has been seen: a "boundary".
 *
 * Frames. The records of the open frame accumulate in memory; at the first
 * boundary where the frame holds frame_records records or frame_bytes
 * bytes it is compressed and appended to the current shard. That rule reads
 * only the record stream, so frame and shard cuts are the same in every run.
 *
 * Checkpoints happen at boundaries (a frame close, every checkpoint_s, a
 * cancel, the end): the open frame goes to .pending-<seq>.zst, rejects and
 * input errors up to the boundary are appended to their files, and
 * state.json records the input position just after the boundary's last
 * document (or the live position when every pushed document is complete),
 * the counters as of that position, the shard lengths and the pending file.
 * Input errors are queued with the number of documents pushed before them,
 * so each is written by exactly the checkpoint whose position passes it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gen_internal.h"
#include "job_internal.h"

/* Input-side counters at a position. */
typedef struct in_snap {
    uint32_t file;
    uint64_t line;
    uint64_t input_bytes;
    uint64_t lines, lines_mine, docs;
    uint64_t input_errors[CEL_JOB_ERR__COUNT];
    uint64_t all_digest, mine_digest;
} in_snap;

/* An input error waiting for the checkpoint that passes it. */
typedef struct err_ent {
    uint64_t seq; /* documents pushed (this session) before it */
    char *line;   /* JSON line for input_errors.jsonl, with its newline */
} err_ent;

typedef struct job {
    const cel_job_opts *o;
    char dir[1024];
    int lock_fd;                  /* dir/.lock, flock'ed while the job runs */
    char *config;                 /* canonical */
    char *inputs_json;
    cel__job_input *in;
    size_t n_in;
    uint64_t total_bytes;
    cel__shard_writer *w;
    cel_gen_pipeline *p;
    cel_gen_backend *be;
    const cel_job_hooks *h;
    cel__job_state st;            /* the last checkpoint */
    uint64_t ckpt_doc;            /* session boundary of the last checkpoint */
    bool have_pending_file;       /* st.seq's .pending file exists */
    /* input side, live */
    in_snap live;
    in_snap start;                /* where this session started */
    uint64_t pushed;              /* documents pushed this session */
    in_snap *fifo;                /* snapshots after documents fifo_base .. fifo_base + fifo_n - 1 */
    size_t fifo_head, fifo_n, fifo_cap;
    uint64_t fifo_base;
    err_ent *errs;
    size_t errs_n, errs_cap;
    size_t errs_bytes;
    /* output side, live */
    cel_buf frame;
    uint64_t frame_records;
    cel_buf rejects;
    uint64_t records;
    uint64_t dropped[CEL_DROP__COUNT];
    uint64_t tokens_base;         /* record tokens of earlier sessions */
    uint64_t records_base;        /* records of earlier sessions */
    uint64_t last_item_doc;       /* session document of the last sink item; UINT64_MAX: none */
    bool in_callback_ckpt_error;
    cel_error cb_err;
    /* timing */
    double t0, last_ckpt_t, last_progress_t;
    uint64_t bytes_at_start;
} job;

static const cel_job_opts *opts(const job *j) { return j->o; }

/* ---------------------------------------------------------------- fifo */

static cel_status fifo_push(job *j, const in_snap *s, cel_error *err)
{
    if (j->fifo_n == j->fifo_cap) {
        size_t nc = j->fifo_cap ? j->fifo_cap * 2 : 64;
        in_snap *nf = malloc(nc * sizeof *nf);
        if (!nf) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < j->fifo_n; i++) nf[i] = j->fifo[(j->fifo_head + i) % j->fifo_cap];
        free(j->fifo);
        j->fifo = nf;
        j->fifo_cap = nc;
        j->fifo_head = 0;
    }
    j->fifo[(j->fifo_head + j->fifo_n) % j->fifo_cap] = *s;
    j->fifo_n++;
    return CEL_OK;
}

/* The snapshot taken right after session document d was pushed. */
static const in_snap *fifo_get(const job *j, uint64_t d)
{
    if (d < j->fifo_base || d - j->fifo_base >= j->fifo_n) return NULL;
    return &j->fifo[(j->fifo_head + (size_t)(d - j->fifo_base)) % j->fifo_cap];
}

/* Forgets snapshots of documents < d. */
static void fifo_drop_before(job *j, uint64_t d)
{
    while (j->fifo_n > 0 && j->fifo_base < d) {
        j->fifo_head = (j->fifo_head + 1) % j->fifo_cap;
        j->fifo_n--;
        j->fifo_base++;
    }
    if (j->fifo_n == 0 && j->fifo_base < d) j->fifo_base = d;
}

/* ----------------------------------------------------------- file names */

static cel_status path_in(const job *j, const char *name, char *out, size_t cap, cel_error *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s", j->dir, name) >= cap)
        return cel_error_set(err, CEL_ERR_LIMIT, "%s/%s: path too long", j->dir, name);
    return CEL_OK;
}

static bool shard_full(const cel_job_opts *o, const cel__job_shard *s)
{
    return (o->shard_records && s->records >= o->shard_records) || (o->shard_bytes && s->bytes >= o->shard_bytes);
}

/* ----------------------------------------------------------- checkpoint */

static bool frame_due(const job *j)
{
    const cel_job_opts *o = opts(j);
    return j->frame_records > 0 &&
           ((o->frame_records && j->frame_records >= o->frame_records) || (o->frame_bytes && j->frame.len >= o->frame_bytes));
}

/* Compresses the open frame into the current shard (a new one when the last is full). */
static cel_status close_frame(job *j, cel_error *err)
{
    cel__job_state *st = &j->st;
    uint32_t idx = st->n_shards;
    if (st->n_shards > 0 && !shard_full(opts(j), &st->shards[st->n_shards - 1])) idx = st->n_shards - 1;
    if (idx == st->n_shards) {
        cel__job_shard *ns = realloc(st->shards, (st->n_shards + 1) * sizeof *ns);
        if (!ns) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        st->shards = ns;
        st->shards[st->n_shards++] = (cel__job_shard){0, 0, 0};
    }
    uint64_t flen = 0;
    CEL_TRY(cel__shard_write_frame(j->w, idx, j->frame.data, j->frame.len, &flen, err));
    st->shards[idx].bytes += flen;
    st->shards[idx].records += j->frame_records;
    st->shards[idx].frames++;
    cel_buf_reset(&j->frame);
    j->frame_records = 0;
    return CEL_OK;
}

/* Writes a checkpoint at session boundary d (documents < d are complete).
 * close: close the open frame first (its rule said so, or the job ends). */
static cel_status checkpoint(job *j, uint64_t d, bool close, bool done, cel_error *err)
{
    cel__job_state *st = &j->st;
    const in_snap *snap = d == j->pushed ? &j->live : d == 0 ? &j->start : fifo_get(j, d - 1);
    if (!snap) return cel_error_set(err, CEL_ERR_INTERNAL, "job: no input position for document %llu", (unsigned long long)d);
    in_snap pos = *snap;
    if (close && j->frame_records > 0) CEL_TRY(close_frame(j, err));
    uint64_t seq = st->seq + 1;
    char name[64], path[1200];
    if (j->frame.len > 0) {
        cel__pending_name(seq, name, sizeof name);
        CEL_TRY(path_in(j, name, path, sizeof path, err));
        CEL_TRY(cel__zstd_write_file(path, j->frame.data, j->frame.len, opts(j)->zstd_level, err));
    }
    if (j->rejects.len) {
        CEL_TRY(path_in(j, "rejects.jsonl", path, sizeof path, err));
        CEL_TRY(cel__append_sync(path, j->rejects.data, j->rejects.len, &st->rejects_bytes, err));
        cel_buf_reset(&j->rejects);
    }
    /* input errors before the position */
    size_t k = 0;
    cel_buf eb;
    cel_buf_init(&eb);
    while (k < j->errs_n && (d == j->pushed || j->errs[k].seq < d)) {
        if (cel_buf_puts(&eb, j->errs[k].line)) {
            cel_buf_free(&eb);
            return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        }
        k++;
    }
    if (eb.len) {
        cel_status s2 = path_in(j, "input_errors.jsonl", path, sizeof path, err);
        if (!s2) s2 = cel__append_sync(path, eb.data, eb.len, &st->errors_bytes, err);
        if (s2) {
            cel_buf_free(&eb);
            return s2;
        }
    }
    cel_buf_free(&eb);
    for (size_t i = 0; i < k; i++) {
        j->errs_bytes -= strlen(j->errs[i].line);
        free(j->errs[i].line);
    }
    if (k) {
        memmove(j->errs, j->errs + k, (j->errs_n - k) * sizeof *j->errs);
        j->errs_n -= k;
    }

    uint64_t old_seq = st->seq;
    bool had_pending = j->have_pending_file;
    st->seq = seq;
    st->done = done;
    st->file = pos.file;
    st->line = pos.line;
    st->input_bytes = pos.input_bytes;
    st->c.lines = pos.lines;
    st->c.lines_mine = pos.lines_mine;
    st->c.docs = pos.docs;
    memcpy(st->c.input_errors, pos.input_errors, sizeof pos.input_errors);
    st->all_digest = pos.all_digest;
    st->mine_digest = pos.mine_digest;
    st->c.records = j->records;
    memcpy(st->c.dropped, j->dropped, sizeof j->dropped);
    st->c.record_tokens = j->tokens_base + (j->p ? cel_gen_pipeline_stats(j->p)->record_tokens : 0);
    st->c.shards = st->n_shards;
    st->c.out_bytes = 0;
    for (uint32_t i = 0; i < st->n_shards; i++) st->c.out_bytes += st->shards[i].bytes;
    st->pending_records = j->frame_records;
    st->pending_bytes = j->frame.len;
    double now = cel_now_sec();
    st->elapsed_s += now - j->last_ckpt_t;
    j->last_ckpt_t = now;
    CEL_TRY(cel__job_state_save(j->dir, st, err));
    j->have_pending_file = j->frame.len > 0;
    if (had_pending) {
        cel__pending_name(old_seq, name, sizeof name);
        if (!path_in(j, name, path, sizeof path, err)) unlink(path);
    }
    j->ckpt_doc = d;
    if (d > 0) fifo_drop_before(j, d - 1);
    return CEL_OK;
}

/* ------------------------------------------------------------------ sink */

/* Before an item of session document doc: a boundary passed when doc moved
 * on; close the frame there when its rule says so. */
static cel_status item_boundary(job *j, uint64_t doc, cel_error *err)
{
    if (j->last_item_doc != UINT64_MAX && doc > j->last_item_doc && doc > j->ckpt_doc && frame_due(j))
        CEL_TRY(checkpoint(j, doc, true, false, err));
    j->last_item_doc = doc;
    return CEL_OK;
}

static cel_status sink_record(void *ud, const char *json, size_t len, cel_error *err)
{
    job *j = ud;
    CEL_TRY(item_boundary(j, cel_gen_pipeline_stats(j->p)->docs_done, err));
    if (cel_buf_append(&j->frame, json, len) || cel_buf_putc(&j->frame, '\n'))
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    j->frame_records++;
    j->records++;
    return CEL_OK;
}

static void sink_drop(void *ud, cel_gen_drop reason, const char *unit_id, const char *detail)
{
    job *j = ud;
    cel_error e;
    cel_error_clear(&e);
    if (!j->in_callback_ckpt_error && item_boundary(j, cel_gen_pipeline_stats(j->p)->docs_done, &e)) {
        j->in_callback_ckpt_error = true; /* reported by the loop (drop() cannot fail) */
        j->cb_err = e;
    }
    if ((unsigned)reason < CEL_DROP__COUNT) j->dropped[reason]++;
    if (!opts(j)->write_rejects) return;
    json_t *o = json_object();
    if (!o) return;
    json_object_set_new(o, "reason", json_string(cel_gen_drop_name(reason)));
    cel__json_set_str(o, "id", unit_id ? unit_id : "", unit_id ? strlen(unit_id) : 0);
    if (detail) cel__json_set_str(o, "detail", detail, strlen(detail));
    char *js = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (js) {
        cel_buf_puts(&j->rejects, js);
        cel_buf_putc(&j->rejects, '\n');
    }
    free(js);
}

/* After push / poll: documents < docs_done are complete. */
static cel_status after_call(job *j, cel_error *err)
{
    if (j->in_callback_ckpt_error) {
        *err = j->cb_err;
        return j->cb_err.code ? j->cb_err.code : CEL_ERR_IO;
    }
    uint64_t d = cel_gen_pipeline_stats(j->p)->docs_done;
    if (d > 1) fifo_drop_before(j, d - 1); /* boundaries to come are >= d */
    if (d <= j->ckpt_doc && !(d == j->pushed && j->errs_bytes > (1u << 20))) return CEL_OK;
    if (frame_due(j)) return checkpoint(j, d, true, false, err);
    double now = cel_now_sec();
    if (now - j->last_ckpt_t >= opts(j)->checkpoint_s || (d == j->pushed && j->errs_bytes > (1u << 20)))
        return checkpoint(j, d, false, false, err);
    return CEL_OK;
}

/* ------------------------------------------------------------- progress */

static void fill_progress(const job *j, cel_job_progress *p, bool final)
{
    memset(p, 0, sizeof *p);
    const cel_gen_stats *gs = j->p ? cel_gen_pipeline_stats(j->p) : NULL;
    p->c.lines = j->live.lines;
    p->c.lines_mine = j->live.lines_mine;
    p->c.docs = j->live.docs;
    memcpy(p->c.input_errors, j->live.input_errors, sizeof p->c.input_errors);
    p->c.records = j->records;
    memcpy(p->c.dropped, j->dropped, sizeof j->dropped);
    p->c.record_tokens = j->tokens_base + (gs ? gs->record_tokens : 0);
    p->c.shards = j->st.n_shards;
    for (uint32_t i = 0; i < j->st.n_shards; i++) p->c.out_bytes += j->st.shards[i].bytes;
    p->docs_done = (j->live.docs - j->pushed) + (gs ? gs->docs_done : 0);
    /* the position of the last complete document, not of the read-ahead */
    uint64_t dd = gs ? gs->docs_done : 0;
    const in_snap *at = dd == j->pushed ? &j->live : dd == 0 ? &j->start : fifo_get(j, dd - 1);
    p->input_bytes_done = at ? at->input_bytes : j->live.input_bytes;
    p->input_bytes_total = j->total_bytes;
    p->elapsed_s = cel_now_sec() - j->t0;
    p->gen_tokens = gs ? gs->gen_tokens : 0;
    p->units = gs ? gs->units : 0;
    if (p->elapsed_s > 0 && gs) {
        p->docs_per_s = (double)gs->docs_done / p->elapsed_s;
        p->records_per_s = (double)gs->records / p->elapsed_s;
        p->gen_tokens_per_s = (double)gs->gen_tokens / p->elapsed_s;
    }
    p->eta_s = -1;
    uint64_t done_now = p->input_bytes_done > j->bytes_at_start ? p->input_bytes_done - j->bytes_at_start : 0;
    if (final) p->eta_s = 0;
    else if (done_now > 0 && p->elapsed_s > 1 && j->total_bytes >= p->input_bytes_done)
        p->eta_s = (double)(j->total_bytes - p->input_bytes_done) * p->elapsed_s / (double)done_now;
    p->resumed = j->st.sessions > 1;
    p->final = final;
}

static void maybe_progress(job *j, bool final)
{
    if (!j->h || !j->h->progress) return;
    double now = cel_now_sec();
    double iv = j->h->progress_interval_s > 0 ? j->h->progress_interval_s : 2.0;
    if (!final && now - j->last_progress_t < iv) return;
    j->last_progress_t = now;
    cel_job_progress p;
    fill_progress(j, &p, final);
    j->h->progress(j->h->ud, &p);
}

static bool is_cancelled(const job *j) { return j->h && j->h->cancelled && j->h->cancelled(j->h->ud); }

/* --------------------------------------------------------------- inputs */

static bool mine(const job *j, const char *key, size_t n)
{
    const cel_job_opts *o = opts(j);
    if (o->parts <= 1) return true;
    return cel__job_key_hash(key, n) % o->parts == o->part;
}

/* "name:line": the key of a line when ids are not used (or unknown). */
static size_t line_key(const char *path, uint64_t line, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int n = snprintf(out, cap, "%s:%llu", base, (unsigned long long)line);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

/* Counts an input error at (file, line) and queues its report when this
 * part owns it. */
static cel_status input_error(job *j, uint32_t file, uint64_t line, cel_job_input_error kind, const char *msg,
                              cel_error *err)
{
    const char *path = j->in[file].path;
    char key[1200];
    size_t kn = line_key(path, line, key, sizeof key);
    uint64_t h = cel__job_pos_hash(path, line);
    j->live.lines++;
    j->live.all_digest += h;
    if (!mine(j, key, kn)) return CEL_OK;
    j->live.lines_mine++;
    j->live.mine_digest += h;
    j->live.input_errors[kind]++;
    cel_log(&opts(j)->log, CEL_LOG_WARN, "job: skipped (%s): %s", cel_job_input_error_name(kind), msg);
    json_t *o = json_object();
    if (!o) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    cel__json_set_str(o, "file", path, strlen(path));
    json_object_set_new(o, "line", json_integer((json_int_t)line));
    json_object_set_new(o, "kind", json_string(cel_job_input_error_name(kind)));
    cel__json_set_str(o, "error", msg, strlen(msg));
    char *js = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    size_t n = js ? strlen(js) : 0;
    char *line_s = js ? malloc(n + 2) : NULL;
    if (line_s) {
        memcpy(line_s, js, n);
        line_s[n] = '\n';
        line_s[n + 1] = 0;
    }
    free(js);
    if (!line_s) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    if (j->errs_n == j->errs_cap) {
        size_t nc = j->errs_cap ? j->errs_cap * 2 : 16;
        err_ent *ne = realloc(j->errs, nc * sizeof *ne);
        if (!ne) {
            free(line_s);
            return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        }
        j->errs = ne;
        j->errs_cap = nc;
    }
    j->errs[j->errs_n++] = (err_ent){j->pushed, line_s};
    j->errs_bytes += n + 1;
    return CEL_OK;
}

/* Processes one input file from line `skip` on. */
static cel_status run_file(job *j, uint32_t f, uint64_t skip, uint64_t bytes_before, bool *stop, cel_error *err)
{
    const cel_job_opts *o = opts(j);
    const char *path = j->in[f].path;
    cel_jsonl_reader *r = NULL;
    cel_error m;
    cel_error_clear(&m);
    j->live.file = f;
    j->live.line = 0;
    j->live.input_bytes = bytes_before;
    if (cel_jsonl_open(path, o->max_line_bytes, &r, &m)) {
        if (skip > 0) return cel_error_set(err, CEL_ERR_IO, "%s: cannot reopen to resume: %s", path, m.msg);
        CEL_TRY(input_error(j, f, 0, CEL_JOB_ERR_UNREADABLE, m.msg, err));
        j->live.file = f + 1;
        j->live.line = 0;
        j->live.input_bytes = bytes_before + j->in[f].size;
        return CEL_OK;
    }
    cel_doc_reader_opts ro = {o->id_field ? o->id_field : "id", o->text_field ? o->text_field : "text",
                              o->quality_field ? o->quality_field : "quality", 0, false};
    cel_status st = CEL_OK;
    /* resume: the first `skip` lines were processed by an earlier session */
    for (uint64_t i = 0; i < skip && !st; i++) {
        cel_jsonl_kind kind;
        const char *s;
        size_t n;
        st = cel_jsonl_next(r, &kind, &s, &n, &m);
        if (st) st = cel_error_set(err, st, "%s", m.msg);
        else if (kind == CEL_JSONL_EOF || kind == CEL_JSONL_CORRUPT)
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s: ends at line %llu, before the checkpoint's line %llu: the "
                                                    "input changed since the job started", path,
                               (unsigned long long)cel_jsonl_line_number(r), (unsigned long long)skip);
    }
    j->live.line = skip;
    while (!st) {
        cel_jsonl_kind kind;
        const char *s;
        size_t n;
        st = cel_jsonl_next(r, &kind, &s, &n, &m);
        if (st) {
            st = cel_error_set(err, st, "%s", m.msg);
            break;
        }
        uint64_t ln = cel_jsonl_line_number(r);
        j->live.input_bytes = bytes_before + cel_jsonl_bytes_read(r);
        if (kind == CEL_JSONL_EOF) break;
        if ((ln & 4095) == 0) { /* long stretches of other parts' lines or bad ones */
            maybe_progress(j, false);
            if (is_cancelled(j)) {
                *stop = true;
                break;
            }
        }
        if (kind == CEL_JSONL_CORRUPT) {
            st = input_error(j, f, ln, CEL_JOB_ERR_CORRUPT_SHARD, m.msg, err);
            break;
        }
        if (kind == CEL_JSONL_TOO_LONG) {
            st = input_error(j, f, ln, CEL_JOB_ERR_LINE_TOO_LONG, m.msg, err);
            j->live.line = ln;
            continue;
        }
        cel__trim(&s, &n);
        if (n == 0) { /* blank lines are no documents */
            j->live.line = ln;
            continue;
        }
        char key[1200];
        size_t kn = 0;
        if (o->split == CEL_JOB_SPLIT_LINE && o->parts > 1) {
            kn = line_key(path, ln, key, sizeof key);
            if (!mine(j, key, kn)) {
                j->live.lines++;
                j->live.all_digest += cel__job_pos_hash(path, ln);
                j->live.line = ln;
                continue;
            }
        }
        json_t *cur = NULL;
        char idbuf[32], qbuf[64];
        cel_gen_doc doc;
        cel_status ps = cel__doc_parse_line(s, n, &ro, path, ln, &cur, idbuf, qbuf, &doc, &m);
        if (ps) {
            json_decref(cur);
            st = input_error(j, f, ln, CEL_JOB_ERR_INVALID_LINE, m.msg, err);
            j->live.line = ln;
            continue;
        }
        uint64_t h = cel__job_pos_hash(path, ln);
        j->live.lines++;
        j->live.all_digest += h;
        j->live.line = ln;
        if (o->split == CEL_JOB_SPLIT_ID && !mine(j, doc.id, strlen(doc.id))) {
            json_decref(cur);
            continue;
        }
        j->live.lines_mine++;
        j->live.mine_digest += h;
        j->live.docs++;
        /* counted before the push: its records may be emitted (and a
         * checkpoint taken) inside it */
        j->pushed++;
        st = fifo_push(j, &j->live, err);
        if (!st) st = cel_gen_pipeline_push(j->p, &doc, err);
        json_decref(cur);
        if (st) break;
        if ((st = after_call(j, err))) break;
        maybe_progress(j, false);
        if (is_cancelled(j)) {
            *stop = true;
            break;
        }
    }
    if (!st && !*stop) { /* the file is done (or the rest was corrupt) */
        j->live.file = f + 1;
        j->live.line = 0;
        j->live.input_bytes = bytes_before + j->in[f].size;
    }
    cel_jsonl_free(r);
    return st;
}

/* ---------------------------------------------------------------- resume */

static bool is_job_file(const char *name)
{
    size_t n = strlen(name);
    return strcmp(name, "state.json") == 0 || strcmp(name, "state.json.tmp") == 0 ||
           strcmp(name, "manifest.json") == 0 || strcmp(name, "rejects.jsonl") == 0 ||
           strcmp(name, "input_errors.jsonl") == 0 || strncmp(name, ".pending-", 9) == 0 ||
           (strncmp(name, "shard-", 6) == 0 && n > 10 && strcmp(name + n - 10, ".jsonl.zst") == 0);
}

/* Removes job files in dir: every one (all) or shards past n_keep and
 * pending files other than keep_pending. */
static cel_status clean_dir(const job *j, bool all, uint32_t n_keep, const char *keep_pending, cel_error *err)
{
    DIR *d = opendir(j->dir);
    if (!d) return cel_error_set(err, CEL_ERR_IO, "%s: cannot open folder: %s", j->dir, strerror(errno));
    struct dirent *e;
    cel_status st = CEL_OK;
    while ((e = readdir(d)) && !st) {
        if (!is_job_file(e->d_name)) continue;
        bool rm = all;
        if (!all) {
            if (strncmp(e->d_name, ".pending-", 9) == 0) rm = !keep_pending || strcmp(e->d_name, keep_pending) != 0;
            else if (strncmp(e->d_name, "shard-", 6) == 0) rm = strtoul(e->d_name + 6, NULL, 10) >= n_keep;
            else if (strcmp(e->d_name, "state.json.tmp") == 0 || strcmp(e->d_name, "manifest.json") == 0) rm = true;
        }
        char p[1200];
        if (rm && !path_in(j, e->d_name, p, sizeof p, err) && unlink(p) != 0 && errno != ENOENT)
            st = cel_error_set(err, CEL_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
    }
    closedir(d);
    return st;
}

/* Re-seeds the pipeline's dedup set from the records already written
 * (CrossThink keys records by their normalised question). */
static cel_status reseed_dedup(job *j, cel_error *err)
{
    for (uint32_t i = 0; i <= j->st.n_shards; i++) {
        cel_jsonl_reader *r = NULL;
        FILE *mem = NULL;
        char name[64], path[1200];
        if (i < j->st.n_shards) {
            cel__shard_name(i, name, sizeof name);
            CEL_TRY(path_in(j, name, path, sizeof path, err));
            CEL_TRY(cel_jsonl_open(path, 0, &r, err));
        } else {
            if (!j->frame.len) break;
            mem = fmemopen(j->frame.data, j->frame.len, "rb");
            if (!mem) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
            cel_status st = cel_jsonl_open_stream(mem, "<open frame>", 0, &r, err);
            if (st) {
                fclose(mem);
                return st;
            }
        }
        cel_status st = CEL_OK;
        for (;;) {
            cel_jsonl_kind kind;
            const char *s;
            size_t n;
            cel_error m;
            if ((st = cel_jsonl_next(r, &kind, &s, &n, &m))) {
                *err = m;
                break;
            }
            if (kind == CEL_JSONL_EOF) break;
            if (kind != CEL_JSONL_LINE) {
                st = cel_error_set(err, CEL_ERR_FORMAT, "%s", m.msg);
                break;
            }
            json_t *rec = json_loadb(s, n, 0, NULL);
            const char *q = json_string_value(json_object_get(rec, "question"));
            if (q && (st = cel__pipeline_seen_add(j->p, cel__norm_hash(q, strlen(q)))))
                cel_error_set(err, st, "out of memory");
            json_decref(rec);
            if (st) break;
        }
        cel_jsonl_free(r);
        if (mem) fclose(mem);
        if (st) return st;
    }
    return CEL_OK;
}

/* Loads a checkpoint and puts the folder back to it. */
static cel_status resume(job *j, cel_error *err)
{
    cel__job_state *st = &j->st;
    if (strcmp(st->config, j->config) != 0)
        return cel_error_set(err, CEL_ERR_INVALID, "%s: the job there was started with another configuration; run it "
                                                   "with the same settings, use another output folder, or --restart "
                                                   "(recorded: %.200s; now: %.200s)", j->dir, st->config, j->config);
    if (strcmp(st->inputs_json, j->inputs_json) != 0)
        return cel_error_set(err, CEL_ERR_INVALID, "%s: the inputs changed since the job started (files or sizes "
                                                   "differ); use --restart to start over", j->dir);
    if (st->part != opts(j)->part || st->parts != (opts(j)->parts ? opts(j)->parts : 1) || st->split != opts(j)->split)
        return cel_error_set(err, CEL_ERR_INVALID, "%s: the job there is part %u/%u split by %s, not %u/%u split by %s",
                             j->dir, st->part, st->parts, st->split == CEL_JOB_SPLIT_LINE ? "line" : "id",
                             opts(j)->part, opts(j)->parts ? opts(j)->parts : 1,
                             opts(j)->split == CEL_JOB_SPLIT_LINE ? "line" : "id");
    if (st->file > j->n_in) return cel_error_set(err, CEL_ERR_FORMAT, "%s/state.json: position past the inputs", j->dir);
    char name[64], path[1200];
    for (uint32_t i = 0; i < st->n_shards; i++) {
        cel__shard_name(i, name, sizeof name);
        CEL_TRY(path_in(j, name, path, sizeof path, err));
        CEL_TRY(cel__truncate(path, st->shards[i].bytes, err));
    }
    CEL_TRY(path_in(j, "rejects.jsonl", path, sizeof path, err));
    CEL_TRY(cel__truncate(path, st->rejects_bytes, err));
    CEL_TRY(path_in(j, "input_errors.jsonl", path, sizeof path, err));
    CEL_TRY(cel__truncate(path, st->errors_bytes, err));
    char pend[64];
    cel__pending_name(st->seq, pend, sizeof pend);
    if (st->pending_bytes > 0) {
        CEL_TRY(path_in(j, pend, path, sizeof path, err));
        CEL_TRY(cel__zstd_read_file(path, 0, 0, &j->frame, err));
        uint64_t lines = 0;
        for (size_t i = 0; i < j->frame.len; i++) lines += j->frame.data[i] == '\n';
        if (j->frame.len != st->pending_bytes || lines != st->pending_records)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: %zu bytes / %llu records, the checkpoint says %llu / %llu",
                                 path, j->frame.len, (unsigned long long)lines, (unsigned long long)st->pending_bytes,
                                 (unsigned long long)st->pending_records);
        j->frame_records = st->pending_records;
        j->have_pending_file = true;
    }
    CEL_TRY(clean_dir(j, false, st->n_shards, st->pending_bytes ? pend : NULL, err));
    return CEL_OK;
}

/* ------------------------------------------------------------------ run */

/* One process per job folder: a second run (a double-submitted array task,
 * a second POST) would interleave checkpoints and corrupt the output. */
static cel_status lock_dir(job *j, cel_error *err)
{
    char p[1200];
    CEL_TRY(path_in(j, ".lock", p, sizeof p, err));
    j->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (j->lock_fd < 0) return cel_error_set(err, CEL_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return cel_error_set(err, errno == EWOULDBLOCK ? CEL_ERR_BUSY : CEL_ERR_IO,
                             "%s: another process is running this job (%s)", j->dir,
                             errno == EWOULDBLOCK ? "its lock is held" : strerror(errno));
    return CEL_OK;
}

void cel_job_opts_default(cel_job_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_line_bytes = (size_t)64 << 20;
    o->parts = 1;
    o->shard_bytes = (uint64_t)256 << 20;
    o->frame_records = 1000;
    o->frame_bytes = (uint64_t)4 << 20;
    o->zstd_level = 3;
    o->checkpoint_s = 10;
}

static cel_status canonical(const char *js, char **out, cel_error *err)
{
    json_error_t je;
    json_t *v = json_loads(js ? js : "{}", JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(v)) {
        json_decref(v);
        return cel_error_set(err, CEL_ERR_INVALID, "job config: not a JSON object: %s", v ? "" : je.text);
    }
    *out = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(v);
    return *out ? CEL_OK : cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
}

static cel_status inputs_json(job *j, cel_error *err)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < j->n_in; i++) {
        json_t *e = json_array();
        json_array_append_new(e, json_string(j->in[i].path));
        json_array_append_new(e, json_integer((json_int_t)j->in[i].size));
        json_array_append_new(a, e);
        j->total_bytes += j->in[i].size;
    }
    j->inputs_json = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return j->inputs_json ? CEL_OK : cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
}

static void job_free(job *j)
{
    if (j->lock_fd >= 0) close(j->lock_fd); /* releases the lock */
    cel_gen_pipeline_free(j->p);
    cel__shard_writer_free(j->w);
    cel__job_inputs_free(j->in, j->n_in);
    cel__job_state_free(&j->st);
    for (size_t i = 0; i < j->errs_n; i++) free(j->errs[i].line);
    free(j->errs);
    free(j->fifo);
    free(j->config);
    free(j->inputs_json);
    cel_buf_free(&j->frame);
    cel_buf_free(&j->rejects);
}

static void fill_result(const job *j, cel_job_result *res)
{
    res->c = j->st.c;
    res->done = j->st.done;
    res->elapsed_s = cel_now_sec() - j->t0;
    res->engine_s = j->be ? cel_gen_local_engine_seconds(j->be) : 0;
    res->records_session = j->records - j->records_base;
    snprintf(res->dir, sizeof res->dir, "%s", j->dir);
    if (j->p) {
        const cel_gen_stats *gs = cel_gen_pipeline_stats(j->p);
        res->docs_session = gs->docs_done;
        res->gen_tokens_session = gs->gen_tokens;
        res->units_session = gs->units;
        res->requests_session = gs->requests;
    }
}

static cel_status write_manifest(job *j, cel_error *err)
{
    const char **paths = malloc((j->n_in ? j->n_in : 1) * sizeof *paths);
    if (!paths) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < j->n_in; i++) paths[i] = j->in[i].path;
    cel_status st = cel__job_write_manifest(j->dir, &j->st, paths, j->n_in, err);
    free(paths);
    return st;
}

cel_status cel_job_run(const cel_job_opts *o, cel_job_pipeline_fn make, void *make_ud, cel_gen_backend *be,
                       const cel_job_hooks *hooks, cel_job_result *res, cel_error *err)
{
    memset(res, 0, sizeof *res);
    if (!o || !make || !o->out_dir || !*o->out_dir)
        return cel_error_set(err, CEL_ERR_INVALID, "job: an output folder and a pipeline are required");
    uint32_t parts = o->parts ? o->parts : 1;
    if (o->part >= parts) return cel_error_set(err, CEL_ERR_INVALID, "job: --shard %u/%u: the part must be below %u", o->part, parts, parts);
    if (parts > 100000) return cel_error_set(err, CEL_ERR_INVALID, "job: at most 100000 parts");
    job J, *j = &J;
    memset(j, 0, sizeof *j);
    j->o = o;
    j->be = be;
    j->h = hooks;
    j->last_item_doc = UINT64_MAX;
    j->lock_fd = -1;
    j->t0 = j->last_ckpt_t = j->last_progress_t = cel_now_sec();
    int n = parts > 1 ? snprintf(j->dir, sizeof j->dir, "%s/part-%05u-of-%05u", o->out_dir, o->part, parts)
                      : snprintf(j->dir, sizeof j->dir, "%s", o->out_dir);
    if (n < 0 || (size_t)n >= sizeof j->dir) return cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", o->out_dir);
    cel_status st = canonical(o->config_json, &j->config, err);
    if (!st) st = cel__job_inputs_expand(o->inputs, o->n_inputs, o->input_check, o->input_check_ud, &j->in, &j->n_in, err);
    if (!st) st = inputs_json(j, err);
    if (!st) st = cel__mkdirs(j->dir, err);
    if (!st) st = lock_dir(j, err);
    if (!st) st = cel__shard_writer_open(j->dir, o->zstd_level ? o->zstd_level : 3, &j->w, err);
    bool exists = false;
    if (!st) st = cel__job_state_load(j->dir, &j->st, &exists, err);
    if (!st && exists && o->restart) {
        cel__job_state_free(&j->st);
        exists = false;
        st = clean_dir(j, true, 0, NULL, err);
    }
    if (!st && exists && j->st.done) {
        if (strcmp(j->st.config, j->config) != 0 || strcmp(j->st.inputs_json, j->inputs_json) != 0)
            st = cel_error_set(err, CEL_ERR_INVALID, "%s: holds a finished job with another configuration or other "
                                                     "inputs; use another output folder or --restart", j->dir);
        else {
            fill_result(j, res);
            res->already_done = true;
            res->resumed = true;
        }
        job_free(j);
        return st;
    }
    if (!st && exists) st = resume(j, err);
    if (!st && !exists) {
        /* a fresh job: nothing of an earlier one may remain */
        st = clean_dir(j, true, 0, NULL, err);
        j->st.config = strdup(j->config);
        j->st.inputs_json = strdup(j->inputs_json);
        j->st.part = o->part;
        j->st.parts = parts;
        j->st.split = o->split;
        if (!st && (!j->st.config || !j->st.inputs_json)) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    if (st) {
        job_free(j);
        return st;
    }
    res->resumed = exists;
    j->st.sessions++;
    /* live counters start from the checkpoint */
    j->live = (in_snap){j->st.file, j->st.line, j->st.input_bytes, j->st.c.lines, j->st.c.lines_mine, j->st.c.docs,
                        {0}, j->st.all_digest, j->st.mine_digest};
    memcpy(j->live.input_errors, j->st.c.input_errors, sizeof j->live.input_errors);
    j->start = j->live;
    j->records = j->st.c.records;
    memcpy(j->dropped, j->st.c.dropped, sizeof j->dropped);
    j->tokens_base = j->st.c.record_tokens;
    j->records_base = j->st.c.records;
    j->bytes_at_start = j->st.input_bytes;
    cel_gen_sink sink = {sink_record, sink_drop, j};
    st = make(make_ud, &sink, &j->p, err);
    if (!st && o->dedup && exists) st = reseed_dedup(j, err);
    if (!st && !exists) st = checkpoint(j, 0, false, false, err); /* the job exists from now on */
    if (st) {
        job_free(j);
        return st;
    }
    if (exists)
        cel_log(&o->log, CEL_LOG_INFO, "job: resuming %s at input file %u line %llu (%llu records written)", j->dir,
                j->st.file, (unsigned long long)j->st.line, (unsigned long long)j->st.c.records);

    bool stop = false;
    uint64_t bytes_before = 0;
    for (uint32_t f = 0; f < j->st.file && f < j->n_in; f++) bytes_before += j->in[f].size;
    uint32_t first = j->st.file;
    uint64_t skip = j->st.line;
    for (uint32_t f = first; f < j->n_in && !st && !stop; f++) {
        st = run_file(j, f, f == first ? skip : 0, bytes_before, &stop, err);
        bytes_before += j->in[f].size;
        if (!st && !stop && is_cancelled(j)) stop = true;
    }
    /* finish the documents in flight (or, when cancelled, stop at the last complete one) */
    while (!st && !stop && cel_gen_pipeline_inflight(j->p) > 0) {
        if (cel_gen_backend_pending(be) == 0) st = cel_gen_pipeline_drain(j->p, err);
        else st = cel_gen_pipeline_poll(j->p, 100, err);
        if (!st) st = after_call(j, err);
        maybe_progress(j, false);
        if (is_cancelled(j)) stop = true;
    }
    if (!st && j->in_callback_ckpt_error) {
        *err = j->cb_err;
        st = j->cb_err.code ? j->cb_err.code : CEL_ERR_IO;
    }
    if (!st) {
        uint64_t d = cel_gen_pipeline_stats(j->p)->docs_done;
        bool done = !stop && d == j->pushed;
        if (d > j->ckpt_doc || done || stop) st = checkpoint(j, d, done || frame_due(j), done, err);
        if (!st) st = write_manifest(j, err);
    }
    maybe_progress(j, true);
    fill_result(j, res);
    job_free(j);
    return st;
}
