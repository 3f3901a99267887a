/*
 * loss.cu - loss_ecl_cuda and loss_head_norm_cuda, the twins of
 * loss_ecl_cpu and loss_head_norm_cpu (src/loss.c; formulas in loss.h).
 *
 * loss_ecl_cuda fuses, per image, the softmax of the clean view, the
 * reverse and forward cross-entropies, every augmented view's divergence
 * and the logit gradient into one warp's work (one launch for all rows);
 * a second, one-block launch sums the per-row terms and the fairness KL in
 * a fixed order, so the result has the same bits on every run. All
 * arithmetic is in double, as on the CPU.
 *
 * Where the bits differ from the CPU (test_cuda's tolerances cover them):
 * sums over a row are warp trees, not left to right; the per-image terms
 * are summed by a block tree; nvcc fuses multiply-adds (FMA) where gcc
 * -std=c11 does not; CUDA's exp and log are within 1 ulp in double.
 *
 * Not here: the EM solve that makes y (em.cu), the head's own gradient.
 */
#include "cuda_check.h"
#include "ecl/cuda.h"
#include "reduce.cuh"

/* Shared memory per warp: the clean view's log-softmax and softmax, K
 * doubles each, which every augmented view of the image reads. */
#define LOSS_SMEM_BUDGET_BYTES (48 * 1024)
#define LOSS_MAX_WARPS 8
/* The reduction block: one thread per cluster for the column sums of y. */
#define LOSS_REDUCE_THREADS 1024
#define HEAD_NORM_THREADS 256
#define HEAD_NORM_MAX_BLOCKS 1024

/* The scalar settings of one call, in the kernel's types. */
struct loss_cuda_params {
    double inv_b;        /* 1 / B */
    double aug_scale;    /* alpha / (B V), 0 without views */
    double forward_ce;   /* beta */
    float y_eps;
    int aug;             /* aug_form */
};

/* log-sum-exp of z [K], the same on every lane of the warp. */
__device__ double loss_lse(const float *z, int k, int lane)
{
    double mx = z[0];
    for (int j = lane; j < k; j += 32)
        mx = z[j] > mx ? z[j] : mx;
    mx = warp_max(mx);

    double sum = 0.0;
    for (int j = lane; j < k; j += 32)
        sum += exp(z[j] - mx);
    return mx + log(warp_sum(sum));
}

/* View-0 terms of one image (clean_row in loss.c): keeps log sigma and
 * sigma in ls0 and p0 for the augmented views, writes dz, returns the
 * reverse CE and sets *fce. Lane j of the warp owns elements j, j + 32, ...
 * of every array here, so ls0 and p0 need no synchronisation. */
__device__ double loss_clean_row(const float *z, const float *y, int k,
                                 const loss_cuda_params &prm, double *ls0, double *p0,
                                 float *dz, int lane, double *fce)
{
    double lse = loss_lse(z, k, lane);

    /* sum sigma log y, -sum y log sigma and sum y, y floored at y_eps. */
    double s_ly = 0.0, f = 0.0, ysum = 0.0;
    for (int j = lane; j < k; j += 32) {
        double ls = z[j] - lse, p = exp(ls);
        double ly = log(y[j] > prm.y_eps ? y[j] : prm.y_eps);
        ls0[j] = ls;
        p0[j] = p;
        s_ly += p * ly;
        f -= y[j] * ls;
        ysum += y[j];
    }
    s_ly = warp_sum(s_ly);
    f = warp_sum(f);
    ysum = warp_sum(ysum);

    /* d/dz_j of H(sigma, y) + beta H(y, sigma), scaled by 1/B. */
    for (int j = lane; j < k; j += 32) {
        double ly = log(y[j] > prm.y_eps ? y[j] : prm.y_eps);
        double g = p0[j] * (s_ly - ly) + prm.forward_ce * (p0[j] * ysum - y[j]);
        dz[j] = (float)(g * prm.inv_b);
    }
    *fce = f;
    return -s_ly;
}

/* The four sums an augmented view needs against the clean view. */
struct loss_aug_sums {
    double kl_pq, kl_qp, ce, dot;
};

/* One augmented view z [K] against the fixed p0, ls0 (aug_row in loss.c):
 * writes dz (times aug_scale), returns the divergence of the chosen form. */
