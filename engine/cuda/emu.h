/*
 * emu.h - the subset of the CUDA runtime and cuBLAS that the CUDA backend
 * uses, emulated on the CPU (engine/cuda/emu.cpp). Only compiled with
 * -DCEL_CUDA_EMU, for the unit_test_cuda*_emu tests: they run the very
 * kernels and host code of engine/cuda on machines without a GPU, so
 * indexing mistakes show up in CI (under ASan too) instead of on the GPU.
 *
 * Every name is a macro onto a cel__emu_ symbol, so an emulated build links
 * beside a real libcudart without clashing. "Device" memory is host memory,
 * streams are synchronous, graphs are unsupported (the backend falls back
 * to eager launches), and cublasGemmEx is a plain loop in FP32.
 */
#ifndef CEL_CUDA_EMU_H
#define CEL_CUDA_EMU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int cudaError_t;
#define cudaSuccess 0
#define cudaErrorInvalidValue 1
#define cudaErrorMemoryAllocation 2
#define cudaErrorInsufficientDriver 35
#define cudaErrorNoDevice 100
#define cudaErrorNotSupported 801
#define cudaErrorLaunchFailure 719

typedef struct cel__emu_stream *cudaStream_t;
typedef struct cel__emu_event *cudaEvent_t;
typedef struct cel__emu_graph *cudaGraph_t;
typedef struct cel__emu_graph_exec *cudaGraphExec_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
} cudaMemoryType;
struct cudaPointerAttributes {
    enum cudaMemoryType type;
    int device;
    void *devicePointer;
    void *hostPointer;
};

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor;
    int multiProcessorCount;
    int memoryBusWidth;
    int l2CacheSize;
};
enum cudaDeviceAttr { cudaDevAttrMemoryClockRate = 36, cudaDevAttrGlobalMemoryBusWidth = 37 };
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1 };
#define cudaStreamNonBlocking 1
#define cudaHostAllocDefault 0

#define cudaGetErrorString cel__emu_cudaGetErrorString
#define cudaGetErrorName cel__emu_cudaGetErrorString
#define cudaGetLastError cel__emu_cudaGetLastError
#define cudaGetDeviceCount cel__emu_cudaGetDeviceCount
#define cudaSetDevice cel__emu_cudaSetDevice
#define cudaGetDevice cel__emu_cudaGetDevice
#define cudaGetDeviceProperties cel__emu_cudaGetDeviceProperties
#define cudaDeviceGetAttribute cel__emu_cudaDeviceGetAttribute
#define cudaDriverGetVersion cel__emu_cudaDriverGetVersion
#define cudaRuntimeGetVersion cel__emu_cudaRuntimeGetVersion
#define cudaMemGetInfo cel__emu_cudaMemGetInfo
#define cudaMalloc cel__emu_cudaMalloc
#define cudaFree cel__emu_cudaFree
#define cudaHostAlloc cel__emu_cudaHostAlloc
#define cudaFreeHost cel__emu_cudaFreeHost
#define cudaMemcpy cel__emu_cudaMemcpy
#define cudaMemcpyAsync cel__emu_cudaMemcpyAsync
#define cudaMemsetAsync cel__emu_cudaMemsetAsync
#define cudaMemset cel__emu_cudaMemset
#define cudaPointerGetAttributes cel__emu_cudaPointerGetAttributes
#define cudaStreamCreateWithFlags cel__emu_cudaStreamCreateWithFlags
#define cudaStreamDestroy cel__emu_cudaStreamDestroy
#define cudaStreamSynchronize cel__emu_cudaStreamSynchronize
#define cudaDeviceSynchronize cel__emu_cudaDeviceSynchronize
#define cudaEventCreate cel__emu_cudaEventCreate
#define cudaEventDestroy cel__emu_cudaEventDestroy
#define cudaEventRecord cel__emu_cudaEventRecord
#define cudaEventSynchronize cel__emu_cudaEventSynchronize
#define cudaEventElapsedTime cel__emu_cudaEventElapsedTime
#define cudaStreamBeginCapture cel__emu_cudaStreamBeginCapture
#define cudaStreamEndCapture cel__emu_cudaStreamEndCapture
#define cudaGraphInstantiate cel__emu_cudaGraphInstantiate
#define cudaGraphLaunch cel__emu_cudaGraphLaunch
#define cudaGraphDestroy cel__emu_cudaGraphDestroy
#define cudaGraphExecDestroy cel__emu_cudaGraphExecDestroy

