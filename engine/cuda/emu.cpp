/*
 * emu.cpp - a CPU emulation of the CUDA runtime subset in emu.h, and the
 * kernel launcher behind CEL_LAUNCH in emulated builds (CEL_CUDA_EMU).
 *
 * Purpose: run engine/cuda's kernels and host code unchanged on machines
 * without a GPU (CI, developers' laptops), so that the op-by-op and
 * end-to-end tests check indexing, synchronisation and bookkeeping before
 * the code ever reaches a GPU. It is not fast and does not try to be.
 *
 * Execution model: a launch runs its blocks one after another; a block's
 * threads are coroutines on the calling thread, switched only at
 * __syncthreads, __syncwarp and warp shuffles. A barrier releases when every
 * thread that has not exited arrived (block) or every lane of the warp
 * arrived (warp: lanes that exited before a shuffle are a bug and fail the
 * launch, as they would be undefined on a GPU). A launch where no thread can
 * move fails with cudaErrorLaunchFailure instead of hanging.
 *
 * Asynchrony: launches, cudaMemcpyAsync, cudaMemsetAsync, event records and
 * cuBLAS calls are queued on their stream and run when the host waits for
 * that stream (cudaStreamSynchronize, cudaEventSynchronize, a synchronous
 * call on the legacy default stream for blocking streams, cudaFree,
 * cudaDeviceSynchronize), as late as a device may run them. So a host read
 * without the wait, a pinned staging buffer rewritten before its copy ran,
 * or a synchronous cudaMemset / cudaMemcpy (legacy stream) that is not
 * ordered with a non-blocking stream's kernels shows up in the tests, as it
 * would on a GPU, instead of passing because everything ran at once.
 * Copies from pageable memory behave as the runtime's do: host to device
 * takes the data at the call, device to host returns when it is done.
 */
#include <errno.h>
#include <math.h>
#include <mutex>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <ucontext.h>
#include <unordered_map>
#include <vector>

#include "cu_kernel.h"

#if defined(__SANITIZE_ADDRESS__)
#define CEL_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CEL_EMU_ASAN 1
#endif
#endif
#ifdef CEL_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

/* A stream: the operations queued on it, run in order when the host waits. */
struct cel__emu_stream {
    bool blocking = false; /* ordered with the legacy default stream */
    std::deque<std::function<void()>> q;
};
struct cel__emu_event {
    double t = 0.0;
    cel__emu_stream *s = nullptr; /* where it was last recorded */
};

namespace {

enum { T_READY = 0, T_WAIT_BLOCK, T_WAIT_WARP, T_DONE };

/* Context switching: a few instructions of assembly on x86-64 (swapcontext
 * makes a sigprocmask system call per switch, which made the emulation ten
 * times slower), ucontext elsewhere. */
#if defined(__x86_64__)
#define CEL_EMU_FASTCTX 1
struct Ctx {
    void *sp;
};
#else
struct Ctx {
    ucontext_t uc;
};
#endif

struct Thr {
    Ctx ctx;
    void *stack = nullptr;
    uint3 tid{0, 0, 0};
    int state = T_DONE;
    unsigned lin = 0;
    void *fake = nullptr; /* ASan fake stack of this fiber while it is switched out */
};

#ifdef CEL_EMU_ASAN
const size_t k_stack = 512 * 1024;
#else
const size_t k_stack = 128 * 1024;
#endif

struct Emu {
    std::mutex launch_mu; /* one launch at a time (tests may use threads) */
    std::vector<Thr> thr;
    Ctx sched;
    Thr *cur = nullptr;
    const std::function<void()> *body = nullptr;
    unsigned n = 0, n_done = 0, block_arrived = 0;
    std::vector<unsigned> warp_arrived, warp_done;
    std::vector<uint64_t> slots;       /* 32 per warp: shuffle exchange */
    std::vector<unsigned char> dyn;    /* dynamic shared memory */
    const void *sched_bottom = nullptr;
    size_t sched_size = 0;
    void *sched_fake = nullptr;
    /* runtime state */
    std::mutex mu;
    std::unordered_map<void *, size_t> dev, host;
    size_t dev_used = 0, dev_total = (size_t)4 << 30;
    int n_devices = 1;
    cudaError_t last = cudaSuccess;
    char msg[256] = "";
    /* queued work (see Asynchrony above); q_mu is taken before launch_mu */
    std::recursive_mutex q_mu;
    std::set<cel__emu_stream *> streams;
    cel__emu_stream legacy{true, {}};
    cudaError_t async_err = cudaSuccess; /* a queued operation failed: sticky */
};

Emu &E()
{
    static Emu *e = new Emu(); /* never freed: outlives every static destructor */
    return *e;
}

void trampoline();

#ifdef CEL_EMU_FASTCTX
extern "C" void cel__emu_ctx_switch(void **save_sp, void *new_sp);
__asm__(".text\n"
        ".globl cel__emu_ctx_switch\n"
        ".type cel__emu_ctx_switch,@function\n"
        "cel__emu_ctx_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size cel__emu_ctx_switch,.-cel__emu_ctx_switch\n");

/* A fresh context whose first switch "returns" into trampoline with the
 * stack aligned as after a call (rsp = 8 mod 16). */
void ctx_init(Ctx *c, void *stack, size_t size)
{
    uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
    uintptr_t x = top - 8;
    void **sp = (void **)(x - 56);
    for (int i = 0; i < 6; i++) sp[i] = nullptr; /* r15 r14 r13 r12 rbx rbp */
    sp[6] = (void *)&trampoline;
    c->sp = sp;
}
void ctx_switch(Ctx *from, Ctx *to) { cel__emu_ctx_switch(&from->sp, to->sp); }
#else
void ctx_init(Ctx *c, void *stack, size_t size)
{
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, trampoline, 0);
}
void ctx_switch(Ctx *from, Ctx *to) { swapcontext(&from->uc, &to->uc); }
#endif

