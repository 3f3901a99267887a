/*
 * fuzz_entry.c - one entry point per reader of user bytes, shared by the
 * libFuzzer harnesses (fuzz/fuzz_<target>.c) and the plain replay test
 * (tests/test_fuzz_regress.c), which both #include this file.
 *
 * Each entry writes the input to a scratch file (the readers take paths),
 * runs the reader and checks its contract:
 *   - it returns 0 or -1, and on -1 ecl_last_error() says something;
 *   - on 0 what it filled is coherent (sizes, labels, tensor bounds), and
 *     every byte it claims to own is touched, so a sanitizer sees it.
 * A broken contract is counted in fuzz_n_violations (and printed), calls
 * that accepted their input in fuzz_n_ok; crashes, sanitizer reports and
 * exit() from a reader speak for themselves.
 * Not here: the libFuzzer callbacks, corpus handling, the test's verdict.
 *
 * The includer defines _POSIX_C_SOURCE 200809L (mkdtemp) before any header.
 */
#include "ecl/checkpoint.h"
#include "ecl/config.h"
#include "ecl/core.h"
#include "ecl/data.h"
#include "ecl/model.h"
#include "ecl/optim.h"
#include "ecl/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* The entries: each runs one reader family on the bytes (see below). */
void fuzz_idx(const uint8_t *data, size_t n);
void fuzz_image(const uint8_t *data, size_t n);
void fuzz_config(const uint8_t *data, size_t n);
void fuzz_safetensors(const uint8_t *data, size_t n);

#define FUZZ_LINE_BYTES 4096       /* the override argument taken from line 1 */
#define FUZZ_CKPT_SAMPLES 2        /* N of the y_store the loader is handed */

static int fuzz_n_violations;      /* broken contracts seen so far */
static int64_t fuzz_n_ok;          /* calls that accepted their input */
static char fuzz_dir[64];          /* scratch folder, made once per process */

/* Counts and prints a broken contract: `what` on the input being run. */
static void fuzz_violation(const char *what, const char *detail)
{
    fuzz_n_violations++;
    fprintf(stderr, "fuzz contract broken: %s: %s\n", what, detail);
}

/* rc must be 0 or -1, and -1 must come with a message. Returns rc. */
static int fuzz_expect(const char *what, int rc)
{
    char buf[64];
    if (rc != 0 && rc != -1) {
        snprintf(buf, sizeof buf, "returned %d (expected 0 or -1)", rc);
        fuzz_violation(what, buf);
    } else if (rc == -1 && ecl_last_error()[0] == '\0') {
        fuzz_violation(what, "returned -1 with an empty ecl_last_error()");
    }
    fuzz_n_ok += rc == 0;
    return rc;
}

/* Clears the last error, so fuzz_expect sees only this call's message. */
static void fuzz_clear_error(void)
{
    ecl_set_error("%s", "");
}

/* Removes the scratch folder and what the entries leave in it. */
static void fuzz_cleanup(void)
{
    static const char *const names[] = {
        "in.idx", "in.idx.gz", "images.idx", "in.ini", "out.ini", "in.safetensors",
        "img/x.png",
    };
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", fuzz_dir, names[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/img", fuzz_dir);
    rmdir(path);
    rmdir(fuzz_dir);
}

/* Makes the scratch folder (in /dev/shm when there is one: no disk I/O). */
static void fuzz_setup(void)
{
    if (fuzz_dir[0])
        return;
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/ecl-fuzz-XXXXXX", base);
    ECL_CHECK(mkdtemp(fuzz_dir) != NULL, "cannot make a scratch folder %s", fuzz_dir);
    char img[128];
    snprintf(img, sizeof img, "%s/img", fuzz_dir);
    ECL_CHECK(mkdir(img, 0700) == 0, "cannot make %s", img);
    atexit(fuzz_cleanup);
    ecl_log_set_level(0);
}

/* "<scratch>/<name>" into path (128 bytes). */
static void fuzz_path(char *path, const char *name)
{
    snprintf(path, 128, "%s/%s", fuzz_dir, name);
}

/* Writes the bytes to <scratch>/<name>; its path into path (128 bytes). */
static void fuzz_write(const char *name, const uint8_t *data, size_t n, char *path)
{
    fuzz_path(path, name);
    FILE *f = fopen(path, "wb");
    ECL_CHECK(f && (n == 0 || fwrite(data, 1, n, f) == n) && fclose(f) == 0,
              "cannot write %s", path);
}

/* Writes the bytes gzip-compressed to <scratch>/<name>. */
static void fuzz_write_gz(const char *name, const uint8_t *data, size_t n, char *path)
{
    fuzz_path(path, name);
    gzFile f = gzopen(path, "wb1");
    ECL_CHECK(f != NULL, "cannot write %s", path);
    ECL_CHECK(n == 0 || gzwrite(f, data, (unsigned)n) == (int)n, "gzwrite %s", path);
    ECL_CHECK(gzclose(f) == Z_OK, "cannot close %s", path);
}

