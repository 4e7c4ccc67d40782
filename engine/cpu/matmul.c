/*
 * matmul.c - the threaded, cache-blocked matmul driver of the CPU backend.
 *
 * One call computes up to CEL__MM_MAX products that share their input rows
 * (Q/K/V, or gate/up): the rows are quantized once per activation format,
 * then the weight rows of all products are cut into tiles of TW rows that the
 * pool's threads take dynamically. A thread runs its weight tile against the
 * activation rows XB at a time (a block sized to stay in L2), so each weight
 * byte comes from memory once per call, however many rows the batch has; this
 * is what makes batched decode cheap.
 *
 * No allocation: the caller passes scratch for the quantized rows.
 */
#include "cpu.h"

#define CEL__MM_MAX 4

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

size_t cel__matmul_scratch_bytes(int64_t max_rows, int64_t max_in)
{
    int64_t n32 = round_up(max_in, 32), n256 = round_up(max_in, 256);
    return (size_t)max_rows * (cel__act_row_bytes(CEL__ACT_Q8_32, n32) + cel__act_row_bytes(CEL__ACT_Q8_256, n256));
}

typedef struct {
    const cel__kern *k;
    const float *x;
    size_t x_stride;
    int64_t n_in;
    uint8_t *act[3]; /* by cel__act_kind; NULL when not needed */
    size_t act_stride;
    size_t act256_stride;
} quant_ctx;

static void quant_rows(void *ctx, int64_t r0, int64_t r1, int thread_index)
{
    (void)thread_index;
    const quant_ctx *c = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = c->x + (size_t)r * c->x_stride;
        if (c->act[CEL__ACT_Q8_32]) c->k->quant_q8_32(xr, c->act[CEL__ACT_Q8_32] + (size_t)r * c->act_stride, c->n_in);
        if (c->act[CEL__ACT_Q8_256])
            c->k->quant_q8_256(xr, c->act[CEL__ACT_Q8_256] + (size_t)r * c->act256_stride, c->n_in);
    }
}

typedef struct {
    cel__dot_fn fn;
    const uint8_t *w;
    size_t ws;
    int64_t n_out;
    float *y;
    size_t ys;
    const uint8_t *x;
    size_t xs;
    int64_t tiles;
} mm_job;

typedef struct {
    mm_job jobs[CEL__MM_MAX];
    int n_jobs;
    int64_t n_in, n_rows, tw, xb;
} mm_ctx;

static void mm_range(void *ctx, int64_t t0, int64_t t1, int thread_index)
{
    (void)thread_index;
    const mm_ctx *c = ctx;
    int j = 0;
    int64_t base = 0; /* first tile index of job j */
    for (int64_t t = t0; t < t1; t++) {
        while (t - base >= c->jobs[j].tiles) base += c->jobs[j++].tiles;
        const mm_job *jb = &c->jobs[j];
        int64_t o0 = (t - base) * c->tw;
        int64_t no = jb->n_out - o0 < c->tw ? jb->n_out - o0 : c->tw;
        for (int64_t r0 = 0; r0 < c->n_rows; r0 += c->xb) {
            int64_t nr = c->n_rows - r0 < c->xb ? c->n_rows - r0 : c->xb;
            jb->fn(c->n_in, jb->w + (size_t)o0 * jb->ws, jb->ws, (int)no, jb->x + (size_t)r0 * jb->xs, jb->xs, (int)nr,
                   jb->y + (size_t)r0 * jb->ys + (size_t)o0, jb->ys);
        }
    }
}

