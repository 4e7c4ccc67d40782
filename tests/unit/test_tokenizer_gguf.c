/*
 * The GGUF tokenizer path against llama.cpp's own golden vectors: the vocab-only
 * GGUFs in llama.cpp's models/ folder (ggml-vocab-{llama-spm,llama-bpe,qwen2,
 * gpt-2}.gguf) come with .inp texts (separated by "\n__ggml_vocab_test__\n") and
 * .out ids, produced by llama.cpp's test-tokenizer-0 with add_special=false,
 * parse_special=false. scripts/fixtures-tok.sh extracts them into
 * .fixtures/tok/llama-vocab/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/engine.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

#define VOCAB CELINE_SOURCE_DIR "/.fixtures/tok/llama-vocab/"

static cel_tokenizer *open_vocab(const char *name, cel_gguf **g_out)
{
    char path[512];
    snprintf(path, sizeof path, VOCAB "ggml-vocab-%s.gguf", name);
    if (!cel_path_exists(path)) return NULL;
    cel_error err;
    cel_gguf *g = NULL;
    cel_status st = cel_gguf_open(path, &g, &err);
    if (st) printf("%s: %s\n", path, err.msg);
    assert_int_equal(st, CEL_OK);
    cel_tokenizer *t = NULL;
    st = cel_tokenizer_from_gguf(g, &t, &err);
    if (st) printf("%s: %s\n", path, err.msg);
    assert_int_equal(st, CEL_OK);
    *g_out = g;
    return t;
}

static void run_vectors(const char *name, bool expect_spm)
{
    cel_gguf *g = NULL;
    cel_tokenizer *t = open_vocab(name, &g);
    if (!t) {
        printf("SKIP: %s vocab fixture missing (run scripts/fixtures-tok.sh)\n", name);
        skip();
    }
    assert_int_equal(cel_tokenizer_kind(t), expect_spm ? CEL_TOK_SPM_BPE : CEL_TOK_BPE_BYTE);
    char path[512];
    char *inp = NULL, *outp = NULL;
    size_t inp_len = 0, out_len = 0;
    cel_error err;
    snprintf(path, sizeof path, VOCAB "ggml-vocab-%s.gguf.inp", name);
    assert_int_equal(cel_read_file(path, 0, &inp, &inp_len, &err), CEL_OK);
    snprintf(path, sizeof path, VOCAB "ggml-vocab-%s.gguf.out", name);
    assert_int_equal(cel_read_file(path, 0, &outp, &out_len, &err), CEL_OK);

    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t pos = 0, n_cases = 0;
    char *line = outp;
    int fails = 0;
    while (pos < inp_len) {
        char *next = strstr(inp + pos, sep);
        size_t tlen = next ? (size_t)(next - (inp + pos)) : inp_len - pos;
        const char *text = inp + pos;
        pos = next ? (size_t)(next - inp) + strlen(sep) : inp_len;
        /* the expected ids: one line of the .out file */
        assert_true(line && *line);
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        int32_t want[512];
        size_t nw = 0;
        for (char *p = line; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            assert_true(nw < 512);
            want[nw++] = (int32_t)v;
            p = end;
        }
        line = eol ? eol + 1 : NULL;
        int32_t *ids;
        size_t n;
        assert_int_equal(cel_tokenize(t, text, tlen, 0, &ids, &n, &err), CEL_OK);
        bool same = n == nw && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
        if (!same) {
            if (fails < 8) {
                printf("  MISMATCH %s case %zu: '%.*s'\n    got :", name, n_cases, (int)tlen, text);
                for (size_t k = 0; k < n; k++) printf(" %d", (int)ids[k]);
                printf("\n    want:");
                for (size_t k = 0; k < nw; k++) printf(" %d", (int)want[k]);
                printf("\n");
            }
            fails++;
        }
        free(ids);
        n_cases++;
    }
    printf("%s: %zu llama.cpp vectors, %d mismatches\n", name, n_cases, fails);
    assert_true(n_cases > 30);
    assert_int_equal(fails, 0);
    free(inp);
    free(outp);
    cel_tokenizer_free(t);
    cel_gguf_close(g);
}

static void test_llama_spm(void **state) { (void)state; run_vectors("llama-spm", true); }
static void test_llama_bpe(void **state) { (void)state; run_vectors("llama-bpe", false); }
static void test_qwen2(void **state) { (void)state; run_vectors("qwen2", false); }
static void test_gpt2(void **state) { (void)state; run_vectors("gpt-2", false); }

/* Metadata beyond the ids: specials, EOG, pre-tokenizer name, BOS handling. */
static void test_metadata(void **state)
{
    (void)state;
    cel_gguf *g = NULL;
    cel_tokenizer *t = open_vocab("llama-spm", &g);
    if (!t) skip();
    assert_int_equal(cel_tokenizer_bos(t), 1);
    assert_int_equal(cel_tokenizer_eos(t), 2);
    assert_true(cel_tokenizer_is_eog(t, 2));
    assert_string_equal(cel_tokenizer_pre_name(t), "spm");
    cel_error err;
    int32_t *ids;
    size_t n;
    /* SentencePiece GGUFs add BOS by default */
    assert_int_equal(cel_tokenize(t, "Hello", 5, CEL_TOKENIZE_ADD_SPECIAL, &ids, &n, &err), CEL_OK);
    assert_true(n >= 2);
    assert_int_equal(ids[0], 1);
    cel_buf out;
    cel_buf_init(&out);
    assert_int_equal(cel_detokenize(t, ids, n, true, &out, &err), CEL_OK);
    assert_string_equal(out.data, "Hello");
    cel_buf_free(&out);
    free(ids);
    cel_tokenizer_free(t);
    cel_gguf_close(g);

    t = open_vocab("llama-bpe", &g);
    assert_non_null(t);
    assert_string_equal(cel_tokenizer_pre_name(t), "llama3");
    int32_t eot = cel_tokenizer_find(t, "<|eot_id|>");
    assert_true(eot > 0);
    assert_true(cel_tokenizer_is_eog(t, eot));
    /* special tokens are split only when asked */
    const char *txt = "<|eot_id|>";
    assert_int_equal(cel_tokenize(t, txt, strlen(txt), CEL_TOKENIZE_PARSE_SPECIAL, &ids, &n, &err), CEL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], eot);
    free(ids);
    assert_int_equal(cel_tokenize(t, txt, strlen(txt), 0, &ids, &n, &err), CEL_OK);
    assert_true(n > 1);
    free(ids);
    cel_tokenizer_free(t);
    cel_gguf_close(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_spm), cmocka_unit_test(test_llama_bpe), cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_gpt2),      cmocka_unit_test(test_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
