/* Unit tests for the CPU backend (engine/backend.h, engine/cpu/backend.c) on
 * tiny random models built in memory: logits against a reference forward
 * pass written here from the reference ops (float K/V, float activations),
 * for each architecture variant and weight dtype; a mixed batch gives the
 * same logits as each sequence alone; a prompt prefilled in chunks gives the
 * same logits as at once; thread count does not change results; copy_block;
 * weights_changed; and precise errors for malformed batches and models. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/ops.h"

/* ------------------------------------------------------------ tiny models */

typedef struct tmodel {
    cel_model m;
    cel_tensor *t; /* all tensors */
    int nt;
    cel_layer *layers;
} tmodel;

typedef struct mcfg {
    cel_arch arch;
    cel_dtype wt;   /* matrices */
    cel_dtype nt;   /* norms and biases */
    int E, H, Hkv, D, F, V, L;
    bool tied;
    uint64_t seed;
} mcfg;

static cel_tensor *new_tensor(tmodel *tm, const char *name, cel_dtype dt, int64_t ne0, int64_t ne1, float center,
                              float spread, cel_rng *r)
{
    cel_tensor *t = &tm->t[tm->nt++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->n_dims = ne1 > 1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = t->ne[3] = 1;
    size_t rb = cel_dtype_row_bytes(dt, ne0);
    assert_true(rb > 0);
    t->nbytes = rb * (size_t)ne1;
    t->data = malloc(t->nbytes);
    t->owned = true;
    assert_non_null(t->data);
    float *row = malloc((size_t)ne0 * sizeof *row);
    assert_non_null(row);
    for (int64_t o = 0; o < ne1; o++) {
        for (int64_t i = 0; i < ne0; i++) row[i] = center + (float)((cel_rng_uniform(r) * 2 - 1) * spread);
        cel_quant_row(dt, row, (uint8_t *)t->data + (size_t)o * rb, ne0);
    }
    free(row);
    return t;
}

static tmodel *make_model(const mcfg *c)
{
    tmodel *tm = calloc(1, sizeof *tm);
    assert_non_null(tm);
    tm->t = calloc((size_t)(4 + 16 * c->L), sizeof *tm->t);
    tm->layers = calloc((size_t)c->L, sizeof *tm->layers);
    cel_rng r;
    cel_rng_seed(&r, c->seed);
    cel_hparams *hp = &tm->m.hp;
    hp->arch = c->arch;
    hp->n_vocab = c->V;
    hp->n_embd = c->E;
    hp->n_layer = c->L;
    hp->n_head = c->H;
    hp->n_head_kv = c->Hkv;
    hp->head_dim = c->D;
    hp->n_ff = c->F;
    hp->n_ctx_train = 4096;
    hp->rms_eps = 1e-6f;
    hp->rope_theta = 10000.0f;
    hp->rope_style = c->arch == CEL_ARCH_LLAMA ? CEL_ROPE_NORM : CEL_ROPE_NEOX;
    hp->tied_embeddings = c->tied;
    hp->has_qkv_bias = c->arch == CEL_ARCH_QWEN2;
    hp->has_qk_norm = c->arch == CEL_ARCH_QWEN3;
    int Qd = c->H * c->D, KVd = c->Hkv * c->D;
    float se = 1.7f / sqrtf((float)c->E), sq = 1.7f / sqrtf((float)Qd), sf = 1.7f / sqrtf((float)c->F);
    tm->m.tok_embd = new_tensor(tm, "token_embd.weight", c->wt, c->E, c->V, 0.0f, 1.0f, &r);
    tm->m.output = c->tied ? tm->m.tok_embd : new_tensor(tm, "output.weight", c->wt, c->E, c->V, 0.0f, se, &r);
    tm->m.output_norm = new_tensor(tm, "output_norm.weight", c->nt, c->E, 1, 1.0f, 0.2f, &r);
    char nm[96];
    for (int l = 0; l < c->L; l++) {
        cel_layer *ly = &tm->layers[l];
#define T(field, suffix, dt, n0, n1, ctr, spr)                                                                      \
    snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                                                                \
    ly->field = new_tensor(tm, nm, dt, n0, n1, ctr, spr, &r)
        T(attn_norm, "attn_norm.weight", c->nt, c->E, 1, 1.0f, 0.2f);
        T(wq, "attn_q.weight", c->wt, c->E, Qd, 0.0f, se);
        T(wk, "attn_k.weight", c->wt, c->E, KVd, 0.0f, se);
        T(wv, "attn_v.weight", c->wt, c->E, KVd, 0.0f, se);
        T(wo, "attn_output.weight", c->wt, Qd, c->E, 0.0f, sq);
        T(ffn_norm, "ffn_norm.weight", c->nt, c->E, 1, 1.0f, 0.2f);
        T(w_gate, "ffn_gate.weight", c->wt, c->E, c->F, 0.0f, se);
        T(w_up, "ffn_up.weight", c->wt, c->E, c->F, 0.0f, se);
        T(w_down, "ffn_down.weight", c->wt, c->F, c->E, 0.0f, sf);
        if (hp->has_qkv_bias) {
            T(bq, "attn_q.bias", c->nt, Qd, 1, 0.0f, 0.5f);
            T(bk, "attn_k.bias", c->nt, KVd, 1, 0.0f, 0.5f);
            T(bv, "attn_v.bias", c->nt, KVd, 1, 0.0f, 0.5f);
        }
        if (hp->has_qk_norm) {
            T(q_norm, "attn_q_norm.weight", c->nt, c->D, 1, 1.0f, 0.3f);
            T(k_norm, "attn_k_norm.weight", c->nt, c->D, 1, 1.0f, 0.3f);
        }
#undef T
    }
    tm->m.layers = tm->layers;
    tm->m.tensors = tm->t;
    tm->m.n_tensors = (size_t)tm->nt;
    return tm;
}

static void free_model(tmodel *tm)
{
    for (int i = 0; i < tm->nt; i++) free(tm->t[i].data);
    free(tm->t);
    free(tm->layers);
    free(tm);
}

/* ----------------------------------------------- reference forward pass */

typedef struct {
    const float *k, *v;
    int32_t row;
} kvr;

static const float *kv_at(void *ctx, int32_t pos, int is_v)
{
    kvr *c = ctx;
    return (is_v ? c->v : c->k) + (size_t)pos * c->row;
}

static void vec(const cel_tensor *t, float *out, int64_t n) { cel_dequant_row(t->dtype, t->data, out, n); }

/* Logits [n][V] of every position of one sequence, token by token, with
 * float K/V and the reference matmul (float activations). */
static void ref_forward(const cel_model *m, const int32_t *tok, int n, float *logits)
{
    const cel_hparams *hp = &m->hp;
    int E = hp->n_embd, D = hp->head_dim, Qd = hp->n_head * D, KVd = hp->n_head_kv * D, F = hp->n_ff, L = hp->n_layer;
    float *K = malloc((size_t)L * n * KVd * 4), *Vv = malloc((size_t)L * n * KVd * 4);
    float *x = malloc(E * 4), *xn = malloc(E * 4), *q = malloc(Qd * 4), *att = malloc(Qd * 4), *o = malloc(E * 4);
    float *g = malloc(F * 4), *u = malloc(F * 4), *w = malloc((size_t)(Qd > E ? Qd : E) * 4), *w2 = malloc(D * 4);
    float inv[512];
    cel_op_rope_freqs(hp, inv);
    for (int t = 0; t < n; t++) {
        cel_op_embed(x, m->tok_embd, tok[t]);
        for (int l = 0; l < L; l++) {
            const cel_layer *ly = &m->layers[l];
            float *k = K + ((size_t)l * n + t) * KVd, *v = Vv + ((size_t)l * n + t) * KVd;
            vec(ly->attn_norm, w, E);
            cel_op_rmsnorm(xn, x, w, E, hp->rms_eps);
            cel_op_matmul(q, ly->wq, xn, 1, NULL);
            cel_op_matmul(k, ly->wk, xn, 1, NULL);
            cel_op_matmul(v, ly->wv, xn, 1, NULL);
            if (hp->has_qkv_bias) {
                vec(ly->bq, w, Qd);
                for (int i = 0; i < Qd; i++) q[i] += w[i];
                vec(ly->bk, w, KVd);
                for (int i = 0; i < KVd; i++) k[i] += w[i];
                vec(ly->bv, w, KVd);
                for (int i = 0; i < KVd; i++) v[i] += w[i];
            }
            if (hp->has_qk_norm) {
                vec(ly->q_norm, w2, D);
                for (int h = 0; h < hp->n_head; h++) cel_op_rmsnorm(q + h * D, q + h * D, w2, D, hp->rms_eps);
                vec(ly->k_norm, w2, D);
                for (int h = 0; h < hp->n_head_kv; h++) cel_op_rmsnorm(k + h * D, k + h * D, w2, D, hp->rms_eps);
            }
            cel_op_rope(q, hp->n_head, D, t, inv, hp->rope_style);
            cel_op_rope(k, hp->n_head_kv, D, t, inv, hp->rope_style);
            kvr c = {K + (size_t)l * n * KVd, Vv + (size_t)l * n * KVd, KVd};
            cel_op_attention(att, q, 1, t, hp->n_head, hp->n_head_kv, D, kv_at, &c);
            cel_op_matmul(o, ly->wo, att, 1, NULL);
            for (int i = 0; i < E; i++) x[i] += o[i];
            vec(ly->ffn_norm, w, E);
            cel_op_rmsnorm(xn, x, w, E, hp->rms_eps);
            cel_op_matmul(g, ly->w_gate, xn, 1, NULL);
            cel_op_matmul(u, ly->w_up, xn, 1, NULL);
            cel_op_swiglu(g, g, u, F);
            cel_op_matmul(o, ly->w_down, g, 1, NULL);
            for (int i = 0; i < E; i++) x[i] += o[i];
        }
        vec(m->output_norm, w, E);
        cel_op_rmsnorm(xn, x, w, E, hp->rms_eps);
        cel_op_matmul(logits + (size_t)t * hp->n_vocab, m->output, xn, 1, NULL);
    }
    free(K);
    free(Vv);
    free(x);
    free(xn);
    free(q);
    free(att);
    free(o);
    free(g);
    free(u);
    free(w);
    free(w2);
}

/* ------------------------------------------------------- backend helpers */

static cel_backend *make_backend_bs(const cel_model *m, int threads, int32_t max_tokens, int32_t bs, int32_t n_blocks)
{
    cel_backend_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = threads;
    p.block_size = bs;
    p.kv_bytes = cel_backend_kv_block_bytes(&m->hp, bs, CEL_BACKEND_CPU) * (size_t)n_blocks;
    p.max_batch_tokens = max_tokens;
    cel_backend *be = NULL;
    cel_error err;
    cel_status st = cel_backend_cpu_create(m, &p, &be, &err);
    if (st != CEL_OK) fail_msg("create: %s", err.msg);
    assert_int_equal(be->n_blocks, n_blocks);
    assert_int_equal(be->block_size, bs);
    return be;
}

static cel_backend *make_backend(const cel_model *m, int threads, int32_t max_tokens)
{
    return make_backend_bs(m, threads, max_tokens, 16, 64);
}

/* One sequence's part of a test batch: its tokens and blocks. */
typedef struct tseq {
    const int32_t *tok;
    int32_t n_past, n_new;
    const int32_t *table;
    int32_t n_blocks;
} tseq;

/* Runs one forward over the given sequences (rows in order) and returns the
 * logits of every row in out [rows][V]. */
static cel_status run(cel_backend *be, const tseq *s, int ns, float *out, cel_error *err)
{
    int32_t tokens[512], rows[512];
    cel_batch_seq bs[16];
    int32_t n = 0;
    for (int i = 0; i < ns; i++) {
        bs[i] = (cel_batch_seq){s[i].table, s[i].n_blocks, s[i].n_past, s[i].n_new, n};
        for (int j = 0; j < s[i].n_new; j++) tokens[n++] = s[i].tok[j];
    }
    for (int i = 0; i < n; i++) rows[i] = i;
    cel_batch b = {.n_tokens = n, .tokens = tokens, .n_seqs = ns, .seqs = bs,
                   .n_out = n, .out_rows = rows, .logits = out};
    return be->v->forward(be, &b, err);
}

static void tokens_for(int32_t *tok, int n, int V, uint64_t seed)
{
    cel_rng r;
    cel_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)(cel_rng_next(&r) % (uint64_t)V);
}

