/*
 * bench_gpu.c - the CUDA backend's speed on a random-weight model in a real
 * shape (default: Llama-3.2-1B in BF16), built in memory so the GPU machine
 * needs no model file.
 *
 *   bench_gpu [--out FILE.json] [--layers N] [--prompt N] [--steps N]
 *             [--batches 1,64,256] [--prefill-prompt 1024] [--tiny] [--bandwidth GBPS] [--no-v1] [--no-v3] [--no-prefill]
 *             [--only v2,v1,v3,v3-split1,v3-pdl,prefill,default]
 *
 * For each batch size B: B sequences of --prompt tokens are prefilled in
 * chunks of max_batch_tokens, then --steps decode steps of B tokens run and
 * are timed four times: with logits copied to the host (what the engine's
 * CPU sampler consumes), with greedy argmax on the GPU
 * (cel_backend_cuda_forward_argmax), and with sampling on the GPU
 * (cel_batch.sample, logprobs included) at temperature 1 with top-p 0.95 -
 * the RL rollout setting; the JSON says which share of rows came back as
 * logits for lack of room in the kernel's 1024 candidates - and at
 * temperature 1 with no filter. Batch-1 decode is also reported as a
 * share of the memory-bandwidth roofline: bytes of weights read per token
 * (every layer matrix + the output projection) over the card's bandwidth.
 * When batch 1 is measured, one more batch-1 decode step is profiled
 * (cel_backend_cuda_profile: each kernel's GPU time, summed by kind, with
 * the GEMVs' achieved bandwidth, and the same step's graph replay time), and
 * unless --no-v1, a second backend with the first decode path
 * (CELINE_CUDA_DECODE=v1) is measured at batch 1 and profiled the same way;
 * unless --no-v3, a third with the v3 path (split-context attention,
 * parallel q/k/v post-process) is measured at every batch size and profiled
 * at batch 1, so one GPU run compares all three (the default backend is v2);
 * then v3 once more at batch 1 with its GEMVs forced to one warp per row
 * (CELINE_CUDA_GEMV_SPLIT=1, decode "v3-split1" in the JSON), which isolates
 * what the split-K GEMV gains over the norm-once change alone; then, on
 * sm_90+, v3 at batch 1 with programmatic dependent launch
 * (CELINE_CUDA_PDL=1) and the GEMVs' L2 prefetch at 2 KiB (also profiled:
 * "v3-pdl"), 0 and 8 KiB per warp (CELINE_CUDA_PDL_PREFETCH), with the q/k/v
 * post-process as its own kernel (CELINE_CUDA_FUSE_QKV=0), and with attention
 * chunks of 16 and 32 positions (CELINE_CUDA_ATTN_CHUNK), also at a prompt of
 * --prefill-prompt tokens. Every group names each path choice it makes, so
 * its figures mean the same whatever the engine's defaults are - except
 * "default", which sets none: the engine as the environment configures it
 * (with no CELINE_CUDA_* variable set, its defaults, cu_defaults: what a
 * user gets) at every batch size ("default_runs" in the JSON).
 * --only runs the named groups alone (tests/gpu/run.sh runs each group in
 * its own process, so a fault or a hang in an opt-in path costs only that
 * group's figures, not the default path's); --no-v1, --no-v3 (v3,
 * v3-split1 and v3-pdl) and --no-prefill drop groups.
 * Prints a summary and writes the figures as JSON. Without a CUDA device
 * (or without CUDA in the build) it prints a SKIP line and writes
 * {"skipped": ...}.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/common.h"
#include "celine/engine.h"
#include "engine/backend.h"

#ifdef CELINE_HAVE_CUDA
#include "engine/cuda/cuda_internal.h"
#ifndef CEL_CUDA_EMU
#include <cuda_profiler_api.h>
#endif
#endif

#ifdef CELINE_HAVE_CUDA
/* CELINE_BENCH_NCU=1: the profiler API brackets one GPU-argmax decode step
 * of each batch (after the warm-up and graph capture), so a profiler
 * started with --profile-from-start off (tests/gpu/run.sh's ncu step) sees
 * that step's kernels and nothing else. */
static void ncu_bracket(bool start)
{
#ifndef CEL_CUDA_EMU
    static const char *const on = "1";
    const char *v = getenv("CELINE_BENCH_NCU");
    if (!v || strcmp(v, on) != 0) return;
    if (start) cudaProfilerStart();
    else cudaProfilerStop();
#else
    (void)start;
#endif
}
#endif

typedef struct opts {
    const char *out;
    int32_t layers, prompt, steps;
    int32_t pf_prompt; /* the prefill group's prompt length (1024) */
    bool tiny;         /* --tiny: a small model of the same kind (dry runs) */
    int32_t batches[8];
    int n_batches;
    double bandwidth_gbs;
    unsigned groups; /* G_*: which measurements run */
} opts;

/* The measurement groups (--only names them). */
enum { G_V2 = 1, G_V1 = 2, G_V3 = 4, G_V3S1 = 8, G_PDL = 16, G_PREFILL = 32, G_DEF = 64, G_ALL = 127 };
static const struct {
    const char *name;
    unsigned bit;
} g_groups[] = {{"v2", G_V2},         {"v1", G_V1},      {"v3", G_V3},          {"v3-split1", G_V3S1},
                {"v3-pdl", G_PDL}, {"prefill", G_PREFILL}, {"default", G_DEF}};

/* The group bits of a comma-separated list of names; 0 on an unknown name. */
static unsigned parse_groups(const char *list)
{
    unsigned bits = 0;
    while (*list) {
        size_t n = strcspn(list, ",");
        unsigned bit = 0;
        for (size_t g = 0; g < sizeof g_groups / sizeof g_groups[0]; g++)
            if (strlen(g_groups[g].name) == n && !strncmp(list, g_groups[g].name, n)) bit = g_groups[g].bit;
        if (!bit) {
            fprintf(stderr, "bench_gpu: unknown group '%.*s' in --only (v2, v1, v3, v3-split1, v3-pdl, prefill, default)\n",
                    (int)n, list);
            return 0;
        }
        bits |= bit;
        list += n;
        if (*list == ',') list++;
    }
    return bits;
}

