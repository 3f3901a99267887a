/*
 * solvers.c - the pseudo-label solvers behind one call (solvers.h): names,
 * options, the common stopping loop, the full KKT measure, and the two EM
 * solvers: plain EM (em.c's float iteration, the common rule applied through
 * em.c's bound on the measure) and EM accelerated by SQUAREM extrapolation
 * in log y (double, six [N, K] buffers).
 *
 * Shape legend: N rows, K clusters.
 *
 * The loop counts iterations on in res->iters, so a second loop continues
 * the count of the first (the dual's primal fall-back).
 *
 * Not here: the dual and primal Newton solvers (solvers_newton.c), the CUDA
 * twins, the all-reduce across ranks.
 */
#include "ecl/solvers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ecl/core.h"
#include "ecl/em.h"
#include "solvers_impl.h"

/* ---- names and options --------------------------------------------------- */

static const char *const solver_names[SOLVER_COUNT] = {
    [SOLVER_EM] = "em",
    [SOLVER_EM_ACCEL] = "em_accel",
    [SOLVER_DUAL] = "dual",
    [SOLVER_NEWTON] = "newton",
    [SOLVER_NEWTON_DENSE] = "newton_dense",
};

/* Iterations between KKT checks by default: plain EM checks every 8th (its
 * iterations are cheap and a check pass adds a division per entry; 8 also
 * matches scripts/bench_em_numpy.py); the other solvers' iterations cost
 * several passes, so they check every time. */
static const int solver_default_check_every[SOLVER_COUNT] = {8, 1, 1, 1, 1};

solver_options solver_default_options(solver_kind kind)
{
    return (solver_options){.kind = kind, .max_iter = 100000, .tol = 1e-6,
                            .check_every = 0, .init_from_sigma = 1, .y_ref = NULL,
                            .diagnostics = 0};
}

int solver_parse(const char *name, solver_kind *kind)
{
    for (int s = 0; s < SOLVER_COUNT; s++)
        if (strcmp(name, solver_names[s]) == 0) {
            *kind = (solver_kind)s;
            return 0;
        }
    return ecl_set_error("unknown pseudo-label solver '%s'; expected one of "
                         "em|em_accel|dual|newton|newton_dense", name);
}

const char *solver_name(solver_kind kind)
{
    ECL_CHECK(kind >= 0 && kind < SOLVER_COUNT, "solver_name: kind %d out of range",
              (int)kind);
    return solver_names[kind];
}

/* ---- shared double-precision helpers ------------------------------------- */

void solver_colsum_d(const double *y, int64_t n, int k, double *colsum)
{
    for (int c = 0; c < k; c++)
        colsum[c] = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < k; c++)
            colsum[c] += y[i * k + c];
}

double solver_objective_d(const solver_problem *p, const double *y)
{
    int k = p->k;
    int64_t n = p->n;
    double *colsum = ecl_malloc((size_t)k * sizeof *colsum);
    solver_colsum_d(y, n, k, colsum);

    /* Reverse cross-entropy; sigma = 0 terms vanish. */
    double ce = 0.0;
    #pragma omp parallel for reduction(+ : ce) if (n * k > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < n * k; i++)
        if (p->sigma[i] > 0.0f)
            ce -= p->sigma[i] * log(fmax(y[i], SOLVER_FLOOR));

    /* Fairness: -lambda sum_k u_k log ybar_k. */
    double fair = 0.0;
    for (int c = 0; c < k; c++) {
        double uk = solver_target(p->u, k, c);
        if (uk > 0.0)
            fair -= uk * log(fmax(colsum[c] / (double)n, SOLVER_FLOOR));
    }
    free(colsum);
    return ce / (double)n + p->lambda * fair;
}

void solver_store_y(const solver_problem *p, const double *yd)
{
    int64_t count = p->n * p->k;
    for (int64_t i = 0; i < count; i++)
        p->y[i] = (float)yd[i];
}

double *solver_load_y(const solver_problem *p)
{
    int64_t count = p->n * p->k;
    double *yd = ecl_malloc((size_t)count * sizeof *yd);
    for (int64_t i = 0; i < count; i++)
        yd[i] = p->y[i];
    return yd;
}

/* ---- the full KKT measure ------------------------------------------------ */

/* One row: complementarity y |g - mu| (formed without dividing by y) and
 * the sign violation max(0, mu - g), the larger of the two. */
