/*
 * ops_cpu.c - CPU forward and backward of every layer in ops.h: 3x3
 * convolution as im2col + one GEMM per batch, batch norm, ReLU, max-pool,
 * global average pool, linear and softmax. OpenMP over channels or rows.
 * Reductions inside one row are serial and in double, so results do not
 * depend on the number of threads.
 */
#include "ecl/ops.h"
#include "ecl/core.h"

#include <float.h>
#include <math.h>
#include <string.h>

void nchw_to_cnhw_cpu(const float *x, float *y, int64_t n, int c, int h, int w)
{
    int64_t hw = (int64_t)h * w;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int ci = 0; ci < c; ci++)
        for (int64_t ni = 0; ni < n; ni++)
            memcpy(y + (ci * n + ni) * hw, x + (ni * c + ci) * hw, (size_t)hw * sizeof(float));
}

/* One row of the column matrix: input channel ci shifted by (ky-1, kx-1),
 * zero where the shift leaves the image. */
static void im2col_row(const float *x, float *row, int64_t n, int h, int w, int ky, int kx)
{
    /* Destination columns [x0, x1) read source column xx + kx - 1; the
     * one column outside the image on the shifted side is zero. */
    int x0 = kx == 0 ? 1 : 0, x1 = kx == 2 ? w - 1 : w;
    for (int64_t ni = 0; ni < n; ni++) {
        for (int yy = 0; yy < h; yy++) {
            float *dst = row + (ni * h + yy) * w;
            int sy = yy + ky - 1;
            if (sy < 0 || sy >= h) {
                memset(dst, 0, (size_t)w * sizeof(float));
                continue;
            }
            const float *src = x + (ni * h + sy) * w;
            memcpy(dst + x0, src + x0 + kx - 1, (size_t)(x1 - x0) * sizeof(float));
            if (x0)
                dst[0] = 0.0f;
            if (x1 < w)
                dst[w - 1] = 0.0f;
        }
    }
}

void conv3x3_forward_cpu(const float *x, const float *wt, float *y, float *col,
                         int64_t n, int c, int h, int w, int o)
{
    int64_t s = n * h * w;

    /* col [C*9, S]: row (ci, ky, kx) holds channel ci shifted by (ky, kx). */
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < c * 9; r++)
        im2col_row(x + (int64_t)(r / 9) * s, col + (int64_t)r * s, n, h, w,
                   (r % 9) / 3, r % 3);

    /* y [O, S] = wt [O, C*9] x col [C*9, S]. */
    gemm_cpu(0, 0, o, s, (int64_t)c * 9, 1.0f, wt, (int64_t)c * 9, col, s, 0.0f, y, s);
}

/* Adds row (ky, kx) of dcol back onto channel plane dx, the adjoint of
 * im2col_row. */
static void col2im_row_add(const float *row, float *dx, int64_t n, int h, int w,
                           int ky, int kx)
{
    for (int64_t ni = 0; ni < n; ni++) {
        for (int yy = 0; yy < h; yy++) {
            int sy = yy + ky - 1;
            if (sy < 0 || sy >= h)
                continue;
            const float *src = row + (ni * h + yy) * w;
            float *dst = dx + (ni * h + sy) * w;
            int x0 = kx == 0 ? 1 : 0, x1 = kx == 2 ? w - 1 : w;
            for (int xx = x0; xx < x1; xx++)
                dst[xx + kx - 1] += src[xx];
        }
    }
}

void conv3x3_backward_cpu(const float *dy, const float *col, const float *wt,
                          float *dwt, float *dx, float *dcol,
                          int64_t n, int c, int h, int w, int o)
{
    int64_t s = n * h * w, c9 = (int64_t)c * 9;

    /* dwt [O, C*9] = dy [O, S] x col^T. */
    gemm_cpu(0, 1, o, c9, s, 1.0f, dy, s, col, s, 0.0f, dwt, c9);
    if (!dx)
        return;

    /* dcol [C*9, S] = wt^T x dy, then fold the nine shifts back per channel;
     * one thread per channel, so the += never races. */
    gemm_cpu(1, 0, c9, s, o, 1.0f, wt, c9, dy, s, 0.0f, dcol, s);
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < c; ci++) {
        float *plane = dx + (int64_t)ci * s;
        memset(plane, 0, (size_t)s * sizeof(float));
        for (int r = 0; r < 9; r++)
            col2im_row_add(dcol + ((int64_t)ci * 9 + r) * s, plane, n, h, w, r / 3, r % 3);
    }
}

