/* libFuzzer target for the GGUF reader: any input must be accepted or
 * rejected with a message, never crash, read out of bounds or hang; an
 * accepted file's every getter and tensor must stay inside the input. */
#include <stdint.h>
#include <string.h>

#include "engine/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cel_gguf *g = NULL;
    cel_error err;
    if (cel_gguf_open_memory(data, size, "fuzz.gguf", &g, &err) != CEL_OK) return 0;
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < cel_gguf_n_tensors(g); i++) {
        const cel_gguf_tensor_info *t = cel_gguf_tensor(g, i);
        if (t->nbytes) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
        char name[128];
        memcpy(name, t->name.p, (size_t)t->name.len);
        name[t->name.len] = 0;
        if (cel_gguf_find_tensor(g, name) != t) __builtin_trap(); /* names are unique */
    }
    for (uint64_t i = 0; i < cel_gguf_n_kv(g); i++) {
        cel_gguf_str k = cel_gguf_key_name(g, i);
        char key[256];
        if (k.len >= sizeof key) continue;
        memcpy(key, k.p, (size_t)k.len);
        key[k.len] = 0;
        int64_t iv;
        double dv;
        bool bv;
        cel_gguf_str sv;
        cel_gguf_type et;
        uint64_t n;
        const void *arr;
        const cel_gguf_str *strs;
        if (!cel_gguf_has(g, key)) __builtin_trap();
        (void)cel_gguf_get_i64(g, key, &iv, &err);
        (void)cel_gguf_get_f64(g, key, &dv, &err);
        (void)cel_gguf_get_bool(g, key, &bv, &err);
        if (cel_gguf_get_str(g, key, &sv, &err) == CEL_OK && sv.len) sink ^= (uint8_t)sv.p[sv.len - 1];
        if (cel_gguf_get_arr(g, key, &et, &n, &arr, &err) == CEL_OK && n) sink ^= ((const uint8_t *)arr)[0];
        if (cel_gguf_get_strs(g, key, &strs, &n, &err) == CEL_OK)
            for (uint64_t j = 0; j < n; j++)
                if (strs[j].len) sink ^= (uint8_t)strs[j].p[strs[j].len - 1];
    }
    (void)sink;
    cel_gguf_close(g);
    return 0;
}
