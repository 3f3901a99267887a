/*
 * test_cuda.c - every CUDA kernel of kernels/ against its CPU twin, on
 * random inputs and the edge cases K = 1, K > B, K = 1024, one-hot and
 * uniform sigma, logits of 1e4, warm starts and max_iter = 0; plus
 * determinism (two device runs give the same bits).
 *
 * Without a CUDA build, or without a usable device, it prints
 * "skipped: <reason>" as its last line and exits 77. The comparison code
 * (the tolerance table and its helpers) runs everywhere: it is checked on
 * planted errors, and on CPU-vs-CPU data whose only difference is the
 * order of the sums over a row (clusters permuted), the kind of difference
 * the device brings. Not here: speed (scripts/gpu-check.sh, bench/).
 */
#define _POSIX_C_SOURCE 200809L   /* popen, for the child runs */

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "ecl/core.h"
#include "ecl/em.h"
#include "ecl/loss.h"
#include "ecl/model.h"
#include "ecl/ops.h"
#include "ecl/optim.h"
#include "ecl/rng.h"
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
#include "ecl/cuda.h"
#include "ecl/model_cuda.h"
#endif

/* ---- tolerances ------------------------------------------------------------
 * One rule per compared tensor: |got - want| <= abs_tol + rel_tol |want|.
 * Chosen from what differs between the two sides, written beside each. */
typedef struct {
    const char *tensor;
    double abs_tol, rel_tol;
    const char *why;
} tol_rule;

static const tol_rule tol_rules[] = {
    {"softmax.p", 1e-37, 4 * FLT_EPSILON,
     "CUDA expf is within 2 ulp, glibc's within 1; 1/sum (double sum in another "
     "order) rounds to float once more; results under FLT_MIN are denormal"},
    {"loss.dlogits", 1e-12, 2 * FLT_EPSILON,
     "formed in double, then rounded to float; the device fuses multiply-adds, "
     "sums rows as warp trees and its exp/log are within 1 ulp, so one float "
     "rounding may flip (CPU-vs-CPU with clusters permuted: bit-identical); "
     "1e-12 absolute for cancellation near 0"},
    {"loss.terms", 1e-10, 1e-10,
     "double sums of B (V+1) rows in another order, exp/log within 1 ulp: ~B 1e-16 "
     "relative (CPU-vs-CPU, clusters permuted: up to 6e-16); log-softmax at 1e4 "
     "logits cancels to ~1e-12 absolute"},
    {"em.y", 2e-6, 0.0,
     "float y; the device sums rows and columns in another order, which may flip "
     "a float rounding now and then (CPU-vs-CPU, clusters permuted: bit-identical); "
     "when the stop max |dy| < tol = 1e-7 falls one iteration apart y moves by "
     "< tol; 2e-6 leaves room for flips carried through up to 300 iterations"},
    {"em.objective", 1e-9, 1e-7,
     "F of two y that differ within em.y: F is smooth in y with O(1) gradient "
     "per row, so |dF| <~ 1e-6"},
    {"head_norm.grad", 0.0, FLT_EPSILON,
     "same float operations, unfused on both sides (_rn intrinsics, gcc -std=c11): "
     "bit-identical expected, one ulp allowed for a host compiler that contracts"},
    {"head_norm.sq", 0.0, 1e-12,
     "exact products summed in double in another order: n 1e-16 relative"},
    {"model.logits", 1e-4, 1e-3,
     "cuDNN picks FFT, Winograd or implicit-GEMM convolutions (other roundings than "
     "im2col + sgemm, ~1e-6 relative per layer) and sums BN statistics in another "
     "order; four conv+BN layers and the head carry that to ~1e-5 on O(1) logits"},
    {"model.grad", 2e-3, 0.0,
     "compared after dividing both by the CPU tensor's largest |value|: the backward "
     "sums over N H W in other orders and algorithms (Winograd's transforms lose "
     "~1e-5 relative of the tensor's scale), compounded through four blocks"},
    {"model.bn_stats", 1e-5, 1e-4,
     "running mean and variance from batch sums in another order: ~1e-6 relative, "
     "plus the conv differences of model.logits"},
    {"optim.tensor", 0.0, FLT_EPSILON,
     "same float operations, unfused on both sides, correctly rounded sqrt and "
     "division: bit-identical expected, one ulp allowed as for head_norm.grad"},
};

/* The rule for a tensor name; an unknown name is a bug of this test. */
static const tol_rule *tol_find(const char *tensor)
{
    for (size_t i = 0; i < sizeof tol_rules / sizeof tol_rules[0]; i++)
        if (strcmp(tol_rules[i].tensor, tensor) == 0)
            return &tol_rules[i];
    ECL_FATAL("test_cuda: no tolerance rule for tensor '%s'", tensor);
}

/* The outcome of one comparison. */
typedef struct {
    int64_t n_bad;        /* elements outside the rule (NaN counts) */
    int64_t n_diff;       /* elements not bit-identical */
    int64_t worst;        /* index of the largest excess over the rule */
    double max_abs;       /* max |got - want| */
    double max_rel;       /* max |got - want| / |want| over want != 0 */
} tol_stats;

