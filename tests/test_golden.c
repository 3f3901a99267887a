/*
 * test_golden.c - one whole training step of a small vgg4 against PyTorch.
 *
 * scripts/make_golden.py (make golden) computed the step in float64 with
 * autograd and stored it in tests/golden/ (safetensors): starting params and
 * buffers, the input batch (clean and augmented views), logits, sigma, the
 * EM labels y, every loss term, every gradient, the running statistics after
 * the forward and the params after one Adam step. This test replays the
 * trainer's step (src/train.c: train_step and head_step) with the library's
 * ops on the same values and compares every tensor against one tolerance
 * table. The case's config comes from the file's metadata.
 *
 * It also proves it is not vacuous: the golden tensors must be non-trivial,
 * and the same comparison with one conv weight moved by 1e-2 must fail.
 *
 * Not here: torch (CI has none: the files are committed, and a missing file
 * is a failure, not a skip); gradients by finite differences (test_ops_grad).
 */
#include "check.h"

#include <stdlib.h>
#include <string.h>

#include "ecl/config.h"
#include "ecl/core.h"
#include "ecl/loss.h"
#include "ecl/model.h"
#include "ecl/ops.h"
#include "ecl/optim.h"
#include "ecl/safetensors.h"
#include "ecl/solvers.h"

static const char *const golden_files[] = {
    "tests/golden/vgg4_step.safetensors",
    "tests/golden/vgg4_step_rgb.safetensors",
};

/*
 * The tolerance table. An element passes when
 *     |got - ref| <= floor + atol * max|ref of the tensor| + rtol * |ref|.
 * The absolute part is scaled by the tensor's largest value because the
 * float32 error of a sum (conv, batch norm, GEMM) follows its largest terms,
 * not the element: a gradient near zero is a difference of big numbers.
 * floor is in the tensor's own units, for a value that is itself near zero.
 * float32 epsilon is 6e-8; each bound sits 10-50x above the largest error
 * measured on both cases (printed by this test), so other GEMM engines and
 * thread counts pass while a real bug (a weight moved by 1e-2) does not.
 * Params after Adam get one more, per-element, term: golden_adam_slack.
 */
typedef struct {
    const char *kind;
    double floor, atol, rtol;
    const char *why;
} golden_tol;

static const golden_tol golden_tols[] = {
    { "logits", 0, 2e-5, 1e-5, "4 float32 convs (sums of <= 288 terms), 5 BNs, GEMMs" },
    { "sigma", 0, 2e-5, 1e-5, "softmax of the logits: their error, bounded by the scale" },
    { "y", 0, 1e-5, 1e-5, "15 EM iterations at lambda 100 carry sigma's error; y float" },
    { "loss", 0, 1e-5, 1e-5, "per-row sums in double from float logits and y" },
    { "fairness", 1e-7, 0, 1e-4, "KL(u||ybar) ~1e-7 at the EM labels: float y's rounding" },
    { "grad", 0, 1e-4, 1e-4, "backward through 5 batch norms: cancelling float32 sums" },
    { "running", 0, 1e-6, 1e-6, "batch mean/var of float32 activations, one momentum step" },
    { "after", 0, 1e-6, 1e-6, "Adam moves each param by ~lr sign(g); + the grad's slack" },
};

/* The table row for a stored tensor's name. */
static const golden_tol *golden_tol_for(const char *name)
{
    const char *kind = name;
    size_t len = strlen(name);
    if (strcmp(name, "loss.fairness") == 0)
        kind = "fairness";
    else if (strncmp(name, "loss.", 5) == 0)
        kind = "loss";
    else if (len > 5 && strcmp(name + len - 5, ".grad") == 0)
        kind = "grad";
    else if (strstr(name, "running") && strstr(name, ".after"))
        kind = "running";
    else if (len > 6 && strcmp(name + len - 6, ".after") == 0)
        kind = "after";
    for (size_t i = 0; i < sizeof golden_tols / sizeof golden_tols[0]; i++)
        if (strcmp(golden_tols[i].kind, kind) == 0)
            return &golden_tols[i];
    ECL_FATAL("test_golden: no tolerance for tensor '%s'", name);
}