static double solver_kkt_row(const float *sig, const float *row, int k, const double *w)
{
    double mu = 0.0;
    for (int c = 0; c < k; c++)
        mu += -(double)sig[c] - row[c] * w[c];

    double worst = 0.0;
    for (int c = 0; c < k; c++) {
        double yc = fmax(row[c], SOLVER_FLOOR);
        double comp = fabs(-(double)sig[c] - row[c] * w[c] - row[c] * mu);
        double sign = sig[c] / yc + w[c] + mu;
        worst = fmax(worst, fmax(comp, sign));
    }
    return worst;
}

double solver_kkt_full(const float *sigma, const float *y, int64_t n, int k, const float *u,
                       double lambda)
{
    ECL_CHECK(n >= 1 && k >= 1 && lambda >= 0.0, "solver_kkt_full: N = %lld, K = %d, "
              "lambda = %g; expected N, K >= 1 and lambda >= 0", (long long)n, k, lambda);
    double *w = ecl_malloc((size_t)k * sizeof *w);
    for (int c = 0; c < k; c++)
        w[c] = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < k; c++)
            w[c] += y[i * k + c];

    /* w_k = lambda u_k / ybar_k, the fairness part of -g. */
    for (int c = 0; c < k; c++)
        w[c] = lambda * solver_target(u, k, c) / fmax(w[c] / (double)n, SOLVER_FLOOR);

    /* max is exact in any order, so threads give the same bits. */
    double worst = 0.0;
    #pragma omp parallel for reduction(max : worst) if (n * k > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, solver_kkt_row(sigma + i * k, y + i * k, k, w));
    free(w);
    return worst / (1.0 + lambda);
}

/* ---- the common loop ----------------------------------------------------- */

void solver_run_loop(const solver_problem *p, const solver_ops *ops,
                     const solver_options *opt, int check_every, solver_result *res)
{
    void *state = ops->start(p);

    /* Check first (a warm start may already be optimal), then every
     * check_every iterations; a solver that can make no more progress (a
     * line search that failed at rounding level) ends the loop too. */
    int stalled = 0;
    while (!stalled) {
        if (opt->tol > 0.0 && res->iters % check_every == 0) {
            ops->write_y(state);
            if (solver_kkt_full(p->sigma, p->y, p->n, p->k, p->u, p->lambda) < opt->tol) {
                res->converged = 1;
                break;
            }
        }
        if (res->iters >= opt->max_iter)
            break;
        stalled = ops->step(state);
        res->iters++;
    }
    ops->write_y(state);
    ops->finish(state);
}

/* ---- plain EM: em.c's iteration under the common rule -------------------- */

/* The stopping rule of solver_run_loop for plain EM, without its per-step
 * calls: em.c runs the iterations and bounds the KKT measure at every
 * check_every-th iterate from the update itself; the measure is evaluated
 * here only where that bound says the rule may hold, and once more at the
 * cap when the cap falls on a check, so the answer and the count are those
 * of evaluating it at every check. */
static void solver_em_run(const solver_problem *p, const solver_options *opt, int every,
                          solver_result *res)
{
    em_result er = {0, 0.0};
    for (;;) {
        int maybe = em_state_iterate_kkt(p->em, opt->max_iter - er.iters, every, opt->tol,
                                         &er);
        int due = maybe || er.iters % every == 0;
        if (opt->tol > 0.0 && due &&
            solver_kkt_full(p->sigma, p->y, p->n, p->k, p->u, p->lambda) < opt->tol) {
            res->converged = 1;
            break;
        }
        if (!maybe)
            break;
    }
    res->iters += er.iters;
}

/* ---- EM + SQUAREM in log y ----------------------------------------------- */

typedef struct {
    const solver_problem *p;
    double *x0, *x1, *x2;   /* [N, K] current iterate and two EM maps of it */
    double *lx0, *r, *v;    /* [N, K] log x0, first and second differences */
    double *colsum, *w;     /* [K] */
    double f0;              /* F(x0) */
} solver_sq_state;

/* One EM map out = M(in): weights from in's column sums, then every row
 * normalised by its own sum (as em.c) and floored. */