/* Adds element i to st; a NaN where want has none counts as outside. */
static void tol_account(const tol_rule *r, double got, double want, int64_t i,
                        tol_stats *st, double *worst_excess)
{
    double err = fabs(got - want), limit = r->abs_tol + r->rel_tol * fabs(want);
    int nan_mismatch = isnan(got) != isnan(want);
    if (isnan(got) && isnan(want))
        err = 0.0;
    if (got != want && !(isnan(got) && isnan(want)))
        st->n_diff++;
    st->max_abs = fmax(st->max_abs, err);
    if (want != 0.0)
        st->max_rel = fmax(st->max_rel, err / fabs(want));
    double excess = nan_mismatch ? HUGE_VAL : err - limit;
    if (excess > 0.0)
        st->n_bad++;
    if (excess > *worst_excess || st->worst < 0) {
        *worst_excess = excess;
        st->worst = i;
    }
}

/* got [n] against want [n] under rule r. */
static tol_stats tol_compare(const tol_rule *r, const float *got, const float *want, int64_t n)
{
    tol_stats st = {0, 0, -1, 0.0, 0.0};
    double worst_excess = -HUGE_VAL;
    for (int64_t i = 0; i < n; i++)
        tol_account(r, got[i], want[i], i, &st, &worst_excess);
    return st;
}

/* CHECKs got [n] against want [n] under the rule for tensor; on failure
 * prints the counts, max abs and relative error and the worst element. */
static void check_tensor(const char *tensor, const char *ctx, const float *got,
                         const float *want, int64_t n)
{
    const tol_rule *r = tol_find(tensor);
    tol_stats st = tol_compare(r, got, want, n);
    CHECK(st.n_bad == 0,
          "%s [%s]: %lld of %lld outside %g + %g |want| (%lld not bit-identical); max abs "
          "%.3g, max rel %.3g; worst [%lld]: got %.9g, want %.9g", tensor, ctx,
          (long long)st.n_bad, (long long)n, r->abs_tol, r->rel_tol, (long long)st.n_diff,
          st.max_abs, st.max_rel, (long long)st.worst,
          st.worst >= 0 ? (double)got[st.worst] : 0.0,
          st.worst >= 0 ? (double)want[st.worst] : 0.0);
}

/* CHECKs one double under the rule for tensor. */
static void check_scalar(const char *tensor, const char *ctx, double got, double want)
{
    const tol_rule *r = tol_find(tensor);
    tol_stats st = {0, 0, -1, 0.0, 0.0};
    double worst_excess = -HUGE_VAL;
    tol_account(r, got, want, 0, &st, &worst_excess);
    CHECK(st.n_bad == 0, "%s [%s]: got %.12g, want %.12g (abs err %.3g, allowed %g + %g "
          "|want|)", tensor, ctx, got, want, st.max_abs, r->abs_tol, r->rel_tol);
}

/* ---- inputs ---------------------------------------------------------------- */

typedef enum { ROWS_RANDOM, ROWS_ONE_HOT, ROWS_UNIFORM } rows_kind;

/* n normal values times scale. */
static void fill_normal(rng_state *r, float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * rng_normal(r);
}

/* rows [rows, K] on the simplex: softmax of 2 x normal, one-hot, or 1/K. */
static void fill_rows(rng_state *r, float *m, int64_t rows, int k, rows_kind kind)
{
    for (int64_t i = 0; i < rows; i++) {
        float *row = m + i * k;
        if (kind == ROWS_UNIFORM) {
            for (int c = 0; c < k; c++)
                row[c] = 1.0f / (float)k;
        } else if (kind == ROWS_ONE_HOT) {
            memset(row, 0, (size_t)k * sizeof *row);
            row[rng_below(r, (uint64_t)k)] = 1.0f;
        } else {
            fill_normal(r, row, k, 2.0f);
            softmax_forward_cpu(row, row, 1, k);
        }
    }
}

/* A random permutation of 0..n-1 (owned by the caller). */
static int64_t *random_perm(rng_state *r, int64_t n)
{
    int64_t *p = ecl_malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++)
        p[i] = i;
    rng_shuffle_i64(r, p, n);
    return p;
}

/* Columns of src [rows, K] shuffled into dst: dst[i, c] = src[i, perm[c]],
 * or back (inverse = 1): dst[i, perm[c]] = src[i, c]. Every sum over a
 * row then runs in another order, as a warp tree does on the device. */
static void permute_cols(const float *src, float *dst, const int64_t *perm, int64_t rows,
                         int k, int inverse)
{
    for (int64_t i = 0; i < rows; i++)
        for (int c = 0; c < k; c++) {
            int64_t from = inverse ? c : perm[c], to = inverse ? perm[c] : c;
            dst[i * k + to] = src[i * k + from];
        }
}

/* ---- the cases, shared by the CPU-only and the device tests ----------------- */

typedef struct {
    const char *name;
    int64_t b;
    int k, views;
    float logit_scale;
    rows_kind y_kind;
} loss_case;

