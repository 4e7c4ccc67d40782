/*
 * gguf.c - GGUF v2/v3 reader (format: ggml docs/gguf.md).
 *
 * The whole header is parsed and validated once, at open, against the size of
 * the buffer: every length, count and offset is checked before it is used, with
 * overflow-safe arithmetic, so a malformed or truncated file gives an error
 * naming the file and the key or tensor and never reads outside the buffer.
 * Allocation is bounded by the file size (a count is checked against the bytes
 * left before anything is allocated for it). Nothing is copied: strings, arrays
 * and tensor data point into the buffer (a read-only mapping for files).
 *
 * Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv;
 * n_kv x (string key, u32 type, value); n_tensors x (string name, u32 n_dims,
 * u64 ne[n_dims], u32 ggml type, u64 offset); padding to general.alignment
 * (default 32); the data section. A string is u64 length + bytes (no NUL).
 */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ALIGNMENT (1u << 16)
#define GGUF_MAX_KEY_LEN 65535
#define GGUF_MAX_DIMS 4
/* smallest possible encodings, used to bound counts before allocating */
#define GGUF_MIN_KV_BYTES (8 + 1 + 4 + 1)            /* key len, 1-byte key, type, u8 value */
#define GGUF_MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8) /* name len, 1-byte name, n_dims, 1 dim, type, offset */

typedef struct gguf_kv {
    cel_gguf_str key;
    cel_gguf_type type;
    const uint8_t *val;  /* scalars: the value's bytes */
    cel_gguf_str str;    /* CEL_GGUF_STRING */
    cel_gguf_type elem;  /* CEL_GGUF_ARRAY: element type */
    uint64_t n;          /* CEL_GGUF_ARRAY: element count */
    const void *adata;   /* CEL_GGUF_ARRAY of numbers: packed elements */
    cel_gguf_str *strs;  /* CEL_GGUF_ARRAY of strings: index (owned) */
} gguf_kv;

/* A name and the index it belongs to: sorted copies give binary search
 * without a comparison context (qsort has none). */
typedef struct gguf_ref {
    cel_gguf_str name;
    uint64_t idx;
} gguf_ref;

struct cel_gguf {
    char *label;
    cel_mmap map; /* when opened from a file */
    const uint8_t *base;
    size_t size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_ref *kv_sorted; /* keys sorted by name */
    cel_gguf_tensor_info *ti;
    gguf_ref *ti_sorted; /* tensor names sorted */
    size_t alignment;
    size_t data_off;
};

/* ------------------------------------------------------------ reading */

typedef struct rd {
    const uint8_t *p;
    size_t size, pos;
    const char *label;
    cel_error *err;
} rd;

static const char *type_name(uint32_t t)
{
    static const char *const names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "invalid";
}

/* Size in bytes of a fixed-size value type; 0 for string/array/invalid. */
static size_t scalar_size(uint32_t t)
{
    switch (t) {
    case CEL_GGUF_U8:
    case CEL_GGUF_I8:
    case CEL_GGUF_BOOL: return 1;
    case CEL_GGUF_U16:
    case CEL_GGUF_I16: return 2;
    case CEL_GGUF_U32:
    case CEL_GGUF_I32:
    case CEL_GGUF_F32: return 4;
    case CEL_GGUF_U64:
    case CEL_GGUF_I64:
    case CEL_GGUF_F64: return 8;
    default: return 0;
    }
}

static uint64_t le64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static size_t rd_left(const rd *r)
{
    return r->size - r->pos;
}

/* Takes n bytes at the cursor; `what` describes them for the error message. */
static cel_status rd_take(rd *r, size_t n, const uint8_t **out, const char *what)
{
    if (n > rd_left(r))
        return cel_error_set(r->err, CEL_ERR_FORMAT,
                             "%s: truncated at offset %zu reading %s (need %zu bytes, %zu left)", r->label, r->pos,
                             what, n, rd_left(r));
    *out = r->p + r->pos;
    r->pos += n;
    return CEL_OK;
}

static cel_status rd_u32(rd *r, uint32_t *v, const char *what)
{
    const uint8_t *b = NULL;
    CEL_TRY(rd_take(r, 4, &b, what));
    *v = le32(b);
    return CEL_OK;
}

