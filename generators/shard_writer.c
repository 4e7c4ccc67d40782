/*
 * shard_writer.c - the output side of corpus jobs: zstd frames appended to
 * shard files, and the small durable-file helpers the checkpoint needs
 * (append + fsync, truncate, atomic replace, mkdir -p).
 *
 * Every frame is compressed on its own (ZSTD_compress2 over a whole flush,
 * content size in the header), so a shard cut after any frame is a valid
 * .zst file and the bytes of a frame depend only on its records and the
 * compression level: a resumed job writes the same bytes again.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "job_internal.h"

enum { READ_CHUNK = 1 << 17 };

struct cel__shard_writer {
    char *dir;
    int level;
    ZSTD_CCtx *cctx;
    cel_buf z;        /* compressed frame */
};

void cel__shard_name(uint32_t index, char *out, size_t cap) { snprintf(out, cap, "shard-%05u.jsonl.zst", index); }

cel_status cel__shard_writer_open(const char *dir, int level, cel__shard_writer **out, cel_error *err)
{
    *out = NULL;
    if (level < 1 || level > ZSTD_maxCLevel())
        return cel_error_set(err, CEL_ERR_INVALID, "zstd level %d is out of range 1..%d", level, ZSTD_maxCLevel());
    cel__shard_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->dir = strdup(dir)) || !(w->cctx = ZSTD_createCCtx())) {
        cel__shard_writer_free(w);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    w->level = level;
    /* single-threaded and with a checksum: the same input gives the same bytes */
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    *out = w;
    return CEL_OK;
}

void cel__shard_writer_free(cel__shard_writer *w)
{
    if (!w) return;
    ZSTD_freeCCtx(w->cctx);
    cel_buf_free(&w->z);
    free(w->dir);
    free(w);
}

/* Compresses data into w->z as one frame. */
static cel_status compress_frame(ZSTD_CCtx *cctx, cel_buf *z, const char *data, size_t len, cel_error *err)
{
    size_t bound = ZSTD_compressBound(len);
    cel_buf_reset(z);
    if (cel_buf_reserve(z, bound)) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    size_t n = ZSTD_compress2(cctx, z->data, bound, data, len);
    if (ZSTD_isError(n)) return cel_error_set(err, CEL_ERR_INTERNAL, "zstd compression failed: %s", ZSTD_getErrorName(n));
    z->len = n;
    return CEL_OK;
}

static cel_status write_all(int fd, const char *path, const char *p, size_t n, cel_error *err)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return cel_error_set(err, CEL_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
    return CEL_OK;
}

