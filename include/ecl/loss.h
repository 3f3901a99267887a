/*
 * loss.h - the entropy-clustering loss of a batch (DESIGN.md section 1,
 * paper eq. 42) and its gradient with respect to the logits, with the
 * pseudo-labels y held fixed (they come from the EM solve, em.h).
 *
 * Shape legend: B images, K clusters, V augmented views per image; the
 * logits of all views are stacked [(V + 1), B, K], view 0 the clean image.
 *
 *   L = (1/B) sum_i H(sigma_i, y_i)            reverse cross-entropy
 *     + lambda KL(u || ybar)                   strong fairness (y only)
 *     + gamma ||W||^2                          head norm, bias excluded
 *     + alpha L_aug                            self-augmentation
 *     + beta (1/B) sum_i H(y_i, sigma_i)       forward CE (0 = paper's loss)
 *
 * sigma_i is the softmax of view 0. L_aug averages, over images and views,
 * a divergence between sigma_i (held fixed: no gradient) and the softmax
 * of view v. The head-norm term lives with the head weights
 * (loss_head_norm_cpu), not with the logits.
 */
#ifndef ECL_LOSS_H
#define ECL_LOSS_H

#include <stdint.h>

typedef enum { AUG_KL, AUG_SYM_KL, AUG_CE, AUG_DOT } aug_form;

/* Parses "kl" | "sym_kl" | "ce" | "dot"; -1 when unknown. */
int loss_aug_form_parse(const char *name);

typedef struct {
    float lambda, gamma, alpha, forward_ce;
    float y_eps;         /* y clamped to at least this before its log */
    aug_form aug;
} loss_weights;

typedef struct {
    double rce;          /* (1/B) sum_i H(sigma_i, y_i) */
    double fairness;     /* KL(u || ybar) */
    double head_norm;    /* ||W||^2 */
    double aug;          /* L_aug */
    double fce;          /* (1/B) sum_i H(y_i, sigma_i) */
    double total;        /* the weighted sum above */
} loss_terms;

/* Largest K the CPU loss handles (row buffers live on the stack). */
#define LOSS_MAX_K 1024

/* Terms of L except the head norm (head_norm = 0, total without it), and
 * dlogits [(V+1), B, K] (written). u [K] target distribution, NULL =
 * uniform. */
void loss_ecl_cpu(const float *logits, const float *y, int64_t b, int k, int views,
                  const loss_weights *lw, const float *u, float *dlogits, loss_terms *t);

/* Sets t->head_norm = ||W||^2 over the n head weights, adds gamma times it
 * to t->total and 2 gamma W to grad (accumulates: the head's data
 * gradient is already there). */
void loss_head_norm_cpu(const float *w, int64_t n, const loss_weights *lw, float *grad,
                        loss_terms *t);

#endif
