/*
 * test_cuda_backend.c - the CUDA backend end to end against the CPU backend:
 * random tiny models in the real layouts (Llama BF16 with tied embeddings,
 * Qwen2 F32 with q/k/v biases, Qwen3 F16 with q/k norms, a quantized mix of
 * Q8_0 / Q4_0 / Q4_K / Q6_K), mixed batches (prefill chunks after cached
 * prefixes, decode tokens, a prefix shared through the block table, a block
 * copied with copy_block), greedy decoding, CUDA-graph replays,
 * weights_changed, GPU argmax, and the error paths.
 *
 * Tolerances: the GPU runs GEMMs on BF16 inputs (activations rounded to 8
 * bits of mantissa) with FP32 accumulation, the CPU in FP32, so logits agree
 * to |gpu - cpu| <= 0.04 + 0.04 max|cpu row| (the quantized mix, whose CPU path
 * also rounds activations to 8 bits, came closest: 0.57 of that bound); greedy tokens must agree
 * wherever the CPU's top two logits are further apart than that bound.
 *
 * Built as unit_test_cuda_backend (real GPU, SKIP line without one) and
 * unit_test_cuda_backend_emu (the CPU emulation of engine/cuda/emu.cpp).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/common.h"
#include "engine/backend.h"

#if defined(CELINE_HAVE_CUDA) || defined(CEL_CUDA_EMU)
#define HAVE_KERNELS 1
#include "engine/cuda/cuda_internal.h"
#include "engine/ops.h"
#include "engine/scheduler.h"
#include "test_filter.h"
#endif

#ifdef HAVE_KERNELS

#define TOL_ABS 0.04f
#define TOL_REL 0.04f
#ifdef CEL_CUDA_EMU
#define N_GREEDY 3 /* the emulation is slow; the GPU build runs the full sequence */
#else
#define N_GREEDY 6
#endif

static bool g_device;
static cel_rng g_rng;

static float frand(float a) { return (float)((cel_rng_uniform(&g_rng) * 2.0 - 1.0) * a); }

/* ---------------------------------------------------------- random model */
typedef struct tcfg {
    const char *name;
    cel_arch arch;
    int32_t E, nh, nkv, hd, F, V, L;
    cel_rope_style rope;
    cel_rope_scaling scaling;
    bool tied, bias, qk_norm;
    cel_dtype wt;            /* attention and FFN matrices */
    cel_dtype emb, out;      /* token embedding, output projection */
    cel_dtype wo, gate, down; /* overrides for the quantized mix (0: wt) */
} tcfg;

typedef struct tmodel {
    cel_model m;
    cel_layer layers[4];
    cel_tensor t[96];
    int n;
} tmodel;

