/* libFuzzer target for the safetensors reader: any input must be accepted or
 * rejected with a message, never crash; an accepted file's tensors must lie
 * inside the input and tile its data exactly. */
#include <stdint.h>
#include <string.h>

#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cel_safetensors *st = NULL;
    cel_error err;
    if (cel_safetensors_open_memory(data, size, "fuzz.safetensors", &st, &err) != CEL_OK) return 0;
    volatile uint8_t sink = 0;
    size_t total = 0;
    for (size_t i = 0; i < cel_safetensors_n_tensors(st); i++) {
        const cel_st_tensor *t = cel_safetensors_tensor(st, i);
        if (t->nbytes) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
        if (cel_safetensors_find(st, t->name) != t) __builtin_trap();
        total += t->nbytes;
    }
    if (size < 8 || total > size - 8) __builtin_trap();
    (void)cel_safetensors_metadata(st, "format");
    (void)sink;
    cel_safetensors_close(st);
    return 0;
}
