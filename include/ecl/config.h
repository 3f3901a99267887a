/*
 * config.h - the run configuration: INI files ([data] [model] [loss] [em]
 * [optim] [augment] [run]) plus `--section.key=value` overrides.
 *
 * One table (config.c) lists every key with its type, default, allowed
 * range or choices and a one-line help; parsing, validation, the printed
 * table, the saved file and --help all come from it. Unknown sections, keys
 * and values are errors that name them.
 */
#ifndef ECL_CONFIG_H
#define ECL_CONFIG_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    struct {
        char format[16];    /* idx | folder */
        char path[1024];    /* IDX images file, or image folder */
        char labels[1024];  /* IDX labels file; empty = unlabelled */
        int64_t limit;      /* first N samples only; 0 = all */
        int channels;       /* 1 or 3 */
        int height, width;  /* folder images; 0 = from the first image */
    } data;
    struct {
        char name[32];      /* vgg4 */
        int clusters;       /* K */
        int heads;          /* H clustering heads on one backbone */
        int width;          /* channels of the first block (64 in the paper) */
        int head_bn;        /* parameter-free batch norm before the head */
        float logit_scale;  /* logits multiplied by this (0.5 = halved) */
    } model;
    struct {
        char method[16];    /* ecl */
        float lambda;       /* strong fairness weight */
        float gamma;        /* head-norm (margin) weight, ||W||^2, bias excluded */
        float alpha;        /* self-augmentation weight */
        char aug_form[16];  /* kl | sym_kl | ce | dot */
        float forward_ce;   /* weight of H(y, sigma); 0 = the paper's loss */
        float y_eps;        /* floor on y before log */
    } loss;
    struct {
        int max_iter;
        float tol;
        int warm_start;     /* start from the sample's previous y */
        char solver[16];    /* em | em_accel | dual | newton | newton_dense (solvers.h) */
    } em;
    struct {
        char name[16];      /* adam | sgd */
        float lr;
        float beta1, beta2, eps;
        float weight_decay; /* decoupled (AdamW form), not on the head W */
        float momentum;     /* sgd */
        char schedule[16];  /* cosine | constant */
        float warmup_epochs;
    } optim;
    struct {
        int views;          /* augmented copies per image */
        float translate;    /* pixels */
        float rotate;       /* degrees */
        float scale;
        int hflip;
        float jitter;
        int workers;
    } augment;
    struct {
        uint64_t seed;
        int epochs;
        int batch;
        int threads;        /* 0 = all cores */
        char out[1024];     /* run folder */
        int log_every;      /* steps between progress lines */
        char device[16];    /* cpu | auto | cuda */
        char precision[8];  /* fp32 | tf32 (GPU matmuls) */
        int quiet;          /* 1: warnings and errors only on stderr */
        int eval_every;     /* epochs between full-data scoring; 0 = end only */
        int kmeans_baseline;/* 1: score K-means on raw pixels too */
        int checkpoint_every; /* steps between checkpoints; 0 = at each epoch's end */
        int keep_checkpoints; /* newest checkpoints kept in the run folder */
        char nan_policy[16];  /* stop | skip */
        float collapse_entropy; /* warn below this fraction of log K */
    } run;
} config;

/* Fills every field with its default. */
void config_defaults(config *cfg);
/* Reads an INI file over the current values. 0, or -1 with ecl_last_error()
 * naming the file, line, section and key. */
int config_load_file(config *cfg, const char *path);
/* Reads INI text (e.g. a checkpoint's stored config) over the current values,
 * with the same rules as config_load_file; messages name `origin` as the file.
 * 0, or -1 with ecl_last_error() (cfg then unchanged). */
int config_load_string(config *cfg, const char *ini_text, const char *origin);
/* Applies one "--section.key=value" (or "section.key=value"). 0 or -1. */
int config_set(config *cfg, const char *section_dot_key, const char *value);
int config_apply_override(config *cfg, const char *arg);
/* Cross-field checks (e.g. clusters >= 2, batch >= clusters). 0 or -1. */
int config_validate(const config *cfg);
/* Writes the resolved config as a two-column table (to stderr usually). */
void config_print_table(const config *cfg, FILE *f);
/* Writes the resolved config as an INI file that config_load_file reads. */
int config_write_ini(const config *cfg, FILE *f);
/* Prints every key, its default and its help (for --help). */
void config_print_help(FILE *f);
/* A 64-bit fingerprint of every value (FNV-1a over the INI text). */
uint64_t config_fingerprint(const config *cfg);

#endif
