/* Per-sample token selection (penalties, temperature, top-k/top-p/min-p,
 * logprobs) and stop-string holding. See sample.h for the pipeline. */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ scratch */

cel_status cel_sample_scratch_init(cel_sample_scratch *ws, int32_t n_vocab, cel_error *err)
{
    memset(ws, 0, sizeof *ws);
    if (n_vocab <= 0) return cel_error_set(err, CEL_ERR_INVALID, "sample: vocabulary size %d", n_vocab);
    ws->l = malloc((size_t)n_vocab * sizeof *ws->l);
    ws->idx = malloc((size_t)n_vocab * sizeof *ws->idx);
    ws->tmp = malloc((size_t)n_vocab * sizeof *ws->tmp);
    if (!ws->l || !ws->idx || !ws->tmp) {
        cel_sample_scratch_free(ws);
        return cel_error_set(err, CEL_ERR_NOMEM, "sample: out of memory for a vocabulary of %d", n_vocab);
    }
    ws->n_vocab = n_vocab;
    return CEL_OK;
}

void cel_sample_scratch_free(cel_sample_scratch *ws)
{
    free(ws->l);
    free(ws->idx);
    free(ws->tmp);
    memset(ws, 0, sizeof *ws);
}

/* ------------------------------------------------------------ state */

void cel_sample_state_init(cel_sample_state *st, uint64_t seed, uint32_t index)
{
    memset(st, 0, sizeof *st);
    /* A stream per (seed, sample index): sample i of a request draws the
     * same numbers whatever n is and whatever else runs beside it. */
    cel_rng_seed(&st->rng, cel_mix64(seed) ^ cel_mix64(0x5a4d504c45ull + (uint64_t)index));
}

void cel_sample_state_free(cel_sample_state *st)
{
    free(st->ct_tok);
    free(st->ct_n);
    memset(st, 0, sizeof *st);
}

static uint32_t ct_home(uint32_t tok, uint32_t mask) { return (uint32_t)cel_mix64(tok) & mask; }

int32_t cel_sample_state_count(const cel_sample_state *st, int32_t token)
{
    if (!st->ct_cap) return 0;
    uint32_t mask = st->ct_cap - 1;
    for (uint32_t i = ct_home((uint32_t)token, mask);; i = (i + 1) & mask) {
        if (st->ct_tok[i] == token) return st->ct_n[i];
        if (st->ct_tok[i] < 0) return 0;
    }
}

cel_status cel_sample_state_accept(cel_sample_state *st, int32_t token, cel_error *err)
{
    if (token < 0) return cel_error_set(err, CEL_ERR_INVALID, "sample: token %d", token);
    if ((st->ct_len + 1) * 2 > st->ct_cap) { /* keep the load under 1/2 */
        uint32_t cap = st->ct_cap ? st->ct_cap * 2 : 64;
        int32_t *nt = malloc(cap * sizeof *nt), *nn = malloc(cap * sizeof *nn);
        if (!nt || !nn) {
            free(nt);
            free(nn);
            return cel_error_set(err, CEL_ERR_NOMEM, "sample: out of memory for token counts");
        }
        for (uint32_t i = 0; i < cap; i++) nt[i] = -1;
        for (uint32_t j = 0; j < st->ct_cap; j++) {
            if (st->ct_tok[j] < 0) continue;
            uint32_t i = ct_home((uint32_t)st->ct_tok[j], cap - 1);
            while (nt[i] >= 0) i = (i + 1) & (cap - 1);
            nt[i] = st->ct_tok[j];
            nn[i] = st->ct_n[j];
        }
        free(st->ct_tok);
        free(st->ct_n);
        st->ct_tok = nt;
        st->ct_n = nn;
        st->ct_cap = cap;
    }
    uint32_t mask = st->ct_cap - 1;
    uint32_t i = ct_home((uint32_t)token, mask);
    while (st->ct_tok[i] >= 0 && st->ct_tok[i] != token) i = (i + 1) & mask;
    if (st->ct_tok[i] < 0) {
        st->ct_tok[i] = token;
        st->ct_n[i] = 0;
        st->ct_len++;
    }
    st->ct_n[i]++;
    return CEL_OK;
}

/* ------------------------------------------------------------ parameters */

