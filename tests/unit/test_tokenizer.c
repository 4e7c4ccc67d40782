/*
 * Tokenizer unit tests on small hand-written tokenizer.json files (no fixtures
 * needed): BPE merge order, added/special token splitting with lstrip/rstrip,
 * byte-level and SentencePiece byte fallback, invalid UTF-8, streaming
 * detokenization across split characters, bounded work on adversarial input,
 * thread safety, and precise errors for malformed files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "celine/engine.h"
#include "engine/tokenizer.h"

static char g_dir[256];

static const char *write_tmp(const char *name, const char *content)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

/* Writes a built tokenizer.json (freeing the buffer) to the temp folder as
 * name and loads it; the test fails if it does not load. */
static cel_tokenizer *load_built(const char *name, cel_buf *j)
{
    const char *path = write_tmp(name, j->data);
    cel_buf_free(j);
    cel_tokenizer *t = NULL;
    cel_error err;
    cel_status st = cel_tokenizer_load_json(path, &t, &err);
    if (st) printf("load: %s\n", err.msg);
    assert_int_equal(st, CEL_OK);
    return t;
}

/* GPT-2 byte-level spelling of byte b, appended to a JSON string. */
static void bl_char(cel_buf *b, int byte)
{
    int cp = byte;
    bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE);
    if (!printable) {
        int n = 0;
        for (int k = 0; k < byte; k++)
            if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE))) n++;
        cp = 256 + n;
    }
    if (cp == '"' || cp == '\\') cel_buf_printf(b, "\\%c", cp);
    else cel_buf_printf(b, "\\u%04x", cp);
}

/* A byte-level BPE: every byte, merges h+e, l+l, he+ll, hell+o, Ġ+w (a space
 * before w); one special token and one non-special added token with lstrip. */
static cel_tokenizer *byte_tok(void)
{
    cel_buf j;
    cel_buf_init(&j);
    cel_buf_puts(&j, "{\"version\":\"1.0\",\"added_tokens\":["
                     "{\"id\":262,\"content\":\"<|end|>\",\"special\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"single_word\":false},"
                     "{\"id\":263,\"content\":\"<tag>\",\"special\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"single_word\":false},"
                     "{\"id\":264,\"content\":\"wow\",\"special\":false,\"single_word\":true}],"
                     "\"normalizer\":null,"
                     "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                     "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                     "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
                     "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|end|>\",\"type_id\":0}},"
                     "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<|end|>\":{\"id\":\"<|end|>\",\"ids\":[262],\"tokens\":[\"<|end|>\"]}}},"
                     "\"decoder\":{\"type\":\"ByteLevel\"},"
                     "\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        cel_buf_puts(&j, "\"");
        bl_char(&j, b);
        cel_buf_printf(&j, "\":%d,", b);
    }
    cel_buf_puts(&j, "\"he\":256,\"ll\":257,\"hell\":258,\"hello\":259,\"\\u0120w\":260,\"\\u0120wo\":261},"
                     "\"merges\":[\"h e\",\"l l\",\"he ll\",\"hell o\",\"\\u0120 w\",[\"\\u0120w\",\"o\"]]}}");
    return load_built("byte.json", &j);
}

/* A SentencePiece-style BPE with byte fallback (the Llama 2 / Mistral layout). */
static cel_tokenizer *spm_tok(void)
{
    cel_buf j;
    cel_buf_init(&j);
    cel_buf_puts(&j, "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true},"
                     "{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
                     "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
                     "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},\"pre_tokenizer\":null,"
                     "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],"
                     "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
                     "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},\"content\":\" \"},"
                     "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
                     "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,\"vocab\":{"
                     "\"<unk>\":0,\"<s>\":1,\"</s>\":2,");
    for (int b = 0; b < 256; b++) cel_buf_printf(&j, "\"<0x%02X>\":%d,", b, 3 + b);
    cel_buf_puts(&j, "\"\\u2581\":259,\"a\":260,\"b\":261,\"\\u2581a\":262,\"ab\":263,\"\\u2581ab\":264,\"\\u2581\\u2581\":265,\"c\":266},"
                     "\"merges\":[\"\\u2581 a\",\"a b\",\"\\u2581a b\",\"\\u2581 \\u2581\"]}}");
    return load_built("spm.json", &j);
}

