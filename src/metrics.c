/*
 * metrics.c - clustering scores (ACC, many-to-one ACC, NMI, ARI) and the
 * rectangular Hungarian solver that ACC needs.
 *
 * Every score starts from the same contingency table: samples with a
 * negative label are dropped, the remaining label and cluster values are
 * mapped to dense ids 0..R-1 and 0..C-1 (sorted order), and counts[r][c]
 * holds how many samples of class r fell in cluster c.
 *
 * With no labelled sample at all, NMI and ARI are 1 (two empty partitions
 * agree, as in scikit-learn) and both accuracies are 0.
 *
 * Not here: confidence intervals, sparse tables. The table is dense
 * [R, C], so a clustering with a million distinct ids would need a million
 * squared cells; ecl never produces one.
 */
#include "ecl/metrics.h"

#include "ecl/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Shape legend: N samples kept, R distinct classes, C distinct clusters. */
typedef struct {
    int64_t n;          /* samples kept (label >= 0) */
    int rows;           /* R */
    int cols;           /* C */
    int64_t *counts;    /* [R, C] */
} metrics_table;

static int metrics_cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Replaces each of v[0..n) by its rank among the distinct values of v;
 * returns how many distinct values there are. */
static int metrics_densify(int32_t *v, int64_t n)
{
    /* Sorted distinct values: the dense id of a value is its index here. */
    int32_t *uniq = ecl_malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    memcpy(uniq, v, (size_t)n * sizeof(int32_t));
    qsort(uniq, (size_t)n, sizeof(int32_t), metrics_cmp_i32);
    int64_t n_uniq = 0;
    for (int64_t i = 0; i < n; i++) {
        if (n_uniq == 0 || uniq[n_uniq - 1] != uniq[i])
            uniq[n_uniq++] = uniq[i];
    }
    ECL_CHECK(n_uniq <= INT32_MAX, "%lld distinct values do not fit an int",
              (long long)n_uniq);

    /* Binary search of each value among the distinct ones. */
    for (int64_t i = 0; i < n; i++) {
        const int32_t *hit = bsearch(&v[i], uniq, (size_t)n_uniq, sizeof(int32_t),
                                     metrics_cmp_i32);
        v[i] = (int32_t)(hit - uniq);
    }
    free(uniq);
    return (int)n_uniq;
}

/* Builds the contingency table of the samples whose label is >= 0. */
static metrics_table metrics_table_build(const int32_t *labels, const int32_t *clusters,
                                         int64_t n)
{
    ECL_CHECK(n >= 0, "sample count must be >= 0, got %lld", (long long)n);
    ECL_CHECK(n == 0 || (labels && clusters), "labels and clusters must not be NULL");

    /* Keep the labelled samples only. */
    size_t n_alloc = (size_t)(n > 0 ? n : 1);
    int32_t *lab = ecl_malloc(n_alloc * sizeof(int32_t));   /* [N] */
    int32_t *clu = ecl_malloc(n_alloc * sizeof(int32_t));   /* [N] */
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0)
            continue;
        lab[kept] = labels[i];
        clu[kept] = clusters[i];
        kept++;
    }

    /* Dense ids, then one count per sample. */
    metrics_table t = { kept, 0, 0, NULL };
    t.rows = metrics_densify(lab, kept);
    t.cols = metrics_densify(clu, kept);
    size_t n_cells = (size_t)t.rows * (size_t)t.cols;
    t.counts = ecl_calloc(n_cells > 0 ? n_cells : 1, sizeof(int64_t));
    for (int64_t i = 0; i < kept; i++)
        t.counts[(int64_t)lab[i] * t.cols + clu[i]]++;
    free(lab);
    free(clu);
    return t;
}

static void metrics_table_free(metrics_table *t)
{
    free(t->counts);
    t->counts = NULL;
}

/* Row sums (per class) into a [R] and column sums (per cluster) into b [C]. */
static void metrics_table_margins(const metrics_table *t, int64_t *a, int64_t *b)
{
    memset(a, 0, (size_t)t->rows * sizeof(int64_t));
    memset(b, 0, (size_t)t->cols * sizeof(int64_t));
    for (int r = 0; r < t->rows; r++) {
        for (int c = 0; c < t->cols; c++) {
            a[r] += t->counts[(int64_t)r * t->cols + c];
            b[c] += t->counts[(int64_t)r * t->cols + c];
        }
    }
}

double metrics_acc(const int32_t *labels, const int32_t *clusters, int64_t n)
{
    metrics_table t = metrics_table_build(labels, clusters, n);
    if (t.n == 0) {
        metrics_table_free(&t);
        return 0.0;
    }

    /* Best one-to-one matching of classes (rows) to clusters (columns). */
    size_t n_cells = (size_t)t.rows * (size_t)t.cols;
    double *score = ecl_malloc(n_cells * sizeof(double));   /* [R, C] */
    int *match = ecl_malloc((size_t)t.rows * sizeof(int));  /* [R] */
    for (size_t i = 0; i < n_cells; i++)
        score[i] = (double)t.counts[i];
    metrics_hungarian_max(score, t.rows, t.cols, match);

    /* Samples in a matched (class, cluster) cell are right; all others wrong. */
    int64_t right = 0;
    for (int r = 0; r < t.rows; r++) {
        if (match[r] >= 0)
            right += t.counts[(int64_t)r * t.cols + match[r]];
    }
    double acc = (double)right / (double)t.n;
    free(score);
    free(match);
    metrics_table_free(&t);
    return acc;
}

