/*
 * model.c - loads a model from a GGUF file or a Hugging Face folder into a
 * cel_model: hyper-parameters (GGUF keys or config.json), every tensor of the
 * file(s) as a cel_tensor pointing into the read-only mapping, the per-layer
 * bindings checked against the hyper-parameters, the tokenizer and the chat
 * template.
 *
 * One architecture table drives both formats: it names each family in GGUF
 * (general.architecture) and in config.json (model_type / architectures[0]),
 * says which optional tensors it has (q/k/v biases, q/k RMSNorm) and how its
 * GGUF files pair RoPE dimensions. Tensor names come from two tables, one per
 * format, indexed by the same slot enum.
 *
 * Everything the loader reads is outside input: each key is range-checked and
 * each tensor's shape is compared to what the hyper-parameters imply, and every
 * message names the file and the key or tensor at fault.
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/engine.h"
#include "gguf.h"
#include "ops.h"
#include "safetensors.h"
#include "tokenizer.h"

#define CONFIG_MAX_BYTES (16u << 20)
#define INDEX_MAX_BYTES (64u << 20)

/* ------------------------------------------------------ architecture table */

typedef struct arch_info {
    cel_arch arch;
    const char *gguf;       /* general.architecture */
    const char *hf_type;    /* config.json model_type */
    const char *hf_class;   /* config.json architectures[0] */
    bool qkv_bias;          /* q/k/v projections have biases */
    bool qk_norm;           /* per-head RMSNorm of q and k */
    cel_rope_style gguf_rope; /* llama.cpp permutes llama/mistral q/k rows -> NORM */
} arch_info;

static const arch_info ARCHS[] = {
    {CEL_ARCH_LLAMA, "llama", "llama", "LlamaForCausalLM", false, false, CEL_ROPE_NORM},
    {CEL_ARCH_QWEN2, "qwen2", "qwen2", "Qwen2ForCausalLM", true, false, CEL_ROPE_NEOX},
    {CEL_ARCH_QWEN3, "qwen3", "qwen3", "Qwen3ForCausalLM", false, true, CEL_ROPE_NEOX},
    {CEL_ARCH_MISTRAL, "mistral", "mistral", "MistralForCausalLM", false, false, CEL_ROPE_NORM},
};
#define N_ARCHS (sizeof ARCHS / sizeof ARCHS[0])
#define ARCH_LIST "llama, qwen2, qwen3, mistral"

static const arch_info *arch_by(const char *name, size_t len, int which /* 0 gguf, 1 model_type, 2 class */)
{
    for (size_t i = 0; i < N_ARCHS; i++) {
        const char *n = which == 0 ? ARCHS[i].gguf : which == 1 ? ARCHS[i].hf_type : ARCHS[i].hf_class;
        if (strlen(n) == len && memcmp(n, name, len) == 0) return &ARCHS[i];
    }
    return NULL;
}

/* Per-layer tensor slots and their names in each format. */
enum {
    S_ATTN_NORM, S_WQ, S_WK, S_WV, S_WO, S_BQ, S_BK, S_BV, S_QNORM, S_KNORM,
    S_FFN_NORM, S_GATE, S_UP, S_DOWN, S_N
};
static const char *const GGUF_LAYER[S_N] = {
    "attn_norm.weight", "attn_q.weight",      "attn_k.weight",      "attn_v.weight",   "attn_output.weight",
    "attn_q.bias",      "attn_k.bias",        "attn_v.bias",        "attn_q_norm.weight", "attn_k_norm.weight",
    "ffn_norm.weight",  "ffn_gate.weight",    "ffn_up.weight",      "ffn_down.weight",
};
static const char *const HF_LAYER[S_N] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
    "self_attn.q_norm.weight", "self_attn.k_norm.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
};
typedef struct fmt_names {
    const char *layer_fmt; /* "blk.%d." */
    const char *const *layer;
    const char *embd, *norm, *output;
} fmt_names;
static const fmt_names GGUF_NAMES = {"blk.%d.", GGUF_LAYER, "token_embd.weight", "output_norm.weight", "output.weight"};
static const fmt_names HF_NAMES = {"model.layers.%d.", HF_LAYER, "model.embed_tokens.weight", "model.norm.weight",
                                   "lm_head.weight"};

/* Loader state kept with the model. */
typedef struct model_priv {
    cel_gguf *gguf;
    cel_safetensors **st;
    size_t n_st;
} model_priv;

static const cel_logger *logger_of(const cel_model_load_opts *o)
{
    static const cel_logger none = {NULL, NULL, CEL_LOG_ERROR};
    return o ? &o->log : &none;
}

/* ---------------------------------------------------------------- helpers */

cel_tensor *cel_model_find_tensor(cel_model *m, const char *name)
{
    if (!m || !name) return NULL;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

static int64_t tensor_nelem(const cel_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < 4; d++) n *= t->ne[d];
    return n;
}

int64_t cel_model_n_params(const cel_model *m)
{
    int64_t n = 0;
    for (size_t i = 0; m && i < m->n_tensors; i++) n += tensor_nelem(&m->tensors[i]);
    return n;
}

/* Checks an integer hyper-parameter against [lo, hi]; `src` names the file
 * and `key` the key for the message. */
static cel_status check_range(const char *src, const char *key, int64_t v, int64_t lo, int64_t hi, int32_t *out,
                              cel_error *err)
{
    if (v < lo || v > hi)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: %s = %lld is out of range [%lld, %lld]", src, key, (long long)v,
                             (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return CEL_OK;
}

/* Consistency checks shared by both formats, after the keys are read. */
static cel_status check_hparams(const char *src, cel_hparams *hp, cel_error *err)
{
    if (hp->n_head % hp->n_head_kv != 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: %d attention heads are not a multiple of %d KV heads", src,
                             hp->n_head, hp->n_head_kv);
    if (hp->head_dim % 2 != 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: head_dim %d is odd (RoPE needs pairs)", src, hp->head_dim);
    if (!(hp->rms_eps > 0.0f) || !(hp->rms_eps < 1.0f))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: RMSNorm epsilon %g is out of range (0, 1)", src,
                             (double)hp->rms_eps);
    if (!(hp->rope_theta > 0.0f) || !isfinite(hp->rope_theta))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: RoPE theta %g must be positive", src, (double)hp->rope_theta);
    if (hp->rope_scaling != CEL_ROPE_SCALING_NONE && (!(hp->rope_factor >= 1.0f) || !isfinite(hp->rope_factor)))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: RoPE scaling factor %g must be >= 1", src,
                             (double)hp->rope_factor);
    if (hp->rope_scaling == CEL_ROPE_SCALING_LLAMA3 &&
        (!(hp->rope_low_freq_factor > 0.0f) || !(hp->rope_high_freq_factor > hp->rope_low_freq_factor) ||
         hp->rope_orig_ctx <= 0))
        return cel_error_set(err, CEL_ERR_FORMAT,
                             "%s: llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor and "
                             "original_max_position_embeddings > 0 (got %g, %g, %d)",
                             src, (double)hp->rope_low_freq_factor, (double)hp->rope_high_freq_factor,
                             hp->rope_orig_ctx);
    return CEL_OK;
}