static const int32_t TABLE_A[8] = {3, 9, 4, 20, 21, 22, 23, 24}; /* scattered blocks on purpose */
static const int32_t TABLE_B[8] = {30, 31, 32, 33, 34, 35, 36, 37};
static const int32_t TABLE_C[8] = {40, 41, 42, 43, 44, 45, 46, 47};

/* ------------------------------------------------------------------ tests */

/* Max |a - b| over n, relative to the spread (max |b|) of the reference. */
static double max_rel_diff(const float *a, const float *b, int64_t n)
{
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / (s > 0 ? s : 1);
}

static void check_against_reference(const mcfg *c, double tol)
{
    tmodel *tm = make_model(c);
    cel_backend *be = make_backend(&tm->m, 2, 64);
    enum { NP = 37, ND = 3 };
    int32_t tok[NP + ND];
    tokens_for(tok, NP + ND, c->V, c->seed + 1);
    float *ref = malloc((size_t)(NP + ND) * c->V * 4), *got = malloc((size_t)(NP + ND) * c->V * 4);
    ref_forward(&tm->m, tok, NP + ND, ref);
    cel_error err;
    tseq s = {tok, 0, NP, TABLE_A, 8};
    if (run(be, &s, 1, got, &err) != CEL_OK) fail_msg("forward: %s", err.msg);
    for (int t = 0; t < ND; t++) { /* then decode one token at a time */
        tseq d = {tok + NP + t, NP + t, 1, TABLE_A, 8};
        if (run(be, &d, 1, got + (size_t)(NP + t) * c->V, &err) != CEL_OK) fail_msg("forward: %s", err.msg);
    }
    double worst = 0;
    for (int t = 0; t < NP + ND; t++) worst = fmax(worst, max_rel_diff(got + (size_t)t * c->V, ref + (size_t)t * c->V, c->V));
    print_message("%s %s: max logit difference to the reference %.2e of the logit range (tolerance %.0e)\n",
                  cel_arch_name(c->arch), cel_dtype_name(c->wt), worst, tol);
    assert_true(worst < tol);
    assert_true(worst > 0 || c->wt == CEL_DTYPE_F32); /* the comparison is not vacuous */
    free(ref);
    free(got);
    cel_backend_free(be);
    free_model(tm);
}

