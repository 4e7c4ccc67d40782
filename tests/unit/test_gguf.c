/* Unit tests for the GGUF reader (engine/gguf.c): a valid file built in memory,
 * every getter, and every error path (truncation at each offset, bad magic and
 * versions, huge counts, bad types, shapes, offsets, duplicates, overlap),
 * plus random corruption that must never crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"

/* ------------------------------------------------------------ builder */

typedef struct gfile {
    cel_buf b;
    size_t off_version, off_ntensors, off_nkv;
    size_t off_key_name;          /* the first byte of "general.name" */
    size_t off_type_layers;       /* value type of "llama.block_count" */
    size_t off_bool_val;          /* the byte of "general.flag" */
    size_t off_arr_type, off_arr_n; /* "tokenizer.ggml.tokens" element type and count */
    size_t off_str_len;           /* length of the "general.architecture" value */
    size_t off_t0_name, off_t0_ndims, off_t0_dim0, off_t0_type, off_t0_offset;
    size_t off_t1_name, off_t1_type, off_t1_offset;
    size_t data_off;
} gfile;

static void put(gfile *g, const void *p, size_t n) { assert_int_equal(cel_buf_append(&g->b, p, n), CEL_OK); }
static void put_u32(gfile *g, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(g, b, 4);
}
static void put_u64(gfile *g, uint64_t v)
{
    put_u32(g, (uint32_t)v);
    put_u32(g, (uint32_t)(v >> 32));
}
static void put_str(gfile *g, const char *s)
{
    put_u64(g, strlen(s));
    put(g, s, strlen(s));
}
static void patch_u32(gfile *g, size_t at, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    memcpy(g->b.data + at, b, 4);
}
static void patch_u64(gfile *g, size_t at, uint64_t v)
{
    patch_u32(g, at, (uint32_t)v);
    patch_u32(g, at + 4, (uint32_t)(v >> 32));
}

/* A valid GGUF v3: 8 key/values and two tensors, "a.weight" F32 [4, 2] at
 * data offset 0 and "b.weight" Q8_0 [32, 1] at offset 32, which ends the file.
 * alignment: general.alignment when `align` is non-zero (default 32 otherwise). */
static void build(gfile *g, uint32_t align)
{
    memset(g, 0, sizeof *g);
    cel_buf_init(&g->b);
    put(g, "GGUF", 4);
    g->off_version = g->b.len;
    put_u32(g, 3);
    g->off_ntensors = g->b.len;
    put_u64(g, 2);
    g->off_nkv = g->b.len;
    put_u64(g, align ? 8 : 7);
    put_str(g, "general.architecture");
    put_u32(g, CEL_GGUF_STRING);
    g->off_str_len = g->b.len;
    put_str(g, "llama");
    put_str(g, "llama.block_count");
    g->off_type_layers = g->b.len;
    put_u32(g, CEL_GGUF_U32);
    put_u32(g, 22);
    put_str(g, "llama.rope.freq_base");
    put_u32(g, CEL_GGUF_F32);
    float f = 10000.5f;
    put(g, &f, 4);
    put_str(g, "general.flag");
    put_u32(g, CEL_GGUF_BOOL);
    g->off_bool_val = g->b.len;
    put(g, "\1", 1);
    put_str(g, "tokenizer.ggml.tokens");
    put_u32(g, CEL_GGUF_ARRAY);
    g->off_arr_type = g->b.len;
    put_u32(g, CEL_GGUF_STRING);
    g->off_arr_n = g->b.len;
    put_u64(g, 3);
    put_str(g, "<s>");
    put_str(g, "hello");
    put_str(g, "");
    put_str(g, "tokenizer.ggml.scores");
    put_u32(g, CEL_GGUF_ARRAY);
    put_u32(g, CEL_GGUF_F32);
    put_u64(g, 3);
    float sc[3] = {0.f, -1.5f, 2.f};
    put(g, sc, sizeof sc);
    put_str(g, "general.name");
    g->off_key_name = g->b.len - strlen("general.name");
    put_u32(g, CEL_GGUF_STRING);
    put_str(g, "tiny test");
    if (align) {
        put_str(g, "general.alignment");
        put_u32(g, CEL_GGUF_U32);
        put_u32(g, align);
    }
    uint32_t A = align ? align : 32;
    /* tensor infos */
    put_u64(g, 8);
    g->off_t0_name = g->b.len;
    put(g, "a.weight", 8);
    g->off_t0_ndims = g->b.len;
    put_u32(g, 2);
    g->off_t0_dim0 = g->b.len;
    put_u64(g, 4);
    put_u64(g, 2);
    g->off_t0_type = g->b.len;
    put_u32(g, CEL_DTYPE_F32);
    g->off_t0_offset = g->b.len;
    put_u64(g, 0);
    put_u64(g, 8);
    g->off_t1_name = g->b.len;
    put(g, "b.weight", 8);
    put_u32(g, 2);
    put_u64(g, 32);
    put_u64(g, 1);
    g->off_t1_type = g->b.len;
    put_u32(g, CEL_DTYPE_Q8_0);
    g->off_t1_offset = g->b.len;
    put_u64(g, A);
    while (g->b.len % A) put(g, "\0", 1);
    g->data_off = g->b.len;
    for (int i = 0; i < 8; i++) {
        float v = (float)i * 0.5f;
        put(g, &v, 4);
    }
    while ((g->b.len - g->data_off) % A) put(g, "\0", 1);
    uint8_t blk[34];
    for (int i = 0; i < 34; i++) blk[i] = (uint8_t)i;
    put(g, blk, sizeof blk);
}

