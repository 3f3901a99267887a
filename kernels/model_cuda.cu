/*
 * model_cuda.cu - the device twin of vgg4 (include/ecl/model_cuda.h):
 * cuDNN convolution, batch norm and max-pool per block, cuBLAS for the
 * heads, small kernels here for the rest, every buffer in one arena.
 *
 * Layout is NCHW throughout, so block i's output [N, C, h, w] has each
 * (image, channel) plane contiguous and the global average pool writes
 * the heads' input [N, M] directly.
 *
 * The order of every reduction is fixed (one thread or one block per
 * output, double accumulators, a fixed tree), and only deterministic cuDNN
 * algorithms are accepted, so a run's bits depend on the seed and the GPU,
 * not on timing.
 */
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <cublas_v2.h>
#include <cudnn.h>

#include "cuda_check.h"
#include "reduce.cuh"
#include "ecl/cuda.h"
#include "ecl/model_cuda.h"

#define CUDNN_CHECK(stmt)                                                       \
    do {                                                                        \
        cudnnStatus_t st_ = (stmt);                                             \
        if (st_ != CUDNN_STATUS_SUCCESS)                                        \
            ecl_cuda_fail(__FILE__, __LINE__, #stmt, cudnnGetErrorString(st_),  \
                          "cuDNN call failed");                                 \
    } while (0)

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1
#define MC_THREADS 256
#define MC_MAX_BLOCKS 4096
#define ALGO_CACHE 8
/* Largest cuDNN workspace accepted when choosing an algorithm. */
#define WORKSPACE_LIMIT ((size_t)512 << 20)

/* ---- kernels ----------------------------------------------------------------- */

static unsigned mc_blocks(int64_t n)
{
    int64_t b = (n + MC_THREADS - 1) / MC_THREADS;
    return (unsigned)(b < 1 ? 1 : b > MC_MAX_BLOCKS ? MC_MAX_BLOCKS : b);
}

#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

/* The CPU's fused ReLU: a negative value becomes 0, NaN passes through. */
__global__ void relu_kernel(float *x, int64_t n)
{
    GRID_STRIDE(i, n) x[i] = x[i] < 0.0f ? 0.0f : x[i];
}

/* d = y > 0 ? d : 0, the ReLU's mask from its output. */
__global__ void relu_backward_kernel(const float *y, float *d, int64_t n)
{
    GRID_STRIDE(i, n) d[i] = y[i] > 0.0f ? d[i] : 0.0f;
}

/* y[p] = mean of plane p of x [P, hw], summed in double in index order. */
__global__ void avgpool_kernel(const float *x, float *y, int64_t p, int hw)
{
    GRID_STRIDE(i, p) {
        double s = 0.0;
        for (int j = 0; j < hw; j++)
            s += x[i * hw + j];
        y[i] = (float)(s / (double)hw);
    }
}

__global__ void avgpool_backward_kernel(const float *dy, float *dx, int64_t p, int hw)
{
    GRID_STRIDE(i, p * hw) dx[i] = dy[i / hw] / (float)hw;
}

/* Parameter-free batch norm of column j of x [N, M] (features of N
 * images): one block per column, batch mean and biased variance in double,
 * running statistics with the unbiased variance as on the CPU. */
__global__ void colbn_train_kernel(const float *x, float *xhat, float *invstd,
                                   float *run_mean, float *run_var, int64_t n, int m)
{
    __shared__ double red[33];
    int j = blockIdx.x;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        s += x[i * m + j];
    double mean = block_reduce(s, red, false) / (double)n;
    double q = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        double d = x[i * m + j] - mean;
        q += d * d;
    }
    double sq = block_reduce(q, red, false), var = sq / (double)n;
    float is = (float)(1.0 / sqrt(var + BN_EPS)), mf = (float)mean;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        xhat[i * m + j] = (x[i * m + j] - mf) * is;
    if (threadIdx.x == 0) {
        invstd[j] = is;
        double unbiased = n > 1 ? sq / (double)(n - 1) : var;
        float mom = (float)BN_MOMENTUM;
        run_mean[j] = (1.0f - mom) * run_mean[j] + mom * (float)mean;
        run_var[j] = (1.0f - mom) * run_var[j] + mom * (float)unbiased;
    }
}

__global__ void colbn_eval_kernel(const float *x, float *y, const float *run_mean,
                                  const float *run_var, int64_t n, int m)
{
    GRID_STRIDE(i, n * m) {
        int j = (int)(i % m);
        float is = 1.0f / sqrtf(run_var[j] + (float)BN_EPS);
        y[i] = is * x[i] - is * run_mean[j];
    }
}

