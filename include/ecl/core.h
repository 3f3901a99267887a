/*
 * core.h - what every module of ecl leans on: fatal errors that name
 * file:line, recoverable errors with a message, checked allocation,
 * logging to stderr and a wall clock.
 *
 * Two error paths, on purpose:
 *   - ECL_FATAL / ECL_CHECK stop the process: programming errors and failed
 *     library calls, where nothing sensible can continue.
 *   - ecl_set_error() records a message and returns -1: readers and parsers
 *     of user input use it, so a test can inspect the message and the
 *     program can print it and exit non-zero.
 */
#ifndef ECL_CORE_H
#define ECL_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

#define ECL_VERSION "0.1.0"

/* Prints "ecl: error at FILE:LINE: message" and exits with status 1. */
noreturn void ecl_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ECL_FATAL(...) ecl_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
#define ECL_CHECK(cond, ...) \
    do { if (!(cond)) ecl_fatal_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)

/* Records a message for ecl_last_error() (thread-local) and returns -1. */
int ecl_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last message set on this thread; owned by the library, never NULL. */
const char *ecl_last_error(void);

/* Checked allocation: never returns NULL (stops with file:line instead). */
void *ecl_malloc_at(size_t n_bytes, const char *file, int line);
void *ecl_calloc_at(size_t n_items, size_t item_bytes, const char *file, int line);
void *ecl_realloc_at(void *p, size_t n_bytes, const char *file, int line);
char *ecl_strdup_at(const char *s, const char *file, int line);
#define ecl_malloc(n_bytes) ecl_malloc_at((n_bytes), __FILE__, __LINE__)
#define ecl_calloc(n, item_bytes) ecl_calloc_at((n), (item_bytes), __FILE__, __LINE__)
#define ecl_realloc(p, n_bytes) ecl_realloc_at((p), (n_bytes), __FILE__, __LINE__)
#define ecl_strdup(s) ecl_strdup_at((s), __FILE__, __LINE__)

/* Logging to stderr. Level 0 quiet (warnings and errors only), 1 normal. */
void ecl_log_set_level(int level);
int ecl_log_level(void);
void ecl_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ecl_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Monotonic wall clock in seconds. */
double ecl_now_s(void);

#endif
