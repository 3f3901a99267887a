/*
 * solvers_newton.c - the second-order pseudo-label solvers of solvers.h:
 * Newton on the K-dimensional dual, and Newton on the primal y with the
 * Hessian either structured (diagonal + rank K, K x K Schur complement) or
 * dense (the naive O((NK)^3) baseline of the paper's Table I).
 *
 * Shape legend: N rows, K clusters. g_ik = N dF/dy_ik = -sigma_ik / y_ik - w_k
 * with w_k = lambda u_k / ybar_k.
 *
 * The dual. Splitting ybar off as z with multipliers beta_k for z = ybar,
 *     D(beta) = sum_k lambda u_k (1 - log(lambda u_k / beta_k))
 *               + (1/N) sum_i min_{y_i in simplex} (-sum_k sigma_ik log y_ik - beta . y_i)
 * is concave and its maximiser has beta_k = lambda u_k / ybar_k = w_k. Each
 * row's minimiser is y_ik = sigma_ik / (a_i - beta_k), a_i the root of
 * sum_k sigma_ik / (a_i - beta_k) = 1 above every beta_k with sigma_ik > 0.
 * When a column with sigma_ik = 0 has beta_m above that root the row is
 * "pinned": a_i = beta_m and the rest of the row's mass goes to column m
 * (the only way an empty cluster gets mass). dD/dbeta_k = lambda u_k / beta_k
 * - ybar_k; -Hessian = diag(lambda u_k / beta_k^2) + (1/N) sum_i J_i with
 * J_i = diag(q_i) - q_i q_i^T / sum(q_i), q_ik = sigma_ik / (a_i - beta_k)^2
 * (pinned rows: the limit q_im -> infinity). D is smooth except where two
 * empty columns tie for a row's largest beta (the row may then split its
 * leftover mass between them in any proportion): on one-hot sigma the
 * optimum sits on such a kink and Newton crawls; the dual then reports a
 * stall and solver_solve finishes with primal Newton from its y.
 *
 * The primal. Hessian of N F: diag(sigma_ik / y_ik^2) plus, per column,
 * c_k 1 1^T with c_k = lambda u_k / (N ybar_k^2). Entries that must reach
 * zero (sigma_ik = 0) have no curvature, so the diagonal adds
 * max(0, g_ik - mu_i) / y_ik (the bound multiplier over y, as in a
 * primal-dual interior point method; it vanishes where the optimum is
 * interior), floored. Eliminating the row constraints and the columns'
 * rank-one terms leaves a K x K system of the same form as the dual's.
 * Steps are damped to stay strictly inside the simplex (fraction 0.99 of
 * the way to the boundary) and backtracked until F falls (Armijo).
 *
 * The K x K system is assembled and factored when K <= SOLVER_KK_DENSE_MAX
 * (O(NK^2 + K^3)); above, it is solved by preconditioned conjugate
 * gradients with O(NK) products.
 *
 * Not here: EM and SQUAREM (solvers.c), CUDA twins, the all-reduce.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ecl/core.h"
#include "solvers_impl.h"

/* K x K systems up to this size are assembled; above, conjugate gradients
 * (measured: assembly costs about NK^2 / 2 multiply-adds, a CG product 4NK). */
#define SOLVER_KK_DENSE_MAX 128
/* Armijo's sufficient-decrease fraction and the most halvings of a step. */
#define SOLVER_ARMIJO 1e-4
#define SOLVER_MAX_HALVINGS 60
/* Fraction of the way to the boundary a primal step may go. */
#define SOLVER_TO_BOUNDARY 0.99
/* Smallest entry of the primal Newton solvers' starting point. */
#define SOLVER_NEWTON_START_MIN 1e-6

#if defined(ECL_HAVE_LAPACK) && ECL_HAVE_LAPACK
/* LAPACK's Cholesky solve (from libopenblas or liblapack). */
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda,
            double *b, const int *ldb, int *info);
#endif

/* ---- dense Cholesky ------------------------------------------------------ */

/* In-place Cholesky of a symmetric positive definite a [n, n] (row major,
 * lower triangle used) and the solve of L L^T x = b in b. 0, or -1 when a
 * pivot is not positive. The inner loops are dot products over contiguous
 * row prefixes, which gcc vectorises. */
