/*
 * em.c - the EM pseudo-label solver on the CPU (paper eqs. 45-46 in the N-free
 * form of DESIGN.md section 1) and the diagnostics that judge its answer: the
 * objective F, the y-weighted KKT residual and the balance error.
 *
 * Shape legend: N rows (batch or data set), K clusters.
 *
 * Determinism: rows are cut into blocks of a fixed size whatever the thread
 * count; each block sums its own columns and the blocks are combined in
 * order, so one thread and many give identical bits.
 *
 * em_state exposes the iteration so a caller can stop on its own rule
 * (solvers.c stops on the full KKT conditions); em_solve_cpu is the
 * one-call form with the max |dy| stop.
 *
 * Not here: the other solvers (solvers.c), the CUDA twin, and the all-reduce of the
 * column sums across ranks for distributed training.
 */
#include "ecl/em.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ecl/core.h"

/* Floor for y at the start (so no cluster starts empty, which EM could
 * never leave), after every update (an entry that decayed must be able to
 * grow again: a float denormal times a factor near 1 rounds back to itself,
 * and denormal arithmetic is slow), and for ybar and y in logs and divisions.
 * It is above FLT_MIN, so y never goes denormal. */
#define EM_FLOOR 1e-30
/* How far a row of sigma (or u) may sum away from 1: float softmax rows sum
 * to 1 within ~1e-6, so 1e-3 only catches real mistakes. */
#define EM_SUM_TOL 1e-3
/* Rows per block of the deterministic column sums. */
#define EM_BLOCK_ROWS 256
/* Below this many elements one thread is faster than waking a team. */
#define EM_PARALLEL_MIN_ELEMS ((int64_t)1 << 16)

struct em_state {
    const float *sigma;     /* [N, K] */
    float *y;               /* [N, K] */
    int64_t n;
    int k;
    const float *u;         /* [K] target, NULL = uniform */
    double lambda;
    int64_t n_blocks;
    int parallel;           /* 1 when N*K is large enough for OpenMP */
    double *w;              /* [K] lambda u_k / ybar_k */
    double *colsum;         /* [K] sum_i y_ik, combined in block order */
    double *partial;        /* [n_blocks, K] per-block column sums */
    double *block_change;   /* [n_blocks] max |dy| within each block */
};
typedef struct em_state em_work;

/* u_k, or 1/K when u is NULL. */
static inline double em_target(const float *u, int k, int c)
{
    return u ? (double)u[c] : 1.0 / k;
}

/* Shapes and lambda: errors of the caller, so they stop the process. */
static void em_check_args(const char *fn, int64_t n, int k, double lambda)
{
    ECL_CHECK(n >= 1, "%s: N = %lld rows, expected N >= 1", fn, (long long)n);
    ECL_CHECK(k >= 1, "%s: K = %d clusters, expected K >= 1", fn, k);
    ECL_CHECK(isfinite(lambda) && lambda >= 0.0,
              "%s: lambda = %g, expected a finite value >= 0 (the fairness weight)",
              fn, lambda);
}

/* Every row of a [rows, K] matrix must be finite, >= 0, summing to 1;
 * hint says where such a matrix comes from. */
static void em_check_rows(const char *fn, const char *name, const char *hint,
                          const float *m, int64_t rows, int k)
{
    for (int64_t i = 0; i < rows; i++) {
        const float *row = m + i * k;
        double sum = 0.0;
        for (int c = 0; c < k; c++) {
            ECL_CHECK(isfinite(row[c]) && row[c] >= 0.0f,
                      "%s: %s[%lld, %d] = %g, expected a finite probability >= 0 (%s)",
                      fn, name, (long long)i, c, (double)row[c], hint);
            sum += row[c];
        }
        ECL_CHECK(fabs(sum - 1.0) <= EM_SUM_TOL,
                  "%s: row %lld of %s sums to %.9g, expected 1 within %g (%s)",
                  fn, (long long)i, name, sum, EM_SUM_TOL, hint);
    }
}

