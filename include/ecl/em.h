/*
 * em.h - the pseudo-label step: given predictions sigma (rows on the
 * simplex), find soft labels y minimising
 *
 *     F(y) = -(1/N) sum_i sum_k sigma_ik log y_ik - lambda sum_k u_k log ybar_k
 *
 * with ybar = (1/N) sum_i y_i, each y_i on the simplex. Convex; EM's fixed
 * points satisfy its KKT conditions, so they are the global minimum.
 *
 * Shape legend: N rows (batch B, or the whole data set), K clusters.
 */
#ifndef ECL_EM_H
#define ECL_EM_H

#include <stdint.h>

typedef struct {
    int iters;           /* iterations done */
    double max_change;   /* max |y_new - y_old| at the last iteration */
} em_result;

/* EM (paper eqs. 45-46). sigma [N, K]; y [N, K] in/out: when init_from_sigma
 * is 1, y starts at sigma, otherwise y's contents are the warm start (rows
 * are renormalised, entries floored at 1e-30 so no cluster starts empty).
 * u [K] target distribution (NULL = uniform). Stops when max |dy| < tol or
 * after max_iter iterations. Internal sums in double. */
em_result em_solve_cpu(const float *sigma, float *y, int64_t n, int k, const float *u,
                       double lambda, int max_iter, double tol, int init_from_sigma);

/* Iteration state for callers with their own stopping rule (solvers.c).
 * Opaque; sigma, u and y must outlive it. */
typedef struct em_state em_state;

/* Checks the inputs as em_solve_cpu does and initialises y (from sigma when
 * init_from_sigma, else renormalising the warm start). Free with
 * em_state_free. */
em_state *em_state_create(const float *sigma, float *y, int64_t n, int k, const float *u,
                          double lambda, int init_from_sigma);
/* Up to n_iter more EM iterations on y, stopping early when max |dy| < tol;
 * adds them to res->iters and sets res->max_change. Returns the count done
 * (0 when K = 1). */
int em_state_iterate(em_state *s, int n_iter, double tol, em_result *res);
/* For solvers.c's stopping rule (the full KKT measure of solvers.h): up to
 * n_iter more iterations with no |dy| stop. The update from an iterate whose
 * number is a multiple of check_every also bounds that iterate's measure
 * from below; where the bound is under kkt_tol (the rule may hold) the call
 * stops before that update, y holding the iterate, and returns 1 for the
 * caller to evaluate the measure. The next call does not stop at the same
 * iterate again. Returns 0 when n_iter were done (kkt_tol 0: no checks). */
int em_state_iterate_kkt(em_state *s, int n_iter, int check_every, double kkt_tol,
                         em_result *res);
void em_state_free(em_state *s);

/* F(y) above, in double. u NULL = uniform. */
double em_objective(const float *sigma, const float *y, int64_t n, int k, const float *u,
                    double lambda);

/* y-weighted KKT residual: max over i,k of y_ik |g_ik - mu_i| with g the
 * gradient of F times N (so it is O(1) per sample) and mu_i = sum_k y_ik
 * g_ik, the row multiplier. Zero at the
 * optimum; weighting by y ignores entries pinned near zero. */
double em_kkt_residual(const float *sigma, const float *y, int64_t n, int k, const float *u,
                       double lambda);

/* max_k |ybar_k - u_k|. */
double em_balance_error(const float *y, int64_t n, int k, const float *u);

#endif
