/*
 * backend.c - the CPU compute backend (engine/backend.h): one forward pass
 * over a batch that mixes sequences (prefill chunks and decode tokens), with
 * K/V kept in a paged cache of fixed-size blocks.
 *
 * Per layer, over all batch rows at once:
 *   RMSNorm -> Q/K/V projections (one matmul call sharing the input)
 *   -> + biases (qwen2) -> per-head q/k RMSNorm (qwen3) -> RoPE
 *   -> K/V written to each row's block slot (F16)
 *   -> causal attention over the sequence's cached positions
 *   -> output projection -> residual -> RMSNorm -> gate/up (one call)
 *   -> SwiGLU -> down projection -> residual.
 * The last layer continues past attention only for the rows whose logits are
 * wanted (out_rows), then the final norm and the output projection.
 *
 * KV cache: F16, [layer][block][K|V][kv head][...]: keys transposed,
 * [head_dim][slot], so attention computes the scores of 8 keys with plain
 * vector FMAs (no horizontal sums); values [slot][head_dim]. A block of one
 * kv head is converted to float once per attention work item and applied to
 * every query row and every query head of the group (GQA) in the item;
 * items are (sequence, kv head, chunk of up to 16 query rows), spread over
 * the pool.
 *
 * Batch invariance: matmul kernels compute each row with a fixed order (see
 * cpu.h); attention for a query row walks its sequence's blocks in order with
 * the same online-softmax steps whatever item it lands in; everything else is
 * per row. So a row's logits do not depend on the other rows of the batch,
 * on the chunking of a prompt, or on the number of threads.
 *
 * No allocation in forward: every buffer is sized at create for
 * max_batch_tokens rows.
 */
#include "../backend.h"
#include "cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define ATT_CHUNK 16 /* query rows per attention work item */
#define MAX_BLOCK 256

typedef struct cpu_layer {
    float *attn_norm, *ffn_norm, *bq, *bk, *bv, *q_norm, *k_norm;
} cpu_layer;

typedef struct attn_item {
    int32_t seq, kvh, r0, r1; /* batch rows [r0, r1) of one sequence */
} attn_item;

typedef struct cpu_backend {
    cel_backend base;
    const cel__kern *k;
    cel_pool *pool;
    int n_threads;
    int32_t max_tokens;
    int64_t E, Qd, KVd, F, V; /* widths: embedding, all q heads, all kv heads, FFN, vocabulary */
    int32_t H, Hkv, D, G, L;
    float scale;
    /* derived from the weights (refreshed by weights_changed) */
    float *derived;
    cpu_layer *layers;
    float *out_norm;
    float *inv_freq;
    /* KV cache */
    uint16_t *kv;
    size_t kv_run; /* halves of one (layer, block, K|V): Hkv * block_size * D */
    /* scratch, [max_tokens] rows each */
    float *x, *xn, *xc, *q, *kk, *vv, *att, *g, *u, *rc, *rs;
    int32_t *row_pos, *row_seq;
    attn_item *items;
    int64_t max_items;
    float *tscratch;
    size_t tscratch_stride; /* floats per thread */
    void *act;
} cpu_backend;

size_t cel_backend_kv_block_bytes(const cel_hparams *hp, int32_t block_size, cel_backend_kind kind)
{
    (void)kind; /* both backends store K and V as F16 */
    return (size_t)2 * (size_t)hp->n_layer * (size_t)hp->n_head_kv * (size_t)hp->head_dim * (size_t)block_size *
           sizeof(uint16_t);
}

static void *alloc64(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? (n + 63) & ~(size_t)63 : 64) != 0) return NULL;
    return p;
}

static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

/* ------------------------------------------------------------ validation */

static cel_status check_matrix(const cel_tensor *t, const char *what, int layer, int64_t n_in, int64_t n_out,
                               cel_error *err)
{
    char where[32] = "";
    if (layer >= 0) snprintf(where, sizeof where, "layer %d: ", layer);
    if (!t) return cel_error_set(err, CEL_ERR_NOT_FOUND, "cpu backend: %smissing tensor %s", where, what);
    if (!cel_dtype_valid((int)t->dtype) || !cel__kern_dot(cel__kern_scalar(), t->dtype))
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "cpu backend: tensor '%s' (%s): unsupported dtype %d", t->name,
                             what, (int)t->dtype);
    if (t->ne[0] != n_in || t->ne[1] != n_out || (t->n_dims > 2 && t->ne[2] * t->ne[3] != 1))
        return cel_error_set(err, CEL_ERR_FORMAT, "cpu backend: tensor '%s' (%s) has shape [%lld x %lld], expected [%lld x %lld]",
                             t->name, what, (long long)t->ne[0], (long long)t->ne[1], (long long)n_in, (long long)n_out);
    size_t rb = cel_dtype_row_bytes(t->dtype, n_in);
    if (rb == 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "cpu backend: tensor '%s': %lld columns are not whole %s blocks",
                             t->name, (long long)n_in, cel_dtype_name(t->dtype));
    if (!t->data || t->nbytes < rb * (size_t)n_out)
        return cel_error_set(err, CEL_ERR_FORMAT, "cpu backend: tensor '%s': %zu bytes of data, %zu needed", t->name,
                             t->data ? t->nbytes : 0, rb * (size_t)n_out);
    return CEL_OK;
}

