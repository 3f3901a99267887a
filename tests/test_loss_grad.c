/*
 * test_loss_grad.c - the loss's logit gradient, and the whole vgg4 + loss
 * gradient with y fixed, against central finite differences.
 *
 * Logit level: the loss is smooth, so FD in float with h = 1e-2 on a loss
 * accumulated in double matches to LOGIT_ABS + LOGIT_REL |g|.
 * Whole model: ReLU and max-pool have kinks a step can cross, so each
 * parameter tensor is probed at a few coordinates with h = 1e-3 and must
 * agree at all but at most one of them (a crossed kink), to MODEL_ABS +
 * MODEL_REL |g|; both thresholds sit well above float rounding of the loss
 * (1e-7 x |L| / h ~ 1e-4) and far below a wrong gradient's error.
 */
#include "check.h"
#include "ecl/core.h"
#include "ecl/em.h"
#include "ecl/loss.h"
#include "ecl/model.h"
#include "ecl/ops.h"
#include "ecl/rng.h"

#include <stdlib.h>
#include <string.h>

#define LOGIT_ABS 1e-4
#define LOGIT_REL 1e-2
#define MODEL_ABS 3e-3
#define MODEL_REL 3e-2

static rng_state rng;

/* Pseudo-labels for the clean view from its softmax, by a few EM steps. */
static void make_y(const float *logits, float *y, int64_t b, int k)
{
    float *sigma = ecl_malloc((size_t)(b * k) * sizeof(float));
    softmax_forward_cpu(logits, sigma, b, k);
    em_solve_cpu(sigma, y, b, k, NULL, 10.0, 5, 0.0, 1);
    free(sigma);
}

static double loss_value(const float *logits, const float *y, int64_t b, int k, int views,
                         const loss_weights *lw, float *scratch)
{
    loss_terms t;
    loss_ecl_cpu(logits, y, b, k, views, lw, NULL, scratch, &t);
    return t.total;
}

/* FD over the logits of views [v0, v1): the augmentation target sigma_0
 * is held fixed in the analytic gradient, so view 0 is only probed with
 * alpha = 0. */
