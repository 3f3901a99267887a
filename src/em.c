/*
 * em.c - the EM pseudo-label solver on the CPU (paper eqs. 45-46 in the N-free
 * form of DESIGN.md section 1) and the diagnostics that judge its answer: the
 * objective F, the y-weighted KKT residual and the balance error.
 *
 * Shape legend: N rows (batch or data set), K clusters, R rows per block.
 *
 * Layout: the iteration runs on panels, a block of R rows stored column by
 * column ([K, R]), so every inner loop runs along R contiguous rows and
 * vectorises whatever K is (a row of K = 10 floats does not fill a vector).
 * sigma and y are copied into panels at the first iteration of a state and
 * y is copied back when a call returns. Each pass is two sweeps over the
 * block (the row totals, then the new rows with their column sums and
 * |dy|), one division per row, and reads y_cur while writing y_next, so the
 * old iterate survives a pass.
 *
 * Determinism: rows are cut into blocks of a fixed size whatever the thread
 * count; each block sums its own columns and the blocks are combined in
 * order, so one thread and many give identical bits.
 *
 * em_state exposes the iteration so a caller can stop on its own rule:
 * em_state_iterate_kkt serves solvers.c's full-KKT rule with a lower bound
 * on the measure that falls out of each update, so the caller evaluates the
 * measure itself only where it can be met; em_solve_cpu is the one-call form
 * with the max |dy| stop.
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
/* Rows per block (R) of the deterministic column sums and of a panel. */
#define EM_BLOCK_ROWS 256
/* Rows per vector of floats (64-byte vectors): a panel's rows are padded
 * to a multiple, so no loop ends in a scalar remainder. */
#define EM_LANES 16
_Static_assert(EM_BLOCK_ROWS % EM_LANES == 0, "a block must hold whole vectors of rows");
/* What float rounding can hide from the KKT bound (2^-22, four times
 * float's unit roundoff): relative on a float quotient sigma / y, absolute
 * on a float |dy| <= 1. The bound subtracts it to stay below the measure. */
#define EM_FLT_SLACK 2.384185791015625e-07
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
    double *block_bound;    /* [n_blocks] KKT bound of the old iterate, each block */
    int64_t panel;          /* R K: floats per panel */
    float *sig_p;           /* [n_blocks, K, R] sigma in panels, NULL until used */
    float *y_cur, *y_next;  /* [n_blocks, K, R] the iterate and the next one */
    int y_in_rows;          /* 1 while y (rows) is newer than y_cur */
    int64_t iter;           /* iterations done on this state */
    int64_t checked_at;     /* iterate em_state_iterate_kkt last stopped at */
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

/* The larger of a and b, written as a compare so that gcc makes it one
 * (vector) max instruction where fmax would call libm. */
static inline double em_max(double a, double b)
{
    return a > b ? a : b;
}

/* The larger of two floats, as em_max. */
static inline float em_maxf(float a, float b)
{
    return a > b ? a : b;
}

/* max(v, EM_FLOOR) for a float v >= 0, on the bits: non-negative floats
 * order as their bit patterns do, and an integer max is one vector
 * instruction (a float compare right after the conversion from double
 * stops gcc vectorising the loop). */
static inline float em_floor(float v)
{
    const float floor_f = (float)EM_FLOOR;
    int32_t bits, floor_bits;
    memcpy(&bits, &v, sizeof bits);
    memcpy(&floor_bits, &floor_f, sizeof floor_bits);
    bits = bits > floor_bits ? bits : floor_bits;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Rows in block b: EM_BLOCK_ROWS except for the last block. */
static inline int em_block_rows(const em_work *ws, int64_t b)
{
    int64_t left = ws->n - b * EM_BLOCK_ROWS;
    return left < EM_BLOCK_ROWS ? (int)left : EM_BLOCK_ROWS;
}

/* nr rounded up to whole vectors: the rows a panel's loops run over. */
static inline int em_padded_rows(int nr)
{
    return (nr + EM_LANES - 1) / EM_LANES * EM_LANES;
}

/* Start one block of rows: copy sigma or keep y, floor, renormalise, and
 * sum the block's columns. Row-major, once per solve. */
static void em_init_block(em_work *ws, int64_t b, int from_sigma)
{
    int k = ws->k;
    int64_t i0 = b * EM_BLOCK_ROWS, i_end = i0 + em_block_rows(ws, b);
    double *part = ws->partial + b * k;
    memset(part, 0, (size_t)k * sizeof *part);

    for (int64_t i = i0; i < i_end; i++) {
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
            row[c] = em_floor((float)(row[c] / sum));
            part[c] += row[c];
        }
    }
}

