/*
 * json.c - JSON helpers for request handlers: parsing with precise errors,
 * typed getters that name the offending key, and strings that are always
 * valid UTF-8 (model output may split or mangle characters; jansson refuses
 * invalid UTF-8, so it is repaired, never passed through).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

cel_status cel__srv_json_parse(const char *body, size_t len, json_t **out, cel_error *err)
{
    json_error_t je;
    *out = NULL;
    if (len == 0) return cel_error_set(err, CEL_ERR_INVALID, "the request body is empty; send a JSON object");
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!v)
        return cel_error_set(err, CEL_ERR_INVALID, "request body is not valid JSON: %s (line %d, column %d)", je.text,
                             je.line, je.column);
    *out = v;
    return CEL_OK;
}

bool cel__srv_utf8_valid(const char *s, size_t n)
{
    /* jansson strings may hold NUL, but keep text simple */
    return !memchr(s, 0, n) && cel_utf8_valid(s, n);
}

json_t *cel__srv_json_str(const char *s, size_t n)
{
    if (!s) s = "", n = 0;
    if (cel__srv_utf8_valid(s, n)) return json_stringn(s, n);
    cel_buf b;
    cel_buf_init(&b);
    json_t *v = NULL;
    if (cel_utf8_sanitize(s, n, &b) == CEL_OK) v = b.data ? json_stringn(b.data, b.len) : json_string("");
    cel_buf_free(&b);
    return v;
}

static int dump_cb(const char *buf, size_t size, void *data)
{
    return cel_buf_append(data, buf, size) == CEL_OK ? 0 : -1;
}

cel_status cel__srv_json_dump(const json_t *v, cel_buf *out)
{
    if (json_dump_callback(v, dump_cb, out, JSON_COMPACT) != 0) return CEL_ERR_NOMEM;
    return CEL_OK;
}

cel_status cel__srv_json_get_bool(const json_t *o, const char *key, bool *out, cel_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return CEL_OK;
    if (!json_is_boolean(v)) return cel_error_set(err, CEL_ERR_INVALID, "'%s' must be true or false", key);
    *out = json_is_true(v);
    return CEL_OK;
}

cel_status cel__srv_json_get_int(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out, cel_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return CEL_OK;
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v);
    } else {
        return cel_error_set(err, CEL_ERR_INVALID, "'%s' must be an integer", key);
    }
    if (x < lo || x > hi)
        return cel_error_set(err, CEL_ERR_INVALID, "'%s' is %lld; it must be between %lld and %lld", key,
                             (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return CEL_OK;
}

cel_status cel__srv_json_get_num(const json_t *o, const char *key, double lo, double hi, double *out, cel_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return CEL_OK;
    if (!json_is_number(v)) return cel_error_set(err, CEL_ERR_INVALID, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return cel_error_set(err, CEL_ERR_INVALID, "'%s' is %g; it must be between %g and %g", key, x, lo, hi);
    *out = x;
    return CEL_OK;
}

cel_status cel__srv_json_get_str(const json_t *o, const char *key, const char **out, cel_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return CEL_OK;
    if (!json_is_string(v)) return cel_error_set(err, CEL_ERR_INVALID, "'%s' must be a string", key);
    *out = json_string_value(v);
    return CEL_OK;
}
