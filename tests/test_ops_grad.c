/*
 * test_ops_grad.c - every backward in ops.h against central finite
 * differences of its forward.
 *
 * The probe loss is L = sum_j r_j y_j with fixed random r, accumulated in
 * double. The ops run in float, so a difference step h = 1e-2 balances
 * truncation error (O(h^2)) against float rounding (about 1e-7 |L| / h);
 * gradients match to FD_ABS + FD_REL * |g|. Inputs of ReLU and max-pool are
 * kept away from their kinks by more than h.
 */
#include "check.h"
#include "ecl/core.h"
#include "ecl/ops.h"
#include "ecl/rng.h"

#include <stdlib.h>
#include <string.h>

#define FD_STEP 1e-2
#define FD_ABS  2e-3   /* float rounding over sums of a few hundred terms */
#define FD_REL  1e-2

typedef void (*forward_fn)(void *ctx, const float *in, float *out);

static rng_state rng;

static float *random_array(int64_t n, float scale)
{
    float *a = ecl_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        a[i] = scale * rng_normal(&rng);
    return a;
}

static double probe(forward_fn f, void *ctx, const float *in, float *out,
                    const float *r, int64_t n_out)
{
    f(ctx, in, out);
    double l = 0.0;
    for (int64_t j = 0; j < n_out; j++)
        l += (double)r[j] * out[j];
    return l;
}

/* Compares grad (dL/d in, n_in values) with central differences of f. */
static void check_grad(const char *name, forward_fn f, void *ctx, float *in, int64_t n_in,
                       int64_t n_out, const float *r, const float *grad)
{
    float *out = ecl_malloc((size_t)n_out * sizeof(float));
    double worst = 0.0;
    int64_t worst_at = -1;
    for (int64_t i = 0; i < n_in; i++) {
        float keep = in[i];
        in[i] = keep + (float)FD_STEP;
        double lp = probe(f, ctx, in, out, r, n_out);
        in[i] = keep - (float)FD_STEP;
        double lm = probe(f, ctx, in, out, r, n_out);
        in[i] = keep;
        double fd = (lp - lm) / (2.0 * FD_STEP);
        double excess = fabs(fd - grad[i]) - (FD_ABS + FD_REL * fabs(fd));
        if (excess > worst) {
            worst = excess;
            worst_at = i;
        }
    }
    CHECK(worst_at < 0, "%s: gradient mismatch at %lld beyond tolerance by %.3g (analytic %g)",
          name, (long long)worst_at, worst, worst_at >= 0 ? grad[worst_at] : 0.0);
    free(out);
}

/* ---- convolution: gradient with respect to the input and the weights ---- */

typedef struct { int64_t n; int c, h, w, o; float *x, *wt, *col; } conv_ctx;

static void conv_fwd_x(void *p, const float *in, float *out)
{
    conv_ctx *k = p;
    conv3x3_forward_cpu(in, k->wt, out, k->col, k->n, k->c, k->h, k->w, k->o);
}

static void conv_fwd_w(void *p, const float *in, float *out)
{
    conv_ctx *k = p;
    conv3x3_forward_cpu(k->x, in, out, k->col, k->n, k->c, k->h, k->w, k->o);
}

