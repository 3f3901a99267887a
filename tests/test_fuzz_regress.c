/*
 * test_fuzz_regress.c - replays the fuzzers' files through the same entry
 * points as the libFuzzer harnesses (fuzz/fuzz_entry.c), without libFuzzer:
 *   fuzz/corpus/<t>/   the seeds: each must be accepted by at least one of
 *                      the target's calls (so the fuzzers start from files
 *                      that reach past the first check);
 *   fuzz/regress/<t>/  minimised inputs the fuzzers found interesting;
 *   fuzz/crashes/<t>/  inputs that once crashed a reader (kept after the fix).
 * The process surviving is the main assertion (under a 2 GiB address-space
 * limit, so an allocation sized by a damaged header fails it too); on top,
 * every call must return 0 or -1 with a message, and what it loads must be
 * coherent (the entries' contract checks). Run from the repository root.
 */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include "../fuzz/fuzz_entry.c"

#include <dirent.h>
#include <sys/resource.h>

/* Without ASan (which reserves terabytes of shadow address space) the test
 * runs under a 2 GiB address-space limit: a reader that allocates what a
 * damaged header claims, before reading the bytes, then dies here too. */
#if defined(__SANITIZE_ADDRESS__)
#define REPLAY_LIMIT_MEMORY 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REPLAY_LIMIT_MEMORY 0
#else
#define REPLAY_LIMIT_MEMORY 1
#endif
#else
#define REPLAY_LIMIT_MEMORY 1
#endif
#define REPLAY_MAX_ADDRESS_BYTES (2ull << 30)

typedef struct {
    const char *name;
    void (*run)(const uint8_t *data, size_t n);
} replay_target;

static const replay_target replay_targets[] = {
    { "idx", fuzz_idx },
    { "image", fuzz_image },
    { "config", fuzz_config },
    { "safetensors", fuzz_safetensors },
};

static int replay_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The whole file at path; its length in *n. NULL if unreadable. */
static uint8_t *replay_read(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    size_t cap = 0;
    *n = 0;
    for (;;) {
        if (*n == cap)
            buf = ecl_realloc(buf, cap = cap ? 2 * cap : 4096);
        size_t got = fread(buf + *n, 1, cap - *n, f);
        *n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    return buf;
}

/* Sorted names of the regular files in dir; the count, or -1 if no dir. */
static int replay_list(const char *dir, char ***names)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0, cap = 0;
    *names = NULL;
    for (struct dirent *e; (e = readdir(d)) != NULL; ) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap)
            *names = ecl_realloc(*names, (size_t)(cap = cap ? 2 * cap : 64) * sizeof **names);
        (*names)[n++] = ecl_strdup(e->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(*names, (size_t)n, sizeof **names, replay_cmp);
    return n;
}

/* Feeds every file of fuzz/<kind>/<target>/ to the target; the file count. */
static int replay_folder(const replay_target *t, const char *kind, int must_accept)
{
    char dir[256], path[512];
    char **names;
    snprintf(dir, sizeof dir, "fuzz/%s/%s", kind, t->name);
    int n = replay_list(dir, &names);
    if (n < 0)
        return 0;

    /* One file at a time; a broken contract names the file. */
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t len;
        uint8_t *data = replay_read(path, &len);
        CHECK(data != NULL, "cannot read %s", path);
        int before = fuzz_n_violations;
        int64_t ok_before = fuzz_n_ok;
        if (data)
            t->run(data, len);
        CHECK(fuzz_n_violations == before, "%s: reader contract broken (see above)", path);
        if (must_accept)
            CHECK(fuzz_n_ok > ok_before, "%s: seed refused by every call: %s", path,
                  ecl_last_error());
        free(data);
        free(names[i]);
    }
    free(names);
    return n;
}

int main(void)
{
    /* No reader may take memory the input does not justify (see above). */
    if (REPLAY_LIMIT_MEMORY) {
        struct rlimit lim = { REPLAY_MAX_ADDRESS_BYTES, REPLAY_MAX_ADDRESS_BYTES };
        CHECK(setrlimit(RLIMIT_AS, &lim) == 0, "setrlimit(RLIMIT_AS) failed");
    }
    for (size_t i = 0; i < sizeof replay_targets / sizeof replay_targets[0]; i++) {
        const replay_target *t = &replay_targets[i];
        int seeds = replay_folder(t, "corpus", 1);
        int regress = replay_folder(t, "regress", 0);
        int crashes = replay_folder(t, "crashes", 0);
        CHECK(seeds > 0, "fuzz/corpus/%s has no seeds (run scripts/fuzz.sh seeds from the "
              "repository root)", t->name);
        printf("%-12s %4d seeds, %4d regress, %4d crash inputs replayed\n", t->name, seeds,
               regress, crashes);
    }
    return check_summary("test_fuzz_regress");
}
