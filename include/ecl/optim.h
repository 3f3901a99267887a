/*
 * optim.h - optimisers over a model's parameters and the learning-rate
 * schedule.
 *
 * Adam uses decoupled weight decay (the AdamW form, Loshchilov & Hutter):
 * p <- p (1 - lr wd) before the Adam step, on params whose `decay` flag is
 * set (conv weights; not BN parameters, biases or the head, which has the
 * gamma penalty of the loss). PyTorch's Adam(weight_decay=...) adds wd p to
 * the gradient instead; the paper's 0.01 is read here as the AdamW form.
 * SGD uses momentum and classic (coupled) L2 decay, as torch.optim.SGD.
 */
#ifndef ECL_OPTIM_H
#define ECL_OPTIM_H

#include <stdint.h>

#include "ecl/config.h"
#include "ecl/model.h"

typedef struct {
    int adam;                          /* 1 Adam, 0 SGD */
    float beta1, beta2, eps, weight_decay, momentum;
    int64_t step;                      /* updates done */
    float *m1[MODEL_MAX_PARAMS];       /* first moment / momentum [param n] */
    float *m2[MODEL_MAX_PARAMS];       /* second moment [param n]; NULL for SGD */
    int n;
} optimizer;

/* Zeroed moments for every param of m. Free with optim_free(). */
void optim_init(optimizer *o, const config *cfg, const model *m);
void optim_free(optimizer *o);
/* One update of every param from its grad with learning rate lr. */
void optim_step(optimizer *o, model *m, float lr);

/* Learning rate at `step` of `total` steps: linear warm-up over the first
 * warmup_steps, then constant or cosine decay to zero at `total`. */
float optim_lr_at(const config *cfg, int64_t step, int64_t total, int64_t warmup_steps);

#endif
