/*
 * docio.c - reading documents for the pipelines: JSON Lines with
 * configurable id / text / quality fields, or a whole input as one plain-text
 * document. Lines are bounded (max_line_bytes) so a file without newlines
 * cannot grow memory without limit; every error names path:line.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "gen_internal.h"

struct cel_doc_reader {
    FILE *f;
    bool own;
    char *path;
    cel_doc_reader_opts o;
    uint64_t line;
    cel_buf buf;   /* current line / whole text */
    json_t *cur;   /* current parsed line */
    char idbuf[32];
    char qbuf[64];
    bool done;
    char rbuf[65536];
    size_t rpos, rlen;
    bool eof;
};

cel_status cel_doc_reader_open(const char *path, const cel_doc_reader_opts *opts, cel_doc_reader **out, cel_error *err)
{
    *out = NULL;
    cel_doc_reader *r = calloc(1, sizeof *r);
    if (!r) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    if (opts) r->o = *opts;
    if (!r->o.id_field) r->o.id_field = "id";
    if (!r->o.text_field) r->o.text_field = "text";
    if (!r->o.quality_field) r->o.quality_field = "quality";
    if (!r->o.max_line_bytes) r->o.max_line_bytes = 64u << 20;
    bool is_stdin = !path || strcmp(path, "-") == 0;
    r->path = strdup(is_stdin ? "<stdin>" : path);
    if (!r->path) {
        free(r);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    if (is_stdin) {
        r->f = stdin;
    } else {
        r->f = fopen(path, "rb");
        if (!r->f) {
            cel_status st = cel_error_set(err, CEL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
            free(r->path);
            free(r);
            return st;
        }
        r->own = true;
    }
    *out = r;
    return CEL_OK;
}

void cel_doc_reader_free(cel_doc_reader *r)
{
    if (!r) return;
    if (r->own) fclose(r->f);
    json_decref(r->cur);
    cel_buf_free(&r->buf);
    free(r->path);
    free(r);
}

/* Reads the next line (without '\n') into r->buf. *got = false at EOF. */
static cel_status read_line(cel_doc_reader *r, bool *got, cel_error *err)
{
    cel_buf_reset(&r->buf);
    *got = false;
    for (;;) {
        if (r->rpos == r->rlen) {
            if (r->eof) break;
            r->rlen = fread(r->rbuf, 1, sizeof r->rbuf, r->f);
            r->rpos = 0;
            if (r->rlen == 0) {
                if (ferror(r->f))
                    return cel_error_set(err, CEL_ERR_IO, "%s:%llu: read error: %s", r->path,
                                         (unsigned long long)r->line + 1, strerror(errno));
                r->eof = true;
                break;
            }
        }
        *got = true;
        const char *p = r->rbuf + r->rpos;
        const char *nl = memchr(p, '\n', r->rlen - r->rpos);
        size_t n = nl ? (size_t)(nl - p) : r->rlen - r->rpos;
        if (r->buf.len + n > r->o.max_line_bytes)
            return cel_error_set(err, CEL_ERR_LIMIT, "%s:%llu: line longer than %zu bytes", r->path,
                                 (unsigned long long)r->line + 1, r->o.max_line_bytes);
        if (cel_buf_append(&r->buf, p, n)) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        r->rpos += n;
        if (nl) {
            r->rpos++;
            break;
        }
    }
    if (*got) r->line++;
    if (!r->buf.data && cel_buf_puts(&r->buf, "")) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    return CEL_OK;
}

/* Converts one JSON Lines document (s, n: the line, already trimmed and
 * non-empty) into *doc using o's field names (all set). *cur receives the
 * parsed object, which doc points into: the caller json_decref()s it after
 * the document is used (also on error). idbuf / qbuf hold ids and qualities
 * written from numbers. Errors name where:line. Shared with the corpus job
 * reader (job_input.c), which reads .jsonl.zst shards itself. */
cel_status cel__doc_parse_line(const char *s, size_t n, const cel_doc_reader_opts *o, const char *where, uint64_t line,
                               json_t **cur, char idbuf[32], char qbuf[64], cel_gen_doc *doc, cel_error *err)
{
    memset(doc, 0, sizeof *doc);
    *cur = NULL;
    json_error_t je;
    json_t *j = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s:%llu: invalid JSON: %s (column %d)", where,
                             (unsigned long long)line, je.text, je.column);
    *cur = j;
    if (!json_is_object(j))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s:%llu: a line must be a JSON object", where,
                             (unsigned long long)line);
    json_t *t = json_object_get(j, o->text_field);
    if (!json_is_string(t))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s:%llu: no string field \"%s\"", where,
                             (unsigned long long)line, o->text_field);
    doc->text = json_string_value(t);
    doc->len = json_string_length(t);
    json_t *id = json_object_get(j, o->id_field);
    if (json_is_string(id)) {
        doc->id = json_string_value(id);
        if (strlen(doc->id) != json_string_length(id) || json_string_length(id) > 1024)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s:%llu: field \"%s\" must be a string of at most 1024 bytes without NUL",
                                 where, (unsigned long long)line, o->id_field);
    } else if (json_is_integer(id)) {
        snprintf(idbuf, 32, "%lld", (long long)json_integer_value(id));
        doc->id = idbuf;
    } else if (!id || json_is_null(id)) {
        snprintf(idbuf, 32, "%llu", (unsigned long long)line);
        doc->id = idbuf;
    } else
        return cel_error_set(err, CEL_ERR_FORMAT, "%s:%llu: field \"%s\" must be a string or an integer",
                             where, (unsigned long long)line, o->id_field);
    json_t *q = json_object_get(j, o->quality_field);
    if (json_is_string(q)) {
        snprintf(qbuf, 64, "%s", json_string_value(q));
        doc->quality = qbuf;
    } else if (json_is_number(q)) {
        snprintf(qbuf, 64, "%.17g", json_number_value(q));
        doc->quality = qbuf;
    } else if (q && !json_is_null(q))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s:%llu: field \"%s\" must be a number or a string", where,
                             (unsigned long long)line, o->quality_field);
    return CEL_OK;
}