/* Combine the blocks' column sums in order into colsum. */
static void em_combine_blocks(em_work *ws)
{
    int k = ws->k;
    for (int c = 0; c < k; c++)
        ws->colsum[c] = 0.0;
    for (int64_t b = 0; b < ws->n_blocks; b++)
        for (int c = 0; c < k; c++)
            ws->colsum[c] += ws->partial[b * k + c];
}

/* w_k = lambda u_k / ybar_k: the fairness pull of the N-free update. */
static void em_set_weights(em_work *ws)
{
    for (int c = 0; c < ws->k; c++) {
        double ybar = fmax(ws->colsum[c] / (double)ws->n, EM_FLOOR);
        ws->w[c] = ws->lambda * em_target(ws->u, ws->k, c) / ybar;
    }
}

/* ---- panels: the iteration's layout ---------------------------------------- */

/* Block b of a row-major [N, K] matrix into its panel [K, R]. */
static void em_rows_to_panel(const em_work *ws, int64_t b, const float *rows, float *panel)
{
    int k = ws->k, nr = em_block_rows(ws, b);
    const float *base = rows + b * EM_BLOCK_ROWS * k;
    for (int c = 0; c < k; c++)
        for (int r = 0; r < nr; r++)
            panel[c * EM_BLOCK_ROWS + r] = base[r * k + c];
}

/* The panel of block b back into the rows of a row-major [N, K] matrix. */
static void em_panel_to_rows(const em_work *ws, int64_t b, const float *panel, float *rows)
{
    int k = ws->k, nr = em_block_rows(ws, b);
    float *base = rows + b * EM_BLOCK_ROWS * k;
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < k; c++)
            base[r * k + c] = panel[c * EM_BLOCK_ROWS + r];
}

/* The padding rows of the last block: sigma and y uniform, so they
 * iterate like real rows (finite, no division by zero at any lambda) while
 * the column sums leave them out. */
static void em_panel_pad(const em_work *ws, float *panels)
{
    int64_t b = ws->n_blocks - 1;
    int nr = em_block_rows(ws, b), k = ws->k;
    float *panel = panels + ws->panel * b;
    for (int c = 0; c < k; c++)
        for (int r = nr; r < em_padded_rows(nr); r++)
            panel[c * EM_BLOCK_ROWS + r] = 1.0f / (float)k;
}

/* Allocates the panels on first use and fills them from sigma and y. */
static void em_panels_load(em_work *ws)
{
    size_t count = (size_t)(ws->n_blocks * ws->panel);
    if (!ws->sig_p) {
        ws->sig_p = ecl_malloc(count * sizeof *ws->sig_p);
        ws->y_cur = ecl_malloc(count * sizeof *ws->y_cur);
        ws->y_next = ecl_malloc(count * sizeof *ws->y_next);
        for (int64_t b = 0; b < ws->n_blocks; b++)
            em_rows_to_panel(ws, b, ws->sigma, ws->sig_p + ws->panel * b);
        em_panel_pad(ws, ws->sig_p);
        em_panel_pad(ws, ws->y_cur);
        em_panel_pad(ws, ws->y_next);
    }
    if (ws->y_in_rows) {
        int64_t n_blocks = ws->n_blocks;
        #pragma omp parallel for schedule(static) if (ws->parallel)
        for (int64_t b = 0; b < n_blocks; b++)
            em_rows_to_panel(ws, b, ws->y, ws->y_cur + ws->panel * b);
    }
    ws->y_in_rows = 0;
}

