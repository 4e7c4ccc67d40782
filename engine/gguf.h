/*
 * gguf.h - GGUF v2/v3 reader: validates the whole header against the file
 * size, exposes key/values and tensor infos; tensor data stays in the mapping.
 */
#ifndef CEL_ENGINE_GGUF_H
#define CEL_ENGINE_GGUF_H

#include "celine/engine.h"

typedef enum cel_gguf_type {
    CEL_GGUF_U8 = 0, CEL_GGUF_I8 = 1, CEL_GGUF_U16 = 2, CEL_GGUF_I16 = 3, CEL_GGUF_U32 = 4,
    CEL_GGUF_I32 = 5, CEL_GGUF_F32 = 6, CEL_GGUF_BOOL = 7, CEL_GGUF_STRING = 8, CEL_GGUF_ARRAY = 9,
    CEL_GGUF_U64 = 10, CEL_GGUF_I64 = 11, CEL_GGUF_F64 = 12,
} cel_gguf_type;

typedef struct cel_gguf_str {
    const char *p; /* into the mapping; NOT NUL-terminated */
    uint64_t len;
} cel_gguf_str;

typedef struct cel_gguf_tensor_info {
    cel_gguf_str name;
    uint32_t n_dims;
    int64_t ne[4];
    cel_dtype dtype;
    uint64_t offset; /* relative to the data section */
    const void *data;
    size_t nbytes;
} cel_gguf_tensor_info;

typedef struct cel_gguf cel_gguf;

/* Maps and parses path; every inconsistency (bad magic, version, truncated
 * header, unknown type, tensor outside the file, misaligned offset, overlapping
 * data) fails with a message naming the file and the key/tensor. */
cel_status cel_gguf_open(const char *path, cel_gguf **out, cel_error *err);
/* Same over a caller-owned buffer (fuzzing, tests); the buffer must outlive g. */
cel_status cel_gguf_open_memory(const void *data, size_t size, const char *label, cel_gguf **out, cel_error *err);
void cel_gguf_close(cel_gguf *g);

uint32_t cel_gguf_version(const cel_gguf *g);
uint64_t cel_gguf_n_kv(const cel_gguf *g);
uint64_t cel_gguf_n_tensors(const cel_gguf *g);
const cel_gguf_tensor_info *cel_gguf_tensor(const cel_gguf *g, uint64_t i);
const cel_gguf_tensor_info *cel_gguf_find_tensor(const cel_gguf *g, const char *name);

/* Key lookup; the getters return CEL_ERR_NOT_FOUND when absent and
 * CEL_ERR_FORMAT (message names the key) when the stored type does not convert. */
bool cel_gguf_has(const cel_gguf *g, const char *key);
cel_gguf_str cel_gguf_key_name(const cel_gguf *g, uint64_t i);
cel_gguf_type cel_gguf_key_type(const cel_gguf *g, uint64_t i);
cel_status cel_gguf_get_i64(const cel_gguf *g, const char *key, int64_t *v, cel_error *err);  /* any integer type */
cel_status cel_gguf_get_f64(const cel_gguf *g, const char *key, double *v, cel_error *err);   /* any numeric type */
cel_status cel_gguf_get_bool(const cel_gguf *g, const char *key, bool *v, cel_error *err);
cel_status cel_gguf_get_str(const cel_gguf *g, const char *key, cel_gguf_str *v, cel_error *err);
/* Arrays of numbers: *data points at n packed little-endian elements of elem_type. */
cel_status cel_gguf_get_arr(const cel_gguf *g, const char *key, cel_gguf_type *elem_type, uint64_t *n,
                            const void **data, cel_error *err);
/* Arrays of strings (e.g. tokenizer.ggml.tokens): an index built at open. */
cel_status cel_gguf_get_strs(const cel_gguf *g, const char *key, const cel_gguf_str **strs, uint64_t *n,
                             cel_error *err);

#endif