/* ---------------------------------------------------- binding the tensors */

static cel_status expect_shape(const char *src, cel_tensor *t, int64_t ne0, int64_t ne1, const char *what,
                               cel_error *err)
{
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
        if (ne1 == 1)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld] (%s)",
                                 src, t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)ne0, what);
        return cel_error_set(err, CEL_ERR_FORMAT,
                             "%s: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld] (%s)", src, t->name,
                             (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)ne0,
                             (long long)ne1, what);
    }
    return CEL_OK;
}

static cel_status bind(cel_model *m, const char *src, const char *name, int64_t ne0, int64_t ne1, const char *what,
                       bool required, cel_tensor **out, cel_error *err)
{
    *out = cel_model_find_tensor(m, name);
    if (!*out) {
        if (!required) return CEL_OK;
        return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: missing tensor '%s' (%s)", src, name, what);
    }
    return expect_shape(src, *out, ne0, ne1, what, err);
}

/* Points the model's named slots at its tensors and checks every shape
 * against the hyper-parameters (n_vocab is taken from the embedding). */
static cel_status bind_tensors(cel_model *m, const char *src, const fmt_names *fn, cel_error *err)
{
    cel_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim,
                  F = hp->n_ff, D = hp->head_dim;
    m->tok_embd = cel_model_find_tensor(m, fn->embd);
    if (!m->tok_embd) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: missing tensor '%s' (token embedding)", src, fn->embd);
    if (m->tok_embd->ne[0] != E || m->tok_embd->ne[2] != 1 || m->tok_embd->ne[3] != 1 || m->tok_embd->ne[1] < 1 ||
        m->tok_embd->ne[1] > (1 << 23))
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, n_vocab]",
                             src, fn->embd, (long long)m->tok_embd->ne[0], (long long)m->tok_embd->ne[1], (long long)E);
    if (hp->n_vocab > 0 && hp->n_vocab != m->tok_embd->ne[1])
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: vocabulary size %d does not match tensor '%s' (%lld rows)", src,
                             hp->n_vocab, fn->embd, (long long)m->tok_embd->ne[1]);
    hp->n_vocab = (int32_t)m->tok_embd->ne[1];
    const int64_t V = hp->n_vocab;
    CEL_TRY(bind(m, src, fn->norm, E, 1, "final norm, n_embd", true, &m->output_norm, err));
    if (!hp->tied_embeddings) {
        CEL_TRY(bind(m, src, fn->output, E, V, "output projection, n_embd x n_vocab", false, &m->output, err));
        if (!m->output) hp->tied_embeddings = true; /* no separate output projection: tied */
    }
    if (hp->tied_embeddings) m->output = m->tok_embd;

    /* optional per-layer tensors: present in layer 0 decides for the model */
    char name[160];
    snprintf(name, sizeof name, fn->layer_fmt, 0);
    size_t pl = strlen(name);
    snprintf(name + pl, sizeof name - pl, "%s", fn->layer[S_BQ]);
    if (cel_model_find_tensor(m, name)) hp->has_qkv_bias = true;
    snprintf(name + pl, sizeof name - pl, "%s", fn->layer[S_QNORM]);
    if (cel_model_find_tensor(m, name)) hp->has_qk_norm = true;

    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory", src);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        cel_layer *L = &m->layers[il];
        struct {
            int slot;
            cel_tensor **dst;
            int64_t ne0, ne1;
            const char *what;
            bool need;
        } want[] = {
            {S_ATTN_NORM, &L->attn_norm, E, 1, "attention norm, n_embd", true},
            {S_WQ, &L->wq, E, Q, "n_embd x n_head*head_dim", true},
            {S_WK, &L->wk, E, KV, "n_embd x n_head_kv*head_dim", true},
            {S_WV, &L->wv, E, KV, "n_embd x n_head_kv*head_dim", true},
            {S_WO, &L->wo, Q, E, "n_head*head_dim x n_embd", true},
            {S_BQ, &L->bq, Q, 1, "q bias, n_head*head_dim", hp->has_qkv_bias},
            {S_BK, &L->bk, KV, 1, "k bias, n_head_kv*head_dim", hp->has_qkv_bias},
            {S_BV, &L->bv, KV, 1, "v bias, n_head_kv*head_dim", hp->has_qkv_bias},
            {S_QNORM, &L->q_norm, D, 1, "q norm, head_dim", hp->has_qk_norm},
            {S_KNORM, &L->k_norm, D, 1, "k norm, head_dim", hp->has_qk_norm},
            {S_FFN_NORM, &L->ffn_norm, E, 1, "FFN norm, n_embd", true},
            {S_GATE, &L->w_gate, E, F, "n_embd x n_ff", true},
            {S_UP, &L->w_up, E, F, "n_embd x n_ff", true},
            {S_DOWN, &L->w_down, F, E, "n_ff x n_embd", true},
        };
        snprintf(name, sizeof name, fn->layer_fmt, il);
        pl = strlen(name);
        for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
            if (!want[k].need) continue;
            snprintf(name + pl, sizeof name - pl, "%s", fn->layer[want[k].slot]);
            CEL_TRY(bind(m, src, name, want[k].ne0, want[k].ne1, want[k].what, true, want[k].dst, err));
        }
    }
    /* q/k norms and 1-D tensors are read as plain floats by every backend */
    for (size_t i = 0; i < m->n_tensors; i++) {
        const cel_tensor *t = &m->tensors[i];
        if (t->ne[1] == 1 && t->ne[2] == 1 && t->ne[3] == 1 && t->dtype != CEL_DTYPE_F32 &&
            t->dtype != CEL_DTYPE_F16 && t->dtype != CEL_DTYPE_BF16)
            return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: 1-D tensor '%s' is quantized (%s)", src, t->name,
                                 cel_dtype_name(t->dtype));
    }
    return CEL_OK;
}