static void test_reference_llama_f32(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_LLAMA, CEL_DTYPE_F32, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 101, 2, false, 1};
    check_against_reference(&c, 2e-3); /* F16 K/V */
}

static void test_reference_qwen2_q8(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_QWEN2, CEL_DTYPE_Q8_0, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 101, 2, true, 2};
    check_against_reference(&c, 4e-2); /* + int8 activations */
}

static void test_reference_qwen3_f16(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_QWEN3, CEL_DTYPE_F16, CEL_DTYPE_BF16, 64, 6, 2, 32, 96, 77, 2, false, 3};
    check_against_reference(&c, 2e-3);
}

static void test_reference_kquants(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_LLAMA, CEL_DTYPE_Q4_K, CEL_DTYPE_F16, 256, 4, 4, 64, 512, 50, 1, false, 4};
    check_against_reference(&c, 4e-2);
    mcfg c6 = {CEL_ARCH_MISTRAL, CEL_DTYPE_Q6_K, CEL_DTYPE_F32, 256, 8, 2, 32, 256, 50, 1, false, 5};
    check_against_reference(&c6, 4e-2);
}

static void test_reference_q4_0_bf16(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_QWEN2, CEL_DTYPE_Q4_0, CEL_DTYPE_F32, 96, 3, 1, 32, 64, 70, 2, false, 6};
    check_against_reference(&c, 4e-2);
    mcfg cb = {CEL_ARCH_LLAMA, CEL_DTYPE_BF16, CEL_DTYPE_BF16, 64, 4, 4, 16, 80, 70, 2, true, 7};
    check_against_reference(&cb, 2e-3);
}