double metrics_acc_majority(const int32_t *labels, const int32_t *clusters, int64_t n)
{
    metrics_table t = metrics_table_build(labels, clusters, n);
    if (t.n == 0) {
        metrics_table_free(&t);
        return 0.0;
    }

    /* Each cluster votes for its largest class; its members of that class are right. */
    int64_t right = 0;
    for (int c = 0; c < t.cols; c++) {
        int64_t best = 0;
        for (int r = 0; r < t.rows; r++) {
            int64_t v = t.counts[(int64_t)r * t.cols + c];
            best = v > best ? v : best;
        }
        right += best;
    }
    double acc = (double)right / (double)t.n;
    metrics_table_free(&t);
    return acc;
}

/* Entropy in nats of the distribution counts[0..m) / n. */
static double metrics_entropy(const int64_t *counts, int m, int64_t n)
{
    double h = 0.0;
    for (int i = 0; i < m; i++) {
        if (counts[i] > 0) {
            double p = (double)counts[i] / (double)n;
            h -= p * log(p);
        }
    }
    return h;
}

/* Mutual information in nats: sum over cells of p_rc log(p_rc / (p_r p_c)). */
static double metrics_mutual_info(const metrics_table *t, const int64_t *a, const int64_t *b)
{
    double mi = 0.0, nd = (double)t->n;
    for (int r = 0; r < t->rows; r++) {
        for (int c = 0; c < t->cols; c++) {
            int64_t v = t->counts[(int64_t)r * t->cols + c];
            if (v == 0)
                continue;
            /* log(N v / (a b)) written as a difference of logs so no product overflows. */
            double lg = log((double)v) + log(nd) - log((double)a[r]) - log((double)b[c]);
            mi += ((double)v / nd) * lg;
        }
    }
    return mi > 0.0 ? mi : 0.0;   /* rounding can leave a tiny negative */
}

double metrics_nmi(const int32_t *labels, const int32_t *clusters, int64_t n)
{
    metrics_table t = metrics_table_build(labels, clusters, n);

    /* Both constant (or empty): the same partition, a perfect match. */
    if ((t.rows == 1 && t.cols == 1) || t.n == 0) {
        metrics_table_free(&t);
        return 1.0;
    }

    int64_t *a = ecl_malloc((size_t)t.rows * sizeof(int64_t));   /* [R] */
    int64_t *b = ecl_malloc((size_t)t.cols * sizeof(int64_t));   /* [C] */
    metrics_table_margins(&t, a, b);
    double mi = metrics_mutual_info(&t, a, b);
    double h_lab = metrics_entropy(a, t.rows, t.n);
    double h_clu = metrics_entropy(b, t.cols, t.n);
    free(a);
    free(b);
    metrics_table_free(&t);

    /* No information shared (this covers exactly one constant labeling). */
    if (mi == 0.0)
        return 0.0;

    /* Arithmetic-mean normalisation; MI <= min(H) <= mean(H), so clamp only rounding. */
    double nmi = mi / (0.5 * (h_lab + h_clu));
    return nmi < 1.0 ? nmi : 1.0;
}

double metrics_ari(const int32_t *labels, const int32_t *clusters, int64_t n)
{
    metrics_table t = metrics_table_build(labels, clusters, n);
    int64_t *a = ecl_malloc((size_t)(t.rows > 0 ? t.rows : 1) * sizeof(int64_t));
    int64_t *b = ecl_malloc((size_t)(t.cols > 0 ? t.cols : 1) * sizeof(int64_t));
    metrics_table_margins(&t, a, b);

    /* Ordered pairs (i != j): sum of squared cells and squared margins, minus N. */
    double nd = (double)t.n, sum_cell = 0.0, sum_a = 0.0, sum_b = 0.0;
    for (int64_t i = 0; i < (int64_t)t.rows * t.cols; i++)
        sum_cell += (double)t.counts[i] * (double)t.counts[i];
    for (int r = 0; r < t.rows; r++)
        sum_a += (double)a[r] * (double)a[r];
    for (int c = 0; c < t.cols; c++)
        sum_b += (double)b[c] * (double)b[c];
    free(a);
    free(b);
    metrics_table_free(&t);

    /* Pair confusion: together in both, only in labels, only in clusters, in neither. */
    double both = sum_cell - nd;
    double only_lab = sum_a - sum_cell;
    double only_clu = sum_b - sum_cell;
    double neither = nd * nd - sum_a - sum_b + sum_cell;

    /* No pair on which the two disagree: identical partitions (or < 2 samples). */
    if (only_lab == 0.0 && only_clu == 0.0)
        return 1.0;

    /* (index - expected) / (max - expected), in the pair-confusion form;
     * the denominator is > 0 as soon as one disagreeing pair exists. */
    double num = 2.0 * (both * neither - only_lab * only_clu);
    double den = (both + only_lab) * (only_lab + neither)
               + (both + only_clu) * (only_clu + neither);
    return num / den;
}

