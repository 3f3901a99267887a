/*
 * solvers.h - every solver of the pseudo-label problem of em.h,
 *
 *     F(y) = -(1/N) sum_i sum_k sigma_ik log y_ik - lambda sum_k u_k log ybar_k,
 *
 * behind one call, one result record and one stopping rule, so the trainer
 * can pick a solver by name (config key em.solver) and ecl-bench-em can time
 * them against each other (the paper's Table I).
 *
 *   em            plain EM (em.c), float, in place, O(NK) per iteration
 *   em_accel      EM with SQUAREM extrapolation in log y and a fall-back to
 *                 the plain EM step whenever F would rise
 *   dual          Newton on the concave K-dimensional dual (one multiplier
 *                 beta_k per cluster; each row a 1-D root find), line search
 *   newton        primal Newton, Hessian = diagonal + rank K, solved through
 *                 a K x K Schur complement; fraction-to-boundary damping
 *   newton_dense  primal Newton forming the dense (NK x NK) Hessian and
 *                 factoring it: O((NK)^3) per step, the naive baseline
 *
 * The stopping rule, the same for all: every check_every iterations compute
 * the full KKT measure of the current y (solver_kkt_full) and stop when it
 * is below tol; also stop after max_iter iterations. One iteration means
 * one EM map for em, one extrapolation cycle (three EM maps) for em_accel,
 * one Newton step for the others.
 *
 * Shape legend: N rows (batch B or the whole data set), K clusters.
 */
#ifndef ECL_SOLVERS_H
#define ECL_SOLVERS_H

#include <stdint.h>

typedef enum {
    SOLVER_EM,
    SOLVER_EM_ACCEL,
    SOLVER_DUAL,
    SOLVER_NEWTON,
    SOLVER_NEWTON_DENSE,
    SOLVER_COUNT
} solver_kind;

typedef struct {
    solver_kind kind;
    int max_iter;          /* cap on iterations (see above for what one is) */
    double tol;            /* stop when solver_kkt_full(y) < tol; 0 = run to the cap */
    int check_every;       /* iterations between KKT checks; 0 = the solver's default */
    int init_from_sigma;   /* 1: start at y = sigma; 0: y holds a warm start */
    const float *y_ref;    /* [N, K] optimum for dist_ref, or NULL */
    int diagnostics;       /* 1: fill objective, residuals, balance, dist_ref */
} solver_options;

typedef struct {
    int iters;             /* iterations done */
    int converged;         /* 1 when the KKT measure fell below tol */
    double seconds;        /* wall time of the solve, diagnostics excluded */
    double objective;      /* F(y) */
    double dist_ref;       /* max |y - y_ref|; NaN without y_ref */
    double kkt_weighted;   /* em_kkt_residual: y-weighted, misses the sign */
    double kkt_full;       /* solver_kkt_full: complementarity and sign */
    double balance;        /* max_k |ybar_k - u_k| */
} solver_result;

/* Options with the defaults for kind: max_iter 100000, tol 1e-6, check_every
 * 0, init_from_sigma 1, no reference, no diagnostics. */
solver_options solver_default_options(solver_kind kind);

/* "em" | "em_accel" | "dual" | "newton" | "newton_dense" -> kind. 0, or -1
 * with ecl_last_error() listing the choices. */
int solver_parse(const char *name, solver_kind *kind);
/* The name of kind (a static string). */
const char *solver_name(solver_kind kind);

/* Solves for y [N, K] (in/out, see init_from_sigma). sigma [N, K] rows on
 * the simplex; u [K] target (NULL = uniform); lambda >= 0. Bad shapes or
 * inputs (NaN, rows not summing to 1) stop the process with a message, as
 * em_solve_cpu does. K = 1 gives y = 1 with no iteration. newton_dense
 * refuses N*K > SOLVER_DENSE_MAX_NK. Temporary memory O(NK) (dense: O((NK)^2)). */
solver_result solver_solve(const float *sigma, float *y, int64_t n, int k, const float *u,
                           double lambda, const solver_options *opt);

/* Largest N*K newton_dense accepts: its Hessian then takes ~0.7 GB. */
#define SOLVER_DENSE_MAX_NK 10000

/* The full KKT measure, O(1) at any lambda and zero exactly at the optimum:
 * with g_ik = N dF/dy_ik = -sigma_ik / y_ik - w_k (w_k = lambda u_k / ybar_k)
 * and mu_i = sum_k y_ik g_ik, the largest over i, k of
 *     y_ik |g_ik - mu_i|        (complementarity: rows balanced where y > 0)
 *     max(0, mu_i - g_ik)       (sign: no entry would lower F by growing)
 * divided by (1 + lambda), the scale of g. Float rounding of y leaves about
 * 1e-7. */
double solver_kkt_full(const float *sigma, const float *y, int64_t n, int k, const float *u,
                       double lambda);

#endif