/* Mixed batch (a decode, a prefill chunk, a whole short prompt) == each alone. */
static void test_batch_equals_alone(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_QWEN2, CEL_DTYPE_Q8_0, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 101, 2, false, 8};
    tmodel *tm = make_model(&c);
    cel_backend *solo = make_backend(&tm->m, 2, 64), *mix = make_backend(&tm->m, 2, 64);
    int32_t ta[40], tb[40], tc[40];
    tokens_for(ta, 40, c.V, 100);
    tokens_for(tb, 40, c.V, 101);
    tokens_for(tc, 40, c.V, 102);
    cel_error err;
    const int V = c.V;
    float *a = malloc(64 * V * 4), *b = malloc(64 * V * 4);
    /* history: A has 20 tokens cached, B has 9 (both backends) */
    tseq ha[1] = {{ta, 0, 20, TABLE_A, 8}}, hb[1] = {{tb, 0, 9, TABLE_B, 8}};
    assert_int_equal(run(solo, ha, 1, a, &err), CEL_OK);
    assert_int_equal(run(solo, hb, 1, a, &err), CEL_OK);
    tseq hab[2] = {ha[0], hb[0]};
    assert_int_equal(run(mix, hab, 2, b, &err), CEL_OK);
    /* step: A decodes token 20, B prefills 11 more, C prefills 5 */
    tseq sa = {ta + 20, 20, 1, TABLE_A, 8}, sb = {tb + 9, 9, 11, TABLE_B, 8}, sc = {tc, 0, 5, TABLE_C, 8};
    assert_int_equal(run(solo, &sa, 1, a, &err), CEL_OK);
    assert_int_equal(run(solo, &sb, 1, a + 1 * V, &err), CEL_OK);
    assert_int_equal(run(solo, &sc, 1, a + 12 * V, &err), CEL_OK);
    tseq step[3] = {sa, sb, sc};
    assert_int_equal(run(mix, step, 3, b, &err), CEL_OK);
    assert_memory_equal(a, b, (size_t)17 * V * 4);
    /* and in another order (C, A, B) */
    cel_backend_free(mix);
    mix = make_backend(&tm->m, 2, 64);
    assert_int_equal(run(mix, hab, 2, b, &err), CEL_OK);
    tseq step2[3] = {sc, sa, sb};
    assert_int_equal(run(mix, step2, 3, b, &err), CEL_OK);
    assert_memory_equal(a + 12 * V, b, (size_t)5 * V * 4);
    assert_memory_equal(a, b + 5 * V, (size_t)12 * V * 4);
    free(a);
    free(b);
    cel_backend_free(solo);
    cel_backend_free(mix);
    free_model(tm);
}

