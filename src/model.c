/*
 * model.c - vgg4: parameters, initialisation, forward and backward over the
 * ops of ops.h. Activations are CNHW throughout (see ops.h); only the
 * input (NCHW from the loader) and the head (rows = images) differ.
 */
#include "ecl/model.h"
#include "ecl/core.h"
#include "ecl/ops.h"
#include "ecl/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

static param *add_param(model *m, const char *name, int ndim, const int64_t *shape, int decay)
{
    ECL_CHECK(m->n_params < MODEL_MAX_PARAMS, "too many parameters");
    param *p = &m->params[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->n = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->n *= shape[i];
    }
    p->value = ecl_calloc((size_t)p->n, sizeof(float));
    p->grad = ecl_calloc((size_t)p->n, sizeof(float));
    p->decay = decay;
    return p;
}

static buffer *add_buffer(model *m, const char *name, int64_t n, float fill)
{
    ECL_CHECK(m->n_buffers < MODEL_MAX_PARAMS, "too many buffers");
    buffer *b = &m->buffers[m->n_buffers++];
    snprintf(b->name, sizeof b->name, "%s", name);
    b->n = n;
    b->value = ecl_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        b->value[i] = fill;
    return b;
}

static void fill_uniform(float *v, int64_t n, float bound, rng_state *r)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = bound * (2.0f * rng_uniform(r) - 1.0f);
}

/* Block i: its parameters, named as checkpoints will show them. */
static void init_block(model *m, int i, int cin, int cout, int h, int w, rng_state *r)
{
    vgg_block *b = &m->blocks[i];
    char name[48];
    b->cin = cin;
    b->cout = cout;
    b->h = h;
    b->w = w;
    b->pool = i < VGG4_BLOCKS - 1;

    int64_t wshape[4] = { cout, cin, 3, 3 }, cshape[1] = { cout };
    snprintf(name, sizeof name, "block%d.conv.weight", i);
    b->wt = add_param(m, name, 4, wshape, 1);
    fill_uniform(b->wt->value, b->wt->n, 1.0f / sqrtf((float)cin * 9.0f), r);
    snprintf(name, sizeof name, "block%d.bn.weight", i);
    b->gamma = add_param(m, name, 1, cshape, 0);
    for (int c = 0; c < cout; c++)
        b->gamma->value[c] = 1.0f;
    snprintf(name, sizeof name, "block%d.bn.bias", i);
    b->beta = add_param(m, name, 1, cshape, 0);
    snprintf(name, sizeof name, "block%d.bn.running_mean", i);
    b->run_mean = add_buffer(m, name, cout, 0.0f);
    snprintf(name, sizeof name, "block%d.bn.running_var", i);
    b->run_var = add_buffer(m, name, cout, 1.0f);
}

void model_init(model *m, const config *cfg, int cin, int h, int w, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    ECL_CHECK(strcmp(cfg->model.name, "vgg4") == 0, "model.name = %s is not built in",
              cfg->model.name);
    ECL_CHECK(h >= 8 && w >= 8, "vgg4 needs images of at least 8 x 8, got %d x %d", h, w);
    rng_state r = rng_derive(seed, 0x1417, 0);
    int width = cfg->model.width;
    m->k = cfg->model.clusters;
    m->m = 8 * width;
    m->cin = cin;
    m->h = h;
    m->w = w;
    m->head_bn = cfg->model.head_bn;
    m->logit_scale = cfg->model.logit_scale;

    /* Four blocks; each pool halves the size (floor). */
    int c_in = cin, hh = h, ww = w;
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        int c_out = width << i;
        init_block(m, i, c_in, c_out, hh, ww, &r);
        c_in = c_out;
        if (m->blocks[i].pool) {
            hh /= 2;
            ww /= 2;
        }
    }

    /* The head: weights under the gamma penalty, not the weight decay. */
    int64_t hshape[2] = { m->k, m->m }, bshape[1] = { m->k };
    float bound = 1.0f / sqrtf((float)m->m);
    m->n_heads = cfg->model.heads > 0 ? cfg->model.heads : 1;
    ECL_CHECK(m->n_heads <= MODEL_MAX_HEADS, "model.heads = %d exceeds %d", m->n_heads,
              MODEL_MAX_HEADS);
    for (int hd = 0; hd < m->n_heads; hd++) {
        char wname[48], bname[48];
        /* One head keeps the plain names a PyTorch module would use. */
        if (m->n_heads == 1) {
            snprintf(wname, sizeof wname, "head.weight");
            snprintf(bname, sizeof bname, "head.bias");
        } else {
            snprintf(wname, sizeof wname, "head.%d.weight", hd);
            snprintf(bname, sizeof bname, "head.%d.bias", hd);
        }
        m->head_w[hd] = add_param(m, wname, 2, hshape, 0);
        m->head_b[hd] = add_param(m, bname, 1, bshape, 0);
        fill_uniform(m->head_w[hd]->value, m->head_w[hd]->n, bound, &r);
        fill_uniform(m->head_b[hd]->value, m->head_b[hd]->n, bound, &r);
    }
    if (m->head_bn) {
        m->head_mean = add_buffer(m, "head_bn.running_mean", m->m, 0.0f);
        m->head_var = add_buffer(m, "head_bn.running_var", m->m, 1.0f);
    }
}

