/*
 * cuda.h - the CUDA twins of ecl's CPU ops (the .cu files in kernels/) and
 * the device probe. Each `_cuda` function takes the arguments of its `_cpu`
 * twin, in the same order and shapes, with every array argument a *device*
 * pointer; structs of settings (loss_weights, optimizer) and results
 * (loss_terms, em_result) stay on the host. They run on the current device and the
 * default stream, and return after the launch unless they hand a result
 * back to the host (the loss terms, the EM iteration count), which waits.
 *
 * Exists only in builds with ECL_HAVE_CUDA = 1 (the Makefile sets it when
 * it finds nvcc); C code guards its calls with
 *     #if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
 *
 * Not here: convolution, batch norm and GEMM on the GPU (cuDNN / cuBLAS,
 * later work), streams, several devices, and the trainer's device path.
 *
 * Shape legend: B rows (images), K clusters, V augmented views, N rows of
 * an EM problem, n elements of a parameter tensor.
 */
#ifndef ECL_CUDA_H
#define ECL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "ecl/em.h"
#include "ecl/loss.h"
#include "ecl/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest K of em_solve_cuda: one block keeps the K column sums and
 * weights in shared memory, one column per thread. */
#define EM_CUDA_MAX_K 1024

/* Number of usable CUDA devices; 0 when there is no driver or no device
 * (never stops the process). */
int ecl_cuda_device_count(void);

/* 1 when a CUDA device can run ecl's kernels. Otherwise 0, and why[0..n)
 * says why in one line a person can act on (no driver, driver older than
 * the runtime, no device visible). why may be NULL. */
int ecl_cuda_probe(char *why, size_t n);

/* Frees the device scratch buffers the ops below keep between calls. */
void ecl_cuda_release_scratch(void);

/* Checked device memory for C callers (no CUDA header needed): a failure
 * stops the process naming the call and the device. The caller owns what
 * ecl_cuda_alloc returns and frees it with ecl_cuda_free (NULL is fine). */
void *ecl_cuda_alloc(size_t n_bytes);
void ecl_cuda_free(void *p);
/* Copies n_bytes host -> device / device -> host; both wait for the copy. */
void ecl_cuda_to_device(void *dst, const void *src, size_t n_bytes);
void ecl_cuda_to_host(void *dst, const void *src, size_t n_bytes);
/* Waits for all work on the device (for timings and error checks). */
void ecl_cuda_sync(void);

/* Row softmax of z [B, K] into p [B, K] (max-subtracted); p may alias z. */
void softmax_forward_cuda(const float *z, float *p, int64_t b, int64_t k);

/* loss_ecl_cpu on the device in one fused pass: logits [(V+1), B, K],
 * y [B, K], u [K] (NULL = uniform), dlogits [(V+1), B, K] written; lw and
 * t are host structs. The terms are reduced on the device in a fixed
 * order and copied to t, so the call waits for the device. */
void loss_ecl_cuda(const float *logits, const float *y, int64_t b, int k, int views,
                   const loss_weights *lw, const float *u, float *dlogits, loss_terms *t);

/* loss_head_norm_cpu on the device: w [n], grad [n] (accumulates 2 gamma
 * W), t on the host (head_norm set, total increased); waits for the device. */
void loss_head_norm_cuda(const float *w, int64_t n, const loss_weights *lw, float *grad,
                         loss_terms *t);

/* em_solve_cpu on the device, every iteration in one launch of one block:
 * sigma [N, K], y [N, K] in/out, u [K] or NULL; K <= EM_CUDA_MAX_K. Same
 * input checks (a bad sigma row stops the process with the CPU's
 * message) and stopping rule; waits for the device. */
em_result em_solve_cuda(const float *sigma, float *y, int64_t n, int k, const float *u,
                        double lambda, int max_iter, double tol, int init_from_sigma);

/* One Adam update (decoupled weight decay) of one param, as optim_step does
 * on the CPU: p->value, p->grad, m1 and m2 [p->n] are device pointers, o
 * gives the hyper-parameters and o->step, already counted for this update. */
void adam_update_cuda(const optimizer *o, param *p, float *m1, float *m2, float lr);

/* One SGD-with-momentum update of one param; buf [p->n] on the device. */
void sgd_update_cuda(const optimizer *o, param *p, float *buf, float lr);

#ifdef __cplusplus
}
#endif

#endif
