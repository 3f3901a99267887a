/*
 * loss.c - the entropy-clustering loss and its logit gradient on the CPU
 * (see loss.h for the formula). Per row, in double; rows are independent,
 * so OpenMP over rows changes no bits.
 */
#include "ecl/loss.h"
#include "ecl/core.h"

#include <math.h>
#include <string.h>

int loss_aug_form_parse(const char *name)
{
    static const char *names[] = { "kl", "sym_kl", "ce", "dot" };
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

/* log-softmax of z [K] into ls [K], softmax into p [K], in double. */
static void log_softmax_row(const float *z, int k, double *ls, double *p)
{
    double mx = z[0], sum = 0.0;
    for (int j = 1; j < k; j++)
        mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < k; j++)
        sum += exp(z[j] - mx);
    double lse = mx + log(sum);
    for (int j = 0; j < k; j++) {
        ls[j] = z[j] - lse;
        p[j] = exp(ls[j]);
    }
}

/* View-0 terms of one image: reverse and forward CE, and their gradient
 * (scaled by 1/B) into dz. */
static void clean_row(const float *z, const float *y, int k, const loss_weights *lw,
                      double inv_b, double *ls, double *p, double *ly, float *dz,
                      double *rce, double *fce)
{
    log_softmax_row(z, k, ls, p);

    /* Reverse CE: H(sigma, y) = -sum sigma log y, y clamped at y_eps.
     * dH/dz_j = sigma_j (sum_k sigma_k log y_k - log y_j). */
    double s_ly = 0.0, f = 0.0, ysum = 0.0;
    for (int j = 0; j < k; j++) {
        ly[j] = log(y[j] > lw->y_eps ? y[j] : lw->y_eps);
        s_ly += p[j] * ly[j];
        f -= y[j] * ls[j];
        ysum += y[j];
    }
    *rce = -s_ly;
    *fce = f;

    /* Forward CE: H(y, sigma) = -sum y log sigma; gradient sigma sum(y) - y. */
    for (int j = 0; j < k; j++) {
        double g = p[j] * (s_ly - ly[j]) + lw->forward_ce * (p[j] * ysum - y[j]);
        dz[j] = (float)(g * inv_b);
    }
}

/* One augmented view against the fixed target p0 (log lp0): the divergence
 * value, and its gradient with respect to z (times scale) into dz. */
static double aug_row(const float *z, const double *p0, const double *lp0, int k,
                      aug_form form, double scale, double *lq, double *q, float *dz)
{
    log_softmax_row(z, k, lq, q);
    double kl_pq = 0.0, kl_qp = 0.0, ce = 0.0, dot = 0.0;
    for (int j = 0; j < k; j++) {
        kl_pq += p0[j] > 0.0 ? p0[j] * (lp0[j] - lq[j]) : 0.0;
        kl_qp += q[j] * (lq[j] - lp0[j]);
        ce -= p0[j] * lq[j];
        dot += p0[j] * q[j];
    }
    for (int j = 0; j < k; j++) {
        double g;
        switch (form) {
        case AUG_SYM_KL:
            /* d KL(q||p)/dz_j = q_j ((log q_j - log p_j) - KL(q||p)). */
            g = (q[j] - p0[j]) + q[j] * ((lq[j] - lp0[j]) - kl_qp);
            break;
        case AUG_DOT:
            g = -q[j] * (p0[j] - dot);
            break;
        default: /* KL(p||q) and H(p, q) share the gradient q - p. */
            g = q[j] - p0[j];
            break;
        }
        dz[j] = (float)(g * scale);
    }
    switch (form) {
    case AUG_SYM_KL: return kl_pq + kl_qp;
    case AUG_CE: return ce;
    case AUG_DOT: return -dot;
    default: return kl_pq;
    }
}

void loss_ecl_cpu(const float *logits, const float *y, int64_t b, int k, int views,
                  const loss_weights *lw, const float *u, float *dlogits, loss_terms *t)
{
    double rce = 0.0, fce = 0.0, aug = 0.0, inv_b = 1.0 / (double)b;
    double aug_scale = views > 0 ? lw->alpha / ((double)b * views) : 0.0;
    ECL_CHECK(k <= LOSS_MAX_K, "loss_ecl_cpu: K = %d exceeds LOSS_MAX_K (%d)", k, LOSS_MAX_K);

    /* Per image: clean-view terms, then every augmented view. */
    #pragma omp parallel for reduction(+ : rce, fce, aug) schedule(static)
    for (int64_t i = 0; i < b; i++) {
        double ls[LOSS_MAX_K], p[LOSS_MAX_K], ly[LOSS_MAX_K], lq[LOSS_MAX_K], q[LOSS_MAX_K];
        double r, f;
        clean_row(logits + i * k, y + i * k, k, lw, inv_b, ls, p, ly, dlogits + i * k, &r, &f);
        rce += r;
        fce += f;
        for (int v = 1; v <= views; v++) {
            int64_t row = ((int64_t)v * b + i) * k;
            aug += aug_row(logits + row, p, ls, k, lw->aug, aug_scale, lq, q, dlogits + row);
        }
    }

    /* Fairness KL(u || ybar): depends on y only, so no logit gradient. */
    double fair = 0.0;
    for (int j = 0; j < k; j++) {
        double ybar = 0.0, uj = u ? u[j] : 1.0 / k;
        for (int64_t i = 0; i < b; i++)
            ybar += y[i * k + j];
        ybar /= (double)b;
        fair += uj > 0.0 ? uj * log(uj / (ybar > 1e-30 ? ybar : 1e-30)) : 0.0;
    }

    t->rce = rce * inv_b;
    t->fce = fce * inv_b;
    t->aug = views > 0 ? aug / ((double)b * views) : 0.0;
    t->fairness = fair;
    t->head_norm = 0.0;
    t->total = t->rce + lw->lambda * t->fairness + lw->alpha * t->aug
             + lw->forward_ce * t->fce;
}

void loss_head_norm_cpu(const float *w, int64_t n, const loss_weights *lw, float *grad,
                        loss_terms *t)
{
    double sq = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sq += (double)w[i] * w[i];
        grad[i] += 2.0f * lw->gamma * w[i];
    }
    t->head_norm = sq;
    t->total += lw->gamma * sq;
}
