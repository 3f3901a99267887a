/*
 * test_config.c - the config module: defaults, INI loading, every error
 * category and its message, overrides, cross-field validation, the
 * write -> load round trip, the fingerprint, the printers and the shipped
 * configs/ files (so it runs from the repository root).
 *
 * Not tested here: what the values do to training.
 */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "ecl/config.h"
#include "ecl/core.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes text to a fresh temporary file; returns its path (caller frees). */
static char *write_temp(const char *text)
{
    char *path = ecl_strdup("/tmp/ecl_test_config_XXXXXX");
    int fd = mkstemp(path);
    ECL_CHECK(fd >= 0, "mkstemp failed");
    FILE *f = fdopen(fd, "w");
    ECL_CHECK(f != NULL, "fdopen failed");
    fputs(text, f);
    ECL_CHECK(fclose(f) == 0, "writing %s failed", path);
    return path;
}

/* Loads text as an INI file over defaults; returns the rc, cfg gets the result. */
static int load_text(config *cfg, const char *text)
{
    char *path = write_temp(text);
    config_defaults(cfg);
    int rc = config_load_file(cfg, path);
    unlink(path);
    free(path);
    return rc;
}

/* The message holds every one of the (NULL-terminated) needles. */
static void check_message_has(const char *what, const char *const *needles)
{
    const char *msg = ecl_last_error();
    for (int i = 0; needles[i]; i++)
        CHECK(strstr(msg, needles[i]) != NULL, "%s: message lacks \"%s\": %s", what,
              needles[i], msg);
}