/* dx = invstd (g - mean(g) - xhat mean(g xhat)) per column; dx may alias g. */
__global__ void colbn_backward_kernel(const float *g, const float *xhat, const float *invstd,
                                      float *dx, int64_t n, int m)
{
    __shared__ double red[33];
    int j = blockIdx.x;
    double sd = 0.0, sdh = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        sd += g[i * m + j];
        sdh += (double)g[i * m + j] * xhat[i * m + j];
    }
    float md = (float)(block_reduce(sd, red, false) / (double)n);
    float mdh = (float)(block_reduce(sdh, red, false) / (double)n);
    float k = invstd[j];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        dx[i * m + j] = k * (g[i * m + j] - md - xhat[i * m + j] * mdh);
}

/* logits [N, K] = (logits + b) * scale, the CPU's order. */
__global__ void bias_scale_kernel(float *z, const float *b, int64_t n, int k, float scale)
{
    GRID_STRIDE(i, n * k) z[i] = (z[i] + b[i % k]) * scale;
}

__global__ void scale_kernel(const float *x, float *y, int64_t n, float s)
{
    GRID_STRIDE(i, n) y[i] = x[i] * s;
}

/* out[j] = sum over rows of a [N, K], column j, in row order. */
__global__ void colsum_kernel(const float *a, float *out, int64_t n, int k)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= k)
        return;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += a[i * k + j];
    out[j] = (float)s;
}

__global__ void count_nonfinite_kernel(const float *x, int64_t n, unsigned long long *count)
{
    unsigned long long c = 0;
    GRID_STRIDE(i, n) c += !isfinite(x[i]);
    if (c)
        atomicAdd(count, c);
}

/* ---- the arena ------------------------------------------------------------------ */

/* Two passes over the same layout: the first (base NULL) only sizes it. */
typedef struct {
    char *base;
    size_t used;
} arena;

static float *take(arena *a, int64_t n_floats)
{
    size_t off = (a->used + 255) & ~(size_t)255;
    a->used = off + (size_t)n_floats * sizeof(float);
    return a->base ? (float *)(a->base + off) : NULL;
}

/* ---- the model --------------------------------------------------------------------- */

/* The algorithm and math type cuDNN proposed for each direction of one
 * block's convolution at batch size n, and the workspace they need. */
typedef struct {
    int64_t n;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    cudnnMathType_t fwd_math, data_math, filter_math;
    size_t workspace;
} conv_algos;

typedef struct {
    int cin, cout, h, w, pool;
    int wt, gamma, beta, run_mean, run_var;   /* param / buffer indices */
    cudnnTensorDescriptor_t x_desc, y_desc, p_desc, bn_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    const float *x;        /* [N, Cin, H, W] input of the last forward */
    float *conv;           /* [N, Cout, H, W] conv output, the BN input */
    float *act;            /* [N, Cout, H, W] after BN + ReLU */
    float *out;            /* [N, Cout, H/2, W/2] pooled, or act */
    float *save_mean, *save_invvar;   /* [Cout] from the training forward */
    conv_algos cache[ALGO_CACHE];
    int n_cache;
} gblock;

struct model_cuda {
    int k, m, cin, h, w, head_bn, n_heads, tf32;
    float logit_scale;
    int64_t capacity, desc_n;
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    cudnnPoolingDescriptor_t pool_desc;
    cudaStream_t copy_stream;
    cudaEvent_t copied, consumed;  /* input copied / previous input no longer read */
    float *pinned;                      /* [capacity, Cin, H, W] host staging */

    gblock blocks[VGG4_BLOCKS];
    int n_params, n_buffers, head_w[MODEL_MAX_HEADS], head_b[MODEL_MAX_HEADS];
    int head_mean, head_var;            /* buffer indices, -1 without head BN */
    param p[MODEL_MAX_PARAMS];          /* host names and shapes, device value/grad */
    float *m1[MODEL_MAX_PARAMS], *m2[MODEL_MAX_PARAMS];
    float *buf[MODEL_MAX_PARAMS];
    int64_t buf_n[MODEL_MAX_PARAMS];

    char *base;
    size_t bytes;
    float *grads_begin, *grads_end;     /* every grad, contiguous (padding zeroed) */
    float *bufs_begin, *bufs_end, *bufs_backup;
    float *input;                       /* [capacity, Cin, H, W] */
    float *pooled, *feat, *feat_invstd; /* [N, M], [N, M], [M] */
    float *dfeat;                       /* [N, M] */
    float *logits, *dlogits, *dscaled;  /* [Hd, N, K] */
    float *sigma, *y;                   /* [Hd, N, K] */
    float *scratch_a, *scratch_b;       /* largest activation */
    float *workspace;
    size_t workspace_bytes;
    unsigned long long *count;
};

