/*
 * config.c - the run configuration (see config.h): one table of every key,
 * and the INI reader, overrides, checks, printers and fingerprint built on it.
 *
 * The INI syntax itself is libinih's (ini_parse_stream). Our line reader in
 * front of it counts lines (so errors name them), checks section headers and
 * line shape, strips leading blanks (so an indented line is never taken as a
 * continuation of the previous value) and refuses lines longer than libinih's
 * buffer instead of letting it split them.
 *
 * Not here: what the values mean to training (each module reads its fields),
 * and defaults that depend on the data (e.g. folder image size 0 = "ask the
 * first image"); those are resolved by the data reader.
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/config.h"

#include "ecl/core.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

/* ---- the table --------------------------------------------------------- */

typedef enum { KEY_STRING, KEY_INT, KEY_INT64, KEY_UINT64, KEY_FLOAT, KEY_BOOL } key_type;

/* Bounds of a float key: an end can be open, and the upper end can be absent. */
enum { LO_OPEN = 1, HI_OPEN = 2, NO_HI = 4 };

typedef struct {
    const char *section;
    const char *key;
    size_t offset;       /* of the field in config */
    size_t n_bytes;      /* of the field; for strings the capacity with its NUL */
    key_type type;
    const char *def;     /* the default, spelled as in an INI file */
    const char *choices; /* "a|b" for strings with a fixed set; NULL = any text */
    int64_t lo, hi;      /* inclusive bounds of KEY_INT and KEY_INT64 */
    double flo, fhi;     /* bounds of KEY_FLOAT, open or closed by flags */
    unsigned flags;
    const char *help;
} config_key;

/*
 * The field's offset, checked at compile time to have the C type the row
 * claims (_Generic has no match, and the build fails, when it does not).
 */
#define FIELD(sec, name, ctype)                                                 \
    .section = #sec, .key = #name,                                             \
    .offset = _Generic(((config *)0)->sec.name, ctype: offsetof(config, sec.name)), \
    .n_bytes = sizeof(((config *)0)->sec.name)

#define K_STR(sec, name, d, ch, h) \
    { FIELD(sec, name, char *), .type = KEY_STRING, .def = d, .choices = ch, .help = h }
#define K_INT(sec, name, d, l, u, h) \
    { FIELD(sec, name, int), .type = KEY_INT, .def = d, .lo = l, .hi = u, .help = h }
#define K_I64(sec, name, d, l, u, h) \
    { FIELD(sec, name, int64_t), .type = KEY_INT64, .def = d, .lo = l, .hi = u, .help = h }
#define K_U64(sec, name, d, h) \
    { FIELD(sec, name, uint64_t), .type = KEY_UINT64, .def = d, .help = h }
#define K_FLT(sec, name, d, l, u, fl, h) \
    { FIELD(sec, name, float), .type = KEY_FLOAT, .def = d, .flo = l, .fhi = u, \
      .flags = fl, .help = h }
#define K_BOOL(sec, name, d, h) \
    { FIELD(sec, name, int), .type = KEY_BOOL, .def = d, .help = h }

