/* Hashing (a 64-bit multiply-mix hash; not cryptographic) and xoshiro256** streams. */
#include "celine/common.h"

#include <string.h>

uint64_t cel_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t cel_hash64(const void *data, size_t n, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = cel_mix64(seed ^ (n * 0x9e3779b97f4a7c15ull));
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = cel_mix64(h ^ w);
        p += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, n);
    return cel_mix64(h ^ tail ^ 0x5bd1e995u);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void cel_rng_seed(cel_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        x += 0x9e3779b97f4a7c15ull;
        r->s[i] = cel_mix64(x);
    }
}

uint64_t cel_rng_next(cel_rng *r)
{
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double cel_rng_uniform(cel_rng *r) { return (double)(cel_rng_next(r) >> 11) * 0x1.0p-53; }
