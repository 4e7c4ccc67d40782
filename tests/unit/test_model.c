/* Unit tests for the model loader (engine/model.c): hyper-parameters of every
 * committed test model, synthetic GGUF files written here with one thing
 * wrong at a time (missing/ill-typed keys, unknown architecture, bad shapes,
 * missing tensors, RoPE scaling), Hugging Face folders with a broken
 * config.json / index / shard, cel_model_make_writable and describe. */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "celine/engine.h"

#define MODELS CELINE_SOURCE_DIR "/tests/data/models"

/* Loads a model that must load (the test fails naming the path and the
 * error otherwise); default options. */
static cel_model *load_ok(const char *path)
{
    cel_model *m = NULL;
    cel_error err;
    if (cel_model_load(path, NULL, &m, &err) != CEL_OK) fail_msg("%s: %s", path, err.msg);
    assert_non_null(m);
    return m;
}

/* ------------------------------------------------- hparams of real files */

typedef struct expect {
    const char *file;
    cel_arch arch;
    int32_t embd, layers, heads, kv, hd, ff, vocab;
    cel_rope_style rope;
    bool tied, bias, qknorm;
    cel_rope_scaling scaling;
    const char *format;
} expect;

static const expect EXPECT[] = {
    {"llama-f32.gguf", CEL_ARCH_LLAMA, 64, 2, 4, 2, 16, 128, 320, CEL_ROPE_NORM, false, false, false, 0, "gguf"},
    {"llama-q4_0.gguf", CEL_ARCH_LLAMA, 64, 2, 4, 2, 16, 128, 320, CEL_ROPE_NORM, false, false, false, 0, "gguf"},
    {"llama-hf", CEL_ARCH_LLAMA, 64, 2, 4, 2, 16, 128, 320, CEL_ROPE_NEOX, false, false, false, 0, "safetensors"},
    {"llama31-f32.gguf", CEL_ARCH_LLAMA, 64, 2, 2, 1, 32, 128, 320, CEL_ROPE_NORM, true, false, false,
     CEL_ROPE_SCALING_LLAMA3, "gguf"},
    {"llama31-hf", CEL_ARCH_LLAMA, 64, 2, 2, 1, 32, 128, 320, CEL_ROPE_NEOX, true, false, false,
     CEL_ROPE_SCALING_LLAMA3, "safetensors"},
    {"qwen2-q8_0.gguf", CEL_ARCH_QWEN2, 64, 2, 4, 2, 16, 128, 320, CEL_ROPE_NEOX, true, true, false, 0, "gguf"},
    {"qwen2-hf", CEL_ARCH_QWEN2, 64, 2, 4, 2, 16, 128, 320, CEL_ROPE_NEOX, true, true, false, 0, "safetensors"},
    {"qwen2-q4_k_m.gguf", CEL_ARCH_QWEN2, 256, 4, 4, 2, 64, 512, 320, CEL_ROPE_NEOX, true, true, false, 0, "gguf"},
    {"qwen3-f16.gguf", CEL_ARCH_QWEN3, 64, 2, 4, 2, 32, 128, 320, CEL_ROPE_NEOX, true, false, true, 0, "gguf"},
    {"qwen3-hf", CEL_ARCH_QWEN3, 64, 2, 4, 2, 32, 128, 320, CEL_ROPE_NEOX, true, false, true, 0, "safetensors"},
    /* llama.cpp writes Mistral as "llama" (NORM RoPE); the HF folder says mistral */
    {"mistral-q8_0.gguf", CEL_ARCH_LLAMA, 64, 2, 4, 2, 16, 128, 320, CEL_ROPE_NORM, false, false, false, 0, "gguf"},
    {"mistral-hf", CEL_ARCH_MISTRAL, 64, 2, 4, 2, 16, 128, 320, CEL_ROPE_NEOX, false, false, false, 0, "safetensors"},
};

static void test_committed_hparams(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof EXPECT / sizeof EXPECT[0]; i++) {
        const expect *e = &EXPECT[i];
        char path[512];
        snprintf(path, sizeof path, MODELS "/%s", e->file);
        cel_model *m = NULL;
        cel_error err;
        if (cel_model_load(path, NULL, &m, &err) != CEL_OK) fail_msg("%s", err.msg);
        const cel_hparams *hp = &m->hp;
        if (hp->arch != e->arch || hp->n_embd != e->embd || hp->n_layer != e->layers || hp->n_head != e->heads ||
            hp->n_head_kv != e->kv || hp->head_dim != e->hd || hp->n_ff != e->ff || hp->n_vocab != e->vocab ||
            hp->rope_style != e->rope || hp->tied_embeddings != e->tied || hp->has_qkv_bias != e->bias ||
            hp->has_qk_norm != e->qknorm || hp->rope_scaling != e->scaling)
            fail_msg("%s: hparams differ", e->file);
        assert_string_equal(m->format, e->format);
        assert_int_equal(hp->n_ctx_train, 4096);
        assert_true(fabsf(hp->rms_eps - 1e-5f) < 1e-9f);
        if (e->scaling == CEL_ROPE_SCALING_LLAMA3) { /* recovered from rope_freqs.weight in the GGUF */
            assert_true(hp->rope_theta == 100.0f);
            assert_true(fabsf(hp->rope_factor - 8.0f) < 1e-5f);
            assert_true(fabsf(hp->rope_low_freq_factor - 1.0f) < 1e-5f);
            assert_true(fabsf(hp->rope_high_freq_factor - 4.0f) < 1e-3f);
            assert_int_equal(hp->rope_orig_ctx, 256);
        } else {
            assert_true(hp->rope_theta == 10000.0f);
        }
        assert_ptr_equal(m->output == m->tok_embd, e->tied);
        for (int32_t l = 0; l < hp->n_layer; l++) {
            const cel_layer *L = &m->layers[l];
            assert_true(L->attn_norm && L->wq && L->wk && L->wv && L->wo && L->ffn_norm && L->w_gate && L->w_up &&
                        L->w_down);
            assert_true((L->bq && L->bk && L->bv) == e->bias);
            assert_true((L->q_norm && L->k_norm) == e->qknorm);
        }
        assert_non_null(m->tok);
        assert_non_null(m->chat_template);
        assert_int_equal(cel_tokenizer_n_vocab(m->tok), 320);
        assert_non_null(m->name);
        cel_model_free(m);
    }
}

