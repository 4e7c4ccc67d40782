/*
 * advantage.c - group advantages for group-relative RL methods.
 *
 * A group is the G samples of one prompt. GRPO normalises each reward by its
 * group's mean and unbiased standard deviation; Dr.GRPO drops the division
 * (the std term biases toward easy/hard prompts); RLOO uses the mean of the
 * *other* samples as the baseline. Optional whitening rescales all advantages
 * of the batch to mean 0, std 1.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CEL__ADV_EPS 1e-6

typedef struct {
    uint64_t id;
    size_t count;
    double sum;
    double ss; /* sum of squared deviations */
    bool used;
} grp;

/* Finds or inserts the group of `id` in an open-addressing table of size cap
 * (a power of two, at least twice the number of distinct ids). */
static grp *grp_get(grp *t, size_t cap, uint64_t id)
{
    size_t h = (size_t)cel_mix64(id) & (cap - 1);
    while (t[h].used && t[h].id != id) h = (h + 1) & (cap - 1);
    if (!t[h].used) t[h].used = true, t[h].id = id;
    return &t[h];
}

cel_status cel_advantages(const double *r, const uint64_t *group_ids, size_t n, cel_adv_mode mode, bool whiten,
                          double *adv, cel_error *err)
{
    if (n == 0) return CEL_OK;
    if (!r || !group_ids || !adv) return cel_error_set(err, CEL_ERR_INVALID, "advantages: NULL argument");
    if ((unsigned)mode > CEL_ADV_RLOO) return cel_error_set(err, CEL_ERR_INVALID, "advantages: unknown mode %d", mode);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(r[i])) return cel_error_set(err, CEL_ERR_INVALID, "advantages: reward %zu is not finite", i);
    if (mode == CEL_ADV_NONE) {
        memcpy(adv, r, n * sizeof *adv);
    } else {
        size_t cap = 16;
        while (cap < 2 * n) cap *= 2;
        grp *t = calloc(cap, sizeof *t);
        grp **of = malloc(n * sizeof *of);
        if (!t || !of) {
            free(t), free(of);
            return cel_error_set(err, CEL_ERR_NOMEM, "advantages: out of memory for %zu rewards", n);
        }
        for (size_t i = 0; i < n; i++) {
            of[i] = grp_get(t, cap, group_ids[i]);
            of[i]->count++;
            of[i]->sum += r[i];
        }
        for (size_t i = 0; i < n; i++) {
            double d = r[i] - of[i]->sum / (double)of[i]->count;
            of[i]->ss += d * d;
        }
        for (size_t i = 0; i < n; i++) {
            const grp *g = of[i];
            double cnt = (double)g->count, mean = g->sum / cnt;
            if (g->count < 2) {
                adv[i] = 0.0;
                continue;
            }
            switch (mode) {
            case CEL_ADV_GRPO: adv[i] = (r[i] - mean) / (sqrt(g->ss / (cnt - 1.0)) + CEL__ADV_EPS); break;
            case CEL_ADV_DR_GRPO: adv[i] = r[i] - mean; break;
            case CEL_ADV_RLOO: adv[i] = r[i] - (g->sum - r[i]) / (cnt - 1.0); break;
            default: adv[i] = 0.0; break;
            }
        }
        free(t), free(of);
    }
    if (whiten && n > 1) {
        double s = 0, ss = 0;
        for (size_t i = 0; i < n; i++) s += adv[i];
        double mean = s / (double)n;
        for (size_t i = 0; i < n; i++) ss += (adv[i] - mean) * (adv[i] - mean);
        double sd = sqrt(ss / (double)(n - 1));
        for (size_t i = 0; i < n; i++) adv[i] = (adv[i] - mean) / (sd + CEL__ADV_EPS);
    } else if (whiten) {
        adv[0] = 0.0;
    }
    return CEL_OK;
}