static void test_conv(int64_t n, int c, int h, int w, int o)
{
    conv_ctx k = { n, c, h, w, o, NULL, NULL, NULL };
    int64_t s = k.n * k.h * k.w, nx = k.c * s, nw = (int64_t)k.o * k.c * 9, ny = k.o * s;
    k.x = random_array(nx, 1.0f);
    k.wt = random_array(nw, 0.5f);
    k.col = ecl_malloc((size_t)conv3x3_col_floats(k.n, k.c, k.h, k.w) * sizeof(float));
    float *r = random_array(ny, 1.0f), *y = ecl_malloc((size_t)ny * sizeof(float));
    float *dx = ecl_malloc((size_t)nx * sizeof(float)), *dw = ecl_malloc((size_t)nw * sizeof(float));

    conv3x3_forward_cpu(k.x, k.wt, y, k.col, k.n, k.c, k.h, k.w, k.o);
    conv3x3_backward_cpu(r, k.x, k.wt, dw, dx, k.col, k.n, k.c, k.h, k.w, k.o);
    check_grad("conv3x3 dx", conv_fwd_x, &k, k.x, nx, ny, r, dx);
    check_grad("conv3x3 dw", conv_fwd_w, &k, k.wt, nw, ny, r, dw);

    /* A direct 7-loop convolution pins the forward itself. */
    conv3x3_forward_cpu(k.x, k.wt, y, k.col, k.n, k.c, k.h, k.w, k.o);
    double worst = 0.0;
    for (int oc = 0; oc < k.o; oc++)
        for (int64_t ni = 0; ni < k.n; ni++)
            for (int yy = 0; yy < k.h; yy++)
                for (int xx = 0; xx < k.w; xx++) {
                    double acc = 0.0;
                    for (int ci = 0; ci < k.c; ci++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int sy = yy + ky - 1, sx = xx + kx - 1;
                                if (sy < 0 || sy >= k.h || sx < 0 || sx >= k.w)
                                    continue;
                                acc += (double)k.wt[(oc * k.c + ci) * 9 + ky * 3 + kx] *
                                       k.x[((ci * k.n + ni) * k.h + sy) * k.w + sx];
                            }
                    double got = y[((oc * k.n + ni) * k.h + yy) * k.w + xx];
                    worst = fmax(worst, fabs(got - acc));
                }
    CHECK(worst < 1e-5, "conv3x3 forward (%lld x %d x %d x %d) differs from direct loops by %g",
          (long long)n, c, h, w, worst);
    free(k.x); free(k.wt); free(k.col); free(r); free(y); free(dx); free(dw);
}

/* The im2col chunking changes only the order of the weight-gradient sums:
 * one image per chunk (and a ragged last chunk) against the whole batch in
 * one chunk gives the same y and dx bit for bit, dw within rounding. */
static void test_conv_chunks(void)
{
    int64_t n = 5;
    int c = 3, h = 6, w = 7, o = 4;
    int64_t s = n * h * w, nx = c * s, nw = (int64_t)o * c * 9, ny = o * s;
    float *x = random_array(nx, 1.0f), *wt = random_array(nw, 0.5f);
    float *dy = random_array(ny, 1.0f);
    float *y[2], *dx[2], *dw[2];
    int64_t per_image = (int64_t)c * 9 * h * w;
    int64_t chunk[2] = { per_image * n, per_image * 2 };   /* 1 chunk; 2+2+1 */
    for (int t = 0; t < 2; t++) {
        conv3x3_set_chunk_floats(chunk[t]);
        float *col = ecl_malloc((size_t)conv3x3_col_floats(n, c, h, w) * sizeof(float));
        y[t] = ecl_malloc((size_t)ny * sizeof(float));
        dx[t] = ecl_malloc((size_t)nx * sizeof(float));
        dw[t] = ecl_malloc((size_t)nw * sizeof(float));
        conv3x3_forward_cpu(x, wt, y[t], col, n, c, h, w, o);
        conv3x3_backward_cpu(dy, x, wt, dw[t], dx[t], col, n, c, h, w, o);
        free(col);
    }
    conv3x3_set_chunk_floats(0);
    CHECK(memcmp(y[0], y[1], (size_t)ny * sizeof(float)) == 0,
          "conv3x3 forward changes with the im2col chunking");
    CHECK(memcmp(dx[0], dx[1], (size_t)nx * sizeof(float)) == 0,
          "conv3x3 dx changes with the im2col chunking");
    double worst = 0.0;
    for (int64_t i = 0; i < nw; i++)
        worst = fmax(worst, fabs((double)dw[0][i] - dw[1][i]) / (1.0 + fabs(dw[0][i])));
    CHECK(worst < 1e-5, "conv3x3 dw differs by %g between im2col chunkings", worst);
    for (int t = 0; t < 2; t++) {
        free(y[t]); free(dx[t]); free(dw[t]);
    }
    free(x); free(wt); free(dy);
}

