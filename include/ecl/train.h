/*
 * train.h - the training run: data, model, loop, logs and the run folder.
 *
 * A run folder holds config.ini (the resolved config), log.jsonl (one JSON
 * object per progress interval and per epoch), metrics.json and
 * assignments.csv, each written whole through fileio.h.
 */
#ifndef ECL_TRAIN_H
#define ECL_TRAIN_H

#include <stdint.h>

#include "ecl/config.h"
#include "ecl/data.h"
#include "ecl/model.h"
#include "ecl/model_cuda.h"

/* What the whole-data pass of a model gives: hard assignments, scores. */
typedef struct {
    int32_t *cluster;        /* [N] argmax sigma */
    float *confidence;       /* [N] max sigma */
    int64_t *sizes;          /* [K] */
    int k, clusters_used;
    int64_t min_size, max_size;
    double marginal_entropy; /* H(mean sigma) in nats; log K when balanced */
    double mean_confidence;
    int labelled;            /* 1 when the scores below mean something */
    double acc, nmi, ari, acc_majority;
    int64_t n_nonfinite;     /* images whose outputs were NaN/Inf (cluster 0, confidence 0) */
} eval_result;

/* Loads the data set that cfg names. 0, or -1 with ecl_last_error(). */
int train_load_dataset(const config *cfg, dataset *ds);

/* Runs the model in inference mode over every sample (clean images) and
 * scores each head against the labels when there are any: r is an array of
 * m->n_heads results, one per head. Free each with eval_result_free(). */
void train_evaluate(model *m, const dataset *ds, const float *mean, const float *std,
                    int64_t batch, eval_result *r);
/* The same with the forward on g, m's device twin, when g is not NULL
 * (batch <= its capacity). */
void train_evaluate_on(model *m, model_cuda *g, const dataset *ds, const float *mean,
                       const float *std, int64_t batch, eval_result *r);
void eval_result_free(eval_result *r);

/* Exit status of a run stopped by SIGINT/SIGTERM after saving a checkpoint. */
#define TRAIN_EXIT_STOPPED 130

/* The whole run of cfg, from scratch or, when resume_path is non-NULL,
 * from that checkpoint (allow_config_change: accept a checkpoint whose
 * config differs in keys that change results). Returns the process exit
 * status: 0 success, 1 failure, TRAIN_EXIT_STOPPED after a signal. */
int train_run(const config *cfg, const char *resume_path, int allow_config_change);

#endif
