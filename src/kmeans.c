/*
 * kmeans.c - the K-means baseline: k-means++ seeding (D^2 sampling), Lloyd
 * iterations, empty clusters re-seeded from the farthest point, best of
 * n_init runs by inertia.
 *
 * Deterministic in the seed whatever the thread count: OpenMP only splits
 * work whose result per element does not depend on the split (one distance
 * per sample; one center coordinate summed over samples in index order), and
 * every sum over samples is taken serially in a fixed order, in double.
 *
 * Not here: mini-batch K-means, Elkan/Hamerly bounds, the greedy k-means++
 * variant with several candidates per step (scikit-learn's default).
 *
 * Shape legend: N samples, D features, K clusters.
 */
#include "ecl/metrics.h"

#include "ecl/core.h"
#include "ecl/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One K-means run's working state. */
typedef struct {
    const float *x;     /* [N, D] */
    int64_t n, d;
    int k;
    float *centers;     /* [K, D] */
    int32_t *assign;    /* [N] */
    float *dist;        /* [N] squared distance to the assigned center */
    int64_t *counts;    /* [K] */
    double *sums;       /* [K, D] */
} kmeans_run;

/* Squared Euclidean distance. The simd reduction order is fixed at compile
 * time, so every thread gets the same bits for the same pair. */
static float kmeans_dist2(const float *a, const float *b, int64_t d)
{
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < d; j++) {
        float diff = a[j] - b[j];
        acc += diff * diff;
    }
    return acc;
}

/* Squared distances from a to four consecutive centers c[0..4) (each of
 * length d): one pass over a with four independent sums in flight, about
 * 1.6x faster than four kmeans_dist2 calls (measured, D = 784). */
