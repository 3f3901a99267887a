/*
 * safetensors.h - reading and writing files in the safetensors format, the
 * tensor container PyTorch-side tools (the `safetensors` Python package,
 * Hugging Face loaders) read and write.
 *
 * Layout, all integers little-endian:
 *
 *     u64 N | N bytes of JSON header | data buffer
 *
 * The header is one JSON object. Each member maps a tensor name to
 *     {"dtype": "F32", "shape": [K, M], "data_offsets": [begin, end]}
 * where begin and end are byte offsets into the data buffer; the optional
 * member "__metadata__" maps strings to strings. Tensors tile the data buffer
 * exactly: no gaps, no overlaps, nothing left over. The writer lays them out
 * in the order they were added and pads the header with spaces so the data
 * buffer starts at a multiple of 8 bytes.
 *
 * The reader is strict: it checks every length, offset, dtype and shape and
 * parses the header with its own JSON parser for exactly what the format
 * uses (objects, arrays, strings, integers); errors name the file, the
 * tensor or byte offset and what was expected.
 *
 * Not here: memory mapping (the reader loads the whole file), big-endian
 * hosts (refused at compile time), dtype conversion (callers get raw bytes).
 */
#ifndef ECL_SAFETENSORS_H
#define ECL_SAFETENSORS_H

#include <stdint.h>

#define ST_MAX_DIMS 8
/* Headers beyond this are refused as corrupt: real ones are kilobytes. */
#define ST_MAX_HEADER_BYTES (100 * 1000 * 1000)

/* Element types of the format, with their names in the header. */
typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16,
    ST_U32, ST_I32, ST_F32, ST_U64, ST_I64, ST_F64, ST_N_DTYPES
} st_dtype;

/* One tensor. In a writer `data` is the caller's pointer; in a read file it
 * points into the file's bytes and may be unaligned (files from other
 * writers need not align): copy out with memcpy rather than casting. */
typedef struct {
    char *name;                   /* owned by the writer or the file */
    st_dtype dtype;
    int ndim;                     /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS];
    int64_t n_bytes;              /* elements x dtype size */
    int64_t offset;               /* begin, in bytes into the data buffer */
    const void *data;
} st_tensor;

typedef struct {
    char *key, *value;
} st_meta_entry;

/* Collects tensors and metadata, then writes them in one go. */
typedef struct {
    st_tensor *tensors;
    int n_tensors, cap_tensors;
    st_meta_entry *meta;
    int n_meta, cap_meta;
} st_writer;

/* A whole file in memory, parsed and checked. */
typedef struct {
    char path[1100];
    uint8_t *bytes;               /* [n_bytes] the file */
    int64_t n_bytes;
    int64_t header_bytes;         /* N of the length prefix */
    const uint8_t *data;          /* [data_bytes] the buffer after the header */
    int64_t data_bytes;
    st_tensor *tensors;           /* [n_tensors] in header order */
    int n_tensors;
    st_meta_entry *meta;          /* [n_meta] in header order */
    int n_meta;
} st_file;

/* "F32" for ST_F32 and so on; a static string. */
const char *st_dtype_name(st_dtype t);
/* Bytes per element: 4 for ST_F32. */
int64_t st_dtype_size(st_dtype t);
/* The dtype named `name` ("F32"). 0, or -1 (no error recorded) if unknown. */
int st_dtype_parse(const char *name, st_dtype *t);
/* Product of the shape (1 for a scalar). */
int64_t st_numel(const st_tensor *t);

/* An empty writer. */
void st_writer_init(st_writer *w);
/* Adds a tensor: the name is copied, the data pointer is kept (nothing is
 * copied: data must stay valid until st_writer_write). The data holds
 * product(shape) elements of dtype, little-endian. 0, or -1 with
 * ecl_last_error() for an empty, reserved or duplicate name or a bad shape. */
int st_writer_add(st_writer *w, const char *name, st_dtype dtype, const int64_t *shape,
                  int ndim, const void *data);
/* Adds a metadata string pair (both copied). 0, or -1 on a duplicate key. */
int st_writer_meta(st_writer *w, const char *key, const char *value);
/* Writes the file through a temporary name and a rename (fileio.h): every
 * write is checked, and on failure the file at `path`, if any, is left as it
 * was. 0, or -1 with ecl_last_error(). */
int st_writer_write(const st_writer *w, const char *path);
/* Frees the writer's copies (not the tensor data). */
void st_writer_free(st_writer *w);

/* Reads and checks the whole file. 0, or -1 with ecl_last_error() naming the
 * file and what is wrong; on -1 nothing needs freeing. Free with st_free(). */
int st_read(const char *path, st_file *f);
/* The tensor called `name`, or NULL. Points into f. */
const st_tensor *st_find(const st_file *f, const char *name);
/* The metadata value for `key`, or NULL. Points into f. */
const char *st_meta(const st_file *f, const char *key);
void st_free(st_file *f);

#endif