void yield_to_sched(bool exiting)
{
    Emu &e = E();
    Thr *me = e.cur;
#ifdef CEL_EMU_ASAN
    __sanitizer_start_switch_fiber(exiting ? nullptr : &me->fake, e.sched_bottom, e.sched_size);
#else
    (void)exiting;
#endif
    ctx_switch(&me->ctx, &e.sched);
#ifdef CEL_EMU_ASAN
    __sanitizer_finish_switch_fiber(me->fake, nullptr, nullptr);
#endif
}

void trampoline()
{
    Emu &e = E();
#ifdef CEL_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &e.sched_bottom, &e.sched_size);
#endif
    (*e.body)();
    Thr *me = e.cur;
    me->state = T_DONE;
    e.n_done++;
    e.warp_done[me->lin / 32]++;
    yield_to_sched(true);
    abort(); /* a finished fiber is never resumed */
}

void resume(Thr *t)
{
    Emu &e = E();
    e.cur = t;
    threadIdx = t->tid;
#ifdef CEL_EMU_ASAN
    __sanitizer_start_switch_fiber(&e.sched_fake, t->stack, k_stack);
#endif
    ctx_switch(&e.sched, &t->ctx);
#ifdef CEL_EMU_ASAN
    __sanitizer_finish_switch_fiber(e.sched_fake, nullptr, nullptr);
#endif
}

unsigned warp_lanes(unsigned w)
{
    unsigned n = E().n;
    return (n - w * 32 < 32) ? n - w * 32 : 32;
}

/* Runs the block's threads until all finished; false on a deadlock. */
bool run_block()
{
    Emu &e = E();
    unsigned n = e.n;
    e.n_done = 0;
    e.block_arrived = 0;
    std::fill(e.warp_arrived.begin(), e.warp_arrived.end(), 0u);
    std::fill(e.warp_done.begin(), e.warp_done.end(), 0u);
    for (unsigned i = 0; i < n; i++) {
        Thr &t = e.thr[i];
        ctx_init(&t.ctx, t.stack, k_stack);
        t.state = T_READY;
    }
    while (e.n_done < n) {
        bool moved = false;
        for (unsigned i = 0; i < n; i++) {
            if (e.thr[i].state != T_READY) continue;
            resume(&e.thr[i]);
            moved = true;
        }
        /* release barriers whose participants all arrived */
        if (e.block_arrived > 0 && e.block_arrived + e.n_done == n) {
            for (unsigned i = 0; i < n; i++)
                if (e.thr[i].state == T_WAIT_BLOCK) e.thr[i].state = T_READY;
            e.block_arrived = 0;
            moved = true;
        }
        for (unsigned w = 0; w < e.warp_arrived.size(); w++) {
            if (e.warp_arrived[w] == 0) continue;
            if (e.warp_done[w] > 0) {
                snprintf(e.msg, sizeof e.msg, "emulated launch failed: lanes of warp %u exited before a warp-level sync", w);
                return false;
            }
            if (e.warp_arrived[w] == warp_lanes(w)) {
                for (unsigned i = w * 32; i < w * 32 + warp_lanes(w); i++)
                    if (e.thr[i].state == T_WAIT_WARP) e.thr[i].state = T_READY;
                e.warp_arrived[w] = 0;
                moved = true;
            }
        }
        if (!moved) {
            snprintf(e.msg, sizeof e.msg,
                     "emulated launch failed: barrier deadlock in block (%u,%u,%u) (%u of %u threads at __syncthreads, "
                     "%u exited)",
                     blockIdx.x, blockIdx.y, blockIdx.z, e.block_arrived, n, e.n_done);
            return false;
        }
    }
    return true;
}

