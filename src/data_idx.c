/*
 * data_idx.c - IDX readers (MNIST-style images and labels, plain or gzip)
 * and what every data set shares: truncate, free, per-channel statistics.
 *
 * An IDX file is a 4-byte magic (0, 0, dtype, ndim), ndim big-endian u32
 * sizes, then the payload. Only dtype 0x08 (u8) is read: images are
 * N x H x W (magic 2051), labels N (magic 2049). Every size is checked
 * against the payload actually present, so a truncated download or a file
 * with trailing bytes is refused with the offset and the byte counts.
 * Not here: image folders (data_folder.c), CIFAR/STL binaries (later).
 */
#include "ecl/data.h"

#include "ecl/core.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 2051u
#define IDX_MAGIC_LABELS 2049u
#define IDX_DTYPE_U8 0x08u
#define IDX_MAX_SIDE 32768u            /* H, W above this are not images */
#define IDX_MAX_BYTES (1ull << 34)     /* 16 GiB: larger is a corrupt header */
#define IDX_CHUNK_BYTES (1ll << 26)    /* payload buffer to start with: 64 MiB */

/* One IDX header as read: the magic split into its parts and the sizes. */
typedef struct {
    unsigned dtype, ndim;
    uint32_t dims[3];
    int64_t header_bytes;               /* 4 + 4 * ndim */
} idx_header;

static const char *idx_hint =
    "check the path; Fashion-MNIST is installed by 'apt-get install "
    "dataset-fashion-mnist' under /usr/share/datasets/fashion-mnist";

static uint32_t idx_be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads up to n bytes found at offset `at` of the (decompressed) file;
 * returns the count read, or -1 with the error set. */
static int64_t idx_read(gzFile f, const char *path, int64_t at, void *buf, int64_t n)
{
    int64_t done = 0;

    /* gzread takes an unsigned count, so large payloads go in 1 GiB pieces. */
    while (done < n) {
        int64_t piece = n - done < (1 << 30) ? n - done : (1 << 30);
        int got = gzread(f, (unsigned char *)buf + done, (unsigned)piece);
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            return ecl_set_error("reading '%s' near offset %lld: %s%s", path,
                                 (long long)(at + done), msg,
                                 zerr == Z_ERRNO ? "" : " (corrupt gzip file?)");
        }
        if (got == 0)
            break;
        done += got;
    }
    return done;
}

/* Opens path for reading (plain or gzip), naming the file on failure. */
static int idx_open(gzFile *f, const char *path, const char *what)
{
    errno = 0;
    *f = gzopen(path, "rb");
    if (!*f)
        return ecl_set_error("cannot open %s file '%s': %s (%s)", what, path,
                             errno ? strerror(errno) : "out of memory", idx_hint);
    return 0;
}

/* Checks the 4 magic bytes b against want_magic; fills dtype and ndim. */
static int idx_check_magic(const char *path, const unsigned char *b, unsigned want_magic,
                           idx_header *hd)
{
    uint32_t magic = idx_be32(b);
    unsigned want_ndim = want_magic & 0xffu;

    /* IDX magic starts with two zero bytes; anything else is another format. */
    if (b[0] != 0 || b[1] != 0)
        return ecl_set_error("'%s' is not an IDX file: bad magic 0x%08x at offset 0, "
                             "expected %u (0x%08x)", path, magic, want_magic, want_magic);

    /* dtype and ndim are the last two magic bytes; say which one is wrong. */
    hd->dtype = b[2];
    hd->ndim = b[3];
    if (hd->dtype != IDX_DTYPE_U8)
        return ecl_set_error("IDX file '%s': magic %u has dtype byte 0x%02x, expected "
                             "0x08 (unsigned bytes); other dtypes are not supported",
                             path, magic, hd->dtype);
    if (hd->ndim != want_ndim) {
        const char *hint = "";
        if (magic == IDX_MAGIC_LABELS)
            hint = " (is this a labels file?)";
        else if (magic == IDX_MAGIC_IMAGES)
            hint = " (is this an images file?)";
        return ecl_set_error("IDX file '%s': wrong magic %u (%u dimensions), expected "
                             "%u (%u dimensions)%s", path, magic, hd->ndim, want_magic,
                             want_ndim, hint);
    }
    return 0;
}

