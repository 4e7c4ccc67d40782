/*
 * bench_kernels - throughput of the CPU backend's matmul per weight dtype,
 * for decode (1 row) and batches (16, 64 rows; more with --rows), on the
 * matrix shapes of a Qwen2.5-0.5B-sized model; optionally whole forward
 * passes of a random model of that shape (--forward).
 *
 *   bench_kernels [--threads N] [--isa scalar|avx2] [--dtype NAME] [--rows LIST]
 *                 [--seconds S] [--forward] [--forward-dtype NAME]
 *
 * Matmul lines: GFLOP/s = 2 * rows * in * out / time; GB/s = weight bytes
 * read / time (the figure that bounds decode). Forward lines: tokens/s for
 * prefill (one 512-token prompt, chunked by --chunk), single-stream decode and
 * aggregate decode of 16 / 64 parallel sequences at 256 cached tokens each.
 *
 * Every figure is given per wall-clock second and per CPU-second of this
 * process (all its threads): on a machine shared with other jobs the wall
 * figure drops, the CPU one much less. The CPU figure is per core: it
 * includes the pool's spin-waiting, so with several threads it is a lower
 * bound of what each core does.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "celine/common.h"
#include "engine/backend.h"
#include "engine/cpu/cpu.h"
#include "engine/ops.h"

static void *xalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) {
        fprintf(stderr, "bench_kernels: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Random weights quantized to t, rows of n_in. */
static void fill_tensor(cel_tensor *w, cel_dtype t, int64_t n_in, int64_t n_out, uint64_t seed, float scale)
{
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "bench_%s_%lldx%lld", cel_dtype_name(t), (long long)n_in, (long long)n_out);
    w->dtype = t;
    w->n_dims = 2;
    w->ne[0] = n_in;
    w->ne[1] = n_out;
    w->ne[2] = w->ne[3] = 1;
    size_t rb = cel_dtype_row_bytes(t, n_in);
    w->nbytes = rb * (size_t)n_out;
    w->data = xalloc(w->nbytes);
    w->owned = true;
    float *row = xalloc((size_t)n_in * sizeof *row);
    cel_rng r;
    cel_rng_seed(&r, seed);
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++) row[i] = (float)((cel_rng_uniform(&r) * 2 - 1) * scale);
        cel_quant_row(t, row, (uint8_t *)w->data + (size_t)o * rb, n_in);
    }
    free(row);
}

static double cpu_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Seconds per call, wall clock; *cpu gets CPU seconds (all threads) per call. */
static double time_matmul(const cel__kern *k, cel_pool *pool, const cel_tensor *w, const float *x, int64_t rows,
                          float *y, void *scratch, double seconds, double *cpu)
{
    cel__mm mm = {w, y, (size_t)w->ne[1]};
    cel__matmul(k, pool, x, (size_t)w->ne[0], rows, w->ne[0], &mm, 1, scratch); /* warm */
    int iters = 0;
    double t0 = cel_now_sec(), c0 = cpu_sec(), t;
    do {
        cel__matmul(k, pool, x, (size_t)w->ne[0], rows, w->ne[0], &mm, 1, scratch);
        iters++;
        t = cel_now_sec() - t0;
    } while (t < seconds);
    *cpu = (cpu_sec() - c0) / iters;
    return t / iters;
}

static bool parse_dtype(const char *s, cel_dtype *t)
{
    const cel_dtype all[] = {CEL_DTYPE_F32,  CEL_DTYPE_F16,  CEL_DTYPE_BF16, CEL_DTYPE_Q8_0, CEL_DTYPE_Q5_0,
                             CEL_DTYPE_Q5_1, CEL_DTYPE_Q4_0, CEL_DTYPE_Q4_K, CEL_DTYPE_Q5_K, CEL_DTYPE_Q6_K};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcasecmp(s, cel_dtype_name(all[i])) == 0) {
            *t = all[i];
            return true;
        }
    return false;
}

/* ------------------------------------------------------- model forward */

typedef struct bmodel {
    cel_model m;
    cel_tensor *t;
    cel_layer *layers;
    int nt;
} bmodel;

/* A Qwen2.5-0.5B-shaped model (24 layers, 896 wide, 14/2 heads of 64, FFN
 * 4864, 151936 tokens, tied embeddings, q/k/v biases) with random weights. */