/* ---------------------------------------------- RoPE factors (GGUF llama3) */

/* Llama 3.1 RoPE scaling as in the checkpoints' config: the divisor of each
 * inverse frequency `inv` (1 = unscaled). */
static double llama3_divisor(double inv, double factor, double lo, double hi, double orig)
{
    double wavelen = 2.0 * M_PI / inv;
    if (wavelen > orig / lo) return factor;
    if (wavelen < orig / hi) return 1.0;
    double s = (orig / wavelen - lo) / (hi - lo);
    return 1.0 / ((1.0 - s) / factor + s);
}

/* llama.cpp stores Llama 3.1 scaling as a tensor rope_freqs.weight of
 * head_dim/2 divisors instead of keys. cel_hparams carries the scaling as
 * parameters, so recover (factor, low=1, high, orig_ctx) that reproduce the
 * divisors: with s = (orig/wavelen - low)/(high - low) linear in 1/wavelen,
 * the transition dimensions give s = A/wavelen + B, so orig = -A/B and
 * high = 1 - 1/B (low fixed at 1; the parameters are only determined up to a
 * common scale). With fewer than two transition dimensions any boundary inside
 * the gap reproduces them; we pick one. The result is verified against every
 * divisor; a tensor that follows another rule is refused. */
static cel_status rope_from_factors(const char *src, cel_hparams *hp, const cel_tensor *t, cel_error *err)
{
    int32_t half = hp->head_dim / 2;
    if (t->dtype != CEL_DTYPE_F32 || t->ne[0] != half || tensor_nelem(t) != half)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor 'rope_freqs.weight' must be F32 [%d] (head_dim/2)", src,
                             half);
    double f[512], x[512], factor = 1.0;
    if (half > 512) return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: head_dim %d too large", src, hp->head_dim);
    for (int32_t i = 0; i < half; i++) {
        float v;
        memcpy(&v, (const char *)t->data + 4 * (size_t)i, 4);
        if (!(v >= 1.0f) || !isfinite(v))
            return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: rope_freqs.weight[%d] = %g (llama3 divisors are >= 1)",
                                 src, i, (double)v);
        f[i] = v;
        x[i] = 1.0 / pow((double)hp->rope_theta, 2.0 * i / hp->head_dim) / (2.0 * M_PI); /* 1 / wavelength */
        if (f[i] > factor) factor = f[i];
    }
    if (factor == 1.0) return CEL_OK; /* no scaling */
    /* transition points and the gap edges */
    double sx = 0, sy = 0, sxx = 0, sxy = 0, x_lo = 0, x_hi = INFINITY;
    int nt = 0;
    double tx = 0, ty = 0;
    for (int32_t i = 0; i < half; i++) {
        double s = (1.0 / f[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
        if (s <= 1e-6) {
            if (x[i] > x_lo) x_lo = x[i]; /* fully scaled: low frequency */
        } else if (s >= 1.0 - 1e-6) {
            if (x[i] < x_hi) x_hi = x[i]; /* unscaled: high frequency */
        } else {
            sx += x[i], sy += s, sxx += x[i] * x[i], sxy += x[i] * s, nt++;
            tx = x[i], ty = s;
        }
    }
    double A, B;
    if (nt >= 2) {
        double den = nt * sxx - sx * sx;
        A = (nt * sxy - sx * sy) / den;
        B = (sy - A * sx) / nt;
    } else if (nt == 1) {
        double x0 = x_lo > 0 ? sqrt(x_lo * tx) : tx / 2; /* s = 0 between the last scaled point and tx */
        A = ty / (tx - x0);
        B = -A * x0;
    } else {
        if (!(x_lo > 0) || !isfinite(x_hi))
            return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: rope_freqs.weight does not follow llama3 scaling", src);
        double x0 = pow(x_lo, 2.0 / 3) * pow(x_hi, 1.0 / 3), x1 = pow(x_lo, 1.0 / 3) * pow(x_hi, 2.0 / 3);
        A = 1.0 / (x1 - x0);
        B = -A * x0;
    }
    double orig = -A / B, hi = 1.0 - 1.0 / B;
    if (!(A > 0) || !(B < 0) || !isfinite(orig) || orig < 1 || orig > 1e9 || !isfinite(hi))
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: rope_freqs.weight does not follow llama3 scaling", src);
    orig = round(orig);
    for (int32_t i = 0; i < half; i++) {
        double inv = x[i] * 2.0 * M_PI;
        double want = llama3_divisor(inv, factor, 1.0, hi, orig);
        if (fabs(want - f[i]) > 1e-3 * f[i])
            return cel_error_set(err, CEL_ERR_UNSUPPORTED,
                                 "%s: rope_freqs.weight[%d] = %g does not follow llama3 scaling (expected %g)", src, i,
                                 f[i], want);
    }
    hp->rope_scaling = CEL_ROPE_SCALING_LLAMA3;
    hp->rope_factor = (float)factor;
    hp->rope_low_freq_factor = 1.0f;
    hp->rope_high_freq_factor = (float)hi;
    hp->rope_orig_ctx = (int32_t)orig;
    return CEL_OK;
}

/* ------------------------------------------------------------------- GGUF */

static cel_status gguf_int(const cel_gguf *g, const char *src, const char *arch, const char *key, bool required,
                           int64_t def, int64_t lo, int64_t hi, int32_t *out, cel_error *err)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t v;
    cel_status s = cel_gguf_get_i64(g, k, &v, err);
    if (s == CEL_ERR_NOT_FOUND && !required) v = def;
    else if (s == CEL_ERR_NOT_FOUND) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: missing key '%s'", src, k);
    else if (s != CEL_OK) return s;
    return check_range(src, k, v, lo, hi, out, err);
}

static cel_status gguf_float(const cel_gguf *g, const char *src, const char *arch, const char *key, bool required,
                             double def, float *out, cel_error *err)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    double v;
    cel_status s = cel_gguf_get_f64(g, k, &v, err);
    if (s == CEL_ERR_NOT_FOUND && !required) v = def;
    else if (s == CEL_ERR_NOT_FOUND) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: missing key '%s'", src, k);
    else if (s != CEL_OK) return s;
    if (!isfinite(v)) return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' is not finite", src, k);
    *out = (float)v;
    return CEL_OK;
}