static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->layers = 16;
    o->prompt = 128;
    o->steps = 32;
    o->pf_prompt = 1024;
    o->batches[0] = 1;
    o->batches[1] = 64;
    o->batches[2] = 256;
    o->n_batches = 3;
    o->groups = G_ALL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--out") && v) o->out = argv[++i];
        else if (!strcmp(a, "--layers") && v) o->layers = atoi(argv[++i]);
        else if (!strcmp(a, "--prompt") && v) o->prompt = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && v) o->steps = atoi(argv[++i]);
        else if (!strcmp(a, "--prefill-prompt") && v) o->pf_prompt = atoi(argv[++i]);
        else if (!strcmp(a, "--tiny")) o->tiny = true;
        else if (!strcmp(a, "--bandwidth") && v) o->bandwidth_gbs = atof(argv[++i]);
        else if (!strcmp(a, "--no-v1")) o->groups &= ~(unsigned)G_V1;
        else if (!strcmp(a, "--no-v3")) o->groups &= ~(unsigned)(G_V3 | G_V3S1 | G_PDL);
        else if (!strcmp(a, "--no-prefill")) o->groups &= ~(unsigned)G_PREFILL;
        else if (!strcmp(a, "--only") && v) {
            if (!(o->groups = parse_groups(argv[++i]))) return -1;
        }
        else if (!strcmp(a, "--batches") && v) {
            o->n_batches = 0;
            for (char *s = argv[++i]; *s && o->n_batches < 8;) {
                o->batches[o->n_batches++] = (int32_t)strtol(s, &s, 10);
                if (*s == ',') s++;
                else break;
            }
        } else {
            fprintf(stderr, "usage: bench_gpu [--out FILE.json] [--layers N] [--prompt N] [--steps N] "
                            "[--batches 1,64,256] [--prefill-prompt 1024] [--tiny] [--bandwidth GBPS] [--no-v1] [--no-v3] [--no-prefill] "
                            "[--only v2,v1,v3,v3-split1,v3-pdl,prefill,default]\n");
            return -1;
        }
    }
    if (o->layers < 1 || o->prompt < 1 || o->steps < 1 || o->n_batches < 1 || o->pf_prompt < 1) {
        fprintf(stderr, "bench_gpu: --layers, --prompt, --steps, --batches and --prefill-prompt must be positive\n");
        return -1;
    }
    for (int i = 0; i < o->n_batches; i++)
        if (o->batches[i] < 1 || o->batches[i] > 1024) {
            fprintf(stderr, "bench_gpu: batch sizes must be in 1..1024\n");
            return -1;
        }
    return 0;
}

static void write_skip(const opts *o, const char *why)
{
    printf("SKIP: no CUDA device (%s)\n", why);
    if (!o->out) return;
    FILE *f = fopen(o->out, "w");
    if (!f) return;
    fprintf(f, "{\"skipped\": \"%s\"}\n", why);
    fclose(f);
}

#ifdef CELINE_HAVE_CUDA

/* ------------------------------------------------------------ the model */
typedef struct bmodel {
    cel_model m;
    cel_layer *layers;
    cel_tensor *t;
    int n;
    uint16_t *pool; /* random BF16 values every matrix points into */
    float *ones;
} bmodel;