static cel_status check_vector(const cel_tensor *t, const char *what, int layer, int64_t n, cel_error *err)
{
    char where[32] = "";
    if (layer >= 0) snprintf(where, sizeof where, "layer %d: ", layer);
    if (!t) return cel_error_set(err, CEL_ERR_NOT_FOUND, "cpu backend: %smissing tensor %s", where, what);
    int64_t rest = 1;
    for (int i = 1; i < t->n_dims && i < 4; i++) rest *= t->ne[i];
    if (t->ne[0] != n || rest != 1)
        return cel_error_set(err, CEL_ERR_FORMAT, "cpu backend: tensor '%s' (%s) has %lld x %lld elements, expected %lld",
                             t->name, what, (long long)t->ne[0], (long long)rest, (long long)n);
    if (!cel_dtype_valid((int)t->dtype))
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "cpu backend: tensor '%s' (%s): unsupported dtype %d", t->name,
                             what, (int)t->dtype);
    size_t rb = cel_dtype_row_bytes(t->dtype, n);
    if (rb == 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "cpu backend: tensor '%s': %lld elements are not whole %s blocks",
                             t->name, (long long)n, cel_dtype_name(t->dtype));
    if (!t->data || t->nbytes < rb)
        return cel_error_set(err, CEL_ERR_FORMAT, "cpu backend: tensor '%s': %zu bytes of data, %zu needed", t->name,
                             t->data ? t->nbytes : 0, rb);
    return CEL_OK;
}

static cel_status check_model(const cel_model *m, cel_error *err)
{
    const cel_hparams *hp = &m->hp;
    if (hp->n_embd <= 0 || hp->n_layer < 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->head_dim <= 0 ||
        hp->n_ff <= 0 || hp->n_vocab <= 0)
        return cel_error_set(err, CEL_ERR_INVALID,
                             "cpu backend: bad hyper-parameters (n_embd %d, n_layer %d, n_head %d, n_head_kv %d, "
                             "head_dim %d, n_ff %d, n_vocab %d)",
                             hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff, hp->n_vocab);
    if (hp->n_head % hp->n_head_kv != 0)
        return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: n_head %d is not a multiple of n_head_kv %d",
                             hp->n_head, hp->n_head_kv);
    if (hp->head_dim % 2 != 0 || hp->head_dim > 1024)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "cpu backend: head_dim %d (must be even and <= 1024)",
                             hp->head_dim);
    if (!m->layers && hp->n_layer > 0) return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: model has no layers");
    int64_t E = hp->n_embd, Qd = (int64_t)hp->n_head * hp->head_dim, KVd = (int64_t)hp->n_head_kv * hp->head_dim;
    CEL_TRY(check_matrix(m->tok_embd, "token embedding", -1, E, hp->n_vocab, err));
    CEL_TRY(check_matrix(m->output, "output projection", -1, E, hp->n_vocab, err));
    CEL_TRY(check_vector(m->output_norm, "output norm", -1, E, err));
    for (int l = 0; l < hp->n_layer; l++) {
        const cel_layer *ly = &m->layers[l];
        CEL_TRY(check_vector(ly->attn_norm, "attention norm", l, E, err));
        CEL_TRY(check_matrix(ly->wq, "q projection", l, E, Qd, err));
        CEL_TRY(check_matrix(ly->wk, "k projection", l, E, KVd, err));
        CEL_TRY(check_matrix(ly->wv, "v projection", l, E, KVd, err));
        CEL_TRY(check_matrix(ly->wo, "output projection", l, Qd, E, err));
        CEL_TRY(check_vector(ly->ffn_norm, "ffn norm", l, E, err));
        CEL_TRY(check_matrix(ly->w_gate, "ffn gate", l, E, hp->n_ff, err));
        CEL_TRY(check_matrix(ly->w_up, "ffn up", l, E, hp->n_ff, err));
        CEL_TRY(check_matrix(ly->w_down, "ffn down", l, hp->n_ff, E, err));
        if (hp->has_qkv_bias) {
            CEL_TRY(check_vector(ly->bq, "q bias", l, Qd, err));
            CEL_TRY(check_vector(ly->bk, "k bias", l, KVd, err));
            CEL_TRY(check_vector(ly->bv, "v bias", l, KVd, err));
        }
        if (hp->has_qk_norm) {
            CEL_TRY(check_vector(ly->q_norm, "q norm", l, hp->head_dim, err));
            CEL_TRY(check_vector(ly->k_norm, "k norm", l, hp->head_dim, err));
        }
    }
    return CEL_OK;
}