/* ---- batch norm: input, gamma and beta ---------------------------------- */

typedef struct { int c; int64_t s; float *x, *gamma, *beta, *xhat, *invstd; int which; } bn_ctx;

static void bn_fwd(void *p, const float *in, float *out)
{
    bn_ctx *k = p;
    const float *x = k->which == 0 ? in : k->x;
    const float *g = k->which == 1 ? in : k->gamma;
    const float *b = k->which == 2 ? in : k->beta;
    batchnorm_forward_train_cpu(x, out, k->xhat, k->invstd, g, b, NULL, NULL, k->c, k->s,
                                0.1f, 1e-5f, 0);
}

static void test_batchnorm(int affine)
{
    bn_ctx k = { 3, 7, NULL, NULL, NULL, NULL, NULL, 0 };
    int64_t n = k.c * k.s;
    k.x = random_array(n, 2.0f);
    k.gamma = affine ? random_array(k.c, 1.0f) : NULL;
    k.beta = affine ? random_array(k.c, 1.0f) : NULL;
    k.xhat = ecl_malloc((size_t)n * sizeof(float));
    k.invstd = ecl_malloc((size_t)k.c * sizeof(float));
    float *r = random_array(n, 1.0f), *y = ecl_malloc((size_t)n * sizeof(float));
    float *dx = ecl_malloc((size_t)n * sizeof(float)), dg[3], db[3];

    batchnorm_forward_train_cpu(k.x, y, k.xhat, k.invstd, k.gamma, k.beta, NULL, NULL,
                                k.c, k.s, 0.1f, 1e-5f, 0);
    batchnorm_backward_cpu(r, k.xhat, k.invstd, k.gamma, NULL, dx, dg, db, k.c, k.s);
    check_grad(affine ? "batchnorm dx" : "batchnorm (no affine) dx", bn_fwd, &k, k.x, n, n,
               r, dx);
    if (affine) {
        k.which = 1;
        check_grad("batchnorm dgamma", bn_fwd, &k, k.gamma, k.c, n, r, dg);
        k.which = 2;
        check_grad("batchnorm dbeta", bn_fwd, &k, k.beta, k.c, n, r, db);
    }
    free(k.x); free(k.gamma); free(k.beta); free(k.xhat); free(k.invstd);
    free(r); free(y); free(dx);
}

/* Running statistics follow PyTorch: unbiased variance, momentum 0.1. */
static void test_batchnorm_running(void)
{
    float x[4] = { 1, 2, 3, 6 }, y[4], xh[4], is, rm = 0.0f, rv = 1.0f;
    batchnorm_forward_train_cpu(x, y, xh, &is, NULL, NULL, &rm, &rv, 1, 4, 0.1f, 1e-5f, 0);
    CHECK_NEAR(rm, 0.1 * 3.0, 1e-6, 0);
    CHECK_NEAR(rv, 0.9 + 0.1 * (14.0 / 3.0), 1e-6, 0);
    CHECK_NEAR(is, 1.0 / sqrt(3.5 + 1e-5), 1e-6, 0);
    batchnorm_forward_eval_cpu(x, y, NULL, NULL, &rm, &rv, 1, 4, 1e-5f, 0);
    CHECK_NEAR(y[3], (6.0 - rm) / sqrt(rv + 1e-5), 1e-5, 0);
}

