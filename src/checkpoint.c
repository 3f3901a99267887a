/*
 * checkpoint.c - training checkpoints as safetensors files (see
 * checkpoint.h for what a file holds and what loading checks).
 *
 * Save and load share one list of "slots": the name, shape and float array
 * of every tensor the model, optimiser and state imply. Saving hands the
 * arrays to the writer; loading checks the whole file against the list
 * before copying anything, so a refused checkpoint leaves the run as it was.
 * The config check compares the stored INI text with this run's, key by key,
 * so the refusal can say which keys differ and how.
 * Not here: deciding when to save (train.c), converting other dtypes.
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/checkpoint.h"
#include "ecl/core.h"
#include "ecl/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_MAX_SLOTS (4 * MODEL_MAX_PARAMS + 1)
#define CKPT_NAME_BYTES 64
#define CKPT_LIST_BYTES 600

/* One tensor the checkpoint must hold. */
typedef struct {
    char name[CKPT_NAME_BYTES];
    int64_t shape[4];
    int ndim;
    float *values;      /* [product of shape]: source on save, destination on load */
    int optional;       /* 1: absent is fine (em.y_store) */
} ckpt_slot;

/*
 * Config keys that never change the numbers a run computes, so a resume may
 * change them freely. Keys the trainer adds for checkpointing itself (the
 * resume path, the save interval, how many to keep) belong here too.
 */
static const char *const ckpt_harmless_keys[] = {
    "run.out", "run.threads", "run.quiet", "run.log_every", "run.eval_every",
    "run.kmeans_baseline", "augment.workers", "run.checkpoint_every", "run.keep_checkpoints",
};
#define N_HARMLESS ((int)(sizeof ckpt_harmless_keys / sizeof ckpt_harmless_keys[0]))

/* Appends printf text to buf (a bounded list); marks a cut with "...". */
static void ckpt_append(char *buf, size_t size, const char *fmt, ...)
{
    size_t at = strlen(buf);
    if (at + 4 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + at, size - at, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - at)
        snprintf(buf + size - 4, 4, "...");
}

static const char *ckpt_shape_str(const int64_t *shape, int ndim, char *buf, size_t size)
{
    buf[0] = '\0';
    ckpt_append(buf, size, "[");
    for (int d = 0; d < ndim; d++)
        ckpt_append(buf, size, "%s%lld", d ? ", " : "", (long long)shape[d]);
    ckpt_append(buf, size, "]");
    return buf;
}

/* ------------------------------------------------------------------------
 * The slot list
 * ------------------------------------------------------------------------ */

static ckpt_slot *ckpt_add_slot(ckpt_slot *s, int *n, const char *prefix, const char *name,
                                float *values)
{
    ECL_CHECK(*n < CKPT_MAX_SLOTS, "more than %d checkpoint tensors", CKPT_MAX_SLOTS);
    ckpt_slot *t = &s[(*n)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s%s", prefix, name);
    t->values = values;
    return t;
}

/* Every tensor m, o and st imply, in file order. Returns the count. */
static int ckpt_slots(const model *m, const optimizer *o, const checkpoint_state *st,
                      ckpt_slot *s)
{
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        const param *p = &m->params[i];
        ckpt_slot *t = ckpt_add_slot(s, &n, "", p->name, p->value);
        t->ndim = p->ndim;
        memcpy(t->shape, p->shape, sizeof t->shape);
    }
    for (int i = 0; i < m->n_buffers; i++) {
        ckpt_slot *t = ckpt_add_slot(s, &n, "", m->buffers[i].name, m->buffers[i].value);
        t->ndim = 1;
        t->shape[0] = m->buffers[i].n;
    }

    /* Moments share their param's shape; SGD has no second moment. */
    ECL_CHECK(!o || o->n == m->n_params, "optimizer has %d params, model %d",
              o ? o->n : 0, m->n_params);
    for (int pass = 0; o && pass < (o->adam ? 2 : 1); pass++)
        for (int i = 0; i < o->n; i++) {
            ckpt_slot *t = ckpt_add_slot(s, &n, pass ? "optim.m2." : "optim.m1.",
                                         m->params[i].name, pass ? o->m2[i] : o->m1[i]);
            t->ndim = m->params[i].ndim;
            memcpy(t->shape, m->params[i].shape, sizeof t->shape);
        }
    if (st && st->y_store) {
        ckpt_slot *t = ckpt_add_slot(s, &n, "", "em.y_store", st->y_store);
        t->ndim = 3;
        t->shape[0] = m->n_heads;
        t->shape[1] = st->n_samples;
        t->shape[2] = m->k;
        t->optional = 1;
    }
    return n;
}