/* Float copies of the small per-layer vectors (norm weights, biases), which
 * files store as F32, F16 or BF16. */
static void derive(cpu_backend *be)
{
    const cel_model *m = be->base.model;
    float *p = be->derived;
#define TAKE(dst, t, n)                                                                                                \
    do {                                                                                                               \
        (dst) = p;                                                                                                     \
        cel_dequant_row((t)->dtype, (t)->data, p, (n));                                                                \
        p += up16((size_t)(n));                                                                                        \
    } while (0)
    TAKE(be->out_norm, m->output_norm, be->E);
    for (int l = 0; l < be->L; l++) {
        const cel_layer *ly = &m->layers[l];
        cpu_layer *dl = &be->layers[l];
        memset(dl, 0, sizeof *dl);
        TAKE(dl->attn_norm, ly->attn_norm, be->E);
        TAKE(dl->ffn_norm, ly->ffn_norm, be->E);
        if (m->hp.has_qkv_bias) {
            TAKE(dl->bq, ly->bq, be->Qd);
            TAKE(dl->bk, ly->bk, be->KVd);
            TAKE(dl->bv, ly->bv, be->KVd);
        }
        if (m->hp.has_qk_norm) {
            TAKE(dl->q_norm, ly->q_norm, be->D);
            TAKE(dl->k_norm, ly->k_norm, be->D);
        }
    }
#undef TAKE
}

/* ------------------------------------------------------------ row helpers */

/* One kv head's keys ([head_dim][block_size]) or values ([block_size][head_dim])
 * in block blk of a layer. */
static uint16_t *kv_ptr(const cpu_backend *be, int32_t layer, int32_t blk, int is_v, int32_t kvh)
{
    size_t run = ((size_t)layer * (size_t)be->base.n_blocks + (size_t)blk) * 2 + (size_t)is_v;
    return be->kv + run * be->kv_run + (size_t)kvh * (size_t)be->base.block_size * (size_t)be->D;
}

static size_t ldk_of(int32_t block_size) { return ((size_t)block_size + 7) & ~(size_t)7; }

typedef struct {
    const float *x;
    float *out;
    const float *w;
    int64_t n;
    float eps;
} norm_ctx;

static void norm_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    (void)tid;
    const norm_ctx *c = ctx;
    for (int64_t r = r0; r < r1; r++) cel_op_rmsnorm(c->out + r * c->n, c->x + r * c->n, c->w, c->n, c->eps);
}

static void rmsnorm_rows(cpu_backend *be, const float *x, float *out, const float *w, int64_t n_rows)
{
    norm_ctx c = {x, out, w, be->E, be->base.model->hp.rms_eps};
    cel_pool_run(be->pool, n_rows, 16, norm_rows, &c);
}

typedef struct {
    cpu_backend *be;
    const cel_batch *b;
    int32_t layer;
} qkv_ctx;

