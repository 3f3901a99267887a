/*
 * eval_report.c - the files and the summary ecl-eval writes (see
 * eval_report.h): the clusters x classes table, its text and PNG forms,
 * eval.json and eval_assignments.csv. Every file goes through fileio.h, so
 * a failed write never leaves a half file under the real name.
 *
 * Shape legend: K clusters (rows), C classes (columns), N samples.
 * Not here: the forward pass and the scores; this module reads them from
 * eval_result and only recomputes the one-to-one match, to order the rows.
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/eval_report.h"

#include "ecl/core.h"
#include "ecl/fileio.h"
#include "ecl/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image_write.h>

/* Heat-map colours: empty cells white, the fullest this dark blue. */
static const uint8_t PNG_FULL_RGB[3] = { 8, 48, 107 };
static const uint8_t PNG_GRID_RGB[3] = { 170, 170, 170 };
/* The picked cell size aims at an image about this wide or tall. */
#define PNG_TARGET_PX 600
#define PNG_MAX_CELL_PX 24

/* ---- the table ---------------------------------------------------------- */

static int confusion_cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The sorted distinct labels >= 0 into cm->class_label; sets n_classes. */
static void confusion_collect_classes(confusion *cm, const int32_t *labels, int64_t n)
{
    int32_t *v = ecl_malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] >= 0)
            v[m++] = labels[i];
    qsort(v, (size_t)m, sizeof(int32_t), confusion_cmp_i32);

    /* Compact in place: v[0..c) distinct. */
    int64_t c = 0;
    for (int64_t i = 0; i < m; i++)
        if (c == 0 || v[c - 1] != v[i])
            v[c++] = v[i];
    ECL_CHECK(c <= INT32_MAX, "%lld distinct labels do not fit an int", (long long)c);
    cm->n_classes = (int)c;
    cm->n_labelled = m;
    cm->class_label = v;
}

/* The column of a label value (it is among class_label). */
static int confusion_column(const confusion *cm, int32_t label)
{
    const int32_t *hit = bsearch(&label, cm->class_label, (size_t)cm->n_classes,
                                 sizeof(int32_t), confusion_cmp_i32);
    ECL_CHECK(hit != NULL, "label %d missing from the class list", (int)label);
    return (int)(hit - cm->class_label);
}

static int64_t confusion_row_total(const confusion *cm, int r)
{
    int64_t s = 0;
    for (int c = 0; c < cm->n_classes; c++)
        s += cm->count[(int64_t)r * cm->n_classes + c];
    return s;
}

/* For the sort of rows: matched first by column, then by size, then by id. */
static const confusion *confusion_sorting;

static int confusion_cmp_rows(const void *a, const void *b)
{
    const confusion *cm = confusion_sorting;
    int x = *(const int *)a, y = *(const int *)b;
    int mx = cm->match[x], my = cm->match[y];
    if ((mx < 0) != (my < 0))
        return mx < 0 ? 1 : -1;
    if (mx >= 0)
        return (mx > my) - (mx < my);
    int64_t sx = confusion_row_total(cm, x), sy = confusion_row_total(cm, y);
    if (sx != sy)
        return sx < sy ? 1 : -1;
    return (x > y) - (x < y);
}

/* The one-to-one match of rows to columns, its hits and the display order. */
static void confusion_match(confusion *cm)
{
    int64_t cells = (int64_t)cm->k * cm->n_classes;
    double *score = ecl_malloc((size_t)(cells > 0 ? cells : 1) * sizeof(double));
    for (int64_t i = 0; i < cells; i++)
        score[i] = (double)cm->count[i];
    metrics_hungarian_max(score, cm->k, cm->n_classes, cm->match);
    free(score);

    /* Hits on the matched cells; empty clusters may be matched at no gain. */
    for (int r = 0; r < cm->k; r++) {
        cm->order[r] = r;
        if (cm->match[r] >= 0)
            cm->n_matched += cm->count[(int64_t)r * cm->n_classes + cm->match[r]];
        else
            cm->n_unmatched++;
    }

    /* qsort has no context argument: the table goes through a static (one
     * thread builds tables). */
    confusion_sorting = cm;
    qsort(cm->order, (size_t)cm->k, sizeof(int), confusion_cmp_rows);
    confusion_sorting = NULL;
}