static cel_status gguf_hparams(cel_model *m, const cel_gguf *g, const char *src, const cel_logger *lg, cel_error *err)
{
    cel_hparams *hp = &m->hp;
    cel_gguf_str an;
    cel_status s = cel_gguf_get_str(g, "general.architecture", &an, err);
    if (s == CEL_ERR_NOT_FOUND) return cel_error_set(err, CEL_ERR_FORMAT, "%s: missing key 'general.architecture'", src);
    CEL_TRY(s);
    const arch_info *ai = arch_by(an.p, (size_t)an.len, 0);
    if (!ai)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not supported (supported: " ARCH_LIST ")",
                             src, an.len > 40 ? 40 : (int)an.len, an.p);
    const char *a = ai->gguf;
    hp->arch = ai->arch;
    hp->rope_style = ai->gguf_rope;
    hp->has_qkv_bias = ai->qkv_bias; /* required for the family; other files may still carry them */
    hp->has_qk_norm = ai->qk_norm;
    CEL_TRY(gguf_int(g, src, a, "embedding_length", true, 0, 1, 1 << 16, &hp->n_embd, err));
    CEL_TRY(gguf_int(g, src, a, "block_count", true, 0, 1, 4096, &hp->n_layer, err));
    CEL_TRY(gguf_int(g, src, a, "feed_forward_length", true, 0, 1, 1 << 20, &hp->n_ff, err));
    CEL_TRY(gguf_int(g, src, a, "attention.head_count", true, 0, 1, 4096, &hp->n_head, err));
    CEL_TRY(gguf_int(g, src, a, "attention.head_count_kv", false, hp->n_head, 1, hp->n_head, &hp->n_head_kv, err));
    if (hp->n_embd % hp->n_head != 0) {
        char k[128];
        snprintf(k, sizeof k, "%s.attention.key_length", a);
        if (!cel_gguf_has(g, k))
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: n_embd %d is not a multiple of %d heads and '%s' is missing",
                                 src, hp->n_embd, hp->n_head, k);
    }
    CEL_TRY(gguf_int(g, src, a, "attention.key_length", false, hp->n_embd / hp->n_head, 2, 1024, &hp->head_dim, err));
    int32_t vlen, rdim;
    CEL_TRY(gguf_int(g, src, a, "attention.value_length", false, hp->head_dim, 1, 1024, &vlen, err));
    if (vlen != hp->head_dim)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: %s.attention.value_length %d differs from key_length %d", src,
                             a, vlen, hp->head_dim);
    CEL_TRY(gguf_int(g, src, a, "rope.dimension_count", false, hp->head_dim, 1, 1024, &rdim, err));
    if (rdim != hp->head_dim)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED,
                             "%s: %s.rope.dimension_count %d != head_dim %d (partial rotary is not supported)", src, a,
                             rdim, hp->head_dim);
    CEL_TRY(gguf_int(g, src, a, "context_length", true, 0, 1, 1 << 24, &hp->n_ctx_train, err));
    CEL_TRY(gguf_float(g, src, a, "attention.layer_norm_rms_epsilon", true, 0, &hp->rms_eps, err));
    CEL_TRY(gguf_float(g, src, a, "rope.freq_base", false, 10000.0, &hp->rope_theta, err));
    int32_t nv = 0;
    CEL_TRY(gguf_int(g, src, a, "vocab_size", false, 0, 0, 1 << 23, &nv, err));
    hp->n_vocab = nv; /* checked against the embedding when binding; 0 = take the embedding's */

    /* RoPE scaling: keys (linear), or llama.cpp's rope_freqs tensor (llama3) */
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", a);
    cel_gguf_str st;
    s = cel_gguf_get_str(g, k, &st, err);
    if (s == CEL_OK) {
        if (st.len == 6 && memcmp(st.p, "linear", 6) == 0) {
            hp->rope_scaling = CEL_ROPE_SCALING_LINEAR;
            CEL_TRY(gguf_float(g, src, a, "rope.scaling.factor", true, 1.0, &hp->rope_factor, err));
        } else if (!(st.len == 4 && memcmp(st.p, "none", 4) == 0)) {
            return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: %s = '%.*s' is not supported (none, linear)", src, k,
                                 st.len > 20 ? 20 : (int)st.len, st.p);
        }
    } else if (s != CEL_ERR_NOT_FOUND) {
        return s;
    } else {
        float lin = 0;
        CEL_TRY(gguf_float(g, src, a, "rope.scale_linear", false, 0.0, &lin, err)); /* older files */
        if (lin > 1.0f) {
            hp->rope_scaling = CEL_ROPE_SCALING_LINEAR;
            hp->rope_factor = lin;
        }
    }
    cel_tensor *rf = cel_model_find_tensor(m, "rope_freqs.weight");
    if (rf) {
        if (hp->rope_scaling != CEL_ROPE_SCALING_NONE)
            return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: both %s and rope_freqs.weight are present", src, k);
        CEL_TRY(rope_from_factors(src, hp, rf, err));
        if (hp->rope_scaling == CEL_ROPE_SCALING_LLAMA3)
            cel_log(lg, CEL_LOG_DEBUG, "%s: llama3 RoPE scaling from rope_freqs.weight: factor %g high %g orig %d", src,
                    (double)hp->rope_factor, (double)hp->rope_high_freq_factor, hp->rope_orig_ctx);
    }
    return check_hparams(src, hp, err);
}