/* Biases, q/k norms and RoPE for rows [r0, r1), then their K/V into the cache. */
static void post_qkv_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    (void)tid;
    const qkv_ctx *c = ctx;
    cpu_backend *be = c->be;
    const cpu_layer *dl = &be->layers[c->layer];
    const cel_hparams *hp = &be->base.model->hp;
    int32_t bs = be->base.block_size, half = be->D / 2;
    for (int64_t r = r0; r < r1; r++) {
        float *q = be->q + r * be->Qd, *k = be->kk + r * be->KVd, *v = be->vv + r * be->KVd;
        if (dl->bq) {
            for (int64_t i = 0; i < be->Qd; i++) q[i] += dl->bq[i];
            for (int64_t i = 0; i < be->KVd; i++) k[i] += dl->bk[i];
            for (int64_t i = 0; i < be->KVd; i++) v[i] += dl->bv[i];
        }
        if (dl->q_norm) {
            for (int32_t h = 0; h < be->H; h++) cel_op_rmsnorm(q + h * be->D, q + h * be->D, dl->q_norm, be->D, hp->rms_eps);
            for (int32_t h = 0; h < be->Hkv; h++)
                cel_op_rmsnorm(k + h * be->D, k + h * be->D, dl->k_norm, be->D, hp->rms_eps);
        }
        cel__rope_apply(q, be->H, be->D, be->rc + r * half, be->rs + r * half, hp->rope_style);
        cel__rope_apply(k, be->Hkv, be->D, be->rc + r * half, be->rs + r * half, hp->rope_style);
        const cel_batch_seq *s = &c->b->seqs[be->row_seq[r]];
        int32_t pos = be->row_pos[r];
        int32_t blk = s->block_table[pos / bs], slot = pos % bs;
        uint16_t kh[1024];
        for (int32_t g = 0; g < be->Hkv; g++) {
            be->k->f32_to_fp16(k + g * be->D, kh, be->D);
            uint16_t *kt = kv_ptr(be, c->layer, blk, 0, g);
            for (int32_t i = 0; i < be->D; i++) kt[(size_t)i * bs + slot] = kh[i];
            be->k->f32_to_fp16(v + g * be->D, kv_ptr(be, c->layer, blk, 1, g) + (size_t)slot * be->D, be->D);
        }
    }
}

typedef struct {
    cpu_backend *be;
    const cel_batch *b;
    int32_t layer;
} attn_ctx;

/* Work items [i0, i1): for each, the query rows of one sequence chunk and the
 * G query heads of one kv head, over the sequence's blocks in order. */
static void attn_items(void *ctx, int64_t i0, int64_t i1, int tid)
{
    const attn_ctx *c = ctx;
    cpu_backend *be = c->be;
    const int32_t D = be->D, G = be->G, bs = be->base.block_size;
    const size_t ldk = ldk_of(bs);
    float *kf = be->tscratch + (size_t)tid * be->tscratch_stride; /* [D][ldk] */
    float *vf = kf + up16(ldk * D);                                /* [bs][D] */
    float *acc = vf + up16((size_t)bs * D);
    float *ml = acc + up16((size_t)ATT_CHUNK * G * D); /* m then l, [rows][G] each */
    for (int64_t it = i0; it < i1; it++) {
        const attn_item *w = &be->items[it];
        const cel_batch_seq *s = &c->b->seqs[w->seq];
        int32_t nr = w->r1 - w->r0;
        int32_t pmax = be->row_pos[w->r1 - 1];
        float *m = ml, *l = ml + ATT_CHUNK * G;
        for (int32_t i = 0; i < nr * G; i++) {
            m[i] = -INFINITY;
            l[i] = 0.0f;
        }
        memset(acc, 0, (size_t)nr * G * D * sizeof *acc);
        for (int32_t bi = 0; bi <= pmax / bs; bi++) {
            int32_t nk = pmax - bi * bs + 1 < bs ? pmax - bi * bs + 1 : bs;
            int32_t blk = s->block_table[bi];
            const uint16_t *kh = kv_ptr(be, c->layer, blk, 0, w->kvh);
            if (ldk == (size_t)bs) {
                be->k->fp16_to_f32(kh, kf, (int64_t)bs * D);
            } else {
                for (int32_t i = 0; i < D; i++) be->k->fp16_to_f32(kh + (size_t)i * bs, kf + i * ldk, bs);
            }
            be->k->fp16_to_f32(kv_ptr(be, c->layer, blk, 1, w->kvh), vf, (int64_t)nk * D);
            for (int32_t i = 0; i < nr; i++) {
                int32_t lim = be->row_pos[w->r0 + i] - bi * bs + 1;
                if (lim <= 0) continue;
                if (lim > nk) lim = nk;
                const float *qr = be->q + (int64_t)(w->r0 + i) * be->Qd + (int64_t)w->kvh * G * D;
                for (int32_t h = 0; h < G; h++)
                    be->k->attn_step(qr + h * D, kf, (int)ldk, vf, lim, D, be->scale, &m[i * G + h], &l[i * G + h],
                                     acc + ((size_t)i * G + h) * D);
            }
        }
        for (int32_t i = 0; i < nr; i++) {
            float *o = be->att + (int64_t)(w->r0 + i) * be->Qd + (int64_t)w->kvh * G * D;
            for (int32_t h = 0; h < G; h++) {
                float inv = 1.0f / l[i * G + h];
                for (int32_t j = 0; j < D; j++) o[h * D + j] = acc[((size_t)i * G + h) * D + j] * inv;
            }
        }
    }
}