/* Every key, grouped by section in file order. */
static const config_key config_keys[] = {
    K_STR(data, format, "idx", "idx|folder",
          "how images are stored: IDX files, or a folder of image files"),
    K_STR(data, path, "", NULL, "IDX images file (plain or .gz), or the image folder"),
    K_STR(data, labels, "", NULL,
          "IDX labels file, used only for scoring; empty = unlabelled"),
    K_I64(data, limit, "0", 0, INT64_MAX, "use only the first N samples; 0 = all"),
    K_INT(data, channels, "1", 1, 3, "image channels: 1 (grey) or 3 (RGB)"),
    K_INT(data, height, "0", 0, 4096, "folder image height; 0 = that of the first image"),
    K_INT(data, width, "0", 0, 4096, "folder image width; 0 = that of the first image"),

    K_STR(model, name, "vgg4", "vgg4", "network: vgg4 (four conv blocks, linear head)"),
    K_INT(model, clusters, "10", 1, 100000, "number of clusters K"),
    K_INT(model, heads, "1", 1, 8,
          "clustering heads sharing the backbone; the lowest-loss head is used"),
    K_INT(model, width, "64", 1, 4096, "channels of the first conv block"),
    K_BOOL(model, head_bn, "true",
           "parameter-free batch norm on the pooled features before the head"),
    K_FLT(model, logit_scale, "0.5", 0, 100, LO_OPEN,
          "logits are multiplied by this before the softmax"),

    K_STR(loss, method, "ecl", "ecl", "training loss: discriminative entropy clustering"),
    K_FLT(loss, lambda, "100", 0, 1e6, 0, "weight of the strong fairness term"),
    K_FLT(loss, gamma, "0", 0, 0, NO_HI, "weight of the head-norm (margin) term ||W||^2"),
    K_FLT(loss, alpha, "1", 0, 0, NO_HI, "weight of the self-augmentation term"),
    K_STR(loss, aug_form, "kl", "kl|sym_kl|ce|dot",
          "how an augmented view is tied to its original"),
    K_FLT(loss, forward_ce, "0.2", 0, 0, NO_HI,
          "weight of the forward cross-entropy H(y, sigma); 0 = the paper's loss"),
    K_FLT(loss, y_eps, "1e-12", 0, 0.1, LO_OPEN | HI_OPEN,
          "floor on the pseudo-labels y before their log"),

    K_INT(em, max_iter, "50", 1, 1000000,
          "most solver iterations per batch (EM updates for em; Newton steps for dual "
          "and newton)"),
    K_FLT(em, tol, "1e-6", 0, 0, NO_HI,
          "stop when y's full KKT measure (solvers.h) is below this; 0 = max_iter"),
    K_BOOL(em, warm_start, "false", "start EM from the sample's previous y"),
    K_STR(em, solver, "dual", "em|em_accel|dual|newton|newton_dense",
          "pseudo-label solver; dual is the fastest to the exact optimum (ecl-bench-em); "
          "em with max_iter 15 (inexact by design) is the shipped configs' recipe"),

    K_STR(optim, name, "adam", "adam|sgd", "optimiser"),
    K_FLT(optim, lr, "1e-3", 0, 10, LO_OPEN, "peak learning rate"),
    K_FLT(optim, beta1, "0.9", 0, 1, HI_OPEN, "Adam decay of the first moment"),
    K_FLT(optim, beta2, "0.999", 0, 1, HI_OPEN, "Adam decay of the second moment"),
    K_FLT(optim, eps, "1e-8", 0, 0, LO_OPEN | NO_HI, "Adam epsilon in the denominator"),
    K_FLT(optim, weight_decay, "0", 0, 0, NO_HI,
          "decoupled weight decay (AdamW form), not on the head W"),
    K_FLT(optim, momentum, "0.9", 0, 1, HI_OPEN, "SGD momentum"),
    K_STR(optim, schedule, "cosine", "cosine|constant",
          "learning-rate schedule after the warm-up"),
    K_FLT(optim, warmup_epochs, "0", 0, 0, NO_HI, "epochs of linear learning-rate warm-up"),

    K_INT(augment, views, "1", 0, 16, "augmented copies per image; 0 = none"),
    K_FLT(augment, translate, "2", 0, 64, 0, "largest shift, in pixels"),
    K_FLT(augment, rotate, "10", 0, 180, 0, "largest rotation, in degrees"),
    K_FLT(augment, scale, "0.1", 0, 0.9, 0, "largest relative zoom in or out"),
    K_BOOL(augment, hflip, "false", "flip left-right with probability 1/2"),
    K_FLT(augment, jitter, "0", 0, 1, 0, "strength of brightness and contrast jitter"),
    K_INT(augment, workers, "1", 1, 64, "threads preparing augmented batches"),

    K_U64(run, seed, "0", "the one seed of init, shuffling and augmentation"),
    K_INT(run, epochs, "8", 1, 100000, "passes over the data"),
    K_INT(run, batch, "100", 1, 1000000, "images per step, before augmentation"),
    K_INT(run, threads, "0", 0, 1024, "compute threads; 0 = all cores"),
    K_STR(run, out, "runs/latest", NULL, "run folder: config, logs, metrics, checkpoints"),
    K_INT(run, log_every, "20", 1, INT_MAX, "steps between progress lines"),
    K_STR(run, device, "cpu", "cpu|auto|cuda", "where to train; auto = cuda when present"),
    K_STR(run, precision, "fp32", "fp32|tf32",
          "GPU matmul precision: fp32, or tf32 tensor cores in cuDNN/cuBLAS (CPU: always fp32)"),
    K_BOOL(run, quiet, "false", "print only warnings and errors on stderr"),
    K_INT(run, eval_every, "1", 0, INT_MAX,
          "epochs between full-data scoring; 0 = at the end only"),
    K_BOOL(run, kmeans_baseline, "true", "also score K-means on the raw pixels"),
    K_INT(run, checkpoint_every, "0", 0, INT_MAX,
          "steps between checkpoints; 0 = one at the end of each epoch"),
    K_INT(run, keep_checkpoints, "3", 1, 1000, "newest checkpoints kept in the run folder"),
    K_STR(run, nan_policy, "stop", "stop|skip",
          "on a non-finite logit, label, loss or gradient: stop, or skip the step"),
    K_FLT(run, collapse_entropy, "0.5", 0, 1, 0,
          "warn when H(cluster marginal) falls below this fraction of log K"),
};

