/*
 * test_data.c - the data module: IDX and folder readers with every kind of
 * bad input, the real data sets when present, augmentation and the loader.
 *
 * Every file read here is written by the test into a fresh directory under
 * /tmp (removed at the end), except the real data under /work/shared/data.
 */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "ecl/core.h"
#include "ecl/data.h"
#include "ecl/rng.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <stb/stb_image_write.h>

#define MNIST_DIR "/work/shared/data/mnist-10k"
#define CIFAR_DIR "/work/shared/data/cifar10-test-jpg"

static char tmp_root[64];

/* ---- helpers: files --------------------------------------------------- */

/* A path under the test's temporary directory (a static ring of buffers). */
static const char *tpath(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp_root, name);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ECL_CHECK(f, "gzopen %s", path);
        ECL_CHECK(n == 0 || gzwrite(f, data, (unsigned)n) == (int)n, "gzwrite %s", path);
        gzclose(f);
        return;
    }
    FILE *f = fopen(path, "wb");
    ECL_CHECK(f, "fopen %s", path);
    ECL_CHECK(n == 0 || fwrite(data, 1, n, f) == n, "fwrite %s", path);
    fclose(f);
}

static void put_be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

/* An IDX images file image in memory: header (magic, n, h, w) + payload. */
static uint8_t *idx_images_bytes(uint32_t magic, uint32_t n, uint32_t h, uint32_t w,
                                 size_t *len)
{
    *len = 16 + (size_t)n * h * w;
    uint8_t *b = ecl_malloc(*len);
    put_be32(b, magic);
    put_be32(b + 4, n);
    put_be32(b + 8, h);
    put_be32(b + 12, w);
    for (size_t i = 16; i < *len; i++)
        b[i] = (uint8_t)((i - 16) * 37 + 11);
    return b;
}

static uint8_t *idx_labels_bytes(uint32_t n, size_t *len)
{
    *len = 8 + n;
    uint8_t *b = ecl_malloc(*len);
    put_be32(b, 2049);
    put_be32(b + 4, n);
    for (uint32_t i = 0; i < n; i++)
        b[8 + i] = (uint8_t)(i % 3);
    return b;
}

/* Binary PGM (channels 1) or PPM (channels 3) with pixel value f(i). */
static void write_pnm(const char *path, int channels, int h, int w, int salt)
{
    FILE *f = fopen(path, "wb");
    ECL_CHECK(f, "fopen %s", path);
    fprintf(f, "P%d\n%d %d\n255\n", channels == 1 ? 5 : 6, w, h);
    for (int i = 0; i < h * w * channels; i++)
        fputc((i * 13 + salt) & 255, f);
    fclose(f);
}

static void make_dir(const char *path)
{
    ECL_CHECK(mkdir(path, 0700) == 0, "mkdir %s", path);
}

/* -1 and a message that names the file and says what went wrong. */
static void check_error(int rc, const char *name, const char *word)
{
    const char *err = ecl_last_error();
    CHECK(rc == -1, "expected failure for %s (%s)", name, word);
    CHECK(strstr(err, name) != NULL, "error does not name '%s': %s", name, err);
    CHECK(strstr(err, word) != NULL, "error lacks '%s': %s", word, err);
}

/* ---- (1) IDX round trip ------------------------------------------------ */

static void test_idx_roundtrip(int gz)
{
    enum { N = 5, H = 3, W = 4 };
    size_t li, ll;
    uint8_t *img = idx_images_bytes(2051, N, H, W, &li);
    uint8_t *lab = idx_labels_bytes(N, &ll);
    const char *pi = tpath(gz ? "rt-img.gz" : "rt-img");
    const char *pl = tpath(gz ? "rt-lab.gz" : "rt-lab");
    write_bytes(pi, img, li, gz);
    write_bytes(pl, lab, ll, gz);

    /* One channel: the payload exactly, labels widened, n_classes = max + 1. */
    dataset ds;
    CHECK(dataset_load_idx(&ds, pi, pl, 1) == 0, "load: %s", ecl_last_error());
    CHECK(ds.n == N && ds.c == 1 && ds.h == H && ds.w == W, "shape %lld %d %d %d",
          (long long)ds.n, ds.c, ds.h, ds.w);
    CHECK(memcmp(ds.pixels, img + 16, N * H * W) == 0, "pixels differ (gz=%d)", gz);
    int labels_ok = 1;
    for (int i = 0; i < N; i++)
        labels_ok &= ds.labels[i] == i % 3;
    CHECK(labels_ok, "labels differ");
    CHECK(ds.n_classes == 3, "n_classes %d", ds.n_classes);
    CHECK(ds.names == NULL && ds.class_names == NULL, "IDX has no names");
    dataset_free(&ds);
    CHECK(ds.pixels == NULL && ds.n == 0, "free zeroes");

    /* Three channels: each plane a copy of the gray image; no labels: -1. */
    CHECK(dataset_load_idx(&ds, pi, NULL, 3) == 0, "load rgb: %s", ecl_last_error());
    int rgb_ok = ds.c == 3;
    for (int i = 0; rgb_ok && i < N; i++)
        for (int ch = 0; ch < 3; ch++)
            rgb_ok &= memcmp(ds.pixels + (i * 3 + ch) * H * W, img + 16 + i * H * W,
                             H * W) == 0;
    CHECK(rgb_ok, "replicated planes differ (gz=%d)", gz);
    CHECK(ds.labels[0] == -1 && ds.labels[N - 1] == -1 && ds.n_classes == 0, "unlabelled");

    /* Truncation keeps the first samples intact. */
    dataset_truncate(&ds, 2);
    CHECK(ds.n == 2 && memcmp(ds.pixels + 3 * H * W, img + 16 + H * W, H * W) == 0,
          "truncate");
    dataset_free(&ds);
    free(img);
    free(lab);
}

