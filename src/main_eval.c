/*
 * main_eval.c - ecl-eval: score a trained run or one of its checkpoints.
 *
 *   ecl-eval RUN_DIR|CKPT [--section.key=value ...] [--out DIR] [--head N]
 *
 * A run folder stands for its newest checkpoint. The config is the one the
 * checkpoint stores (the whole resolved INI text of the run), then the
 * command-line overrides: data.* to score other data, run.* for threads,
 * batch or quiet. model.* keys are fixed by the checkpoint and may not
 * change. Images are normalised with per-channel mean and std computed
 * from the data being scored, exactly as the trainer computes them from
 * its training data, so the same checkpoint on the same data gives the
 * trainer's own assignments bit for bit.
 *
 * Writes eval.json, eval_assignments.csv and, with labels, confusion.txt
 * and confusion.png (eval_report.h) into --out (default: the run folder).
 * Not here: CUDA, multi-process evaluation, image-size checks against the
 * training data (the checkpoint does not record the training image size).
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/checkpoint.h"
#include "ecl/config.h"
#include "ecl/core.h"
#include "ecl/data.h"
#include "ecl/eval_report.h"
#include "ecl/fileio.h"
#include "ecl/model.h"
#include "ecl/safetensors.h"
#include "ecl/train.h"

#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EVAL_PATH_BYTES 1200

/* Exit statuses: a bad command line, or a failure while evaluating. */
enum { EXIT_USAGE = 2, EXIT_FAILED = 1 };

/* ---- the command line ------------------------------------------------------ */

/* One table drives the parser's checks and --help. */
typedef struct {
    const char *name;   /* "--out" */
    const char *value;  /* what follows it, with its separator (" DIR"), or "" */
    const char *help;
} eval_option;

static const eval_option eval_options[] = {
    { "--out", " DIR", "where the outputs go (default: the run folder)" },
    { "--head", " N", "score head N (default: the head the checkpoint uses)" },
    { "--section.key", "=VALUE", "override a key of the stored config, e.g. --data.path=FILE"
                                 "\n                        --data.labels=FILE --data.limit=N "
                                 "(model.* keys are fixed)" },
    { "--help", "", "print this help" },
    { "--version", "", "print the version" },
};
#define N_OPTIONS ((int)(sizeof eval_options / sizeof eval_options[0]))

typedef struct {
    const char *target;        /* RUN_DIR or CKPT as given */
    const char *out;           /* --out, or NULL */
    int head;                  /* --head, or -1 */
    const char **overrides;    /* [n_overrides] "--section.key=value" */
    int n_overrides;
} eval_args;

static void eval_usage(FILE *f)
{
    fprintf(f, "usage: ecl-eval RUN_DIR|CHECKPOINT [--section.key=value ...] [--out DIR] "
               "[--head N]\n\n"
               "Scores a checkpoint of ecl-train (a run folder means its newest one) on the\n"
               "data of its stored config, or on other data given by overrides, and\n"
               "writes eval.json, eval_assignments.csv, confusion.txt and confusion.png.\n\n");
    for (int i = 0; i < N_OPTIONS; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s", eval_options[i].name, eval_options[i].value);
        fprintf(f, "  %-21s %s\n", left, eval_options[i].help);
    }
}

/* The value of option `name` at argv[*i], as "--name=V" or "--name V";
 * NULL when argv[*i] is not that option. *missing is set when V is absent. */
static const char *eval_option_value(char **argv, int argc, int *i, const char *name,
                                     int *missing)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* --head's value: a whole number >= 0. */
static int eval_parse_head(const char *text, int *head)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!text[0] || *end != '\0' || errno || v < 0 || v >= MODEL_MAX_HEADS)
        return ecl_set_error("--head %s: expected a head number from 0 to %d", text,
                             MODEL_MAX_HEADS - 1);
    *head = (int)v;
    return 0;
}

