/*
 * data_folder.c - image folders read through stb_image.
 *
 * Two layouts: class-per-subfolder (dir/<class>/<image>, classes sorted by
 * name get labels 0..) and flat (dir/<image>, labels -1). Hidden entries
 * (".name") are skipped; anything else that is not an image file is an
 * error naming it, since a stray file in a data folder is usually a mistake.
 * Files are sorted by name, so the order, and with it every seed-driven
 * result, does not depend on the file system.
 * Each file is read whole and checked before stb_image decodes it from
 * memory: size limits (file, sides, pixels, pixels per file byte) and the
 * faults of stb_image 2.27 (Debian's libstb) that fuzzing found (fuzz/):
 * JPEG Huffman tables of over 256 codes (a write past its tables) and
 * 16-bit netpbm files (a read past its buffer) are refused.
 * Not here: resizing (all images must already share one size), nested
 * class trees, 16-bit output (stb reduces 16-bit PNGs to 8 bits).
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/data.h"

#include "ecl/core.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <stb/stb_image.h>

#define FOLDER_MAX_BYTES (1ull << 34)  /* 16 GiB of pixels: surely a mistake */
#define FOLDER_MAX_SIDE 32768           /* pixels per side of one image */
#define FOLDER_MAX_PIXELS (1ll << 26)   /* per image (8192 x 8192): larger is a
                                           damaged header or needs resizing first */
#define FOLDER_MAX_FILE_BYTES (1ll << 28) /* 256 MiB per image file (stb takes int) */
/* Densest real files: a flat 1-bit PNG, deflate at its ~1032:1 ceiling, packs
 * about 8300 pixels per byte (GIF, JPEG and the RLE formats far fewer), so a
 * header claiming more than twice that is a damaged file, not an image
 * (stb would decode it from zeros past the end: seconds and 100s of MB). */
#define FOLDER_MAX_PIXELS_PER_BYTE 16384

/* One directory entry that is not hidden. */
typedef struct {
    char *name;
    int is_dir, is_file;                /* neither: fifo, socket, device... */
} folder_entry;

/* The images found, in load order, with paths relative to the folder. */
typedef struct {
    char **paths;                       /* [n] "cat/0001.jpg" or "0001.jpg" */
    int32_t *labels;                    /* [n] */
    int64_t n, cap;
} folder_files;

static int folder_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const folder_entry *)a)->name, ((const folder_entry *)b)->name);
}

static char *folder_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = ecl_malloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

static void folder_entries_free(folder_entry *e, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

/* Lists the non-hidden entries of dir sorted by name; -1 if unreadable. */
static int folder_list(const char *dir, folder_entry **out, int64_t *n_out)
{
    /* Opening can still fail: permissions, or removed since the stat. */
    DIR *d = opendir(dir);
    if (!d)
        return ecl_set_error("cannot open image folder '%s': %s", dir, strerror(errno));

    /* Collect names and their kinds; stat follows links, as a reader expects. */
    folder_entry *e = NULL;
    int64_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            e = ecl_realloc(e, (size_t)cap * sizeof *e);
        }
        char *full = folder_join(dir, de->d_name);
        struct stat st;
        int ok = stat(full, &st) == 0;
        free(full);
        e[n].name = ecl_strdup(de->d_name);
        e[n].is_dir = ok && S_ISDIR(st.st_mode);
        e[n].is_file = ok && S_ISREG(st.st_mode);
        n++;
    }
    closedir(d);
    if (n > 1)
        qsort(e, (size_t)n, sizeof *e, folder_entry_cmp);
    *out = e;
    *n_out = n;
    return 0;
}

/* True for the extensions stb_image reads and we accept, any letter case. */
static int folder_is_image_name(const char *name)
{
    static const char *const exts[] = { ".png", ".jpg", ".jpeg", ".bmp", ".gif",
                                        ".tga", ".ppm", ".pgm" };
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcasecmp(dot, exts[i]) == 0)
            return 1;
    return 0;
}