static cel_status rd_u64(rd *r, uint64_t *v, const char *what)
{
    const uint8_t *b = NULL;
    CEL_TRY(rd_take(r, 8, &b, what));
    *v = le64(b);
    return CEL_OK;
}

static cel_status rd_str(rd *r, cel_gguf_str *s, const char *what)
{
    uint64_t len;
    CEL_TRY(rd_u64(r, &len, what));
    if (len > rd_left(r))
        return cel_error_set(r->err, CEL_ERR_FORMAT,
                             "%s: %s at offset %zu has length %llu but only %zu bytes are left", r->label, what,
                             r->pos - 8, (unsigned long long)len, rd_left(r));
    const uint8_t *b = NULL;
    CEL_TRY(rd_take(r, (size_t)len, &b, what));
    s->p = (const char *)b;
    s->len = len;
    return CEL_OK;
}

/* Key names are printed in messages: cap and sanitise their length. */
static int show_len(cel_gguf_str s)
{
    return s.len > 80 ? 80 : (int)s.len;
}

static int str_cmp(cel_gguf_str a, cel_gguf_str b)
{
    size_t n = a.len < b.len ? (size_t)a.len : (size_t)b.len;
    int c = n ? memcmp(a.p, b.p, n) : 0;
    if (c) return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* Parses the value of kv (its type already read): a scalar, a string, or an
 * array of scalars or strings (arrays of arrays are refused). */
static cel_status rd_kv_value(rd *r, gguf_kv *kv)
{
    char what[160];
    snprintf(what, sizeof what, "the value of key '%.*s'", show_len(kv->key), kv->key.p);
    uint32_t t = kv->type;
    if (t == CEL_GGUF_STRING) return rd_str(r, &kv->str, what);
    if (t != CEL_GGUF_ARRAY) {
        size_t sz = scalar_size(t);
        if (!sz)
            return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: key '%.*s' has unknown value type %u", r->label,
                                 show_len(kv->key), kv->key.p, t);
        CEL_TRY(rd_take(r, sz, &kv->val, what));
        if (t == CEL_GGUF_BOOL && kv->val[0] > 1)
            return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: key '%.*s' is a bool with value %u (must be 0 or 1)",
                                 r->label, show_len(kv->key), kv->key.p, kv->val[0]);
        return CEL_OK;
    }
    uint32_t et;
    CEL_TRY(rd_u32(r, &et, what));
    CEL_TRY(rd_u64(r, &kv->n, what));
    kv->elem = (cel_gguf_type)et;
    if (et == CEL_GGUF_ARRAY)
        return cel_error_set(r->err, CEL_ERR_UNSUPPORTED, "%s: key '%.*s' is an array of arrays (not supported)",
                             r->label, show_len(kv->key), kv->key.p);
    if (et == CEL_GGUF_STRING) {
        /* every string takes at least its 8-byte length: bound n before allocating */
        if (kv->n > rd_left(r) / 8)
            return cel_error_set(r->err, CEL_ERR_FORMAT,
                                 "%s: key '%.*s' claims %llu strings but only %zu bytes are left", r->label,
                                 show_len(kv->key), kv->key.p, (unsigned long long)kv->n, rd_left(r));
        kv->strs = malloc((size_t)(kv->n ? kv->n : 1) * sizeof *kv->strs);
        if (!kv->strs) return cel_error_set(r->err, CEL_ERR_NOMEM, "%s: out of memory", r->label);
        for (uint64_t i = 0; i < kv->n; i++) {
            snprintf(what, sizeof what, "string %llu of key '%.*s'", (unsigned long long)i, show_len(kv->key),
                     kv->key.p);
            CEL_TRY(rd_str(r, &kv->strs[i], what));
        }
        return CEL_OK;
    }
    size_t sz = scalar_size(et);
    if (!sz)
        return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: key '%.*s' is an array of unknown type %u", r->label,
                             show_len(kv->key), kv->key.p, et);
    if (kv->n > rd_left(r) / sz)
        return cel_error_set(r->err, CEL_ERR_FORMAT,
                             "%s: key '%.*s' claims %llu elements of %s but only %zu bytes are left", r->label,
                             show_len(kv->key), kv->key.p, (unsigned long long)kv->n, type_name(et), rd_left(r));
    const uint8_t *b = NULL;
    CEL_TRY(rd_take(r, (size_t)kv->n * sz, &b, what));
    kv->adata = b;
    if (et == CEL_GGUF_BOOL)
        for (uint64_t i = 0; i < kv->n; i++)
            if (b[i] > 1)
                return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: key '%.*s': bool element %llu has value %u",
                                     r->label, show_len(kv->key), kv->key.p, (unsigned long long)i, b[i]);
    return CEL_OK;
}