/* A [out][in] tensor of random values (uniform, +-a, plus offset) stored in dtype t. */
static cel_tensor *mk(tmodel *tm, const char *name, cel_dtype t, int64_t in, int64_t out, float a, float offset)
{
    assert_true(tm->n < (int)(sizeof tm->t / sizeof tm->t[0]));
    cel_tensor *x = &tm->t[tm->n++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->dtype = t;
    x->n_dims = out > 1 ? 2 : 1;
    x->ne[0] = in;
    x->ne[1] = out;
    x->ne[2] = x->ne[3] = 1;
    size_t rb = cel_dtype_row_bytes(t, in);
    assert_true(rb > 0);
    x->nbytes = rb * (size_t)out;
    x->data = malloc(x->nbytes);
    x->owned = true;
    float *row = malloc((size_t)in * sizeof(float));
    for (int64_t o = 0; o < out; o++) {
        for (int64_t i = 0; i < in; i++) row[i] = offset + frand(a);
        cel_quant_row(t, row, (uint8_t *)x->data + (size_t)o * rb, in);
    }
    free(row);
    return x;
}

static void tm_build(tmodel *tm, const tcfg *c)
{
    memset(tm, 0, sizeof *tm);
    cel_model *m = &tm->m;
    cel_hparams *hp = &m->hp;
    hp->arch = c->arch;
    hp->n_vocab = c->V;
    hp->n_embd = c->E;
    hp->n_layer = c->L;
    hp->n_head = c->nh;
    hp->n_head_kv = c->nkv;
    hp->head_dim = c->hd;
    hp->n_ff = c->F;
    hp->n_ctx_train = 4096;
    hp->rms_eps = 1e-5f;
    hp->rope_theta = 10000.0f;
    hp->rope_style = c->rope;
    hp->rope_scaling = c->scaling;
    hp->rope_factor = 8.0f;
    hp->rope_low_freq_factor = 1.0f;
    hp->rope_high_freq_factor = 4.0f;
    hp->rope_orig_ctx = 64;
    hp->tied_embeddings = c->tied;
    hp->has_qkv_bias = c->bias;
    hp->has_qk_norm = c->qk_norm;
    const int64_t E = c->E, Q = (int64_t)c->nh * c->hd, KV = (int64_t)c->nkv * c->hd, F = c->F;
    m->tok_embd = mk(tm, "token_embd.weight", c->emb, E, c->V, 1.0f, 0.0f);
    m->output = c->tied ? m->tok_embd : mk(tm, "output.weight", c->out, E, c->V, sqrtf(3.0f / (float)E), 0.0f);
    m->output_norm = mk(tm, "output_norm.weight", CEL_DTYPE_F32, E, 1, 0.2f, 1.0f);
    m->layers = tm->layers;
    for (int32_t l = 0; l < c->L; l++) {
        cel_layer *ly = &tm->layers[l];
        const float ai = sqrtf(3.0f / (float)E);
        ly->attn_norm = mk(tm, "attn_norm", CEL_DTYPE_F32, E, 1, 0.2f, 1.0f);
        ly->wq = mk(tm, "attn_q", c->wt, E, Q, ai, 0.0f);
        ly->wk = mk(tm, "attn_k", c->wt, E, KV, ai, 0.0f);
        ly->wv = mk(tm, "attn_v", c->wt, E, KV, ai, 0.0f);
        ly->wo = mk(tm, "attn_output", c->wo ? c->wo : c->wt, Q, E, sqrtf(3.0f / (float)Q), 0.0f);
        ly->ffn_norm = mk(tm, "ffn_norm", CEL_DTYPE_F32, E, 1, 0.2f, 1.0f);
        ly->w_gate = mk(tm, "ffn_gate", c->gate ? c->gate : c->wt, E, F, ai, 0.0f);
        ly->w_up = mk(tm, "ffn_up", c->gate ? c->gate : c->wt, E, F, ai, 0.0f);
        ly->w_down = mk(tm, "ffn_down", c->down ? c->down : c->wt, F, E, sqrtf(3.0f / (float)F), 0.0f);
        if (c->bias) {
            ly->bq = mk(tm, "attn_q.bias", CEL_DTYPE_F32, Q, 1, 0.3f, 0.0f);
            ly->bk = mk(tm, "attn_k.bias", CEL_DTYPE_F32, KV, 1, 0.3f, 0.0f);
            ly->bv = mk(tm, "attn_v.bias", CEL_DTYPE_F32, KV, 1, 0.3f, 0.0f);
        }
        if (c->qk_norm) {
            ly->q_norm = mk(tm, "attn_q_norm", CEL_DTYPE_F32, c->hd, 1, 0.2f, 1.0f);
            ly->k_norm = mk(tm, "attn_k_norm", CEL_DTYPE_F32, c->hd, 1, 0.2f, 1.0f);
        }
    }
    m->tensors = tm->t;
    m->n_tensors = (size_t)tm->n;
}

static void tm_free(tmodel *tm)
{
    for (int i = 0; i < tm->n; i++) free(tm->t[i].data);
}

/* ------------------------------------------------------------- batches */
#define MAXS 16
typedef struct tseq {
    int32_t table[8];
    int32_t n_blocks, n_past, n_new;
    int32_t toks[64];
} tseq;

typedef struct tbatch {
    cel_batch b;
    cel_batch_seq s[MAXS];
    int32_t tokens[256], out_rows[256];
} tbatch;

/* Lays out seqs[0..n) into a batch; wants every sequence's last row, plus
 * extra_row (when >= 0). */
static void tb_make(tbatch *tb, const tseq *seqs, int n, int32_t extra_row)
{
    memset(tb, 0, sizeof *tb);
    int32_t T = 0;
    for (int i = 0; i < n; i++) {
        cel_batch_seq *s = &tb->s[i];
        s->block_table = seqs[i].table;
        s->n_blocks = seqs[i].n_blocks;
        s->n_past = seqs[i].n_past;
        s->n_new = seqs[i].n_new;
        s->first = T;
        for (int j = 0; j < seqs[i].n_new; j++) tb->tokens[T++] = seqs[i].toks[j];
        tb->out_rows[tb->b.n_out++] = T - 1;
    }
    if (extra_row >= 0) tb->out_rows[tb->b.n_out++] = extra_row;
    tb->b.n_tokens = T;
    tb->b.tokens = tb->tokens;
    tb->b.n_seqs = n;
    tb->b.seqs = tb->s;
    tb->b.out_rows = tb->out_rows;
}

static int32_t argmax_row(const float *v, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

typedef struct pair {
    cel_backend *cpu, *gpu;
    int32_t V;
    float *lc, *lg;
    double worst; /* largest |err| / bound seen */
    int decisive, agree;
} pair;

/* Runs the batch on both backends and compares the logits and greedy tokens;
 * returns the CPU's argmax of each output row in next[]. */
static void run_both(pair *pr, tbatch *tb, const char *what, int32_t *next)
{
    cel_error err;
    tb->b.logits = pr->lc;
    if (pr->cpu->v->forward(pr->cpu, &tb->b, &err) != CEL_OK) fail_msg("cpu forward (%s): %s", what, err.msg);
    tb->b.logits = pr->lg;
    if (pr->gpu->v->forward(pr->gpu, &tb->b, &err) != CEL_OK) fail_msg("cuda forward (%s): %s", what, err.msg);
    float max_err = 0.0f;
    for (int32_t r = 0; r < tb->b.n_out; r++) {
        const float *c = pr->lc + (size_t)r * pr->V, *g = pr->lg + (size_t)r * pr->V;
        float mx = 0.0f;
        for (int32_t i = 0; i < pr->V; i++) mx = fmaxf(mx, fabsf(c[i]));
        const float bound = TOL_ABS + TOL_REL * mx;
        for (int32_t i = 0; i < pr->V; i++) {
            float e = fabsf(c[i] - g[i]);
            if (!(e <= bound))
                fail_msg("%s: row %d logit %d: cuda %.5f vs cpu %.5f (bound %.4f)", what, (int)r, (int)i, (double)g[i],
                         (double)c[i], (double)bound);
            max_err = fmaxf(max_err, e);
            if (e / bound > pr->worst) pr->worst = e / bound;
        }
        int32_t ac = argmax_row(c, pr->V), ag = argmax_row(g, pr->V);
        float second = -INFINITY;
        for (int32_t i = 0; i < pr->V; i++)
            if (i != ac) second = fmaxf(second, c[i]);
        if (c[ac] - second > 2 * bound) {
            pr->decisive++;
            if (ac != ag)
                fail_msg("%s: row %d greedy token: cuda %d, cpu %d (margin %.4f)", what, (int)r, (int)ag, (int)ac,
                         (double)(c[ac] - second));
            pr->agree++;
        } else if (ac == ag) {
            pr->agree++;
        }
        if (next) next[r] = ac;
    }
    printf("    %-34s rows %-3d max|err| %.4f\n", what, (int)tb->b.n_out, (double)max_err);
}

/* Builds the model c and the CPU half of a comparison pair: the backend
 * parameters both halves use (kv for 40 blocks of 16, batches of 64) into
 * *p, the CPU backend into pr (zeroed first). The caller frees the model. */
static tmodel *pair_open(const tcfg *c, cel_backend_params *p, pair *pr)
{
    tmodel *tm = malloc(sizeof *tm);
    tm_build(tm, c);
    memset(p, 0, sizeof *p);
    p->n_threads = 2;
    p->block_size = 16;
    p->kv_bytes = cel_backend_kv_block_bytes(&tm->m.hp, 16, CEL_BACKEND_CUDA) * 40;
    p->max_batch_tokens = 64;
    memset(pr, 0, sizeof *pr);
    pr->V = c->V;
    cel_error err;
    if (cel_backend_cpu_create(&tm->m, p, &pr->cpu, &err) != CEL_OK) fail_msg("cpu create: %s", err.msg);
    return tm;
}

/* Creates a CUDA backend with CELINE_CUDA_DECODE set to decode (NULL: the
 * default path); fails the test when creation fails. */
static cel_backend *cuda_create_path(const cel_model *m, const cel_backend_params *p, const char *decode)
{
    cel_error err;
    cel_backend *be = NULL;
    if (decode) assert_int_equal(setenv("CELINE_CUDA_DECODE", decode, 1), 0);
    cel_status st = cel_backend_cuda_create(m, p, &be, &err);
    if (decode) unsetenv("CELINE_CUDA_DECODE");
    if (st != CEL_OK) fail_msg("cuda create (%s): %s", decode ? decode : "default", err.msg);
    return be;
}

/* The whole scenario (prefill, mixed batches, copy-on-write, greedy decode,
 * graph replays, GPU argmax, a 12-wide batch, weights_changed) against the
 * CPU backend, on the CUDA decode path `decode` (NULL: the default). */
static void run_model_path(const tcfg *c, const char *decode)
{
    printf("  model %s%s%s\n", c->name, decode ? ", decode path " : "", decode ? decode : "");
    cel_backend_params p;
    pair pr;
    tmodel *tm = pair_open(c, &p, &pr);
    cel_error err;
    pr.gpu = cuda_create_path(&tm->m, &p, decode);
    assert_int_equal(pr.gpu->block_size, 16);
    assert_true(pr.gpu->n_blocks >= 40 && pr.cpu->n_blocks >= 40);
    pr.lc = malloc((size_t)64 * c->V * sizeof(float));
    pr.lg = malloc((size_t)64 * c->V * sizeof(float));
    tbatch *tb = malloc(sizeof *tb);
    int32_t next[64];

    /* step 1: two prompts (A 20 tokens over blocks 5, 2; B 7 tokens in block 9), plus a middle row of A */
    tseq s[MAXS];
    memset(s, 0, sizeof s);
    s[0] = (tseq){.table = {5, 2}, .n_blocks = 2, .n_past = 0, .n_new = 20};
    s[1] = (tseq){.table = {9}, .n_blocks = 1, .n_past = 0, .n_new = 7};
    for (int i = 0; i < 20; i++) s[0].toks[i] = (int32_t)(cel_rng_next(&g_rng) % (uint64_t)c->V);
    for (int i = 0; i < 7; i++) s[1].toks[i] = (int32_t)(cel_rng_next(&g_rng) % (uint64_t)c->V);
    tb_make(tb, s, 2, 3);
    run_both(&pr, tb, "prefill A(20) + B(7)", next);

    /* step 2: A decodes, B's prompt continues, C shares A's first block */
    tseq a = s[0], b = s[1], cc;
    memset(&cc, 0, sizeof cc);
    a.n_past = 20;
    a.n_new = 1;
    a.toks[0] = next[0];
    b.n_past = 7;
    b.n_new = 5;
    b.table[1] = 14;
    b.n_blocks = 2;
    for (int i = 0; i < 5; i++) b.toks[i] = (int32_t)(cel_rng_next(&g_rng) % (uint64_t)c->V);
    cc = (tseq){.table = {5, 11}, .n_blocks = 2, .n_past = 16, .n_new = 3};
    for (int i = 0; i < 3; i++) cc.toks[i] = (int32_t)(cel_rng_next(&g_rng) % (uint64_t)c->V);
    tseq st2[3] = {a, b, cc};
    tb_make(tb, st2, 3, -1);
    run_both(&pr, tb, "decode A + chunk B(5) + shared C(3)", next);

    /* copy-on-write: A's first block copied to 12; D continues from it */
    assert_int_equal(pr.cpu->v->copy_block(pr.cpu, 5, 12, 16, &err), CEL_OK);
    if (pr.gpu->v->copy_block(pr.gpu, 5, 12, 16, &err) != CEL_OK) fail_msg("cuda copy_block: %s", err.msg);
    tseq d = {.table = {12, 13}, .n_blocks = 2, .n_past = 16, .n_new = 2};
    d.toks[0] = 1;
    d.toks[1] = 2;
    tb_make(tb, &d, 1, -1);
    run_both(&pr, tb, "after copy_block", NULL);

    /* greedy decoding of A, B, C; the CPU's tokens feed both */
    tseq dec[3] = {a, b, cc};
    for (int i = 0; i < 3; i++) {
        dec[i].n_past += dec[i].n_new;
        dec[i].n_new = 1;
        dec[i].toks[0] = next[i];
    }
    for (int step = 0; step < N_GREEDY; step++) {
        char what[64];
        snprintf(what, sizeof what, "greedy step %d", step);
        tb_make(tb, dec, 3, -1);
        run_both(&pr, tb, what, next);
        for (int i = 0; i < 3; i++) {
            dec[i].n_past++;
            dec[i].toks[0] = next[i];
            assert_true(dec[i].n_past < dec[i].n_blocks * 16);
        }
    }

    /* replays of one decode step (graph capture on the GPU) give identical logits */
    tb_make(tb, dec, 3, -1);
    float *ref = malloc((size_t)3 * c->V * sizeof(float));
    tb->b.logits = ref;
    assert_int_equal(pr.gpu->v->forward(pr.gpu, &tb->b, &err), CEL_OK);
    for (int rep = 0; rep < 3; rep++) {
        tb->b.logits = pr.lg;
        if (pr.gpu->v->forward(pr.gpu, &tb->b, &err) != CEL_OK) fail_msg("cuda replay: %s", err.msg);
        assert_memory_equal(ref, pr.lg, (size_t)3 * c->V * sizeof(float));
    }
    cel_backend_cuda_set_graphs(pr.gpu, false);
    tb->b.logits = pr.lg;
    assert_int_equal(pr.gpu->v->forward(pr.gpu, &tb->b, &err), CEL_OK);
    assert_memory_equal(ref, pr.lg, (size_t)3 * c->V * sizeof(float));
    cel_backend_cuda_set_graphs(pr.gpu, true);
    /* GPU argmax agrees with the argmax of the same logits */
    int32_t toks[3];
    if (cel_backend_cuda_forward_argmax(pr.gpu, &tb->b, toks, &err) != CEL_OK) fail_msg("argmax: %s", err.msg);
    for (int i = 0; i < 3; i++) assert_int_equal(toks[i], argmax_row(ref + (size_t)i * c->V, c->V));
    free(ref);

    /* a wide decode batch (12 sequences: the cuBLAS path) */
    tseq w[12];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 12; i++) {
        w[i].table[0] = 20 + i;
        w[i].n_blocks = 1;
        w[i].n_new = 3;
        for (int j = 0; j < 3; j++) w[i].toks[j] = (int32_t)(cel_rng_next(&g_rng) % (uint64_t)c->V);
    }
    tb_make(tb, w, 12, -1);
    run_both(&pr, tb, "12 prompts of 3", next);
    for (int step = 0; step < N_GREEDY / 2; step++) {
        for (int i = 0; i < 12; i++) {
            w[i].n_past += w[i].n_new;
            w[i].n_new = 1;
            w[i].toks[0] = next[i];
        }
        char what[64];
        snprintf(what, sizeof what, "12-wide decode step %d", step);
        tb_make(tb, w, 12, -1);
        run_both(&pr, tb, what, next);
    }

    /* weights change in host memory: both backends pick them up */
    float *nw = tm->m.output_norm->data;
    for (int i = 0; i < c->E; i++) nw[i] *= 1.5f;
    assert_int_equal(pr.cpu->v->weights_changed(pr.cpu, &err), CEL_OK);
    if (pr.gpu->v->weights_changed(pr.gpu, &err) != CEL_OK) fail_msg("cuda weights_changed: %s", err.msg);
    tb_make(tb, w, 12, -1);
    run_both(&pr, tb, "after weights_changed", NULL);

    printf("    greedy tokens: %d of %d decisive rows agree, %d agree overall; worst err/bound %.2f\n", pr.decisive,
           pr.decisive, pr.agree, pr.worst);
    cel_backend_free(pr.cpu);
    cel_backend_free(pr.gpu);
    free(pr.lc);
    free(pr.lg);
    free(tb);
    tm_free(tm);
    free(tm);
}

/* The default path (whatever engine/cuda/backend.c's cu_defaults make it),
 * then each path by name, every choice spelled out so a path means the same
 * whatever the defaults become:
 *  - v2, the fused decode path;
 *  - v3 (split attention, parallel q/k/v post-process, split-K GEMVs, the
 *    norms in the producing GEMVs' epilogues: CELINE_CUDA_NORM=producer),
 *    which must meet the same tolerances;
 *  - v3-split4-c16: every row split over 4 warps (CELINE_CUDA_GEMV_SPLIT=4)
 *    and attention chunks of 16 positions (CELINE_CUDA_ATTN_CHUNK=16);
 *  - v3-pdl-nc: programmatic dependent launch (CELINE_CUDA_PDL=1: on sm_90+
 *    the layer kernels start early and wait on the device; the emulation
 *    runs launches in order, so there it checks the prefetch arithmetic
 *    only) with the norms in the consuming GEMVs (CELINE_CUDA_NORM=consumer);
 *  - tiled, v3-tiled: v2 and v3 with prefill chunks of 16+ rows through the
 *    tiled prefill kernel (CELINE_CUDA_PREFILL=tiled);
 *  - v3-ra: the q/k/v post-process inside the attention for decode-only
 *    batches (CELINE_CUDA_ROPE_IN_ATTN=1).
 * CEL_TEST_CUDA_PATHS (a comma-separated list of the names below) runs only
 * those: tests/gpu/run.sh reruns a failed test_cuda_backend one path per
 * process, so a fault in one path (sticky for the CUDA context) does not
 * hide how the others fare. */
static void run_model(const tcfg *c)
{
    static const struct {
        const char *name, *decode;
        const char *env[4][2]; /* further variables: {name, value} */
    } paths[] = {
        {"default", NULL, {{NULL, NULL}}},
        {"v2", "v2", {{"CELINE_CUDA_PREFILL", "per-token"}}},
        {"v3", "v3", {{"CELINE_CUDA_PDL", "0"}, {"CELINE_CUDA_PREFILL", "per-token"}, {"CELINE_CUDA_NORM", "producer"}}},
        {"v3-pdl-nc",
         "v3",
         {{"CELINE_CUDA_PDL", "1"}, {"CELINE_CUDA_NORM", "consumer"}, {"CELINE_CUDA_PREFILL", "per-token"}}},
        {"v3-split4-c16",
         "v3",
         {{"CELINE_CUDA_PDL", "0"},
          {"CELINE_CUDA_GEMV_SPLIT", "4"},
          {"CELINE_CUDA_PREFILL", "per-token"},
          {"CELINE_CUDA_ATTN_CHUNK", "16"}}},
        {"tiled", "v2", {{"CELINE_CUDA_PREFILL", "tiled"}}},
        {"v3-tiled", "v3", {{"CELINE_CUDA_PDL", "0"}, {"CELINE_CUDA_PREFILL", "tiled"}}},
        {"v3-ra", "v3", {{"CELINE_CUDA_ROPE_IN_ATTN", "1"}, {"CELINE_CUDA_FUSE_QKV", "0"}}},
    };
    const char *only = getenv("CEL_TEST_CUDA_PATHS");
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (only && !cel_test_list_has(only, paths[i].name)) continue;
        printf("  (path %s)\n", paths[i].name);
        for (int k = 0; k < 4 && paths[i].env[k][0]; k++)
            assert_int_equal(setenv(paths[i].env[k][0], paths[i].env[k][1], 1), 0);
        run_model_path(c, paths[i].decode);
        for (int k = 0; k < 4 && paths[i].env[k][0]; k++) unsetenv(paths[i].env[k][0]);
    }
}

