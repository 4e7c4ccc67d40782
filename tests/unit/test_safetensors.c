/* Unit tests for the safetensors reader (engine/safetensors.c): a valid file
 * built in memory, and every error path (truncation at each offset, header
 * length, JSON errors, duplicate names, bad dtype/shape/offsets, holes,
 * overlaps, trailing bytes), plus random corruption that must never crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"

/* Builds [u64 len][header][data of data_len bytes: 0, 1, 2, ...] into b. */
static void build(cel_buf *b, const char *header, size_t data_len)
{
    cel_buf_init(b);
    uint64_t n = strlen(header);
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(n >> (8 * i));
    assert_int_equal(cel_buf_append(b, le, 8), CEL_OK);
    assert_int_equal(cel_buf_append(b, header, n), CEL_OK);
    for (size_t i = 0; i < data_len; i++) assert_int_equal(cel_buf_putc(b, (char)i), CEL_OK);
}

/* Opens header + data expecting failure with code and `needle` in the message. */
static void expect_fail(const char *header, size_t data_len, cel_status code, const char *needle)
{
    cel_buf b;
    build(&b, header, data_len);
    cel_safetensors *st = NULL;
    cel_error err;
    cel_error_clear(&err);
    cel_status s = cel_safetensors_open_memory(b.data, b.len, "t.safetensors", &st, &err);
    if (s != code || !strstr(err.msg, needle) || !strstr(err.msg, "t.safetensors"))
        fail_msg("header %s: expected %s with '%s', got %s: %s", header, cel_status_name(code), needle,
                 cel_status_name(s), err.msg);
    assert_null(st);
    cel_buf_free(&b);
}

#define VALID                                                                                                          \
    "{\"__metadata__\":{\"format\":\"pt\"},"                                                                          \
    "\"model.w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"                                       \
    "\"model.b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"                                       \
    "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[32,40]}}      "

static void test_valid(void **state)
{
    (void)state;
    cel_buf b;
    build(&b, VALID, 40);
    cel_safetensors *st = NULL;
    cel_error err;
    assert_int_equal(cel_safetensors_open_memory(b.data, b.len, "t.safetensors", &st, &err), CEL_OK);
    assert_int_equal(cel_safetensors_n_tensors(st), 3);
    assert_string_equal(cel_safetensors_label(st), "t.safetensors");
    assert_string_equal(cel_safetensors_metadata(st, "format"), "pt");
    assert_null(cel_safetensors_metadata(st, "nope"));
    const cel_st_tensor *w = cel_safetensors_find(st, "model.w");
    assert_non_null(w);
    assert_true(w->supported);
    assert_int_equal(w->dtype, CEL_DTYPE_F32);
    assert_int_equal(w->n_dims, 2);
    assert_int_equal(w->shape[0], 2);
    assert_int_equal(w->shape[1], 3);
    assert_int_equal(w->ne[0], 3); /* [out, in] -> ne[0] = in */
    assert_int_equal(w->ne[1], 2);
    assert_int_equal(w->ne[2], 1);
    assert_int_equal(w->nbytes, 24);
    size_t data_start = b.len - 40;
    assert_ptr_equal(w->data, b.data + data_start);
    const cel_st_tensor *bb = cel_safetensors_find(st, "model.b");
    assert_int_equal(bb->dtype, CEL_DTYPE_BF16);
    assert_int_equal(((const uint8_t *)bb->data)[0], 24);
    const cel_st_tensor *ids = cel_safetensors_find(st, "ids");
    assert_false(ids->supported); /* parsed and checked, but not a compute type */
    assert_string_equal(ids->dtype_name, "I64");
    assert_int_equal(ids->elem_size, 8);
    assert_null(cel_safetensors_find(st, "model"));
    /* name order */
    assert_string_equal(cel_safetensors_tensor(st, 0)->name, "ids");
    assert_string_equal(cel_safetensors_tensor(st, 2)->name, "model.w");
    assert_null(cel_safetensors_tensor(st, 3));
    cel_safetensors_close(st);
    cel_buf_free(&b);
}

static void test_empty_and_scalar(void **state)
{
    (void)state;
    cel_buf b;
    build(&b, "{}", 0);
    cel_safetensors *st = NULL;
    cel_error err;
    assert_int_equal(cel_safetensors_open_memory(b.data, b.len, "e", &st, &err), CEL_OK);
    assert_int_equal(cel_safetensors_n_tensors(st), 0);
    assert_null(cel_safetensors_find(st, "x"));
    cel_safetensors_close(st);
    cel_buf_free(&b);
    build(&b, "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4);
    assert_int_equal(cel_safetensors_open_memory(b.data, b.len, "e", &st, &err), CEL_OK);
    assert_int_equal(cel_safetensors_find(st, "s")->n_dims, 0);
    assert_int_equal(cel_safetensors_find(st, "s")->ne[0], 1);
    cel_safetensors_close(st);
    cel_buf_free(&b);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    cel_buf b;
    build(&b, VALID, 40);
    for (size_t n = 0; n < b.len; n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, b.data, n);
        cel_safetensors *st = NULL;
        cel_error err;
        cel_error_clear(&err);
        if (cel_safetensors_open_memory(copy, n, "cut.safetensors", &st, &err) == CEL_OK)
            fail_msg("prefix of %zu bytes (of %zu) was accepted", n, b.len);
        assert_non_null(strstr(err.msg, "cut.safetensors"));
        free(copy);
    }
    cel_buf_free(&b);
}

