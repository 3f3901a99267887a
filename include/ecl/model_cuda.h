/*
 * model_cuda.h - the device twin of a model (model.h) on one CUDA GPU, for
 * training and inference: cuDNN for the 3x3 convolutions, batch norm and
 * max-pool, cuBLAS for the linear heads, ecl's own kernels for the ReLU,
 * the global average pool, the parameter-free head batch norm and the
 * optimiser. Layout is NCHW (cuDNN's), so no layout change of the input.
 *
 * Memory: one device arena, sized at creation for `capacity` images (every
 * parameter, gradient, optimiser moment, activation, the cuDNN workspace),
 * so no step allocates. The input goes through a pinned host buffer and a
 * copy stream. Convolution algorithms are chosen once per batch size, the
 * first deterministic one of cuDNN's heuristic ranking (not by timing,
 * which varies from run to run), then cached: the same seed gives the
 * same bits on the same GPU and library.
 *
 * The host model stays the owner of the numbers between runs: upload()
 * before the first step, download() before a checkpoint or an evaluation
 * on the CPU. Parameters follow the host's names and order.
 *
 * Exists only in CUDA builds (ECL_HAVE_CUDA = 1, cuDNN and cuBLAS found).
 * Not here: several GPUs, bf16 activations (tf32 is the one reduced
 * precision), CUDA graphs.
 *
 * Shape legend: N images, Cin input channels, H x W input size, K
 * clusters, M feature width, Hd heads.
 */
#ifndef ECL_MODEL_CUDA_H
#define ECL_MODEL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "ecl/model.h"
#include "ecl/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct model_cuda model_cuda;

/* The device twin of m for up to `capacity` images per forward, with the
 * optimiser state of o (Adam moments or SGD momentum), uploaded from the
 * host. tf32 = 1 lets cuDNN and cuBLAS use TF32 tensor cores (about 10
 * mantissa bits in the products); 0 keeps full fp32. Stops the process
 * with the failed call when the GPU cannot hold it. */
model_cuda *model_cuda_create(const model *m, const optimizer *o, int64_t capacity, int tf32);
void model_cuda_destroy(model_cuda *g);
/* Bytes of the arena (for the log). */
size_t model_cuda_arena_bytes(const model_cuda *g);

/* Parameters, BN running statistics and optimiser moments, host <-> device. */
void model_cuda_upload(model_cuda *g, const model *m, const optimizer *o);
void model_cuda_download(const model_cuda *g, model *m, optimizer *o);

/* Forward of host images x [N, Cin, H, W] as model_forward; the logits
 * [Hd, N, K] stay on the device (model_cuda_logits). */
void model_cuda_forward(model_cuda *g, const float *x_host, int64_t n, int train);
/* Backward of the last training forward from model_cuda_dlogits(), which
 * the caller has filled; writes every device grad (=, not +=). */
void model_cuda_backward(model_cuda *g, int64_t n);

/* Device buffers: logits and their gradient [Hd, N, K]; sigma and y
 * [Hd, B, K] for the pseudo-labels of a batch of B = capacity / (V+1). */
float *model_cuda_logits(model_cuda *g);
float *model_cuda_dlogits(model_cuda *g);
float *model_cuda_sigma(model_cuda *g);
float *model_cuda_y(model_cuda *g);

/* Head hd's weight as a param whose value and grad are device pointers. */
param *model_cuda_head_w(model_cuda *g, int hd);

/* One optimiser update of every parameter (o->step is counted here, as
 * optim_step does). */
void model_cuda_optim_step(model_cuda *g, optimizer *o, float lr);

/* Number of non-finite values over every gradient; the first offending
 * param's name in `name` (NULL = not wanted). */
int64_t model_cuda_nonfinite_grads(model_cuda *g, char *name, size_t n);

/* Keeps / puts back the BN running statistics (for run.nan_policy=skip). */
void model_cuda_buffers_save(model_cuda *g);
void model_cuda_buffers_restore(model_cuda *g);

#ifdef __cplusplus
}
#endif

#endif
