/*
 * train.c - one training run from a resolved config: load the data, build
 * the model, loop over epochs (forward all views -> softmax -> EM pseudo-
 * labels -> loss and logit gradient -> backward -> optimiser step), log,
 * score, and write the run folder.
 *
 * Shape legend: B images per batch, V augmented views, K clusters, N
 * samples in the data set.
 * Checkpoints and resume live in train_ckpt.c; the GPU step in
 * train_cuda.c (run.device = cuda), with the host model kept as the copy
 * that checkpoints and scores read.
 * Not here yet: MPI.
 */
#define _XOPEN_SOURCE 700  /* POSIX 2008 plus sigaltstack and SA_ONSTACK */
#include "ecl/train.h"
#include "train_state.h"
#include "ecl/checkpoint.h"
#include "ecl/core.h"
#include "ecl/em.h"
#include "ecl/fileio.h"
#include "ecl/loss.h"
#include "ecl/metrics.h"
#include "ecl/model_cuda.h"
#include "ecl/ops.h"
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
#include "ecl/cuda.h"
#endif
#include "ecl/optim.h"
#include "ecl/solvers.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int train_load_dataset(const config *cfg, dataset *ds)
{
    int rc;
    if (strcmp(cfg->data.format, "idx") == 0)
        rc = dataset_load_idx(ds, cfg->data.path, cfg->data.labels, cfg->data.channels);
    else
        rc = dataset_load_folder(ds, cfg->data.path, cfg->data.channels, cfg->data.height,
                                 cfg->data.width);
    if (rc != 0)
        return rc;
    dataset_truncate(ds, cfg->data.limit);
    return 0;
}

/* ---- evaluation ----------------------------------------------------------- */

void eval_result_free(eval_result *r)
{
    free(r->cluster);
    free(r->confidence);
    free(r->sizes);
    memset(r, 0, sizeof *r);
}

/* Cluster sizes, marginal entropy and the label scores, from assignments. */
static void eval_summarise(eval_result *r, const dataset *ds, const double *sigma_sum)
{
    r->min_size = INT64_MAX;
    for (int j = 0; j < r->k; j++) {
        r->clusters_used += r->sizes[j] > 0;
        r->min_size = r->sizes[j] < r->min_size ? r->sizes[j] : r->min_size;
        r->max_size = r->sizes[j] > r->max_size ? r->sizes[j] : r->max_size;
        double pj = sigma_sum[j] / (double)ds->n;
        r->marginal_entropy -= pj > 0.0 ? pj * log(pj) : 0.0;
    }
    for (int64_t i = 0; i < ds->n; i++) {
        r->mean_confidence += r->confidence[i];
        r->labelled |= ds->labels[i] >= 0;
    }
    r->mean_confidence /= (double)ds->n;
    if (!r->labelled)
        return;
    r->acc = metrics_acc(ds->labels, r->cluster, ds->n);
    r->nmi = metrics_nmi(ds->labels, r->cluster, ds->n);
    r->ari = metrics_ari(ds->labels, r->cluster, ds->n);
    r->acc_majority = metrics_acc_majority(ds->labels, r->cluster, ds->n);
}

/* Argmax, confidence and sizes of rows [start, start + b) from sigma. */
static void eval_rows(eval_result *r, const float *p, int64_t start, int64_t b,
                      double *sigma_sum)
{
    int k = r->k;
    for (int64_t i = 0; i < b; i++) {
        const float *pr = p + i * k;
        int best = 0, finite = 1;
        for (int j = 0; j < k; j++)
            finite &= isfinite(pr[j]) != 0;
        if (!finite) {
            r->n_nonfinite++;
            r->cluster[start + i] = 0;
            r->confidence[start + i] = 0.0f;
            r->sizes[0]++;
            continue;
        }
        for (int j = 0; j < k; j++) {
            best = pr[j] > pr[best] ? j : best;
            sigma_sum[j] += pr[j];
        }
        r->cluster[start + i] = best;
        r->confidence[start + i] = pr[best];
        r->sizes[best]++;
    }
}

void train_evaluate(model *m, const dataset *ds, const float *mean, const float *std,
                    int64_t batch, eval_result *r)
{
    train_evaluate_on(m, NULL, ds, mean, std, batch, r);
}