static cel_tensor *bt(bmodel *b, const char *name, cel_dtype dt, int64_t in, int64_t out, void *data)
{
    cel_tensor *x = &b->t[b->n++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->dtype = dt;
    x->n_dims = out > 1 ? 2 : 1;
    x->ne[0] = in;
    x->ne[1] = out;
    x->ne[2] = x->ne[3] = 1;
    x->data = data;
    x->nbytes = cel_dtype_row_bytes(dt, in) * (size_t)out;
    return x;
}

/* Llama-3.2-1B's shape (vocab 128256, hidden 2048, 32 heads / 8 KV heads of
 * 64, FFN 8192, tied embeddings, llama3 RoPE scaling) with `layers` layers;
 * tiny: vocab 1024, hidden 256, 4 / 2 heads of 64, FFN 512 (what a dry run
 * in the CPU emulation can afford at the real batch sizes and step counts).
 * Every matrix reads the same random pool: contents do not change speed. */
static int bmodel_build(bmodel *b, int32_t layers, bool tiny)
{
    memset(b, 0, sizeof *b);
    cel_hparams *hp = &b->m.hp;
    hp->arch = CEL_ARCH_LLAMA;
    hp->n_vocab = tiny ? 1024 : 128256;
    hp->n_embd = tiny ? 256 : 2048;
    hp->n_layer = layers;
    hp->n_head = tiny ? 4 : 32;
    hp->n_head_kv = tiny ? 2 : 8;
    hp->head_dim = 64;
    hp->n_ff = tiny ? 512 : 8192;
    hp->n_ctx_train = 131072;
    hp->rms_eps = 1e-5f;
    hp->rope_theta = 500000.0f;
    hp->rope_style = CEL_ROPE_NEOX;
    hp->rope_scaling = CEL_ROPE_SCALING_LLAMA3;
    hp->rope_factor = 32.0f;
    hp->rope_low_freq_factor = 1.0f;
    hp->rope_high_freq_factor = 4.0f;
    hp->rope_orig_ctx = 8192;
    hp->tied_embeddings = true;
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t F = hp->n_ff, V = hp->n_vocab;
    const size_t pool_n = (size_t)V * (size_t)E; /* the largest matrix */
    b->pool = malloc(pool_n * 2);
    b->ones = malloc((size_t)(E > 64 ? E : 64) * sizeof(float));
    b->t = calloc((size_t)(8 + 12 * layers), sizeof *b->t);
    b->layers = calloc((size_t)layers, sizeof *b->layers);
    if (!b->pool || !b->ones || !b->t || !b->layers) return -1;
    cel_rng r;
    cel_rng_seed(&r, 1234);
    for (size_t i = 0; i < pool_n; i += 4) {
        uint64_t v = cel_rng_next(&r);
        for (size_t k = 0; k < 4 && i + k < pool_n; k++) {
            /* uniform in about +-0.03: bf16 with exponent of 2^-6 .. 2^-5 and a random sign and mantissa */
            uint16_t bits = (uint16_t)(v >> (16 * k));
            b->pool[i + k] = (uint16_t)((bits & 0x807f) | 0x3c80);
        }
    }
    for (int64_t i = 0; i < (E > 64 ? E : 64); i++) b->ones[i] = 1.0f;
    b->m.tok_embd = bt(b, "token_embd.weight", CEL_DTYPE_BF16, E, V, b->pool);
    b->m.output = b->m.tok_embd;
    b->m.output_norm = bt(b, "output_norm.weight", CEL_DTYPE_F32, E, 1, b->ones);
    b->m.layers = b->layers;
    for (int32_t l = 0; l < layers; l++) {
        cel_layer *ly = &b->layers[l];
        ly->attn_norm = bt(b, "attn_norm", CEL_DTYPE_F32, E, 1, b->ones);
        ly->ffn_norm = bt(b, "ffn_norm", CEL_DTYPE_F32, E, 1, b->ones);
        ly->wq = bt(b, "attn_q", CEL_DTYPE_BF16, E, Q, b->pool);
        ly->wk = bt(b, "attn_k", CEL_DTYPE_BF16, E, KV, b->pool);
        ly->wv = bt(b, "attn_v", CEL_DTYPE_BF16, E, KV, b->pool);
        ly->wo = bt(b, "attn_output", CEL_DTYPE_BF16, Q, E, b->pool);
        ly->w_gate = bt(b, "ffn_gate", CEL_DTYPE_BF16, E, F, b->pool);
        ly->w_up = bt(b, "ffn_up", CEL_DTYPE_BF16, E, F, b->pool);
        ly->w_down = bt(b, "ffn_down", CEL_DTYPE_BF16, F, E, b->pool);
    }
    b->m.tensors = b->t;
    b->m.n_tensors = (size_t)b->n;
    return 0;
}

static void bmodel_free(bmodel *b)
{
    free(b->pool);
    free(b->ones);
    free(b->t);
    free(b->layers);
}

/* ------------------------------------------------------------- batches */
typedef struct bbatch {
    cel_batch b;
    cel_batch_seq *s;
    int32_t *tokens, *out_rows, *tables;
    int32_t max_blocks; /* per sequence */
    int32_t n_vocab;    /* token ids are below it */
} bbatch;

/* Sequence i of batch owns blocks [i * max_blocks, (i + 1) * max_blocks). */
static void bb_seq(bbatch *bb, int32_t i, int32_t n_past, int32_t n_new, int32_t first)
{
    cel_batch_seq *s = &bb->s[bb->b.n_seqs++];
    s->block_table = bb->tables + (size_t)i * bb->max_blocks;
    s->n_blocks = bb->max_blocks;
    s->n_past = n_past;
    s->n_new = n_new;
    s->first = first;
    for (int32_t j = 0; j < n_new; j++)
        bb->tokens[first + j] = (int32_t)((i * 7919 + (int64_t)(n_past + j) * 104729) % bb->n_vocab);
    bb->out_rows[bb->b.n_out++] = first + n_new - 1;
}

typedef struct decode_res {
    int32_t batch;
    double prefill_tok_s, tok_s_logits, tok_s_argmax, ms_logits, ms_argmax;
    double tok_s_sample, ms_sample, sample_back;   /* GPU sampling, temperature 1, top-p 0.95 (+ share given back) */
    double tok_s_plain, ms_plain, plain_back;      /* GPU sampling, temperature 1, no filter */
    bool finite;
} decode_res;

/* Prefills B sequences, times decode steps (logits to host, then GPU
 * argmax); with prof != NULL, then profiles one more decode step (with GPU
 * argmax, 20 graph replays). */
/* KV blocks one sequence of run_batch needs: the prompt, then five passes
 * (warm-up, logits, argmax, sampling top-p, plain sampling) of steps + 2
 * decode positions each. main sizes the pool with it, so the two agree. */
static int32_t seq_blocks(int32_t prompt, int32_t steps, int32_t block_size)
{
    return (prompt + 5 * (steps + 2) + block_size - 1) / block_size;
}

static int run_batch(cel_backend *be, int32_t B, const opts *o, int32_t max_tokens, int32_t V, float *logits,
                     decode_res *res, cel_cuda_profile *prof)
{
    cel_error err;
    bbatch bb;
    memset(&bb, 0, sizeof bb);
    const int32_t bs = be->block_size;
    bb.max_blocks = seq_blocks(o->prompt, o->steps, bs);
    bb.n_vocab = V;
    if ((int64_t)B * bb.max_blocks > be->n_blocks) {
        fprintf(stderr, "bench_gpu: batch %d needs %d KV blocks, the pool has %d\n", (int)B, (int)(B * bb.max_blocks),
                (int)be->n_blocks);
        return -1;
    }
    bb.s = calloc((size_t)(B > max_tokens ? B : max_tokens), sizeof *bb.s);
    bb.tokens = calloc((size_t)(B > max_tokens ? B : max_tokens), sizeof(int32_t));
    bb.out_rows = calloc((size_t)(B > max_tokens ? B : max_tokens), sizeof(int32_t));
    bb.tables = malloc((size_t)B * bb.max_blocks * sizeof(int32_t));
    int32_t *argmax = calloc((size_t)B, sizeof(int32_t));
    float *lps = calloc((size_t)B, sizeof(float));
    cel_batch_sample *rq = calloc((size_t)B, sizeof *rq);
    if (!bb.s || !bb.tokens || !bb.out_rows || !bb.tables || !argmax || !lps || !rq) return -1;
    cel_rng rng;
    cel_rng_seed(&rng, 1234);
    for (int64_t i = 0; i < (int64_t)B * bb.max_blocks; i++) bb.tables[i] = (int32_t)i;
    memset(res, 0, sizeof *res);
    res->batch = B;
    res->finite = true;
    int rc = 0;

    /* prefill: whole prompts packed into chunks of max_tokens (a prompt
     * longer than that is split); the first chunk once untimed before, so
     * the figure leaves out first-launch costs (lazy kernel loading, cuBLAS
     * heuristics) - the timed pass rewrites the same KV positions */
    double t0 = cel_now_sec();
    for (int warm = 1; warm >= 0; warm--) {
        t0 = cel_now_sec();
        int32_t done_seq = 0, done_tok = 0;
        while (done_seq < B) {
            bb.b.n_seqs = 0;
            bb.b.n_out = 0;
            int32_t T = 0;
            while (done_seq < B && T < max_tokens) {
                int32_t n = o->prompt - done_tok;
                if (n > max_tokens - T) n = max_tokens - T;
                bb_seq(&bb, done_seq, done_tok, n, T);
                T += n;
                done_tok += n;
                if (done_tok == o->prompt) {
                    done_seq++;
                    done_tok = 0;
                }
            }
            bb.b.n_tokens = T;
            bb.b.tokens = bb.tokens;
            bb.b.seqs = bb.s;
            bb.b.out_rows = bb.out_rows;
            bb.b.logits = logits;
            if (be->v->forward(be, &bb.b, &err) != CEL_OK) {
                fprintf(stderr, "bench_gpu: prefill: %s\n", err.msg);
                rc = -1;
                goto out;
            }
            if (warm) break;
        }
    }
    res->prefill_tok_s = (double)B * o->prompt / (cel_now_sec() - t0);

    /* decode: two warm-up steps (the second captures the CUDA graph), then
     * timed steps; passes: logits to host, GPU argmax, GPU sampling with
     * temperature 1 + top-p 0.95 (the RL setting; rows past the kernel's
     * candidate cap come back as logits, counted), GPU sampling with
     * temperature 1 and no filter. Sampling rows also return the logprob. */
    int32_t pos = o->prompt;
    for (int pass = 0; pass < 4; pass++) {
        cel_cuda_info i0, i1;
        cel_backend_cuda_info(be, &i0);
        for (int32_t step = 0; step < o->steps + 2; step++) {
            if (step == 2) t0 = cel_now_sec();
            bb.b.n_seqs = 0;
            bb.b.n_out = 0;
            for (int32_t i = 0; i < B; i++) bb_seq(&bb, i, pos, 1, i);
            bb.b.n_tokens = B;
            bb.b.tokens = bb.tokens;
            bb.b.seqs = bb.s;
            bb.b.out_rows = bb.out_rows;
            bb.b.logits = logits;
            bb.b.sample = NULL;
            if (pass >= 2) {
                for (int32_t i = 0; i < B; i++)
                    rq[i] = (cel_batch_sample){.on = true, .want_logprob = true, .temperature = 1.0f,
                                               .top_p = pass == 2 ? 0.95f : 1.0f, .u = cel_rng_uniform(&rng)};
                bb.b.sample = rq;
                bb.b.tokens_out = argmax;
                bb.b.logprob_out = lps;
            }
            const bool bracket = pass == 1 && step == 2;
            if (bracket) ncu_bracket(true);
            cel_status st = pass == 1 ? cel_backend_cuda_forward_argmax(be, &bb.b, argmax, &err)
                                      : be->v->forward(be, &bb.b, &err);
            if (bracket) ncu_bracket(false); /* forward_argmax waited for the step */
            if (st != CEL_OK) {
                fprintf(stderr, "bench_gpu: decode (batch %d): %s\n", (int)B, err.msg);
                rc = -1;
                goto out;
            }
            pos++;
        }
        double dt = cel_now_sec() - t0;
        double tok_s = (double)B * o->steps / dt, ms = dt * 1e3 / o->steps;
        cel_backend_cuda_info(be, &i1);
        const double back = (double)(i1.sample_given_back - i0.sample_given_back) / ((double)B * (o->steps + 2));
        bb.b.sample = NULL;
        if (pass == 2) {
            res->tok_s_sample = tok_s;
            res->ms_sample = ms;
            res->sample_back = back;
        } else if (pass == 3) {
            res->tok_s_plain = tok_s;
            res->ms_plain = ms;
            res->plain_back = back;
        } else if (pass == 0) {
            res->tok_s_logits = tok_s;
            res->ms_logits = ms;
            for (int64_t i = 0; i < (int64_t)B * V; i += 997)
                if (!isfinite(logits[i])) res->finite = false;
        } else {
            res->tok_s_argmax = tok_s;
            res->ms_argmax = ms;
        }
    }
    if (prof) {
        bb.b.n_seqs = 0;
        bb.b.n_out = 0;
        for (int32_t i = 0; i < B; i++) bb_seq(&bb, i, pos, 1, i);
        bb.b.n_tokens = B;
        if (cel_backend_cuda_profile(be, &bb.b, true, 20, prof, &err) != CEL_OK) {
            fprintf(stderr, "bench_gpu: profile (batch %d): %s\n", (int)B, err.msg);
            rc = -1;
        }
    }
out:
    free(bb.s);
    free(bb.tokens);
    free(bb.out_rows);
    free(bb.tables);
    free(argmax);
    free(lps);
    free(rq);
    return rc;
}

/* Device-to-device copy bandwidth (bytes read + written per second). */
static double measure_copy_gbs(void)
{
    const size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0, e1;
    double gbs = 0.0;
    if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) goto out;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e0, 0);
    for (int i = 0; i < 5; i++) cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1, 0);
    cudaEventSynchronize(e1);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, e0, e1);
    if (ms > 0.0f) gbs = 2.0 * 5.0 * (double)n / (ms * 1e-3) / 1e9;
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
out:
    cudaGetLastError();
    if (a) cudaFree(a);
    if (b) cudaFree(b);
    return gbs;
}