static cel_status open_g(gfile *g, cel_gguf **out, cel_error *err)
{
    return cel_gguf_open_memory(g->b.data, g->b.len, "t.gguf", out, err);
}

/* Opens g expecting failure with code; the message must contain `needle`. */
static void expect_fail(gfile *g, cel_status code, const char *needle)
{
    cel_gguf *x = NULL;
    cel_error err;
    cel_error_clear(&err);
    cel_status s = open_g(g, &x, &err);
    if (s != code || !strstr(err.msg, needle) || !strstr(err.msg, "t.gguf"))
        fail_msg("expected %s with '%s', got %s: %s", cel_status_name(code), needle, cel_status_name(s), err.msg);
    assert_null(x);
}

/* -------------------------------------------------------------- tests */

static void test_valid(void **state)
{
    (void)state;
    gfile g;
    build(&g, 0);
    cel_gguf *x = NULL;
    cel_error err;
    cel_error_clear(&err);
    assert_int_equal(open_g(&g, &x, &err), CEL_OK);
    assert_int_equal(cel_gguf_version(x), 3);
    assert_int_equal(cel_gguf_n_kv(x), 7);
    assert_int_equal(cel_gguf_n_tensors(x), 2);

    cel_gguf_str s;
    assert_int_equal(cel_gguf_get_str(x, "general.architecture", &s, &err), CEL_OK);
    assert_true(s.len == 5 && memcmp(s.p, "llama", 5) == 0);
    int64_t i64;
    assert_int_equal(cel_gguf_get_i64(x, "llama.block_count", &i64, &err), CEL_OK);
    assert_int_equal(i64, 22);
    double d;
    assert_int_equal(cel_gguf_get_f64(x, "llama.rope.freq_base", &d, &err), CEL_OK);
    assert_true(d == 10000.5);
    assert_int_equal(cel_gguf_get_f64(x, "llama.block_count", &d, &err), CEL_OK); /* ints convert */
    assert_true(d == 22.0);
    bool b;
    assert_int_equal(cel_gguf_get_bool(x, "general.flag", &b, &err), CEL_OK);
    assert_true(b);
    const cel_gguf_str *strs;
    uint64_t n;
    assert_int_equal(cel_gguf_get_strs(x, "tokenizer.ggml.tokens", &strs, &n, &err), CEL_OK);
    assert_int_equal(n, 3);
    assert_true(strs[1].len == 5 && memcmp(strs[1].p, "hello", 5) == 0);
    assert_int_equal(strs[2].len, 0);
    cel_gguf_type et;
    const void *data;
    assert_int_equal(cel_gguf_get_arr(x, "tokenizer.ggml.scores", &et, &n, &data, &err), CEL_OK);
    assert_int_equal(et, CEL_GGUF_F32);
    assert_int_equal(n, 3);
    float sc[3];
    memcpy(sc, data, sizeof sc);
    assert_true(sc[1] == -1.5f);
    assert_true(cel_gguf_has(x, "general.name"));
    assert_false(cel_gguf_has(x, "general.nam"));
    assert_false(cel_gguf_has(x, "general.namex"));

    /* key order is the file's */
    assert_int_equal(cel_gguf_key_type(x, 0), CEL_GGUF_STRING);
    cel_gguf_str k0 = cel_gguf_key_name(x, 0);
    assert_true(k0.len == 20 && memcmp(k0.p, "general.architecture", 20) == 0);

    /* type mismatches and missing keys */
    assert_int_equal(cel_gguf_get_i64(x, "general.name", &i64, &err), CEL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "general.name"));
    assert_non_null(strstr(err.msg, "string"));
    assert_int_equal(cel_gguf_get_str(x, "llama.block_count", &s, &err), CEL_ERR_FORMAT);
    assert_int_equal(cel_gguf_get_bool(x, "llama.block_count", &b, &err), CEL_ERR_FORMAT);
    assert_int_equal(cel_gguf_get_i64(x, "llama.rope.freq_base", &i64, &err), CEL_ERR_FORMAT);
    assert_int_equal(cel_gguf_get_arr(x, "tokenizer.ggml.tokens", &et, &n, &data, &err), CEL_ERR_FORMAT);
    assert_int_equal(cel_gguf_get_strs(x, "tokenizer.ggml.scores", &strs, &n, &err), CEL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "f32"));
    assert_int_equal(cel_gguf_get_i64(x, "no.such.key", &i64, &err), CEL_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no.such.key"));

    /* tensors */
    const cel_gguf_tensor_info *a = cel_gguf_find_tensor(x, "a.weight");
    assert_non_null(a);
    assert_int_equal(a->dtype, CEL_DTYPE_F32);
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->ne[0], 4);
    assert_int_equal(a->ne[1], 2);
    assert_int_equal(a->ne[2], 1);
    assert_int_equal(a->nbytes, 32);
    assert_ptr_equal(a->data, g.b.data + g.data_off);
    float f3;
    memcpy(&f3, (const char *)a->data + 12, 4);
    assert_true(f3 == 1.5f);
    const cel_gguf_tensor_info *bt = cel_gguf_find_tensor(x, "b.weight");
    assert_non_null(bt);
    assert_int_equal(bt->dtype, CEL_DTYPE_Q8_0);
    assert_int_equal(bt->nbytes, 34);
    assert_int_equal(bt->offset, 32);
    assert_int_equal(((const uint8_t *)bt->data)[33], 33);
    assert_null(cel_gguf_find_tensor(x, "c.weight"));
    assert_null(cel_gguf_find_tensor(x, "a.weigh"));
    assert_ptr_equal(cel_gguf_tensor(x, 1), bt);
    assert_null(cel_gguf_tensor(x, 2));
    cel_gguf_close(x);
    cel_buf_free(&g.b);
}