typedef struct {
    cpu_backend *be;
    int64_t n;
} swiglu_ctx;

static void swiglu_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    (void)tid;
    const swiglu_ctx *c = ctx;
    for (int64_t r = r0; r < r1; r++) c->be->k->swiglu(c->be->g + r * c->n, c->be->g + r * c->n, c->be->u + r * c->n, c->n);
}

static void add_rows(float *x, const float *d, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] += d[i];
}

/* --------------------------------------------------------------- forward */

static cel_status check_batch(cpu_backend *be, const cel_batch *b, cel_error *err)
{
    if (b->n_tokens < 0 || b->n_tokens > be->max_tokens)
        return cel_error_set(err, CEL_ERR_LIMIT, "cpu backend: batch of %d tokens (max_batch_tokens is %d)", b->n_tokens,
                             be->max_tokens);
    if (b->n_out < 0 || b->n_out > be->max_tokens)
        return cel_error_set(err, CEL_ERR_LIMIT, "cpu backend: %d output rows (at most %d)", b->n_out, be->max_tokens);
    if (b->n_seqs < 0 || (b->n_seqs > 0 && !b->seqs) || (b->n_tokens > 0 && !b->tokens) ||
        (b->n_out > 0 && (!b->out_rows || !b->logits)))
        return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: batch has missing arrays");
    for (int32_t t = 0; t < b->n_tokens; t++) {
        be->row_seq[t] = -1;
        if (b->tokens[t] < 0 || b->tokens[t] >= be->V)
            return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: batch row %d: token %d outside the vocabulary of %lld",
                                 t, b->tokens[t], (long long)be->V);
    }
    int32_t bs = be->base.block_size;
    for (int32_t si = 0; si < b->n_seqs; si++) {
        const cel_batch_seq *s = &b->seqs[si];
        if (s->n_new < 0 || s->n_past < 0 || s->first < 0 || (int64_t)s->first + s->n_new > b->n_tokens)
            return cel_error_set(err, CEL_ERR_INVALID,
                                 "cpu backend: batch seq %d: rows [%d, %d + %d) outside the batch of %d rows", si,
                                 s->first, s->first, s->n_new, b->n_tokens);
        int64_t n_pos = (int64_t)s->n_past + s->n_new;
        int64_t need = (n_pos + bs - 1) / bs;
        if (s->n_new == 0) continue;
        if (need > s->n_blocks || !s->block_table)
            return cel_error_set(err, CEL_ERR_INVALID,
                                 "cpu backend: batch seq %d: %lld positions need %lld blocks, the table has %d", si,
                                 (long long)n_pos, (long long)need, s->n_blocks);
        for (int64_t i = 0; i < need; i++)
            if (s->block_table[i] < 0 || s->block_table[i] >= be->base.n_blocks)
                return cel_error_set(err, CEL_ERR_INVALID,
                                     "cpu backend: batch seq %d: block_table[%lld] = %d outside the pool of %d blocks", si,
                                     (long long)i, s->block_table[i], be->base.n_blocks);
        for (int32_t i = 0; i < s->n_new; i++) {
            int32_t r = s->first + i;
            if (be->row_seq[r] >= 0)
                return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: batch row %d belongs to seqs %d and %d", r,
                                     be->row_seq[r], si);
            be->row_seq[r] = si;
            be->row_pos[r] = s->n_past + i;
        }
    }
    for (int32_t t = 0; t < b->n_tokens; t++)
        if (be->row_seq[t] < 0)
            return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: batch row %d belongs to no sequence", t);
    for (int32_t i = 0; i < b->n_out; i++)
        if (b->out_rows[i] < 0 || b->out_rows[i] >= b->n_tokens)
            return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: out_rows[%d] = %d outside the batch of %d rows", i,
                                 b->out_rows[i], b->n_tokens);
    return CEL_OK;
}

static int64_t build_items(cpu_backend *be, const cel_batch *b)
{
    int64_t n = 0;
    for (int32_t si = 0; si < b->n_seqs; si++) {
        const cel_batch_seq *s = &b->seqs[si];
        for (int32_t r0 = 0; r0 < s->n_new; r0 += ATT_CHUNK)
            for (int32_t g = 0; g < be->Hkv; g++) {
                attn_item *it = &be->items[n++];
                it->seq = si;
                it->kvh = g;
                it->r0 = s->first + r0;
                it->r1 = s->first + (s->n_new - r0 < ATT_CHUNK ? s->n_new : r0 + ATT_CHUNK);
            }
    }
    return n;
}