/* ---- the golden file -------------------------------------------------------- */

typedef struct {
    st_file file;
    config cfg;
    int64_t n, b;           /* images (all views) and batch */
    int k, views, cin, h, w;
} golden_case;

/* The stored tensor `name` as n doubles (from F32 or F64); stops with a
 * message naming the file and the fix when it is missing or misshapen. */
static double *golden_get(const golden_case *gc, const char *name, int64_t n)
{
    const st_tensor *t = st_find(&gc->file, name);
    ECL_CHECK(t, "%s has no tensor '%s'; regenerate it with `make golden`", gc->file.path,
              name);
    ECL_CHECK(st_numel(t) == n && (t->dtype == ST_F32 || t->dtype == ST_F64),
              "%s: tensor '%s' is %s with %lld values, expected F32 or F64 with %lld",
              gc->file.path, name, st_dtype_name(t->dtype), (long long)st_numel(t),
              (long long)n);
    double *v = ecl_malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == ST_F32) {
            float f;
            memcpy(&f, (const uint8_t *)t->data + i * 4, 4);
            v[i] = f;
        } else {
            memcpy(&v[i], (const uint8_t *)t->data + i * 8, 8);
        }
    }
    return v;
}

/* Copies the stored float32 tensor `name` into dst [n]. */
static void golden_get_f32(const golden_case *gc, const char *name, float *dst, int64_t n)
{
    double *v = golden_get(gc, name, n);
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)v[i];
    free(v);
}

/* Reads the file and builds the config from its metadata (config keys). */
static int golden_open(golden_case *gc, const char *path)
{
    memset(gc, 0, sizeof *gc);
    if (st_read(path, &gc->file) != 0) {
        fprintf(stderr, "test_golden: %s\n  the golden files are committed (run tests "
                "from the repository root); regenerate them with `make golden` (needs "
                "python3-torch)\n", ecl_last_error());
        return -1;
    }
    config_defaults(&gc->cfg);
    for (int i = 0; i < gc->file.n_meta; i++) {
        const st_meta_entry *e = &gc->file.meta[i];
        if (strchr(e->key, '.') && config_set(&gc->cfg, e->key, e->value) != 0) {
            fprintf(stderr, "test_golden: %s: metadata: %s\n", path, ecl_last_error());
            return -1;
        }
    }

    /* Shapes: x is [(V+1) B, C, H, W]. */
    const st_tensor *x = st_find(&gc->file, "x");
    if (!x || x->ndim != 4) {
        fprintf(stderr, "test_golden: %s: no 4-d tensor 'x'\n", path);
        return -1;
    }
    gc->n = x->shape[0];
    gc->cin = (int)x->shape[1];
    gc->h = (int)x->shape[2];
    gc->w = (int)x->shape[3];
    gc->b = gc->cfg.run.batch;
    gc->views = gc->cfg.augment.views;
    gc->k = gc->cfg.model.clusters;
    if (gc->n != (gc->views + 1) * gc->b) {
        fprintf(stderr, "test_golden: %s: x has %lld images, expected (views + 1) x batch "
                "= %lld\n", path, (long long)gc->n, (long long)((gc->views + 1) * gc->b));
        return -1;
    }
    return 0;
}

/* ---- the step, as the trainer runs it ------------------------------------- */

typedef struct {
    model net;              /* grads of the step, values after Adam */
    float *logits;          /* [N, K] */
    float *sigma, *y;       /* [B, K] */
    loss_terms t;
    int em_iters;
} golden_step;

/* The model of the case with the stored starting params and buffers. */
static void golden_load_model(const golden_case *gc, model *m)
{
    model_init(m, &gc->cfg, gc->cin, gc->h, gc->w, 0);
    for (int i = 0; i < m->n_params; i++)
        golden_get_f32(gc, m->params[i].name, m->params[i].value, m->params[i].n);
    for (int i = 0; i < m->n_buffers; i++)
        golden_get_f32(gc, m->buffers[i].name, m->buffers[i].value, m->buffers[i].n);
}

