/*
 * em.cu - em_solve_cuda, the twin of em_solve_cpu (src/em.c): the EM
 * pseudo-label solve of one batch with every iteration inside ONE launch of
 * one block, so a training step pays one launch, not one per iteration.
 *
 * The block keeps the K column sums and the weights w_k = lambda u_k /
 * ybar_k in shared memory; y and sigma stay in device memory (cached: a
 * batch is small). Each iteration: weights, then every row (a thread per
 * row when K <= 16, a warp per row above), then the max |dy| and the new
 * column sums; stops when max |dy| < tol or after max_iter iterations,
 * exactly as em_solve_cpu. The inputs are checked first, as the CPU does,
 * and a bad one stops the process with the CPU's message.
 *
 * Numerics: the same formulas in the same types as em.c (double sums,
 * float y, the same floors); the products whose rounding the CPU fixes are
 * written with _rn intrinsics so nvcc does not fuse them. Still different:
 * the row sums and the column sums are trees / segments, not the CPU's
 * order, so y agrees to float rounding per iteration, and the iteration
 * count can differ by one when max |dy| lands next to tol.
 *
 * Not here: data-set-sized N (one block is slow for N in the hundreds of
 * thousands; a multi-block version would need a grid-wide sync or one
 * launch per iteration), the other solvers of solvers.h.
 */
#include <cfloat>
#include <cstdlib>

#include "cuda_check.h"
#include "ecl/cuda.h"
#include "reduce.cuh"

/* The constants of em.c, with the same meaning. */
#define EM_FLOOR 1e-30
#define EM_SUM_TOL 1e-3
#define EM_CUDA_THREADS 1024
/* K up to this takes a thread per row; above, a warp per row. */
#define EM_THREAD_ROW_MAX_K 16

/* Input errors, coded so the smallest code is the check em.c fails first:
 * class (sigma rows, u, warm-start y) << 56 | row << 1 | (0 entry, 1 sum). */
#define EM_NO_ERROR (~0ull)
#define EM_ERR_SIGMA 0ull
#define EM_ERR_U 1ull
#define EM_ERR_WARM 2ull

/* What the kernel hands back to the host. */
struct em_cuda_report {
    int iters;
    double max_change;
    unsigned long long error;
};

/* Sum, maximum and any over a group of G lanes (G = 1 or a whole warp). */
template <int G> __device__ __forceinline__ double group_sum(double v)
{
    return G == 32 ? warp_sum(v) : v;
}
template <int G> __device__ __forceinline__ double group_max(double v)
{
    return G == 32 ? warp_max(v) : v;
}
template <int G> __device__ __forceinline__ bool group_any(bool v)
{
    return G == 32 ? __any_sync(ECL_FULL_MASK, v) != 0 : v;
}

/* max(t, EM_FLOOR) for t >= 0, the formula of em.c (same bits). */
__device__ __forceinline__ double em_floor(double t)
{
    return 0.5 * (t + EM_FLOOR + fabs(t - EM_FLOOR));
}

/* Checks one row [K]: entries finite and >= 0, and, when need_sum, a sum
 * of 1 within EM_SUM_TOL; records the first failure's code in *err. */
template <int G>
__device__ void em_check_row(const float *row, int k, int lane, bool need_sum,
                             unsigned long long code, unsigned long long *err)
{
    bool bad = false;
    double sum = 0.0;
    for (int c = lane; c < k; c += G) {
        float v = row[c];
        bad |= !(v >= 0.0f && v <= FLT_MAX);    /* NaN fails both */
        sum += v;
    }
    bad = group_any<G>(bad);
    sum = group_sum<G>(sum);
    if (lane == 0 && bad)
        atomicMin(err, code);
    else if (lane == 0 && need_sum && fabs(sum - 1.0) > EM_SUM_TOL)
        atomicMin(err, code | 1ull);
}

/* Every check of em_check_solve_inputs, over the whole block. */
template <int G>
__device__ void em_check_inputs(const float *sigma, const float *y, int64_t n, int k,
                                const float *u, int init_from_sigma, unsigned long long *err)
{
    int lane = threadIdx.x % G, group = threadIdx.x / G, n_groups = blockDim.x / G;
    for (int64_t i = group; i < n; i += n_groups) {
        unsigned long long row_code = (unsigned long long)i << 1;
        em_check_row<G>(sigma + i * k, k, lane, true, EM_ERR_SIGMA << 56 | row_code, err);
        if (!init_from_sigma)
            em_check_row<G>(y + i * k, k, lane, false, EM_ERR_WARM << 56 | row_code, err);
    }
    if (u && group == 0)
        em_check_row<G>(u, k, lane, true, EM_ERR_U << 56, err);
}