/* Writes the current iterate back into the caller's y. */
static void em_panels_store(em_work *ws)
{
    int64_t n_blocks = ws->n_blocks;
    #pragma omp parallel for schedule(static) if (ws->parallel)
    for (int64_t b = 0; b < n_blocks; b++)
        em_panel_to_rows(ws, b, ws->y_cur + ws->panel * b, ws->y);
}

/* ---- one EM update of one block -------------------------------------------- */

/* Per-row scratch of one block: row totals, their reciprocals, the largest
 * |dy| of each row, (check passes) each row's largest sign term, and 1 for
 * a real row, 0 for padding (read only in the last vector). */
typedef struct {
    double keep[EM_BLOCK_ROWS];
    double s[EM_BLOCK_ROWS];
    double inv[EM_BLOCK_ROWS];
    float dmax[EM_BLOCK_ROWS];
    double qmax[EM_BLOCK_ROWS];
} em_rows;

/* s_i = sum_k (sigma_ik + w_k y_ik): the normaliser of each new row, a
 * column of the panel at a time so every loop runs along rows. nr here
 * counts the padding rows. */
static void em_row_totals(const float *sg, const float *ya, int nr, int k,
                          const double *w, em_rows *rs)
{
    for (int r = 0; r < nr; r++)
        rs->s[r] = 0.0;
    for (int c = 0; c < k; c++) {
        const float *sc = sg + c * EM_BLOCK_ROWS, *yc = ya + c * EM_BLOCK_ROWS;
        double wc = w[c];
        #pragma omp simd
        for (int r = 0; r < nr; r++)
            rs->s[r] += sc[r] + wc * yc[r];
    }

    /* One division per row, not per entry; s_i >= 1 - EM_SUM_TOL. */
    #pragma omp simd
    for (int r = 0; r < nr; r++) {
        rs->inv[r] = 1.0 / rs->s[r];
        rs->dmax[r] = 0.0f;
    }
}

/* y_next = (sigma + w y) / s, floored; returns the new column's sum over
 * the nr real rows. The simd reductions fix their order at compile time,
 * so a given binary gives the same bits on every run and thread count. */
static double em_new_column(const float *sc, const float *yc, float *yn, int nr,
                            double wc, em_rows *rs)
{
    int n_full = nr / EM_LANES * EM_LANES;
    double sum = 0.0;
    #pragma omp simd reduction(+ : sum)
    for (int r = 0; r < n_full; r++) {
        float v = em_floor((float)((sc[r] + wc * yc[r]) * rs->inv[r]));
        rs->dmax[r] = em_maxf(rs->dmax[r], fabsf(v - yc[r]));
        yn[r] = v;
        sum += v;
    }

    /* The last vector, partly padding: keep takes the padding out. */
    if (n_full < nr) {
        #pragma omp simd reduction(+ : sum)
        for (int r = n_full; r < n_full + EM_LANES; r++) {
            float v = em_floor((float)((sc[r] + wc * yc[r]) * rs->inv[r]));
            rs->dmax[r] = em_maxf(rs->dmax[r], fabsf(v - yc[r]));
            yn[r] = v;
            sum += v * rs->keep[r];
        }
    }
    return sum;
}

/* The sign terms of solver_kkt_full for one column, sigma_ik / y_ik + w_k
 * (the row's multiplier is subtracted later): the quotient in float,
 * scaled down by its rounding so the bound stays below the double value. */
static void em_sign_column(const float *sc, const float *yc, int nr, double wc,
                           em_rows *rs)
{
    #pragma omp simd
    for (int r = 0; r < nr; r++) {
        float yf = yc[r] > (float)EM_FLOOR ? yc[r] : (float)EM_FLOOR;
        double q = (double)(sc[r] / yf) * (1.0 - EM_FLT_SLACK) + wc;
        rs->qmax[r] = em_max(rs->qmax[r], q);
    }
}