#define N_KEYS ((int)(sizeof config_keys / sizeof config_keys[0]))

/* Longest "key = value" line libinih reads whole (its buffer less 3, as ini.h says). */
#define CONFIG_MAX_LINE (INI_MAX_LINE - 3)

/* ---- lookups and descriptions ------------------------------------------ */

static int config_section_known(const char *section)
{
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(config_keys[i].section, section) == 0)
            return 1;
    return 0;
}

static const config_key *config_find_key(const char *section, const char *key)
{
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(config_keys[i].section, section) == 0 &&
            strcmp(config_keys[i].key, key) == 0)
            return &config_keys[i];
    return NULL;
}

/* Appends text to buf[0..n), which always stays terminated (cut when full). */
static void config_append(char *buf, size_t n, const char *text)
{
    size_t used = strlen(buf);
    if (used + 1 < n)
        snprintf(buf + used, n - used, "%s", text);
}

/* "data, model, ...": the sections in table order (rows are grouped). */
static void config_list_sections(char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; i < N_KEYS; i++) {
        if (i > 0 && strcmp(config_keys[i].section, config_keys[i - 1].section) == 0)
            continue;
        if (i > 0)
            config_append(buf, n, ", ");
        config_append(buf, n, config_keys[i].section);
    }
}

/* "name, clusters, ...": the keys of one section. */
static void config_list_keys(const char *section, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; i < N_KEYS; i++) {
        if (strcmp(config_keys[i].section, section) != 0)
            continue;
        if (buf[0])
            config_append(buf, n, ", ");
        config_append(buf, n, config_keys[i].key);
    }
}

/* "a number > 0 and <= 10" and the like: what a float key accepts. */
static void config_describe_float(const config_key *k, char *buf, size_t n)
{
    int len = snprintf(buf, n, "a number %s %.9g", (k->flags & LO_OPEN) ? ">" : ">=",
                       k->flo);
    if (!(k->flags & NO_HI) && len > 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, " and %s %.9g",
                 (k->flags & HI_OPEN) ? "<" : "<=", k->fhi);
}

/* What a key accepts, in words; the same text for errors and for --help. */
static void config_describe(const config_key *k, char *buf, size_t n)
{
    switch (k->type) {
    case KEY_STRING:
        if (!k->choices) {
            snprintf(buf, n, "text of at most %zu characters", k->n_bytes - 1);
            return;
        }
        snprintf(buf, n, "one of %s", k->choices);
        for (char *p = buf; *p; p++)
            if (*p == '|')
                *p = '/';
        return;
    case KEY_INT:
    case KEY_INT64:
        if (k->hi == INT_MAX || k->hi == INT64_MAX)
            snprintf(buf, n, "an integer >= %" PRId64, k->lo);
        else
            snprintf(buf, n, "an integer in [%" PRId64 ", %" PRId64 "]", k->lo, k->hi);
        return;
    case KEY_UINT64:
        snprintf(buf, n, "an integer in [0, %" PRIu64 "]", UINT64_MAX);
        return;
    case KEY_FLOAT:
        config_describe_float(k, buf, n);
        return;
    case KEY_BOOL:
        snprintf(buf, n, "true or false (or yes/no, on/off, 1/0)");
        return;
    }
    ECL_FATAL("config key %s.%s has unknown type %d", k->section, k->key, (int)k->type);
}

/* The value as quoted in a message: at most 60 characters, "" when empty. */
static const char *config_shown(const char *text, char *buf, size_t n)
{
    if (!text[0])
        return "\"\"";
    if (strlen(text) <= 60)
        return text;
    snprintf(buf, n, "%.57s...", text);
    return buf;
}

/* ---- parsing one value ------------------------------------------------- */

/* Writes "<value> <problem>: expected <what the key accepts>" into why. */
static int config_bad_value(const config_key *k, const char *text, const char *problem,
                            char *why, size_t why_n)
{
    char shown[64], allowed[160];
    config_describe(k, allowed, sizeof allowed);
    snprintf(why, why_n, "%s %s: expected %s", config_shown(text, shown, sizeof shown),
             problem, allowed);
    return -1;
}

