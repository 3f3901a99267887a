/*
 * test_metrics.c - ACC, majority ACC, NMI, ARI and the Hungarian solver
 * against hand-computed values, scikit-learn values and brute force; K-means
 * on separated blobs (exact recovery, determinism across calls and thread
 * counts) and on the real 10,000 MNIST digits (ACC in the published range).
 *
 * Not here: the evaluation binary's output formats.
 */
#include "ecl/core.h"
#include "ecl/metrics.h"
#include "ecl/rng.h"

#include "check.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define N_OF(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

/* No labelled sample: NMI and ARI 1 (as scikit-learn on empty input), ACC 0. */
static void test_empty(void)
{
    int32_t lab[] = { -1, -3 };
    int32_t clu[] = { 0, 1 };
    CHECK_NEAR(metrics_acc(lab, clu, 2), 0.0, 0, 0);
    CHECK_NEAR(metrics_acc_majority(lab, clu, 2), 0.0, 0, 0);
    CHECK_NEAR(metrics_nmi(lab, clu, 2), 1.0, 0, 0);
    CHECK_NEAR(metrics_ari(lab, clu, 2), 1.0, 0, 0);
    CHECK_NEAR(metrics_acc(lab, clu, 0), 0.0, 0, 0);
}

/* Scores of a labeling against itself up to renamed clusters are all 1. */
static void test_perfect_permuted(void)
{
    int32_t lab[] = { 0, 0, 1, 1, 1, 2, 2, 3 };
    int32_t clu[] = { 5, 5, 9, 9, 9, 2, 2, 7 };
    CHECK_NEAR(metrics_acc(lab, clu, N_OF(lab)), 1.0, 0, 0);
    CHECK_NEAR(metrics_acc_majority(lab, clu, N_OF(lab)), 1.0, 0, 0);
    CHECK_NEAR(metrics_nmi(lab, clu, N_OF(lab)), 1.0, 1e-12, 0);
    CHECK_NEAR(metrics_ari(lab, clu, N_OF(lab)), 1.0, 1e-12, 0);
}

/*
 * 2 classes x 3 clusters, N = 8. Contingency (rows A, B; columns X, Y, Z):
 *        X  Y  Z
 *   A    3  1  0     row sums a = 4, 4
 *   B    0  2  2     column sums b = 3, 3, 2
 * ACC: best one-to-one is A-X (3) + B-Y or B-Z (2) = 5, so 5/8; Z (or Y)
 *   stays unmatched and its 2 samples count wrong.
 * Majority: X->A 3, Y->B 2, Z->B 2 = 7/8.
 * ARI: sum C(n_ij, 2) = 3 + 0 + 1 + 1 = 5; sum C(a, 2) = 6 + 6 = 12;
 *   sum C(b, 2) = 3 + 3 + 1 = 7; C(8, 2) = 28; expected = 12 * 7 / 28 = 3;
 *   max = (12 + 7) / 2 = 9.5; ARI = (5 - 3) / (9.5 - 3) = 4/13 = 0.3076923.
 * NMI: H(lab) = ln 2; H(clu) = -(2 * 3/8 ln 3/8 + 1/4 ln 1/4);
 *   MI = 3/8 ln 2 + 1/8 ln(2/3) + 1/4 ln(4/3) + 1/4 ln 2;
 *   NMI = MI / ((H(lab) + H(clu)) / 2) = 0.5119624 (sklearn 1.9.1 agrees:
 *   0.5119624112418626 and 0.3076923076923077).
 * The 3 x 2 case is the same table transposed: ACC 5/8 (one class is left
 * unmatched), majority X 3 + one of Y/Z 2 = 5/8; NMI and ARI are symmetric.
 */
