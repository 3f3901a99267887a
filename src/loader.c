/*
 * loader.c - the threaded batch loader (see data.h).
 *
 * Shape legend: B batch, b samples in one batch (B, or fewer for the last),
 * V augmented views, C channels, H height, W width.
 *
 * Worker threads each build whole batches into a ring of R slots, ahead of
 * the consumer: batch k of the epoch always goes to slot k % R, and a worker
 * may claim batch k only once the consumer has let go of batch k - R. The
 * consumer takes the batches strictly in order. What a batch holds depends
 * only on (seed, epoch, sample index): the permutation comes from
 * rng_derive(seed, LOADER_SHUFFLE_STREAM, epoch) and each sample's views from
 * rng_derive(seed, epoch, index), so the thread schedule cannot change a bit.
 *
 * One mutex guards the shared state; workers sleep on `work_cv`, the
 * consumer on `ready_cv` (a slot became ready) or `idle_cv` (no worker
 * busy). A new epoch, or destroy, bumps `gen`: workers still filling a batch
 * of the old generation see it between samples, stop, and drop the batch.
 * Not here: pinned host memory or GPU upload (the trainer does that).
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/data.h"

#include "ecl/core.h"
#include "ecl/rng.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define LOADER_SHUFFLE_STREAM 0xE70Cu
#define LOADER_MIN_SLOTS 3

/* One batch buffer of the ring. */
typedef struct {
    loader_batch batch;                 /* x: [(V + 1), b, C, H, W], index: [B] */
    int ready;                          /* filled for the current generation */
} loader_slot;

struct loader {
    const dataset *ds;
    loader_config cfg;
    int64_t n_batches;
    int64_t image_floats;               /* C * H * W */

    pthread_t *threads;                 /* [workers] */
    loader_slot *slots;                 /* [n_slots] */
    int n_slots;

    /* Shared state, under `mu`. perm and epoch change only while busy == 0. */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, ready_cv, idle_cv;
    int64_t *perm;                      /* [N] sample order of this epoch */
    int64_t epoch;
    int started;                        /* an epoch has begun */
    int stop;                           /* destroy: workers leave */
    int64_t next_claim;                 /* next batch a worker may build */
    int64_t released;                   /* batches the consumer is done with */
    int holding;                        /* consumer holds batch `released` */
    int busy;                           /* workers filling a slot now */
    atomic_uint_fast64_t gen;           /* bumped to abandon work in flight */
};

/* Builds batch k into its slot; returns 0 if abandoned midway. */
static int loader_fill(loader *l, int64_t k, loader_slot *s, uint_fast64_t gen)
{
    const loader_config *cfg = &l->cfg;
    const dataset *ds = l->ds;
    int64_t first = k * cfg->batch;
    int64_t b = l->ds->n - first < cfg->batch ? l->ds->n - first : cfg->batch;

    for (int64_t i = 0; i < b; i++) {
        /* A new epoch or destroy: nobody wants the rest of this batch. */
        if (atomic_load(&l->gen) != gen)
            return 0;
        int64_t idx = l->perm[first + i];
        const uint8_t *src = ds->pixels + idx * l->image_floats;
        s->batch.index[i] = idx;

        /* View 0 is clean; views 1..V draw their seeds from the sample's stream. */
        rng_state r = rng_derive(cfg->seed, (uint64_t)l->epoch, (uint64_t)idx);
        for (int v = 0; v <= cfg->views; v++) {
            float *dst = s->batch.x + (v * b + i) * l->image_floats;
            augment_image(src, ds->c, ds->h, ds->w, v ? &cfg->aug : NULL, cfg->mean,
                          cfg->std, rng_u64(&r), dst);
        }
    }
    s->batch.b = b;
    s->batch.step = k;
    return 1;
}

/* A worker may claim the next batch when there is one and its slot is free. */
static int loader_can_claim(const loader *l)
{
    return l->started && l->next_claim < l->n_batches &&
           l->next_claim < l->released + l->n_slots;
}