/* Channel statistics against a direct double-precision sum. */
static void test_channel_stats(void)
{
    enum { N = 4, C = 3, HW = 10 };
    uint8_t px[N * C * HW];
    for (int i = 0; i < N * C * HW; i++)
        px[i] = (uint8_t)(i * 53 + 7);
    dataset ds = { .pixels = px, .n = N, .c = C, .h = 2, .w = 5 };
    float mean[3], std[3];
    dataset_channel_stats(&ds, mean, std);
    for (int ch = 0; ch < C; ch++) {
        double s1 = 0, s2 = 0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) {
                double v = px[(i * C + ch) * HW + j] / 255.0;
                s1 += v;
                s2 += v * v;
            }
        double m = s1 / (N * HW);
        CHECK_NEAR(mean[ch], m, 1e-6, 1e-6);
        CHECK_NEAR(std[ch], sqrt(s2 / (N * HW) - m * m), 1e-6, 1e-5);
    }
}

/* ---- (2) IDX errors ----------------------------------------------------- */

static void test_idx_header_errors(void)
{
    dataset ds;
    size_t li, ll;
    uint8_t *img = idx_images_bytes(2051, 5, 3, 4, &li);
    uint8_t *lab = idx_labels_bytes(5, &ll);
    write_bytes(tpath("good-img"), img, li, 0);
    write_bytes(tpath("good-lab"), lab, ll, 0);

    /* Missing, empty and cut-short headers. */
    check_error(dataset_load_idx(&ds, tpath("nope-img"), NULL, 1), "nope-img",
                "cannot open");
    write_bytes(tpath("zero-img"), img, 0, 0);
    check_error(dataset_load_idx(&ds, tpath("zero-img"), NULL, 1), "zero-img", "empty");
    write_bytes(tpath("short-hdr"), img, 10, 0);
    check_error(dataset_load_idx(&ds, tpath("short-hdr"), NULL, 1), "short-hdr",
                "header truncated");
    write_bytes(tpath("short-magic"), img, 3, 1);
    check_error(dataset_load_idx(&ds, tpath("short-magic"), NULL, 1), "short-magic",
                "header truncated");

    /* Wrong magic: a labels file given as images, and a foreign file. */
    check_error(dataset_load_idx(&ds, tpath("good-lab"), NULL, 1), "good-lab",
                "is this a labels file?");
    check_error(dataset_load_idx(&ds, tpath("good-img"), tpath("good-img"), 1), "good-img",
                "is this an images file?");
    write_bytes(tpath("text-img"), "hello world, not idx", 20, 0);
    check_error(dataset_load_idx(&ds, tpath("text-img"), NULL, 1), "text-img", "magic");

    /* Wrong dtype byte (0x0D = float) and wrong number of dimensions. */
    uint8_t *bad = idx_images_bytes(0x0D03, 5, 3, 4, &li);
    write_bytes(tpath("float-img"), bad, li, 0);
    check_error(dataset_load_idx(&ds, tpath("float-img"), NULL, 1), "float-img", "dtype");
    free(bad);
    bad = idx_images_bytes(0x0804, 5, 3, 4, &li);
    write_bytes(tpath("ndim-img"), bad, li, 0);
    check_error(dataset_load_idx(&ds, tpath("ndim-img"), NULL, 1), "ndim-img",
                "4 dimensions");
    free(bad);
    free(img);
    free(lab);
}