static void test_rectangular_by_hand(void)
{
    int32_t ab[] = { 0, 0, 0, 0, 1, 1, 1, 1 };
    int32_t xyz[] = { 0, 0, 0, 1, 1, 1, 2, 2 };
    double h_lab = log(2.0);
    double h_clu = -(2.0 * 0.375 * log(0.375) + 0.25 * log(0.25));
    double mi = 0.375 * log(2.0) + 0.125 * log(2.0 / 3.0) + 0.25 * log(4.0 / 3.0)
              + 0.25 * log(2.0);
    double nmi = mi / (0.5 * (h_lab + h_clu));
    CHECK_NEAR(nmi, 0.5119624112418626, 1e-12, 0);

    /* 2 x 3 */
    CHECK_NEAR(metrics_acc(ab, xyz, 8), 5.0 / 8.0, 1e-15, 0);
    CHECK_NEAR(metrics_acc_majority(ab, xyz, 8), 7.0 / 8.0, 1e-15, 0);
    CHECK_NEAR(metrics_ari(ab, xyz, 8), 4.0 / 13.0, 1e-12, 0);
    CHECK_NEAR(metrics_nmi(ab, xyz, 8), nmi, 1e-12, 0);

    /* 3 x 2 */
    CHECK_NEAR(metrics_acc(xyz, ab, 8), 5.0 / 8.0, 1e-15, 0);
    CHECK_NEAR(metrics_acc_majority(xyz, ab, 8), 5.0 / 8.0, 1e-15, 0);
    CHECK_NEAR(metrics_ari(xyz, ab, 8), 4.0 / 13.0, 1e-12, 0);
    CHECK_NEAR(metrics_nmi(xyz, ab, 8), nmi, 1e-12, 0);
}

/* Arbitrary label and cluster values, and negative labels left out. */
static void test_noncontiguous_and_excluded(void)
{
    /* Perfect once the two unlabelled samples (whose clusters disagree) are dropped. */
    int32_t lab[] = { 7, 42, -1, 1000, 7, 42, 1000, -1 };
    int32_t clu[] = { 3, -100, 3, INT32_MAX, 3, -100, INT32_MAX, INT32_MIN };
    CHECK_NEAR(metrics_acc(lab, clu, N_OF(lab)), 1.0, 0, 0);
    CHECK_NEAR(metrics_nmi(lab, clu, N_OF(lab)), 1.0, 1e-12, 0);
    CHECK_NEAR(metrics_ari(lab, clu, N_OF(lab)), 1.0, 1e-12, 0);

    /* The 2 x 3 table of test_rectangular_by_hand with renamed values and
     * unlabelled samples sprinkled in gives the same scores. */
    int32_t lab2[] = { 7, -1, 7, 7, 7, 1000, -5, 1000, 1000, 1000 };
    int32_t clu2[] = { 42, 0, 42, 42, -3, -3, 42, -3, 9, 9 };
    CHECK_NEAR(metrics_acc(lab2, clu2, N_OF(lab2)), 5.0 / 8.0, 1e-15, 0);
    CHECK_NEAR(metrics_acc_majority(lab2, clu2, N_OF(lab2)), 7.0 / 8.0, 1e-15, 0);
    CHECK_NEAR(metrics_ari(lab2, clu2, N_OF(lab2)), 4.0 / 13.0, 1e-12, 0);
    CHECK_NEAR(metrics_nmi(lab2, clu2, N_OF(lab2)), 0.5119624112418626, 1e-12, 0);
}

/* Constant labelings: one constant -> NMI 0, ARI 0; both constant -> 1. */
static void test_constant(void)
{
    int32_t varied[] = { 0, 1, 1, 2, 2, 2 };
    int32_t one[] = { 4, 4, 4, 4, 4, 4 };
    int32_t other[] = { 9, 9, 9, 9, 9, 9 };
    CHECK_NEAR(metrics_nmi(varied, one, 6), 0.0, 0, 0);
    CHECK_NEAR(metrics_ari(varied, one, 6), 0.0, 0, 0);
    CHECK_NEAR(metrics_nmi(one, varied, 6), 0.0, 0, 0);
    CHECK_NEAR(metrics_ari(one, varied, 6), 0.0, 0, 0);
    CHECK_NEAR(metrics_acc(varied, one, 6), 3.0 / 6.0, 1e-15, 0);   /* class 2 wins */
    CHECK_NEAR(metrics_acc(one, varied, 6), 3.0 / 6.0, 1e-15, 0);   /* cluster 2 wins */
    CHECK_NEAR(metrics_acc_majority(one, varied, 6), 1.0, 0, 0);
    CHECK_NEAR(metrics_nmi(one, other, 6), 1.0, 0, 0);
    CHECK_NEAR(metrics_ari(one, other, 6), 1.0, 0, 0);
    CHECK_NEAR(metrics_acc(one, other, 6), 1.0, 0, 0);

    /* Every sample its own cluster against one class: sklearn gives 0 and 0. */
    int32_t singletons[] = { 0, 1, 2, 3 };
    CHECK_NEAR(metrics_nmi(one, singletons, 4), 0.0, 0, 0);
    CHECK_NEAR(metrics_ari(one, singletons, 4), 0.0, 0, 0);
}

