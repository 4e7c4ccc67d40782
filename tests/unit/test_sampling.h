/*
 * test_sampling.h - the sampling settings the engine and scheduler tests
 * submit with: the defaults with a temperature, a seed and a token budget.
 */
#ifndef CEL_TEST_SAMPLING_H
#define CEL_TEST_SAMPLING_H

#include <stdbool.h>
#include <stdint.h>

#include "celine/engine.h"

/* ignore_eos: keep going past end-of-sequence tokens (random-weight models
 * emit them anywhere; tests that count tokens set it). */
static inline cel_sampling test_sampling(float temp, uint64_t seed, int32_t max_tokens, bool ignore_eos)
{
    cel_sampling s;
    cel_sampling_default(&s);
    s.temperature = temp;
    s.seed = seed;
    s.max_tokens = max_tokens;
    s.ignore_eos = ignore_eos;
    return s;
}

#endif
