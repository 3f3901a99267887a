/*
 * main_bench_em.c - ecl-bench-em: times every pseudo-label solver of
 * solvers.h over a sweep of K, N and lambda (the paper's Table I, EM versus
 * Newton), all stopping on the same full-KKT rule, and writes a table to
 * stdout, CSV and JSON files, and each case's sigma as raw float32 so
 * scripts/bench_em_numpy.py can time NumPy's EM on the same input.
 *
 * Predictions are softmax(3 z), z standard normal: peaked like a trained
 * network's. Each time is the median of --reps runs, from y = sigma.
 *
 * Not here: the NumPy reference and the plot (scripts/), GPU timings.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ecl/core.h"
#include "ecl/rng.h"
#include "ecl/solvers.h"

#define BENCH_MAX_LIST 32

typedef struct {
    int64_t n[BENCH_MAX_LIST];
    int n_n;
    int64_t k[BENCH_MAX_LIST];
    int n_k;
    double lambda[BENCH_MAX_LIST];
    int n_lambda;
    int use[SOLVER_COUNT];     /* 1 = time this solver */
    int64_t k_sweep_n;         /* N of the K sweep */
    int64_t n_sweep_k;         /* K of the N sweep */
    int reps;
    double tol;
    int max_iter;
    int64_t dense_max_nk;
    char csv[1024], json[1024], sigma_dir[1024];
} bench_args;

typedef struct {
    int64_t n;
    int k;
    double lambda;
    solver_kind kind;
    solver_result res;         /* of the median run */
    double sec_median, sec_min;
} bench_row;

/* ---- arguments ----------------------------------------------------------- */

static void bench_usage(FILE *f)
{
    fprintf(f,
        "usage: ecl-bench-em [options]\n"
        "  --k=2,10,50,100     K values of the K sweep (at N = --k-sweep-n)\n"
        "  --n=100,...,100000  N values of the N sweep (at K = --n-sweep-k)\n"
        "  --k-sweep-n=250     --n-sweep-k=10\n"
        "  --lambda=100        fairness weights (comma list)\n"
        "  --solvers=em,em_accel,dual,newton,newton_dense\n"
        "  --reps=3            runs per case; the median time is reported\n"
        "  --tol=1e-6          full-KKT stopping tolerance (solvers.h)\n"
        "  --max-iter=100000   iteration cap\n"
        "  --dense-max-nk=3000 newton_dense only where N*K <= this\n"
        "  --csv=build/bench/bench_em.csv  --json=build/bench/bench_em.json\n"
        "  --sigma-dir=build/bench/sigma   raw float32 sigma per case ('' = none)\n");
}

/* Parses "a,b,c" into up to BENCH_MAX_LIST numbers. Count, or -1. */
static int bench_parse_list(const char *s, double *out)
{
    int count = 0;
    while (*s) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (end == s || errno || count == BENCH_MAX_LIST || !(v >= 0.0))
            return -1;
        out[count++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return count;
}

static int bench_parse_ints(const char *s, int64_t *out, int64_t lo, int64_t hi)
{
    double v[BENCH_MAX_LIST];
    int count = bench_parse_list(s, v);
    for (int j = 0; j < count; j++) {
        if (v[j] != floor(v[j]) || v[j] < (double)lo || v[j] > (double)hi)
            return -1;
        out[j] = (int64_t)v[j];
    }
    return count;
}

static int bench_parse_solvers(const char *s, int *use)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    memset(use, 0, SOLVER_COUNT * sizeof *use);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        solver_kind kind;
        if (solver_parse(tok, &kind) != 0)
            return -1;
        use[kind] = 1;
    }
    return 0;
}

static void bench_defaults(bench_args *a)
{
    memset(a, 0, sizeof *a);
    a->n_k = bench_parse_ints("2,10,50,100", a->k, 2, 100000);
    a->n_n = bench_parse_ints("100,1000,10000,100000", a->n, 1, 100000000);
    a->n_lambda = bench_parse_list("100", a->lambda);
    for (int s = 0; s < SOLVER_COUNT; s++)
        a->use[s] = 1;
    a->k_sweep_n = 250;
    a->n_sweep_k = 10;
    a->reps = 3;
    a->tol = 1e-6;
    a->max_iter = 100000;
    a->dense_max_nk = 3000;
    snprintf(a->csv, sizeof a->csv, "build/bench/bench_em.csv");
    snprintf(a->json, sizeof a->json, "build/bench/bench_em.json");
    snprintf(a->sigma_dir, sizeof a->sigma_dir, "build/bench/sigma");
}

