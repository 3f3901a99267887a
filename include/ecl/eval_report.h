/*
 * eval_report.h - what ecl-eval writes about one scored clustering: the
 * contingency table of clusters against classes, ordered by the Hungarian
 * match (as text and as a heat-map PNG), eval.json, eval_assignments.csv
 * and the summary on stdout.
 *
 * Shape legend: K clusters (table rows), C classes (table columns), N samples.
 * Not here: computing assignments (train_evaluate in train.h) or the scores
 * themselves (metrics.h); this module only lays them out.
 */
#ifndef ECL_EVAL_REPORT_H
#define ECL_EVAL_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "ecl/data.h"
#include "ecl/train.h"

/* Clusters against classes. Empty clusters are rows too; samples with a
 * negative (unknown) label are left out. */
typedef struct {
    int k;                  /* K rows */
    int n_classes;          /* C distinct labels >= 0; 0 when unlabelled */
    int32_t *class_label;   /* [C] label value of each column, ascending */
    int64_t *count;         /* [K, C] samples of cluster r in class class_label[c] */
    int *match;             /* [K] column matched to cluster r (Hungarian), or -1 */
    int *order;             /* [K] display order: matched clusters by their column,
                               then unmatched ones by size, largest first */
    int64_t n_labelled;     /* samples with a label >= 0 */
    int64_t n_matched;      /* of those, in a matched cell: ACC = n_matched / n_labelled */
    int n_unmatched;        /* clusters with match -1 (overclustering: K > C) */
} confusion;

/* Where the scored assignments came from, for eval.json and the summary. */
typedef struct {
    const char *checkpoint;  /* the file scored */
    int64_t global_step;     /* of the checkpoint; -1 when it does not say */
    int head, n_heads;       /* head scored, of how many */
    const char *data_path;   /* data.path */
    const char *labels_path; /* data.labels ("" for none or for a folder) */
    const float *mean, *std; /* [channels] normalisation used */
    int channels;
} eval_source;

/* Counts clusters [N] (each in 0..k-1) against labels [N] and matches them
 * one-to-one (metrics_hungarian_max). Free with confusion_free(). */
void confusion_build(confusion *cm, const int32_t *labels, const int32_t *clusters,
                     int64_t n, int k);
void confusion_free(confusion *cm);

/* The name of column c: class_names[label] when the data set has names,
 * otherwise the label's number. Points into names or into buf. */
const char *confusion_class_name(const confusion *cm, int c, char *const *class_names,
                                 int n_names, char *buf, size_t size);

/* Writes the table as aligned text: '#' comment lines, one header line
 * ("cluster match size <class names>"), then exactly K rows in cm->order.
 * Atomically (fileio.h). 0, or -1 with ecl_last_error(). */
int confusion_write_text(const confusion *cm, char *const *class_names, int n_names,
                         const char *path);

/* Writes the table as an RGB heat-map PNG, rows = clusters in cm->order,
 * columns = classes: each cell a square of cell_px pixels shaded from white
 * (0) to dark blue (the largest count), with a 1-pixel grey grid around
 * cells when cell_px >= 3. cell_px <= 0 picks one from the table size.
 * Atomically. 0, or -1 with ecl_last_error(). */
int confusion_write_png(const confusion *cm, int cell_px, const char *path);
/* The cell size confusion_write_png picks for cell_px <= 0. */
int confusion_png_cell_px(const confusion *cm);

/* Writes "index,name,cluster,confidence,label" rows, one per sample, in the
 * trainer's assignments.csv format (names quoted only when they hold a comma
 * or a quote). Atomically. 0 or -1. */
int eval_write_assignments(const char *path, const eval_result *r, const dataset *ds);

/* Writes eval.json: sizes and confidence always; with labels ACC (Hungarian,
 * one-to-one), acc_majority (many-to-one), NMI and ARI. Atomically. 0 or -1. */
int eval_write_json(const char *path, const eval_result *r, const confusion *cm,
                    const dataset *ds, const eval_source *src);

/* The short human summary (stdout usually). */
void eval_print_summary(FILE *f, const eval_result *r, const confusion *cm,
                        const dataset *ds, const eval_source *src);

#endif