/* train_step + head_step of src/train.c for one head; `perturb` is added
 * to the first weight of block 1's conv before the step. */
static void golden_run_step(const golden_case *gc, float perturb, golden_step *s)
{
    const config *cfg = &gc->cfg;
    int64_t n = gc->n, b = gc->b;
    int k = gc->k;
    memset(s, 0, sizeof *s);
    golden_load_model(gc, &s->net);
    s->net.blocks[1].wt->value[0] += perturb;

    /* All views in one training forward; sigma of the clean view. */
    float *x = ecl_malloc((size_t)(n * gc->cin * gc->h * gc->w) * sizeof(float));
    golden_get_f32(gc, "x", x, n * gc->cin * gc->h * gc->w);
    s->logits = ecl_malloc((size_t)(n * k) * sizeof(float));
    s->sigma = ecl_malloc((size_t)(b * k) * sizeof(float));
    s->y = ecl_malloc((size_t)(b * k) * sizeof(float));
    model_forward(&s->net, x, n, 1, s->logits);
    softmax_forward_cpu(s->logits, s->sigma, b, k);

    /* Pseudo-labels with the trainer's solver options. */
    solver_options so = solver_default_options(SOLVER_EM);
    ECL_CHECK(solver_parse(cfg->em.solver, &so.kind) == 0, "%s", ecl_last_error());
    so.max_iter = cfg->em.max_iter;
    so.tol = cfg->em.tol;
    so.init_from_sigma = 1;
    s->em_iters = solver_solve(s->sigma, s->y, b, k, NULL, cfg->loss.lambda, &so).iters;

    /* Loss and logit gradient, backward, head norm, one Adam step. */
    loss_weights lw = { cfg->loss.lambda, cfg->loss.gamma, cfg->loss.alpha,
                        cfg->loss.forward_ce, cfg->loss.y_eps,
                        (aug_form)loss_aug_form_parse(cfg->loss.aug_form) };
    float *dlogits = ecl_malloc((size_t)(n * k) * sizeof(float));
    loss_ecl_cpu(s->logits, s->y, b, k, gc->views, &lw, NULL, dlogits, &s->t);
    model_backward(&s->net, dlogits, n);
    param *hw = s->net.head_w[0];
    loss_head_norm_cpu(hw->value, hw->n, &lw, hw->grad, &s->t);
    optimizer opt;
    optim_init(&opt, cfg, &s->net);
    optim_step(&opt, &s->net, optim_lr_at(cfg, 0, 1, 0));
    optim_free(&opt);
    free(dlogits);
    free(x);
}

static void golden_step_free(golden_step *s)
{
    model_free(&s->net);
    free(s->logits);
    free(s->sigma);
    free(s->y);
}

/* ---- comparison ------------------------------------------------------------- */

/* One tensor against its stored reference under its table row, plus the
 * per-element slack [n] when non-NULL; prints a line when verbose. Returns
 * 1 when out of tolerance. */
static int golden_compare(const golden_case *gc, const char *name, const double *got,
                          int64_t n, const double *slack, int verbose)
{
    const golden_tol *tol = golden_tol_for(name);
    double *ref = golden_get(gc, name, n);
    double scale = 0.0, max_abs = 0.0, worst = 0.0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(ref[i]));

    /* worst: the largest error as a fraction of its element's bound. */
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(got[i] - ref[i]);
        double bound = tol->floor + tol->atol * scale + tol->rtol * fabs(ref[i])
                     + (slack ? slack[i] : 0.0);
        max_abs = fmax(max_abs, err);
        worst = isfinite(err) ? fmax(worst, err / bound) : INFINITY;
    }
    free(ref);
    if (verbose)
        printf("  %-30s %6lld  max|ref| %9.3g  abs %9.3g  rel %9.3g  %5.1f%% of tol  %s\n",
               name, (long long)n, scale, max_abs, scale > 0 ? max_abs / scale : 0.0,
               100.0 * worst, worst <= 1.0 ? "ok" : "FAIL");
    return worst > 1.0;
}