static int index_of(const model *m, const param *p)
{
    return (int)(p - m->params);
}

static int buffer_index(const model *m, const buffer *b)
{
    return (int)(b - m->buffers);
}

/* Descriptors of every block for n images (a no-op when already set). */
static void set_descriptors(model_cuda *g, int64_t n)
{
    if (g->desc_n == n)
        return;
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        gblock *b = &g->blocks[i];
        CUDNN_CHECK(cudnnSetTensor4dDescriptor(b->x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                               (int)n, b->cin, b->h, b->w));
        CUDNN_CHECK(cudnnSetTensor4dDescriptor(b->y_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                               (int)n, b->cout, b->h, b->w));
        CUDNN_CHECK(cudnnSetTensor4dDescriptor(b->p_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                               (int)n, b->cout, b->pool ? b->h / 2 : b->h,
                                               b->pool ? b->w / 2 : b->w));
    }
    g->desc_n = n;
}

/* Block b's algorithms at the current n: the first deterministic one of
 * cuDNN's heuristic ranking (cudnnGet..._v7) whose workspace fits `limit`
 * bytes. The heuristic ranking is a fixed order for a given GPU and
 * library, unlike cudnnFind's timings, so two runs choose alike and give
 * the same bits. The workspace is asked again for the chosen algorithm
 * (a fall-back chosen without a candidate has no size in the list). */
template <typename Perf, typename Algo>
static void pick_deterministic(const Perf *perf, int got, size_t limit, Algo *algo,
                               cudnnMathType_t *math)
{
    for (int i = 0; i < got; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC
            && perf[i].memory <= limit) {
            *algo = perf[i].algo;
            *math = perf[i].mathType;
            return;
        }
}

static conv_algos choose_algos(model_cuda *g, gblock *b, int64_t n, size_t limit)
{
    conv_algos a;
    memset(&a, 0, sizeof a);
    a.n = n;
    cudnnMathType_t plain = g->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    int got = 0;
    size_t need = 0;

    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(g->cudnn, b->x_desc, b->w_desc,
                                                       b->conv_desc, b->y_desc,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fp));
    a.fwd = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    a.fwd_math = plain;
    pick_deterministic(fp, got, limit, &a.fwd, &a.fwd_math);
    CUDNN_CHECK(cudnnSetConvolutionMathType(b->conv_desc, a.fwd_math));
    CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(g->cudnn, b->x_desc, b->w_desc,
                                                        b->conv_desc, b->y_desc, a.fwd, &need));
    a.workspace = need;

    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        g->cudnn, b->w_desc, b->y_desc, b->conv_desc, b->x_desc,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, dp));
    a.bwd_data = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    a.data_math = plain;
    pick_deterministic(dp, got, limit, &a.bwd_data, &a.data_math);
    CUDNN_CHECK(cudnnSetConvolutionMathType(b->conv_desc, a.data_math));
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
        g->cudnn, b->w_desc, b->y_desc, b->conv_desc, b->x_desc, a.bwd_data, &need));
    a.workspace = need > a.workspace ? need : a.workspace;

    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        g->cudnn, b->x_desc, b->y_desc, b->conv_desc, b->w_desc,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, wp));
    a.bwd_filter = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
    a.filter_math = plain;
    pick_deterministic(wp, got, limit, &a.bwd_filter, &a.filter_math);
    CUDNN_CHECK(cudnnSetConvolutionMathType(b->conv_desc, a.filter_math));
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
        g->cudnn, b->x_desc, b->y_desc, b->conv_desc, b->w_desc, a.bwd_filter, &need));
    a.workspace = need > a.workspace ? need : a.workspace;
    return a;
}

/* Block b's algorithms for n images: cached per n, found on a miss (with
 * descriptors already set for n). */
static const conv_algos *algos_for(model_cuda *g, gblock *b, int64_t n)
{
    for (int i = 0; i < b->n_cache; i++)
        if (b->cache[i].n == n)
            return &b->cache[i];
    int slot = b->n_cache < ALGO_CACHE ? b->n_cache++ : ALGO_CACHE - 1;
    b->cache[slot] = choose_algos(g, b, n, g->workspace_bytes);
    ECL_CUDA_REQUIRE(b->cache[slot].workspace <= g->workspace_bytes,
                     "block %d at %lld images: cuDNN's algorithms need %zu bytes of "
                     "workspace, the arena holds %zu (sized for %lld images)",
                     (int)(b - g->blocks), (long long)n, b->cache[slot].workspace,
                     g->workspace_bytes, (long long)g->capacity);
    return &b->cache[slot];
}

