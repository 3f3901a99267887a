/*
 * main_bench.c - ecl-bench: the speed of one vgg4 training step and of one
 * inference pass on the CPU, on random images (no data loading, no
 * augmentation), for one shape, batch and thread count. Prints one JSON
 * object on stdout: images per second, seconds per phase of the step,
 * conv GFLOP/s and peak resident memory. scripts/bench.sh runs it beside
 * the same step in PyTorch (scripts/bench_torch.py) and prints the ratios.
 *
 * The step is the trainer's (src/train.c): one forward of all (V+1) B
 * views, softmax of the clean view, EM (em.max_iter iterations, no early
 * stop, as the PyTorch side does), the loss and its logit gradient,
 * backward, the head norm, one Adam step.
 *
 * --device=cuda times the same step on the GPU (src/train_cuda.c's).
 * Not here: data loading and augmentation (they run on worker threads in
 * training).
 */
#define _POSIX_C_SOURCE 200809L
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ecl/config.h"
#include "ecl/core.h"
#include "ecl/loss.h"
#include "ecl/model.h"
#include "ecl/model_cuda.h"
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
#include "ecl/cuda.h"
#endif
#include "ecl/ops.h"
#include "ecl/optim.h"
#include "ecl/rng.h"
#include "ecl/solvers.h"

typedef struct {
    int channels, size, batch, threads, steps, warmup, width, clusters, views;
    int cuda, tf32;   /* --device=cuda, --precision=tf32 */
} bench_args;

/* Seconds spent in each phase of the training step, summed over steps. */
typedef struct {
    double forward, em, loss, backward, adam, total;
} bench_phases;

static void bench_usage(FILE *f)
{
    fprintf(f,
        "usage: ecl-bench [--channels=3] [--size=32] [--batch=250] [--threads=0]\n"
        "                 [--steps=5] [--warmup=1] [--width=64] [--clusters=10] "
        "[--views=1]\n"
        "                 [--device=cpu|cuda] [--precision=fp32|tf32]\n"
        "Times the vgg4 training step and inference pass on random images; one JSON\n"
        "object on stdout. --threads=0 uses every core.\n");
}

/* One --name=value integer option into *dst; 1 when arg was that option. */
static int bench_opt(const char *arg, const char *name, int *dst)
{
    size_t len = strlen(name);
    if (strncmp(arg, name, len) != 0 || arg[len] != '=')
        return 0;
    char *end;
    long v = strtol(arg + len + 1, &end, 10);
    if (*end || v < 0 || v > 1000000) {
        fprintf(stderr, "ecl-bench: %s needs an integer in [0, 1000000], got '%s'\n", name,
                arg + len + 1);
        exit(2);
    }
    *dst = (int)v;
    return 1;
}

static bench_args bench_parse(int argc, char **argv)
{
    bench_args a = { 3, 32, 250, 0, 5, 1, 64, 10, 1, 0, 0 };
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            bench_usage(stdout);
            exit(0);
        }
        if (strncmp(s, "--device", 8) == 0 || strncmp(s, "--precision", 11) == 0) {
            int dev = s[2] == 'd';
            const char *v = strchr(s, '=') ? strchr(s, '=') + 1 : i + 1 < argc ? argv[++i] : "";
            if (dev && (strcmp(v, "cpu") == 0 || strcmp(v, "cuda") == 0))
                a.cuda = strcmp(v, "cuda") == 0;
            else if (!dev && (strcmp(v, "fp32") == 0 || strcmp(v, "tf32") == 0))
                a.tf32 = strcmp(v, "tf32") == 0;
            else {
                fprintf(stderr, "ecl-bench: %s needs %s, got '%s'\n",
                        dev ? "--device" : "--precision", dev ? "cpu or cuda" : "fp32 or tf32", v);
                exit(2);
            }
            continue;
        }
        if (!(bench_opt(s, "--channels", &a.channels) || bench_opt(s, "--size", &a.size)
              || bench_opt(s, "--batch", &a.batch) || bench_opt(s, "--threads", &a.threads)
              || bench_opt(s, "--steps", &a.steps) || bench_opt(s, "--warmup", &a.warmup)
              || bench_opt(s, "--width", &a.width)
              || bench_opt(s, "--clusters", &a.clusters)
              || bench_opt(s, "--views", &a.views))) {
            fprintf(stderr, "ecl-bench: unknown option '%s'\n", s);
            bench_usage(stderr);
            exit(2);
        }
    }
    if (a.size < 8 || a.batch < 1 || a.steps < 1 || a.width < 1 || a.clusters < 2
        || (a.channels != 1 && a.channels != 3)) {
        fprintf(stderr, "ecl-bench: need --size >= 8, --batch, --steps, --width >= 1, "
                "--clusters >= 2 and --channels 1 or 3\n");
        exit(2);
    }
    return a;
}