/* ------------------------------------------------------------------------
 * IDX images and labels
 * ------------------------------------------------------------------------ */

/* A loaded data set must be what the header promised; reads every byte. */
static void fuzz_check_dataset(const char *what, const dataset *ds, int channels)
{
    if (ds->n <= 0 || ds->h <= 0 || ds->w <= 0 || ds->c != channels || !ds->pixels ||
        !ds->labels) {
        fuzz_violation(what, "loaded a data set with empty sizes or NULL arrays");
        return;
    }

    /* Every pixel byte is read, so ASan sees a buffer shorter than promised. */
    int64_t plane = (int64_t)ds->h * ds->w;
    volatile unsigned sum = 0;
    for (int64_t j = 0; j < ds->n * ds->c * plane; j++)
        sum += ds->pixels[j];

    /* Labels are -1 or below n_classes; replicated gray planes are equal. */
    for (int64_t i = 0; i < ds->n; i++) {
        int32_t y = ds->labels[i];
        if (y != -1 && (y < 0 || y >= ds->n_classes))
            fuzz_violation(what, "a label neither -1 nor in [0, n_classes)");
        const uint8_t *img = ds->pixels + i * ds->c * plane;
        for (int ch = 1; ch < ds->c && ds->names == NULL; ch++)
            if (memcmp(img, img + ch * plane, (size_t)plane) != 0)
                fuzz_violation(what, "gray IDX planes differ after replication");
    }
}

/* Runs dataset_load_idx and checks its contract. */
static void fuzz_idx_load(const char *what, const char *images, const char *labels,
                          int channels)
{
    dataset ds;
    fuzz_clear_error();
    if (fuzz_expect(what, dataset_load_idx(&ds, images, labels, channels)) == 0) {
        fuzz_check_dataset(what, &ds, channels);
        dataset_free(&ds);
    }
}

/* A valid images file of 3 images of 2 x 2, to read labels against. */
static void fuzz_idx_images(char *path)
{
    static const uint8_t images[] = {
        0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2,
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
    };
    fuzz_write("images.idx", images, sizeof images, path);
}

/* The bytes as an IDX images file (plain and gzip'd) and as a labels file. */
void fuzz_idx(const uint8_t *data, size_t n)
{
    char raw[128], gz[128], images[128];
    fuzz_setup();
    fuzz_write("in.idx", data, n, raw);
    fuzz_idx_load("dataset_load_idx(images, 1 channel)", raw, NULL, 1);
    fuzz_idx_load("dataset_load_idx(images, 3 channels)", raw, "", 3);

    /* Through zlib's inflate: the same bytes as a gzip member. */
    fuzz_write_gz("in.idx.gz", data, n, gz);
    fuzz_idx_load("dataset_load_idx(images.gz)", gz, NULL, 1);

    /* As labels for a fixed, valid images file (3 images). */
    fuzz_idx_images(images);
    fuzz_idx_load("dataset_load_idx(labels)", images, raw, 1);
}

/* ------------------------------------------------------------------------
 * Image files through stb_image
 * ------------------------------------------------------------------------ */

/* Runs dataset_load_folder on the one-image folder and checks the result. */
static void fuzz_image_load(const char *what, const char *dir, int channels, int h, int w)
{
    dataset ds;
    fuzz_clear_error();
    if (fuzz_expect(what, dataset_load_folder(&ds, dir, channels, h, w)) != 0)
        return;
    if (ds.n != 1 || !ds.names || strcmp(ds.names[0], "x.png") != 0 || ds.labels[0] != -1 ||
        ds.n_classes != 0 || (h > 0 && (ds.h != h || ds.w != w)))
        fuzz_violation(what, "a flat one-image folder loaded as something else");
    fuzz_check_dataset(what, &ds, channels);
    dataset_free(&ds);
}

/* The bytes as the only file of a flat folder (stb sniffs the format from
 * the content, so one name serves every format). */
void fuzz_image(const uint8_t *data, size_t n)
{
    char path[128], dir[128];
    fuzz_setup();
    fuzz_write("img/x.png", data, n, path);
    fuzz_path(dir, "img");
    fuzz_image_load("dataset_load_folder(1 channel)", dir, 1, 0, 0);
    fuzz_image_load("dataset_load_folder(3 channels)", dir, 3, 0, 0);
    fuzz_image_load("dataset_load_folder(3 channels, 2 x 2)", dir, 3, 2, 2);
}

/* ------------------------------------------------------------------------
 * INI configs and overrides
 * ------------------------------------------------------------------------ */