/* One argument that is neither --out nor --head: an override or the target. */
static int eval_parse_other(eval_args *a, const char *arg)
{
    if (strncmp(arg, "--", 2) == 0) {
        if (!strchr(arg, '=') || !strchr(arg, '.'))
            return ecl_set_error("unknown option %s: expected --out DIR, --head N or a "
                                 "config override --section.key=value", arg);
        a->overrides[a->n_overrides++] = arg;
        return 0;
    }
    if (a->target)
        return ecl_set_error("two checkpoints given (%s and %s): pass one run folder or "
                             "checkpoint file", a->target, arg);
    a->target = arg;
    return 0;
}

/* 0, or -1 with the error set. */
static int eval_parse_args(int argc, char **argv, eval_args *a)
{
    memset(a, 0, sizeof *a);
    a->head = -1;
    a->overrides = ecl_calloc((size_t)argc, sizeof *a->overrides);
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *v;
        if ((v = eval_option_value(argv, argc, &i, "--out", &missing)) != NULL) {
            a->out = v;
        } else if ((v = eval_option_value(argv, argc, &i, "--head", &missing)) != NULL) {
            if (eval_parse_head(v, &a->head) != 0)
                return -1;
        } else if (missing) {
            return ecl_set_error("%s needs a value, e.g. %s 1", argv[i], argv[i]);
        } else if (eval_parse_other(a, argv[i]) != 0) {
            return -1;
        }
    }
    if (!a->target)
        return ecl_set_error("no run folder or checkpoint given");
    return 0;
}

/* ---- which checkpoint -------------------------------------------------------- */

