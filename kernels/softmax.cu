/*
 * softmax.cu - softmax_forward_cuda, the twin of softmax_forward_cpu
 * (src/ops_cpu.c): one warp per row, max-subtracted, the sum in double.
 *
 * Differs from the CPU in two places, both covered by test_cuda's
 * tolerances: CUDA's expf is within 2 ulp (glibc's is correctly rounded),
 * and the row sum is a warp tree, not left to right.
 * Not here: the backward (the loss kernel fuses its own softmax).
 */
#include <cfloat>

#include "cuda_check.h"
#include "ecl/cuda.h"
#include "reduce.cuh"

/* Rows per block of 256 threads. */
#define SOFTMAX_ROWS_PER_BLOCK 8

/* p [B, K] = softmax of the rows of z [B, K]; p may alias z (each element
 * is read and then written by the same lane). */
__global__ void softmax_forward_kernel(const float *z, float *p, int64_t b, int64_t k)
{
    int lane = threadIdx.x & 31;
    int64_t i = (int64_t)blockIdx.x * SOFTMAX_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (i >= b)
        return;
    const float *zr = z + i * k;
    float *pr = p + i * k;

    /* Row maximum, so every exponent is <= 0. */
    float mx = -FLT_MAX;
    for (int64_t j = lane; j < k; j += 32)
        mx = fmaxf(mx, zr[j]);
    mx = (float)warp_max(mx);

    /* Exponentials in float, as the CPU keeps them; their sum in double. */
    double sum = 0.0;
    for (int64_t j = lane; j < k; j += 32) {
        float e = expf(zr[j] - mx);
        pr[j] = e;
        sum += e;
    }
    float inv = (float)(1.0 / warp_sum(sum));
    for (int64_t j = lane; j < k; j += 32)
        pr[j] *= inv;
}

void softmax_forward_cuda(const float *z, float *p, int64_t b, int64_t k)
{
    if (b <= 0 || k <= 0)
        return;
    int64_t blocks = (b + SOFTMAX_ROWS_PER_BLOCK - 1) / SOFTMAX_ROWS_PER_BLOCK;
    softmax_forward_kernel<<<(unsigned)blocks, 32 * SOFTMAX_ROWS_PER_BLOCK>>>(z, p, b, k);
    CUDA_CHECK_LAUNCH(softmax_forward_kernel);
}