const char *cel__emu_cudaGetErrorString(cudaError_t e);
cudaError_t cel__emu_cudaGetLastError(void);
cudaError_t cel__emu_cudaGetDeviceCount(int *n);
cudaError_t cel__emu_cudaSetDevice(int d);
cudaError_t cel__emu_cudaGetDevice(int *d);
cudaError_t cel__emu_cudaGetDeviceProperties(struct cudaDeviceProp *p, int d);
cudaError_t cel__emu_cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d);
cudaError_t cel__emu_cudaDriverGetVersion(int *v);
cudaError_t cel__emu_cudaRuntimeGetVersion(int *v);
cudaError_t cel__emu_cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cel__emu_cudaMalloc(void **p, size_t n);
cudaError_t cel__emu_cudaFree(void *p);
cudaError_t cel__emu_cudaHostAlloc(void **p, size_t n, unsigned flags);
cudaError_t cel__emu_cudaFreeHost(void *p);
cudaError_t cel__emu_cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k);
cudaError_t cel__emu_cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cel__emu_cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t s);
cudaError_t cel__emu_cudaMemset(void *dst, int v, size_t n);
cudaError_t cel__emu_cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p);
cudaError_t cel__emu_cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cel__emu_cudaStreamDestroy(cudaStream_t s);
cudaError_t cel__emu_cudaStreamSynchronize(cudaStream_t s);
cudaError_t cel__emu_cudaDeviceSynchronize(void);
cudaError_t cel__emu_cudaEventCreate(cudaEvent_t *e);
cudaError_t cel__emu_cudaEventDestroy(cudaEvent_t e);
cudaError_t cel__emu_cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cel__emu_cudaEventSynchronize(cudaEvent_t e);
cudaError_t cel__emu_cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cel__emu_cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode m);
cudaError_t cel__emu_cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cel__emu_cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long flags);
cudaError_t cel__emu_cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s);
cudaError_t cel__emu_cudaGraphDestroy(cudaGraph_t g);
cudaError_t cel__emu_cudaGraphExecDestroy(cudaGraphExec_t e);

/* ---- cuBLAS ---- */
typedef int cublasStatus_t;
#define CUBLAS_STATUS_SUCCESS 0
#define CUBLAS_STATUS_NOT_INITIALIZED 1
#define CUBLAS_STATUS_INVALID_VALUE 7
#define CUBLAS_STATUS_NOT_SUPPORTED 15
typedef struct cel__emu_cublas *cublasHandle_t;
typedef enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum cudaDataType { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType;
typedef enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
typedef enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0 } cublasMath_t;

#define cublasCreate cel__emu_cublasCreate
#define cublasDestroy cel__emu_cublasDestroy
#define cublasSetStream cel__emu_cublasSetStream
#define cublasSetWorkspace cel__emu_cublasSetWorkspace
#define cublasSetMathMode cel__emu_cublasSetMathMode
#define cublasGemmEx cel__emu_cublasGemmEx
#define cublasGetStatusString cel__emu_cublasGetStatusString

cublasStatus_t cel__emu_cublasCreate(cublasHandle_t *h);
cublasStatus_t cel__emu_cublasDestroy(cublasHandle_t h);
cublasStatus_t cel__emu_cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cel__emu_cublasSetWorkspace(cublasHandle_t h, void *ws, size_t n);
cublasStatus_t cel__emu_cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
/* Supports what the backend uses: transa = T, transb = N, A and B BF16 or F32
 * (both the same), C F32, compute 32F. */
cublasStatus_t cel__emu_cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                     const void *alpha, const void *A, cudaDataType at, int lda, const void *B,
                                     cudaDataType bt, int ldb, const void *beta, void *C, cudaDataType ct, int ldc,
                                     cublasComputeType_t comp, cublasGemmAlgo_t algo);
const char *cel__emu_cublasGetStatusString(cublasStatus_t s);

/* Test hooks: the memory the emulated device reports (default 4 GiB), and a
 * failure injected into the next cudaMalloc calls. */
void cel__emu_set_device_memory(size_t bytes);
void cel__emu_set_device_count(int n);

#ifdef __cplusplus
}
#endif
#endif
