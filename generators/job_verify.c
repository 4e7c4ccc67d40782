/*
 * job_verify.c - checking finished corpus jobs: one folder, or the part
 * folders of a job split with --shard I/N. The parts must all be present and
 * finished, share one configuration and one input list, and together cover
 * every input line exactly once: each part counts every line it read and
 * the lines it kept, and sums a hash of each line's position over both, so
 * the kept counts and digests of the parts must add up to the common total.
 * Each shard must have its recorded length; a deep check decodes every
 * frame and counts its JSON records.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "job_internal.h"

static void counts_add(cel_job_counts *a, const cel_job_counts *b)
{
    a->docs += b->docs;
    a->records += b->records;
    a->record_tokens += b->record_tokens;
    a->lines_mine += b->lines_mine;
    a->out_bytes += b->out_bytes;
    a->shards += b->shards;
    for (int i = 0; i < CEL_DROP__COUNT; i++) a->dropped[i] += b->dropped[i];
    for (int i = 0; i < CEL_JOB_ERR__COUNT; i++) a->input_errors[i] += b->input_errors[i];
}

/* Decodes a shard: every frame complete, every line a JSON object; counts records and frames. */
static cel_status check_shard_deep(const char *path, uint64_t *records, uint64_t *frames, cel_error *err)
{
    *records = *frames = 0;
    cel_mmap m;
    CEL_TRY(cel_mmap_open(path, &m, err));
    const unsigned char *p = m.data;
    size_t left = m.size;
    cel_status st = CEL_OK;
    while (left > 0 && !st) {
        size_t fl = ZSTD_findFrameCompressedSize(p, left);
        if (ZSTD_isError(fl)) {
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s: frame %llu at byte %zu does not parse: %s", path,
                               (unsigned long long)*frames, m.size - left, ZSTD_getErrorName(fl));
            break;
        }
        (*frames)++;
        p += fl;
        left -= fl;
    }
    cel_mmap_close(&m);
    if (st) return st;
    cel_jsonl_reader *r = NULL;
    CEL_TRY(cel_jsonl_open(path, 0, &r, err));
    for (;;) {
        cel_jsonl_kind k;
        const char *s;
        size_t n;
        cel_error msg;
        if ((st = cel_jsonl_next(r, &k, &s, &n, &msg))) {
            *err = msg;
            break;
        }
        if (k == CEL_JSONL_EOF) break;
        if (k != CEL_JSONL_LINE) {
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s", msg.msg);
            break;
        }
        json_t *o = json_loadb(s, n, 0, NULL);
        bool ok = json_is_object(o);
        json_decref(o);
        if (!ok) {
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s: record %llu is not a JSON object", path,
                               (unsigned long long)*records + 1);
            break;
        }
        (*records)++;
    }
    cel_jsonl_free(r);
    return st;
}

/* Checks one part folder against its state; adds its shards to `shards`
 * (paths prefixed with rel). */