/* Every device buffer, in one order; with a->base NULL it only sizes. */
static void layout(model_cuda *g, const model *m, arena *a)
{
    int64_t n = g->capacity;
    g->grads_begin = take(a, 0);
    for (int i = 0; i < g->n_params; i++)
        g->p[i].grad = take(a, m->params[i].n);
    g->grads_end = take(a, 0);
    for (int i = 0; i < g->n_params; i++) {
        g->p[i].value = take(a, m->params[i].n);
        g->m1[i] = take(a, m->params[i].n);
        g->m2[i] = take(a, m->params[i].n);
    }
    g->bufs_begin = take(a, 0);
    int64_t nb = 0;
    for (int i = 0; i < g->n_buffers; i++) {
        g->buf[i] = take(a, g->buf_n[i]);
        nb += g->buf_n[i] + 64;
    }
    g->bufs_end = take(a, 0);
    g->bufs_backup = take(a, nb);

    int64_t largest = (int64_t)g->cin * g->h * g->w * n;
    g->input = take(a, largest);
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        gblock *b = &g->blocks[i];
        int64_t s = n * b->h * b->w * b->cout;
        b->conv = take(a, s);
        b->act = take(a, s);
        b->out = b->pool ? take(a, n * (b->h / 2) * (b->w / 2) * b->cout) : b->act;
        b->save_mean = take(a, b->cout);
        b->save_invvar = take(a, b->cout);
        largest = s > largest ? s : largest;
        largest = n * b->h * b->w * b->cin > largest ? n * b->h * b->w * b->cin : largest;
    }
    int64_t nk = g->n_heads * n * g->k;
    g->pooled = take(a, n * g->m);
    g->feat = take(a, n * g->m);
    g->feat_invstd = take(a, g->m);
    g->dfeat = take(a, n * g->m);
    g->logits = take(a, nk);
    g->dlogits = take(a, nk);
    g->dscaled = take(a, nk);
    g->sigma = take(a, nk);
    g->y = take(a, nk);
    g->scratch_a = take(a, largest);
    g->scratch_b = take(a, largest);
    g->workspace = take(a, (int64_t)(g->workspace_bytes / sizeof(float)) + 1);
    g->count = (unsigned long long *)take(a, 2);
}

model_cuda *model_cuda_create(const model *m, const optimizer *o, int64_t capacity, int tf32)
{
    ECL_CUDA_REQUIRE(capacity > 0 && capacity <= INT32_MAX, "model_cuda_create: capacity %lld",
                     (long long)capacity);
    model_cuda *g = (model_cuda *)calloc(1, sizeof *g);
    ECL_CUDA_REQUIRE(g != NULL, "out of host memory for the device model");
    g->k = m->k;
    g->m = m->m;
    g->cin = m->cin;
    g->h = m->h;
    g->w = m->w;
    g->head_bn = m->head_bn;
    g->n_heads = m->n_heads;
    g->logit_scale = m->logit_scale;
    g->capacity = capacity;
    g->tf32 = tf32;
    g->n_params = m->n_params;
    g->n_buffers = m->n_buffers;
    for (int i = 0; i < m->n_params; i++)
        g->p[i] = m->params[i];   /* names, shapes, decay; pointers replaced below */
    for (int i = 0; i < m->n_buffers; i++)
        g->buf_n[i] = m->buffers[i].n;
    for (int hd = 0; hd < m->n_heads; hd++) {
        g->head_w[hd] = index_of(m, m->head_w[hd]);
        g->head_b[hd] = index_of(m, m->head_b[hd]);
    }
    g->head_mean = m->head_bn ? buffer_index(m, m->head_mean) : -1;
    g->head_var = m->head_bn ? buffer_index(m, m->head_var) : -1;

    CUDNN_CHECK(cudnnCreate(&g->cudnn));
    CUBLAS_CHECK(cublasCreate(&g->cublas));
    CUBLAS_CHECK(cublasSetMathMode(g->cublas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                   : CUBLAS_DEFAULT_MATH));
    CUDNN_CHECK(cudnnCreatePoolingDescriptor(&g->pool_desc));
    CUDNN_CHECK(cudnnSetPooling2dDescriptor(g->pool_desc, CUDNN_POOLING_MAX_DETERMINISTIC,
                                            CUDNN_PROPAGATE_NAN, 2, 2, 0, 0, 2, 2));
    CUDA_CHECK(cudaStreamCreateWithFlags(&g->copy_stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&g->copied, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&g->consumed, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(g->copied, g->copy_stream));

    for (int i = 0; i < VGG4_BLOCKS; i++) {
        const vgg_block *hb = &m->blocks[i];
        gblock *b = &g->blocks[i];
        b->cin = hb->cin;
        b->cout = hb->cout;
        b->h = hb->h;
        b->w = hb->w;
        b->pool = hb->pool;
        b->wt = index_of(m, hb->wt);
        b->gamma = index_of(m, hb->gamma);
        b->beta = index_of(m, hb->beta);
        b->run_mean = buffer_index(m, hb->run_mean);
        b->run_var = buffer_index(m, hb->run_var);
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&b->x_desc));
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&b->y_desc));
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&b->p_desc));
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&b->bn_desc));
        CUDNN_CHECK(cudnnSetTensor4dDescriptor(b->bn_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                               1, b->cout, 1, 1));
        CUDNN_CHECK(cudnnCreateFilterDescriptor(&b->w_desc));
        CUDNN_CHECK(cudnnSetFilter4dDescriptor(b->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                               b->cout, b->cin, 3, 3));
        CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&b->conv_desc));
        CUDNN_CHECK(cudnnSetConvolution2dDescriptor(b->conv_desc, 1, 1, 1, 1, 1, 1,
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
        CUDNN_CHECK(cudnnSetConvolutionMathType(b->conv_desc, tf32 ? CUDNN_DEFAULT_MATH
                                                                   : CUDNN_FMA_MATH));
    }

    /* Algorithms for the training batch first: their workspace sizes the
     * arena, and smaller batches later choose within it. */
    set_descriptors(g, capacity);
    size_t ws = 0;
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        gblock *b = &g->blocks[i];
        b->cache[0] = choose_algos(g, b, capacity, WORKSPACE_LIMIT);
        b->n_cache = 1;
        ws = b->cache[0].workspace > ws ? b->cache[0].workspace : ws;
    }
    g->workspace_bytes = ws;

    arena a = { NULL, 0 };
    layout(g, m, &a);
    g->bytes = a.used;
    CUDA_CHECK(cudaMalloc((void **)&g->base, g->bytes));
    CUDA_CHECK(cudaMemset(g->base, 0, g->bytes));
    a.base = g->base;
    a.used = 0;
    layout(g, m, &a);
    CUDA_CHECK(cudaMallocHost((void **)&g->pinned,
                              (size_t)(capacity * g->cin * g->h * g->w) * sizeof(float)));
    model_cuda_upload(g, m, o);
    return g;
}