static void free_activations(model *m)
{
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        vgg_block *b = &m->blocks[i];
        free(b->xhat);
        free(b->act);
        if (b->pool)
            free(b->out);
        free(b->invstd);
        free(b->arg);
    }
    free(m->x_cnhw);
    free(m->pooled);
    free(m->feat_hat);
    free(m->feat_invstd);
    free(m->feat);
    free(m->dfeat);
    free(m->scratch_a);
    free(m->scratch_b);
    free(m->col);
}

/* Sizes every activation buffer for n images; a no-op when they fit. */
static void ensure_capacity(model *m, int64_t n)
{
    if (n <= m->capacity)
        return;
    free_activations(m);
    int64_t largest = (int64_t)m->cin * m->h * m->w * n, largest_col = 0;
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        vgg_block *b = &m->blocks[i];
        int64_t s = n * b->h * b->w, s_out = b->pool ? n * (b->h / 2) * (b->w / 2) : s;
        b->xhat = ecl_malloc((size_t)(b->cout * s) * sizeof(float));
        b->act = ecl_malloc((size_t)(b->cout * s) * sizeof(float));
        b->out = b->pool ? ecl_malloc((size_t)(b->cout * s_out) * sizeof(float)) : b->act;
        b->invstd = ecl_malloc((size_t)b->cout * sizeof(float));
        b->arg = ecl_malloc((size_t)(b->cout * s_out));
        largest = b->cout * s > largest ? b->cout * s : largest;
        largest = b->cin * s > largest ? b->cin * s : largest;
        int64_t cf = conv3x3_col_floats(n, b->cin, b->h, b->w);
        largest_col = cf > largest_col ? cf : largest_col;
    }
    int64_t nm = n * m->m, nk = n * m->k * m->n_heads;
    largest = nk > largest ? nk : largest;
    m->x_cnhw = ecl_malloc((size_t)(m->cin * m->h * m->w * n) * sizeof(float));
    m->pooled = ecl_malloc((size_t)nm * sizeof(float));
    m->feat_hat = ecl_malloc((size_t)nm * sizeof(float));
    m->feat_invstd = ecl_malloc((size_t)m->m * sizeof(float));
    m->feat = ecl_malloc((size_t)nm * sizeof(float));
    m->dfeat = ecl_malloc((size_t)nm * sizeof(float));
    m->scratch_a = ecl_malloc((size_t)largest * sizeof(float));
    m->scratch_b = ecl_malloc((size_t)largest * sizeof(float));
    m->col = ecl_malloc((size_t)largest_col * sizeof(float));
    m->capacity = n;
}

void model_free(model *m)
{
    free_activations(m);
    for (int i = 0; i < m->n_params; i++) {
        free(m->params[i].value);
        free(m->params[i].grad);
    }
    for (int i = 0; i < m->n_buffers; i++)
        free(m->buffers[i].value);
    memset(m, 0, sizeof *m);
}

int64_t model_n_values(const model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        n += m->params[i].n;
    return n;
}

/* conv -> BN -> ReLU -> pool for one block; x is CNHW. */
static void block_forward(model *m, vgg_block *b, const float *x, int64_t n, int train)
{
    int64_t s = n * b->h * b->w;
    b->x = x;
    conv3x3_forward_cpu(x, b->wt->value, b->act, m->col, n, b->cin, b->h, b->w, b->cout);
    if (train)
        batchnorm_forward_train_cpu(b->act, b->act, b->xhat, b->invstd, b->gamma->value,
                                    b->beta->value, b->run_mean->value, b->run_var->value,
                                    b->cout, s, BN_MOMENTUM, BN_EPS, 1);
    else
        batchnorm_forward_eval_cpu(b->act, b->act, b->gamma->value, b->beta->value,
                                   b->run_mean->value, b->run_var->value, b->cout, s, BN_EPS,
                                   1);
    if (b->pool)
        maxpool2x2_forward_cpu(b->act, b->out, b->arg, b->cout * n, b->h, b->w);
}

