/*
 * test_solvers.c - every pseudo-label solver of solvers.h reaches the same
 * optimum: the same y (within the tolerances of the table below), a small
 * full KKT measure, an F no lower than the best found by the others; on
 * softmax predictions, sigma with exact zeros, one-hot rows with an empty
 * cluster, non-uniform u, lambda from 0 to 1000 and K > N. Also: the full
 * measure catches what the y-weighted residual misses, plain EM under the
 * common loop gives em_solve_cpu's bits, plain EM stops at the iterate (same
 * bits, same count) where evaluating the measure at every check would, on
 * one thread or two, names parse, bad inputs stop the process with a
 * message (in a forked child), and K = 1 is trivial.
 *
 * Not here: timings (ecl-bench-em), EM's own tests (test_em.c).
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/solvers.h"

#include <float.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "check_fork.h"
#include "check_problems.h"
#include "ecl/core.h"
#include "ecl/em.h"
#include "ecl/rng.h"

/* ---- problems ------------------------------------------------------------ */

typedef enum { GEN_SOFTMAX, GEN_ZEROS, GEN_ONE_HOT } gen_kind;

/* softmax(3 z) rows; GEN_ZEROS sets about a third of the entries to exactly
 * 0; GEN_ONE_HOT puts each row on one of the classes 1..K-1 (column 0
 * empty, so its mass must come from rows with sigma = 0 there). */
static float *make_sigma(rng_state *r, int64_t n, int k, gen_kind kind)
{
    float *s = ecl_calloc((size_t)(n * k), sizeof *s);
    double *z = ecl_malloc((size_t)k * sizeof *z);
    for (int64_t i = 0; i < n; i++) {
        float *row = s + i * k;
        if (kind == GEN_ONE_HOT) {
            row[k == 1 ? 0 : 1 + (int)rng_below(r, (uint64_t)(k - 1))] = 1.0f;
            continue;
        }
        double top = -1e300, sum = 0.0;
        for (int c = 0; c < k; c++)
            top = fmax(top, z[c] = 3.0 * rng_normal(r));
        for (int c = 0; c < k; c++) {
            z[c] = exp(z[c] - top);
            if (kind == GEN_ZEROS && c != (int)(i % k) && rng_uniform(r) < 0.33f)
                z[c] = 0.0;
            sum += z[c];
        }
        for (int c = 0; c < k; c++)
            row[c] = (float)(z[c] / sum);
    }
    free(z);
    return s;
}

