/*
 * bench_cuda.c - times the CUDA kernels against their CPU twins on
 * training-sized problems: em_solve_cuda vs em_solve_cpu (B = 250, K = 10
 * and 100, lambda = 100; the trainer's default stop of 15 iterations /
 * tol 1e-6, and a run to tol 1e-7) and the fused loss_ecl_cuda vs
 * loss_ecl_cpu. Prints one JSON object per measurement on stdout and a
 * table on stderr; scripts/gpu-check.sh builds and runs it.
 *
 * Device times are wall-clock per call, including the launch and the copy
 * of the result to the host, which is what a training step pays; inputs
 * are already on the device. Medians of repeated calls after a warm-up.
 * Not here: the forward/backward of the network (no CUDA path yet).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ecl/core.h"
#include "ecl/em.h"
#include "ecl/loss.h"
#include "ecl/rng.h"

#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
#include "ecl/cuda.h"

#define BENCH_REPEATS 21

/* rows [rows, K]: softmax of 2 x normal, the shape of real predictions. */
static void bench_fill_sigma(rng_state *r, float *m, int64_t rows, int k)
{
    for (int64_t i = 0; i < rows; i++) {
        float *row = m + i * k;
        double sum = 0.0;
        for (int c = 0; c < k; c++) {
            row[c] = expf(2.0f * rng_normal(r));
            sum += row[c];
        }
        for (int c = 0; c < k; c++)
            row[c] = (float)(row[c] / sum);
    }
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double bench_median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    return t[n / 2];
}

/* One EM setting: CPU and device medians, iterations and max |y diff|. */
static void bench_em(int64_t b, int k, double lambda, int max_iter, double tol)
{
    rng_state r = rng_seeded(7);
    int64_t nk = b * k;
    size_t bytes = (size_t)nk * sizeof(float);
    float *sigma = ecl_malloc(bytes), *y = ecl_malloc(bytes), *yg = ecl_malloc(bytes);
    bench_fill_sigma(&r, sigma, b, k);
    float *ds = ecl_cuda_alloc(bytes), *dy = ecl_cuda_alloc(bytes);
    ecl_cuda_to_device(ds, sigma, bytes);

    /* Warm-up once each, then the timed repeats. */
    double tc[BENCH_REPEATS], tg[BENCH_REPEATS];
    em_result rc = em_solve_cpu(sigma, y, b, k, NULL, lambda, max_iter, tol, 1);
    em_result rg = em_solve_cuda(ds, dy, b, k, NULL, lambda, max_iter, tol, 1);
    for (int i = 0; i < BENCH_REPEATS; i++) {
        double t0 = ecl_now_s();
        rc = em_solve_cpu(sigma, y, b, k, NULL, lambda, max_iter, tol, 1);
        double t1 = ecl_now_s();
        rg = em_solve_cuda(ds, dy, b, k, NULL, lambda, max_iter, tol, 1);
        tc[i] = t1 - t0;
        tg[i] = ecl_now_s() - t1;
    }
    ecl_cuda_to_host(yg, dy, bytes);
    double diff = 0.0;
    for (int64_t i = 0; i < nk; i++)
        diff = fmax(diff, fabs((double)yg[i] - y[i]));

    double mc = bench_median(tc, BENCH_REPEATS), mg = bench_median(tg, BENCH_REPEATS);
    printf("{\"op\": \"em_solve\", \"b\": %lld, \"k\": %d, \"lambda\": %g, \"max_iter\": %d, "
           "\"tol\": %g, \"cpu_us\": %.2f, \"cuda_us\": %.2f, \"speedup\": %.3f, "
           "\"iters_cpu\": %d, \"iters_cuda\": %d, \"max_abs_y_diff\": %.3g}\n",
           (long long)b, k, lambda, max_iter, tol, mc * 1e6, mg * 1e6, mc / mg, rc.iters,
           rg.iters, diff);
    fprintf(stderr, "em_solve B=%-5lld K=%-4d max_iter=%-4d tol=%-6g cpu %9.1f us  cuda "
            "%9.1f us  x%.2f  iters %d/%d  max|dy| %.2g\n", (long long)b, k, max_iter, tol,
            mc * 1e6, mg * 1e6, mc / mg, rc.iters, rg.iters, diff);
    ecl_cuda_free(ds), ecl_cuda_free(dy);
    free(sigma), free(y), free(yg);
}