static void test_params_and_find(void **state)
{
    (void)state;
    cel_model *m = load_ok(MODELS "/llama-f32.gguf");
    /* 320*64 embd + 320*64 output + 64 norm + 2 x (2*64 norms + 64*64 q + 2*64*32 kv + 64*64 o + 3*64*128 ffn) */
    assert_int_equal(cel_model_n_params(m), 320 * 64 * 2 + 64 + 2 * (128 + 4096 + 4096 + 4096 + 3 * 8192));
    cel_tensor *t = cel_model_find_tensor(m, "blk.1.ffn_down.weight");
    assert_non_null(t);
    assert_ptr_equal(t, m->layers[1].w_down);
    assert_int_equal(t->ne[0], 128);
    assert_int_equal(t->ne[1], 64);
    assert_false(t->owned);
    assert_null(cel_model_find_tensor(m, "blk.2.ffn_down.weight"));
    assert_string_equal(m->name, "llama-f32");
    cel_model_free(m);
    /* HF names, and the GGUF and HF folder hold the same numbers */
    cel_model *h = NULL;
    h = load_ok(MODELS "/llama-hf/");
    assert_string_equal(h->name, "llama-hf");
    assert_non_null(cel_model_find_tensor(h, "model.layers.1.mlp.down_proj.weight"));
    assert_int_equal(cel_model_n_params(h), 320 * 64 * 2 + 64 + 2 * (128 + 4096 + 4096 + 4096 + 3 * 8192));
    cel_model_free(h);
}

static void test_describe(void **state)
{
    (void)state;
    cel_model *m = load_ok(MODELS "/qwen2-q4_k_m.gguf");
    cel_buf b;
    cel_buf_init(&b);
    assert_int_equal(cel_model_describe(m, &b), CEL_OK);
    const char *want[] = {"architecture:   qwen2", "Q4_K: 25", "Q6_K: 4", "F32: 21", "context length: 4096",
                          "vocab 320", "<|im_end|>", "chat template:  chatml", "q/k/v bias", "tied embeddings",
                          "rope:           neox"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(b.data, want[i])) fail_msg("describe lacks '%s':\n%s", want[i], b.data);
    cel_buf_free(&b);
    cel_model_free(m);
}

