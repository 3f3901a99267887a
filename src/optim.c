/*
 * optim.c - Adam (decoupled weight decay) and SGD with momentum, and the
 * learning-rate schedule (see optim.h).
 */
#include "ecl/optim.h"
#include "ecl/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void optim_init(optimizer *o, const config *cfg, const model *m)
{
    memset(o, 0, sizeof *o);
    o->adam = strcmp(cfg->optim.name, "adam") == 0;
    o->beta1 = cfg->optim.beta1;
    o->beta2 = cfg->optim.beta2;
    o->eps = cfg->optim.eps;
    o->weight_decay = cfg->optim.weight_decay;
    o->momentum = cfg->optim.momentum;
    o->n = m->n_params;
    for (int i = 0; i < o->n; i++) {
        o->m1[i] = ecl_calloc((size_t)m->params[i].n, sizeof(float));
        o->m2[i] = o->adam ? ecl_calloc((size_t)m->params[i].n, sizeof(float)) : NULL;
    }
}

void optim_free(optimizer *o)
{
    for (int i = 0; i < o->n; i++) {
        free(o->m1[i]);
        free(o->m2[i]);
    }
    memset(o, 0, sizeof *o);
}

static void adam_update(optimizer *o, param *p, float *m1, float *m2, float lr)
{
    /* Bias corrections folded into the step size and the denominator. */
    double bc1 = 1.0 - pow(o->beta1, (double)o->step);
    double bc2 = 1.0 - pow(o->beta2, (double)o->step);
    float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
    float shrink = p->decay ? 1.0f - lr * o->weight_decay : 1.0f;
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps;

    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < p->n; i++) {
        float g = p->grad[i];
        m1[i] = b1 * m1[i] + (1.0f - b1) * g;
        m2[i] = b2 * m2[i] + (1.0f - b2) * g * g;
        p->value[i] = p->value[i] * shrink - step * m1[i] / (sqrtf(m2[i]) * rbc2 + eps);
    }
}

static void sgd_update(optimizer *o, param *p, float *buf, float lr)
{
    float wd = p->decay ? o->weight_decay : 0.0f, mu = o->momentum;
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < p->n; i++) {
        float g = p->grad[i] + wd * p->value[i];
        buf[i] = mu * buf[i] + g;
        p->value[i] -= lr * buf[i];
    }
}

void optim_step(optimizer *o, model *m, float lr)
{
    o->step++;
    for (int i = 0; i < o->n; i++) {
        if (o->adam)
            adam_update(o, &m->params[i], o->m1[i], o->m2[i], lr);
        else
            sgd_update(o, &m->params[i], o->m1[i], lr);
    }
}

float optim_lr_at(const config *cfg, int64_t step, int64_t total, int64_t warmup_steps)
{
    float lr = cfg->optim.lr;
    if (step < warmup_steps)
        return lr * (float)(step + 1) / (float)warmup_steps;
    if (strcmp(cfg->optim.schedule, "cosine") != 0 || total <= warmup_steps)
        return lr;
    double t = (double)(step - warmup_steps) / (double)(total - warmup_steps);
    return (float)(0.5 * lr * (1.0 + cos(3.141592653589793 * t)));
}