/* One loss setting: CPU and device medians of the fused loss + gradient. */
static void bench_loss(int64_t b, int k, int views)
{
    rng_state r = rng_seeded(9);
    int64_t n_logits = (int64_t)(views + 1) * b * k;
    size_t lbytes = (size_t)n_logits * sizeof(float), ybytes = (size_t)(b * k) * sizeof(float);
    float *logits = ecl_malloc(lbytes), *dl = ecl_malloc(lbytes), *y = ecl_malloc(ybytes);
    for (int64_t i = 0; i < n_logits; i++)
        logits[i] = 3.0f * rng_normal(&r);
    bench_fill_sigma(&r, y, b, k);
    float *dz = ecl_cuda_alloc(lbytes), *ddl = ecl_cuda_alloc(lbytes);
    float *dy = ecl_cuda_alloc(ybytes);
    ecl_cuda_to_device(dz, logits, lbytes);
    ecl_cuda_to_device(dy, y, ybytes);
    loss_weights lw = {.lambda = 100.0f, .gamma = 0.01f, .alpha = 1.0f, .forward_ce = 0.5f,
                       .y_eps = 1e-12f, .aug = AUG_KL};

    /* Warm-up, then the timed repeats. */
    double tc[BENCH_REPEATS], tg[BENCH_REPEATS];
    loss_terms t, tgpu;
    loss_ecl_cpu(logits, y, b, k, views, &lw, NULL, dl, &t);
    loss_ecl_cuda(dz, dy, b, k, views, &lw, NULL, ddl, &tgpu);
    for (int i = 0; i < BENCH_REPEATS; i++) {
        double t0 = ecl_now_s();
        loss_ecl_cpu(logits, y, b, k, views, &lw, NULL, dl, &t);
        double t1 = ecl_now_s();
        loss_ecl_cuda(dz, dy, b, k, views, &lw, NULL, ddl, &tgpu);
        tc[i] = t1 - t0;
        tg[i] = ecl_now_s() - t1;
    }
    double mc = bench_median(tc, BENCH_REPEATS), mg = bench_median(tg, BENCH_REPEATS);
    printf("{\"op\": \"loss_ecl\", \"b\": %lld, \"k\": %d, \"views\": %d, \"cpu_us\": %.2f, "
           "\"cuda_us\": %.2f, \"speedup\": %.3f, \"total_cpu\": %.12g, \"total_cuda\": "
           "%.12g}\n", (long long)b, k, views, mc * 1e6, mg * 1e6, mc / mg, t.total,
           tgpu.total);
    fprintf(stderr, "loss_ecl B=%-5lld K=%-4d V=%d            cpu %9.1f us  cuda %9.1f us  "
            "x%.2f  total %.9g / %.9g\n", (long long)b, k, views, mc * 1e6, mg * 1e6,
            mc / mg, t.total, tgpu.total);
    ecl_cuda_free(dz), ecl_cuda_free(ddl), ecl_cuda_free(dy);
    free(logits), free(dl), free(y);
}

int main(void)
{
    char why[512];
    if (!ecl_cuda_probe(why, sizeof why)) {
        fprintf(stderr, "bench_cuda: no usable CUDA device: %s\n", why);
        return 2;
    }

    /* The sizes DESIGN.md names: a batch of 250 with 10 and 100 clusters. */
    int ks[] = {10, 100};
    for (int i = 0; i < 2; i++) {
        bench_em(250, ks[i], 100.0, 15, 1e-6);
        bench_em(250, ks[i], 100.0, 500, 1e-7);
    }
    bench_em(4096, 100, 100.0, 15, 1e-6);
    for (int i = 0; i < 2; i++)
        bench_loss(250, ks[i], 2);
    bench_loss(4096, 100, 2);
    ecl_cuda_release_scratch();
    return 0;
}
#else
int main(void)
{
    fprintf(stderr, "bench_cuda: built without ECL_HAVE_CUDA=1: nothing to time\n");
    return 2;
}
#endif