/* ------------------------------------------------------------------------
 * Saving
 * ------------------------------------------------------------------------ */

/* The resolved config as INI text (malloc'd), as config_write_ini writes it. */
static int ckpt_config_text(const config *cfg, char **text)
{
    size_t n = 0;
    *text = NULL;
    FILE *mem = open_memstream(text, &n);
    ECL_CHECK(mem != NULL, "open_memstream failed: %s", strerror(errno));
    int rc = config_write_ini(cfg, mem);
    ECL_CHECK(fclose(mem) == 0, "writing the config to memory failed");
    if (rc != 0) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

/* Keys are fixed and distinct here, so a refusal is a programming error. */
static void ckpt_meta_str(st_writer *w, const char *key, const char *v)
{
    ECL_CHECK(st_writer_meta(w, key, v) == 0, "%s", ecl_last_error());
}

static void ckpt_meta_i64(st_writer *w, const char *key, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    ckpt_meta_str(w, key, buf);
}

/* The metadata strings (checkpoint.h lists them). */
static void ckpt_add_meta(st_writer *w, const model *m, const optimizer *o,
                          const checkpoint_state *st, const config *cfg, const char *ini)
{
    char buf[32];
    ckpt_meta_str(w, "format", CHECKPOINT_FORMAT);
    ckpt_meta_i64(w, "version", CHECKPOINT_VERSION);
    ckpt_meta_str(w, "ecl_version", ECL_VERSION);
    ckpt_meta_str(w, "model", cfg->model.name);
    ckpt_meta_i64(w, "clusters", m->k);
    ckpt_meta_i64(w, "heads", m->n_heads);
    ckpt_meta_str(w, "optimizer", !o ? "none" : o->adam ? "adam" : "sgd");
    if (o)
        ckpt_meta_i64(w, "optim_step", o->step);
    if (st) {
        ckpt_meta_i64(w, "epoch", st->epoch);
        ckpt_meta_i64(w, "step_in_epoch", st->step_in_epoch);
        ckpt_meta_i64(w, "global_step", st->global_step);
        snprintf(buf, sizeof buf, "%" PRIu64, st->seed);
        ckpt_meta_str(w, "seed", buf);
        ckpt_meta_i64(w, "best_head", st->best_head);
        if (st->train_stats)
            ckpt_meta_str(w, "train_stats", st->train_stats);
    }
    snprintf(buf, sizeof buf, "%016" PRIx64, config_fingerprint(cfg));
    ckpt_meta_str(w, "config_fingerprint", buf);
    ckpt_meta_str(w, "config", ini);
}

int checkpoint_save(const char *path, const model *m, const optimizer *o,
                    const checkpoint_state *st, const config *cfg)
{
    char *ini;
    if (ckpt_config_text(cfg, &ini) != 0)
        return -1;
    st_writer w;
    st_writer_init(&w);
    ckpt_add_meta(&w, m, o, st, cfg, ini);

    /* Tensors point at the live arrays: nothing is copied before the write. */
    ckpt_slot slots[CKPT_MAX_SLOTS];
    int n = ckpt_slots(m, o, st, slots);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++)
        rc = st_writer_add(&w, slots[i].name, ST_F32, slots[i].shape, slots[i].ndim,
                           slots[i].values);
    if (rc == 0)
        rc = st_writer_write(&w, path);
    st_writer_free(&w);
    free(ini);
    return rc;
}