void confusion_build(confusion *cm, const int32_t *labels, const int32_t *clusters,
                     int64_t n, int k)
{
    ECL_CHECK(k >= 1, "confusion table needs k >= 1, got %d", k);
    memset(cm, 0, sizeof *cm);
    cm->k = k;
    confusion_collect_classes(cm, labels, n);
    int64_t cells = (int64_t)k * cm->n_classes;
    cm->count = ecl_calloc((size_t)(cells > 0 ? cells : 1), sizeof(int64_t));
    cm->match = ecl_malloc((size_t)k * sizeof(int));
    cm->order = ecl_malloc((size_t)k * sizeof(int));

    /* Count labelled samples; a cluster id outside 0..k-1 is a caller's bug. */
    for (int64_t i = 0; i < n; i++) {
        ECL_CHECK(clusters[i] >= 0 && clusters[i] < k, "sample %lld has cluster %d, "
                  "outside 0..%d", (long long)i, (int)clusters[i], k - 1);
        if (labels[i] >= 0)
            cm->count[(int64_t)clusters[i] * cm->n_classes +
                      confusion_column(cm, labels[i])]++;
    }
    confusion_match(cm);
}

void confusion_free(confusion *cm)
{
    free(cm->class_label);
    free(cm->count);
    free(cm->match);
    free(cm->order);
    memset(cm, 0, sizeof *cm);
}

const char *confusion_class_name(const confusion *cm, int c, char *const *class_names,
                                 int n_names, char *buf, size_t size)
{
    int32_t label = cm->class_label[c];
    if (class_names && label < n_names && class_names[label])
        return class_names[label];
    snprintf(buf, size, "%d", (int)label);
    return buf;
}

/* ---- the table as text -------------------------------------------------- */

/* Width of the widest count or class name, at least 4. */
static int confusion_text_width(const confusion *cm, char *const *names, int n_names)
{
    int w = 4;
    char buf[32], num[32];
    for (int c = 0; c < cm->n_classes; c++) {
        int len = (int)strlen(confusion_class_name(cm, c, names, n_names, buf, sizeof buf));
        w = len > w ? len : w;
    }
    for (int64_t i = 0; i < (int64_t)cm->k * cm->n_classes; i++) {
        int len = snprintf(num, sizeof num, "%lld", (long long)cm->count[i]);
        w = len > w ? len : w;
    }
    return w;
}

int confusion_write_text(const confusion *cm, char *const *class_names, int n_names,
                         const char *path)
{
    atomic_file a;
    if (atomic_open(&a, path) != 0)
        return -1;
    FILE *f = a.f;
    int w = confusion_text_width(cm, class_names, n_names);
    char buf[32];

    /* What the table is, then the header line. */
    fprintf(f, "# clusters (rows) x classes (columns): %d x %d, %lld labelled samples\n",
            cm->k, cm->n_classes, (long long)cm->n_labelled);
    fprintf(f, "# rows in Hungarian order: the cluster matched to each class in turn, "
               "then %d unmatched cluster(s) by size\n", cm->n_unmatched);
    fprintf(f, "# one-to-one matched samples: %lld of %lld\n", (long long)cm->n_matched,
            (long long)cm->n_labelled);
    fprintf(f, "%7s  %-*s  %8s", "cluster", w, "match", "size");
    for (int c = 0; c < cm->n_classes; c++)
        fprintf(f, "  %*s", w, confusion_class_name(cm, c, class_names, n_names, buf,
                                                    sizeof buf));
    fprintf(f, "\n");

    /* One row per cluster; "-" where the cluster has no matched class. */
    for (int i = 0; i < cm->k; i++) {
        int r = cm->order[i];
        const char *m = cm->match[r] < 0 ? "-" :
            confusion_class_name(cm, cm->match[r], class_names, n_names, buf, sizeof buf);
        fprintf(f, "%7d  %-*s  %8lld", r, w, m, (long long)confusion_row_total(cm, r));
        for (int c = 0; c < cm->n_classes; c++)
            fprintf(f, "  %*lld", w, (long long)cm->count[(int64_t)r * cm->n_classes + c]);
        fprintf(f, "\n");
    }
    return atomic_commit(&a);
}

/* ---- the table as a PNG ------------------------------------------------- */

int confusion_png_cell_px(const confusion *cm)
{
    int big = cm->k > cm->n_classes ? cm->k : cm->n_classes;
    int px = PNG_TARGET_PX / (big > 0 ? big : 1);
    return px < 1 ? 1 : px > PNG_MAX_CELL_PX ? PNG_MAX_CELL_PX : px;
}

