/*
 * sample.h - choosing the next token from a row of logits for one sample of a
 * request, and cutting generated text at stop strings.
 *
 * Pipeline (each step skipped when off):
 *   raw logits -> logprobs (log-softmax of the raw logits, as OpenAI reports)
 *   -> repetition penalty (prompt + output; l > 0 ? l / r : l * r)
 *   -> frequency / presence penalties (output; l -= f * count + p * (count > 0))
 *   -> temperature 0: argmax (lowest id on ties); else l / T
 *   -> top-k -> top-p (smallest set of most likely tokens whose mass >= p)
 *   -> min-p (keep p_i >= min_p * p_max) -> draw one uniform from the sample's
 *   own RNG.
 * Candidates are ordered by (logit desc, id asc) whenever a filter is on and
 * by id otherwise, and sums run in that fixed order in double precision, so
 * a sample's tokens depend only on its logits and its own RNG stream (seeded
 * from (seed, sample index)): never on which other requests share the batch.
 *
 * RNG contract: a non-greedy sample (temperature >= CEL_SAMPLE_GREEDY_T)
 * consumes exactly ONE uniform u from its stream per token, always - also
 * when the filters leave a single candidate; a greedy one consumes none. The
 * draw picks the first candidate (in the order above) whose running mass
 * exceeds u * (mass of all candidates). cel_sample = that draw +
 * cel_sample_u, so whoever holds u (the scheduler, drawing it before a
 * forward pass that samples on the GPU) gets the token cel_sample would.
 */
#ifndef CEL_ENGINE_SAMPLE_H
#define CEL_ENGINE_SAMPLE_H

#include "celine/engine.h"

#define CEL_SAMPLE_MAX_TOP 20      /* most logprob alternatives per token */
#define CEL_SAMPLE_MAX_STOP 16     /* stop strings per request */
#define CEL_SAMPLE_MAX_STOP_LEN 256 /* bytes per stop string */
#define CEL_SAMPLE_GREEDY_T 1e-6f   /* temperatures below this are greedy (argmax) */

/* Working memory for one sampling call at a time (one per stepping thread). */
typedef struct cel_sample_scratch {
    int32_t n_vocab;
    float *l;     /* [n_vocab] working logits */
    int32_t *idx; /* [n_vocab] candidate ids */
    int32_t *tmp; /* [n_vocab] merge-sort buffer */
} cel_sample_scratch;
cel_status cel_sample_scratch_init(cel_sample_scratch *ws, int32_t n_vocab, cel_error *err);
void cel_sample_scratch_free(cel_sample_scratch *ws);

/* Per-sample state: its RNG stream and how often it generated each token. */
typedef struct cel_sample_state {
    cel_rng rng;
    int32_t *ct_tok; /* open-addressing map token -> count; -1 = empty */
    int32_t *ct_n;
    uint32_t ct_cap;
    uint32_t ct_len;
} cel_sample_state;
/* The RNG stream of sample `index` of a request with `seed`. */
void cel_sample_state_init(cel_sample_state *st, uint64_t seed, uint32_t index);
void cel_sample_state_free(cel_sample_state *st);
/* Records a generated token (for frequency / presence / repetition penalties). */
cel_status cel_sample_state_accept(cel_sample_state *st, int32_t token, cel_error *err);
/* How often token was generated. */
int32_t cel_sample_state_count(const cel_sample_state *st, int32_t token);

/* Checks a cel_sampling for values out of range; names the field. */
cel_status cel_sampling_validate(const cel_sampling *p, int32_t n_vocab, cel_error *err);

/* Sorted, de-duplicated copy of a prompt (the token set the repetition
 * penalty covers besides the output). *out is malloc'ed. */
cel_status cel_sample_prompt_set(const int32_t *prompt, size_t n, int32_t **out, size_t *n_out, cel_error *err);

typedef struct cel_sample_out {
    int32_t token;
    float logprob; /* raw log-softmax of the chosen token (0 when not asked for) */
    int32_t n_top;
    cel_top_logprob top[CEL_SAMPLE_MAX_TOP];
} cel_sample_out;

/* Picks the next token for one sample from logits[n_vocab] (not modified).
 * prompt_set: the request's sorted unique prompt tokens (may be NULL when
 * the repetition penalty is off). Logprobs are computed when
 * p->n_logprobs >= 0 (with n_logprobs alternatives). Draws one uniform from
 * st's stream when cel_sample_draws(p) (see the RNG contract above), none
 * otherwise. Does not record the token in st: call cel_sample_state_accept
 * once it is kept. */
cel_status cel_sample(const cel_sampling *p, const int32_t *prompt_set, size_t n_prompt_set, cel_sample_state *st,
                      const float *logits, cel_sample_scratch *ws, cel_sample_out *out, cel_error *err);
/* cel_sample with the uniform u in [0, 1) given instead of drawn (ignored
 * when greedy); st is only read (its token counts, for the penalties). */
cel_status cel_sample_u(const cel_sampling *p, const int32_t *prompt_set, size_t n_prompt_set,
                        const cel_sample_state *st, const float *logits, cel_sample_scratch *ws, double u,
                        cel_sample_out *out, cel_error *err);
/* Whether sampling with p draws a uniform per token (not greedy). */
bool cel_sample_draws(const cel_sampling *p);

/* The distribution cel_sample draws from (after penalties, temperature and
 * filters), written to probs[n_vocab]; masked tokens get 0. Greedy puts 1 on
 * the argmax. Consumes no randomness. For tests and diagnostics. */
cel_status cel_sample_probs(const cel_sampling *p, const int32_t *prompt_set, size_t n_prompt_set,
                            const cel_sample_state *st, const float *logits, cel_sample_scratch *ws, float *probs,
                            cel_error *err);

/* ---- stop strings ---- */
/* Holds back generated text that could still be the start of a stop string.
 * Text passes through in order; once a stop string is complete, everything
 * from its first byte on is dropped. */
typedef struct cel_stopper {
    const char *const *stop;
    size_t n_stop;
    size_t max_len;
    cel_buf held;
    bool stopped;
} cel_stopper;
void cel_stopper_init(cel_stopper *s, const char *const *stop, size_t n_stop); /* strings must outlive s */
void cel_stopper_free(cel_stopper *s);
/* Adds text; appends to out the part that can no longer belong to a stop
 * string. Sets *stopped when a stop string completed (later pushes are
 * ignored). */
cel_status cel_stopper_push(cel_stopper *s, const char *text, size_t n, cel_buf *out, bool *stopped, cel_error *err);
/* Generation ended for another reason: releases the held text to out. */
cel_status cel_stopper_flush(cel_stopper *s, cel_buf *out, cel_error *err);

#endif