static cel_status load_gguf(cel_model *m, const char *path, const cel_model_load_opts *opts, cel_error *err)
{
    model_priv *pv = m->priv;
    CEL_TRY(cel_gguf_open(path, &pv->gguf, err));
    const cel_gguf *g = pv->gguf;
    snprintf(m->format, sizeof m->format, "gguf");
    uint64_t n = cel_gguf_n_tensors(g);
    m->tensors = calloc((size_t)(n ? n : 1), sizeof *m->tensors);
    if (!m->tensors) return cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory", path);
    for (uint64_t i = 0; i < n; i++) {
        const cel_gguf_tensor_info *ti = cel_gguf_tensor(g, i);
        cel_tensor *t = &m->tensors[i];
        memcpy(t->name, ti->name.p, (size_t)ti->name.len); /* the reader caps names below sizeof t->name */
        t->name[ti->name.len] = 0;
        t->dtype = ti->dtype;
        t->n_dims = (int32_t)ti->n_dims;
        memcpy(t->ne, ti->ne, sizeof t->ne);
        t->data = (void *)(uintptr_t)ti->data; /* read-only mapping: see cel_model_make_writable */
        t->nbytes = ti->nbytes;
    }
    m->n_tensors = (size_t)n;
    CEL_TRY(gguf_hparams(m, g, path, logger_of(opts), err));
    CEL_TRY(bind_tensors(m, path, &GGUF_NAMES, err));

    cel_gguf_str s;
    if (cel_gguf_get_str(g, "general.name", &s, NULL) == CEL_OK && s.len > 0) m->name = strndup(s.p, (size_t)s.len);
    if (cel_gguf_get_str(g, "tokenizer.chat_template", &s, NULL) == CEL_OK)
        m->chat_template = strndup(s.p, (size_t)s.len);
    if (!opts || !opts->tokenizer_path) {
        if (cel_gguf_has(g, "tokenizer.ggml.model") || cel_gguf_has(g, "tokenizer.ggml.tokens")) {
            cel_status st = cel_tokenizer_from_gguf(g, &m->tok, err);
            if (st != CEL_OK) {
                cel_error_prefix(err, "%s: tokenizer", path);
                return st;
            }
        } else {
            cel_log(logger_of(opts), CEL_LOG_WARN, "%s: no tokenizer.ggml.* metadata: the model has no tokenizer", path);
        }
    }
    return CEL_OK;
}

/* ---------------------------------------------------------- Hugging Face */

static cel_status json_int(json_t *root, const char *src, const char *key, bool required, int64_t def, int64_t lo,
                           int64_t hi, int32_t *out, cel_error *err)
{
    json_t *v = json_object_get(root, key);
    int64_t x = def;
    if (!v || json_is_null(v)) {
        if (required) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: missing key '%s'", src, key);
    } else if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else {
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' must be an integer", src, key);
    }
    return check_range(src, key, x, lo, hi, out, err);
}

static cel_status json_num(json_t *obj, const char *src, const char *key, bool required, double def, float *out,
                           cel_error *err)
{
    json_t *v = json_object_get(obj, key);
    double x = def;
    if (!v || json_is_null(v)) {
        if (required) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: missing key '%s'", src, key);
    } else if (json_is_number(v)) {
        x = json_number_value(v);
    } else {
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' must be a number", src, key);
    }
    if (!isfinite(x) || fabs(x) > 1e30) return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' is out of range", src, key);
    *out = (float)x;
    return CEL_OK;
}

static cel_status json_flag(json_t *obj, const char *src, const char *key, bool def, bool *out, cel_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) *out = def;
    else if (json_is_boolean(v)) *out = json_is_true(v);
    else return cel_error_set(err, CEL_ERR_FORMAT, "%s: key '%s' must be true or false", src, key);
    return CEL_OK;
}

/* Parses config.json (already loaded as `root`) into m->hp. */
static cel_status hf_hparams(cel_model *m, json_t *root, const char *src, const cel_logger *lg, cel_error *err)
{
    cel_hparams *hp = &m->hp;
    if (!json_is_object(root)) return cel_error_set(err, CEL_ERR_FORMAT, "%s: not a JSON object", src);
    const arch_info *ai = NULL;
    json_t *mt = json_object_get(root, "model_type"), *archs = json_object_get(root, "architectures");
    const char *mts = json_is_string(mt) ? json_string_value(mt) : NULL;
    if (mts) ai = arch_by(mts, strlen(mts), 1);
    const char *cls = json_is_array(archs) && json_is_string(json_array_get(archs, 0))
                          ? json_string_value(json_array_get(archs, 0))
                          : NULL;
    if (!ai && !mts && cls) ai = arch_by(cls, strlen(cls), 2);
    if (!ai) {
        if (!mts && !cls) return cel_error_set(err, CEL_ERR_FORMAT, "%s: neither 'model_type' nor 'architectures' is set", src);
        return cel_error_set(err, CEL_ERR_UNSUPPORTED,
                             "%s: model_type '%.40s' is not supported (supported: " ARCH_LIST ")", src,
                             mts ? mts : cls);
    }
    hp->arch = ai->arch;
    hp->rope_style = CEL_ROPE_NEOX; /* every HF checkpoint uses rotate-half */
    hp->has_qkv_bias = ai->qkv_bias;
    hp->has_qk_norm = ai->qk_norm;
    CEL_TRY(json_int(root, src, "hidden_size", true, 0, 1, 1 << 16, &hp->n_embd, err));
    CEL_TRY(json_int(root, src, "num_hidden_layers", true, 0, 1, 4096, &hp->n_layer, err));
    CEL_TRY(json_int(root, src, "intermediate_size", true, 0, 1, 1 << 20, &hp->n_ff, err));
    CEL_TRY(json_int(root, src, "num_attention_heads", true, 0, 1, 4096, &hp->n_head, err));
    CEL_TRY(json_int(root, src, "num_key_value_heads", false, hp->n_head, 1, hp->n_head, &hp->n_head_kv, err));
    json_t *hd = json_object_get(root, "head_dim");
    if ((!hd || json_is_null(hd)) && hp->n_embd % hp->n_head != 0)
        return cel_error_set(err, CEL_ERR_FORMAT, "%s: hidden_size %d is not a multiple of %d heads and 'head_dim' is not set",
                             src, hp->n_embd, hp->n_head);
    CEL_TRY(json_int(root, src, "head_dim", false, hp->n_embd / hp->n_head, 2, 1024, &hp->head_dim, err));
    CEL_TRY(json_int(root, src, "vocab_size", true, 0, 1, 1 << 23, &hp->n_vocab, err));
    CEL_TRY(json_int(root, src, "max_position_embeddings", false, 2048, 1, 1 << 24, &hp->n_ctx_train, err));
    CEL_TRY(json_num(root, src, "rms_norm_eps", false, 1e-6, &hp->rms_eps, err));
    CEL_TRY(json_num(root, src, "rope_theta", false, 10000.0, &hp->rope_theta, err));
    CEL_TRY(json_flag(root, src, "tie_word_embeddings", false, &hp->tied_embeddings, err));
    bool attn_bias = false, mlp_bias = false;
    CEL_TRY(json_flag(root, src, "attention_bias", false, &attn_bias, err));
    CEL_TRY(json_flag(root, src, "mlp_bias", false, &mlp_bias, err));
    if (attn_bias && !ai->qkv_bias)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: attention_bias = true (an o_proj bias) is not supported", src);
    if (mlp_bias) return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: mlp_bias = true is not supported", src);
    json_t *act = json_object_get(root, "hidden_act");
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0))
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: hidden_act must be \"silu\"", src);
    bool sw = false;
    CEL_TRY(json_flag(root, src, "use_sliding_window", false, &sw, err));
    json_t *swin = json_object_get(root, "sliding_window");
    if ((sw || (ai->arch == CEL_ARCH_MISTRAL && json_is_integer(swin))) && json_is_integer(swin) &&
        json_integer_value(swin) < hp->n_ctx_train)
        cel_log(lg, CEL_LOG_WARN, "%s: sliding_window %lld is ignored (full attention up to the context length)", src,
                (long long)json_integer_value(swin));

    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs)) return cel_error_set(err, CEL_ERR_FORMAT, "%s: 'rope_scaling' must be an object", src);
        json_t *ty = json_object_get(rs, "rope_type");
        if (!ty) ty = json_object_get(rs, "type");
        if (!json_is_string(ty)) return cel_error_set(err, CEL_ERR_FORMAT, "%s: rope_scaling has no 'rope_type'", src);
        const char *t = json_string_value(ty);
        if (strcmp(t, "linear") == 0) {
            hp->rope_scaling = CEL_ROPE_SCALING_LINEAR;
            CEL_TRY(json_num(rs, src, "factor", true, 1.0, &hp->rope_factor, err));
        } else if (strcmp(t, "llama3") == 0) {
            hp->rope_scaling = CEL_ROPE_SCALING_LLAMA3;
            CEL_TRY(json_num(rs, src, "factor", true, 1.0, &hp->rope_factor, err));
            CEL_TRY(json_num(rs, src, "low_freq_factor", true, 1.0, &hp->rope_low_freq_factor, err));
            CEL_TRY(json_num(rs, src, "high_freq_factor", true, 4.0, &hp->rope_high_freq_factor, err));
            CEL_TRY(json_int(rs, src, "original_max_position_embeddings", true, 8192, 1, 1 << 24, &hp->rope_orig_ctx,
                             err));
        } else if (strcmp(t, "default") != 0) {
            return cel_error_set(err, CEL_ERR_UNSUPPORTED,
                                 "%s: rope_scaling type '%.32s' is not supported (linear, llama3)", src, t);
        }
    }
    return check_hparams(src, hp, err);
}