void train_evaluate_on(model *m, model_cuda *g, const dataset *ds, const float *mean,
                       const float *std, int64_t batch, eval_result *r)
{
    int k = m->k, heads = m->n_heads;
    int64_t img = (int64_t)ds->c * ds->h * ds->w;
    float *x = ecl_malloc((size_t)(batch * img) * sizeof(float));
    float *p = ecl_malloc((size_t)(heads * batch * k) * sizeof(float));
    double *sigma_sum = ecl_calloc((size_t)(heads * k), sizeof(double));
    for (int hd = 0; hd < heads; hd++) {
        memset(&r[hd], 0, sizeof r[hd]);
        r[hd].k = k;
        r[hd].cluster = ecl_malloc((size_t)ds->n * sizeof(int32_t));
        r[hd].confidence = ecl_malloc((size_t)ds->n * sizeof(float));
        r[hd].sizes = ecl_calloc((size_t)k, sizeof(int64_t));
    }

    /* Clean images in order, inference-mode batch norm; every head. */
    for (int64_t start = 0; start < ds->n; start += batch) {
        int64_t b = ds->n - start < batch ? ds->n - start : batch;
        #pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < b; i++)
            augment_image(ds->pixels + (start + i) * img, ds->c, ds->h, ds->w, NULL, mean,
                          std, 0, x + i * img);
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
        if (g) {
            model_cuda_forward(g, x, b, 0);
            ecl_cuda_to_host(p, model_cuda_logits(g), (size_t)(heads * b * k) * sizeof(float));
        } else
#endif
            model_forward(m, x, b, 0, p);
        (void)g;
        softmax_forward_cpu(p, p, heads * b, k);
        for (int hd = 0; hd < heads; hd++)
            eval_rows(&r[hd], p + hd * b * k, start, b, sigma_sum + hd * k);
    }
    for (int hd = 0; hd < heads; hd++)
        eval_summarise(&r[hd], ds, sigma_sum + hd * k);
    free(x);
    free(p);
    free(sigma_sum);
}

static void eval_results_free(eval_result *r, int heads)
{
    for (int hd = 0; hd < heads; hd++)
        eval_result_free(&r[hd]);
}

/* ---- the run folder --------------------------------------------------------- */

static int write_config_file(const config *cfg, const char *dir)
{
    char path[1100];
    atomic_file a;
    snprintf(path, sizeof path, "%s/config.ini", dir);
    if (atomic_open(&a, path) != 0)
        return -1;
    config_write_ini(cfg, a.f);
    return atomic_commit(&a);
}

static int write_assignments(const eval_result *r, const dataset *ds, const char *dir)
{
    char path[1100];
    atomic_file a;
    snprintf(path, sizeof path, "%s/assignments.csv", dir);
    if (atomic_open(&a, path) != 0)
        return -1;
    fprintf(a.f, "index,name,cluster,confidence,label\n");
    for (int64_t i = 0; i < ds->n; i++)
        fprintf(a.f, "%lld,%s,%d,%.6f,%d\n", (long long)i, ds->names ? ds->names[i] : "",
                r->cluster[i], r->confidence[i], ds->labels[i]);
    return atomic_commit(&a);
}

typedef struct {
    double seconds, img_per_s;
    double km_acc, km_nmi, km_ari;  /* K-means baseline; negative when not run */
    int64_t steps;
    const char *device;             /* cpu | cuda: where this process trained */
} run_summary;

static void json_eval_fields(FILE *f, const eval_result *r)
{
    fprintf(f, "\"clusters_used\": %d, \"min_cluster\": %lld, \"max_cluster\": %lld, "
            "\"marginal_entropy\": %.6f, \"log_k\": %.6f, \"mean_confidence\": %.6f",
            r->clusters_used, (long long)r->min_size, (long long)r->max_size,
            r->marginal_entropy, log((double)r->k), r->mean_confidence);
    if (r->labelled)
        fprintf(f, ", \"acc\": %.6f, \"nmi\": %.6f, \"ari\": %.6f, \"acc_majority\": %.6f",
                r->acc, r->nmi, r->ari, r->acc_majority);
}

static int write_metrics(const eval_result *r, const run_summary *s, const dataset *ds,
                         const char *dir)
{
    char path[1100];
    atomic_file a;
    snprintf(path, sizeof path, "%s/metrics.json", dir);
    if (atomic_open(&a, path) != 0)
        return -1;
    fprintf(a.f, "{\"n\": %lld, \"k\": %d, ", (long long)ds->n, r->k);
    json_eval_fields(a.f, r);
    fprintf(a.f, ", \"device\": \"%s\", \"seconds\": %.3f, \"train_img_per_s\": %.1f, "
            "\"steps\": %lld", s->device, s->seconds, s->img_per_s, (long long)s->steps);
    if (s->km_acc >= 0.0)
        fprintf(a.f, ", \"kmeans_acc\": %.6f, \"kmeans_nmi\": %.6f, \"kmeans_ari\": %.6f",
                s->km_acc, s->km_nmi, s->km_ari);
    fprintf(a.f, ", \"sizes\": [");
    for (int j = 0; j < r->k; j++)
        fprintf(a.f, "%s%lld", j ? ", " : "", (long long)r->sizes[j]);
    fprintf(a.f, "]}\n");
    return atomic_commit(&a);
}

/* ---- the training loop ------------------------------------------------------ */

/* acc += a * t, term by term. */
static void loss_terms_axpy(loss_terms *acc, const loss_terms *t, double a)
{
    acc->rce += a * t->rce;
    acc->fairness += a * t->fairness;
    acc->head_norm += a * t->head_norm;
    acc->aug += a * t->aug;
    acc->fce += a * t->fce;
    acc->total += a * t->total;
}

static void stats_add(interval_stats *s, const loss_terms *t, int em_iters)
{
    loss_terms_axpy(&s->sum, t, 1.0);
    s->em_iters += em_iters;
    s->steps++;
}