static bmodel *make_qwen05(cel_dtype wt)
{
    bmodel *b = calloc(1, sizeof *b);
    const int E = 896, H = 14, Hkv = 2, D = 64, F = 4864, V = 151936, L = 24;
    b->t = calloc(3 + 12 * L, sizeof *b->t);
    b->layers = calloc(L, sizeof *b->layers);
    cel_hparams *hp = &b->m.hp;
    hp->arch = CEL_ARCH_QWEN2;
    hp->n_vocab = V;
    hp->n_embd = E;
    hp->n_layer = L;
    hp->n_head = H;
    hp->n_head_kv = Hkv;
    hp->head_dim = D;
    hp->n_ff = F;
    hp->n_ctx_train = 32768;
    hp->rms_eps = 1e-6f;
    hp->rope_theta = 1000000.0f;
    hp->rope_style = CEL_ROPE_NEOX;
    hp->tied_embeddings = true;
    hp->has_qkv_bias = true;
    uint64_t seed = 1;
#define NEW(dt, n0, n1, sc) (fill_tensor(&b->t[b->nt], dt, n0, n1, seed++, sc), &b->t[b->nt++])
    b->m.tok_embd = NEW(wt, E, V, 1.0f);
    b->m.output = b->m.tok_embd;
    b->m.output_norm = NEW(CEL_DTYPE_F32, E, 1, 1.0f);
    for (int l = 0; l < L; l++) {
        cel_layer *ly = &b->layers[l];
        float se = 1.7f / sqrtf((float)E), sf = 1.7f / sqrtf((float)F);
        ly->attn_norm = NEW(CEL_DTYPE_F32, E, 1, 1.0f);
        ly->wq = NEW(wt, E, H * D, se);
        ly->wk = NEW(wt, E, Hkv * D, se);
        ly->wv = NEW(wt, E, Hkv * D, se);
        ly->bq = NEW(CEL_DTYPE_F32, H * D, 1, 0.1f);
        ly->bk = NEW(CEL_DTYPE_F32, Hkv * D, 1, 0.1f);
        ly->bv = NEW(CEL_DTYPE_F32, Hkv * D, 1, 0.1f);
        ly->wo = NEW(wt, H * D, E, se);
        ly->ffn_norm = NEW(CEL_DTYPE_F32, E, 1, 1.0f);
        ly->w_gate = NEW(wt, E, F, se);
        ly->w_up = NEW(wt, E, F, se);
        ly->w_down = NEW(wt, F, E, sf);
    }
#undef NEW
    b->m.layers = b->layers;
    b->m.tensors = b->t;
    b->m.n_tensors = (size_t)b->nt;
    return b;
}

static void free_bmodel(bmodel *b)
{
    for (int i = 0; i < b->nt; i++) free(b->t[i].data);
    free(b->t);
    free(b->layers);
    free(b);
}

static void die_on(cel_status st, const cel_error *err)
{
    if (st != CEL_OK) {
        fprintf(stderr, "bench_kernels: %s\n", err->msg);
        exit(1);
    }
}

/* n_seqs sequences, each ctx tokens already cached, decode steps of one token
 * each; returns aggregate tokens/s. */
static double bench_decode(cel_backend *be, int n_seqs, int ctx, int steps, int32_t V, double *cpu_rate)
{
    int32_t bs = be->block_size, per = (ctx + steps + bs - 1) / bs + 1;
    int32_t *tables = calloc((size_t)n_seqs * per, sizeof *tables);
    for (int i = 0; i < n_seqs * per; i++) tables[i] = i;
    cel_batch_seq *seqs = calloc((size_t)n_seqs, sizeof *seqs);
    int32_t *tok = calloc((size_t)n_seqs, sizeof *tok), *rows = calloc((size_t)n_seqs, sizeof *rows);
    float *logits = xalloc((size_t)n_seqs * V * sizeof(float));
    cel_error err;
    /* the cache content does not change the cost: fill positions 0..ctx-1 by
     * one prefill of a single sequence, then share its blocks' content */
    for (int s = 0; s < n_seqs; s++) {
        tok[s] = (s * 7919) % V;
        rows[s] = s;
    }
    double t0 = 0, c0 = 0;
    for (int st = -1; st < steps; st++) { /* step -1 warms up */
        if (st == 0) {
            t0 = cel_now_sec();
            c0 = cpu_sec();
        }
        for (int s = 0; s < n_seqs; s++)
            seqs[s] = (cel_batch_seq){tables + (size_t)s * per, per, ctx + (st < 0 ? 0 : st), 1, s};
        cel_batch b = {.n_tokens = n_seqs, .tokens = tok, .n_seqs = n_seqs, .seqs = seqs,
                       .n_out = n_seqs, .out_rows = rows, .logits = logits};
        die_on(be->v->forward(be, &b, &err), &err);
    }
    double dt = cel_now_sec() - t0;
    *cpu_rate = (double)n_seqs * steps / (cpu_sec() - c0);
    free(tables);
    free(seqs);
    free(tok);
    free(rows);
    free(logits);
    return (double)n_seqs * steps / dt;
}