static int solver_cholesky_solve_own(double *a, int64_t n, double *b)
{
    for (int64_t j = 0; j < n; j++) {
        double *rj = a + j * n;
        double d = rj[j];
        for (int64_t p = 0; p < j; p++)
            d -= rj[p] * rj[p];
        if (!(d > 0.0))
            return -1;
        d = sqrt(d);
        rj[j] = d;

        /* Column j below the diagonal. */
        for (int64_t i = j + 1; i < n; i++) {
            double *ri = a + i * n, s = ri[j];
            for (int64_t p = 0; p < j; p++)
                s -= ri[p] * rj[p];
            ri[j] = s / d;
        }
    }

    /* Forward then backward substitution. */
    for (int64_t i = 0; i < n; i++) {
        double s = b[i];
        for (int64_t p = 0; p < i; p++)
            s -= a[i * n + p] * b[p];
        b[i] = s / a[i * n + i];
    }
    for (int64_t i = n - 1; i >= 0; i--) {
        double s = b[i];
        for (int64_t p = i + 1; p < n; p++)
            s -= a[p * n + i] * b[p];
        b[i] = s / a[i * n + i];
    }
    return 0;
}

/* Solves a x = b (a symmetric positive definite, destroyed) into b. */
static int solver_cholesky_solve(double *a, int64_t n, double *b)
{
#if defined(ECL_HAVE_LAPACK) && ECL_HAVE_LAPACK
    if (n > 64) {
        int ni = (int)n, one = 1, info = 0;
        dposv_("L", &ni, &one, a, &ni, b, &ni, &info);
        return info == 0 ? 0 : -1;
    }
#endif
    return solver_cholesky_solve_own(a, n, b);
}

/* ---- the K x K system ---------------------------------------------------- */

/* diag(dg) + alpha sum_i J_i, J_i from row weights q_i as in the header;
 * inactive columns are fixed (their unknown is 0). */
typedef struct {
    int64_t n;
    int k;
    double alpha;
    const double *dg;        /* [K] > 0 on active columns */
    const unsigned char *on; /* [K] 1 = unknown, 0 = fixed at 0 */
    const double *q;         /* [N, K] */
    const double *qsum;      /* [N] sum of the row's q */
    const int *pin;          /* [N] column with infinite q, -1 none; NULL = none */
} solver_kk;

/* out += alpha J_i v for one row. */
static void solver_kk_row_apply(const solver_kk *s, int64_t i, const double *v, double *out)
{
    const double *q = s->q + i * s->k;
    int m = s->pin ? s->pin[i] : -1;
    if (m >= 0) {
        double acc = 0.0;
        for (int c = 0; c < s->k; c++) {
            if (c == m)
                continue;
            double t = s->alpha * q[c] * (v[c] - v[m]);
            out[c] += t;
            acc += t;
        }
        out[m] -= acc;
        return;
    }
    if (!(s->qsum[i] > 0.0))
        return;
    double qv = 0.0;
    for (int c = 0; c < s->k; c++)
        qv += q[c] * v[c];
    qv /= s->qsum[i];
    for (int c = 0; c < s->k; c++)
        out[c] += s->alpha * q[c] * (v[c] - qv);
}

/* out = A v with inactive components passed through (identity there). */
static void solver_kk_apply(const solver_kk *s, const double *v, double *out)
{
    for (int c = 0; c < s->k; c++)
        out[c] = s->on[c] ? s->dg[c] * v[c] : 0.0;
    for (int64_t i = 0; i < s->n; i++)
        solver_kk_row_apply(s, i, v, out);
    for (int c = 0; c < s->k; c++)
        if (!s->on[c])
            out[c] = v[c];
}

/* Adds alpha J_i to the assembled a [K, K]. */
static void solver_kk_row_assemble(const solver_kk *s, int64_t i, double *a)
{
    int k = s->k, m = s->pin ? s->pin[i] : -1;
    const double *q = s->q + i * k;
    if (m >= 0) {
        for (int c = 0; c < k; c++) {
            if (c == m)
                continue;
            double t = s->alpha * q[c];
            a[c * k + c] += t;
            a[c * k + m] -= t;
            a[m * k + c] -= t;
            a[m * k + m] += t;
        }
        return;
    }
    if (!(s->qsum[i] > 0.0))
        return;
    double inv = s->alpha / s->qsum[i];
    for (int c = 0; c < k; c++) {
        a[c * k + c] += s->alpha * q[c];
        double qc = q[c] * inv;
        for (int l = 0; l <= c; l++)
            a[c * k + l] -= qc * q[l];
    }
}

