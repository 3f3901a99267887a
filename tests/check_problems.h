/*
 * check_problems.h - pseudo-label problem pieces the solver tests share.
 */
#ifndef ECL_TEST_CHECK_PROBLEMS_H
#define ECL_TEST_CHECK_PROBLEMS_H

#include "ecl/core.h"

/* A non-uniform target distribution: u_k proportional to k + 1. */
static inline float *make_u_ramp(int k)
{
    float *u = ecl_malloc((size_t)k * sizeof *u);
    for (int c = 0; c < k; c++)
        u[c] = (float)(2.0 * (c + 1) / ((double)k * (k + 1)));
    return u;
}

#endif