void wait_warp()
{
    Emu &e = E();
    Thr *me = e.cur;
    me->state = T_WAIT_WARP;
    e.warp_arrived[me->lin / 32]++;
    yield_to_sched(false);
}

uint64_t shfl_bits(uint64_t v, unsigned src_of(unsigned lane, int arg, int width), int arg, int width)
{
    Emu &e = E();
    Thr *me = e.cur;
    unsigned w = me->lin / 32, lane = me->lin % 32;
    e.slots[w * 32 + lane] = v;
    wait_warp();
    unsigned src = src_of(lane, arg, width);
    uint64_t r = src < warp_lanes(w) ? e.slots[w * 32 + src] : v;
    wait_warp();
    return r;
}
unsigned src_xor(unsigned lane, int m, int width)
{
    (void)width;
    return lane ^ (unsigned)m;
}
unsigned src_idx(unsigned lane, int s, int width)
{
    unsigned base = lane - lane % (unsigned)width;
    return base + (unsigned)s % (unsigned)width;
}
template <typename T> T from_bits(uint64_t b)
{
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}
template <typename T> uint64_t to_bits(T v)
{
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}

cudaError_t fail(cudaError_t code, const char *m)
{
    Emu &e = E();
    snprintf(e.msg, sizeof e.msg, "%s", m);
    e.last = code;
    return code;
}

/* ---- queued work (callers hold q_mu) */
cel__emu_stream *strm(cudaStream_t s) { return s ? s : &E().legacy; }
void run_queue(cel__emu_stream *st)
{
    while (!st->q.empty()) {
        std::function<void()> op = std::move(st->q.front());
        st->q.pop_front();
        op();
    }
}
/* what an operation on the legacy stream waits for: its own earlier work and
 * every blocking stream's */
void run_legacy()
{
    Emu &e = E();
    run_queue(&e.legacy);
    for (cel__emu_stream *st : e.streams)
        if (st->blocking) run_queue(st);
}
void run_all()
{
    Emu &e = E();
    run_queue(&e.legacy);
    for (cel__emu_stream *st : e.streams) run_queue(st);
}
/* Queues op on stream s after the work it is ordered behind. */
void enqueue(cudaStream_t s, std::function<void()> op)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    cel__emu_stream *st = strm(s);
    if (st == &e.legacy) run_legacy();
    else if (st->blocking) run_queue(&e.legacy);
    st->q.push_back(std::move(op));
}
/* Whether p lies in memory from cudaHostAlloc (page-locked). */
bool pinned(const void *p)
{
    Emu &e = E();
    std::lock_guard<std::mutex> lk(e.mu);
    for (const auto &kv : e.host)
        if ((const char *)p >= (const char *)kv.first && (const char *)p < (const char *)kv.first + kv.second) return true;
    return false;
}
double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

} // namespace