static void test_make_writable(void **state)
{
    (void)state;
    cel_model *m = load_ok(MODELS "/llama-q8_0.gguf");
    cel_error err;
    /* F32 tensor: own copy, same bytes, writable */
    cel_tensor *n = cel_model_find_tensor(m, "blk.0.attn_norm.weight"), *w = NULL;
    const void *mapped = n->data;
    float first;
    memcpy(&first, mapped, 4);
    assert_int_equal(cel_model_make_writable(m, "blk.0.attn_norm.weight", &w, &err), CEL_OK);
    assert_ptr_equal(w, n);
    assert_true(w->owned);
    assert_ptr_not_equal(w->data, mapped);
    assert_int_equal(memcmp(w->data, mapped, w->nbytes), 0);
    ((float *)w->data)[0] = 42.0f;
    assert_true(((float *)w->data)[0] == 42.0f);
    /* twice: same memory */
    void *p = w->data;
    assert_int_equal(cel_model_make_writable(m, "blk.0.attn_norm.weight", &w, &err), CEL_OK);
    assert_ptr_equal(w->data, p);
    /* Q8_0: dequantized to F32 (block 0: fp16 d then 32 int8) */
    cel_tensor *q = cel_model_find_tensor(m, "blk.0.attn_q.weight");
    assert_int_equal(q->dtype, CEL_DTYPE_Q8_0);
    const uint8_t *blk = q->data;
    uint16_t dh = (uint16_t)(blk[0] | blk[1] << 8);
    int8_t q0 = (int8_t)blk[2], q5 = (int8_t)blk[7];
    assert_int_equal(cel_model_make_writable(m, "blk.0.attn_q.weight", &w, &err), CEL_OK);
    assert_int_equal(w->dtype, CEL_DTYPE_F32);
    assert_int_equal(w->nbytes, 64 * 64 * sizeof(float));
    /* fp16 -> float by hand: normal numbers only (d is a small positive scale) */
    int e = (dh >> 10) & 31;
    float d = ldexpf(1.0f + (float)(dh & 1023) / 1024.0f, e - 15);
    assert_true(fabsf(((float *)w->data)[0] - d * q0) < 1e-6f);
    assert_true(fabsf(((float *)w->data)[5] - d * q5) < 1e-6f);
    assert_int_equal(cel_model_make_writable(m, "no.such.tensor", &w, &err), CEL_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no.such.tensor"));
    cel_model_free(m);
}

static void test_tokenizer_override(void **state)
{
    (void)state;
    cel_model *m = NULL;
    cel_error err;
    cel_model_load_opts o = {.tokenizer_path = MODELS "/qwen3-hf/tokenizer.json"};
    assert_int_equal(cel_model_load(MODELS "/llama-f32.gguf", &o, &m, &err), CEL_OK);
    assert_int_equal(cel_tokenizer_find(m->tok, "<|im_end|>"), 319);
    assert_int_equal(cel_tokenizer_find(m->tok, "<|eot_id|>"), -1);
    assert_non_null(strstr(m->chat_template, "start_header_id")); /* the GGUF's own template is kept */
    cel_model_free(m);
    o.tokenizer_path = "/nonexistent/tokenizer.json";
    assert_int_not_equal(cel_model_load(MODELS "/llama-f32.gguf", &o, &m, &err), CEL_OK);
    assert_null(m);
}

/* ------------------------------------------ synthetic GGUF, one fault each */

enum { K_U32 = 4, K_I32 = 5, K_F32 = 6, K_STR = 8 };
typedef struct skv {
    char key[96];
    int type;
    int64_t i;
    float f;
    char s[40];
} skv;
typedef struct sten {
    char name[96];
    int64_t ne0, ne1;
    cel_dtype t;
    const float *vals; /* optional contents (F32), else a pattern */
} sten;
typedef struct spec {
    skv kv[48];
    int nkv;
    sten t[96];
    int nt;
} spec;

static void kv_int(spec *s, const char *k, int64_t v)
{
    for (int i = 0; i < s->nkv; i++)
        if (strcmp(s->kv[i].key, k) == 0) {
            s->kv[i].type = K_U32;
            s->kv[i].i = v;
            return;
        }
    skv *x = &s->kv[s->nkv++];
    snprintf(x->key, sizeof x->key, "%s", k);
    x->type = K_U32;
    x->i = v;
}
static void kv_f32(spec *s, const char *k, float v)
{
    skv *x = &s->kv[s->nkv++];
    snprintf(x->key, sizeof x->key, "%s", k);
    x->type = K_F32;
    x->f = v;
}
static void kv_str(spec *s, const char *k, const char *v)
{
    for (int i = 0; i < s->nkv; i++)
        if (strcmp(s->kv[i].key, k) == 0) {
            s->kv[i].type = K_STR;
            snprintf(s->kv[i].s, sizeof s->kv[i].s, "%s", v);
            return;
        }
    skv *x = &s->kv[s->nkv++];
    snprintf(x->key, sizeof x->key, "%s", k);
    x->type = K_STR;
    snprintf(x->s, sizeof x->s, "%s", v);
}
static void kv_del(spec *s, const char *k)
{
    for (int i = 0; i < s->nkv; i++)
        if (strcmp(s->kv[i].key, k) == 0) s->kv[i] = s->kv[--s->nkv];
}
static sten *ten(spec *s, const char *name, int64_t ne0, int64_t ne1)
{
    sten *x = &s->t[s->nt++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->ne0 = ne0;
    x->ne1 = ne1;
    x->t = CEL_DTYPE_F32;
    x->vals = NULL;
    return x;
}
static sten *ten_find(spec *s, const char *name)
{
    for (int i = 0; i < s->nt; i++)
        if (strcmp(s->t[i].name, name) == 0) return &s->t[i];
    fail_msg("spec has no tensor %s", name);
    return NULL;
}
static void ten_del(spec *s, const char *name)
{
    sten *x = ten_find(s, name);
    *x = s->t[--s->nt];
}

/* A complete small model of `arch`: n_embd 32, 2 layers, 2 heads (1 KV),
 * head_dim 16 (qwen3: 32), n_ff 64, vocab 40; no tokenizer metadata. */
static void spec_model(spec *s, const char *arch)
{
    memset(s, 0, sizeof *s);
    char k[96];
    int hd = strcmp(arch, "qwen3") == 0 ? 32 : 16;
    kv_str(s, "general.architecture", arch);
#define AK(name, v)                                                                                                   \
    do {                                                                                                               \
        snprintf(k, sizeof k, "%s." name, arch);                                                                       \
        kv_int(s, k, v);                                                                                               \
    } while (0)
    AK("context_length", 2048);
    AK("embedding_length", 32);
    AK("block_count", 2);
    AK("feed_forward_length", 64);
    AK("attention.head_count", 2);
    AK("attention.head_count_kv", 1);
    if (hd != 16) AK("attention.key_length", hd);
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", arch);
    kv_f32(s, k, 1e-6f);
    snprintf(k, sizeof k, "%s.rope.freq_base", arch);
    kv_f32(s, k, 500000.0f);
    ten(s, "token_embd.weight", 32, 40);
    for (int l = 0; l < 2; l++) {
#define T(n, a, b)                                                                                                     \
    do {                                                                                                               \
        snprintf(k, sizeof k, "blk.%d." n, l);                                                                         \
        ten(s, k, a, b);                                                                                               \
    } while (0)
        T("attn_norm.weight", 32, 1);
        T("attn_q.weight", 32, 2 * hd);
        T("attn_k.weight", 32, hd);
        T("attn_v.weight", 32, hd);
        T("attn_output.weight", 2 * hd, 32);
        if (strcmp(arch, "qwen2") == 0) {
            T("attn_q.bias", 2 * hd, 1);
            T("attn_k.bias", hd, 1);
            T("attn_v.bias", hd, 1);
        }
        if (strcmp(arch, "qwen3") == 0) {
            T("attn_q_norm.weight", hd, 1);
            T("attn_k_norm.weight", hd, 1);
        }
        T("ffn_norm.weight", 32, 1);
        T("ffn_gate.weight", 32, 64);
        T("ffn_up.weight", 32, 64);
        T("ffn_down.weight", 64, 32);
#undef T
    }
    ten(s, "output_norm.weight", 32, 1);
    ten(s, "output.weight", 32, 40);
#undef AK
}

static void put(FILE *f, const void *p, size_t n) { assert_int_equal(fwrite(p, 1, n, f), n); }
static void put_u32(FILE *f, uint32_t v) { put(f, &v, 4); }
static void put_u64(FILE *f, uint64_t v) { put(f, &v, 8); }
static void put_str(FILE *f, const char *s)
{
    put_u64(f, strlen(s));
    put(f, s, strlen(s));
}

static char tmpdir[64];

/* Writes s as a GGUF v3 file in the test's temp folder; returns its path. */
static const char *write_gguf(const spec *s, const char *fname)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, fname);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    put(f, "GGUF", 4);
    put_u32(f, 3);
    put_u64(f, (uint64_t)s->nt);
    put_u64(f, (uint64_t)s->nkv);
    for (int i = 0; i < s->nkv; i++) {
        put_str(f, s->kv[i].key);
        put_u32(f, (uint32_t)s->kv[i].type);
        if (s->kv[i].type == K_STR) put_str(f, s->kv[i].s);
        else if (s->kv[i].type == K_F32) put(f, &s->kv[i].f, 4);
        else put_u32(f, (uint32_t)s->kv[i].i);
    }
    uint64_t off = 0;
    for (int i = 0; i < s->nt; i++) {
        const sten *t = &s->t[i];
        put_str(f, t->name);
        put_u32(f, t->ne1 == 1 ? 1 : 2);
        put_u64(f, (uint64_t)t->ne0);
        if (t->ne1 != 1) put_u64(f, (uint64_t)t->ne1);
        put_u32(f, (uint32_t)t->t);
        put_u64(f, off);
        off += (cel_dtype_row_bytes(t->t, t->ne0) * (size_t)t->ne1 + 31) / 32 * 32;
    }
    long pos = ftell(f);
    while (pos % 32) put(f, "", 1), pos++;
    for (int i = 0; i < s->nt; i++) {
        const sten *t = &s->t[i];
        size_t nb = cel_dtype_row_bytes(t->t, t->ne0) * (size_t)t->ne1;
        uint8_t *buf = calloc(1, (nb + 31) / 32 * 32);
        if (t->t == CEL_DTYPE_F32)
            for (size_t e = 0; e < nb / 4; e++) {
                float v = t->vals ? t->vals[e] : 0.01f * (float)(e % 7);
                memcpy(buf + 4 * e, &v, 4);
            }
        put(f, buf, (nb + 31) / 32 * 32);
        free(buf);
    }
    fclose(f);
    return path;
}

