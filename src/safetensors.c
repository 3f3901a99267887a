/*
 * safetensors.c - the safetensors writer and the strict reader (see
 * safetensors.h for the layout).
 *
 * The reader works in three passes over a file held whole in memory: the
 * length prefix, a JSON parse of the header into a small tree (jv), then
 * the format's rules on that tree (dtypes, shapes, offsets tiling the data
 * buffer). The JSON parser accepts only what the format uses: objects,
 * arrays, strings with escapes and integers; true/false/null, fractions and
 * exponents are errors that give the byte offset.
 * Not here: memory mapping, writing from a stream, big-endian hosts.
 */
#define _POSIX_C_SOURCE 200809L
#include "ecl/safetensors.h"
#include "ecl/core.h"
#include "ecl/fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c writes host bytes as little-endian data: port it before use here"
#endif

/* Objects nest at most 2 deep in a valid header; this bounds recursion. */
#define ST_MAX_JSON_DEPTH 16

static const char *const st_dtype_names[ST_N_DTYPES] = {
    "BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32", "F32", "U64", "I64", "F64"
};
static const int64_t st_dtype_sizes[ST_N_DTYPES] = { 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8 };

const char *st_dtype_name(st_dtype t)
{
    ECL_CHECK((int)t >= 0 && t < ST_N_DTYPES, "dtype %d out of range", (int)t);
    return st_dtype_names[t];
}

int64_t st_dtype_size(st_dtype t)
{
    ECL_CHECK((int)t >= 0 && t < ST_N_DTYPES, "dtype %d out of range", (int)t);
    return st_dtype_sizes[t];
}

int st_dtype_parse(const char *name, st_dtype *t)
{
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(name, st_dtype_names[i]) == 0) {
            *t = (st_dtype)i;
            return 0;
        }
    return -1;
}

int64_t st_numel(const st_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

/* Bytes of a shape, or -1 when a dim is negative or the size overflows. */
static int64_t st_shape_bytes(st_dtype dtype, const int64_t *shape, int ndim)
{
    int64_t n = st_dtype_size(dtype);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return -1;
        if (shape[d] != 0 && n > INT64_MAX / shape[d])
            return -1;
        n *= shape[d];
    }
    return n;
}

/* "[2, 3]" into buf, for messages. */
static const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t size)
{
    size_t at = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && at < size; d++)
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", d ? ", " : "",
                               (long long)shape[d]);
    if (at < size)
        snprintf(buf + at, size - at, "]");
    return buf;
}

/* ------------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------------ */

void st_writer_init(st_writer *w)
{
    memset(w, 0, sizeof *w);
}

void st_writer_free(st_writer *w)
{
    for (int i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->tensors);
    free(w->meta);
    memset(w, 0, sizeof *w);
}

int st_writer_add(st_writer *w, const char *name, st_dtype dtype, const int64_t *shape,
                  int ndim, const void *data)
{
    char sbuf[160];
    /* Names are keys of the header object: non-empty, unique, not reserved. */
    if (!name[0] || strcmp(name, "__metadata__") == 0)
        return ecl_set_error("safetensors: tensor name \"%s\" is empty or reserved", name);
    for (int i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return ecl_set_error("safetensors: tensor \"%s\" added twice", name);
    if ((int)dtype < 0 || dtype >= ST_N_DTYPES || ndim < 0 || ndim > ST_MAX_DIMS)
        return ecl_set_error("safetensors: tensor \"%s\": dtype %d or ndim %d out of range "
                             "(ndim at most %d)", name, (int)dtype, ndim, ST_MAX_DIMS);
    int64_t n_bytes = st_shape_bytes(dtype, shape, ndim);
    if (n_bytes < 0)
        return ecl_set_error("safetensors: tensor \"%s\": shape %s has a negative dim or "
                             "is too large", name, st_shape_str(shape, ndim, sbuf, sizeof sbuf));
    if (n_bytes > 0 && !data)
        return ecl_set_error("safetensors: tensor \"%s\" has no data", name);

    /* Laid out right after the previous tensor. */
    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? 2 * w->cap_tensors : 16;
        w->tensors = ecl_realloc(w->tensors, (size_t)w->cap_tensors * sizeof *w->tensors);
    }
    st_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = ecl_strdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim > 0)
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->n_bytes = n_bytes;
    t->offset = w->n_tensors ? t[-1].offset + t[-1].n_bytes : 0;
    t->data = data;
    w->n_tensors++;
    return 0;
}