static void bench_forward(cel_dtype wt, int threads, int chunk)
{
    double t0 = cel_now_sec();
    bmodel *bm = make_qwen05(wt);
    printf("forward: Qwen2.5-0.5B-shaped random model, %s weights (built in %.1f s)\n", cel_dtype_name(wt),
           cel_now_sec() - t0);
    cel_backend_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = threads;
    p.block_size = 16;
    p.max_batch_tokens = chunk > 64 ? chunk : 64;
    p.kv_bytes = cel_backend_kv_block_bytes(&bm->m.hp, 16, CEL_BACKEND_CPU) * 2048;
    cel_backend *be;
    cel_error err;
    die_on(cel_backend_cpu_create(&bm->m, &p, &be, &err), &err);
    const int32_t V = bm->m.hp.n_vocab;
    /* prefill: a 512-token prompt in chunks, logits for the last row only */
    enum { NP = 512 };
    int32_t *tok = calloc(NP, sizeof *tok), table[64];
    for (int i = 0; i < NP; i++) tok[i] = (i * 2654435761u) % (uint32_t)V;
    for (int i = 0; i < 64; i++) table[i] = 1000 + i;
    float *logits = xalloc((size_t)V * sizeof(float));
    for (int rep = 0; rep < 2; rep++) { /* first run warms caches and pages */
        t0 = cel_now_sec();
        double c0 = cpu_sec();
        for (int c0t = 0; c0t < NP; c0t += chunk) {
            int n = NP - c0t < chunk ? NP - c0t : chunk;
            cel_batch_seq s = {table, 64, c0t, n, 0};
            int32_t out = n - 1;
            cel_batch b = {.n_tokens = n, .tokens = tok + c0t, .n_seqs = 1, .seqs = &s,
                           .n_out = c0t + n == NP ? 1 : 0, .out_rows = &out, .logits = logits};
            die_on(be->v->forward(be, &b, &err), &err);
        }
        if (rep == 1)
            printf("  prefill  %d tokens (chunks of %d): %8.1f tokens/s  (%8.1f per CPU-second)\n", NP, chunk,
                   NP / (cel_now_sec() - t0), NP / (cpu_sec() - c0));
    }
    double cr;
    double r = bench_decode(be, 1, 256, 16, V, &cr);
    printf("  decode   1 seq  at 256 cached: %8.1f tokens/s  (%8.1f per CPU-second)\n", r, cr);
    r = bench_decode(be, 16, 256, 6, V, &cr);
    printf("  decode  16 seqs at 256 cached: %8.1f tokens/s aggregate (%8.1f per CPU-second)\n", r, cr);
    r = bench_decode(be, 64, 256, 3, V, &cr);
    printf("  decode  64 seqs at 256 cached: %8.1f tokens/s aggregate (%8.1f per CPU-second)\n", r, cr);
    free(tok);
    free(logits);
    cel_backend_free(be);
    free_bmodel(bm);
}