cel_status cel_doc_reader_next(cel_doc_reader *r, cel_gen_doc *doc, bool *eof, cel_error *err)
{
    *eof = false;
    memset(doc, 0, sizeof *doc);
    json_decref(r->cur);
    r->cur = NULL;
    if (r->done) {
        *eof = true;
        return CEL_OK;
    }
    if (r->o.plain_text) {
        /* the whole input, newlines included, is one document */
        cel_buf_reset(&r->buf);
        cel_buf all;
        cel_buf_init(&all);
        bool got;
        bool first = true;
        for (;;) {
            size_t before = r->o.max_line_bytes;
            cel_status st = read_line(r, &got, err);
            if (st) {
                cel_buf_free(&all);
                return st;
            }
            if (!got) break;
            if (all.len + r->buf.len + 1 > before) {
                cel_buf_free(&all);
                return cel_error_set(err, CEL_ERR_LIMIT, "%s: text longer than %zu bytes", r->path, before);
            }
            if ((!first && cel_buf_putc(&all, '\n')) || cel_buf_append(&all, r->buf.data, r->buf.len)) {
                cel_buf_free(&all);
                return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
            }
            first = false;
        }
        cel_buf_free(&r->buf);
        r->buf = all;
        if (!r->buf.data && cel_buf_puts(&r->buf, "")) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
        r->done = true;
        doc->id = "text";
        doc->text = r->buf.data;
        doc->len = r->buf.len;
        return CEL_OK;
    }
    for (;;) {
        bool got;
        CEL_TRY(read_line(r, &got, err));
        if (!got) {
            r->done = true;
            *eof = true;
            return CEL_OK;
        }
        const char *s = r->buf.data;
        size_t n = r->buf.len;
        cel__trim(&s, &n);
        if (n == 0) continue; /* blank lines are allowed */
        return cel__doc_parse_line(s, n, &r->o, r->path, r->line, &r->cur, r->idbuf, r->qbuf, doc, err);
    }
}
