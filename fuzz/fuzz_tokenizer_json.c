/*
 * Fuzz target for the tokenizer.json reader and for encoding arbitrary bytes.
 * Input: TOKENIZER_JSON [ '\0' TEXT ]. The JSON is loaded (it must never crash,
 * hang or grow without bound; malformed input must be rejected with an error);
 * when it loads, TEXT is encoded with every flag combination and decoded back,
 * whole and as a stream. TEXT is also encoded with two fixed small tokenizers
 * (byte-level and SentencePiece-style) so arbitrary bytes get exercised even
 * when the JSON part is garbage.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tok_impl.h"

static const char byte_json[] =
    "{\"added_tokens\":[{\"id\":260,\"content\":\"<|x|>\",\"special\":true},{\"id\":261,\"content\":\"<t>\",\"special\":false,"
    "\"lstrip\":true,\"rstrip\":true}],\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true},"
    "\"decoder\":{\"type\":\"ByteLevel\"},\"normalizer\":{\"type\":\"NFC\"},"
    "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{%VOCAB%\"\\u0120t\":256,\"he\":257,\"\\u0120the\":258,\"in\":259},"
    "\"merges\":[\"\\u0120 t\",\"h e\",\"\\u0120t he\",\"i n\"]}}";

static const char spm_json[] =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},{\"type\":\"Replace\","
    "\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":1},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,"
    "\"<0x41>\":2,\"<0xC3>\":3,\"\\u2581\":4,\"a\":5,\"b\":6,\"\\u2581a\":7,\"ab\":8,\"\\u2581\\u2581\":9},"
    "\"merges\":[\"\\u2581 a\",\"a b\",\"\\u2581 \\u2581\"]}}";

static cel_tokenizer *fixed[2];

static void build_fixed(void)
{
    cel_error err;
    /* the byte-level vocabulary: all 256 byte characters */
    cel_buf v;
    cel_buf_init(&v);
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = b;
        if (!printable) {
            int n = 0;
            for (int k = 0; k < b; k++) n += !((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE);
            cp = 256 + n;
        }
        cel_buf_printf(&v, "\"\\u%04x\":%d,", cp, b);
    }
    cel_buf j;
    cel_buf_init(&j);
    const char *mark = strstr(byte_json, "%VOCAB%");
    cel_buf_append(&j, byte_json, (size_t)(mark - byte_json));
    cel_buf_append(&j, v.data, v.len);
    cel_buf_puts(&j, mark + 7);
    if (cel__tok_load_json_mem(j.data, j.len, "fixed-byte", &fixed[0], &err)) abort();
    if (cel__tok_load_json_mem(spm_json, sizeof spm_json - 1, "fixed-spm", &fixed[1], &err)) abort();
    cel_buf_free(&v);
    cel_buf_free(&j);
}

static void exercise(const cel_tokenizer *t, const char *text, size_t len)
{
    cel_error err;
    for (int flags = 0; flags < 4; flags++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (cel_tokenize(t, text, len, flags, &ids, &n, &err) != CEL_OK) continue;
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= cel_tokenizer_n_vocab(t)) abort(); /* ids must be valid */
        cel_buf out;
        cel_buf_init(&out);
        if (cel_detokenize(t, ids, n, flags & 1, &out, &err) != CEL_OK) abort();
        cel_detok_stream s;
        cel_detok_stream_init(&s, t, flags & 1);
        cel_buf sout;
        cel_buf_init(&sout);
        for (size_t i = 0; i < n; i++)
            if (cel_detok_stream_push(&s, ids[i], &sout) != CEL_OK) abort();
        if (cel_detok_stream_flush(&s, &sout) != CEL_OK) abort();
        /* whole and streamed decoding agree */
        if (sout.len != out.len || (out.len && memcmp(sout.data, out.data, out.len) != 0)) abort();
        cel_buf_free(&sout);
        cel_buf_free(&out);
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fixed[0]) build_fixed();
    const char *p = (const char *)data;
    const char *zero = memchr(p, 0, size);
    size_t jlen = zero ? (size_t)(zero - p) : size;
    const char *text = zero ? zero + 1 : "";
    size_t tlen = zero ? size - jlen - 1 : 0;
    if (tlen > 4096) tlen = 4096; /* keep each run short */
    cel_tokenizer *t = NULL;
    cel_error err;
    cel_error_clear(&err);
    if (cel__tok_load_json_mem(p, jlen, "fuzz", &t, &err) == CEL_OK) {
        exercise(t, text, tlen);
        (void)cel_tokenizer_find(t, "<s>");
        cel_tokenizer_free(t);
    } else if (!err.msg[0]) {
        abort(); /* a rejection always says why */
    }
    exercise(fixed[0], zero ? text : p, zero ? tlen : (size > 4096 ? 4096 : size));
    exercise(fixed[1], zero ? text : p, zero ? tlen : (size > 4096 ? 4096 : size));
    return 0;
}