int st_writer_meta(st_writer *w, const char *key, const char *value)
{
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta[i].key, key) == 0)
            return ecl_set_error("safetensors: metadata key \"%s\" set twice", key);
    if (w->n_meta == w->cap_meta) {
        w->cap_meta = w->cap_meta ? 2 * w->cap_meta : 16;
        w->meta = ecl_realloc(w->meta, (size_t)w->cap_meta * sizeof *w->meta);
    }
    w->meta[w->n_meta].key = ecl_strdup(key);
    w->meta[w->n_meta].value = ecl_strdup(value);
    w->n_meta++;
    return 0;
}

/* The header text, space-padded so that 8 + length is a multiple of 8.
 * Returns a malloc'd buffer and its length in *n. */
static char *st_header_text(const st_writer *w, size_t *n)
{
    char *text = NULL;
    FILE *mem = open_memstream(&text, n);
    ECL_CHECK(mem != NULL, "open_memstream failed: %s", strerror(errno));

    /* Metadata first, then the tensors in the order they were added. */
    fputc('{', mem);
    if (w->n_meta > 0) {
        fputs("\"__metadata__\":{", mem);
        for (int i = 0; i < w->n_meta; i++) {
            fputs(i ? "," : "", mem);
            json_write_string(mem, w->meta[i].key);
            fputc(':', mem);
            json_write_string(mem, w->meta[i].value);
        }
        fputc('}', mem);
    }
    for (int i = 0; i < w->n_tensors; i++) {
        const st_tensor *t = &w->tensors[i];
        fputs(i || w->n_meta ? "," : "", mem);
        json_write_string(mem, t->name);
        fprintf(mem, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            fprintf(mem, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        fprintf(mem, "],\"data_offsets\":[%lld,%lld]}", (long long)t->offset,
                (long long)(t->offset + t->n_bytes));
    }
    fputc('}', mem);

    /* Pad: the data buffer then starts 8-byte aligned in the file. */
    ECL_CHECK(fflush(mem) == 0, "writing the header to memory failed");
    fprintf(mem, "%*s", (int)((8 - *n % 8) % 8), "");
    ECL_CHECK(fclose(mem) == 0, "writing the header to memory failed");
    return text;
}

int st_writer_write(const st_writer *w, const char *path)
{
    /* Length prefix, written byte by byte: little-endian on any host. */
    size_t n_header;
    char *header = st_header_text(w, &n_header);
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (uint8_t)((uint64_t)n_header >> (8 * i));

    atomic_file a;
    if (atomic_open(&a, path) != 0) {
        free(header);
        return -1;
    }

    /* Every write checked; the first failure stops the rest. */
    int ok = fwrite(prefix, 1, 8, a.f) == 8 && fwrite(header, 1, n_header, a.f) == n_header;
    for (int i = 0; ok && i < w->n_tensors; i++) {
        size_t nb = (size_t)w->tensors[i].n_bytes;
        ok = nb == 0 || fwrite(w->tensors[i].data, 1, nb, a.f) == nb;
    }
    int err = errno;
    free(header);
    if (!ok) {
        atomic_abort(&a);
        return ecl_set_error("%s: writing failed: %s (disk full?); the previous file at that "
                             "path, if any, is untouched", path, strerror(err ? err : EIO));
    }
    return atomic_commit(&a);
}

/* ------------------------------------------------------------------------
 * JSON: a tree of values for the subset the header uses
 * ------------------------------------------------------------------------ */

typedef enum { JV_OBJECT, JV_ARRAY, JV_STRING, JV_INT } jv_type;

typedef struct jv {
    jv_type type;
    int64_t at;              /* byte offset of the value in the header */
    char *key;               /* member name, for members of an object */
    char *str;               /* JV_STRING */
    int64_t num;             /* JV_INT */
    struct jv *first, *last; /* children of an object or array, in order */
    struct jv *next;
    int64_t n;               /* number of children */
} jv;

typedef struct {
    const char *path;
    const char *s;           /* [n] the header text */
    int64_t n, i;
    int depth;
} jparser;

static void jv_free(jv *v)
{
    while (v) {
        jv *next = v->next;
        jv_free(v->first);
        free(v->key);
        free(v->str);
        free(v);
        v = next;
    }
}

/* Records "bad JSON header at byte i: expected ..., found ..." and returns -1. */
static int jp_error(const jparser *p, int64_t at, const char *expected)
{
    char found[32];
    if (at >= p->n)
        snprintf(found, sizeof found, "the end of the header");
    else if (p->s[at] >= 0x20 && p->s[at] < 0x7f)
        snprintf(found, sizeof found, "'%c'", p->s[at]);
    else
        snprintf(found, sizeof found, "byte 0x%02x", (unsigned char)p->s[at]);
    return ecl_set_error("%s: bad JSON header at byte %lld (file offset %lld): expected %s, "
                         "found %s; the file is damaged or not safetensors", p->path,
                         (long long)at, (long long)at + 8, expected, found);
}

static void jp_skip_ws(jparser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static int utf8_seq_len(const unsigned char *s, int64_t n)
{
    int len = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
            : s[0] >= 0xe0 && s[0] <= 0xef ? 3 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    for (int k = 1; k < len; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    /* Overlong three- and four-byte forms, surrogates, beyond U+10FFFF. */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return len;
}

/* Four hex digits at s[i..i+4) into *cp. 0 or -1. */
static int jp_hex4(const jparser *p, int64_t i, unsigned *cp)
{
    *cp = 0;
    for (int k = 0; k < 4; k++) {
        char c = i + k < p->n ? p->s[i + k] : '\0';
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return jp_error(p, i + k, "a hex digit of a \\u escape");
        *cp = *cp * 16 + (unsigned)d;
    }
    return 0;
}

/* Appends code point cp as UTF-8. */
static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | cp >> 12);
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | cp >> 18);
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* A \uXXXX escape (a surrogate pair takes two) at p->i, which is at 'u'. */
static int jp_unicode_escape(jparser *p, char **o)
{
    unsigned cp, lo;
    if (jp_hex4(p, p->i + 1, &cp) != 0)
        return -1;
    p->i += 5;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return jp_error(p, p->i - 6, "no lone low surrogate in a \\u escape");
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (p->i + 1 >= p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
            return jp_error(p, p->i, "a \\u low surrogate after a high one");
        if (jp_hex4(p, p->i + 2, &lo) != 0)
            return -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return jp_error(p, p->i, "a \\u low surrogate (DC00-DFFF) after a high one");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p->i += 6;
    }
    if (cp == 0)
        return jp_error(p, p->i - 6, "no \\u0000 (names and values are C strings)");
    *o = put_utf8(*o, cp);
    return 0;
}

/* One escape after a backslash; p->i is at the character after it. */
static int jp_escape(jparser *p, char **o)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char c = p->i < p->n ? p->s[p->i] : '\0';
    if (c == 'u')
        return jp_unicode_escape(p, o);
    const char *hit = c ? strchr(from, c) : NULL;
    if (!hit)
        return jp_error(p, p->i, "an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
    *(*o)++ = to[hit - from];
    p->i++;
    return 0;
}

/* A string at p->i (at the opening quote); *out is malloc'd. Decoded text is
 * never longer than its escaped form, so one buffer of that size holds it. */
static int jp_string(jparser *p, char **out)
{
    int64_t end = p->i + 1;
    while (end < p->n && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    char *buf = ecl_malloc((size_t)(end - p->i) + 1), *o = buf;
    p->i++;

    /* Raw UTF-8 is copied, escapes decoded; control bytes are not allowed. */
    while (p->i < p->n && p->s[p->i] != '"') {
        const unsigned char *c = (const unsigned char *)p->s + p->i;
        int len = *c == '\\' ? -1 : *c < 0x20 ? 0 : utf8_seq_len(c, p->n - p->i);
        int rc = 0;
        if (len < 0) {
            p->i++;
            rc = jp_escape(p, &o);
        } else if (len == 0) {
            rc = jp_error(p, p->i, "a printable character or valid UTF-8 in a string");
        } else {
            memcpy(o, c, (size_t)len);
            o += len;
            p->i += len;
        }
        if (rc != 0) {
            free(buf);
            return -1;
        }
    }
    if (p->i >= p->n) {
        free(buf);
        return jp_error(p, p->i, "'\"' closing the string");
    }
    p->i++;
    *o = '\0';
    *out = buf;
    return 0;
}

/* An integer: -?(0|[1-9][0-9]*), no fraction, no exponent, fits int64. */
static int jp_int(jparser *p, int64_t *out)
{
    int neg = p->s[p->i] == '-';
    p->i += neg;
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
        return jp_error(p, p->i, "a digit");
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return jp_error(p, p->i, "no leading zero in an integer");
    int64_t v = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        int d = p->s[p->i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return jp_error(p, p->i, "an integer that fits in 64 bits");
        v = 10 * v + d;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return jp_error(p, p->i, "an integer (no fraction or exponent in this header)");
    *out = neg ? -v : v;
    return 0;
}

static int jp_value(jparser *p, jv **out);

static void jv_append(jv *parent, jv *child)
{
    if (parent->last)
        parent->last->next = child;
    else
        parent->first = child;
    parent->last = child;
    parent->n++;
}

/* The members of an object, or the items of an array; p->i is just past the
 * opening bracket. */
static int jp_children(jparser *p, jv *v)
{
    char close = v->type == JV_OBJECT ? '}' : ']';
    jp_skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return 0;
    }
    for (;;) {
        /* An object member opens with its key and a colon. */
        char *key = NULL;
        jp_skip_ws(p);
        if (v->type == JV_OBJECT) {
            if (p->i >= p->n || p->s[p->i] != '"')
                return jp_error(p, p->i, "'\"' opening a member name");
            if (jp_string(p, &key) != 0)
                return -1;
            jp_skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') {
                free(key);
                return jp_error(p, p->i, "':' after a member name");
            }
            p->i++;
        }
        jv *child = NULL;
        if (jp_value(p, &child) != 0) {
            free(key);
            return -1;
        }
        child->key = key;
        jv_append(v, child);

        /* Then a comma and more, or the closing bracket. */
        jp_skip_ws(p);
        char c = p->i < p->n ? p->s[p->i] : '\0';
        p->i++;
        if (c == close)
            return 0;
        if (c != ',')
            return jp_error(p, p->i - 1, close == '}' ? "',' or '}' after an object member"
                                                      : "',' or ']' after an array item");
    }
}

/* Any value at p->i (after whitespace) into a new node *out. */
static int jp_value(jparser *p, jv **out)
{
    jp_skip_ws(p);
    if (p->i >= p->n)
        return jp_error(p, p->i, "a value");
    jv *v = ecl_calloc(1, sizeof *v);
    v->at = p->i;
    char c = p->s[p->i];
    int rc;
    if (c == '{' || c == '[') {
        v->type = c == '{' ? JV_OBJECT : JV_ARRAY;
        if (++p->depth > ST_MAX_JSON_DEPTH) {
            rc = jp_error(p, p->i, "nesting at most 16 deep");
        } else {
            p->i++;
            rc = jp_children(p, v);
        }
        p->depth--;
    } else if (c == '"') {
        v->type = JV_STRING;
        rc = jp_string(p, &v->str);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = JV_INT;
        rc = jp_int(p, &v->num);
    } else {
        rc = jp_error(p, p->i, "a value (object, array, string or integer)");
    }
    if (rc != 0) {
        jv_free(v);
        return -1;
    }
    *out = v;
    return 0;
}

/* The whole header: one value, then only whitespace (the padding). */
static int jp_parse(const char *path, const char *s, int64_t n, jv **root)
{
    jparser p = { path, s, n, 0, 0 };
    if (jp_value(&p, root) != 0)
        return -1;
    jp_skip_ws(&p);
    if (p.i < n) {
        jv_free(*root);
        *root = NULL;
        return jp_error(&p, p.i, "only spaces after the header object");
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Reader: the format's rules on the parsed header
 * ------------------------------------------------------------------------ */

static int jv_cmp_key(const void *a, const void *b)
{
    return strcmp((*(const jv *const *)a)->key, (*(const jv *const *)b)->key);
}

/* No two members of object v share a name (sorted, so large headers stay fast). */
static int st_check_unique(const char *path, const jv *v, const char *what)
{
    const jv **all = ecl_malloc((size_t)(v->n ? v->n : 1) * sizeof *all);
    int64_t i = 0;
    for (const jv *c = v->first; c; c = c->next)
        all[i++] = c;
    qsort(all, (size_t)v->n, sizeof *all, jv_cmp_key);
    int rc = 0;
    for (i = 1; i < v->n && rc == 0; i++)
        if (strcmp(all[i - 1]->key, all[i]->key) == 0)
            rc = ecl_set_error("%s: %s \"%s\" appears twice in the header (header bytes %lld "
                               "and %lld)", path, what, all[i]->key, (long long)all[i - 1]->at,
                               (long long)all[i]->at);
    free(all);
    return rc;
}

/* "__metadata__": an object of strings. */
static int st_take_meta(st_file *f, const jv *v)
{
    if (v->type != JV_OBJECT)
        return ecl_set_error("%s: \"__metadata__\" at header byte %lld must be an object of "
                             "strings", f->path, (long long)v->at);
    if (st_check_unique(f->path, v, "metadata key") != 0)
        return -1;
    f->meta = ecl_calloc((size_t)(v->n ? v->n : 1), sizeof *f->meta);
    for (const jv *c = v->first; c; c = c->next) {
        if (c->type != JV_STRING)
            return ecl_set_error("%s: metadata \"%s\" at header byte %lld must be a string",
                                 f->path, c->key, (long long)c->at);
        f->meta[f->n_meta].key = ecl_strdup(c->key);
        f->meta[f->n_meta].value = ecl_strdup(c->str);
        f->n_meta++;
    }
    return 0;
}

/* An array of integers >= 0 (at most max_len of them) into out; its length
 * in *len. */
static int st_take_ints(const st_file *f, const char *tensor, const jv *v, const char *field,
                        int64_t *out, int max_len, int *len)
{
    if (v->type != JV_ARRAY || v->n > max_len)
        return ecl_set_error("%s: tensor \"%s\": \"%s\" at header byte %lld must be an array "
                             "of at most %d integers", f->path, tensor, field,
                             (long long)v->at, max_len);
    *len = 0;
    for (const jv *c = v->first; c; c = c->next) {
        if (c->type != JV_INT || c->num < 0)
            return ecl_set_error("%s: tensor \"%s\": \"%s\" item at header byte %lld must be "
                                 "an integer >= 0", f->path, tensor, field, (long long)c->at);
        out[(*len)++] = c->num;
    }
    return 0;
}

/* The three fields of one tensor entry, each once, nothing else. */
static int st_take_fields(st_file *f, const jv *v, st_tensor *t, int64_t *offs)
{
    int seen = 0, n_offs = 0;
    for (const jv *c = v->first; c; c = c->next) {
        int rc = 0;
        if (strcmp(c->key, "dtype") == 0) {
            seen |= 1;
            if (c->type != JV_STRING || st_dtype_parse(c->str, &t->dtype) != 0)
                return ecl_set_error("%s: tensor \"%s\": dtype %s%s%s at header byte %lld is "
                                     "not a safetensors dtype (BOOL, U8, I8, U16, I16, F16, "
                                     "BF16, U32, I32, F32, U64, I64, F64)", f->path, t->name,
                                     c->str ? "\"" : "", c->str ? c->str : "(not a string)",
                                     c->str ? "\"" : "", (long long)c->at);
        } else if (strcmp(c->key, "shape") == 0) {
            seen |= 2;
            rc = st_take_ints(f, t->name, c, "shape", t->shape, ST_MAX_DIMS, &t->ndim);
        } else if (strcmp(c->key, "data_offsets") == 0) {
            seen |= 4;
            rc = st_take_ints(f, t->name, c, "data_offsets", offs, 2, &n_offs);
            if (rc == 0 && (n_offs != 2 || offs[0] > offs[1]))
                rc = ecl_set_error("%s: tensor \"%s\": data_offsets at header byte %lld must "
                                   "be [begin, end] with begin <= end", f->path, t->name,
                                   (long long)c->at);
        } else {
            rc = ecl_set_error("%s: tensor \"%s\": unknown field \"%s\" at header byte %lld "
                               "(expected dtype, shape, data_offsets)", f->path, t->name,
                               c->key, (long long)c->at);
        }
        if (rc != 0)
            return -1;
    }
    if (seen != 7)
        return ecl_set_error("%s: tensor \"%s\" at header byte %lld lacks \"%s\"", f->path,
                             t->name, (long long)v->at,
                             !(seen & 1) ? "dtype" : !(seen & 2) ? "shape" : "data_offsets");
    return 0;
}

/* One tensor entry: fields, then its size against its offsets. */
static int st_take_tensor(st_file *f, const jv *v, st_tensor *t)
{
    char sbuf[160];
    int64_t offs[2] = { 0, 0 };
    t->name = ecl_strdup(v->key);
    if (v->type != JV_OBJECT)
        return ecl_set_error("%s: tensor \"%s\" at header byte %lld must be an object with "
                             "dtype, shape, data_offsets", f->path, t->name, (long long)v->at);
    if (st_check_unique(f->path, v, "field") != 0 || st_take_fields(f, v, t, offs) != 0)
        return -1;

    /* Its bytes: shape x dtype size must be exactly end - begin, in the buffer. */
    t->n_bytes = st_shape_bytes(t->dtype, t->shape, t->ndim);
    st_shape_str(t->shape, t->ndim, sbuf, sizeof sbuf);
    if (t->n_bytes < 0)
        return ecl_set_error("%s: tensor \"%s\": shape %s is too large", f->path, t->name,
                             sbuf);
    if (t->n_bytes != offs[1] - offs[0])
        return ecl_set_error("%s: tensor \"%s\": shape %s of %s needs %lld bytes but "
                             "data_offsets [%lld, %lld] span %lld", f->path, t->name, sbuf,
                             st_dtype_name(t->dtype), (long long)t->n_bytes,
                             (long long)offs[0], (long long)offs[1],
                             (long long)(offs[1] - offs[0]));
    if (offs[1] > f->data_bytes)
        return ecl_set_error("%s: tensor \"%s\": data_offsets [%lld, %lld] run past the end of "
                             "the data buffer (%lld bytes): the file is truncated", f->path,
                             t->name, (long long)offs[0], (long long)offs[1],
                             (long long)f->data_bytes);
    t->offset = offs[0];
    t->data = f->data + offs[0];
    return 0;
}

static int st_cmp_offset(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->n_bytes < y->n_bytes ? -1 : x->n_bytes > y->n_bytes;
}

/* The tensors, in offset order, tile [0, data_bytes) with no gap or overlap. */
static int st_check_tiling(st_file *f)
{
    const st_tensor **by = ecl_malloc((size_t)(f->n_tensors ? f->n_tensors : 1) * sizeof *by);
    for (int i = 0; i < f->n_tensors; i++)
        by[i] = &f->tensors[i];
    qsort(by, (size_t)f->n_tensors, sizeof *by, st_cmp_offset);
    int64_t end = 0;
    int rc = 0;
    for (int i = 0; i < f->n_tensors && rc == 0; i++) {
        const st_tensor *t = by[i];
        if (t->offset < end)
            rc = ecl_set_error("%s: tensor \"%s\" (bytes %lld..%lld) overlaps tensor \"%s\" "
                               "(ends at %lld)", f->path, t->name, (long long)t->offset,
                               (long long)(t->offset + t->n_bytes), by[i - 1]->name,
                               (long long)end);
        else if (t->offset > end)
            rc = ecl_set_error("%s: data bytes %lld..%lld before tensor \"%s\" belong to no "
                               "tensor (expected tensors back to back)", f->path,
                               (long long)end, (long long)t->offset, t->name);
        end = t->offset + t->n_bytes;
    }
    if (rc == 0 && end != f->data_bytes)
        rc = ecl_set_error("%s: the data buffer has %lld bytes but the tensors cover %lld: "
                           "%lld trailing bytes belong to no tensor", f->path,
                           (long long)f->data_bytes, (long long)end,
                           (long long)(f->data_bytes - end));
    free(by);
    return rc;
}

/* Tensors and metadata from the parsed header. */
static int st_build(st_file *f, const jv *root)
{
    if (root->type != JV_OBJECT)
        return ecl_set_error("%s: the JSON header must be an object, found %s at byte %lld",
                             f->path, root->type == JV_ARRAY ? "an array" : "a scalar",
                             (long long)root->at);
    if (st_check_unique(f->path, root, "tensor name") != 0)
        return -1;
    f->tensors = ecl_calloc((size_t)(root->n ? root->n : 1), sizeof *f->tensors);
    for (const jv *c = root->first; c; c = c->next) {
        int rc = strcmp(c->key, "__metadata__") == 0
               ? st_take_meta(f, c) : st_take_tensor(f, c, &f->tensors[f->n_tensors++]);
        if (rc != 0)
            return -1;
    }
    return st_check_tiling(f);
}

/* The whole file into f->bytes. */
static int st_slurp(const char *path, st_file *f)
{
    FILE *in = fopen(path, "rb");
    if (!in)
        return ecl_set_error("cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(in), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(in);
        return ecl_set_error("%s is not a regular file", path);
    }
    f->n_bytes = (int64_t)sb.st_size;
    f->bytes = ecl_malloc((size_t)(f->n_bytes ? f->n_bytes : 1));
    size_t got = fread(f->bytes, 1, (size_t)f->n_bytes, in);
    int bad = ferror(in), err = errno;
    fclose(in);
    if (bad || (int64_t)got != f->n_bytes)
        return ecl_set_error("reading %s failed after %zu of %lld bytes: %s", path, got,
                             (long long)f->n_bytes, bad ? strerror(err) : "file shrank");
    return 0;
}

/* The length prefix against the file size. */
static int st_check_prefix(st_file *f)
{
    if (f->n_bytes < 8)
        return ecl_set_error("%s: %lld bytes, too short for a safetensors file (expected an "
                             "8-byte header length first): truncated or empty", f->path,
                             (long long)f->n_bytes);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f->bytes[i];
    if (n > ST_MAX_HEADER_BYTES)
        return ecl_set_error("%s: header length %llu is absurd (limit %d bytes): the file is "
                             "damaged or not safetensors", f->path, (unsigned long long)n,
                             ST_MAX_HEADER_BYTES);
    if ((int64_t)n > f->n_bytes - 8)
        return ecl_set_error("%s: header length %llu runs past the end of the file (%lld "
                             "bytes): the file is truncated", f->path, (unsigned long long)n,
                             (long long)f->n_bytes);
    f->header_bytes = (int64_t)n;
    f->data = f->bytes + 8 + n;
    f->data_bytes = f->n_bytes - 8 - (int64_t)n;
    return 0;
}

int st_read(const char *path, st_file *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);

    /* Bytes, prefix, JSON tree, then the format's rules. */
    jv *root = NULL;
    int rc = st_slurp(path, f);
    if (rc == 0)
        rc = st_check_prefix(f);
    if (rc == 0)
        rc = jp_parse(f->path, (const char *)f->bytes + 8, f->header_bytes, &root);
    if (rc == 0)
        rc = st_build(f, root);
    jv_free(root);
    if (rc != 0)
        st_free(f);
    return rc;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

void st_free(st_file *f)
{
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f->bytes);
    memset(f, 0, sizeof *f);
}