/* Assembles A (lower triangle) and factors it. 0 or -1. */
static int solver_kk_solve_dense(const solver_kk *s, const double *b, double *x)
{
    int k = s->k;
    double *a = ecl_calloc((size_t)k * (size_t)k, sizeof *a);
    for (int64_t i = 0; i < s->n; i++)
        solver_kk_row_assemble(s, i, a);

    /* Inactive unknowns: identity rows, so x_c = b_c = 0 there. */
    for (int c = 0; c < k; c++) {
        a[c * k + c] += s->on[c] ? s->dg[c] : 0.0;
        x[c] = s->on[c] ? b[c] : 0.0;
        for (int l = 0; l < k; l++)
            if (!s->on[c] || !s->on[l])
                a[c * k + l] = a[l * k + c] = (c == l);
    }
    for (int c = 0; c < k; c++)
        for (int l = c + 1; l < k; l++)
            a[c * k + l] = a[l * k + c];
    int rc = solver_cholesky_solve_own(a, k, x);
    free(a);
    return rc;
}

/* Jacobi-preconditioned conjugate gradients, to a relative residual of
 * 1e-12 or 4K + 50 products. */
static int solver_kk_solve_cg(const solver_kk *s, const double *b, double *x)
{
    int k = s->k;
    double *r = ecl_malloc((size_t)k * 4 * sizeof *r);
    double *z = r + k, *p = z + k, *ap = p + k;

    /* The diagonal of A, for the preconditioner. */
    double *diag = ecl_malloc((size_t)k * sizeof *diag);
    for (int c = 0; c < k; c++)
        diag[c] = s->on[c] ? s->dg[c] : 1.0;
    for (int64_t i = 0; i < s->n; i++) {
        const double *q = s->q + i * k;
        int m = s->pin ? s->pin[i] : -1;
        for (int c = 0; c < k; c++) {
            if (!s->on[c])
                continue;
            if (m >= 0)
                diag[c] += c == m ? s->alpha * (s->qsum[i] - q[m]) : s->alpha * q[c];
            else if (s->qsum[i] > 0.0)
                diag[c] += s->alpha * q[c] * (1.0 - q[c] / s->qsum[i]);
        }
    }

    /* Standard PCG from x = 0. */
    double bb = 0.0, rz = 0.0;
    for (int c = 0; c < k; c++) {
        x[c] = 0.0;
        r[c] = s->on[c] ? b[c] : 0.0;
        bb += r[c] * r[c];
        p[c] = z[c] = r[c] / diag[c];
        rz += r[c] * z[c];
    }
    int it = 0;
    for (; it < 4 * k + 50; it++) {
        double rr = 0.0;
        for (int c = 0; c < k; c++)
            rr += r[c] * r[c];
        if (rr <= 1e-24 * bb || rr == 0.0)
            break;
        solver_kk_apply(s, p, ap);
        double pap = 0.0;
        for (int c = 0; c < k; c++)
            pap += p[c] * ap[c];
        if (!(pap > 0.0))
            break;
        double step = rz / pap, rz_new = 0.0;
        for (int c = 0; c < k; c++) {
            x[c] += step * p[c];
            r[c] -= step * ap[c];
            z[c] = r[c] / diag[c];
            rz_new += r[c] * z[c];
        }
        for (int c = 0; c < k; c++)
            p[c] = z[c] + rz_new / rz * p[c];
        rz = rz_new;
    }
    free(r);
    free(diag);
    return 0;
}

/* x = A^{-1} b, by assembly or by CG (see SOLVER_KK_DENSE_MAX). */
static int solver_kk_solve(const solver_kk *s, const double *b, double *x)
{
    if (s->k <= SOLVER_KK_DENSE_MAX)
        return solver_kk_solve_dense(s, b, x);
    return solver_kk_solve_cg(s, b, x);
}

/* ---- the dual: rows ------------------------------------------------------ */

/* Row i's minimiser at beta: y, q, sum(q) and the pinned column (-1 none);
 * returns the row's dual term -sum sigma log y - beta . y. */