/* Loads s expecting failure with `code` and `needle` in the message. */
static void expect_fail(const spec *s, cel_status code, const char *needle)
{
    const char *p = write_gguf(s, "bad.gguf");
    cel_model *m = NULL;
    cel_error err;
    cel_error_clear(&err);
    cel_status st = cel_model_load(p, NULL, &m, &err);
    if (st != code || !strstr(err.msg, needle) || !strstr(err.msg, "bad.gguf"))
        fail_msg("expected %s with '%s', got %s: %s", cel_status_name(code), needle, cel_status_name(st), err.msg);
    assert_null(m);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static int setup_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/celine_test_model_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}
static int teardown_tmp(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_synthetic_ok(void **state)
{
    (void)state;
    const char *archs[] = {"llama", "qwen2", "qwen3", "mistral"};
    const cel_arch want[] = {CEL_ARCH_LLAMA, CEL_ARCH_QWEN2, CEL_ARCH_QWEN3, CEL_ARCH_MISTRAL};
    for (int a = 0; a < 4; a++) {
        spec s;
        spec_model(&s, archs[a]);
        cel_model *m = NULL;
        cel_error err;
        if (cel_model_load(write_gguf(&s, "ok.gguf"), NULL, &m, &err) != CEL_OK) fail_msg("%s: %s", archs[a], err.msg);
        assert_int_equal(m->hp.arch, want[a]);
        assert_int_equal(m->hp.n_vocab, 40);
        assert_int_equal(m->hp.n_ctx_train, 2048);
        assert_int_equal(m->hp.head_dim, a == 2 ? 32 : 16);
        assert_true(m->hp.rope_theta == 500000.0f);
        assert_int_equal(m->hp.rope_style, a == 1 || a == 2 ? CEL_ROPE_NEOX : CEL_ROPE_NORM);
        assert_false(m->hp.tied_embeddings);
        assert_null(m->tok); /* no tokenizer metadata: loads, without a tokenizer */
        assert_null(m->chat_template);
        cel_buf b;
        cel_buf_init(&b);
        assert_int_equal(cel_model_describe(m, &b), CEL_OK);
        assert_non_null(strstr(b.data, "tokenizer:      none"));
        cel_buf_free(&b);
        cel_model_free(m);
    }
    /* no output.weight: tied to the embedding */
    spec s;
    spec_model(&s, "llama");
    ten_del(&s, "output.weight");
    cel_model *m = load_ok(write_gguf(&s, "tied.gguf"));
    assert_true(m->hp.tied_embeddings);
    assert_ptr_equal(m->output, m->tok_embd);
    cel_model_free(m);
    /* head_count_kv absent: equals head_count */
    spec_model(&s, "llama");
    kv_del(&s, "llama.attention.head_count_kv");
    ten_find(&s, "blk.0.attn_k.weight")->ne1 = 32;
    ten_find(&s, "blk.0.attn_v.weight")->ne1 = 32;
    ten_find(&s, "blk.1.attn_k.weight")->ne1 = 32;
    ten_find(&s, "blk.1.attn_v.weight")->ne1 = 32;
    m = load_ok(write_gguf(&s, "mha.gguf"));
    assert_int_equal(m->hp.n_head_kv, 2);
    cel_model_free(m);
    /* linear RoPE scaling keys */
    spec_model(&s, "llama");
    kv_str(&s, "llama.rope.scaling.type", "linear");
    kv_f32(&s, "llama.rope.scaling.factor", 4.0f);
    m = load_ok(write_gguf(&s, "lin.gguf"));
    assert_int_equal(m->hp.rope_scaling, CEL_ROPE_SCALING_LINEAR);
    assert_true(m->hp.rope_factor == 4.0f);
    cel_model_free(m);
}

static void test_synthetic_key_errors(void **state)
{
    (void)state;
    spec s;
    spec_model(&s, "phi3");
    expect_fail(&s, CEL_ERR_UNSUPPORTED, "architecture 'phi3' is not supported");
    spec_model(&s, "llama");
    kv_del(&s, "general.architecture");
    expect_fail(&s, CEL_ERR_FORMAT, "general.architecture");
    spec_model(&s, "llama");
    kv_int(&s, "general.architecture", 1);
    expect_fail(&s, CEL_ERR_FORMAT, "key 'general.architecture' has type u32, expected string");
    spec_model(&s, "llama");
    kv_del(&s, "llama.embedding_length");
    expect_fail(&s, CEL_ERR_NOT_FOUND, "missing key 'llama.embedding_length'");
    spec_model(&s, "llama");
    kv_str(&s, "llama.block_count", "two");
    expect_fail(&s, CEL_ERR_FORMAT, "llama.block_count");
    spec_model(&s, "llama");
    kv_int(&s, "llama.block_count", 0);
    expect_fail(&s, CEL_ERR_FORMAT, "llama.block_count = 0 is out of range");
    spec_model(&s, "qwen2");
    kv_int(&s, "qwen2.attention.head_count_kv", 3);
    expect_fail(&s, CEL_ERR_FORMAT, "head_count_kv = 3 is out of range");
    spec_model(&s, "llama");
    kv_int(&s, "llama.attention.head_count", 3);
    kv_int(&s, "llama.attention.head_count_kv", 2);
    expect_fail(&s, CEL_ERR_FORMAT, "not a multiple of 3 heads");
    spec_model(&s, "llama");
    kv_int(&s, "llama.rope.dimension_count", 8);
    expect_fail(&s, CEL_ERR_UNSUPPORTED, "partial rotary");
    spec_model(&s, "llama");
    kv_str(&s, "llama.rope.scaling.type", "yarn");
    expect_fail(&s, CEL_ERR_UNSUPPORTED, "'yarn' is not supported");
    spec_model(&s, "llama");
    kv_del(&s, "llama.attention.layer_norm_rms_epsilon");
    expect_fail(&s, CEL_ERR_NOT_FOUND, "layer_norm_rms_epsilon");
    spec_model(&s, "llama");
    kv_int(&s, "llama.vocab_size", 41);
    expect_fail(&s, CEL_ERR_FORMAT, "vocabulary size 41 does not match tensor 'token_embd.weight'");
}

static void test_synthetic_tensor_errors(void **state)
{
    (void)state;
    spec s;
    spec_model(&s, "llama");
    ten_del(&s, "blk.1.attn_k.weight");
    expect_fail(&s, CEL_ERR_NOT_FOUND, "missing tensor 'blk.1.attn_k.weight'");
    spec_model(&s, "llama");
    ten_find(&s, "blk.1.ffn_down.weight")->ne0 = 32;
    ten_find(&s, "blk.1.ffn_down.weight")->ne1 = 64;
    expect_fail(&s, CEL_ERR_FORMAT, "tensor 'blk.1.ffn_down.weight' has shape [32, 64, 1], expected [64, 32]");
    spec_model(&s, "llama");
    ten_find(&s, "output_norm.weight")->ne0 = 31;
    expect_fail(&s, CEL_ERR_FORMAT, "'output_norm.weight' has shape [31, 1], expected [32]");
    spec_model(&s, "llama");
    ten_find(&s, "token_embd.weight")->ne0 = 16;
    expect_fail(&s, CEL_ERR_FORMAT, "'token_embd.weight' has shape [16, 40], expected [32, n_vocab]");
    spec_model(&s, "llama");
    ten_del(&s, "token_embd.weight");
    expect_fail(&s, CEL_ERR_NOT_FOUND, "missing tensor 'token_embd.weight'");
    spec_model(&s, "llama");
    ten_find(&s, "output.weight")->ne1 = 39;
    expect_fail(&s, CEL_ERR_FORMAT, "'output.weight'");
    spec_model(&s, "qwen2");
    ten_del(&s, "blk.0.attn_q.bias"); /* qwen2 requires its biases */
    expect_fail(&s, CEL_ERR_NOT_FOUND, "missing tensor 'blk.0.attn_q.bias'");
    spec_model(&s, "qwen3");
    ten_del(&s, "blk.1.attn_k_norm.weight");
    expect_fail(&s, CEL_ERR_NOT_FOUND, "'blk.1.attn_k_norm.weight'");
    spec_model(&s, "llama");
    ten_find(&s, "blk.0.attn_norm.weight")->t = CEL_DTYPE_Q8_0; /* 32 elements: one block */
    expect_fail(&s, CEL_ERR_UNSUPPORTED, "1-D tensor 'blk.0.attn_norm.weight' is quantized");
}

/* Llama 3.1's real RoPE scaling (factor 8, low 1, high 4, original 8192,
 * theta 500000, head_dim 128) stored as llama.cpp does: rope_freqs.weight. */
static void test_rope_freqs(void **state)
{
    (void)state;
    float f[64];
    for (int i = 0; i < 64; i++) {
        double inv = pow(500000.0, -2.0 * i / 128.0), wl = 2 * M_PI / inv;
        if (wl < 8192.0 / 4) f[i] = 1.0f;
        else if (wl > 8192.0) f[i] = 8.0f;
        else {
            double sm = (8192.0 / wl - 1.0) / (4.0 - 1.0);
            f[i] = (float)(1.0 / ((1 - sm) / 8.0 + sm));
        }
    }
    spec s;
    spec_model(&s, "llama");
    kv_int(&s, "llama.attention.head_count", 1);
    kv_int(&s, "llama.attention.head_count_kv", 1);
    kv_int(&s, "llama.attention.key_length", 128);
    for (int l = 0; l < 2; l++) {
        char k[64];
        const char *n[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight"};
        for (int j = 0; j < 3; j++) {
            snprintf(k, sizeof k, "blk.%d.%s", l, n[j]);
            ten_find(&s, k)->ne1 = 128;
        }
        snprintf(k, sizeof k, "blk.%d.attn_output.weight", l);
        ten_find(&s, k)->ne0 = 128;
    }
    sten *rf = ten(&s, "rope_freqs.weight", 64, 1);
    rf->vals = f;
    cel_model *m = NULL;
    cel_error err;
    if (cel_model_load(write_gguf(&s, "l31.gguf"), NULL, &m, &err) != CEL_OK) fail_msg("%s", err.msg);
    assert_int_equal(m->hp.rope_scaling, CEL_ROPE_SCALING_LLAMA3);
    assert_true(m->hp.rope_factor == 8.0f);
    assert_int_equal(m->hp.rope_orig_ctx, 8192);
    assert_true(fabsf(m->hp.rope_high_freq_factor - 4.0f) < 1e-3f);
    assert_true(m->hp.rope_low_freq_factor == 1.0f);
    cel_model_free(m);
    /* all ones: no scaling */
    float ones[64];
    for (int i = 0; i < 64; i++) ones[i] = 1.0f;
    rf = ten_find(&s, "rope_freqs.weight");
    rf->vals = ones;
    m = load_ok(write_gguf(&s, "l31b.gguf"));
    assert_int_equal(m->hp.rope_scaling, CEL_ROPE_SCALING_NONE);
    cel_model_free(m);
    /* factors that follow no llama3 curve, and values below 1 */
    float bad[64];
    for (int i = 0; i < 64; i++) bad[i] = (i % 2) ? 3.0f : 1.0f;
    rf->vals = bad;
    expect_fail(&s, CEL_ERR_UNSUPPORTED, "does not follow llama3 scaling");
    bad[3] = 0.5f;
    expect_fail(&s, CEL_ERR_UNSUPPORTED, "rope_freqs.weight[3] = 0.5");
    rf->ne0 = 32;
    expect_fail(&s, CEL_ERR_FORMAT, "must be F32 [64]");
}

static void test_bad_paths(void **state)
{
    (void)state;
    cel_model *m = NULL;
    cel_error err;
    assert_int_equal(cel_model_load("/nonexistent/model.gguf", NULL, &m, &err), CEL_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "/nonexistent/model.gguf"));
    assert_int_equal(cel_model_load("", NULL, &m, &err), CEL_ERR_INVALID);
    /* a truncated copy of a real model */
    char *raw;
    size_t len;
    assert_int_equal(cel_read_file(MODELS "/qwen2-q8_0.gguf", 0, &raw, &len, &err), CEL_OK);
    char path[256];
    snprintf(path, sizeof path, "%s/cut.gguf", tmpdir);
    for (size_t cut = 1; cut < len; cut = cut * 3 + 7) {
        FILE *f = fopen(path, "wb");
        assert_int_equal(fwrite(raw, 1, cut, f), cut);
        fclose(f);
        assert_int_not_equal(cel_model_load(path, NULL, &m, &err), CEL_OK);
        assert_non_null(strstr(err.msg, "cut.gguf"));
        assert_null(m);
    }
    free(raw);
    /* a folder without config.json */
    assert_int_equal(cel_model_load(tmpdir, NULL, &m, &err), CEL_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "config.json"));
}

