/*
 * check.h - the tiny test harness every C test links: CHECK records a
 * failure with file:line and goes on; check_summary() prints one line and
 * returns the exit status, so a test's exit status is its verdict.
 */
#ifndef ECL_TEST_CHECK_H
#define ECL_TEST_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_n_pass, check_n_fail;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            check_n_pass++;                                                \
        } else {                                                           \
            check_n_fail++;                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

/* |got - want| <= abs_tol + rel_tol * |want|, printing both on failure. */
#define CHECK_NEAR(got, want, abs_tol, rel_tol)                            \
    do {                                                                   \
        double g_ = (got), w_ = (want);                                    \
        CHECK(fabs(g_ - w_) <= (abs_tol) + (rel_tol) * fabs(w_),           \
              "got %.9g, want %.9g (abs err %.3g)", g_, w_, fabs(g_ - w_)); \
    } while (0)

static inline int check_summary(const char *name)
{
    printf("%s: %d checks passed, %d failed\n", name, check_n_pass, check_n_fail);
    return check_n_fail ? 1 : 0;
}

#endif