/* The fused BN + ReLU equals the two ops in turn, forward and backward. */
static void test_batchnorm_relu_fused(void)
{
    int c = 3;
    int64_t s = 50, n = c * s;
    float *x = random_array(n, 1.5f), *g = random_array(c, 1.0f), *b = random_array(c, 0.5f);
    float *dy = random_array(n, 1.0f), *y1 = ecl_malloc(n * sizeof(float));
    float *y2 = ecl_malloc(n * sizeof(float)), *xh = ecl_malloc(n * sizeof(float));
    float *dx1 = ecl_malloc(n * sizeof(float)), *dx2 = ecl_malloc(n * sizeof(float));
    float is[3], dg1[3], dg2[3], db1[3], db2[3];

    batchnorm_forward_train_cpu(x, y1, xh, is, g, b, NULL, NULL, c, s, 0.1f, 1e-5f, 1);
    batchnorm_backward_cpu(dy, xh, is, g, y1, dx1, dg1, db1, c, s);
    batchnorm_forward_train_cpu(x, y2, xh, is, g, b, NULL, NULL, c, s, 0.1f, 1e-5f, 0);
    relu_forward_cpu(y2, y2, n);
    relu_backward_cpu(y2, dy, dx2, n);
    batchnorm_backward_cpu(dx2, xh, is, g, NULL, dx2, dg2, db2, c, s);
    double fwd = 0.0, bwd = 0.0;
    for (int64_t i = 0; i < n; i++) {
        fwd = fmax(fwd, fabs(y1[i] - y2[i]));
        bwd = fmax(bwd, fabs(dx1[i] - dx2[i]));
    }
    CHECK(fwd == 0.0, "fused forward differs by %g", fwd);
    CHECK(bwd == 0.0, "fused backward differs by %g", bwd);
    CHECK(dg1[1] == dg2[1] && db1[2] == db2[2], "fused dgamma/dbeta differ");
    free(x); free(g); free(b); free(dy); free(y1); free(y2); free(xh); free(dx1); free(dx2);
}

/* ---- ReLU, max-pool, average pool: away from kinks ---------------------- */

typedef struct { int64_t p; int h, w; uint8_t *arg; } pool_ctx;

static void relu_fwd(void *p, const float *in, float *out)
{
    relu_forward_cpu(in, out, *(int64_t *)p);
}

static void maxpool_fwd(void *p, const float *in, float *out)
{
    pool_ctx *k = p;
    maxpool2x2_forward_cpu(in, out, k->arg, k->p, k->h, k->w);
}

static void avgpool_fwd(void *p, const float *in, float *out)
{
    pool_ctx *k = p;
    avgpool_forward_cpu(in, out, k->p, (int64_t)k->h * k->w);
}