static double max_abs_diff(const float *a, const float *b, int64_t count)
{
    double d = 0.0;
    for (int64_t i = 0; i < count; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* ---- agreement of all solvers -------------------------------------------- */

/*
 * Stopping tolerance (full KKT measure): 1e-6 on softmax sigma (float y
 * bottoms out near 5e-8); 3e-5 with exact zeros, where primal Newton's
 * endgame on entries with sigma = 0 is linear and its Armijo test stalls at
 * F's rounding near 1e-6..1e-5 (measured).
 * Tolerances, max |y - y_ref| with y_ref the structured Newton answer:
 *   dual, newton_dense: 1e-4. Quadratic convergence puts both within ~1e-6
 *     of the optimum at lambda <= 100; lambda = 1000 measured 4e-5.
 *   em, em_accel: 1e-2. Linear convergence on an ill-conditioned problem:
 *     at the same KKT measure y can still be ~5e-3 off (K > N, lambda
 *     1000), the point of the full measure being only a stopping rule.
 *   problems with exact zeros: F within 1e-4 (1 + lambda) and ybar within
 *     1e-4 instead, since entries with sigma = 0 leave nearly flat
 *     directions (mass moved between two such entries barely changes F).
 * Every converged answer must also have F no higher than the reference's
 * plus float rounding, (1 + lambda) 1e-6 relative to F's scale.
 */
typedef struct {
    const char *name;
    int64_t n;
    int k;
    gen_kind gen;
    int ramp_u;
} problem_case;

static void check_solver(const problem_case *pc, const float *sigma, const float *u,
                         double lambda, solver_kind kind, const float *y_ref, double f_ref)
{
    int64_t nk = pc->n * pc->k;
    int degenerate = pc->gen != GEN_SOFTMAX;
    int em_like = kind == SOLVER_EM || kind == SOLVER_EM_ACCEL;
    solver_options opt = solver_default_options(kind);
    opt.tol = degenerate ? 3e-5 : 1e-6;
    opt.max_iter = em_like ? 20000 : 3000;
    opt.diagnostics = 1;
    opt.y_ref = y_ref;
    float *y = ecl_malloc((size_t)nk * sizeof *y);
    solver_result res = solver_solve(sigma, y, pc->n, pc->k, u, lambda, &opt);

    /* EM on exact zeros converges sublinearly (a pinned entry grows by a
     * factor tending to 1): only the second-order solvers must converge. */
    int must_converge = !(em_like && (degenerate || lambda >= 100.0));
    if (must_converge)
        CHECK(res.converged, "%s lambda %g %s: not converged in %d iters (KKT %.3g)",
              pc->name, lambda, solver_name(kind), res.iters, res.kkt_full);
    double f_slack = (1.0 + lambda) * (degenerate ? 1e-4 : 1e-6) + 1e-6 * fabs(f_ref);
    CHECK(res.objective >= f_ref - f_slack, "%s lambda %g %s: F %.12g below the reference "
          "%.12g", pc->name, lambda, solver_name(kind), res.objective, f_ref);
    if (res.converged) {
        double tol = degenerate ? 1e-4 : em_like ? 1e-2 : 1e-4;
        double err = degenerate ? fabs(res.objective - f_ref) / (1.0 + lambda) : res.dist_ref;
        CHECK(err <= tol, "%s lambda %g %s: %s %.3g > %.3g", pc->name, lambda,
              solver_name(kind), degenerate ? "F gap" : "max|y - y_ref|", err, tol);
    }
    if (res.converged && degenerate) {
        double bal_ref = em_balance_error(y_ref, pc->n, pc->k, u);
        CHECK(fabs(res.balance - bal_ref) <= 1e-4, "%s lambda %g %s: balance %.3g vs %.3g",
              pc->name, lambda, solver_name(kind), res.balance, bal_ref);
    }
    printf("  %-8s lambda %-6g %-12s %5d iters %s KKT %.1e dist %.1e\n", pc->name, lambda,
           solver_name(kind), res.iters, res.converged ? "conv" : "cap ", res.kkt_full,
           res.dist_ref);
    free(y);
}

static void test_agreement(const problem_case *pc, uint64_t seed)
{
    static const double lambdas[] = {0.0, 0.1, 1.0, 10.0, 100.0, 1000.0};
    rng_state r = rng_seeded(seed);
    float *sigma = make_sigma(&r, pc->n, pc->k, pc->gen);
    float *u = pc->ramp_u ? make_u_ramp(pc->k) : NULL;
    float *y_ref = ecl_malloc((size_t)(pc->n * pc->k) * sizeof *y_ref);

    for (int j = 0; j < 6; j++) {
        double lambda = lambdas[j];
        solver_options opt = solver_default_options(SOLVER_NEWTON);
        opt.tol = pc->gen == GEN_SOFTMAX ? 1e-6 : 3e-5;
        opt.diagnostics = 1;
        solver_result ref = solver_solve(sigma, y_ref, pc->n, pc->k, u, lambda, &opt);
        CHECK(ref.converged, "%s lambda %g: reference Newton did not converge (KKT %.3g)",
              pc->name, lambda, ref.kkt_full);
        for (int kind = 0; kind < SOLVER_COUNT; kind++)
            if (kind != SOLVER_NEWTON_DENSE || pc->n * pc->k <= 200)
                check_solver(pc, sigma, u, lambda, (solver_kind)kind, y_ref, ref.objective);
    }
    free(sigma);
    free(u);
    free(y_ref);
}

/* ---- the measures and the loop ------------------------------------------- */

/* An entry that should have mass but sits at the floor: the y-weighted
 * residual cannot see it, the full measure's sign term does. */
static void test_kkt_sign(void)
{
    float sigma[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    float y[4] = {1.0f, 1e-30f, 0.5f, 0.5f};
    double weighted = em_kkt_residual(sigma, y, 2, 2, NULL, 0.0);
    double full = solver_kkt_full(sigma, y, 2, 2, NULL, 0.0);
    CHECK(full > 1e20, "full measure %.3g misses an entry at the floor", full);
    CHECK(weighted >= 0.49, "weighted %.3g", weighted);

    /* With sigma = 0 on that entry the optimum is y = 0 there: no violation. */
    float s2[4] = {1.0f, 0.0f, 0.5f, 0.5f};
    CHECK(solver_kkt_full(s2, y, 2, 2, NULL, 0.0) < 1e-12, "zero entry flagged: %.3g",
          solver_kkt_full(s2, y, 2, 2, NULL, 0.0));
}

/* Plain EM under the common loop with tol 0 is em_solve_cpu, bit for bit,
 * so em.max_iter caps the same 15 updates as before. */
static void test_em_cap_same_bits(void)
{
    int64_t n = 250;
    int k = 10;
    rng_state r = rng_seeded(3);
    float *sigma = make_sigma(&r, n, k, GEN_SOFTMAX);
    float *a = ecl_malloc((size_t)(n * k) * sizeof *a);
    float *b = ecl_malloc((size_t)(n * k) * sizeof *b);
    em_solve_cpu(sigma, a, n, k, NULL, 100.0, 15, 0.0, 1);
    solver_options opt = solver_default_options(SOLVER_EM);
    opt.max_iter = 15;
    opt.tol = 1e-6;
    solver_result res = solver_solve(sigma, b, n, k, NULL, 100.0, &opt);
    CHECK(res.iters == 15 && !res.converged, "capped em: %d iters, converged %d", res.iters,
          res.converged);
    CHECK(memcmp(a, b, (size_t)(n * k) * sizeof *a) == 0, "capped em differs from "
          "em_solve_cpu by %.3g", max_abs_diff(a, b, n * k));

    /* A warm start at the optimum stops at the first check, no iteration. */
    opt = solver_default_options(SOLVER_NEWTON);
    solver_solve(sigma, a, n, k, NULL, 100.0, &opt);
    for (int kind = 0; kind < SOLVER_COUNT - 1; kind++) {
        memcpy(b, a, (size_t)(n * k) * sizeof *a);
        opt = solver_default_options((solver_kind)kind);
        opt.init_from_sigma = 0;
        opt.tol = 1e-5;
        res = solver_solve(sigma, b, n, k, NULL, 100.0, &opt);
        CHECK(res.iters == 0 && res.converged, "%s from the optimum: %d iters",
              solver_name((solver_kind)kind), res.iters);
    }
    free(sigma);
    free(a);
    free(b);
}

/* The rule of solvers.h applied the slow way: one EM step per call and the
 * full measure evaluated at every check_every-th iterate and at the cap. */
static solver_result em_rule_reference(const float *sigma, float *y, int64_t n, int k,
                                       const float *u, double lambda,
                                       const solver_options *opt)
{
    solver_result res = {0};
    em_state *st = em_state_create(sigma, y, n, k, u, lambda, opt->init_from_sigma);
    em_result er = {0, 0.0};
    for (;;) {
        if (er.iters % opt->check_every == 0 &&
            solver_kkt_full(sigma, y, n, k, u, lambda) < opt->tol) {
            res.converged = 1;
            break;
        }
        if (er.iters >= opt->max_iter)
            break;
        em_state_iterate(st, 1, -1.0, &er);
    }
    em_state_free(st);
    res.iters = er.iters;
    return res;
}

/* solver_solve's plain EM evaluates the measure only where em.c's bound
 * says the rule may hold; it must stop where the reference does, with the
 * same bits, converged or at the cap (on a check or between two). */
static void test_em_stop_rule(void)
{
    typedef struct {
        const char *name;
        int64_t n;
        int k;
        gen_kind gen;
        int ramp_u;
        double lambda, tol;
        int check_every, max_iter, warm;
    } stop_case;
    static const stop_case cases[] = {
        {"batch", 250, 10, GEN_SOFTMAX, 0, 100.0, 1e-6, 8, 100000, 0},
        {"every 1", 100, 7, GEN_SOFTMAX, 1, 10.0, 1e-6, 1, 100000, 0},
        {"every 3", 37, 5, GEN_ZEROS, 0, 10.0, 3e-5, 3, 100000, 0},
        {"cap on check", 24, 4, GEN_ONE_HOT, 0, 100.0, 1e-7, 5, 100, 0},
        {"cap off check", 24, 4, GEN_ONE_HOT, 0, 100.0, 1e-7, 7, 50, 0},
        {"warm", 60, 12, GEN_SOFTMAX, 0, 1000.0, 1e-6, 4, 100000, 1},
    };
    for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++) {
        const stop_case *c = &cases[j];
        int64_t nk = c->n * c->k;
        rng_state r = rng_seeded(200 + j);
        float *sigma = make_sigma(&r, c->n, c->k, c->gen);
        float *u = c->ramp_u ? make_u_ramp(c->k) : NULL;
        float *want = ecl_malloc((size_t)nk * sizeof *want);
        float *got = ecl_malloc((size_t)nk * sizeof *got);
        solver_options opt = solver_default_options(SOLVER_EM);
        opt.tol = c->tol;
        opt.check_every = c->check_every;
        opt.max_iter = c->max_iter;
        if (c->warm) {
            solver_solve(sigma, want, c->n, c->k, u, c->lambda / 10, &opt);
            memcpy(got, want, (size_t)nk * sizeof *got);
            opt.init_from_sigma = 0;
        }

        solver_result ref = em_rule_reference(sigma, want, c->n, c->k, u, c->lambda, &opt);
        solver_result res = solver_solve(sigma, got, c->n, c->k, u, c->lambda, &opt);
        CHECK(res.iters == ref.iters && res.converged == ref.converged,
              "%s: stopped after %d iters (converged %d), the reference after %d (%d)",
              c->name, res.iters, res.converged, ref.iters, ref.converged);
        CHECK(memcmp(got, want, (size_t)nk * sizeof *got) == 0, "%s: y differs by %.3g",
              c->name, max_abs_diff(got, want, nk));
        if (res.converged)
            CHECK(solver_kkt_full(sigma, got, c->n, c->k, u, c->lambda) < c->tol,
                  "%s: converged, but the measure is above tol", c->name);
        printf("  stop rule %-14s %6d iters %s\n", c->name, res.iters,
               res.converged ? "conv" : "cap");
        free(sigma), free(u), free(want), free(got);
    }
}

/* A problem big enough for a thread team: one thread and two give the same
 * bits and the same count. */
static void test_em_threads(void)
{
#ifdef _OPENMP
    int64_t n = 9000, nk = n * 10;
    rng_state r = rng_seeded(300);
    float *sigma = make_sigma(&r, n, 10, GEN_SOFTMAX);
    float *a = ecl_malloc((size_t)nk * sizeof *a), *b = ecl_malloc((size_t)nk * sizeof *b);
    solver_options opt = solver_default_options(SOLVER_EM);
    opt.tol = 1e-5;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    solver_result ra = solver_solve(sigma, a, n, 10, NULL, 10.0, &opt);
    omp_set_num_threads(2);
    solver_result rb = solver_solve(sigma, b, n, 10, NULL, 10.0, &opt);
    omp_set_num_threads(saved);
    CHECK(ra.converged && ra.iters == rb.iters && memcmp(a, b, (size_t)nk * sizeof *a) == 0,
          "em: 1 and 2 threads differ (%d vs %d iters, converged %d)", ra.iters, rb.iters,
          ra.converged);
    free(sigma), free(a), free(b);
#else
    printf("  em across threads skipped: built without OpenMP\n");
#endif
}

static void test_names(void)
{
    for (int kind = 0; kind < SOLVER_COUNT; kind++) {
        solver_kind got = SOLVER_COUNT;
        CHECK(solver_parse(solver_name((solver_kind)kind), &got) == 0 && (int)got == kind,
              "%s does not round-trip", solver_name((solver_kind)kind));
    }
    solver_kind got;
    CHECK(solver_parse("sinkhorn", &got) == -1, "unknown name accepted");
    CHECK(strstr(ecl_last_error(), "'sinkhorn'") && strstr(ecl_last_error(), "em_accel"),
          "message: %s", ecl_last_error());
}

/* K = 1: y = 1, no iteration, every solver. */
static void test_k1(void)
{
    float s[4] = {1, 1, 1, 1};
    for (int kind = 0; kind < SOLVER_COUNT; kind++) {
        float y[4] = {0};
        solver_options opt = solver_default_options((solver_kind)kind);
        solver_result res = solver_solve(s, y, 4, 1, NULL, 100.0, &opt);
        CHECK(res.iters == 0 && y[0] == 1.0f && y[3] == 1.0f, "%s K = 1: %d iters, y %g",
              solver_name((solver_kind)kind), res.iters, y[0]);
    }
}

/* ---- bad input, in a child ----------------------------------------------- */

/* Runs solver kind on bad input in a child; it must exit with status 1 and
 * a message containing want. Runs before any OpenMP team exists. */
typedef struct {
    solver_kind kind;
    const float *sigma;
    int64_t n;
    int k;
} fatal_case;

static void fatal_child(void *p)
{
    const fatal_case *c = p;
    float y[64] = {0};
    solver_options opt = solver_default_options(c->kind);
    solver_solve(c->sigma, y, c->n, c->k, NULL, 1.0, &opt);
}

static void expect_fatal(const char *what, solver_kind kind, const float *sigma, int64_t n,
                         int k, const char *want)
{
    char name[160];
    fatal_case c = { kind, sigma, n, k };
    snprintf(name, sizeof name, "%s (%s)", what, solver_name(kind));
    check_child_fails(name, fatal_child, &c, want);
}

static void test_validation(void)
{
    float good[6] = {0.5f, 0.5f, 0.2f, 0.8f, 1.0f, 0.0f};
    float bad[6];
    for (int kind = 0; kind < SOLVER_COUNT; kind++) {
        memcpy(bad, good, sizeof bad);
        bad[3] = NAN;
        expect_fatal("NaN", (solver_kind)kind, bad, 3, 2, "sigma[1, 1] = nan");
        memcpy(bad, good, sizeof bad);
        bad[2] = 0.3f;
        expect_fatal("row sum", (solver_kind)kind, bad, 3, 2, "row 1 of sigma sums to 1.1");
    }
    static float big[2];
    expect_fatal("dense too big", SOLVER_NEWTON_DENSE, big, 20000, 1, "newton_dense on N*K");
}

int main(void)
{
    test_validation();
    test_names();
    test_k1();
    test_kkt_sign();
    test_em_cap_same_bits();
    test_em_stop_rule();
    test_em_threads();

    static const problem_case cases[] = {
        {"softmax", 40, 5, GEN_SOFTMAX, 0},
        {"ramp u", 30, 6, GEN_SOFTMAX, 1},
        {"K > N", 4, 12, GEN_SOFTMAX, 0},
        {"zeros", 30, 6, GEN_ZEROS, 0},
        {"one-hot", 24, 4, GEN_ONE_HOT, 0},
        {"batch", 250, 10, GEN_SOFTMAX, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        test_agreement(&cases[c], 100 + c);
    return check_summary("test_solvers");
}