static const loss_case loss_cases[] = {
    {"random B=64 K=10 V=2", 64, 10, 2, 3.0f, ROWS_RANDOM},
    {"K=1", 16, 1, 2, 3.0f, ROWS_RANDOM},
    {"K>B: B=4 K=100", 4, 100, 1, 3.0f, ROWS_RANDOM},
    {"K=1024 (LOSS_MAX_K)", 8, 1024, 1, 3.0f, ROWS_RANDOM},
    {"uniform sigma (zero logits)", 32, 10, 2, 0.0f, ROWS_RANDOM},
    {"one-hot y", 32, 10, 2, 3.0f, ROWS_ONE_HOT},
    {"huge logits (1e4): one-hot sigma", 32, 10, 2, 1e4f, ROWS_RANDOM},
    {"no views", 50, 7, 0, 3.0f, ROWS_RANDOM},
};

typedef struct {
    const char *name;
    int64_t n;
    int k;
    double lambda;
    rows_kind sigma_kind;
    int warm, with_u, max_iter;
} em_case;

/* tol 1e-7 with a cap of 300: most cases stop on tol, a few on the cap. */
#define EM_TEST_TOL 1e-7
static const em_case em_cases[] = {
    {"B=250 K=10 lambda=100", 250, 10, 100.0, ROWS_RANDOM, 0, 0, 300},
    {"B=250 K=100 lambda=100", 250, 100, 100.0, ROWS_RANDOM, 0, 0, 300},
    {"K=1", 40, 1, 100.0, ROWS_RANDOM, 0, 0, 300},
    {"K>B: B=20 K=300", 20, 300, 10.0, ROWS_RANDOM, 0, 0, 300},
    {"K=1024 (EM_CUDA_MAX_K)", 64, 1024, 1.0, ROWS_RANDOM, 0, 0, 50},
    {"one-hot sigma", 250, 10, 100.0, ROWS_ONE_HOT, 0, 0, 300},
    {"uniform sigma", 250, 10, 100.0, ROWS_UNIFORM, 0, 0, 300},
    {"warm start + target u", 250, 10, 1.0, ROWS_RANDOM, 1, 1, 300},
    {"max_iter = 0", 100, 10, 100.0, ROWS_RANDOM, 1, 0, 0},
    {"B=3000 K=10 (blocks of rows)", 3000, 10, 100.0, ROWS_RANDOM, 0, 0, 100},
    {"lambda = 0", 250, 10, 0.0, ROWS_RANDOM, 0, 0, 300},
};

/* Host arrays of one loss case (owned; free with loss_inputs_free). */
typedef struct {
    float *logits, *y, *u;    /* [(V+1), B, K], [B, K], [K] or NULL */
    int64_t n_logits;
} loss_inputs;

static loss_inputs loss_inputs_make(const loss_case *c, uint64_t seed, int with_u)
{
    rng_state r = rng_seeded(seed);
    loss_inputs in;
    in.n_logits = (int64_t)(c->views + 1) * c->b * c->k;
    in.logits = ecl_malloc((size_t)in.n_logits * sizeof(float));
    in.y = ecl_malloc((size_t)(c->b * c->k) * sizeof(float));
    in.u = with_u ? ecl_malloc((size_t)c->k * sizeof(float)) : NULL;
    fill_normal(&r, in.logits, in.n_logits, c->logit_scale);
    fill_rows(&r, in.y, c->b, c->k, c->y_kind);
    if (in.u)
        fill_rows(&r, in.u, 1, c->k, ROWS_RANDOM);
    return in;
}

static void loss_inputs_free(loss_inputs *in)
{
    free(in->logits);
    free(in->y);
    free(in->u);
}

/* The weights of one run: every aug form, forward CE on or off. */
static loss_weights loss_weights_for(int aug, float forward_ce)
{
    loss_weights lw = {.lambda = 100.0f, .gamma = 0.01f, .alpha = 0.7f,
                       .forward_ce = forward_ce, .y_eps = 1e-12f, .aug = (aug_form)aug};
    return lw;
}

/* Host arrays of one EM case: sigma [N, K], y0 [N, K] (warm start), u. */
typedef struct {
    float *sigma, *y0, *u;
} em_inputs;

static em_inputs em_inputs_make(const em_case *c, uint64_t seed)
{
    rng_state r = rng_seeded(seed);
    int64_t nk = c->n * c->k;
    em_inputs in = {ecl_malloc((size_t)nk * sizeof(float)),
                    ecl_malloc((size_t)nk * sizeof(float)),
                    c->with_u ? ecl_malloc((size_t)c->k * sizeof(float)) : NULL};
    fill_rows(&r, in.sigma, c->n, c->k, c->sigma_kind);
    fill_rows(&r, in.y0, c->n, c->k, ROWS_RANDOM);
    if (in.u)
        fill_rows(&r, in.u, 1, c->k, ROWS_RANDOM);
    return in;
}

static void em_inputs_free(em_inputs *in)
{
    free(in->sigma);
    free(in->y0);
    free(in->u);
}

/* ---- host-only tests: the comparison code itself ------------------------- */

/* Planted errors: identical data passes, one element past the rule fails
 * and is named, NaN fails, a difference inside the rule passes. */
