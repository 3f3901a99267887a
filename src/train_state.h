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
} run_state;

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