static void test_alignment(void **state)
{
    (void)state;
    gfile g;
    build(&g, 64);
    cel_gguf *x = NULL;
    cel_error err;
    assert_int_equal(open_g(&g, &x, &err), CEL_OK);
    assert_int_equal(cel_gguf_find_tensor(x, "b.weight")->offset, 64);
    assert_int_equal(g.data_off % 64, 0);
    assert_ptr_equal(cel_gguf_find_tensor(x, "a.weight")->data, g.b.data + g.data_off);
    cel_gguf_close(x);
    cel_buf_free(&g.b);

    build(&g, 48); /* not a power of two */
    expect_fail(&g, CEL_ERR_FORMAT, "general.alignment");
    cel_buf_free(&g.b);
    build(&g, 32); /* explicit 32, then a tensor offset of 16 */
    patch_u64(&g, g.off_t1_offset, 16);
    expect_fail(&g, CEL_ERR_FORMAT, "not a multiple of the alignment");
    cel_buf_free(&g.b);
}

/* Every proper prefix of the file must be rejected, each with a message. */
static void test_truncated_everywhere(void **state)
{
    (void)state;
    gfile g;
    build(&g, 0);
    for (size_t n = 0; n < g.b.len; n++) {
        /* a fresh copy of exactly n bytes so ASan catches a read past the end */
        char *copy = malloc(n ? n : 1);
        memcpy(copy, g.b.data, n);
        cel_gguf *x = NULL;
        cel_error err;
        cel_error_clear(&err);
        cel_status s = cel_gguf_open_memory(copy, n, "cut.gguf", &x, &err);
        if (s == CEL_OK) fail_msg("prefix of %zu bytes (of %zu) was accepted", n, g.b.len);
        assert_non_null(strstr(err.msg, "cut.gguf"));
        assert_null(x);
        free(copy);
    }
    cel_buf_free(&g.b);
}