static void folder_files_push(folder_files *f, char *path, int32_t label)
{
    /* Grows both arrays together: they are parallel, one entry per image. */
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 256;
        f->paths = ecl_realloc(f->paths, (size_t)f->cap * sizeof *f->paths);
        f->labels = ecl_realloc(f->labels, (size_t)f->cap * sizeof *f->labels);
    }
    f->paths[f->n] = path;
    f->labels[f->n] = label;
    f->n++;
}

/* Adds the image files of one folder (prefix "" when flat); strict on the rest. */
static int folder_collect(folder_files *f, const char *dir, const char *sub,
                          int32_t label)
{
    /* Names are stored relative to the top folder: "sub/file" or "file". */
    char *path = sub ? folder_join(dir, sub) : ecl_strdup(dir);
    folder_entry *e;
    int64_t n, before = f->n;
    int rc = folder_list(path, &e, &n);

    /* Every visible entry must be a regular file with an image extension. */
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        if (e[i].is_dir)
            rc = ecl_set_error("image folder '%s' contains subfolder '%s' among its "
                               "images; nested folders are not supported", path, e[i].name);
        else if (!e[i].is_file || !folder_is_image_name(e[i].name))
            rc = ecl_set_error("'%s/%s' is not an image file (expected .png .jpg .jpeg "
                               ".bmp .gif .tga .ppm .pgm); move it out of the data folder",
                               path, e[i].name);
        else
            folder_files_push(f, sub ? folder_join(sub, e[i].name) : ecl_strdup(e[i].name),
                              label);
    }
    if (rc == 0 && f->n == before)
        rc = ecl_set_error("%s folder '%s' holds no images", sub ? "class" : "image", path);
    folder_entries_free(e, n);
    free(path);
    return rc;
}

/* Makes each subfolder a class; nothing else may sit beside them. */
static int folder_scan_classes(dataset *ds, folder_files *f, const char *dir,
                               const folder_entry *e, int64_t n, int64_t n_dirs)
{
    ds->class_names = ecl_calloc((size_t)n_dirs, sizeof *ds->class_names);
    for (int64_t i = 0; i < n; i++) {
        if (!e[i].is_dir)
            return ecl_set_error("'%s/%s' sits beside the class subfolders of '%s'; move "
                                 "it into a class folder or out of the data folder", dir,
                                 e[i].name, dir);
        ds->class_names[ds->n_classes] = ecl_strdup(e[i].name);
        ds->n_classes++;
        if (folder_collect(f, dir, e[i].name, ds->n_classes - 1) != 0)
            return -1;
    }
    return 0;
}

/* Finds classes (subfolders) or a flat list of images under dir. */
static int folder_scan(dataset *ds, folder_files *f, const char *dir)
{
    folder_entry *e;
    int64_t n, n_dirs = 0;
    if (folder_list(dir, &e, &n) != 0)
        return -1;
    for (int64_t i = 0; i < n; i++)
        n_dirs += e[i].is_dir;

    /* Any subfolder makes the folder labelled; none makes it flat. */
    int rc;
    if (n == 0)
        rc = ecl_set_error("image folder '%s' is empty: expected one subfolder per class "
                           "or image files", dir);
    else if (n_dirs == 0)
        rc = folder_collect(f, dir, NULL, -1);
    else
        rc = folder_scan_classes(ds, f, dir, e, n, n_dirs);
    folder_entries_free(e, n);
    return rc;
}

/* Refuses an image size no data set can mean: empty, past the limits, or
 * (file_bytes > 0) more pixels than any real encoder packs into the file. */