static void check_logit_grad(const char *name, const loss_weights *lw, int views, int v0)
{
    int64_t b = 5;
    int k = 4;
    int64_t n = (views + 1) * b * k;
    float *z = ecl_malloc((size_t)n * sizeof(float)), *g = ecl_malloc((size_t)n * sizeof(float));
    float *scratch = ecl_malloc((size_t)n * sizeof(float));
    float *y = ecl_malloc((size_t)(b * k) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        z[i] = 2.0f * rng_normal(&rng);
    make_y(z, y, b, k);

    loss_terms t;
    loss_ecl_cpu(z, y, b, k, views, lw, NULL, g, &t);
    double worst = 0.0;
    for (int64_t i = v0 * b * k; i < n; i++) {
        float keep = z[i];
        z[i] = keep + 1e-2f;
        double lp = loss_value(z, y, b, k, views, lw, scratch);
        z[i] = keep - 1e-2f;
        double lm = loss_value(z, y, b, k, views, lw, scratch);
        z[i] = keep;
        double fd = (lp - lm) / 2e-2;
        worst = fmax(worst, fabs(fd - g[i]) - (LOGIT_ABS + LOGIT_REL * fabs(fd)));
    }
    CHECK(worst <= 0.0, "%s: logit gradient off by %.3g beyond tolerance", name, worst);
    free(z); free(g); free(scratch); free(y);
}

static void test_logit_gradients(void)
{
    loss_weights lw = { 100.0f, 0.0f, 0.0f, 0.0f, 1e-12f, AUG_KL };
    check_logit_grad("reverse CE", &lw, 0, 0);
    lw.forward_ce = 0.7f;
    check_logit_grad("reverse + forward CE", &lw, 0, 0);

    /* Each augmentation form, on the augmented views' logits. */
    const char *forms[] = { "kl", "sym_kl", "ce", "dot" };
    for (int f = 0; f < 4; f++) {
        lw.alpha = 1.3f;
        lw.aug = (aug_form)loss_aug_form_parse(forms[f]);
        check_logit_grad(forms[f], &lw, 2, 1);
    }
    CHECK(loss_aug_form_parse("nope") == -1, "unknown form accepted");
}

/* Hand-checked values for a 1-image, 2-cluster case. */
static void test_loss_values(void)
{
    float z[4] = { 0.0f, 0.0f, 1.0f, -1.0f }, y[2] = { 0.25f, 0.75f }, g[4];
    loss_weights lw = { 2.0f, 0.0f, 1.0f, 0.5f, 1e-12f, AUG_KL };
    loss_terms t;
    loss_ecl_cpu(z, y, 1, 2, 1, &lw, NULL, g, &t);
    double q0 = 1.0 / (1.0 + exp(-2.0));
    CHECK_NEAR(t.rce, -0.5 * (log(0.25) + log(0.75)), 1e-6, 0);
    CHECK_NEAR(t.fce, log(2.0), 1e-6, 0);
    CHECK_NEAR(t.fairness, 0.5 * log(0.5 / 0.25) + 0.5 * log(0.5 / 0.75), 1e-6, 0);
    CHECK_NEAR(t.aug, 0.5 * log(0.5 / q0) + 0.5 * log(0.5 / (1.0 - q0)), 1e-6, 0);
    CHECK_NEAR(t.total, t.rce + 2.0 * t.fairness + t.aug + 0.5 * t.fce, 1e-9, 0);

    float w[3] = { 1.0f, -2.0f, 0.5f }, gw[3] = { 0.0f, 0.0f, 0.0f };
    lw.gamma = 0.1f;
    double before = t.total;
    loss_head_norm_cpu(w, 3, &lw, gw, &t);
    CHECK_NEAR(t.head_norm, 5.25, 1e-9, 0);
    CHECK_NEAR(t.total, before + 0.525, 1e-6, 0);
    CHECK_NEAR(gw[1], -0.4, 1e-7, 0);
}

/* ---- the whole model ------------------------------------------------------ */

typedef struct {
    model net;
    const float *x;
    int64_t n;          /* images = (views + 1) * b */
    int64_t b;
    int views, k, heads;
    float *logits, *dlogits, *y;   /* [H, n, K], [H, n, K], [H, b, K] */
    loss_weights lw;
} model_ctx;

/* Sum over heads of each head's loss and norm penalty. */
static double model_loss(model_ctx *c)
{
    double total = 0.0;
    model_forward(&c->net, c->x, c->n, 1, c->logits);
    for (int h = 0; h < c->heads; h++) {
        loss_terms t;
        int64_t off = h * c->n * c->k;
        loss_ecl_cpu(c->logits + off, c->y + h * c->b * c->k, c->b, c->k, c->views, &c->lw,
                     NULL, c->dlogits + off, &t);
        const param *w = c->net.head_w[h];
        double sq = 0.0;
        for (int64_t i = 0; i < w->n; i++)
            sq += (double)w->value[i] * w->value[i];
        total += t.total + c->lw.gamma * sq;
    }
    return total;
}

static void test_model_gradient(int head_bn, int heads)
{
    config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model.name, sizeof cfg.model.name, "vgg4");
    cfg.model.clusters = 3;
    cfg.model.width = 2;
    cfg.model.head_bn = head_bn;
    cfg.model.logit_scale = 0.5f;
    cfg.model.heads = heads;

    model_ctx c;
    c.b = 4;
    c.views = 1;
    c.n = 8;
    c.k = 3;
    c.heads = heads;
    c.lw = (loss_weights){ 10.0f, 0.05f, 1.0f, 0.2f, 1e-12f, AUG_KL };
    model_init(&c.net, &cfg, 2, 10, 9, 11);
    int64_t img = 2 * 10 * 9;
    float *x = ecl_malloc((size_t)(c.n * img) * sizeof(float));
    for (int64_t i = 0; i < c.n * img; i++)
        x[i] = rng_normal(&rng);
    c.x = x;
    c.logits = ecl_malloc((size_t)(heads * c.n * c.k) * sizeof(float));
    c.dlogits = ecl_malloc((size_t)(heads * c.n * c.k) * sizeof(float));
    c.y = ecl_malloc((size_t)(heads * c.b * c.k) * sizeof(float));

    /* y from the clean view, then fixed. The augmentation target (the
     * clean view's sigma) moves with the params while the analytic
     * gradient holds it fixed, so this check runs with alpha = 0; the
     * augmentation gradient is checked at the logit level above. */
    c.lw.alpha = 0.0f;
    model_forward(&c.net, c.x, c.n, 1, c.logits);
    for (int h = 0; h < heads; h++)
        make_y(c.logits + h * c.n * c.k, c.y + h * c.b * c.k, c.b, c.k);
    model_loss(&c);
    model_backward(&c.net, c.dlogits, c.n);
    for (int h = 0; h < heads; h++) {
        loss_terms t = { 0 };
        param *w = c.net.head_w[h];
        loss_head_norm_cpu(w->value, w->n, &c.lw, w->grad, &t);
    }

    for (int p = 0; p < c.net.n_params; p++) {
        param *pr = &c.net.params[p];
        float *g = ecl_malloc((size_t)pr->n * sizeof(float));
        memcpy(g, pr->grad, (size_t)pr->n * sizeof(float));
        int bad = 0, probes = pr->n < 6 ? (int)pr->n : 6;
        double worst = 0.0;
        for (int q = 0; q < probes; q++) {
            int64_t i = (int64_t)rng_below(&rng, (uint64_t)pr->n);
            float keep = pr->value[i];
            pr->value[i] = keep + 1e-3f;
            double lp = model_loss(&c);
            pr->value[i] = keep - 1e-3f;
            double lm = model_loss(&c);
            pr->value[i] = keep;
            double fd = (lp - lm) / 2e-3;
            double excess = fabs(fd - g[i]) - (MODEL_ABS + MODEL_REL * fabs(fd));
            bad += excess > 0.0;
            worst = fmax(worst, excess);
        }
        CHECK(bad <= 1, "%s (head_bn %d, heads %d): %d of %d probes off, worst by %.3g",
              pr->name, head_bn, heads, bad, probes, worst);
        free(g);
    }
    model_free(&c.net);
    free(x); free(c.logits); free(c.dlogits); free(c.y);
}

int main(void)
{
    rng = rng_seeded(3);
    test_logit_gradients();
    test_loss_values();
    test_model_gradient(1, 1);
    test_model_gradient(0, 1);
    test_model_gradient(1, 3);
    return check_summary("test_loss_grad");
}