static double solver_dual_row(const float *sig, const double *beta, int k, double *y,
                              double *q, double *qsum, int *pin)
{
    /* The largest beta over all columns, and the lower bound of the root. */
    int m = 0;
    double a = -INFINITY;
    for (int c = 0; c < k; c++) {
        if (beta[c] > beta[m])
            m = c;
        if (sig[c] > 0.0f)
            a = fmax(a, beta[c] + sig[c]);
    }

    /* Pinned when an empty column's beta_m leaves sum sigma/(beta_m - beta) <= 1. */
    *pin = -1;
    if (sig[m] == 0.0f && beta[m] >= a) {
        double phi = 0.0;
        for (int c = 0; c < k; c++)
            if (sig[c] > 0.0f)
                phi += sig[c] / (beta[m] - beta[c]);
        if (phi <= 1.0) {
            *pin = m;
            a = beta[m];
        } else {
            a = fmax(a, beta[m]);
        }
    }

    /* Newton on 1/phi(a) - 1, concave increasing: from the left it never
     * overshoots the root. */
    for (int it = 0; *pin < 0 && it < 100; it++) {
        double phi = 0.0, dphi = 0.0;
        for (int c = 0; c < k; c++)
            if (sig[c] > 0.0f) {
                double t = 1.0 / (a - beta[c]);
                phi += sig[c] * t;
                dphi += sig[c] * t * t;
            }
        double step = phi * (phi - 1.0) / dphi;
        a += step;
        if (!(step > 4e-16 * fabs(a)))
            break;
    }

    /* The row, renormalised; its curvature weights and dual term. */
    double total = 0.0;
    for (int c = 0; c < k; c++) {
        y[c] = sig[c] > 0.0f && c != *pin ? sig[c] / (a - beta[c]) : 0.0;
        total += y[c];
    }
    if (*pin >= 0)
        y[*pin] = fmax(1.0 - total, 0.0);
    else
        for (int c = 0; c < k; c++)
            y[c] /= total;
    double h = 0.0;
    *qsum = 0.0;
    for (int c = 0; c < k; c++) {
        q[c] = sig[c] > 0.0f && c != *pin ? y[c] * y[c] / sig[c] : 0.0;
        *qsum += q[c];
        h -= beta[c] * y[c];
        if (sig[c] > 0.0f)
            h -= sig[c] * log(y[c]);
    }
    return h;
}

typedef struct {
    double *y, *q, *qsum; /* [N, K], [N, K], [N] */
    double *h;            /* [N] each row's dual term */
    int *pin;             /* [N] */
    double value;         /* D(beta) */
} solver_dual_eval;

typedef struct {
    const solver_problem *p;
    double *beta, *beta_try, *grad, *dir, *dg, *ybar; /* [K] */
    unsigned char *on;                                 /* [K] */
    solver_dual_eval cur, trial;
    int stepped;           /* 0 until the first step: y still holds the start */
    int short_steps;       /* accepted steps shorter than 1e-3 of Newton's */
} solver_dual_state;

/* D(beta) and every row's minimiser into ev. */
static void solver_dual_evaluate(const solver_dual_state *s, const double *beta,
                                 solver_dual_eval *ev)
{
    const solver_problem *p = s->p;
    int k = p->k;

    /* A row costs a root search of ~10 passes over K, so rows go to the
     * threads from far fewer elements than the other loops; the row terms
     * are summed afterwards in row order, so the bits do not depend on
     * the thread count. */
    #pragma omp parallel for schedule(static) if (p->n * k > SOLVER_PARALLEL_MIN_ELEMS / 16)
    for (int64_t i = 0; i < p->n; i++)
        ev->h[i] = solver_dual_row(p->sigma + i * k, beta, k, ev->y + i * k, ev->q + i * k,
                                   ev->qsum + i, ev->pin + i);
    double sum_h = 0.0;
    for (int64_t i = 0; i < p->n; i++)
        sum_h += ev->h[i];

    double v = sum_h / (double)p->n;
    for (int c = 0; c < k; c++)
        if (s->on[c]) {
            double lu = p->lambda * solver_target(p->u, k, c);
            v += lu * (1.0 - log(lu / beta[c]));
        }
    ev->value = v;
}