void model_cuda_destroy(model_cuda *g)
{
    if (!g)
        return;
    CUDA_CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        gblock *b = &g->blocks[i];
        cudnnDestroyTensorDescriptor(b->x_desc);
        cudnnDestroyTensorDescriptor(b->y_desc);
        cudnnDestroyTensorDescriptor(b->p_desc);
        cudnnDestroyTensorDescriptor(b->bn_desc);
        cudnnDestroyFilterDescriptor(b->w_desc);
        cudnnDestroyConvolutionDescriptor(b->conv_desc);
    }
    cudnnDestroyPoolingDescriptor(g->pool_desc);
    cudnnDestroy(g->cudnn);
    cublasDestroy(g->cublas);
    CUDA_CHECK(cudaEventDestroy(g->copied));
    CUDA_CHECK(cudaEventDestroy(g->consumed));
    CUDA_CHECK(cudaStreamDestroy(g->copy_stream));
    CUDA_CHECK(cudaFreeHost(g->pinned));
    CUDA_CHECK(cudaFree(g->base));
    free(g);
}

size_t model_cuda_arena_bytes(const model_cuda *g)
{
    return g->bytes;
}

void model_cuda_upload(model_cuda *g, const model *m, const optimizer *o)
{
    for (int i = 0; i < g->n_params; i++) {
        size_t bytes = (size_t)m->params[i].n * sizeof(float);
        CUDA_CHECK(cudaMemcpy(g->p[i].value, m->params[i].value, bytes, cudaMemcpyHostToDevice));
        if (o && i < o->n && o->m1[i])
            CUDA_CHECK(cudaMemcpy(g->m1[i], o->m1[i], bytes, cudaMemcpyHostToDevice));
        if (o && i < o->n && o->m2[i])
            CUDA_CHECK(cudaMemcpy(g->m2[i], o->m2[i], bytes, cudaMemcpyHostToDevice));
    }
    for (int i = 0; i < g->n_buffers; i++)
        CUDA_CHECK(cudaMemcpy(g->buf[i], m->buffers[i].value,
                              (size_t)g->buf_n[i] * sizeof(float), cudaMemcpyHostToDevice));
}

