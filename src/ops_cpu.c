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

/* Shifting a plane by (ky-1, kx-1) is one contiguous copy per image:
 * destination j reads source j + off over the rows that stay inside,
 * and the one column that wraps to the neighbouring row is then zeroed
 * (forward) or skipped (backward). conv_span gives that range. */
typedef struct { int64_t off, j0, j1; int y0, y1, edge; } conv_span;

static conv_span conv_span_of(int h, int w, int ky, int kx)
{
    int dy = ky - 1, dx = kx - 1;
    conv_span sp;
    sp.y0 = dy < 0 ? 1 : 0;
    sp.y1 = dy > 0 ? h - 1 : h;
    sp.off = (int64_t)dy * w + dx;
    sp.j0 = (int64_t)sp.y0 * w + (dx < 0 ? 1 : 0);
    sp.j1 = (int64_t)sp.y1 * w - (dx > 0 ? 1 : 0);
    sp.edge = dx < 0 ? 0 : dx > 0 ? w - 1 : -1;   /* the wrapped column */
    if (sp.y1 <= sp.y0) {   /* h = 1 shifted up or down: nothing inside */
        sp.j0 = sp.j1 = 0;
        sp.y1 = sp.y0;
    }
    return sp;
}

/* One row of the column matrix: input channel ci shifted by (ky-1, kx-1),
 * zero where the shift leaves the image. */
static void im2col_row(const float *x, float *row, int64_t n, int h, int w, int ky, int kx)
{
    int64_t hw = (int64_t)h * w;
    conv_span sp = conv_span_of(h, w, ky, kx);
    for (int64_t ni = 0; ni < n; ni++) {
        const float *src = x + ni * hw;
        float *dst = row + ni * hw;
        memset(dst, 0, (size_t)sp.j0 * sizeof(float));
        memcpy(dst + sp.j0, src + sp.j0 + sp.off, (size_t)(sp.j1 - sp.j0) * sizeof(float));
        memset(dst + sp.j1, 0, (size_t)(hw - sp.j1) * sizeof(float));
        if (sp.edge >= 0)
            for (int yy = sp.y0; yy < sp.y1; yy++)
                dst[(int64_t)yy * w + sp.edge] = 0.0f;
    }
}

/* Images per im2col chunk: the column block of one chunk stays near
 * conv_chunk_floats (16 MB by default), so it is still in cache when the GEMM reads
 * it, and memory does not grow with the batch. A function of the shape
 * only, so the order of the weight-gradient sums (and the bits) do not
 * depend on the thread count. */
static int64_t conv_chunk_floats = 4 << 20;

void conv3x3_set_chunk_floats(int64_t floats)
{
    conv_chunk_floats = floats > 0 ? floats : 4 << 20;
}

static int64_t conv_chunk_images(int64_t n, int c, int h, int w)
{
    int64_t per_image = (int64_t)c * 9 * h * w;
    int64_t nc = conv_chunk_floats / per_image;
    return nc < 1 ? 1 : nc > n ? n : nc;
}

int64_t conv3x3_col_floats(int64_t n, int c, int h, int w)
{
    return conv_chunk_images(n, c, h, w) * c * 9 * h * w;
}

/* col [C*9, nc*H*W] for images [n0, n0 + nc) of x [C, N, H, W]: row
 * (ci, ky, kx) holds channel ci shifted by (ky, kx). */
static void im2col_chunk(const float *x, float *col, int64_t n, int64_t n0, int64_t nc,
                         int c, int h, int w)
{
    int64_t hw = (int64_t)h * w, s = n * hw, sc = nc * hw;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < c * 9; r++)
        im2col_row(x + (int64_t)(r / 9) * s + n0 * hw, col + (int64_t)r * sc, nc, h, w,
                   (r % 9) / 3, r % 3);
}

void conv3x3_forward_cpu(const float *x, const float *wt, float *y, float *col,
                         int64_t n, int c, int h, int w, int o)
{
    int64_t hw = (int64_t)h * w, s = n * hw, c9 = (int64_t)c * 9;
    int64_t step = conv_chunk_images(n, c, h, w);

    /* Per chunk: y[:, chunk] [O, Sc] = wt [O, C*9] x col [C*9, Sc]. */
    for (int64_t n0 = 0; n0 < n; n0 += step) {
        int64_t nc = n - n0 < step ? n - n0 : step, sc = nc * hw;
        im2col_chunk(x, col, n, n0, nc, c, h, w);
        gemm_cpu(0, 0, o, sc, c9, 1.0f, wt, c9, col, sc, 0.0f, y + n0 * hw, s);
    }
}

/* Adds row (ky, kx) of dcol back onto channel plane dx, the adjoint of
 * im2col_row. The wrapped column is zeroed in `row` first (it is the
 * gradient of a padding zero), so one contiguous add covers the rest. */
static void col2im_row_add(float *row, float *dx, int64_t n, int h, int w, int ky, int kx)
{
    int64_t hw = (int64_t)h * w;
    conv_span sp = conv_span_of(h, w, ky, kx);
    for (int64_t ni = 0; ni < n; ni++) {
        float *src = row + ni * hw, *dst = dx + ni * hw + sp.off;
        if (sp.edge >= 0)
            for (int yy = sp.y0; yy < sp.y1; yy++)
                src[(int64_t)yy * w + sp.edge] = 0.0f;
        for (int64_t j = sp.j0; j < sp.j1; j++)
            dst[j] += src[j];
    }
}

