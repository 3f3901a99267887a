/*
 * main_train.c - ecl-train: train a clustering network from a config file.
 *
 *   ecl-train CONFIG.ini [--section.key=value ...]
 */
#include "ecl/config.h"
#include "ecl/core.h"
#include "ecl/train.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: ecl-train CONFIG.ini [--section.key=value ...]\n"
               "       ecl-train --help | --version\n\n"
               "Trains a clustering network; any config key can be overridden.\n"
               "Keys, defaults and meanings:\n\n");
}

int main(int argc, char **argv)
{
    config cfg;
    config_defaults(&cfg);
    const char *config_path = NULL;

    /* Flags first: help and version answer at once. */
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
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) {
            if (config_path) {
                fprintf(stderr, "ecl-train: two config files given (%s and %s); pass one, "
                        "and override keys with --section.key=value\n", config_path, argv[i]);
                return 2;
            }
            config_path = argv[i];
            if (config_load_file(&cfg, config_path) != 0) {
                fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
                return 2;
            }
        }
    }
    if (!config_path) {
        usage(stderr);
        fprintf(stderr, "ecl-train: no config file given (see configs/)\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0 && config_apply_override(&cfg, argv[i]) != 0) {
            fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
            return 2;
        }
    }
    if (config_validate(&cfg) != 0) {
        fprintf(stderr, "ecl-train: %s\n", ecl_last_error());
        return 2;
    }
    ecl_log_set_level(cfg.run.quiet ? 0 : 1);
    return train_run(&cfg);
}