static void solver_dual_alloc_eval(solver_dual_eval *ev, int64_t n, int k)
{
    ev->y = ecl_malloc((size_t)(n * k) * sizeof *ev->y);
    ev->q = ecl_malloc((size_t)(n * k) * sizeof *ev->q);
    ev->qsum = ecl_malloc((size_t)n * sizeof *ev->qsum);
    ev->pin = ecl_malloc((size_t)n * sizeof *ev->pin);
    ev->h = ecl_malloc((size_t)n * sizeof *ev->h);
}

/* beta = lambda u / ybar0 with ybar0 = (ybar + lambda u) / (1 + lambda),
 * ybar the starting y's: summing the KKT conditions over rows predicts the
 * optimum's ybar to first order from sigma's, and it keeps beta finite
 * where a cluster starts empty (ybar at the floor). */
static void *solver_dual_start(const solver_problem *p)
{
    int k = p->k;
    solver_dual_state *s = ecl_calloc(1, sizeof *s);
    s->p = p;
    double *kbuf = ecl_malloc((size_t)k * 6 * sizeof *kbuf);
    s->beta = kbuf;
    s->beta_try = kbuf + k;
    s->grad = kbuf + 2 * k;
    s->dir = kbuf + 3 * k;
    s->dg = kbuf + 4 * k;
    s->ybar = kbuf + 5 * k;
    s->on = ecl_malloc((size_t)k);
    solver_dual_alloc_eval(&s->cur, p->n, k);
    solver_dual_alloc_eval(&s->trial, p->n, k);

    for (int c = 0; c < k; c++)
        s->ybar[c] = 0.0;
    for (int64_t i = 0; i < p->n * k; i++)
        s->ybar[i % k] += p->y[i];
    for (int c = 0; c < k; c++) {
        double lu = p->lambda * solver_target(p->u, k, c);
        s->on[c] = lu > 0.0;
        s->beta[c] = lu * (1.0 + p->lambda) / (s->ybar[c] / (double)p->n + lu);
    }
    solver_dual_evaluate(s, s->beta, &s->cur);
    return s;
}

/* One Newton ascent step on D with a positivity cap and Armijo backtracking. */
static int solver_dual_step(void *state)
{
    solver_dual_state *s = state;
    const solver_problem *p = s->p;
    int k = p->k;

    /* Gradient lambda u / beta - ybar and the Newton direction. */
    solver_colsum_d(s->cur.y, p->n, k, s->ybar);
    double slope = 0.0, cap = 1.0;
    for (int c = 0; c < k; c++) {
        double lu = p->lambda * solver_target(p->u, k, c);
        s->grad[c] = s->on[c] ? lu / s->beta[c] - s->ybar[c] / (double)p->n : 0.0;
        s->dg[c] = s->on[c] ? lu / (s->beta[c] * s->beta[c]) : 1.0;
    }
    solver_kk sys = {p->n, k, 1.0 / (double)p->n, s->dg, s->on, s->cur.q, s->cur.qsum,
                     s->cur.pin};
    if (solver_kk_solve(&sys, s->grad, s->dir) != 0)
        return 1;
    for (int c = 0; c < k; c++) {
        slope += s->grad[c] * s->dir[c];
        if (s->dir[c] < 0.0)
            cap = fmin(cap, 0.9 * s->beta[c] / -s->dir[c]);
    }
    if (!(slope > 0.0))
        return 1;

    /* Backtrack until D rises enough (slack: D's rounding). */
    double slack = 1e-14 * (1.0 + fabs(s->cur.value));
    for (int h = 0; h < SOLVER_MAX_HALVINGS; h++, cap *= 0.5) {
        for (int c = 0; c < k; c++)
            s->beta_try[c] = s->beta[c] + cap * s->dir[c];
        solver_dual_evaluate(s, s->beta_try, &s->trial);
        if (s->trial.value >= s->cur.value + SOLVER_ARMIJO * cap * slope - slack) {
            solver_dual_eval t = s->cur;
            s->cur = s->trial;
            s->trial = t;
            memcpy(s->beta, s->beta_try, (size_t)k * sizeof *s->beta);
            s->stepped = 1;

            /* Short steps again and again: beta sits at a tie between two
             * empty columns where D has a kink (see solver_solve). */
            s->short_steps = cap < 1e-3 ? s->short_steps + 1 : 0;
            return s->short_steps >= 5;
        }
    }
    return 1;
}