/* ------------------------------------------------------------------------
 * Comparing two INI texts key by key
 * ------------------------------------------------------------------------ */

typedef struct {
    char key[96];       /* "section.key" */
    char *value;
} ini_entry;

/* The "key = value" lines of text under their [section]s; returns the count
 * and a malloc'd array in *out (free with ini_entries_free). */
static int ini_entries(const char *text, ini_entry **out)
{
    int n = 0, cap = 64;
    ini_entry *e = ecl_malloc((size_t)cap * sizeof *e);
    char section[64] = "";
    for (const char *line = text; *line; ) {
        const char *end = strchr(line, '\n');
        int len = end ? (int)(end - line) : (int)strlen(line);
        const char *eq = memchr(line, '=', (size_t)len);

        /* Section headers switch the prefix; comments and blanks are skipped. */
        if (len > 2 && line[0] == '[' && line[len - 1] == ']') {
            snprintf(section, sizeof section, "%.*s", len - 2, line + 1);
        } else if (eq && line[0] != ';' && line[0] != '#') {
            int klen = (int)(eq - line), vstart = klen + 1;
            while (klen > 0 && line[klen - 1] == ' ')
                klen--;
            while (vstart < len && line[vstart] == ' ')
                vstart++;
            if (n == cap)
                e = ecl_realloc(e, (size_t)(cap *= 2) * sizeof *e);
            snprintf(e[n].key, sizeof e[n].key, "%s.%.*s", section, klen, line);
            e[n].value = ecl_malloc((size_t)(len - vstart) + 1);
            memcpy(e[n].value, line + vstart, (size_t)(len - vstart));
            e[n].value[len - vstart] = '\0';
            n++;
        }
        line += len + (end != NULL);
    }
    *out = e;
    return n;
}

static void ini_entries_free(ini_entry *e, int n)
{
    for (int i = 0; i < n; i++)
        free(e[i].value);
    free(e);
}

static const char *ini_find(const ini_entry *e, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].key, key) == 0)
            return e[i].value;
    return NULL;
}

static int ckpt_is_harmless(const char *key)
{
    for (int i = 0; i < N_HARMLESS; i++)
        if (strcmp(key, ckpt_harmless_keys[i]) == 0)
            return 1;
    return 0;
}

/* Keys whose values differ between the checkpoint's config and this one. */
typedef struct {
    char relevant[CKPT_LIST_BYTES];   /* "model.clusters = 20 in the checkpoint, 10 here; ..." */
    char harmless[CKPT_LIST_BYTES];
    int n_relevant, n_harmless;
} ckpt_diff;

/* One differing key into the right list; NULL stands for "absent". */
static void ckpt_diff_add(ckpt_diff *d, const char *key, const char *was, const char *now)
{
    int harmless = ckpt_is_harmless(key);
    char *list = harmless ? d->harmless : d->relevant;
    int *count = harmless ? &d->n_harmless : &d->n_relevant;
    ckpt_append(list, CKPT_LIST_BYTES, "%s%s = %s%s%s in the checkpoint, %s%s%s in this config",
                *count ? "; " : "", key, was ? "\"" : "", was ? was : "(absent)",
                was ? "\"" : "", now ? "\"" : "", now ? now : "(absent)", now ? "\"" : "");
    (*count)++;
}