static void stats_reset(interval_stats *s, int k)
{
    int64_t *hits = s->hits;
    memset(s, 0, sizeof *s);
    s->hits = hits;
    memset(s->hits, 0, (size_t)k * sizeof(int64_t));
}

/* Per-row bookkeeping of one batch: argmax counts, confidence, and how
 * often the pseudo-label's argmax equals the prediction's. */
static void stats_rows(interval_stats *s, const float *sigma, const float *y, int64_t b, int k)
{
    for (int64_t i = 0; i < b; i++) {
        const float *p = sigma + i * k, *q = y + i * k;
        int bp = 0, bq = 0;
        for (int j = 1; j < k; j++) {
            bp = p[j] > p[bp] ? j : bp;
            bq = q[j] > q[bq] ? j : bq;
        }
        s->hits[bp]++;
        s->max_sigma += p[bp];
        s->agree += bp == bq;
    }
    s->images += b;
}

int train_check_finite(const float *x, int64_t n, const char *what, const run_state *st,
                        const loader_batch *bt)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            ecl_set_error("%s has a non-finite value (%g at flat index %lld) at step %lld "
                          "(batch %lld of the epoch); lower optim.lr, check the input data, "
                          "or set run.nan_policy=skip", what, x[i], (long long)i,
                          (long long)st->global_step + 1, (long long)bt->step + 1);
            return STEP_NONFINITE;
        }
    return 0;
}

/* Every parameter gradient finite? 0 or STEP_NONFINITE. */
static int check_grads(const run_state *st, const loader_batch *bt)
{
    for (int i = 0; i < st->net.n_params; i++) {
        const param *p = &st->net.params[i];
        char what[80];
        snprintf(what, sizeof what, "gradient of %s", p->name);
        if (train_check_finite(p->grad, p->n, what, st, bt) != 0)
            return STEP_NONFINITE;
    }
    return 0;
}

/* Batch-norm running statistics: kept before a step, put back on a skip. */
static void buffers_copy(model *m, float *backup, int restore)
{
    for (int i = 0; i < m->n_buffers; i++) {
        buffer *b = &m->buffers[i];
        if (restore)
            memcpy(b->value, backup, (size_t)b->n * sizeof(float));
        else
            memcpy(backup, b->value, (size_t)b->n * sizeof(float));
        backup += b->n;
    }
}

int train_head_labels(run_state *st, int hd, const loader_batch *bt)
{
    int64_t b = bt->b, k = st->k;
    float *sigma = st->sigma + hd * b * k, *y = st->y + hd * b * k;
    float *store = st->y_store ? st->y_store + hd * st->ds.n * k : NULL;
    const config *cfg = st->cfg;

    if (store)
        for (int64_t i = 0; i < b; i++)
            memcpy(y + i * k, store + bt->index[i] * k, (size_t)k * sizeof(float));
    solver_options so = solver_default_options(SOLVER_EM);
    ECL_CHECK(solver_parse(cfg->em.solver, &so.kind) == 0, "%s", ecl_last_error());
    so.max_iter = cfg->em.max_iter;
    so.tol = cfg->em.tol;
    so.init_from_sigma = store == NULL;
    solver_result er = solver_solve(sigma, y, b, (int)k, NULL, cfg->loss.lambda, &so);
    if (train_check_finite(y, b * k, "pseudo-labels y", st, bt) != 0)
        return STEP_NONFINITE;
    if (store)
        for (int64_t i = 0; i < b; i++)
            memcpy(store + bt->index[i] * k, y + i * k, (size_t)k * sizeof(float));
    return er.iters;
}

/* Keeps (restore 0) or puts back (restore 1) the BN running statistics,
 * wherever the model lives. */
static void step_buffers(run_state *st, int restore)
{
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
    if (st->gpu) {
        if (restore)
            model_cuda_buffers_restore(st->gpu);
        else
            model_cuda_buffers_save(st->gpu);
        return;
    }
#endif
    buffers_copy(&st->net, st->buffer_backup, restore);
}

/* One head's sigma, pseudo-labels, loss terms and logit gradient. Returns
 * the solver iterations, or STEP_NONFINITE. */
static int head_step(run_state *st, int hd, const loader_batch *bt, loss_terms *t)
{
    int64_t b = bt->b, k = st->k, rows = (st->views + 1) * b;
    const float *logits = st->logits + hd * rows * k;
    softmax_forward_cpu(logits, st->sigma + hd * b * k, b, k);
    int iters = train_head_labels(st, hd, bt);
    if (iters == STEP_NONFINITE)
        return STEP_NONFINITE;
    loss_ecl_cpu(logits, st->y + hd * b * k, b, (int)k, st->views, &st->lw, NULL,
                 st->dlogits + hd * rows * k, t);
    return iters;
}

int train_check_head_losses(const run_state *st, const loss_terms *th)
{
    for (int hd = 0; hd < st->net.n_heads; hd++)
        if (!isfinite(th[hd].total)) {
            ecl_set_error("loss of head %d is not finite (%g) at step %lld; lower optim.lr or "
                          "set run.nan_policy=skip", hd, th[hd].total,
                          (long long)st->global_step + 1);
            return STEP_NONFINITE;
        }
    return 0;
}