void model_cuda_download(const model_cuda *g, model *m, optimizer *o)
{
    for (int i = 0; i < g->n_params; i++) {
        size_t bytes = (size_t)m->params[i].n * sizeof(float);
        CUDA_CHECK(cudaMemcpy(m->params[i].value, g->p[i].value, bytes, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(m->params[i].grad, g->p[i].grad, bytes, cudaMemcpyDeviceToHost));
        if (o && i < o->n && o->m1[i])
            CUDA_CHECK(cudaMemcpy(o->m1[i], g->m1[i], bytes, cudaMemcpyDeviceToHost));
        if (o && i < o->n && o->m2[i])
            CUDA_CHECK(cudaMemcpy(o->m2[i], g->m2[i], bytes, cudaMemcpyDeviceToHost));
    }
    for (int i = 0; i < g->n_buffers; i++)
        CUDA_CHECK(cudaMemcpy(m->buffers[i].value, g->buf[i],
                              (size_t)g->buf_n[i] * sizeof(float), cudaMemcpyDeviceToHost));
}

/* Host images into g->input: through the pinned buffer on the copy stream;
 * the compute (default) stream waits for the copy, the host does not. */
static void stage_input(model_cuda *g, const float *x_host, int64_t n)
{
    size_t bytes = (size_t)(n * g->cin * g->h * g->w) * sizeof(float);
    CUDA_CHECK(cudaEventSynchronize(g->copied));   /* the pinned buffer is free */
    memcpy(g->pinned, x_host, bytes);
    /* The previous batch's readers of g->input (block 0's forward and
     * weight gradient) run on the compute stream: the copy waits for them. */
    CUDA_CHECK(cudaEventRecord(g->consumed, cudaStreamLegacy));
    CUDA_CHECK(cudaStreamWaitEvent(g->copy_stream, g->consumed, 0));
    CUDA_CHECK(cudaMemcpyAsync(g->input, g->pinned, bytes, cudaMemcpyHostToDevice,
                               g->copy_stream));
    CUDA_CHECK(cudaEventRecord(g->copied, g->copy_stream));
    CUDA_CHECK(cudaStreamWaitEvent(cudaStreamLegacy, g->copied, 0));
}

static void block_forward(model_cuda *g, gblock *b, const float *x, int64_t n, int train)
{
    const float one = 1.0f, zero = 0.0f;
    const conv_algos *al = algos_for(g, b, n);
    b->x = x;
    CUDNN_CHECK(cudnnSetConvolutionMathType(b->conv_desc, al->fwd_math));
    CUDNN_CHECK(cudnnConvolutionForward(g->cudnn, &one, b->x_desc, x, b->w_desc,
                                        g->p[b->wt].value, b->conv_desc, al->fwd, g->workspace,
                                        g->workspace_bytes, &zero, b->y_desc, b->conv));
    if (train)
        CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
            g->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, b->y_desc, b->conv, b->y_desc,
            b->act, b->bn_desc, g->p[b->gamma].value, g->p[b->beta].value, BN_MOMENTUM,
            g->buf[b->run_mean], g->buf[b->run_var], BN_EPS, b->save_mean, b->save_invvar));
    else
        CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
            g->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, b->y_desc, b->conv, b->y_desc,
            b->act, b->bn_desc, g->p[b->gamma].value, g->p[b->beta].value,
            g->buf[b->run_mean], g->buf[b->run_var], BN_EPS));
    int64_t s = n * b->cout * b->h * b->w;
    relu_kernel<<<mc_blocks(s), MC_THREADS>>>(b->act, s);
    CUDA_CHECK_LAUNCH(relu_kernel);
    if (b->pool)
        CUDNN_CHECK(cudnnPoolingForward(g->cudnn, g->pool_desc, &one, b->y_desc, b->act, &zero,
                                        b->p_desc, b->out));
}

