/*
 * cu_kernel.h - the device-side vocabulary the kernels in kernels.cu use,
 * spelled so that the same source compiles with nvcc for the GPU and with a
 * C++ compiler for the CPU emulation (CEL_CUDA_EMU, see emu.h / emu.cpp).
 *
 * Kernels launch through CEL_LAUNCH, read dynamic shared memory through
 * CEL_DYN_SMEM, unroll through CEL_UNROLL, take fast exponentials through
 * cel_d_fast_exp, and convert numbers through the cel_d_* helpers below. In
 * the emulation a block's threads run as coroutines that switch only at
 * __syncthreads / __syncwarp / shuffles, blocks run one after another, and
 * `__shared__` becomes `static` (one copy, shared by the block's threads).
 */
#ifndef CEL_CUDA_CU_KERNEL_H
#define CEL_CUDA_CU_KERNEL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef CEL_CUDA_EMU
#include <functional>

#include "emu.h"

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
struct uint4 {
    unsigned x, y, z, w;
};
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__
#define __align__(n) __attribute__((aligned(n))) /* GNU form: also valid after `static` (__shared__) */

void __syncthreads(void);
void __syncwarp(unsigned mask = 0xffffffffu);
float __shfl_xor_sync(unsigned mask, float v, int lane_mask, int width = 32);
int __shfl_xor_sync(unsigned mask, int v, int lane_mask, int width = 32);
float __shfl_sync(unsigned mask, float v, int src_lane, int width = 32);
int __shfl_sync(unsigned mask, int v, int src_lane, int width = 32);

static inline float __uint_as_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t __float_as_uint(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
#define cel_d_fast_exp(x) expf(x)
#define CEL_UNROLL
#define CEL_UNROLL_4

/* Blocks run one after another, so atomics are plain read-modify-writes and
 * fences have nothing to order. */
static inline int atomicAdd(int *p, int v)
{
    const int old = *p;
    *p = old + v;
    return old;
}
static inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    const unsigned old = *p;
    *p = old + v;
    return old;
}
static inline void __threadfence(void) {}
static inline float __ldcg(const float *p) { return *p; }
static inline int __ldcg(const int *p) { return *p; }
/* Rounded float operations that the compiler may not contract into FMAs
 * (nvcc: __fmul_rn etc.): two code paths meant to give the same bits use them. */
static inline float cel_d_mul(float a, float b) { return a * b; }
static inline float cel_d_fma(float a, float b, float c) { return fmaf(a, b, c); }
static inline void cel_d_fast_sincos(float x, float *s, float *c)
{
    *s = sinf(x);
    *c = cosf(x);
}

/* Runs body once per thread of grid x block (see emu.cpp). */
cudaError_t cel__emu_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t s, const std::function<void()> &body);
void *cel__emu_dyn_smem(void);

/* The arguments are evaluated and copied at the launch, as a device launch
 * does: the kernel may run later (when the host waits for the stream), after
 * what they were computed from has changed or gone. */
template <typename... P, typename... A>
static inline cudaError_t cel__emu_launch_k(dim3 grid, dim3 block, size_t smem, cudaStream_t s, void (*k)(P...),
                                            A... args)
{
    return cel__emu_launch(grid, block, smem, s, [=]() { k(args...); });
}
#define CEL_LAUNCH(kernel, grid, block, smem, stream, ...)                                                        \
    cel__emu_launch_k(dim3(grid), dim3(block), (smem), (stream), kernel, __VA_ARGS__)
/* Launches run one after another, so there is no early start to allow. */
#define CEL_LAUNCH_PDL(pdl, kernel, grid, block, smem, stream, ...)                                               \
    ((void)(pdl), CEL_LAUNCH(kernel, grid, block, smem, stream, __VA_ARGS__))
static inline void cel_d_grid_wait(void) {}
static inline void cel_d_grid_launch_next(void) {}
/* The prefetch moves no data, but it must name memory the kernel may read,
 * aligned as cp.async.bulk demands: touching its first and last byte lets
 * ASan check the former, and a misaligned request stops the test. */
static inline void cel_d_prefetch_l2(const void *p, uint32_t bytes)
{
    if ((uintptr_t)p % 16 != 0 || bytes == 0 || bytes % 16 != 0) __builtin_trap();
    const volatile unsigned char *b = (const volatile unsigned char *)p;
    (void)b[0];
    (void)b[bytes - 1];
}
/* As the device's: a hint that moves no data; the touch lets ASan check it. */
static inline void cel_d_prefetch_l1(const void *p) { (void)*(const volatile unsigned char *)p; }
#define CEL_DYN_SMEM(T, name) T *name = (T *)cel__emu_dyn_smem()

