/*
 * test_em.c - the EM pseudo-label solver against an optimum found
 * independently: a plain double-precision EM run until it stops moving,
 * whose answer is then certified by its own KKT residual and by feasible
 * perturbations that must not lower F. Also the dual KKT condition that the
 * y-weighted residual misses, balance, warm starts, edge cases, monotone
 * descent, input validation (in a forked child), determinism across thread
 * counts, the panel layout against a plain row-major loop on awkward shapes,
 * the KKT bound of em_state_iterate_kkt (below the measure, and close to
 * it), and an informational timing.
 *
 * Not here: Newton solvers and the benchmark (bench_em), the CUDA twin.
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/em.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "check.h"
#include "check_fork.h"
#include "check_problems.h"
#include "ecl/core.h"
#include "ecl/rng.h"
#include "ecl/solvers.h"

/* ---- problem generators ------------------------------------------------ */

/* softmax(scale * z) rows with z standard normal: a network's predictions. */
static float *make_sigma_softmax(rng_state *r, int64_t n, int k, double scale)
{
    float *s = ecl_malloc((size_t)(n * k) * sizeof *s);
    double *z = ecl_malloc((size_t)k * sizeof *z);
    for (int64_t i = 0; i < n; i++) {
        double zmax = -1e300, sum = 0.0;
        for (int c = 0; c < k; c++) {
            z[c] = scale * rng_normal(r);
            zmax = fmax(zmax, z[c]);
        }
        for (int c = 0; c < k; c++)
            sum += (z[c] = exp(z[c] - zmax));
        for (int c = 0; c < k; c++)
            s[i * k + c] = (float)(z[c] / sum);
    }
    free(z);
    return s;
}

/* Dirichlet(1) rows: normalised exponential variates. */
static float *make_sigma_dirichlet(rng_state *r, int64_t n, int k)
{
    float *s = ecl_malloc((size_t)(n * k) * sizeof *s);
    double *e = ecl_malloc((size_t)k * sizeof *e);
    for (int64_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (int c = 0; c < k; c++)
            sum += (e[c] = -log(1.0 - rng_uniform(r)) + 1e-12);
        for (int c = 0; c < k; c++)
            s[i * k + c] = (float)(e[c] / sum);
    }
    free(e);
    return s;
}

/* One-hot rows at random classes (class 0 is never used: an empty column). */
static float *make_sigma_one_hot(rng_state *r, int64_t n, int k)
{
    float *s = ecl_calloc((size_t)(n * k), sizeof *s);
    for (int64_t i = 0; i < n; i++)
        s[i * k + 1 + (int)rng_below(r, (uint64_t)(k - 1))] = 1.0f;
    return s;
}

/* Dirichlet rows with about a third of the entries set to exactly zero. */
static float *make_sigma_with_zeros(rng_state *r, int64_t n, int k)
{
    float *s = make_sigma_dirichlet(r, n, k);
    for (int64_t i = 0; i < n; i++) {
        float *row = s + i * k;
        double sum = 0.0;
        for (int c = 0; c < k; c++) {
            if (c != (int)(i % k) && rng_uniform(r) < 0.33f)
                row[c] = 0.0f;
            sum += row[c];
        }
        for (int c = 0; c < k; c++)
            row[c] = (float)(row[c] / sum);
    }
    return s;
}

static float *copy_floats(const float *a, int64_t count)
{
    float *b = ecl_malloc((size_t)count * sizeof *b);
    memcpy(b, a, (size_t)count * sizeof *b);
    return b;
}

/* ---- independent double-precision reference ---------------------------- */

static double ref_u(const float *u, int k, int c)
{
    return u ? (double)u[c] : 1.0 / k;
}

/* w_k = lambda u_k / ybar_k for a double y. */
static void ref_weights(const double *y, int64_t n, int k, const float *u, double lambda,
                        double *w)
{
    for (int c = 0; c < k; c++) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++)
            s += y[i * k + c];
        w[c] = lambda * ref_u(u, k, c) / (s / n);
    }
}

/* F(y) written out directly from the definition. */
static double ref_objective(const float *sigma, const double *y, int64_t n, int k,
                            const float *u, double lambda)
{
    double f = 0.0;
    for (int64_t i = 0; i < n * k; i++)
        if (sigma[i] > 0)
            f -= sigma[i] * log(y[i]) / n;
    for (int c = 0; c < k; c++) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++)
            s += y[i * k + c];
        if (ref_u(u, k, c) > 0)
            f -= lambda * ref_u(u, k, c) * log(s / n);
    }
    return f;
}

