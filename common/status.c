/* Status names, error messages and the logging hook. */
#include "celine/common.h"

#include <stdio.h>
#include <string.h>

const char *cel_status_name(cel_status s)
{
    switch (s) {
    case CEL_OK: return "ok";
    case CEL_ERR_INVALID: return "invalid";
    case CEL_ERR_NOMEM: return "nomem";
    case CEL_ERR_IO: return "io";
    case CEL_ERR_FORMAT: return "format";
    case CEL_ERR_UNSUPPORTED: return "unsupported";
    case CEL_ERR_LIMIT: return "limit";
    case CEL_ERR_NOT_FOUND: return "not_found";
    case CEL_ERR_BUSY: return "busy";
    case CEL_ERR_CANCELLED: return "cancelled";
    case CEL_ERR_INTERNAL: return "internal";
    case CEL_ERR_DEVICE: return "device";
    }
    return "unknown";
}

cel_status cel_error_vset(cel_error *err, cel_status code, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return code;
}

cel_status cel_error_set(cel_error *err, cel_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cel_error_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void cel_error_prefix(cel_error *err, const char *fmt, ...)
{
    if (!err) return;
    char pre[CEL_ERROR_MSG_MAX];
    char old[CEL_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* truncation is acceptable: the message keeps its most specific start */
    cel_buf b;
    cel_buf_init(&b);
    if (cel_buf_printf(&b, "%s: %s", pre, old) == CEL_OK) {
        size_t n = b.len < sizeof err->msg - 1 ? b.len : sizeof err->msg - 1;
        memcpy(err->msg, b.data, n);
        err->msg[n] = '\0';
    }
    cel_buf_free(&b);
}

void cel_error_clear(cel_error *err)
{
    if (err) {
        err->code = CEL_OK;
        err->msg[0] = '\0';
    }
}

void cel_log(const cel_logger *lg, cel_log_level level, const char *fmt, ...)
{
    if (!lg || !lg->fn || level < lg->min_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lg->fn(lg->ud, level, msg);
}