static void solver_em_map_d(solver_sq_state *s, const double *in, double *out)
{
    const solver_problem *p = s->p;
    int k = p->k;
    solver_colsum_d(in, p->n, k, s->colsum);
    for (int c = 0; c < k; c++)
        s->w[c] = p->lambda * solver_target(p->u, k, c)
                  / fmax(s->colsum[c] / (double)p->n, SOLVER_FLOOR);

    const double *w = s->w;
    #pragma omp parallel for if (p->n * k > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < p->n; i++) {
        const float *sig = p->sigma + i * k;
        const double *a = in + i * k;
        double *b = out + i * k, total = 0.0;
        for (int c = 0; c < k; c++)
            total += (b[c] = sig[c] + w[c] * a[c]);
        for (int c = 0; c < k; c++)
            b[c] = fmax(b[c] / total, SOLVER_FLOOR);
    }
}

static void *solver_sq_start(const solver_problem *p)
{
    solver_sq_state *s = ecl_calloc(1, sizeof *s);
    size_t bytes = (size_t)(p->n * p->k) * sizeof(double);
    s->p = p;
    s->x0 = solver_load_y(p);
    s->x1 = ecl_malloc(bytes);
    s->x2 = ecl_malloc(bytes);
    s->lx0 = ecl_malloc(bytes);
    s->r = ecl_malloc(bytes);
    s->v = ecl_malloc(bytes);
    s->colsum = ecl_malloc((size_t)p->k * sizeof(double));
    s->w = ecl_malloc((size_t)p->k * sizeof(double));
    for (int64_t i = 0; i < p->n * p->k; i++)
        s->lx0[i] = log(fmax(s->x0[i], SOLVER_FLOOR));
    s->f0 = solver_objective_d(p, s->x0);
    return s;
}

/* r = log x1 - log x0 and v = log x2 - 2 log x1 + log x0; returns the
 * SQUAREM step length alpha = -|r| / |v|, at most -1 (-1 gives x2). */
static double solver_sq_differences(solver_sq_state *s)
{
    int64_t count = s->p->n * s->p->k;
    double rr = 0.0, vv = 0.0;
    #pragma omp parallel for reduction(+ : rr, vv) if (count > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < count; i++) {
        double l1 = log(s->x1[i]);
        s->r[i] = l1 - s->lx0[i];
        s->v[i] = log(s->x2[i]) - 2.0 * l1 + s->lx0[i];
        rr += s->r[i] * s->r[i];
        vv += s->v[i] * s->v[i];
    }
    if (!(vv > 0.0))
        return -1.0;
    return fmin(-sqrt(rr / vv), -1.0);
}

/* out = the extrapolated point exp(log x0 - 2 alpha r + alpha^2 v), each
 * row renormalised onto the simplex (shifted by its max before exp). */
static void solver_sq_extrapolate(solver_sq_state *s, double alpha, double *out)
{
    int k = s->p->k;
    #pragma omp parallel for if (s->p->n * k > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < s->p->n; i++) {
        double *o = out + i * k, top = -INFINITY, total = 0.0;
        for (int c = 0; c < k; c++) {
            int64_t j = i * k + c;
            o[c] = s->lx0[j] - 2.0 * alpha * s->r[j] + alpha * alpha * s->v[j];
            top = fmax(top, o[c]);
        }
        for (int c = 0; c < k; c++)
            total += (o[c] = exp(o[c] - top));
        for (int c = 0; c < k; c++)
            o[c] = fmax(o[c] / total, SOLVER_FLOOR);
    }
}

/* One SQUAREM cycle: two EM maps, the extrapolated point, one more EM map
 * from it (the stabilising step); accepted when F does not rise, otherwise
 * alpha moves halfway back to -1, where the point is plain EM's x2 and F
 * cannot rise (EM is majorise-minimise). */
static int solver_sq_step(void *state)
{
    solver_sq_state *s = state;
    solver_em_map_d(s, s->x0, s->x1);
    solver_em_map_d(s, s->x1, s->x2);
    double alpha = solver_sq_differences(s);
    double slack = 1e-12 * (1.0 + fabs(s->f0)), f = 0.0;

    for (;;) {
        if (alpha > -1.01) {
            solver_em_map_d(s, s->x2, s->x0);
            f = solver_objective_d(s->p, s->x0);
            break;
        }
        solver_sq_extrapolate(s, alpha, s->x1);
        solver_em_map_d(s, s->x1, s->x0);
        f = solver_objective_d(s->p, s->x0);
        if (isfinite(f) && f <= s->f0 + slack)
            break;
        alpha = 0.5 * (alpha - 1.0);
    }

    /* x0 now holds the new iterate. */
    s->f0 = f;
    int64_t count = s->p->n * s->p->k;
    #pragma omp parallel for if (count > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < count; i++)
        s->lx0[i] = log(s->x0[i]);
    return 0;
}

