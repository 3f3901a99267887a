/*
 * core.c - errors, checked allocation, logging and the clock (see core.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local char last_error[1024] = "no error";
static int log_level = 1;

noreturn void ecl_fatal_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "ecl: error at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

int ecl_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *ecl_last_error(void)
{
    return last_error;
}

void *ecl_malloc_at(size_t n_bytes, const char *file, int line)
{
    /* malloc(0) may return NULL legitimately; ask for one byte instead. */
    void *p = malloc(n_bytes ? n_bytes : 1);
    if (!p)
        ecl_fatal_at(file, line, "out of memory allocating %zu bytes", n_bytes);
    return p;
}

void *ecl_calloc_at(size_t n_items, size_t item_bytes, const char *file, int line)
{
    void *p = calloc(n_items ? n_items : 1, item_bytes ? item_bytes : 1);
    if (!p)
        ecl_fatal_at(file, line, "out of memory allocating %zu x %zu bytes",
                     n_items, item_bytes);
    return p;
}

void *ecl_realloc_at(void *p, size_t n_bytes, const char *file, int line)
{
    void *q = realloc(p, n_bytes ? n_bytes : 1);
    if (!q)
        ecl_fatal_at(file, line, "out of memory reallocating to %zu bytes", n_bytes);
    return q;
}

char *ecl_strdup_at(const char *s, const char *file, int line)
{
    size_t n = strlen(s) + 1;
    char *d = ecl_malloc_at(n, file, line);
    memcpy(d, s, n);
    return d;
}

void ecl_log_set_level(int level)
{
    log_level = level;
}

int ecl_log_level(void)
{
    return log_level;
}

static void log_line(const char *tag, const char *fmt, va_list ap)
{
    fputs(tag, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void ecl_log_info(const char *fmt, ...)
{
    if (log_level < 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line("", fmt, ap);
    va_end(ap);
}

void ecl_log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line("ecl: warning: ", fmt, ap);
    va_end(ap);
}

double ecl_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
