/*
 * test_eval_report.c - what ecl-eval writes (eval_report.h): the clusters x
 * classes table and its Hungarian order, the text and PNG forms read back,
 * eval_assignments.csv and eval.json, and config_load_string, which
 * ecl-eval uses to read a checkpoint's stored config.
 *
 * Not tested here: the program itself on real checkpoints (tests/test_eval.sh).
 */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "ecl/config.h"
#include "ecl/core.h"
#include "ecl/eval_report.h"
#include "ecl/metrics.h"
#include "ecl/rng.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb/stb_image.h>

static char tmp_dir[] = "/tmp/ecl_test_eval_report_XXXXXX";

/* The whole of a small file as a string (caller frees), or NULL. */
static char *read_all(const char *path, long *n_bytes)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = ecl_malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    if (n_bytes)
        *n_bytes = (long)got;
    return buf;
}

static void tmp_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", tmp_dir, name);
}

/*
 * The hand example: classes 10, 20, 30 (not dense, to test the column map),
 * clusters 0..3, one unknown label. Counts [cluster][class]:
 *   0: 1 5 0    1: 4 0 0    2: 0 0 3    3: 0 2 0   (K = 4 > C = 3)
 * The best one-to-one match is 1->10, 0->20, 2->30 (4 + 5 + 3 = 12 of 15);
 * cluster 3 is left unmatched.
 */
static const int32_t ex_labels[] = { 10, 20, 20, 20, 20, 20, 10, 10, 10, 10,
                                     30, 30, 30, 20, 20, -1 };
static const int32_t ex_clusters[] = { 0, 0, 0, 0, 0, 0, 1, 1, 1, 1,
                                       2, 2, 2, 3, 3, 3 };
#define EX_N 16

static void test_table(void)
{
    confusion cm;
    confusion_build(&cm, ex_labels, ex_clusters, EX_N, 4);
    static const int64_t want[4][3] = { { 1, 5, 0 }, { 4, 0, 0 }, { 0, 0, 3 }, { 0, 2, 0 } };

    /* Columns, counts and the labelled total (the -1 sample left out). */
    CHECK(cm.n_classes == 3, "n_classes %d, want 3", cm.n_classes);
    CHECK(cm.class_label[0] == 10 && cm.class_label[1] == 20 && cm.class_label[2] == 30,
          "class labels %d %d %d", cm.class_label[0], cm.class_label[1], cm.class_label[2]);
    CHECK(cm.n_labelled == 15, "n_labelled %lld, want 15", (long long)cm.n_labelled);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 3; c++)
            CHECK(cm.count[r * 3 + c] == want[r][c], "count[%d][%d] = %lld, want %lld", r, c,
                  (long long)cm.count[r * 3 + c], (long long)want[r][c]);

    /* The match, its hits (ACC numerator) and the display order. */
    CHECK(cm.match[0] == 1 && cm.match[1] == 0 && cm.match[2] == 2 && cm.match[3] == -1,
          "match %d %d %d %d, want 1 0 2 -1", cm.match[0], cm.match[1], cm.match[2],
          cm.match[3]);
    CHECK(cm.n_matched == 12, "n_matched %lld, want 12", (long long)cm.n_matched);
    CHECK(cm.n_unmatched == 1, "n_unmatched %d, want 1", cm.n_unmatched);
    CHECK(cm.order[0] == 1 && cm.order[1] == 0 && cm.order[2] == 2 && cm.order[3] == 3,
          "order %d %d %d %d, want 1 0 2 3", cm.order[0], cm.order[1], cm.order[2],
          cm.order[3]);
    CHECK_NEAR((double)cm.n_matched / (double)cm.n_labelled,
               metrics_acc(ex_labels, ex_clusters, EX_N), 1e-12, 0);
    confusion_free(&cm);
}

/* No labels at all: an empty table, every cluster unmatched. */
static void test_table_unlabelled(void)
{
    int32_t labels[5] = { -1, -1, -1, -1, -1 }, clusters[5] = { 0, 1, 1, 2, 0 };
    confusion cm;
    confusion_build(&cm, labels, clusters, 5, 3);
    CHECK(cm.n_classes == 0 && cm.n_labelled == 0, "unlabelled: %d classes, %lld labelled",
          cm.n_classes, (long long)cm.n_labelled);
    CHECK(cm.n_unmatched == 3 && cm.n_matched == 0, "unlabelled: %d unmatched, %lld matched",
          cm.n_unmatched, (long long)cm.n_matched);
    confusion_free(&cm);
}