static void gather_rows(float *dst, const float *src, const int32_t *rows, int32_t n, int64_t width)
{
    for (int32_t i = 0; i < n; i++) memcpy(dst + i * width, src + rows[i] * width, (size_t)width * sizeof *dst);
}

static cel_status cpu_forward(cel_backend *base, const cel_batch *b, cel_error *err)
{
    cpu_backend *be = (cpu_backend *)base;
    const cel_model *m = base->model;
    CEL_TRY(check_batch(be, b, err));
    const int64_t T = b->n_tokens, E = be->E, half = be->D / 2;
    if (T == 0) return CEL_OK;

    for (int64_t t = 0; t < T; t++) {
        cel_op_embed(be->x + t * E, m->tok_embd, b->tokens[t]);
        cel__rope_cs(be->row_pos[t], be->inv_freq, (int32_t)half, be->rc + t * half, be->rs + t * half);
    }
    int64_t n_items = build_items(be, b);
    float *x = be->x;  /* residual stream; becomes the gathered out rows in the last layer */
    int64_t rows = T;  /* rows of x still computed */
    bool gathered = false;
    for (int32_t l = 0; l < be->L; l++) {
        const cel_layer *ly = &m->layers[l];
        const cpu_layer *dl = &be->layers[l];
        rmsnorm_rows(be, x, be->xn, dl->attn_norm, rows);
        cel__mm qkv[3] = {{ly->wq, be->q, (size_t)be->Qd}, {ly->wk, be->kk, (size_t)be->KVd}, {ly->wv, be->vv, (size_t)be->KVd}};
        cel__matmul(be->k, be->pool, be->xn, (size_t)E, rows, E, qkv, 3, be->act);
        qkv_ctx qc = {be, b, l};
        cel_pool_run(be->pool, rows, 8, post_qkv_rows, &qc);
        attn_ctx ac = {be, b, l};
        cel_pool_run(be->pool, n_items, 1, attn_items, &ac);
        const float *att = be->att;
        if (l == be->L - 1) { /* only the rows whose logits are wanted go on */
            gather_rows(be->xc, x, b->out_rows, b->n_out, E);
            gather_rows(be->q, be->att, b->out_rows, b->n_out, be->Qd);
            x = be->xc;
            att = be->q;
            rows = b->n_out;
            gathered = true;
            if (rows == 0) break;
        }
        cel__mm o = {ly->wo, be->xn, (size_t)E};
        cel__matmul(be->k, be->pool, att, (size_t)be->Qd, rows, be->Qd, &o, 1, be->act);
        add_rows(x, be->xn, rows * E);
        rmsnorm_rows(be, x, be->xn, dl->ffn_norm, rows);
        cel__mm gu[2] = {{ly->w_gate, be->g, (size_t)be->F}, {ly->w_up, be->u, (size_t)be->F}};
        cel__matmul(be->k, be->pool, be->xn, (size_t)E, rows, E, gu, 2, be->act);
        swiglu_ctx sc = {be, be->F};
        cel_pool_run(be->pool, rows, 4, swiglu_rows, &sc);
        cel__mm dn = {ly->w_down, be->xn, (size_t)E};
        cel__matmul(be->k, be->pool, be->g, (size_t)be->F, rows, be->F, &dn, 1, be->act);
        add_rows(x, be->xn, rows * E);
    }
    if (b->n_out == 0) return CEL_OK;
    if (!gathered) { /* no layers: the embeddings themselves */
        gather_rows(be->xc, x, b->out_rows, b->n_out, E);
        x = be->xc;
    }
    rmsnorm_rows(be, x, be->xn, be->out_norm, b->n_out);
    cel__mm out = {m->output, b->logits, (size_t)be->V};
    cel__matmul(be->k, be->pool, be->xn, (size_t)E, b->n_out, E, &out, 1, be->act);
    return CEL_OK;
}

/* ------------------------------------------------------- other vtbl ops */

