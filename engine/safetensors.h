/*
 * safetensors.h - reader for Hugging Face .safetensors files: u64 header
 * length N, N bytes of JSON header ({"name": {"dtype", "shape",
 * "data_offsets": [begin, end]}, "__metadata__": {str: str}}), then the byte
 * buffer the offsets index. The header is validated completely at open (every
 * offset inside the file, byte counts matching dtype x shape, the buffer
 * covered without holes or overlaps, no duplicate names); data stays in the
 * mapping.
 */
#ifndef CEL_ENGINE_SAFETENSORS_H
#define CEL_ENGINE_SAFETENSORS_H

#include "celine/engine.h"

#define CEL_ST_MAX_DIMS 4
#define CEL_ST_MAX_HEADER (100u << 20) /* the format's own cap on the JSON header */

typedef struct cel_st_tensor {
    const char *name;      /* NUL-terminated, owned by the file object */
    char dtype_name[12];   /* as written: "F32", "BF16", "I64", ... */
    bool supported;        /* dtype is F32, F16 or BF16 (celine computes with these) */
    cel_dtype dtype;       /* valid when supported */
    size_t elem_size;      /* bytes per element of dtype_name */
    int32_t n_dims;        /* 0 .. CEL_ST_MAX_DIMS */
    int64_t shape[CEL_ST_MAX_DIMS]; /* as in the file: outermost first (PyTorch order) */
    int64_t ne[CEL_ST_MAX_DIMS];    /* GGUF order: ne[0] = shape[n_dims-1] (innermost); unused = 1 */
    uint64_t begin, end;   /* data_offsets, relative to the byte buffer */
    const void *data;      /* into the mapping; may be unaligned for the element type */
    size_t nbytes;
} cel_st_tensor;

typedef struct cel_safetensors cel_safetensors;

/* Maps and validates path; errors name the file and the tensor or field. */
cel_status cel_safetensors_open(const char *path, cel_safetensors **out, cel_error *err);
/* Same over a caller-owned buffer (fuzzing, tests); it must outlive st. */
cel_status cel_safetensors_open_memory(const void *data, size_t size, const char *label, cel_safetensors **out,
                                       cel_error *err);
void cel_safetensors_close(cel_safetensors *st);

const char *cel_safetensors_label(const cel_safetensors *st);
size_t cel_safetensors_n_tensors(const cel_safetensors *st);
/* Tensors in name order (the header is a JSON object: it has no order). */
const cel_st_tensor *cel_safetensors_tensor(const cel_safetensors *st, size_t i);
const cel_st_tensor *cel_safetensors_find(const cel_safetensors *st, const char *name);
/* A "__metadata__" value, or NULL when absent. */
const char *cel_safetensors_metadata(const cel_safetensors *st, const char *key);

#endif