void model_forward(model *m, const float *x, int64_t n, int train, float *logits)
{
    ensure_capacity(m, n);

    /* Backbone: NCHW input to CNHW, then the four blocks. */
    nchw_to_cnhw_cpu(x, m->x_cnhw, n, m->cin, m->h, m->w);
    const float *h = m->x_cnhw;
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        block_forward(m, &m->blocks[i], h, n, train);
        h = m->blocks[i].out;
    }

    /* Pool to [M, N]; the parameter-free BN's output is its own xhat. */
    const vgg_block *last = &m->blocks[VGG4_BLOCKS - 1];
    avgpool_forward_cpu(h, m->pooled, (int64_t)m->m * n, (int64_t)last->h * last->w);
    if (!m->head_bn)
        memcpy(m->feat_hat, m->pooled, (size_t)(m->m * n) * sizeof(float));
    else if (train)
        batchnorm_forward_train_cpu(m->pooled, m->feat_hat, m->feat_hat, m->feat_invstd,
                                    NULL, NULL, m->head_mean->value, m->head_var->value,
                                    m->m, n, BN_MOMENTUM, BN_EPS, 0);
    else
        batchnorm_forward_eval_cpu(m->pooled, m->feat_hat, NULL, NULL, m->head_mean->value,
                                   m->head_var->value, m->m, n, BN_EPS, 0);

    /* Heads on rows = images, then the logit scale. */
    transpose_cpu(m->feat_hat, m->feat, m->m, n);
    for (int hd = 0; hd < m->n_heads; hd++)
        linear_forward_cpu(m->feat, m->head_w[hd]->value, m->head_b[hd]->value,
                           logits + hd * n * m->k, n, m->m, m->k);
    for (int64_t i = 0; i < m->n_heads * n * m->k; i++)
        logits[i] *= m->logit_scale;
}

/* Backward of one block from g (gradient of its output), writing the
 * input gradient into dx unless dx is NULL (first block). A pooled block
 * puts its pre-pool gradient in `spare`; otherwise g is overwritten. */
static void block_backward(model *m, vgg_block *b, float *g, float *spare, float *dx,
                           int64_t n)
{
    int64_t s = n * b->h * b->w;
    float *ga = g;
    if (b->pool) {
        maxpool2x2_backward_cpu(g, b->arg, spare, b->cout * n, b->h, b->w);
        ga = spare;
    }
    batchnorm_backward_cpu(ga, b->xhat, b->invstd, b->gamma->value, b->act, ga,
                           b->gamma->grad, b->beta->grad, b->cout, s);
    conv3x3_backward_cpu(ga, b->x, b->wt->value, b->wt->grad, dx, m->col, n, b->cin,
                         b->h, b->w, b->cout);
}

void model_backward(model *m, const float *dlogits, int64_t n)
{
    float *a = m->scratch_a, *bb = m->scratch_b;

    /* Heads: undo the logit scale, then each head's linear backward; their
     * input gradients add up in bb [N, M]. */
    int64_t nk = n * m->k;
    for (int64_t i = 0; i < m->n_heads * nk; i++)
        a[i] = dlogits[i] * m->logit_scale;
    for (int hd = 0; hd < m->n_heads; hd++) {
        float *dx = hd == 0 ? bb : m->dfeat;
        linear_backward_cpu(a + hd * nk, m->feat, m->head_w[hd]->value, dx,
                            m->head_w[hd]->grad, m->head_b[hd]->grad, n, m->m, m->k);
        if (hd > 0)
            for (int64_t i = 0; i < n * m->m; i++)
                bb[i] += dx[i];
    }

    /* Back to [M, N], through the head BN and the average pool. */
    transpose_cpu(bb, a, n, m->m);
    if (m->head_bn)
        batchnorm_backward_cpu(a, m->feat_hat, m->feat_invstd, NULL, NULL, a, NULL, NULL,
                               m->m, n);
    const vgg_block *last = &m->blocks[VGG4_BLOCKS - 1];
    avgpool_backward_cpu(a, bb, (int64_t)m->m * n, (int64_t)last->h * last->w);

    /* Blocks in reverse. The gradient ping-pongs between the two scratch
     * buffers: a pooled block reads g and writes its pre-pool gradient to
     * the other one, and the conv's dx goes wherever that is not. */
    float *g = bb, *other = a;
    for (int i = VGG4_BLOCKS - 1; i >= 0; i--) {
        vgg_block *b = &m->blocks[i];
        float *ga = b->pool ? other : g;
        float *dx = ga == a ? bb : a;
        block_backward(m, b, g, other, i > 0 ? dx : NULL, n);
        g = dx;
        other = dx == a ? bb : a;
    }
}

const float *model_features(const model *m)
{
    return m->feat;
}