#define NEED_DEVICE()                                                                                              \
    do {                                                                                                           \
        if (!g_device) skip();                                                                                     \
    } while (0)

static void test_model_llama_bf16(void **state)
{
    (void)state;
    NEED_DEVICE();
    tcfg c = {.name = "llama bf16, tied, rope norm + llama3 scaling", .arch = CEL_ARCH_LLAMA, .E = 128, .nh = 4,
              .nkv = 2, .hd = 32, .F = 96, .V = 67, .L = 2, .rope = CEL_ROPE_NORM, .scaling = CEL_ROPE_SCALING_LLAMA3,
              .tied = true, .wt = CEL_DTYPE_BF16, .emb = CEL_DTYPE_BF16, .out = CEL_DTYPE_BF16};
    run_model(&c);
}

static void test_model_qwen2_f32_bias(void **state)
{
    (void)state;
    NEED_DEVICE();
    tcfg c = {.name = "qwen2 f32, q/k/v bias, untied", .arch = CEL_ARCH_QWEN2, .E = 128, .nh = 4, .nkv = 1, .hd = 32,
              .F = 64, .V = 50, .L = 2, .rope = CEL_ROPE_NEOX, .bias = true, .wt = CEL_DTYPE_F32,
              .emb = CEL_DTYPE_F32, .out = CEL_DTYPE_F32};
    run_model(&c);
}