/* ------------------------------------------------------- HF folder faults */

static void copy_file(const char *from, const char *to)
{
    char *raw;
    size_t len;
    cel_error err;
    assert_int_equal(cel_read_file(from, 0, &raw, &len, &err), CEL_OK);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(raw, 1, len, f), len);
    fclose(f);
    free(raw);
}

/* A fresh copy of tests/data/models/<src> in tmpdir/hf; returns its path. */
static const char *hf_copy(const char *src)
{
    static char dir[256];
    snprintf(dir, sizeof dir, "%s/hf", tmpdir);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(mkdir(dir, 0755), 0);
    const char *files[] = {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
                           "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char a[512], b[512];
        snprintf(a, sizeof a, MODELS "/%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        if (cel_path_exists(a)) copy_file(a, b);
    }
    return dir;
}

/* Edits dir/file (JSON): sets key to value (NULL deletes it). */
static void json_edit(const char *dir, const char *file, const char *key, json_t *value)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    json_t *j = json_load_file(p, 0, NULL);
    assert_non_null(j);
    if (value) json_object_set_new(j, key, value);
    else json_object_del(j, key);
    assert_int_equal(json_dump_file(j, p, 0), 0);
    json_decref(j);
}

static void hf_expect_fail(const char *dir, cel_status code, const char *needle)
{
    cel_model *m = NULL;
    cel_error err;
    cel_error_clear(&err);
    cel_status st = cel_model_load(dir, NULL, &m, &err);
    if (st != code || !strstr(err.msg, needle))
        fail_msg("expected %s with '%s', got %s: %s", cel_status_name(code), needle, cel_status_name(st), err.msg);
    assert_null(m);
}