/* A load of text fails, names the needles, and leaves the config untouched. */
static void expect_load_error(const char *what, const char *text,
                              const char *const *needles)
{
    config cfg, fresh;
    int rc = load_text(&cfg, text);
    CHECK(rc == -1, "%s: load returned %d, want -1", what, rc);
    check_message_has(what, needles);
    config_defaults(&fresh);
    CHECK(memcmp(&cfg, &fresh, sizeof cfg) == 0, "%s: a failed load changed the config",
          what);
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_defaults(void)
{
    config c;
    memset(&c, 0x5a, sizeof c);
    config_defaults(&c);

    /* Every field against the values the project settled on. */
    CHECK(strcmp(c.data.format, "idx") == 0, "data.format %s", c.data.format);
    CHECK(c.data.path[0] == '\0' && c.data.labels[0] == '\0', "data paths not empty");
    CHECK(c.data.limit == 0 && c.data.channels == 1, "data.limit/channels");
    CHECK(c.data.height == 0 && c.data.width == 0, "data.height/width");
    CHECK(strcmp(c.model.name, "vgg4") == 0, "model.name %s", c.model.name);
    CHECK(c.model.clusters == 10 && c.model.width == 64, "model.clusters/width");
    CHECK(c.model.head_bn == 1 && c.model.logit_scale == 0.5f, "model.head_bn/logit_scale");
    CHECK(strcmp(c.loss.method, "ecl") == 0, "loss.method %s", c.loss.method);
    CHECK(c.loss.lambda == 100.0f && c.loss.gamma == 0.0f && c.loss.alpha == 1.0f,
          "loss weights");
    CHECK(strcmp(c.loss.aug_form, "kl") == 0, "loss.aug_form %s", c.loss.aug_form);
    CHECK(c.loss.forward_ce == 0.2f && c.loss.y_eps == 1e-12f, "loss.forward_ce/y_eps");
    CHECK(c.em.max_iter == 50 && strcmp(c.em.solver, "dual") == 0 && c.em.tol == 1e-6f && c.em.warm_start == 0, "em");
    CHECK(strcmp(c.optim.name, "adam") == 0 && c.optim.lr == 1e-3f, "optim.name/lr");
    CHECK(c.optim.beta1 == 0.9f && c.optim.beta2 == 0.999f && c.optim.eps == 1e-8f,
          "adam constants");
    CHECK(c.optim.weight_decay == 0.0f && c.optim.momentum == 0.9f, "optim wd/momentum");
    CHECK(strcmp(c.optim.schedule, "cosine") == 0 && c.optim.warmup_epochs == 0.0f,
          "optim.schedule/warmup");
    CHECK(c.augment.views == 1 && c.augment.translate == 2.0f && c.augment.rotate == 10.0f,
          "augment views/translate/rotate");
    CHECK(c.augment.scale == 0.1f && c.augment.hflip == 0 && c.augment.jitter == 0.0f &&
          c.augment.workers == 1, "augment scale/hflip/jitter/workers");
    CHECK(c.run.seed == 0 && c.run.epochs == 8 && c.run.batch == 100 && c.run.threads == 0,
          "run seed/epochs/batch/threads");
    CHECK(strcmp(c.run.out, "runs/latest") == 0, "run.out %s", c.run.out);
    CHECK(c.run.log_every == 20 && strcmp(c.run.device, "cpu") == 0 && c.run.quiet == 0,
          "run log_every/device/quiet");
    CHECK(c.run.eval_every == 1 && c.run.kmeans_baseline == 1, "run eval/kmeans");

    /* Defaults lack only data.path; with it they validate. */
    CHECK(config_validate(&c) == -1, "defaults validated without data.path");
    check_message_has("empty path", NEEDLES("data.path"));
    strcpy(c.data.path, "x.gz");
    CHECK(config_validate(&c) == 0, "defaults + path fail: %s", ecl_last_error());
}

static void test_load_good(void)
{
    /* Both comment marks, an indented line, an inline ';' comment, ':' form. */
    const char *text = "# a comment\n"
                       "; another\n"
                       "[data]\n"
                       "path = /tmp/x.gz\n"
                       "  limit = 500\n"
                       "[model]\n"
                       "clusters = 20 ; inline comment\n"
                       "head_bn = OFF\n"
                       "logit_scale = 0.25\n"
                       "[optim]\n"
                       "lr: 3e-4\n"
                       "[run]\n"
                       "seed = 18446744073709551615\n"
                       "labels_unused_line_follows = \n";
    config c;
    int rc = load_text(&c, "[data]\npath = /tmp/x.gz\n");
    CHECK(rc == 0, "minimal load failed: %s", ecl_last_error());
    CHECK(strcmp(c.data.path, "/tmp/x.gz") == 0, "path %s", c.data.path);
    rc = load_text(&c, "\xEF\xBB\xBF[data]\r\npath = bom.gz\r\n");
    CHECK(rc == 0 && strcmp(c.data.path, "bom.gz") == 0, "BOM/CRLF file: %s",
          ecl_last_error());

    /* The last line is an unknown key: the whole file must be refused. */
    CHECK(load_text(&c, text) == -1, "unknown key accepted");
    check_message_has("unknown run key", NEEDLES(":14:", "labels_unused_line_follows"));

    /* Without it, every value lands. */
    char *good = ecl_strdup(text);
    *strstr(good, "labels_unused") = '\0';
    rc = load_text(&c, good);
    free(good);
    CHECK(rc == 0, "good file failed: %s", ecl_last_error());
    CHECK(c.data.limit == 500, "indented limit %lld", (long long)c.data.limit);
    CHECK(c.model.clusters == 20, "clusters %d", c.model.clusters);
    CHECK(c.model.head_bn == 0 && c.model.logit_scale == 0.25f, "head_bn/logit_scale");
    CHECK(c.optim.lr == 3e-4f, "lr %g", (double)c.optim.lr);
    CHECK(c.run.seed == UINT64_MAX, "seed %llu", (unsigned long long)c.run.seed);
    CHECK(c.run.epochs == 8, "untouched key lost its default");
}

static void test_load_errors(void)
{
    expect_load_error("unknown section", "[data]\npath = a\n[modle]\nclusters = 3\n",
                      NEEDLES(":3:", "[modle]", "unknown section", "model"));
    expect_load_error("empty unknown section", "[optimizer]\n",
                      NEEDLES(":1:", "optimizer", "unknown section"));
    expect_load_error("unknown key", "[model]\ncluster = 3\n",
                      NEEDLES(":2:", "[model] cluster", "clusters", "logit_scale"));
    expect_load_error("key before section", "clusters = 3\n",
                      NEEDLES(":1:", "clusters", "outside any section"));
    expect_load_error("bad int", "[model]\n\nclusters = 12abc\n",
                      NEEDLES(":3:", "[model] clusters", "12abc", "not a whole number"));
    expect_load_error("int in exponent form", "[run]\nepochs = 1e3\n",
                      NEEDLES("[run] epochs", "1e3"));
    expect_load_error("empty int", "[run]\nepochs =\n", NEEDLES("[run] epochs", "\"\""));
    expect_load_error("int overflow", "[data]\nlimit = 99999999999999999999\n",
                      NEEDLES("[data] limit", "99999999999999999999", "out of range"));
    expect_load_error("int out of range", "[model]\nclusters = 100001\n",
                      NEEDLES("clusters", "100001", "out of range", "[1, 100000]"));
    expect_load_error("negative seed", "[run]\nseed = -1\n", NEEDLES("seed", "-1"));
    expect_load_error("float nan", "[loss]\nlambda = nan\n",
                      NEEDLES("[loss] lambda", "nan", "finite"));
    expect_load_error("float inf", "[loss]\nalpha = -inf\n",
                      NEEDLES("[loss] alpha", "-inf", "finite"));
    expect_load_error("float junk", "[optim]\nlr = 1e-3x\n", NEEDLES("lr", "1e-3x"));
    expect_load_error("float range", "[loss]\nlambda = -1\n",
                      NEEDLES("[loss] lambda", "-1 is out of range", ">= 0"));
    expect_load_error("open float bound", "[optim]\nbeta1 = 1\n",
                      NEEDLES("beta1", "out of range", "< 1"));
    expect_load_error("bad bool", "[model]\nhead_bn = maybe\n",
                      NEEDLES("[model] head_bn", "maybe", "true or false"));
    expect_load_error("bad choice", "[loss]\naug_form = js\n",
                      NEEDLES("aug_form", "js", "kl/sym_kl/ce/dot"));
    expect_load_error("too-long string",
                      "[model]\nname = vgg4vgg4vgg4vgg4vgg4vgg4vgg4vgg4vgg4\n",
                      NEEDLES("model.name", "36", "at most 31"));
    expect_load_error("line without =", "[data]\npath = a\nthis line is wrong\n",
                      NEEDLES(":3:", "this line is wrong", "key = value"));
    expect_load_error("unclosed section", "[data\n", NEEDLES(":1:", "']'"));

    /* A line too long for libinih is refused, not silently split in two. */
    char long_line[400] = "[data]\npath = ";
    memset(long_line + strlen(long_line), 'p', 300);
    long_line[sizeof long_line - 2] = '\n';
    long_line[sizeof long_line - 1] = '\0';
    expect_load_error("long line", long_line, NEEDLES(":2:", "characters long"));

    /* A missing file is named, with a hint. */
    config c;
    config_defaults(&c);
    CHECK(config_load_file(&c, "/tmp/ecl_no_such_dir/none.ini") == -1,
          "missing file loaded");
    check_message_has("missing file", NEEDLES("/tmp/ecl_no_such_dir/none.ini", "configs/"));
}

static void test_overrides(void)
{
    config c;
    config_defaults(&c);

    /* Both spellings, every type. */
    CHECK(config_apply_override(&c, "--run.epochs=20") == 0, "%s", ecl_last_error());
    CHECK(config_apply_override(&c, "loss.lambda=2.5") == 0, "%s", ecl_last_error());
    CHECK(config_apply_override(&c, "--model.head_bn=no") == 0, "%s", ecl_last_error());
    CHECK(config_apply_override(&c, "--data.labels=") == 0, "%s", ecl_last_error());
    CHECK(config_apply_override(&c, "--run.out=a=b") == 0, "%s", ecl_last_error());
    CHECK(config_set(&c, "optim.name", "sgd") == 0, "%s", ecl_last_error());
    CHECK(c.run.epochs == 20 && c.loss.lambda == 2.5f && c.model.head_bn == 0,
          "override values not applied");
    CHECK(strcmp(c.run.out, "a=b") == 0, "value split at the second '=': %s", c.run.out);
    CHECK(strcmp(c.optim.name, "sgd") == 0, "config_set string");

    /* Malformed forms name the argument and change nothing. */
    config before = c;
    const char *bad[] = {"--foo", "--a.b", "--data.=x", "--.path=x", "--data=x", "run.epochs"};
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
        CHECK(config_apply_override(&c, bad[i]) == -1, "%s accepted", bad[i]);
        CHECK(strstr(ecl_last_error(), bad[i]) != NULL, "message lacks %s: %s", bad[i],
              ecl_last_error());
    }

    /* Well formed but wrong: section, key, value. */
    CHECK(config_apply_override(&c, "--modle.clusters=3") == -1, "bad section accepted");
    check_message_has("override section", NEEDLES("--modle.clusters=3", "unknown section"));
    CHECK(config_apply_override(&c, "--run.epoch=3") == -1, "bad key accepted");
    check_message_has("override key", NEEDLES("--run.epoch=3", "epochs", "batch"));
    CHECK(config_apply_override(&c, "--loss.lambda=-1") == -1, "negative lambda accepted");
    check_message_has("override value", NEEDLES("--loss.lambda=-1", "out of range"));
    CHECK(config_set(&c, "loss.lambda", "-1") == -1, "config_set accepted -1");
    check_message_has("config_set value",
                      NEEDLES("loss.lambda = -1 is out of range: expected a number >= 0"));
    CHECK(config_set(&c, "run.device", "tpu") == -1, "bad device accepted");
    check_message_has("config_set choice", NEEDLES("tpu", "cpu/auto/cuda"));

    /* A path field holds 1023 characters, not 1024. */
    char path[1100];
    memset(path, 'q', sizeof path);
    path[1023] = '\0';
    CHECK(config_set(&c, "data.path", path) == 0, "1023-char path refused");
    path[1023] = 'q';
    path[1024] = '\0';
    CHECK(config_set(&c, "data.path", path) == -1, "1024-char path accepted");
    check_message_has("long path", NEEDLES("data.path", "1023"));
    CHECK(memcmp(&c.run, &before.run, sizeof c.run) == 0, "failed overrides changed run");
}