void __syncthreads(void)
{
    Emu &e = E();
    e.cur->state = T_WAIT_BLOCK;
    e.block_arrived++;
    yield_to_sched(false);
}
void __syncwarp(unsigned mask)
{
    (void)mask;
    wait_warp();
}
float __shfl_xor_sync(unsigned mask, float v, int m, int width)
{
    (void)mask;
    return from_bits<float>(shfl_bits(to_bits(v), src_xor, m, width));
}
int __shfl_xor_sync(unsigned mask, int v, int m, int width)
{
    (void)mask;
    return from_bits<int>(shfl_bits(to_bits(v), src_xor, m, width));
}
float __shfl_sync(unsigned mask, float v, int s, int width)
{
    (void)mask;
    return from_bits<float>(shfl_bits(to_bits(v), src_idx, s, width));
}
int __shfl_sync(unsigned mask, int v, int s, int width)
{
    (void)mask;
    return from_bits<int>(shfl_bits(to_bits(v), src_idx, s, width));
}

void *cel__emu_dyn_smem(void) { return E().dyn.data(); }

/* Runs one queued launch: its blocks one after another. A failure is
 * sticky, as a device's launch failures are. */
static void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body)
{
    Emu &e = E();
    std::lock_guard<std::mutex> lk(e.launch_mu);
    const unsigned n = block.x * block.y * block.z;
    while (e.thr.size() < n) {
        Thr t;
        t.stack = mmap(nullptr, k_stack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (t.stack == MAP_FAILED) {
            fail(cudaErrorMemoryAllocation, "emulated launch: no memory for stacks");
            e.async_err = cudaErrorMemoryAllocation;
            return;
        }
        e.thr.push_back(t);
    }
    for (unsigned z = 0, i = 0; z < block.z; z++)
        for (unsigned y = 0; y < block.y; y++)
            for (unsigned x = 0; x < block.x; x++, i++) {
                e.thr[i].tid = uint3{x, y, z};
                e.thr[i].lin = i;
            }
    e.n = n;
    e.body = &body;
    e.warp_arrived.assign((n + 31) / 32, 0u);
    e.warp_done.assign((n + 31) / 32, 0u);
    e.slots.assign(((n + 31) / 32) * 32, 0u);
    e.dyn.assign(smem + 16, 0xA5); /* garbage, like real shared memory */
    blockDim = block;
    gridDim = grid;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = uint3{bx, by, bz};
                if (!run_block()) {
                    fail(cudaErrorLaunchFailure, "emulated launch: no thread of a block could move");
                    e.async_err = cudaErrorLaunchFailure;
                    return;
                }
            }
}

cudaError_t cel__emu_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t s, const std::function<void()> &body)
{
    unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
        return fail(cudaErrorInvalidValue, "emulated launch: invalid grid or block dimensions");
    /* no kernel opts in to more (cudaFuncAttributeMaxDynamicSharedMemorySize),
     * so the device allows 48 KiB, static shared memory included */
    if (smem > 48 * 1024) return fail(cudaErrorInvalidValue, "emulated launch: over 48 KiB of dynamic shared memory");
    enqueue(s, [grid, block, smem, body]() { run_grid(grid, block, smem, body); });
    return cudaSuccess;
}