/* max_ik y_ik |g_ik - mu_i| with g_ik = -sigma_ik / y_ik - w_k, all in double. */
static double ref_kkt(const float *sigma, const double *y, int64_t n, int k,
                      const float *u, double lambda)
{
    double *w = ecl_malloc((size_t)k * sizeof *w);
    ref_weights(y, n, k, u, lambda, w);
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double *yi = y + i * k;
        double mu = 0.0;
        for (int c = 0; c < k; c++)
            mu += yi[c] * (-sigma[i * k + c] / yi[c] - w[c]);
        for (int c = 0; c < k; c++) {
            double g = -sigma[i * k + c] / yi[c] - w[c];
            worst = fmax(worst, yi[c] * fabs(g - mu));
        }
    }
    free(w);
    return worst;
}

/* The KKT condition the y-weighted residual cannot see: at the minimum no
 * entry may have g_ik < mu_i (else moving mass into it lowers F), even where
 * y_ik is at the floor. Returns max_ik (mu_i - g_ik)_+ / |mu_i| for a float y. */
static double ref_dual_violation(const float *sigma, const float *y, int64_t n, int k,
                                 const float *u, double lambda)
{
    double *yd = ecl_malloc((size_t)(n * k) * sizeof *yd);
    double *w = ecl_malloc((size_t)k * sizeof *w);
    for (int64_t i = 0; i < n * k; i++)
        yd[i] = y[i];
    ref_weights(yd, n, k, u, lambda, w);
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double mu = 0.0;
        for (int c = 0; c < k; c++)
            mu += -sigma[i * k + c] - yd[i * k + c] * w[c];
        for (int c = 0; c < k; c++) {
            double g = -sigma[i * k + c] / yd[i * k + c] - w[c];
            worst = fmax(worst, (mu - g) / fabs(mu));
        }
    }
    free(yd);
    free(w);
    return worst;
}

/* Plain EM in double, written from the paper's E and M steps (responsibilities
 * S_ki = y_ik / sum_j y_jk), run until nothing moves by 1e-16 or for iters
 * iterations. Its answer is certified by ref_kkt, not trusted. */
static double *ref_em(const float *sigma, int64_t n, int k, const float *u, double lambda,
                      long iters)
{
    ECL_CHECK(k <= 64, "ref_em: K = %d, at most 64 (small problems only)", k);
    double *y = ecl_malloc((size_t)(n * k) * sizeof *y);
    double *colsum = ecl_malloc((size_t)k * sizeof *colsum);
    for (int64_t i = 0; i < n * k; i++)
        y[i] = sigma[i];
    for (long t = 0; t < iters; t++) {
        double change = 0.0;
        for (int c = 0; c < k; c++) {
            colsum[c] = 0.0;
            for (int64_t i = 0; i < n; i++)
                colsum[c] += y[i * k + c];
        }
        for (int64_t i = 0; i < n; i++) {
            double num[64], den = 0.0;
            for (int c = 0; c < k; c++) {
                double s_ki = y[i * k + c] / colsum[c];
                num[c] = sigma[i * k + c] + lambda * n * ref_u(u, k, c) * s_ki;
                den += num[c];
            }
            for (int c = 0; c < k; c++) {
                change = fmax(change, fabs(num[c] / den - y[i * k + c]));
                y[i * k + c] = num[c] / den;
            }
        }
        if (change < 1e-16)
            break;
    }
    free(colsum);
    return y;
}

/* Moves of mass eps between two entries of a row keep y feasible; at the
 * minimum none of them may lower F. Returns the largest decrease seen. */
static double ref_worst_perturbation(const float *sigma, const double *y, int64_t n, int k,
                                     const float *u, double lambda, rng_state *r)
{
    double *z = ecl_malloc((size_t)(n * k) * sizeof *z);
    double f0 = ref_objective(sigma, y, n, k, u, lambda), worst = 0.0;
    for (int trial = 0; trial < 400; trial++) {
        memcpy(z, y, (size_t)(n * k) * sizeof *z);
        int64_t i = (int64_t)rng_below(r, (uint64_t)n);
        int a = (int)rng_below(r, (uint64_t)k), b = (int)rng_below(r, (uint64_t)k);
        double eps = 1e-4 * fmin(z[i * k + a], z[i * k + b]);
        if (a == b)
            continue;
        z[i * k + a] += eps;
        z[i * k + b] -= eps;
        worst = fmax(worst, f0 - ref_objective(sigma, z, n, k, u, lambda));
    }
    free(z);
    return worst;
}

/* ---- helpers on solver outputs ----------------------------------------- */

/* Rows on the simplex: finite, >= 0, summing to 1 within 1e-5. */
static int on_simplex(const float *y, int64_t n, int k)
{
    for (int64_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (int c = 0; c < k; c++) {
            float v = y[i * k + c];
            if (!isfinite(v) || v < 0.0f)
                return 0;
            sum += v;
        }
        if (fabs(sum - 1.0) > 1e-5)
            return 0;
    }
    return 1;
}

