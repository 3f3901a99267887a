/*
 * data.h - data sets in memory, their readers, augmentation and the
 * threaded batch loader.
 *
 * Shape legend: N samples, C channels, H height, W width, B batch,
 * V augmented views per sample.
 *
 * A data set is uint8 N x C x H x W (RGB order, channel-planar) with int32
 * labels (-1 where unknown). Readers validate every size and magic number and
 * report the file, the offset and what was expected through ecl_set_error().
 * Not here: CIFAR/STL binary readers and feature matrices (later work).
 */
#ifndef ECL_DATA_H
#define ECL_DATA_H

#include <stdint.h>

typedef struct {
    uint8_t *pixels;     /* [N, C, H, W] */
    int32_t *labels;     /* [N], -1 where unknown; never NULL once loaded */
    char **names;        /* [N] file names relative to the folder; NULL for IDX */
    char **class_names;  /* [n_classes] folder names; NULL for IDX */
    int64_t n;
    int c, h, w;
    int n_classes;       /* distinct labels; 0 when unlabelled */
} dataset;

/* Reads IDX images (magic 2051, u8, N x H x W; plain or gzip) and, when
 * labels_path is non-NULL and non-empty, IDX labels (magic 2049, N u8).
 * Gray is replicated to `channels` (1 or 3). Returns 0, or -1 with
 * ecl_last_error() naming the file, offset and what was expected. */
int dataset_load_idx(dataset *ds, const char *images_path, const char *labels_path,
                     int channels);

/* Reads an image folder through stb_image. Subfolders are classes (sorted
 * by name, labels 0..); a folder with image files and no subfolders is
 * unlabelled. Images must all be h x w (h, w = 0: take the first image's);
 * gray is replicated, alpha composited over black. Files that are not
 * images are errors naming the file. Returns 0 or -1 (ecl_last_error()). */
int dataset_load_folder(dataset *ds, const char *dir, int channels, int h, int w);

/* Keeps the first `limit` samples (limit <= 0 or >= n: all). */
void dataset_truncate(dataset *ds, int64_t limit);

/* Frees what the data set owns and zeroes it. */
void dataset_free(dataset *ds);

/* Per-channel mean and standard deviation of pixel/255 over the data set. */
void dataset_channel_stats(const dataset *ds, float *mean, float *std);

/* Augmentation of one image, all in one randomised affine warp plus colour. */
typedef struct {
    float translate_px;  /* max shift, pixels, each axis */
    float rotate_deg;    /* max rotation, degrees, either way */
    float scale;         /* max relative zoom, e.g. 0.1 = [0.9, 1.1] */
    int hflip;           /* 1: flip left-right with probability 1/2 */
    float jitter;        /* colour jitter strength (brightness, contrast,
                            saturation each in [1-j, 1+j]); RGB only */
} augment_params;

/* Writes a normalised float image ((x/255 - mean[c]) / std[c]) of `src`
 * (uint8 [C, H, W]) to dst ([C, H, W]); p NULL or all zero = no change.
 * Deterministic in seed. Bilinear sampling, zero (i.e. black) outside. */
void augment_image(const uint8_t *src, int c, int h, int w, const augment_params *p,
                   const float *mean, const float *std, uint64_t seed, float *dst);

typedef struct {
    int64_t batch;       /* B */
    int views;           /* V augmented copies besides the clean image */
    int workers;         /* augmentation threads, >= 1 */
    int shuffle;         /* 1: new permutation each epoch from (seed, epoch) */
    int drop_last;       /* 1: skip the last partial batch */
    uint64_t seed;
    augment_params aug;
    float mean[3], std[3];
} loader_config;

typedef struct {
    float *x;            /* [(V + 1), b, C, H, W], packed by this batch's own b:
                            view 0 clean, 1..V augmented */
    int64_t *index;      /* [B] sample index in the data set */
    int64_t b;           /* samples in this batch (last one may be short) */
    int64_t step;        /* batch number within the epoch */
} loader_batch;

typedef struct loader loader;

/* Starts worker threads that prepare batches ahead of use. The data set
 * must outlive the loader. Owned by the caller: loader_destroy(). */
loader *loader_create(const dataset *ds, const loader_config *cfg);
/* Batches in one epoch. */
int64_t loader_n_batches(const loader *l);
/* Begins epoch `epoch` (permutation derived from seed and epoch). */
void loader_start_epoch(loader *l, int64_t epoch);
/* The next batch of the epoch, or NULL at its end. The batch stays valid
 * until the following call. Same seed, same batches, whatever the threads. */
const loader_batch *loader_next(loader *l);
void loader_destroy(loader *l);

#endif
