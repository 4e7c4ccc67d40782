/* Unit tests for common/: buffers, errors, hashing, RNG, thread pool, files, UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "celine/common.h"

static void test_buf(void **state)
{
    (void)state;
    cel_buf b;
    cel_buf_init(&b);
    assert_int_equal(cel_buf_puts(&b, "abc"), CEL_OK);
    assert_int_equal(cel_buf_printf(&b, "-%d-%s", 42, "x"), CEL_OK);
    assert_string_equal(b.data, "abc-42-x");
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(cel_buf_printf(&b, "%s", big), CEL_OK);
    assert_int_equal(b.len, 8 + 999);
    assert_int_equal(b.data[b.len], 0);
    char *s = cel_buf_steal(&b);
    assert_null(b.data);
    assert_int_equal(strlen(s), 1007);
    free(s);
    cel_buf_free(&b);
}

static void test_error(void **state)
{
    (void)state;
    cel_error e;
    cel_error_clear(&e);
    assert_int_equal(cel_error_set(&e, CEL_ERR_FORMAT, "bad %s", "thing"), CEL_ERR_FORMAT);
    cel_error_prefix(&e, "file.gguf");
    assert_string_equal(e.msg, "file.gguf: bad thing");
    assert_string_equal(cel_status_name(CEL_ERR_LIMIT), "limit");
    assert_int_equal(cel_error_set(NULL, CEL_ERR_IO, "x"), CEL_ERR_IO);
}

static void test_rng_hash(void **state)
{
    (void)state;
    cel_rng a, b;
    cel_rng_seed(&a, 7);
    cel_rng_seed(&b, 7);
    for (int i = 0; i < 100; i++) assert_true(cel_rng_next(&a) == cel_rng_next(&b));
    cel_rng_seed(&b, 8);
    assert_true(cel_rng_next(&a) != cel_rng_next(&b));
    double u = cel_rng_uniform(&a);
    assert_true(u >= 0.0 && u < 1.0);
    assert_true(cel_hash64("abc", 3, 0) == cel_hash64("abc", 3, 0));
    assert_true(cel_hash64("abc", 3, 0) != cel_hash64("abd", 3, 0));
    assert_true(cel_hash64("abc", 3, 0) != cel_hash64("abc", 3, 1));
}

typedef struct {
    int64_t *out;
} pool_ctx;

static void square(void *ctx, int64_t b, int64_t e, int tid)
{
    (void)tid;
    pool_ctx *c = ctx;
    for (int64_t i = b; i < e; i++) c->out[i] = i * i;
}

static void test_pool(void **state)
{
    (void)state;
    cel_pool *p;
    cel_error err;
    assert_int_equal(cel_pool_create(3, &p, &err), CEL_OK);
    assert_int_equal(cel_pool_size(p), 3);
    int64_t out[1000];
    pool_ctx c = {out};
    for (int round = 0; round < 50; round++) {
        memset(out, 0xff, sizeof out);
        cel_pool_run(p, 1000, 7, square, &c);
        for (int64_t i = 0; i < 1000; i++) assert_true(out[i] == i * i);
    }
    cel_pool_free(p);
    /* a NULL pool runs inline */
    cel_pool_run(NULL, 10, 1, square, &c);
    assert_true(out[9] == 81);
}

static void test_files(void **state)
{
    (void)state;
    char path[] = "/tmp/celine_test_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    char *data;
    size_t n;
    cel_error err;
    assert_int_equal(cel_read_file(path, 0, &data, &n, &err), CEL_OK);
    assert_int_equal(n, 5);
    assert_string_equal(data, "hello");
    free(data);
    assert_int_equal(cel_read_file(path, 3, &data, &n, &err), CEL_ERR_LIMIT);
    cel_mmap m;
    assert_int_equal(cel_mmap_open(path, &m, &err), CEL_OK);
    assert_int_equal(m.size, 5);
    assert_memory_equal(m.data, "hello", 5);
    cel_mmap_close(&m);
    unlink(path);
    assert_int_equal(cel_read_file(path, 0, &data, &n, &err), CEL_ERR_IO);
    assert_non_null(strstr(err.msg, path));
    assert_true(cel_path_is_dir("/tmp"));
    assert_false(cel_path_exists(path));
}