/* Same, for a float array. */
static int golden_compare_f32(const golden_case *gc, const char *name, const float *got,
                              int64_t n, const double *slack, int verbose)
{
    double *d = ecl_malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = got[i];
    int bad = golden_compare(gc, name, d, n, slack, verbose);
    free(d);
    return bad;
}

/*
 * What the gradient's own tolerance allows in the Adam step [n]. At step 1
 * from zero moments the bias corrections cancel and the update is
 * lr g / (|g| + eps), of slope lr eps / (|g| + eps)^2: for |g| near eps the
 * float32 noise of g becomes up to lr of movement. Such gradients exist: the
 * last block's BN bias of a channel the ReLU passes everywhere only shifts
 * a pooled feature that the head BN centres away, so its gradient is zero
 * but for rounding (2e-18 in float64, ~1e-9 in float32).
 */
static double *golden_adam_slack(const golden_case *gc, const param *p)
{
    char name[80];
    snprintf(name, sizeof name, "%s.grad", p->name);
    const golden_tol *tg = golden_tol_for(name);
    double *g = golden_get(gc, name, p->n), scale = 0.0;
    for (int64_t i = 0; i < p->n; i++)
        scale = fmax(scale, fabs(g[i]));

    double lr = gc->cfg.optim.lr, eps = gc->cfg.optim.eps;
    for (int64_t i = 0; i < p->n; i++) {
        double g_tol = tg->floor + tg->atol * scale + tg->rtol * fabs(g[i]);
        double d = fabs(g[i]) + eps;
        g[i] = fmin(2.0 * lr, lr * eps / (d * d) * g_tol);
    }
    return g;
}

/* Every stored result against the step; returns how many tensors fail. */
static int golden_compare_step(const golden_case *gc, const golden_step *s, int verbose)
{
    int64_t bk = gc->b * gc->k;
    int bad = golden_compare_f32(gc, "logits", s->logits, gc->n * gc->k, NULL, verbose);
    bad += golden_compare_f32(gc, "sigma", s->sigma, bk, NULL, verbose);
    bad += golden_compare_f32(gc, "y", s->y, bk, NULL, verbose);

    /* Loss terms. */
    const char *names[] = { "loss.rce", "loss.fairness", "loss.head_norm", "loss.aug",
                            "loss.fce", "loss.total" };
    double vals[] = { s->t.rce, s->t.fairness, s->t.head_norm, s->t.aug, s->t.fce,
                      s->t.total };
    for (int i = 0; i < 6; i++)
        bad += golden_compare(gc, names[i], &vals[i], 1, NULL, verbose);

    /* Gradients, running statistics, params after the step. */
    char name[80];
    for (int i = 0; i < s->net.n_params; i++) {
        const param *p = &s->net.params[i];
        snprintf(name, sizeof name, "%s.grad", p->name);
        bad += golden_compare_f32(gc, name, p->grad, p->n, NULL, verbose);
    }
    for (int i = 0; i < s->net.n_buffers; i++) {
        const buffer *q = &s->net.buffers[i];
        snprintf(name, sizeof name, "%s.after", q->name);
        bad += golden_compare_f32(gc, name, q->value, q->n, NULL, verbose);
    }
    for (int i = 0; i < s->net.n_params; i++) {
        const param *p = &s->net.params[i];
        snprintf(name, sizeof name, "%s.after", p->name);
        double *slack = golden_adam_slack(gc, p);
        bad += golden_compare_f32(gc, name, p->value, p->n, slack, verbose);
        free(slack);
    }
    return bad;
}

/* ---- the golden data is not trivial ----------------------------------------- */

