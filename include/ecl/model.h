/*
 * model.h - the networks ecl trains, their parameters and activations.
 *
 * Shape legend: N images (all views of a batch together), Cin input
 * channels, H, W input size, M feature width (8 x model.width for vgg4),
 * K clusters.
 *
 * vgg4: four blocks of 3x3 conv -> batch norm -> ReLU, widths w, 2w, 4w,
 * 8w, with a 2x2 max-pool after the first three; global average pool; an
 * optional parameter-free batch norm on the pooled features; a linear head
 * (K x M weights, K biases); logits multiplied by logit_scale.
 *
 * With model.heads = H > 1 the backbone carries H independent linear heads
 * (each trained with its own pseudo-labels, their gradients summed into the
 * backbone); training keeps the one with the lowest loss. Logits are then
 * [H, N, K], head-major.
 * Not here: ResNet-18 and the fixed-feature linear model (later work).
 */
#ifndef ECL_MODEL_H
#define ECL_MODEL_H

#include <stdint.h>

#include "ecl/config.h"

#define MODEL_MAX_PARAMS 32
#define VGG4_BLOCKS 4
#define MODEL_MAX_HEADS 8

/* One trainable tensor with its gradient; checkpoints name it `name`. */
typedef struct {
    char name[48];
    float *value;       /* [n] */
    float *grad;        /* [n] */
    int64_t n;
    int64_t shape[4];
    int ndim;
    int decay;          /* 1: optimiser weight decay applies */
} param;

/* A non-trainable state tensor (batch-norm running statistics). */
typedef struct {
    char name[48];
    float *value;       /* [n] */
    int64_t n;
} buffer;

typedef struct {
    int cin, cout, h, w;  /* input channels and size of the block */
    int pool;             /* 1: 2x2 max-pool after ReLU */
    param *wt, *gamma, *beta;
    buffer *run_mean, *run_var;

    /* Activations of the last training forward, CNHW. */
    const float *x;       /* [Cin, N, H, W] input (owned by the previous block) */
    float *xhat;          /* [Cout, N*H*W] normalised conv output */
    float *act;           /* [Cout, N, H, W] after BN + ReLU */
    float *out;           /* [Cout, N, H/2, W/2] pooled (== act when no pool) */
    float *invstd;        /* [Cout] */
    uint8_t *arg;         /* [Cout, N, H/2, W/2] max-pool winners */
} vgg_block;

typedef struct {
    int k, m, cin, h, w, head_bn, n_heads;
    float logit_scale;
    param params[MODEL_MAX_PARAMS];
    buffer buffers[MODEL_MAX_PARAMS];
    int n_params, n_buffers;
    vgg_block blocks[VGG4_BLOCKS];
    param *head_w[MODEL_MAX_HEADS]; /* [K, M] per head */
    param *head_b[MODEL_MAX_HEADS]; /* [K] per head */
    buffer *head_mean, *head_var;   /* [M] running stats of the head BN */

    /* Buffers sized for `capacity` images; grown on demand. */
    int64_t capacity;
    float *x_cnhw;        /* [Cin, N, H, W] */
    float *pooled;        /* [M, N] global average pool */
    float *feat_hat;      /* [M, N] after the head BN */
    float *feat_invstd;   /* [M] */
    float *feat;          /* [N, M] head input */
    float *dfeat;         /* [N, M] one head's input gradient */
    float *scratch_a, *scratch_b;  /* backward ping-pong, largest activation */
    float *col;           /* im2col chunk scratch, the largest block's */
} model;

/* Builds the model of cfg for Cin x H x W inputs, initialised as PyTorch
 * initialises its layers by default (uniform, bound 1/sqrt(fan_in) for
 * conv and linear weights and the head bias; BN gamma 1, beta 0), all
 * drawn from `seed`. */
void model_init(model *m, const config *cfg, int cin, int h, int w, uint64_t seed);
void model_free(model *m);
/* Total trainable values. */
int64_t model_n_values(const model *m);

/* Forward of x [N, Cin, H, W] (NCHW, as the loader gives) to logits
 * [H, N, K] (H heads).
 * train = 1 uses batch statistics, updates running ones and keeps what
 * backward needs; train = 0 uses running statistics. */
void model_forward(model *m, const float *x, int64_t n, int train, float *logits);
/* Backward from dlogits [H, N, K] of the last training forward: writes
 * every param's grad (=, not +=). */
void model_backward(model *m, const float *dlogits, int64_t n);

/* Feature vectors [N, M] of the last forward (the head's input). */
const float *model_features(const model *m);

#endif