/* A shard name from the index must be a plain file name in the folder. */
static bool plain_file_name(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 256 && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the shard files of folder `dir`: from model.safetensors.index.json
 * when present (*index receives the parsed index so tensors can be checked
 * against its weight_map), else every *.safetensors in the folder. */
static cel_status hf_shards(const char *dir, char ***names, size_t *n, json_t **index, cel_error *err)
{
    *names = NULL;
    *n = 0;
    *index = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    size_t cap = 0;
    if (cel_path_exists(path)) {
        char *txt;
        size_t len;
        CEL_TRY(cel_read_file(path, INDEX_MAX_BYTES, &txt, &len, err));
        json_error_t je;
        json_t *root = json_loadb(txt, len, JSON_REJECT_DUPLICATES, &je);
        free(txt);
        if (!root) return cel_error_set(err, CEL_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
        json_t *wm = json_object_get(root, "weight_map");
        if (!json_is_object(wm) || json_object_size(wm) == 0) {
            json_decref(root);
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: no 'weight_map' object", path);
        }
        const char *k;
        json_t *v;
        json_object_foreach(wm, k, v) {
            if (!json_is_string(v) || !plain_file_name(json_string_value(v))) {
                cel_error_set(err, CEL_ERR_FORMAT, "%s: weight_map['%.100s'] is not a file name in the folder", path,
                              k); /* before the decref: k belongs to root */
                json_decref(root);
                return CEL_ERR_FORMAT;
            }
            const char *f = json_string_value(v);
            bool seen = false;
            for (size_t i = 0; i < *n && !seen; i++) seen = strcmp((*names)[i], f) == 0;
            if (seen) continue;
            if (*n == cap) {
                cap = cap ? 2 * cap : 8;
                char **nn = realloc(*names, cap * sizeof *nn);
                if (!nn) {
                    json_decref(root);
                    return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
                }
                *names = nn;
            }
            if (!((*names)[(*n)++] = strdup(f))) {
                json_decref(root);
                return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
            }
        }
        *index = root;
    } else {
        DIR *d = opendir(dir);
        if (!d) return cel_error_set(err, CEL_ERR_IO, "%s: cannot list the folder", dir);
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (l <= 12 || strcmp(e->d_name + l - 12, ".safetensors") != 0) continue;
            if (*n == cap) {
                cap = cap ? 2 * cap : 8;
                char **nn = realloc(*names, cap * sizeof *nn);
                if (!nn) {
                    closedir(d);
                    return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
                }
                *names = nn;
            }
            if (!((*names)[(*n)++] = strdup(e->d_name))) {
                closedir(d);
                return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
            }
        }
        closedir(d);
        if (*n == 0) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: no *.safetensors file in the folder", dir);
    }
    qsort(*names, *n, sizeof **names, cmp_cstr);
    return CEL_OK;
}

/* Copies a safetensors tensor into t; data whose address is not a multiple
 * of the element size (allowed by the format) is copied to owned memory so
 * kernels may load elements directly. */
static cel_status hf_tensor(const cel_safetensors *st, const cel_st_tensor *s, cel_tensor *t, cel_error *err)
{
    const char *src = cel_safetensors_label(st);
    if (!s->supported)
        return cel_error_set(err, CEL_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (celine reads F32, F16, BF16)", src,
                             s->name, s->dtype_name);
    snprintf(t->name, sizeof t->name, "%s", s->name);
    t->dtype = s->dtype;
    t->n_dims = s->n_dims ? s->n_dims : 1;
    memcpy(t->ne, s->ne, sizeof t->ne);
    for (int d = 0; d < 4; d++)
        if (t->ne[d] == 0)
            return cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' is empty (a dimension is 0)", src, s->name);
    t->nbytes = s->nbytes;
    if ((uintptr_t)s->data % s->elem_size == 0) {
        t->data = (void *)(uintptr_t)s->data;
        return CEL_OK;
    }
    void *p = aligned_alloc(64, (s->nbytes + 63) / 64 * 64);
    if (!p) return cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory copying '%s'", src, s->name);
    memcpy(p, s->data, s->nbytes);
    t->data = p;
    t->owned = true;
    return CEL_OK;
}

static cel_status load_hf(cel_model *m, const char *dir, const cel_model_load_opts *opts, cel_error *err)
{
    model_priv *pv = m->priv;
    const cel_logger *lg = logger_of(opts);
    snprintf(m->format, sizeof m->format, "safetensors");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!cel_path_exists(path)) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: missing (not a Hugging Face model folder)", path);
    char *txt;
    size_t len;
    CEL_TRY(cel_read_file(path, CONFIG_MAX_BYTES, &txt, &len, err));
    json_error_t je;
    json_t *cfg = json_loadb(txt, len, JSON_REJECT_DUPLICATES, &je);
    free(txt);
    if (!cfg) return cel_error_set(err, CEL_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    cel_status s = hf_hparams(m, cfg, path, lg, err);
    json_decref(cfg);
    CEL_TRY(s);

    char **names = NULL;
    size_t n_names = 0;
    json_t *index = NULL;
    s = hf_shards(dir, &names, &n_names, &index, err);
    if (s == CEL_OK) {
        pv->st = calloc(n_names ? n_names : 1, sizeof *pv->st);
        if (!pv->st) s = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    size_t total = 0;
    for (size_t i = 0; s == CEL_OK && i < n_names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        s = cel_safetensors_open(path, &pv->st[i], err);
        if (s == CEL_OK) {
            pv->n_st++;
            total += cel_safetensors_n_tensors(pv->st[i]);
        }
    }
    if (s == CEL_OK) {
        m->tensors = calloc(total ? total : 1, sizeof *m->tensors);
        if (!m->tensors) s = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; s == CEL_OK && i < pv->n_st; i++) {
        for (size_t k = 0; s == CEL_OK && k < cel_safetensors_n_tensors(pv->st[i]); k++) {
            const cel_st_tensor *st = cel_safetensors_tensor(pv->st[i], k);
            for (size_t j = 0; j < i && s == CEL_OK; j++)
                if (cel_safetensors_find(pv->st[j], st->name))
                    s = cel_error_set(err, CEL_ERR_FORMAT, "%s: tensor '%s' is also in %s", cel_safetensors_label(pv->st[i]),
                                      st->name, cel_safetensors_label(pv->st[j]));
            if (s == CEL_OK) s = hf_tensor(pv->st[i], st, &m->tensors[m->n_tensors], err);
            if (s == CEL_OK) m->n_tensors++;
        }
    }
    if (s == CEL_OK && index) { /* every tensor the index lists is in the shard it names */
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(index, "weight_map"), k, v) {
            const char *f = json_string_value(v);
            size_t i = 0;
            while (i < n_names && strcmp(names[i], f) != 0) i++;
            if (!cel_safetensors_find(pv->st[i], k)) {
                s = cel_error_set(err, CEL_ERR_FORMAT,
                                  "%s/model.safetensors.index.json: tensor '%.100s' is not in %s as the index says", dir,
                                  k, f);
                break;
            }
        }
    }
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    json_decref(index);
    CEL_TRY(s);
    CEL_TRY(bind_tensors(m, dir, &HF_NAMES, err));

    if (!opts || !opts->tokenizer_path) { /* an explicit tokenizer is loaded by the caller */
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (cel_path_exists(path)) CEL_TRY(cel_tokenizer_load_json(path, &m->tok, err));
        else cel_log(lg, CEL_LOG_WARN, "%s: no tokenizer.json: the model has no tokenizer", dir);
    }
    /* the folder's name, without trailing slashes */
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/') end--;
    size_t beg = end;
    while (beg > 0 && dir[beg - 1] != '/') beg--;
    m->name = strndup(dir + beg, end - beg);
    return CEL_OK;
}

/* ------------------------------------------------------------ public API */

cel_status cel_model_load(const char *path, const cel_model_load_opts *opts, cel_model **out, cel_error *err)
{
    *out = NULL;
    if (!path || !*path) return cel_error_set(err, CEL_ERR_INVALID, "cel_model_load: no path");
    cel_model *m = calloc(1, sizeof *m);
    model_priv *pv = calloc(1, sizeof *pv);
    if (!m || !pv || !(m->path = strdup(path))) {
        free(m ? m->path : NULL);
        free(m);
        free(pv);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    m->priv = pv;
    cel_status s;
    if (cel_path_is_dir(path)) {
        s = load_hf(m, path, opts, err);
    } else if (!cel_path_exists(path)) {
        s = cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: no such file or folder", path);
    } else {
        s = load_gguf(m, path, opts, err);
        if (s == CEL_OK && !m->name) {
            const char *b = strrchr(path, '/');
            b = b ? b + 1 : path;
            size_t l = strlen(b);
            if (l > 5 && strcmp(b + l - 5, ".gguf") == 0) l -= 5;
            m->name = strndup(b, l);
        }
    }
    if (s == CEL_OK && opts && opts->tokenizer_path) s = cel_tokenizer_load_json(opts->tokenizer_path, &m->tok, err);
    if (s == CEL_OK && m->tok && !m->chat_template && cel_tokenizer_chat_template(m->tok)) {
        m->chat_template = strdup(cel_tokenizer_chat_template(m->tok));
        if (!m->chat_template) s = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    }
    if (s == CEL_OK && m->tok && cel_tokenizer_n_vocab(m->tok) > m->hp.n_vocab)
        s = cel_error_set(err, CEL_ERR_FORMAT, "%s: the tokenizer has %d tokens but the embedding only %d rows", path,
                          cel_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    if (s == CEL_OK && !m->name) s = cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    if (s != CEL_OK) {
        cel_model_free(m);
        return s;
    }
    *out = m;
    return CEL_OK;
}

void cel_model_free(cel_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].owned) free(m->tensors[i].data);
    free(m->tensors);
    free(m->layers);
    if (m->tok) cel_tokenizer_free(m->tok);
    model_priv *pv = m->priv;
    if (pv) {
        cel_gguf_close(pv->gguf);
        for (size_t i = 0; i < pv->n_st; i++) cel_safetensors_close(pv->st[i]);
        free(pv->st);
        free(pv);
    }
    free(m->chat_template);
    free(m->name);
    free(m->path);
    free(m);
}

cel_status cel_model_make_writable(cel_model *m, const char *name, cel_tensor **out, cel_error *err)
{
    if (out) *out = NULL;
    cel_tensor *t = cel_model_find_tensor(m, name);
    if (!t) return cel_error_set(err, CEL_ERR_NOT_FOUND, "%s: no tensor '%s'", m ? m->path : "model", name ? name : "");
    if (!t->owned) {
        bool quant = t->dtype != CEL_DTYPE_F32 && t->dtype != CEL_DTYPE_F16 && t->dtype != CEL_DTYPE_BF16;
        int64_t n = tensor_nelem(t);
        size_t bytes = quant ? (size_t)n * sizeof(float) : t->nbytes;
        void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!p) return cel_error_set(err, CEL_ERR_NOMEM, "%s: out of memory for tensor '%s'", m->path, name);
        if (quant) {
            size_t row = cel_dtype_row_bytes(t->dtype, t->ne[0]);
            for (int64_t r = 0; r < n / t->ne[0]; r++)
                cel_dequant_row(t->dtype, (const char *)t->data + (size_t)r * row, (float *)p + r * t->ne[0], t->ne[0]);
            t->dtype = CEL_DTYPE_F32;
        } else {
            memcpy(p, t->data, bytes);
        }
        t->data = p;
        t->nbytes = bytes;
        t->owned = true;
    }
    if (out) *out = t;
    return CEL_OK;
}