void batchnorm_forward_train_cpu(const float *x, float *y, float *xhat, float *invstd,
                                 const float *gamma, const float *beta,
                                 float *run_mean, float *run_var,
                                 int c, int64_t s, float momentum, float eps, int relu)
{
    float floor_y = relu ? 0.0f : -INFINITY;
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < c; ci++) {
        const float *xr = x + ci * s;
        float *yr = y + ci * s, *hr = xhat + ci * s;

        /* Two passes in double: the mean, then the biased variance about it. */
        double sum = 0.0, sq = 0.0;
        for (int64_t j = 0; j < s; j++)
            sum += xr[j];
        double mean = sum / (double)s;
        for (int64_t j = 0; j < s; j++) {
            double d = xr[j] - mean;
            sq += d * d;
        }
        double var = sq / (double)s;
        float is = (float)(1.0 / sqrt(var + eps));
        invstd[ci] = is;

        /* Running statistics use the unbiased variance, as PyTorch does. */
        if (run_mean) {
            double unbiased = s > 1 ? sq / (double)(s - 1) : var;
            run_mean[ci] = (1.0f - momentum) * run_mean[ci] + momentum * (float)mean;
            run_var[ci] = (1.0f - momentum) * run_var[ci] + momentum * (float)unbiased;
        }

        float g = gamma ? gamma[ci] : 1.0f, b = beta ? beta[ci] : 0.0f, m = (float)mean;
        for (int64_t j = 0; j < s; j++) {
            float h_ = (xr[j] - m) * is;
            hr[j] = h_;
            yr[j] = fmaxf(g * h_ + b, floor_y);
        }
    }
}

void batchnorm_forward_eval_cpu(const float *x, float *y, const float *gamma,
                                const float *beta, const float *run_mean,
                                const float *run_var, int c, int64_t s, float eps, int relu)
{
    float floor_y = relu ? 0.0f : -INFINITY;
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < c; ci++) {
        float is = 1.0f / sqrtf(run_var[ci] + eps);
        float g = (gamma ? gamma[ci] : 1.0f) * is;
        float b = (beta ? beta[ci] : 0.0f) - g * run_mean[ci];
        for (int64_t j = 0; j < s; j++)
            y[ci * s + j] = fmaxf(g * x[ci * s + j] + b, floor_y);
    }
}

void batchnorm_backward_cpu(const float *dy, const float *xhat, const float *invstd,
                            const float *gamma, const float *y_relu, float *dx,
                            float *dgamma, float *dbeta, int c, int64_t s)
{
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < c; ci++) {
        const float *dr = dy + ci * s, *hr = xhat + ci * s;
        const float *yr = y_relu ? y_relu + ci * s : NULL;
        float *xr = dx + ci * s;

        /* The fused ReLU's mask first (in place, so dx may alias dy). */
        if (yr)
            for (int64_t j = 0; j < s; j++)
                xr[j] = yr[j] > 0.0f ? dr[j] : 0.0f;
        const float *g_ = yr ? xr : dr;

        /* sum(dy) and sum(dy * xhat) give dbeta, dgamma and the two
         * projections that the normalisation subtracts from dx. */
        double sd = 0.0, sdh = 0.0;
        for (int64_t j = 0; j < s; j++) {
            sd += g_[j];
            sdh += (double)g_[j] * hr[j];
        }
        if (dgamma)
            dgamma[ci] = (float)sdh;
        if (dbeta)
            dbeta[ci] = (float)sd;

        float g = gamma ? gamma[ci] : 1.0f;
        float k = g * invstd[ci];
        float md = (float)(sd / (double)s), mdh = (float)(sdh / (double)s);
        for (int64_t j = 0; j < s; j++)
            xr[j] = k * (g_[j] - md - hr[j] * mdh);
    }
}