static void test_validate(void)
{
    config c;
    config_defaults(&c);
    strcpy(c.data.path, "x.gz");

    /* K larger than the batch names both numbers. */
    c.model.clusters = 50;
    c.run.batch = 32;
    CHECK(config_validate(&c) == -1, "K > batch validated");
    check_message_has("K > batch", NEEDLES("run.batch = 32", "model.clusters = 50"));
    c.run.batch = 50;
    CHECK(config_validate(&c) == 0, "batch == K refused: %s", ecl_last_error());

    /* Each cross-field rule on its own. */
    c.model.clusters = 1;
    CHECK(config_validate(&c) == -1, "one cluster validated");
    check_message_has("K = 1", NEEDLES("model.clusters = 1"));
    c.model.clusters = 10;
    c.data.channels = 2;
    CHECK(config_validate(&c) == -1, "two channels validated");
    check_message_has("channels", NEEDLES("data.channels = 2"));
    c.data.channels = 3;
    strcpy(c.data.format, "folder");
    strcpy(c.data.labels, "l.gz");
    CHECK(config_validate(&c) == -1, "folder with labels validated");
    check_message_has("folder labels", NEEDLES("data.labels", "folder"));
    c.data.labels[0] = '\0';
    CHECK(config_validate(&c) == 0, "good folder config refused: %s", ecl_last_error());

    /* Fields set directly by code are checked against the table too. */
    c.loss.alpha = NAN;
    CHECK(config_validate(&c) == -1, "nan alpha validated");
    check_message_has("nan field", NEEDLES("loss.alpha"));
    c.loss.alpha = 1.0f;
    strcpy(c.optim.schedule, "linear");
    CHECK(config_validate(&c) == -1, "unknown schedule validated");
    check_message_has("bad choice field", NEEDLES("optim.schedule", "linear"));
}