static void expect_ids(const cel_tokenizer *t, const char *text, size_t len, int flags, const int32_t *want, size_t nw)
{
    int32_t *ids;
    size_t n;
    cel_error err;
    assert_int_equal(cel_tokenize(t, text, len, flags, &ids, &n, &err), CEL_OK);
    if (n != nw || memcmp(ids, want, n * sizeof *ids) != 0) {
        printf("text '%.*s': got", (int)len, text);
        for (size_t i = 0; i < n; i++) printf(" %d", (int)ids[i]);
        printf(", want");
        for (size_t i = 0; i < nw; i++) printf(" %d", (int)want[i]);
        printf("\n");
        fail();
    }
    free(ids);
}
#define EXPECT(t, text, flags, ...)                                                                                     \
    do {                                                                                                               \
        const int32_t w_[] = {__VA_ARGS__};                                                                            \
        expect_ids(t, text, strlen(text), flags, w_, sizeof w_ / sizeof w_[0]);                                        \
    } while (0)

static void test_byte_bpe(void **state)
{
    (void)state;
    cel_tokenizer *t = byte_tok();
    assert_int_equal(cel_tokenizer_kind(t), CEL_TOK_BPE_BYTE);
    assert_int_equal(cel_tokenizer_n_vocab(t), 265);
    assert_string_equal(cel_tokenizer_pre_name(t), "llama3");
    EXPECT(t, "hello", 0, 259);
    EXPECT(t, "hellhello", 0, 258, 259);            /* one \p{L}+ piece; merges by rank */
    EXPECT(t, "hello wo", 0, 259, 261);             /* " wo": Ġ+w then Ġw+o (array-form merge) */
    EXPECT(t, "helo", 0, 256, 'l', 'o');            /* no "lo" merge */
    EXPECT(t, "hello", CEL_TOKENIZE_ADD_SPECIAL, 262, 259); /* post-processor prefix */
    EXPECT(t, "123456", 0, '1', '2', '3', '4', '5', '6');
    /* special tokens: split only with PARSE_SPECIAL */
    EXPECT(t, "hello<|end|>", CEL_TOKENIZE_PARSE_SPECIAL, 259, 262);
    int32_t *ids;
    size_t n;
    cel_error err;
    assert_int_equal(cel_tokenize(t, "<|end|>", 7, 0, &ids, &n, &err), CEL_OK);
    assert_int_equal(n, 7); /* spelled out byte by byte */
    free(ids);
    /* non-special added tokens are always split; lstrip/rstrip eat the spaces around */
    EXPECT(t, "hello  <tag>  hello", 0, 259, 263, 259);
    /* single_word added tokens match whole words only */
    EXPECT(t, "wow.", 0, 264, '.');
    EXPECT(t, "wowo", 0, 'w', 'o', 'w', 'o');
    /* invalid UTF-8 is encoded byte-wise, never rejected */
    EXPECT(t, "\xff\xfe" "hello\x80", 0, 0xff, 0xfe, 259, 0x80);
    assert_int_equal(cel_tokenizer_find(t, "<|end|>"), 262);
    assert_int_equal(cel_tokenizer_find(t, "hello"), 259);
    assert_int_equal(cel_tokenizer_find(t, "nope"), -1);
    assert_int_equal(cel_tokenizer_bos(t), 262);
    cel_tokenizer_free(t);
}

static void test_decode(void **state)
{
    (void)state;
    cel_tokenizer *t = byte_tok();
    cel_buf out;
    cel_error err;
    cel_buf_init(&out);
    const int32_t ids[] = {262, 259, 261, 263};
    assert_int_equal(cel_detokenize(t, ids, 4, false, &out, &err), CEL_OK);
    assert_string_equal(out.data, "<|end|>hello wo<tag>");
    cel_buf_reset(&out);
    assert_int_equal(cel_detokenize(t, ids, 4, true, &out, &err), CEL_OK);
    assert_string_equal(out.data, "hello wo<tag>"); /* special skipped, non-special added token kept */
    /* invalid UTF-8 comes out as U+FFFD, one per maximal invalid subpart */
    const int32_t bad[] = {0xff, 'a', 0xe2, 0x82, 'b'};
    cel_buf_reset(&out);
    assert_int_equal(cel_detokenize(t, bad, 5, false, &out, &err), CEL_OK);
    assert_string_equal(out.data, "\xef\xbf\xbd" "a" "\xef\xbf\xbd" "b");
    const int32_t oob[] = {5, 9999};
    assert_int_equal(cel_detokenize(t, oob, 2, false, &out, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "9999"));
    cel_buf_free(&out);
    cel_tokenizer_free(t);
}