/* ggml type names for messages about types celine does not read. */
static const char *ggml_type_name(uint32_t t)
{
    static const char *const names[] = {
        "F32",  "F16",  "Q4_0", "Q4_1",    "Q4_2", "Q4_3",   "Q5_0",    "Q5_1",  "Q8_0", "Q8_1",
        "Q2_K", "Q3_K", "Q4_K", "Q5_K",    "Q6_K", "Q8_K",   "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
        "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : NULL;
}

/* ---------------------------------------------------------- sorting */

static int cmp_ref(const void *a, const void *b)
{
    return str_cmp(((const gguf_ref *)a)->name, ((const gguf_ref *)b)->name);
}

typedef struct off_ref {
    uint64_t offset;
    uint64_t idx;
} off_ref;

static int cmp_off(const void *a, const void *b)
{
    uint64_t x = ((const off_ref *)a)->offset, y = ((const off_ref *)b)->offset;
    return x < y ? -1 : x > y;
}

/* Binary search of name in a sorted gguf_ref array; returns the index or -1. */
static int64_t find_ref(const gguf_ref *refs, uint64_t n, const char *name)
{
    cel_gguf_str k = {name, strlen(name)};
    size_t lo = 0, hi = (size_t)n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(refs[mid].name, k);
        if (c == 0) return (int64_t)refs[mid].idx;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* ------------------------------------------------------------- parsing */

static const gguf_kv *find_kv(const cel_gguf *g, const char *key)
{
    int64_t i = find_ref(g->kv_sorted, g->n_kv, key);
    return i < 0 ? NULL : &g->kv[i];
}

static cel_status parse_kvs(cel_gguf *g, rd *r)
{
    if (g->n_kv > rd_left(r) / GGUF_MIN_KV_BYTES)
        return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: header claims %llu key/values but the file has only %zu bytes left",
                             g->label, (unsigned long long)g->n_kv, rd_left(r));
    g->kv = calloc((size_t)(g->n_kv ? g->n_kv : 1), sizeof *g->kv);
    g->kv_sorted = malloc((size_t)(g->n_kv ? g->n_kv : 1) * sizeof *g->kv_sorted);
    if (!g->kv || !g->kv_sorted) return cel_error_set(r->err, CEL_ERR_NOMEM, "%s: out of memory", g->label);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        char what[64];
        snprintf(what, sizeof what, "the name of key/value %llu", (unsigned long long)i);
        CEL_TRY(rd_str(r, &kv->key, what));
        if (kv->key.len == 0 || kv->key.len > GGUF_MAX_KEY_LEN || memchr(kv->key.p, 0, (size_t)kv->key.len))
            return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: key/value %llu has an invalid name (length %llu)",
                                 g->label, (unsigned long long)i, (unsigned long long)kv->key.len);
        uint32_t t;
        snprintf(what, sizeof what, "the type of key/value %llu", (unsigned long long)i);
        CEL_TRY(rd_u32(r, &t, what));
        if (t > CEL_GGUF_F64)
            return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: key '%.*s' has unknown value type %u", g->label,
                                 show_len(kv->key), kv->key.p, t);
        kv->type = (cel_gguf_type)t;
        CEL_TRY(rd_kv_value(r, kv));
        g->kv_sorted[i].name = kv->key;
        g->kv_sorted[i].idx = i;
    }
    if (g->n_kv) qsort(g->kv_sorted, (size_t)g->n_kv, sizeof *g->kv_sorted, cmp_ref);
    for (uint64_t i = 1; i < g->n_kv; i++) {
        cel_gguf_str a = g->kv_sorted[i - 1].name, b = g->kv_sorted[i].name;
        if (str_cmp(a, b) == 0)
            return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: duplicate key '%.*s'", g->label, show_len(a), a.p);
    }
    return CEL_OK;
}