static int folder_check_dims(const char *full, int ih, int iw, int64_t file_bytes)
{
    if (ih <= 0 || iw <= 0)
        return ecl_set_error("image '%s' has size %d x %d (h x w): no pixels (a damaged "
                             "header?)", full, ih, iw);
    if (ih > FOLDER_MAX_SIDE || iw > FOLDER_MAX_SIDE ||
        (int64_t)ih * iw > FOLDER_MAX_PIXELS)
        return ecl_set_error("image '%s' claims %d x %d (h x w) pixels, over the limit of %d "
                             "per side and %lld in all: a damaged header, or resize it first",
                             full, ih, iw, FOLDER_MAX_SIDE, (long long)FOLDER_MAX_PIXELS);
    if (file_bytes > 0 && (int64_t)ih * iw > file_bytes * FOLDER_MAX_PIXELS_PER_BYTE)
        return ecl_set_error("image '%s' claims %d x %d (h x w) pixels from a file of %lld "
                             "bytes, more than any encoder packs in (%d pixels per byte): "
                             "a damaged or truncated file", full, ih, iw,
                             (long long)file_bytes, FOLDER_MAX_PIXELS_PER_BYTE);
    return 0;
}

/* The whole file into a new *bytes; refuses files past FOLDER_MAX_FILE_BYTES. */
static int folder_read_file(const char *full, uint8_t **bytes, int64_t *n)
{
    FILE *f = fopen(full, "rb");
    struct stat st;
    if (!f)
        return ecl_set_error("cannot open image '%s': %s", full, strerror(errno));
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return ecl_set_error("cannot stat image '%s': %s", full, strerror(errno));
    }
    if (st.st_size > FOLDER_MAX_FILE_BYTES) {
        fclose(f);
        return ecl_set_error("image '%s' is %lld bytes, over the %lld-byte limit per image "
                             "file (not an image, or resize it first)", full,
                             (long long)st.st_size, (long long)FOLDER_MAX_FILE_BYTES);
    }

    /* Read what is there: a file that shrinks is simply shorter. */
    *n = (int64_t)st.st_size;
    *bytes = ecl_malloc((size_t)(*n ? *n : 1));
    *n = (int64_t)fread(*bytes, 1, (size_t)*n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(*bytes);
        return ecl_set_error("reading image '%s' failed: %s", full, strerror(errno));
    }
    return 0;
}

/* Offset of the next marker byte at or after i (after an 0xff and its fill
 * bytes), skipping other bytes as stb_image does when it resyncs; n if none. */
static int64_t folder_jpeg_next_marker(const uint8_t *b, int64_t n, int64_t i, int in_scan)
{
    for (; i + 1 < n; i++) {
        if (b[i] != 0xff)
            continue;
        while (i + 1 < n && b[i + 1] == 0xff)
            i++;
        /* In entropy-coded data ff 00 is a data byte and RSTn goes on the scan. */
        uint8_t m = i + 1 < n ? b[i + 1] : 0;
        if (!in_scan || (m != 0x00 && (m < 0xd0 || m > 0xd7)))
            return i + 1;
    }
    return n;
}

/* The Huffman tables of the DHT segment whose length field says len and
 * whose payload starts at b[body]: stb_image 2.27 writes past its tables
 * when a table's 16 code counts sum above 256. Like stb, this reads tables
 * while the declared length lasts, the last one even past the segment's end
 * (bytes past the file read as 0, as stb reads them). */
static int folder_jpeg_check_dht(const char *full, const uint8_t *b, int64_t n, int64_t body,
                                 int64_t len)
{
    for (int64_t p = body, left = len - 2; left > 0; ) {
        int64_t n_codes = 0;
        for (int k = 1; k <= 16; k++)
            n_codes += p + k < n ? b[p + k] : 0;
        if (n_codes > 256)
            return ecl_set_error("JPEG image '%s': Huffman table at byte %lld declares %lld "
                                 "codes (at most 256): the file is damaged", full,
                                 (long long)p, (long long)n_codes);
        p += 17 + n_codes;
        left -= 17 + n_codes;
    }
    return 0;
}

/* Walks the markers of a JPEG (SOI first) as stb_image reads them and
 * refuses what would corrupt its memory (see folder_jpeg_check_dht).
 * Anything else malformed is left for stb to refuse. */