/* Compares the two INI texts; with `section` set, only keys of that section. */
static void ckpt_config_diff(const char *stored, const char *current, const char *section,
                             ckpt_diff *d)
{
    memset(d, 0, sizeof *d);
    ini_entry *a, *b;
    int na = ini_entries(stored, &a), nb = ini_entries(current, &b);
    size_t sl = section ? strlen(section) : 0;

    /* Every key of this config against the stored one, then keys only stored. */
    for (int i = 0; i < nb; i++) {
        const char *was = ini_find(a, na, b[i].key);
        if ((!section || strncmp(b[i].key, section, sl) == 0) &&
            (!was || strcmp(was, b[i].value) != 0))
            ckpt_diff_add(d, b[i].key, was, b[i].value);
    }
    for (int i = 0; i < na; i++)
        if ((!section || strncmp(a[i].key, section, sl) == 0) && !ini_find(b, nb, a[i].key))
            ckpt_diff_add(d, a[i].key, a[i].value, NULL);
    ini_entries_free(a, na);
    ini_entries_free(b, nb);
}

/* ------------------------------------------------------------------------
 * Loading: checks on the file, then the copy
 * ------------------------------------------------------------------------ */

/* A required metadata string, or an error naming it. */
static int ckpt_need_meta(const st_file *f, const char *key, const char *why, const char **v)
{
    *v = st_meta(f, key);
    if (!*v)
        return ecl_set_error("%s: metadata \"%s\" is missing (%s)", f->path, key, why);
    return 0;
}

/* A required non-negative decimal integer from the metadata. */
static int ckpt_meta_u64(const st_file *f, const char *key, uint64_t *out)
{
    const char *v;
    if (ckpt_need_meta(f, key, "an ecl checkpoint always has it", &v) != 0)
        return -1;
    uint64_t x = 0;
    const char *p = v;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (x > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            break;
        x = 10 * x + (uint64_t)(*p - '0');
    }
    if (p == v || *p != '\0')
        return ecl_set_error("%s: metadata \"%s\" = \"%s\" is not a non-negative integer",
                             f->path, key, v);
    *out = x;
    return 0;
}

static int ckpt_meta_i64v(const st_file *f, const char *key, int64_t *out)
{
    uint64_t x;
    if (ckpt_meta_u64(f, key, &x) != 0)
        return -1;
    if (x > (uint64_t)INT64_MAX)
        return ecl_set_error("%s: metadata \"%s\" = %" PRIu64 " is out of range", f->path,
                             key, x);
    *out = (int64_t)x;
    return 0;
}

static int ckpt_check_format(const st_file *f)
{
    const char *fmt = st_meta(f, "format"), *ver = st_meta(f, "version");
    char want[16];
    snprintf(want, sizeof want, "%d", CHECKPOINT_VERSION);
    if (!fmt || strcmp(fmt, CHECKPOINT_FORMAT) != 0)
        return ecl_set_error("%s: not an ecl checkpoint (metadata format = %s%s%s, expected "
                             "\"%s\"): a safetensors file from another tool?", f->path,
                             fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "",
                             CHECKPOINT_FORMAT);
    if (!ver || strcmp(ver, want) != 0)
        return ecl_set_error("%s: checkpoint format version %s; this ecl (%s) reads version "
                             "%s only: load it with the ecl version that wrote it",
                             f->path, ver ? ver : "(missing)", ECL_VERSION, want);
    return 0;
}