/* Random tables: the matched share equals metrics_acc, and the order is a
 * permutation with matched rows first in column order. */
static void test_table_random(void)
{
    rng_state g = rng_seeded(7);
    for (int trial = 0; trial < 20; trial++) {
        int k = 2 + (int)rng_below(&g, 12), c = 2 + (int)rng_below(&g, 12);
        int64_t n = 50 + (int64_t)rng_below(&g, 400);
        int32_t *lab = ecl_malloc((size_t)n * sizeof(int32_t));
        int32_t *clu = ecl_malloc((size_t)n * sizeof(int32_t));
        for (int64_t i = 0; i < n; i++) {
            clu[i] = (int32_t)rng_below(&g, (uint64_t)k);
            lab[i] = rng_below(&g, 3) == 0 ? clu[i] % c : (int32_t)rng_below(&g, (uint64_t)c);
        }
        confusion cm;
        confusion_build(&cm, lab, clu, n, k);
        CHECK_NEAR((double)cm.n_matched / (double)cm.n_labelled, metrics_acc(lab, clu, n),
                   1e-12, 0);
        int seen[16] = { 0 }, last_col = -1, ok = 1;
        for (int i = 0; i < k; i++) {
            int r = cm.order[i], m = cm.match[r];
            seen[r]++;
            ok &= m < 0 ? i >= k - cm.n_unmatched : m > last_col;
            last_col = m >= 0 ? m : last_col;
        }
        for (int r = 0; r < k; r++)
            ok &= seen[r] == 1;
        CHECK(ok, "trial %d (K %d, C %d): order is not matched-by-column then unmatched",
              trial, k, c);
        confusion_free(&cm);
        free(lab);
        free(clu);
    }
}

/* The text form: K data rows after one header, in the table's order. */
static void test_text(void)
{
    char path[256];
    tmp_path("confusion.txt", path, sizeof path);
    confusion cm;
    confusion_build(&cm, ex_labels, ex_clusters, EX_N, 4);
    CHECK(confusion_write_text(&cm, NULL, 0, path) == 0, "write text: %s", ecl_last_error());
    char *text = read_all(path, NULL);
    CHECK(text != NULL, "no %s", path);
    if (!text) {
        confusion_free(&cm);
        return;
    }

    /* Header, then rows "cluster match size count count count" in display order. */
    int rows = 0, header = 0;
    static const long long want[4][5] = { { 1, 4, 4, 0, 0 }, { 0, 6, 1, 5, 0 },
                                          { 2, 3, 0, 0, 3 }, { 3, 2, 0, 2, 0 } };
    static const char *const want_match[4] = { "10", "20", "30", "-" };
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        if (!header) {
            header = 1;
            CHECK(strstr(line, "cluster") && strstr(line, "10") && strstr(line, "30"),
                  "header: %s", line);
            continue;
        }
        long long v[5] = { -1, -1, -1, -1, -1 };
        char match[16] = "";
        int got = sscanf(line, "%lld %15s %lld %lld %lld %lld", &v[0], match, &v[1], &v[2],
                         &v[3], &v[4]);
        int ok = rows < 4 && got == 6 && strcmp(match, want_match[rows]) == 0;
        for (int j = 0; ok && j < 5; j++)
            ok = v[j] == want[rows][j];
        CHECK(ok, "table row %d reads \"%s\"", rows, line);
        rows++;
    }
    CHECK(rows == 4, "%d table rows, want K = 4", rows);
    free(text);

    /* Class names replace the numbers when the data set has them. */
    char *names[31] = { 0 };
    names[10] = "ten";
    names[20] = "twenty";
    names[30] = "thirty";
    CHECK(confusion_write_text(&cm, names, 31, path) == 0, "write text: %s", ecl_last_error());
    text = read_all(path, NULL);
    CHECK(text && strstr(text, "twenty") && strstr(text, "thirty"), "class names missing");
    free(text);
    confusion_free(&cm);
}