static double max_abs_diff(const float *a, const double *b, int64_t count)
{
    double d = 0.0;
    for (int64_t i = 0; i < count; i++)
        d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

/* EM from y = sigma into a fresh array (caller frees). */
static float *solve(const float *sigma, int64_t n, int k, const float *u, double lambda,
                    int max_iter, double tol, em_result *res)
{
    float *y = ecl_malloc((size_t)(n * k) * sizeof *y);
    *res = em_solve_cpu(sigma, y, n, k, u, lambda, max_iter, tol, 1);
    return y;
}

/* ---- tests ----------------------------------------------------------------- */

/* EM reaches the independently certified optimum, and the diagnostics agree
 * with the reference formulas. */
static void test_reference_optimum(int64_t n, int k, const float *u, double lambda)
{
    rng_state r = rng_seeded(1000 + (uint64_t)k);
    float *sigma = make_sigma_softmax(&r, n, k, 1.5);

    /* The reference is an optimum by its own certificate, not by EM's say-so. */
    double *ystar = ref_em(sigma, n, k, u, lambda, 1000000);
    double ref_res = ref_kkt(sigma, ystar, n, k, u, lambda);
    CHECK(ref_res < 1e-10, "reference KKT residual %.3g (N %lld K %d lambda %g)",
          ref_res, (long long)n, k, lambda);
    double drop = ref_worst_perturbation(sigma, ystar, n, k, u, lambda, &r);
    CHECK(drop <= 1e-13, "a feasible move lowered F by %.3g below the reference", drop);

    /* The float solver converges to it. */
    em_result res;
    float *y = solve(sigma, n, k, u, lambda, 1000000, 1e-9, &res);
    double dist = max_abs_diff(y, ystar, n * k);
    double kkt = em_kkt_residual(sigma, y, n, k, u, lambda);
    double kkt0 = em_kkt_residual(sigma, sigma, n, k, u, lambda);
    printf("  reference N %lld K %d lambda %g: %d iters, max|y - y*| %.2e, "
           "KKT %.2e (at sigma %.2e)\n", (long long)n, k, lambda, res.iters, dist, kkt, kkt0);
    CHECK(on_simplex(y, n, k), "rows off the simplex");
    CHECK(dist < 1e-4, "max |y - y*| = %.3g", dist);
    CHECK(kkt < 1e-4, "KKT residual %.3g at the EM answer", kkt);
    CHECK(kkt < 1e-3 * kkt0, "KKT residual %.3g, at y = sigma %.3g", kkt, kkt0);
    double dual = ref_dual_violation(sigma, y, n, k, u, lambda);
    CHECK(dual < 1e-5, "dual violation %.3g at the EM answer", dual);

    /* Diagnostics against the reference formulas, on a float y. */
    double *yd = ecl_malloc((size_t)(n * k) * sizeof *yd);
    for (int64_t i = 0; i < n * k; i++)
        yd[i] = y[i];
    CHECK_NEAR(em_objective(sigma, y, n, k, u, lambda),
               ref_objective(sigma, yd, n, k, u, lambda), 1e-12, 1e-12);
    CHECK_NEAR(em_objective(sigma, y, n, k, u, lambda),
               ref_objective(sigma, ystar, n, k, u, lambda), 1e-7, 1e-7);
    for (int64_t i = 0; i < n * k; i++)
        yd[i] = sigma[i];
    CHECK_NEAR(kkt0, ref_kkt(sigma, yd, n, k, u, lambda), 1e-12, 1e-9);
    free(yd);
    free(ystar);
    free(y);
    free(sigma);
}

/* lambda = 0: the optimum is sigma itself, found by the first iteration. */
static void test_lambda_zero(void)
{
    /* Dyadic rows sum to exactly 1, so y must equal sigma bit for bit. */
    const float sigma[] = {0.5f, 0.25f, 0.125f, 0.125f,  0.03125f, 0.90625f, 0.03125f,
                           0.03125f,  0.0625f, 0.4375f, 0.25f, 0.25f};
    float y[12];
    em_result res = em_solve_cpu(sigma, y, 3, 4, NULL, 0.0, 100, 1e-12, 1);
    CHECK(memcmp(y, sigma, sizeof y) == 0, "lambda 0: y differs from sigma");
    CHECK(res.iters == 1, "lambda 0 took %d iterations, expected 1", res.iters);
    CHECK(em_kkt_residual(sigma, y, 3, 4, NULL, 0.0) == 0.0, "lambda 0: KKT not zero");

    /* Exact zeros of sigma come back at the floor 1e-30, the rest exact. */
    const float sz[] = {0.0f, 0.75f, 0.25f, 0.0f,  1.0f, 0.0f, 0.0f, 0.0f};
    float yz[8];
    res = em_solve_cpu(sz, yz, 2, 4, NULL, 0.0, 100, 1e-12, 1);
    for (int i = 0; i < 8; i++)
        CHECK(yz[i] == (sz[i] > 0.0f ? sz[i] : 1e-30f), "y[%d] = %g, sigma %g", i, yz[i],
              sz[i]);
    CHECK(em_kkt_residual(sz, yz, 2, 4, NULL, 0.0) < 1e-29, "lambda 0 with zeros: KKT");

    /* Float softmax rows: within one rounding of sigma after one iteration. */
    rng_state r = rng_seeded(7);
    float *s2 = make_sigma_softmax(&r, 50, 6, 2.0);
    float *y2 = solve(s2, 50, 6, NULL, 0.0, 1, 0.0, &res);
    double worst = 0.0;
    for (int i = 0; i < 300; i++)
        worst = fmax(worst, fabs(y2[i] - s2[i]) / (s2[i] * FLT_EPSILON));
    CHECK(worst <= 2.0, "lambda 0: y off sigma by %.2f float ulps", worst);
    CHECK(res.iters == 1, "max_iter 1 did %d iterations", res.iters);
    free(s2);
    free(y2);
}

/* A warm start reaches the same optimum as y = sigma, even from rows that
 * do not sum to 1 and a cluster that is empty everywhere. */
static void test_warm_start(void)
{
    int64_t n = 50;
    int k = 5;
    double lambda = 10.0;
    rng_state r = rng_seeded(17);
    float *sigma = make_sigma_softmax(&r, n, k, 2.0);
    em_result res;
    float *y_ref = solve(sigma, n, k, NULL, lambda, 100000, 1e-9, &res);

    /* Rows scaled by 3 and column 0 zeroed: the floor revives the cluster. */
    float *y = copy_floats(sigma, n * k);
    for (int64_t i = 0; i < n * k; i++)
        y[i] = i % k == 0 ? 0.0f : 3.0f * y[i];
    res = em_solve_cpu(sigma, y, n, k, NULL, lambda, 100000, 1e-9, 0);
    double d = 0.0;
    for (int64_t i = 0; i < n * k; i++)
        d = fmax(d, fabs(y[i] - y_ref[i]));
    CHECK(on_simplex(y, n, k), "warm start: rows off the simplex");
    CHECK(d < 1e-4, "warm start ends %.3g away from the cold-start optimum", d);
    CHECK(ref_dual_violation(sigma, y, n, k, NULL, lambda) < 1e-5, "warm start: dual");

    /* max_iter 0 only normalises: rows sum to 1, column 0 at the floor, an
     * all-zero row uniform. */
    for (int64_t i = 0; i < n * k; i++)
        y[i] = i % k == 0 || i < k ? 0.0f : 3.0f * sigma[i];
    res = em_solve_cpu(sigma, y, n, k, NULL, lambda, 0, 1e-9, 0);
    CHECK(res.iters == 0 && on_simplex(y, n, k), "max_iter 0: %d iters", res.iters);
    CHECK(y[k] == 1e-30f, "max_iter 0: y[1, 0] = %g, expected the floor", y[k]);
    CHECK(y[0] == 0.2f && y[k - 1] == 0.2f, "all-zero warm row: %g %g", y[0], y[k - 1]);
    free(sigma);
    free(y_ref);
    free(y);
}

/* max_k |ybar_k - u_k| / u_k: balance relative to each target share. */
static double relative_balance_error(const float *y, int64_t n, int k, const float *u)
{
    double worst = 0.0;
    for (int c = 0; c < k; c++) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++)
            s += y[i * k + c];
        worst = fmax(worst, fabs(s / n - ref_u(u, k, c)) / ref_u(u, k, c));
    }
    return worst;
}