/* A 4-class, 5-cluster example scored by scikit-learn 1.9.1
 * (normalized_mutual_info_score, adjusted_rand_score) and by scipy 1.17.1's
 * linear_sum_assignment on the contingency table (20 of 30 matched). */
static void test_sklearn_example(void)
{
    int32_t lab[30] = { 2, 0, 1, 3, 0, 0, 0, 1, 1, 3, 2, 3, 1, 1, 2,
                        1, 3, 2, 0, 0, 0, 1, 3, 2, 0, 2, 1, 2, 2, 2 };
    int32_t clu[30] = { 2, 1, 1, 4, 0, 2, 0, 1, 3, 3, 2, 4, 2, 1, 2,
                        1, 3, 2, 0, 0, 1, 1, 3, 2, 1, 2, 1, 3, 3, 2 };
    CHECK_NEAR(metrics_nmi(lab, clu, 30), 0.536277135930365, 1e-12, 0);
    CHECK_NEAR(metrics_ari(lab, clu, 30), 0.36807699291810425, 1e-12, 0);
    CHECK_NEAR(metrics_acc(lab, clu, 30), 20.0 / 30.0, 1e-15, 0);
    CHECK_NEAR(metrics_acc_majority(lab, clu, 30), 22.0 / 30.0, 1e-15, 0);
    /* NMI and ARI are symmetric in their two arguments. */
    CHECK_NEAR(metrics_nmi(clu, lab, 30), 0.536277135930365, 1e-12, 0);
    CHECK_NEAR(metrics_ari(clu, lab, 30), 0.36807699291810425, 1e-12, 0);
}

/* Overclustering: 2 classes split over 4 pure clusters. Majority is perfect;
 * one-to-one can match only 2 clusters: the two largest, 4 + 3 of 10. */
static void test_majority_overclustered(void)
{
    int32_t lab[] = { 0, 0, 0, 0, 0, 0, 1, 1, 1, 1 };
    int32_t clu[] = { 0, 0, 0, 0, 1, 1, 2, 2, 2, 3 };
    CHECK_NEAR(metrics_acc_majority(lab, clu, 10), 1.0, 0, 0);
    CHECK_NEAR(metrics_acc(lab, clu, 10), 7.0 / 10.0, 1e-15, 0);
}

/* Best sum over matchings of min(rows, cols) pairs, by trying them all:
 * row r either takes a free column or (while skips remain) is skipped. */
static double brute_best(const double *s, int rows, int cols, int r, unsigned used,
                         int skips_left)
{
    if (r == rows)
        return 0.0;
    double best = -INFINITY;
    if (skips_left > 0)
        best = brute_best(s, rows, cols, r + 1, used, skips_left - 1);
    for (int c = 0; c < cols; c++) {
        if (used & (1u << c))
            continue;
        double v = s[r * cols + c] + brute_best(s, rows, cols, r + 1, used | (1u << c),
                                                skips_left);
        best = v > best ? v : best;
    }
    return best;
}

/* Checks that match is a matching of min(rows, cols) pairs with the brute-force sum. */
static void check_hungarian(const double *s, int rows, int cols)
{
    int match[8];
    metrics_hungarian_max(s, rows, cols, match);
    int n_pairs = 0;
    unsigned used = 0;
    double sum = 0.0;
    for (int r = 0; r < rows; r++) {
        if (match[r] < 0)
            continue;
        CHECK(match[r] < cols && !(used & (1u << match[r])), "bad match[%d]=%d", r, match[r]);
        used |= 1u << match[r];
        sum += s[r * cols + match[r]];
        n_pairs++;
    }
    int want_pairs = rows < cols ? rows : cols;
    CHECK(n_pairs == want_pairs, "%dx%d: %d pairs, want %d", rows, cols, n_pairs, want_pairs);
    int skips = rows > cols ? rows - cols : 0;
    CHECK_NEAR(sum, brute_best(s, rows, cols, 0, 0, skips), 1e-9, 0);
}

