/*
 * train_ckpt.c - checkpoints of a training run and exact resume.
 *
 * A checkpoint holds the model, optimiser, loop position and EM warm-start
 * labels (checkpoint.h) plus, as opaque text, what the loop accumulates
 * between log lines: the interval and epoch statistics, the per-head
 * losses and the length of log.jsonl at that moment. Doubles are written
 * as hex floats (%a), so they come back bit for bit and a resumed run logs
 * exactly what an uninterrupted one does.
 */
#define _POSIX_C_SOURCE 200809L
#include "train_state.h"

#include "ecl/checkpoint.h"
#include "ecl/core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile sig_atomic_t train_stop_signal = 0;

static void stats_write(FILE *f, const char *tag, const interval_stats *s, int64_t k)
{
    const loss_terms *t = &s->sum;
    fprintf(f, "%s %lld %lld %a %a %a %a %a %a %a %a %a", tag, (long long)s->steps,
            (long long)s->images, s->em_iters, s->max_sigma, s->agree, t->rce, t->fairness,
            t->head_norm, t->aug, t->fce, t->total);
    for (int64_t j = 0; j < k; j++)
        fprintf(f, " %lld", (long long)s->hits[j]);
    fputc('\n', f);
}

/* The loop's running statistics as text; the caller frees it. */
static char *stats_to_text(const run_state *st, long log_bytes)
{
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    ECL_CHECK(f, "open_memstream failed");
    fprintf(f, "log_bytes %ld\nskipped %lld\nhead_loss", log_bytes,
            (long long)st->skipped_steps);
    for (int h = 0; h < st->net.n_heads; h++)
        fprintf(f, " %a", st->head_loss[h]);
    fputc('\n', f);
    stats_write(f, "iv", &st->iv, st->k);
    stats_write(f, "ep", &st->ep, st->k);
    fclose(f);
    return text;
}

/* Reads one number of the text at *p; -1 when it is missing. */
static int next_double(const char **p, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(*p, &end);
    if (end == *p || errno)
        return -1;
    *p = end;
    return 0;
}

static int stats_read(const char **p, const char *tag, interval_stats *s, int64_t k)
{
    while (**p == ' ' || **p == '\n')
        (*p)++;
    if (strncmp(*p, tag, strlen(tag)) != 0)
        return -1;
    *p += strlen(tag);
    double v[11];
    for (int i = 0; i < 11; i++)
        if (next_double(p, &v[i]) != 0)
            return -1;
    s->steps = (int64_t)v[0];
    s->images = (int64_t)v[1];
    s->em_iters = v[2];
    s->max_sigma = v[3];
    s->agree = v[4];
    s->sum = (loss_terms){ v[5], v[6], v[7], v[8], v[9], v[10] };
    for (int64_t j = 0; j < k; j++) {
        double h;
        if (next_double(p, &h) != 0)
            return -1;
        s->hits[j] = (int64_t)h;
    }
    return 0;
}

/* Parses stats_to_text's output back into st; the log length to *log_bytes. */
static int stats_from_text(run_state *st, const char *text, long *log_bytes)
{
    const char *p = text;
    double v;
    if (strncmp(p, "log_bytes", 9) != 0)
        return -1;
    p += 9;
    if (next_double(&p, &v) != 0)
        return -1;
    *log_bytes = (long)v;
    while (*p == '\n')
        p++;
    if (strncmp(p, "skipped", 7) != 0)
        return -1;
    p += 7;
    if (next_double(&p, &v) != 0)
        return -1;
    st->skipped_steps = (int64_t)v;
    while (*p == '\n')
        p++;
    if (strncmp(p, "head_loss", 9) != 0)
        return -1;
    p += 9;
    for (int h = 0; h < st->net.n_heads; h++)
        if (next_double(&p, &st->head_loss[h]) != 0)
            return -1;
    if (stats_read(&p, "iv", &st->iv, st->k) != 0 || stats_read(&p, "ep", &st->ep, st->k) != 0)
        return -1;
    return 0;
}

int train_checkpoint_save(run_state *st, int64_t epoch, int64_t step_in_epoch)
{
    train_cuda_sync_host(st);
    const config *cfg = st->cfg;
    char path[1100];
    fflush(st->log);
    long log_bytes = ftell(st->log);
    checkpoint_state ck = { epoch, step_in_epoch, st->global_step, cfg->run.seed, st->y_store,
                            st->y_store ? st->ds.n : 0, st->best_head,
                            stats_to_text(st, log_bytes) };
    checkpoint_path(cfg->run.out, st->global_step, path, sizeof path);
    int rc = checkpoint_save(path, &st->net, &st->opt, &ck, cfg);
    free(ck.train_stats);
    if (rc != 0)
        return -1;
    return checkpoint_prune(cfg->run.out, cfg->run.keep_checkpoints) < 0 ? -1 : 0;
}

/* Cuts log.jsonl back to log_bytes and reopens it for appending. */
static int log_rewind(run_state *st, long log_bytes)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/log.jsonl", st->cfg->run.out);
    fclose(st->log);
    st->log = NULL;
    if (truncate(path, log_bytes) != 0)
        return ecl_set_error("cannot cut %s back to %ld bytes for the resume: %s", path,
                             log_bytes, strerror(errno));
    st->log = fopen(path, "a");
    if (!st->log)
        return ecl_set_error("cannot reopen %s: %s", path, strerror(errno));
    return 0;
}

int train_checkpoint_resume(run_state *st, const char *path, int allow_config_change)
{
    checkpoint_state ck = { 0 };
    ck.y_store = st->y_store;
    ck.n_samples = st->y_store ? st->ds.n : 0;
    if (checkpoint_load(path, &st->net, &st->opt, &ck, st->cfg, allow_config_change) != 0)
        return -1;
    if (ck.best_head < 0 || ck.best_head >= st->net.n_heads) {
        free(ck.train_stats);
        return ecl_set_error("%s: best_head = %lld is not a head of this model", path,
                             (long long)ck.best_head);
    }

    /* Loop position, then the statistics and the log as they stood. */
    st->global_step = st->steps_at_start = ck.global_step;
    st->start_epoch = ck.epoch;
    st->skip_steps = ck.step_in_epoch;
    st->best_head = (int)ck.best_head;
    long log_bytes = -1;
    int rc = ck.train_stats ? stats_from_text(st, ck.train_stats, &log_bytes) : -1;
    free(ck.train_stats);
    if (rc != 0)
        return ecl_set_error("%s: the trainer statistics in the checkpoint are missing or "
                             "malformed; it cannot be resumed exactly", path);
    ecl_log_info("resuming from %s: epoch %lld, step %lld of it, global step %lld", path,
                 (long long)ck.epoch + 1, (long long)ck.step_in_epoch,
                 (long long)ck.global_step);
    return log_rewind(st, log_bytes);
}