static cel_status check_part(const char *dir, const char *rel, const cel__job_state *s, bool deep, json_t *shards,
                             cel_error *err)
{
    if (!s->done) return cel_error_set(err, CEL_ERR_FORMAT, "%s: the job has not finished (run it again to continue)", dir);
    if (s->pending_records) return cel_error_set(err, CEL_ERR_FORMAT, "%s: finished with an open frame", dir);
    uint64_t recs = 0;
    for (uint32_t i = 0; i < s->n_shards; i++) {
        char name[64], path[4200];
        cel__shard_name(i, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct stat sb;
        if (stat(path, &sb) != 0) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: missing", path);
        if ((uint64_t)sb.st_size != s->shards[i].bytes)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: %llu bytes, the job recorded %llu", path,
                                 (unsigned long long)sb.st_size, (unsigned long long)s->shards[i].bytes);
        if (deep) {
            uint64_t r, f;
            CEL_TRY(check_shard_deep(path, &r, &f, err));
            if (r != s->shards[i].records || f != s->shards[i].frames)
                return cel_error_set(err, CEL_ERR_FORMAT, "%s: %llu records in %llu frames, the job recorded %llu in %llu",
                                     path, (unsigned long long)r, (unsigned long long)f,
                                     (unsigned long long)s->shards[i].records, (unsigned long long)s->shards[i].frames);
        }
        recs += s->shards[i].records;
        json_t *o = json_object();
        char relp[4200];
        snprintf(relp, sizeof relp, "%s%s", rel, name);
        json_object_set_new(o, "path", json_string(relp));
        json_object_set_new(o, "bytes", json_integer((json_int_t)s->shards[i].bytes));
        json_object_set_new(o, "records", json_integer((json_int_t)s->shards[i].records));
        json_array_append_new(shards, o);
    }
    char extra[4200];
    cel__shard_name(s->n_shards, extra, sizeof extra);
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, extra);
    if (cel_path_exists(path)) return cel_error_set(err, CEL_ERR_FORMAT, "%s: a shard the job did not record", path);
    if (recs != s->c.records)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: shards hold %llu records, the counters say %llu", dir,
                             (unsigned long long)recs, (unsigned long long)s->c.records);
    return CEL_OK;
}

typedef struct parts_scan {
    uint32_t n;      /* the N of part-*-of-N */
    char **names;    /* by part index (NULL: missing) */
} parts_scan;

static void scan_free(parts_scan *p)
{
    for (uint32_t i = 0; p->names && i < p->n; i++) free(p->names[i]);
    free(p->names);
}