/* Fills the cell at (row i, column c) of an RGB image with one colour. */
static void png_fill_cell(uint8_t *img, int64_t stride, int x0, int y0, int px,
                          const uint8_t rgb[3])
{
    for (int y = y0; y < y0 + px; y++)
        for (int x = x0; x < x0 + px; x++)
            memcpy(img + y * stride + 3 * (int64_t)x, rgb, 3);
}

/* Shade of a count: white at 0, PNG_FULL_RGB at the maximum, linear between. */
static void png_shade(int64_t count, int64_t max, uint8_t rgb[3])
{
    double t = max > 0 ? (double)count / (double)max : 0.0;
    for (int ch = 0; ch < 3; ch++)
        rgb[ch] = (uint8_t)lround(255.0 - t * (255.0 - PNG_FULL_RGB[ch]));
}

/* stb's writer hands the encoded bytes here in pieces: into the temp file. */
static void png_write_chunk(void *context, void *data, int size)
{
    atomic_file *a = context;
    fwrite(data, 1, (size_t)size, a->f);
}

int confusion_write_png(const confusion *cm, int cell_px, const char *path)
{
    if (cm->n_classes == 0)
        return ecl_set_error("%s: no labelled samples, so there is no table to draw", path);
    int px = cell_px > 0 ? cell_px : confusion_png_cell_px(cm);
    int grid = px >= 3;
    int64_t w = (int64_t)cm->n_classes * (px + grid) + grid;
    int64_t h = (int64_t)cm->k * (px + grid) + grid;
    if (w * h > ((int64_t)1 << 25))
        return ecl_set_error("%s: a %lld x %lld pixel heat-map is too large to write; "
                             "lower the cell size", path, (long long)w, (long long)h);

    /* Grid colour everywhere, then each cell painted over it. */
    uint8_t *img = ecl_malloc((size_t)(w * h * 3));
    for (int64_t i = 0; i < w * h; i++)
        memcpy(img + 3 * i, PNG_GRID_RGB, 3);
    int64_t max = 0;
    for (int64_t i = 0; i < (int64_t)cm->k * cm->n_classes; i++)
        max = cm->count[i] > max ? cm->count[i] : max;
    for (int i = 0; i < cm->k; i++)
        for (int c = 0; c < cm->n_classes; c++) {
            uint8_t rgb[3];
            png_shade(cm->count[(int64_t)cm->order[i] * cm->n_classes + c], max, rgb);
            png_fill_cell(img, w * 3, grid + c * (px + grid), grid + i * (px + grid), px, rgb);
        }

    /* Encode straight into the temporary file; rename only when all went well. */
    atomic_file a;
    int rc = atomic_open(&a, path);
    if (rc == 0) {
        if (!stbi_write_png_to_func(png_write_chunk, &a, (int)w, (int)h, 3, img, (int)w * 3)) {
            atomic_abort(&a);
            rc = ecl_set_error("%s: stb_image_write could not encode the PNG", path);
        } else {
            rc = atomic_commit(&a);
        }
    }
    free(img);
    return rc;
}

/* ---- eval_assignments.csv ----------------------------------------------- */

/* A CSV field: as is, or quoted with doubled quotes when it needs it. */
static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int eval_write_assignments(const char *path, const eval_result *r, const dataset *ds)
{
    atomic_file a;
    if (atomic_open(&a, path) != 0)
        return -1;

    /* Same columns and number formats as the trainer's assignments.csv. */
    fprintf(a.f, "index,name,cluster,confidence,label\n");
    for (int64_t i = 0; i < ds->n; i++) {
        fprintf(a.f, "%lld,", (long long)i);
        csv_field(a.f, ds->names ? ds->names[i] : "");
        fprintf(a.f, ",%d,%.6f,%d\n", r->cluster[i], r->confidence[i], ds->labels[i]);
    }
    return atomic_commit(&a);
}

/* ---- eval.json ---------------------------------------------------------- */

static void json_floats(FILE *f, const float *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.6f", i ? ", " : "", (double)v[i]);
    fputc(']', f);
}

