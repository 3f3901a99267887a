/*
 * check_fork.h - for tests of fatal errors: runs a function in a forked
 * child whose stderr is captured; the child must stop with status 1 and
 * print a message containing `want`. Call it before any OpenMP team
 * exists, so the fork is safe. Needs POSIX (define _POSIX_C_SOURCE).
 */
#ifndef ECL_TEST_CHECK_FORK_H
#define ECL_TEST_CHECK_FORK_H

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

typedef void (*child_fn)(void *ctx);

static inline void check_child_fails(const char *what, child_fn fn, void *ctx,
                                     const char *want)
{
    int fd[2];
    CHECK(pipe(fd) == 0, "%s: pipe failed", what);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn(ctx);
        _exit(0);
    }

    /* Collect what the child said, then its verdict. */
    close(fd[1]);
    char msg[1024] = {0};
    size_t got = 0;
    ssize_t m;
    while (got < sizeof msg - 1 && (m = read(fd[0], msg + got, sizeof msg - 1 - got)) > 0)
        got += (size_t)m;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s: child status %d", what,
          status);
    CHECK(strstr(msg, want) != NULL, "%s: message '%s' lacks '%s'", what, msg, want);
}

#endif