/* Prints where one decode step's GPU time goes. */
static void print_profile(const cel_cuda_profile *p, double bytes_tok)
{
    printf("batch 1 decode step, %s path (attention splits %d): %d launches; kernels %.3f ms (sum of kernel times, "
           "%.0f GB/s over the weights); one graph replay %.3f ms (so launches cost %.3f ms beyond the kernels)\n",
           p->decode, p->attn_splits, p->launches, p->kernel_ms,
           p->kernel_ms > 0 ? bytes_tok / (p->kernel_ms * 1e-3) / 1e9 : 0.0, p->graph_ms,
           p->graph_ms > 0 ? p->graph_ms - p->kernel_ms : 0.0);
    printf("  %-14s %8s %9s %6s %10s %9s\n", "kind", "launches", "ms", "share", "us/launch", "GB/s");
    for (int k = 0; k < p->n_kinds; k++) {
        if (!p->kind[k].launches) continue;
        const double ms = p->kind[k].ms;
        printf("  %-14s %8d %9.4f %5.1f%% %10.2f", p->kind[k].name, p->kind[k].launches, ms,
               p->kernel_ms > 0 ? 100.0 * ms / p->kernel_ms : 0.0, 1e3 * ms / p->kind[k].launches);
        if (p->kind[k].bytes > 0 && ms > 0) printf(" %9.0f", p->kind[k].bytes / (ms * 1e-3) / 1e9);
        printf("\n");
    }
}

static void json_profile(FILE *f, const cel_cuda_profile *p, const char *label)
{
    if (!label) label = p->decode;
    fprintf(f,
            "{\"decode\": \"%s\", \"attn_splits\": %d, \"launches\": %d, \"kernel_ms\": %.4f, \"graph_ms\": %.4f, "
            "\"kinds\": [",
            label, p->attn_splits, p->launches, p->kernel_ms, p->graph_ms);
    int first = 1;
    for (int k = 0; k < p->n_kinds; k++) {
        if (!p->kind[k].launches) continue;
        fprintf(f, "%s{\"kind\": \"%s\", \"launches\": %d, \"ms\": %.4f, \"gbs\": %.1f}", first ? "" : ", ",
                p->kind[k].name, p->kind[k].launches, p->kind[k].ms,
                p->kind[k].bytes > 0 && p->kind[k].ms > 0 ? p->kind[k].bytes / (p->kind[k].ms * 1e-3) / 1e9 : 0.0);
        first = 0;
    }
    fprintf(f, "]}");
}

