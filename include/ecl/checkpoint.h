/*
 * checkpoint.h - saving and resuming a training run: model parameters and
 * buffers, optimiser moments, the loop position and the EM warm-start
 * labels, in one safetensors file (safetensors.h) that PyTorch-side tools
 * read as well (scripts/read_checkpoint.py).
 *
 * What a file holds:
 *   tensors (all F32, little-endian)
 *     <param name>          every model param, with its shape ("head.weight" [K, M])
 *     <buffer name>         every model buffer, [n] ("block0.bn.running_mean")
 *     optim.m1.<param>      first moment (Adam) or momentum (SGD), param's shape
 *     optim.m2.<param>      second moment, Adam only
 *     em.y_store            [H, N, K] last pseudo-labels per head and sample, when saved
 *   metadata (strings)
 *     format "ecl-checkpoint", version "1", ecl_version, model, clusters, heads,
 *     optimizer ("adam" | "sgd"), epoch, step_in_epoch, global_step,
 *     optim_step, seed (decimal), best_head, train_stats (optional opaque
 *     text), config (the whole resolved INI text),
 *     config_fingerprint (16 hex digits of config_fingerprint())
 *
 * An exact resume needs (seed, epoch, step_in_epoch) for the loader's order
 * and augmentation streams, global_step for the schedule, the optimiser
 * moments and step count for Adam's bias correction, the BN running stats
 * and, with em.warm_start, y_store.
 *
 * Not here: the training loop's use of these (train.c), saving on a signal,
 * sharded or multi-rank checkpoints, other dtypes than F32.
 */
#ifndef ECL_CHECKPOINT_H
#define ECL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "ecl/config.h"
#include "ecl/model.h"
#include "ecl/optim.h"

#define CHECKPOINT_FORMAT "ecl-checkpoint"
#define CHECKPOINT_VERSION 1
/* The command-line flag the refusal message tells a user to pass to load a
 * checkpoint whose config differs (the trainer maps it to
 * allow_config_mismatch = 1). */
#define CHECKPOINT_MISMATCH_FLAG "--allow-config-change"

/* Where the loop stands: resume runs epoch `epoch` from batch
 * `step_in_epoch` (the loader order of an epoch derives from (seed, epoch)).
 * The optimiser's own step count travels in optimizer.step. */
typedef struct {
    int64_t epoch;          /* 0-based epoch to resume in */
    int64_t step_in_epoch;  /* batches of that epoch already done */
    int64_t global_step;    /* optimiser steps done in the whole run */
    uint64_t seed;          /* run.seed the run was started with */
    float *y_store;         /* [H, n_samples, K] EM warm-start labels (H = model heads),
                               or NULL; the caller's memory */
    int64_t n_samples;      /* N of y_store (0 when y_store is NULL) */
    int64_t best_head;      /* the head in use (model.heads > 1) */
    char *train_stats;      /* the trainer's running statistics as opaque text, or
                               NULL; save stores it; load frees the old value (NULL
                               or malloc'd) and sets a copy the caller frees */
} checkpoint_state;

/* Writes everything above to `path` atomically (temp file + rename: a failed
 * save leaves the previous file whole). o and st may be NULL (a model-only
 * file, e.g. for export). 0, or -1 with ecl_last_error(). */
int checkpoint_save(const char *path, const model *m, const optimizer *o,
                    const checkpoint_state *st, const config *cfg);

/*
 * Loads `path` into m (built by model_init for cfg), o (from optim_init) and
 * st. Checks, in order, each refusal naming what was found and expected:
 *   - format and version metadata (other versions are refused);
 *   - the stored config against cfg: if any key that changes results
 *     differs, refuses and lists the keys with both values, unless
 *     allow_config_mismatch (then a warning). Keys that never change the
 *     numbers (run.out, run.threads, run.quiet, run.log_every,
 *     run.eval_every, run.kmeans_baseline, augment.workers) may differ;
 *   - model name and optimiser kind;
 *   - every expected tensor present as F32 with the model's shape, and no
 *     unexpected tensor.
 * Nothing in m, o or st changes unless every check passes.
 * o may be NULL (optimiser tensors then ignored: evaluation). st may be
 * NULL; st->y_store, when not NULL, must hold [H, st->n_samples, K] and is
 * filled from em.y_store (left as it is, with a warning, if the file has
 * none). On success st gets epoch, step_in_epoch, global_step and seed, and
 * o->step the saved optimiser step. 0, or -1 with ecl_last_error().
 */
int checkpoint_load(const char *path, model *m, optimizer *o, checkpoint_state *st,
                    const config *cfg, int allow_config_mismatch);

/* "<dir>/ckpt-<global_step>.safetensors" into buf. */
void checkpoint_path(const char *dir, int64_t global_step, char *buf, size_t size);
/* The checkpoint of dir with the largest global step, into buf (see
 * checkpoint_path). 1 found, 0 none, -1 with ecl_last_error() (dir unreadable). */
int checkpoint_find_latest(const char *dir, char *buf, size_t size);
/* Removes all but the newest keep_last files named ckpt-<global_step>.safetensors
 * in dir (by global step; other files are left alone). keep_last <= 0 keeps
 * all. The number removed, or -1 with ecl_last_error(). */
int checkpoint_prune(const char *dir, int keep_last);

#endif