/* Reads and checks the magic and the sizes against what `want_magic` needs. */
static int idx_read_header(gzFile f, const char *path, unsigned want_magic,
                           idx_header *hd)
{
    unsigned char b[16];

    /* The 4-byte magic first: distinguishes empty, foreign and IDX files. */
    int64_t got = idx_read(f, path, 0, b, 4);
    if (got < 0)
        return -1;
    if (got == 0)
        return ecl_set_error("IDX file '%s' is empty (0 bytes); expected magic %u "
                             "(re-download it)", path, want_magic);
    if (got < 4)
        return ecl_set_error("IDX file '%s': header truncated at offset %lld: expected "
                             "4 magic bytes, found %lld", path, (long long)got,
                             (long long)got);
    if (idx_check_magic(path, b, want_magic, hd) != 0)
        return -1;

    /* The sizes: one big-endian u32 per dimension. */
    int64_t size_bytes = 4 * (int64_t)hd->ndim;
    got = idx_read(f, path, 4, b + 4, size_bytes);
    if (got < 0)
        return -1;
    if (got < size_bytes)
        return ecl_set_error("IDX file '%s': header truncated at offset %lld: expected "
                             "%lld header bytes, found %lld", path, (long long)(4 + got),
                             (long long)(4 + size_bytes), (long long)(4 + got));
    for (unsigned d = 0; d < hd->ndim; d++)
        hd->dims[d] = idx_be32(b + 4 + 4 * d);
    hd->header_bytes = 4 + size_bytes;
    return 0;
}

/* Reads up to n payload bytes into *buf, which grows as bytes arrive (from
 * IDX_CHUNK_BYTES, doubling), so a header that claims gigabytes over a file
 * of a few bytes costs no more memory than the file holds. The count read,
 * or -1 with the error set; *buf is the caller's to free either way. */
static int64_t idx_read_growing(gzFile f, const char *path, int64_t at, uint8_t **buf,
                                int64_t n)
{
    int64_t cap = n < IDX_CHUNK_BYTES ? n : IDX_CHUNK_BYTES, done = 0;
    *buf = ecl_malloc((size_t)cap);
    for (;;) {
        int64_t got = idx_read(f, path, at + done, *buf + done, cap - done);
        if (got < 0)
            return -1;
        done += got;
        if (done < cap || cap == n)
            return done;

        /* The buffer is full and more is due: double it, up to n. */
        cap = cap > n / 2 ? n : 2 * cap;
        *buf = ecl_realloc(*buf, (size_t)cap);
    }
}

/* Reads exactly n payload bytes into a new *buf of buf_bytes (>= n) and
 * makes sure nothing follows them. *buf is the caller's to free either way. */
static int idx_read_payload(gzFile f, const char *path, const char *sizes, uint8_t **buf,
                            int64_t buf_bytes, int64_t header_bytes, int64_t n)
{
    int64_t got = idx_read_growing(f, path, header_bytes, buf, n);
    if (got < 0)
        return -1;
    if (got < n)
        return ecl_set_error("IDX file '%s' is truncated: header says %s, so %lld payload "
                             "bytes from offset %lld, found %lld (payload ends at offset "
                             "%lld; re-download it)", path, sizes, (long long)n,
                             (long long)header_bytes, (long long)got,
                             (long long)(header_bytes + got));

    /* One more byte would mean the header undercounts: refuse, don't guess. */
    unsigned char extra[256];
    int64_t more = idx_read(f, path, header_bytes + n, extra, (int64_t)sizeof extra);
    if (more < 0)
        return -1;
    if (more > 0)
        return ecl_set_error("IDX file '%s' has trailing bytes: header says %s, so the "
                             "file should end at offset %lld, but %s%lld more bytes follow",
                             path, sizes, (long long)(header_bytes + n),
                             more == (int64_t)sizeof extra ? "at least " : "",
                             (long long)more);
    if (buf_bytes > n)
        *buf = ecl_realloc(*buf, (size_t)buf_bytes);
    return 0;
}