static void kmeans_dist2_x4(const float *a, const float *c, int64_t d, float *out)
{
    const float *c0 = c, *c1 = c + d, *c2 = c + 2 * d, *c3 = c + 3 * d;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t j = 0; j < d; j++) {
        float e0 = a[j] - c0[j], e1 = a[j] - c1[j];
        float e2 = a[j] - c2[j], e3 = a[j] - c3[j];
        s0 += e0 * e0;
        s1 += e1 * e1;
        s2 += e2 * e2;
        s3 += e3 * e3;
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* Nearest center to a (lowest index on ties); its squared distance in *d2.
 * Centers go in fixed groups of four, then one by one, whatever the thread. */
static int32_t kmeans_nearest(const kmeans_run *s, const float *a, float *d2)
{
    float dist[4];
    int32_t best = -1;
    float best_d2 = INFINITY;
    int c = 0;
    for (; c + 4 <= s->k; c += 4) {
        kmeans_dist2_x4(a, s->centers + (int64_t)c * s->d, s->d, dist);
        for (int t = 0; t < 4; t++) {
            if (dist[t] < best_d2 || best < 0) {
                best_d2 = dist[t];
                best = c + t;
            }
        }
    }
    for (; c < s->k; c++) {
        float dc = kmeans_dist2(a, s->centers + (int64_t)c * s->d, s->d);
        if (dc < best_d2 || best < 0) {
            best_d2 = dc;
            best = c;
        }
    }
    *d2 = best_d2;
    return best;
}

/* Uniform double in [0, 1) from 53 random bits. */
static double kmeans_uniform(rng_state *r)
{
    return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Index i drawn with probability w[i] / sum(w), or uniformly if all are 0. */
static int64_t kmeans_sample_weighted(const float *w, int64_t n, rng_state *r)
{
    /* The total is summed serially in index order, so it does not depend on threads. */
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += w[i];
    if (total <= 0.0)
        return (int64_t)rng_below(r, (uint64_t)n);

    /* First index whose running sum passes the target; the last positive one
     * catches rounding at the top end. */
    double target = kmeans_uniform(r) * total, run = 0.0;
    int64_t last = 0;
    for (int64_t i = 0; i < n; i++) {
        if (w[i] <= 0.0f)
            continue;
        run += w[i];
        last = i;
        if (run > target)
            return i;
    }
    return last;
}

/* k-means++: the first center uniform, each next one drawn with probability
 * proportional to the squared distance to the nearest center chosen so far. */
static void kmeans_seed(kmeans_run *s, rng_state *r)
{
    const int64_t n = s->n, d = s->d;
    int64_t first = (int64_t)rng_below(r, (uint64_t)n);
    memcpy(s->centers, s->x + first * d, (size_t)d * sizeof(float));

    /* dist holds the D^2 weights: distance to the nearest chosen center. */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        s->dist[i] = kmeans_dist2(s->x + i * d, s->centers, d);

    for (int c = 1; c < s->k; c++) {
        int64_t pick = kmeans_sample_weighted(s->dist, n, r);
        float *center = s->centers + (int64_t)c * d;
        memcpy(center, s->x + pick * d, (size_t)d * sizeof(float));
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float d2 = kmeans_dist2(s->x + i * d, center, d);
            s->dist[i] = d2 < s->dist[i] ? d2 : s->dist[i];
        }
    }
}

/* Assigns every sample to its nearest center (lowest index on ties);
 * returns how many assignments changed. */
static int64_t kmeans_assign(kmeans_run *s)
{
    int64_t changed = 0;
#pragma omp parallel for schedule(static) reduction(+ : changed)
    for (int64_t i = 0; i < s->n; i++) {
        float best_d2;
        int32_t best = kmeans_nearest(s, s->x + i * s->d, &best_d2);
        changed += s->assign[i] != best;
        s->assign[i] = best;
        s->dist[i] = best_d2;
    }
    return changed;
}

/* Gives each empty cluster the sample farthest from its own center, taken
 * from a cluster with more than one member (one always exists while N >= K). */
static void kmeans_fill_empty(kmeans_run *s)
{
    memset(s->counts, 0, (size_t)s->k * sizeof(int64_t));
    for (int64_t i = 0; i < s->n; i++)
        s->counts[s->assign[i]]++;

    for (int c = 0; c < s->k; c++) {
        if (s->counts[c] > 0)
            continue;
        int64_t far = -1;
        for (int64_t i = 0; i < s->n; i++) {
            if (s->counts[s->assign[i]] > 1 && (far < 0 || s->dist[i] > s->dist[far]))
                far = i;
        }
        ECL_CHECK(far >= 0, "kmeans: no sample to re-seed empty cluster %d", c);
        s->counts[s->assign[far]]--;
        s->counts[c] = 1;
        s->assign[far] = c;
        s->dist[far] = 0.0f;   /* it is its new center: never picked twice */
    }
}

/* Centers = means of their members. Threads split the coordinates; each
 * coordinate is summed over samples in index order, in double. */
static void kmeans_update_centers(kmeans_run *s)
{
    const int64_t n = s->n, d = s->d;
    memset(s->sums, 0, (size_t)s->k * (size_t)d * sizeof(double));
    const int64_t block = 64;
#pragma omp parallel for schedule(static)
    for (int64_t j0 = 0; j0 < d; j0 += block) {
        int64_t j1 = j0 + block < d ? j0 + block : d;
        for (int64_t i = 0; i < n; i++) {
            double *sum = s->sums + (int64_t)s->assign[i] * d;
            const float *xi = s->x + i * d;
#pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                sum[j] += xi[j];
        }
    }

    /* Every count is >= 1 here (kmeans_fill_empty ran first). */
    for (int c = 0; c < s->k; c++) {
        for (int64_t j = 0; j < d; j++) {
            double mean = s->sums[(int64_t)c * d + j] / (double)s->counts[c];
            s->centers[(int64_t)c * d + j] = (float)mean;
        }
    }
}

/* Sum of squared distances to the assigned centers, serially in index order. */
static double kmeans_inertia(const kmeans_run *s)
{
    double total = 0.0;
    for (int64_t i = 0; i < s->n; i++)
        total += s->dist[i];
    return total;
}

/* One seeded run of Lloyd's algorithm; returns its inertia. */
static double kmeans_run_once(kmeans_run *s, int max_iter, rng_state *r, int run_id)
{
    kmeans_seed(s, r);
    for (int64_t i = 0; i < s->n; i++)
        s->assign[i] = -1;
    kmeans_assign(s);

    /* Lloyd: move centers to their means, reassign; stop when nothing moves. */
    int iter = 0;
    int64_t changed = 1;
    while (iter < max_iter && changed > 0) {
        kmeans_fill_empty(s);
        kmeans_update_centers(s);
        changed = kmeans_assign(s);
        iter++;
    }
    double inertia = kmeans_inertia(s);
    ecl_log_info("kmeans: run %d: %d iterations%s, inertia %.6g", run_id, iter,
                 changed > 0 ? " (max_iter reached, not converged)" : "", inertia);
    return inertia;
}

double kmeans_fit(const float *x, int64_t n, int64_t d, int k, int max_iter,
                  int n_init, uint64_t seed, int32_t *assign, float *centers)
{
    ECL_CHECK(x && assign, "kmeans: x and assign must not be NULL");
    ECL_CHECK(n > 0 && d > 0, "kmeans: need N > 0 and D > 0, got N=%lld D=%lld",
              (long long)n, (long long)d);
    ECL_CHECK(k >= 1 && k <= n, "kmeans: need 1 <= K <= N, got K=%d N=%lld", k,
              (long long)n);
    ECL_CHECK(max_iter >= 0 && n_init >= 1, "kmeans: need max_iter >= 0 and n_init >= 1, "
              "got %d and %d", max_iter, n_init);

    size_t kd = (size_t)k * (size_t)d;
    kmeans_run s = {
        .x = x, .n = n, .d = d, .k = k,
        .centers = ecl_malloc(kd * sizeof(float)),
        .assign = ecl_malloc((size_t)n * sizeof(int32_t)),
        .dist = ecl_malloc((size_t)n * sizeof(float)),
        .counts = ecl_malloc((size_t)k * sizeof(int64_t)),
        .sums = ecl_malloc(kd * sizeof(double)),
    };

    /* Independent stream per run; the first run with the lowest inertia wins. */
    double best = INFINITY;
    for (int run = 0; run < n_init; run++) {
        rng_state r = rng_derive(seed, 0x6b6d65616e73ULL, (uint64_t)run);
        double inertia = kmeans_run_once(&s, max_iter, &r, run);
        if (inertia < best || run == 0) {
            best = inertia;
            memcpy(assign, s.assign, (size_t)n * sizeof(int32_t));
            if (centers)
                memcpy(centers, s.centers, kd * sizeof(float));
        }
    }
    free(s.centers);
    free(s.assign);
    free(s.dist);
    free(s.counts);
    free(s.sums);
    return best;
}