/* Whole decimal numbers only: optional sign (when allowed), then digits. */
static int config_is_whole(const char *s, int allow_sign)
{
    if (allow_sign && (*s == '-' || *s == '+'))
        s++;
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

static int config_parse_signed(const config_key *k, const char *text, void *field,
                               char *why, size_t why_n)
{
    /* Shape first, so "12abc", "1e3" and "" are "not a whole number". */
    if (!config_is_whole(text, 1))
        return config_bad_value(k, text, "is not a whole number", why, why_n);

    /* Then range; strtoll's ERANGE covers values beyond 64 bits. */
    errno = 0;
    long long v = strtoll(text, NULL, 10);
    if (errno == ERANGE || v < k->lo || v > k->hi)
        return config_bad_value(k, text, "is out of range", why, why_n);
    if (k->type == KEY_INT)
        *(int *)field = (int)v;
    else
        *(int64_t *)field = (int64_t)v;
    return 0;
}

static int config_parse_unsigned(const config_key *k, const char *text, void *field,
                                 char *why, size_t why_n)
{
    /* No sign at all: strtoull would quietly wrap "-1" to 2^64 - 1. */
    if (!config_is_whole(text, 0))
        return config_bad_value(k, text, "is not a whole number", why, why_n);
    errno = 0;
    unsigned long long v = strtoull(text, NULL, 10);
    if (errno == ERANGE)
        return config_bad_value(k, text, "is out of range", why, why_n);
    *(uint64_t *)field = (uint64_t)v;
    return 0;
}

static int config_float_in_range(const config_key *k, double v)
{
    int lo_ok = (k->flags & LO_OPEN) ? v > k->flo : v >= k->flo;
    int hi_ok = (k->flags & NO_HI) || ((k->flags & HI_OPEN) ? v < k->fhi : v <= k->fhi);
    return lo_ok && hi_ok;
}

static int config_parse_float(const config_key *k, const char *text, void *field,
                              char *why, size_t why_n)
{
    /* The whole text must be the number; strtod alone would skip blanks. */
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (!text[0] || isspace((unsigned char)text[0]) || *end != '\0')
        return config_bad_value(k, text, "is not a number", why, why_n);

    /*
     * The check is on the float actually stored: 0.99999999999 rounds to
     * 1.0f, which beta1 < 1 must refuse, and a saved file must reload.
     */
    float f = (float)v;
    if (!isfinite(v) || !isfinite(f))
        return config_bad_value(k, text, "is not a finite 32-bit number", why, why_n);
    if (!config_float_in_range(k, (double)f))
        return config_bad_value(k, text, "is out of range", why, why_n);
    *(float *)field = f;
    return 0;
}

static int config_parse_bool(const config_key *k, const char *text, void *field,
                             char *why, size_t why_n)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
            *(int *)field = strcasecmp(text, yes[i]) == 0;
            return 0;
        }
    }
    return config_bad_value(k, text, "is not a boolean", why, why_n);
}

/* 1 when text is one of the '|'-separated choices. */
static int config_is_choice(const char *choices, const char *text)
{
    size_t n = strlen(text);
    for (const char *p = choices; p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, text, n) == 0)
            return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

static int config_parse_string(const config_key *k, const char *text, void *field,
                               char *why, size_t why_n)
{
    size_t n = strlen(text);
    if (n >= k->n_bytes) {
        snprintf(why, why_n, "value of %zu characters is too long: %s.%s holds at most %zu",
                 n, k->section, k->key, k->n_bytes - 1);
        return -1;
    }
    if (k->choices && !config_is_choice(k->choices, text))
        return config_bad_value(k, text, "is not a valid choice", why, why_n);

    /* Zero the whole array so equal configs are equal byte for byte. */
    memset(field, 0, k->n_bytes);
    memcpy(field, text, n);
    return 0;
}

/*
 * Parses text as the value of key k into cfg. 0, or -1 leaving the field
 * untouched and a value-led reason in why ("12abc is not a whole number: ...").
 */
