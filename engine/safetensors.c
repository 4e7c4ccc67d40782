/*
 * safetensors.c - the .safetensors reader (see safetensors.h for the format).
 *
 * The JSON header is parsed with jansson (duplicate keys rejected, nesting
 * bounded by jansson's depth limit) after its length has been checked against
 * the file and the format's 100 MB cap, so a hostile header cannot make us
 * allocate more than a small multiple of the file. Every tensor's byte range
 * is checked against the buffer and its dtype x shape; the ranges must tile
 * the buffer exactly (the format forbids holes), which also rules out overlap.
 */
#include "safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cel_safetensors {
    char *label;
    cel_mmap map;
    const uint8_t *base;
    size_t size;
    size_t n;
    cel_st_tensor *t;   /* sorted by name */
    char *names;        /* all names, NUL-separated (owned) */
    json_t *meta;       /* "__metadata__" object or NULL */
};

static const struct {
    const char *name;
    size_t size;
    int cel; /* cel_dtype, or -1 when celine does not compute with it */
} st_dtypes[] = {
    {"F32", 4, CEL_DTYPE_F32}, {"F16", 2, CEL_DTYPE_F16}, {"BF16", 2, CEL_DTYPE_BF16}, {"F64", 8, -1},
    {"I64", 8, -1},            {"U64", 8, -1},            {"I32", 4, -1},              {"U32", 4, -1},
    {"I16", 2, -1},            {"U16", 2, -1},            {"I8", 1, -1},               {"U8", 1, -1},
    {"BOOL", 1, -1},           {"F8_E4M3", 1, -1},        {"F8_E5M2", 1, -1},
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const cel_st_tensor *)a)->name, ((const cel_st_tensor *)b)->name);
}

static int cmp_range(const void *a, const void *b)
{
    const cel_st_tensor *x = *(const cel_st_tensor *const *)a, *y = *(const cel_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Reads one header entry `name` -> {"dtype", "shape", "data_offsets"} into t
 * and checks it against the byte buffer of buf_size bytes. */
static cel_status parse_entry(cel_safetensors *st, const char *name, json_t *v, cel_st_tensor *t, size_t buf_size,
                              cel_error *err)
{
    const char *L = st->label;
    if (!json_is_object(v))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: header entry '%s' is not an object", L, name);
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' has no string \"dtype\"", L, name);
    if (!json_is_array(shape))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' has no array \"shape\"", L, name);
    if (!json_is_array(offs) || json_array_size(offs) != 2)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' has no \"data_offsets\" [begin, end]", L, name);
    const char *dts = json_string_value(dt);
    size_t k;
    for (k = 0; k < sizeof st_dtypes / sizeof st_dtypes[0]; k++)
        if (strcmp(dts, st_dtypes[k].name) == 0) break;
    if (k == sizeof st_dtypes / sizeof st_dtypes[0])
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' has unknown dtype \"%.20s\"", L, name, dts);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", st_dtypes[k].name);
    t->elem_size = st_dtypes[k].size;
    t->supported = st_dtypes[k].cel >= 0;
    t->dtype = t->supported ? (cel_dtype)st_dtypes[k].cel : CEL_DTYPE_F32;

    size_t nd = json_array_size(shape);
    if (nd > CEL_ST_MAX_DIMS)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: tensor '%s' has %zu dimensions (at most %d)", L, name, nd,
                             CEL_ST_MAX_DIMS);
    t->n_dims = (int32_t)nd;
    uint64_t nelem = 1;
    for (int d = 0; d < CEL_ST_MAX_DIMS; d++) t->shape[d] = t->ne[d] = 1;
    for (size_t d = 0; d < nd; d++) {
        json_t *x = json_array_get(shape, d);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", L,
                                 name, d);
        uint64_t v64 = (uint64_t)json_integer_value(x);
        if (v64 && nelem > UINT64_MAX / v64)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s': shape overflows", L, name);
        nelem *= v64;
        t->shape[d] = (int64_t)v64;
        t->ne[nd - 1 - d] = (int64_t)v64;
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s': data_offsets must be integers 0 <= begin <= end", L,
                             name);
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(e);
    if (t->end > buf_size)
        return cel_error_set(err, CEL_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] extend past the end of the data (%zu bytes)", L,
                             name, (unsigned long long)t->begin, (unsigned long long)t->end, buf_size);
    t->nbytes = (size_t)(t->end - t->begin);
    if (nelem > SIZE_MAX / t->elem_size || nelem * t->elem_size != t->nbytes)
        return cel_error_set(err, CEL_ERR_FORMAT,
                             "%s: tensor '%s': %llu bytes in data_offsets but dtype %s x shape needs %llu elements", L,
                             name, (unsigned long long)t->nbytes, t->dtype_name, (unsigned long long)nelem);
    return CEL_OK;
}