/* Starts one row (em_init_block's row loop): copy sigma or keep the warm
 * start, floor, renormalise. K = 1 is the single point 1. */
template <int G>
__device__ void em_init_row(const float *sig, float *row, int k, int lane, int from_sigma)
{
    if (k == 1) {
        if (lane == 0)
            row[0] = 1.0f;
        return;
    }
    const float *src = from_sigma ? sig : row;
    double sum = 0.0;
    for (int c = lane; c < k; c += G) {
        row[c] = fmaxf(src[c], (float)EM_FLOOR);
        sum += row[c];
    }
    sum = group_sum<G>(sum);
    for (int c = lane; c < k; c += G)
        row[c] = (float)em_floor(row[c] / sum);
}

/* One EM update of one row (em_update_row); returns max |dy| of the row. */
template <int G>
__device__ double em_update_row(const float *sig, float *row, int k, const double *w, int lane)
{
    double total = 0.0;
    for (int c = lane; c < k; c += G)
        total += __dadd_rn((double)sig[c], __dmul_rn(w[c], (double)row[c]));
    total = group_sum<G>(total);

    /* Normalised by its own sum, so y stays on the simplex. */
    double inv = 1.0 / total, change = 0.0;
    for (int c = lane; c < k; c += G) {
        double num = __dadd_rn((double)sig[c], __dmul_rn(w[c], (double)row[c]));
        float v = (float)em_floor(__dmul_rn(num, inv));
        change = fmax(change, fabs((double)v - row[c]));
        row[c] = v;
    }
    return group_max<G>(change);
}

/* The whole solve in one block of blockDim.x >= K threads (a multiple of
 * 32). rep gets the iterations, the last max |dy| or the input error. */
template <int G>
__global__ void __launch_bounds__(EM_CUDA_THREADS)
em_solve_kernel(const float *__restrict__ sigma, float *y, int64_t n, int k, const float *u,
                double lambda, int max_iter, double tol, int init_from_sigma,
                em_cuda_report *rep)
{
    __shared__ double w_s[EM_CUDA_MAX_K];        /* [K] lambda u_k / ybar_k */
    __shared__ double colsum_s[EM_CUDA_MAX_K];   /* [K] sum_i y_ik */
    __shared__ double part_s[EM_CUDA_THREADS];   /* column-sum segments */
    __shared__ double red_s[33];
    __shared__ unsigned long long err_s;
    int tid = threadIdx.x, lane = tid % G, group = tid / G, n_groups = blockDim.x / G;

    /* Checks before any write, so y is untouched when they fail. */
    if (tid == 0)
        err_s = EM_NO_ERROR;
    __syncthreads();
    em_check_inputs<G>(sigma, y, n, k, u, init_from_sigma, &err_s);
    __syncthreads();
    if (err_s != EM_NO_ERROR) {
        if (tid == 0)
            *rep = em_cuda_report{0, 0.0, err_s};
        return;
    }

    /* Start: rows floored and renormalised, then their column sums. */
    for (int64_t i = group; i < n; i += n_groups)
        em_init_row<G>(sigma + i * k, y + i * k, k, lane, init_from_sigma);
    __syncthreads();
    if (k == 1) {
        if (tid == 0)
            *rep = em_cuda_report{0, 0.0, EM_NO_ERROR};
        return;
    }
    block_column_sums(y, n, k, part_s, colsum_s);

    /* Jacobi iterations: weights from the current y, then every row. */
    int iters = 0;
    double change = 0.0;
    while (iters < max_iter) {
        if (tid < k) {
            double target = u ? (double)u[tid] : 1.0 / k;
            w_s[tid] = lambda * target / fmax(colsum_s[tid] / (double)n, EM_FLOOR);
        }
        __syncthreads();
        double mine = 0.0;
        for (int64_t i = group; i < n; i += n_groups)
            mine = fmax(mine, em_update_row<G>(sigma + i * k, y + i * k, k, w_s, lane));
        change = block_reduce(mine, red_s, true);
        block_column_sums(y, n, k, part_s, colsum_s);
        iters++;
        if (change < tol)
            break;
    }
    if (tid == 0)
        *rep = em_cuda_report{iters, change, EM_NO_ERROR};
}

/* Threads of the block: enough for the column sums (>= K) and the rows;
 * 256 for small batches, where fewer warps make each barrier cheaper.
 * TODO: tune the 16384 crossover on a GPU (gpu-check.sh times both sizes). */
static int em_cuda_threads(int64_t n, int k)
{
    return (k > 256 || n * k > 16384) ? EM_CUDA_THREADS : 256;
}