/* The source: which checkpoint, head and data, and the normalisation used. */
static void json_source(FILE *f, const eval_source *src)
{
    fprintf(f, "  \"checkpoint\": ");
    json_write_string(f, src->checkpoint);
    fprintf(f, ",\n  \"global_step\": %lld,\n  \"head\": %d,\n  \"heads\": %d,\n",
            (long long)src->global_step, src->head, src->n_heads);
    fprintf(f, "  \"data\": ");
    json_write_string(f, src->data_path);
    fprintf(f, ",\n  \"labels\": ");
    json_write_string(f, src->labels_path);
    fprintf(f, ",\n  \"norm_mean\": ");
    json_floats(f, src->mean, src->channels);
    fprintf(f, ",\n  \"norm_std\": ");
    json_floats(f, src->std, src->channels);
    fprintf(f, ",\n");
}

int eval_write_json(const char *path, const eval_result *r, const confusion *cm,
                    const dataset *ds, const eval_source *src)
{
    atomic_file a;
    if (atomic_open(&a, path) != 0)
        return -1;
    FILE *f = a.f;

    /* What was scored, then what needs no labels. */
    fprintf(f, "{\n");
    json_source(f, src);
    fprintf(f, "  \"n\": %lld,\n  \"k\": %d,\n  \"labelled\": %s,\n", (long long)ds->n, r->k,
            r->labelled ? "true" : "false");
    fprintf(f, "  \"clusters_used\": %d,\n  \"min_cluster\": %lld,\n  \"max_cluster\": %lld,\n",
            r->clusters_used, (long long)r->min_size, (long long)r->max_size);
    fprintf(f, "  \"marginal_entropy\": %.6f,\n  \"log_k\": %.6f,\n  \"mean_confidence\": %.6f,\n",
            r->marginal_entropy, log((double)r->k), r->mean_confidence);
    fprintf(f, "  \"sizes\": [");
    for (int j = 0; j < r->k; j++)
        fprintf(f, "%s%lld", j ? ", " : "", (long long)r->sizes[j]);
    fprintf(f, "]");

    /* Scores only with labels; both accuracies, each under its own name. */
    if (r->labelled) {
        fprintf(f, ",\n  \"n_labelled\": %lld,\n  \"n_classes\": %d,\n  \"unmatched_clusters\": %d",
                (long long)cm->n_labelled, cm->n_classes, cm->n_unmatched);
        fprintf(f, ",\n  \"acc\": %.6f,\n  \"acc_majority\": %.6f,\n  \"nmi\": %.6f,\n"
                   "  \"ari\": %.6f", r->acc, r->acc_majority, r->nmi, r->ari);
    }
    fprintf(f, "\n}\n");
    return atomic_commit(&a);
}

/* ---- the summary -------------------------------------------------------- */

void eval_print_summary(FILE *f, const eval_result *r, const confusion *cm,
                        const dataset *ds, const eval_source *src)
{
    fprintf(f, "checkpoint: %s", src->checkpoint);
    if (src->global_step >= 0)
        fprintf(f, " (global step %lld)", (long long)src->global_step);
    fprintf(f, ", head %d of %d\n", src->head, src->n_heads);
    fprintf(f, "data:       %lld images of %d x %d x %d from %s\n", (long long)ds->n, ds->c,
            ds->h, ds->w, src->data_path);
    fprintf(f, "clusters:   %d of %d used, sizes %lld..%lld, H(marginal) %.4f of log K = "
               "%.4f, mean confidence %.4f\n", r->clusters_used, r->k, (long long)r->min_size,
            (long long)r->max_size, r->marginal_entropy, log((double)r->k),
            r->mean_confidence);
    if (!r->labelled) {
        fprintf(f, "no labels in this data, so no scores: assignments and sizes only\n");
        return;
    }

    /* The scores, then a word on overclustering when it applies. */
    fprintf(f, "%-10s %8s %13s %8s %8s\n", "", "ACC", "ACC-majority", "NMI", "ARI");
    fprintf(f, "%-10s %8.4f %13.4f %8.4f %8.4f\n", "ecl", r->acc, r->acc_majority, r->nmi,
            r->ari);
    fprintf(f, "ACC: one-to-one Hungarian match of clusters to %d classes; ACC-majority: "
               "each cluster takes its majority class (many-to-one)\n", cm->n_classes);
    if (cm->n_unmatched > 0)
        fprintf(f, "overclustering: K = %d > %d classes, so %d cluster(s) have no class "
                   "under ACC and count as wrong; ACC-majority uses them all\n", r->k,
                cm->n_classes, cm->n_unmatched);
}
