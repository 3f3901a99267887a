/*
 * test_checkpoint.c - the safetensors reader and writer and the checkpoint
 * module.
 *
 * Pins the format with a file built byte by byte, checks the writer's exact
 * layout, round-trips a model + Adam state + loop position bit for bit, and
 * feeds the reader and loader one damaged or mismatched file per failure
 * category, each of which must be refused with a message naming the fault.
 * Also: atomic writes leave the previous file whole when the temp file
 * cannot be made or the disk is full (/dev/full), and pruning.
 */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "ecl/checkpoint.h"
#include "ecl/core.h"
#include "ecl/model.h"
#include "ecl/optim.h"
#include "ecl/rng.h"
#include "ecl/safetensors.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_SAMPLES 7

static char dir[256];          /* this test's scratch folder under /tmp */
static rng_state rng;

/* ---- small file helpers ------------------------------------------------ */

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
}

static void write_bytes(const char *path, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    ECL_CHECK(f && fwrite(bytes, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* The whole file; its length in *n. */
static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ECL_CHECK(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = ecl_malloc(*n + 1);
    ECL_CHECK(fread(b, 1, *n, f) == *n, "cannot read %s", path);
    fclose(f);
    b[*n] = '\0';
    return b;
}

/* A safetensors file from header text and data bytes (the length prefix
 * written here, little-endian, independent of the writer). */
static void write_st(const char *path, const char *header, const void *data, size_t n_data)
{
    size_t nh = strlen(header);
    unsigned char *b = ecl_malloc(8 + nh + n_data + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)nh >> (8 * i));
    memcpy(b + 8, header, nh);
    if (n_data)
        memcpy(b + 8 + nh, data, n_data);
    write_bytes(path, b, 8 + nh + n_data);
    free(b);
}

/* st_read of path must fail with a message holding `want`. */
static void expect_st_error(const char *path, const char *want, const char *what)
{
    st_file f;
    int rc = st_read(path, &f);
    CHECK(rc == -1, "%s: st_read accepted a bad file", what);
    if (rc == 0)
        st_free(&f);
    CHECK(strstr(ecl_last_error(), want) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
          ecl_last_error(), want);
}

/* ---- the format, pinned by hand ---------------------------------------- */

static void test_handmade_file(void)
{
    /* Two tensors: a = F32 [2] {1.5, -2}, b = I64 [1, 1] {-3}; metadata with
     * an escaped name and a \u escape. Bytes spelled out, little-endian. */
    static const unsigned char data[16] = {
        0x00, 0x00, 0xc0, 0x3f,  0x00, 0x00, 0x00, 0xc0,
        0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    const char *header =
        "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},\n"
        " \"__metadata__\": {\"k\\\"q\": \"v\\u00e9\\n\"},\n"
        " \"b\": {\"data_offsets\": [8, 16], \"shape\": [1, 1], \"dtype\": \"I64\"}}   ";
    char path[300];
    tmp_path(path, sizeof path, "hand.safetensors");
    write_st(path, header, data, sizeof data);

    st_file f;
    CHECK(st_read(path, &f) == 0, "hand-made file refused: %s", ecl_last_error());
    CHECK(f.n_tensors == 2 && f.n_meta == 1, "%d tensors, %d metadata", f.n_tensors, f.n_meta);
    const st_tensor *a = st_find(&f, "a"), *b = st_find(&f, "b");
    CHECK(a && a->dtype == ST_F32 && a->ndim == 1 && a->shape[0] == 2 && a->n_bytes == 8,
          "tensor a read wrong");
    CHECK(b && b->dtype == ST_I64 && b->ndim == 2 && b->shape[0] == 1 && b->shape[1] == 1,
          "tensor b read wrong");
    if (a && b) {
        float av[2];
        int64_t bv;
        memcpy(av, a->data, sizeof av);
        memcpy(&bv, b->data, sizeof bv);
        CHECK(av[0] == 1.5f && av[1] == -2.0f && bv == -3, "values %g %g %lld", av[0], av[1],
              (long long)bv);
        CHECK(b->offset == 8 && (const unsigned char *)b->data == f.data + 8, "b's offset");
    }
    const char *v = st_meta(&f, "k\"q");
    CHECK(v && strcmp(v, "v\xc3\xa9\n") == 0, "metadata escapes decoded wrong: %s", v);
    CHECK(st_find(&f, "c") == NULL && st_meta(&f, "nope") == NULL, "found what is not there");
    st_free(&f);
}

/* The writer's bytes: prefix, padded header, tensors back to back in order. */
static void test_writer_layout(void)
{
    float x[3] = { 1.0f, 2.0f, -0.5f };
    uint8_t u[3] = { 7, 8, 9 };
    int64_t sx[2] = { 1, 3 }, su[1] = { 3 };
    st_writer w;
    st_writer_init(&w);
    CHECK(st_writer_add(&w, "x", ST_F32, sx, 2, x) == 0, "add x");
    CHECK(st_writer_add(&w, "u", ST_U8, su, 1, u) == 0, "add u");
    CHECK(st_writer_add(&w, "x", ST_F32, sx, 2, x) == -1 &&
          strstr(ecl_last_error(), "twice"), "duplicate name accepted");
    CHECK(st_writer_add(&w, "__metadata__", ST_U8, su, 1, u) == -1, "reserved name accepted");
    CHECK(st_writer_meta(&w, "who", "test \"quoted\"!") == 0, "meta");
    char path[300];
    tmp_path(path, sizeof path, "writer.safetensors");
    CHECK(st_writer_write(&w, path) == 0, "write: %s", ecl_last_error());
    st_writer_free(&w);

    size_t n;
    unsigned char *b = read_bytes(path, &n);
    uint64_t nh = 0;
    for (int i = 7; i >= 0; i--)
        nh = nh << 8 | b[i];
    CHECK((8 + nh) % 8 == 0, "header length %llu leaves the data unaligned",
          (unsigned long long)nh);
    CHECK(n == 8 + nh + 15, "file is %zu bytes, want %llu", n, (unsigned long long)(8 + nh + 15));
    CHECK(memcmp(b + 8 + nh, x, 12) == 0 && memcmp(b + 8 + nh + 12, u, 3) == 0,
          "data not laid out in order");
    const char *want = "{\"__metadata__\":{\"who\":\"test \\\"quoted\\\"!\"},"
                       "\"x\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[0,12]},"
                       "\"u\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[12,15]}}";
    CHECK(nh == strlen(want) + 7, "header %llu bytes, want %zu + 7 spaces of padding",
          (unsigned long long)nh, strlen(want));
    CHECK(strncmp((const char *)b + 8, want, strlen(want)) == 0, "header text differs: %.*s",
          (int)nh, b + 8);
    for (uint64_t i = strlen(want); i < nh; i++)
        CHECK(b[8 + i] == ' ', "padding byte %llu is 0x%02x", (unsigned long long)i, b[8 + i]);
    free(b);
}

/* ---- the reader's refusals -------------------------------------------- */

static void test_reader_refusals(void)
{
    char p[300];
    unsigned char d[64] = { 0 };
    tmp_path(p, sizeof p, "bad.safetensors");
#define ENTRY(name, dt, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}"

    /* Sizes and offsets. */
    write_st(p, "{" ENTRY("a", "F32", "[2]", "0", "8") "}", d, 4);
    expect_st_error(p, "truncated", "offsets past the data");
    write_st(p, "{" ENTRY("a", "F32", "[3]", "0", "8") "}", d, 8);
    expect_st_error(p, "needs 12 bytes but data_offsets [0, 8] span 8", "shape vs offsets");
    write_st(p, "{" ENTRY("a", "F32", "[2]", "0", "8") "," ENTRY("b", "F32", "[1]", "4", "8")
                "}", d, 8);
    expect_st_error(p, "overlaps", "overlap");
    write_st(p, "{" ENTRY("a", "F32", "[1]", "0", "4") "," ENTRY("b", "F32", "[1]", "8", "12")
                "}", d, 12);
    expect_st_error(p, "bytes 4..8 before tensor \"b\" belong to no tensor", "gap");
    write_st(p, "{" ENTRY("a", "F32", "[1]", "0", "4") "}", d, 12);
    expect_st_error(p, "8 trailing bytes", "data beyond the tensors");
    write_st(p, "{" ENTRY("a", "F32", "[1]", "4", "0") "}", d, 4);
    expect_st_error(p, "begin <= end", "reversed offsets");

    /* Names, dtypes, fields. */
    write_st(p, "{" ENTRY("a", "F32", "[1]", "0", "4") "," ENTRY("a", "F32", "[1]", "4", "8")
                "}", d, 8);
    expect_st_error(p, "\"a\" appears twice", "duplicate name");
    write_st(p, "{" ENTRY("a", "F31", "[1]", "0", "4") "}", d, 4);
    expect_st_error(p, "dtype \"F31\"", "unknown dtype");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", d, 0);
    expect_st_error(p, "lacks \"data_offsets\"", "missing field");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", d, 4);
    expect_st_error(p, "unknown field \"x\"", "extra field");
    write_st(p, "{" ENTRY("a", "F32", "[-1]", "0", "4") "}", d, 4);
    expect_st_error(p, "integer >= 0", "negative dim");
    write_st(p, "{\"__metadata__\":{\"k\":3}}", d, 0);
    expect_st_error(p, "metadata \"k\"", "non-string metadata");
    write_st(p, "[]", d, 0);
    expect_st_error(p, "must be an object", "array header");
    write_st(p, "{}", d, 0);
    st_file f;
    CHECK(st_read(p, &f) == 0 && f.n_tensors == 0, "empty header refused: %s",
          ecl_last_error());
    st_free(&f);
#undef ENTRY
}

/* Bad JSON: each must name the byte offset of the fault in the header. */
static void test_bad_json(void)
{
    static const struct { const char *header; int at; const char *want; } cases[] = {
        { "{\"a\" {}}", 5, "':' after a member name" },
        { "{\"a\":{},}", 8, "'\"' opening a member name" },
        { "{\"a\":[1,]}", 8, "a value" },
        { "{\"a\":[1.5]}", 7, "no fraction or exponent" },
        { "{\"a\":[1e3]}", 7, "no fraction or exponent" },
        { "{\"a\":[01]}", 6, "no leading zero" },
        { "{\"a\":true}", 5, "a value (object, array, string or integer)" },
        { "{\"a\":null}", 5, "a value (object, array, string or integer)" },
        { "{\"a\\q\":{}}", 4, "an escape" },
        { "{\"a\x01\":{}}", 3, "printable character" },
        { "{\"a\xff\":{}}", 3, "valid UTF-8" },
        { "{\"a\\u12g4\":{}}", 7, "hex digit" },
        { "{\"a\\ud800x\":{}}", 9, "low surrogate" },
        { "{\"a\":{}} x", 9, "only spaces after the header object" },
        { "{\"a\":{}", 7, "',' or '}'" },
        { "{\"abc", 5, "closing the string" },
        { "", 0, "a value" },
        { "{\"a\":[99999999999999999999]}", 24, "fits in 64 bits" },
        { "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]", 16, "nesting" },
    };
    char p[300], want_at[64];
    tmp_path(p, sizeof p, "json.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_st(p, cases[i].header, NULL, 0);
        snprintf(want_at, sizeof want_at, "at byte %d (file offset %d)", cases[i].at,
                 cases[i].at + 8);
        expect_st_error(p, cases[i].want, cases[i].header);
        expect_st_error(p, want_at, cases[i].header);
    }
}

/* ---- checkpoints -------------------------------------------------------- */

static void small_config(config *cfg, int k)
{
    config_defaults(cfg);
    snprintf(cfg->model.name, sizeof cfg->model.name, "vgg4");
    cfg->model.clusters = k;
    cfg->model.width = 2;
    cfg->model.head_bn = 1;
    cfg->model.heads = 1;
    cfg->em.warm_start = 1;
}

static void fill_normal(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_normal(&rng);
}

/* A trained-looking run: model, Adam with nonzero moments, a loop position. */
typedef struct {
    config cfg;
    model net;
    optimizer opt;
    checkpoint_state st;
} run;

static void run_init(run *r, int k, uint64_t seed, int randomise)
{
    small_config(&r->cfg, k);
    model_init(&r->net, &r->cfg, 1, 8, 8, seed);
    optim_init(&r->opt, &r->cfg, &r->net);
    memset(&r->st, 0, sizeof r->st);
    r->st.n_samples = N_SAMPLES;
    r->st.y_store = ecl_calloc((size_t)(r->net.n_heads * N_SAMPLES * k), sizeof(float));
    if (!randomise)
        return;
    for (int i = 0; i < r->net.n_buffers; i++)
        fill_normal(r->net.buffers[i].value, r->net.buffers[i].n);
    for (int i = 0; i < r->opt.n; i++) {
        fill_normal(r->opt.m1[i], r->net.params[i].n);
        fill_normal(r->opt.m2[i], r->net.params[i].n);
    }
    fill_normal(r->st.y_store, (int64_t)r->net.n_heads * N_SAMPLES * k);
    r->opt.step = 37;
    r->st = (checkpoint_state){ 3, 5, 41, 1234567890123ull, r->st.y_store, N_SAMPLES, 1,
                                ecl_strdup("iv 1 2.5e-3; ep 3 0.125") };
}

static void run_free(run *r)
{
    model_free(&r->net);
    optim_free(&r->opt);
    free(r->st.y_store);
    free(r->st.train_stats);
}

/* 1 when every array and counter of a and b is bit-identical. */
static int run_same(const run *a, const run *b)
{
    int same = a->opt.step == b->opt.step && a->st.epoch == b->st.epoch &&
               a->st.step_in_epoch == b->st.step_in_epoch &&
               a->st.global_step == b->st.global_step && a->st.seed == b->st.seed &&
               a->st.best_head == b->st.best_head &&
               !a->st.train_stats == !b->st.train_stats &&
               (!a->st.train_stats || strcmp(a->st.train_stats, b->st.train_stats) == 0);
    for (int i = 0; i < a->net.n_params; i++) {
        size_t nb = (size_t)a->net.params[i].n * sizeof(float);
        same &= memcmp(a->net.params[i].value, b->net.params[i].value, nb) == 0;
        same &= memcmp(a->opt.m1[i], b->opt.m1[i], nb) == 0;
        same &= memcmp(a->opt.m2[i], b->opt.m2[i], nb) == 0;
    }
    for (int i = 0; i < a->net.n_buffers; i++)
        same &= memcmp(a->net.buffers[i].value, b->net.buffers[i].value,
                       (size_t)a->net.buffers[i].n * sizeof(float)) == 0;
    return same && memcmp(a->st.y_store, b->st.y_store,
                          (size_t)(a->net.n_heads * N_SAMPLES * a->net.k) * sizeof(float)) == 0;
}

static void test_round_trip(const char *path)
{
    run a, b;
    run_init(&a, 3, 1, 1);
    run_init(&b, 3, 2, 0);
    CHECK(!run_same(&a, &b), "the two runs start equal: the test would prove nothing");
    CHECK(checkpoint_save(path, &a.net, &a.opt, &a.st, &a.cfg) == 0, "save: %s",
          ecl_last_error());
    CHECK(checkpoint_load(path, &b.net, &b.opt, &b.st, &b.cfg, 0) == 0, "load: %s",
          ecl_last_error());
    CHECK(run_same(&a, &b), "reloaded run differs from the saved one");

    /* Metadata a reader outside ecl relies on. */
    st_file f;
    CHECK(st_read(path, &f) == 0, "st_read: %s", ecl_last_error());
    CHECK(st_meta(&f, "format") && strcmp(st_meta(&f, "format"), "ecl-checkpoint") == 0 &&
          strcmp(st_meta(&f, "version"), "1") == 0 &&
          strcmp(st_meta(&f, "global_step"), "41") == 0 &&
          strcmp(st_meta(&f, "clusters"), "3") == 0 &&
          strstr(st_meta(&f, "config"), "clusters = 3") != NULL, "metadata wrong");
    CHECK(st_find(&f, "optim.m2.head.weight") && st_find(&f, "block0.bn.running_mean") &&
          st_find(&f, "em.y_store"), "expected tensor names absent");
    st_free(&f);

    /* Evaluation: no optimiser, no state; the model still loads. */
    run c;
    run_init(&c, 3, 3, 0);
    CHECK(checkpoint_load(path, &c.net, NULL, NULL, &c.cfg, 0) == 0, "model-only load: %s",
          ecl_last_error());
    for (int i = 0; i < a.net.n_params; i++)
        CHECK(memcmp(c.net.params[i].value, a.net.params[i].value,
                     (size_t)a.net.params[i].n * sizeof(float)) == 0,
              "model-only load differs in %s", a.net.params[i].name);
    run_free(&a);
    run_free(&b);
    run_free(&c);
}

/* Loading `path` into a fresh K=3 run must fail with `want`, and leave it as it was. */
static void expect_load_error(const char *path, const char *want, int allow, const char *what)
{
    run r, keep;
    run_init(&r, 3, 5, 0);
    run_init(&keep, 3, 5, 0);
    int rc = checkpoint_load(path, &r.net, &r.opt, &r.st, &r.cfg, allow);
    CHECK(rc == -1, "%s: bad checkpoint accepted", what);
    CHECK(strstr(ecl_last_error(), want) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
          ecl_last_error(), want);
    CHECK(run_same(&r, &keep), "%s: a refused load changed the run", what);
    run_free(&r);
    run_free(&keep);
}

/* Rewrites the checkpoint at src to dst through the writer: without tensor
 * `skip`, with an extra tensor `extra`, metadata `key` set to `value`. */
static void rewrite(const char *src, const char *dst, const char *skip, const char *extra,
                    const char *key, const char *value)
{
    st_file f;
    ECL_CHECK(st_read(src, &f) == 0, "%s", ecl_last_error());
    st_writer w;
    st_writer_init(&w);
    for (int i = 0; i < f.n_meta; i++)
        st_writer_meta(&w, f.meta[i].key,
                       key && strcmp(key, f.meta[i].key) == 0 ? value : f.meta[i].value);
    for (int i = 0; i < f.n_tensors; i++)
        if (!skip || strcmp(skip, f.tensors[i].name) != 0)
            st_writer_add(&w, f.tensors[i].name, f.tensors[i].dtype, f.tensors[i].shape,
                          f.tensors[i].ndim, f.tensors[i].data);
    float one = 1.0f;
    int64_t shape1[1] = { 1 };
    if (extra)
        st_writer_add(&w, extra, ST_F32, shape1, 1, &one);
    ECL_CHECK(st_writer_write(&w, dst) == 0, "%s", ecl_last_error());
    st_writer_free(&w);
    st_free(&f);
}

/* A copy of src with the first `find` in its header replaced by `repl` (same length). */
static void patch(const char *src, const char *dst, const char *find, const char *repl)
{
    size_t n;
    unsigned char *b = read_bytes(src, &n);
    char *at = strstr((char *)b + 8, find);
    ECL_CHECK(at && strlen(find) == strlen(repl), "cannot patch \"%s\"", find);
    memcpy(at, repl, strlen(repl));
    write_bytes(dst, b, n);
    free(b);
}

static void test_damaged_checkpoints(const char *good)
{
    char bad[300];
    tmp_path(bad, sizeof bad, "damaged.safetensors");
    size_t n;
    unsigned char *b = read_bytes(good, &n);
    uint64_t nh = 0;
    for (int i = 7; i >= 0; i--)
        nh = nh << 8 | b[i];

    /* Truncated at several points, from nothing to one byte short. */
    const size_t cuts[] = { 0, 5, 8 + nh / 2, 8 + nh + 3, n / 2 + nh / 2, n - 1 };
    const char *wants[] = { "too short", "too short", "truncated", "truncated", "truncated",
                            "truncated" };
    for (int i = 0; i < 6; i++) {
        write_bytes(bad, b, cuts[i]);
        expect_load_error(bad, wants[i], 0, "truncated file");
    }

    /* Header length too big: absurd, and just past the end. */
    unsigned char *c = ecl_malloc(n);
    memcpy(c, b, n);
    c[5] = 0x01;
    write_bytes(bad, c, n);
    expect_load_error(bad, "absurd", 0, "huge header length");
    memcpy(c, b, n);
    for (int i = 0; i < 8; i++)
        c[i] = (unsigned char)((uint64_t)(n - 7) >> (8 * i));
    write_bytes(bad, c, n);
    expect_load_error(bad, "runs past the end of the file", 0, "header length past the end");
    free(c);
    free(b);

    /* Bad JSON inside a real checkpoint header. */
    patch(good, bad, "\"dtype\":", "\"dtype\";");
    expect_load_error(bad, "':' after a member name", 0, "bad JSON in a checkpoint");

    /* Wrong dtypes: not a dtype at all, and one of the same size. */
    patch(good, bad, "\"dtype\":\"F32\"", "\"dtype\":\"F3X\"");
    expect_load_error(bad, "is not a safetensors dtype", 0, "unknown dtype");
    patch(good, bad, "\"dtype\":\"F32\"", "\"dtype\":\"I32\"");
    expect_load_error(bad, "is I32 but the model expects F32", 0, "wrong dtype");

    /* Missing, extra, other format and version. */
    rewrite(good, bad, "head.bias", NULL, NULL, NULL);
    expect_load_error(bad, "missing tensor \"head.bias\" (the model expects F32 [3])", 0,
                      "missing tensor");
    rewrite(good, bad, "optim.m2.block1.conv.weight", NULL, NULL, NULL);
    expect_load_error(bad, "missing tensor \"optim.m2.block1.conv.weight\"", 0,
                      "missing moment");
    rewrite(good, bad, NULL, "block9.conv.weight", NULL, NULL);
    expect_load_error(bad, "unexpected tensor \"block9.conv.weight\"", 0, "extra tensor");
    rewrite(good, bad, NULL, NULL, "version", "2");
    expect_load_error(bad, "version 2; this ecl (" ECL_VERSION ") reads version 1 only", 0,
                      "other version");
    rewrite(good, bad, NULL, NULL, "format", "other");
    expect_load_error(bad, "not an ecl checkpoint", 0, "other format");
    rewrite(good, bad, NULL, NULL, "optimizer", "sgd");
    expect_load_error(bad, "optimiser is sgd, this run uses adam", 0, "other optimiser");
    rewrite(good, bad, NULL, NULL, "epoch", "3x");
    expect_load_error(bad, "\"epoch\" = \"3x\" is not a non-negative integer", 0, "bad epoch");
    expect_load_error(dir, "not a regular file", 0, "a directory");
}

/* A K=4 checkpoint into a K=3 model: refused by config, then by shape. */
static void test_config_mismatch(void)
{
    char p[300];
    tmp_path(p, sizeof p, "k4.safetensors");
    run a, b;
    run_init(&a, 4, 1, 1);
    CHECK(checkpoint_save(p, &a.net, &a.opt, &a.st, &a.cfg) == 0, "save: %s", ecl_last_error());
    expect_load_error(p, "model.clusters = \"4\" in the checkpoint, \"3\" in this config", 0,
                      "other K");
    expect_load_error(p, CHECKPOINT_MISMATCH_FLAG, 0, "other K: the override is named");
    expect_load_error(p, "tensor \"head.weight\" has shape [4, 16] but the model expects "
                         "[3, 16]; model.clusters = \"4\" in the checkpoint", 1,
                      "other K, config override");

    /* Same shapes, other lambda: refused, then loaded when allowed. */
    run_init(&b, 4, 2, 0);
    b.cfg.loss.lambda = 50.0f;
    CHECK(checkpoint_load(p, &b.net, &b.opt, &b.st, &b.cfg, 0) == -1 &&
          strstr(ecl_last_error(), "loss.lambda = \"100\" in the checkpoint, \"50\" in this"),
          "other lambda: %s", ecl_last_error());
    CHECK(checkpoint_load(p, &b.net, &b.opt, &b.st, &b.cfg, 1) == 0, "allowed mismatch: %s",
          ecl_last_error());
    CHECK(run_same(&a, &b), "allowed mismatch did not load the values");

    /* Keys that do not change results may differ without an override. */
    b.cfg.loss.lambda = a.cfg.loss.lambda;
    b.cfg.run.threads = 3;
    snprintf(b.cfg.run.out, sizeof b.cfg.run.out, "elsewhere");
    CHECK(checkpoint_load(p, &b.net, &b.opt, &b.st, &b.cfg, 0) == 0,
          "run.threads / run.out change refused: %s", ecl_last_error());

    /* A different number of samples in the EM store. */
    free(b.st.y_store);
    b.st.n_samples = N_SAMPLES + 1;
    b.st.y_store = ecl_calloc((size_t)(b.net.n_heads * (N_SAMPLES + 1) * 4), sizeof(float));
    CHECK(checkpoint_load(p, &b.net, &b.opt, &b.st, &b.cfg, 0) == -1 &&
          strstr(ecl_last_error(), "\"em.y_store\" has shape [1, 7, 4] but this run "
                                   "expects [1, 8, 4]"), "y_store rows: %s", ecl_last_error());
    run_free(&a);
    run_free(&b);
}

/* ---- atomic writes ------------------------------------------------------ */

static void test_atomic_writes(const char *good)
{
    run a;
    run_init(&a, 3, 1, 1);
    CHECK(checkpoint_save("/nonexistent-ecl-dir/x/ckpt.safetensors", &a.net, &a.opt, &a.st,
                          &a.cfg) == -1 &&
          strstr(ecl_last_error(), "cannot create /nonexistent-ecl-dir/x/ckpt.safetensors.tmp"),
          "missing folder: %s", ecl_last_error());

    /* The temp name is taken by a folder: the save fails, the old file stays. */
    char tmp[400];
    size_t n0, n1;
    unsigned char *before = read_bytes(good, &n0);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", good, (long)getpid());
    ECL_CHECK(mkdir(tmp, 0700) == 0, "mkdir %s", tmp);
    a.st.global_step = 999;
    CHECK(checkpoint_save(good, &a.net, &a.opt, &a.st, &a.cfg) == -1 &&
          strstr(ecl_last_error(), "cannot create"), "blocked temp file: %s", ecl_last_error());
    rmdir(tmp);
    unsigned char *after = read_bytes(good, &n1);
    CHECK(n0 == n1 && memcmp(before, after, n0) == 0, "failed save changed the old file");
    free(after);

    /* A full disk: the temp name points at /dev/full. */
    if (access("/dev/full", W_OK) == 0 && symlink("/dev/full", tmp) == 0) {
        CHECK(checkpoint_save(good, &a.net, &a.opt, &a.st, &a.cfg) == -1 &&
              strstr(ecl_last_error(), "disk full"), "full disk: %s", ecl_last_error());
        CHECK(access(tmp, F_OK) != 0, "the temp name was left behind");
        unlink(tmp);
        after = read_bytes(good, &n1);
        CHECK(n0 == n1 && memcmp(before, after, n0) == 0, "full-disk save changed the file");
        free(after);
    } else {
        printf("note: /dev/full unusable here; full-disk case not run\n");
    }
    free(before);
    run_free(&a);
}

/* ---- pruning ------------------------------------------------------------ */

static void test_prune(void)
{
    char sub[300], p[400];
    tmp_path(sub, sizeof sub, "prune");
    ECL_CHECK(mkdir(sub, 0700) == 0, "mkdir %s", sub);
    const char *names[] = { "ckpt-1.safetensors", "ckpt-20.safetensors", "ckpt-3.safetensors",
                            "ckpt-100.safetensors", "ckpt-5.safetensors.tmp.1", "notes.txt",
                            "ckpt-007.safetensors", "ckpt-.safetensors" };
    for (int i = 0; i < 8; i++) {
        snprintf(p, sizeof p, "%s/%s", sub, names[i]);
        write_bytes(p, "x", 1);
    }
    CHECK(checkpoint_find_latest(sub, p, sizeof p) == 1 && strstr(p, "/ckpt-100.safetensors"),
          "latest: %s", p);
    CHECK(checkpoint_prune(sub, 0) == 0, "keep_last 0 removed files");
    CHECK(checkpoint_prune(sub, 2) == 2, "prune removed %s", "a wrong number of files");
    const int kept[] = { 0, 1, 0, 1, 1, 1, 1, 1 };
    for (int i = 0; i < 8; i++) {
        snprintf(p, sizeof p, "%s/%s", sub, names[i]);
        CHECK((access(p, F_OK) == 0) == kept[i], "%s %s", names[i],
              kept[i] ? "was removed" : "was kept");
        remove(p);
    }
    CHECK(checkpoint_find_latest(sub, p, sizeof p) == 0, "empty folder has a latest");
    rmdir(sub);
    CHECK(checkpoint_prune("/nonexistent-ecl-dir", 1) == -1 &&
          strstr(ecl_last_error(), "/nonexistent-ecl-dir"), "missing folder: %s",
          ecl_last_error());
}

int main(void)
{
    ecl_log_set_level(0);
    rng = rng_seeded(20240601);
    snprintf(dir, sizeof dir, "/tmp/ecl-test-checkpoint-%ld", (long)getpid());
    ECL_CHECK(mkdir(dir, 0700) == 0, "cannot create %s", dir);

    char good[300];
    tmp_path(good, sizeof good, "good.safetensors");
    test_handmade_file();
    test_writer_layout();
    test_reader_refusals();
    test_bad_json();
    test_round_trip(good);
    test_damaged_checkpoints(good);
    test_config_mismatch();
    test_atomic_writes(good);
    test_prune();

    /* Keep the folder when asked, for scripts/read_checkpoint.py by hand. */
    if (!getenv("ECL_KEEP_TEST_FILES")) {
        const char *files[] = { "hand.safetensors", "writer.safetensors", "bad.safetensors",
                                "json.safetensors", "good.safetensors", "damaged.safetensors",
                                "k4.safetensors" };
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            char p[300];
            tmp_path(p, sizeof p, files[i]);
            remove(p);
        }
        rmdir(dir);
    } else {
        printf("test files kept in %s\n", dir);
    }
    return check_summary("test_checkpoint");
}