float train_account_step(run_state *st, const loss_terms *th, int iters, loss_terms *t,
                         int *em_iters)
{
    int heads = st->net.n_heads;
    memset(t, 0, sizeof *t);
    for (int hd = 0; hd < heads; hd++) {
        st->head_loss[hd] += th[hd].total;
        loss_terms_axpy(t, &th[hd], 1.0 / heads);
    }
    *em_iters = iters / heads;
    const config *cfg = st->cfg;
    int64_t warmup = (int64_t)(cfg->optim.warmup_epochs * (float)st->n_batches);
    return optim_lr_at(cfg, st->global_step, st->total_steps, warmup);
}

/* One optimisation step on one batch: t gets the terms averaged over the
 * heads. 0, or STEP_NONFINITE with nothing but the BN running statistics
 * changed (the caller restores those when it skips the step). */
static int train_step(run_state *st, const loader_batch *bt, loss_terms *t, int *em_iters)
{
    int64_t b = bt->b, k = st->k, nv = st->views + 1;
    int heads = st->net.n_heads;

    /* All views in one forward: batch norm sees clean and augmented alike. */
    model_forward(&st->net, bt->x, nv * b, 1, st->logits);
    if (train_check_finite(st->logits, heads * nv * b * k, "logits", st, bt) != 0)
        return STEP_NONFINITE;

    /* Each head's loss with its y fixed, one backward for all, then each
     * head's norm penalty onto its own weights. */
    loss_terms th[MODEL_MAX_HEADS];
    int iters = 0;
    for (int hd = 0; hd < heads; hd++) {
        int it = head_step(st, hd, bt, &th[hd]);
        if (it == STEP_NONFINITE)
            return STEP_NONFINITE;
        iters += it;
    }
    model_backward(&st->net, st->dlogits, nv * b);
    for (int hd = 0; hd < heads; hd++) {
        param *w = st->net.head_w[hd];
        loss_head_norm_cpu(w->value, w->n, &st->lw, w->grad, &th[hd]);
    }
    if (train_check_head_losses(st, th) != 0 || check_grads(st, bt) != 0)
        return STEP_NONFINITE;

    /* The step is good: account for it, then update. */
    optim_step(&st->opt, &st->net, train_account_step(st, th, iters, t, em_iters));
    return 0;
}

static void format_eta(double s, char *buf, size_t n)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

/* One aligned progress line on stderr and one "step" record in log.jsonl. */
static void log_progress(run_state *st, int64_t epoch, int64_t step, const interval_stats *s)
{
    if (s->steps == 0)
        return;  /* every step of the interval was skipped */
    double el = ecl_now_s() - st->t_start, n = (double)s->steps;
    double done = (double)(st->global_step - st->steps_at_start);
    double img_s = done * st->b / (el > 0 ? el : 1e-9);
    double eta = el / (done > 0 ? done : 1.0) * (double)(st->total_steps - st->global_step);
    float lr = optim_lr_at(st->cfg, st->global_step - 1, st->total_steps,
                           (int64_t)(st->cfg->optim.warmup_epochs * (float)st->n_batches));
    char eta_s[32];
    format_eta(eta, eta_s, sizeof eta_s);
    ecl_log_info("ep %3lld/%d step %5lld/%lld | loss %8.4f rce %7.4f fair %.2e aug %7.4f "
                 "fce %7.4f | em %5.1f | %6.0f img/s | eta %s",
                 (long long)epoch + 1, st->cfg->run.epochs, (long long)step + 1,
                 (long long)st->n_batches, s->sum.total / n, s->sum.rce / n,
                 s->sum.fairness / n, s->sum.aug / n, s->sum.fce / n, s->em_iters / n, img_s,
                 eta_s);
    fprintf(st->log, "{\"kind\": \"step\", \"epoch\": %lld, \"step\": %lld, \"global_step\": "
            "%lld, \"lr\": %.6g, \"loss\": %.6f, \"rce\": %.6f, \"fairness\": %.6g, "
            "\"head_norm\": %.6f, \"aug\": %.6f, \"fce\": %.6f, \"em_iters\": %.2f, "
            "\"img_per_s\": %.1f, \"elapsed_s\": %.2f}\n",
            (long long)epoch + 1, (long long)step + 1, (long long)st->global_step, lr,
            s->sum.total / n, s->sum.rce / n, s->sum.fairness / n, s->sum.head_norm / n,
            s->sum.aug / n, s->sum.fce / n, s->em_iters / n, img_s, el);
    fflush(st->log);
}

/* The epoch's training-time statistics, plus a full-data score when due. */
/* Warns (once per epoch) when the training-time argmax counts show a
 * collapse: empty clusters, or a marginal entropy below the threshold. */