static cel_status scan_parts(const char *dir, parts_scan *ps, cel_error *err)
{
    memset(ps, 0, sizeof *ps);
    DIR *d = opendir(dir);
    if (!d) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: not a folder", dir);
    struct dirent *e;
    cel_status st = CEL_OK;
    while ((e = readdir(d)) && !st) {
        unsigned i, n;
        char tail;
        if (sscanf(e->d_name, "part-%5u-of-%5u%c", &i, &n, &tail) != 2) continue;
        if (n == 0 || n > 100000 || i >= n) {
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s/%s: not a valid part name", dir, e->d_name);
            break;
        }
        if (!ps->n) {
            ps->n = n;
            if (!(ps->names = calloc(n, sizeof *ps->names))) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        } else if (n != ps->n) {
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s: parts of %u and of %u jobs mixed", dir, ps->n, n);
        }
        if (!st && !(ps->names[i] = strdup(e->d_name))) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    closedir(d);
    if (!st && !ps->n) st = cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: no job here (no state.json, no part-*-of-* folders)", dir);
    if (st) scan_free(ps);
    return st;
}

/* Verifies; on success fills *merged (the whole job's manifest) when wanted. */
static cel_status verify(const char *dir, bool deep, cel_buf *report, json_t **merged, cel_error *err)
{
    char sp[4200];
    snprintf(sp, sizeof sp, "%s/state.json", dir);
    json_t *shards = json_array();
    if (!shards) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    cel_job_counts tot;
    memset(&tot, 0, sizeof tot);
    cel_status st = CEL_OK;
    char *config = NULL;
    uint32_t n_parts = 1;
    if (cel_path_exists(sp)) { /* a single part */
        cel__job_state s;
        bool ex;
        st = cel__job_state_load(dir, &s, &ex, err);
        if (!st) st = check_part(dir, "", &s, deep, shards, err);
        if (!st) {
            tot = s.c;
            n_parts = s.parts;
            config = strdup(s.config);
        }
        if (!st && s.parts <= 1 && (s.c.lines_mine != s.c.lines || s.mine_digest != s.all_digest))
            st = cel_error_set(err, CEL_ERR_FORMAT, "%s: kept %llu of %llu lines in a job of one part", dir,
                               (unsigned long long)s.c.lines_mine, (unsigned long long)s.c.lines);
        cel__job_state_free(&s);
    } else {
        parts_scan ps;
        st = scan_parts(dir, &ps, err);
        if (!st) {
            n_parts = ps.n;
            char *inputs = NULL;
            uint64_t lines = 0, all = 0, mine = 0;
            for (uint32_t i = 0; i < ps.n && !st; i++) {
                if (!ps.names[i]) {
                    st = cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: part %u of %u is missing (part-%05u-of-%05u)", dir,
                                       i, ps.n, i, ps.n);
                    break;
                }
                char pd[4200], rel[300];
                snprintf(pd, sizeof pd, "%s/%s", dir, ps.names[i]);
                snprintf(rel, sizeof rel, "%s/", ps.names[i]);
                cel__job_state s;
                bool ex;
                st = cel__job_state_load(pd, &s, &ex, err);
                if (!st && !ex) st = cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: part %u has no state.json", pd, i);
                if (!st && (s.part != i || s.parts != ps.n))
                    st = cel_error_set(err, CEL_ERR_FORMAT, "%s: its state says part %u of %u", pd, s.part, s.parts);
                if (!st) st = check_part(pd, rel, &s, deep, shards, err);
                if (!st && i == 0) {
                    config = strdup(s.config);
                    inputs = strdup(s.inputs_json);
                    lines = s.c.lines;
                    all = s.all_digest;
                } else if (!st) {
                    if (strcmp(config, s.config) != 0)
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s: part %u ran with another configuration than part 0", pd, i);
                    else if (strcmp(inputs, s.inputs_json) != 0)
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s: part %u read other inputs than part 0", pd, i);
                    else if (s.c.lines != lines || s.all_digest != all)
                        st = cel_error_set(err, CEL_ERR_FORMAT, "%s: part %u read %llu lines, part 0 %llu (or other ones)", pd,
                                           i, (unsigned long long)s.c.lines, (unsigned long long)lines);
                }
                if (!st) {
                    counts_add(&tot, &s.c);
                    mine += s.mine_digest;
                }
                cel__job_state_free(&s);
            }
            if (!st && (tot.lines_mine != lines || mine != all))
                st = cel_error_set(err, CEL_ERR_FORMAT, "%s: the parts kept %llu lines of %llu (or other ones): they do "
                                                        "not split the input exactly once", dir,
                                   (unsigned long long)tot.lines_mine, (unsigned long long)lines);
            tot.lines = lines;
            free(inputs);
            scan_free(&ps);
        }
    }
    if (st) {
        free(config);
        json_decref(shards);
        return st;
    }
    json_t *r = json_object();
    json_t *cfg = config ? json_loads(config, 0, NULL) : json_null();
    free(config);
    json_object_set_new(r, "ok", json_true());
    json_object_set_new(r, "deep", json_boolean(deep));
    json_object_set_new(r, "parts", json_integer(n_parts));
    json_object_set_new(r, "kind", json_incref(json_object_get(cfg, "kind")));
    json_object_set_new(r, "seed", json_incref(json_object_get(cfg, "seed")));
    json_object_set_new(r, "model", json_incref(json_object_get(cfg, "model")));
    json_object_set_new(r, "counts", cel__job_counts_json(&tot));
    if (merged) {
        json_t *m = json_deep_copy(r);
        json_object_del(m, "ok");
        json_object_del(m, "deep");
        json_object_set_new(m, "state", json_string("done"));
        json_object_set_new(m, "shards", json_incref(shards));
        json_object_set_new(m, "config", json_incref(cfg));
        *merged = m;
    }
    json_decref(cfg);
    json_decref(shards);
    char *js = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(r);
    if (!js || (report && cel_buf_puts(report, js))) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    free(js);
    return st;
}

cel_status cel_job_verify(const char *dir, bool deep, cel_buf *report, cel_error *err)
{
    return verify(dir, deep, report, NULL, err);
}

