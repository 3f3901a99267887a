/*
 * train_cuda.c - the training step on the GPU (run.device = cuda): the
 * same step as train.c's train_step, with the model on the device
 * (model_cuda.h) and the loss, softmax, EM, head norm and optimiser as
 * their CUDA twins (cuda.h).
 *
 * What crosses to the host each step, all [B, K]-sized: the logits (for
 * the non-finite guard), sigma and y (for the epoch statistics, and for
 * the solvers other than EM, which run on the host), one count of
 * non-finite gradient values, and the loss terms. The host model and
 * optimiser are brought up to date only before a checkpoint.
 *
 * Shape legend: H heads, B images per batch, V augmented views, K clusters.
 */
#include "train_state.h"
#include "ecl/core.h"

#include <string.h>

#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
#include "ecl/cuda.h"
#include "ecl/solvers.h"

int train_cuda_setup(run_state *st)
{
    const config *cfg = st->cfg;
    if (st->k > EM_CUDA_MAX_K)
        return ecl_set_error("model.clusters = %lld exceeds the GPU limit %d; train on the CPU "
                             "(--device cpu)", (long long)st->k, EM_CUDA_MAX_K);
    int tf32 = strcmp(cfg->run.precision, "tf32") == 0;
    st->gpu = model_cuda_create(&st->net, &st->opt, (st->views + 1) * st->b, tf32);
    ecl_log_info("device: cuda, %.1f MB in one arena for %lld images per step, %s matmuls",
                 (double)model_cuda_arena_bytes(st->gpu) / 1048576.0,
                 (long long)((st->views + 1) * st->b), tf32 ? "tf32" : "fp32");
    return 0;
}

void train_cuda_teardown(run_state *st)
{
    model_cuda_destroy(st->gpu);
    st->gpu = NULL;
}

void train_cuda_sync_host(run_state *st)
{
    if (st->gpu)
        model_cuda_download(st->gpu, &st->net, &st->opt);
}

/* Head hd's pseudo-labels: EM from sigma on the device when that is the
 * solver and there is no warm start; otherwise the host solver on sigma
 * copied back. Either way st->sigma and st->y hold the head's rows after.
 * Returns the iterations or STEP_NONFINITE. */
static int head_labels_cuda(run_state *st, int hd, const loader_batch *bt)
{
    const config *cfg = st->cfg;
    int64_t b = bt->b, k = st->k;
    size_t bytes = (size_t)(b * k) * sizeof(float);
    float *sigma = model_cuda_sigma(st->gpu) + hd * b * k;
    float *y = model_cuda_y(st->gpu) + hd * b * k;
    ecl_cuda_to_host(st->sigma + hd * b * k, sigma, bytes);

    if (strcmp(cfg->em.solver, "em") != 0 || st->y_store) {
        int iters = train_head_labels(st, hd, bt);
        if (iters != STEP_NONFINITE)
            ecl_cuda_to_device(y, st->y + hd * b * k, bytes);
        return iters;
    }
    em_result r = em_solve_cuda(sigma, y, b, (int)k, NULL, cfg->loss.lambda, cfg->em.max_iter,
                                cfg->em.tol, 1);
    ecl_cuda_to_host(st->y + hd * b * k, y, bytes);
    if (train_check_finite(st->y + hd * b * k, b * k, "pseudo-labels y", st, bt) != 0)
        return STEP_NONFINITE;
    return r.iters;
}

int train_step_cuda(run_state *st, const loader_batch *bt, loss_terms *t, int *em_iters)
{
    model_cuda *g = st->gpu;
    int64_t b = bt->b, k = st->k, rows = (st->views + 1) * b;
    int heads = st->net.n_heads;

    model_cuda_forward(g, bt->x, rows, 1);
    ecl_cuda_to_host(st->logits, model_cuda_logits(g), (size_t)(heads * rows * k) * sizeof(float));
    if (train_check_finite(st->logits, heads * rows * k, "logits", st, bt) != 0)
        return STEP_NONFINITE;

    loss_terms th[MODEL_MAX_HEADS];
    int iters = 0;
    for (int hd = 0; hd < heads; hd++) {
        const float *z = model_cuda_logits(g) + hd * rows * k;
        softmax_forward_cuda(z, model_cuda_sigma(g) + hd * b * k, b, k);
        int it = head_labels_cuda(st, hd, bt);
        if (it == STEP_NONFINITE)
            return STEP_NONFINITE;
        iters += it;
        loss_ecl_cuda(z, model_cuda_y(g) + hd * b * k, b, (int)k, (int)st->views, &st->lw, NULL,
                      model_cuda_dlogits(g) + hd * rows * k, &th[hd]);
    }
    model_cuda_backward(g, rows);
    for (int hd = 0; hd < heads; hd++) {
        param *w = model_cuda_head_w(g, hd);
        loss_head_norm_cuda(w->value, w->n, &st->lw, w->grad, &th[hd]);
    }
    if (train_check_head_losses(st, th) != 0)
        return STEP_NONFINITE;
    char name[48] = "?";
    int64_t bad = model_cuda_nonfinite_grads(g, name, sizeof name);
    if (bad > 0) {
        ecl_set_error("%lld non-finite gradient values (first in %s) at step %lld (batch %lld "
                      "of the epoch); lower optim.lr, check the input data, or set "
                      "run.nan_policy=skip", (long long)bad, name,
                      (long long)st->global_step + 1, (long long)bt->step + 1);
        return STEP_NONFINITE;
    }
    model_cuda_optim_step(g, &st->opt, train_account_step(st, th, iters, t, em_iters));
    return 0;
}

#else

int train_cuda_setup(run_state *st)
{
    (void)st;
    return ecl_set_error("this build of ecl has no CUDA backend");
}

void train_cuda_teardown(run_state *st)
{
    (void)st;
}

void train_cuda_sync_host(run_state *st)
{
    (void)st;
}

int train_step_cuda(run_state *st, const loader_batch *bt, loss_terms *t, int *em_iters)
{
    (void)st, (void)bt, (void)t, (void)em_iters;
    return ecl_set_error("this build of ecl has no CUDA backend");
}

#endif