static void fmt_count(cel_buf *out, int64_t n)
{
    if (n >= 1000000000) cel_buf_printf(out, "%.2f B", (double)n / 1e9);
    else if (n >= 1000000) cel_buf_printf(out, "%.2f M", (double)n / 1e6);
    else if (n >= 1000) cel_buf_printf(out, "%.1f K", (double)n / 1e3);
    else cel_buf_printf(out, "%lld", (long long)n);
}

/* Appends the token's text for display ("<none>" for -1). */
static void show_token(cel_buf *out, const cel_tokenizer *tok, int32_t id)
{
    if (id < 0) {
        cel_buf_puts(out, "none");
        return;
    }
    cel_buf piece;
    cel_buf_init(&piece);
    cel_error e;
    if (cel_detokenize(tok, &id, 1, false, &piece, &e) == CEL_OK && piece.data)
        cel_buf_printf(out, "%d %s", id, piece.data);
    else
        cel_buf_printf(out, "%d", id);
    cel_buf_free(&piece);
}

cel_status cel_model_describe(const cel_model *m, cel_buf *out)
{
    const cel_hparams *hp = &m->hp;
    cel_status s = CEL_OK;
    cel_buf_printf(out, "model:          %s\n", m->path);
    cel_buf_printf(out, "name:           %s\n", m->name ? m->name : "");
    cel_buf_printf(out, "format:         %s\n", m->format);
    cel_buf_printf(out, "architecture:   %s\n", cel_arch_name(hp->arch));
    int64_t np = cel_model_n_params(m);
    cel_buf_puts(out, "parameters:     ");
    fmt_count(out, np);
    cel_buf_printf(out, " (%lld)\n", (long long)np);
    /* tensor count per dtype, in the order of the GGML type ids (every
     * supported type, so a new one cannot be left out of the count) */
    cel_buf_puts(out, "dtypes:        ");
    size_t bytes = 0;
    for (int t = 0; t < 64; t++) {
        if (!cel_dtype_valid(t)) continue;
        size_t c = 0;
        for (size_t i = 0; i < m->n_tensors; i++)
            if ((int)m->tensors[i].dtype == t) c++, bytes += m->tensors[i].nbytes;
        if (c) cel_buf_printf(out, " %s: %zu", cel_dtype_name((cel_dtype)t), c);
    }
    cel_buf_printf(out, " (%zu tensors, %.1f MiB)\n", m->n_tensors, (double)bytes / (1024.0 * 1024.0));
    cel_buf_printf(out, "context length: %d\n", hp->n_ctx_train);
    cel_buf_printf(out, "shape:          %d layers, n_embd %d, %d heads (%d KV), head_dim %d, n_ff %d, vocab %d\n",
                   hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff, hp->n_vocab);
    static const char *const scal[] = {"none", "linear", "llama3"};
    cel_buf_printf(out, "rope:           %s, theta %g, scaling %s", hp->rope_style == CEL_ROPE_NEOX ? "neox" : "norm",
                   (double)hp->rope_theta, scal[hp->rope_scaling]);
    if (hp->rope_scaling == CEL_ROPE_SCALING_LINEAR) cel_buf_printf(out, " (factor %g)", (double)hp->rope_factor);
    if (hp->rope_scaling == CEL_ROPE_SCALING_LLAMA3)
        cel_buf_printf(out, " (factor %g, low %g, high %g, original context %d)", (double)hp->rope_factor,
                       (double)hp->rope_low_freq_factor, (double)hp->rope_high_freq_factor, hp->rope_orig_ctx);
    cel_buf_printf(out, "\nfeatures:       rms_eps %g%s%s%s\n", (double)hp->rms_eps,
                   hp->tied_embeddings ? ", tied embeddings" : "", hp->has_qkv_bias ? ", q/k/v bias" : "",
                   hp->has_qk_norm ? ", q/k norm" : "");
    if (m->tok) {
        const cel_tokenizer *t = m->tok;
        cel_buf_printf(out, "tokenizer:      %s, vocab %d, pre-tokenizer %s, bos ",
                       cel_tokenizer_kind(t) == CEL_TOK_SPM_BPE ? "sentencepiece-bpe" : "byte-level-bpe",
                       cel_tokenizer_n_vocab(t), cel_tokenizer_pre_name(t) ? cel_tokenizer_pre_name(t) : "default");
        show_token(out, t, cel_tokenizer_bos(t));
        cel_buf_puts(out, ", eos ");
        show_token(out, t, cel_tokenizer_eos(t));
        cel_buf_puts(out, "\n");
    } else {
        cel_buf_puts(out, "tokenizer:      none\n");
    }
    if (m->chat_template) {
        cel_chat_kind k = cel_chat_detect(m->chat_template, m->tok);
        const char *nl = strchr(m->chat_template, '\n');
        int first = nl ? (int)(nl - m->chat_template) : (int)strlen(m->chat_template);
        cel_buf_printf(out, "chat template:  %s: %.*s%s\n", cel_chat_kind_name(k), first > 100 ? 100 : first,
                       m->chat_template, first > 100 ? " ..." : "");
    } else {
        cel_buf_puts(out, "chat template:  none\n");
    }
    if (!out->data) s = CEL_ERR_NOMEM;
    return s;
}