void relu_forward_cpu(const float *x, float *y, int64_t n)
{
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void relu_backward_cpu(const float *y, const float *dy, float *dx, int64_t n)
{
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void maxpool2x2_forward_cpu(const float *x, float *y, uint8_t *arg, int64_t p, int h, int w)
{
    int oh = h / 2, ow = w / 2;
    #pragma omp parallel for schedule(static)
    for (int64_t pi = 0; pi < p; pi++) {
        const float *xp = x + pi * h * w;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                /* Window order 0..3 is row-major; the first maximum wins. */
                const float *r0 = xp + (2 * oy) * w + 2 * ox, *r1 = r0 + w;
                float v[4] = { r0[0], r0[1], r1[0], r1[1] };
                int best = 0;
                for (int q = 1; q < 4; q++)
                    if (v[q] > v[best])
                        best = q;
                int64_t o = (pi * oh + oy) * ow + ox;
                y[o] = v[best];
                arg[o] = (uint8_t)best;
            }
        }
    }
}

void maxpool2x2_backward_cpu(const float *dy, const uint8_t *arg, float *dx,
                             int64_t p, int h, int w)
{
    int oh = h / 2, ow = w / 2;
    #pragma omp parallel for schedule(static)
    for (int64_t pi = 0; pi < p; pi++) {
        float *xp = dx + pi * h * w;
        memset(xp, 0, (size_t)h * w * sizeof(float));
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                int64_t o = (pi * oh + oy) * ow + ox;
                int q = arg[o];
                xp[(2 * oy + q / 2) * w + 2 * ox + q % 2] = dy[o];
            }
        }
    }
}

void avgpool_forward_cpu(const float *x, float *y, int64_t p, int64_t hw)
{
    #pragma omp parallel for schedule(static)
    for (int64_t pi = 0; pi < p; pi++) {
        double sum = 0.0;
        for (int64_t j = 0; j < hw; j++)
            sum += x[pi * hw + j];
        y[pi] = (float)(sum / (double)hw);
    }
}

void avgpool_backward_cpu(const float *dy, float *dx, int64_t p, int64_t hw)
{
    #pragma omp parallel for schedule(static)
    for (int64_t pi = 0; pi < p; pi++) {
        float g = dy[pi] / (float)hw;
        for (int64_t j = 0; j < hw; j++)
            dx[pi * hw + j] = g;
    }
}

void linear_forward_cpu(const float *x, const float *wt, const float *bias, float *y,
                        int64_t b, int64_t m, int64_t k)
{
    gemm_cpu(0, 1, b, k, m, 1.0f, x, m, wt, m, 0.0f, y, k);
    if (!bias)
        return;
    for (int64_t i = 0; i < b; i++)
        for (int64_t j = 0; j < k; j++)
            y[i * k + j] += bias[j];
}

void linear_backward_cpu(const float *dy, const float *x, const float *wt, float *dx,
                         float *dwt, float *dbias, int64_t b, int64_t m, int64_t k)
{
    gemm_cpu(1, 0, k, m, b, 1.0f, dy, k, x, m, 0.0f, dwt, m);
    if (dx)
        gemm_cpu(0, 0, b, m, k, 1.0f, dy, k, wt, m, 0.0f, dx, m);
    if (!dbias)
        return;
    for (int64_t j = 0; j < k; j++) {
        double sum = 0.0;
        for (int64_t i = 0; i < b; i++)
            sum += dy[i * k + j];
        dbias[j] = (float)sum;
    }
}

void softmax_forward_cpu(const float *z, float *p, int64_t b, int64_t k)
{
    for (int64_t i = 0; i < b; i++) {
        const float *zr = z + i * k;
        float *pr = p + i * k;
        float mx = -FLT_MAX;
        for (int64_t j = 0; j < k; j++)
            mx = zr[j] > mx ? zr[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < k; j++) {
            pr[j] = expf(zr[j] - mx);
            sum += pr[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < k; j++)
            pr[j] *= inv;
    }
}

void transpose_cpu(const float *x, float *y, int64_t r, int64_t c)
{
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++)
            y[j * r + i] = x[i * c + j];
}