/* Strong fairness balances the clusters; without it they stay unbalanced.
 * Summing the KKT conditions over rows gives, to first order (row
 * multipliers near -(1 + lambda)), ybar_k - u_k = (sbar_k - u_k) / (1 + lambda)
 * with sbar the mean of sigma: so the error at y = sigma shrinks by about
 * 1 + lambda, and under 1% for uniform u at lambda = 100. */
static void test_balance(const float *u, const char *what)
{
    int64_t n = 100;
    int k = 10;
    double lambda = 100.0;
    rng_state r = rng_seeded(11);
    float *sigma = make_sigma_softmax(&r, n, k, 2.0);
    em_result res;
    float *y = solve(sigma, n, k, u, lambda, 200000, 1e-9, &res);
    double err = relative_balance_error(y, n, k, u);
    double err0 = relative_balance_error(sigma, n, k, u);
    printf("  balance (%s u): lambda 100 -> max|ybar - u|/u %.2e in %d iters, "
           "at sigma %.2e\n", what, err, res.iters, err0);
    if (!u)
        CHECK(err < 1e-2, "relative balance error %.3g", err);
    CHECK(err < 2.0 * err0 / (1.0 + lambda), "relative balance error %.3g, at sigma %.3g",
          err, err0);

    /* em_balance_error is the absolute form of the same measure. */
    double abs_err = 0.0;
    for (int c = 0; c < k; c++) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++)
            s += y[i * k + c];
        abs_err = fmax(abs_err, fabs(s / n - ref_u(u, k, c)));
    }
    CHECK_NEAR(em_balance_error(y, n, k, u), abs_err, 1e-15, 1e-12);
    free(sigma);
    free(y);
}