/* Every key set away from its default; a missing table row fails here. */
static const char *const all_keys_changed[] = {
    "data.format=folder", "data.path=/data/imgs", "data.labels=",
    "data.limit=123456789012", "data.channels=3", "data.height=32", "data.width=48",
    "model.name=vgg4", "model.clusters=7", "model.width=32", "model.head_bn=false",
    "model.logit_scale=0.3", "loss.method=ecl", "loss.lambda=12.345678",
    "loss.gamma=0.001", "loss.alpha=0.7", "loss.aug_form=sym_kl", "loss.forward_ce=0.1",
    "loss.y_eps=3e-9", "em.max_iter=3", "em.tol=1.5e-7", "em.warm_start=yes",
    "optim.name=sgd", "optim.lr=0.1", "optim.beta1=0.85", "optim.beta2=0.99",
    "optim.eps=1e-7", "optim.weight_decay=0.0005", "optim.momentum=0.95",
    "optim.schedule=constant", "optim.warmup_epochs=1.5", "augment.views=4",
    "augment.translate=3.3", "augment.rotate=15", "augment.scale=0.2",
    "augment.hflip=on", "augment.jitter=0.4", "augment.workers=3",
    "run.seed=12345678901234567890", "run.epochs=9", "run.batch=64", "run.threads=2",
    "run.out=runs/x y", "run.log_every=5", "run.device=auto", "run.quiet=1",
    "run.eval_every=0", "run.kmeans_baseline=false",
};