cel_status cel_sampling_validate(const cel_sampling *p, int32_t n_vocab, cel_error *err)
{
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return cel_error_set(err, CEL_ERR_INVALID, "sampling: temperature %g must be >= 0", (double)p->temperature);
    if (p->top_k < 0) return cel_error_set(err, CEL_ERR_INVALID, "sampling: top_k %d must be >= 0", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return cel_error_set(err, CEL_ERR_INVALID, "sampling: top_p %g must be in (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return cel_error_set(err, CEL_ERR_INVALID, "sampling: min_p %g must be in [0, 1]", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return cel_error_set(err, CEL_ERR_INVALID, "sampling: repetition_penalty %g must be > 0",
                             (double)p->repetition_penalty);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return cel_error_set(err, CEL_ERR_INVALID, "sampling: presence/frequency penalties must be finite");
    if (p->max_tokens < 0)
        return cel_error_set(err, CEL_ERR_INVALID, "sampling: max_tokens %d must be >= 0", p->max_tokens);
    if (p->n_logprobs < -1 || p->n_logprobs > CEL_SAMPLE_MAX_TOP)
        return cel_error_set(err, CEL_ERR_INVALID, "sampling: n_logprobs %d must be in -1..%d", p->n_logprobs,
                             CEL_SAMPLE_MAX_TOP);
    if (p->n_stop_tokens && !p->stop_tokens)
        return cel_error_set(err, CEL_ERR_INVALID, "sampling: n_stop_tokens without stop_tokens");
    for (size_t i = 0; i < p->n_stop_tokens; i++)
        if (p->stop_tokens[i] < 0 || p->stop_tokens[i] >= n_vocab)
            return cel_error_set(err, CEL_ERR_INVALID, "sampling: stop token %d outside the vocabulary (0..%d)",
                                 p->stop_tokens[i], n_vocab - 1);
    if (p->n_stop > CEL_SAMPLE_MAX_STOP)
        return cel_error_set(err, CEL_ERR_LIMIT, "sampling: %zu stop strings (at most %d)", p->n_stop,
                             CEL_SAMPLE_MAX_STOP);
    if (p->n_stop && !p->stop) return cel_error_set(err, CEL_ERR_INVALID, "sampling: n_stop without stop");
    for (size_t i = 0; i < p->n_stop; i++) {
        if (!p->stop[i] || !p->stop[i][0])
            return cel_error_set(err, CEL_ERR_INVALID, "sampling: stop string %zu is empty", i);
        if (strlen(p->stop[i]) > CEL_SAMPLE_MAX_STOP_LEN)
            return cel_error_set(err, CEL_ERR_LIMIT, "sampling: stop string %zu longer than %d bytes", i,
                                 CEL_SAMPLE_MAX_STOP_LEN);
    }
    return CEL_OK;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

cel_status cel_sample_prompt_set(const int32_t *prompt, size_t n, int32_t **out, size_t *n_out, cel_error *err)
{
    *out = NULL;
    *n_out = 0;
    if (!n) return CEL_OK;
    int32_t *s = malloc(n * sizeof *s);
    if (!s) return cel_error_set(err, CEL_ERR_NOMEM, "sample: out of memory for a prompt of %zu tokens", n);
    memcpy(s, prompt, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_i32);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || s[k - 1] != s[i]) s[k++] = s[i];
    *out = s;
    *n_out = k;
    return CEL_OK;
}

static bool in_set(const int32_t *set, size_t n, int32_t tok)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (set[mid] < tok) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && set[lo] == tok;
}

/* ------------------------------------------------------------ candidates */

/* a ranks before b: larger logit, then smaller id (a total order, so the
 * selection below never meets equal keys and every order is reproducible). */
static inline bool before(const float *l, int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); }

/* Rearranges idx[0..n) so that its first k entries are the k best (in any
 * order). Quickselect with a median-of-three pivot. */
static void select_top(const float *l, int32_t *idx, int32_t n, int32_t k)
{
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        /* median of three into idx[hi] as pivot */
        if (before(l, idx[mid], idx[lo])) { int32_t t = idx[mid]; idx[mid] = idx[lo]; idx[lo] = t; }
        if (before(l, idx[hi], idx[lo])) { int32_t t = idx[hi]; idx[hi] = idx[lo]; idx[lo] = t; }
        if (before(l, idx[mid], idx[hi])) { int32_t t = idx[mid]; idx[mid] = idx[hi]; idx[hi] = t; }
        int32_t pivot = idx[hi], s = lo;
        for (int32_t i = lo; i < hi; i++)
            if (before(l, idx[i], pivot)) {
                int32_t t = idx[i]; idx[i] = idx[s]; idx[s] = t;
                s++;
            }
        idx[hi] = idx[s];
        idx[s] = pivot;
        if (s == k - 1 || s == k) return;
        if (s < k) lo = s + 1;
        else hi = s - 1;
    }
}

