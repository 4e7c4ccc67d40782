/* Whole-file reads and read-only mappings. */
#include "celine/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

cel_status cel_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, cel_error *err)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return cel_error_set(err, CEL_ERR_IO, "%s: %s", path, strerror(errno));
    cel_buf b;
    cel_buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (max_bytes && b.len + n > max_bytes) {
            fclose(f);
            cel_buf_free(&b);
            return cel_error_set(err, CEL_ERR_LIMIT, "%s: larger than %zu bytes", path, max_bytes);
        }
        if (cel_buf_append(&b, chunk, n) != CEL_OK) {
            fclose(f);
            cel_buf_free(&b);
            return cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        cel_buf_free(&b);
        return cel_error_set(err, CEL_ERR_IO, "%s: read error", path);
    }
    if (out_len) *out_len = b.len;
    *out = cel_buf_steal(&b);
    return CEL_OK;
}

cel_status cel_mmap_open(const char *path, cel_mmap *m, cel_error *err)
{
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return cel_error_set(err, CEL_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return cel_error_set(err, CEL_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cel_error_set(err, CEL_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) { /* mmap of 0 bytes fails; an empty mapping is valid */
        close(fd);
        return CEL_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return cel_error_set(err, CEL_ERR_IO, "%s: mmap: %s", path, strerror(e));
    m->data = p;
    m->size = (size_t)st.st_size;
    return CEL_OK;
}

void cel_mmap_close(cel_mmap *m)
{
    if (m->data) munmap(m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

bool cel_path_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool cel_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}