static void test_tol_helpers(void)
{
    const tol_rule *r = tol_find("softmax.p");
    float want[100], got[100];
    for (int i = 0; i < 100; i++)
        want[i] = got[i] = 0.01f * (float)(i + 1);
    tol_stats st = tol_compare(r, got, want, 100);
    CHECK(st.n_bad == 0 && st.n_diff == 0 && st.max_abs == 0.0, "identical: %lld bad",
          (long long)st.n_bad);

    got[37] = want[37] * (1.0f + 2e-7f);
    st = tol_compare(r, got, want, 100);
    CHECK(st.n_bad == 0 && st.n_diff == 1, "1 ulp inside the rule: %lld bad, %lld diff",
          (long long)st.n_bad, (long long)st.n_diff);

    got[63] = want[63] * 1.001f;
    st = tol_compare(r, got, want, 100);
    CHECK(st.n_bad == 1 && st.worst == 63, "planted error: %lld bad, worst %lld",
          (long long)st.n_bad, (long long)st.worst);
    CHECK(fabs(st.max_rel - 1e-3) < 1e-5, "max rel %g, planted 1e-3", st.max_rel);

    got[63] = want[63];
    got[5] = NAN;
    st = tol_compare(r, got, want, 100);
    CHECK(st.n_bad == 1 && st.worst == 5, "NaN: %lld bad, worst %lld", (long long)st.n_bad,
          (long long)st.worst);
}

/* softmax_forward_cpu against a reference with the same float z - max but
 * exp, sum and scale in double: the softmax.p rule must hold for two
 * implementations that differ only in how exp rounds, as CPU and GPU do. */
static void test_softmax_rule_cpu(void)
{
    rng_state r = rng_seeded(11);
    enum { B = 16, K = 300 };
    static float z[B * K], p[B * K], ref[B * K];
    fill_normal(&r, z, B * K, 30.0f);
    softmax_forward_cpu(z, p, B, K);
    for (int i = 0; i < B; i++) {
        float mx = -FLT_MAX;
        double sum = 0.0;
        for (int j = 0; j < K; j++)
            mx = fmaxf(mx, z[i * K + j]);
        for (int j = 0; j < K; j++)
            sum += exp((double)(z[i * K + j] - mx));
        for (int j = 0; j < K; j++)
            ref[i * K + j] = (float)(exp((double)(z[i * K + j] - mx)) / sum);
    }
    check_tensor("softmax.p", "CPU vs double reference", p, ref, B * K);
}

/* loss_ecl_cpu on clusters permuted: each row's sums run in another order,
 * so gradient and terms differ by rounding only, within the loss rules. */
static void test_loss_rule_cpu(const loss_case *c, int aug)
{
    loss_inputs in = loss_inputs_make(c, 21, 1), pin = loss_inputs_make(c, 21, 1);
    rng_state r = rng_seeded(22);
    int64_t *perm = random_perm(&r, c->k), rows = (int64_t)(c->views + 1) * c->b;
    permute_cols(in.logits, pin.logits, perm, rows, c->k, 0);
    permute_cols(in.y, pin.y, perm, c->b, c->k, 0);
    permute_cols(in.u, pin.u, perm, 1, c->k, 0);

    float *dl = ecl_malloc((size_t)in.n_logits * sizeof(float));
    float *pdl = ecl_malloc((size_t)in.n_logits * sizeof(float));
    float *back = ecl_malloc((size_t)in.n_logits * sizeof(float));
    loss_weights lw = loss_weights_for(aug, 0.5f);
    loss_terms t, pt;
    loss_ecl_cpu(in.logits, in.y, c->b, c->k, c->views, &lw, in.u, dl, &t);
    loss_ecl_cpu(pin.logits, pin.y, c->b, c->k, c->views, &lw, pin.u, pdl, &pt);
    permute_cols(pdl, back, perm, rows, c->k, 1);

    check_tensor("loss.dlogits", c->name, back, dl, in.n_logits);
    check_scalar("loss.terms", c->name, pt.rce, t.rce);
    check_scalar("loss.terms", c->name, pt.aug, t.aug);
    check_scalar("loss.terms", c->name, pt.fairness, t.fairness);
    check_scalar("loss.terms", c->name, pt.total, t.total);
    free(dl), free(pdl), free(back), free(perm);
    loss_inputs_free(&in), loss_inputs_free(&pin);
}

/* em_solve_cpu on clusters permuted (row sums in another order, as on the
 * device): y within em.y, F within em.objective, iterations within one. */
static void test_em_rule_cpu(const em_case *c)
{
    em_inputs in = em_inputs_make(c, 31), pin = em_inputs_make(c, 31);
    rng_state r = rng_seeded(32);
    int64_t nk = c->n * c->k, *perm = random_perm(&r, c->k);
    float *y = ecl_malloc((size_t)nk * sizeof(float));
    float *back = ecl_malloc((size_t)nk * sizeof(float));
    memcpy(y, in.y0, (size_t)nk * sizeof(float));
    permute_cols(in.sigma, pin.sigma, perm, c->n, c->k, 0);
    permute_cols(in.y0, pin.y0, perm, c->n, c->k, 0);
    if (in.u)
        permute_cols(in.u, pin.u, perm, 1, c->k, 0);

    em_result a = em_solve_cpu(in.sigma, y, c->n, c->k, in.u, c->lambda, c->max_iter,
                               EM_TEST_TOL, !c->warm);
    em_result b = em_solve_cpu(pin.sigma, pin.y0, c->n, c->k, pin.u, c->lambda, c->max_iter,
                               EM_TEST_TOL, !c->warm);
    permute_cols(pin.y0, back, perm, c->n, c->k, 1);
    check_tensor("em.y", c->name, back, y, nk);
    CHECK(abs(a.iters - b.iters) <= 1, "%s: %d vs %d iterations", c->name, a.iters, b.iters);
    check_scalar("em.objective", c->name,
                 em_objective(in.sigma, back, c->n, c->k, in.u, c->lambda),
                 em_objective(in.sigma, y, c->n, c->k, in.u, c->lambda));
    free(y), free(back), free(perm);
    em_inputs_free(&in), em_inputs_free(&pin);
}