__device__ double loss_aug_row(const float *z, const double *ls0, const double *p0, int k,
                               const loss_cuda_params &prm, float *dz, int lane)
{
    double lse = loss_lse(z, k, lane);

    /* KL(p||q), KL(q||p), H(p, q) and p.q; entries with p = 0 add nothing
     * to KL(p||q). */
    loss_aug_sums s = {0.0, 0.0, 0.0, 0.0};
    for (int j = lane; j < k; j += 32) {
        double lq = z[j] - lse, q = exp(lq);
        s.kl_pq += p0[j] > 0.0 ? p0[j] * (ls0[j] - lq) : 0.0;
        s.kl_qp += q * (lq - ls0[j]);
        s.ce -= p0[j] * lq;
        s.dot += p0[j] * q;
    }
    s.kl_pq = warp_sum(s.kl_pq);
    s.kl_qp = warp_sum(s.kl_qp);
    s.ce = warp_sum(s.ce);
    s.dot = warp_sum(s.dot);

    /* Gradient of the divergence with respect to z, per form. */
    for (int j = lane; j < k; j += 32) {
        double lq = z[j] - lse, q = exp(lq), g;
        if (prm.aug == AUG_SYM_KL)
            g = (q - p0[j]) + q * ((lq - ls0[j]) - s.kl_qp);
        else if (prm.aug == AUG_DOT)
            g = -q * (p0[j] - s.dot);
        else
            g = q - p0[j];
        dz[j] = (float)(g * prm.aug_scale);
    }
    if (prm.aug == AUG_SYM_KL)
        return s.kl_pq + s.kl_qp;
    if (prm.aug == AUG_CE)
        return s.ce;
    if (prm.aug == AUG_DOT)
        return -s.dot;
    return s.kl_pq;
}

/* One warp per image i: clean view, then views 1..V. row_terms [B, 3]
 * gets (reverse CE, forward CE, sum of the view divergences) of image i. */
__global__ void loss_ecl_rows_kernel(const float *logits, const float *y, int64_t b, int k,
                                     int views, loss_cuda_params prm, float *dlogits,
                                     double *row_terms)
{
    extern __shared__ double loss_smem[];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t i = (int64_t)blockIdx.x * (blockDim.x >> 5) + warp;
    if (i >= b)
        return;
    double *ls0 = loss_smem + (int64_t)warp * 2 * k;     /* [K] */
    double *p0 = ls0 + k;                                 /* [K] */

    /* The clean view sets the targets of the augmented ones. */
    double fce;
    double rce = loss_clean_row(logits + i * k, y + i * k, k, prm, ls0, p0,
                                dlogits + i * k, lane, &fce);
    double aug = 0.0;
    for (int v = 1; v <= views; v++) {
        int64_t row = ((int64_t)v * b + i) * k;
        aug += loss_aug_row(logits + row, ls0, p0, k, prm, dlogits + row, lane);
    }
    if (lane == 0) {
        row_terms[3 * i + 0] = rce;
        row_terms[3 * i + 1] = fce;
        row_terms[3 * i + 2] = aug;
    }
}

/* One block: out[0..2] = sums over images of row_terms' columns, out[3] =
 * KL(u || ybar) with ybar the column means of y [B, K] (u NULL = uniform). */
__global__ void __launch_bounds__(LOSS_REDUCE_THREADS)
loss_ecl_reduce_kernel(const double *row_terms, const float *y, int64_t b, int k,
                       const float *u, double *out)
{
    __shared__ double part[LOSS_REDUCE_THREADS], colsum[LOSS_REDUCE_THREADS], red[33];
    int t = threadIdx.x;

    /* Per-image terms: strided partial sums, then a block tree. */
    double s[3] = {0.0, 0.0, 0.0};
    for (int64_t i = t; i < b; i += blockDim.x)
        for (int m = 0; m < 3; m++)
            s[m] += row_terms[3 * i + m];
    for (int m = 0; m < 3; m++)
        s[m] = block_reduce(s[m], red, false);

    /* Fairness: sum_j u_j log(u_j / ybar_j), ybar floored at 1e-30 as on the CPU. */
    block_column_sums(y, b, k, part, colsum);
    double term = 0.0;
    if (t < k) {
        double ybar = colsum[t] / (double)b, uj = u ? (double)u[t] : 1.0 / k;
        term = uj > 0.0 ? uj * log(uj / (ybar > 1e-30 ? ybar : 1e-30)) : 0.0;
    }
    double fair = block_reduce(term, red, false);
    if (t == 0) {
        out[0] = s[0];
        out[1] = s[1];
        out[2] = s[2];
        out[3] = fair;
    }
}

/* Warps per block of the row kernel: as many as fit the shared budget. */
static int loss_warps_per_block(int k)
{
    int w = LOSS_SMEM_BUDGET_BYTES / (int)(2 * sizeof(double) * k);
    return w < 1 ? 1 : (w > LOSS_MAX_WARPS ? LOSS_MAX_WARPS : w);
}

