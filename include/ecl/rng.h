/*
 * rng.h - the one random number generator of ecl.
 *
 * splitmix64: a 64-bit counter passed through a fixed mixing function. It is
 * small, fast, and, more important here, can be *derived*: rng_derive(seed,
 * a, b) gives an independent stream for (epoch, sample) without any shared
 * state, so augmentation on worker threads is deterministic whatever the
 * thread schedule. One user seed drives init, shuffling and augmentation.
 */
#ifndef ECL_RNG_H
#define ECL_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} rng_state;

/* A generator started from seed. */
rng_state rng_seeded(uint64_t seed);
/* A generator for stream (a, b) of seed, independent of the others. */
rng_state rng_derive(uint64_t seed, uint64_t a, uint64_t b);
uint64_t rng_u64(rng_state *r);
/* Uniform in [0, 1). */
float rng_uniform(rng_state *r);
/* Uniform integer in [0, n); n > 0. */
uint64_t rng_below(rng_state *r, uint64_t n);
/* Standard normal (Box-Muller, one value per call). */
float rng_normal(rng_state *r);
/* Fisher-Yates shuffle of idx[0..n). */
void rng_shuffle_i64(rng_state *r, int64_t *idx, int64_t n);

#endif
