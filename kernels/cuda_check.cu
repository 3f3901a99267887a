/*
 * cuda_check.cu - the host glue of ecl's CUDA code: the fatal report of a
 * failed CUDA or cuBLAS call, the device probe tests use to skip with a
 * reason, and the device scratch buffers the ops keep between calls.
 *
 * Not here: device selection (the current device is used), streams.
 */
#include "cuda_check.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "ecl/cuda.h"

void ecl_cuda_fail(const char *file, int line, const char *stmt, const char *err_name,
                   const char *err_text)
{
    /* The device is asked without checking: the call that failed may have
     * been this one, and the report must not recurse. */
    int dev = -1;
    if (cudaGetDevice(&dev) != cudaSuccess)
        dev = -1;
    fprintf(stderr, "ecl: error at %s:%d: %s failed: %s (%s) on CUDA device %d\n",
            file, line, stmt, err_name, err_text, dev);
    exit(1);
}

void ecl_cuda_fatal_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ecl: error at %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

const char *ecl_cublas_status_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_(unknown)";
    }
}

/* ---- probe ---------------------------------------------------------------- */

int ecl_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        /* Clear the sticky error so later calls do not report it again. */
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/* "X.Y" of a CUDA version number such as 13000. */
static void ecl_cuda_version_text(int v, char *buf, size_t n)
{
    snprintf(buf, n, "%d.%d", v / 1000, (v % 1000) / 10);
}

/* The reason a failed cudaGetDeviceCount gives, in words with a hint. */
static void ecl_cuda_explain(cudaError_t err, char *why, size_t n)
{
    int drv = 0, rt = 0;
    char drv_s[16], rt_s[16];
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    ecl_cuda_version_text(drv, drv_s, sizeof drv_s);
    ecl_cuda_version_text(rt, rt_s, sizeof rt_s);

    if (err == cudaErrorInsufficientDriver && drv == 0)
        snprintf(why, n, "no NVIDIA driver found (libcuda.so did not load; CUDA runtime "
                 "%s built in): run on a machine with an NVIDIA GPU and driver", rt_s);
    else if (err == cudaErrorInsufficientDriver)
        snprintf(why, n, "the NVIDIA driver supports CUDA %s but this build's runtime is "
                 "CUDA %s: update the driver or build with an older toolkit", drv_s, rt_s);
    else if (err == cudaErrorNoDevice)
        snprintf(why, n, "the driver (CUDA %s) sees no CUDA device: check nvidia-smi and "
                 "CUDA_VISIBLE_DEVICES", drv_s);
    else
        snprintf(why, n, "cudaGetDeviceCount failed: %s (%s); driver CUDA %s, runtime "
                 "CUDA %s", cudaGetErrorName(err), cudaGetErrorString(err), drv_s, rt_s);
}

int ecl_cuda_probe(char *why, size_t n)
{
    char buf[512];
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err == cudaSuccess && count == 0)
        err = cudaErrorNoDevice;

    /* A device is usable when it takes an allocation: that catches a
     * device the binary has no code for only at launch, so the tests also
     * check the first launch. */
    void *p = NULL;
    if (err == cudaSuccess && (err = cudaMalloc(&p, 256)) == cudaSuccess) {
        cudaFree(p);
        return 1;
    }
    (void)cudaGetLastError();
    ecl_cuda_explain(err, buf, sizeof buf);
    if (why && n > 0)
        snprintf(why, n, "%s", buf);
    return 0;
}

/* ---- memory for C callers ------------------------------------------------ */

void *ecl_cuda_alloc(size_t n_bytes)
{
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, n_bytes > 0 ? n_bytes : 1));
    return p;
}

void ecl_cuda_free(void *p)
{
    if (p)
        CUDA_CHECK(cudaFree(p));
}

void ecl_cuda_to_device(void *dst, const void *src, size_t n_bytes)
{
    CUDA_CHECK(cudaMemcpy(dst, src, n_bytes, cudaMemcpyHostToDevice));
}

void ecl_cuda_to_host(void *dst, const void *src, size_t n_bytes)
{
    CUDA_CHECK(cudaMemcpy(dst, src, n_bytes, cudaMemcpyDeviceToHost));
}

void ecl_cuda_sync(void)
{
    CUDA_CHECK(cudaDeviceSynchronize());
}

/* ---- scratch -------------------------------------------------------------- */

static void *ecl_scratch_ptr[ECL_SCRATCH_N_SLOTS];
static size_t ecl_scratch_bytes[ECL_SCRATCH_N_SLOTS];

void *ecl_cuda_scratch(enum ecl_cuda_scratch_slot slot, size_t n_bytes)
{
    /* Grow by at least half again so a slowly growing B does not
     * reallocate every call. */
    if (n_bytes > ecl_scratch_bytes[slot]) {
        size_t grown = ecl_scratch_bytes[slot] + ecl_scratch_bytes[slot] / 2;
        size_t want = n_bytes > grown ? n_bytes : grown;
        if (ecl_scratch_ptr[slot])
            CUDA_CHECK(cudaFree(ecl_scratch_ptr[slot]));
        CUDA_CHECK(cudaMalloc(&ecl_scratch_ptr[slot], want));
        ecl_scratch_bytes[slot] = want;
    }
    return ecl_scratch_ptr[slot];
}

void ecl_cuda_release_scratch(void)
{
    for (int s = 0; s < ECL_SCRATCH_N_SLOTS; s++) {
        if (ecl_scratch_ptr[s])
            CUDA_CHECK(cudaFree(ecl_scratch_ptr[s]));
        ecl_scratch_ptr[s] = NULL;
        ecl_scratch_bytes[s] = 0;
    }
}