cel_status cel__append_sync(const char *path, const char *data, size_t len, uint64_t *new_len, cel_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return cel_error_set(err, CEL_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    cel_status st = write_all(fd, path, data, len, err);
    if (!st && fdatasync(fd) != 0) st = cel_error_set(err, CEL_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    struct stat sb;
    if (!st && new_len) {
        if (fstat(fd, &sb) != 0) st = cel_error_set(err, CEL_ERR_IO, "%s: stat failed: %s", path, strerror(errno));
        else *new_len = (uint64_t)sb.st_size;
    }
    close(fd);
    return st;
}

cel_status cel__shard_write_frame(cel__shard_writer *w, uint32_t index, const char *data, size_t len,
                                  uint64_t *frame_len, cel_error *err)
{
    char name[64], path[4200];
    cel__shard_name(index, name, sizeof name);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", w->dir, name) >= sizeof path)
        return cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", w->dir);
    CEL_TRY(compress_frame(w->cctx, &w->z, data, len, err));
    CEL_TRY(cel__append_sync(path, w->z.data, w->z.len, NULL, err));
    *frame_len = w->z.len;
    return CEL_OK;
}

/* Fsyncs the folder holding path, so a rename or a new file survives a crash. */
static cel_status sync_parent(const char *path, cel_error *err)
{
    char *copy = strdup(path);
    if (!copy) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0) return cel_error_set(err, CEL_ERR_IO, "%s: cannot open its folder: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0 && errno != EINVAL) return cel_error_set(err, CEL_ERR_IO, "%s: folder fsync failed: %s", path, strerror(errno));
    return CEL_OK;
}

cel_status cel__write_atomic(const char *path, const char *data, size_t len, cel_error *err)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return cel_error_set(err, CEL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    cel_status st = write_all(fd, tmp, data, len, err);
    if (!st && fsync(fd) != 0) st = cel_error_set(err, CEL_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    close(fd);
    if (!st && rename(tmp, path) != 0)
        st = cel_error_set(err, CEL_ERR_IO, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
    if (st) {
        unlink(tmp);
        return st;
    }
    return sync_parent(path, err);
}

cel_status cel__zstd_write_file(const char *path, const char *data, size_t len, int level, cel_error *err)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    if (!c) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    cel_buf z;
    cel_buf_init(&z);
    cel_status st = compress_frame(c, &z, data, len, err);
    if (!st) st = cel__write_atomic(path, z.data, z.len, err);
    cel_buf_free(&z);
    ZSTD_freeCCtx(c);
    return st;
}

cel_status cel__zstd_read_file(const char *path, uint64_t max_len, size_t max_bytes, cel_buf *out, cel_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return cel_error_set(err, CEL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ZSTD_DCtx *d = ZSTD_createDCtx();
    unsigned char *in = malloc(READ_CHUNK);
    cel_status st = (!d || !in) ? cel_error_set(err, CEL_ERR_NOMEM, "out of memory") : CEL_OK;
    uint64_t consumed = 0;
    size_t last = 0;
    if (max_len == 0) max_len = UINT64_MAX; /* to the end */
    while (!st && consumed < max_len) {
        size_t want = READ_CHUNK;
        if (max_len - consumed < want) want = (size_t)(max_len - consumed);
        size_t n = fread(in, 1, want, f);
        if (n == 0) {
            if (ferror(f)) st = cel_error_set(err, CEL_ERR_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
        consumed += n;
        ZSTD_inBuffer ib = {in, n, 0};
        while (!st && ib.pos < ib.size) {
            if (cel_buf_reserve(out, 1 << 16)) {
                st = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
                break;
            }
            ZSTD_outBuffer ob = {out->data + out->len, out->cap - out->len - 1, 0};
            last = ZSTD_decompressStream(d, &ob, &ib);
            if (ZSTD_isError(last)) {
                st = cel_error_set(err, CEL_ERR_FORMAT, "%s: corrupt zstd data near byte %llu: %s", path,
                                   (unsigned long long)(consumed - (ib.size - ib.pos)), ZSTD_getErrorName(last));
                break;
            }
            out->len += ob.pos;
            out->data[out->len] = 0;
            if (max_bytes && out->len > max_bytes) st = cel_error_set(err, CEL_ERR_LIMIT, "%s: decodes to more than %zu bytes", path, max_bytes);
        }
    }
    if (!st && max_len != UINT64_MAX && consumed < max_len)
        st = cel_error_set(err, CEL_ERR_FORMAT, "%s: shorter (%llu bytes) than recorded (%llu)", path,
                           (unsigned long long)consumed, (unsigned long long)max_len);
    if (!st && last != 0) st = cel_error_set(err, CEL_ERR_FORMAT, "%s: ends inside a zstd frame", path);
    free(in);
    ZSTD_freeDCtx(d);
    fclose(f);
    return st;
}

cel_status cel__truncate(const char *path, uint64_t len, cel_error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT && len == 0) return CEL_OK;
        return cel_error_set(err, CEL_ERR_IO, "%s: %s (the checkpoint records %llu bytes)", path, strerror(errno),
                             (unsigned long long)len);
    }
    if ((uint64_t)sb.st_size < len)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: %llu bytes, shorter than the %llu the checkpoint records", path,
                             (unsigned long long)sb.st_size, (unsigned long long)len);
    if ((uint64_t)sb.st_size == len) return CEL_OK;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return cel_error_set(err, CEL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int rc = ftruncate(fd, (off_t)len);
    if (rc == 0) rc = fdatasync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) return cel_error_set(err, CEL_ERR_IO, "%s: truncate failed: %s", path, strerror(e));
    return CEL_OK;
}

cel_status cel__mkdirs(const char *path, cel_error *err)
{
    char p[4096];
    if ((size_t)snprintf(p, sizeof p, "%s", path) >= sizeof p) return cel_error_set(err, CEL_ERR_LIMIT, "%s: path too long", path);
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return cel_error_set(err, CEL_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    if (!cel_path_is_dir(path)) return cel_error_set(err, CEL_ERR_IO, "%s: not a folder", path);
    return CEL_OK;
}
