/*
 * job_input.c - the input side of corpus jobs: expanding input specs (files,
 * folders, globs) into a fixed list of files, and reading JSON Lines from
 * plain or zstd-compressed files with bounded memory.
 *
 * The reader never stops on bad data: a line longer than the cap is skipped
 * to its newline and reported; zstd data that does not decode, or a file that
 * ends inside a frame, is reported once and the rest of that file skipped
 * (the lines decoded before it are delivered). Memory: one read buffer, one
 * decode window and one line of at most max_line_bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "job_internal.h"

/* ================================================================ reader */

enum { IN_CHUNK = 1 << 17 };

struct cel_jsonl_reader {
    FILE *f;
    bool own;
    char *name;
    size_t max_line;
    bool sniffed, zst;
    ZSTD_DCtx *dctx;
    unsigned char *zin; /* compressed input */
    size_t zin_pos, zin_len;
    char *win;          /* decoded (or plain) bytes */
    size_t win_cap, wpos, wlen;
    bool file_eof;
    bool in_frame;      /* the last decode call left a frame unfinished */
    bool done;
    cel_buf line;
    uint64_t line_no;   /* lines delivered (LINE and TOO_LONG events) */
    uint64_t event_line;
    uint64_t bytes_read;
};

static cel_status reader_init(cel_jsonl_reader *r, const char *name, size_t max_line, cel_error *err)
{
    r->max_line = max_line ? max_line : (size_t)64 << 20;
    r->name = strdup(name ? name : "<input>");
    r->zin = malloc(IN_CHUNK);
    r->win_cap = ZSTD_DStreamOutSize() > IN_CHUNK ? ZSTD_DStreamOutSize() : IN_CHUNK;
    r->win = malloc(r->win_cap);
    if (!r->name || !r->zin || !r->win) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    return CEL_OK;
}

cel_status cel_jsonl_open_stream(FILE *f, const char *name, size_t max_line_bytes, cel_jsonl_reader **out,
                                 cel_error *err)
{
    *out = NULL;
    cel_jsonl_reader *r = calloc(1, sizeof *r);
    if (!r) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    r->f = f;
    cel_status st = reader_init(r, name, max_line_bytes, err);
    if (st) {
        cel_jsonl_free(r);
        return st;
    }
    *out = r;
    return CEL_OK;
}