int main(int argc, char **argv)
{
    int threads = 0, chunk = 512;
    double seconds = 0.3;
    const char *isa = NULL, *only = NULL, *rows_arg = "1,16,64", *fwd_dtype = NULL;
    bool forward = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--isa") && v) isa = argv[++i];
        else if (!strcmp(a, "--dtype") && v) only = argv[++i];
        else if (!strcmp(a, "--rows") && v) rows_arg = argv[++i];
        else if (!strcmp(a, "--seconds") && v) seconds = atof(argv[++i]);
        else if (!strcmp(a, "--chunk") && v) chunk = atoi(argv[++i]);
        else if (!strcmp(a, "--forward")) forward = true;
        else if (!strcmp(a, "--forward-dtype") && v) {
            forward = true;
            fwd_dtype = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: bench_kernels [--threads N] [--isa scalar|avx2] [--dtype NAME] [--rows 1,16,64] "
                    "[--seconds S] [--forward] [--forward-dtype NAME] [--chunk N]\n");
            return 2;
        }
    }
    if (chunk < 1) chunk = 1;
    const cel__kern *k = cel__kern_best();
    if (isa && !strcmp(isa, "scalar")) k = cel__kern_scalar();
    else if (isa && !strcmp(isa, "avx2")) {
        k = cel__kern_avx2();
        if (!k) {
            fprintf(stderr, "bench_kernels: this CPU has no AVX2/FMA/F16C\n");
            return 1;
        }
    }
    cel_pool *pool;
    cel_error err;
    die_on(cel_pool_create(threads, &pool, &err), &err);
    if (forward) {
        cel_dtype ft = CEL_DTYPE_Q8_0;
        if (fwd_dtype && !parse_dtype(fwd_dtype, &ft)) {
            fprintf(stderr, "bench_kernels: unknown dtype %s\n", fwd_dtype);
            return 2;
        }
        printf("kernels: %s, threads: %d\n", cel__kern_best()->name, cel_pool_size(pool));
        cel_pool_free(pool);
        bench_forward(ft, threads, chunk);
        return 0;
    }
    int64_t rows_list[16];
    int n_rows = 0;
    for (const char *p = rows_arg; *p && n_rows < 16;) {
        rows_list[n_rows++] = strtol(p, (char **)&p, 10);
        if (*p == ',') p++;
        else break;
    }
    int64_t max_rows = 1;
    for (int i = 0; i < n_rows; i++) max_rows = rows_list[i] > max_rows ? rows_list[i] : max_rows;

    printf("kernels: %s, threads: %d\n", k->name, cel_pool_size(pool));
    printf("%-5s %-12s %5s %10s %9s %8s | %12s %9s %8s\n", "dtype", "in x out", "rows", "us/call", "GFLOP/s", "GB/s",
           "cpu-us/call", "GFLOP/s", "GB/s");
    const cel_dtype all[] = {CEL_DTYPE_F32,  CEL_DTYPE_F16,  CEL_DTYPE_BF16, CEL_DTYPE_Q8_0, CEL_DTYPE_Q5_0,
                             CEL_DTYPE_Q5_1, CEL_DTYPE_Q4_0, CEL_DTYPE_Q4_K, CEL_DTYPE_Q5_K, CEL_DTYPE_Q6_K};
    /* ffn_up (896 -> 4864) and ffn_down (4864 -> 896); K-quants need 256-multiples: down only */
    const int64_t shapes[2][2] = {{896, 4864}, {4864, 896}};
    float *x = xalloc((size_t)(max_rows * 4864) * sizeof(float));
    float *y = xalloc((size_t)(max_rows * 4864) * sizeof(float));
    void *scratch = xalloc(cel__matmul_scratch_bytes(max_rows, 4864));
    cel_rng r;
    cel_rng_seed(&r, 3);
    for (int64_t i = 0; i < max_rows * 4864; i++) x[i] = (float)(cel_rng_uniform(&r) * 2 - 1);
    for (size_t di = 0; di < sizeof all / sizeof all[0]; di++) {
        cel_dtype t = all[di];
        if (only && strcasecmp(only, cel_dtype_name(t)) != 0) continue;
        for (int si = 0; si < 2; si++) {
            int64_t n_in = shapes[si][0], n_out = shapes[si][1];
            if (n_in % cel_dtype_block_elems(t) != 0) continue;
            cel_tensor w;
            fill_tensor(&w, t, n_in, n_out, 7, 0.05f);
            for (int ri = 0; ri < n_rows; ri++) {
                int64_t rows = rows_list[ri];
                if (rows < 1) continue;
                double c;
                double s = time_matmul(k, pool, &w, x, rows, y, scratch, seconds, &c);
                char shape[32];
                snprintf(shape, sizeof shape, "%lldx%lld", (long long)n_in, (long long)n_out);
                double flop = 2.0 * (double)rows * (double)n_in * (double)n_out;
                printf("%-5s %-12s %5lld %10.1f %9.1f %8.1f | %12.1f %9.1f %8.1f\n", cel_dtype_name(t), shape,
                       (long long)rows, s * 1e6, flop / s * 1e-9, (double)w.nbytes / s * 1e-9, c * 1e6, flop / c * 1e-9,
                       (double)w.nbytes / c * 1e-9);
                fflush(stdout);
            }
            free(w.data);
        }
    }
    free(x);
    free(y);
    free(scratch);
    cel_pool_free(pool);
    return 0;
}