/* Every kind of awkward input gives simplex rows and, once converged, a
 * small KKT residual. Then the full optimality test: run to an exact float
 * fixed point (tol = FLT_TRUE_MIN: every change of a float at or above the
 * floor 1e-30 is larger) and check the dual condition as well, which the
 * max |dy| < tol stop does not guarantee: an entry growing from ~1e-9 by a
 * factor 1.2 per iteration moves less than tol. Returns the number of runs
 * that met tol 1e-8 within the cap. */
static int run_edge_case(const char *name, const float *sigma, int64_t n, int k,
                         const float *u)
{
    static const double lambdas[] = {0.0, 0.1, 1.0, 10.0, 100.0, 1000.0};
    int converged = 0;
    for (int j = 0; j < 6; j++) {
        double lambda = lambdas[j], tol = 1e-8;
        em_result res, fix;
        float *y = solve(sigma, n, k, u, lambda, 20000, tol, &res);
        CHECK(on_simplex(y, n, k), "%s lambda %g: rows off the simplex", name, lambda);
        double kkt = em_kkt_residual(sigma, y, n, k, u, lambda);
        if (res.max_change < tol) {
            converged++;
            CHECK(kkt < 1e-4, "%s lambda %g: KKT %.3g after convergence", name, lambda, kkt);
        }

        /* The exact fixed point is the true optimum and never worse in F. */
        float *yf = solve(sigma, n, k, u, lambda, 30000, FLT_TRUE_MIN, &fix);
        double kkt_fix = em_kkt_residual(sigma, yf, n, k, u, lambda);
        double dual_fix = ref_dual_violation(sigma, yf, n, k, u, lambda);
        double f_gap = em_objective(sigma, y, n, k, u, lambda)
                       - em_objective(sigma, yf, n, k, u, lambda);
        printf("  %-8s lambda %-6g: tol 1e-8 %5d iters, KKT %.1e, dual %.1e | "
               "fixed point %5d iters, KKT %.1e, dual %.1e, F lower by %.1e\n", name,
               lambda, res.iters, kkt, ref_dual_violation(sigma, y, n, k, u, lambda),
               fix.iters, kkt_fix, dual_fix, f_gap);
        CHECK(on_simplex(yf, n, k), "%s lambda %g: fixed point off the simplex", name, lambda);
        CHECK(kkt_fix < 1e-4, "%s lambda %g: KKT %.3g at the fixed point", name, lambda,
              kkt_fix);
        CHECK(dual_fix < 1e-5, "%s lambda %g: dual violation %.3g at the fixed point", name,
              lambda, dual_fix);
        CHECK(f_gap > -(1.0 + lambda) * FLT_EPSILON, "%s lambda %g: fixed point F higher "
              "by %.3g (more than float rounding)", name, lambda, -f_gap);
        free(y);
        free(yf);
    }
    return converged;
}

static void test_edge_cases(void)
{
    rng_state r = rng_seeded(23);
    int converged = 0;

    float *one_hot = make_sigma_one_hot(&r, 40, 5);
    converged += run_edge_case("one-hot", one_hot, 40, 5, NULL);
    float *zeros = make_sigma_with_zeros(&r, 60, 8);
    converged += run_edge_case("zeros", zeros, 60, 8, NULL);
    float *wide = make_sigma_dirichlet(&r, 3, 10);
    converged += run_edge_case("K > N", wide, 3, 10, NULL);
    float *ramp = make_u_ramp(6);
    float *skew = make_sigma_softmax(&r, 80, 6, 1.0);
    converged += run_edge_case("ramp u", skew, 80, 6, ramp);
    CHECK(converged >= 22, "only %d of 24 edge runs converged", converged);

    /* K = 1: one point on the simplex, no iteration needed. */
    float s1[5] = {1, 1, 1, 1, 1}, y1[5] = {0};
    em_result res = em_solve_cpu(s1, y1, 5, 1, NULL, 100.0, 50, 1e-9, 1);
    CHECK(res.iters == 0, "K = 1 took %d iterations", res.iters);
    for (int i = 0; i < 5; i++)
        CHECK(y1[i] == 1.0f, "K = 1: y[%d] = %g", i, y1[i]);
    free(one_hot);
    free(zeros);
    free(wide);
    free(ramp);
    free(skew);
}