/* One "--key=value"; 0, or -1 with ecl_last_error(). */
static int bench_parse_arg(bench_args *a, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (strncmp(arg, "--", 2) != 0 || !eq)
        return ecl_set_error("argument '%s': expected --key=value (see --help)", arg);
    size_t len = (size_t)(eq - arg - 2);
    const char *v = eq + 1, *key = arg + 2;
    int ok = 1;
#define BENCH_KEY(name) (len == strlen(name) && strncmp(key, name, len) == 0)
    if (BENCH_KEY("k"))
        ok = (a->n_k = bench_parse_ints(v, a->k, 1, 100000)) >= 0;
    else if (BENCH_KEY("n"))
        ok = (a->n_n = bench_parse_ints(v, a->n, 1, 100000000)) >= 0;
    else if (BENCH_KEY("lambda"))
        ok = (a->n_lambda = bench_parse_list(v, a->lambda)) > 0;
    else if (BENCH_KEY("solvers"))
        return bench_parse_solvers(v, a->use);
    else if (BENCH_KEY("k-sweep-n"))
        ok = bench_parse_ints(v, &a->k_sweep_n, 1, 100000000) == 1;
    else if (BENCH_KEY("n-sweep-k")) {
        int64_t kk;
        ok = bench_parse_ints(v, &kk, 1, 100000) == 1;
        a->n_sweep_k = kk;
    } else if (BENCH_KEY("reps"))
        ok = (a->reps = atoi(v)) >= 1;
    else if (BENCH_KEY("tol"))
        ok = (a->tol = atof(v)) >= 0.0;
    else if (BENCH_KEY("max-iter"))
        ok = (a->max_iter = atoi(v)) >= 1;
    else if (BENCH_KEY("dense-max-nk"))
        ok = bench_parse_ints(v, &a->dense_max_nk, 0, SOLVER_DENSE_MAX_NK) == 1;
    else if (BENCH_KEY("csv"))
        snprintf(a->csv, sizeof a->csv, "%s", v);
    else if (BENCH_KEY("json"))
        snprintf(a->json, sizeof a->json, "%s", v);
    else if (BENCH_KEY("sigma-dir"))
        snprintf(a->sigma_dir, sizeof a->sigma_dir, "%s", v);
    else
        return ecl_set_error("unknown option '--%.*s' (see --help)", (int)len, key);
#undef BENCH_KEY
    if (!ok)
        return ecl_set_error("bad value in '%s' (see --help for the expected form)", arg);
    return 0;
}

/* ---- the runs ------------------------------------------------------------ */

/* softmax(3 z) rows, z standard normal, from a seed derived from (N, K). */
static float *bench_make_sigma(int64_t n, int k)
{
    rng_state r = rng_derive(2024, (uint64_t)n, (uint64_t)k);
    float *s = ecl_malloc((size_t)(n * k) * sizeof *s);
    double *z = ecl_malloc((size_t)k * sizeof *z);
    for (int64_t i = 0; i < n; i++) {
        double top = -1e300, sum = 0.0;
        for (int c = 0; c < k; c++)
            top = fmax(top, z[c] = 3.0 * rng_normal(&r));
        for (int c = 0; c < k; c++)
            sum += (z[c] = exp(z[c] - top));
        for (int c = 0; c < k; c++)
            s[i * k + c] = (float)(z[c] / sum);
    }
    free(z);
    return s;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times one solver on one case: reps runs, the median's record kept. */
static bench_row bench_time(const bench_args *a, const float *sigma, const float *y_ref,
                            int64_t n, int k, double lambda, solver_kind kind)
{
    bench_row row = {.n = n, .k = k, .lambda = lambda, .kind = kind};
    float *y = ecl_malloc((size_t)(n * k) * sizeof *y);
    double secs[64];
    int reps = a->reps < 64 ? a->reps : 64;
    for (int r = 0; r < reps; r++) {
        solver_options opt = solver_default_options(kind);
        opt.tol = a->tol;
        opt.max_iter = a->max_iter;
        opt.diagnostics = r == reps - 1;
        opt.y_ref = y_ref;
        solver_result res = solver_solve(sigma, y, n, k, NULL, lambda, &opt);
        secs[r] = res.seconds;
        if (r == reps - 1)
            row.res = res;
    }
    qsort(secs, (size_t)reps, sizeof *secs, bench_cmp_double);
    row.sec_median = secs[reps / 2];
    row.sec_min = secs[0];
    free(y);
    return row;
}

/* Writes sigma as raw float32 [N, K] to dir/sigma_N_K.f32 (for NumPy). */
static void bench_write_sigma(const char *dir, const float *sigma, int64_t n, int k)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/sigma_%lld_%d.f32", dir, (long long)n, k);
    FILE *f = fopen(path, "wb");
    ECL_CHECK(f, "cannot write %s: %s (pass --sigma-dir= to skip)", path, strerror(errno));
    ECL_CHECK(fwrite(sigma, sizeof *sigma, (size_t)(n * k), f) == (size_t)(n * k) &&
              fclose(f) == 0, "short write to %s", path);
}