/* The "runs" array of the JSON: one object per measured batch size. */
static void json_runs(FILE *f, const decode_res *res, int n, double roof)
{
    fprintf(f, "[\n");
    for (int i = 0; i < n; i++)
        fprintf(f,
                "    {\"batch\": %d, \"prefill_tok_s\": %.1f, \"decode_tok_s_logits\": %.1f, "
                "\"decode_ms_step_logits\": %.3f, \"decode_tok_s_argmax\": %.1f, \"decode_ms_step_argmax\": "
                "%.3f, \"decode_tok_s_sample\": %.1f, \"decode_ms_step_sample\": %.3f, "
                "\"sample_given_back\": %.4f, \"decode_tok_s_sample_plain\": %.1f, \"decode_ms_step_sample_plain\": "
                "%.3f, \"sample_plain_given_back\": %.4f, "
                "\"roofline_pct_logits\": %.1f, \"roofline_pct_argmax\": %.1f, \"finite\": %s}%s\n",
                (int)res[i].batch, res[i].prefill_tok_s, res[i].tok_s_logits, res[i].ms_logits, res[i].tok_s_argmax,
                res[i].ms_argmax, res[i].tok_s_sample, res[i].ms_sample, res[i].sample_back, res[i].tok_s_plain,
                res[i].ms_plain, res[i].plain_back, roof > 0 ? 100.0 * res[i].tok_s_logits / res[i].batch / roof : 0.0,
                roof > 0 ? 100.0 * res[i].tok_s_argmax / res[i].batch / roof : 0.0, res[i].finite ? "true" : "false",
                i + 1 < n ? "," : "");
    fprintf(f, "  ]");
}

/* A batch-1 summary object (v1_batch1 / v3_batch1). */
static void json_batch1(FILE *f, const char *key, const decode_res *r, double roof)
{
    fprintf(f,
            ",\n  \"%s\": {\"decode_tok_s_logits\": %.1f, \"decode_ms_step_logits\": %.3f, "
            "\"decode_tok_s_argmax\": %.1f, \"decode_ms_step_argmax\": %.3f, \"roofline_pct_logits\": %.1f, "
            "\"roofline_pct_argmax\": %.1f}",
            key, r->tok_s_logits, r->ms_logits, r->tok_s_argmax, r->ms_argmax,
            roof > 0 ? 100.0 * r->tok_s_logits / roof : 0.0, roof > 0 ? 100.0 * r->tok_s_argmax / roof : 0.0);
}

static void print_res(const decode_res *r, const char *path)
{
    printf("batch %4d%s: prefill %8.0f tok/s | decode %9.0f tok/s (%.2f ms/step, logits to host) | %9.0f tok/s "
           "(%.2f ms/step, GPU argmax) | %9.0f tok/s (%.2f ms/step, GPU sampling T 1 top-p 0.95, %.1f%% rows given "
           "back) | %9.0f tok/s (%.2f ms/step, GPU sampling T 1)%s\n",
           (int)r->batch, path, r->prefill_tok_s, r->tok_s_logits, r->ms_logits, r->tok_s_argmax, r->ms_argmax,
           r->tok_s_sample, r->ms_sample, 100.0 * r->sample_back, r->tok_s_plain, r->ms_plain,
           r->finite ? "" : "  NON-FINITE LOGITS");
}

/* The path choices of the next backend, named in full (the engine's
 * defaults, cu_defaults in engine/cuda/backend.c, change as opt-in paths
 * prove themselves, and each group must measure what its name says):
 * decode v1 / v2 / v3, PDL 0 / 1, GEMV split, L2 prefetch bytes (NULL: the
 * engine's default, which without PDL is unused), q/k/v fusion, prefill
 * kernel, v3 attention chunk, v3 norm placement and v3 q/k/v post-process
 * in the attention (NULL: the engine's default, which outside v3 is
 * unused). */
static cel_status create_path(const cel_model *m, const cel_backend_params *p, const char *decode, const char *pdl,
                              const char *split, const char *pf, const char *fuse, const char *prefill,
                              const char *chunk, const char *norm, const char *ra, cel_backend **be, cel_error *err)
{
    enum { NV = 9 };
    static const char *const vars[NV] = {"CELINE_CUDA_DECODE",       "CELINE_CUDA_PDL",      "CELINE_CUDA_GEMV_SPLIT",
                                         "CELINE_CUDA_PDL_PREFETCH", "CELINE_CUDA_FUSE_QKV", "CELINE_CUDA_PREFILL",
                                         "CELINE_CUDA_ATTN_CHUNK",   "CELINE_CUDA_NORM",     "CELINE_CUDA_ROPE_IN_ATTN"};
    const char *vals[NV] = {decode, pdl, split, pf, fuse, prefill, chunk, norm, ra};
    char *saved[NV]; /* the caller's environment, put back afterwards (the "default" group reads it) */
    for (int i = 0; i < NV; i++) {
        const char *old = getenv(vars[i]);
        saved[i] = old ? strdup(old) : NULL;
        if (vals[i]) setenv(vars[i], vals[i], 1);
        else unsetenv(vars[i]);
    }
    cel_status st = cel_backend_cuda_create(m, p, be, err);
    for (int i = 0; i < NV; i++) {
        if (saved[i]) setenv(vars[i], saved[i], 1);
        else unsetenv(vars[i]);
        free(saved[i]);
    }
    return st;
}

/* "batch 1<label> vs roofline: ..." for a batch-1 result (nothing without a roofline). */
static void print_roofline(const char *label, const decode_res *r, double roof)
{
    if (roof > 0)
        printf("batch 1%s vs roofline: %.1f%% (logits to host), %.1f%% (GPU argmax)\n", label,
               100.0 * r->tok_s_logits / roof, 100.0 * r->tok_s_argmax / roof);
}

/* Every --batches size on be, each result printed with label, batch 1's
 * share of the roofline too; the first batch-1 run is profiled into prof
 * (when not NULL; *have_prof is then set) and its profile printed. Stops at
 * the first failure, counted in *failed; returns how many ran. */
