/*
 * fileio.c - atomic file writes and mkdir -p (see fileio.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/fileio.h"
#include "ecl/core.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int atomic_open(atomic_file *a, const char *path)
{
    memset(a, 0, sizeof *a);
    if (strlen(path) >= sizeof a->path)
        return ecl_set_error("%s: path too long (%zu characters)", path, strlen(path));
    snprintf(a->path, sizeof a->path, "%s", path);
    snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid());
    a->f = fopen(a->tmp, "wb");
    if (!a->f)
        return ecl_set_error("cannot create %s: %s (is the run folder writable?)", a->tmp,
                             strerror(errno));
    return 0;
}

int atomic_commit(atomic_file *a)
{
    /* Any failed write (a full disk, say) shows in ferror or fflush. */
    int bad = ferror(a->f) || fflush(a->f) != 0 || fsync(fileno(a->f)) != 0;
    int err = errno;
    bad |= fclose(a->f) != 0;
    a->f = NULL;
    if (bad) {
        remove(a->tmp);
        return ecl_set_error("writing %s failed: %s (disk full?); the previous %s, if any, "
                             "is untouched", a->tmp, strerror(err ? err : EIO), a->path);
    }
    if (rename(a->tmp, a->path) != 0) {
        err = errno;
        remove(a->tmp);
        return ecl_set_error("cannot rename %s to %s: %s", a->tmp, a->path, strerror(err));
    }
    return 0;
}

void atomic_abort(atomic_file *a)
{
    if (a->f)
        fclose(a->f);
    a->f = NULL;
    remove(a->tmp);
}

void json_write_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

int make_dirs(const char *path)
{
    char buf[1100];
    if (strlen(path) >= sizeof buf)
        return ecl_set_error("%s: path too long", path);
    snprintf(buf, sizeof buf, "%s", path);

    /* Create each prefix in turn; existing directories are fine. */
    for (char *p = buf + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char keep = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(buf, 0775) != 0 && errno != EEXIST)
            return ecl_set_error("cannot create directory %s: %s", buf, strerror(errno));
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
            return ecl_set_error("%s exists and is not a directory", buf);
        *p = keep;
        if (keep == '\0')
            break;
    }
    return 0;
}