static void test_idx_payload_errors(void)
{
    dataset ds;
    size_t li, ll;
    uint8_t *img = idx_images_bytes(2051, 5, 3, 4, &li);
    uint8_t *lab = idx_labels_bytes(5, &ll);

    /* Payload shorter or longer than the header says, plain and gzip. */
    write_bytes(tpath("cut-img"), img, li - 7, 0);
    check_error(dataset_load_idx(&ds, tpath("cut-img"), NULL, 1), "cut-img", "truncated");
    CHECK(strstr(ecl_last_error(), "found 53") != NULL, "byte count: %s", ecl_last_error());
    write_bytes(tpath("cut-img.gz"), img, li - 7, 1);
    check_error(dataset_load_idx(&ds, tpath("cut-img.gz"), NULL, 1), "cut-img.gz",
                "truncated");
    write_bytes(tpath("cut-lab"), lab, ll - 1, 0);
    check_error(dataset_load_idx(&ds, tpath("good-img"), tpath("cut-lab"), 1), "cut-lab",
                "truncated");
    uint8_t *longer = ecl_malloc(li + 3);
    memcpy(longer, img, li);
    memset(longer + li, 0xAB, 3);
    write_bytes(tpath("long-img"), longer, li + 3, 0);
    check_error(dataset_load_idx(&ds, tpath("long-img"), NULL, 1), "long-img", "trailing");
    write_bytes(tpath("long-img.gz"), longer, li + 3, 1);
    check_error(dataset_load_idx(&ds, tpath("long-img.gz"), NULL, 1), "long-img.gz",
                "trailing");
    free(longer);

    /* A gzip file with a damaged deflate stream. */
    uint8_t *gzbytes = ecl_malloc(4096);
    write_bytes(tpath("bad.gz"), img, li, 1);
    FILE *f = fopen(tpath("bad.gz"), "rb");
    size_t gzlen = fread(gzbytes, 1, 4096, f);
    fclose(f);
    for (size_t i = 12; i + 10 < gzlen; i++)
        gzbytes[i] ^= 0x5A;
    write_bytes(tpath("bad.gz"), gzbytes, gzlen, 0);
    check_error(dataset_load_idx(&ds, tpath("bad.gz"), NULL, 1), "bad.gz", "corrupt");
    free(gzbytes);

    /* Labels for another set, absurd sizes, bad channel count. */
    uint8_t *lab4 = idx_labels_bytes(4, &ll);
    write_bytes(tpath("four-lab"), lab4, ll, 0);
    check_error(dataset_load_idx(&ds, tpath("good-img"), tpath("four-lab"), 1), "four-lab",
                "mismatch");
    CHECK(strstr(ecl_last_error(), "good-img") != NULL, "names both: %s", ecl_last_error());
    free(lab4);
    uint8_t huge[16];
    put_be32(huge, 2051);
    put_be32(huge + 4, 0xFFFFFFFFu);
    put_be32(huge + 8, 30000);
    put_be32(huge + 12, 30000);
    write_bytes(tpath("huge-img"), huge, 16, 0);
    check_error(dataset_load_idx(&ds, tpath("huge-img"), NULL, 1), "huge-img", "limit");
    put_be32(huge + 8, 0x7FFFFFFF);
    write_bytes(tpath("side-img"), huge, 16, 0);
    check_error(dataset_load_idx(&ds, tpath("side-img"), NULL, 1), "side-img", "absurd");
    check_error(dataset_load_idx(&ds, tpath("good-img"), NULL, 2), "good-img",
                "channels must be 1 or 3");
    CHECK(ds.pixels == NULL && ds.labels == NULL, "failed load leaves an empty set");
    free(img);
    free(lab);
}

/* ---- (3) real data -------------------------------------------------------- */

static int dir_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void test_real_mnist(void)
{
    if (!dir_exists(MNIST_DIR)) {
        printf("test_data: skip MNIST (%s not found)\n", MNIST_DIR);
        return;
    }
    dataset ds;
    int rc = dataset_load_idx(&ds, MNIST_DIR "/images-idx3-ubyte.gz",
                              MNIST_DIR "/labels-idx1-ubyte.gz", 1);
    CHECK(rc == 0, "mnist: %s", ecl_last_error());
    if (rc != 0)
        return;
    CHECK(ds.n == 10000 && ds.c == 1 && ds.h == 28 && ds.w == 28, "mnist shape");
    CHECK(ds.n_classes == 10, "mnist classes %d", ds.n_classes);

    /* The README's per-class counts (863 to 1,127) and MNIST's known mean. */
    int64_t count[10] = { 0 }, bad = 0;
    for (int64_t i = 0; i < ds.n; i++) {
        if (ds.labels[i] < 0 || ds.labels[i] > 9)
            bad++;
        else
            count[ds.labels[i]]++;
    }
    CHECK(bad == 0, "%lld labels outside 0..9", (long long)bad);
    for (int k = 0; k < 10; k++)
        CHECK(count[k] >= 863 && count[k] <= 1127, "class %d has %lld", k,
              (long long)count[k]);
    float mean, std;
    dataset_channel_stats(&ds, &mean, &std);
    CHECK_NEAR(mean, 0.1307, 0.01, 0.0);
    CHECK_NEAR(std, 0.3081, 0.01, 0.0);
    dataset_free(&ds);
}