/* EM is majorise-minimise: F never rises, one iteration at a time. Each
 * step rounds y to float, which moves F by at most about (1 + lambda) 2^-24
 * (relative errors of y and ybar weighted by sigma/N and lambda u), so a
 * rise within twice that is rounding, not a failure. */
static void test_monotone(double lambda)
{
    int64_t n = 100;
    int k = 10;
    rng_state r = rng_seeded(31);
    float *sigma = make_sigma_dirichlet(&r, n, k);
    double f_sigma = em_objective(sigma, sigma, n, k, NULL, lambda);

    /* The capped run does exactly 15 iterations and lowers F. */
    em_result res;
    float *y15 = solve(sigma, n, k, NULL, lambda, 15, 1e-9, &res);
    double f15 = em_objective(sigma, y15, n, k, NULL, lambda);
    CHECK(res.iters == 15, "capped run did %d iterations", res.iters);
    CHECK(f15 < f_sigma, "F after 15 iterations %.9g, at sigma %.9g", f15, f_sigma);
    printf("  lambda %g, 15 iterations: F %.6f -> %.6f, balance error %.2e\n", lambda,
           f_sigma, f15, em_balance_error(y15, n, k, NULL));

    /* Single warm-started steps: F non-increasing, and the same path. */
    float *y = copy_floats(sigma, n * k);
    double f_prev = f_sigma, slack = (1.0 + lambda) * FLT_EPSILON;
    double worst_rise = -INFINITY;
    for (int t = 0; t < 60; t++) {
        res = em_solve_cpu(sigma, y, n, k, NULL, lambda, 1, 0.0, 0);
        double f = em_objective(sigma, y, n, k, NULL, lambda);
        worst_rise = fmax(worst_rise, f - f_prev);
        f_prev = f;
        if (t == 14) {
            double d = 0.0;
            for (int64_t i = 0; i < n * k; i++)
                d = fmax(d, fabs(y[i] - y15[i]));
            CHECK(d < 1e-5, "15 single steps differ from one capped run by %.3g", d);
        }
    }
    CHECK(worst_rise <= slack, "F rose by %.3g in one EM step (rounding slack %.3g)",
          worst_rise, slack);
    CHECK(f_prev <= f15 + slack, "F after 60 steps %.9g, after 15 %.9g", f_prev, f15);
    CHECK(res.iters == 1, "max_iter 1 did %d iterations", res.iters);
    free(sigma);
    free(y15);
    free(y);
}

/* Runs em_solve_cpu on bad input in a child (warm-started from y0 unless it
 * is NULL); it must stop with status 1 and a message containing want. Runs
 * before any OpenMP team exists, so fork is safe. */
typedef struct {
    const float *sigma, *u, *y0;
    int64_t n;
    int k;
    double lambda;
} fatal_case;

static void fatal_child(void *p)
{
    const fatal_case *c = p;
    float y[64] = {0};
    if (c->y0)
        memcpy(y, c->y0, (size_t)(c->n * c->k) * sizeof *y);
    em_solve_cpu(c->sigma, y, c->n, c->k, c->u, c->lambda, 10, 1e-6, c->y0 == NULL);
}

static void expect_fatal(const char *what, const float *sigma, int64_t n, int k,
                         const float *u, double lambda, const float *y0, const char *want)
{
    fatal_case c = { sigma, u, y0, n, k, lambda };
    check_child_fails(what, fatal_child, &c, want);
}

static void test_validation(void)
{
    float good[6] = {0.5f, 0.5f, 0.2f, 0.8f, 1.0f, 0.0f};
    float bad[6];

    memcpy(bad, good, sizeof bad);
    bad[3] = NAN;
    expect_fatal("NaN", bad, 3, 2, NULL, 1.0, NULL, "sigma[1, 1] = nan");
    memcpy(bad, good, sizeof bad);
    bad[4] = -0.5f;
    expect_fatal("negative", bad, 3, 2, NULL, 1.0, NULL, "sigma[2, 0] = -0.5");
    memcpy(bad, good, sizeof bad);
    bad[2] = 0.3f;
    expect_fatal("row sum", bad, 3, 2, NULL, 1.0, NULL, "row 1 of sigma sums to 1.1");
    expect_fatal("lambda", good, 3, 2, NULL, -1.0, NULL, "lambda = -1");
    expect_fatal("lambda inf", good, 3, 2, NULL, INFINITY, NULL, "lambda = inf");
    expect_fatal("K", good, 3, 0, NULL, 1.0, NULL, "K = 0");
    expect_fatal("N", good, 0, 2, NULL, 1.0, NULL, "N = 0");
    const float bad_u[2] = {0.9f, 0.3f};
    expect_fatal("u", good, 3, 2, bad_u, 1.0, NULL, "row 0 of u sums to 1.19");
    const float bad_y[6] = {0.5f, 0.5f, 0.5f, -1.0f, 0.5f, 0.5f};
    expect_fatal("warm start", good, 3, 2, NULL, 1.0, bad_y, "warm-start y[1, 1] = -1");
}