/* A loaded config must be written and read back to the same fingerprint. */
static void fuzz_config_roundtrip(const config *cfg)
{
    char out[128];
    fuzz_path(out, "out.ini");
    FILE *f = fopen(out, "w");
    ECL_CHECK(f != NULL, "cannot write %s", out);
    fuzz_clear_error();
    int rc = fuzz_expect("config_write_ini", config_write_ini(cfg, f));
    ECL_CHECK(fclose(f) == 0, "cannot close %s", out);
    if (rc != 0)
        return;

    /* Read back over the defaults: every key is written, so all must match. */
    config back;
    config_defaults(&back);
    fuzz_clear_error();
    if (fuzz_expect("config_load_file(written)", config_load_file(&back, out)) != 0)
        fuzz_violation("config round trip", ecl_last_error());
    else if (config_fingerprint(&back) != config_fingerprint(cfg))
        fuzz_violation("config round trip", "the re-read config has another fingerprint");
}

/* The bytes as an INI file, and their first line as one override. */
void fuzz_config(const uint8_t *data, size_t n)
{
    char path[128], line[FUZZ_LINE_BYTES];
    config cfg;
    fuzz_setup();
    fuzz_write("in.ini", data, n, path);
    config_defaults(&cfg);
    fuzz_clear_error();
    if (fuzz_expect("config_load_file", config_load_file(&cfg, path)) == 0) {
        fuzz_clear_error();
        fuzz_expect("config_validate", config_validate(&cfg));
        fuzz_config_roundtrip(&cfg);
    }

    /* Line 1 up to its newline (or a NUL, as argv would end it). */
    size_t len = 0;
    while (len < n && len + 1 < sizeof line && data[len] != '\n' && data[len] != '\0')
        len++;
    memcpy(line, data, len);
    line[len] = '\0';
    config_defaults(&cfg);
    fuzz_clear_error();
    fuzz_expect("config_apply_override", config_apply_override(&cfg, line));
}

/* ------------------------------------------------------------------------
 * safetensors files and checkpoints
 * ------------------------------------------------------------------------ */

/* The small model, optimiser and state a checkpoint is loaded into. */
typedef struct {
    config cfg;
    model m;
    optimizer o;
    float y_store[FUZZ_CKPT_SAMPLES * 3];  /* [H = 1, N, K = 3] */
    int ready;
} fuzz_ckpt_target;

static fuzz_ckpt_target fuzz_ckpt;

/* vgg4 of width 2, K = 3, one 8 x 8 gray input; Adam. Built once. */
static fuzz_ckpt_target *fuzz_ckpt_get(void)
{
    fuzz_ckpt_target *t = &fuzz_ckpt;
    if (t->ready)
        return t;
    config_defaults(&t->cfg);
    ECL_CHECK(config_set(&t->cfg, "model.width", "2") == 0 &&
              config_set(&t->cfg, "model.clusters", "3") == 0, "%s", ecl_last_error());
    model_init(&t->m, &t->cfg, 1, 8, 8, 0);
    optim_init(&t->o, &t->cfg, &t->m);
    t->ready = 1;
    return t;
}

/* A parsed file must keep every tensor inside its data; reads them all. */
static void fuzz_check_st(const st_file *f)
{
    unsigned sum = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (t->offset < 0 || t->n_bytes < 0 || t->offset + t->n_bytes > f->data_bytes ||
            t->n_bytes != st_numel(t) * st_dtype_size(t->dtype) ||
            st_find(f, t->name) != t)
            fuzz_violation("st_read", "a tensor outside its data or not found by name");
        const uint8_t *p = t->data;
        for (int64_t j = 0; j < t->n_bytes; j++)
            sum += p[j];
    }
    for (int i = 0; i < f->n_meta; i++)
        if (st_meta(f, f->meta[i].key) == NULL)
            fuzz_violation("st_read", "a metadata key not found by name");
    (void)sum;
}

/* Loads path into the small model, first model-only, then for a resume. */
static void fuzz_ckpt_load(const char *path)
{
    fuzz_ckpt_target *t = fuzz_ckpt_get();
    fuzz_clear_error();
    fuzz_expect("checkpoint_load(model only)",
                checkpoint_load(path, &t->m, NULL, NULL, &t->cfg, 0));

    /* A resume: optimiser, loop position and EM labels, config changes allowed. */
    checkpoint_state st;
    memset(&st, 0, sizeof st);
    st.y_store = t->y_store;
    st.n_samples = FUZZ_CKPT_SAMPLES;
    fuzz_clear_error();
    if (fuzz_expect("checkpoint_load(resume)",
                    checkpoint_load(path, &t->m, &t->o, &st, &t->cfg, 1)) == 0)
        free(st.train_stats);
}

/* The bytes as a safetensors file; when it parses, as a checkpoint too. */
void fuzz_safetensors(const uint8_t *data, size_t n)
{
    char path[128];
    st_file f;
    fuzz_setup();
    fuzz_write("in.safetensors", data, n, path);
    fuzz_clear_error();
    if (fuzz_expect("st_read", st_read(path, &f)) != 0)
        return;
    fuzz_check_st(&f);
    st_free(&f);
    fuzz_ckpt_load(path);
}