/* A fresh copy of tests/data/models/<src> with one key of config.json set
 * (val, stolen) or removed (NULL) must fail to load with code and needle. */
static void config_edit_fails(const char *src, const char *key, json_t *val, cel_status code, const char *needle)
{
    const char *d = hf_copy(src);
    json_edit(d, "config.json", key, val);
    hf_expect_fail(d, code, needle);
}

static void test_hf_config_errors(void **state)
{
    (void)state;
    const char *d = hf_copy("qwen2-hf");
    cel_model *m = load_ok(d); /* the copy loads */
    cel_model_free(m);

    char p[512];
    snprintf(p, sizeof p, "%s/config.json", d);
    FILE *f = fopen(p, "w");
    fputs("{\"model_type\": \"qwen2\",\n \"hidden_size\": 64,,}", f);
    fclose(f);
    hf_expect_fail(d, CEL_ERR_FORMAT, "config.json: line 2");

    config_edit_fails("qwen2-hf", "hidden_size", NULL, CEL_ERR_NOT_FOUND, "missing key 'hidden_size'");
    config_edit_fails("qwen2-hf", "num_hidden_layers", json_string("2"),
                      CEL_ERR_FORMAT, "'num_hidden_layers' must be an integer");
    config_edit_fails("qwen2-hf", "model_type", json_string("gpt2"),
                      CEL_ERR_UNSUPPORTED, "model_type 'gpt2' is not supported");
    d = hf_copy("qwen2-hf");
    json_edit(d, "config.json", "model_type", NULL);
    json_edit(d, "config.json", "architectures", NULL);
    hf_expect_fail(d, CEL_ERR_FORMAT, "neither 'model_type' nor 'architectures'");
    d = hf_copy("qwen2-hf");
    json_edit(d, "config.json", "model_type", NULL); /* architectures[0] alone is enough */
    m = load_ok(d);
    assert_int_equal(m->hp.arch, CEL_ARCH_QWEN2);
    cel_model_free(m);
    config_edit_fails("qwen2-hf", "rope_scaling", json_pack("{s:s, s:f}", "rope_type", "yarn", "factor", 4.0),
                      CEL_ERR_UNSUPPORTED, "rope_scaling type 'yarn'");
    config_edit_fails("qwen2-hf", "rope_scaling", json_pack("{s:s, s:f}", "rope_type", "llama3", "factor", 8.0),
                      CEL_ERR_NOT_FOUND, "missing key 'low_freq_factor'");
    config_edit_fails("qwen2-hf", "hidden_act", json_string("gelu"), CEL_ERR_UNSUPPORTED, "hidden_act");
    config_edit_fails("qwen2-hf", "tie_word_embeddings", json_string("yes"),
                      CEL_ERR_FORMAT, "'tie_word_embeddings' must be true or false");
    config_edit_fails("llama-hf", "attention_bias", json_true(), CEL_ERR_UNSUPPORTED, "attention_bias");
    config_edit_fails("qwen2-hf", "vocab_size", json_integer(321),
                      CEL_ERR_FORMAT, "vocabulary size 321 does not match tensor 'model.embed_tokens.weight'");
    config_edit_fails("qwen2-hf", "hidden_size", json_integer(128), CEL_ERR_FORMAT, "'model.embed_tokens.weight'");
    config_edit_fails("qwen3-hf", "head_dim", json_integer(16),
                      CEL_ERR_FORMAT, "model.layers.0.self_attn.q_proj.weight"); /* the weights have 32 */
    config_edit_fails("qwen2-hf", "rms_norm_eps", json_real(-1), CEL_ERR_FORMAT, "epsilon");
}