cel_status cel_job_merge(const char *dir, bool deep, cel_buf *report, cel_error *err)
{
    char sp[4200];
    snprintf(sp, sizeof sp, "%s/state.json", dir);
    bool single = cel_path_exists(sp);
    json_t *m = NULL;
    CEL_TRY(verify(dir, deep, report, single ? NULL : &m, err));
    if (single) return CEL_OK; /* its manifest.json already describes it */
    char *js = json_dumps(m, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(m);
    if (!js) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    cel_buf b;
    cel_buf_init(&b);
    cel_status st = cel_buf_puts(&b, js) || cel_buf_putc(&b, '\n') ? cel_error_set(err, CEL_ERR_NOMEM, "out of memory")
                                                                     : cel__write_atomic(path, b.data, b.len, err);
    cel_buf_free(&b);
    free(js);
    return st;
}

/* ---------------------------------------------------------------- status */

static json_t *state_summary(const char *dir, const cel__job_state *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "dir", json_string(dir));
    json_object_set_new(o, "state", json_string(s->done ? "done" : "unfinished"));
    json_object_set_new(o, "part", json_integer(s->part));
    json_object_set_new(o, "parts", json_integer(s->parts));
    json_object_set_new(o, "checkpoints", json_integer((json_int_t)s->seq));
    json_object_set_new(o, "sessions", json_integer(s->sessions));
    json_object_set_new(o, "elapsed_s", json_real(s->elapsed_s));
    json_t *pos = json_object();
    json_object_set_new(pos, "file", json_integer(s->file));
    json_object_set_new(pos, "line", json_integer((json_int_t)s->line));
    json_object_set_new(pos, "input_bytes", json_integer((json_int_t)s->input_bytes));
    json_object_set_new(o, "position", pos);
    json_object_set_new(o, "counts", cel__job_counts_json(&s->c));
    json_object_set_new(o, "pending_records", json_integer((json_int_t)s->pending_records));
    json_t *cfg = json_loads(s->config, 0, NULL);
    json_object_set_new(o, "config", cfg ? cfg : json_null());
    return o;
}

cel_status cel_job_status(const char *dir, cel_buf *out, cel_error *err)
{
    cel__job_state s;
    bool ex;
    CEL_TRY(cel__job_state_load(dir, &s, &ex, err));
    json_t *o = NULL;
    if (ex) {
        o = state_summary(dir, &s);
        cel__job_state_free(&s);
    } else {
        parts_scan ps;
        CEL_TRY(scan_parts(dir, &ps, err));
        o = json_object();
        json_t *arr = json_array();
        cel_job_counts tot;
        memset(&tot, 0, sizeof tot);
        uint32_t done = 0, present = 0;
        cel_status st = CEL_OK;
        for (uint32_t i = 0; i < ps.n && !st; i++) {
            if (!ps.names[i]) continue;
            char pd[4200];
            snprintf(pd, sizeof pd, "%s/%s", dir, ps.names[i]);
            st = cel__job_state_load(pd, &s, &ex, err);
            if (st || !ex) continue;
            present++;
            done += s.done;
            counts_add(&tot, &s.c);
            json_t *one = state_summary(pd, &s);
            json_object_del(one, "config");
            json_array_append_new(arr, one);
            cel__job_state_free(&s);
        }
        scan_free(&ps);
        if (st) {
            json_decref(arr);
            json_decref(o);
            return st;
        }
        json_object_set_new(o, "dir", json_string(dir));
        json_object_set_new(o, "parts", json_integer(ps.n));
        json_object_set_new(o, "parts_present", json_integer(present));
        json_object_set_new(o, "parts_done", json_integer(done));
        json_object_set_new(o, "state", json_string(done == ps.n ? "done" : "unfinished"));
        json_object_set_new(o, "counts", cel__job_counts_json(&tot));
        json_object_set_new(o, "part_states", arr);
    }
    char *js = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(o);
    cel_status st = !js || cel_buf_puts(out, js) ? cel_error_set(err, CEL_ERR_NOMEM, "out of memory") : CEL_OK;
    free(js);
    return st;
}
