/*
 * fileio.h - files that matter are written whole or not at all: write to
 * "<path>.tmp.<pid>", flush, fsync, close, then rename over the real name.
 * A crash or a full disk never leaves a half file under the final name.
 */
#ifndef ECL_FILEIO_H
#define ECL_FILEIO_H

#include <stdio.h>

typedef struct {
    FILE *f;
    char path[1100];
    char tmp[1200];
} atomic_file;

/* Opens the temporary file. 0, or -1 with ecl_last_error(). */
int atomic_open(atomic_file *a, const char *path);
/* Checks every write, syncs, renames into place. 0 or -1 (temp removed). */
int atomic_commit(atomic_file *a);
/* Gives up: closes and removes the temporary file. */
void atomic_abort(atomic_file *a);

/* Writes s as a JSON string literal: quotes, backslashes and control
 * bytes escaped. */
void json_write_string(FILE *f, const char *s);

/* mkdir -p. 0, or -1 with ecl_last_error() naming the part that failed. */
int make_dirs(const char *path);

#endif