void model_cuda_forward(model_cuda *g, const float *x_host, int64_t n, int train)
{
    ECL_CUDA_REQUIRE(n > 0 && n <= g->capacity, "model_cuda_forward: %lld images, capacity %lld",
                     (long long)n, (long long)g->capacity);
    stage_input(g, x_host, n);
    set_descriptors(g, n);
    const float *x = g->input;
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        block_forward(g, &g->blocks[i], x, n, train);
        x = g->blocks[i].out;
    }

    /* Global average pool straight into [N, M], then the head BN. */
    const gblock *last = &g->blocks[VGG4_BLOCKS - 1];
    int64_t nm = n * g->m;
    avgpool_kernel<<<mc_blocks(nm), MC_THREADS>>>(x, g->pooled, nm, last->h * last->w);
    CUDA_CHECK_LAUNCH(avgpool_kernel);
    if (!g->head_bn) {
        CUDA_CHECK(cudaMemcpyAsync(g->feat, g->pooled, (size_t)nm * sizeof(float),
                                   cudaMemcpyDeviceToDevice, cudaStreamLegacy));
    } else if (train) {
        colbn_train_kernel<<<g->m, MC_THREADS>>>(g->pooled, g->feat, g->feat_invstd,
                                                 g->buf[g->head_mean], g->buf[g->head_var],
                                                 n, g->m);
        CUDA_CHECK_LAUNCH(colbn_train_kernel);
    } else {
        colbn_eval_kernel<<<mc_blocks(nm), MC_THREADS>>>(g->pooled, g->feat,
                                                         g->buf[g->head_mean],
                                                         g->buf[g->head_var], n, g->m);
        CUDA_CHECK_LAUNCH(colbn_eval_kernel);
    }

    /* Heads: logits [N, K] = feat [N, M] W^T + b, times the logit scale.
     * Row-major [N, K] is column-major K x N: W (op T of the stored
     * column-major M x K) times feat^T (column-major M x N). */
    const float one = 1.0f, zero = 0.0f;
    for (int hd = 0; hd < g->n_heads; hd++) {
        float *z = g->logits + hd * n * g->k;
        CUBLAS_CHECK(cublasSgemm(g->cublas, CUBLAS_OP_T, CUBLAS_OP_N, g->k, (int)n, g->m, &one,
                                 g->p[g->head_w[hd]].value, g->m, g->feat, g->m, &zero, z,
                                 g->k));
        bias_scale_kernel<<<mc_blocks(n * g->k), MC_THREADS>>>(z, g->p[g->head_b[hd]].value, n,
                                                               g->k, g->logit_scale);
        CUDA_CHECK_LAUNCH(bias_scale_kernel);
    }
}

/* Block b's backward from gout (gradient of its output), with spare a
 * second buffer; dx (may be NULL) gets the input gradient. Returns where
 * the input gradient went. */
static void block_backward(model_cuda *g, gblock *b, float *gout, float *spare, float *dx,
                           int64_t n)
{
    const float one = 1.0f, zero = 0.0f;
    const conv_algos *al = algos_for(g, b, n);
    float *dact = gout, *dconv = spare;
    if (b->pool) {
        dact = spare;
        dconv = gout;
        /* An odd last row or column is in no window: its gradient is 0,
         * which cudnnPoolingBackward need not write. */
        if ((b->h | b->w) & 1)
            CUDA_CHECK(cudaMemsetAsync(dact, 0, (size_t)(n * b->cout * b->h * b->w) *
                                                    sizeof(float), cudaStreamLegacy));
        CUDNN_CHECK(cudnnPoolingBackward(g->cudnn, g->pool_desc, &one, b->p_desc, b->out,
                                         b->p_desc, gout, b->y_desc, b->act, &zero, b->y_desc,
                                         dact));
    }
    int64_t s = n * b->cout * b->h * b->w;
    relu_backward_kernel<<<mc_blocks(s), MC_THREADS>>>(b->act, dact, s);
    CUDA_CHECK_LAUNCH(relu_backward_kernel);
    CUDNN_CHECK(cudnnBatchNormalizationBackward(
        g->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, b->y_desc, b->conv,
        b->y_desc, dact, b->y_desc, dconv, b->bn_desc, g->p[b->gamma].value,
        g->p[b->gamma].grad, g->p[b->beta].grad, BN_EPS, b->save_mean, b->save_invvar));
    CUDNN_CHECK(cudnnSetConvolutionMathType(b->conv_desc, al->filter_math));
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(g->cudnn, &one, b->x_desc, b->x, b->y_desc,
                                               dconv, b->conv_desc, al->bwd_filter,
                                               g->workspace, g->workspace_bytes, &zero,
                                               b->w_desc, g->p[b->wt].grad));
    if (!dx)
        return;
    CUDNN_CHECK(cudnnSetConvolutionMathType(b->conv_desc, al->data_math));
    CUDNN_CHECK(cudnnConvolutionBackwardData(g->cudnn, &one, b->w_desc, g->p[b->wt].value,
                                                 b->y_desc, dconv, b->conv_desc, al->bwd_data,
                                                 g->workspace, g->workspace_bytes, &zero,
                                                 b->x_desc, dx));
}