cel_status cel_jsonl_open(const char *path, size_t max_line_bytes, cel_jsonl_reader **out, cel_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return cel_error_set(err, CEL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    cel_status st = cel_jsonl_open_stream(f, path, max_line_bytes, out, err);
    if (st) {
        fclose(f);
        return st;
    }
    (*out)->own = true;
    return CEL_OK;
}

void cel_jsonl_free(cel_jsonl_reader *r)
{
    if (!r) return;
    if (r->own && r->f) fclose(r->f);
    ZSTD_freeDCtx(r->dctx);
    cel_buf_free(&r->line);
    free(r->zin);
    free(r->win);
    free(r->name);
    free(r);
}

uint64_t cel_jsonl_line_number(const cel_jsonl_reader *r) { return r->event_line; }
uint64_t cel_jsonl_bytes_read(const cel_jsonl_reader *r)
{
    /* what the lines delivered so far consumed, not what was read ahead */
    uint64_t ahead = r->zin_len - r->zin_pos + (r->zst ? 0 : r->wlen - r->wpos);
    return r->bytes_read > ahead ? r->bytes_read - ahead : 0;
}
bool cel_jsonl_compressed(const cel_jsonl_reader *r) { return r->zst; }

/* Reads more of the file into zin (after what is unread). */
static cel_status read_more(cel_jsonl_reader *r, cel_error *err)
{
    if (r->zin_pos == r->zin_len) r->zin_pos = r->zin_len = 0;
    size_t n = fread(r->zin + r->zin_len, 1, IN_CHUNK - r->zin_len, r->f);
    if (n == 0) {
        if (ferror(r->f)) return cel_error_set(err, CEL_ERR_IO, "%s: read error: %s", r->name, strerror(errno));
        r->file_eof = true;
    }
    r->zin_len += n;
    r->bytes_read += n;
    return CEL_OK;
}

/* A zstd frame or skippable frame starts with these magics (little-endian). */
static bool is_zstd_magic(const unsigned char *p, size_t n)
{
    if (n < 4) return false;
    uint32_t m = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return m == 0xFD2FB528u || (m & 0xFFFFFFF0u) == 0x184D2A50u;
}

/* Makes more decoded bytes available in win[wpos..wlen). *n: how many (0 at
 * the end). *corrupt is set (with msg) when zstd data does not decode or the
 * file ends inside a frame. */
static cel_status fill(cel_jsonl_reader *r, size_t *n, bool *corrupt, cel_error *msg, cel_error *err)
{
    *n = 0;
    *corrupt = false;
    r->wpos = r->wlen = 0;
    if (!r->sniffed) {
        while (r->zin_len < 4 && !r->file_eof) CEL_TRY(read_more(r, err));
        r->sniffed = true;
        r->zst = is_zstd_magic(r->zin, r->zin_len);
        if (r->zst && !(r->dctx = ZSTD_createDCtx())) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    if (!r->zst) {
        if (r->zin_pos == r->zin_len && !r->file_eof) CEL_TRY(read_more(r, err));
        size_t k = r->zin_len - r->zin_pos;
        if (k > r->win_cap) k = r->win_cap;
        memcpy(r->win, r->zin + r->zin_pos, k);
        r->zin_pos += k;
        r->wlen = k;
        *n = k;
        return CEL_OK;
    }
    for (;;) {
        if (r->zin_pos == r->zin_len) {
            if (r->file_eof) {
                if (r->in_frame) {
                    *corrupt = true;
                    cel_error_set(msg, CEL_ERR_FORMAT, "%s: truncated zstd data (the file ends inside a frame) after line %llu",
                                  r->name, (unsigned long long)r->line_no);
                }
                return CEL_OK;
            }
            CEL_TRY(read_more(r, err));
            continue;
        }
        ZSTD_inBuffer in = {r->zin, r->zin_len, r->zin_pos};
        ZSTD_outBuffer o = {r->win, r->win_cap, 0};
        size_t ret = ZSTD_decompressStream(r->dctx, &o, &in);
        if (ZSTD_isError(ret)) {
            *corrupt = true;
            cel_error_set(msg, CEL_ERR_FORMAT, "%s: corrupt zstd data near compressed byte %llu (after line %llu): %s",
                          r->name, (unsigned long long)(r->bytes_read - (r->zin_len - r->zin_pos)),
                          (unsigned long long)r->line_no, ZSTD_getErrorName(ret));
            return CEL_OK;
        }
        r->zin_pos = in.pos;
        r->in_frame = ret != 0;
        if (o.pos > 0) {
            r->wlen = o.pos;
            *n = o.pos;
            return CEL_OK;
        }
        if (in.pos == in.size && !r->file_eof) CEL_TRY(read_more(r, err));
        else if (in.pos == in.size && r->file_eof && !r->in_frame)
            return CEL_OK;
    }
}

cel_status cel_jsonl_next(cel_jsonl_reader *r, cel_jsonl_kind *kind, const char **line, size_t *len, cel_error *msg)
{
    cel_error scratch;
    if (!msg) msg = &scratch;
    cel_error_clear(msg);
    *line = NULL;
    *len = 0;
    *kind = CEL_JSONL_EOF;
    if (r->done) return CEL_OK;
    cel_buf_reset(&r->line);
    bool got = false, too_long = false;
    for (;;) {
        if (r->wpos == r->wlen) {
            size_t n;
            bool corrupt;
            cel_error e;
            cel_status st = fill(r, &n, &corrupt, msg, &e);
            if (st) {
                r->done = true;
                *msg = e;
                return st;
            }
            if (corrupt) {
                r->done = true;
                r->event_line = r->line_no + 1;
                *kind = CEL_JSONL_CORRUPT;
                return CEL_OK;
            }
            if (n == 0) { /* the end: a last line without newline still counts */
                r->done = true;
                if (!got) return CEL_OK;
                break;
            }
        }
        got = true;
        const char *p = r->win + r->wpos;
        size_t avail = r->wlen - r->wpos;
        const char *nl = memchr(p, '\n', avail);
        size_t k = nl ? (size_t)(nl - p) : avail;
        if (!too_long && r->line.len + k > r->max_line) {
            too_long = true;
            cel_buf_reset(&r->line);
        }
        if (!too_long && k && cel_buf_append(&r->line, p, k)) {
            r->done = true;
            return cel_error_set(msg, CEL_ERR_NOMEM, "out of memory");
        }
        r->wpos += k + (nl ? 1 : 0);
        if (nl) break;
    }
    r->line_no++;
    r->event_line = r->line_no;
    if (too_long) {
        *kind = CEL_JSONL_TOO_LONG;
        cel_error_set(msg, CEL_ERR_LIMIT, "%s:%llu: line longer than %zu bytes (skipped)", r->name,
                      (unsigned long long)r->line_no, r->max_line);
        return CEL_OK;
    }
    if (!r->line.data && cel_buf_puts(&r->line, "")) return cel_error_set(msg, CEL_ERR_NOMEM, "out of memory");
    *kind = CEL_JSONL_LINE;
    *line = r->line.data;
    *len = r->line.len;
    return CEL_OK;
}

/* ============================================================ expansion */

typedef struct flist {
    cel__job_input *v;
    size_t n, cap;
} flist;

static cel_status flist_add(flist *l, const char *path, uint64_t size, cel_error *err)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        cel__job_input *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        l->v = nv;
        l->cap = nc;
    }
    char *p = strdup(path);
    if (!p) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    l->v[l->n++] = (cel__job_input){p, size};
    return CEL_OK;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static bool is_input_name(const char *name)
{
    return name[0] != '.' && (has_suffix(name, ".jsonl") || has_suffix(name, ".jsonl.zst") ||
                              has_suffix(name, ".json") || has_suffix(name, ".json.zst"));
}

static int cmp_input(const void *a, const void *b)
{
    return strcmp(((const cel__job_input *)a)->path, ((const cel__job_input *)b)->path);
}

/* Adds the input files under dir (recursively, up to depth 8). */
static cel_status walk_dir(flist *l, const char *dir, int depth, cel_error *err)
{
    if (depth > 8) return cel_error_set(err, CEL_ERR_LIMIT, "%s: folders nested deeper than 8 levels", dir);
    DIR *d = opendir(dir);
    if (!d) return cel_error_set(err, CEL_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    cel_status st = CEL_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= sizeof p) {
            st = cel_error_set(err, CEL_ERR_LIMIT, "%s/%s: path too long", dir, e->d_name);
            break;
        }
        struct stat sb;
        if (stat(p, &sb) != 0) continue; /* a dangling link: not an input */
        if (S_ISDIR(sb.st_mode)) st = walk_dir(l, p, depth + 1, err);
        else if (S_ISREG(sb.st_mode) && is_input_name(e->d_name)) st = flist_add(l, p, (uint64_t)sb.st_size, err);
    }
    closedir(d);
    return st;
}