static cel_status parse_alignment(cel_gguf *g, cel_error *err)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!find_kv(g, "general.alignment")) return CEL_OK;
    int64_t a;
    CEL_TRY(cel_gguf_get_i64(g, "general.alignment", &a, err));
    if (a <= 0 || a > (int64_t)GGUF_MAX_ALIGNMENT || (a & (a - 1)) != 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: general.alignment is %lld (must be a power of two <= %u)",
                             g->label, (long long)a, GGUF_MAX_ALIGNMENT);
    g->alignment = (size_t)a;
    return CEL_OK;
}

static cel_status parse_tensor_info(cel_gguf *g, rd *r, uint64_t i)
{
    cel_gguf_tensor_info *t = &g->ti[i];
    char what[200];
    snprintf(what, sizeof what, "the name of tensor %llu", (unsigned long long)i);
    CEL_TRY(rd_str(r, &t->name, what));
    if (t->name.len == 0 || t->name.len >= sizeof(((cel_tensor *)0)->name) ||
        memchr(t->name.p, 0, (size_t)t->name.len))
        return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: tensor %llu has an invalid name (length %llu, at most %zu)",
                             g->label, (unsigned long long)i, (unsigned long long)t->name.len,
                             sizeof(((cel_tensor *)0)->name) - 1);
    const int nl = show_len(t->name);
    snprintf(what, sizeof what, "the shape of tensor '%.*s'", nl, t->name.p);
    CEL_TRY(rd_u32(r, &t->n_dims, what));
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: tensor '%.*s' has %u dimensions (must be 1..%d)", g->label,
                             nl, t->name.p, t->n_dims, GGUF_MAX_DIMS);
    int64_t nelem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t v;
        CEL_TRY(rd_u64(r, &v, what));
        if (v == 0 || v > (uint64_t)INT64_MAX || (int64_t)v > INT64_MAX / nelem)
            return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: tensor '%.*s' has an invalid dimension %u = %llu",
                                 g->label, nl, t->name.p, d, (unsigned long long)v);
        t->ne[d] = (int64_t)v;
        nelem *= (int64_t)v;
    }
    uint32_t type;
    snprintf(what, sizeof what, "the type of tensor '%.*s'", nl, t->name.p);
    CEL_TRY(rd_u32(r, &type, what));
    if (!cel_dtype_valid((int)type)) {
        const char *tn = ggml_type_name(type);
        if (tn)
            return cel_error_set(r->err, CEL_ERR_UNSUPPORTED,
                                 "%s: tensor '%.*s' has type %s (%u), which celine does not read "
                                 "(supported: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
                                 g->label, nl, t->name.p, tn, type);
        return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: tensor '%.*s' has unknown type %u", g->label, nl, t->name.p,
                             type);
    }
    t->dtype = (cel_dtype)type;
    int64_t blk = cel_dtype_block_elems(t->dtype);
    if (t->ne[0] % blk != 0)
        return cel_error_set(r->err, CEL_ERR_FORMAT,
                             "%s: tensor '%.*s' of type %s has rows of %lld elements, not a multiple of its block (%lld)",
                             g->label, nl, t->name.p, cel_dtype_name(t->dtype), (long long)t->ne[0], (long long)blk);
    size_t row = cel_dtype_row_bytes(t->dtype, t->ne[0]);
    uint64_t rows = (uint64_t)(nelem / t->ne[0]);
    if (row == 0 || rows > SIZE_MAX / row)
        return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: tensor '%.*s' is too large", g->label, nl, t->name.p);
    t->nbytes = row * (size_t)rows;
    snprintf(what, sizeof what, "the offset of tensor '%.*s'", nl, t->name.p);
    CEL_TRY(rd_u64(r, &t->offset, what));
    return CEL_OK;
}