/* A warm start only needs finite, non-negative entries: rows are rescaled. */
static void em_check_warm_start(const float *y, int64_t n, int k)
{
    for (int64_t i = 0; i < n * k; i++)
        ECL_CHECK(isfinite(y[i]) && y[i] >= 0.0f,
                  "em_solve_cpu: warm-start y[%lld, %d] = %g, expected finite and >= 0 "
                  "(pass init_from_sigma = 1 when y holds no previous labels)",
                  (long long)(i / k), (int)(i % k), (double)y[i]);
}

/* Column sums in double, serially in row order (diagnostics only). */
static void em_column_sums(const float *y, int64_t n, int k, double *colsum)
{
    for (int c = 0; c < k; c++)
        colsum[c] = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < k; c++)
            colsum[c] += y[i * k + c];
}

/* max(t, EM_FLOOR) for t >= 0 without a branch or fmax, either of which
 * stops gcc -O2 vectorising the row loop; exact for t above about 1e-14. */
static inline double em_floor(double t)
{
    return 0.5 * (t + EM_FLOOR + fabs(t - EM_FLOOR));
}

/* Start one block of rows: copy sigma or keep y, floor, renormalise, and
 * sum the block's columns. */
static void em_init_block(em_work *ws, int64_t b, int from_sigma)
{
    int k = ws->k;
    int64_t i_end = (b + 1) * EM_BLOCK_ROWS < ws->n ? (b + 1) * EM_BLOCK_ROWS : ws->n;
    double *part = ws->partial + b * k;
    memset(part, 0, (size_t)k * sizeof *part);

    for (int64_t i = b * EM_BLOCK_ROWS; i < i_end; i++) {
        float *row = ws->y + i * k;
        const float *src = from_sigma ? ws->sigma + i * k : row;

        /* Floored before the sum (an all-zero warm row becomes uniform) and
         * after the division, so every column starts with some mass. */
        double sum = 0.0;
        for (int c = 0; c < k; c++) {
            row[c] = fmaxf(src[c], (float)EM_FLOOR);
            sum += row[c];
        }
        for (int c = 0; c < k; c++) {
            row[c] = (float)em_floor(row[c] / sum);
            part[c] += row[c];
        }
    }
    ws->block_change[b] = 0.0;
}

/* One EM update of one row; adds the new row into part, returns max |dy|.
 * The numerators sigma_ik + w_k y_ik are normalised by their own sum, which
 * equals 1 + sum_c w_c y_ic when sigma's row sums to 1 and keeps y exactly
 * on the simplex when float rounding leaves it slightly off. The simd
 * reductions fix their summation order at compile time, so a given binary
 * gives the same bits on every run and thread count; simdlen(8) measured
 * best for both K = 10 and K = 100 (AVX-512 Xeon, gcc 12). */
static double em_update_row(const float *sig, float *row, int k, const double *w,
                            double *part)
{
    double total = 0.0;
    #pragma omp simd simdlen(8) reduction(+ : total)
    for (int c = 0; c < k; c++)
        total += sig[c] + w[c] * row[c];

    /* total >= 1 - EM_SUM_TOL, so inv is finite. */
    double inv = 1.0 / total, change = 0.0;
    #pragma omp simd simdlen(8) reduction(max : change)
    for (int c = 0; c < k; c++) {
        float v = (float)em_floor((sig[c] + w[c] * row[c]) * inv);
        double d = fabs((double)v - row[c]);
        change = d > change ? d : change;
        row[c] = v;
        part[c] += v;
    }
    return change;
}

/* Update one block of rows with the weights of the previous iterate. */
static void em_update_block(em_work *ws, int64_t b)
{
    int k = ws->k;
    int64_t i_end = (b + 1) * EM_BLOCK_ROWS < ws->n ? (b + 1) * EM_BLOCK_ROWS : ws->n;
    double *part = ws->partial + b * k;
    memset(part, 0, (size_t)k * sizeof *part);

    double change = 0.0;
    for (int64_t i = b * EM_BLOCK_ROWS; i < i_end; i++)
        change = fmax(change, em_update_row(ws->sigma + i * k, ws->y + i * k, k,
                                            ws->w, part));
    ws->block_change[b] = change;
}