/* The PNG: magic bytes, size, grid, and white-to-dark shading by count. */
static void test_png(void)
{
    char path[256];
    tmp_path("confusion.png", path, sizeof path);
    confusion cm;
    confusion_build(&cm, ex_labels, ex_clusters, EX_N, 4);
    int px = 5;
    CHECK(confusion_write_png(&cm, px, path) == 0, "write png: %s", ecl_last_error());
    long n = 0;
    char *bytes = read_all(path, &n);
    CHECK(bytes && n > 8 && memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) == 0, "not a PNG");
    free(bytes);

    int w = 0, h = 0, ch = 0;
    unsigned char *img = stbi_load(path, &w, &h, &ch, 3);
    CHECK(img != NULL, "stb cannot read the PNG back");
    if (!img) {
        confusion_free(&cm);
        return;
    }
    CHECK(w == 3 * (px + 1) + 1 && h == 4 * (px + 1) + 1, "size %d x %d, want %d x %d", w, h,
          3 * (px + 1) + 1, 4 * (px + 1) + 1);

    /* Pixel (x, y) of the centre of display row i, column c. */
#define CELL(i, c) (img + 3 * ((size_t)((i) * (px + 1) + 1 + px / 2) * (size_t)w + \
                               (size_t)((c) * (px + 1) + 1 + px / 2)))
    /* Display row 1 is cluster 0, whose class-20 cell holds the maximum, 5. */
    const unsigned char *full = CELL(1, 1), *empty = CELL(1, 2), *grid = img;
    CHECK(full[0] == 8 && full[1] == 48 && full[2] == 107, "full cell %d %d %d", full[0],
          full[1], full[2]);
    CHECK(empty[0] == 255 && empty[1] == 255 && empty[2] == 255, "empty cell %d %d %d",
          empty[0], empty[1], empty[2]);
    CHECK(grid[0] == 170 && grid[1] == 170 && grid[2] == 170, "grid pixel %d %d %d", grid[0],
          grid[1], grid[2]);
    /* Cluster 1 / class 10 holds 4 of 5: between, and darker than 2 of 5. */
    const unsigned char *four = CELL(0, 0), *two = CELL(3, 1);
    CHECK(four[0] < two[0] && two[0] < 255 && four[0] > 8, "shades: 4/5 -> %d, 2/5 -> %d",
          four[0], two[0]);
#undef CELL
    stbi_image_free(img);

    /* No labels: nothing to draw, and the refusal says so. */
    confusion none;
    int32_t lab[2] = { -1, -1 }, clu[2] = { 0, 1 };
    confusion_build(&none, lab, clu, 2, 2);
    CHECK(confusion_write_png(&none, 0, path) == -1 && strstr(ecl_last_error(), "labelled"),
          "unlabelled png: %s", ecl_last_error());
    confusion_free(&none);
    confusion_free(&cm);
}

/* A three-sample result for the CSV and JSON writers. */
static void fake_result(eval_result *r, dataset *ds, int labelled)
{
    static int32_t cluster[3] = { 1, 0, 1 }, labels[3] = { 0, 1, 0 }, nolab[3] = { -1, -1, -1 };
    static float conf[3] = { 0.5f, 0.25f, 0.875f };
    static int64_t sizes[2] = { 1, 2 };
    static char *names[3] = { "a.png", "b,c.png", "q\"d.png" };
    memset(r, 0, sizeof *r);
    memset(ds, 0, sizeof *ds);
    *r = (eval_result){ cluster, conf, sizes, 2, 2, 1, 2, 0.6365, 0.541667, labelled,
                        1.0, 1.0, 1.0, 1.0, 0 };
    ds->n = 3;
    ds->labels = labelled ? labels : nolab;
    ds->names = names;
}