/* A prompt prefilled in uneven chunks (crossing block boundaries) gives the
 * same logits as the whole prompt at once, and the thread count does not
 * matter. */
static void test_chunked_prefill(void **state)
{
    (void)state;
    const cel_dtype dts[3] = {CEL_DTYPE_F16, CEL_DTYPE_Q8_0, CEL_DTYPE_Q4_K};
    for (int k = 0; k < 3; k++) {
        mcfg c = {CEL_ARCH_LLAMA, dts[k], CEL_DTYPE_F32, 256, 8, 2, 32, 256, 90, 2, false, 9 + (uint64_t)k};
        tmodel *tm = make_model(&c);
        cel_backend *one = make_backend(&tm->m, 2, 64), *chunks = make_backend(&tm->m, 2, 64),
                    *single = make_backend(&tm->m, 1, 64);
        enum { NP = 53 };
        int32_t tok[NP];
        tokens_for(tok, NP, c.V, 200);
        float *a = malloc((size_t)NP * c.V * 4), *b = malloc((size_t)NP * c.V * 4), *s = malloc((size_t)NP * c.V * 4);
        cel_error err;
        tseq all = {tok, 0, NP, TABLE_A, 8};
        assert_int_equal(run(one, &all, 1, a, &err), CEL_OK);
        assert_int_equal(run(single, &all, 1, s, &err), CEL_OK);
        const int cuts[] = {0, 7, 23, 40, 41, NP};
        for (int i = 0; i + 1 < (int)(sizeof cuts / sizeof cuts[0]); i++) {
            tseq ch = {tok + cuts[i], cuts[i], cuts[i + 1] - cuts[i], TABLE_A, 8};
            assert_int_equal(run(chunks, &ch, 1, b + (size_t)cuts[i] * c.V, &err), CEL_OK);
        }
        assert_memory_equal(a, b, (size_t)NP * c.V * 4);
        assert_memory_equal(a, s, (size_t)NP * c.V * 4);
        free(a);
        free(b);
        free(s);
        cel_backend_free(one);
        cel_backend_free(chunks);
        cel_backend_free(single);
        free_model(tm);
    }
}

/* Block sizes other than 16 (1, 12: not a multiple of the 8-lane key
 * vectors, 64: larger than a chunk of query rows) give the reference logits,
 * and a prompt split across chunks still matches the whole prompt. */
static void test_block_sizes(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_QWEN3, CEL_DTYPE_F32, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 61, 2, false, 17};
    tmodel *tm = make_model(&c);
    enum { NP = 41 };
    int32_t tok[NP];
    tokens_for(tok, NP, c.V, 600);
    float *ref = malloc((size_t)NP * c.V * 4), *a = malloc((size_t)NP * c.V * 4), *b = malloc((size_t)NP * c.V * 4);
    ref_forward(&tm->m, tok, NP, ref);
    const int32_t sizes[3] = {1, 12, 64};
    int32_t table[64];
    for (int si = 0; si < 3; si++) {
        int32_t bs = sizes[si], need = (NP + bs - 1) / bs;
        for (int i = 0; i < need; i++) table[i] = need - 1 - i; /* reversed order on purpose */
        cel_backend *one = make_backend_bs(&tm->m, 2, 64, bs, need), *two = make_backend_bs(&tm->m, 2, 64, bs, need);
        cel_error err;
        tseq all = {tok, 0, NP, table, need};
        if (run(one, &all, 1, a, &err) != CEL_OK) fail_msg("forward: %s", err.msg);
        tseq p1 = {tok, 0, 13, table, need}, p2 = {tok + 13, 13, NP - 13, table, need};
        assert_int_equal(run(two, &p1, 1, b, &err), CEL_OK);
        assert_int_equal(run(two, &p2, 1, b + 13 * c.V, &err), CEL_OK);
        assert_memory_equal(a, b, (size_t)NP * c.V * 4);
        double d = max_rel_diff(a, ref, (int64_t)NP * c.V);
        if (d > 2e-3) fail_msg("block size %d: logits differ from the reference by %g", bs, d);
        cel_backend_free(one);
        cel_backend_free(two);
    }
    free(ref);
    free(a);
    free(b);
    free_model(tm);
}