static void run_host_tests(void)
{
    test_tol_helpers();
    test_softmax_rule_cpu();
    for (size_t i = 0; i < sizeof loss_cases / sizeof loss_cases[0]; i++)
        for (int aug = AUG_KL; aug <= AUG_DOT; aug++)
            test_loss_rule_cpu(&loss_cases[i], aug);
    for (size_t i = 0; i < sizeof em_cases / sizeof em_cases[0]; i++)
        if (em_cases[i].n * em_cases[i].k <= 100000)
            test_em_rule_cpu(&em_cases[i]);
}

#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
/* ---- device tests ------------------------------------------------------------ */

/* A device copy of host x [n] (owned by the caller: ecl_cuda_free). */
static float *dev_copy(const float *x, int64_t n)
{
    if (!x)
        return NULL;
    float *d = ecl_cuda_alloc((size_t)n * sizeof(float));
    ecl_cuda_to_device(d, x, (size_t)n * sizeof(float));
    return d;
}

/* x [n] back from the device into a new host array (caller frees). */
static float *host_copy(const float *d, int64_t n)
{
    float *x = ecl_malloc((size_t)n * sizeof(float));
    ecl_cuda_to_host(x, d, (size_t)n * sizeof(float));
    return x;
}

/* Softmax of each loss case's logits, out of place and in place. */
static void test_softmax_device(const loss_case *c)
{
    loss_inputs in = loss_inputs_make(c, 41, 0);
    int64_t rows = (int64_t)(c->views + 1) * c->b;
    float *want = ecl_malloc((size_t)in.n_logits * sizeof(float));
    softmax_forward_cpu(in.logits, want, rows, c->k);

    float *dz = dev_copy(in.logits, in.n_logits);
    float *dp = ecl_cuda_alloc((size_t)in.n_logits * sizeof(float));
    softmax_forward_cuda(dz, dp, rows, c->k);
    float *got = host_copy(dp, in.n_logits);
    check_tensor("softmax.p", c->name, got, want, in.n_logits);

    softmax_forward_cuda(dz, dz, rows, c->k);
    float *got_inplace = host_copy(dz, in.n_logits);
    CHECK(memcmp(got, got_inplace, (size_t)in.n_logits * sizeof(float)) == 0,
          "%s: in-place softmax differs from out-of-place", c->name);
    ecl_cuda_free(dz), ecl_cuda_free(dp);
    free(want), free(got), free(got_inplace);
    loss_inputs_free(&in);
}

/* The five loss terms of the device against the CPU's. */
static void check_loss_terms(const char *ctx, const loss_terms *got, const loss_terms *want)
{
    char buf[256];
    const char *names[] = {"rce", "fairness", "aug", "fce", "total"};
    double g[] = {got->rce, got->fairness, got->aug, got->fce, got->total};
    double w[] = {want->rce, want->fairness, want->aug, want->fce, want->total};
    for (int i = 0; i < 5; i++) {
        snprintf(buf, sizeof buf, "%s: %s", ctx, names[i]);
        check_scalar("loss.terms", buf, g[i], w[i]);
    }
}

/* loss_ecl_cuda against loss_ecl_cpu for one case, form and beta; the
 * device run is repeated to check it gives the same bits. */
static void test_loss_device_one(const loss_case *c, int aug, float fce, int with_u)
{
    char ctx[160];
    snprintf(ctx, sizeof ctx, "%s, aug %d, beta %g, u %s", c->name, aug, fce,
             with_u ? "given" : "NULL");
    loss_inputs in = loss_inputs_make(c, 51 + (uint64_t)aug, with_u);
    loss_weights lw = loss_weights_for(aug, fce);
    float *want = ecl_malloc((size_t)in.n_logits * sizeof(float));
    loss_terms tw, tg, tg2;
    loss_ecl_cpu(in.logits, in.y, c->b, c->k, c->views, &lw, in.u, want, &tw);

    float *dz = dev_copy(in.logits, in.n_logits), *dy = dev_copy(in.y, c->b * c->k);
    float *du = dev_copy(in.u, c->k);
    float *ddl = ecl_cuda_alloc((size_t)in.n_logits * sizeof(float));
    loss_ecl_cuda(dz, dy, c->b, c->k, c->views, &lw, du, ddl, &tg);
    float *got = host_copy(ddl, in.n_logits);
    check_tensor("loss.dlogits", ctx, got, want, in.n_logits);
    check_loss_terms(ctx, &tg, &tw);

    loss_ecl_cuda(dz, dy, c->b, c->k, c->views, &lw, du, ddl, &tg2);
    CHECK(memcmp(&tg, &tg2, sizeof tg) == 0, "%s: two device runs differ", ctx);
    ecl_cuda_free(dz), ecl_cuda_free(dy), ecl_cuda_free(du), ecl_cuda_free(ddl);
    free(want), free(got);
    loss_inputs_free(&in);
}