static void *loader_worker(void *arg)
{
    loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && !loader_can_claim(l))
            pthread_cond_wait(&l->work_cv, &l->mu);
        if (l->stop)
            break;

        /* Claim under the lock, fill without it. */
        int64_t k = l->next_claim++;
        loader_slot *s = &l->slots[k % l->n_slots];
        uint_fast64_t gen = atomic_load(&l->gen);
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        int done = loader_fill(l, k, s, gen);
        pthread_mutex_lock(&l->mu);

        /* Publish only if the epoch is still the one the batch was built for. */
        l->busy--;
        if (done && atomic_load(&l->gen) == gen) {
            s->ready = 1;
            pthread_cond_broadcast(&l->ready_cv);
        }
        if (l->busy == 0)
            pthread_cond_broadcast(&l->idle_cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Checks the configuration; these come from the program, not from files. */
static void loader_check_config(const dataset *ds, const loader_config *cfg)
{
    ECL_CHECK(ds && ds->n > 0 && ds->pixels, "loader_create: empty data set");
    ECL_CHECK(cfg->batch >= 1, "loader_create: batch must be >= 1, got %lld",
              (long long)cfg->batch);
    ECL_CHECK(cfg->workers >= 1, "loader_create: workers must be >= 1, got %d",
              cfg->workers);
    ECL_CHECK(cfg->views >= 0, "loader_create: views must be >= 0, got %d", cfg->views);
    ECL_CHECK(ds->c >= 1 && ds->c <= 3, "loader_create: %d channels, expected 1..3", ds->c);
    for (int ch = 0; ch < ds->c; ch++)
        ECL_CHECK(cfg->std[ch] > 0.0f, "loader_create: std[%d] = %g, must be > 0", ch,
                  (double)cfg->std[ch]);
}

static void loader_alloc_slots(loader *l)
{
    int64_t b = l->cfg.batch < l->ds->n ? l->cfg.batch : l->ds->n;
    size_t x_floats = (size_t)(l->cfg.views + 1) * (size_t)b * (size_t)l->image_floats;

    /* One more slot than workers lets the consumer hold one while all work. */
    l->n_slots = l->cfg.workers + 2 > LOADER_MIN_SLOTS ? l->cfg.workers + 2
                                                       : LOADER_MIN_SLOTS;
    l->slots = ecl_calloc((size_t)l->n_slots, sizeof *l->slots);
    for (int i = 0; i < l->n_slots; i++) {
        l->slots[i].batch.x = ecl_malloc(x_floats * sizeof(float));
        l->slots[i].batch.index = ecl_malloc((size_t)b * sizeof(int64_t));
    }
}

loader *loader_create(const dataset *ds, const loader_config *cfg)
{
    loader_check_config(ds, cfg);
    loader *l = ecl_calloc(1, sizeof *l);
    l->ds = ds;
    l->cfg = *cfg;
    l->image_floats = (int64_t)ds->c * ds->h * ds->w;
    l->n_batches = cfg->drop_last ? ds->n / cfg->batch
                                  : (ds->n + cfg->batch - 1) / cfg->batch;
    if (l->n_batches == 0)
        ecl_log_warn("loader: %lld samples make no full batch of %lld with drop_last; "
                     "every epoch will be empty", (long long)ds->n, (long long)cfg->batch);
    l->perm = ecl_malloc((size_t)ds->n * sizeof *l->perm);
    atomic_init(&l->gen, 0);
    loader_alloc_slots(l);

    /* Synchronisation first, threads last: they wait for an epoch to start. */
    ECL_CHECK(pthread_mutex_init(&l->mu, NULL) == 0, "pthread_mutex_init failed");
    ECL_CHECK(pthread_cond_init(&l->work_cv, NULL) == 0, "pthread_cond_init failed");
    ECL_CHECK(pthread_cond_init(&l->ready_cv, NULL) == 0, "pthread_cond_init failed");
    ECL_CHECK(pthread_cond_init(&l->idle_cv, NULL) == 0, "pthread_cond_init failed");
    l->threads = ecl_calloc((size_t)cfg->workers, sizeof *l->threads);
    for (int t = 0; t < cfg->workers; t++) {
        int rc = pthread_create(&l->threads[t], NULL, loader_worker, l);
        ECL_CHECK(rc == 0, "pthread_create failed for loader worker %d (error %d)", t, rc);
    }
    return l;
}

int64_t loader_n_batches(const loader *l)
{
    return l->n_batches;
}

/* Abandons work in flight and waits until no worker touches a slot. */
static void loader_quiesce(loader *l)
{
    atomic_fetch_add(&l->gen, 1);
    while (l->busy > 0)
        pthread_cond_wait(&l->idle_cv, &l->mu);
}

void loader_start_epoch(loader *l, int64_t epoch)
{
    pthread_mutex_lock(&l->mu);
    loader_quiesce(l);

    /* No worker is busy, so the order and the ring can be reset safely. */
    for (int64_t i = 0; i < l->ds->n; i++)
        l->perm[i] = i;
    if (l->cfg.shuffle) {
        rng_state r = rng_derive(l->cfg.seed, LOADER_SHUFFLE_STREAM, (uint64_t)epoch);
        rng_shuffle_i64(&r, l->perm, l->ds->n);
    }
    for (int i = 0; i < l->n_slots; i++)
        l->slots[i].ready = 0;
    l->epoch = epoch;
    l->next_claim = 0;
    l->released = 0;
    l->holding = 0;
    l->started = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
}

const loader_batch *loader_next(loader *l)
{
    pthread_mutex_lock(&l->mu);
    ECL_CHECK(l->started, "loader_next: call loader_start_epoch first");

    /* Hand back the batch returned last time; its slot may be refilled. */
    if (l->holding) {
        l->slots[l->released % l->n_slots].ready = 0;
        l->released++;
        l->holding = 0;
        pthread_cond_broadcast(&l->work_cv);
    }
    if (l->released >= l->n_batches) {
        pthread_mutex_unlock(&l->mu);
        return NULL;
    }

    /* Batches come strictly in order: wait for this one's slot. */
    loader_slot *s = &l->slots[l->released % l->n_slots];
    while (!s->ready)
        pthread_cond_wait(&l->ready_cv, &l->mu);
    l->holding = 1;
    pthread_mutex_unlock(&l->mu);
    return &s->batch;
}

void loader_destroy(loader *l)
{
    if (!l)
        return;

    /* Stop everyone, mid-batch included, then join before freeing anything. */
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    atomic_fetch_add(&l->gen, 1);
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    for (int t = 0; t < l->cfg.workers; t++)
        ECL_CHECK(pthread_join(l->threads[t], NULL) == 0, "pthread_join failed");

    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->ready_cv);
    pthread_cond_destroy(&l->idle_cv);
    for (int i = 0; i < l->n_slots; i++) {
        free(l->slots[i].batch.x);
        free(l->slots[i].batch.index);
    }
    free(l->slots);
    free(l->threads);
    free(l->perm);
    free(l);
}