/* out_rows may pick any rows in any order, repeated; n_out = 0 computes K/V only. */
static void test_out_rows(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_QWEN3, CEL_DTYPE_Q8_0, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 60, 2, false, 12};
    tmodel *tm = make_model(&c);
    cel_backend *x = make_backend(&tm->m, 2, 64), *y = make_backend(&tm->m, 2, 64);
    int32_t tok[12];
    tokens_for(tok, 12, c.V, 300);
    float *all = malloc(12 * c.V * 4), *some = malloc(3 * c.V * 4), *next1 = malloc(c.V * 4), *next2 = malloc(c.V * 4);
    cel_error err;
    tseq s = {tok, 0, 11, TABLE_A, 8};
    assert_int_equal(run(x, &s, 1, all, &err), CEL_OK);
    cel_batch_seq bs = {TABLE_A, 8, 0, 11, 0};
    int32_t rows[3] = {10, 0, 10};
    cel_batch b = {.n_tokens = 11, .tokens = tok, .n_seqs = 1, .seqs = &bs,
                   .n_out = 3, .out_rows = rows, .logits = some};
    assert_int_equal(y->v->forward(y, &b, &err), CEL_OK);
    assert_memory_equal(some, all + 10 * c.V, c.V * 4);
    assert_memory_equal(some + c.V, all, c.V * 4);
    assert_memory_equal(some + 2 * c.V, all + 10 * c.V, c.V * 4);
    /* n_out = 0 still fills the cache: the next token's logits agree */
    cel_backend *z = make_backend(&tm->m, 2, 64);
    cel_batch b0 = {.n_tokens = 11, .tokens = tok, .n_seqs = 1, .seqs = &bs,
                   .n_out = 0, .out_rows = NULL, .logits = NULL};
    assert_int_equal(z->v->forward(z, &b0, &err), CEL_OK);
    tseq d = {tok + 11, 11, 1, TABLE_A, 8};
    assert_int_equal(run(z, &d, 1, next1, &err), CEL_OK);
    assert_int_equal(run(x, &d, 1, next2, &err), CEL_OK);
    assert_memory_equal(next1, next2, c.V * 4);
    free(all);
    free(some);
    free(next1);
    free(next2);
    cel_backend_free(x);
    cel_backend_free(y);
    cel_backend_free(z);
    free_model(tm);
}

/* copy_block: a sequence forked mid-block continues identically on the copy;
 * without the copy it does not. */
static void test_copy_block(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_LLAMA, CEL_DTYPE_F32, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 60, 2, false, 13};
    tmodel *tm = make_model(&c);
    cel_backend *be = make_backend(&tm->m, 2, 64);
    int32_t tok[24];
    tokens_for(tok, 24, c.V, 400);
    float *la = malloc(24 * c.V * 4), *lb = malloc(c.V * 4), *lz = malloc(c.V * 4);
    cel_error err;
    const int32_t ta[2] = {5, 6}, tb[2] = {5, 12}, tz[2] = {5, 13};
    tseq s = {tok, 0, 21, ta, 2}; /* block 5 full, block 6 holds 5 tokens */
    assert_int_equal(run(be, &s, 1, la, &err), CEL_OK);
    assert_int_equal(be->v->copy_block(be, 6, 12, 5, &err), CEL_OK);
    tseq fa = {tok + 21, 21, 1, ta, 2}, fb = {tok + 21, 21, 1, tb, 2}, fz = {tok + 21, 21, 1, tz, 2};
    assert_int_equal(run(be, &fa, 1, la, &err), CEL_OK);
    assert_int_equal(run(be, &fb, 1, lb, &err), CEL_OK);
    assert_memory_equal(la, lb, c.V * 4);
    assert_int_equal(run(be, &fz, 1, lz, &err), CEL_OK); /* block 13 was never written */
    assert_true(memcmp(la, lz, c.V * 4) != 0);
    /* bad arguments */
    assert_int_equal(be->v->copy_block(be, 6, 64, 5, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "64"));
    assert_int_equal(be->v->copy_block(be, -1, 3, 5, &err), CEL_ERR_INVALID);
    assert_int_equal(be->v->copy_block(be, 6, 7, 17, &err), CEL_ERR_INVALID);
    free(la);
    free(lb);
    free(lz);
    cel_backend_free(be);
    free_model(tm);
}