/* config_write_ini's text for cfg, in a malloc'd string (through a temp file). */
static char *ini_text(const config *cfg, int *rc)
{
    FILE *f = tmpfile();
    ECL_CHECK(f != NULL, "tmpfile failed");
    *rc = config_write_ini(cfg, f);
    long n = ftell(f);
    ECL_CHECK(n >= 0 && fseek(f, 0, SEEK_SET) == 0, "seek in tmpfile failed");
    char *text = ecl_malloc((size_t)n + 1);
    ECL_CHECK(fread(text, 1, (size_t)n, f) == (size_t)n, "reading tmpfile failed");
    text[n] = '\0';
    fclose(f);
    return text;
}

static void test_round_trip(void)
{
    config a, b;
    config_defaults(&a);
    int n_keys = (int)(sizeof all_keys_changed / sizeof all_keys_changed[0]);
    for (int i = 0; i < n_keys; i++)
        CHECK(config_apply_override(&a, all_keys_changed[i]) == 0, "%s: %s",
              all_keys_changed[i], ecl_last_error());

    /* write -> load into a fresh config: the same bytes, field by field. */
    int rc;
    char *text = ini_text(&a, &rc);
    CHECK(rc == 0, "write_ini failed: %s", ecl_last_error());
    rc = load_text(&b, text);
    CHECK(rc == 0, "reload failed: %s\n%s", ecl_last_error(), text);
    CHECK(memcmp(&a.data, &b.data, sizeof a.data) == 0, "data differs after round trip");
    CHECK(memcmp(&a.model, &b.model, sizeof a.model) == 0, "model differs");
    CHECK(memcmp(&a.loss, &b.loss, sizeof a.loss) == 0, "loss differs");
    CHECK(memcmp(&a.em, &b.em, sizeof a.em) == 0, "em differs");
    CHECK(memcmp(&a.optim, &b.optim, sizeof a.optim) == 0, "optim differs");
    CHECK(memcmp(&a.augment, &b.augment, sizeof a.augment) == 0, "augment differs");
    CHECK(memcmp(&a.run, &b.run, sizeof a.run) == 0, "run differs");
    CHECK(config_fingerprint(&a) == config_fingerprint(&b), "fingerprints differ");
    CHECK(strstr(text, "lambda = 12.345678\n") != NULL, "float not shortest:\n%s", text);
    free(text);

    /* The changed config is not the default one. */
    config d;
    config_defaults(&d);
    CHECK(config_fingerprint(&d) != config_fingerprint(&a), "fingerprint ignores values");
    CHECK(memcmp(&d.run, &a.run, sizeof d.run) != 0, "overrides did nothing");

    /* Floats are written in the fewest digits that still read back exactly. */
    config_defaults(&a);
    a.loss.lambda = nextafterf(0.1f, 1.0f);
    text = ini_text(&a, &rc);
    CHECK(strstr(text, "lr = 0.001\n") && strstr(text, "y_eps = 1e-12\n"), "%s", text);
    CHECK(strstr(text, "lambda = 0.10000001\n") != NULL, "8 digits needed:\n%s", text);
    CHECK(load_text(&b, text) == 0 && b.loss.lambda == a.loss.lambda, "ulp lost");
    free(text);

    /* Many floats across lambda's range: the written text reads back exactly. */
    uint32_t bits = 12345u, top;
    float max_lambda = 1e6f;
    memcpy(&top, &max_lambda, sizeof top);
    int n_lost = 0;
    for (int i = 0; i < 3000; i++) {
        bits = bits * 1664525u + 1013904223u;
        uint32_t pick = bits % top;
        memcpy(&a.loss.lambda, &pick, sizeof pick);
        text = ini_text(&a, &rc);
        const char *line = strstr(text, "lambda = ") + 9;
        char value[64];
        snprintf(value, sizeof value, "%.*s", (int)strcspn(line, "\n"), line);
        n_lost += config_set(&b, "loss.lambda", value) != 0 ||
                  b.loss.lambda != a.loss.lambda;
        free(text);
    }
    CHECK(n_lost == 0, "%d of 3000 floats did not survive write -> read", n_lost);
}

