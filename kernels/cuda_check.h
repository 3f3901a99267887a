/*
 * cuda_check.h - checked calls for the .cu files of ecl: one wrapper per
 * library (CUDA runtime, cuBLAS) that reports file:line, the failed
 * statement, the library's own error name and text, and the device, then
 * stops the process with status 1; the launch check that follows every
 * kernel launch; and the device scratch buffers the ops reuse.
 *
 * Host C++ only (nvcc); C code uses include/ecl/cuda.h. core.h's
 * ecl_fatal_at is not used here because core.h is C11-only (stdnoreturn);
 * the message keeps its "ecl: error at FILE:LINE:" form.
 */
#ifndef ECL_KERNELS_CUDA_CHECK_H
#define ECL_KERNELS_CUDA_CHECK_H

#include <cstddef>

#include <cublas_api.h>
#include <cuda_runtime.h>

/* Prints the failed call with its error and the current device, exits 1. */
[[noreturn]] void ecl_cuda_fail(const char *file, int line, const char *stmt,
                                const char *err_name, const char *err_text);

/* Prints "ecl: error at FILE:LINE: message" and exits 1: a caller's
 * programming error (a bad shape, a bad sigma row), as ECL_CHECK on the CPU. */
[[noreturn]] void ecl_cuda_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ECL_CUDA_REQUIRE(cond, ...) \
    do { if (!(cond)) ecl_cuda_fatal_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)

/* The name of a cuBLAS status, e.g. "CUBLAS_STATUS_NOT_INITIALIZED". */
const char *ecl_cublas_status_name(cublasStatus_t s);

#define CUDA_CHECK(stmt)                                                        \
    do {                                                                        \
        cudaError_t err_ = (stmt);                                              \
        if (err_ != cudaSuccess)                                                \
            ecl_cuda_fail(__FILE__, __LINE__, #stmt, cudaGetErrorName(err_),    \
                          cudaGetErrorString(err_));                            \
    } while (0)

#define CUBLAS_CHECK(stmt)                                                      \
    do {                                                                        \
        cublasStatus_t st_ = (stmt);                                            \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                       \
            ecl_cuda_fail(__FILE__, __LINE__, #stmt, ecl_cublas_status_name(st_), \
                          "cuBLAS call failed");                                \
    } while (0)

/* After every launch: a bad configuration (too many threads, too much
 * shared memory) shows here; faults inside the kernel show at the next
 * synchronising call, which is checked too. */
#define CUDA_CHECK_LAUNCH(kernel_name)                                          \
    do {                                                                        \
        cudaError_t err_ = cudaGetLastError();                                  \
        if (err_ != cudaSuccess)                                                \
            ecl_cuda_fail(__FILE__, __LINE__, "launch of " #kernel_name,         \
                          cudaGetErrorName(err_), cudaGetErrorString(err_));    \
    } while (0)

/* Slots of device scratch, one per op that needs one, so two ops never
 * hand out the same bytes. */
enum ecl_cuda_scratch_slot {
    ECL_SCRATCH_LOSS_ROWS,     /* [B, 3] per-row loss terms */
    ECL_SCRATCH_LOSS_OUT,      /* the reduced loss terms */
    ECL_SCRATCH_HEAD_NORM,     /* per-block sums of squares + the total */
    ECL_SCRATCH_EM_OUT,        /* em_solve_cuda's result and error report */
    ECL_SCRATCH_N_SLOTS
};

/* A device buffer of at least n_bytes for slot, kept and grown between
 * calls (freed by ecl_cuda_release_scratch). Not thread-safe: one host
 * thread drives the device, as in the trainer. */
void *ecl_cuda_scratch(enum ecl_cuda_scratch_slot slot, size_t n_bytes);

#endif