static void test_bad_header(void **state)
{
    (void)state;
    gfile g;
    build(&g, 0);
    g.b.data[0] = 'X';
    expect_fail(&g, CEL_ERR_FORMAT, "bad magic");
    cel_buf_free(&g.b);

    build(&g, 0);
    patch_u32(&g, g.off_version, 1);
    expect_fail(&g, CEL_ERR_UNSUPPORTED, "version 1");
    patch_u32(&g, g.off_version, 4);
    expect_fail(&g, CEL_ERR_UNSUPPORTED, "version 4");
    patch_u32(&g, g.off_version, 3u << 24);
    expect_fail(&g, CEL_ERR_UNSUPPORTED, "big-endian");
    patch_u32(&g, g.off_version, 2); /* v2 has the same layout: accepted */
    cel_gguf *x = NULL;
    cel_error err;
    assert_int_equal(open_g(&g, &x, &err), CEL_OK);
    assert_int_equal(cel_gguf_version(x), 2);
    cel_gguf_close(x);
    cel_buf_free(&g.b);
}

static void test_huge_counts(void **state)
{
    (void)state;
    gfile g;
    build(&g, 0);
    patch_u64(&g, g.off_nkv, UINT64_MAX);
    expect_fail(&g, CEL_ERR_FORMAT, "key/values");
    patch_u64(&g, g.off_nkv, 1ull << 40);
    expect_fail(&g, CEL_ERR_FORMAT, "key/values");
    cel_buf_free(&g.b);

    build(&g, 0);
    patch_u64(&g, g.off_ntensors, 1ull << 50);
    expect_fail(&g, CEL_ERR_FORMAT, "tensors");
    cel_buf_free(&g.b);

    build(&g, 0);
    patch_u64(&g, g.off_arr_n, 1ull << 62); /* array of strings */
    expect_fail(&g, CEL_ERR_FORMAT, "tokenizer.ggml.tokens");
    cel_buf_free(&g.b);

    build(&g, 0);
    patch_u64(&g, g.off_str_len, UINT64_MAX); /* string length */
    expect_fail(&g, CEL_ERR_FORMAT, "general.architecture");
    cel_buf_free(&g.b);

    build(&g, 0); /* more tensors than described: runs into the data section, then off the end */
    patch_u64(&g, g.off_ntensors, 3);
    cel_gguf *x = NULL;
    cel_error err;
    assert_int_not_equal(open_g(&g, &x, &err), CEL_OK);
    cel_buf_free(&g.b);
}