/* loss_head_norm_cuda against loss_head_norm_cpu, grad accumulating. */
static void test_head_norm_device(int64_t n)
{
    rng_state r = rng_seeded(61);
    float *w = ecl_malloc((size_t)n * sizeof(float));
    float *g = ecl_malloc((size_t)n * sizeof(float));
    fill_normal(&r, w, n, 0.5f);
    fill_normal(&r, g, n, 0.1f);
    float *dw = dev_copy(w, n), *dg = dev_copy(g, n);
    loss_weights lw = loss_weights_for(AUG_KL, 0.0f);
    loss_terms tw = {.total = 1.5}, tg = {.total = 1.5};

    loss_head_norm_cpu(w, n, &lw, g, &tw);
    loss_head_norm_cuda(dw, n, &lw, dg, &tg);
    float *got = host_copy(dg, n);
    check_tensor("head_norm.grad", "head norm", got, g, n);
    check_scalar("head_norm.sq", "||W||^2", tg.head_norm, tw.head_norm);
    check_scalar("head_norm.sq", "total", tg.total, tw.total);
    ecl_cuda_free(dw), ecl_cuda_free(dg);
    free(w), free(g), free(got);
}

/* em_solve_cuda against em_solve_cpu for one case, and a second device run. */
static void test_em_device(const em_case *c)
{
    em_inputs in = em_inputs_make(c, 71);
    int64_t nk = c->n * c->k;
    float *want = ecl_malloc((size_t)nk * sizeof(float));
    memcpy(want, in.y0, (size_t)nk * sizeof(float));
    em_result rw = em_solve_cpu(in.sigma, want, c->n, c->k, in.u, c->lambda, c->max_iter,
                                EM_TEST_TOL, !c->warm);

    float *ds = dev_copy(in.sigma, nk), *dy = dev_copy(in.y0, nk), *du = dev_copy(in.u, c->k);
    em_result rg = em_solve_cuda(ds, dy, c->n, c->k, du, c->lambda, c->max_iter,
                                 EM_TEST_TOL, !c->warm);
    float *got = host_copy(dy, nk);
    check_tensor("em.y", c->name, got, want, nk);
    CHECK(abs(rg.iters - rw.iters) <= 1, "%s: %d device vs %d CPU iterations", c->name,
          rg.iters, rw.iters);
    CHECK((rg.max_change < EM_TEST_TOL) == (rw.max_change < EM_TEST_TOL) ||
          abs(rg.iters - rw.iters) == 1, "%s: stop reasons differ (max |dy| %g vs %g)",
          c->name, rg.max_change, rw.max_change);
    check_scalar("em.objective", c->name,
                 em_objective(in.sigma, got, c->n, c->k, in.u, c->lambda),
                 em_objective(in.sigma, want, c->n, c->k, in.u, c->lambda));

    /* Same inputs again: the fixed-order reductions give the same bits. */
    ecl_cuda_to_device(dy, in.y0, (size_t)nk * sizeof(float));
    em_result rg2 = em_solve_cuda(ds, dy, c->n, c->k, du, c->lambda, c->max_iter,
                                  EM_TEST_TOL, !c->warm);
    float *again = host_copy(dy, nk);
    CHECK(rg2.iters == rg.iters && memcmp(again, got, (size_t)nk * sizeof(float)) == 0,
          "%s: two device runs differ (%d vs %d iterations)", c->name, rg.iters, rg2.iters);
    ecl_cuda_free(ds), ecl_cuda_free(dy), ecl_cuda_free(du);
    free(want), free(got), free(again);
    em_inputs_free(&in);
}

/* The optimiser hyper-parameters the CPU and the device share. */
static optimizer optim_settings(int adam)
{
    optimizer o;
    memset(&o, 0, sizeof o);
    o.adam = adam;
    o.beta1 = 0.9f, o.beta2 = 0.999f, o.eps = 1e-8f;
    o.weight_decay = 0.05f, o.momentum = 0.9f;
    return o;
}

/* Three updates of one tensor by optim_step (CPU, a one-param model) and by
 * adam_update_cuda / sgd_update_cuda; values and moments compared. */