static void test_fingerprint_and_write_checks(void)
{
    config a, b;
    config_defaults(&a);
    config_defaults(&b);
    CHECK(config_fingerprint(&a) == config_fingerprint(&b), "same config, two hashes");

    /* It is FNV-1a 64 over exactly the text config_write_ini writes. */
    int rc;
    char *text = ini_text(&a, &rc);
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = text; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    free(text);
    CHECK(config_fingerprint(&a) == h, "fingerprint %016llx, FNV-1a of the INI %016llx",
          (unsigned long long)config_fingerprint(&a), (unsigned long long)h);

    /* One value, one ulp of a float, one bool: each moves the hash. */
    b.em.max_iter = 16;
    CHECK(config_fingerprint(&a) != config_fingerprint(&b), "int change not seen");
    b = a;
    b.loss.lambda = nextafterf(b.loss.lambda, 1e9f);
    CHECK(config_fingerprint(&a) != config_fingerprint(&b), "float ulp change not seen");
    b = a;
    b.run.quiet = 1;
    CHECK(config_fingerprint(&a) != config_fingerprint(&b), "bool change not seen");

    /* Strings an INI file cannot hold are refused by write_ini, by name. */
    const char *unsafe[] = {"trailing ", " leading", "a ;comment", "two\nlines"};
    for (int i = 0; i < 4; i++) {
        b = a;
        strcpy(b.run.out, unsafe[i]);
        free(ini_text(&b, &rc));
        CHECK(rc == -1, "unsafe run.out \"%s\" written", unsafe[i]);
        CHECK(strstr(ecl_last_error(), "run.out") != NULL, "%s", ecl_last_error());
    }
    b = a;
    memset(b.data.path, 'p', 600);
    free(ini_text(&b, &rc));
    CHECK(rc == -1, "600-char path written to a line libinih cannot read");
}