/* A trainer rewrites weights in place: after weights_changed the logits are
 * those of the new weights (norms are cached as float copies, so this needs
 * the refresh). */
static void test_weights_changed(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_QWEN2, CEL_DTYPE_F32, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 60, 2, false, 14};
    tmodel *tm = make_model(&c);
    cel_backend *be = make_backend(&tm->m, 2, 64);
    int32_t tok[9];
    tokens_for(tok, 9, c.V, 500);
    float *before = malloc(9 * c.V * 4), *after = malloc(9 * c.V * 4), *ref = malloc(9 * c.V * 4);
    cel_error err;
    tseq s = {tok, 0, 9, TABLE_A, 8};
    assert_int_equal(run(be, &s, 1, before, &err), CEL_OK);
    float *nw = tm->m.layers[1].ffn_norm->data, *bias = tm->m.layers[0].bq->data;
    for (int i = 0; i < c.E; i++) nw[i] *= (i % 2) ? 1.5f : 0.25f;
    for (int i = 0; i < 4 * c.D; i++) bias[i] += 1.0f;
    assert_int_equal(be->v->weights_changed(be, &err), CEL_OK);
    assert_int_equal(run(be, &s, 1, after, &err), CEL_OK);
    ref_forward(&tm->m, tok, 9, ref);
    assert_true(max_rel_diff(after, ref, 9 * c.V) < 2e-3);
    assert_true(max_rel_diff(before, ref, 9 * c.V) > 1e-2);
    free(before);
    free(after);
    free(ref);
    cel_backend_free(be);
    free_model(tm);
}

static void expect_err(cel_backend *be, const cel_batch *b, cel_status want, const char *needle)
{
    cel_error err;
    memset(&err, 0, sizeof err);
    cel_status st = be->v->forward(be, b, &err);
    if (st != want) fail_msg("expected %s, got %s (%s)", cel_status_name(want), cel_status_name(st), err.msg);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_bad_batches(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_LLAMA, CEL_DTYPE_F32, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 60, 1, false, 15};
    tmodel *tm = make_model(&c);
    cel_backend *be = make_backend(&tm->m, 2, 16);
    int32_t tok[20] = {1, 2, 3, 4, 5};
    float logits[2 * 60];
    int32_t rows[2] = {0, 1};
    const int32_t table[2] = {0, 1}, bad_table[2] = {0, 64};
    cel_batch_seq s = {table, 2, 0, 5, 0};
    cel_batch b = {.n_tokens = 5, .tokens = tok, .n_seqs = 1, .seqs = &s,
                   .n_out = 2, .out_rows = rows, .logits = logits};
    cel_error err;
    assert_int_equal(be->v->forward(be, &b, &err), CEL_OK);

    tok[3] = 60;
    expect_err(be, &b, CEL_ERR_INVALID, "token 60");
    tok[3] = -1;
    expect_err(be, &b, CEL_ERR_INVALID, "token -1");
    tok[3] = 4;
    cel_batch big = b;
    big.n_tokens = 17;
    expect_err(be, &big, CEL_ERR_LIMIT, "max_batch_tokens is 16");
    cel_batch_seq s2 = s;
    s2.n_past = 30; /* 35 positions need 3 blocks */
    cel_batch b2 = b;
    b2.seqs = &s2;
    expect_err(be, &b2, CEL_ERR_INVALID, "need 3 blocks");
    s2 = s;
    s2.n_past = 16;
    s2.block_table = bad_table;
    expect_err(be, &b2, CEL_ERR_INVALID, "block_table[1] = 64");
    s2 = s;
    s2.n_new = 4; /* row 4 belongs to nobody */
    expect_err(be, &b2, CEL_ERR_INVALID, "row 4 belongs to no sequence");
    s2 = s;
    s2.first = 2; /* rows 2..6 of a 5-row batch */
    expect_err(be, &b2, CEL_ERR_INVALID, "outside the batch");
    cel_batch_seq two[2] = {s, s};
    two[1].n_new = 1;
    cel_batch b3 = b;
    b3.n_seqs = 2;
    b3.seqs = two;
    expect_err(be, &b3, CEL_ERR_INVALID, "row 0 belongs to seqs 0 and 1");
    rows[1] = 5;
    expect_err(be, &b, CEL_ERR_INVALID, "out_rows[1] = 5");
    rows[1] = 1;
    cel_batch b4 = b;
    b4.logits = NULL;
    expect_err(be, &b4, CEL_ERR_INVALID, "missing");
    cel_batch none = {.n_tokens = 0, .tokens = tok, .n_seqs = 0, .seqs = NULL,
                   .n_out = 0, .out_rows = NULL, .logits = NULL};
    assert_int_equal(be->v->forward(be, &none, &err), CEL_OK);
    cel_backend_free(be);
    free_model(tm);
}