static void test_optim_device(int adam, int decay)
{
    enum { N = 4099, STEPS = 3 };
    static model m;
    rng_state r = rng_seeded(81);
    float *value = ecl_malloc(N * sizeof(float)), *grad = ecl_malloc(N * sizeof(float));
    fill_normal(&r, value, N, 1.0f);
    m.n_params = 1;
    m.params[0] = (param){.value = value, .grad = grad, .n = N, .decay = decay};
    optimizer o = optim_settings(adam), og = optim_settings(adam);
    o.n = 1;
    o.m1[0] = ecl_calloc(N, sizeof(float));
    o.m2[0] = adam ? ecl_calloc(N, sizeof(float)) : NULL;

    float *dv = dev_copy(value, N), *dg = ecl_cuda_alloc(N * sizeof(float));
    float *dm1 = dev_copy(o.m1[0], N), *dm2 = adam ? dev_copy(o.m2[0], N) : NULL;
    param pd = {.value = dv, .grad = dg, .n = N, .decay = decay};
    for (int s = 0; s < STEPS; s++) {
        float lr = 1e-3f * (float)(s + 1);
        fill_normal(&r, grad, N, 0.3f);
        ecl_cuda_to_device(dg, grad, N * sizeof(float));
        optim_step(&o, &m, lr);
        og.step++;
        if (adam)
            adam_update_cuda(&og, &pd, dm1, dm2, lr);
        else
            sgd_update_cuda(&og, &pd, dm1, lr);
    }

    char ctx[64];
    snprintf(ctx, sizeof ctx, "%s, decay %d, value", adam ? "adam" : "sgd", decay);
    float *got = host_copy(dv, N), *gm1 = host_copy(dm1, N);
    check_tensor("optim.tensor", ctx, got, value, N);
    check_tensor("optim.tensor", adam ? "adam m1" : "sgd momentum", gm1, o.m1[0], N);
    if (adam) {
        float *gm2 = host_copy(dm2, N);
        check_tensor("optim.tensor", "adam m2", gm2, o.m2[0], N);
        free(gm2);
    }
    ecl_cuda_free(dv), ecl_cuda_free(dg), ecl_cuda_free(dm1), ecl_cuda_free(dm2);
    free(value), free(grad), free(got), free(gm1), free(o.m1[0]), free(o.m2[0]);
}

/* Child mode (--bad=nan|sum|warm): em_solve_cuda on one planted input
 * fault, which must stop the process; returning is the failure. */
static int run_bad_input_child(const char *mode)
{
    enum { N = 16, K = 5 };
    static float sigma[N * K], y[N * K];
    rng_state r = rng_seeded(91);
    fill_rows(&r, sigma, N, K, ROWS_RANDOM);
    fill_rows(&r, y, N, K, ROWS_RANDOM);
    if (strcmp(mode, "nan") == 0) {
        sigma[7 * K + 2] = NAN;          /* reported before the later bad sum */
        sigma[9 * K + 0] += 1.0f;
    } else if (strcmp(mode, "sum") == 0) {
        sigma[3 * K + 4] += 1.0f;
    } else {
        y[4 * K + 1] = -1.0f;
    }
    float *ds = dev_copy(sigma, N * K), *dy = dev_copy(y, N * K);
    em_solve_cuda(ds, dy, N, K, NULL, 1.0, 10, 1e-6, strcmp(mode, "warm") != 0);
    printf("em_solve_cuda returned on a bad input (%s)\n", mode);
    return 0;
}

/* Runs this binary as a child with --bad=mode: it must exit 1 with the
 * CPU's message, which must contain want. */
static void test_em_input_error(const char *self, const char *mode, const char *want)
{
    char cmd[1024], text[4096] = "";
    snprintf(cmd, sizeof cmd, "'%s' --bad=%s 2>&1", self, mode);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL, "cannot run %s", cmd);
    if (!p)
        return;
    size_t n = fread(text, 1, sizeof text - 1, p);
    text[n] = '\0';
    int st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "--bad=%s: status %d, expected exit 1; "
          "output: %s", mode, st, text);
    CHECK(strstr(text, want) != NULL, "--bad=%s: expected '%s' in: %s", mode, want, text);
}

/* got and want [n] both divided by want's largest |value|, then compared:
 * for gradients, whose error scales with the tensor, not the element. */
static void check_tensor_scaled(const char *tensor, const char *ctx, const float *got,
                                const float *want, int64_t n)
{
    double scale = 0.0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    scale = scale > 0.0 ? scale : 1.0;
    float *g = ecl_malloc((size_t)n * sizeof(float)), *w = ecl_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        g[i] = (float)(got[i] / scale);
        w[i] = (float)(want[i] / scale);
    }
    check_tensor(tensor, ctx, g, w, n);
    free(g);
    free(w);
}

/* The device model against the CPU model from the same weights: training
 * forward (logits, BN running statistics), backward (every gradient) from
 * the same random dlogits, an inference forward at another batch size (a
 * second algorithm choice), and the same bits from a repeated forward.
 * 12 x 10 images reach the last block at 1 x 1 through odd sizes. */
