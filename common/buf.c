/* Growable byte buffer. Doubling growth; data stays NUL-terminated. */
#include "celine/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cel_buf_init(cel_buf *b) { b->data = NULL, b->len = 0, b->cap = 0; }

void cel_buf_free(cel_buf *b)
{
    free(b->data);
    cel_buf_init(b);
}

void cel_buf_reset(cel_buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

cel_status cel_buf_reserve(cel_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1) return CEL_ERR_NOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return CEL_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p) return CEL_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return CEL_OK;
}

cel_status cel_buf_append(cel_buf *b, const void *p, size_t n)
{
    CEL_TRY(cel_buf_reserve(b, n));
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return CEL_OK;
}

cel_status cel_buf_puts(cel_buf *b, const char *s) { return cel_buf_append(b, s, strlen(s)); }

cel_status cel_buf_putc(cel_buf *b, char c) { return cel_buf_append(b, &c, 1); }

cel_status cel_buf_printf(cel_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return CEL_ERR_INVALID;
    if ((size_t)n < sizeof tmp) return cel_buf_append(b, tmp, (size_t)n);
    CEL_TRY(cel_buf_reserve(b, (size_t)n));
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return CEL_OK;
}

char *cel_buf_steal(cel_buf *b)
{
    char *p = b->data;
    if (!p) p = calloc(1, 1);
    cel_buf_init(b);
    return p;
}