/* Min-cost assignment on a square [n, n] cost matrix by shortest augmenting
 * paths with row and column potentials (Kuhn-Munkres, O(n^3)). Rows and
 * columns are numbered from 1; column 0 is a virtual column that holds the
 * row being inserted, so the search tree of each phase starts from it. */
typedef struct {
    int n;
    const double *cost;     /* [n, n], row-major, 0-based */
    double *u;              /* [n + 1] row potentials */
    double *v;              /* [n + 1] column potentials */
    double *slack;          /* [n + 1] least reduced cost into column j from the tree */
    int *row_of;            /* [n + 1] row matched to column j, 0 = free */
    int *prev_col;          /* [n + 1] tree column the slack of column j came from */
    unsigned char *in_tree; /* [n + 1] */
} metrics_hungarian;

/* Grows the alternating tree from the virtual column until the reduced-cost
 * edges reach a free column; returns that column. Invariant: every reduced
 * cost cost - u - v is >= 0 and the tree edges are tight (0). */
static int metrics_hungarian_grow(metrics_hungarian *h)
{
    int n = h->n, col = 0;
    do {
        /* Add the row behind col to the tree and relax its edges. */
        h->in_tree[col] = 1;
        int r = h->row_of[col];
        double delta = INFINITY;
        int next = 0;
        for (int j = 1; j <= n; j++) {
            if (h->in_tree[j])
                continue;
            double reduced = h->cost[(int64_t)(r - 1) * n + (j - 1)] - h->u[r] - h->v[j];
            if (reduced < h->slack[j]) {
                h->slack[j] = reduced;
                h->prev_col[j] = col;
            }
            if (h->slack[j] < delta) {
                delta = h->slack[j];
                next = j;
            }
        }
        ECL_CHECK(next > 0, "Hungarian: no column reachable (non-finite score?)");

        /* Move potentials by delta: tree edges stay tight, next's edge becomes tight. */
        for (int j = 0; j <= n; j++) {
            if (h->in_tree[j]) {
                h->u[h->row_of[j]] += delta;
                h->v[j] -= delta;
            } else {
                h->slack[j] -= delta;
            }
        }
        col = next;
    } while (h->row_of[col] != 0);
    return col;
}

/* One phase: inserts row into the matching, keeping it of minimum cost. */
static void metrics_hungarian_add_row(metrics_hungarian *h, int row)
{
    /* Fresh search tree rooted at the virtual column holding row. */
    h->row_of[0] = row;
    for (int j = 0; j <= h->n; j++) {
        h->slack[j] = INFINITY;
        h->in_tree[j] = 0;
    }
    int col = metrics_hungarian_grow(h);

    /* Flip the alternating path from the free column back to the root. */
    while (col != 0) {
        int prev = h->prev_col[col];
        h->row_of[col] = h->row_of[prev];
        col = prev;
    }
}

void metrics_hungarian_max(const double *score, int rows, int cols, int *match)
{
    ECL_CHECK(rows >= 0 && cols >= 0, "Hungarian: bad shape [%d, %d]", rows, cols);
    ECL_CHECK(rows == 0 || match, "Hungarian: match must not be NULL");
    int n = rows > cols ? rows : cols;
    for (int r = 0; r < rows; r++)
        match[r] = -1;
    if (rows == 0 || cols == 0)
        return;

    /* Square cost = -score, padded with zeros: a row (or column) matched to
     * padding is simply left unmatched, and padding adds the same to every
     * complete matching, so the optimum over real pairs is unchanged. */
    size_t nn = (size_t)n * (size_t)n;
    double *cost = ecl_calloc(nn, sizeof(double));   /* [n, n] */
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            double s = score[(int64_t)r * cols + c];
            ECL_CHECK(isfinite(s), "Hungarian: score[%d][%d] = %g is not finite", r, c, s);
            cost[(int64_t)r * n + c] = -s;
        }
    }

    /* Insert the rows one at a time. */
    size_t n1 = (size_t)n + 1;
    metrics_hungarian h = {
        .n = n, .cost = cost,
        .u = ecl_calloc(n1, sizeof(double)), .v = ecl_calloc(n1, sizeof(double)),
        .slack = ecl_calloc(n1, sizeof(double)),
        .row_of = ecl_calloc(n1, sizeof(int)), .prev_col = ecl_calloc(n1, sizeof(int)),
        .in_tree = ecl_calloc(n1, 1),
    };
    for (int i = 1; i <= n; i++)
        metrics_hungarian_add_row(&h, i);

    /* Read the matching back, dropping pairs that involve padding. */
    for (int j = 1; j <= n; j++) {
        int r = h.row_of[j] - 1, c = j - 1;
        if (r < rows && c < cols)
            match[r] = c;
    }
    free(h.u);
    free(h.v);
    free(h.slack);
    free(h.row_of);
    free(h.prev_col);
    free(h.in_tree);
    free(cost);
}