void cel__job_inputs_free(cel__job_input *in, size_t n)
{
    for (size_t i = 0; in && i < n; i++) free(in[i].path);
    free(in);
}

cel_status cel__job_inputs_expand(const char *const *specs, size_t n,
                                  cel_status (*check)(void *ud, const char *path, cel_error *err), void *check_ud,
                                  cel__job_input **out, size_t *n_out, cel_error *err)
{
    *out = NULL;
    *n_out = 0;
    flist all = {0};
    cel_status st = CEL_OK;
    if (n == 0) return cel_error_set(err, CEL_ERR_INVALID, "no input given");
    for (size_t i = 0; i < n && !st; i++) {
        const char *s = specs[i];
        if (!s || !*s) {
            st = cel_error_set(err, CEL_ERR_INVALID, "an input path is empty");
            break;
        }
        flist one = {0};
        struct stat sb;
        if (strpbrk(s, "*?[")) {
            glob_t g;
            int rc = glob(s, GLOB_NOSORT, NULL, &g);
            if (rc == GLOB_NOMATCH) st = cel_error_set(err, CEL_ERR_NOT_FOUND, "input '%s' matches no file", s);
            else if (rc != 0) st = cel_error_set(err, CEL_ERR_IO, "input '%s': glob failed", s);
            for (size_t k = 0; !st && k < g.gl_pathc; k++) {
                if (stat(g.gl_pathv[k], &sb) != 0) continue;
                if (S_ISREG(sb.st_mode)) st = flist_add(&one, g.gl_pathv[k], (uint64_t)sb.st_size, err);
                else if (S_ISDIR(sb.st_mode)) st = walk_dir(&one, g.gl_pathv[k], 1, err);
            }
            if (rc == 0) globfree(&g);
        } else if (stat(s, &sb) != 0) {
            st = cel_error_set(err, CEL_ERR_NOT_FOUND, "input '%s': %s", s, strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            st = walk_dir(&one, s, 1, err);
        } else {
            st = flist_add(&one, s, (uint64_t)sb.st_size, err);
        }
        if (!st && one.n == 0) st = cel_error_set(err, CEL_ERR_NOT_FOUND, "input '%s' holds no .jsonl / .jsonl.zst file", s);
        if (!st) qsort(one.v, one.n, sizeof *one.v, cmp_input);
        for (size_t k = 0; !st && k < one.n; k++) {
            if (check) st = check(check_ud, one.v[k].path, err);
            if (!st) st = flist_add(&all, one.v[k].path, one.v[k].size, err);
        }
        cel__job_inputs_free(one.v, one.n);
    }
    /* a file named twice would be processed twice: refuse */
    if (!st && all.n > 1) {
        cel__job_input *sorted = malloc(all.n * sizeof *sorted);
        if (!sorted) st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        else {
            memcpy(sorted, all.v, all.n * sizeof *sorted);
            qsort(sorted, all.n, sizeof *sorted, cmp_input);
            for (size_t k = 1; k < all.n && !st; k++)
                if (strcmp(sorted[k - 1].path, sorted[k].path) == 0)
                    st = cel_error_set(err, CEL_ERR_INVALID, "input file '%s' is named more than once", sorted[k].path);
            free(sorted);
        }
    }
    if (st) {
        cel__job_inputs_free(all.v, all.n);
        return st;
    }
    *out = all.v;
    *n_out = all.n;
    return CEL_OK;
}

/* ================================================================ hashing */

uint64_t cel__job_key_hash(const char *s, size_t n) { return cel_mix64(cel_hash64(s, n, 0x5A4D)); }

uint64_t cel__job_pos_hash(const char *path, uint64_t line)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return cel_mix64(cel_hash64(base, strlen(base), 0x9051) ^ cel_mix64(line + 1));
}