/* Stops with em_solve_cpu's message for the input check that failed: the
 * offending row is copied back and checked again here. */
[[noreturn]] static void em_cuda_input_error(const float *sigma, const float *y,
                                             const float *u, int k, unsigned long long code)
{
    unsigned long long cls = code >> 56;
    long long i = (long long)((code & ((1ull << 56) - 1)) >> 1);
    const float *src = cls == EM_ERR_SIGMA ? sigma + i * k : cls == EM_ERR_U ? u : y + i * k;
    float *row = (float *)malloc((size_t)k * sizeof(float));
    ECL_CUDA_REQUIRE(row, "em_solve_cuda: out of host memory for %d floats", k);
    CUDA_CHECK(cudaMemcpy(row, src, (size_t)k * sizeof(float), cudaMemcpyDeviceToHost));

    const char *name = cls == EM_ERR_SIGMA ? "sigma" : "u";
    const char *hint = cls == EM_ERR_SIGMA
        ? "pass softmax probabilities, not logits, and check them for NaN first"
        : "u is the target cluster distribution, or NULL for uniform";

    /* A bad entry is reported first (the kernel's code says which kind
     * failed, this finds the entry); otherwise the row sum was off. */
    double sum = 0.0;
    for (int c = 0; c < k; c++) {
        bool ok = row[c] >= 0.0f && row[c] <= FLT_MAX;
        if (!ok && cls == EM_ERR_WARM)
            ecl_cuda_fatal_at(__FILE__, __LINE__, "em_solve_cuda: warm-start y[%lld, %d] = "
                              "%g, expected finite and >= 0 (pass init_from_sigma = 1 when "
                              "y holds no previous labels)", i, c, (double)row[c]);
        if (!ok)
            ecl_cuda_fatal_at(__FILE__, __LINE__, "em_solve_cuda: %s[%lld, %d] = %g, expected "
                              "a finite probability >= 0 (%s)", name, i, c, (double)row[c],
                              hint);
        sum += row[c];
    }
    ecl_cuda_fatal_at(__FILE__, __LINE__, "em_solve_cuda: row %lld of %s sums to %.9g, "
                      "expected 1 within %g (%s)", i, name, sum, EM_SUM_TOL, hint);
}

em_result em_solve_cuda(const float *sigma, float *y, int64_t n, int k, const float *u,
                        double lambda, int max_iter, double tol, int init_from_sigma)
{
    /* The caller's arguments, checked as em_solve_cpu checks them. */
    ECL_CUDA_REQUIRE(max_iter >= 0, "em_solve_cuda: max_iter = %d, expected >= 0", max_iter);
    ECL_CUDA_REQUIRE(tol >= 0.0, "em_solve_cuda: tol = %g, expected >= 0", tol);
    ECL_CUDA_REQUIRE(n >= 1, "em_solve_cuda: N = %lld rows, expected N >= 1", (long long)n);
    ECL_CUDA_REQUIRE(k >= 1 && k <= EM_CUDA_MAX_K, "em_solve_cuda: K = %d clusters, expected "
                     "1 <= K <= %d (one block holds the column sums; use em_solve_cpu "
                     "above)", k, EM_CUDA_MAX_K);
    ECL_CUDA_REQUIRE(std::isfinite(lambda) && lambda >= 0.0, "em_solve_cuda: lambda = %g, "
                     "expected a finite value >= 0 (the fairness weight)", lambda);

    /* One launch for the whole solve; the report brings the count back. */
    em_cuda_report *rep_d = (em_cuda_report *)ecl_cuda_scratch(ECL_SCRATCH_EM_OUT,
                                                               sizeof(em_cuda_report));
    int threads = em_cuda_threads(n, k);
    if (k <= EM_THREAD_ROW_MAX_K) {
        em_solve_kernel<1><<<1, threads>>>(sigma, y, n, k, u, lambda, max_iter, tol,
                                           init_from_sigma, rep_d);
        CUDA_CHECK_LAUNCH(em_solve_kernel<1>);
    } else {
        em_solve_kernel<32><<<1, threads>>>(sigma, y, n, k, u, lambda, max_iter, tol,
                                            init_from_sigma, rep_d);
        CUDA_CHECK_LAUNCH(em_solve_kernel<32>);
    }
    em_cuda_report rep;
    CUDA_CHECK(cudaMemcpy(&rep, rep_d, sizeof rep, cudaMemcpyDeviceToHost));
    if (rep.error != EM_NO_ERROR)
        em_cuda_input_error(sigma, y, u, k, rep.error);

    em_result res = {rep.iters, rep.max_change};
    return res;
}