static void expect_create_err(const cel_model *m, const cel_backend_params *p, cel_status want, const char *needle)
{
    cel_backend *be = (cel_backend *)(uintptr_t)1;
    cel_error err;
    memset(&err, 0, sizeof err);
    cel_status st = cel_backend_cpu_create(m, p, &be, &err);
    if (st != want) fail_msg("expected %s, got %s (%s)", cel_status_name(want), cel_status_name(st), err.msg);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
    assert_null(be);
}

static void test_bad_models(void **state)
{
    (void)state;
    mcfg c = {CEL_ARCH_QWEN2, CEL_DTYPE_Q8_0, CEL_DTYPE_F32, 64, 4, 2, 16, 96, 60, 2, false, 16};
    tmodel *tm = make_model(&c);
    cel_backend_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 1;
    p.kv_bytes = 1;
    expect_create_err(&tm->m, &p, CEL_ERR_LIMIT, "less than one block");
    p.kv_bytes = 0;
    p.block_size = 512;
    expect_create_err(&tm->m, &p, CEL_ERR_UNSUPPORTED, "block size 512");
    p.block_size = 0;
    cel_tensor *wk = tm->m.layers[1].wk;
    wk->ne[1] = 16;
    expect_create_err(&tm->m, &p, CEL_ERR_FORMAT, "blk.1.attn_k.weight");
    wk->ne[1] = 32;
    cel_tensor *bv = tm->m.layers[0].bv;
    tm->m.layers[0].bv = NULL;
    expect_create_err(&tm->m, &p, CEL_ERR_NOT_FOUND, "layer 0: missing tensor v bias");
    tm->m.layers[0].bv = bv;
    size_t nb = tm->m.output->nbytes;
    tm->m.output->nbytes = 100;
    expect_create_err(&tm->m, &p, CEL_ERR_FORMAT, "output.weight");
    tm->m.output->nbytes = nb;
    cel_tensor *fn = tm->m.layers[1].ffn_norm;
    fn->nbytes = 8;
    expect_create_err(&tm->m, &p, CEL_ERR_FORMAT, "blk.1.ffn_norm.weight");
    fn->nbytes = 64 * 4;
    fn->ne[1] = 2;
    fn->n_dims = 2;
    expect_create_err(&tm->m, &p, CEL_ERR_FORMAT, "has 64 x 2 elements");
    fn->ne[1] = 1;
    tm->m.hp.n_head_kv = 3;
    expect_create_err(&tm->m, &p, CEL_ERR_INVALID, "n_head_kv 3");
    tm->m.hp.n_head_kv = 2;
    cel_backend *be = NULL;
    cel_error err;
    assert_int_equal(cel_backend_cpu_create(&tm->m, &p, &be, &err), CEL_OK); /* defaults: 16-token blocks, 8192 tokens */
    assert_int_equal(be->block_size, 16);
    assert_int_equal(be->n_blocks, 512);
    assert_string_equal(be->v->name, "cpu");
    cel_backend_free(be);
    free_model(tm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_llama_f32),
        cmocka_unit_test(test_reference_qwen2_q8),
        cmocka_unit_test(test_reference_qwen3_f16),
        cmocka_unit_test(test_reference_kquants),
        cmocka_unit_test(test_reference_q4_0_bf16),
        cmocka_unit_test(test_batch_equals_alone),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_block_sizes),
        cmocka_unit_test(test_out_rows),
        cmocka_unit_test(test_copy_block),
        cmocka_unit_test(test_weights_changed),
        cmocka_unit_test(test_bad_batches),
        cmocka_unit_test(test_bad_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