/* Checks the image sizes for sanity; fills n and the per-image byte count. */
static int idx_check_image_sizes(const char *path, const idx_header *hd, int channels,
                                 int64_t *n, int64_t *image_bytes)
{
    uint32_t count = hd->dims[0], h = hd->dims[1], w = hd->dims[2];

    /* Empty or giant images mean a corrupt header, not a data set. */
    if (count == 0 || h == 0 || w == 0)
        return ecl_set_error("IDX file '%s': header sizes %u x %u x %u hold no image",
                             path, count, h, w);
    if (h > IDX_MAX_SIDE || w > IDX_MAX_SIDE)
        return ecl_set_error("IDX file '%s': image size %u x %u is absurd (limit %u per "
                             "side); the header is probably corrupt", path, h, w,
                             IDX_MAX_SIDE);

    /* count < 2^32 and h * w <= 2^30, so the product fits in 64 bits. */
    uint64_t total = (uint64_t)count * h * w * (uint64_t)channels;
    if (total > IDX_MAX_BYTES)
        return ecl_set_error("IDX file '%s': %u x %u x %u images x %d channels need %llu "
                             "bytes, over the %llu-byte limit; the header is probably "
                             "corrupt", path, count, h, w, channels,
                             (unsigned long long)total, (unsigned long long)IDX_MAX_BYTES);
    *n = count;
    *image_bytes = (int64_t)h * w;
    return 0;
}

/* Spreads N gray planes (packed at the start of px) to N x 3 planes, in place. */
static void idx_replicate_gray(uint8_t *px, int64_t n, int64_t plane)
{
    /* Backwards: sample i's source lies below every destination of samples > i. */
    for (int64_t i = n - 1; i >= 0; i--) {
        const uint8_t *src = px + i * plane;
        uint8_t *dst = px + i * 3 * plane;
        memmove(dst + 2 * plane, src, (size_t)plane);
        memmove(dst + plane, src, (size_t)plane);
        memmove(dst, src, (size_t)plane);
    }
}

/* Loads the images file into ds (pixels, n, c, h, w). */
static int idx_load_images(dataset *ds, const char *path, int channels)
{
    gzFile f;
    idx_header hd;
    int64_t n = 0, image_bytes = 0;
    char sizes[96];

    /* Header and sizes are checked before a byte of payload is allocated, and
     * the payload buffer grows only as bytes arrive (a corrupt count over a
     * short file is refused as truncated, not allocated). */
    if (idx_open(&f, path, "images") != 0)
        return -1;
    if (idx_read_header(f, path, IDX_MAGIC_IMAGES, &hd) != 0 ||
        idx_check_image_sizes(path, &hd, channels, &n, &image_bytes) != 0) {
        gzclose(f);
        return -1;
    }

    /* Gray payload goes to the front of the buffer, spread to RGB afterwards. */
    snprintf(sizes, sizeof sizes, "%u images of %u x %u", hd.dims[0], hd.dims[1],
             hd.dims[2]);
    int rc = idx_read_payload(f, path, sizes, &ds->pixels, n * channels * image_bytes,
                              hd.header_bytes, n * image_bytes);
    gzclose(f);
    if (rc != 0)
        return -1;
    if (channels == 3)
        idx_replicate_gray(ds->pixels, n, image_bytes);
    ds->n = n;
    ds->c = channels;
    ds->h = (int)hd.dims[1];
    ds->w = (int)hd.dims[2];
    return 0;
}