static void test_real_cifar(void)
{
    if (!dir_exists(CIFAR_DIR)) {
        printf("test_data: skip CIFAR-10 folder (%s not found)\n", CIFAR_DIR);
        return;
    }
    dataset ds;
    double t0 = ecl_now_s();
    int rc = dataset_load_folder(&ds, CIFAR_DIR, 3, 0, 0);
    CHECK(rc == 0, "cifar: %s", ecl_last_error());
    if (rc != 0)
        return;
    printf("test_data: CIFAR-10 jpg folder, %lld images in %.2f s\n", (long long)ds.n,
           ecl_now_s() - t0);
    CHECK(ds.n == 10000 && ds.c == 3 && ds.h == 32 && ds.w == 32, "cifar shape");
    CHECK(ds.n_classes == 10, "cifar classes %d", ds.n_classes);
    CHECK(strcmp(ds.class_names[0], "airplane") == 0 &&
          strcmp(ds.class_names[9], "truck") == 0, "class names");
    CHECK(strcmp(ds.names[0], "airplane/0000.jpg") == 0, "names[0] = %s", ds.names[0]);
    CHECK(strcmp(ds.names[1000], "automobile/0000.jpg") == 0 && ds.labels[1000] == 1,
          "names[1000] = %s", ds.names[1000]);
    CHECK(ds.labels[9999] == 9, "last label %d", ds.labels[9999]);
    float mean[3], std[3];
    dataset_channel_stats(&ds, mean, std);
    CHECK_NEAR(mean[0], 0.494, 0.01, 0.0);
    CHECK_NEAR(mean[2], 0.447, 0.01, 0.0);
    dataset_free(&ds);
}

/* ---- (4) folders ------------------------------------------------------------ */

static void test_folder_classes(void)
{
    make_dir(tpath("cls"));
    make_dir(tpath("cls/b"));
    make_dir(tpath("cls/a"));
    write_pnm(tpath("cls/a/1.ppm"), 3, 4, 5, 1);
    write_pnm(tpath("cls/a/0.ppm"), 3, 4, 5, 0);
    write_pnm(tpath("cls/b/g.pgm"), 1, 4, 5, 2);
    write_bytes(tpath("cls/.hidden"), "x", 1, 0);
    write_bytes(tpath("cls/a/.DS_Store"), "x", 1, 0);

    /* Sorted classes and files; PPM bytes exact, PGM replicated. */
    dataset ds;
    int rc = dataset_load_folder(&ds, tpath("cls"), 3, 0, 0);
    CHECK(rc == 0, "class folder: %s", ecl_last_error());
    if (rc != 0)
        return;
    CHECK(ds.n == 3 && ds.c == 3 && ds.h == 4 && ds.w == 5, "shape");
    CHECK(ds.n_classes == 2 && strcmp(ds.class_names[0], "a") == 0 &&
          strcmp(ds.class_names[1], "b") == 0, "classes");
    CHECK(strcmp(ds.names[0], "a/0.ppm") == 0 && strcmp(ds.names[1], "a/1.ppm") == 0 &&
          strcmp(ds.names[2], "b/g.pgm") == 0, "names %s %s %s", ds.names[0], ds.names[1],
          ds.names[2]);
    CHECK(ds.labels[0] == 0 && ds.labels[1] == 0 && ds.labels[2] == 1, "labels");
    int px_ok = 1;
    for (int j = 0; j < 20; j++)
        for (int ch = 0; ch < 3; ch++) {
            px_ok &= ds.pixels[ch * 20 + j] == ((j * 3 + ch) * 13 & 255);
            px_ok &= ds.pixels[(2 * 3 + ch) * 20 + j] == ((j * 13 + 2) & 255);
        }
    CHECK(px_ok, "PPM planar / PGM replicated pixels");
    dataset_free(&ds);

    /* A requested size that matches, and one gray load of colour files. */
    CHECK(dataset_load_folder(&ds, tpath("cls"), 1, 4, 5) == 0 && ds.c == 1,
          "gray load: %s", ecl_last_error());
    dataset_free(&ds);
}

static void test_folder_flat_and_rgba(void)
{
    make_dir(tpath("flat"));
    write_pnm(tpath("flat/y.PGM"), 1, 3, 3, 5);
    write_pnm(tpath("flat/x.pgm"), 1, 3, 3, 4);

    /* Flat: unlabelled, names are bare file names, extension case ignored. */
    dataset ds;
    CHECK(dataset_load_folder(&ds, tpath("flat"), 1, 0, 0) == 0, "flat: %s",
          ecl_last_error());
    CHECK(ds.n == 2 && ds.n_classes == 0 && ds.class_names == NULL, "flat shape");
    CHECK(ds.labels[0] == -1 && ds.labels[1] == -1, "flat labels");
    CHECK(strcmp(ds.names[0], "x.pgm") == 0 && strcmp(ds.names[1], "y.PGM") == 0, "names");
    CHECK(ds.pixels[0] == 4 && ds.pixels[9] == 5, "flat pixels %d %d", ds.pixels[0],
          ds.pixels[9]);
    dataset_free(&ds);

    /* RGBA over black: opaque unchanged, half alpha halved, clear is black. */
    make_dir(tpath("rgba"));
    uint8_t px[3 * 4] = { 200, 100, 50, 255, 200, 100, 50, 128, 200, 100, 50, 0 };
    CHECK(stbi_write_png(tpath("rgba/p.png"), 3, 1, 4, px, 12) != 0, "write png");
    CHECK(dataset_load_folder(&ds, tpath("rgba"), 3, 1, 3) == 0, "rgba: %s",
          ecl_last_error());
    static const uint8_t want[9] = { 200, 100, 0, 100, 50, 0, 50, 25, 0 };
    CHECK(ds.n == 1 && memcmp(ds.pixels, want, 9) == 0, "alpha composite %d %d %d",
          ds.pixels[1], ds.pixels[4], ds.pixels[7]);
    dataset_free(&ds);
}