static cel_status parse_tensors(cel_gguf *g, rd *r)
{
    if (g->n_tensors > rd_left(r) / GGUF_MIN_TENSOR_BYTES)
        return cel_error_set(r->err, CEL_ERR_FORMAT, "%s: header claims %llu tensors but the file has only %zu bytes left",
                             g->label, (unsigned long long)g->n_tensors, rd_left(r));
    size_t n = (size_t)(g->n_tensors ? g->n_tensors : 1);
    g->ti = calloc(n, sizeof *g->ti);
    g->ti_sorted = malloc(n * sizeof *g->ti_sorted);
    off_ref *by_off = malloc(n * sizeof *by_off);
    if (!g->ti || !g->ti_sorted || !by_off) {
        free(by_off);
        return cel_error_set(r->err, CEL_ERR_NOMEM, "%s: out of memory", g->label);
    }
    cel_status s = CEL_OK;
    for (uint64_t i = 0; i < g->n_tensors && s == CEL_OK; i++) {
        s = parse_tensor_info(g, r, i);
        g->ti_sorted[i].name = g->ti[i].name;
        g->ti_sorted[i].idx = by_off[i].idx = i;
        by_off[i].offset = g->ti[i].offset;
    }
    if (s != CEL_OK) goto done;

    /* the data section starts at the next multiple of the alignment */
    size_t pad = (g->alignment - r->pos % g->alignment) % g->alignment;
    g->data_off = r->pos + pad;
    if (g->n_tensors && (pad > rd_left(r))) {
        s = cel_error_set(r->err, CEL_ERR_FORMAT, "%s: truncated: the data section would start at %zu, past the end (%zu bytes)",
                          g->label, r->pos + pad, r->size);
        goto done;
    }
    size_t data_size = g->data_off <= g->size ? g->size - g->data_off : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        cel_gguf_tensor_info *t = &g->ti[i];
        const int nl = show_len(t->name);
        if (t->offset % g->alignment != 0) {
            s = cel_error_set(r->err, CEL_ERR_FORMAT, "%s: tensor '%.*s' has offset %llu, not a multiple of the alignment %zu",
                              g->label, nl, t->name.p, (unsigned long long)t->offset, g->alignment);
            goto done;
        }
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            s = cel_error_set(r->err, CEL_ERR_FORMAT,
                              "%s: tensor '%.*s' (%zu bytes at data offset %llu) extends past the end of the file "
                              "(data section is %zu bytes)",
                              g->label, nl, t->name.p, t->nbytes, (unsigned long long)t->offset, data_size);
            goto done;
        }
        t->data = g->base + g->data_off + t->offset;
        /* element loads need natural alignment: 4 for F32, 2 for the fp16 fields of the others */
        size_t need = t->dtype == CEL_DTYPE_F32 ? 4 : 2;
        if ((uintptr_t)t->data % need != 0) {
            s = cel_error_set(r->err, CEL_ERR_FORMAT, "%s: tensor '%.*s' data is not %zu-byte aligned", g->label, nl,
                              t->name.p, need);
            goto done;
        }
    }
    if (g->n_tensors) {
        qsort(g->ti_sorted, (size_t)g->n_tensors, sizeof *g->ti_sorted, cmp_ref);
        qsort(by_off, (size_t)g->n_tensors, sizeof *by_off, cmp_off);
    }
    for (uint64_t i = 1; i < g->n_tensors; i++) {
        cel_gguf_str a = g->ti_sorted[i - 1].name, b = g->ti_sorted[i].name;
        if (str_cmp(a, b) == 0) {
            s = cel_error_set(r->err, CEL_ERR_FORMAT, "%s: duplicate tensor name '%.*s'", g->label, show_len(a), a.p);
            goto done;
        }
        const cel_gguf_tensor_info *p = &g->ti[by_off[i - 1].idx], *q = &g->ti[by_off[i].idx];
        if (q->offset < p->offset + p->nbytes) { /* no overflow: both end inside the file */
            s = cel_error_set(r->err, CEL_ERR_FORMAT, "%s: tensors '%.*s' and '%.*s' overlap", g->label,
                              show_len(p->name), p->name.p, show_len(q->name), q->name.p);
            goto done;
        }
    }
done:
    free(by_off);
    return s;
}

