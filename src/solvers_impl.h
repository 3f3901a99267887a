/*
 * solvers_impl.h - what solvers.c (dispatch, EM, SQUAREM) and
 * solvers_newton.c (dual, primal Newton, dense Newton) share: the problem
 * record, double-precision helpers, and the loop that applies the common
 * stopping rule. Private to those two files.
 *
 * Shape legend: N rows, K clusters.
 */
#ifndef ECL_SOLVERS_IMPL_H
#define ECL_SOLVERS_IMPL_H

#include <stdint.h>

#include "ecl/solvers.h"

/* Floor for y in logs and divisions, as em.c's (above FLT_MIN). */
#define SOLVER_FLOOR 1e-30
/* Below this many elements row loops stay on one thread. */
#define SOLVER_PARALLEL_MIN_ELEMS ((int64_t)1 << 16)

typedef struct {
    const float *sigma;   /* [N, K] */
    float *y;             /* [N, K] the answer, float */
    int64_t n;
    int k;
    const float *u;       /* [K] or NULL = uniform */
    double lambda;
    struct em_state *em;  /* plain EM only: checked and initialised by solver_solve */
} solver_problem;

/* One solver behind the common loop: start from the float y, take one
 * iteration (returning 1 when no more progress is possible, e.g. a line
 * search that failed at rounding level), write the current iterate back to
 * the float y, clean up. */
typedef struct {
    void *(*start)(const solver_problem *p);
    int (*step)(void *state);
    void (*write_y)(void *state);
    void (*finish)(void *state);
} solver_ops;

/* Runs ops under the stopping rule of solvers.h; fills iters, converged. */
void solver_run_loop(const solver_problem *p, const solver_ops *ops,
                     const solver_options *opt, int check_every, solver_result *res);

/* u_k, or 1/K when u is NULL. */
static inline double solver_target(const float *u, int k, int c)
{
    return u ? (double)u[c] : 1.0 / k;
}

/* Column sums of a double [N, K] matrix, serially in row order. */
void solver_colsum_d(const double *y, int64_t n, int k, double *colsum);
/* F(y) of a double y, as em_objective. */
double solver_objective_d(const solver_problem *p, const double *y);
/* y (float) <- yd (double). */
void solver_store_y(const solver_problem *p, const double *yd);
/* A double copy of the float y [N, K]; the caller frees it. */
double *solver_load_y(const solver_problem *p);

/* The solvers of solvers_newton.c. */
extern const solver_ops solver_dual_ops;
extern const solver_ops solver_newton_ops;
extern const solver_ops solver_newton_dense_ops;

#endif