static void test_folder_errors(void)
{
    dataset ds;

    /* Missing, not a directory, empty. */
    check_error(dataset_load_folder(&ds, tpath("absent"), 3, 0, 0), "absent", "not found");
    write_bytes(tpath("plain-file"), "x", 1, 0);
    check_error(dataset_load_folder(&ds, tpath("plain-file"), 3, 0, 0), "plain-file",
                "not a directory");
    make_dir(tpath("empty"));
    check_error(dataset_load_folder(&ds, tpath("empty"), 3, 0, 0), "empty", "is empty");

    /* Sizes: one image unlike the first, or unlike the requested size. */
    make_dir(tpath("mixed"));
    write_pnm(tpath("mixed/a.pgm"), 1, 4, 4, 0);
    write_pnm(tpath("mixed/b-big.pgm"), 1, 4, 6, 0);
    check_error(dataset_load_folder(&ds, tpath("mixed"), 1, 0, 0), "b-big.pgm",
                "first image 'a.pgm' is 4 x 4");
    check_error(dataset_load_folder(&ds, tpath("mixed"), 1, 8, 8), "a.pgm",
                "requested size is 8 x 8");

    /* Not images: text under an image name, a stray file, an empty class. */
    make_dir(tpath("fake"));
    write_bytes(tpath("fake/x.png"), "this is text, not a png\n", 24, 0);
    check_error(dataset_load_folder(&ds, tpath("fake"), 3, 0, 0), "x.png",
                "cannot read image");
    make_dir(tpath("stray"));
    make_dir(tpath("stray/cat"));
    write_pnm(tpath("stray/cat/0.ppm"), 3, 2, 2, 0);
    write_bytes(tpath("stray/cat/notes.txt"), "hi", 2, 0);
    check_error(dataset_load_folder(&ds, tpath("stray"), 3, 0, 0), "notes.txt",
                "not an image file");
    write_bytes(tpath("stray/README"), "hi", 2, 0);
    write_bytes(tpath("stray/cat/notes.txt"), "", 0, 0);
    remove(tpath("stray/cat/notes.txt"));
    check_error(dataset_load_folder(&ds, tpath("stray"), 3, 0, 0), "README",
                "beside the class subfolders");
    make_dir(tpath("hollow"));
    make_dir(tpath("hollow/cat"));
    make_dir(tpath("hollow/dog"));
    write_pnm(tpath("hollow/cat/0.ppm"), 3, 2, 2, 0);
    check_error(dataset_load_folder(&ds, tpath("hollow"), 3, 0, 0), "dog",
                "holds no images");
    CHECK(ds.pixels == NULL && ds.names == NULL && ds.class_names == NULL,
          "failed load leaves an empty set");
}

/* ---- (5) augmentation ------------------------------------------------------- */

enum { AH = 9, AW = 8 };

static void aug_test_image(uint8_t *img, int c)
{
    for (int i = 0; i < c * AH * AW; i++)
        img[i] = (uint8_t)((i * 29 + 3) & 255);
}

static void test_augment_identity_and_seeds(void)
{
    uint8_t img[3 * AH * AW];
    float a[3 * AH * AW], b[3 * AH * AW];
    float mean[3] = { 0.4f, 0.5f, 0.3f }, std[3] = { 0.2f, 0.25f, 0.3f };
    aug_test_image(img, 3);

    /* NULL and all-zero parameters: exactly the normalised image. */
    augment_params zero = { 0 };
    augment_image(img, 3, AH, AW, NULL, mean, std, 1, a);
    augment_image(img, 3, AH, AW, &zero, mean, std, 2, b);
    int exact = 1;
    for (int ch = 0; ch < 3; ch++)
        for (int j = 0; j < AH * AW; j++) {
            float want = ((float)img[ch * AH * AW + j] / 255.0f - mean[ch]) / std[ch];
            exact &= a[ch * AH * AW + j] == want && b[ch * AH * AW + j] == want;
        }
    CHECK(exact, "identity augmentation is not the plain normalisation");

    /* Same seed, same bits; another seed, another image. */
    augment_params p = { .translate_px = 2, .rotate_deg = 15, .scale = 0.1f, .hflip = 1,
                         .jitter = 0.4f };
    augment_image(img, 3, AH, AW, &p, mean, std, 77, a);
    augment_image(img, 3, AH, AW, &p, mean, std, 77, b);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed differs");
    augment_image(img, 3, AH, AW, &p, mean, std, 78, b);
    CHECK(memcmp(a, b, sizeof a) != 0, "different seeds agree");

    /* Jitter keeps values inside [0, 1] before normalisation. */
    int in_range = 1;
    for (int ch = 0; ch < 3; ch++)
        for (int j = 0; j < AH * AW; j++) {
            float v = a[ch * AH * AW + j] * std[ch] + mean[ch];
            in_range &= v >= -1e-6f && v <= 1.0f + 1e-6f;
        }
    CHECK(in_range, "augmented values leave [0, 1]");
}