static cel_status parse(cel_gguf *g, cel_error *err)
{
    rd r = {g->base, g->size, 0, g->label, err};
    const uint8_t *magic = NULL;
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: not a GGUF file (bad magic)", g->label);
    CEL_TRY(rd_take(&r, 4, &magic, "the magic"));
    CEL_TRY(rd_u32(&r, &g->version, "the version"));
    if (g->version == 1)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: GGUF version 1 is not supported (only 2 and 3)", g->label);
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0)
            return cel_error_set(err, CEL_ERR_UNSUPPORTED,
                                 "%s: GGUF version %u (a big-endian file? only little-endian v2/v3 are read)", g->label,
                                 g->version);
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (only 2 and 3)", g->label,
                             g->version);
    }
    CEL_TRY(rd_u64(&r, &g->n_tensors, "the tensor count"));
    CEL_TRY(rd_u64(&r, &g->n_kv, "the key/value count"));
    CEL_TRY(parse_kvs(g, &r));
    CEL_TRY(parse_alignment(g, err));
    CEL_TRY(parse_tensors(g, &r));
    return CEL_OK;
}

static cel_status open_common(cel_gguf *g, cel_gguf **out, cel_error *err)
{
    cel_status s = parse(g, err);
    if (s != CEL_OK) {
        cel_gguf_close(g);
        return s;
    }
    *out = g;
    return CEL_OK;
}

cel_status cel_gguf_open_memory(const void *data, size_t size, const char *label, cel_gguf **out, cel_error *err)
{
    *out = NULL;
    if (!data && size) return cel_error_set(err, CEL_ERR_INVALID, "cel_gguf_open_memory: NULL data");
    cel_gguf *g = calloc(1, sizeof *g);
    if (!g) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    g->label = strdup(label ? label : "<memory>");
    if (!g->label) {
        free(g);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    g->base = data;
    g->size = size;
    return open_common(g, out, err);
}

cel_status cel_gguf_open(const char *path, cel_gguf **out, cel_error *err)
{
    *out = NULL;
    cel_gguf *g = calloc(1, sizeof *g);
    if (!g) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    g->label = strdup(path);
    if (!g->label) {
        free(g);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    cel_status s = cel_mmap_open(path, &g->map, err);
    if (s != CEL_OK) {
        free(g->label);
        free(g);
        return s;
    }
    g->base = g->map.data;
    g->size = g->map.size;
    return open_common(g, out, err);
}

void cel_gguf_close(cel_gguf *g)
{
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].strs);
    free(g->kv);
    free(g->kv_sorted);
    free(g->ti);
    free(g->ti_sorted);
    cel_mmap_close(&g->map);
    free(g->label);
    free(g);
}

/* ---------------------------------------------------------- accessors */

uint32_t cel_gguf_version(const cel_gguf *g) { return g->version; }
uint64_t cel_gguf_n_kv(const cel_gguf *g) { return g->n_kv; }
uint64_t cel_gguf_n_tensors(const cel_gguf *g) { return g->n_tensors; }

const cel_gguf_tensor_info *cel_gguf_tensor(const cel_gguf *g, uint64_t i)
{
    return i < g->n_tensors ? &g->ti[i] : NULL;
}

const cel_gguf_tensor_info *cel_gguf_find_tensor(const cel_gguf *g, const char *name)
{
    int64_t i = find_ref(g->ti_sorted, g->n_tensors, name);
    return i < 0 ? NULL : &g->ti[i];
}

bool cel_gguf_has(const cel_gguf *g, const char *key) { return find_kv(g, key) != NULL; }

cel_gguf_str cel_gguf_key_name(const cel_gguf *g, uint64_t i)
{
    cel_gguf_str none = {"", 0};
    return i < g->n_kv ? g->kv[i].key : none;
}

cel_gguf_type cel_gguf_key_type(const cel_gguf *g, uint64_t i)
{
    return i < g->n_kv ? g->kv[i].type : CEL_GGUF_U8;
}

/* Finds key and checks that its type is one of the accepted ones (a bit mask
 * of cel_gguf_type values); `expect` describes them for the message. */
static cel_status lookup(const cel_gguf *g, const char *key, unsigned mask, const char *expect, const gguf_kv **out,
                         cel_error *err)
{
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: key '%s' not found", g->label, key);
    if (!(mask & (1u << kv->type)))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' has type %s, expected %s", g->label, key,
                             type_name(kv->type), expect);
    *out = kv;
    return CEL_OK;
}