static void test_header_errors(void **state)
{
    (void)state;
    /* header length larger than the file, and than the format's cap */
    uint8_t raw[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    cel_safetensors *st = NULL;
    cel_error err;
    assert_int_equal(cel_safetensors_open_memory(raw, 10, "h.st", &st, &err), CEL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    raw[6] = 1; /* 2^48 */
    assert_int_equal(cel_safetensors_open_memory(raw, 10, "h.st", &st, &err), CEL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "limit"));
    assert_int_equal(cel_safetensors_open_memory(raw, 5, "h.st", &st, &err), CEL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "too short"));

    expect_fail("[1,2]", 0, CEL_ERR_FORMAT, "not a JSON object");
    expect_fail("{\"a\":", 0, CEL_ERR_FORMAT, "bad JSON header");
    expect_fail("{\"a\":1} x", 0, CEL_ERR_FORMAT, "bad JSON header");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                8, CEL_ERR_FORMAT, "duplicate");
    expect_fail("{\"__metadata__\":[1]}", 0, CEL_ERR_FORMAT, "__metadata__");
    expect_fail("{\"__metadata__\":{\"k\":1}}", 0, CEL_ERR_FORMAT, "'k' is not a string");
}

static void test_entry_errors(void **state)
{
    (void)state;
    expect_fail("{\"a\":5}", 0, CEL_ERR_FORMAT, "entry 'a' is not an object");
    expect_fail("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, CEL_ERR_FORMAT, "'a' has no string \"dtype\"");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, CEL_ERR_FORMAT, "'a' has no array \"shape\"");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, CEL_ERR_FORMAT, "data_offsets");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, CEL_ERR_FORMAT, "data_offsets");
    expect_fail("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, CEL_ERR_FORMAT,
                "'a' has unknown dtype \"Q4\"");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, CEL_ERR_UNSUPPORTED,
                "5 dimensions");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, CEL_ERR_FORMAT, "shape[0]");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"x\"],\"data_offsets\":[0,4]}}", 4, CEL_ERR_FORMAT, "shape[0]");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                CEL_ERR_FORMAT, "overflows");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, CEL_ERR_FORMAT, "begin <= end");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, CEL_ERR_FORMAT, "begin <= end");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, CEL_ERR_FORMAT,
                "extend past the end");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, CEL_ERR_FORMAT,
                "4 bytes in data_offsets but dtype F32 x shape needs 2 elements");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, CEL_ERR_FORMAT, "hole");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[2,10]}}",
                10, CEL_ERR_FORMAT, "overlaps");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6, CEL_ERR_FORMAT,
                "2 bytes of data after the last tensor");
    char big[400];
    memset(big, 0, sizeof big);
    strcpy(big, "{\"");
    memset(big + 2, 'n', 200);
    strcat(big, "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    expect_fail(big, 4, CEL_ERR_FORMAT, "has length 200");
}

static void test_random_corruption(void **state)
{
    (void)state;
    cel_buf b;
    build(&b, VALID, 40);
    cel_rng r;
    cel_rng_seed(&r, 99);
    char *copy = malloc(b.len);
    for (int iter = 0; iter < 5000; iter++) {
        memcpy(copy, b.data, b.len);
        int flips = 1 + (int)(cel_rng_next(&r) % 3);
        for (int k = 0; k < flips; k++) copy[cel_rng_next(&r) % b.len] = (char)cel_rng_next(&r);
        cel_safetensors *st = NULL;
        cel_error err;
        if (cel_safetensors_open_memory(copy, b.len, "rnd", &st, &err) == CEL_OK) {
            for (size_t i = 0; i < cel_safetensors_n_tensors(st); i++) {
                const cel_st_tensor *t = cel_safetensors_tensor(st, i);
                if (t->nbytes) {
                    volatile uint8_t sink = ((const uint8_t *)t->data)[t->nbytes - 1];
                    (void)sink;
                }
            }
            cel_safetensors_close(st);
        }
    }
    free(copy);
    cel_buf_free(&b);
}

static void test_open_file(void **state)
{
    (void)state;
    cel_safetensors *st = NULL;
    cel_error err;
    assert_int_equal(cel_safetensors_open("/nonexistent/x.safetensors", &st, &err), CEL_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.safetensors"));
    /* a committed shard of the test model */
    assert_int_equal(cel_safetensors_open(CELINE_SOURCE_DIR "/tests/data/models/llama-hf/model-00001-of-00002.safetensors",
                                          &st, &err),
                     CEL_OK);
    const cel_st_tensor *t = cel_safetensors_find(st, "model.embed_tokens.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 320);
    assert_int_equal((uintptr_t)t->data % 8, 0); /* mkmodel pads the header to 8 bytes */
    assert_string_equal(cel_safetensors_metadata(st, "format"), "pt");
    cel_safetensors_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),         cmocka_unit_test(test_empty_and_scalar),
        cmocka_unit_test(test_truncated_everywhere), cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_entry_errors),  cmocka_unit_test(test_random_corruption),
        cmocka_unit_test(test_open_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