static void test_augment_flip(void)
{
    uint8_t img[AH * AW];
    float out[AH * AW], plain[AH * AW];
    float mean = 0.5f, std = 0.25f;
    aug_test_image(img, 1);
    augment_image(img, 1, AH, AW, NULL, &mean, &std, 0, plain);

    /* Flip only: each seed gives the exact mirror or the exact original. */
    augment_params p = { .hflip = 1 };
    int n_mirror = 0, n_same = 0, n_other = 0;
    for (uint64_t seed = 0; seed < 40; seed++) {
        augment_image(img, 1, AH, AW, &p, &mean, &std, seed, out);
        int mirror = 1;
        for (int y = 0; y < AH; y++)
            for (int x = 0; x < AW; x++)
                mirror &= out[y * AW + x] == plain[y * AW + (AW - 1 - x)];
        int same = memcmp(out, plain, sizeof out) == 0;
        n_mirror += mirror;
        n_same += same;
        n_other += !mirror && !same;
    }
    CHECK(n_other == 0 && n_mirror > 5 && n_same > 5, "flip: %d mirror, %d same, %d other",
          n_mirror, n_same, n_other);
}

static void test_augment_geometry(void)
{
    enum { S = 15 };
    uint8_t img[S * S], flat[S * S];
    float out[S * S];
    float mean = 0.0f, std = 1.0f;

    /* A smooth radial image; the centre pixel is a fixed point of any
     * rotation and zoom about the centre. */
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            img[y * S + x] = (uint8_t)(255 - 8 * ((x - 7) * (x - 7) + (y - 7) * (y - 7)) / 7);
    augment_params p = { .rotate_deg = 45, .scale = 0.3f };
    int centre_ok = 1;
    for (uint64_t seed = 0; seed < 10; seed++) {
        augment_image(img, 1, S, S, &p, &mean, &std, seed, out);
        centre_ok &= out[7 * S + 7] == img[7 * S + 7] / 255.0f;
    }
    CHECK(centre_ok, "centre moved under rotation/zoom");

    /* A tiny rotation of a constant image keeps the mean (edges aside). */
    memset(flat, 160, sizeof flat);
    augment_params tiny = { .rotate_deg = 0.5f };
    augment_image(flat, 1, S, S, &tiny, &mean, &std, 3, out);
    double sum = 0;
    for (int j = 0; j < S * S; j++)
        sum += out[j];
    CHECK_NEAR(sum / (S * S), 160 / 255.0, 0.0, 0.01);

    /* A shift far past the border leaves only the black (zero) fill. */
    augment_params far = { .translate_px = 1000 };
    float m3 = 0.25f, s3 = 0.5f;
    augment_image(flat, 1, S, S, &far, &m3, &s3, 5, out);
    int black = 1;
    for (int j = 0; j < S * S; j++)
        black &= out[j] == (0.0f - m3) / s3;
    CHECK(black, "outside is not black");
}

static void test_augment_jitter(void)
{
    uint8_t gray_rgb[3 * AH * AW], gray[AH * AW];
    float out[3 * AH * AW], plain[AH * AW];
    float mean[3] = { 0.5f, 0.5f, 0.5f }, std[3] = { 0.3f, 0.3f, 0.3f };

    /* A gray picture stored as RGB stays gray under brightness, contrast and
     * saturation (all channels equal up to rounding). */
    aug_test_image(gray, 1);
    for (int ch = 0; ch < 3; ch++)
        memcpy(gray_rgb + ch * AH * AW, gray, AH * AW);
    augment_params p = { .jitter = 0.5f };
    augment_image(gray_rgb, 3, AH, AW, &p, mean, std, 9, out);
    float worst = 0.0f;
    for (int j = 0; j < AH * AW; j++) {
        float d1 = fabsf(out[j] - out[AH * AW + j]), d2 = fabsf(out[j] - out[2 * AH * AW + j]);
        worst = fmaxf(worst, fmaxf(d1, d2));
    }
    CHECK(worst < 1e-5f, "gray drifted to colour: %g", (double)worst);
    augment_image(gray, 1, AH, AW, NULL, mean, std, 0, plain);
    CHECK(memcmp(out, plain, sizeof plain) != 0, "jitter changed nothing");

    /* One channel: jitter does not apply. */
    augment_image(gray, 1, AH, AW, &p, mean, std, 9, out);
    CHECK(memcmp(out, plain, sizeof plain) == 0, "jitter touched a gray image");
}

/* ---- (6) loader ------------------------------------------------------------- */

enum { LN = 37, LC = 3, LH = 6, LW = 5, LV = 2 };
#define L_IMG (LC * LH * LW)

static void loader_test_dataset(dataset *ds, uint8_t *px)
{
    rng_state r = rng_seeded(123);
    for (int i = 0; i < LN * L_IMG; i++)
        px[i] = (uint8_t)rng_below(&r, 256);
    memset(ds, 0, sizeof *ds);
    ds->pixels = px;
    ds->n = LN;
    ds->c = LC;
    ds->h = LH;
    ds->w = LW;
}