/* The folder part of a file path ("." when it has none). */
static void eval_dirname(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(buf, size, ".");
    else if (slash == path)
        snprintf(buf, size, "/");
    else
        snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

/* The checkpoint file target names, and the run folder it lies in. 0 or -1. */
static int eval_resolve(const char *target, char *ckpt, char *run_dir)
{
    struct stat sb;
    if (stat(target, &sb) != 0)
        return ecl_set_error("%s: %s; pass a run folder written by ecl-train (its run.out) "
                             "or one of its ckpt-<step>.safetensors files", target,
                             strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(ckpt, EVAL_PATH_BYTES, "%s", target);
        eval_dirname(target, run_dir, EVAL_PATH_BYTES);
        return 0;
    }

    /* A folder: its newest checkpoint, or a hint on how to get one. */
    int found = checkpoint_find_latest(target, ckpt, EVAL_PATH_BYTES);
    if (found < 0)
        return -1;
    if (found == 0)
        return ecl_set_error("%s holds no checkpoint (ckpt-<step>.safetensors): ecl-train "
                             "writes one into its run folder at the end of each epoch; "
                             "train first, e.g. `build/ecl-train configs/mnist_vgg4.ini "
                             "--run.out=%s`, or pass a checkpoint file", target, target);
    snprintf(run_dir, EVAL_PATH_BYTES, "%s", target);
    return 0;
}

/* ---- what the checkpoint says about itself ------------------------------------ */

typedef struct {
    char *config_text;     /* the stored INI text (malloc'd) */
    int64_t global_step;   /* -1 when absent */
    int best_head;         /* 0 when absent */
} ckpt_info;

/* A metadata integer >= 0, or fallback when absent or not a number. */
static int64_t eval_meta_int(const st_file *f, const char *key, int64_t fallback)
{
    const char *v = st_meta(f, key);
    char *end = NULL;
    long long x = v ? strtoll(v, &end, 10) : -1;
    return v && v[0] && *end == '\0' && x >= 0 ? (int64_t)x : fallback;
}

/* Reads the file's metadata: format, stored config, step and head. 0 or -1. */
static int eval_read_info(const char *path, ckpt_info *info)
{
    st_file f;
    if (st_read(path, &f) != 0)
        return -1;
    const char *fmt = st_meta(&f, "format"), *text = st_meta(&f, "config");
    int rc = 0;
    if (!fmt || strcmp(fmt, CHECKPOINT_FORMAT) != 0)
        rc = ecl_set_error("%s: not an ecl checkpoint (metadata \"format\" is %s, expected "
                           "\"%s\")", path, fmt ? fmt : "missing", CHECKPOINT_FORMAT);
    else if (!text)
        rc = ecl_set_error("%s: metadata \"config\" is missing, so the run's config is "
                           "unknown; was the file written by ecl-train?", path);
    if (rc == 0) {
        info->config_text = ecl_strdup(text);
        info->global_step = eval_meta_int(&f, "global_step", -1);
        info->best_head = (int)eval_meta_int(&f, "best_head", 0);
    }
    st_free(&f);
    return rc;
}

/* ---- the config: stored, then overrides ---------------------------------------- */

/* The resolved config as INI text (malloc'd), or NULL with the error set. */
static char *eval_ini_text(const config *cfg)
{
    char *text = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&text, &n);
    ECL_CHECK(mem != NULL, "open_memstream failed: %s", strerror(errno));
    int rc = config_write_ini(cfg, mem);
    ECL_CHECK(fclose(mem) == 0, "writing the config to memory failed");
    if (rc != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Appends to a "; "-separated list of `size` bytes, cut when full. */
static void eval_list_add(char *list, size_t size, const char *item)
{
    size_t used = strlen(list);
    const char *parts[2] = { used ? "; " : "", item };
    for (int p = 0; p < 2; p++)
        for (const char *s = parts[p]; *s && used + 1 < size; s++)
            list[used++] = *s;
    list[used] = '\0';
}

/* One differing "key = value" line pair under [section] into the right list. */
static void eval_diff_line(const char *section, const char *was, const char *now,
                           char *fixed, char *free_keys, size_t size)
{
    /* Both lines come from config_write_ini: "key = value" or "key =". */
    const char *eq = strchr(now, '=');
    int key_n = eq ? (int)(eq - now) - 1 : (int)strlen(now);
    const char *v_now = eq ? eq + 1 + (eq[1] == ' ') : "";
    const char *v_was = strchr(was, '=') ? strchr(was, '=') + 1 : "";
    v_was += *v_was == ' ';
    char item[2600];
    snprintf(item, sizeof item, "%s.%.*s = \"%s\" (checkpoint: \"%s\")", section, key_n, now,
             v_now, v_was);

    /* The network and its input channels are fixed by the checkpoint. */
    int fixed_key = strcmp(section, "model") == 0 ||
                    (strcmp(section, "data") == 0 && strncmp(now, "channels ", 9) == 0);
    eval_list_add(fixed_key ? fixed : free_keys, size, item);
}

/* Compares stored and cfg key by key: model.* and data.channels differences
 * are refused; the others are listed as information. 0 or -1. */
static int eval_check_differences(const config *stored, const config *cfg)
{
    char *a = eval_ini_text(stored), *b = eval_ini_text(cfg);
    char fixed[2048] = "", free_keys[2048] = "", section[64] = "";
    int rc = a && b ? 0 : -1;

    /* Same writer, same key table: the two texts align line by line. */
    char *save_a = NULL, *save_b = NULL;
    char *la = rc == 0 ? strtok_r(a, "\n", &save_a) : NULL;
    char *lb = rc == 0 ? strtok_r(b, "\n", &save_b) : NULL;
    for (; la && lb; la = strtok_r(NULL, "\n", &save_a), lb = strtok_r(NULL, "\n", &save_b)) {
        if (lb[0] == '[')
            snprintf(section, sizeof section, "%.*s", (int)strcspn(lb + 1, "]"), lb + 1);
        else if (lb[0] != ';' && strcmp(la, lb) != 0)
            eval_diff_line(section, la, lb, fixed, free_keys, sizeof fixed);
    }
    free(a);
    free(b);
    if (rc == 0 && fixed[0])
        return ecl_set_error("the checkpoint fixes the network, so these keys cannot change "
                             "at evaluation: %s; drop those overrides (to evaluate another "
                             "model, train it with ecl-train)", fixed);
    if (rc == 0 && free_keys[0])
        ecl_log_info("evaluating with keys that differ from the checkpoint's config: %s",
                     free_keys);
    return rc;
}

/* 1 when one of the overrides sets `dotted` (e.g. "data.labels"). */
static int eval_overrides_key(const eval_args *a, const char *dotted)
{
    size_t n = strlen(dotted);
    for (int i = 0; i < a->n_overrides; i++) {
        const char *o = a->overrides[i] + 2;
        if (strncmp(o, dotted, n) == 0 && o[n] == '=')
            return 1;
    }
    return 0;
}

/* The stored config, then the overrides, then the checks. 0 or -1. */
static int eval_build_config(const ckpt_info *info, const char *ckpt, const eval_args *a,
                             config *stored, config *cfg)
{
    char origin[EVAL_PATH_BYTES + 32];
    snprintf(origin, sizeof origin, "%s (stored config)", ckpt);
    config_defaults(stored);
    if (config_load_string(stored, info->config_text, origin) != 0)
        return -1;
    *cfg = *stored;
    for (int i = 0; i < a->n_overrides; i++)
        if (config_apply_override(cfg, a->overrides[i]) != 0)
            return -1;

    /* Other images with the training labels would be scored against the
     * wrong truth: new data without --data.labels is unlabelled. */
    int new_data = strcmp(cfg->data.path, stored->data.path) != 0 ||
                   strcmp(cfg->data.format, stored->data.format) != 0;
    if (new_data && cfg->data.labels[0] && !eval_overrides_key(a, "data.labels")) {
        ecl_log_info("data.labels cleared: the data changed and no --data.labels was given "
                     "(the checkpoint's %s belongs to its training data); pass "
                     "--data.labels=FILE to score", cfg->data.labels);
        cfg->data.labels[0] = '\0';
    }
    if (config_validate(cfg) != 0)
        return -1;
    return eval_check_differences(stored, cfg);
}

/* ---- evaluating and writing ------------------------------------------------------ */

/* Builds the model for ds and loads the checkpoint into it. 0 or -1. */
static int eval_load_model(const char *ckpt, const config *stored, const dataset *ds,
                           model *net)
{
    /* The stored config is the one the file was saved with: no spurious
     * differences. allow = 1 only lets version drift in keys through with a
     * warning; the shape checks still refuse any other network. */
    model_init(net, stored, ds->c, ds->h, ds->w, stored->run.seed);
    if (checkpoint_load(ckpt, net, NULL, NULL, stored, 1) != 0) {
        model_free(net);
        return -1;
    }
    return 0;
}

/* The head to score: --head, else the checkpoint's. 0 or -1. */
static int eval_pick_head(const eval_args *a, const ckpt_info *info, const model *net,
                          int *head)
{
    *head = a->head >= 0 ? a->head : info->best_head;
    if (*head >= net->n_heads)
        return ecl_set_error("%s %d: the model has %d head(s), numbered 0 to %d",
                             a->head >= 0 ? "--head" : "the checkpoint's best_head is",
                             *head, net->n_heads, net->n_heads - 1);
    return 0;
}

/* Removes a file of an earlier evaluation that no longer matches. */
static void eval_remove_stale(const char *dir, const char *name)
{
    char path[EVAL_PATH_BYTES + 32];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (access(path, F_OK) == 0 && remove(path) == 0)
        ecl_log_info("removed %s of an earlier evaluation: this data has no labels", path);
}

/* Every output file into dir. 0 or -1. */
static int eval_write_outputs(const char *dir, const eval_result *r, const confusion *cm,
                              const dataset *ds, const eval_source *src)
{
    char path[EVAL_PATH_BYTES + 32];
    if (make_dirs(dir) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/eval_assignments.csv", dir);
    if (eval_write_assignments(path, r, ds) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/eval.json", dir);
    if (eval_write_json(path, r, cm, ds, src) != 0)
        return -1;

    /* The table needs labels; without them, earlier tables would mislead. */
    if (!r->labelled) {
        eval_remove_stale(dir, "confusion.txt");
        eval_remove_stale(dir, "confusion.png");
        return 0;
    }
    snprintf(path, sizeof path, "%s/confusion.txt", dir);
    if (confusion_write_text(cm, ds->class_names, ds->n_classes, path) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/confusion.png", dir);
    return confusion_write_png(cm, 0, path);
}

/* A data reader's refusal, with a hint when a relative path may be the cause. */
static int eval_data_error(const config *cfg)
{
    char why[2048];
    snprintf(why, sizeof why, "%s", ecl_last_error());
    if (cfg->data.path[0] == '/')
        return ecl_set_error("%s", why);
    return ecl_set_error("%s (relative data paths in a stored config are relative to the "
                         "folder ecl-train ran in: run ecl-eval from there, or pass "
                         "--data.path=... and --data.labels=...)", why);
}

/* Data, model, the pass, the files and the summary. 0 or -1. */
static int eval_run(const char *ckpt, const char *out_dir, const ckpt_info *info,
                    const eval_args *a, const config *stored, const config *cfg)
{
    dataset ds = { 0 };
    model net;
    if (train_load_dataset(cfg, &ds) != 0)
        return eval_data_error(cfg);
    if (ds.n == 0) {
        dataset_free(&ds);
        return ecl_set_error("%s: no images to score", cfg->data.path);
    }
    if (eval_load_model(ckpt, stored, &ds, &net) != 0) {
        dataset_free(&ds);
        return -1;
    }

    /* Normalisation from the scored data, as the trainer does from its data;
     * the trainer's batch, so the GEMMs see the same shapes. */
    float mean[3], std[3];
    int head;
    int rc = eval_pick_head(a, info, &net, &head);
    if (rc == 0) {
        dataset_channel_stats(&ds, mean, std);
        eval_result r[MODEL_MAX_HEADS];
        train_evaluate(&net, &ds, mean, std, (int64_t)cfg->run.batch *
                       (cfg->augment.views + 1), r);
        confusion cm;
        confusion_build(&cm, ds.labels, r[head].cluster, ds.n, r[head].k);
        eval_source src = { ckpt, info->global_step, head, net.n_heads, cfg->data.path,
                            cfg->data.labels, mean, std, ds.c };
        rc = eval_write_outputs(out_dir, &r[head], &cm, &ds, &src);
        if (rc == 0) {
            eval_print_summary(stdout, &r[head], &cm, &ds, &src);
            printf("outputs:    %s/{eval.json,eval_assignments.csv%s}\n", out_dir,
                   r[head].labelled ? ",confusion.txt,confusion.png" : "");
        }
        confusion_free(&cm);
        for (int hd = 0; hd < net.n_heads; hd++)
            eval_result_free(&r[hd]);
    }
    model_free(&net);
    dataset_free(&ds);
    return rc;
}

int main(int argc, char **argv)
{
    /* Help and version answer at once. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            eval_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("ecl-eval %s\n", ECL_VERSION);
            return 0;
        }
    }
    eval_args a;
    if (eval_parse_args(argc, argv, &a) != 0) {
        eval_usage(stderr);
        fprintf(stderr, "ecl-eval: %s\n", ecl_last_error());
        free(a.overrides);
        return EXIT_USAGE;
    }

    /* Which file, what it says, and the config to evaluate with. */
    char ckpt[EVAL_PATH_BYTES], run_dir[EVAL_PATH_BYTES];
    ckpt_info info = { NULL, -1, 0 };
    config stored, cfg;
    int rc = eval_resolve(a.target, ckpt, run_dir);
    if (rc == 0)
        rc = eval_read_info(ckpt, &info);
    if (rc == 0)
        rc = eval_build_config(&info, ckpt, &a, &stored, &cfg);

    /* Then the work, under the run's logging and thread settings. */
    if (rc == 0) {
        ecl_log_set_level(cfg.run.quiet ? 0 : 1);
        if (cfg.run.threads > 0)
            omp_set_num_threads(cfg.run.threads);
        ecl_log_info("ecl-eval: scoring %s", ckpt);
        rc = eval_run(ckpt, a.out ? a.out : run_dir, &info, &a, &stored, &cfg);
    }
    if (rc != 0)
        fprintf(stderr, "ecl-eval: %s\n", ecl_last_error());
    free(info.config_text);
    free(a.overrides);
    return rc == 0 ? 0 : EXIT_FAILED;
}
