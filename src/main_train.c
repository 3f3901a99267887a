/*
 * main_train.c - ecl-train: train a clustering network from a config file,
 * or resume a run from its checkpoint.
 *
 *   ecl-train CONFIG.ini [--section.key=value ...]
 *   ecl-train --resume RUN_DIR|CKPT [CONFIG.ini] [--section.key=value ...]
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/checkpoint.h"
#include "ecl/config.h"
#include "ecl/core.h"
#include "ecl/train.h"

#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    const char *config_path;
    const char *resume;         /* run folder or checkpoint file */
    int allow_config_change;
    char resume_ckpt[1100];     /* the checkpoint file resume resolves to */
    char resume_config[1100];   /* the run's config.ini when no CONFIG is given */
    char resume_dir[1024];      /* the run folder resumed: run.out unless overridden */
} train_args;

static void usage(FILE *f)
{
    fprintf(f, "usage: ecl-train CONFIG.ini [--section.key=value ...]\n"
               "       ecl-train --resume RUN_DIR|CKPT [CONFIG.ini] [--section.key=value ...]\n"
               "       ecl-train --help | --version\n\n"
               "Trains a clustering network; any config key can be overridden.\n"
               "  --resume PATH          continue a run from its newest checkpoint (a run\n"
               "                         folder) or from one checkpoint file; the run's\n"
               "                         config.ini is used unless CONFIG.ini is given\n"
               "  " CHECKPOINT_MISMATCH_FLAG "  resume although the config differs\n"
               "  --device cpu|auto|cuda  where to train (run.device); auto takes a GPU\n"
               "                         when one is usable\n\n"
               "Keys, defaults and meanings:\n\n");
}

/* Finds the checkpoint and the config a --resume names. 0 or -1. */
static int resolve_resume(train_args *a)
{
    struct stat sb;
    if (stat(a->resume, &sb) != 0)
        return ecl_set_error("--resume %s: no such file or folder", a->resume);
    char *dir = a->resume_dir;
    size_t n_dir = sizeof a->resume_dir;
    if (S_ISDIR(sb.st_mode)) {
        int found = checkpoint_find_latest(a->resume, a->resume_ckpt, sizeof a->resume_ckpt);
        if (found < 0)
            return -1;
        if (found == 0)
            return ecl_set_error("--resume %s: the folder holds no ckpt-*.safetensors; "
                                 "ecl-train writes one at the end of every epoch", a->resume);
        snprintf(dir, n_dir, "%s", a->resume);
    } else {
        snprintf(a->resume_ckpt, sizeof a->resume_ckpt, "%s", a->resume);
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s", a->resume);
        snprintf(dir, n_dir, "%s", dirname(tmp));
    }
    snprintf(a->resume_config, sizeof a->resume_config, "%s/config.ini", dir);
    return 0;
}

/* Positional config path and the flags that are not config keys. 0 or -1. */
static int parse_args(int argc, char **argv, train_args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--resume") == 0) {
            if (i + 1 >= argc)
                return ecl_set_error("--resume needs a run folder or checkpoint file");
            a->resume = argv[++i];
        } else if (strncmp(argv[i], "--resume=", 9) == 0) {
            a->resume = argv[i] + 9;
        } else if (strcmp(argv[i], "--device") == 0) {
            /* Applied in order with the overrides (main). */
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)
                return ecl_set_error("--device needs cpu, auto or cuda");
            i++;
        } else if (strcmp(argv[i], CHECKPOINT_MISMATCH_FLAG) == 0) {
            a->allow_config_change = 1;
        } else if (strncmp(argv[i], "--", 2) != 0) {
            if (a->config_path)
                return ecl_set_error("two config files given (%s and %s); pass one, and "
                                     "override keys with --section.key=value",
                                     a->config_path, argv[i]);
            a->config_path = argv[i];
        }
    }
    if (a->resume && resolve_resume(a) != 0)
        return -1;
    if (!a->config_path && a->resume)
        a->config_path = a->resume_config;
    if (!a->config_path)
        return ecl_set_error("no config file given (see configs/)");
    return 0;
}

static int is_cli_flag(const char *arg)
{
    return strcmp(arg, "--resume") == 0 || strncmp(arg, "--resume=", 9) == 0 ||
           strcmp(arg, "--device") == 0 || strncmp(arg, "--device=", 9) == 0 ||
           strcmp(arg, CHECKPOINT_MISMATCH_FLAG) == 0;
}

int main(int argc, char **argv)
{
    /* Help and version answer at once. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            config_print_help(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("ecl-train %s\n", ECL_VERSION);
            return 0;
        }
    }

    /* The config file, then the overrides in order, then the cross-checks. */
    train_args a;
    config cfg;
    config_defaults(&cfg);
    if (parse_args(argc, argv, &a) != 0 || config_load_file(&cfg, a.config_path) != 0 ||
        (a.resume && config_set(&cfg, "run.out", a.resume_dir) != 0)) {
        fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--resume") == 0) {
            i++;
            continue;
        }
        /* --device X and --device=X are run.device, in order with the rest. */
        const char *device = strcmp(argv[i], "--device") == 0 ? argv[++i]
                             : strncmp(argv[i], "--device=", 9) == 0 ? argv[i] + 9 : NULL;
        if (device) {
            if (config_set(&cfg, "run.device", device) != 0) {
                fprintf(stderr, "ecl-train: --device: %s\n", ecl_last_error());
                return 2;
            }
            continue;
        }
        if (strncmp(argv[i], "--", 2) != 0 || is_cli_flag(argv[i]))
            continue;
        if (config_apply_override(&cfg, argv[i]) != 0) {
            fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
            return 2;
        }
    }
    if (config_validate(&cfg) != 0) {
        fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
        return 2;
    }
    ecl_log_set_level(cfg.run.quiet ? 0 : 1);
    return train_run(&cfg, a.resume ? a.resume_ckpt : NULL, a.allow_config_change);
}
