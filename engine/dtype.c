/*
 * dtype.c - sizes and names of the tensor element types celine reads, and the
 * architecture names. The block layouts follow ggml's (GGUF tensor types map
 * 1:1 onto cel_dtype):
 *   F32 4 B, F16 / BF16 2 B per element;
 *   Q8_0 blocks of 32: fp16 d + 32 x int8                      = 34 B;
 *   Q4_0 blocks of 32: fp16 d + 16 B of nibbles                  = 18 B;
 *   Q5_0 blocks of 32: fp16 d + 4 B high bits + 16 B of nibbles  = 22 B;
 *   Q5_1 blocks of 32: fp16 d, fp16 m + 4 B high bits + 16 B nibbles = 24 B;
 *   Q4_K super-blocks of 256: fp16 d, fp16 dmin, 12 B scales, 128 B nibbles = 144 B;
 *   Q5_K super-blocks of 256: Q4_K's fields + 32 B of high bits (after the scales) = 176 B;
 *   Q6_K super-blocks of 256: 128 B low nibbles, 64 B high bits, 16 x int8 scales, fp16 d = 210 B.
 */
#include "celine/engine.h"

bool cel_dtype_valid(int t)
{
    switch (t) {
    case CEL_DTYPE_F32:
    case CEL_DTYPE_F16:
    case CEL_DTYPE_Q4_0:
    case CEL_DTYPE_Q5_0:
    case CEL_DTYPE_Q5_1:
    case CEL_DTYPE_Q8_0:
    case CEL_DTYPE_Q4_K:
    case CEL_DTYPE_Q5_K:
    case CEL_DTYPE_Q6_K:
    case CEL_DTYPE_BF16:
        return true;
    default:
        return false;
    }
}

const char *cel_dtype_name(cel_dtype t)
{
    switch (t) {
    case CEL_DTYPE_F32: return "F32";
    case CEL_DTYPE_F16: return "F16";
    case CEL_DTYPE_Q4_0: return "Q4_0";
    case CEL_DTYPE_Q5_0: return "Q5_0";
    case CEL_DTYPE_Q5_1: return "Q5_1";
    case CEL_DTYPE_Q8_0: return "Q8_0";
    case CEL_DTYPE_Q4_K: return "Q4_K";
    case CEL_DTYPE_Q5_K: return "Q5_K";
    case CEL_DTYPE_Q6_K: return "Q6_K";
    case CEL_DTYPE_BF16: return "BF16";
    }
    return "unknown";
}

int64_t cel_dtype_block_elems(cel_dtype t)
{
    switch (t) {
    case CEL_DTYPE_F32:
    case CEL_DTYPE_F16:
    case CEL_DTYPE_BF16: return 1;
    case CEL_DTYPE_Q4_0:
    case CEL_DTYPE_Q5_0:
    case CEL_DTYPE_Q5_1:
    case CEL_DTYPE_Q8_0: return 32;
    case CEL_DTYPE_Q4_K:
    case CEL_DTYPE_Q5_K:
    case CEL_DTYPE_Q6_K: return 256;
    }
    return 0;
}

size_t cel_dtype_block_bytes(cel_dtype t)
{
    switch (t) {
    case CEL_DTYPE_F32: return 4;
    case CEL_DTYPE_F16:
    case CEL_DTYPE_BF16: return 2;
    case CEL_DTYPE_Q4_0: return 2 + 16;
    case CEL_DTYPE_Q5_0: return 2 + 4 + 16;
    case CEL_DTYPE_Q5_1: return 2 + 2 + 4 + 16;
    case CEL_DTYPE_Q8_0: return 2 + 32;
    case CEL_DTYPE_Q4_K: return 2 + 2 + 12 + 128;
    case CEL_DTYPE_Q5_K: return 2 + 2 + 12 + 32 + 128;
    case CEL_DTYPE_Q6_K: return 128 + 64 + 16 + 2;
    }
    return 0;
}

/* Bytes of n elements; 0 when t is unknown, n is negative or not a whole
 * number of blocks, or the size does not fit in size_t (callers treat 0 as
 * "malformed"). */
size_t cel_dtype_row_bytes(cel_dtype t, int64_t n)
{
    int64_t be = cel_dtype_block_elems(t);
    size_t bb = cel_dtype_block_bytes(t);
    if (be <= 0 || bb == 0 || n < 0 || n % be != 0) return 0;
    uint64_t blocks = (uint64_t)(n / be);
    if (blocks > SIZE_MAX / bb) return 0;
    return (size_t)blocks * bb;
}

const char *cel_arch_name(cel_arch a)
{
    switch (a) {
    case CEL_ARCH_LLAMA: return "llama";
    case CEL_ARCH_QWEN2: return "qwen2";
    case CEL_ARCH_QWEN3: return "qwen3";
    case CEL_ARCH_MISTRAL: return "mistral";
    }
    return "unknown";
}