static int config_parse_value(const config_key *k, const char *text, config *cfg,
                              char *why, size_t why_n)
{
    void *field = (char *)cfg + k->offset;
    switch (k->type) {
    case KEY_STRING: return config_parse_string(k, text, field, why, why_n);
    case KEY_INT:
    case KEY_INT64: return config_parse_signed(k, text, field, why, why_n);
    case KEY_UINT64: return config_parse_unsigned(k, text, field, why, why_n);
    case KEY_FLOAT: return config_parse_float(k, text, field, why, why_n);
    case KEY_BOOL: return config_parse_bool(k, text, field, why, why_n);
    }
    ECL_FATAL("config key %s.%s has unknown type %d", k->section, k->key, (int)k->type);
}

/*
 * The shortest %g text (6 to 9 significant digits) that reads back as the
 * same float: 9 always suffice, and 0.001 reads better than 0.00100000005.
 */
static void config_format_float(float f, char *buf, size_t n)
{
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, n, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f)
            return;
    }
}

/* The current value of key k as it is written to an INI file. */
static void config_format_value(const config_key *k, const config *cfg, char *buf,
                                size_t n)
{
    const void *field = (const char *)cfg + k->offset;
    switch (k->type) {
    case KEY_STRING:
        snprintf(buf, n, "%.*s", (int)(k->n_bytes - 1), (const char *)field);
        return;
    case KEY_INT: snprintf(buf, n, "%d", *(const int *)field); return;
    case KEY_INT64: snprintf(buf, n, "%" PRId64, *(const int64_t *)field); return;
    case KEY_UINT64: snprintf(buf, n, "%" PRIu64, *(const uint64_t *)field); return;
    case KEY_FLOAT: config_format_float(*(const float *)field, buf, n); return;
    case KEY_BOOL: snprintf(buf, n, "%s", *(const int *)field ? "true" : "false"); return;
    }
    ECL_FATAL("config key %s.%s has unknown type %d", k->section, k->key, (int)k->type);
}

/* Big enough for any formatted value (the longest string field is 1023). */
#define VALUE_BUF 1100

/* ---- defaults, set, override ------------------------------------------- */

void config_defaults(config *cfg)
{
    /* Zero first: padding and string tails are then equal in every config. */
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < N_KEYS; i++) {
        char why[512];
        const config_key *k = &config_keys[i];
        ECL_CHECK(config_parse_value(k, k->def, cfg, why, sizeof why) == 0,
                  "default of %s.%s does not parse: %s", k->section, k->key, why);
    }
}

/*
 * Sets section.key. 0; -1 with a full reason in why (unknown section or key);
 * -2 with a value-led reason (bad value).
 */
static int config_set_parts(config *cfg, const char *section, const char *key,
                            const char *value, char *why, size_t why_n)
{
    char list[512];
    if (!config_section_known(section)) {
        config_list_sections(list, sizeof list);
        snprintf(why, why_n, "unknown section [%s]; valid sections: %s", section, list);
        return -1;
    }
    const config_key *k = config_find_key(section, key);
    if (!k) {
        config_list_keys(section, list, sizeof list);
        snprintf(why, why_n, "unknown key '%s'; valid keys in [%s]: %s", key, section,
                 list);
        return -1;
    }
    return config_parse_value(k, value, cfg, why, why_n) == 0 ? 0 : -2;
}

/* Splits "section.key" (its first n characters) into its two non-empty parts. */
static int config_split_dotted(const char *dotted, size_t n, char *section, char *key,
                               size_t part_n)
{
    const char *dot = memchr(dotted, '.', n);
    if (!dot)
        return -1;
    size_t sec_n = (size_t)(dot - dotted), key_n = n - sec_n - 1;
    if (sec_n == 0 || key_n == 0 || sec_n >= part_n || key_n >= part_n)
        return -1;
    memcpy(section, dotted, sec_n);
    section[sec_n] = '\0';
    memcpy(key, dot + 1, key_n);
    key[key_n] = '\0';
    return 0;
}

int config_set(config *cfg, const char *section_dot_key, const char *value)
{
    char section[64], key[64], why[1024];
    if (config_split_dotted(section_dot_key, strlen(section_dot_key), section, key,
                            sizeof section) != 0)
        return ecl_set_error("'%s' is not a config key: expected section.key, "
                             "e.g. run.epochs", section_dot_key);

    /* A bad value reads "loss.lambda = -1 is out of range: ...". */
    int rc = config_set_parts(cfg, section, key, value, why, sizeof why);
    if (rc == -1)
        return ecl_set_error("%s: %s", section_dot_key, why);
    if (rc == -2)
        return ecl_set_error("%s.%s = %s", section, key, why);
    return 0;
}

