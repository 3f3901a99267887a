/*
 * metrics.h - clustering scores and the K-means baseline.
 *
 * Labels and clusters are arbitrary int32 values (not necessarily 0..C-1);
 * samples whose label is negative (unknown) are left out of every score.
 * Counting is done in 64-bit integers and doubles.
 */
#ifndef ECL_METRICS_H
#define ECL_METRICS_H

#include <stdint.h>

/* Accuracy under the best one-to-one matching of clusters to classes
 * (Hungarian algorithm on the contingency table; rectangular when the
 * counts differ: unmatched clusters count as wrong). */
double metrics_acc(const int32_t *labels, const int32_t *clusters, int64_t n);
/* Accuracy when each cluster takes its majority class (many-to-one; for
 * overclustering). */
double metrics_acc_majority(const int32_t *labels, const int32_t *clusters, int64_t n);
/* Normalised mutual information, arithmetic-mean normalisation
 * (scikit-learn's default); 1.0 when both labelings are constant. */
double metrics_nmi(const int32_t *labels, const int32_t *clusters, int64_t n);
/* Adjusted Rand index; 1.0 when both labelings are identical partitions. */
double metrics_ari(const int32_t *labels, const int32_t *clusters, int64_t n);

/* Solves the rectangular assignment problem maximising sum of score[r][c]
 * over a matching of min(rows, cols) pairs. score is [rows, cols] row-major.
 * match[r] = matched column or -1. */
void metrics_hungarian_max(const double *score, int rows, int cols, int *match);

/* K-means with k-means++ seeding on x [N, D]; the best of n_init runs by
 * inertia. Writes assign [N] (0..k-1) and, if non-NULL, centers [k, D].
 * Deterministic in seed; returns the inertia. Uses OpenMP over samples. */
double kmeans_fit(const float *x, int64_t n, int64_t d, int k, int max_iter,
                  int n_init, uint64_t seed, int32_t *assign, float *centers);

#endif