/* Every solver on one (N, K, lambda); returns the rows appended. */
static int bench_case(const bench_args *a, int64_t n, int k, double lambda, bench_row *out)
{
    float *sigma = bench_make_sigma(n, k);
    if (a->sigma_dir[0])
        bench_write_sigma(a->sigma_dir, sigma, n, k);

    /* The reference optimum: structured primal Newton and the dual Newton
     * at a tight tolerance, whichever ends with the smaller KKT measure
     * (primal Newton's line search stalls near 1e-6 at K = 100, where the
     * dual goes on to 1e-8; one oracle alone would then be off by 1e-5). */
    float *y_ref = ecl_malloc((size_t)(n * k) * sizeof *y_ref);
    float *y_alt = ecl_malloc((size_t)(n * k) * sizeof *y_alt);
    solver_options ro = solver_default_options(SOLVER_NEWTON);
    ro.tol = 1e-10;
    ro.max_iter = 200;   /* both converge in tens of steps; 1e-10 may be out of reach */
    solver_solve(sigma, y_ref, n, k, NULL, lambda, &ro);
    ro.kind = SOLVER_DUAL;
    solver_solve(sigma, y_alt, n, k, NULL, lambda, &ro);
    if (solver_kkt_full(sigma, y_alt, n, k, NULL, lambda) <
        solver_kkt_full(sigma, y_ref, n, k, NULL, lambda))
        memcpy(y_ref, y_alt, (size_t)(n * k) * sizeof *y_ref);
    free(y_alt);

    int count = 0;
    for (int s = 0; s < SOLVER_COUNT; s++) {
        if (!a->use[s] || (s == SOLVER_NEWTON_DENSE && n * k > a->dense_max_nk))
            continue;
        out[count] = bench_time(a, sigma, y_ref, n, k, lambda, (solver_kind)s);
        const bench_row *r = &out[count++];
        fprintf(stderr, "bench-em: N %-8lld K %-5d lambda %-6g %-12s %7d iters %10.5f s%s\n",
                (long long)n, k, lambda, solver_name(r->kind), r->res.iters, r->sec_median,
                r->res.converged ? "" : " (cap)");
    }
    free(sigma);
    free(y_ref);
    return count;
}

/* ---- output -------------------------------------------------------------- */

static const bench_row *bench_find(const bench_row *rows, int count, const bench_row *at,
                                   solver_kind kind)
{
    for (int j = 0; j < count; j++)
        if (rows[j].n == at->n && rows[j].k == at->k && rows[j].lambda == at->lambda &&
            rows[j].kind == kind)
            return &rows[j];
    return NULL;
}

/* One line per case: iterations and median seconds per solver, then the
 * speed-ups of EM and of the fastest converged solver over each Newton. */
static void bench_print_table(const bench_row *rows, int count, FILE *f)
{
    fprintf(f, "%8s %5s %7s", "N", "K", "lambda");
    for (int s = 0; s < SOLVER_COUNT; s++)
        fprintf(f, " | %-19s", solver_name((solver_kind)s));
    fprintf(f, " | %-9s %-9s %-9s %-9s\n", "dense/em", "newt/em", "dense/best", "best");
    for (int j = 0; j < count; j++) {
        if (j > 0 && rows[j].n == rows[j - 1].n && rows[j].k == rows[j - 1].k &&
            rows[j].lambda == rows[j - 1].lambda)
            continue;
        fprintf(f, "%8lld %5d %7g", (long long)rows[j].n, rows[j].k, rows[j].lambda);
        const bench_row *best = NULL;
        for (int s = 0; s < SOLVER_COUNT; s++) {
            const bench_row *r = bench_find(rows, count, &rows[j], (solver_kind)s);
            if (!r) {
                fprintf(f, " | %-19s", "-");
                continue;
            }
            fprintf(f, " | %6d %10.5fs%s", r->res.iters, r->sec_median,
                    r->res.converged ? " " : "*");
            if (r->res.converged && (!best || r->sec_median < best->sec_median))
                best = r;
        }
        const bench_row *em = bench_find(rows, count, &rows[j], SOLVER_EM);
        const bench_row *nt = bench_find(rows, count, &rows[j], SOLVER_NEWTON);
        const bench_row *dn = bench_find(rows, count, &rows[j], SOLVER_NEWTON_DENSE);
        double nan = NAN;
        fprintf(f, " | %-9.1f %-9.2f %-10.1f %s\n",
                em && dn ? dn->sec_median / em->sec_median : nan,
                em && nt ? nt->sec_median / em->sec_median : nan,
                best && dn ? dn->sec_median / best->sec_median : nan,
                best ? solver_name(best->kind) : "-");
    }
    fprintf(f, "(* = stopped at the iteration cap before the KKT tolerance)\n");
}