/* Combine the blocks in order into colsum; returns the largest change. */
static double em_combine_blocks(em_work *ws)
{
    int k = ws->k;
    double change = 0.0;
    for (int c = 0; c < k; c++)
        ws->colsum[c] = 0.0;
    for (int64_t b = 0; b < ws->n_blocks; b++) {
        for (int c = 0; c < k; c++)
            ws->colsum[c] += ws->partial[b * k + c];
        change = fmax(change, ws->block_change[b]);
    }
    return change;
}

/* One pass over all blocks, on a thread team when the problem is large.
 * mode 0 initialises (from sigma when from_sigma), mode 1 updates. */
static double em_pass(em_work *ws, int mode, int from_sigma)
{
    int64_t n_blocks = ws->n_blocks;
    #pragma omp parallel for schedule(static) if (ws->parallel)
    for (int64_t b = 0; b < n_blocks; b++) {
        if (mode == 0)
            em_init_block(ws, b, from_sigma);
        else
            em_update_block(ws, b);
    }
    return em_combine_blocks(ws);
}

/* w_k = lambda u_k / ybar_k: the fairness pull of the N-free update. */
static void em_set_weights(em_work *ws, const float *u, double lambda)
{
    for (int c = 0; c < ws->k; c++) {
        double ybar = fmax(ws->colsum[c] / (double)ws->n, EM_FLOOR);
        ws->w[c] = lambda * em_target(u, ws->k, c) / ybar;
    }
}

/* Checks every input; a failure is a programming error inside training. */
static void em_check_solve_inputs(const float *sigma, const float *y, int64_t n, int k,
                                  const float *u, double lambda, int init_from_sigma)
{
    em_check_args("em_solve_cpu", n, k, lambda);
    em_check_rows("em_solve_cpu", "sigma",
                  "pass softmax probabilities, not logits, and check them for NaN first",
                  sigma, n, k);
    if (u)
        em_check_rows("em_solve_cpu", "u", "u is the target cluster distribution, "
                      "or NULL for uniform", u, 1, k);
    if (!init_from_sigma)
        em_check_warm_start(y, n, k);
}

em_state *em_state_create(const float *sigma, float *y, int64_t n, int k, const float *u,
                          double lambda, int init_from_sigma)
{
    em_check_solve_inputs(sigma, y, n, k, u, lambda, init_from_sigma);
    em_work *ws = ecl_calloc(1, sizeof *ws);
    *ws = (em_work){.sigma = sigma, .y = y, .n = n, .k = k, .u = u, .lambda = lambda};

    /* One cluster: the simplex is a single point, nothing to iterate. */
    if (k == 1) {
        for (int64_t i = 0; i < n; i++)
            y[i] = 1.0f;
        return ws;
    }

    /* Work space: the block partition fixes the summation order. */
    ws->n_blocks = (n + EM_BLOCK_ROWS - 1) / EM_BLOCK_ROWS;
    ws->parallel = n * k > EM_PARALLEL_MIN_ELEMS && ws->n_blocks > 1;
    ws->w = ecl_malloc((size_t)k * sizeof *ws->w);
    ws->colsum = ecl_malloc((size_t)k * sizeof *ws->colsum);
    ws->partial = ecl_malloc((size_t)(ws->n_blocks * k) * sizeof *ws->partial);
    ws->block_change = ecl_malloc((size_t)ws->n_blocks * sizeof *ws->block_change);
    em_pass(ws, 0, init_from_sigma);
    return ws;
}

int em_state_iterate(em_state *ws, int n_iter, double tol, em_result *res)
{
    /* Jacobi iterations: weights from the current y, then every row.
     * TODO: max |dy| < tol can stop far from the optimum when an entry must
     * grow from near zero (geometrically, by less than tol per step; 0.2 too
     * high in F on one-hot sigma at lambda 100, see test_em); solvers.h stops
     * on the full KKT conditions instead, at one more O(NK) pass per check. */
    int done = 0;
    if (ws->k == 1)
        return 0;
    while (done < n_iter) {
        em_set_weights(ws, ws->u, ws->lambda);
        res->max_change = em_pass(ws, 1, 0);
        res->iters++;
        done++;
        if (res->max_change < tol)
            break;
    }
    return done;
}