static void warn_collapse(const run_state *st, int64_t epoch, const interval_stats *s,
                          int used, double entropy)
{
    double floor_h = st->cfg->run.collapse_entropy * log((double)st->k);
    if (used == st->k && entropy >= floor_h)
        return;
    char sizes[512];
    int off = 0;
    for (int j = 0; j < st->k && off < (int)sizeof sizes - 24; j++)
        off += snprintf(sizes + off, sizeof sizes - (size_t)off, "%s%lld", j ? " " : "",
                        (long long)s->hits[j]);
    ecl_log_warn("epoch %lld looks collapsed: %d of %lld clusters used, H(marginal) %.3f "
                 "(warning below %.3f = run.collapse_entropy x log K); sizes: %s",
                 (long long)epoch + 1, used, (long long)st->k, entropy, floor_h, sizes);
}

static void log_epoch(run_state *st, int64_t epoch, const interval_stats *s, double secs)
{
    /* Training-time cluster statistics from the argmax of sigma. */
    int used = 0;
    int64_t mn = INT64_MAX, mx = 0;
    double entropy = 0.0, im = (double)s->images, n = (double)s->steps;
    for (int j = 0; j < st->k; j++) {
        used += s->hits[j] > 0;
        mn = s->hits[j] < mn ? s->hits[j] : mn;
        mx = s->hits[j] > mx ? s->hits[j] : mx;
        double pj = im > 0 ? (double)s->hits[j] / im : 0.0;
        entropy -= pj > 0 ? pj * log(pj) : 0.0;
    }
    warn_collapse(st, epoch, s, used, entropy);
    fprintf(st->log, "{\"kind\": \"epoch\", \"epoch\": %lld, \"seconds\": %.2f, \"loss\": %.6f, "
            "\"rce\": %.6f, \"fairness\": %.6g, \"aug\": %.6f, \"fce\": %.6f, \"em_iters\": "
            "%.2f, \"train_clusters_used\": %d, \"train_min_cluster\": %lld, "
            "\"train_max_cluster\": %lld, \"train_marginal_entropy\": %.6f, "
            "\"mean_max_sigma\": %.6f, \"agree_y_sigma\": %.6f, \"skipped_steps\": %lld",
            (long long)epoch + 1, secs, s->sum.total / n, s->sum.rce / n, s->sum.fairness / n,
            s->sum.aug / n, s->sum.fce / n, s->em_iters / n, used, (long long)mn,
            (long long)mx, entropy, s->max_sigma / im, s->agree / im,
            (long long)st->skipped_steps);

    /* Per-head mean losses; the lowest picks the head used from now on. */
    int heads = st->net.n_heads;
    fprintf(st->log, ", \"head_loss\": [");
    for (int hd = 0; hd < heads; hd++) {
        fprintf(st->log, "%s%.6f", hd ? ", " : "", st->head_loss[hd] / n);
        if (st->head_loss[hd] < st->head_loss[st->best_head])
            st->best_head = hd;
    }
    fprintf(st->log, "], \"head\": %d", st->best_head);
    memset(st->head_loss, 0, sizeof st->head_loss);

    int every = st->cfg->run.eval_every;
    int last = epoch + 1 == st->cfg->run.epochs;
    if (every > 0 && ((epoch + 1) % every == 0 || last)) {
        eval_result r[MODEL_MAX_HEADS], *rb = &r[st->best_head];
        train_evaluate_on(&st->net, st->gpu, &st->ds, st->mean, st->std, st->b * (st->views + 1),
                          r);
        fprintf(st->log, ", ");
        json_eval_fields(st->log, rb);
        if (heads > 1 && rb->labelled) {
            /* Every head's ACC, for studies of the selection; not used by it. */
            fprintf(st->log, ", \"head_acc\": [");
            for (int hd = 0; hd < heads; hd++)
                fprintf(st->log, "%s%.6f", hd ? ", " : "", r[hd].acc);
            fprintf(st->log, "]");
        }
        ecl_log_info("epoch %lld: head %d: %d/%d clusters (sizes %lld..%lld), H(marginal) "
                     "%.3f of %.3f, agree(y, sigma) %.3f", (long long)epoch + 1,
                     st->best_head, rb->clusters_used, rb->k, (long long)rb->min_size,
                     (long long)rb->max_size, rb->marginal_entropy, log((double)rb->k),
                     s->agree / im);
        if (rb->labelled)
            ecl_log_info("epoch %lld: ACC %.4f  NMI %.4f  ARI %.4f", (long long)epoch + 1,
                         rb->acc, rb->nmi, rb->ari);
        if (rb->clusters_used < rb->k)
            ecl_log_warn("%d of %d clusters are empty after epoch %lld",
                         rb->k - rb->clusters_used, rb->k, (long long)epoch + 1);
        eval_results_free(r, heads);
    }
    fprintf(st->log, "}\n");
    fflush(st->log);
}