/* ------------------------------------------------------------ runtime API */
extern "C" {

const char *cel__emu_cudaGetErrorString(cudaError_t err)
{
    switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotSupported: return "operation not supported (CPU emulation)";
    case cudaErrorLaunchFailure: return E().msg[0] ? E().msg : "unspecified launch failure";
    default: return "unknown error";
    }
}
cudaError_t cel__emu_cudaGetLastError(void)
{
    cudaError_t r = E().last;
    E().last = cudaSuccess;
    return r;
}
cudaError_t cel__emu_cudaGetDeviceCount(int *n)
{
    *n = E().n_devices;
    return E().n_devices > 0 ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cel__emu_cudaSetDevice(int d) { return d >= 0 && d < E().n_devices ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cel__emu_cudaGetDevice(int *d)
{
    *d = 0;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaGetDeviceProperties(struct cudaDeviceProp *p, int d)
{
    (void)d;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "CPU emulation");
    p->totalGlobalMem = E().dev_total;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 1;
    p->memoryBusWidth = 64;
    p->l2CacheSize = 1 << 20;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d)
{
    (void)d;
    *v = a == cudaDevAttrMemoryClockRate ? 1000000 : a == cudaDevAttrGlobalMemoryBusWidth ? 64 : 0;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    Emu &e = E();
    std::lock_guard<std::mutex> lk(e.mu);
    *total_b = e.dev_total;
    *free_b = e.dev_total > e.dev_used ? e.dev_total - e.dev_used : 0;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaMalloc(void **p, size_t n)
{
    Emu &e = E();
    std::lock_guard<std::mutex> lk(e.mu);
    *p = nullptr;
    if (e.dev_used + n > e.dev_total) return cudaErrorMemoryAllocation;
    void *m = malloc(n ? n : 1);
    if (!m) return cudaErrorMemoryAllocation;
    memset(m, 0xCD, n); /* uninitialised device memory is garbage, never zero */
    e.dev[m] = n;
    e.dev_used += n;
    *p = m;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    Emu &e = E();
    { /* cudaFree waits for the device: queued work may still use p */
        std::lock_guard<std::recursive_mutex> q(e.q_mu);
        run_all();
    }
    std::lock_guard<std::mutex> lk(e.mu);
    auto it = e.dev.find(p);
    if (it == e.dev.end()) return cudaErrorInvalidValue;
    e.dev_used -= it->second;
    e.dev.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cel__emu_cudaHostAlloc(void **p, size_t n, unsigned flags)
{
    (void)flags;
    Emu &e = E();
    std::lock_guard<std::mutex> lk(e.mu);
    *p = malloc(n ? n : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    e.host[*p] = n;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaFreeHost(void *p)
{
    if (!p) return cudaSuccess;
    Emu &e = E();
    {
        std::lock_guard<std::recursive_mutex> q(e.q_mu);
        run_all();
    }
    std::lock_guard<std::mutex> lk(e.mu);
    auto it = e.host.find(p);
    if (it == e.host.end()) return cudaErrorInvalidValue;
    e.host.erase(it);
    free(p);
    return cudaSuccess;
}
/* On the legacy stream, and the host waits for it. */
cudaError_t cel__emu_cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    (void)k;
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    run_legacy();
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cel__emu_cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s)
{
    if (n == 0) return cudaSuccess;
    if (k == cudaMemcpyHostToDevice && !pinned(src)) {
        /* pageable: the runtime stages the data before the call returns */
        auto snap = std::make_shared<std::vector<unsigned char>>((const unsigned char *)src,
                                                                 (const unsigned char *)src + n);
        enqueue(s, [dst, snap]() { memmove(dst, snap->data(), snap->size()); });
        return cudaSuccess;
    }
    enqueue(s, [dst, src, n]() { memmove(dst, src, n); });
    if (k == cudaMemcpyDeviceToHost && !pinned(dst)) { /* pageable: returns when done */
        Emu &e = E();
        std::lock_guard<std::recursive_mutex> lk(e.q_mu);
        run_queue(strm(s));
    }
    return cudaSuccess;
}
cudaError_t cel__emu_cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t s)
{
    if (n) enqueue(s, [dst, v, n]() { memset(dst, v, n); });
    return cudaSuccess;
}
/* On the legacy stream; like the runtime's, it may return before it ran. */
cudaError_t cel__emu_cudaMemset(void *dst, int v, size_t n) { return cel__emu_cudaMemsetAsync(dst, v, n, nullptr); }
cudaError_t cel__emu_cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p)
{
    Emu &e = E();
    std::lock_guard<std::mutex> lk(e.mu);
    memset(a, 0, sizeof *a);
    a->type = cudaMemoryTypeUnregistered;
    if (e.dev.count((void *)p)) a->type = cudaMemoryTypeDevice;
    if (e.host.count((void *)p)) a->type = cudaMemoryTypeHost;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    *s = new cel__emu_stream();
    (*s)->blocking = !(flags & cudaStreamNonBlocking);
    e.streams.insert(*s);
    return cudaSuccess;
}
cudaError_t cel__emu_cudaStreamDestroy(cudaStream_t s)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    if (!s || !e.streams.count(s)) return cudaErrorInvalidValue;
    run_queue(s); /* a device finishes a destroyed stream's work */
    e.streams.erase(s);
    delete s;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaStreamSynchronize(cudaStream_t s)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    if (strm(s) == &e.legacy) run_legacy();
    else run_queue(s);
    return e.async_err;
}
cudaError_t cel__emu_cudaDeviceSynchronize(void)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    run_all();
    return e.async_err;
}
cudaError_t cel__emu_cudaEventCreate(cudaEvent_t *ev)
{
    *ev = new cel__emu_event();
    return cudaSuccess;
}
cudaError_t cel__emu_cudaEventDestroy(cudaEvent_t ev)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    if (ev && ev->s) run_queue(ev->s); /* its queued record must not outlive it */
    delete ev;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaEventRecord(cudaEvent_t ev, cudaStream_t s)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    ev->s = strm(s);
    enqueue(s, [ev]() { ev->t = now_ms(); });
    return cudaSuccess;
}
cudaError_t cel__emu_cudaEventSynchronize(cudaEvent_t ev)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    if (ev->s) run_queue(ev->s);
    return e.async_err;
}
cudaError_t cel__emu_cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    Emu &e = E();
    std::lock_guard<std::recursive_mutex> lk(e.q_mu);
    if (a->s) run_queue(a->s);
    if (b->s) run_queue(b->s);
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}
cudaError_t cel__emu_cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode m)
{
    (void)s;
    (void)m;
    return cudaErrorNotSupported;
}
cudaError_t cel__emu_cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    (void)s;
    *g = nullptr;
    return cudaErrorNotSupported;
}
cudaError_t cel__emu_cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags)
{
    (void)g;
    (void)flags;
    *x = nullptr;
    return cudaErrorNotSupported;
}
cudaError_t cel__emu_cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
    (void)x;
    (void)s;
    return cudaErrorNotSupported;
}
cudaError_t cel__emu_cudaGraphDestroy(cudaGraph_t g)
{
    (void)g;
    return cudaSuccess;
}
cudaError_t cel__emu_cudaGraphExecDestroy(cudaGraphExec_t x)
{
    (void)x;
    return cudaSuccess;
}