/* Runs a printer into memory. */
static char *capture_table(const config *cfg, int help)
{
    char *text = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&text, &n);
    if (help)
        config_print_help(mem);
    else
        config_print_table(cfg, mem);
    fclose(mem);
    return text;
}

static void test_printers(void)
{
    config c;
    config_defaults(&c);
    char *table = capture_table(&c, 0);
    CHECK(strstr(table, "loss.lambda") != NULL, "table lacks loss.lambda");
    CHECK(strncmp(table, "key", 3) == 0 && strstr(table, "value\n"), "table header");
    CHECK(strstr(table, "run.out") && strstr(table, "runs/latest"), "table lacks run.out");
    CHECK(strstr(table, "model.head_bn") && strstr(table, "true"), "table bool");
    free(table);

    char *help = capture_table(NULL, 1);
    CHECK(strstr(help, "loss.aug_form") && strstr(help, "kl/sym_kl/ce/dot"), "help choices");
    CHECK(strstr(help, "[1, 100000]") != NULL, "help lacks a range");
    CHECK(strstr(help, "default runs/latest") != NULL, "help lacks a default");
    CHECK(strstr(help, "number of clusters K") != NULL, "help lacks help text");
    for (int i = 0; i < (int)(sizeof all_keys_changed / sizeof all_keys_changed[0]); i++) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)strcspn(all_keys_changed[i], "="),
                 all_keys_changed[i]);
        CHECK(strstr(help, key) != NULL, "help lacks %s", key);
    }
    free(help);
}

static void test_shipped_configs(void)
{
    const char *files[] = {"configs/mnist_vgg4.ini", "configs/mnist_vgg4_paper.ini",
                           "configs/fashion_mnist_vgg4.ini", "configs/demo_fashion_mnist.ini"};
    config c[4];
    for (int i = 0; i < 4; i++) {
        config_defaults(&c[i]);
        CHECK(config_load_file(&c[i], files[i]) == 0, "%s", ecl_last_error());
        CHECK(config_validate(&c[i]) == 0, "%s: %s", files[i], ecl_last_error());
    }

    /* The settings that tell the four apart. */
    CHECK(c[0].run.batch == 100 && c[0].model.head_bn && c[0].loss.forward_ce == 0.2f,
          "mnist_vgg4 recipe");
    CHECK(c[1].run.batch == 250 && c[1].optim.lr == 1e-4f && c[1].augment.views == 2 &&
          c[1].optim.weight_decay == 0.01f && c[1].run.epochs == 50, "paper recipe");
    CHECK(!c[1].model.head_bn && c[1].model.logit_scale == 1.0f &&
          c[1].loss.forward_ce == 0.0f && strcmp(c[1].optim.schedule, "constant") == 0,
          "paper recipe (head)");
    CHECK(c[2].augment.hflip && c[2].data.limit == 0, "fashion recipe");
    CHECK(c[3].data.limit == 10000 && c[3].run.epochs == 3 &&
          strcmp(c[3].run.out, "runs/demo") == 0, "demo recipe");
    CHECK(strcmp(c[0].data.path, "../shared/data/mnist-10k/images-idx3-ubyte.gz") == 0,
          "mnist path %s", c[0].data.path);
}

int main(void)
{
    test_defaults();
    test_load_good();
    test_load_errors();
    test_overrides();
    test_validate();
    test_round_trip();
    test_fingerprint_and_write_checks();
    test_printers();
    test_shipped_configs();
    return check_summary("test_config");
}