static void test_model_qwen3_f16_qknorm(void **state)
{
    (void)state;
    NEED_DEVICE();
    tcfg c = {.name = "qwen3 f16, q/k norm, head_dim 64", .arch = CEL_ARCH_QWEN3, .E = 128, .nh = 4, .nkv = 2,
              .hd = 64, .F = 96, .V = 45, .L = 2, .rope = CEL_ROPE_NEOX, .qk_norm = true, .wt = CEL_DTYPE_F16,
              .emb = CEL_DTYPE_F16, .out = CEL_DTYPE_F16};
    run_model(&c);
}

static void test_model_quantized(void **state)
{
    (void)state;
    NEED_DEVICE();
    tcfg c = {.name = "quantized mix (Q8_0, Q4_0, Q4_K, Q6_K)", .arch = CEL_ARCH_LLAMA, .E = 256, .nh = 4, .nkv = 2,
              .hd = 64, .F = 256, .V = 40, .L = 2, .rope = CEL_ROPE_NEOX, .wt = CEL_DTYPE_Q8_0,
              .emb = CEL_DTYPE_Q8_0, .out = CEL_DTYPE_Q6_K, .wo = CEL_DTYPE_Q4_0, .gate = CEL_DTYPE_Q4_K,
              .down = CEL_DTYPE_Q6_K};
    run_model(&c);
}