/* The block's largest |dy| and its lower bound on the full KKT measure of
 * the old iterate times (1 + lambda): y_ik |g_ik - mu_i| = s_i |y'_ik -
 * y_ik| before rounding (mu_i = -s_i), and g's sign term sigma_ik / y_ik +
 * w_k - s_i on check passes. */
static void em_block_summary(em_work *ws, int64_t b, const em_rows *rs, int nr, int check)
{
    double change = 0.0, bound = 0.0;
    #pragma omp simd reduction(max : change, bound)
    for (int r = 0; r < nr; r++) {
        change = em_max(change, rs->dmax[r]);
        bound = em_max(bound, rs->s[r] * (rs->dmax[r] - EM_FLT_SLACK));
    }
    if (check) {
        #pragma omp simd reduction(max : bound)
        for (int r = 0; r < nr; r++)
            bound = em_max(bound, rs->qmax[r] - rs->s[r]);
    }
    ws->block_change[b] = change;
    ws->block_bound[b] = bound;
}

/* One EM update of block b from y_cur into y_next, its column sums into
 * partial; check adds the sign terms of the KKT bound. */
static void em_update_block(em_work *ws, int64_t b, int check)
{
    int k = ws->k, nr = em_block_rows(ws, b), n_pad = em_padded_rows(nr);
    const float *sg = ws->sig_p + ws->panel * b, *ya = ws->y_cur + ws->panel * b;
    float *yn = ws->y_next + ws->panel * b;
    double *part = ws->partial + b * k;
    em_rows rs;
    for (int r = n_pad - EM_LANES; r < n_pad; r++)
        rs.keep[r] = r < nr ? 1.0 : 0.0;

    em_row_totals(sg, ya, n_pad, k, ws->w, &rs);
    for (int c = 0; c < k; c++)
        part[c] = em_new_column(sg + c * EM_BLOCK_ROWS, ya + c * EM_BLOCK_ROWS,
                                yn + c * EM_BLOCK_ROWS, nr, ws->w[c], &rs);

    /* Check passes only: one float division per entry. */
    if (check) {
        for (int r = 0; r < n_pad; r++)
            rs.qmax[r] = 0.0;
        for (int c = 0; c < k; c++)
            em_sign_column(sg + c * EM_BLOCK_ROWS, ya + c * EM_BLOCK_ROWS, n_pad,
                           ws->w[c], &rs);
    }
    em_block_summary(ws, b, &rs, nr, check);
}

/* One update of every block into y_next (a thread team only when the
 * problem is large: an idle team costs more than a small pass). Returns
 * the largest |dy|; *bound gets the KKT bound of y_cur times (1 + lambda). */
static double em_update_pass(em_work *ws, int check, double *bound)
{
    int64_t n_blocks = ws->n_blocks;
    em_set_weights(ws);
    if (ws->parallel) {
        #pragma omp parallel for schedule(static)
        for (int64_t b = 0; b < n_blocks; b++)
            em_update_block(ws, b, check);
    } else {
        for (int64_t b = 0; b < n_blocks; b++)
            em_update_block(ws, b, check);
    }

    /* max is exact in any order; the column sums wait for em_commit. */
    double change = 0.0;
    *bound = 0.0;
    for (int64_t b = 0; b < n_blocks; b++) {
        change = em_max(change, ws->block_change[b]);
        *bound = em_max(*bound, ws->block_bound[b]);
    }
    return change;
}

/* Accept the pass: y_next becomes the iterate, its column sums colsum. */
static void em_commit(em_work *ws, em_result *res, double change)
{
    float *t = ws->y_cur;
    ws->y_cur = ws->y_next;
    ws->y_next = t;
    em_combine_blocks(ws);
    ws->iter++;
    res->iters++;
    res->max_change = change;
}