static void test_hungarian(void)
{
    /* A fixed 4 x 4 where taking the largest entries first (9, 9, 7, 1) gives
     * 26; the unique optimum, by listing all 24 permutations, is 8+8+5+7 = 28. */
    double s4[16] = { 9, 8, 1, 2,
                      8, 1, 1, 1,
                      1, 9, 3, 5,
                      3, 1, 7, 1 };
    int match[4];
    metrics_hungarian_max(s4, 4, 4, match);
    CHECK(match[0] == 1 && match[1] == 0 && match[2] == 3 && match[3] == 2,
          "4x4 match %d %d %d %d, want 1 0 3 2", match[0], match[1], match[2], match[3]);
    check_hungarian(s4, 4, 4);

    /* Random tables, negative values and ties included, against brute force. */
    rng_state r = rng_seeded(11);
    const int shapes[][2] = { { 4, 4 }, { 5, 3 }, { 3, 5 }, { 1, 6 }, { 6, 1 },
                              { 7, 7 }, { 2, 2 }, { 6, 4 } };
    for (int t = 0; t < 400; t++) {
        int rows = shapes[t % 8][0], cols = shapes[t % 8][1];
        double s[64];
        for (int i = 0; i < rows * cols; i++) {
            s[i] = t % 3 == 0 ? (double)rng_below(&r, 4)         /* many ties */
                              : 2.0 * rng_uniform(&r) - 1.0;      /* signed */
        }
        check_hungarian(s, rows, cols);
    }
}

/* N_PER points around each of three centers 10 apart, spread 0.3, in D = 5. */
enum { BLOB_N_PER = 100, BLOB_K = 3, BLOB_D = 5 };

static void make_blobs(float *x, int32_t *lab)
{
    rng_state r = rng_seeded(5);
    for (int64_t i = 0; i < BLOB_K * BLOB_N_PER; i++) {
        int c = (int)(i % BLOB_K);   /* interleaved, so order carries no hint */
        lab[i] = c;
        for (int j = 0; j < BLOB_D; j++)
            x[i * BLOB_D + j] = (j == c ? 10.0f : 0.0f) + 0.3f * rng_normal(&r);
    }
}

static void test_kmeans_blobs(void)
{
    enum { N = BLOB_K * BLOB_N_PER };
    static float x[N * BLOB_D], c1[BLOB_K * BLOB_D], c2[BLOB_K * BLOB_D];
    static int32_t lab[N], a1[N], a2[N];
    make_blobs(x, lab);

    /* Exact recovery; inertia near N * D * 0.3^2 = 135. */
    double in1 = kmeans_fit(x, N, BLOB_D, BLOB_K, 100, 3, 42, a1, c1);
    CHECK_NEAR(metrics_acc(lab, a1, N), 1.0, 0, 0);
    CHECK_NEAR(metrics_nmi(lab, a1, N), 1.0, 1e-12, 0);
    CHECK_NEAR(in1, 135.0, 0, 0.2);

    /* Same seed, same bits: across calls and for 1, 2 and 3 threads. */
    int saved = omp_get_max_threads();
    for (int threads = 1; threads <= 3; threads++) {
        omp_set_num_threads(threads);
        double in2 = kmeans_fit(x, N, BLOB_D, BLOB_K, 100, 3, 42, a2, c2);
        CHECK(in1 == in2, "%d threads: inertia %.17g vs %.17g", threads, in1, in2);
        CHECK(memcmp(a1, a2, sizeof(a1)) == 0, "%d threads: assignments differ", threads);
        CHECK(memcmp(c1, c2, sizeof(c1)) == 0, "%d threads: centers differ", threads);
    }
    omp_set_num_threads(saved);

    /* K = N: k-means++ picks every (distinct) point once; inertia 0. */
    int32_t a3[12];
    double in3 = kmeans_fit(x, 12, BLOB_D, 12, 10, 1, 7, a3, NULL);
    int seen[12] = { 0 };
    for (int i = 0; i < 12; i++)
        seen[a3[i]]++;
    for (int i = 0; i < 12; i++)
        CHECK(seen[i] == 1, "K = N: cluster %d has %d points", i, seen[i]);
    CHECK_NEAR(in3, 0.0, 0, 0);

    /* Two distinct points, K = 3: a duplicate center leaves a cluster empty
     * and re-seeding must cope; the run ends with labels in range and 0 inertia. */
    float dup[6] = { 0, 0, 0, 10, 10, 10 };
    int32_t a4[6];
    double in4 = kmeans_fit(dup, 6, 1, 3, 20, 2, 3, a4, NULL);
    CHECK_NEAR(in4, 0.0, 0, 0);
    for (int i = 0; i < 6; i++)
        CHECK(a4[i] >= 0 && a4[i] < 3, "duplicates: assign[%d] = %d", i, a4[i]);
    CHECK(a4[0] == a4[1] && a4[0] == a4[2] && a4[3] == a4[4] && a4[3] == a4[5] &&
          a4[0] != a4[3], "duplicates split wrongly");
}