static void test_hf_shard_errors(void **state)
{
    (void)state;
    char p[512];
    const char *d = hf_copy("llama-hf");
    /* a shard the index names is gone */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    remove(p);
    hf_expect_fail(d, CEL_ERR_IO, "model-00002-of-00002.safetensors");
    /* the index points outside the folder */
    d = hf_copy("llama-hf");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    json_t *j = json_load_file(p, 0, NULL);
    json_object_set_new(json_object_get(j, "weight_map"), "model.norm.weight", json_string("../evil.safetensors"));
    json_dump_file(j, p, 0);
    json_decref(j);
    hf_expect_fail(d, CEL_ERR_FORMAT, "weight_map['model.norm.weight'] is not a file name");
    /* the index lists a tensor its shard lacks */
    d = hf_copy("llama-hf");
    j = json_load_file(p, 0, NULL);
    json_object_set_new(json_object_get(j, "weight_map"), "model.extra.weight",
                        json_string("model-00001-of-00002.safetensors"));
    json_dump_file(j, p, 0);
    json_decref(j);
    hf_expect_fail(d, CEL_ERR_FORMAT, "tensor 'model.extra.weight' is not in model-00001-of-00002.safetensors");
    /* broken index JSON */
    d = hf_copy("llama-hf");
    FILE *f = fopen(p, "w");
    fputs("{\"weight_map\": 3}", f);
    fclose(f);
    hf_expect_fail(d, CEL_ERR_FORMAT, "no 'weight_map'");
    /* no index: every *.safetensors is read; the two shards together are the model */
    d = hf_copy("llama-hf");
    remove(p);
    cel_model *m = load_ok(d);
    cel_model_free(m);
    /* the same tensor in two shards */
    char q[512];
    snprintf(q, sizeof q, "%s/model-00003-of-00002.safetensors", d);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    copy_file(p, q);
    hf_expect_fail(d, CEL_ERR_FORMAT, "is also in");
    /* no weights at all */
    d = hf_copy("llama-hf");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    remove(p);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d);
    remove(p);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    remove(p);
    hf_expect_fail(d, CEL_ERR_NOT_FOUND, "no *.safetensors");
    /* a corrupt shard: the error names the file */
    d = hf_copy("qwen2-hf");
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    f = fopen(p, "r+b");
    fseek(f, 9, SEEK_SET);
    fputc('#', f);
    fclose(f);
    hf_expect_fail(d, CEL_ERR_FORMAT, "model.safetensors: bad JSON header");
    /* a tokenizer-less folder loads, without a tokenizer */
    d = hf_copy("qwen2-hf");
    snprintf(p, sizeof p, "%s/tokenizer.json", d);
    remove(p);
    m = load_ok(d);
    assert_null(m->tok);
    cel_model_free(m);
}