static int folder_jpeg_check(const char *full, const uint8_t *b, int64_t n)
{
    int64_t i = folder_jpeg_next_marker(b, n, 2, 0);
    while (i < n && b[i] != 0xd9) {
        uint8_t m = b[i];

        /* Markers without a length: RSTn, TEM. */
        if ((m >= 0xd0 && m <= 0xd7) || m == 0x01) {
            i = folder_jpeg_next_marker(b, n, i + 1, 0);
            continue;
        }
        if (i + 2 >= n)
            break;
        int64_t len = (int64_t)b[i + 1] << 8 | b[i + 2], body = i + 3;
        if (len < 2)
            break;
        int64_t end = body + len - 2 < n ? body + len - 2 : n;
        if (m == 0xc4 && folder_jpeg_check_dht(full, b, n, body, len) != 0)
            return -1;

        /* After a scan header comes entropy-coded data up to the next marker. */
        i = folder_jpeg_next_marker(b, n, end, m == 0xda);
    }
    return 0;
}

/* Decodes one file to interleaved gray+alpha (C = 1) or RGBA (C = 3). */
static int folder_decode(const char *full, int channels, int *ih, int *iw, uint8_t **out)
{
    uint8_t *bytes = NULL;
    int64_t n = 0;
    if (folder_read_file(full, &bytes, &n) != 0)
        return -1;

    /* Checks before stb sees the bytes: known decoder faults, then the size
     * a few damaged header bytes may claim (refused before stb allocates it).
     * If stb cannot read the header, the decode fails too and says why. */
    int comp, want = channels == 3 ? 4 : 2, rc = 0;
    if (n >= 2 && bytes[0] == 0xff && bytes[1] == 0xd8)
        rc = folder_jpeg_check(full, bytes, n);
    if (rc == 0 && n >= 2 && bytes[0] == 'P' && stbi_is_16_bit_from_memory(bytes, (int)n))
        rc = ecl_set_error("image '%s' is a 16-bit netpbm file (maxval above 255), which "
                           "stb_image 2.27 converts past its buffer; convert it to 8 bits "
                           "(e.g. pnmdepth 255)", full);
    if (rc == 0 && stbi_info_from_memory(bytes, (int)n, iw, ih, &comp))
        rc = folder_check_dims(full, *ih, *iw, n);

    /* Asking stb for gray+alpha or RGBA makes it do the channel conversion. */
    uint8_t *px = NULL;
    if (rc == 0) {
        px = stbi_load_from_memory(bytes, (int)n, iw, ih, &comp, want);
        if (!px)
            rc = ecl_set_error("cannot read image '%s': %s (not a valid image file?)", full,
                               stbi_failure_reason());
    }
    free(bytes);

    /* stb_image 2.27 returns a zero-height netpbm image; the header check
     * above may also have been skipped. */
    if (rc == 0 && folder_check_dims(full, *ih, *iw, 0) != 0)
        rc = -1;
    if (rc != 0) {
        stbi_image_free(px);
        return -1;
    }
    *out = px;
    return 0;
}

/* Writes an interleaved gray+alpha / RGBA image as planar, alpha over black. */
static void folder_to_planar(const uint8_t *px, int channels, int64_t plane, uint8_t *dst)
{
    /* Over black: each colour scaled by alpha / 255, rounded to nearest. */
    int stride = channels + 1;
    for (int64_t j = 0; j < plane; j++) {
        unsigned a = px[j * stride + channels];
        for (int ch = 0; ch < channels; ch++)
            dst[ch * plane + j] = (uint8_t)((px[j * stride + ch] * a + 127) / 255);
    }
}