static void test_bad_kv(void **state)
{
    (void)state;
    gfile g;
    build(&g, 0);
    patch_u32(&g, g.off_type_layers, 13);
    expect_fail(&g, CEL_ERR_FORMAT, "llama.block_count");
    cel_buf_free(&g.b);

    build(&g, 0);
    g.b.data[g.off_bool_val] = 2;
    expect_fail(&g, CEL_ERR_FORMAT, "general.flag");
    cel_buf_free(&g.b);

    build(&g, 0);
    patch_u32(&g, g.off_arr_type, CEL_GGUF_ARRAY);
    expect_fail(&g, CEL_ERR_UNSUPPORTED, "array of arrays");
    patch_u32(&g, g.off_arr_type, 77);
    expect_fail(&g, CEL_ERR_FORMAT, "unknown type 77");
    cel_buf_free(&g.b);

    build(&g, 0); /* "general.name" -> "general.flag": a duplicate key */
    memcpy(g.b.data + g.off_key_name, "general.flag", 12);
    expect_fail(&g, CEL_ERR_FORMAT, "duplicate key 'general.flag'");
    cel_buf_free(&g.b);
}

static void test_bad_tensors(void **state)
{
    (void)state;
    gfile g;
    build(&g, 0);
    patch_u32(&g, g.off_t0_ndims, 0);
    expect_fail(&g, CEL_ERR_FORMAT, "'a.weight' has 0 dimensions");
    patch_u32(&g, g.off_t0_ndims, 5);
    expect_fail(&g, CEL_ERR_FORMAT, "'a.weight' has 5 dimensions");
    cel_buf_free(&g.b);

    build(&g, 0);
    patch_u64(&g, g.off_t0_dim0, 0);
    expect_fail(&g, CEL_ERR_FORMAT, "'a.weight' has an invalid dimension");
    patch_u64(&g, g.off_t0_dim0, 1ull << 62); /* overflows the element count with ne[1] = 2 */
    expect_fail(&g, CEL_ERR_FORMAT, "a.weight");
    patch_u64(&g, g.off_t0_dim0, 4ull << 40); /* fits int64 but not the file */
    expect_fail(&g, CEL_ERR_FORMAT, "'a.weight'");
    cel_buf_free(&g.b);

    build(&g, 0);
    patch_u32(&g, g.off_t0_type, 3); /* Q4_1: a real type celine does not read */
    expect_fail(&g, CEL_ERR_UNSUPPORTED, "'a.weight' has type Q4_1 (3)");
    patch_u32(&g, g.off_t0_type, 999);
    expect_fail(&g, CEL_ERR_FORMAT, "'a.weight' has unknown type 999");
    patch_u32(&g, g.off_t0_type, CEL_DTYPE_Q8_0); /* 4 elements per row: not a block of 32 */
    expect_fail(&g, CEL_ERR_FORMAT, "not a multiple of its block");
    cel_buf_free(&g.b);

    build(&g, 0);
    patch_u64(&g, g.off_t0_offset, 8);
    expect_fail(&g, CEL_ERR_FORMAT, "'a.weight' has offset 8, not a multiple");
    patch_u64(&g, g.off_t0_offset, 64); /* past the end */
    expect_fail(&g, CEL_ERR_FORMAT, "'a.weight' (32 bytes at data offset 64) extends past the end");
    patch_u64(&g, g.off_t0_offset, UINT64_MAX - 31);
    expect_fail(&g, CEL_ERR_FORMAT, "extends past the end");
    patch_u64(&g, g.off_t0_offset, 32); /* same place as b.weight */
    expect_fail(&g, CEL_ERR_FORMAT, "overlap");
    cel_buf_free(&g.b);

    build(&g, 0);
    memcpy(g.b.data + g.off_t1_name, "a.weight", 8);
    expect_fail(&g, CEL_ERR_FORMAT, "duplicate tensor name 'a.weight'");
    cel_buf_free(&g.b);

    build(&g, 0); /* a tensor name longer than celine's 127 bytes */
    gfile h;
    memset(&h, 0, sizeof h);
    cel_buf_init(&h.b);
    put(&h, "GGUF", 4);
    put_u32(&h, 3);
    put_u64(&h, 1);
    put_u64(&h, 0);
    char longname[200];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    put_str(&h, longname);
    put_u32(&h, 1);
    put_u64(&h, 1);
    put_u32(&h, 0);
    put_u64(&h, 0);
    while (h.b.len % 32) put(&h, "\0", 1);
    put(&h, "\0\0\0\0", 4);
    expect_fail(&h, CEL_ERR_FORMAT, "invalid name");
    cel_buf_free(&h.b);
    cel_buf_free(&g.b);
}

