/*
 * ops.h - the ops interface: every layer and loss of the network as plain
 * functions on float arrays, forward and backward. Each has a CPU function
 * here (`_cpu`); a CUDA twin with the same stem, arguments and shapes
 * (`_cuda`) belongs beside it in kernels/.
 *
 * Shape legend: N images in the batch, C input channels, O output channels,
 * H, W spatial size, S = N * H * W positions, P = C * N planes, B rows of a
 * matrix, M features, K clusters.
 *
 * Activations are channel-major, [C, N, H, W] ("CNHW"), not PyTorch's NCHW:
 * a 3x3 convolution over the whole batch is then one GEMM, [O, C*9] x
 * [C*9, S], and batch norm reduces contiguous rows of S values.
 *
 * Backward functions *write* their gradients (=), they never accumulate,
 * unless the comment says otherwise; the caller owns every buffer.
 */
#ifndef ECL_OPS_H
#define ECL_OPS_H

#include <stdint.h>

/* Row-major C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C, op = transpose
 * when trans_* is 1. Backed by oneDNN, OpenBLAS or plain C (see Makefile). */
void gemm_cpu(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
              float *c, int64_t ldc);
/* The GEMM engine in use, for logs. */
const char *gemm_backend_name(void);

/* NCHW [N, C, H, W] -> CNHW [C, N, H, W]. */
void nchw_to_cnhw_cpu(const float *x, float *y, int64_t n, int c, int h, int w);

/* 3x3 convolution, padding 1, stride 1, no bias (batch norm follows).
 * x [C, N, H, W], wt [O, C*9], y [O, N, H, W]. The im2col columns are
 * built a chunk of images at a time in `col`, a scratch buffer of
 * conv3x3_col_floats() floats (a few MB, not 9x the activation). */
int64_t conv3x3_col_floats(int64_t n, int c, int h, int w);
/* The chunk's target size in floats (0 = the default, 4M); for tests that
 * compare chunkings. Set it before sizing buffers. */
void conv3x3_set_chunk_floats(int64_t floats);
void conv3x3_forward_cpu(const float *x, const float *wt, float *y, float *col,
                         int64_t n, int c, int h, int w, int o);
/* dwt [O, C*9] written; dx [C, N, H, W] written when non-NULL. x is the
 * forward input (the columns are rebuilt from it); col is scratch as in
 * forward. */
void conv3x3_backward_cpu(const float *dy, const float *x, const float *wt,
                          float *dwt, float *dx, float *col,
                          int64_t n, int c, int h, int w, int o);

/* Batch norm over rows: x [C, S], statistics per row. Training form: uses
 * the batch mean and biased variance, updates the running mean and the
 * unbiased running variance (PyTorch's convention) with `momentum`; keeps
 * xhat [C, S] and invstd [C] for backward. gamma/beta NULL = no affine
 * part (parameter-free). relu = 1 fuses a ReLU into the output (one pass
 * over memory fewer than two ops). y may alias x. */
void batchnorm_forward_train_cpu(const float *x, float *y, float *xhat, float *invstd,
                                 const float *gamma, const float *beta,
                                 float *run_mean, float *run_var,
                                 int c, int64_t s, float momentum, float eps, int relu);
/* Inference form, from the running statistics. y may alias x. */
void batchnorm_forward_eval_cpu(const float *x, float *y, const float *gamma,
                                const float *beta, const float *run_mean,
                                const float *run_var, int c, int64_t s, float eps, int relu);
/* dx [C, S] written (may alias dy); dgamma, dbeta [C] written when non-NULL.
 * y_relu: the fused forward's output, whose zeros mask dy (NULL = no ReLU
 * was fused). */
void batchnorm_backward_cpu(const float *dy, const float *xhat, const float *invstd,
                            const float *gamma, const float *y_relu, float *dx,
                            float *dgamma, float *dbeta, int c, int64_t s);

/* y = max(x, 0) over n values; y may alias x. */
void relu_forward_cpu(const float *x, float *y, int64_t n);
/* dx = dy where y > 0, else 0; dx may alias dy. */
void relu_backward_cpu(const float *y, const float *dy, float *dx, int64_t n);

/* 2x2 max-pool, stride 2, floor: x [P, H, W] -> y [P, H/2, W/2]; arg [P,
 * H/2, W/2] keeps which of the four won (0..3) for backward. */
void maxpool2x2_forward_cpu(const float *x, float *y, uint8_t *arg, int64_t p, int h, int w);
/* dx [P, H, W] written (zeros where no window maximum was). */
void maxpool2x2_backward_cpu(const float *dy, const uint8_t *arg, float *dx,
                             int64_t p, int h, int w);

/* Global average pool: x [P, H*W] -> y [P]. */
void avgpool_forward_cpu(const float *x, float *y, int64_t p, int64_t hw);
void avgpool_backward_cpu(const float *dy, float *dx, int64_t p, int64_t hw);

/* y [B, K] = x [B, M] wt^T + bias, wt [K, M], bias [K] (may be NULL). */
void linear_forward_cpu(const float *x, const float *wt, const float *bias, float *y,
                        int64_t b, int64_t m, int64_t k);
/* dwt [K, M], dbias [K] written (dbias may be NULL); dx [B, M] written when
 * non-NULL. */
void linear_backward_cpu(const float *dy, const float *x, const float *wt, float *dx,
                         float *dwt, float *dbias, int64_t b, int64_t m, int64_t k);

/* Row softmax of z [B, K] into p [B, K] (max-subtracted); p may alias z. */
void softmax_forward_cpu(const float *z, float *p, int64_t b, int64_t k);

/* [R, Cc] -> [Cc, R]. */
void transpose_cpu(const float *x, float *y, int64_t r, int64_t c);

#endif