/* Reads a big-endian uint32 from a gz stream; 0 on a short read. */
static int read_be32(gzFile f, uint32_t *v)
{
    unsigned char b[4];
    if (gzread(f, b, 4) != 4)
        return 0;
    *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    return 1;
}

/* Reads an IDX file of uint8 (magic 2051 images or 2049 labels) into a new
 * buffer; returns the item count, or -1 if missing or malformed. */
static int64_t read_idx_u8(const char *path, uint32_t magic, int64_t *item_bytes,
                           unsigned char **out)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return -1;
    uint32_t m = 0, n = 0, rows = 1, cols = 1;
    int ok = read_be32(f, &m) && m == magic && read_be32(f, &n);
    if (ok && magic == 2051)
        ok = read_be32(f, &rows) && read_be32(f, &cols);
    int64_t bytes = (int64_t)n * rows * cols;
    *out = ok ? ecl_malloc((size_t)bytes) : NULL;
    ok = ok && gzread(f, *out, (unsigned)bytes) == (int)bytes;
    gzclose(f);
    if (!ok) {
        free(*out);
        return -1;
    }
    *item_bytes = (int64_t)rows * cols;
    return n;
}

/* K-means on the raw MNIST pixels: published ACC is about 0.53. */
static void test_kmeans_mnist(void)
{
    const char *dir = "/work/shared/data/mnist-10k/";
    char img_path[256], lab_path[256];
    snprintf(img_path, sizeof(img_path), "%simages-idx3-ubyte.gz", dir);
    snprintf(lab_path, sizeof(lab_path), "%slabels-idx1-ubyte.gz", dir);
    unsigned char *pix = NULL, *lab8 = NULL;
    int64_t d = 0, one = 0;
    int64_t n = read_idx_u8(img_path, 2051, &d, &pix);
    int64_t n_lab = read_idx_u8(lab_path, 2049, &one, &lab8);
    if (n < 0 || n_lab != n) {
        printf("test_metrics: skipping MNIST K-means (%s or labels missing/unreadable)\n",
               img_path);
        free(pix);
        free(lab8);
        return;
    }

    /* Pixels to [0, 1]. */
    float *x = ecl_malloc((size_t)(n * d) * sizeof(float));     /* [N, 784] */
    int32_t *lab = ecl_malloc((size_t)n * sizeof(int32_t));     /* [N] */
    int32_t *assign = ecl_malloc((size_t)n * sizeof(int32_t));  /* [N] */
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)pix[i] / 255.0f;
    for (int64_t i = 0; i < n; i++)
        lab[i] = lab8[i];

    double t0 = ecl_now_s();
    double inertia = kmeans_fit(x, n, d, 10, 100, 3, 0, assign, NULL);
    double secs = ecl_now_s() - t0;
    double acc = metrics_acc(lab, assign, n);
    printf("test_metrics: MNIST %lld x %lld K-means K=10: ACC %.4f NMI %.4f ARI %.4f "
           "inertia %.6g, %.2f s on %d threads\n", (long long)n, (long long)d, acc,
           metrics_nmi(lab, assign, n), metrics_ari(lab, assign, n), inertia, secs,
           omp_get_max_threads());
    CHECK(acc >= 0.45 && acc <= 0.65, "MNIST K-means ACC %.4f outside [0.45, 0.65]", acc);
    free(pix);
    free(lab8);
    free(x);
    free(lab);
    free(assign);
}

int main(void)
{
    ecl_log_set_level(0);
    test_empty();
    test_perfect_permuted();
    test_rectangular_by_hand();
    test_noncontiguous_and_excluded();
    test_constant();
    test_sklearn_example();
    test_majority_overclustered();
    test_hungarian();
    test_kmeans_blobs();
    test_kmeans_mnist();
    return check_summary("test_metrics");
}