static cel_status cpu_copy_block(cel_backend *base, int32_t src, int32_t dst, int32_t n_tokens, cel_error *err)
{
    cpu_backend *be = (cpu_backend *)base;
    if (src < 0 || src >= base->n_blocks || dst < 0 || dst >= base->n_blocks)
        return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: copy_block %d -> %d outside the pool of %d blocks", src,
                             dst, base->n_blocks);
    if (n_tokens < 0 || n_tokens > base->block_size)
        return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: copy_block of %d tokens (block size %d)", n_tokens,
                             base->block_size);
    if (src == dst || n_tokens == 0) return CEL_OK;
    size_t bs = (size_t)base->block_size, D = (size_t)be->D;
    for (int32_t l = 0; l < be->L; l++)
        for (int32_t g = 0; g < be->Hkv; g++) {
            uint16_t *kd = kv_ptr(be, l, dst, 0, g);
            const uint16_t *ks = kv_ptr(be, l, src, 0, g);
            for (size_t i = 0; i < D; i++) memcpy(kd + i * bs, ks + i * bs, (size_t)n_tokens * sizeof(uint16_t));
            memcpy(kv_ptr(be, l, dst, 1, g), kv_ptr(be, l, src, 1, g), (size_t)n_tokens * D * sizeof(uint16_t));
        }
    return CEL_OK;
}

static cel_status cpu_weights_changed(cel_backend *base, cel_error *err)
{
    cpu_backend *be = (cpu_backend *)base;
    CEL_TRY(check_model(base->model, err));
    derive(be);
    return CEL_OK;
}

static void cpu_free(cel_backend *base)
{
    cpu_backend *be = (cpu_backend *)base;
    if (!be) return;
    cel_pool_free(be->pool);
    free(be->derived);
    free(be->layers);
    free(be->inv_freq);
    free(be->kv);
    free(be->x);
    free(be->xn);
    free(be->xc);
    free(be->q);
    free(be->kk);
    free(be->vv);
    free(be->att);
    free(be->g);
    free(be->u);
    free(be->rc);
    free(be->rs);
    free(be->row_pos);
    free(be->row_seq);
    free(be->items);
    free(be->tscratch);
    free(be->act);
    free(be);
}

static const cel_backend_vtbl cpu_vtbl = {
    .name = "cpu",
    .forward = cpu_forward,
    .copy_block = cpu_copy_block,
    .weights_changed = cpu_weights_changed,
    .free = cpu_free,
};