/* Distinct values at least 0.1 apart, in shuffled order, none near 0. */
static float *spaced_array(int64_t n)
{
    float *a = ecl_malloc((size_t)n * sizeof(float));
    int64_t *idx = ecl_malloc((size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    rng_shuffle_i64(&rng, idx, n);
    for (int64_t i = 0; i < n; i++)
        a[i] = 0.1f * (float)(idx[i] - n / 2) + 0.05f;
    free(idx);
    return a;
}

static void test_relu_and_pools(void)
{
    int64_t n = 40;
    float *x = spaced_array(n), *r = random_array(n, 1.0f);
    float *y = ecl_malloc(n * sizeof(float)), *dx = ecl_malloc(n * sizeof(float));
    relu_forward_cpu(x, y, n);
    relu_backward_cpu(y, r, dx, n);
    check_grad("relu", relu_fwd, &n, x, n, n, r, dx);

    /* 2 planes of 5 x 4: the odd row is dropped by the floor. */
    pool_ctx k = { 2, 5, 4, NULL };
    int64_t n_in = 40, n_out = 2 * 2 * 2;
    k.arg = ecl_malloc((size_t)n_out);
    float *rp = random_array(n_out, 1.0f);
    maxpool2x2_forward_cpu(x, y, k.arg, k.p, k.h, k.w);
    maxpool2x2_backward_cpu(rp, k.arg, dx, k.p, k.h, k.w);
    check_grad("maxpool2x2", maxpool_fwd, &k, x, n_in, n_out, rp, dx);

    pool_ctx a = { 4, 2, 5, NULL };
    float *ra = random_array(4, 1.0f);
    avgpool_backward_cpu(ra, dx, 4, 10);
    check_grad("avgpool", avgpool_fwd, &a, x, n_in, 4, ra, dx);
    free(x); free(r); free(y); free(dx); free(k.arg); free(rp); free(ra);
}

/* ---- linear and softmax -------------------------------------------------- */

typedef struct { int64_t b, m, k; float *x, *wt, *bias; int which; } lin_ctx;

static void lin_fwd(void *p, const float *in, float *out)
{
    lin_ctx *c = p;
    linear_forward_cpu(c->which == 0 ? in : c->x, c->which == 1 ? in : c->wt,
                       c->which == 2 ? in : c->bias, out, c->b, c->m, c->k);
}

static void test_linear(void)
{
    lin_ctx c = { 3, 5, 4, NULL, NULL, NULL, 0 };
    c.x = random_array(c.b * c.m, 1.0f);
    c.wt = random_array(c.k * c.m, 1.0f);
    c.bias = random_array(c.k, 1.0f);
    float *r = random_array(c.b * c.k, 1.0f);
    float dx[15], dw[20], db[4];
    linear_backward_cpu(r, c.x, c.wt, dx, dw, db, c.b, c.m, c.k);
    check_grad("linear dx", lin_fwd, &c, c.x, c.b * c.m, c.b * c.k, r, dx);
    c.which = 1;
    check_grad("linear dw", lin_fwd, &c, c.wt, c.k * c.m, c.b * c.k, r, dw);
    c.which = 2;
    check_grad("linear dbias", lin_fwd, &c, c.bias, c.k, c.b * c.k, r, db);
    free(c.x); free(c.wt); free(c.bias); free(r);
}

static void test_softmax(void)
{
    /* Huge logits must not overflow; rows sum to one. */
    float z[6] = { 1000.0f, 999.0f, -1000.0f, 0.0f, 0.0f, 0.0f }, p[6];
    softmax_forward_cpu(z, p, 2, 3);
    CHECK_NEAR(p[0], 1.0 / (1.0 + exp(-1.0)), 1e-6, 0);
    CHECK(p[2] == 0.0f, "p[2] = %g", p[2]);
    CHECK_NEAR(p[3] + p[4] + p[5], 1.0, 1e-6, 0);
    CHECK_NEAR(p[4], 1.0 / 3.0, 1e-6, 0);
}

static void test_layout(void)
{
    float x[2 * 3 * 2], y[12];
    for (int i = 0; i < 12; i++)
        x[i] = (float)i;
    nchw_to_cnhw_cpu(x, y, 2, 3, 1, 2);
    /* y[c, n, :] = x[n, c, :] */
    CHECK(y[0] == 0 && y[2] == 6 && y[4] == 2 && y[10] == 10, "layout wrong");
    float t[6] = { 1, 2, 3, 4, 5, 6 }, u[6];
    transpose_cpu(t, u, 2, 3);
    CHECK(u[1] == 4 && u[2] == 2 && u[5] == 6, "transpose wrong");
}

int main(void)
{
    rng = rng_seeded(7);
    /* 1-pixel rows and columns: every shifted copy is empty or all edge. */
    test_conv(2, 3, 5, 4, 4);
    test_conv(2, 2, 1, 3, 3);
    test_conv(1, 2, 3, 1, 2);
    test_conv(1, 1, 1, 1, 2);
    test_conv(1, 2, 2, 2, 2);
    test_conv_chunks();
    test_batchnorm(1);
    test_batchnorm(0);
    test_batchnorm_running();
    test_batchnorm_relu_fused();
    test_relu_and_pools();
    test_linear();
    test_softmax();
    test_layout();
    return check_summary("test_ops_grad");
}
