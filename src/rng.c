/*
 * rng.c - splitmix64 and what is built on it (see rng.h).
 */
#include "ecl/rng.h"

#include <math.h>

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

rng_state rng_seeded(uint64_t seed)
{
    rng_state r = { mix64(seed ^ 0x5851f42d4c957f2dULL) };
    return r;
}

rng_state rng_derive(uint64_t seed, uint64_t a, uint64_t b)
{
    /* Mixing each part in turn keeps (a, b) and (b, a) apart. */
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ (a + 0x632be59bd9b4e019ULL));
    h = mix64(h ^ (b + 0x8cb92ba72f3d8dd7ULL));
    rng_state r = { h };
    return r;
}

uint64_t rng_u64(rng_state *r)
{
    r->state += 0x9e3779b97f4a7c15ULL;
    return mix64(r->state);
}

float rng_uniform(rng_state *r)
{
    /* 24 high bits: every float in [0, 1) on a 2^-24 grid, never 1.0. */
    return (float)(rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

uint64_t rng_below(rng_state *r, uint64_t n)
{
    /* Rejection keeps the result unbiased for any n. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = rng_u64(r);
    } while (x >= limit);
    return x % n;
}

float rng_normal(rng_state *r)
{
    double u1 = ((double)(rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void rng_shuffle_i64(rng_state *r, int64_t *idx, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_below(r, (uint64_t)i + 1);
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}