static void test_model_device(int heads, int head_bn)
{
    char ctx[64];
    snprintf(ctx, sizeof ctx, "heads %d, head_bn %d", heads, head_bn);
    config cfg;
    config_defaults(&cfg);
    cfg.model.width = 4;
    cfg.model.clusters = 5;
    cfg.model.heads = heads;
    cfg.model.head_bn = head_bn;
    int cin = 3, h = 12, w = 10, k = 5;
    int64_t n = 6, nx = n * cin * h * w, nk = heads * n * k;
    model cpu, back;
    optimizer o, o_back;
    model_init(&cpu, &cfg, cin, h, w, 7);
    model_init(&back, &cfg, cin, h, w, 8);
    optim_init(&o, &cfg, &cpu);
    optim_init(&o_back, &cfg, &back);
    model_cuda *g = model_cuda_create(&cpu, &o, n, 0);

    rng_state r = rng_derive(11, 0x30de1, 0);
    size_t bk = (size_t)nk * sizeof(float);
    float *x = ecl_malloc((size_t)nx * sizeof(float));
    float *want = ecl_malloc(bk), *got = ecl_malloc(bk), *again = ecl_malloc(bk);
    float *dl = ecl_malloc(bk);
    fill_normal(&r, x, nx, 1.0f);
    fill_normal(&r, dl, nk, 0.1f);

    model_forward(&cpu, x, n, 1, want);
    model_cuda_forward(g, x, n, 1);
    ecl_cuda_to_host(got, model_cuda_logits(g), (size_t)nk * sizeof(float));
    check_tensor("model.logits", ctx, got, want, nk);

    model_backward(&cpu, dl, n);
    ecl_cuda_to_device(model_cuda_dlogits(g), dl, (size_t)nk * sizeof(float));
    model_cuda_backward(g, n);
    model_cuda_download(g, &back, &o_back);
    for (int i = 0; i < cpu.n_params; i++) {
        char c2[128];
        snprintf(c2, sizeof c2, "%s, grad of %s", ctx, cpu.params[i].name);
        check_tensor_scaled("model.grad", c2, back.params[i].grad, cpu.params[i].grad,
                            cpu.params[i].n);
    }
    for (int i = 0; i < cpu.n_buffers; i++) {
        char c2[128];
        snprintf(c2, sizeof c2, "%s, %s", ctx, cpu.buffers[i].name);
        check_tensor("model.bn_stats", c2, back.buffers[i].value, cpu.buffers[i].value,
                     cpu.buffers[i].n);
    }

    /* Inference at n - 1 images, after the training step's statistics. */
    int64_t ne = n - 1, nke = heads * ne * k;
    model_forward(&cpu, x, ne, 0, want);
    model_cuda_forward(g, x, ne, 0);
    ecl_cuda_to_host(got, model_cuda_logits(g), (size_t)nke * sizeof(float));
    check_tensor("model.logits", ctx, got, want, nke);
    model_cuda_forward(g, x, ne, 0);
    ecl_cuda_to_host(again, model_cuda_logits(g), (size_t)nke * sizeof(float));
    CHECK(memcmp(got, again, (size_t)nke * sizeof(float)) == 0,
          "device model [%s]: two inference passes differ", ctx);

    /* A planted NaN gradient is found and named. */
    char name[48] = "";
    CHECK(model_cuda_nonfinite_grads(g, name, sizeof name) == 0,
          "device model [%s]: non-finite gradients after a clean backward", ctx);
    param *hw = model_cuda_head_w(g, heads - 1);
    float nan_value = NAN;
    ecl_cuda_to_device(hw->grad + 3, &nan_value, sizeof nan_value);
    CHECK(model_cuda_nonfinite_grads(g, name, sizeof name) == 1 && strcmp(name, hw->name) == 0,
          "device model [%s]: a NaN planted in %s's gradient was not found (got '%s')", ctx,
          hw->name, name);

    model_cuda_destroy(g);
    model_free(&cpu);
    model_free(&back);
    optim_free(&o);
    optim_free(&o_back);
    free(x); free(want); free(got); free(again); free(dl);
}

static void run_device_tests(const char *self)
{
    test_model_device(1, 0);
    test_model_device(2, 1);
    size_t n_loss = sizeof loss_cases / sizeof loss_cases[0];
    for (size_t i = 0; i < n_loss; i++) {
        test_softmax_device(&loss_cases[i]);
        for (int aug = AUG_KL; aug <= AUG_DOT; aug++)
            test_loss_device_one(&loss_cases[i], aug, aug % 2 ? 0.5f : 0.0f, aug >= AUG_CE);
    }
    test_head_norm_device(1);
    test_head_norm_device(100003);
    for (size_t i = 0; i < sizeof em_cases / sizeof em_cases[0]; i++)
        test_em_device(&em_cases[i]);
    for (int adam = 0; adam <= 1; adam++)
        for (int decay = 0; decay <= 1; decay++)
            test_optim_device(adam, decay);
    test_em_input_error(self, "nan", "em_solve_cuda: sigma[7, 2] = nan");
    test_em_input_error(self, "sum", "em_solve_cuda: row 3 of sigma sums to ");
    test_em_input_error(self, "warm", "em_solve_cuda: warm-start y[4, 1] = -1");
    ecl_cuda_release_scratch();
}
#endif

int main(int argc, char **argv)
{
    ecl_log_set_level(0);
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
    if (argc == 2 && strncmp(argv[1], "--bad=", 6) == 0)
        return run_bad_input_child(argv[1] + 6);
#endif
    run_host_tests();

    /* The host checks decide alone when there is nothing to run on. */
#if defined(ECL_HAVE_CUDA) && ECL_HAVE_CUDA
    char why[512];
    if (!ecl_cuda_probe(why, sizeof why)) {
        if (check_summary("test_cuda (host checks)") != 0)
            return 1;
        printf("skipped: %s\n", why);
        return 77;
    }
    run_device_tests(argv[0]);
    return check_summary("test_cuda");
#else
    (void)argc, (void)argv;
    if (check_summary("test_cuda (host checks)") != 0)
        return 1;
    printf("skipped: built without CUDA (nvcc was not found by make; put CUDA's bin/ on "
           "PATH or pass NVCC=/path/to/nvcc)\n");
    return 77;
#endif
}