/* max |stored a - stored b| over n values. */
static double golden_max_diff(const golden_case *gc, const char *a, const char *b, int64_t n)
{
    double *va = golden_get(gc, a, n), *vb = golden_get(gc, b, n), d = 0.0;
    for (int64_t i = 0; i < n; i++)
        d = fmax(d, fabs(va[i] - vb[i]));
    free(va);
    free(vb);
    return d;
}

/* Every stored tensor has a non-zero entry; EM moved y away from sigma; the
 * step moved every param; every loss term is in use. */
static void golden_check_nontrivial(const golden_case *gc, const model *m)
{
    for (int i = 0; i < gc->file.n_tensors; i++) {
        const st_tensor *t = &gc->file.tensors[i];
        double *v = golden_get(gc, t->name, st_numel(t)), mx = 0.0;
        for (int64_t j = 0; j < st_numel(t); j++)
            mx = fmax(mx, fabs(v[j]));
        free(v);
        CHECK(mx > 0.0, "%s: golden tensor '%s' is all zero", gc->file.path, t->name);
    }
    int64_t bk = gc->b * gc->k;
    CHECK(golden_max_diff(gc, "y", "sigma", bk) > 1e-2, "%s: EM left y = sigma",
          gc->file.path);
    char after[80];
    for (int i = 0; i < m->n_params; i++) {
        snprintf(after, sizeof after, "%s.after", m->params[i].name);
        double moved = golden_max_diff(gc, m->params[i].name, after, m->params[i].n);
        CHECK(moved > 0.1 * gc->cfg.optim.lr, "%s: Adam left %s unchanged (moved %g)",
              gc->file.path, m->params[i].name, moved);
    }
    CHECK(gc->cfg.loss.gamma > 0 && gc->cfg.loss.alpha > 0 && gc->cfg.loss.forward_ce > 0
          && gc->cfg.optim.weight_decay > 0 && gc->views > 0,
          "%s: a loss term or the weight decay is switched off", gc->file.path);
}

/* ---- the cases ---------------------------------------------------------------- */

static void golden_run_case(const char *path)
{
    golden_case gc;
    printf("%s\n", path);
    if (golden_open(&gc, path) != 0) {
        CHECK(0, "cannot open golden file %s", path);
        return;
    }

    /* The step as trained; every tensor within its tolerance. */
    golden_step s;
    golden_run_step(&gc, 0.0f, &s);
    CHECK(s.em_iters == gc.cfg.em.max_iter, "EM did %d iterations, the reference %d",
          s.em_iters, gc.cfg.em.max_iter);
    int bad = golden_compare_step(&gc, &s, 1);
    CHECK(bad == 0, "%s: %d tensors out of tolerance (table above)", path, bad);
    golden_check_nontrivial(&gc, &s.net);
    golden_step_free(&s);

    /* The comparison can fail: one weight moved by 1e-2 must show. */
    golden_run_step(&gc, 1e-2f, &s);
    int bad_perturbed = golden_compare_step(&gc, &s, 0);
    printf("  with block1.conv.weight[0] + 1e-2: %d tensors out of tolerance\n",
           bad_perturbed);
    CHECK(bad_perturbed > 10, "%s: a perturbed weight failed only %d comparisons", path,
          bad_perturbed);
    CHECK(golden_compare_f32(&gc, "logits", s.logits, gc.n * gc.k, NULL, 0) == 1,
          "%s: a perturbed weight left the logits within tolerance", path);
    golden_step_free(&s);
    st_free(&gc.file);
}

int main(void)
{
    ecl_log_set_level(0);
    for (size_t i = 0; i < sizeof golden_files / sizeof golden_files[0]; i++)
        golden_run_case(golden_files[i]);

    printf("tolerances (|err| <= floor + atol * max|ref| + rtol * |ref|):\n");
    for (size_t i = 0; i < sizeof golden_tols / sizeof golden_tols[0]; i++)
        printf("  %-8s floor %-5.0g atol %-5.0g rtol %-5.0g %s\n", golden_tols[i].kind,
               golden_tols[i].floor, golden_tols[i].atol, golden_tols[i].rtol,
               golden_tols[i].why);
    return check_summary("test_golden");
}
