/*
 * make_seeds.c - writes the small valid files the fuzzers start from, one
 * folder per target under the folder given as argv[1]:
 *   idx/          an IDX images file (3 x 2 x 2), its labels, a gzip'd copy,
 *                 a one-pixel image file
 *   image/        PNG (gray, RGBA), JPEG, BMP, TGA written by stb_image_write;
 *                 PGM, PPM, GIF and Radiance HDR written by hand
 *   safetensors/  checkpoints of the fuzz model (model only; with Adam, loop
 *                 position and EM labels) and a plain two-tensor file
 * The config seeds are the shipped configs (.ini), copied by scripts/fuzz.sh.
 * Every file is a few KB at most. Built and run by `scripts/fuzz.sh seeds`.
 */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_entry.c"

#include <stb/stb_image_write.h>

/* "<root>/<sub>/<name>" into path (512 bytes). */
static void seed_path(char *path, const char *root, const char *sub, const char *name)
{
    snprintf(path, 512, "%s/%s/%s", root, sub, name);
}

static void seed_bytes(const char *root, const char *sub, const char *name,
                       const void *data, size_t n)
{
    char path[512];
    seed_path(path, root, sub, name);
    FILE *f = fopen(path, "wb");
    ECL_CHECK(f && fwrite(data, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* IDX images, labels and their gzip'd forms. */
static void seed_idx(const char *root)
{
    static const uint8_t images[] = {
        0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2,
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
    };
    static const uint8_t labels[] = { 0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 1 };
    static const uint8_t one[] = { 0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 255 };
    char path[512];
    seed_bytes(root, "idx", "images-3x2x2.idx", images, sizeof images);
    seed_bytes(root, "idx", "labels-3.idx", labels, sizeof labels);
    seed_bytes(root, "idx", "images-1x1x1.idx", one, sizeof one);

    /* A gzip'd file as the fuzzer's input exercises inflate on raw bytes. */
    seed_path(path, root, "idx", "images-3x2x2.idx.gz");
    gzFile f = gzopen(path, "wb9");
    ECL_CHECK(f && gzwrite(f, images, sizeof images) == (int)sizeof images &&
              gzclose(f) == Z_OK, "cannot write %s", path);
}

/* A w x h image of `comp` channels with a simple gradient. */
static void seed_pixels(uint8_t *px, int w, int h, int comp)
{
    for (int i = 0; i < w * h * comp; i++)
        px[i] = (uint8_t)(i * 37 + 11);
}

/* Formats stb_image_write knows, then the ones written by hand. */
static void seed_images(const char *root)
{
    uint8_t px[8 * 8 * 4];
    char path[512];
    seed_pixels(px, 8, 8, 4);
    seed_path(path, root, "image", "gray-4x4.png");
    ECL_CHECK(stbi_write_png(path, 4, 4, 1, px, 4), "cannot write %s", path);
    seed_path(path, root, "image", "rgba-3x2.png");
    ECL_CHECK(stbi_write_png(path, 3, 2, 4, px, 12), "cannot write %s", path);
    seed_path(path, root, "image", "rgb-8x8.jpg");
    ECL_CHECK(stbi_write_jpg(path, 8, 8, 3, px, 80), "cannot write %s", path);
    seed_path(path, root, "image", "rgb-4x3.bmp");
    ECL_CHECK(stbi_write_bmp(path, 4, 3, 3, px), "cannot write %s", path);
    seed_path(path, root, "image", "ga-3x3.tga");
    ECL_CHECK(stbi_write_tga(path, 3, 3, 2, px), "cannot write %s", path);

    /* Netpbm binary gray and colour, 2 x 2, maxval 255. */
    static const char pgm[] = "P5\n2 2\n255\n\x10\x20\x30\x40";
    static const char ppm[] = "P6\n# comment\n2 1\n255\n\x01\x02\x03\xfa\xfb\xfc";
    seed_bytes(root, "image", "gray-2x2.pgm", pgm, sizeof pgm - 1);
    seed_bytes(root, "image", "rgb-2x1.ppm", ppm, sizeof ppm - 1);

    /* GIF89a, 1 x 1, a two-colour global table, one LZW-coded pixel. */
    static const uint8_t gif[] = {
        'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0,
        0xff, 0xff, 0xff, 0, 0, 0,
        ',', 0, 0, 0, 0, 1, 0, 1, 0, 0,
        2, 2, 0x44, 0x01, 0, ';',
    };
    seed_bytes(root, "image", "one-1x1.gif", gif, sizeof gif);

    /* Radiance RGBE, 2 x 2, flat (not run-length) scanlines. */
    static const char hdr[] = "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 2\n"
                              "\x80\x40\x20\x81\x10\x20\x30\x80\x00\x00\x00\x00\xff\xff\xff\x7f";
    seed_bytes(root, "image", "rgbe-2x2.hdr", hdr, sizeof hdr - 1);
}

/* Checkpoints of the fuzz model, and a plain safetensors file. */
static void seed_safetensors(const char *root)
{
    fuzz_ckpt_target *t = fuzz_ckpt_get();
    char path[512];
    seed_path(path, root, "safetensors", "ckpt-model-only.safetensors");
    ECL_CHECK(checkpoint_save(path, &t->m, NULL, NULL, &t->cfg) == 0, "%s", ecl_last_error());

    /* A resumable one: Adam moments, loop position, y_store, stats text. */
    checkpoint_state st;
    memset(&st, 0, sizeof st);
    st.epoch = 1;
    st.step_in_epoch = 2;
    st.global_step = 7;
    st.seed = 42;
    st.y_store = t->y_store;
    st.n_samples = FUZZ_CKPT_SAMPLES;
    st.train_stats = "loss=1.5";
    for (int i = 0; i < FUZZ_CKPT_SAMPLES * 3; i++)
        t->y_store[i] = 1.0f / 3.0f;
    seed_path(path, root, "safetensors", "ckpt-resume.safetensors");
    ECL_CHECK(checkpoint_save(path, &t->m, &t->o, &st, &t->cfg) == 0, "%s", ecl_last_error());

    /* Two tensors of other dtypes, metadata with an escape. */
    static const int64_t shape_a[] = { 2, 2 }, shape_b[] = { 3 };
    static const uint16_t a[4] = { 1, 2, 3, 4 };
    static const uint8_t b[3] = { 7, 8, 9 };
    st_writer w;
    st_writer_init(&w);
    ECL_CHECK(st_writer_add(&w, "a", ST_F16, shape_a, 2, a) == 0 &&
              st_writer_add(&w, "b\"q", ST_U8, shape_b, 1, b) == 0 &&
              st_writer_meta(&w, "note", "tab\there \xc3\xa9") == 0, "%s", ecl_last_error());
    seed_path(path, root, "safetensors", "plain.safetensors");
    ECL_CHECK(st_writer_write(&w, path) == 0, "%s", ecl_last_error());
    st_writer_free(&w);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_ROOT (folders idx, image, safetensors made "
                "by the caller)\n", argv[0]);
        return 2;
    }
    seed_idx(argv[1]);
    seed_images(argv[1]);
    seed_safetensors(argv[1]);
    return 0;
}