void loss_ecl_cuda(const float *logits, const float *y, int64_t b, int k, int views,
                   const loss_weights *lw, const float *u, float *dlogits, loss_terms *t)
{
    ECL_CUDA_REQUIRE(b >= 1 && k >= 1 && views >= 0,
                     "loss_ecl_cuda: B = %lld, K = %d, V = %d; expected B, K >= 1, V >= 0",
                     (long long)b, k, views);
    ECL_CUDA_REQUIRE(k <= LOSS_MAX_K, "loss_ecl_cuda: K = %d exceeds LOSS_MAX_K (%d)",
                     k, LOSS_MAX_K);
    loss_cuda_params prm;
    prm.inv_b = 1.0 / (double)b;
    prm.aug_scale = views > 0 ? lw->alpha / ((double)b * views) : 0.0;
    prm.forward_ce = lw->forward_ce;
    prm.y_eps = lw->y_eps;
    prm.aug = (int)lw->aug;

    /* Rows, then the fixed-order reduction, then the four sums to the host. */
    double *row_terms = (double *)ecl_cuda_scratch(ECL_SCRATCH_LOSS_ROWS,
                                                   (size_t)b * 3 * sizeof(double));
    double *out_d = (double *)ecl_cuda_scratch(ECL_SCRATCH_LOSS_OUT, 4 * sizeof(double));
    int warps = loss_warps_per_block(k);
    int64_t blocks = (b + warps - 1) / warps;
    size_t smem = (size_t)warps * 2 * k * sizeof(double);
    loss_ecl_rows_kernel<<<(unsigned)blocks, 32 * warps, smem>>>(logits, y, b, k, views, prm,
                                                                 dlogits, row_terms);
    CUDA_CHECK_LAUNCH(loss_ecl_rows_kernel);
    loss_ecl_reduce_kernel<<<1, LOSS_REDUCE_THREADS>>>(row_terms, y, b, k, u, out_d);
    CUDA_CHECK_LAUNCH(loss_ecl_reduce_kernel);
    double out[4];
    CUDA_CHECK(cudaMemcpy(out, out_d, sizeof out, cudaMemcpyDeviceToHost));

    /* The terms as loss_ecl_cpu forms them. */
    t->rce = out[0] * prm.inv_b;
    t->fce = out[1] * prm.inv_b;
    t->aug = views > 0 ? out[2] / ((double)b * views) : 0.0;
    t->fairness = out[3];
    t->head_norm = 0.0;
    t->total = t->rce + lw->lambda * t->fairness + lw->alpha * t->aug
             + lw->forward_ce * t->fce;
}

/* grad += two_gamma * w element-wise (the _rn intrinsics keep nvcc from
 * fusing them, so the bits are the CPU's), and each block's sum of w^2
 * into block_sq [gridDim.x]. */
__global__ void loss_head_norm_kernel(const float *w, int64_t n, float two_gamma, float *grad,
                                      double *block_sq)
{
    __shared__ double red[33];
    double sq = 0.0;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        sq += (double)w[i] * w[i];
        grad[i] = __fadd_rn(grad[i], __fmul_rn(two_gamma, w[i]));
    }
    sq = block_reduce(sq, red, false);
    if (threadIdx.x == 0)
        block_sq[blockIdx.x] = sq;
}

/* One block: out[0] = sum of the n_blocks partial sums, in a fixed order. */
__global__ void loss_sum_kernel(const double *part, int n_blocks, double *out)
{
    __shared__ double red[33];
    double s = 0.0;
    for (int i = threadIdx.x; i < n_blocks; i += blockDim.x)
        s += part[i];
    s = block_reduce(s, red, false);
    if (threadIdx.x == 0)
        out[0] = s;
}

void loss_head_norm_cuda(const float *w, int64_t n, const loss_weights *lw, float *grad,
                         loss_terms *t)
{
    ECL_CUDA_REQUIRE(n >= 0, "loss_head_norm_cuda: n = %lld, expected >= 0", (long long)n);
    int64_t blocks = (n + HEAD_NORM_THREADS - 1) / HEAD_NORM_THREADS;
    blocks = blocks < 1 ? 1 : (blocks > HEAD_NORM_MAX_BLOCKS ? HEAD_NORM_MAX_BLOCKS : blocks);

    /* Partial sums per block after them the total: one scratch buffer. */
    double *part = (double *)ecl_cuda_scratch(ECL_SCRATCH_HEAD_NORM,
                                              (size_t)(blocks + 1) * sizeof(double));
    float two_gamma = 2.0f * lw->gamma;
    loss_head_norm_kernel<<<(unsigned)blocks, HEAD_NORM_THREADS>>>(w, n, two_gamma, grad,
                                                                    part);
    CUDA_CHECK_LAUNCH(loss_head_norm_kernel);
    loss_sum_kernel<<<1, HEAD_NORM_THREADS>>>(part, (int)blocks, part + blocks);
    CUDA_CHECK_LAUNCH(loss_sum_kernel);
    double sq;
    CUDA_CHECK(cudaMemcpy(&sq, part + blocks, sizeof sq, cudaMemcpyDeviceToHost));
    t->head_norm = sq;
    t->total += lw->gamma * sq;
}
