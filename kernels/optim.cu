/*
 * optim.cu - adam_update_cuda and sgd_update_cuda: one optimiser update of
 * one parameter tensor on the device, the twins of adam_update and
 * sgd_update in src/optim.c (same formulas, same float arithmetic).
 *
 * Every product and sum is written with an _rn intrinsic, which nvcc never
 * fuses into an FMA, and sqrtf and the division are correctly rounded (no
 * --use_fast_math), so each element gets the CPU's bits as long as gcc
 * does not contract either (it does not under -std=c11). The scalars that
 * the CPU forms in double (bias corrections) are formed on the host here
 * by the same expressions.
 *
 * Not here: the step counter and the loop over params (optim_step), the
 * learning-rate schedule, multi-tensor fusion into one launch.
 */
#include <cmath>

#include "cuda_check.h"
#include "ecl/cuda.h"

#define OPTIM_THREADS 256
#define OPTIM_MAX_BLOCKS 4096

/* Grid for n elements with a grid-stride loop. */
static unsigned optim_blocks(int64_t n)
{
    int64_t blocks = (n + OPTIM_THREADS - 1) / OPTIM_THREADS;
    blocks = blocks > OPTIM_MAX_BLOCKS ? OPTIM_MAX_BLOCKS : blocks;
    return (unsigned)(blocks < 1 ? 1 : blocks);
}

/* m1 = b1 m1 + (1 - b1) g; m2 = b2 m2 + (1 - b2) g g;
 * value = value shrink - step m1 / (sqrt(m2) rbc2 + eps). */
__global__ void adam_update_kernel(float *value, const float *grad, float *m1, float *m2,
                                   int64_t n, float b1, float b2, float eps, float step,
                                   float rbc2, float shrink)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float g = grad[i];
        float a = __fadd_rn(__fmul_rn(b1, m1[i]), __fmul_rn(1.0f - b1, g));
        float v = __fadd_rn(__fmul_rn(b2, m2[i]), __fmul_rn(__fmul_rn(1.0f - b2, g), g));
        float denom = __fadd_rn(__fmul_rn(sqrtf(v), rbc2), eps);
        m1[i] = a;
        m2[i] = v;
        float delta = __fdiv_rn(__fmul_rn(step, a), denom);
        value[i] = __fsub_rn(__fmul_rn(value[i], shrink), delta);
    }
}

/* g = grad + wd value; buf = mu buf + g; value -= lr buf. */
__global__ void sgd_update_kernel(float *value, const float *grad, float *buf, int64_t n,
                                  float wd, float mu, float lr)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float g = __fadd_rn(grad[i], __fmul_rn(wd, value[i]));
        float b = __fadd_rn(__fmul_rn(mu, buf[i]), g);
        buf[i] = b;
        value[i] = __fsub_rn(value[i], __fmul_rn(lr, b));
    }
}

void adam_update_cuda(const optimizer *o, param *p, float *m1, float *m2, float lr)
{
    ECL_CUDA_REQUIRE(o->step >= 1, "adam_update_cuda: step = %lld, expected >= 1 (count "
                     "the update before calling, as optim_step does)", (long long)o->step);

    /* Bias corrections folded into the step size and the denominator,
     * formed exactly as src/optim.c forms them. */
    double bc1 = 1.0 - pow(o->beta1, (double)o->step);
    double bc2 = 1.0 - pow(o->beta2, (double)o->step);
    float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
    float shrink = p->decay ? 1.0f - lr * o->weight_decay : 1.0f;
    if (p->n == 0)
        return;
    adam_update_kernel<<<optim_blocks(p->n), OPTIM_THREADS>>>(
        p->value, p->grad, m1, m2, p->n, o->beta1, o->beta2, o->eps, step, rbc2, shrink);
    CUDA_CHECK_LAUNCH(adam_update_kernel);
}

void sgd_update_cuda(const optimizer *o, param *p, float *buf, float lr)
{
    float wd = p->decay ? o->weight_decay : 0.0f;
    if (p->n == 0)
        return;
    sgd_update_kernel<<<optim_blocks(p->n), OPTIM_THREADS>>>(p->value, p->grad, buf, p->n, wd,
                                                             o->momentum, lr);
    CUDA_CHECK_LAUNCH(sgd_update_kernel);
}