/* K-means on raw pixels of the same images: the baseline to beat. */
static void kmeans_baseline(run_state *st, run_summary *sum)
{
    const dataset *ds = &st->ds;
    int64_t d = (int64_t)ds->c * ds->h * ds->w;
    float *x = ecl_malloc((size_t)(ds->n * d) * sizeof(float));
    int32_t *assign = ecl_malloc((size_t)ds->n * sizeof(int32_t));
    for (int64_t i = 0; i < ds->n * d; i++)
        x[i] = ds->pixels[i] / 255.0f;
    double t0 = ecl_now_s();
    kmeans_fit(x, ds->n, d, (int)st->k, 100, 3, st->cfg->run.seed, assign, NULL);
    sum->km_acc = metrics_acc(ds->labels, assign, ds->n);
    sum->km_nmi = metrics_nmi(ds->labels, assign, ds->n);
    sum->km_ari = metrics_ari(ds->labels, assign, ds->n);
    ecl_log_info("k-means baseline (raw pixels, k-means++, best of 3): ACC %.4f  NMI %.4f  "
                 "ARI %.4f  (%.1f s)", sum->km_acc, sum->km_nmi, sum->km_ari,
                 ecl_now_s() - t0);
    free(x);
    free(assign);
}

/* Data, model, optimiser, loader, buffers and the log file; then the
 * checkpoint to resume from, if any. 0 or -1. */
static int run_setup(run_state *st, const config *cfg, const char *resume, int allow,
                     int use_cuda)
{
    memset(st, 0, sizeof *st);
    st->cfg = cfg;
    st->use_cuda = use_cuda;
    if (train_load_dataset(cfg, &st->ds) != 0)
        return -1;
    st->b = cfg->run.batch;
    st->k = cfg->model.clusters;
    st->views = cfg->augment.views;
    if (st->ds.n < st->b)
        return ecl_set_error("run.batch = %lld is larger than the data set (%lld samples in "
                             "%s); lower run.batch or raise data.limit", (long long)st->b,
                             (long long)st->ds.n, cfg->data.path);
    if (st->k > LOSS_MAX_K)
        return ecl_set_error("model.clusters = %lld exceeds the CPU loss limit %d",
                             (long long)st->k, LOSS_MAX_K);
    ecl_log_info("data: %lld images of %d x %d x %d from %s%s", (long long)st->ds.n,
                 st->ds.c, st->ds.h, st->ds.w, cfg->data.path,
                 st->ds.n_classes ? "" : " (unlabelled: no scores, assignments only)");
    if (st->ds.n_classes > 0 && st->ds.n_classes != st->k)
        ecl_log_warn("the labels have %d classes but model.clusters = %lld: Hungarian ACC "
                     "matches only min(%d, %lld) pairs (unmatched ones count as wrong); "
                     "acc_majority in metrics.json maps each cluster to its majority class",
                     st->ds.n_classes, (long long)st->k, st->ds.n_classes, (long long)st->k);

    /* Normalisation from the data, then the loader and the model. */
    dataset_channel_stats(&st->ds, st->mean, st->std);
    loader_config lc = { st->b, st->views, cfg->augment.workers, 1, 1, cfg->run.seed,
                         { cfg->augment.translate, cfg->augment.rotate, cfg->augment.scale,
                           cfg->augment.hflip, cfg->augment.jitter },
                         { 0 }, { 0 } };
    memcpy(lc.mean, st->mean, sizeof lc.mean);
    memcpy(lc.std, st->std, sizeof lc.std);
    st->ld = loader_create(&st->ds, &lc);
    st->n_batches = loader_n_batches(st->ld);
    st->total_steps = st->n_batches * cfg->run.epochs;
    model_init(&st->net, cfg, st->ds.c, st->ds.h, st->ds.w, cfg->run.seed);
    optim_init(&st->opt, cfg, &st->net);
    st->lw = (loss_weights){ cfg->loss.lambda, cfg->loss.gamma, cfg->loss.alpha,
                             cfg->loss.forward_ce, cfg->loss.y_eps,
                             (aug_form)loss_aug_form_parse(cfg->loss.aug_form) };

    /* Step buffers, sized once. */
    int64_t h = st->net.n_heads, rows = h * (st->views + 1) * st->b;
    st->logits = ecl_malloc((size_t)(rows * st->k) * sizeof(float));
    st->dlogits = ecl_malloc((size_t)(rows * st->k) * sizeof(float));
    st->sigma = ecl_malloc((size_t)(h * st->b * st->k) * sizeof(float));
    st->y = ecl_malloc((size_t)(h * st->b * st->k) * sizeof(float));
    if (cfg->em.warm_start) {
        st->y_store = ecl_malloc((size_t)(h * st->ds.n * st->k) * sizeof(float));
        for (int64_t i = 0; i < h * st->ds.n * st->k; i++)
            st->y_store[i] = 1.0f / (float)st->k;
    }

    char path[1100];
    snprintf(path, sizeof path, "%s/log.jsonl", cfg->run.out);
    st->log = fopen(path, resume ? "a" : "w");
    if (!st->log)
        return ecl_set_error("cannot open %s for writing", path);
    ecl_log_info("model: %s, %lld parameters, K = %lld; GEMM: %s; %d threads",
                 cfg->model.name, (long long)model_n_values(&st->net), (long long)st->k,
                 gemm_backend_name(), omp_get_max_threads());
    st->iv.hits = ecl_calloc((size_t)st->k, sizeof(int64_t));
    st->ep.hits = ecl_calloc((size_t)st->k, sizeof(int64_t));
    int64_t n_buf = 0;
    for (int i = 0; i < st->net.n_buffers; i++)
        n_buf += st->net.buffers[i].n;
    st->buffer_backup = ecl_malloc((size_t)n_buf * sizeof(float));
    if (resume && train_checkpoint_resume(st, resume, allow) != 0)
        return -1;
    return st->use_cuda ? train_cuda_setup(st) : 0;
}