/* Sorts idx[0..n) by rank: insertion sort for short runs, merge sort
 * (through tmp[n]) otherwise; qsort takes no context for the logits. */
static void sort_by_rank(const float *l, int32_t *idx, int32_t n, int32_t *tmp)
{
    if (n <= 32) {
        for (int32_t i = 1; i < n; i++) {
            int32_t v = idx[i], j = i;
            while (j > 0 && before(l, v, idx[j - 1])) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = v;
        }
        return;
    }
    int32_t h = n / 2;
    sort_by_rank(l, idx, h, tmp);
    sort_by_rank(l, idx + h, n - h, tmp);
    int32_t i = 0, j = h, o = 0;
    while (i < h && j < n) tmp[o++] = before(l, idx[j], idx[i]) ? idx[j++] : idx[i++];
    while (i < h) tmp[o++] = idx[i++];
    while (j < n) tmp[o++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

typedef struct cands {
    int32_t n;     /* candidates idx[0..n) */
    float max;     /* largest working logit (a candidate) */
    int32_t argmax;
    bool greedy;
} cands;

/* Applies penalties and temperature to ws->l and selects the candidate set
 * in ws->idx (see the header's pipeline). */
static cel_status prepare(const cel_sampling *p, const int32_t *pset, size_t n_pset, const cel_sample_state *st,
                          const float *logits, cel_sample_scratch *ws, cands *c, cel_error *err)
{
    const int32_t V = ws->n_vocab;
    float *l = ws->l;
    memcpy(l, logits, (size_t)V * sizeof *l);

    /* penalties */
    const float rp = p->repetition_penalty;
    if (rp != 1.0f) {
        for (size_t i = 0; i < n_pset; i++) {
            int32_t t = pset[i];
            if (t < 0 || t >= V) continue;
            l[t] = l[t] > 0 ? l[t] / rp : l[t] * rp;
        }
    }
    for (uint32_t i = 0; i < st->ct_cap; i++) {
        int32_t t = st->ct_tok[i];
        if (t < 0 || t >= V) continue;
        if (rp != 1.0f && !in_set(pset, n_pset, t)) l[t] = l[t] > 0 ? l[t] / rp : l[t] * rp;
        l[t] -= p->frequency_penalty * (float)st->ct_n[i] + p->presence_penalty;
    }

    int32_t am = 0;
    for (int32_t i = 1; i < V; i++)
        if (l[i] > l[am]) am = i;
    c->argmax = am;
    c->greedy = !cel_sample_draws(p); /* 0 means greedy; below 1e-6 the result is the same */
    if (c->greedy) {
        c->n = 1;
        ws->idx[0] = am;
        c->max = l[am];
        return CEL_OK;
    }
    if (!isfinite(l[am]))
        return cel_error_set(err, CEL_ERR_INVALID, "sample: logits are not finite (max %g)", (double)l[am]);
    /* shift so the best logit is 0 before scaling: a tiny temperature then
     * sends the others to -inf, never to inf - inf */
    const float inv_t = 1.0f / p->temperature, top = l[am];
    for (int32_t i = 0; i < V; i++) l[i] = (l[i] - top) * inv_t;
    l[am] = 0.0f;
    const float mx = 0.0f;
    c->max = mx;

    int32_t *idx = ws->idx;
    int32_t n = 0;
    /* min-p as a threshold on the logit: p_i >= min_p * p_max */
    const bool use_min_p = p->min_p > 0.0f;
    const float lmin = use_min_p ? mx + logf(p->min_p) : -INFINITY;
    const bool use_k = p->top_k > 0 && p->top_k < V;
    const bool use_p = p->top_p < 1.0f;
    if (!use_k && !use_p && !use_min_p) {
        for (int32_t i = 0; i < V; i++) idx[i] = i; /* id order, nothing dropped */
        c->n = V;
        return CEL_OK;
    }

    /* total mass for top-p: over the top-k set when top-k is on, else all */
    double z = 0;
    if (use_k) {
        for (int32_t i = 0; i < V; i++) idx[i] = i;
        select_top(l, idx, V, p->top_k);
        n = p->top_k;
        for (int32_t i = 0; i < n; i++) z += exp((double)(l[idx[i]] - mx));
        /* min-p can only drop tokens: filter before sorting */
        int32_t k = 0;
        for (int32_t i = 0; i < n; i++)
            if (l[idx[i]] >= lmin) idx[k++] = idx[i];
        n = k;
        sort_by_rank(l, idx, n, ws->tmp);
    } else {
        for (int32_t i = 0; i < V; i++) {
            if (use_p) z += exp((double)(l[i] - mx));
            if (l[i] >= lmin) idx[n++] = i;
        }
        if (use_p) {
            /* sort only as much of the head as top-p can need: grow the
             * selected prefix until its mass reaches p */
            double target = (double)p->top_p * z;
            int32_t k = n < 64 ? n : 64;
            int32_t *tmp = ws->tmp;
            for (;;) {
                if (k < n) select_top(l, idx, n, k);
                sort_by_rank(l, idx, k, tmp);
                double cum = 0;
                int32_t cut = -1;
                for (int32_t i = 0; i < k; i++) {
                    cum += exp((double)(l[idx[i]] - mx));
                    if (cum >= target) {
                        cut = i + 1;
                        break;
                    }
                }
                if (cut > 0 || k == n) {
                    n = cut > 0 ? cut : k;
                    break;
                }
                k = k > n / 8 ? n : k * 8;
            }
            c->n = n;
            return CEL_OK;
        }
        sort_by_rank(l, idx, n, ws->tmp);
        c->n = n;
        return CEL_OK;
    }
    if (use_p) { /* top-k set is sorted: cut it at mass p of the top-k set */
        double target = (double)p->top_p * z, cum = 0;
        for (int32_t i = 0; i < n; i++) {
            cum += exp((double)(l[idx[i]] - mx));
            if (cum >= target) {
                n = i + 1;
                break;
            }
        }
    }
    c->n = n;
    return CEL_OK;
}

/* Raw log-softmax: logprob of `tok` and the n_top best alternatives. */
static void raw_logprobs(const float *logits, int32_t V, int32_t tok, int32_t n_top, cel_sample_out *out)
{
    float mx = logits[0];
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double s = 0;
    for (int32_t i = 0; i < V; i++) s += exp((double)(logits[i] - mx));
    double lse = (double)mx + log(s);
    out->logprob = (float)((double)logits[tok] - lse);
    out->n_top = 0;
    if (n_top <= 0) return;
    /* insertion into a short sorted list (n_top <= 20) */
    int32_t best[CEL_SAMPLE_MAX_TOP];
    int32_t nb = 0;
    for (int32_t i = 0; i < V; i++) {
        if (nb == n_top && !before(logits, i, best[nb - 1])) continue;
        int32_t j = nb < n_top ? nb++ : nb - 1;
        while (j > 0 && before(logits, i, best[j - 1])) {
            best[j] = best[j - 1];
            j--;
        }
        best[j] = i;
    }
    for (int32_t i = 0; i < nb; i++) {
        out->top[i].token = best[i];
        out->top[i].logprob = (float)((double)logits[best[i]] - lse);
    }
    out->n_top = nb;
}

bool cel_sample_draws(const cel_sampling *p) { return !(p->temperature < CEL_SAMPLE_GREEDY_T); }

cel_status cel_sample_u(const cel_sampling *p, const int32_t *prompt_set, size_t n_prompt_set,
                        const cel_sample_state *st, const float *logits, cel_sample_scratch *ws, double u,
                        cel_sample_out *out, cel_error *err)
{
    cands c;
    CEL_TRY(prepare(p, prompt_set, n_prompt_set, st, logits, ws, &c, err));
    int32_t tok;
    if (c.greedy || c.n == 1) {
        tok = ws->idx[0]; /* the uniform (if any) was drawn all the same: one per token */
    } else {
        const float *l = ws->l;
        double z = 0;
        for (int32_t i = 0; i < c.n; i++) z += exp((double)(l[ws->idx[i]] - c.max));
        double thr = u * z, acc = 0;
        tok = ws->idx[c.n - 1];
        for (int32_t i = 0; i < c.n; i++) {
            acc += exp((double)(l[ws->idx[i]] - c.max));
            if (acc > thr) {
                tok = ws->idx[i];
                break;
            }
        }
    }
    out->token = tok;
    out->logprob = 0;
    out->n_top = 0;
    if (p->n_logprobs >= 0) raw_logprobs(logits, ws->n_vocab, tok, p->n_logprobs, out);
    return CEL_OK;
}

cel_status cel_sample(const cel_sampling *p, const int32_t *prompt_set, size_t n_prompt_set, cel_sample_state *st,
                      const float *logits, cel_sample_scratch *ws, cel_sample_out *out, cel_error *err)
{
    /* the draw comes first and always happens for a non-greedy sample, so a
     * stream advances by exactly one uniform per token whatever survives the
     * filters (and whoever - CPU or GPU - does the rest) */
    const double u = cel_sample_draws(p) ? cel_rng_uniform(&st->rng) : 0.0;
    return cel_sample_u(p, prompt_set, n_prompt_set, st, logits, ws, u, out, err);
}

cel_status cel_sample_probs(const cel_sampling *p, const int32_t *prompt_set, size_t n_prompt_set,
                            const cel_sample_state *st, const float *logits, cel_sample_scratch *ws, float *probs,
                            cel_error *err)
{
    cands c;
    CEL_TRY(prepare(p, prompt_set, n_prompt_set, st, logits, ws, &c, err));
    memset(probs, 0, (size_t)ws->n_vocab * sizeof *probs);
    if (c.greedy) {
        probs[ws->idx[0]] = 1.0f;
        return CEL_OK;
    }
    double z = 0;
    for (int32_t i = 0; i < c.n; i++) z += exp((double)(ws->l[ws->idx[i]] - c.max));
    for (int32_t i = 0; i < c.n; i++) probs[ws->idx[i]] = (float)(exp((double)(ws->l[ws->idx[i]] - c.max)) / z);
    return CEL_OK;
}

/* ------------------------------------------------------------ stop strings */

void cel_stopper_init(cel_stopper *s, const char *const *stop, size_t n_stop)
{
    memset(s, 0, sizeof *s);
    s->stop = stop;
    s->n_stop = n_stop;
    for (size_t i = 0; i < n_stop; i++) {
        size_t k = strlen(stop[i]);
        if (k > s->max_len) s->max_len = k;
    }
    cel_buf_init(&s->held);
}

void cel_stopper_free(cel_stopper *s) { cel_buf_free(&s->held); }

cel_status cel_stopper_push(cel_stopper *s, const char *text, size_t n, cel_buf *out, bool *stopped, cel_error *err)
{
    *stopped = s->stopped;
    if (s->stopped || n == 0) return CEL_OK;
    if (s->n_stop == 0) {
        if (cel_buf_append(out, text, n) != CEL_OK)
            return cel_error_set(err, CEL_ERR_NOMEM, "stop: out of memory");
        return CEL_OK;
    }
    if (cel_buf_append(&s->held, text, n) != CEL_OK) return cel_error_set(err, CEL_ERR_NOMEM, "stop: out of memory");
    const char *h = s->held.data;
    size_t hl = s->held.len;
    /* earliest complete stop string */
    size_t first = hl;
    for (size_t i = 0; i < s->n_stop; i++) {
        const char *m = memmem(h, hl, s->stop[i], strlen(s->stop[i]));
        if (m && (size_t)(m - h) < first) first = (size_t)(m - h);
    }
    if (first < hl) {
        if (cel_buf_append(out, h, first) != CEL_OK) return cel_error_set(err, CEL_ERR_NOMEM, "stop: out of memory");
        cel_buf_reset(&s->held);
        s->stopped = *stopped = true;
        return CEL_OK;
    }
    /* earliest position whose suffix is a proper prefix of some stop string */
    size_t keep = hl;
    size_t from = hl > s->max_len ? hl - s->max_len + 1 : 0;
    for (size_t pos = from; pos < hl && keep == hl; pos++)
        for (size_t i = 0; i < s->n_stop; i++) {
            size_t sl = strlen(s->stop[i]);
            if (hl - pos < sl && memcmp(h + pos, s->stop[i], hl - pos) == 0) {
                keep = pos;
                break;
            }
        }
    if (cel_buf_append(out, h, keep) != CEL_OK) return cel_error_set(err, CEL_ERR_NOMEM, "stop: out of memory");
    memmove(s->held.data, h + keep, hl - keep);
    s->held.len = hl - keep;
    s->held.data[s->held.len] = '\0';
    return CEL_OK;
}

cel_status cel_stopper_flush(cel_stopper *s, cel_buf *out, cel_error *err)
{
    if (!s->stopped && s->held.len && cel_buf_append(out, s->held.data, s->held.len) != CEL_OK)
        return cel_error_set(err, CEL_ERR_NOMEM, "stop: out of memory");
    cel_buf_reset(&s->held);
    return CEL_OK;
}

/* ------------------------------------------------------------ public defaults */

void cel_sampling_default(cel_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 0.0f; /* greedy */
    s->top_p = 1.0f;
    s->repetition_penalty = 1.0f;
    s->max_tokens = 256;
    s->n_logprobs = -1;
}

const char *cel_finish_name(cel_finish f)
{
    switch (f) {
    case CEL_FINISH_NONE: return "none";
    case CEL_FINISH_STOP: return "stop";
    case CEL_FINISH_LENGTH: return "length";
    case CEL_FINISH_CANCELLED: return "cancelled";
    case CEL_FINISH_ERROR: return "error";
    }
    return "unknown";
}