void em_state_free(em_state *ws)
{
    if (!ws)
        return;
    free(ws->w);
    free(ws->colsum);
    free(ws->partial);
    free(ws->block_change);
    free(ws);
}

em_result em_solve_cpu(const float *sigma, float *y, int64_t n, int k, const float *u,
                       double lambda, int max_iter, double tol, int init_from_sigma)
{
    em_result res = {0, 0.0};
    ECL_CHECK(max_iter >= 0, "em_solve_cpu: max_iter = %d, expected >= 0", max_iter);
    ECL_CHECK(tol >= 0.0, "em_solve_cpu: tol = %g, expected >= 0", tol);
    em_state *ws = em_state_create(sigma, y, n, k, u, lambda, init_from_sigma);
    em_state_iterate(ws, max_iter, tol, &res);
    em_state_free(ws);
    return res;
}

double em_objective(const float *sigma, const float *y, int64_t n, int k, const float *u,
                    double lambda)
{
    em_check_args("em_objective", n, k, lambda);
    double *colsum = ecl_malloc((size_t)k * sizeof *colsum);
    em_column_sums(y, n, k, colsum);

    /* Reverse cross-entropy, averaged over rows; sigma = 0 terms vanish. */
    double ce = 0.0;
    for (int64_t i = 0; i < n * k; i++)
        if (sigma[i] > 0.0f)
            ce -= sigma[i] * log(fmax(y[i], EM_FLOOR));

    /* Fairness: -lambda sum_k u_k log ybar_k. */
    double fair = 0.0;
    for (int c = 0; c < k; c++) {
        double uk = em_target(u, k, c);
        if (uk > 0.0)
            fair -= uk * log(fmax(colsum[c] / (double)n, EM_FLOOR));
    }
    free(colsum);
    return ce / (double)n + lambda * fair;
}

/* Residual of one row: y_ik g_ik = -sigma_ik - y_ik w_k is formed without
 * dividing by y, so entries at zero stay finite (and show sigma_ik). */
static double em_kkt_row(const float *sig, const float *row, int k, const double *w)
{
    double mu = 0.0;
    for (int c = 0; c < k; c++)
        mu += -sig[c] - row[c] * w[c];

    double worst = 0.0;
    for (int c = 0; c < k; c++) {
        double r = fabs(-sig[c] - row[c] * w[c] - row[c] * mu);
        worst = fmax(worst, r);
    }
    return worst;
}

double em_kkt_residual(const float *sigma, const float *y, int64_t n, int k, const float *u,
                       double lambda)
{
    em_check_args("em_kkt_residual", n, k, lambda);
    double *w = ecl_malloc((size_t)k * sizeof *w);
    em_column_sums(y, n, k, w);

    /* g_ik = N dF/dy_ik = -sigma_ik / y_ik - w_k with w_k = lambda u_k / ybar_k. */
    for (int c = 0; c < k; c++)
        w[c] = lambda * em_target(u, k, c) / fmax(w[c] / (double)n, EM_FLOOR);

    double worst = 0.0;
    for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, em_kkt_row(sigma + i * k, y + i * k, k, w));
    free(w);
    return worst;
}

double em_balance_error(const float *y, int64_t n, int k, const float *u)
{
    ECL_CHECK(n >= 1 && k >= 1, "em_balance_error: N = %lld, K = %d, expected both >= 1",
              (long long)n, k);
    double *colsum = ecl_malloc((size_t)k * sizeof *colsum);
    em_column_sums(y, n, k, colsum);

    double worst = 0.0;
    for (int c = 0; c < k; c++)
        worst = fmax(worst, fabs(colsum[c] / (double)n - em_target(u, k, c)));
    free(colsum);
    return worst;
}
