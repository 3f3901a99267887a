/*
 * reduce.cuh - the reductions the kernels of ecl share: warp sums and
 * maxima by butterfly shuffles (every lane ends with the same bits), a
 * block sum, and the column sums of a row-major matrix by one block.
 *
 * Every reduction here has a fixed order for a given launch shape, so a
 * kernel gives the same bits on every run; the order is not the CPU's
 * (which sums left to right), hence the tolerances of tests/test_cuda.c.
 * Not here: atomics (their order changes from run to run).
 */
#ifndef ECL_KERNELS_REDUCE_CUH
#define ECL_KERNELS_REDUCE_CUH

#include <cmath>
#include <cstdint>

#define ECL_FULL_MASK 0xffffffffu

/* Sum over the 32 lanes of a warp; all lanes must call it. */
__device__ __forceinline__ double warp_sum(double v)
{
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(ECL_FULL_MASK, v, off);
    return v;
}

/* Maximum over the 32 lanes of a warp; all lanes must call it. */
__device__ __forceinline__ double warp_max(double v)
{
    for (int off = 16; off > 0; off >>= 1)
        v = fmax(v, __shfl_xor_sync(ECL_FULL_MASK, v, off));
    return v;
}

/* Sum (or maximum when take_max) over the block, returned to every thread.
 * blockDim.x is a multiple of 32; red [33] is shared scratch; every thread
 * of the block must call it (it synchronises). */
__device__ __forceinline__ double block_reduce(double v, double *red, bool take_max)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = take_max ? warp_max(v) : warp_sum(v);

    /* The first sync keeps red from being overwritten while a previous
     * call's result is still being read. */
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double t = lane < n_warps ? red[lane] : (take_max ? -HUGE_VAL : 0.0);
        t = take_max ? warp_max(t) : warp_sum(t);
        if (lane == 0)
            red[32] = t;
    }
    __syncthreads();
    return red[32];
}

/* colsum[c] = sum_i m[i, c] over the n rows of m [n, k], k <= blockDim.x,
 * in double. Thread t takes column t % k of segment t / k (a run of
 * contiguous rows, summed in row order); the segments are then combined in
 * order. part [blockDim.x] is shared scratch; colsum may be shared or
 * global. Every thread must call it; it ends synchronised. */
__device__ __forceinline__ void block_column_sums(const float *m, int64_t n, int k,
                                                  double *part, double *colsum)
{
    int t = threadIdx.x, n_segs = blockDim.x / k;
    int64_t chunk = (n + n_segs - 1) / n_segs;

    /* Segment sums: consecutive threads read consecutive columns. */
    if (t < n_segs * k) {
        int c = t % k;
        int64_t i0 = (int64_t)(t / k) * chunk;
        int64_t i1 = i0 + chunk < n ? i0 + chunk : n;
        double acc = 0.0;
        for (int64_t i = i0; i < i1; i++)
            acc += m[i * k + c];
        part[t] = acc;
    }
    __syncthreads();

    /* Combine the segments of each column in segment order. */
    if (t < k) {
        double acc = 0.0;
        for (int s = 0; s < n_segs; s++)
            acc += part[s * k + t];
        colsum[t] = acc;
    }
    __syncthreads();
}

#endif