void conv3x3_backward_cpu(const float *dy, const float *x, const float *wt,
                          float *dwt, float *dx, float *col,
                          int64_t n, int c, int h, int w, int o)
{
    int64_t hw = (int64_t)h * w, s = n * hw, c9 = (int64_t)c * 9;
    int64_t step = conv_chunk_images(n, c, h, w);

    for (int64_t n0 = 0; n0 < n; n0 += step) {
        int64_t nc = n - n0 < step ? n - n0 : step, sc = nc * hw;
        const float *dyc = dy + n0 * hw;

        /* dwt [O, C*9] += dy[:, chunk] x col^T, the columns rebuilt from x
         * rather than kept from forward (9x an activation per layer). */
        im2col_chunk(x, col, n, n0, nc, c, h, w);
        gemm_cpu(0, 1, o, c9, sc, 1.0f, dyc, s, col, sc, n0 ? 1.0f : 0.0f, dwt, c9);
        if (!dx)
            continue;

        /* dcol [C*9, Sc] = wt^T x dy[:, chunk] into the same buffer, then
         * fold the nine shifts back per channel; one thread per channel,
         * so the += never races. */
        gemm_cpu(1, 0, c9, sc, o, 1.0f, wt, c9, dyc, s, 0.0f, col, sc);
        #pragma omp parallel for schedule(static)
        for (int ci = 0; ci < c; ci++) {
            float *plane = dx + (int64_t)ci * s + n0 * hw;
            memset(plane, 0, (size_t)sc * sizeof(float));
            for (int r = 0; r < 9; r++)
                col2im_row_add(col + ((int64_t)ci * 9 + r) * sc, plane, nc, h, w, r / 3,
                               r % 3);
        }
    }
}

/* Row sums for batch norm in double, in LANES independent partial sums
 * combined in a fixed order: the compiler can vectorise them (one serial
 * double chain was a third of the BN time), and the bits still do not
 * depend on the thread count. */
#define LANES 8

static double sum_row(const float *x, int64_t s)
{
    double acc[LANES] = { 0 };
    int64_t j = 0;
    for (; j + LANES <= s; j += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] += x[j + l];
    double t = 0.0;
    for (int l = 0; l < LANES; l++)
        t += acc[l];
    for (; j < s; j++)
        t += x[j];
    return t;
}

/* sum (x - mean)^2 */
static double sqdev_row(const float *x, int64_t s, double mean)
{
    double acc[LANES] = { 0 };
    int64_t j = 0;
    for (; j + LANES <= s; j += LANES)
        for (int l = 0; l < LANES; l++) {
            double d = x[j + l] - mean;
            acc[l] += d * d;
        }
    double t = 0.0;
    for (int l = 0; l < LANES; l++)
        t += acc[l];
    for (; j < s; j++)
        t += (x[j] - mean) * (x[j] - mean);
    return t;
}

/* sum g and sum g * h together (one pass over both rows). */
static void sum_pair_row(const float *g, const float *h, int64_t s, double *sg, double *sgh)
{
    double a[LANES] = { 0 }, b[LANES] = { 0 };
    int64_t j = 0;
    for (; j + LANES <= s; j += LANES)
        for (int l = 0; l < LANES; l++) {
            a[l] += g[j + l];
            b[l] += (double)g[j + l] * h[j + l];
        }
    double ta = 0.0, tb = 0.0;
    for (int l = 0; l < LANES; l++) {
        ta += a[l];
        tb += b[l];
    }
    for (; j < s; j++) {
        ta += g[j];
        tb += (double)g[j] * h[j];
    }
    *sg = ta;
    *sgh = tb;
}

void batchnorm_forward_train_cpu(const float *x, float *y, float *xhat, float *invstd,
                                 const float *gamma, const float *beta,
                                 float *run_mean, float *run_var,
                                 int c, int64_t s, float momentum, float eps, int relu)
{
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < c; ci++) {
        const float *xr = x + ci * s;
        float *yr = y + ci * s, *hr = xhat + ci * s;

        /* Two passes in double: the mean, then the biased variance about it. */
        double mean = sum_row(xr, s) / (double)s;
        double sq = sqdev_row(xr, s, mean);
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
            float h_ = (xr[j] - m) * is, v = g * h_ + b;
            hr[j] = h_;
            yr[j] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

void batchnorm_forward_eval_cpu(const float *x, float *y, const float *gamma,
                                const float *beta, const float *run_mean,
                                const float *run_var, int c, int64_t s, float eps, int relu)
{
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < c; ci++) {
        float is = 1.0f / sqrtf(run_var[ci] + eps);
        float g = (gamma ? gamma[ci] : 1.0f) * is;
        float b = (beta ? beta[ci] : 0.0f) - g * run_mean[ci];
        const float *xr = x + ci * s;
        float *yr = y + ci * s;
        for (int64_t j = 0; j < s; j++) {
            float v = g * xr[j] + b;
            yr[j] = relu && v < 0.0f ? 0.0f : v;
        }
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
        double sd, sdh;
        sum_pair_row(g_, hr, s, &sd, &sdh);
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
            const float *r0 = xp + (2 * oy) * w, *r1 = r0 + w;
            float *yo = y + (pi * oh + oy) * ow;
            uint8_t *ao = arg + (pi * oh + oy) * ow;
            /* Window order 0..3 is row-major; the first maximum wins.
             * Branch-free selects, so the loop vectorises. */
            for (int ox = 0; ox < ow; ox++) {
                float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
                float mab = b > a ? b : a, mcd = d > c ? d : c;
                yo[ox] = mcd > mab ? mcd : mab;
                int qab = b > a, qcd = d > c, low = mcd > mab;
                ao[ox] = (uint8_t)(qab + low * (2 + qcd - qab));
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