static void run_teardown(run_state *st)
{
    train_cuda_teardown(st);
    if (st->ld)
        loader_destroy(st->ld);
    if (st->log)
        fclose(st->log);
    model_free(&st->net);
    optim_free(&st->opt);
    dataset_free(&st->ds);
    free(st->logits);
    free(st->dlogits);
    free(st->sigma);
    free(st->y);
    free(st->y_store);
    free(st->iv.hits);
    free(st->ep.hits);
    free(st->buffer_backup);
}

/* After a checkpoint written because of a signal: say how to go on. */
static int stop_for_signal(const run_state *st)
{
    ecl_set_error("stopped by a signal after step %lld; a checkpoint is in %s; continue "
                  "with: ecl-train --resume %s", (long long)st->global_step,
                  st->cfg->run.out, st->cfg->run.out);
    return -2;
}

/* One batch: step, statistics, progress line, and a mid-epoch checkpoint
 * when one is due or a signal asked for it. 0, -1 (failure), -2 (signal). */
static int run_batch(run_state *st, int64_t e, const loader_batch *bt)
{
    loss_terms t;
    int iters = 0;
    int skip = strcmp(st->cfg->run.nan_policy, "skip") == 0;
    if (skip)
        step_buffers(st, 0);
    int rc = st->gpu ? train_step_cuda(st, bt, &t, &iters) : train_step(st, bt, &t, &iters);
    if (rc == STEP_NONFINITE && skip) {
        /* Drop the step: only the BN running statistics had changed. */
        step_buffers(st, 1);
        st->skipped_steps++;
        ecl_log_warn("step skipped (run.nan_policy=skip, %lld so far): %s",
                     (long long)st->skipped_steps, ecl_last_error());
        return 0;
    }
    if (rc != 0)
        return -1;
    st->global_step++;
    stats_add(&st->iv, &t, iters);
    stats_add(&st->ep, &t, iters);
    int64_t hb = st->best_head * bt->b * st->k;
    stats_rows(&st->ep, st->sigma + hb, st->y + hb, bt->b, (int)st->k);
    int last = bt->step + 1 == st->n_batches;
    if (st->global_step % st->cfg->run.log_every == 0 || last) {
        log_progress(st, e, bt->step, &st->iv);
        stats_reset(&st->iv, (int)st->k);
    }

    /* The epoch's last step checkpoints after the epoch summary instead. */
    int every = st->cfg->run.checkpoint_every;
    if (last || !(train_stop_signal || (every > 0 && st->global_step % every == 0)))
        return 0;
    if (train_checkpoint_save(st, e, bt->step + 1) != 0)
        return -1;
    return train_stop_signal ? stop_for_signal(st) : 0;
}

/* All epochs, from where a resume left off. 0, -1 (a step or a save
 * failed) or -2 (stopped by a signal, checkpoint written). */
static int run_epochs(run_state *st)
{
    st->t_start = ecl_now_s();
    for (int64_t e = st->start_epoch; e < st->cfg->run.epochs; e++) {
        double t_epoch = ecl_now_s();

        /* A resumed epoch keeps its restored statistics and skips the
         * batches already done (same order: it derives from seed, epoch). */
        int64_t skip = e == st->start_epoch ? st->skip_steps : 0;
        if (skip == 0)
            stats_reset(&st->ep, (int)st->k);
        loader_start_epoch(st->ld, e);
        for (int64_t i = 0; i < skip; i++)
            loader_next(st->ld);

        const loader_batch *bt;
        while ((bt = loader_next(st->ld)) != NULL) {
            int rc = run_batch(st, e, bt);
            if (rc != 0)
                return rc;
        }
        log_epoch(st, e, &st->ep, ecl_now_s() - t_epoch);
        if (train_checkpoint_save(st, e + 1, 0) != 0)
            return -1;
        if (train_stop_signal && e + 1 < st->cfg->run.epochs)
            return stop_for_signal(st);
    }
    return 0;
}