/* ------------------------------------------------------------------ cuBLAS */
struct cel__emu_cublas {
    cudaStream_t s = nullptr;
};
cublasStatus_t cel__emu_cublasCreate(cublasHandle_t *h)
{
    *h = new cel__emu_cublas();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cel__emu_cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cel__emu_cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->s = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cel__emu_cublasSetWorkspace(cublasHandle_t h, void *ws, size_t n)
{
    (void)h;
    (void)ws;
    (void)n;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cel__emu_cublasSetMathMode(cublasHandle_t h, cublasMath_t m)
{
    (void)h;
    (void)m;
    return CUBLAS_STATUS_SUCCESS;
}

static float emu_load(const void *p, cudaDataType t, size_t i)
{
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (t == CUDA_R_16BF) return cel_d_bf16_to_f32(h);
    return cel_d_f16_to_f32(h);
}

static void emu_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float al, const void *A,
                     cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb, float be, float *c, int ldc)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float acc = 0.0f;
            for (int l = 0; l < k; l++) {
                size_t ai = ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * (size_t)lda : (size_t)l + (size_t)i * (size_t)lda;
                size_t bi = tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * (size_t)ldb : (size_t)j + (size_t)l * (size_t)ldb;
                acc += emu_load(A, at, ai) * emu_load(B, bt, bi);
            }
            float *dst = &c[(size_t)i + (size_t)j * (size_t)ldc];
            *dst = be == 0.0f ? al * acc : al * acc + be * *dst;
        }
}

cublasStatus_t cel__emu_cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                     const void *alpha, const void *A, cudaDataType at, int lda, const void *B,
                                     cudaDataType bt, int ldb, const void *beta, void *C, cudaDataType ct, int ldc,
                                     cublasComputeType_t comp, cublasGemmAlgo_t algo)
{
    (void)algo;
    if (ct != CUDA_R_32F || comp != CUBLAS_COMPUTE_32F || at != bt || m < 0 || n < 0 || k < 0)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    /* host-side scalars are read at the call; the product runs in order on the handle's stream */
    const float al = *(const float *)alpha, be = *(const float *)beta;
    enqueue(h->s, [=]() { emu_gemm(ta, tb, m, n, k, al, A, at, lda, B, bt, ldb, be, (float *)C, ldc); });
    return CUBLAS_STATUS_SUCCESS;
}

const char *cel__emu_cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

void cel__emu_set_device_memory(size_t bytes)
{
    std::lock_guard<std::mutex> lk(E().mu);
    E().dev_total = bytes;
}
void cel__emu_set_device_count(int n) { E().n_devices = n; }

} /* extern "C" */