/* Same input, same bits: twice, and on one thread versus two. */
static void test_determinism(void)
{
    int64_t n = 20000;
    int k = 10;
    rng_state r = rng_seeded(41);
    float *sigma = make_sigma_dirichlet(&r, n, k);
    em_result a, b;
    float *ya = solve(sigma, n, k, NULL, 100.0, 50, 0.0, &a);
    float *yb = solve(sigma, n, k, NULL, 100.0, 50, 0.0, &b);
    CHECK(memcmp(ya, yb, (size_t)(n * k) * sizeof *ya) == 0, "two runs differ");
    CHECK(a.iters == b.iters && a.max_change == b.max_change, "results differ");
    free(yb);
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    float *y1 = solve(sigma, n, k, NULL, 100.0, 50, 0.0, &a);
    omp_set_num_threads(2);
    float *y2 = solve(sigma, n, k, NULL, 100.0, 50, 0.0, &b);
    omp_set_num_threads(saved);
    CHECK(memcmp(y1, y2, (size_t)(n * k) * sizeof *y1) == 0, "1 and 2 threads differ");
    CHECK(memcmp(y1, ya, (size_t)(n * k) * sizeof *y1) == 0, "1 thread differs from default");
    CHECK(a.max_change == b.max_change, "max_change differs across thread counts");
    free(y1);
    free(y2);
#else
    printf("  determinism across threads skipped: built without OpenMP\n");
#endif
    free(sigma);
    free(ya);
}

/* ---- the panel layout and the KKT bound --------------------------------- */

/* n_iter EM steps written the plain way, row-major, float y: the update em.c
 * documents, with the row total summed in column order and the floor after
 * the rounding to float. */
static void plain_em(const float *sigma, float *y, int64_t n, int k, double lambda,
                     int n_iter)
{
    double *w = ecl_malloc((size_t)k * sizeof *w);
    for (int it = 0; it < n_iter; it++) {
        for (int c = 0; c < k; c++)
            w[c] = 0.0;
        for (int64_t i = 0; i < n * k; i++)
            w[i % k] += y[i];
        for (int c = 0; c < k; c++)
            w[c] = lambda / k / fmax(w[c] / (double)n, 1e-30);
        for (int64_t i = 0; i < n; i++) {
            float *row = y + i * k;
            const float *sig = sigma + i * k;
            double total = 0.0;
            for (int c = 0; c < k; c++)
                total += sig[c] + w[c] * row[c];
            for (int c = 0; c < k; c++)
                row[c] = fmaxf((float)((sig[c] + w[c] * row[c]) / total), 1e-30f);
        }
    }
    free(w);
}

/* Shapes around the vector width (16 rows) and the block (256 rows), K
 * from 2 to 100: em_solve_cpu (panels, padding, copies in and out) follows
 * the plain loop to float rounding, and 20 one-step calls on one state give
 * the bits of one 20-step call. */
static void test_layout(void)
{
    static const int shapes[][2] = {{1, 2}, {5, 3}, {15, 10}, {16, 10}, {17, 10},
                                    {255, 7}, {256, 10}, {257, 10}, {600, 17}, {300, 100}};
    for (size_t j = 0; j < sizeof shapes / sizeof shapes[0]; j++) {
        int64_t n = shapes[j][0];
        int k = shapes[j][1];
        rng_state r = rng_seeded(60 + j);
        float *sigma = make_sigma_softmax(&r, n, k, 3.0);
        float *plain = copy_floats(sigma, n * k);
        em_result res;
        float *y = solve(sigma, n, k, NULL, 100.0, 20, 0.0, &res);
        plain_em(sigma, plain, n, k, 100.0, 20);
        double d = 0.0;
        for (int64_t i = 0; i < n * k; i++)
            d = fmax(d, fabs((double)y[i] - plain[i]));
        CHECK(res.iters == 20 && d <= 1e-6, "N %lld K %d: %d iters, %.3g from the plain loop",
              (long long)n, k, res.iters, d);

        /* One state, twenty calls. */
        float *y1 = ecl_malloc((size_t)(n * k) * sizeof *y1);
        em_state *st = em_state_create(sigma, y1, n, k, NULL, 100.0, 1);
        em_result steps = {0, 0.0};
        for (int t = 0; t < 20; t++)
            em_state_iterate(st, 1, 0.0, &steps);
        em_state_free(st);
        CHECK(steps.iters == 20 && memcmp(y1, y, (size_t)(n * k) * sizeof *y) == 0 &&
              steps.max_change == res.max_change,
              "N %lld K %d: twenty one-step calls differ from one call", (long long)n, k);
        free(sigma), free(plain), free(y), free(y1);
    }
}