/* The fused decode path (v2) against the first one (v1:
 * CELINE_CUDA_DECODE=v1, separate RMSNorm / SwiGLU kernels and the v1 GEMV):
 * decode steps of n_dec sequences give bit-identical logits, and agree with
 * the CPU. Then cel_backend_cuda_profile of a decode step: the launch count
 * of each path, and the backend's state untouched (the next forward gives
 * the same logits as before). The v3 path (CELINE_CUDA_DECODE=v3) runs the
 * same steps: within tolerance of the CPU, and each sequence's decode step
 * run alone gives the same bits as its row in the batch. */
static void run_paths(const tcfg *c, int32_t n_dec, int32_t launches_per_layer_v2)
{
    printf("  decode paths: %s, %d sequences\n", c->name, (int)n_dec);
    cel_backend_params p;
    pair pr;
    tmodel *tm = pair_open(c, &p, &pr);
    cel_error err;
    cel_backend *v1 = NULL;
    pr.gpu = cuda_create_path(&tm->m, &p, "v2"); /* by name: the default may be another path */
    v1 = cuda_create_path(&tm->m, &p, "v1");
    pair p3 = pr; /* the same CPU backend against the v3 path */
    assert_int_equal(setenv("CELINE_CUDA_FUSE_QKV", "1", 1), 0); /* the launch count below assumes it */
    p3.gpu = cuda_create_path(&tm->m, &p, "v3");
    /* the q/k/v post-process in the attention (decode steps) instead of the QKV GEMV's epilogue: same bits */
    assert_int_equal(setenv("CELINE_CUDA_FUSE_QKV", "0", 1), 0);
    assert_int_equal(setenv("CELINE_CUDA_ROPE_IN_ATTN", "1", 1), 0);
    cel_backend *ra = cuda_create_path(&tm->m, &p, "v3");
    unsetenv("CELINE_CUDA_ROPE_IN_ATTN");
    unsetenv("CELINE_CUDA_FUSE_QKV");
    float *lra = malloc((size_t)64 * c->V * sizeof(float));
    pr.lc = malloc((size_t)64 * c->V * sizeof(float));
    pr.lg = malloc((size_t)64 * c->V * sizeof(float));
    float *l1 = malloc((size_t)64 * c->V * sizeof(float));
    p3.lc = malloc((size_t)64 * c->V * sizeof(float));
    p3.lg = malloc((size_t)64 * c->V * sizeof(float));
    float *alone = malloc((size_t)c->V * sizeof(float));
    tbatch *tb = malloc(sizeof *tb);
    tseq sq[MAXS];
    memset(sq, 0, sizeof sq);
    for (int32_t i = 0; i < n_dec; i++) {
        sq[i].table[0] = 2 * i;
        sq[i].table[1] = 2 * i + 1;
        sq[i].n_blocks = 2;
        sq[i].n_new = 5;
        for (int j = 0; j < 5; j++) sq[i].toks[j] = (int32_t)(cel_rng_next(&g_rng) % (uint64_t)c->V);
    }
    for (int step = 0; step < 4; step++) { /* a prompt, then decode steps */
        char what[64];
        snprintf(what, sizeof what, step ? "decode step %d" : "prompts", step);
        tb_make(tb, sq, n_dec, -1);
        run_both(&pr, tb, what, NULL);
        tb->b.logits = l1;
        if (v1->v->forward(v1, &tb->b, &err) != CEL_OK) fail_msg("cuda v1 forward: %s", err.msg);
        if (memcmp(l1, pr.lg, (size_t)tb->b.n_out * c->V * sizeof(float)) != 0)
            fail_msg("%s: the v2 decode path's logits differ from v1's", what);
        char w3[80];
        snprintf(w3, sizeof w3, "%s (v3)", what);
        run_both(&p3, tb, w3, NULL); /* the CPU reruns the same batch: same K/V, same logits */
        tb->b.logits = lra;
        if (ra->v->forward(ra, &tb->b, &err) != CEL_OK) fail_msg("cuda v3 (post-process in attention): %s", err.msg);
        if (memcmp(lra, p3.lg, (size_t)tb->b.n_out * c->V * sizeof(float)) != 0)
            fail_msg("%s: v3 with the q/k/v post-process in the attention differs from v3", what);
        if (step > 0)
            for (int32_t i = 0; i < n_dec; i++) { /* alone: rewrites the same K/V slot with the same values */
                tbatch *one = malloc(sizeof *one);
                tb_make(one, &sq[i], 1, -1);
                one->b.logits = alone;
                if (p3.gpu->v->forward(p3.gpu, &one->b, &err) != CEL_OK) fail_msg("cuda v3 forward: %s", err.msg);
                if (memcmp(alone, p3.lg + (size_t)i * c->V, (size_t)c->V * sizeof(float)) != 0)
                    fail_msg("%s (v3): sequence %d alone differs from its row in the batch of %d", what, (int)i,
                             (int)n_dec);
                free(one);
            }
        for (int32_t i = 0; i < n_dec; i++) {
            sq[i].n_past += sq[i].n_new;
            sq[i].n_new = 1;
            sq[i].toks[0] = (int32_t)(cel_rng_next(&g_rng) % (uint64_t)c->V);
        }
    }
    /* profile the next decode step on both paths, then run it for real */
    tb_make(tb, sq, n_dec, -1);
    cel_cuda_profile prof;
    for (int which = 0; which < 3; which++) {
        cel_backend *be = which == 1 ? v1 : which == 2 ? p3.gpu : pr.gpu;
        if (cel_backend_cuda_profile(be, &tb->b, true, 3, &prof, &err) != CEL_OK) fail_msg("profile: %s", err.msg);
        /* v3: 6 per layer (the norms in the O and down GEMVs' epilogues; layer 0's in the
         * embedding kernel); 5 where the q/k/v post-process rides in the QKV GEMV's epilogue */
        const cel_hparams *hp = &tm->m.hp;
        const int32_t v3_per_layer =
            cel__cuk_gemv3_fuses_qkv((hp->n_head + 2 * hp->n_head_kv) * hp->head_dim, hp->n_embd, hp->head_dim, 0) ? 5
                                                                                                                    : 6;
        const int32_t per_layer = which == 1 ? 9 : which == 2 ? v3_per_layer : launches_per_layer_v2;
        assert_string_equal(prof.decode, which == 1 ? "v1" : which == 2 ? "v3" : "v2");
        assert_true(prof.attn_splits >= 1 && (which == 2 || prof.attn_splits == 1));
        /* embed, layers, final norm + lm_head + argmax (v3: every row is an output row, so
         * the final norm ran in the last down GEMV's epilogue) */
        assert_int_equal(prof.launches, 1 + per_layer * c->L + (which == 2 ? 2 : 3));
        int sum = 0;
        for (int k = 0; k < prof.n_kinds; k++) {
            assert_non_null(prof.kind[k].name);
            assert_true(prof.kind[k].ms >= 0.0);
            sum += prof.kind[k].launches;
        }
        assert_int_equal(sum, prof.launches);
        assert_true(prof.kernel_ms >= 0.0 && prof.graph_ms >= 0.0);
        printf("    profile %s: %d launches, kernels %.3f ms, graph %.3f ms\n", prof.decode, prof.launches,
               prof.kernel_ms, prof.graph_ms);
    }
    tb->b.logits = l1;
    if (v1->v->forward(v1, &tb->b, &err) != CEL_OK) fail_msg("cuda v1 forward: %s", err.msg);
    run_both(&pr, tb, "decode step after profiling", NULL);
    if (memcmp(l1, pr.lg, (size_t)tb->b.n_out * c->V * sizeof(float)) != 0)
        fail_msg("after profiling: the v2 decode path's logits differ from v1's");
    run_both(&p3, tb, "decode step after profiling (v3)", NULL);
    if (n_dec > 1) { /* v3: the head from the last layer's norm epilogue (rows out in order) and the
                      * usual head (rows out in reverse: a separate final norm) give the same bits */
        float *rev = malloc((size_t)n_dec * c->V * sizeof(float));
        for (int32_t i = 0; i < n_dec; i++) tb->out_rows[i] = n_dec - 1 - i;
        tb->b.logits = rev;
        if (p3.gpu->v->forward(p3.gpu, &tb->b, &err) != CEL_OK) fail_msg("cuda v3 forward: %s", err.msg);
        for (int32_t i = 0; i < n_dec; i++) {
            if (memcmp(rev + (size_t)i * c->V, p3.lg + (size_t)(n_dec - 1 - i) * c->V, (size_t)c->V * sizeof(float)))
                fail_msg("v3: row %d's logits differ between the two heads", (int)(n_dec - 1 - i));
            tb->out_rows[i] = i;
        }
        free(rev);
    }
    int32_t toks[MAXS];
    if (cel_backend_cuda_forward_argmax(pr.gpu, &tb->b, toks, &err) != CEL_OK) fail_msg("argmax: %s", err.msg);
    for (int32_t i = 0; i < n_dec; i++) assert_int_equal(toks[i], argmax_row(l1 + (size_t)i * c->V, c->V));
    cel_backend_free(pr.cpu);
    cel_backend_free(pr.gpu);
    cel_backend_free(v1);
    cel_backend_free(ra);
    free(lra);
    cel_backend_free(p3.gpu);
    free(p3.lc);
    free(p3.lg);
    free(alone);
    free(pr.lc);
    free(pr.lg);
    free(l1);
    free(tb);
    tm_free(tm);
    free(tm);
}