static loader_config loader_test_config(int workers, int64_t batch, int drop_last)
{
    loader_config cfg = { .batch = batch, .views = LV, .workers = workers, .shuffle = 1,
                          .drop_last = drop_last, .seed = 42,
                          .aug = { .translate_px = 1, .rotate_deg = 10, .scale = 0.1f,
                                   .hflip = 1, .jitter = 0.3f },
                          .mean = { 0.5f, 0.4f, 0.3f }, .std = { 0.2f, 0.2f, 0.25f } };
    return cfg;
}

/* Runs one epoch, copying what it saw; returns the number of batches. */
static int64_t loader_run_epoch(loader *l, int64_t epoch, float *x, int64_t *index)
{
    int64_t n_seen = 0, n_batches = 0;
    const loader_batch *bt;
    loader_start_epoch(l, epoch);
    while ((bt = loader_next(l)) != NULL) {
        CHECK(bt->step == n_batches, "step %lld, want %lld", (long long)bt->step,
              (long long)n_batches);
        memcpy(x + n_seen * (LV + 1) * L_IMG, bt->x,
               (size_t)(bt->b * (LV + 1) * L_IMG) * sizeof(float));
        memcpy(index + n_seen, bt->index, (size_t)bt->b * sizeof(int64_t));
        n_seen += bt->b;
        n_batches++;
    }
    CHECK(loader_next(l) == NULL, "epoch end is sticky");
    return n_batches;
}

static void test_loader_determinism(const dataset *ds)
{
    static float x1[LN * (LV + 1) * L_IMG], x2[LN * (LV + 1) * L_IMG];
    int64_t i1[LN], i2[LN], i3[LN];

    /* One worker and three workers: the same bits, batch for batch. */
    loader_config c1 = loader_test_config(1, 8, 0), c3 = loader_test_config(3, 8, 0);
    loader *l1 = loader_create(ds, &c1), *l3 = loader_create(ds, &c3);
    CHECK(loader_n_batches(l1) == 5, "n_batches %lld", (long long)loader_n_batches(l1));
    CHECK(loader_run_epoch(l1, 4, x1, i1) == 5, "batches in epoch");
    CHECK(loader_run_epoch(l3, 4, x2, i2) == 5, "batches in epoch (3 workers)");
    CHECK(memcmp(i1, i2, sizeof i1) == 0 && memcmp(x1, x2, sizeof x1) == 0,
          "1 and 3 workers disagree");

    /* Each index once; another epoch, another order. */
    int seen[LN] = { 0 }, once = 1;
    for (int i = 0; i < LN; i++)
        seen[i1[i]]++;
    for (int i = 0; i < LN; i++)
        once &= seen[i] == 1;
    CHECK(once, "an index is missing or repeated");
    loader_run_epoch(l3, 5, x2, i3);
    CHECK(memcmp(i1, i3, sizeof i1) != 0, "epochs 4 and 5 share a permutation");

    /* Abandon epoch 4 midway, restart it: the same epoch again. */
    loader_start_epoch(l3, 4);
    CHECK(loader_next(l3) != NULL && loader_next(l3) != NULL, "two batches");
    CHECK(loader_run_epoch(l3, 4, x2, i2) == 5, "restarted epoch");
    CHECK(memcmp(i1, i2, sizeof i1) == 0 && memcmp(x1, x2, sizeof x1) == 0,
          "restarted epoch differs");
    loader_destroy(l1);
    loader_destroy(l3);
}

/* Views within a batch: view 0 clean, views 1..V augmented and distinct. */
static void test_loader_views(const dataset *ds)
{
    loader_config cfg = loader_test_config(2, 8, 0);
    cfg.shuffle = 0;
    loader *l = loader_create(ds, &cfg);
    float clean[L_IMG];
    loader_start_epoch(l, 0);
    const loader_batch *bt = loader_next(l);
    loader_next(l);
    bt = loader_next(l);

    /* Third batch, no shuffle: indices 16..23, views laid out [V + 1, b]. */
    CHECK(bt && bt->b == 8 && bt->step == 2 && bt->index[0] == 16, "unshuffled order");
    int clean_ok = 1, views_differ = 1;
    for (int i = 0; bt && i < bt->b; i++) {
        augment_image(ds->pixels + bt->index[i] * L_IMG, LC, LH, LW, NULL, cfg.mean,
                      cfg.std, 0, clean);
        clean_ok &= bt->index[i] == 16 + i;
        clean_ok &= memcmp(bt->x + i * L_IMG, clean, sizeof clean) == 0;
        for (int v = 1; v <= LV; v++)
            views_differ &= memcmp(bt->x + (v * bt->b + i) * L_IMG, clean, sizeof clean) != 0;
    }
    CHECK(clean_ok, "view 0 is not the clean image");
    CHECK(views_differ, "an augmented view equals the clean one");

    /* The last batch is short: 37 = 4 x 8 + 5. */
    loader_next(l);
    bt = loader_next(l);
    CHECK(bt && bt->b == 5 && bt->index[4] == 36, "short last batch");
    loader_destroy(l);
}