static void test_assignments_and_json(void)
{
    char path[256];
    eval_result r;
    dataset ds;
    fake_result(&r, &ds, 1);
    tmp_path("eval_assignments.csv", path, sizeof path);
    CHECK(eval_write_assignments(path, &r, &ds) == 0, "csv: %s", ecl_last_error());
    char *text = read_all(path, NULL);
    const char *want = "index,name,cluster,confidence,label\n0,a.png,1,0.500000,0\n"
                       "1,\"b,c.png\",0,0.250000,1\n2,\"q\"\"d.png\",1,0.875000,0\n";
    CHECK(text && strcmp(text, want) == 0, "csv:\n%s\nwant:\n%s", text ? text : "", want);
    free(text);

    /* Labelled: both accuracies under their names; unlabelled: neither. */
    float mean[1] = { 0.5f }, std[1] = { 0.25f };
    eval_source src = { "run/ckpt-7.safetensors", 7, 0, 1, "data \"x\"", "", mean, std, 1 };
    confusion cm;
    confusion_build(&cm, ds.labels, r.cluster, ds.n, r.k);
    tmp_path("eval.json", path, sizeof path);
    CHECK(eval_write_json(path, &r, &cm, &ds, &src) == 0, "json: %s", ecl_last_error());
    text = read_all(path, NULL);
    CHECK(text && strstr(text, "\"acc\": 1.000000") && strstr(text, "\"acc_majority\": ") &&
          strstr(text, "\"nmi\"") && strstr(text, "\"labelled\": true") &&
          strstr(text, "\"data\": \"data \\\"x\\\"\"") && strstr(text, "\"global_step\": 7") &&
          strstr(text, "\"sizes\": [1, 2]"), "labelled json:\n%s", text ? text : "");
    free(text);
    confusion_free(&cm);

    fake_result(&r, &ds, 0);
    confusion_build(&cm, ds.labels, r.cluster, ds.n, r.k);
    CHECK(eval_write_json(path, &r, &cm, &ds, &src) == 0, "json: %s", ecl_last_error());
    text = read_all(path, NULL);
    CHECK(text && !strstr(text, "\"acc\"") && strstr(text, "\"labelled\": false") &&
          strstr(text, "\"clusters_used\": 2"), "unlabelled json:\n%s", text ? text : "");
    free(text);
    confusion_free(&cm);
}

/* config_load_string reads what config_write_ini wrote, and names its origin. */
static void test_config_load_string(void)
{
    config a, b;
    config_defaults(&a);
    CHECK(config_set(&a, "model.clusters", "17") == 0 && config_set(&a, "data.limit", "123") == 0
          && config_set(&a, "loss.lambda", "2.5") == 0, "set: %s", ecl_last_error());
    char *text = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&text, &n);
    CHECK(config_write_ini(&a, mem) == 0, "write: %s", ecl_last_error());
    fclose(mem);

    config_defaults(&b);
    CHECK(config_load_string(&b, text, "mem") == 0, "load: %s", ecl_last_error());
    CHECK(memcmp(&a, &b, sizeof a) == 0, "round trip through the INI text changed the config");
    CHECK(config_load_string(&b, "", "mem") == 0 && memcmp(&a, &b, sizeof a) == 0,
          "empty text changed the config");
    free(text);

    /* A bad line: -1, the origin and line in the message, cfg untouched. */
    int rc = config_load_string(&b, "[model]\nclusters = 3\nwidth = lots\n", "ckpt-9 (stored)");
    CHECK(rc == -1 && strstr(ecl_last_error(), "ckpt-9 (stored):3") &&
          strstr(ecl_last_error(), "width"), "bad text: rc %d, %s", rc, ecl_last_error());
    CHECK(memcmp(&a, &b, sizeof a) == 0, "a failed load changed the config");
}

int main(void)
{
    ECL_CHECK(mkdtemp(tmp_dir) != NULL, "mkdtemp failed");
    test_table();
    test_table_unlabelled();
    test_table_random();
    test_text();
    test_png();
    test_assignments_and_json();
    test_config_load_string();

    /* Remove what the tests wrote. */
    const char *files[] = { "confusion.txt", "confusion.png", "eval_assignments.csv",
                            "eval.json" };
    for (int i = 0; i < 4; i++) {
        char path[256];
        tmp_path(files[i], path, sizeof path);
        unlink(path);
    }
    rmdir(tmp_dir);
    return check_summary("test_eval_report");
}