static void bench_write_csv(const bench_row *rows, int count, const char *path)
{
    FILE *f = fopen(path, "w");
    ECL_CHECK(f, "cannot write %s: %s (pass --csv= with a writable path)", path,
              strerror(errno));
    fprintf(f, "n,k,lambda,solver,iters,converged,seconds_median,seconds_min,objective,"
            "kkt_full,kkt_weighted,balance,dist_ref\n");
    for (int j = 0; j < count; j++) {
        const bench_row *r = &rows[j];
        fprintf(f, "%lld,%d,%g,%s,%d,%d,%.6g,%.6g,%.12g,%.3g,%.3g,%.3g,%.3g\n",
                (long long)r->n, r->k, r->lambda, solver_name(r->kind), r->res.iters,
                r->res.converged, r->sec_median, r->sec_min, r->res.objective,
                r->res.kkt_full, r->res.kkt_weighted, r->res.balance, r->res.dist_ref);
    }
    ECL_CHECK(fclose(f) == 0, "cannot finish %s", path);
}

static void bench_write_json(const bench_row *rows, int count, const bench_args *a,
                             const char *path)
{
    FILE *f = fopen(path, "w");
    ECL_CHECK(f, "cannot write %s: %s (pass --json= with a writable path)", path,
              strerror(errno));
    fprintf(f, "{\"tol\": %g, \"max_iter\": %d, \"reps\": %d, \"rows\": [\n", a->tol,
            a->max_iter, a->reps);
    for (int j = 0; j < count; j++) {
        const bench_row *r = &rows[j];
        fprintf(f, "  {\"n\": %lld, \"k\": %d, \"lambda\": %g, \"solver\": \"%s\", "
                "\"iters\": %d, \"converged\": %s, \"seconds_median\": %.6g, "
                "\"seconds_min\": %.6g, \"kkt_full\": %.3g, \"dist_ref\": %.3g}%s\n",
                (long long)r->n, r->k, r->lambda, solver_name(r->kind), r->res.iters,
                r->res.converged ? "true" : "false", r->sec_median, r->sec_min,
                r->res.kkt_full, isfinite(r->res.dist_ref) ? r->res.dist_ref : -1.0,
                j + 1 < count ? "," : "");
    }
    fprintf(f, "]}\n");
    ECL_CHECK(fclose(f) == 0, "cannot finish %s", path);
}

/* mkdir -p of the folder part of path. */
static void bench_make_parent(const char *path, int whole)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    if (whole)
        mkdir(buf, 0755);
}

int main(int argc, char **argv)
{
    bench_args a;
    bench_defaults(&a);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            bench_usage(stdout);
            return 0;
        }
        if (bench_parse_arg(&a, argv[i]) != 0) {
            fprintf(stderr, "ecl-bench-em: %s\n", ecl_last_error());
            return 2;
        }
    }
    bench_make_parent(a.csv, 0);
    bench_make_parent(a.json, 0);
    if (a.sigma_dir[0])
        bench_make_parent(a.sigma_dir, 1);

    /* The K sweep at N = k_sweep_n, then the N sweep at K = n_sweep_k. */
    int cap = (a.n_k + a.n_n) * a.n_lambda * SOLVER_COUNT;
    bench_row *rows = ecl_malloc((size_t)cap * sizeof *rows);
    int count = 0;
    for (int l = 0; l < a.n_lambda; l++) {
        for (int j = 0; j < a.n_k; j++)
            count += bench_case(&a, a.k_sweep_n, (int)a.k[j], a.lambda[l], rows + count);
        for (int j = 0; j < a.n_n; j++)
            count += bench_case(&a, a.n[j], (int)a.n_sweep_k, a.lambda[l], rows + count);
    }

    bench_print_table(rows, count, stdout);
    bench_write_csv(rows, count, a.csv);
    bench_write_json(rows, count, &a, a.json);
    fprintf(stderr, "bench-em: wrote %s and %s\n", a.csv, a.json);
    free(rows);
    return 0;
}