static void test_stream(void **state)
{
    (void)state;
    cel_tokenizer *t = byte_tok();
    cel_detok_stream s;
    cel_buf out;
    cel_buf_init(&out);
    cel_detok_stream_init(&s, t, false);
    /* "é€😀" byte by byte: nothing is emitted until a character is complete */
    const unsigned char text[] = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    size_t lens_after[9] = {0, 2, 2, 2, 5, 5, 5, 5, 9};
    for (int i = 0; i < 9; i++) {
        assert_int_equal(cel_detok_stream_push(&s, text[i], &out), CEL_OK);
        assert_int_equal(out.len, lens_after[i]);
    }
    assert_string_equal(out.data, (const char *)text);
    /* a character cut short is flushed as U+FFFD */
    cel_buf_reset(&out);
    assert_int_equal(cel_detok_stream_push(&s, 0xe2, &out), CEL_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(cel_detok_stream_push(&s, 'x', &out), CEL_OK);
    assert_string_equal(out.data, "\xef\xbf\xbdx");
    cel_buf_reset(&out);
    assert_int_equal(cel_detok_stream_push(&s, 0xf0, &out), CEL_OK);
    assert_int_equal(cel_detok_stream_flush(&s, &out), CEL_OK);
    assert_string_equal(out.data, "\xef\xbf\xbd");
    assert_int_equal(cel_detok_stream_push(&s, 99999, &out), CEL_ERR_INVALID);
    /* skip_special */
    cel_detok_stream_init(&s, t, true);
    cel_buf_reset(&out);
    assert_int_equal(cel_detok_stream_push(&s, 262, &out), CEL_OK);
    assert_int_equal(cel_detok_stream_push(&s, 259, &out), CEL_OK);
    assert_string_equal(out.data, "hello");
    cel_buf_free(&out);
    cel_tokenizer_free(t);
}

static void test_spm(void **state)
{
    (void)state;
    cel_tokenizer *t = spm_tok();
    assert_int_equal(cel_tokenizer_kind(t), CEL_TOK_SPM_BPE);
    EXPECT(t, "ab", 0, 264);                          /* ▁ab */
    EXPECT(t, "ab", CEL_TOKENIZE_ADD_SPECIAL, 1, 264); /* <s> */
    EXPECT(t, "ab ab", 0, 264, 264);
    EXPECT(t, " ab", 0, 259, 264);                    /* ▁▁ab: ▁a (rank 0) beats ▁▁ (rank 3) */
    EXPECT(t, "\xc3\xa9", 0, 259, 3 + 0xc3, 3 + 0xa9); /* é is no token: bytes */
    EXPECT(t, "abc", 0, 264, 266);
    EXPECT(t, "a<s>b", CEL_TOKENIZE_PARSE_SPECIAL, 262, 1, 259, 261); /* each segment gets its ▁ */
    cel_buf out;
    cel_error err;
    cel_buf_init(&out);
    const int32_t ids[] = {264, 259, 3 + 0xc3, 3 + 0xa9, 262};
    assert_int_equal(cel_detokenize(t, ids, 5, false, &out, &err), CEL_OK);
    assert_string_equal(out.data, "ab \xc3\xa9 a"); /* leading space stripped once */
    cel_detok_stream s;
    cel_detok_stream_init(&s, t, false);
    cel_buf_reset(&out);
    for (int i = 0; i < 5; i++) assert_int_equal(cel_detok_stream_push(&s, ids[i], &out), CEL_OK);
    assert_int_equal(cel_detok_stream_flush(&s, &out), CEL_OK);
    assert_string_equal(out.data, "ab \xc3\xa9 a");
    cel_buf_free(&out);
    cel_tokenizer_free(t);
}

/* Adversarial input: long runs of one character tokenize in bounded time and
 * memory (pieces longer than the internal cap are cut). */
static void test_adversarial(void **state)
{
    (void)state;
    cel_tokenizer *bt = byte_tok(), *st = spm_tok();
    size_t len = 10u << 20;
    char *big = malloc(len);
    assert_non_null(big);
    const char fill[] = {'a', ' ', '1', '\n', (char)0xff};
    for (size_t f = 0; f < sizeof fill; f++) {
        memset(big, fill[f], len);
        for (int k = 0; k < 2; k++) {
            const cel_tokenizer *t = k ? st : bt;
            size_t rss0 = cel_current_rss_bytes();
            double t0 = cel_now_sec();
            int32_t *ids;
            size_t n;
            cel_error err;
            assert_int_equal(cel_tokenize(t, big, len, 0, &ids, &n, &err), CEL_OK);
            double dt = cel_now_sec() - t0;
            size_t peak = cel_current_rss_bytes();
            printf("10 MiB of 0x%02x (%s): %zu ids in %.2fs, rss +%zu MiB\n", (unsigned char)fill[f], k ? "spm" : "byte", n,
                   dt, (peak > rss0 ? peak - rss0 : 0) >> 20);
            assert_true(n > 0 && n <= len + 1);
            assert_true(dt < 30.0);
            free(ids);
        }
    }
    free(big);
    cel_tokenizer_free(bt);
    cel_tokenizer_free(st);
}

typedef struct par_ctx {
    const cel_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *want;
    size_t n_want;
    int bad;
} par_ctx;

static void par_fn(void *ctx, int64_t b, int64_t e, int thread)
{
    (void)thread;
    par_ctx *c = ctx;
    for (int64_t i = b; i < e; i++) {
        int32_t *ids;
        size_t n;
        cel_error err;
        if (cel_tokenize(c->t, c->text, c->len, CEL_TOKENIZE_PARSE_SPECIAL, &ids, &n, &err) != CEL_OK ||
            n != c->n_want || memcmp(ids, c->want, n * sizeof *ids) != 0)
            __atomic_add_fetch(&c->bad, 1, __ATOMIC_RELAXED);
        free(ids);
    }
}

static void test_threads(void **state)
{
    (void)state;
    cel_tokenizer *t = byte_tok();
    const char *text = "hello world, hello<|end|> 12345 \xc3\xa9\xe2\x82\xac hellhello  <tag> wo";
    par_ctx c = {t, text, strlen(text), NULL, 0, 0};
    cel_error err;
    assert_int_equal(cel_tokenize(t, text, c.len, CEL_TOKENIZE_PARSE_SPECIAL, &c.want, &c.n_want, &err), CEL_OK);
    cel_pool *p;
    assert_int_equal(cel_pool_create(4, &p, &err), CEL_OK);
    cel_pool_run(p, 2000, 1, par_fn, &c);
    cel_pool_free(p);
    assert_int_equal(c.bad, 0);
    free(c.want);
    cel_tokenizer_free(t);
}

static void expect_load_error(const char *json, cel_status code, const char *needle)
{
    const char *path = write_tmp("bad.json", json);
    cel_tokenizer *t = (cel_tokenizer *)1;
    cel_error err;
    cel_status st = cel_tokenizer_load_json(path, &t, &err);
    if (st != code || !strstr(err.msg, needle)) printf("json %s\n -> %d '%s'\n", json, st, err.msg);
    assert_int_equal(st, code);
    assert_null(t);
    assert_non_null(strstr(err.msg, needle));
}

static void test_load_errors(void **state)
{
    (void)state;
    cel_tokenizer *t;
    cel_error err;
    assert_int_equal(cel_tokenizer_load_json("/nonexistent/tokenizer.json", &t, &err), CEL_ERR_IO);
    expect_load_error("{\"model\": {", CEL_ERR_FORMAT, "invalid JSON");
    expect_load_error("[1,2]", CEL_ERR_FORMAT, "not a JSON object");
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", CEL_ERR_UNSUPPORTED, "Unigram");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}", CEL_ERR_FORMAT, "'a'");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a c\"]},"
                      "\"decoder\":{\"type\":\"ByteLevel\"}}",
                      CEL_ERR_FORMAT, "merge 0");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"abc\"]},\"decoder\":{\"type\":\"ByteLevel\"}}",
                      CEL_ERR_FORMAT, "merge 0");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"normalizer\":{\"type\":\"NFKC\"}}",
                      CEL_ERR_UNSUPPORTED, "NFKC");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"pre_tokenizer\":{\"type\":\"Whitespace\"}}",
                      CEL_ERR_UNSUPPORTED, "Whitespace");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":"
                      "{\"Regex\":\"(unclosed\"},\"behavior\":\"Isolated\"},\"decoder\":{\"type\":\"ByteLevel\"}}",
                      CEL_ERR_FORMAT, "regex");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"added_tokens\":[{\"id\":\"x\"}]}", CEL_ERR_FORMAT,
                      "added_tokens");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}", CEL_ERR_UNSUPPORTED, "byte-level");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999}}}", CEL_ERR_FORMAT, "'a'");
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/celine-tok-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"byte.json", "spm.json", "bad.json"};
    char p[512];
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, names[i]);
        unlink(p);
    }
    return rmdir(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_bpe),   cmocka_unit_test(test_decode),      cmocka_unit_test(test_stream),
        cmocka_unit_test(test_spm),        cmocka_unit_test(test_adversarial), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