static void test_decode_paths(void **state)
{
    (void)state;
    NEED_DEVICE();
    tcfg c = {.name = "llama bf16", .arch = CEL_ARCH_LLAMA, .E = 128, .nh = 4, .nkv = 2, .hd = 32, .F = 96, .V = 67,
              .L = 2, .rope = CEL_ROPE_NEOX, .tied = true, .wt = CEL_DTYPE_BF16, .emb = CEL_DTYPE_BF16,
              .out = CEL_DTYPE_BF16};
    run_paths(&c, 1, 6);
    run_paths(&c, 3, 6);
    /* 8 rows of 4096: the normalized rows do not fit the GEMV's shared
     * memory, so separate norms run before the QKV and gate/up GEMVs */
    tcfg w = {.name = "wide hidden (norm not fused)", .arch = CEL_ARCH_QWEN2, .E = 4096, .nh = 2, .nkv = 1, .hd = 32,
              .F = 32, .V = 30, .L = 1, .rope = CEL_ROPE_NEOX, .bias = true, .tied = true, .wt = CEL_DTYPE_BF16,
              .emb = CEL_DTYPE_BF16, .out = CEL_DTYPE_BF16};
    run_paths(&w, 8, 8);
}

/* Clear errors: model does not fit, budget above free memory, bad batches,
 * unsupported head size. */
/* Counts warnings that name a CELINE_CUDA_* value the backend ignored. */
static void count_ignored(void *ud, cel_log_level level, const char *msg)
{
    if (level == CEL_LOG_WARN && strstr(msg, "ignored")) ++*(int *)ud;
}