static void solver_dual_write_y(void *state)
{
    solver_dual_state *s = state;
    if (s->stepped)
        solver_store_y(s->p, s->cur.y);
}

static void solver_dual_free_eval(solver_dual_eval *ev)
{
    free(ev->y);
    free(ev->q);
    free(ev->qsum);
    free(ev->pin);
    free(ev->h);
}

static void solver_dual_finish(void *state)
{
    solver_dual_state *s = state;
    solver_dual_free_eval(&s->cur);
    solver_dual_free_eval(&s->trial);
    free(s->beta);
    free(s->on);
    free(s);
}

const solver_ops solver_dual_ops = {solver_dual_start, solver_dual_step, solver_dual_write_y,
                                    solver_dual_finish};

/* ---- the primal Newton solvers ------------------------------------------- */

typedef struct {
    const solver_problem *p;
    int dense;                  /* 1: form and factor the (NK x NK) Hessian */
    double *y, *g, *e, *d, *y_try; /* [N, K] */
    double *esum;               /* [N] */
    double *c, *w, *dg, *rhs, *t, *colsum; /* [K] */
    unsigned char *on;          /* [K] */
    double f;                   /* F(y) */
} solver_newton_state;

/* Gradient g, weights e = 1 / (modified Hessian diagonal), their row sums,
 * and the column terms c_k (0 = inactive column). */
static void solver_newton_prepare(solver_newton_state *s)
{
    const solver_problem *p = s->p;
    int k = p->k;
    int64_t n = p->n;
    solver_colsum_d(s->y, n, k, s->colsum);
    for (int c = 0; c < k; c++) {
        double lu = p->lambda * solver_target(p->u, k, c);
        double ybar = fmax(s->colsum[c] / (double)n, SOLVER_FLOOR);
        s->w[c] = lu / ybar;
        s->c[c] = lu / ((double)n * ybar * ybar);
        s->on[c] = s->c[c] > 0.0;
        s->dg[c] = s->on[c] ? 1.0 / s->c[c] : 1.0;
    }

    /* The floor on the diagonal, 1e-10 (1 + lambda) / y, keeps the system
     * regular where an entry with sigma = 0 sits at its optimum > 0. */
    double floor_nu = 1e-10 * (1.0 + p->lambda);
    #pragma omp parallel for if (n * k > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < n; i++) {
        const float *sig = p->sigma + i * k;
        const double *y = s->y + i * k;
        double *g = s->g + i * k, *e = s->e + i * k, mu = 0.0, es = 0.0;
        for (int c = 0; c < k; c++) {
            g[c] = -sig[c] / y[c] - s->w[c];
            mu += y[c] * g[c];
        }
        for (int c = 0; c < k; c++) {
            double nu = fmax(sig[c] > 0.0f ? g[c] - mu : fabs(g[c] - mu), floor_nu);
            double diag = sig[c] / (y[c] * y[c]) + nu / y[c];
            es += (e[c] = 1.0 / diag);
        }
        s->esum[i] = es;
    }
}

/* The structured Newton direction d (see the file header): solve the K x K
 * system for t, then every row in closed form. */
static int solver_newton_direction(solver_newton_state *s)
{
    const solver_problem *p = s->p;
    int k = p->k;
    int64_t n = p->n;

    /* rhs_k = -sum_i e_ik g_ik + sum_i e_ik (e_i . g_i) / E_i. */
    for (int c = 0; c < k; c++)
        s->rhs[c] = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double *e = s->e + i * k, *g = s->g + i * k;
        double eg = 0.0;
        for (int c = 0; c < k; c++)
            eg += e[c] * g[c];
        eg /= s->esum[i];
        for (int c = 0; c < k; c++)
            s->rhs[c] += e[c] * (eg - g[c]);
    }
    solver_kk sys = {n, k, 1.0, s->dg, s->on, s->e, s->esum, NULL};
    if (solver_kk_solve(&sys, s->rhs, s->t) != 0)
        return -1;

    /* d_ik = -e_ik (g_ik + t_k) + e_ik sum_l e_il (g_il + t_l) / E_i. */
    #pragma omp parallel for if (n * k > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < n; i++) {
        const double *e = s->e + i * k, *g = s->g + i * k;
        double *d = s->d + i * k, eta = 0.0;
        for (int c = 0; c < k; c++)
            eta += e[c] * (g[c] + s->t[c]);
        eta /= s->esum[i];
        for (int c = 0; c < k; c++)
            d[c] = e[c] * (eta - g[c] - s->t[c]);
    }
    return 0;
}