/* A GGUF with one tensor "w" of ggml type `type`, shape [ne0, ne1], at data
 * offset 0, followed by `data_bytes` bytes of data (which end the file). */
static void build_one(gfile *g, uint32_t type, uint64_t ne0, uint64_t ne1, size_t data_bytes)
{
    memset(g, 0, sizeof *g);
    cel_buf_init(&g->b);
    put(g, "GGUF", 4);
    put_u32(g, 3);
    put_u64(g, 1);
    put_u64(g, 0);
    put_str(g, "w");
    put_u32(g, 2);
    put_u64(g, ne0);
    put_u64(g, ne1);
    put_u32(g, type);
    put_u64(g, 0);
    while (g->b.len % 32) put(g, "\0", 1);
    g->data_off = g->b.len;
    for (size_t i = 0; i < data_bytes; i++) put(g, "\x11", 1);
}

/* The 5-bit types: block sizes and row bytes (Q5_0 22 B / 32, Q5_1 24 B / 32,
 * Q5_K 176 B / 256), and the usual rejections: rows that are not whole blocks,
 * data shorter than the shape needs. */
static void test_q5_types(void **state)
{
    (void)state;
    static const struct {
        uint32_t type;
        uint64_t ne0, ne1;
        size_t bytes;
        const char *name;
    } ok[] = {{6, 64, 3, 2 * 22 * 3, "Q5_0"}, {7, 32, 5, 24 * 5, "Q5_1"}, {13, 512, 2, 2 * 176 * 2, "Q5_K"}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        gfile g;
        build_one(&g, ok[i].type, ok[i].ne0, ok[i].ne1, ok[i].bytes);
        cel_gguf *x = NULL;
        cel_error err;
        cel_error_clear(&err);
        if (open_g(&g, &x, &err) != CEL_OK) fail_msg("%s: %s", ok[i].name, err.msg);
        const cel_gguf_tensor_info *t = cel_gguf_find_tensor(x, "w");
        assert_non_null(t);
        assert_int_equal(t->dtype, ok[i].type);
        assert_string_equal(cel_dtype_name(t->dtype), ok[i].name);
        assert_int_equal(t->nbytes, ok[i].bytes);
        cel_gguf_close(x);
        cel_buf_free(&g.b);

        /* one byte short: the tensor extends past the end of the file */
        build_one(&g, ok[i].type, ok[i].ne0, ok[i].ne1, ok[i].bytes - 1);
        char want[96];
        snprintf(want, sizeof want, "'w' (%zu bytes at data offset 0) extends past the end", ok[i].bytes);
        expect_fail(&g, CEL_ERR_FORMAT, want);
        cel_buf_free(&g.b);
    }
    gfile g;
    build_one(&g, 13, 128, 1, 176); /* half a Q5_K super-block per row */
    expect_fail(&g, CEL_ERR_FORMAT, "'w' of type Q5_K has rows of 128 elements, not a multiple of its block (256)");
    cel_buf_free(&g.b);
    build_one(&g, 6, 48, 1, 44);
    expect_fail(&g, CEL_ERR_FORMAT, "'w' of type Q5_0 has rows of 48 elements, not a multiple of its block (32)");
    cel_buf_free(&g.b);
    build_one(&g, 13, 256, 4, 176 * 3 + 100); /* a truncated Q5_K tensor: 3.6 of 4 rows */
    expect_fail(&g, CEL_ERR_FORMAT, "'w' (704 bytes at data offset 0) extends past the end of the file");
    cel_buf_free(&g.b);
}