#define M(t) (1u << (t))
#define INT_MASK                                                                                                       \
    (M(CEL_GGUF_U8) | M(CEL_GGUF_I8) | M(CEL_GGUF_U16) | M(CEL_GGUF_I16) | M(CEL_GGUF_U32) | M(CEL_GGUF_I32) |        \
     M(CEL_GGUF_U64) | M(CEL_GGUF_I64))

cel_status cel_gguf_get_i64(const cel_gguf *g, const char *key, int64_t *v, cel_error *err)
{
    const gguf_kv *kv;
    CEL_TRY(lookup(g, key, INT_MASK, "an integer", &kv, err));
    const uint8_t *b = kv->val;
    switch (kv->type) {
    case CEL_GGUF_U8: *v = b[0]; break;
    case CEL_GGUF_I8: *v = (int8_t)b[0]; break;
    case CEL_GGUF_U16: *v = (uint16_t)(b[0] | b[1] << 8); break;
    case CEL_GGUF_I16: *v = (int16_t)(uint16_t)(b[0] | b[1] << 8); break;
    case CEL_GGUF_U32: *v = le32(b); break;
    case CEL_GGUF_I32: *v = (int32_t)le32(b); break;
    case CEL_GGUF_I64: *v = (int64_t)le64(b); break;
    default: { /* U64 */
        uint64_t u = le64(b);
        if (u > (uint64_t)INT64_MAX)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' = %llu is out of range", g->label, key,
                                 (unsigned long long)u);
        *v = (int64_t)u;
    }
    }
    return CEL_OK;
}

cel_status cel_gguf_get_f64(const cel_gguf *g, const char *key, double *v, cel_error *err)
{
    const gguf_kv *kv;
    CEL_TRY(lookup(g, key, INT_MASK | M(CEL_GGUF_F32) | M(CEL_GGUF_F64), "a number", &kv, err));
    if (kv->type == CEL_GGUF_F32) {
        uint32_t u = le32(kv->val);
        float f;
        memcpy(&f, &u, 4);
        *v = f;
    } else if (kv->type == CEL_GGUF_F64) {
        uint64_t u = le64(kv->val);
        memcpy(v, &u, 8);
    } else if (kv->type == CEL_GGUF_U64) {
        *v = (double)le64(kv->val);
    } else {
        int64_t i;
        CEL_TRY(cel_gguf_get_i64(g, key, &i, err));
        *v = (double)i;
    }
    return CEL_OK;
}

cel_status cel_gguf_get_bool(const cel_gguf *g, const char *key, bool *v, cel_error *err)
{
    const gguf_kv *kv;
    CEL_TRY(lookup(g, key, M(CEL_GGUF_BOOL), "bool", &kv, err));
    *v = kv->val[0] != 0;
    return CEL_OK;
}

cel_status cel_gguf_get_str(const cel_gguf *g, const char *key, cel_gguf_str *v, cel_error *err)
{
    const gguf_kv *kv;
    CEL_TRY(lookup(g, key, M(CEL_GGUF_STRING), "string", &kv, err));
    *v = kv->str;
    return CEL_OK;
}

cel_status cel_gguf_get_arr(const cel_gguf *g, const char *key, cel_gguf_type *elem_type, uint64_t *n,
                            const void **data, cel_error *err)
{
    const gguf_kv *kv;
    CEL_TRY(lookup(g, key, M(CEL_GGUF_ARRAY), "array", &kv, err));
    if (kv->elem == CEL_GGUF_STRING)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' is an array of strings, expected numbers", g->label,
                             key);
    *elem_type = kv->elem;
    *n = kv->n;
    *data = kv->adata;
    return CEL_OK;
}

cel_status cel_gguf_get_strs(const cel_gguf *g, const char *key, const cel_gguf_str **strs, uint64_t *n,
                             cel_error *err)
{
    const gguf_kv *kv;
    CEL_TRY(lookup(g, key, M(CEL_GGUF_ARRAY), "array of strings", &kv, err));
    if (kv->elem != CEL_GGUF_STRING)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' is an array of %s, expected strings", g->label, key,
                             type_name(kv->elem));
    *strs = kv->strs;
    *n = kv->n;
    return CEL_OK;
}
