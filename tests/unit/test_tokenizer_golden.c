/*
 * Golden tests: celine's token ids must equal the Hugging Face tokenizers
 * library's on the real tokenizer files (fetched by scripts/fixtures-tok.sh into
 * .fixtures/tok/). The expected ids were produced once by tools/golden_tokens.js
 * with @anush008/tokenizers@0.6.0 and live in tests/data/tokenizer/ (one JSON file per tokenizer).
 * Each case checks encode with and without the post-processor's specials and
 * decoding back to the reference's text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/engine.h"

#define FX CELINE_SOURCE_DIR "/.fixtures/tok/"
#define GOLD CELINE_SOURCE_DIR "/tests/data/tokenizer/"

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    printf("    %s:", label);
    for (size_t i = 0; i < n && i < 40; i++) printf(" %d", (int)ids[i]);
    printf("%s\n", n > 40 ? " ..." : "");
}

static bool ids_equal(json_t *want, const int32_t *got, size_t n)
{
    if (json_array_size(want) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != got[i]) return false;
    return true;
}

/* Runs every golden case of one tokenizer; returns the number of failures. */
static int run_golden(const char *tok_path, const char *gold_path)
{
    if (!cel_path_exists(tok_path)) {
        printf("SKIP: fixture %s missing (run scripts/fixtures-tok.sh)\n", tok_path);
        return -1;
    }
    cel_error err;
    cel_tokenizer *t = NULL;
    cel_status st = cel_tokenizer_load_json(tok_path, &t, &err);
    if (st) printf("load %s: %s\n", tok_path, err.msg);
    assert_int_equal(st, CEL_OK);
    json_error_t je;
    json_t *g = json_load_file(gold_path, 0, &je);
    assert_non_null(g);
    json_t *cases = json_object_get(g, "cases");
    assert_true(json_array_size(cases) > 100);
    int fails = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t *ids = NULL;
        size_t n = 0;
        for (int pass = 0; pass < 2; pass++) {
            int flags = CEL_TOKENIZE_PARSE_SPECIAL | (pass == 0 ? CEL_TOKENIZE_ADD_SPECIAL : 0);
            json_t *want = json_object_get(c, pass == 0 ? "ids" : "ids_plain");
            assert_int_equal(cel_tokenize(t, text, len, flags, &ids, &n, &err), CEL_OK);
            if (!ids_equal(want, ids, n)) {
                if (fails < 12) {
                    printf("  MISMATCH %s case %zu (%s): %s\n", gold_path, i, pass == 0 ? "add_special" : "plain", text);
                    print_ids("got ", ids, n);
                    int32_t w[64];
                    size_t wn = json_array_size(want) < 64 ? json_array_size(want) : 64;
                    for (size_t k = 0; k < wn; k++) w[k] = (int32_t)json_integer_value(json_array_get(want, k));
                    print_ids("want", w, wn);
                }
                fails++;
            }
            if (pass == 1) {
                /* decode the reference's ids back to the reference's text */
                json_t *want_ids = json_object_get(c, "ids_plain");
                size_t wn = json_array_size(want_ids);
                int32_t *w = malloc((wn + 1) * sizeof *w);
                for (size_t k = 0; k < wn; k++) w[k] = (int32_t)json_integer_value(json_array_get(want_ids, k));
                cel_buf out;
                cel_buf_init(&out);
                assert_int_equal(cel_detokenize(t, w, wn, false, &out, &err), CEL_OK);
                const char *dec = json_string_value(json_object_get(c, "decoded"));
                if (strcmp(out.data ? out.data : "", dec) != 0) {
                    if (fails < 12) printf("  DECODE MISMATCH case %zu: got '%s' want '%s'\n", i, out.data ? out.data : "", dec);
                    fails++;
                }
                /* the stream decoder yields the same text, token by token */
                cel_detok_stream s;
                cel_detok_stream_init(&s, t, false);
                cel_buf sb;
                cel_buf_init(&sb);
                for (size_t k = 0; k < wn; k++) assert_int_equal(cel_detok_stream_push(&s, w[k], &sb), CEL_OK);
                assert_int_equal(cel_detok_stream_flush(&s, &sb), CEL_OK);
                if (strcmp(sb.data ? sb.data : "", out.data ? out.data : "") != 0) {
                    if (fails < 12) printf("  STREAM MISMATCH case %zu: '%s' vs '%s'\n", i, sb.data ? sb.data : "", out.data ? out.data : "");
                    fails++;
                }
                cel_buf_free(&sb);
                cel_buf_free(&out);
                free(w);
            }
            free(ids);
        }
    }
    printf("%s: %zu cases, %d mismatches\n", gold_path, json_array_size(cases), fails);
    json_decref(g);
    cel_tokenizer_free(t);
    return fails;
}

static void check(const char *tok, const char *gold)
{
    int f = run_golden(tok, gold);
    if (f < 0) skip();
    assert_int_equal(f, 0);
}

static void test_qwen3(void **state) { (void)state; check(FX "qwen3/tokenizer.json", GOLD "qwen3.json"); }
static void test_llama3(void **state) { (void)state; check(FX "llama3/tokenizer.json", GOLD "llama3.json"); }
static void test_mistral(void **state) { (void)state; check(FX "mistral/tokenizer.json", GOLD "mistral.json"); }
static void test_gpt2(void **state) { (void)state; check(FX "gpt2/encoder.json", GOLD "gpt2.json"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_gpt2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