/* Random byte corruption: the reader may accept or reject, never crash (ASan/UBSan). */
static void test_random_corruption(void **state)
{
    (void)state;
    gfile g;
    build(&g, 0);
    cel_rng r;
    cel_rng_seed(&r, 1234);
    char *copy = malloc(g.b.len);
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(copy, g.b.data, g.b.len);
        int flips = 1 + (int)(cel_rng_next(&r) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)(cel_rng_next(&r) % g.b.len);
            copy[at] = (char)cel_rng_next(&r);
        }
        size_t n = g.b.len - (size_t)(cel_rng_next(&r) % 3 == 0 ? cel_rng_next(&r) % g.b.len : 0);
        cel_gguf *x = NULL;
        cel_error err;
        if (cel_gguf_open_memory(copy, n, "rnd.gguf", &x, &err) == CEL_OK) {
            for (uint64_t i = 0; i < cel_gguf_n_tensors(x); i++) {
                const cel_gguf_tensor_info *t = cel_gguf_tensor(x, i);
                volatile uint8_t sink = ((const uint8_t *)t->data)[t->nbytes - 1]; /* inside the buffer */
                (void)sink;
            }
            cel_gguf_close(x);
        }
    }
    free(copy);
    cel_buf_free(&g.b);
}

static void test_open_file(void **state)
{
    (void)state;
    cel_gguf *x = NULL;
    cel_error err;
    assert_int_equal(cel_gguf_open("/nonexistent/dir/m.gguf", &x, &err), CEL_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/m.gguf"));
    /* a file on disk round-trips */
    gfile g;
    build(&g, 0);
    char path[] = "/tmp/celine_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    assert_int_equal(fwrite(g.b.data, 1, g.b.len, f), g.b.len);
    fclose(f);
    assert_int_equal(cel_gguf_open(path, &x, &err), CEL_OK);
    assert_int_equal(cel_gguf_find_tensor(x, "b.weight")->nbytes, 34);
    cel_gguf_close(x);
    remove(path);
    cel_buf_free(&g.b);
}

/* A real GGUF (llama.cpp's vocab-only Qwen2 file) when the fixtures are installed. */
static void test_real_vocab_file(void **state)
{
    (void)state;
    const char *p = CELINE_SOURCE_DIR "/.fixtures/llama.cpp/src/models/ggml-vocab-qwen2.gguf";
    cel_gguf *x = NULL;
    cel_error err;
    if (!cel_path_exists(p)) skip();
    assert_int_equal(cel_gguf_open(p, &x, &err), CEL_OK);
    const cel_gguf_str *toks;
    uint64_t n;
    assert_int_equal(cel_gguf_get_strs(x, "tokenizer.ggml.tokens", &toks, &n, &err), CEL_OK);
    assert_true(n > 150000);
    cel_gguf_str s;
    assert_int_equal(cel_gguf_get_str(x, "general.architecture", &s, &err), CEL_OK);
    assert_true(s.len == 5 && memcmp(s.p, "qwen2", 5) == 0);
    cel_gguf_close(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_truncated_everywhere), cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_huge_counts),     cmocka_unit_test(test_bad_kv),
        cmocka_unit_test(test_bad_tensors),     cmocka_unit_test(test_random_corruption),
        cmocka_unit_test(test_open_file),       cmocka_unit_test(test_real_vocab_file),
        cmocka_unit_test(test_q5_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