static cel_status parse(cel_safetensors *st, cel_error *err)
{
    const char *L = st->label;
    if (st->size < 8)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: too short for a safetensors file (%zu bytes)", L, st->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->base[i];
    if (hlen > CEL_ST_MAX_HEADER)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: header length %llu exceeds the format's limit of %u bytes", L,
                             (unsigned long long)hlen, CEL_ST_MAX_HEADER);
    if (hlen > st->size - 8)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: truncated: header length %llu but only %zu bytes follow", L,
                             (unsigned long long)hlen, st->size - 8);
    if (hlen < 2 || st->base[8] != '{')
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: the header is not a JSON object", L);
    size_t buf_size = st->size - 8 - (size_t)hlen;
    const uint8_t *buf = st->base + 8 + hlen;

    json_error_t je;
    json_t *root = json_loadb((const char *)st->base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: bad JSON header at byte %d: %s", L, je.position, je.text);
    cel_status s = CEL_OK;
    cel_st_tensor **by_range = NULL;
    if (!json_is_object(root)) {
        s = cel_error_set(err, CEL_ERR_FORMAT, "%s: the header is not a JSON object", L);
        goto done;
    }
    json_t *meta = json_object_get(root, "__metadata__");
    if (meta) {
        if (!json_is_object(meta)) {
            s = cel_error_set(err, CEL_ERR_FORMAT, "%s: \"__metadata__\" is not an object", L);
            goto done;
        }
        const char *k;
        json_t *v;
        json_object_foreach(meta, k, v) {
            if (!json_is_string(v)) {
                s = cel_error_set(err, CEL_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string", L, k);
                goto done;
            }
        }
        st->meta = json_incref(meta);
    }
    size_t n = json_object_size(root) - (meta ? 1 : 0), names_len = 0;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) names_len += strlen(k) + 1;
    st->t = calloc(n ? n : 1, sizeof *st->t);
    st->names = malloc(names_len ? names_len : 1);
    by_range = malloc((n ? n : 1) * sizeof *by_range);
    if (!st->t || !st->names || !by_range) {
        s = cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory", L);
        goto done;
    }
    size_t i = 0, at = 0;
    json_object_foreach(root, k, v) {
        if (strcmp(k, "__metadata__") == 0) continue;
        size_t kl = strlen(k);
        if (kl == 0 || kl >= sizeof(((cel_tensor *)0)->name)) {
            s = cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor name '%.80s' has length %zu (must be 1..%zu)", L, k, kl,
                              sizeof(((cel_tensor *)0)->name) - 1);
            goto done;
        }
        memcpy(st->names + at, k, kl + 1);
        cel_st_tensor *t = &st->t[i];
        t->name = st->names + at;
        at += kl + 1;
        s = parse_entry(st, t->name, v, t, buf_size, err);
        if (s != CEL_OK) goto done;
        t->data = buf + t->begin;
        by_range[i] = t;
        i++;
    }
    st->n = n;
    /* the ranges must tile [0, buf_size): sorted by begin, each starts where the last ended */
    qsort(by_range, n, sizeof *by_range, cmp_range);
    uint64_t pos = 0;
    for (i = 0; i < n; i++) {
        const cel_st_tensor *t = by_range[i];
        if (t->begin < pos) {
            s = cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' (bytes %llu..%llu) overlaps '%s'", L, t->name,
                              (unsigned long long)t->begin, (unsigned long long)t->end, by_range[i - 1]->name);
            goto done;
        }
        if (t->begin > pos) {
            s = cel_error_set(err, CEL_ERR_FORMAT, "%s: hole in the data before tensor '%s' (bytes %llu..%llu unused)",
                              L, t->name, (unsigned long long)pos, (unsigned long long)t->begin);
            goto done;
        }
        pos = t->end;
    }
    if (pos != buf_size) {
        s = cel_error_set(err, CEL_ERR_FORMAT, "%s: %llu bytes of data after the last tensor are not described by the header",
                          L, (unsigned long long)(buf_size - pos));
        goto done;
    }
    qsort(st->t, n, sizeof *st->t, cmp_name);
done:
    free(by_range);
    json_decref(root);
    return s;
}

static cel_status finish_open(cel_safetensors *st, cel_safetensors **out, cel_error *err)
{
    cel_status s = parse(st, err);
    if (s != CEL_OK) {
        cel_safetensors_close(st);
        return s;
    }
    *out = st;
    return CEL_OK;
}

cel_status cel_safetensors_open_memory(const void *data, size_t size, const char *label, cel_safetensors **out,
                                       cel_error *err)
{
    *out = NULL;
    if (!data && size) return cel_error_set(err, CEL_ERR_INVALID, "cel_safetensors_open_memory: NULL data");
    cel_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->label = strdup(label ? label : "<memory>"))) {
        free(st);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    st->base = data;
    st->size = size;
    return finish_open(st, out, err);
}

cel_status cel_safetensors_open(const char *path, cel_safetensors **out, cel_error *err)
{
    *out = NULL;
    cel_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->label = strdup(path))) {
        free(st);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    cel_status s = cel_mmap_open(path, &st->map, err);
    if (s != CEL_OK) {
        free(st->label);
        free(st);
        return s;
    }
    st->base = st->map.data;
    st->size = st->map.size;
    return finish_open(st, out, err);
}

void cel_safetensors_close(cel_safetensors *st)
{
    if (!st) return;
    json_decref(st->meta);
    free(st->t);
    free(st->names);
    cel_mmap_close(&st->map);
    free(st->label);
    free(st);
}

const char *cel_safetensors_label(const cel_safetensors *st) { return st->label; }
size_t cel_safetensors_n_tensors(const cel_safetensors *st) { return st->n; }

const cel_st_tensor *cel_safetensors_tensor(const cel_safetensors *st, size_t i)
{
    return i < st->n ? &st->t[i] : NULL;
}

const cel_st_tensor *cel_safetensors_find(const cel_safetensors *st, const char *name)
{
    cel_st_tensor key;
    key.name = name;
    return st->n ? bsearch(&key, st->t, st->n, sizeof *st->t, cmp_name) : NULL;
}

const char *cel_safetensors_metadata(const cel_safetensors *st, const char *key)
{
    return st->meta ? json_string_value(json_object_get(st->meta, key)) : NULL;
}