static int run_batches(cel_backend *be, const opts *o, int32_t max_tokens, int32_t V, float *logits, decode_res *res,
                       const char *label, cel_cuda_profile *prof, bool *have_prof, double roof, double bytes_tok,
                       int *failed)
{
    int n = 0;
    for (int i = 0; i < o->n_batches; i++) {
        const bool first1 = o->batches[i] == 1 && prof && !*have_prof;
        if (run_batch(be, o->batches[i], o, max_tokens, V, logits, &res[n], first1 ? prof : NULL) != 0) {
            ++*failed;
            break;
        }
        print_res(&res[n], label);
        if (res[n].batch == 1) print_roofline(label, &res[n], roof);
        if (first1) {
            *have_prof = true;
            print_profile(prof, bytes_tok);
        }
        n++;
    }
    return n;
}

static void logger(void *ud, cel_log_level level, const char *msg)
{
    (void)ud;
    (void)level;
    fprintf(stderr, "%s\n", msg);
}

int main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o) != 0) return 2;
#ifdef CEL_CUDA_EMU
    cel__emu_set_device_memory((size_t)16 << 30); /* bench_gpu_emu: room for the full-width model */
#endif
    setenv("CELINE_CUDA_SAMPLE", "1", 1); /* the sampling passes need it, whatever the engine's default */
    int ndev = 0;
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev <= 0) {
        write_skip(&o, ce != cudaSuccess ? cudaGetErrorString(ce) : "0 devices");
        return 0;
    }
    double copy_gbs = measure_copy_gbs();

    bmodel bm;
    double t0 = cel_now_sec();
    if (bmodel_build(&bm, o.layers, o.tiny) != 0) {
        fprintf(stderr, "bench_gpu: out of host memory for the model\n");
        return 1;
    }
    const cel_hparams *hp = &bm.m.hp;
    /* the long-prompt prefill group runs PF_B sequences of --prefill-prompt
     * tokens and 1 step; max_b, the most sequences of any run, sizes the
     * logits buffer */
    enum { PF_B = 8 };
    const int32_t pf_prompt = o.pf_prompt;
    int32_t max_b = (o.groups & G_PREFILL) ? PF_B : 1;
    for (int i = 0; i < o.n_batches; i++)
        if (o.batches[i] > max_b) max_b = o.batches[i];
    cel_backend_params p;
    memset(&p, 0, sizeof p);
    p.block_size = 16;
    p.max_batch_tokens = max_b > 512 ? max_b : 512;
    /* + 1: the pool needs 2 blocks at least */
    size_t kv_blocks = (size_t)max_b * (size_t)seq_blocks(o.prompt, o.steps, 16) + 1;
    const size_t pf_blocks = (size_t)PF_B * (size_t)seq_blocks(pf_prompt, 1, 16) + 1;
    if ((o.groups & G_PREFILL) && kv_blocks < pf_blocks) kv_blocks = pf_blocks;
    const size_t long_blocks = (size_t)seq_blocks(pf_prompt, o.steps, 16) + 1; /* the PDL group's long prompt */
    if ((o.groups & G_PDL) && kv_blocks < long_blocks) kv_blocks = long_blocks;
    p.kv_bytes = cel_backend_kv_block_bytes(hp, 16, CEL_BACKEND_CUDA) * kv_blocks;
    p.log.fn = logger;
    p.log.min_level = CEL_LOG_INFO;
    cel_backend *be = NULL;
    cel_error err;
    /* the v2 group's backend, which also says what the device is */
    if (create_path(&bm.m, &p, "v2", "0", "0", NULL, "1", "per-token", NULL, NULL, NULL, &be, &err) != CEL_OK) {
        fprintf(stderr, "bench_gpu: %s\n", err.msg);
        bmodel_free(&bm);
        return 1;
    }
    double load_s = cel_now_sec() - t0;
    cel_cuda_info info;
    cel_backend_cuda_info(be, &info);
    double bw = o.bandwidth_gbs > 0 ? o.bandwidth_gbs : info.mem_bandwidth_gbs;
    if (bw <= 0 && strstr(info.device, "H100")) bw = 3350.0; /* SXM5 HBM3 datasheet figure */
    if (bw <= 0 && strstr(info.device, "H200")) bw = 4800.0;
    const double E = hp->n_embd, Q = (double)hp->n_head * hp->head_dim, KV = (double)hp->n_head_kv * hp->head_dim;
    const double bytes_tok = 2.0 * (hp->n_layer * ((Q + 2 * KV) * E + Q * E + 3.0 * hp->n_ff * E) + (double)hp->n_vocab * E);
    /* pinned, so the backend copies logits straight into it (as an engine that
     * allocates its logits buffer with cudaHostAlloc would); CELINE_BENCH_PAGEABLE=1
     * measures the staging path instead */
    float *logits = NULL;
    const char *pg = getenv("CELINE_BENCH_PAGEABLE");
    bool pinned = !(pg && !strcmp(pg, "1")) &&
                  cudaHostAlloc((void **)&logits, (size_t)max_b * hp->n_vocab * sizeof(float), cudaHostAllocDefault) ==
                      cudaSuccess;
    if (!pinned) {
        cudaGetLastError();
        logits = malloc((size_t)max_b * hp->n_vocab * sizeof(float));
    }
    if (!logits) return 1;
    printf("bench_gpu: %s (sm_%d%d, %d SMs), driver %d, runtime %d; bandwidth %.0f GB/s (spec), %.0f GB/s "
           "(measured copy)\n",
           info.device, info.cc_major, info.cc_minor, info.n_sm, info.driver_version, info.runtime_version,
           info.mem_bandwidth_gbs, copy_gbs);
    printf("model: %s, %d layers, BF16, %.2f GB of weights read per token; loaded in %.1f s; "
           "logits buffer %s\n",
           o.tiny ? "tiny Llama (--tiny)" : "Llama-3.2-1B shape", (int)hp->n_layer, bytes_tok / 1e9, load_s,
           pinned ? "pinned" : "pageable");

    decode_res res[8];
    cel_cuda_profile prof[5]; /* v2 (default), v1, v3, v3 with unsplit GEMVs, v3 with PDL */
    bool have_prof = false;
    int ok = 0, failed = 0; /* failed: groups that could not create their backend or run */
    for (int i = 0; i < o.n_batches && (o.groups & G_V2); i++) {
        cel_cuda_profile *pp = o.batches[i] == 1 && !have_prof ? &prof[0] : NULL;
        if (run_batch(be, o.batches[i], &o, p.max_batch_tokens, hp->n_vocab, logits, &res[i], pp) != 0) break;
        if (pp) have_prof = true;
        ok++;
        print_res(&res[i], " (v2)");
    }
    double roof = bw > 0 ? bw * 1e9 / bytes_tok : 0.0;
    for (int i = 0; i < ok; i++)
        if (res[i].batch == 1 && roof > 0)
            printf("batch 1 vs roofline (%.0f tok/s at %.0f GB/s): %.1f%% (logits to host), %.1f%% (GPU argmax)\n", roof,
                   bw, 100.0 * res[i].tok_s_logits / roof, 100.0 * res[i].tok_s_argmax / roof);

    if (have_prof) print_profile(&prof[0], bytes_tok);
    if ((o.groups & G_V2) && ok != o.n_batches) failed++;
    /* the other groups need the default path's batch 1 to have worked when it ran */
    const bool go_on = !(o.groups & G_V2) || have_prof;

    /* the other decode paths, for comparison, one backend at a time (one
     * model's weights on the card): v1 at batch 1, v3 at every batch size */
    decode_res res_v1, res_v3[8], res_s1;
    bool have_v1 = false, have_v3_1 = false, have_s1 = false;
    int ok3 = 0;
    for (int alt = 0; alt < 3 && go_on; alt++) {
        const char *path = alt ? "v3" : "v1";
        if (!(o.groups & (alt == 0 ? G_V1 : alt == 1 ? G_V3 : G_V3S1))) continue;
        cel_backend_free(be);
        be = NULL;
        cel_status cst = create_path(&bm.m, &p, path, "0", alt == 2 ? "1" : "0", NULL, "1", "per-token", "64", "producer", "0", &be, &err);
        if (cst != CEL_OK) {
            fprintf(stderr, "bench_gpu: %s backend: %s\n", path, err.msg);
            failed++;
            continue;
        }
        if (!alt) {
            if (run_batch(be, 1, &o, p.max_batch_tokens, hp->n_vocab, logits, &res_v1, &prof[1]) != 0) {
                failed++;
                continue;
            }
            have_v1 = true;
            print_res(&res_v1, " (v1)");
            print_roofline(" (v1)", &res_v1, roof);
            print_profile(&prof[1], bytes_tok);
            continue;
        }
        if (alt == 2) {
            if (run_batch(be, 1, &o, p.max_batch_tokens, hp->n_vocab, logits, &res_s1, &prof[3]) != 0) {
                failed++;
                continue;
            }
            have_s1 = true;
            print_res(&res_s1, " (v3, GEMV split 1)");
            print_roofline(" (v3, GEMV split 1)", &res_s1, roof);
            printf("(v3 with CELINE_CUDA_GEMV_SPLIT=1) ");
            print_profile(&prof[3], bytes_tok);
            continue;
        }
        ok3 = run_batches(be, &o, p.max_batch_tokens, hp->n_vocab, logits, res_v3, " (v3)", &prof[2], &have_v3_1, roof,
                          bytes_tok, &failed);
    }
    /* programmatic dependent launch on the v3 path (CELINE_CUDA_PDL=1, sm_90+)
     * at batch 1: the GEMVs' L2 prefetch while they wait at 2 KiB per warp
     * (profiled: the graph figure is the one PDL changes), off, and 8 KiB;
     * the q/k/v post-process as its own kernel; attention chunks of 16 and
     * 32 positions (CELINE_CUDA_ATTN_CHUNK; 64 elsewhere), the norms in the
     * consuming GEMVs (CELINE_CUDA_NORM=consumer), also at a
     * prompt of --prefill-prompt tokens (1024: the "p1024" keys), where a
     * chunk's length matters more */
    enum { N_PDLV = 12 };
    static const struct {
        const char *key, *label, *pf, *fuse, *chunk, *norm, *ra;
        bool long_prompt; /* --prefill-prompt tokens instead of --prompt */
    } pdlv[N_PDLV] = {
        {"v3_pdl_batch1", " (v3 + PDL)", "2048", "1", "64", "producer", "0", false},
        {"v3_pdl_pf0_batch1", " (v3 + PDL, no L2 prefetch)", "0", "1", "64", "producer", "0", false},
        {"v3_pdl_pf8k_batch1", " (v3 + PDL, 8 KiB L2 prefetch per warp)", "8192", "1", "64", "producer", "0", false},
        {"v3_pdl_nofuse_batch1", " (v3 + PDL, q/k/v post-process as its own kernel)", "2048", "0", "64", "producer", "0", false},
        {"v3_pdl_pf0_nofuse_batch1", " (v3 + PDL, no prefetch, q/k/v post-process as its own kernel)", "0", "0", "64", "producer", "0", false},
        {"v3_pdl_pf0_c16_batch1", " (v3 + PDL, no prefetch, attention chunks of 16)", "0", "1", "16", "producer", "0", false},
        {"v3_pdl_pf0_c32_batch1", " (v3 + PDL, no prefetch, attention chunks of 32)", "0", "1", "32", "producer", "0", false},
        {"v3_pdl_pf0_c16_nofuse_batch1", " (v3 + PDL, no prefetch, chunks of 16, separate q/k/v post-process)", "0", "0",
         "16", "producer", "0", false},
        {"v3_pdl_pf0_c16_nofuse_nc_batch1", " (v3 + PDL, no prefetch, chunks of 16, separate q/k/v, norms in consumers)",
         "0", "0", "16", "consumer", "0", false},
        {"v3_pdl_pf0_c16_nofuse_nc_ra_batch1", " (the defaults + q/k/v post-process in the attention)", "0", "0", "16",
         "consumer", "1", false},
        {"v3_pdl_pf0_p1024_batch1", " (v3 + PDL, no prefetch, long prompt)", "0", "1", "64", "producer", "0", true},
        {"v3_pdl_pf0_c16_p1024_batch1", " (v3 + PDL, no prefetch, chunks of 16, long prompt)", "0", "1", "16", "producer", "0", true}};
    decode_res res_pdl[N_PDLV];
    bool have_pdl[N_PDLV] = {false}, have_pdl_prof = false;
    for (int v = 0; v < N_PDLV && (o.groups & G_PDL) && go_on && info.cc_major >= 9; v++) {
        cel_backend_free(be);
        be = NULL;
        cel_status cst = create_path(&bm.m, &p, "v3", "1", "0", pdlv[v].pf, pdlv[v].fuse, "per-token", pdlv[v].chunk,
                                     pdlv[v].norm, pdlv[v].ra, &be, &err);
        if (cst != CEL_OK) {
            fprintf(stderr, "bench_gpu: v3 + PDL backend: %s\n", err.msg);
            failed++;
            continue;
        }
        opts ov = o;
        if (pdlv[v].long_prompt) ov.prompt = pf_prompt;
        if (run_batch(be, 1, &ov, p.max_batch_tokens, hp->n_vocab, logits, &res_pdl[v], v == 0 ? &prof[4] : NULL) != 0) {
            failed++;
            continue;
        }
        have_pdl[v] = true;
        if (v == 0) have_pdl_prof = true;
        print_res(&res_pdl[v], pdlv[v].label);
        print_roofline(pdlv[v].label, &res_pdl[v], roof);
        if (v == 0) printf("v3 + PDL: one graph replay %.3f ms\n", prof[4].graph_ms);
    }
    /* long-prompt prefill (8 x 1024 tokens, chunks of max_batch_tokens):
     * the per-token attention kernel vs the tiled one (CELINE_CUDA_PREFILL=tiled) */
    decode_res res_pf[2];
    bool have_pf[2] = {false, false};
    for (int t = 0; t < 2 && (o.groups & G_PREFILL) && go_on; t++) {
        cel_backend_free(be);
        be = NULL;
        cel_status cst = create_path(&bm.m, &p, "v2", "0", "0", NULL, "1", t ? "tiled" : "per-token", NULL, NULL, NULL, &be, &err);
        if (cst != CEL_OK) {
            fprintf(stderr, "bench_gpu: prefill backend: %s\n", err.msg);
            failed++;
            continue;
        }
        opts op = o;
        op.prompt = pf_prompt;
        op.steps = 1;
        if (run_batch(be, PF_B, &op, p.max_batch_tokens, hp->n_vocab, logits, &res_pf[t], NULL) != 0) {
            failed++;
            continue;
        }
        have_pf[t] = true;
        printf("prefill %d x %d tokens, %s attention: %.1f tok/s\n", PF_B, pf_prompt, t ? "tiled" : "per-token",
               res_pf[t].prefill_tok_s);
    }
    /* the engine as the environment configures it - with no CELINE_CUDA_*
     * path variable set (tests/gpu/run.sh), its defaults (cu_defaults):
     * what a user gets - at every batch size */
    decode_res res_def[8];
    int ok_def = 0;
    if ((o.groups & G_DEF) && go_on) {
        cel_backend_free(be);
        be = NULL;
        if (cel_backend_cuda_create(&bm.m, &p, &be, &err) != CEL_OK) {
            fprintf(stderr, "bench_gpu: default backend: %s\n", err.msg);
            failed++;
        } else {
            ok_def = run_batches(be, &o, p.max_batch_tokens, hp->n_vocab, logits, res_def, " (engine defaults)", NULL,
                                 NULL, roof, bytes_tok, &failed);
        }
    }
    const decode_res *v3_1 = NULL;
    for (int i = 0; i < ok3; i++)
        if (res_v3[i].batch == 1) v3_1 = &res_v3[i];

    if (o.out) {
        FILE *f = fopen(o.out, "w");
        if (!f) {
            fprintf(stderr, "bench_gpu: cannot write %s\n", o.out);
        } else {
            fprintf(f, "{\n  \"device\": \"%s\", \"cc\": \"%d.%d\", \"sms\": %d, \"driver\": %d, \"runtime\": %d,\n",
                    info.device, info.cc_major, info.cc_minor, info.n_sm, info.driver_version, info.runtime_version);
            fprintf(f, "  \"bandwidth_gbs_spec\": %.1f, \"bandwidth_gbs_used\": %.1f, \"copy_gbs_measured\": %.1f,\n",
                    info.mem_bandwidth_gbs, bw, copy_gbs);
            fprintf(f, "  \"model\": {\"shape\": \"%s\", \"layers\": %d, \"dtype\": \"bf16\", "
                       "\"weight_bytes_per_token\": %.0f},\n",
                    o.tiny ? "tiny" : "llama-3.2-1b", (int)hp->n_layer, bytes_tok);
            fprintf(f, "  \"prompt\": %d, \"steps\": %d, \"graphs\": %s, \"logits_host_pinned\": %s, \"load_s\": %.2f,\n",
                    (int)o.prompt, (int)o.steps, info.graphs ? "true" : "false", pinned ? "true" : "false", load_s);
            fprintf(f, "  \"roofline_tok_s_batch1\": %.1f,\n  \"runs\": ", roof);
            json_runs(f, res, ok, roof);
            if (ok3 > 0) {
                fprintf(f, ",\n  \"v3_runs\": ");
                json_runs(f, res_v3, ok3, roof);
            }
            if (ok_def > 0) {
                fprintf(f, ",\n  \"default_runs\": ");
                json_runs(f, res_def, ok_def, roof);
            }
            if (have_v1) json_batch1(f, "v1_batch1", &res_v1, roof);
            if (v3_1) json_batch1(f, "v3_batch1", v3_1, roof);
            if (have_s1) json_batch1(f, "v3_split1_batch1", &res_s1, roof);
            for (int v = 0; v < N_PDLV; v++)
                if (have_pdl[v]) json_batch1(f, pdlv[v].key, &res_pdl[v], roof);
            if (have_pf[0] || have_pf[1])
                fprintf(f, ",\n  \"prefill_long\": {\"batch\": %d, \"prompt\": %d, \"per_token_tok_s\": %.1f, "
                           "\"tiled_tok_s\": %.1f}",
                        PF_B, pf_prompt, have_pf[0] ? res_pf[0].prefill_tok_s : 0.0, have_pf[1] ? res_pf[1].prefill_tok_s : 0.0);
            /* the profiles measured, in prof[]'s order: v2, v1, v3, v3-split1, v3-pdl */
            const bool have_p[5] = {have_prof, have_v1, have_v3_1, have_s1, have_pdl_prof};
            static const char *const p_label[5] = {NULL, NULL, NULL, "v3-split1", "v3-pdl"};
            int n_p = 0;
            for (int k = 0; k < 5; k++) {
                if (!have_p[k]) continue;
                fprintf(f, n_p++ ? ",\n    " : ",\n  \"profile_batch1\": [");
                json_profile(f, &prof[k], p_label[k]);
            }
            if (n_p) fprintf(f, "]");
            fprintf(f, "\n}\n");
            fclose(f);
        }
    }
    if (pinned) cudaFreeHost(logits);
    else free(logits);
    cel_backend_free(be);
    bmodel_free(&bm);
    return failed ? 1 : 0;
}

#else /* built without CUDA */

int main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o) != 0) return 2;
    write_skip(&o, "celine was built without CUDA");
    return 0;
}
#endif