void model_cuda_backward(model_cuda *g, int64_t n)
{
    const float one = 1.0f, zero = 0.0f;
    int64_t nk = n * g->k, nm = n * g->m;
    set_descriptors(g, n);

    /* Heads: undo the logit scale; dW = a^T feat, db = column sums of a,
     * dfeat = sum over heads of a W. */
    scale_kernel<<<mc_blocks(g->n_heads * nk), MC_THREADS>>>(g->dlogits, g->dscaled,
                                                             g->n_heads * nk, g->logit_scale);
    CUDA_CHECK_LAUNCH(scale_kernel);
    for (int hd = 0; hd < g->n_heads; hd++) {
        const float *a = g->dscaled + hd * nk;
        param *w = &g->p[g->head_w[hd]], *bias = &g->p[g->head_b[hd]];
        CUBLAS_CHECK(cublasSgemm(g->cublas, CUBLAS_OP_N, CUBLAS_OP_T, g->m, g->k, (int)n, &one,
                                 g->feat, g->m, a, g->k, &zero, w->grad, g->m));
        colsum_kernel<<<(g->k + 63) / 64, 64>>>(a, bias->grad, n, g->k);
        CUDA_CHECK_LAUNCH(colsum_kernel);
        const float *beta = hd == 0 ? &zero : &one;
        CUBLAS_CHECK(cublasSgemm(g->cublas, CUBLAS_OP_N, CUBLAS_OP_N, g->m, (int)n, g->k, &one,
                                 w->value, g->m, a, g->k, beta, g->dfeat, g->m));
    }
    if (g->head_bn) {
        colbn_backward_kernel<<<g->m, MC_THREADS>>>(g->dfeat, g->feat, g->feat_invstd,
                                                    g->dfeat, n, g->m);
        CUDA_CHECK_LAUNCH(colbn_backward_kernel);
    }

    /* Average pool back to the last block's output, then the blocks. */
    const gblock *last = &g->blocks[VGG4_BLOCKS - 1];
    int hw = last->h * last->w;
    float *gb = g->scratch_a, *other = g->scratch_b;
    avgpool_backward_kernel<<<mc_blocks(nm * hw), MC_THREADS>>>(g->dfeat, gb, nm, hw);
    CUDA_CHECK_LAUNCH(avgpool_backward_kernel);
    for (int i = VGG4_BLOCKS - 1; i >= 0; i--) {
        gblock *b = &g->blocks[i];
        /* Without a pool: dact = gb, dconv = other, dx back into gb. With
         * one: dact = other, dconv = gb, dx into other. */
        float *dx = b->pool ? other : gb;
        block_backward(g, b, gb, other, i > 0 ? dx : NULL, n);
        if (dx != gb) {
            other = gb;
            gb = dx;
        }
    }
}

float *model_cuda_logits(model_cuda *g)
{
    return g->logits;
}

float *model_cuda_dlogits(model_cuda *g)
{
    return g->dlogits;
}

float *model_cuda_sigma(model_cuda *g)
{
    return g->sigma;
}

float *model_cuda_y(model_cuda *g)
{
    return g->y;
}

param *model_cuda_head_w(model_cuda *g, int hd)
{
    return &g->p[g->head_w[hd]];
}

void model_cuda_optim_step(model_cuda *g, optimizer *o, float lr)
{
    o->step++;
    for (int i = 0; i < g->n_params; i++) {
        if (o->adam)
            adam_update_cuda(o, &g->p[i], g->m1[i], g->m2[i], lr);
        else
            sgd_update_cuda(o, &g->p[i], g->m1[i], lr);
    }
}

static unsigned long long count_nonfinite(model_cuda *g, const float *x, int64_t n)
{
    unsigned long long c = 0;
    CUDA_CHECK(cudaMemsetAsync(g->count, 0, sizeof c, cudaStreamLegacy));
    count_nonfinite_kernel<<<mc_blocks(n), MC_THREADS>>>(x, n, g->count);
    CUDA_CHECK_LAUNCH(count_nonfinite_kernel);
    CUDA_CHECK(cudaMemcpy(&c, g->count, sizeof c, cudaMemcpyDeviceToHost));
    return c;
}

int64_t model_cuda_nonfinite_grads(model_cuda *g, char *name, size_t n)
{
    /* One pass over the contiguous grads (the alignment padding is zero);
     * only when it finds something, a pass per param for the name. */
    unsigned long long c = count_nonfinite(g, g->grads_begin, g->grads_end - g->grads_begin);
    if (c && name && n > 0)
        for (int i = 0; i < g->n_params; i++)
            if (count_nonfinite(g, g->p[i].grad, g->p[i].n)) {
                snprintf(name, n, "%s", g->p[i].name);
                break;
            }
    return (int64_t)c;
}

void model_cuda_buffers_save(model_cuda *g)
{
    CUDA_CHECK(cudaMemcpyAsync(g->bufs_backup, g->bufs_begin,
                               (size_t)(g->bufs_end - g->bufs_begin) * sizeof(float),
                               cudaMemcpyDeviceToDevice, cudaStreamLegacy));
}

void model_cuda_buffers_restore(model_cuda *g)
{
    CUDA_CHECK(cudaMemcpyAsync(g->bufs_begin, g->bufs_backup,
                               (size_t)(g->bufs_end - g->bufs_begin) * sizeof(float),
                               cudaMemcpyDeviceToDevice, cudaStreamLegacy));
}