int config_apply_override(config *cfg, const char *arg)
{
    /* The leading "--" is optional; the "=" is not. */
    const char *body = strncmp(arg, "--", 2) == 0 ? arg + 2 : arg;
    const char *eq = strchr(body, '=');
    if (!eq)
        return ecl_set_error("%s: expected --section.key=value, e.g. --run.epochs=20",
                             arg);

    char section[64], key[64], why[1024];
    if (config_split_dotted(body, (size_t)(eq - body), section, key, sizeof section) != 0)
        return ecl_set_error("%s: expected --section.key=value with both section and key "
                             "named, e.g. --run.epochs=20", arg);
    if (config_set_parts(cfg, section, key, eq + 1, why, sizeof why) != 0)
        return ecl_set_error("%s: %s", arg, why);
    return 0;
}

/* ---- loading a file ---------------------------------------------------- */

typedef struct {
    FILE *fp;
    const char *path;
    config *cfg;
    char *line;          /* getline's buffer */
    size_t line_cap;
    int lineno;          /* of the line libinih is working on */
    int failed;          /* an error is in msg; the reader then ends the parse */
    char msg[1024];
} config_load_ctx;

/* Records the first error as "<file>:<line>: <printf-style text>". */
static void config_load_fail(config_load_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void config_load_fail(config_load_ctx *c, const char *fmt, ...)
{
    if (c->failed)
        return;
    c->failed = 1;
    int len = snprintf(c->msg, sizeof c->msg, "%s:%d: ", c->path, c->lineno);
    if (len < 0 || (size_t)len >= sizeof c->msg)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg + len, sizeof c->msg - (size_t)len, fmt, ap);
    va_end(ap);
}

/* Checks a line's shape as libinih will see it; 0, or -1 after recording why. */
static int config_check_line(config_load_ctx *c, const char *s)
{
    char list[256], shown[64];
    if (s[0] == '\0')
        return 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close) {
            config_load_fail(c, "section header has no closing ']'");
            return -1;
        }
        char name[64];
        int name_n = (int)(close - s - 1);
        snprintf(name, sizeof name, "%.*s", name_n, s + 1);
        if (name_n < (int)sizeof name && config_section_known(name))
            return 0;
        config_list_sections(list, sizeof list);
        config_load_fail(c, "[%s]: unknown section; valid sections: %s", name, list);
        return -1;
    }
    if (!strpbrk(s, "=:")) {
        config_load_fail(c, "expected 'key = value', '[section]' or a comment, found "
                         "\"%s\"; comments start with ';' or '#'",
                         config_shown(s, shown, sizeof shown));
        return -1;
    }
    return 0;
}

/*
 * libinih's fgets-style reader: one whole line per call, leading blanks
 * stripped, comments passed on as blank lines, overlong and malformed lines
 * refused with their number.
 */