/* Loads the labels file into ds->labels; its count must match ds->n. */
static int idx_load_labels(dataset *ds, const char *path, const char *images_path)
{
    gzFile f;
    idx_header hd;
    char sizes[64];

    /* The count in the header must match the images before anything is read. */
    if (idx_open(&f, path, "labels") != 0)
        return -1;
    if (idx_read_header(f, path, IDX_MAGIC_LABELS, &hd) != 0) {
        gzclose(f);
        return -1;
    }
    if ((int64_t)hd.dims[0] != ds->n) {
        gzclose(f);
        return ecl_set_error("label count mismatch: labels file '%s' holds %u labels, "
                             "images file '%s' holds %lld images (files from different "
                             "sets?)", path, hd.dims[0], images_path, (long long)ds->n);
    }

    /* Read the u8 labels, then widen; n_classes is the largest label + 1. */
    uint8_t *raw = NULL;
    snprintf(sizes, sizeof sizes, "%u labels", hd.dims[0]);
    int rc = idx_read_payload(f, path, sizes, &raw, ds->n, hd.header_bytes, ds->n);
    gzclose(f);
    if (rc == 0) {
        int max_label = 0;
        for (int64_t i = 0; i < ds->n; i++) {
            ds->labels[i] = raw[i];
            max_label = raw[i] > max_label ? raw[i] : max_label;
        }
        ds->n_classes = max_label + 1;
    }
    free(raw);
    return rc;
}

int dataset_load_idx(dataset *ds, const char *images_path, const char *labels_path,
                     int channels)
{
    ECL_CHECK(ds && images_path, "dataset_load_idx: NULL argument");
    memset(ds, 0, sizeof *ds);
    if (channels != 1 && channels != 3)
        return ecl_set_error("IDX images '%s': channels must be 1 or 3, got %d",
                             images_path, channels);

    /* Images first: their count decides what the labels must hold. */
    if (idx_load_images(ds, images_path, channels) != 0) {
        dataset_free(ds);
        return -1;
    }
    /* Labels are never NULL: -1 everywhere when there is no labels file. */
    ds->labels = ecl_malloc((size_t)ds->n * sizeof *ds->labels);
    if (!labels_path || !labels_path[0]) {
        for (int64_t i = 0; i < ds->n; i++)
            ds->labels[i] = -1;
        return 0;
    }
    if (idx_load_labels(ds, labels_path, images_path) != 0) {
        dataset_free(ds);
        return -1;
    }
    return 0;
}

void dataset_truncate(dataset *ds, int64_t limit)
{
    if (limit <= 0 || limit >= ds->n)
        return;

    /* Names past the limit are owned strings; the arrays just shrink. */
    if (ds->names) {
        for (int64_t i = limit; i < ds->n; i++)
            free(ds->names[i]);
        ds->names = ecl_realloc(ds->names, (size_t)limit * sizeof *ds->names);
    }

    /* Shrinking reallocations keep the first `limit` samples as they are. */
    size_t image_bytes = (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
    ds->pixels = ecl_realloc(ds->pixels, (size_t)limit * image_bytes);
    ds->labels = ecl_realloc(ds->labels, (size_t)limit * sizeof *ds->labels);
    ds->n = limit;
}

void dataset_free(dataset *ds)
{
    /* Names and class names are owned strings; NULL arrays are fine to free. */
    if (ds->names)
        for (int64_t i = 0; i < ds->n; i++)
            free(ds->names[i]);
    if (ds->class_names)
        for (int k = 0; k < ds->n_classes; k++)
            free(ds->class_names[k]);
    free(ds->names);
    free(ds->class_names);
    free(ds->pixels);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

void dataset_channel_stats(const dataset *ds, float *mean, float *std)
{
    int64_t plane = (int64_t)ds->h * ds->w;

    for (int ch = 0; ch < ds->c; ch++) {
        /* A byte histogram makes the sums exact whatever the data set size. */
        int64_t hist[256] = { 0 };
        for (int64_t i = 0; i < ds->n; i++) {
            const uint8_t *p = ds->pixels + (i * ds->c + ch) * plane;
            for (int64_t j = 0; j < plane; j++)
                hist[p[j]]++;
        }

        /* Moments of v/255 from the histogram, in double. */
        double count = (double)ds->n * (double)plane, s1 = 0.0, s2 = 0.0;
        for (int v = 0; v < 256; v++) {
            double x = v / 255.0;
            s1 += (double)hist[v] * x;
            s2 += (double)hist[v] * x * x;
        }
        double m = count > 0 ? s1 / count : 0.0;
        double var = count > 0 ? s2 / count - m * m : 0.0;
        mean[ch] = (float)m;
        std[ch] = (float)sqrt(var > 0 ? var : 0.0);
    }
}