/* Final scores, files and the summary on stdout. */
static int run_finish(run_state *st)
{
    run_summary sum = { 0 };
    sum.device = st->gpu ? "cuda" : "cpu";
    sum.seconds = ecl_now_s() - st->t_start;
    sum.steps = st->global_step;
    sum.img_per_s = (double)(st->global_step - st->steps_at_start) * st->b /
                    (sum.seconds > 0 ? sum.seconds : 1e-9);
    sum.km_acc = sum.km_nmi = sum.km_ari = -1.0;

    eval_result all[MODEL_MAX_HEADS], *r = &all[st->best_head];
    train_evaluate_on(&st->net, st->gpu, &st->ds, st->mean, st->std, st->b * (st->views + 1),
                      all);
    if (r->n_nonfinite > 0) {
        ecl_set_error("the trained model gives non-finite outputs for %lld of %lld images; "
                      "no results written (%lld steps were skipped for non-finite values)",
                      (long long)r->n_nonfinite, (long long)st->ds.n,
                      (long long)st->skipped_steps);
        eval_results_free(all, st->net.n_heads);
        return -1;
    }
    if (st->cfg->run.kmeans_baseline && r->labelled)
        kmeans_baseline(st, &sum);
    int rc = write_assignments(r, &st->ds, st->cfg->run.out);
    if (rc == 0)
        rc = write_metrics(r, &sum, &st->ds, st->cfg->run.out);

    printf("run folder: %s\n", st->cfg->run.out);
    printf("trained %lld steps in %.1f s (%.0f img/s) on the %s, %d of %d clusters used",
           (long long)sum.steps, sum.seconds, sum.img_per_s, st->gpu ? "GPU" : "CPU",
           r->clusters_used, r->k);
    if (st->net.n_heads > 1)
        printf(" (head %d of %d, lowest loss)", st->best_head, st->net.n_heads);
    printf("\n");
    if (r->labelled) {
        printf("%-22s %8s %8s %8s\n", "", "ACC", "NMI", "ARI");
        printf("%-22s %8.4f %8.4f %8.4f\n", "ecl", r->acc, r->nmi, r->ari);
        if (sum.km_acc >= 0.0)
            printf("%-22s %8.4f %8.4f %8.4f\n", "k-means (raw pixels)", sum.km_acc,
                   sum.km_nmi, sum.km_ari);
    }
    eval_results_free(all, st->net.n_heads);
    return rc;
}

/* run.device -> *use_cuda: cpu never, cuda or an error saying why not,
 * auto when a GPU answers (and the log says which way it went). */
static int resolve_device(const config *cfg, int *use_cuda)
{
    *use_cuda = 0;
    if (strcmp(cfg->run.device, "cpu") == 0)
        return 0;
    int want = strcmp(cfg->run.device, "cuda") == 0;
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
    char why[512];
    if (ecl_cuda_probe(why, sizeof why)) {
        *use_cuda = 1;
        if (!want)
            ecl_log_info("device: auto -> cuda");
        return 0;
    }
    if (want)
        return ecl_set_error("run.device = cuda, but no GPU is usable: %s; or train on the "
                             "CPU with --device cpu", why);
    ecl_log_info("device: auto -> cpu (%s)", why);
#else
    if (want)
        return ecl_set_error("run.device = cuda, but this build of ecl has no CUDA backend "
                             "(make found no nvcc, cuDNN or cuBLAS: see its 'ecl build: CUDA' "
                             "line); use --device cpu or auto");
    ecl_log_info("device: auto -> cpu (this build has no CUDA backend)");
#endif
    return 0;
}

static void on_stop_signal(int sig)
{
    (void)sig;
    train_stop_signal = 1;
}

/* SIGINT / SIGTERM finish the step and checkpoint; a second one kills.
 * The handler runs on its own stack (SA_ONSTACK): oneDNN's JIT GEMM kernels
 * keep data below the stack pointer, and a signal frame written there
 * corrupted the heap (seen as crashes in dnnl_sgemm's free after a SIGINT
 * under load, up to one run in three before this; 0 in 28 since). Other
 * threads block both signals (train_run), so only this one takes them. */
static void install_signal_handlers(void)
{
    static char alt_stack[1 << 16];
    stack_t ss = { .ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0 };
    ECL_CHECK(sigaltstack(&ss, NULL) == 0, "sigaltstack failed");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int train_run(const config *cfg, const char *resume_path, int allow_config_change)
{
    int use_cuda = 0;
    if (resolve_device(cfg, &use_cuda) != 0) {
        fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
        return 1;
    }
    if (cfg->run.threads > 0)
        omp_set_num_threads(cfg->run.threads);
    /* A fresh run must not overwrite or mix with an earlier run's files. */
    char found[1100];
    if (!resume_path && checkpoint_find_latest(cfg->run.out, found, sizeof found) == 1) {
        fprintf(stderr, "ecl-train: run folder %s already holds checkpoints of an earlier run "
                "(%s); continue it with --resume %s, or pick another --run.out\n",
                cfg->run.out, found, cfg->run.out);
        return 2;
    }
    if (make_dirs(cfg->run.out) != 0 || write_config_file(cfg, cfg->run.out) != 0) {
        fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
        return 1;
    }
    if (!cfg->run.quiet)
        config_print_table(cfg, stderr);

    /* The stop signals go to this thread only: the loader's workers and the
     * OpenMP team are started while they are blocked, so they inherit the
     * block; this thread unblocks them once the setup is done. */
    run_state st;
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    install_signal_handlers();
    #pragma omp parallel
    {
        (void)0;  /* start the OpenMP team now, with the signals blocked */
    }
    int rc = run_setup(&st, cfg, resume_path, allow_config_change, use_cuda);
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
    if (rc == 0)
        rc = run_epochs(&st);
    if (rc == 0)
        rc = run_finish(&st);
    if (rc != 0)
        fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
    run_teardown(&st);
    return rc == 0 ? 0 : rc == -2 ? TRAIN_EXIT_STOPPED : 1;
}