void cel__matmul(const cel__kern *k, cel_pool *pool, const float *x, size_t x_stride, int64_t n_rows, int64_t n_in,
                 const cel__mm *mm, int n_mm, void *scratch)
{
    if (n_rows <= 0 || n_mm <= 0) return;
    if (n_mm > CEL__MM_MAX) { /* more products than one job list holds: split the call */
        cel__matmul(k, pool, x, x_stride, n_rows, n_in, mm, CEL__MM_MAX, scratch);
        cel__matmul(k, pool, x, x_stride, n_rows, n_in, mm + CEL__MM_MAX, n_mm - CEL__MM_MAX, scratch);
        return;
    }
    /* 1. activation rows in each format the weights need */
    quant_ctx qc = {.k = k, .x = x, .x_stride = x_stride, .n_in = n_in};
    qc.act_stride = cel__act_row_bytes(CEL__ACT_Q8_32, n_in);
    qc.act256_stride = cel__act_row_bytes(CEL__ACT_Q8_256, n_in);
    uint8_t *s = scratch;
    bool need[3] = {false, false, false};
    for (int i = 0; i < n_mm; i++) need[cel__act_kind_for(mm[i].w->dtype)] = true;
    if (need[CEL__ACT_Q8_32]) qc.act[CEL__ACT_Q8_32] = s;
    if (need[CEL__ACT_Q8_256])
        qc.act[CEL__ACT_Q8_256] = s + (size_t)n_rows * cel__act_row_bytes(CEL__ACT_Q8_32, round_up(n_in, 32));
    if (need[CEL__ACT_Q8_32] || need[CEL__ACT_Q8_256]) {
        int64_t grain = n_in >= 4096 ? 1 : 4096 / n_in;
        cel_pool_run(n_rows > 1 ? pool : NULL, n_rows, grain, quant_rows, &qc);
    }

    /* 2. weight tiles of 64 rows (long sequential runs for the prefetchers,
     * few passes over the activation block), narrower only when that would
     * leave fewer than 4 tiles per thread to balance */
    mm_ctx c = {.n_jobs = n_mm, .n_in = n_in, .n_rows = n_rows};
    int64_t all_out = 0;
    size_t max_ws = 0;
    for (int i = 0; i < n_mm; i++) {
        all_out += mm[i].w->ne[1];
        size_t ws = cel_dtype_row_bytes(mm[i].w->dtype, n_in);
        if (ws > max_ws) max_ws = ws;
    }
    c.tw = 64;
    while (c.tw > 16 && all_out / c.tw < 4 * (int64_t)cel_pool_size(pool)) c.tw /= 2;
    /* batches re-read the tile once per group of activation rows: keep it
     * within about 384 KiB so those passes hit L2 (wide F32 / F16 rows) */
    if (n_rows >= 4)
        while (c.tw > 16 && (size_t)c.tw * max_ws > (384u << 10)) c.tw /= 2;
    int64_t total = 0;
    size_t max_xs = 0;
    for (int i = 0; i < n_mm; i++) {
        mm_job *jb = &c.jobs[i];
        const cel_tensor *w = mm[i].w;
        cel__act_kind ak = cel__act_kind_for(w->dtype);
        jb->fn = cel__kern_dot(k, w->dtype);
        jb->w = w->data;
        jb->ws = cel_dtype_row_bytes(w->dtype, n_in);
        jb->n_out = w->ne[1];
        jb->y = mm[i].y;
        jb->ys = mm[i].y_stride;
        if (ak == CEL__ACT_F32) {
            jb->x = (const uint8_t *)x;
            jb->xs = x_stride * sizeof(float);
        } else {
            jb->x = qc.act[ak];
            jb->xs = ak == CEL__ACT_Q8_32 ? qc.act_stride : qc.act256_stride;
        }
        if (jb->xs > max_xs) max_xs = jb->xs;
        jb->tiles = (jb->n_out + c.tw - 1) / c.tw;
        total += jb->tiles;
    }
    /* activation block: about 256 KiB of rows, a multiple of the 4-row tile */
    int64_t xb = (int64_t)((256u << 10) / (max_xs ? max_xs : 1));
    xb = xb < 4 ? 4 : xb & ~(int64_t)3;
    c.xb = xb < n_rows ? xb : n_rows;
    cel_pool_run(pool, total, 1, mm_range, &c);
}