static inline float cel_d_f16_to_f32(uint16_t h)
{
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24 */
        return s ? -v : v;
    }
    if (e == 31) return __uint_as_float(s | 0x7f800000u | (m << 13));
    return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));
}
/* round to nearest even, overflow to infinity (as __float2half_rn) */
static inline uint16_t cel_d_f32_to_f16(float f)
{
    uint32_t x = __float_as_uint(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) return (uint16_t)(sign | (uint32_t)rintf(fabsf(f) * 16777216.0f));
    return (uint16_t)(sign | ((ax + 0xc8000fffu + ((ax >> 13) & 1u)) >> 13));
}
#else /* nvcc */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define CEL_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)

/* Programmatic dependent launch (sm_90+): with pdl set, the kernel may start
 * while the previous kernel on the stream is still running - as soon as
 * every block of that one has called cel_d_grid_launch_next (or exited) -
 * and must call cel_d_grid_wait before it touches anything the previous
 * kernels write or read (see cel_d_grid_wait); memory no kernel of the step
 * writes (weights, the batch metadata copied before the step's first,
 * never early, kernel) may be read before. Errors surface through
 * cudaGetLastError, as with CEL_LAUNCH. */
template <typename... P, typename... A>
static void cel__launch_pdl(int pdl, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                            A... args)
{
    if (!pdl) {
        kernel<<<grid, block, smem, s>>>(args...);
        return;
    }
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    (void)cudaLaunchKernelEx(&cfg, kernel, ((P)args)...);
}
#define CEL_LAUNCH_PDL(pdl, kernel, grid, block, smem, stream, ...)                                               \
    cel__launch_pdl((pdl), kernel, dim3(grid), dim3(block), (smem), (stream), __VA_ARGS__)

/* Waits until the kernels this one was launched behind (CEL_LAUNCH_PDL) have
 * finished and their writes are visible. Before it a kernel may only read
 * what no kernel of the step writes (weights) and prefetch; a kernel
 * launched without pdl returns from it at once. sm_90+; older parts never
 * launch early (the backend sets pdl only on sm_90+), so it is empty there. */
static __device__ __forceinline__ void cel_d_grid_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/* Lets the next kernel (launched with pdl) start its blocks: called early,
 * so they can be resident and prefetching while this kernel finishes. Only
 * a scheduling hint: the next kernel still waits for this one to complete
 * in cel_d_grid_wait. */
static __device__ __forceinline__ void cel_d_grid_launch_next(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* Starts bringing bytes (a multiple of 16, p 16-byte aligned) into L2 in one
 * bulk request (sm_90+; nothing on older parts). A hint: no data moves into
 * registers, so it is safe before cel_d_grid_wait. */
static __device__ __forceinline__ void cel_d_prefetch_l2(const void *p, uint32_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#else
    (void)p;
    (void)bytes;
#endif
}
/* Starts bringing the line holding p into L1 (a hint, safe before
 * cel_d_grid_wait for memory no earlier kernel of the step writes). */
static __device__ __forceinline__ void cel_d_prefetch_l1(const void *p)
{
    asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}
#define CEL_DYN_SMEM(T, name)                                                                                     \
    extern __shared__ __align__(16) unsigned char cel__dyn_smem[];                                               \
    T *name = (T *)cel__dyn_smem

#define cel_d_fast_exp(x) __expf(x)
#define CEL_UNROLL _Pragma("unroll")
#define CEL_UNROLL_4 _Pragma("unroll 4")

static __device__ __forceinline__ float cel_d_mul(float a, float b) { return __fmul_rn(a, b); }
static __device__ __forceinline__ float cel_d_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
/* sin and cos of x in [-pi, pi] by the SFU (absolute error about 2^-21.4 there). */
static __device__ __forceinline__ void cel_d_fast_sincos(float x, float *s, float *c) { __sincosf(x, s, c); }

static __device__ __forceinline__ float cel_d_f16_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
static __device__ __forceinline__ uint16_t cel_d_f32_to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }
#endif

static __device__ __forceinline__ float cel_d_bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
/* round to nearest even; NaN stays NaN */
static __device__ __forceinline__ uint16_t cel_d_f32_to_bf16(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Sum over the 32 lanes of a warp; every lane gets the total. */
static __device__ __forceinline__ float cel_d_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float cel_d_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