/* A sample's views depend on (seed, epoch, index) only: not on its place in
 * the order nor on the batch size. */
static void test_loader_views_follow_sample(const dataset *ds)
{
    static float xa[LN * (LV + 1) * L_IMG], xb[LN * (LV + 1) * L_IMG];
    int64_t ia[LN], ib[LN];
    loader_config ca = loader_test_config(2, 8, 0), cb = loader_test_config(1, 5, 0);
    cb.shuffle = 0;
    loader *la = loader_create(ds, &ca), *lb = loader_create(ds, &cb);
    loader_run_epoch(la, 3, xa, ia);
    loader_run_epoch(lb, 3, xb, ib);

    /* Position p of the shuffled run holds sample ia[p], found at ia[p] in b. */
    int same = 1;
    for (int p = 0; p < LN; p++) {
        int64_t bstart = (ia[p] / 5) * 5, bsize = LN - bstart < 5 ? LN - bstart : 5;
        int64_t astart = (p / 8) * 8, asize = LN - astart < 8 ? LN - astart : 8;
        for (int v = 0; v <= LV; v++) {
            const float *fa = xa + (astart * (LV + 1) + v * asize + (p - astart)) * L_IMG;
            const float *fb = xb + (bstart * (LV + 1) + v * bsize + (ia[p] - bstart)) * L_IMG;
            same &= memcmp(fa, fb, L_IMG * sizeof(float)) == 0;
        }
    }
    CHECK(same, "views depend on the sample's position or the batch size");
    loader_destroy(la);
    loader_destroy(lb);

    /* Over ten epochs every position sees several samples: a full shuffle. */
    loader_config cp = loader_test_config(1, LN, 0);
    cp.views = 0;
    loader *lp = loader_create(ds, &cp);
    int64_t first[LN];
    int moved[LN] = { 0 }, all_moved = 1;
    for (int64_t e = 0; e < 10; e++) {
        loader_start_epoch(lp, e);
        const loader_batch *bt = loader_next(lp);
        for (int p = 0; p < LN; p++) {
            if (e == 0)
                first[p] = bt->index[p];
            moved[p] |= bt->index[p] != first[p];
        }
    }
    for (int p = 0; p < LN; p++)
        all_moved &= moved[p];
    CHECK(all_moved, "some position always holds the same sample");
    loader_destroy(lp);
}

static void test_loader_drop_last_and_destroy(const dataset *ds)
{
    static float x[LN * (LV + 1) * L_IMG];
    int64_t idx[LN];

    /* drop_last: 37 / 8 = 4 full batches, 32 samples. */
    loader_config cfg = loader_test_config(2, 8, 1);
    loader *l = loader_create(ds, &cfg);
    CHECK(loader_n_batches(l) == 4, "drop_last batches %lld",
          (long long)loader_n_batches(l));
    CHECK(loader_run_epoch(l, 0, x, idx) == 4, "drop_last epoch");
    loader_destroy(l);

    /* A batch larger than the data set: one short batch, or none. */
    cfg = loader_test_config(2, 100, 0);
    l = loader_create(ds, &cfg);
    CHECK(loader_run_epoch(l, 0, x, idx) == 1, "one batch of 37");
    loader_destroy(l);
    cfg.drop_last = 1;
    l = loader_create(ds, &cfg);
    loader_start_epoch(l, 0);
    CHECK(loader_n_batches(l) == 0 && loader_next(l) == NULL, "no full batch");
    loader_destroy(l);

    /* Destroy mid-epoch, and with no epoch ever started: must not hang. */
    cfg = loader_test_config(3, 4, 0);
    l = loader_create(ds, &cfg);
    loader_start_epoch(l, 1);
    CHECK(loader_next(l) != NULL, "first batch");
    loader_destroy(l);
    l = loader_create(ds, &cfg);
    loader_destroy(l);
}

static void test_loader(void)
{
    static uint8_t px[LN * L_IMG];
    dataset ds;
    loader_test_dataset(&ds, px);
    test_loader_determinism(&ds);
    test_loader_views(&ds);
    test_loader_views_follow_sample(&ds);
    test_loader_drop_last_and_destroy(&ds);
}

int main(void)
{
    /* A hung loader must fail the test, not stall the suite. */
    alarm(60);
    ecl_log_set_level(0);
    snprintf(tmp_root, sizeof tmp_root, "/tmp/ecl-test-data-XXXXXX");
    ECL_CHECK(mkdtemp(tmp_root), "mkdtemp failed");

    test_idx_roundtrip(0);
    test_idx_roundtrip(1);
    test_channel_stats();
    test_idx_header_errors();
    test_idx_payload_errors();
    test_real_mnist();
    test_real_cifar();
    test_folder_classes();
    test_folder_flat_and_rgba();
    test_folder_errors();
    test_augment_identity_and_seeds();
    test_augment_flip();
    test_augment_geometry();
    test_augment_jitter();
    test_loader();

    /* The directory name comes from mkdtemp: safe to hand to the shell. */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0)
        fprintf(stderr, "test_data: could not remove %s\n", tmp_root);
    return check_summary("test_data");
}