#define U(s) ((const unsigned char *)(s))

static void test_utf8(void **state)
{
    (void)state;
    /* sequence lengths at the edges of RFC 3629 */
    assert_int_equal(cel_utf8_seq_len(U("a"), 1), 1);
    assert_int_equal(cel_utf8_seq_len(U(""), 0), 0);
    assert_int_equal(cel_utf8_seq_len(U("\xc2\x80"), 2), 2);
    assert_int_equal(cel_utf8_seq_len(U("\xc1\xbf"), 2), 0); /* overlong */
    assert_int_equal(cel_utf8_seq_len(U("\xe0\x9f\xbf"), 3), 0); /* overlong */
    assert_int_equal(cel_utf8_seq_len(U("\xe0\xa0\x80"), 3), 3);
    assert_int_equal(cel_utf8_seq_len(U("\xed\x9f\xbf"), 3), 3);
    assert_int_equal(cel_utf8_seq_len(U("\xed\xa0\x80"), 3), 0); /* surrogate */
    assert_int_equal(cel_utf8_seq_len(U("\xf0\x8f\xbf\xbf"), 4), 0); /* overlong */
    assert_int_equal(cel_utf8_seq_len(U("\xf4\x8f\xbf\xbf"), 4), 4);
    assert_int_equal(cel_utf8_seq_len(U("\xf4\x90\x80\x80"), 4), 0); /* > U+10FFFF */
    assert_int_equal(cel_utf8_seq_len(U("\xe2\x82\xac"), 2), 0);     /* truncated */
    assert_int_equal(cel_utf8_seq_len(U("\x80"), 1), 0);
    assert_int_equal(cel_utf8_seq_len(U("\xff"), 1), 0);
    assert_int_equal(cel_utf8_lead_len(0xC2), 2);
    assert_int_equal(cel_utf8_lead_len(0xC1), 1);
    assert_int_equal(cel_utf8_lead_len(0xF5), 1);
    /* valid prefixes: what a lossy decoder skips, what a stream holds back */
    assert_int_equal(cel_utf8_prefix_len(U("\xe2\x82"), 2), 2);
    assert_int_equal(cel_utf8_prefix_len(U("\xe2\x41"), 2), 1);
    assert_int_equal(cel_utf8_prefix_len(U("\xed\xa0\x80"), 3), 1);
    assert_int_equal(cel_utf8_prefix_len(U("\xf0\x9f\x98"), 3), 3);
    assert_int_equal(cel_utf8_prefix_len(U("\xf0\x9f\x98\x80!"), 5), 4);
    assert_int_equal(cel_utf8_prefix_len(U(""), 0), 0);
    /* decode and encode round trip at every length */
    const uint32_t cps[] = {0x41, 0x7FF, 0x800, 0x20AC, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF};
    for (size_t i = 0; i < sizeof cps / sizeof cps[0]; i++) {
        char b[4];
        size_t n = cel_utf8_encode(cps[i], b);
        assert_int_equal(n, cps[i] < 0x80 ? 1 : cps[i] < 0x800 ? 2 : cps[i] < 0x10000 ? 3 : 4);
        assert_int_equal(cel_utf8_seq_len(U(b), n), n);
        assert_int_equal(cel_utf8_decode(U(b), n), cps[i]);
    }
    assert_true(cel_utf8_valid("a\0\xc3\xa9", 4));
    assert_false(cel_utf8_valid("\xc3", 1));
    /* sanitising: one U+FFFD per bad byte and per NUL, valid runs kept */
    cel_buf b;
    cel_buf_init(&b);
    assert_int_equal(cel_utf8_sanitize("x\xff\xc3\xa9\0\xe2\x82", 7, &b), CEL_OK);
    assert_int_equal(b.len, 1 + 3 + 2 + 3 + 3 + 3);
    assert_memory_equal(b.data, "x\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", b.len);
    cel_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf),  cmocka_unit_test(test_error), cmocka_unit_test(test_rng_hash),
        cmocka_unit_test(test_pool), cmocka_unit_test(test_files), cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