/* model.safetensors of a fresh copy of tests/data/models/<src>, read whole. */
typedef struct shard {
    char path[512];
    char *raw; /* the file (free it) */
    size_t len;
    uint64_t hl; /* header length (its first 8 bytes) */
} shard;

/* Copies <src> (hf_copy), reads its model.safetensors into *sh; returns the copy's folder. */
static const char *copy_read_shard(const char *src, shard *sh)
{
    const char *d = hf_copy(src);
    snprintf(sh->path, sizeof sh->path, "%s/model.safetensors", d);
    cel_error err;
    assert_int_equal(cel_read_file(sh->path, 0, &sh->raw, &sh->len, &err), CEL_OK);
    assert_true(sh->len >= 8);
    memcpy(&sh->hl, sh->raw, 8);
    return d;
}

/* Rewrites sh's file with header text hdr (n bytes) followed by pad spaces
 * (the header length counts them), then sh's data section unchanged. */
static void write_shard(const shard *sh, const char *hdr, size_t n, size_t pad)
{
    FILE *f = fopen(sh->path, "wb");
    assert_non_null(f);
    uint64_t nhl = n + pad;
    fwrite(&nhl, 8, 1, f);
    fwrite(hdr, 1, n, f);
    for (size_t i = 0; i < pad; i++) fputc(' ', f);
    fwrite(sh->raw + 8 + sh->hl, 1, sh->len - 8 - sh->hl, f);
    fclose(f);
}

/* A safetensors shard holding an I64 tensor the model needs. */
static void test_hf_unsupported_dtype(void **state)
{
    (void)state;
    shard sh;
    const char *d = copy_read_shard("qwen2-hf", &sh);
    /* "model.norm.weight" is BF16 [64] = 128 bytes; as I64 it is [16] */
    json_t *h = json_loadb(sh.raw + 8, (size_t)sh.hl, 0, NULL);
    assert_non_null(h);
    json_t *e = json_object_get(h, "model.norm.weight");
    json_object_set_new(e, "dtype", json_string("I64"));
    json_object_set_new(e, "shape", json_pack("[i]", 16));
    char *nh = json_dumps(h, JSON_COMPACT);
    size_t nl = strlen(nh);
    write_shard(&sh, nh, nl, (8 - nl % 8) % 8);
    free(nh);
    json_decref(h);
    free(sh.raw);
    hf_expect_fail(d, CEL_ERR_UNSUPPORTED, "tensor 'model.norm.weight' has dtype I64");
}

/* A shard whose header length is odd: BF16 data lands on odd addresses, so
 * the loader copies those tensors to aligned memory (owned) with the same bytes. */
static void test_hf_misaligned(void **state)
{
    (void)state;
    shard sh;
    const char *d = copy_read_shard("qwen2-hf", &sh);
    write_shard(&sh, sh.raw + 8, (size_t)sh.hl, 1); /* one more space of padding */
    cel_model *m = load_ok(d), *ref = load_ok(MODELS "/qwen2-hf");
    size_t owned = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        cel_tensor *t = &m->tensors[i], *r = cel_model_find_tensor(ref, t->name);
        assert_non_null(r);
        assert_int_equal((uintptr_t)t->data % 2, 0);
        assert_int_equal(t->nbytes, r->nbytes);
        assert_int_equal(memcmp(t->data, r->data, t->nbytes), 0);
        owned += t->owned;
        assert_false(r->owned);
    }
    assert_true(owned > 0);
    cel_model_free(ref);
    cel_model_free(m);
    free(sh.raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_committed_hparams),     cmocka_unit_test(test_params_and_find),
        cmocka_unit_test(test_describe),              cmocka_unit_test(test_make_writable),
        cmocka_unit_test(test_tokenizer_override),    cmocka_unit_test(test_synthetic_ok),
        cmocka_unit_test(test_synthetic_key_errors),  cmocka_unit_test(test_synthetic_tensor_errors),
        cmocka_unit_test(test_rope_freqs),            cmocka_unit_test(test_bad_paths),
        cmocka_unit_test(test_hf_config_errors),      cmocka_unit_test(test_hf_shard_errors),
        cmocka_unit_test(test_hf_unsupported_dtype), cmocka_unit_test(test_hf_misaligned),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