/* The stored config against cfg: refuse a difference that changes results. */
static int ckpt_check_config(const st_file *f, const config *cfg, int allow)
{
    const char *stored, *stored_fp;
    char *ini, fp[32];
    if (ckpt_need_meta(f, "config", "the config the run was trained with", &stored) != 0 ||
        ckpt_need_meta(f, "config_fingerprint", "the config's fingerprint", &stored_fp) != 0 ||
        ckpt_config_text(cfg, &ini) != 0)
        return -1;
    snprintf(fp, sizeof fp, "%016" PRIx64, config_fingerprint(cfg));

    /* Same fingerprint: same config. Otherwise find which keys differ. */
    ckpt_diff d;
    memset(&d, 0, sizeof d);
    if (strcmp(fp, stored_fp) != 0)
        ckpt_config_diff(stored, ini, NULL, &d);
    free(ini);
    if (d.n_harmless > 0)
        ecl_log_info("%s: config keys that do not change results differ: %s", f->path,
                     d.harmless);
    if (d.n_relevant == 0)
        return 0;
    if (allow) {
        ecl_log_warn("%s: loading despite %d config difference(s), as asked: %s", f->path,
                     d.n_relevant, d.relevant);
        return 0;
    }
    return ecl_set_error("%s: the checkpoint was trained with a different config (%d key(s) "
                         "differ: %s). Resume with the checkpoint's config (its metadata "
                         "\"config\"; scripts/read_checkpoint.py prints it), or pass %s to "
                         "load it anyway", f->path, d.n_relevant, d.relevant,
                         CHECKPOINT_MISMATCH_FLAG);
}

/* Model name and optimiser kind: no config override can bridge these. */
static int ckpt_check_kind(const st_file *f, const optimizer *o, const config *cfg)
{
    const char *name, *opt;
    if (ckpt_need_meta(f, "model", "the model name", &name) != 0 ||
        ckpt_need_meta(f, "optimizer", "the optimiser kind", &opt) != 0)
        return -1;
    if (strcmp(name, cfg->model.name) != 0)
        return ecl_set_error("%s: the checkpoint holds a %s model, this config builds %s "
                             "(model.name)", f->path, name, cfg->model.name);
    if (!o)
        return 0;
    const char *want = o->adam ? "adam" : "sgd";
    if (strcmp(opt, "none") == 0)
        return ecl_set_error("%s: the checkpoint has no optimiser state (saved for export), "
                             "so training cannot resume from it", f->path);
    if (strcmp(opt, want) != 0)
        return ecl_set_error("%s: the checkpoint's optimiser is %s, this run uses %s: their "
                             "moments do not carry over; set optim.name = %s to resume",
                             f->path, opt, want, opt);
    return 0;
}

/* A hint for a shape refusal: the [model] and [data] keys that differ. */
static void ckpt_shape_hint(const st_file *f, const config *cfg, char *hint, size_t size)
{
    hint[0] = '\0';
    char *ini;
    const char *stored = st_meta(f, "config");
    if (!stored || ckpt_config_text(cfg, &ini) != 0)
        return;
    static const char *const sections[] = { "model.", "data." };
    for (int s = 0; s < 2; s++) {
        ckpt_diff d;
        ckpt_config_diff(stored, ini, sections[s], &d);
        if (d.n_relevant > 0)
            ckpt_append(hint, size, "; %s", d.relevant);
    }
    free(ini);
}

/* One slot against the file: present (unless optional), F32, same shape.
 * *t is the file's tensor, or NULL when an optional one is absent. */
static int ckpt_check_slot(const st_file *f, const ckpt_slot *s, const config *cfg,
                           const st_tensor **t)
{
    char want[96], got[96], hint[CKPT_LIST_BYTES];
    ckpt_shape_str(s->shape, s->ndim, want, sizeof want);
    *t = st_find(f, s->name);
    if (!*t) {
        if (s->optional)
            return 0;
        return ecl_set_error("%s: missing tensor \"%s\" (the model expects F32 %s): the file "
                             "was written by a different model or version", f->path, s->name,
                             want);
    }
    ckpt_shape_str((*t)->shape, (*t)->ndim, got, sizeof got);
    if ((*t)->dtype != ST_F32)
        return ecl_set_error("%s: tensor \"%s\" is %s but the model expects F32", f->path,
                             s->name, st_dtype_name((*t)->dtype));
    if ((*t)->ndim != s->ndim ||
        memcmp((*t)->shape, s->shape, (size_t)s->ndim * sizeof s->shape[0]) != 0) {
        ckpt_shape_hint(f, cfg, hint, sizeof hint);
        return ecl_set_error("%s: tensor \"%s\" has shape %s but %s expects %s%s", f->path,
                             s->name, got, s->optional ? "this run" : "the model", want,
                             hint[0] ? hint : "");
    }
    return 0;
}

