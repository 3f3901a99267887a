/*
 * gemm.c - the one GEMM of the CPU backend, behind gemm_cpu(). The engine
 * is chosen at build time (Makefile): oneDNN's sgemm, the fastest measured
 * on these machines; OpenBLAS; or plain C loops so a build always works.
 * All three are row-major with the BLAS meaning of lda/ldb/ldc.
 */
#include "ecl/ops.h"
#include "ecl/core.h"

#if defined(ECL_HAVE_DNNL) && ECL_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>

void gemm_cpu(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
              float *c, int64_t ldc)
{
    dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha,
                                  a, lda, b, ldb, beta, c, ldc);
    ECL_CHECK(st == dnnl_success, "dnnl_sgemm(%lld x %lld x %lld) failed with status %d",
              (long long)m, (long long)n, (long long)k, (int)st);
}

const char *gemm_backend_name(void)
{
    return "oneDNN sgemm";
}

#elif defined(ECL_HAVE_OPENBLAS) && ECL_HAVE_OPENBLAS
#include <cblas.h>

void gemm_cpu(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
              float *c, int64_t ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

const char *gemm_backend_name(void)
{
    return "OpenBLAS sgemm";
}

#else

void gemm_cpu(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
              float *c, int64_t ldc)
{
    /* i-p-j order keeps the innermost loop contiguous in B and C when B is
     * not transposed; correctness first, this is the fallback. */
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        for (int64_t j = 0; j < n; j++)
            ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        for (int64_t p = 0; p < k; p++) {
            float aip = alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]);
            for (int64_t j = 0; j < n; j++)
                ci[j] += aip * (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
        }
    }
}

const char *gemm_backend_name(void)
{
    return "portable C loops";
}

#endif