/* ---- state ----------------------------------------------------------------- */

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
    *ws = (em_work){.sigma = sigma, .y = y, .n = n, .k = k, .u = u, .lambda = lambda,
                    .y_in_rows = 1, .checked_at = -1};

    /* One cluster: the simplex is a single point, nothing to iterate. */
    if (k == 1) {
        for (int64_t i = 0; i < n; i++)
            y[i] = 1.0f;
        return ws;
    }

    /* Work space: the block partition fixes the summation order. */
    ws->n_blocks = (n + EM_BLOCK_ROWS - 1) / EM_BLOCK_ROWS;
    ws->panel = (int64_t)EM_BLOCK_ROWS * k;
    ws->parallel = n * k > EM_PARALLEL_MIN_ELEMS && ws->n_blocks > 1;
    ws->w = ecl_malloc((size_t)k * sizeof *ws->w);
    ws->colsum = ecl_malloc((size_t)k * sizeof *ws->colsum);
    ws->partial = ecl_malloc((size_t)(ws->n_blocks * k) * sizeof *ws->partial);
    ws->block_change = ecl_malloc((size_t)ws->n_blocks * sizeof *ws->block_change);
    ws->block_bound = ecl_malloc((size_t)ws->n_blocks * sizeof *ws->block_bound);

    /* The start, row-major: the other solvers of solvers.c read y as is. */
    int64_t n_blocks = ws->n_blocks;
    #pragma omp parallel for schedule(static) if (ws->parallel)
    for (int64_t b = 0; b < n_blocks; b++)
        em_init_block(ws, b, init_from_sigma);
    em_combine_blocks(ws);
    return ws;
}

int em_state_iterate(em_state *ws, int n_iter, double tol, em_result *res)
{
    /* Jacobi iterations: weights from the current y, then every row.
     * TODO: max |dy| < tol can stop far from the optimum when an entry must
     * grow from near zero (geometrically, by less than tol per step; 0.2 too
     * high in F on one-hot sigma at lambda 100, see test_em); solvers.h stops
     * on the full KKT conditions instead (em_state_iterate_kkt). */
    if (ws->k == 1 || n_iter <= 0)
        return 0;
    em_panels_load(ws);
    int done = 0;
    double bound;
    while (done < n_iter) {
        em_commit(ws, res, em_update_pass(ws, 0, &bound));
        done++;
        if (res->max_change < tol)
            break;
    }
    em_panels_store(ws);
    return done;
}

int em_state_iterate_kkt(em_state *ws, int n_iter, int check_every, double kkt_tol,
                         em_result *res)
{
    ECL_CHECK(check_every >= 1, "em_state_iterate_kkt: check_every = %d, expected >= 1",
              check_every);
    if (ws->k == 1 || n_iter <= 0)
        return 0;
    em_panels_load(ws);

    /* The bound is below the measure by rounding at most (EM_FLT_SLACK and
     * the slack here), so an iterate that meets the rule is never passed. */
    double gate = (kkt_tol * (1.0 + 1e-6) + 1e-12) * (1.0 + ws->lambda);
    int flagged = 0;
    for (int done = 0; done < n_iter && !flagged; done++) {
        int check = kkt_tol > 0.0 && ws->iter % check_every == 0 &&
                    ws->iter != ws->checked_at;
        double bound, change = em_update_pass(ws, check, &bound);
        if (check && bound < gate) {
            /* Keep the old iterate (y_next is dropped) for the caller. */
            ws->checked_at = ws->iter;
            flagged = 1;
        } else {
            em_commit(ws, res, change);
        }
    }
    em_panels_store(ws);
    return flagged;
}

void em_state_free(em_state *ws)
{
    if (!ws)
        return;
    free(ws->w);
    free(ws->colsum);
    free(ws->partial);
    free(ws->block_change);
    free(ws->block_bound);
    free(ws->sig_p);
    free(ws->y_cur);
    free(ws->y_next);
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