static void test_errors(void **state)
{
    (void)state;
    NEED_DEVICE();
    tcfg c = {.name = "err", .arch = CEL_ARCH_LLAMA, .E = 64, .nh = 2, .nkv = 1, .hd = 32, .F = 64, .V = 30, .L = 1,
              .rope = CEL_ROPE_NEOX, .tied = true, .wt = CEL_DTYPE_BF16, .emb = CEL_DTYPE_BF16, .out = CEL_DTYPE_BF16};
    tmodel *tm = malloc(sizeof *tm);
    tm_build(tm, &c);
    cel_backend_params p;
    memset(&p, 0, sizeof p);
    p.block_size = 16;
    p.max_batch_tokens = 32;
    p.kv_bytes = (size_t)1 << 20;
    cel_backend *be = NULL;
    cel_error err;

    p.device_mem_bytes = (size_t)1 << 20; /* 1 MiB: the activations alone need more */
    assert_int_equal(cel_backend_cuda_create(&tm->m, &p, &be, &err), CEL_ERR_DEVICE);
    assert_null(be);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "does not fit"));

    p.device_mem_bytes = (size_t)1 << 50; /* 1 PiB */
    assert_int_equal(cel_backend_cuda_create(&tm->m, &p, &be, &err), CEL_ERR_DEVICE);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "exceeds"));

    p.device_mem_bytes = 0;
    tm->m.hp.head_dim = 48;
    tm->m.hp.n_head = 2;
    assert_int_equal(cel_backend_cuda_create(&tm->m, &p, &be, &err), CEL_ERR_UNSUPPORTED);
    printf("  %s\n", err.msg);
    tm->m.hp.head_dim = 32;

    /* a path variable with a value it does not take: a warning, and the default */
    int ignored = 0;
    p.log = (cel_logger){.fn = count_ignored, .ud = &ignored, .min_level = CEL_LOG_WARN};
    assert_int_equal(setenv("CELINE_CUDA_DECODE", "v9", 1), 0);
    assert_int_equal(setenv("CELINE_CUDA_PDL_PREFETCH", "12x", 1), 0);
    assert_int_equal(setenv("CELINE_CUDA_ATTN_CHUNK", "24", 1), 0);
    assert_int_equal(setenv("CELINE_CUDA_NORM", "both", 1), 0);
    cel_status cst = cel_backend_cuda_create(&tm->m, &p, &be, &err);
    unsetenv("CELINE_CUDA_DECODE");
    unsetenv("CELINE_CUDA_PDL_PREFETCH");
    unsetenv("CELINE_CUDA_ATTN_CHUNK");
    unsetenv("CELINE_CUDA_NORM");
    if (cst != CEL_OK) fail_msg("create with unknown path values: %s", err.msg);
    assert_int_equal(ignored, 4);
    cel_backend_free(be);
    be = NULL;
    p.log = (cel_logger){0};

    if (cel_backend_cuda_create(&tm->m, &p, &be, &err) != CEL_OK) fail_msg("create: %s", err.msg);
    float *logits = malloc((size_t)4 * c.V * sizeof(float));
    tbatch *tb = malloc(sizeof *tb);
    tseq s = {.table = {be->n_blocks}, .n_blocks = 1, .n_past = 0, .n_new = 2, .toks = {1, 2}};
    tb_make(tb, &s, 1, -1);
    tb->b.logits = logits;
    assert_int_equal(be->v->forward(be, &tb->b, &err), CEL_ERR_INVALID); /* block outside the pool */
    printf("  %s\n", err.msg);
    s.table[0] = 0;
    s.toks[1] = c.V;
    tb_make(tb, &s, 1, -1);
    tb->b.logits = logits;
    assert_int_equal(be->v->forward(be, &tb->b, &err), CEL_ERR_INVALID); /* token outside the vocabulary */
    printf("  %s\n", err.msg);
    s.toks[1] = 3;
    s.n_past = 15; /* 17 positions in one block of 16 */
    tb_make(tb, &s, 1, -1);
    tb->b.logits = logits;
    assert_int_equal(be->v->forward(be, &tb->b, &err), CEL_ERR_INVALID);
    printf("  %s\n", err.msg);
    s.n_past = 0;
    tb_make(tb, &s, 1, -1);
    tb->b.logits = logits;
    tb->s[0].n_new = 1; /* row 1 belongs to no sequence */
    assert_int_equal(be->v->forward(be, &tb->b, &err), CEL_ERR_INVALID);
    printf("  %s\n", err.msg);
    /* more output rows than max_batch_tokens (rows may repeat): refused
     * before the metadata buffer, which holds max_batch_tokens of them */
    tb_make(tb, &s, 1, -1);
    tb->b.logits = NULL;
    tb->b.n_out = p.max_batch_tokens + 1;
    for (int32_t i = 0; i < tb->b.n_out; i++) tb->out_rows[i] = 0;
    int32_t toks_out[64];
    assert_int_equal(cel_backend_cuda_forward_argmax(be, &tb->b, toks_out, &err), CEL_ERR_LIMIT);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "output rows"));
    /* more sequences than max_batch_tokens (sequences with no new rows need
     * no tokens): refused the same way */
    cel_batch_seq many[40];
    memset(many, 0, sizeof many);
    many[0] = tb->s[0];
    tb->b.seqs = many;
    tb->b.n_seqs = 40;
    tb->b.n_out = 1;
    assert_int_equal(cel_backend_cuda_forward_argmax(be, &tb->b, toks_out, &err), CEL_ERR_LIMIT);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "sequences"));
    assert_int_equal(be->v->copy_block(be, 0, be->n_blocks, 4, &err), CEL_ERR_INVALID);
    /* and a valid batch still runs after the refusals */
    tb_make(tb, &s, 1, -1);
    tb->b.logits = logits;
    if (be->v->forward(be, &tb->b, &err) != CEL_OK) fail_msg("forward after errors: %s", err.msg);
    cel_cuda_info info;
    assert_int_equal(cel_backend_cuda_info(be, &info), CEL_OK);
    printf("  device %s, weights %zu B, KV %zu B\n", info.device, info.weight_bytes, info.kv_bytes);
    cel_backend_free(be);
#ifdef CEL_CUDA_EMU
    /* no device at all */
    cel__emu_set_device_count(0);
    assert_int_equal(cel_backend_cuda_create(&tm->m, &p, &be, &err), CEL_ERR_DEVICE);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "no CUDA device"));
    cel__emu_set_device_count(1);
#endif
    free(logits);
    free(tb);
    tm_free(tm);
    free(tm);
}

/* ------------------------------------------------- sampling on the GPU */

#define SR_MAX 8
typedef struct sres {
    int32_t ids[SR_MAX][16];
    float lps[SR_MAX][16];
    int n[SR_MAX];
} sres;

static void sres_cb(void *ud, const cel_token_event *ev)
{
    sres *r = ud;
    if (ev->sample >= SR_MAX || ev->token < 0 || r->n[ev->sample] >= 16) return;
    r->ids[ev->sample][r->n[ev->sample]] = ev->token;
    r->lps[ev->sample][r->n[ev->sample]++] = ev->logprob;
}

/* Runs requests [0, n_req) (all submitted before the first step, so they
 * share batches) on the scheduler over be, at most budget tokens per step;
 * results per request. */
static void sched_run(cel_backend *be, const int32_t (*prompts)[6], const cel_sampling *sps, const uint32_t *ns,
                      int n_req, int32_t budget, sres *out)
{
    cel_sched_params p = {.n_ctx = 256, .max_seqs = 16, .max_batch_tokens = budget, .max_queue = 16};
    cel_sched *s = NULL;
    cel_error err;
    if (cel_sched_create(be, &p, NULL, &s, &err) != CEL_OK) fail_msg("sched: %s", err.msg);
    memset(out, 0, (size_t)n_req * sizeof *out);
    for (int i = 0; i < n_req; i++) {
        cel_request rq = {.prompt = prompts[i], .n_prompt = 6, .n = ns[i], .sampling = sps[i], .cb = sres_cb, .ud = &out[i]};
        if (cel_sched_submit(s, &rq, NULL, &err) != CEL_OK) fail_msg("submit: %s", err.msg);
    }
    if (cel_sched_run_until_idle(s, &err) != CEL_OK) fail_msg("run: %s", err.msg);
    cel_sched_free(s);
}

/* The engine (scheduler) on the CUDA backend with sampling on the GPU
 * against the same backend with logits copied and sampled on the CPU: the
 * same tokens and logprobs for seeded sampling (the GPU kernel has the
 * CPU's semantics and the same uniform), for n > 1 forks, for a batch
 * mixing GPU-sampled rows with CPU ones (a penalty, logprob alternatives,
 * a top-p row past the kernel's candidate cap), and the same tokens for a
 * request run alone (batch invariance). The CPU backend's logits differ
 * from the GPU's within BF16 rounding (see the top), so sampled tokens are
 * compared on the one backend: what changes is only where the sampling runs. */
