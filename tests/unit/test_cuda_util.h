/*
 * test_cuda_util.h - the harness test_cuda_ops.c and test_cuda_prefill.c
 * share: the device/stream/RNG globals of one test program, device memory
 * helpers that assert on failure (a test, not a library), an element-wise
 * tolerance check that prints its worst element, and NEED_DEVICE (skip
 * where there is no CUDA device). Include after the CUDA API (cuda_internal.h
 * or prefill.h) and cmocka; one test program per translation unit, so the
 * static globals are that program's.
 */
#ifndef CEL_TEST_CUDA_UTIL_H
#define CEL_TEST_CUDA_UTIL_H

#include <math.h>
#include <stdio.h>

#include "celine/common.h"

static bool g_device;
static cudaStream_t g_stream;
static cel_rng g_rng;

/* uniform in [-a, a) from g_rng */
static inline float frand(float a) { return (float)((cel_rng_uniform(&g_rng) * 2.0 - 1.0) * a); }

static inline void *dalloc(size_t n)
{
    void *p = NULL;
    assert_int_equal(cudaMalloc(&p, n ? n : 1), cudaSuccess);
    return p;
}
/* Every copy and memset goes through g_stream, the stream the kernels under
 * test run on: g_stream is non-blocking, so the synchronous cudaMemcpy /
 * cudaMemset (legacy default stream) would not be ordered with its kernels
 * on a device - a memset could land after the kernel that needs the zeros. */
/* copies n bytes to the device after g_stream's work, and waits for it (h
 * may be reused at once) */
static inline void to_dev(void *d, const void *h, size_t n)
{
    assert_int_equal(cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, g_stream), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(g_stream), cudaSuccess);
}
static inline void *dup_to_dev(const void *h, size_t n)
{
    void *d = dalloc(n);
    to_dev(d, h, n);
    return d;
}
/* sets n bytes of d to v, in order on g_stream */
static inline void dset(void *d, int v, size_t n)
{
    assert_int_equal(cudaMemsetAsync(d, v, n, g_stream), cudaSuccess);
}
/* waits for g_stream's work, then copies n bytes back */
static inline void to_host(void *h, const void *d, size_t n)
{
    assert_int_equal(cudaMemcpyAsync(h, d, n, cudaMemcpyDeviceToHost, g_stream), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(g_stream), cudaSuccess);
}
static inline void dfree(void *d) { assert_int_equal(cudaFree(d), cudaSuccess); }

/* |got - want| <= atol + rtol |want| for every element; prints the worst. */
static inline void check_close(const char *what, const float *got, const float *want, size_t n, float atol, float rtol)
{
    size_t worst = 0, bad = 0;
    float worst_err = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(got[i] - want[i]);
        if (!(e <= atol + rtol * fabsf(want[i]))) bad++;
        if (!(e <= worst_err)) {
            worst_err = e;
            worst = i;
        }
    }
    printf("  %-44s n=%-8zu max|err|=%.3g at %zu (got %.6g want %.6g)%s\n", what, n, (double)worst_err, worst,
           n ? (double)got[worst] : 0.0, n ? (double)want[worst] : 0.0, bad ? "  FAIL" : "");
    if (bad) fail_msg("%s: %zu of %zu elements outside tolerance (atol %g, rtol %g)", what, bad, n, (double)atol,
                      (double)rtol);
}

/* Group set-up: seeds g_rng, opens device 0 and g_stream, and sets g_device;
 * without a usable device it prints the SKIP line the GPU run looks for and
 * leaves g_device false (every test then skips). Returns false then. */
static inline bool cuda_test_open(uint64_t seed)
{
    cel_rng_seed(&g_rng, seed);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        printf("SKIP: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError();
        return false;
    }
    if (cudaSetDevice(0) != cudaSuccess || cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking) != cudaSuccess) {
        printf("SKIP: no CUDA device (setup failed)\n");
        return false;
    }
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    g_device = true;
    return true;
}

/* Group tear-down: releases what cuda_test_open made. */
static inline void cuda_test_close(void)
{
    if (g_device) cudaStreamDestroy(g_stream);
}

#define NEED_DEVICE()                                                                                              \
    do {                                                                                                           \
        if (!g_device) skip();                                                                                     \
    } while (0)

#endif