/* The same direction the naive way: the dense Hessian H [NK, NK] of the
 * modified N F, one variable per row eliminated (the row's largest entry
 * = 1 - sum of the others), the reduced system Z^T H Z z = -Z^T g factored
 * by Cholesky. */
static int solver_newton_direction_dense(solver_newton_state *s)
{
    const solver_problem *p = s->p;
    int k = p->k;
    int64_t n = p->n, nk = n * k, m = n * (k - 1);
    double *h = ecl_calloc((size_t)(nk * nk), sizeof *h);      /* [NK, NK] */
    double *red = ecl_malloc((size_t)(m * m) * sizeof *red);   /* [M, M] */
    double *z = ecl_malloc((size_t)m * sizeof *z);             /* [M] */

    /* H = diag(1 / e) + c_k on every pair of entries of column k. */
    for (int64_t a = 0; a < nk; a++)
        for (int64_t b = a % k; b < nk; b += k)
            h[a * nk + b] = s->c[a % k];
    for (int64_t a = 0; a < nk; a++)
        h[a * nk + a] += 1.0 / s->e[a];

    /* Each row eliminates its largest entry (pivot), which is never near
     * the boundary: full[r] is the entry reduced unknown r stands for,
     * piv[r] the pivot of its row; r moves mass from piv[r] to full[r]. */
    int64_t *full = ecl_malloc((size_t)m * 2 * sizeof *full), *piv = full + m;
    for (int64_t i = 0, r = 0; i < n; i++) {
        int top = 0;
        for (int c = 1; c < k; c++)
            top = s->y[i * k + c] > s->y[i * k + top] ? c : top;
        for (int c = 0; c < k; c++)
            if (c != top) {
                full[r] = i * k + c;
                piv[r++] = i * k + top;
            }
    }

    /* Reduced Hessian Z^T H Z and gradient Z^T g. */
    #pragma omp parallel for if (m > 256)
    for (int64_t ra = 0; ra < m; ra++) {
        int64_t a = full[ra], al = piv[ra];
        for (int64_t rb = 0; rb < m; rb++) {
            int64_t b = full[rb], bl = piv[rb];
            red[ra * m + rb] = h[a * nk + b] - h[a * nk + bl] - h[al * nk + b]
                               + h[al * nk + bl];
        }
        z[ra] = -(s->g[a] - s->g[al]);
    }
    free(h);

    /* Symmetric diagonal scaling before the factorisation: diagonals span
     * 1 to 1e30 when entries with sigma = 0 sit near the floor. */
    double *scale = ecl_malloc((size_t)m * sizeof *scale);
    for (int64_t a = 0; a < m; a++)
        scale[a] = 1.0 / sqrt(red[a * m + a]);
    for (int64_t a = 0; a < m; a++) {
        for (int64_t b = 0; b < m; b++)
            red[a * m + b] *= scale[a] * scale[b];
        z[a] *= scale[a];
    }
    int rc = solver_cholesky_solve(red, m, z);
    for (int64_t a = 0; a < m; a++)
        z[a] *= scale[a];
    free(scale);
    free(red);

    /* Back to the full direction: each pivot gives what the row's others take. */
    for (int64_t r = 0; rc == 0 && r < m; r++)
        s->d[piv[r]] = 0.0;
    for (int64_t r = 0; rc == 0 && r < m; r++) {
        s->d[full[r]] = z[r];
        s->d[piv[r]] -= z[r];
    }
    free(full);
    free(z);
    return rc;
}