/* Walks em_state_iterate_kkt along an EM path with check_every = 1, at
 * each iterate alternately: with kkt_tol = the measure itself it must stop
 * there (the bound is not above the measure), and the next call must move
 * on; with kkt_tol = half the measure, where the measure is well above float
 * rounding, it must not stop (the bound is close). Returns the stops. */
static int walk_kkt_bound(const char *name, const float *sigma, float *y, int64_t n, int k,
                          const float *u, double lambda, int from_sigma, int steps)
{
    em_state *st = em_state_create(sigma, y, n, k, u, lambda, from_sigma);
    em_result res = {0, 0.0};
    int loose = 0;
    for (int t = 0; t < steps; t++) {
        double e = solver_kkt_full(sigma, y, n, k, u, lambda);
        if (t % 2 == 0) {
            int at = res.iters;
            CHECK(em_state_iterate_kkt(st, 1, 1, e, &res) == 1 && res.iters == at,
                  "%s step %d: measure %.3g met, but the iterate was passed", name, t, e);
            CHECK(em_state_iterate_kkt(st, 1, 1, e, &res) == 0 && res.iters == at + 1,
                  "%s step %d: stopped twice at one iterate", name, t);
        } else if (e > 1e-5) {
            loose += em_state_iterate_kkt(st, 1, 1, 0.5 * e, &res);
        } else {
            em_state_iterate(st, 1, 0.0, &res);
        }
    }
    em_state_free(st);
    return loose;
}

static void test_kkt_bound(void)
{
    rng_state r = rng_seeded(70);
    float *ramp = make_u_ramp(6);
    struct {
        const char *name;
        float *sigma;
        int64_t n;
        int k;
        const float *u;
        double lambda;
    } cases[] = {
        {"softmax", make_sigma_softmax(&r, 250, 10, 3.0), 250, 10, NULL, 100.0},
        {"ramp u", make_sigma_dirichlet(&r, 40, 6), 40, 6, ramp, 10.0},
        {"zeros", make_sigma_with_zeros(&r, 300, 6), 300, 6, NULL, 100.0},
        {"one-hot", make_sigma_one_hot(&r, 33, 4), 33, 4, NULL, 1.0},
        {"K > N", make_sigma_softmax(&r, 3, 20, 3.0), 3, 20, NULL, 1000.0},
    };
    for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++) {
        int64_t nk = cases[j].n * cases[j].k;
        float *y = ecl_malloc((size_t)nk * sizeof *y);
        int loose = walk_kkt_bound(cases[j].name, cases[j].sigma, y, cases[j].n, cases[j].k,
                                   cases[j].u, cases[j].lambda, 1, 300);
        CHECK(loose == 0, "%s: the bound fell below half the measure %d times",
              cases[j].name, loose);

        /* Warm-started from where the walk ended: the copy in, the same. */
        walk_kkt_bound(cases[j].name, cases[j].sigma, y, cases[j].n, cases[j].k,
                       cases[j].u, cases[j].lambda, 0, 4);
        free(y);
        free(cases[j].sigma);
    }
    free(ramp);
}

/* Informational: iterations and time per solve at the paper's settings, on
 * peaked predictions (softmax of 3 z): flat ones converge much faster. */
static void report_speed(int64_t n, int k)
{
    rng_state r = rng_seeded(51);
    float *sigma = make_sigma_softmax(&r, n, k, 3.0);
    em_result res;
    double t0 = ecl_now_s();
    float *y = solve(sigma, n, k, NULL, 100.0, 200000, 1e-6, &res);
    double dt = ecl_now_s() - t0;
    printf("  speed B %lld K %d lambda 100 tol 1e-6: %d iters, %.2f ms per solve, "
           "%.2f us per iter, KKT %.2e, balance %.2e\n", (long long)n, k, res.iters,
           dt * 1e3, dt * 1e6 / res.iters, em_kkt_residual(sigma, y, n, k, NULL, 100.0),
           em_balance_error(y, n, k, NULL));
    free(sigma);
    free(y);
}

int main(void)
{
    test_validation();
    float *ramp = make_u_ramp(4);
    test_reference_optimum(12, 4, NULL, 10.0);
    test_reference_optimum(12, 4, ramp, 100.0);
    test_reference_optimum(30, 3, NULL, 1.0);
    test_lambda_zero();
    test_warm_start();
    test_balance(NULL, "uniform");
    float *ramp10 = make_u_ramp(10);
    test_balance(ramp10, "ramp");
    test_edge_cases();
    test_monotone(100.0);
    test_monotone(1.0);
    test_determinism();
    test_layout();
    test_kkt_bound();
    report_speed(250, 10);
    report_speed(200, 100);
    free(ramp);
    free(ramp10);
    return check_summary("test_em");
}
