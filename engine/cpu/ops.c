/*
 * ops.c - the float reference operations of engine/ops.h: plain loops with
 * the sizes spelled out. The CPU backend uses the per-row ops (RMSNorm, RoPE,
 * embedding) directly; matmul and attention here are the slow references its
 * fast kernels and the CUDA kernels are tested against.
 */
#include "cpu.h"

#include <math.h>

void cel_op_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps)
{
    double ss = 0.0; /* double: the sum of n squares loses nothing for any n */
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* Inverse frequencies theta^(-2i/d), then the checkpoint's scaling:
 * LINEAR divides every frequency by factor (positions interpolated);
 * LLAMA3 divides only long wavelengths (> orig_ctx / low_freq_factor) by
 * factor, keeps short ones (< orig_ctx / high_freq_factor) and blends
 * linearly in between. */
void cel_op_rope_freqs(const cel_hparams *hp, float *inv_freq)
{
    int32_t d = hp->head_dim, half = d / 2;
    double theta = hp->rope_theta > 0.0f ? (double)hp->rope_theta : 10000.0;
    double factor = hp->rope_factor > 0.0f ? (double)hp->rope_factor : 1.0;
    for (int32_t i = 0; i < half; i++) {
        double f = 1.0 / pow(theta, (double)(2 * i) / (double)d);
        if (hp->rope_scaling == CEL_ROPE_SCALING_LINEAR) {
            f /= factor;
        } else if (hp->rope_scaling == CEL_ROPE_SCALING_LLAMA3) {
            double lo = hp->rope_low_freq_factor > 0.0f ? (double)hp->rope_low_freq_factor : 1.0;
            double hi = hp->rope_high_freq_factor > 0.0f ? (double)hp->rope_high_freq_factor : 4.0;
            double orig = hp->rope_orig_ctx > 0 ? (double)hp->rope_orig_ctx : 8192.0;
            double wavelen = 2.0 * 3.14159265358979323846 / f;
            if (wavelen > orig / lo) {
                f /= factor;
            } else if (wavelen >= orig / hi && hi != lo) {
                double smooth = (orig / wavelen - lo) / (hi - lo);
                f = (1.0 - smooth) * f / factor + smooth * f;
            }
        }
        inv_freq[i] = (float)f;
    }
}

/* The angle is pos * inv_freq in float, as the reference implementations of
 * the checkpoints compute it, so long positions round the same way. */
void cel__rope_cs(int32_t pos, const float *inv_freq, int32_t half, float *cosv, float *sinv)
{
    for (int32_t i = 0; i < half; i++) {
        float a = (float)pos * inv_freq[i];
        cosv[i] = cosf(a);
        sinv[i] = sinf(a);
    }
}

void cel__rope_apply(float *x, int32_t n_heads, int32_t head_dim, const float *cosv, const float *sinv,
                     cel_rope_style style)
{
    int32_t half = head_dim / 2;
    for (int32_t h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        for (int32_t i = 0; i < half; i++) {
            int32_t a = style == CEL_ROPE_NORM ? 2 * i : i;
            int32_t b = style == CEL_ROPE_NORM ? 2 * i + 1 : i + half;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * cosv[i] - x1 * sinv[i];
            v[b] = x0 * sinv[i] + x1 * cosv[i];
        }
    }
}

void cel_op_rope(float *x, int32_t n_heads, int32_t head_dim, int32_t pos, const float *inv_freq,
                 cel_rope_style style)
{
    float c[512], s[512]; /* head_dim <= 1024 */
    int32_t half = head_dim / 2;
    if (half > 512) return;
    cel__rope_cs(pos, inv_freq, half, c, s);
    cel__rope_apply(x, n_heads, head_dim, c, s, style);
}

void cel_op_swiglu(float *out, const float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void cel_op_embed(float *out, const cel_tensor *emb, int32_t token)
{
    size_t rb = cel_dtype_row_bytes(emb->dtype, emb->ne[0]);
    cel_dequant_row(emb->dtype, (const uint8_t *)emb->data + (size_t)token * rb, out, emb->ne[0]);
}

/* ------------------------------------------------------ reference matmul */

typedef struct {
    float *y;
    const cel_tensor *w;
    const float *x;
    int64_t n_rows;
} ref_mm;

/* Output features [o0, o1): each weight block is dequantized once into a
 * stack buffer and applied to up to 64 activation rows, summing in double. */
static void ref_mm_range(void *ctx, int64_t o0, int64_t o1, int thread_index)
{
    (void)thread_index;
    const ref_mm *c = ctx;
    const cel_tensor *w = c->w;
    int64_t n_in = w->ne[0], n_out = w->ne[1];
    int64_t be = cel_dtype_block_elems(w->dtype);
    int64_t blk = be >= 256 ? 256 : 256 / be * be; /* elements dequantized at a time */
    size_t rb = cel_dtype_row_bytes(w->dtype, n_in), bb = cel_dtype_row_bytes(w->dtype, blk);
    float tmp[256];
    for (int64_t o = o0; o < o1; o++) {
        const uint8_t *wr = (const uint8_t *)w->data + (size_t)o * rb;
        for (int64_t r0 = 0; r0 < c->n_rows; r0 += 64) {
            int64_t nr = c->n_rows - r0 < 64 ? c->n_rows - r0 : 64;
            double acc[64] = {0};
            for (int64_t i = 0; i < n_in; i += blk) {
                int64_t nbk = n_in - i < blk ? n_in - i : blk;
                cel_dequant_row(w->dtype, wr + (size_t)(i / blk) * bb, tmp, nbk);
                for (int64_t r = 0; r < nr; r++) {
                    const float *xr = c->x + (r0 + r) * n_in + i;
                    double s = 0.0;
                    for (int64_t j = 0; j < nbk; j++) s += (double)tmp[j] * xr[j];
                    acc[r] += s;
                }
            }
            for (int64_t r = 0; r < nr; r++) c->y[(r0 + r) * n_out + o] = (float)acc[r];
        }
    }
}

void cel_op_matmul(float *y, const cel_tensor *W, const float *x, int64_t n_rows, cel_pool *pool)
{
    ref_mm c = {y, W, x, n_rows};
    cel_pool_run(pool, W->ne[1], 4, ref_mm_range, &c);
}

/* ---------------------------------------------------- reference attention */

/* Two passes per (query, head) so no scratch is needed: the first finds the
 * largest score, the second sums exp(s - max) and the weighted values. */
void cel_op_attention(float *out, const float *q, int32_t n_new, int32_t n_past, int32_t n_head,
                      int32_t n_head_kv, int32_t head_dim, cel_kv_reader kv_at, void *ctx)
{
    int32_t group = n_head / n_head_kv;
    double scale = 1.0 / sqrt((double)head_dim);
    for (int32_t t = 0; t < n_new; t++) {
        int32_t last = n_past + t; /* causal: keys 0..last */
        for (int32_t h = 0; h < n_head; h++) {
            const float *qh = q + ((int64_t)t * n_head + h) * head_dim;
            float *oh = out + ((int64_t)t * n_head + h) * head_dim;
            int32_t g = h / group;
            double mx = -INFINITY;
            for (int32_t p = 0; p <= last; p++) {
                const float *k = kv_at(ctx, p, 0) + (int64_t)g * head_dim;
                double s = 0.0;
                for (int32_t i = 0; i < head_dim; i++) s += (double)qh[i] * k[i];
                if (s * scale > mx) mx = s * scale;
            }
            double sum = 0.0;
            double acc[1024] = {0};
            for (int32_t p = 0; p <= last; p++) {
                const float *k = kv_at(ctx, p, 0) + (int64_t)g * head_dim;
                const float *v = kv_at(ctx, p, 1) + (int64_t)g * head_dim;
                double s = 0.0;
                for (int32_t i = 0; i < head_dim; i++) s += (double)qh[i] * k[i];
                double e = exp(s * scale - mx);
                sum += e;
                for (int32_t i = 0; i < head_dim && i < 1024; i++) acc[i] += e * v[i];
            }
            for (int32_t i = 0; i < head_dim && i < 1024; i++) oh[i] = (float)(acc[i] / sum);
        }
    }
}