/* A file tensor no slot asked for that is fine to ignore: optimiser state
 * when loading without an optimiser, EM labels when not warm-starting. */
static int ckpt_ignorable(const char *name, const optimizer *o, const checkpoint_state *st)
{
    if (!o && strncmp(name, "optim.", 6) == 0)
        return 1;
    return (!st || !st->y_store) && strcmp(name, "em.y_store") == 0;
}

/* Every slot checked (found[i] = its tensor), then no unexpected tensor. */
static int ckpt_check_tensors(const st_file *f, const ckpt_slot *s, int n, const optimizer *o,
                              const checkpoint_state *st, const config *cfg,
                              const st_tensor **found)
{
    for (int i = 0; i < n; i++)
        if (ckpt_check_slot(f, &s[i], cfg, &found[i]) != 0)
            return -1;
    for (int j = 0; j < f->n_tensors; j++) {
        const char *name = f->tensors[j].name;
        int known = ckpt_ignorable(name, o, st);
        for (int i = 0; i < n && !known; i++)
            known = strcmp(s[i].name, name) == 0;
        if (!known)
            return ecl_set_error("%s: unexpected tensor \"%s\" (the model has no such param "
                                 "or buffer): the file was written by a different model or "
                                 "version", f->path, name);
    }
    return 0;
}

/* The loop position and the optimiser step, parsed before anything changes. */
typedef struct {
    int64_t epoch, step_in_epoch, global_step, optim_step, best_head;
    uint64_t seed;
} ckpt_counters;

static int ckpt_read_counters(const st_file *f, const optimizer *o,
                              const checkpoint_state *st, ckpt_counters *c)
{
    memset(c, 0, sizeof *c);
    if (o && ckpt_meta_i64v(f, "optim_step", &c->optim_step) != 0)
        return -1;
    if (!st)
        return 0;
    if (!st_meta(f, "epoch"))
        return ecl_set_error("%s: the checkpoint has no loop position (saved for export), so "
                             "training cannot resume from it", f->path);
    if (ckpt_meta_i64v(f, "epoch", &c->epoch) != 0 ||
        ckpt_meta_i64v(f, "step_in_epoch", &c->step_in_epoch) != 0 ||
        ckpt_meta_i64v(f, "global_step", &c->global_step) != 0)
        return -1;
    if (st_meta(f, "best_head") && ckpt_meta_i64v(f, "best_head", &c->best_head) != 0)
        return -1;
    return ckpt_meta_u64(f, "seed", &c->seed);
}

/* All checks passed: copy values and counters in. */
static void ckpt_copy_in(const st_file *f, const ckpt_slot *s, int n,
                         const st_tensor *const *found, const ckpt_counters *c,
                         optimizer *o, checkpoint_state *st)
{
    for (int i = 0; i < n; i++) {
        if (found[i])
            memcpy(s[i].values, found[i]->data, (size_t)found[i]->n_bytes);
        else
            ecl_log_warn("%s: no %s in the checkpoint; it starts afresh", f->path, s[i].name);
    }
    if (o)
        o->step = c->optim_step;
    if (st) {
        st->epoch = c->epoch;
        st->step_in_epoch = c->step_in_epoch;
        st->global_step = c->global_step;
        st->seed = c->seed;
        st->best_head = c->best_head;
        const char *stats = st_meta(f, "train_stats");
        free(st->train_stats);
        st->train_stats = stats ? ecl_strdup(stats) : NULL;
    }
}