static char *config_read_line(char *str, int num, void *stream)
{
    config_load_ctx *c = stream;
    if (c->failed)
        return NULL;
    ssize_t len = getline(&c->line, &c->line_cap, c->fp);
    if (len < 0)
        return NULL;
    c->lineno++;

    /* Trim: a UTF-8 byte-order mark on line 1, blanks at both ends. */
    char *s = c->line;
    if (c->lineno == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3;
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';

    /* Comments may be any length; libinih sees them as blank lines. */
    if (s[0] == ';' || s[0] == '#') {
        s[0] = '\0';
        n = 0;
    }
    if (n + 3 > (size_t)num) {
        config_load_fail(c, "line is %zu characters long; libinih reads at most %d; "
                         "shorten it (e.g. a symlink for a long path) or pass the value "
                         "as --section.key=value", n, num - 3);
        return NULL;
    }
    if (config_check_line(c, s) != 0)
        return NULL;
    memcpy(str, s, n + 1);
    return str;
}

/* libinih's handler: one "key = value" of one section. Nonzero = accepted. */
static int config_load_entry(void *user, const char *section, const char *name,
                             const char *value)
{
    config_load_ctx *c = user;
    char why[1024];

    /* A key above the first [section] has section "". */
    if (!section[0]) {
        char list[256];
        config_list_sections(list, sizeof list);
        config_load_fail(c, "%s: key outside any section; put it under one of: %s",
                         name, list);
        return 0;
    }

    int rc = config_set_parts(c->cfg, section, name, value, why, sizeof why);
    if (rc == -1)
        config_load_fail(c, "[%s] %s: %s", section, name, why);
    else if (rc == -2)
        config_load_fail(c, "[%s] %s: %s; fix line %d or override it with --%s.%s=VALUE",
                         section, name, why, c->lineno, section, name);
    return rc == 0;
}

/* Parses an INI stream over cfg; `origin` names it in messages. 0 or -1. */
static int config_load_stream(config *cfg, FILE *fp, const char *origin)
{
    /* Parse into a copy, so a failed load leaves cfg as it was. */
    config work = *cfg;
    config_load_ctx c = {.fp = fp, .path = origin, .cfg = &work};
    int rc = ini_parse_stream(config_read_line, &c, config_load_entry, &c);
    int read_failed = ferror(fp);
    int read_errno = errno;
    free(c.line);

    /* Our own messages first; libinih's bare line number only as a last resort. */
    if (c.failed)
        return ecl_set_error("%s", c.msg);
    if (read_failed)
        return ecl_set_error("%s: read error after line %d: %s", origin, c.lineno,
                             strerror(read_errno));
    if (rc > 0)
        return ecl_set_error("%s:%d: cannot parse this line; expected 'key = value', "
                             "'[section]' or a comment", origin, rc);
    if (rc < 0)
        return ecl_set_error("%s: libinih failed with code %d", origin, rc);
    *cfg = work;
    return 0;
}

int config_load_file(config *cfg, const char *path)
{
    /* Open it here, so a missing file gets a message of its own. */
    FILE *fp = fopen(path, "r");
    if (!fp)
        return ecl_set_error("cannot open config file %s: %s; paths are relative to the "
                             "folder you run from (the shipped configs are in configs/)",
                             path, strerror(errno));
    int rc = config_load_stream(cfg, fp, path);
    fclose(fp);
    return rc;
}

int config_load_string(config *cfg, const char *ini_text, const char *origin)
{
    /* An empty text sets nothing (fmemopen refuses a zero-length buffer). */
    size_t n = strlen(ini_text);
    if (n == 0)
        return 0;
    FILE *fp = fmemopen((void *)ini_text, n, "r");
    if (!fp)
        return ecl_set_error("%s: cannot read the config text from memory: %s", origin,
                             strerror(errno));
    int rc = config_load_stream(cfg, fp, origin);
    fclose(fp);
    return rc;
}

/* ---- checks ------------------------------------------------------------ */

/* Re-checks one field against its row, whoever set it. 0 or -1 with the error set. */
static int config_check_field(const config *cfg, const config_key *k)
{
    const char *field = (const char *)cfg + k->offset;
    if (k->type == KEY_STRING && !memchr(field, '\0', k->n_bytes))
        return ecl_set_error("%s.%s is not a terminated string", k->section, k->key);

    /* Print and parse back into scratch: the same rules as the file reader. */
    char text[VALUE_BUF], why[1024];
    config scratch;
    config_format_value(k, cfg, text, sizeof text);
    if (config_parse_value(k, text, &scratch, why, sizeof why) != 0)
        return ecl_set_error("%s.%s = %s", k->section, k->key, why);
    return 0;
}

/* The data-related cross-field rules. */
static int config_validate_data(const config *cfg)
{
    if (!cfg->data.path[0])
        return ecl_set_error("data.path is empty: set path under [data] in the config "
                             "file, or pass --data.path=FILE");
    if (cfg->data.channels != 1 && cfg->data.channels != 3)
        return ecl_set_error("data.channels = %d: only 1 (grey) or 3 (RGB) are supported",
                             cfg->data.channels);
    if (strcmp(cfg->data.format, "folder") == 0 && cfg->data.labels[0])
        return ecl_set_error("data.labels = %s is set but data.format = folder: a folder "
                             "dataset takes its labels from its class subfolders; leave "
                             "labels empty (--data.labels=)", cfg->data.labels);
    return 0;
}

int config_validate(const config *cfg)
{
    /* Every field within its own type, range and choices. */
    for (int i = 0; i < N_KEYS; i++)
        if (config_check_field(cfg, &config_keys[i]) != 0)
            return -1;

    /* Then the rules that tie fields together. */
    if (config_validate_data(cfg) != 0)
        return -1;
    if (cfg->model.clusters < 2)
        return ecl_set_error("model.clusters = %d: clustering needs at least 2 clusters; "
                             "set --model.clusters=K (e.g. the number of classes)",
                             cfg->model.clusters);
    if (cfg->run.batch < cfg->model.clusters)
        return ecl_set_error("run.batch = %d is smaller than model.clusters = %d: the "
                             "fairness term needs at least K samples per batch; raise "
                             "--run.batch=%d (or more) or lower --model.clusters",
                             cfg->run.batch, cfg->model.clusters, cfg->model.clusters);
    return 0;
}

/* ---- printing and saving ----------------------------------------------- */

void config_print_table(const config *cfg, FILE *f)
{
    /* The key column is as wide as the longest "section.key". */
    int width = 3;
    for (int i = 0; i < N_KEYS; i++) {
        int len = (int)(strlen(config_keys[i].section) + 1 + strlen(config_keys[i].key));
        width = len > width ? len : width;
    }

    fprintf(f, "%-*s  %s\n", width, "key", "value");
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        char dotted[128], text[VALUE_BUF];
        snprintf(dotted, sizeof dotted, "%s.%s", k->section, k->key);
        config_format_value(k, cfg, text, sizeof text);
        fprintf(f, "%-*s  %s\n", width, dotted, text[0] ? text : "\"\"");
    }
}