/* Takes the first image's size when h, w are 0; allocates the pixels. */
static int folder_alloc(dataset *ds, const char *dir, const char *first, int ih, int iw)
{
    if (ds->h == 0 && ds->w == 0) {
        ds->h = ih;
        ds->w = iw;
    }

    /* Compare by division: N x C x H x W itself could overflow 64 bits. */
    uint64_t image_bytes = (uint64_t)ds->c * (uint64_t)ds->h * (uint64_t)ds->w;
    if ((uint64_t)ds->n > FOLDER_MAX_BYTES / image_bytes)
        return ecl_set_error("image folder '%s': %lld images of %d x %d x %d (first: '%s') "
                             "need more than the %llu-byte limit", dir, (long long)ds->n,
                             ds->c, ds->h, ds->w, first, (unsigned long long)FOLDER_MAX_BYTES);
    uint64_t bytes = (uint64_t)ds->n * image_bytes;
    ds->pixels = ecl_malloc((size_t)bytes);
    return 0;
}

/* Names what a wrong-sized image disagrees with, for the error message. */
static int folder_size_error(const dataset *ds, const char *full, int ih, int iw,
                             int requested, const char *first)
{
    if (requested)
        return ecl_set_error("image '%s' is %d x %d (h x w), but the requested size is "
                             "%d x %d; resize the images or change data.h / data.w",
                             full, ih, iw, ds->h, ds->w);
    return ecl_set_error("image '%s' is %d x %d (h x w), but the first image '%s' is "
                         "%d x %d; all images must have one size (resize them first)",
                         full, ih, iw, first, ds->h, ds->w);
}

/* Decodes every listed image into ds->pixels, checking each one's size. */
static int folder_load_pixels(dataset *ds, const folder_files *f, const char *dir)
{
    /* Decode one file at a time: stb's buffer is freed before the next. */
    int requested = ds->h > 0;
    for (int64_t i = 0; i < f->n; i++) {
        char *full = folder_join(dir, f->paths[i]);
        int ih, iw, rc;
        uint8_t *px = NULL;
        rc = folder_decode(full, ds->c, &ih, &iw, &px);
        if (rc == 0 && i == 0)
            rc = folder_alloc(ds, dir, f->paths[0], ih, iw);

        /* One size for all: the requested one, or else the first image's. */
        if (rc == 0 && (ih != ds->h || iw != ds->w))
            rc = folder_size_error(ds, full, ih, iw, requested, f->paths[0]);
        if (rc == 0) {
            int64_t plane = (int64_t)ds->h * ds->w;
            folder_to_planar(px, ds->c, plane, ds->pixels + i * ds->c * plane);
        }
        stbi_image_free(px);
        free(full);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int dataset_load_folder(dataset *ds, const char *dir, int channels, int h, int w)
{
    ECL_CHECK(ds && dir, "dataset_load_folder: NULL argument");
    memset(ds, 0, sizeof *ds);
    if (channels != 1 && channels != 3)
        return ecl_set_error("image folder '%s': channels must be 1 or 3, got %d", dir,
                             channels);
    if (h < 0 || w < 0 || (h == 0) != (w == 0))
        return ecl_set_error("image folder '%s': requested size %d x %d; give both h and w "
                             "> 0, or both 0 to take the first image's size", dir, h, w);

    /* A clear message for the commonest mistakes before listing anything. */
    struct stat st;
    if (stat(dir, &st) != 0)
        return ecl_set_error("image folder '%s' not found: %s (check data.path)", dir,
                             strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return ecl_set_error("'%s' is not a directory; an image folder was expected "
                             "(one subfolder per class, or image files)", dir);

    /* List, then decode; the file list's arrays become the data set's. */
    folder_files f = { 0 };
    ds->c = channels;
    ds->h = h;
    ds->w = w;
    int rc = folder_scan(ds, &f, dir);
    ds->names = f.paths;
    ds->labels = f.labels;
    ds->n = f.n;
    if (rc == 0)
        rc = folder_load_pixels(ds, &f, dir);
    if (rc != 0) {
        dataset_free(ds);
        return -1;
    }
    return 0;
}