static void *solver_newton_start_kind(const solver_problem *p, int dense)
{
    int k = p->k;
    size_t nk_bytes = (size_t)(p->n * k) * sizeof(double);
    solver_newton_state *s = ecl_calloc(1, sizeof *s);
    s->p = p;
    s->dense = dense;
    s->y = solver_load_y(p);
    s->g = ecl_malloc(nk_bytes);
    s->e = ecl_malloc(nk_bytes);
    s->d = ecl_malloc(nk_bytes);
    s->y_try = ecl_malloc(nk_bytes);
    s->esum = ecl_malloc((size_t)p->n * sizeof(double));
    double *kbuf = ecl_malloc((size_t)k * 6 * sizeof *kbuf);
    s->c = kbuf;
    s->w = kbuf + k;
    s->dg = kbuf + 2 * k;
    s->rhs = kbuf + 3 * k;
    s->t = kbuf + 4 * k;
    s->colsum = kbuf + 5 * k;
    s->on = ecl_malloc((size_t)k);

    /* Interior start: entries with sigma = 0 at the float floor would carry
     * curvature nu / y ~ 1e30 and could never grow where the optimum needs
     * them (a pinned row); lifted to SOLVER_NEWTON_START_MIN they can, and
     * those that must vanish do so at the boundary fraction per step. */
    for (int64_t i = 0; i < p->n; i++) {
        double *row = s->y + i * k, total = 0.0;
        for (int c = 0; c < k; c++)
            if (p->sigma[i * k + c] == 0.0f)
                row[c] = fmax(row[c], SOLVER_NEWTON_START_MIN);
        for (int c = 0; c < k; c++)
            total += row[c];
        for (int c = 0; c < k; c++)
            row[c] /= total;
    }
    s->f = solver_objective_d(p, s->y);
    return s;
}

static void *solver_newton_start(const solver_problem *p)
{
    return solver_newton_start_kind(p, 0);
}

static void *solver_newton_dense_start(const solver_problem *p)
{
    return solver_newton_start_kind(p, 1);
}

/* y_try = y + step d, rows renormalised (the direction keeps row sums
 * only up to rounding). */
static void solver_newton_trial(solver_newton_state *s, double step)
{
    int k = s->p->k;
    #pragma omp parallel for if (s->p->n * k > SOLVER_PARALLEL_MIN_ELEMS)
    for (int64_t i = 0; i < s->p->n; i++) {
        double *yt = s->y_try + i * k, total = 0.0;
        for (int c = 0; c < k; c++)
            total += (yt[c] = fmax(s->y[i * k + c] + step * s->d[i * k + c], SOLVER_FLOOR));
        for (int c = 0; c < k; c++)
            yt[c] /= total;
    }
}

/* One damped Newton step: direction, fraction-to-boundary cap, Armijo. */
static int solver_newton_step(void *state)
{
    solver_newton_state *s = state;
    const solver_problem *p = s->p;
    int64_t count = p->n * p->k;
    solver_newton_prepare(s);
    int rc = s->dense ? solver_newton_direction_dense(s) : solver_newton_direction(s);
    if (rc != 0)
        return 1;

    /* Slope of F along d, and the largest step that stays inside. */
    double slope = 0.0, cap = 1.0;
    for (int64_t i = 0; i < count; i++) {
        slope += s->g[i] * s->d[i];
        if (s->d[i] < 0.0)
            cap = fmin(cap, SOLVER_TO_BOUNDARY * s->y[i] / -s->d[i]);
    }
    slope /= (double)p->n;
    if (!(slope < 0.0))
        return 1;

    /* Backtrack until F falls enough (slack: F's rounding). */
    double slack = 1e-14 * (1.0 + fabs(s->f));
    for (int h = 0; h < SOLVER_MAX_HALVINGS; h++, cap *= 0.5) {
        solver_newton_trial(s, cap);
        double f = solver_objective_d(p, s->y_try);
        if (f <= s->f + SOLVER_ARMIJO * cap * slope + slack) {
            double *t = s->y;
            s->y = s->y_try;
            s->y_try = t;
            s->f = f;
            return 0;
        }
    }
    return 1;
}

static void solver_newton_write_y(void *state)
{
    solver_newton_state *s = state;
    solver_store_y(s->p, s->y);
}

static void solver_newton_finish(void *state)
{
    solver_newton_state *s = state;
    free(s->y);
    free(s->g);
    free(s->e);
    free(s->d);
    free(s->y_try);
    free(s->esum);
    free(s->c);
    free(s->on);
    free(s);
}

const solver_ops solver_newton_ops = {solver_newton_start, solver_newton_step,
                                      solver_newton_write_y, solver_newton_finish};
const solver_ops solver_newton_dense_ops = {solver_newton_dense_start, solver_newton_step,
                                            solver_newton_write_y, solver_newton_finish};
