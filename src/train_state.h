/*
 * train_state.h - what one training run holds, shared by the loop
 * (train.c) and its checkpoint and resume glue (train_ckpt.c). Internal to
 * the trainer; the public interface is include/ecl/train.h.
 *
 * Shape legend: H heads, B images per batch, V augmented views, K
 * clusters, N samples in the data set.
 */
#ifndef ECL_TRAIN_STATE_H
#define ECL_TRAIN_STATE_H

#include <signal.h>
#include <stdio.h>

#include "ecl/config.h"
#include "ecl/data.h"
#include "ecl/loss.h"
#include "ecl/model.h"
#include "ecl/model_cuda.h"
#include "ecl/optim.h"

/* Statistics accumulated over a progress interval or over an epoch. */
typedef struct {
    loss_terms sum;
    double em_iters, max_sigma, agree;
    int64_t steps, images;
    int64_t *hits;             /* [K] argmax-sigma counts */
} interval_stats;

/* Everything one run holds, so the loop's helpers take one argument. */
typedef struct {
    const config *cfg;
    dataset ds;
    loader *ld;
    model net;
    optimizer opt;
    loss_weights lw;
    float mean[3], std[3];
    FILE *log;                 /* log.jsonl, appended */
    int64_t b, k, views, n_batches, total_steps, global_step;
    float *logits, *dlogits;   /* [H, (V+1) B, K] */
    float *sigma, *y;          /* [H, B, K] */
    float *y_store;            /* [H, N, K] last y per sample, for em.warm_start */
    double head_loss[MODEL_MAX_HEADS];  /* summed over the epoch's steps */
    int best_head;             /* lowest loss over the last finished epoch */
    interval_stats iv, ep;     /* the progress interval and the epoch so far */
    int64_t start_epoch;       /* where the loop starts (resume) */
    int64_t skip_steps;        /* batches of start_epoch already done (resume) */
    int64_t steps_at_start;    /* global_step when this process started */
    int64_t skipped_steps;     /* steps dropped for non-finite values (nan_policy skip) */
    float *buffer_backup;      /* BN running statistics before the step, for a skip */
    double t_start;
    int use_cuda;              /* run.device resolved to cuda */
    model_cuda *gpu;           /* the device model; NULL on the CPU */
} run_state;

/* Returned by a step that met a non-finite value (see run.nan_policy). */
#define STEP_NONFINITE (-3)

/* Shared by the CPU step (train.c) and the GPU step (train_cuda.c). */
/* 0, or STEP_NONFINITE with the error naming `what`, the step and batch. */
int train_check_finite(const float *x, int64_t n, const char *what, const run_state *st,
                       const loader_batch *bt);
/* Head hd's pseudo-labels on the host from st->sigma into st->y with the
 * configured solver (warm-started from the store when asked). Returns the
 * iterations or STEP_NONFINITE. */
int train_head_labels(run_state *st, int hd, const loader_batch *bt);
/* 0, or STEP_NONFINITE when a head's loss is not finite. */
int train_check_head_losses(const run_state *st, const loss_terms *th);
/* A good step: adds the heads' terms to the run's sums, averages them
 * into t, and returns the learning rate for the update. */
float train_account_step(run_state *st, const loss_terms *th, int iters, loss_terms *t,
                         int *em_iters);

/* The GPU step (train_cuda.c): as the CPU step, same return values. In a
 * build without CUDA, setup fails with a message and the rest do nothing. */
int train_cuda_setup(run_state *st);
void train_cuda_teardown(run_state *st);
int train_step_cuda(run_state *st, const loader_batch *bt, loss_terms *t, int *em_iters);
/* Brings the host model and optimiser up to date with the device. */
void train_cuda_sync_host(run_state *st);

/* Set by SIGINT/SIGTERM; the loop finishes its step, saves and stops. */
extern volatile sig_atomic_t train_stop_signal;

/* Writes ckpt-<global_step>.safetensors in the run folder with the loop
 * standing at (epoch, step_in_epoch) and prunes old ones. 0 or -1. */
int train_checkpoint_save(run_state *st, int64_t epoch, int64_t step_in_epoch);

/* Loads a checkpoint into a set-up run: model, optimiser, loop position,
 * statistics; cuts log.jsonl back to what it held at that point, so a
 * resumed run's log matches an uninterrupted one. 0 or -1. */
int train_checkpoint_resume(run_state *st, const char *path, int allow_config_change);

#endif