cel_status cel_backend_cpu_create(const cel_model *m, const cel_backend_params *p, cel_backend **out, cel_error *err)
{
    *out = NULL;
    if (!m || !p) return cel_error_set(err, CEL_ERR_INVALID, "cpu backend: no model or parameters");
    CEL_TRY(check_model(m, err));
    const cel_hparams *hp = &m->hp;
    int32_t bs = p->block_size > 0 ? p->block_size : 16;
    if (bs > MAX_BLOCK)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "cpu backend: block size %d (at most %d)", bs, MAX_BLOCK);
    /* CELINE_CPU_KERNELS pins a kernel table (to compare them, or to rule one
     * out when chasing a numerical difference); default: the best one */
    const char *kname = getenv("CELINE_CPU_KERNELS");
    const cel__kern *kern = kname && *kname ? cel__kern_named(kname) : cel__kern_best();
    if (!kern)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED,
                             "cpu backend: CELINE_CPU_KERNELS=%s is not a kernel table this CPU runs (scalar, avx2, "
                             "avx512; best here: %s)",
                             kname, cel__kern_best()->name);
    int32_t T = p->max_batch_tokens > 0 ? p->max_batch_tokens : 512;
    size_t blk_bytes = cel_backend_kv_block_bytes(hp, bs, CEL_BACKEND_CPU);
    size_t kv_bytes = p->kv_bytes ? p->kv_bytes : blk_bytes * (size_t)((8192 + bs - 1) / bs);
    size_t n_blocks = blk_bytes ? kv_bytes / blk_bytes : (size_t)1 << 20;
    if (n_blocks == 0)
        return cel_error_set(err, CEL_ERR_LIMIT, "cpu backend: kv_bytes %zu is less than one block (%zu bytes)", kv_bytes,
                             blk_bytes);
    if (n_blocks > INT32_MAX) n_blocks = INT32_MAX;

    cpu_backend *be = calloc(1, sizeof *be);
    if (!be) return cel_error_set(err, CEL_ERR_NOMEM, "cpu backend: out of memory");
    be->base.v = &cpu_vtbl;
    be->base.model = m;
    be->base.block_size = bs;
    be->base.n_blocks = (int32_t)n_blocks;
    be->k = kern;
    be->max_tokens = T;
    be->E = hp->n_embd;
    be->H = hp->n_head;
    be->Hkv = hp->n_head_kv;
    be->D = hp->head_dim;
    be->G = hp->n_head / hp->n_head_kv;
    be->L = hp->n_layer;
    be->Qd = (int64_t)be->H * be->D;
    be->KVd = (int64_t)be->Hkv * be->D;
    be->F = hp->n_ff;
    be->V = hp->n_vocab;
    be->scale = 1.0f / sqrtf((float)be->D);
    be->kv_run = (size_t)be->Hkv * (size_t)bs * (size_t)be->D;

    cel_status st = cel_pool_create(p->n_threads, &be->pool, err);
    if (st != CEL_OK) {
        free(be);
        return st;
    }
    be->n_threads = cel_pool_size(be->pool);

    size_t nd = up16((size_t)be->E);
    nd += (size_t)be->L * (2 * up16((size_t)be->E) + up16((size_t)be->Qd) + 2 * up16((size_t)be->KVd) + 2 * up16((size_t)be->D));
    be->derived = alloc64(nd * sizeof(float));
    be->layers = calloc((size_t)(be->L > 0 ? be->L : 1), sizeof *be->layers);
    be->inv_freq = alloc64((size_t)be->D / 2 * sizeof(float));
    be->kv = calloc(n_blocks, blk_bytes ? blk_bytes : 1);
    int64_t Tn = T;
    int64_t wmax = be->E > be->Qd ? be->E : be->Qd;
    if (be->F > wmax) wmax = be->F;
    be->x = alloc64((size_t)(Tn * be->E) * sizeof(float));
    be->xn = alloc64((size_t)(Tn * be->E) * sizeof(float));
    be->xc = alloc64((size_t)(Tn * be->E) * sizeof(float));
    be->q = alloc64((size_t)(Tn * be->Qd) * sizeof(float));
    be->kk = alloc64((size_t)(Tn * be->KVd) * sizeof(float));
    be->vv = alloc64((size_t)(Tn * be->KVd) * sizeof(float));
    be->att = alloc64((size_t)(Tn * be->Qd) * sizeof(float));
    be->g = alloc64((size_t)(Tn * be->F) * sizeof(float));
    be->u = alloc64((size_t)(Tn * be->F) * sizeof(float));
    be->rc = alloc64((size_t)(Tn * (be->D / 2)) * sizeof(float));
    be->rs = alloc64((size_t)(Tn * (be->D / 2)) * sizeof(float));
    be->row_pos = alloc64((size_t)Tn * sizeof(int32_t));
    be->row_seq = alloc64((size_t)Tn * sizeof(int32_t));
    be->max_items = (int64_t)be->Hkv * (2 * Tn + 1);
    be->items = alloc64((size_t)be->max_items * sizeof(attn_item));
    be->tscratch_stride = up16(ldk_of(bs) * (size_t)be->D) + up16((size_t)bs * be->D) +
                          up16((size_t)ATT_CHUNK * be->G * be->D) + up16((size_t)2 * ATT_CHUNK * be->G);
    be->tscratch = alloc64((size_t)be->n_threads * be->tscratch_stride * sizeof(float));
    be->act = alloc64(cel__matmul_scratch_bytes(Tn, wmax));
    if (!be->derived || !be->layers || !be->inv_freq || !be->kv || !be->x || !be->xn || !be->xc || !be->q || !be->kk ||
        !be->vv || !be->att || !be->g || !be->u || !be->rc || !be->rs || !be->row_pos || !be->row_seq || !be->items ||
        !be->tscratch || !be->act) {
        cpu_free(&be->base);
        return cel_error_set(err, CEL_ERR_NOMEM,
                             "cpu backend: out of memory (KV cache %zu blocks x %zu bytes, batch of %d tokens)", n_blocks,
                             blk_bytes, T);
    }
    /* touch the batch scratch now so the first forward pays no page faults
     * (the KV pool stays lazily mapped: it may be large and mostly unused) */
    float *bufs[] = {be->x, be->xn, be->xc, be->q, be->kk, be->vv, be->att, be->g, be->u};
    int64_t widths[] = {be->E, be->E, be->E, be->Qd, be->KVd, be->KVd, be->Qd, be->F, be->F};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) memset(bufs[i], 0, (size_t)(Tn * widths[i]) * sizeof(float));
    memset(be->act, 0, cel__matmul_scratch_bytes(Tn, wmax));
    memset(be->tscratch, 0, (size_t)be->n_threads * be->tscratch_stride * sizeof(float));
    cel_op_rope_freqs(hp, be->inv_freq);
    derive(be);
    cel_log(&p->log, CEL_LOG_INFO, "cpu backend: %s kernels, %d threads, KV cache %d blocks of %d tokens (F16, %.1f MiB)",
            be->k->name, be->n_threads, be->base.n_blocks, bs, (double)n_blocks * (double)blk_bytes / 1048576.0);
    *out = &be->base;
    return CEL_OK;
}