int checkpoint_load(const char *path, model *m, optimizer *o, checkpoint_state *st,
                    const config *cfg, int allow_config_mismatch)
{
    st_file f;
    if (st_read(path, &f) != 0)
        return -1;

    /* Every check first; only then does anything of the caller's change. */
    ckpt_slot slots[CKPT_MAX_SLOTS];
    const st_tensor *found[CKPT_MAX_SLOTS];
    ckpt_counters c;
    int n = ckpt_slots(m, o, st, slots);
    int rc = ckpt_check_format(&f);
    if (rc == 0)
        rc = ckpt_check_config(&f, cfg, allow_config_mismatch);
    if (rc == 0)
        rc = ckpt_check_kind(&f, o, cfg);
    if (rc == 0)
        rc = ckpt_read_counters(&f, o, st, &c);
    if (rc == 0)
        rc = ckpt_check_tensors(&f, slots, n, o, st, cfg, found);
    if (rc == 0)
        ckpt_copy_in(&f, slots, n, found, &c, o, st);
    st_free(&f);
    return rc;
}

/* ------------------------------------------------------------------------
 * Checkpoint files in a run folder
 * ------------------------------------------------------------------------ */

void checkpoint_path(const char *dir, int64_t global_step, char *buf, size_t size)
{
    snprintf(buf, size, "%s/ckpt-%lld.safetensors", dir, (long long)global_step);
}

/* The global step of a file called exactly ckpt-<digits>.safetensors, or -1. */
static int64_t ckpt_step_of(const char *name)
{
    static const char suffix[] = ".safetensors";
    if (strncmp(name, "ckpt-", 5) != 0)
        return -1;
    int64_t step = 0;
    const char *p = name + 5;
    if (p[0] == '0' && p[1] >= '0' && p[1] <= '9')
        return -1;  /* a leading zero: checkpoint_path would name another file */
    for (; *p >= '0' && *p <= '9'; p++) {
        if (step > (INT64_MAX - 9) / 10)
            return -1;
        step = 10 * step + (*p - '0');
    }
    return p > name + 5 && strcmp(p, suffix) == 0 ? step : -1;
}

static int ckpt_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The global steps of dir's checkpoints, ascending, in *steps (malloc'd). */
static int ckpt_scan(const char *dir, int64_t **steps)
{
    DIR *d = opendir(dir);
    if (!d)
        return ecl_set_error("cannot list checkpoint folder %s: %s", dir, strerror(errno));
    int n = 0, cap = 16;
    *steps = ecl_malloc((size_t)cap * sizeof **steps);
    for (struct dirent *e; (e = readdir(d)) != NULL; ) {
        int64_t step = ckpt_step_of(e->d_name);
        if (step < 0)
            continue;
        if (n == cap)
            *steps = ecl_realloc(*steps, (size_t)(cap *= 2) * sizeof **steps);
        (*steps)[n++] = step;
    }
    closedir(d);
    qsort(*steps, (size_t)n, sizeof **steps, ckpt_cmp_i64);
    return n;
}

int checkpoint_find_latest(const char *dir, char *buf, size_t size)
{
    int64_t *steps;
    int n = ckpt_scan(dir, &steps);
    if (n < 0)
        return -1;
    if (n > 0)
        checkpoint_path(dir, steps[n - 1], buf, size);
    free(steps);
    return n > 0;
}

int checkpoint_prune(const char *dir, int keep_last)
{
    if (keep_last <= 0)
        return 0;
    int64_t *steps;
    int n = ckpt_scan(dir, &steps);
    if (n < 0)
        return -1;

    /* Oldest first; stop at the first file that will not go. */
    int removed = 0, rc = 0;
    for (int i = 0; i < n - keep_last && rc == 0; i++) {
        char path[1200];
        checkpoint_path(dir, steps[i], path, sizeof path);
        if (remove(path) != 0)
            rc = ecl_set_error("cannot remove old checkpoint %s: %s", path, strerror(errno));
        else
            removed++;
    }
    free(steps);
    return rc ? -1 : removed;
}