/* Multiply-adds x 2 of the four convs for one image of the forward pass
 * (the head and the element-wise ops are under 1% at width 64). */
static double bench_conv_flops(const bench_args *a)
{
    double flops = 0.0;
    int cin = a->channels, h = a->size, w = a->size;
    for (int i = 0; i < VGG4_BLOCKS; i++) {
        int cout = a->width << i;
        flops += 2.0 * h * w * (double)cout * cin * 9.0;
        cin = cout;
        if (i < VGG4_BLOCKS - 1) {
            h /= 2;
            w /= 2;
        }
    }
    return flops;
}

/* The machine's sgemm rate at this thread count (the practical ceiling of
 * the conv work): the best of 3 square 1024 products, GFLOP/s. */
static double bench_sgemm_gflop_s(void)
{
    int64_t n = 1024;
    float *a = ecl_malloc((size_t)(n * n) * sizeof(float));
    float *b = ecl_malloc((size_t)(n * n) * sizeof(float));
    float *c = ecl_malloc((size_t)(n * n) * sizeof(float));
    for (int64_t i = 0; i < n * n; i++) {
        a[i] = (float)(i % 7) * 0.25f;
        b[i] = (float)(i % 5) * 0.5f;
    }
    for (int r = 0; r < 3; r++)   /* warm-up: JIT, page faults, clocks */
        gemm_cpu(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = ecl_now_s();
        gemm_cpu(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = ecl_now_s() - t0;
        best = t < best ? t : best;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * (double)n * n * n / best * 1e-9;
}

/* Adds one step's phase boundaries t0..t5 (forward, EM, loss, backward,
 * optimiser) to ph. */
static void bench_phases_add(bench_phases *ph, double t0, double t1, double t2, double t3,
                             double t4, double t5)
{
    ph->forward += t1 - t0;
    ph->em += t2 - t1;
    ph->loss += t3 - t2;
    ph->backward += t4 - t3;
    ph->adam += t5 - t4;
    ph->total += t5 - t0;
}

/* The trainer's step on x [(V+1) B, C, H, W], phase times added to ph. */
static void bench_train_step(model *m, optimizer *opt, const config *cfg, const float *x,
                             int64_t b, int views, float *logits, float *sigma, float *y,
                             float *dlogits, bench_phases *ph)
{
    int k = m->k;
    int64_t n = (views + 1) * b;
    loss_weights lw = { cfg->loss.lambda, cfg->loss.gamma, cfg->loss.alpha,
                        cfg->loss.forward_ce, cfg->loss.y_eps,
                        (aug_form)loss_aug_form_parse(cfg->loss.aug_form) };
    double t0 = ecl_now_s();
    model_forward(m, x, n, 1, logits);
    double t1 = ecl_now_s();

    /* EM with a fixed iteration count: tol 0 runs to the cap. */
    softmax_forward_cpu(logits, sigma, b, k);
    solver_options so = solver_default_options(SOLVER_EM);
    so.max_iter = cfg->em.max_iter;
    so.tol = 0.0;
    solver_solve(sigma, y, b, k, NULL, cfg->loss.lambda, &so);
    double t2 = ecl_now_s();

    loss_terms t;
    loss_ecl_cpu(logits, y, b, k, views, &lw, NULL, dlogits, &t);
    double t3 = ecl_now_s();
    model_backward(m, dlogits, n);
    loss_head_norm_cpu(m->head_w[0]->value, m->head_w[0]->n, &lw, m->head_w[0]->grad, &t);
    double t4 = ecl_now_s();
    optim_step(opt, m, cfg->optim.lr);
    double t5 = ecl_now_s();

    bench_phases_add(ph, t0, t1, t2, t3, t4, t5);
}

#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
/* The GPU step of src/train_cuda.c (no host copies but the loss terms):
 * forward, softmax, EM kernel, fused loss, backward, head norm, Adam. Each
 * phase ends with a device sync so its time is its own. */
static void bench_train_step_cuda(model_cuda *g, optimizer *opt, const config *cfg,
                                  const float *x, int64_t b, int views, int k,
                                  bench_phases *ph)
{
    int64_t n = (views + 1) * b;
    loss_weights lw = { cfg->loss.lambda, cfg->loss.gamma, cfg->loss.alpha,
                        cfg->loss.forward_ce, cfg->loss.y_eps,
                        (aug_form)loss_aug_form_parse(cfg->loss.aug_form) };
    double t0 = ecl_now_s();
    model_cuda_forward(g, x, n, 1);
    ecl_cuda_sync();
    double t1 = ecl_now_s();
    softmax_forward_cuda(model_cuda_logits(g), model_cuda_sigma(g), b, k);
    em_solve_cuda(model_cuda_sigma(g), model_cuda_y(g), b, k, NULL, cfg->loss.lambda,
                  cfg->em.max_iter, 0.0, 1);
    double t2 = ecl_now_s();
    loss_terms t;
    loss_ecl_cuda(model_cuda_logits(g), model_cuda_y(g), b, k, views, &lw, NULL,
                  model_cuda_dlogits(g), &t);
    double t3 = ecl_now_s();
    model_cuda_backward(g, n);
    param *w = model_cuda_head_w(g, 0);
    loss_head_norm_cuda(w->value, w->n, &lw, w->grad, &t);
    double t4 = ecl_now_s();
    model_cuda_optim_step(g, opt, cfg->optim.lr);
    ecl_cuda_sync();
    double t5 = ecl_now_s();
    bench_phases_add(ph, t0, t1, t2, t3, t4, t5);
}
#endif

/* The config of the measured model: the trainer's defaults but the shape. */
static void bench_config(const bench_args *a, config *cfg)
{
    char v[32];
    config_defaults(cfg);
    snprintf(v, sizeof v, "%d", a->width);
    ECL_CHECK(config_set(cfg, "model.width", v) == 0, "%s", ecl_last_error());
    snprintf(v, sizeof v, "%d", a->clusters);
    ECL_CHECK(config_set(cfg, "model.clusters", v) == 0, "%s", ecl_last_error());
    ECL_CHECK(config_set(cfg, "optim.name", "adam") == 0, "%s", ecl_last_error());
}

int main(int argc, char **argv)
{
    bench_args a = bench_parse(argc, argv);
    /* What the process holds before any work: the program and its shared
     * libraries (in a CUDA build, ~150 MB of cuDNN and cuBLAS mapped at
     * load even on the CPU path). */
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    ecl_log_set_level(0);
    if (a.threads > 0)
        omp_set_num_threads(a.threads);
    config cfg;
    bench_config(&a, &cfg);
    /* First, so its buffers are gone before the model's: peak memory is
     * the step's alone. */
    double sgemm = a.cuda ? 0.0 : bench_sgemm_gflop_s();

    /* Model, optimiser and random inputs in [0, 1), as the loader gives. */
    model m;
    model_init(&m, &cfg, a.channels, a.size, a.size, 1);
    optimizer opt;
    optim_init(&opt, &cfg, &m);
    int64_t b = a.batch, n = (a.views + 1) * b, k = a.clusters;
    int64_t n_in = n * a.channels * a.size * a.size;
    float *x = ecl_malloc((size_t)n_in * sizeof(float));
    rng_state r = rng_seeded(7);
    for (int64_t i = 0; i < n_in; i++)
        x[i] = rng_uniform(&r);
    float *logits = ecl_malloc((size_t)(n * k) * sizeof(float));
    float *dlogits = ecl_malloc((size_t)(n * k) * sizeof(float));
    float *sigma = ecl_malloc((size_t)(b * k) * sizeof(float));
    float *y = ecl_malloc((size_t)(b * k) * sizeof(float));

    /* Training steps: warm-up ones are not timed. Then inference: the
     * clean batch with running statistics. */
    bench_phases ph = {0}, skip = {0};
    double infer_s = 0.0;
    const char *engine = gemm_backend_name();
    if (a.cuda) {
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
        char why[512];
        if (!ecl_cuda_probe(why, sizeof why)) {
            fprintf(stderr, "ecl-bench: --device=cuda: %s\n", why);
            return 1;
        }
        model_cuda *g = model_cuda_create(&m, &opt, n, a.tf32);
        for (int s = 0; s < a.warmup; s++)
            bench_train_step_cuda(g, &opt, &cfg, x, b, a.views, (int)k, &skip);
        for (int s = 0; s < a.steps; s++)
            bench_train_step_cuda(g, &opt, &cfg, x, b, a.views, (int)k, &ph);
        for (int s = 0; s < a.warmup; s++)
            model_cuda_forward(g, x, b, 0);
        ecl_cuda_sync();
        double t0 = ecl_now_s();
        for (int s = 0; s < a.steps; s++)
            model_cuda_forward(g, x, b, 0);
        ecl_cuda_sync();
        infer_s = (ecl_now_s() - t0) / a.steps;
        model_cuda_destroy(g);
        engine = a.tf32 ? "cuDNN + cuBLAS, tf32" : "cuDNN + cuBLAS, fp32";
#else
        fprintf(stderr, "ecl-bench: --device=cuda: this build has no CUDA backend\n");
        return 1;
#endif
    } else {
        for (int s = 0; s < a.warmup; s++)
            bench_train_step(&m, &opt, &cfg, x, b, a.views, logits, sigma, y, dlogits, &skip);
        for (int s = 0; s < a.steps; s++)
            bench_train_step(&m, &opt, &cfg, x, b, a.views, logits, sigma, y, dlogits, &ph);
        for (int s = 0; s < a.warmup; s++)
            model_forward(&m, x, b, 0, logits);
        double t0 = ecl_now_s();
        for (int s = 0; s < a.steps; s++)
            model_forward(&m, x, b, 0, logits);
        infer_s = (ecl_now_s() - t0) / a.steps;
    }

    /* Report: per step means; the step's conv work is 3x the forward's
     * (forward, input gradient, weight gradient) over every view. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double f = bench_conv_flops(&a), step_s = ph.total / a.steps;
    printf("{\"impl\": \"ecl\", \"device\": \"%s\", \"channels\": %d, \"size\": %d, \"batch\": %d, "
           "\"views\": %d, \"width\": %d, \"clusters\": %d, \"threads\": %d, "
           "\"steps\": %d, \"gemm\": \"%s\", \"train_img_s\": %.2f, \"infer_img_s\": %.2f, "
           "\"train_step_s\": %.5f, \"infer_pass_s\": %.5f, \"train_gflop_s\": %.2f, "
           "\"infer_gflop_s\": %.2f, \"forward_s\": %.5f, \"em_s\": %.5f, \"loss_s\": %.5f, "
           "\"backward_s\": %.5f, \"adam_s\": %.5f, \"peak_rss_mb\": %.1f, "
           "\"sgemm_gflop_s\": %.1f, \"rss_at_start_mb\": %.1f}\n",
           a.cuda ? "cuda" : "cpu", a.channels, a.size, a.batch, a.views, a.width, a.clusters,
           omp_get_max_threads(), a.steps, engine, b / step_s, b / infer_s, step_s, infer_s,
           3.0 * f * (double)n / step_s * 1e-9, f * (double)b / infer_s * 1e-9,
           ph.forward / a.steps, ph.em / a.steps, ph.loss / a.steps, ph.backward / a.steps,
           ph.adam / a.steps, (double)ru.ru_maxrss / 1024.0, sgemm,
           (double)ru0.ru_maxrss / 1024.0);

    free(x);
    free(logits);
    free(dlogits);
    free(sigma);
    free(y);
    optim_free(&opt);
    model_free(&m);
    return 0;
}