static void test_gpu_sampling_engine(void **state)
{
    (void)state;
    NEED_DEVICE();
    tcfg c = {.name = "llama bf16 untied, V 1500", .arch = CEL_ARCH_LLAMA, .E = 128, .nh = 4, .nkv = 2, .hd = 32, .F = 96,
              .V = 1500, .L = 2, .rope = CEL_ROPE_NORM, .tied = false, .wt = CEL_DTYPE_BF16, .emb = CEL_DTYPE_BF16,
              .out = CEL_DTYPE_BF16};
    tmodel *tm = malloc(sizeof *tm);
    tm_build(tm, &c);
    cel_backend_params bp = {.block_size = 16, .max_batch_tokens = 64, .kv_bytes = 0};
    assert_int_equal(setenv("CELINE_CUDA_SAMPLE", "1", 1), 0); /* opt-in for now */
    cel_backend *be = cuda_create_path(&tm->m, &bp, NULL);
    unsetenv("CELINE_CUDA_SAMPLE");
    assert_true(be->can_sample);
    enum { NR = 7 };
    int32_t prompts[NR][6];
    for (int i = 0; i < NR; i++)
        for (int j = 0; j < 6; j++) prompts[i][j] = (int32_t)(cel_rng_next(&g_rng) % 1500);
    cel_sampling sps[NR];
    uint32_t ns[NR] = {1, 3, 1, 1, 1, 1, 2};
    for (int i = 0; i < NR; i++) {
        cel_sampling_default(&sps[i]);
        sps[i].temperature = 1.0f;
        sps[i].seed = 900 + (uint64_t)i;
        sps[i].max_tokens = 6;
        sps[i].n_logprobs = 0;
    }
    sps[0].top_p = 0.95f;                     /* the RL setting */
    sps[1].top_k = 40;                        /* n = 3: forks */
    sps[1].temperature = 0.8f;
    sps[2].repetition_penalty = 1.3f;         /* CPU */
    sps[3].temperature = 0.0f;                /* greedy */
    sps[4].top_p = 0.99f;                     /* near flat at T 20: > 1024 candidates, given back */
    sps[4].temperature = 20.0f;
    sps[5].min_p = 0.1f;
    sps[5].temperature = 0.5f;
    sps[5].n_logprobs = 3;                    /* CPU */
    sps[6].top_k = 1024;                      /* the cap itself, top-p on top */
    sps[6].top_p = 0.9f;
    sps[6].n_logprobs = -1;
    sres *gpu = calloc(NR, sizeof *gpu), *cpu = calloc(NR, sizeof *cpu), *alone = calloc(1, sizeof *alone);
    cel_cuda_info info0, info1;
    assert_int_equal(cel_backend_cuda_info(be, &info0), CEL_OK);
    sched_run(be, (const int32_t(*)[6])prompts, sps, ns, NR, 64, gpu);
    assert_int_equal(cel_backend_cuda_info(be, &info1), CEL_OK);
    be->can_sample = false;
    sched_run(be, (const int32_t(*)[6])prompts, sps, ns, NR, 64, cpu);
    cel_cuda_info info2;
    assert_int_equal(cel_backend_cuda_info(be, &info2), CEL_OK);
    assert_true(info2.sampled_rows == info1.sampled_rows); /* off: no GPU sampling */
    be->can_sample = true;
    /* batch invariance: at most 8 rows per step, so the forward itself is
     * batch-invariant (the GEMV path; cuBLAS may round larger batches
     * differently), request 0 beside requests 2, 3 and 4, then alone */
    int32_t inv_prompts[4][6];
    cel_sampling inv_sps[4] = {sps[0], sps[2], sps[3], sps[4]};
    uint32_t inv_ns[4] = {1, 1, 1, 1};
    for (int i = 0; i < 4; i++) memcpy(inv_prompts[i], prompts[i == 0 ? 0 : i + 1], sizeof prompts[0]);
    sres *mixed = calloc(4, sizeof *mixed);
    sched_run(be, (const int32_t(*)[6])inv_prompts, inv_sps, inv_ns, 4, 8, mixed);
    sched_run(be, (const int32_t(*)[6])prompts, &sps[0], &ns[0], 1, 8, alone);
    assert_memory_equal(alone[0].ids[0], mixed[0].ids[0], 6 * sizeof(int32_t));
    assert_memory_equal(alone[0].lps[0], mixed[0].lps[0], 6 * sizeof(float));
    free(mixed);
    const uint64_t sampled = info1.sampled_rows - info0.sampled_rows, back = info1.sample_given_back - info0.sample_given_back;
    printf("  GPU-sampled rows %llu, given back %llu\n", (unsigned long long)sampled, (unsigned long long)back);
    assert_true(sampled >= 20);
    assert_true(back >= 3); /* request 4's decode steps */
    int n_lp_bits = 0;
    for (int i = 0; i < NR; i++)
        for (uint32_t k = 0; k < ns[i]; k++) {
            assert_int_equal(gpu[i].n[k], 6);
            assert_int_equal(cpu[i].n[k], 6);
            assert_memory_equal(gpu[i].ids[k], cpu[i].ids[k], 6 * sizeof(int32_t));
            for (int j = 0; j < 6; j++) {
                assert_true(fabsf(gpu[i].lps[k][j] - cpu[i].lps[k][j]) <= 1e-5f);
                n_lp_bits += memcmp(&gpu[i].lps[k][j], &cpu[i].lps[k][j], 4) != 0;
            }
        }
    printf("  tokens equal GPU vs CPU sampling; %d logprobs not bit-equal\n", n_lp_bits);
    for (uint32_t k = 0; k < 3; k++)
        printf("  fork %u: %d %d %d %d %d %d\n", k, gpu[1].ids[k][0], gpu[1].ids[k][1], gpu[1].ids[k][2], gpu[1].ids[k][3],
               gpu[1].ids[k][4], gpu[1].ids[k][5]);
    /* the forks drew different tokens (their streams differ) */
    assert_true(memcmp(gpu[1].ids[0], gpu[1].ids[1], 6 * sizeof(int32_t)) != 0 ||
                memcmp(gpu[1].ids[0], gpu[1].ids[2], 6 * sizeof(int32_t)) != 0);
    free(gpu);
    free(cpu);
    free(alone);
    cel_backend_free(be);
    tm_free(tm);
    free(tm);
}

static int setup(void **state)
{
    (void)state;
    cel_rng_seed(&g_rng, 77);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        printf("SKIP: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError();
        return 0;
    }
    g_device = true;
    return 0;
}

int main(void)
{
    cel_test_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_llama_bf16), cmocka_unit_test(test_model_qwen2_f32_bias),
        cmocka_unit_test(test_model_qwen3_f16_qknorm), cmocka_unit_test(test_model_quantized),
        cmocka_unit_test(test_decode_paths), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gpu_sampling_engine),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

#else /* built without CUDA */

static void test_no_cuda(void **state)
{
    (void)state;
    printf("SKIP: no CUDA device (celine was built without CUDA)\n");
    cel_backend *be = NULL;
    cel_error err;
    cel_error_clear(&err);
    assert_int_equal(cel_backend_cuda_create(NULL, NULL, &be, &err), CEL_ERR_UNSUPPORTED);
    assert_null(be);
    assert_non_null(strstr(err.msg, "nvcc not found"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