/* Writes the INI text; no checks (the fingerprint hashes exactly this). */
static void config_write_text(const config *cfg, FILE *f)
{
    fprintf(f, "; ecl run configuration (every key, resolved)\n");
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        char text[VALUE_BUF];
        if (i == 0 || strcmp(k->section, config_keys[i - 1].section) != 0)
            fprintf(f, "%s[%s]\n", i ? "\n" : "", k->section);
        config_format_value(k, cfg, text, sizeof text);
        fprintf(f, "%s =%s%s\n", k->key, text[0] ? " " : "", text);
    }
}

/*
 * 1 when libinih would read text back unchanged as a value: no line breaks,
 * no blanks at the ends (trimmed), no ';' opening or after a blank (comment).
 */
static int config_ini_safe(const char *text)
{
    size_t n = strlen(text);
    if (n == 0)
        return 1;
    if (isspace((unsigned char)text[0]) || isspace((unsigned char)text[n - 1]) ||
        text[0] == ';' || strpbrk(text, "\r\n"))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (text[i] == ';' && isspace((unsigned char)text[i - 1]))
            return 0;
    return 1;
}

/* 0 when every string survives a trip through an INI file; -1 with the error set. */
static int config_check_writable(const config *cfg)
{
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        char text[VALUE_BUF];
        config_format_value(k, cfg, text, sizeof text);
        if (!config_ini_safe(text))
            return ecl_set_error("%s.%s = \"%s\" cannot be saved in an INI file: it has "
                                 "a line break, blanks at an end, or a ';' comment mark",
                                 k->section, k->key, text);
        if (strlen(k->key) + 3 + strlen(text) > CONFIG_MAX_LINE)
            return ecl_set_error("%s.%s is %zu characters long: an INI line holds at "
                                 "most %d; use a shorter path (e.g. a symlink)",
                                 k->section, k->key, strlen(text), CONFIG_MAX_LINE);
    }
    return 0;
}

int config_write_ini(const config *cfg, FILE *f)
{
    if (config_check_writable(cfg) != 0)
        return -1;
    config_write_text(cfg, f);
    if (fflush(f) != 0 || ferror(f))
        return ecl_set_error("writing the config failed: %s", strerror(errno));
    return 0;
}

static const char *config_type_name(key_type t)
{
    static const char *const names[] = {"string", "int", "int64", "uint64", "float",
                                        "bool"};
    return names[t];
}

void config_print_help(FILE *f)
{
    fprintf(f, "Configuration keys: set them in an INI file under [section], or on the "
               "command line as --section.key=value.\n");
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        char allowed[160], dotted[128];
        if (i == 0 || strcmp(k->section, config_keys[i - 1].section) != 0)
            fprintf(f, "\n[%s]\n", k->section);

        /* Line 1: key, type, accepted values, default; line 2: what it does. */
        config_describe(k, allowed, sizeof allowed);
        snprintf(dotted, sizeof dotted, "%s.%s", k->section, k->key);
        fprintf(f, "  %-24s %-6s  %s; default %s\n", dotted, config_type_name(k->type),
                allowed, k->def[0] ? k->def : "\"\" (empty)");
        fprintf(f, "  %-24s %s\n", "", k->help);
    }
}

uint64_t config_fingerprint(const config *cfg)
{
    /* The INI text in memory, then FNV-1a 64 over its bytes. */
    char *text = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&text, &n);
    ECL_CHECK(mem != NULL, "open_memstream failed: %s", strerror(errno));
    config_write_text(cfg, mem);
    ECL_CHECK(fclose(mem) == 0, "writing the config to memory failed");

    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)text[i];
        h *= 1099511628211ull;
    }
    free(text);
    return h;
}