static void solver_sq_write_y(void *state)
{
    solver_sq_state *s = state;
    solver_store_y(s->p, s->x0);
}

static void solver_sq_finish(void *state)
{
    solver_sq_state *s = state;
    free(s->x0);
    free(s->x1);
    free(s->x2);
    free(s->lx0);
    free(s->r);
    free(s->v);
    free(s->colsum);
    free(s->w);
    free(s);
}

static const solver_ops solver_sq_ops = {solver_sq_start, solver_sq_step, solver_sq_write_y,
                                         solver_sq_finish};

/* ---- dispatch ------------------------------------------------------------ */

/* Objective, residuals, balance and distance to the reference. */
static void solver_diagnose(const solver_problem *p, const solver_options *opt,
                            solver_result *res)
{
    res->objective = em_objective(p->sigma, p->y, p->n, p->k, p->u, p->lambda);
    res->kkt_weighted = em_kkt_residual(p->sigma, p->y, p->n, p->k, p->u, p->lambda);
    res->kkt_full = solver_kkt_full(p->sigma, p->y, p->n, p->k, p->u, p->lambda);
    res->balance = em_balance_error(p->y, p->n, p->k, p->u);
    if (opt->y_ref) {
        double d = 0.0;
        for (int64_t i = 0; i < p->n * p->k; i++)
            d = fmax(d, fabs((double)p->y[i] - opt->y_ref[i]));
        res->dist_ref = d;
    }
}

solver_result solver_solve(const float *sigma, float *y, int64_t n, int k, const float *u,
                           double lambda, const solver_options *opt)
{
    solver_result res = {.dist_ref = NAN, .kkt_full = NAN, .kkt_weighted = NAN,
                         .objective = NAN, .balance = NAN};
    ECL_CHECK(opt->kind >= 0 && opt->kind < SOLVER_COUNT, "solver_solve: kind %d",
              (int)opt->kind);
    ECL_CHECK(opt->max_iter >= 0 && opt->tol >= 0.0 && opt->check_every >= 0,
              "solver_solve: max_iter = %d, tol = %g, check_every = %d; expected all >= 0",
              opt->max_iter, opt->tol, opt->check_every);
    ECL_CHECK(opt->kind != SOLVER_NEWTON_DENSE || n * k <= SOLVER_DENSE_MAX_NK,
              "solver_solve: newton_dense on N*K = %lld > %d would need %.1f GB for its "
              "Hessian; use em.solver = newton (same steps, structured)", (long long)(n * k),
              SOLVER_DENSE_MAX_NK, 16e-9 * (double)(n * k) * (double)(n * k));
    double t0 = ecl_now_s();

    /* em.c checks every input (with messages a person can act on) and
     * initialises y: floored, rows renormalised. Plain EM keeps going from
     * that state; the other solvers start from the y it leaves. */
    em_state *em = em_state_create(sigma, y, n, k, u, lambda, opt->init_from_sigma);
    solver_problem p = {sigma, y, n, k, u, lambda, NULL};
    if (k > 1) {
        static const solver_ops *const table[SOLVER_COUNT] = {
            NULL, &solver_sq_ops, &solver_dual_ops, &solver_newton_ops,
            &solver_newton_dense_ops};
        int every = opt->check_every ? opt->check_every
                                     : solver_default_check_every[opt->kind];
        if (opt->kind == SOLVER_EM) {
            p.em = em;
            solver_em_run(&p, opt, every, &res);
        } else {
            solver_run_loop(&p, table[opt->kind], opt, every, &res);
        }

        /* The dual stalls at a kink of D (ties between empty clusters, see
         * solvers_newton.c): primal Newton finishes from its y. */
        if (opt->kind == SOLVER_DUAL && !res.converged && res.iters < opt->max_iter)
            solver_run_loop(&p, &solver_newton_ops, opt, 1, &res);
    } else {
        res.converged = 1;
    }
    em_state_free(em);
    res.seconds = ecl_now_s() - t0;

    if (opt->diagnostics)
        solver_diagnose(&p, opt, &res);
    return res;
}
