// cudasim.h: the CUDA built-ins for the CPU, so that kernels/cuda/*.cu compile with g++ and run as on a GPU.
//
// A launch runs the blocks of the grid one after another. The threads of a block are cooperative fibers,
// each on its own small stack: a thread runs until it calls __syncthreads() or returns, then
// the next one runs. When every thread that has not returned waits at the barrier, they all continue, so
// barriers and __shared__ memory (one copy, reused by each block in turn) behave as on a GPU. Nothing is
// preempted, so data races that a GPU would expose can stay hidden here; the atomics are real atomics all
// the same. printf from a kernel prints (flushed when the launch ends).
//
// Not simulated: warps (no __shfl*/__ballot/__syncwarp), streams, textures, device-side malloc.
#pragma once

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

// ---- qualifiers -------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// A block-scope thread_local is static: one copy per OS thread, shared by all the fibers of the block.
// `extern __shared__ T name[];` (dynamic shared memory) becomes a thread_local array that the generated
// launch file defines.
#define __shared__ thread_local
// __restrict__ is a g++ keyword already.

// ---- dim3 and the thread coordinates -----------------------------------------------------------------
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned int x, y, z;
};

// The scheduler sets threadIdx before it switches to a fiber, so each fiber reads its own.
static thread_local uint3 threadIdx;
static thread_local uint3 blockIdx;
static thread_local dim3 blockDim;
static thread_local dim3 gridDim;
static constexpr int warpSize = 32;

// ---- the fiber scheduler ----------------------------------------------------------------------------
// Fiber t runs thread t of every block. It is entered once through ucontext (makecontext/setcontext gives
// it its own stack); after that the scheduler and the fibers switch with _setjmp/_longjmp, which saves no
// signal mask and so makes no system call. A fiber that finishes its thread parks, ready to run thread t
// of the next block.
namespace cudasim {

constexpr size_t kStackBytes = 256 * 1024;  // reserved per thread; pages are committed only when touched
constexpr size_t kGuardBytes = 4096;        // a stack overflow faults instead of corrupting a neighbour
constexpr size_t kMaxDynamicSharedBytes = 48 * 1024;  // the default limit of a GPU block

enum class FiberState { running, at_barrier, done };

struct Fiber {
    char* stack = nullptr;  // the lowest address of the mapping (the guard page)
    bool started = false;
    jmp_buf resume;  // where the fiber parked
    FiberState state = FiberState::running;
    uint3 index{};

    ~Fiber() { munmap(stack, kStackBytes + kGuardBytes); }
};

struct Block {
    std::vector<std::unique_ptr<Fiber>> fibers;  // stable addresses: parked fibers point into them
    jmp_buf scheduler;
    size_t current = 0;
    void (*body)(void*, void**) = nullptr;  // calls the kernel with the launch's arguments
    void* kernel = nullptr;
    void** args = nullptr;
};

// One block state per OS thread, so that launches from several Python threads do not share fibers.
inline Block& this_block() {
    static thread_local Block block;
    return block;
}

inline void yield_to_scheduler(Fiber& fiber) {
    if (_setjmp(fiber.resume) == 0) _longjmp(this_block().scheduler, 1);
}

[[noreturn]] inline void fiber_main() {
    Block& block = this_block();
    for (;;) {
        block.body(block.kernel, block.args);
        Fiber& fiber = *block.fibers[block.current];
        fiber.state = FiberState::done;
        yield_to_scheduler(fiber);  // resumed for the same thread of the next block
    }
}

// Runs the fiber until it reaches a barrier or finishes its thread.
inline void resume(Block& block, Fiber& fiber) {
    if (_setjmp(block.scheduler) != 0) return;  // the fiber yielded
    if (fiber.started) _longjmp(fiber.resume, 1);
    fiber.started = true;
    ucontext_t context;
    getcontext(&context);
    context.uc_stack.ss_sp = fiber.stack + kGuardBytes;
    context.uc_stack.ss_size = kStackBytes;
    context.uc_link = nullptr;
    makecontext(&context, fiber_main, 0);
    setcontext(&context);
}

inline const char* grow_fibers(Block& block, size_t count) {
    while (block.fibers.size() < count) {
        void* mapping = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (mapping == MAP_FAILED) return "cudasim: could not map a fiber stack";
        mprotect(mapping, kGuardBytes, PROT_NONE);
        block.fibers.push_back(std::make_unique<Fiber>());
        block.fibers.back()->stack = static_cast<char*>(mapping);
    }
    return nullptr;
}

// The order in which threads (within each barrier phase) and blocks run. A GPU promises no order, so a
// kernel must give the same result in both: `reverse` finds the races `forward` hides (a thread reading what
// an earlier thread wrote without a barrier between, a block reading what an earlier block wrote).
enum class Schedule { forward = 0, reverse = 1 };

// The i-th of count in the schedule's order.
inline size_t nth(Schedule schedule, size_t i, size_t count) {
    return schedule == Schedule::forward ? i : count - 1 - i;
}

inline void run_block(Block& block, size_t thread_count, Schedule schedule) {
    for (size_t t = 0; t < thread_count; ++t) {
        Fiber& fiber = *block.fibers[t];
        fiber.state = FiberState::running;
        fiber.index = uint3{static_cast<unsigned>(t % blockDim.x), static_cast<unsigned>(t / blockDim.x % blockDim.y),
                            static_cast<unsigned>(t / (blockDim.x * blockDim.y))};
    }
    // Each round runs every live fiber up to its next barrier (or its end): a barrier phase.
    size_t live = thread_count;
    while (live > 0) {
        for (size_t i = 0; i < thread_count; ++i) {
            const size_t t = nth(schedule, i, thread_count);
            Fiber& fiber = *block.fibers[t];
            if (fiber.state == FiberState::done) continue;
            fiber.state = FiberState::running;
            block.current = t;
            threadIdx = fiber.index;
            resume(block, fiber);
            if (fiber.state == FiberState::done) --live;
        }
    }
}

// Runs kernel(args...) on grid x block; returns an error message, or nullptr.
inline const char* launch(void (*body)(void*, void**), void* kernel, const unsigned* grid, const unsigned* block_dims,
                          size_t dynamic_shared_bytes, void** args, Schedule schedule) {
    const unsigned long long threads = 1ull * block_dims[0] * block_dims[1] * block_dims[2];
    if (threads == 0 || threads > 1024 || block_dims[0] > 1024 || block_dims[1] > 1024 || block_dims[2] > 64)
        return "invalid block: at most 1024 threads, (1024, 1024, 64) per dimension, none zero";
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 2147483647u || grid[1] > 65535 || grid[2] > 65535)
        return "invalid grid: each dimension at least 1, at most (2**31 - 1, 65535, 65535)";
    if (dynamic_shared_bytes > kMaxDynamicSharedBytes) return "dynamic shared memory above 48 KiB";
    Block& block = this_block();
    if (const char* error = grow_fibers(block, threads)) return error;
    block.body = body;
    block.kernel = kernel;
    block.args = args;
    blockDim = dim3(block_dims[0], block_dims[1], block_dims[2]);
    gridDim = dim3(grid[0], grid[1], grid[2]);
    const unsigned long long blocks = 1ull * grid[0] * grid[1] * grid[2];
    for (unsigned long long i = 0; i < blocks; ++i) {
        const unsigned long long b = nth(schedule, i, blocks);
        blockIdx = uint3{static_cast<unsigned>(b % grid[0]), static_cast<unsigned>(b / grid[0] % grid[1]),
                         static_cast<unsigned>(b / (1ull * grid[0] * grid[1]))};
        run_block(block, threads, schedule);
    }
    fflush(stdout);
    return nullptr;
}

// ---- unpacking the launch arguments -------------------------------------------------------------------
// args[i] points at the value of parameter i, as with cuLaunchKernel.
template <typename... Params, size_t... I>
void call_with(void (*kernel)(Params...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<Params>*>(args[I])...);
}

template <typename... Params>
void body_of(void* kernel, void** args) {
    call_with(reinterpret_cast<void (*)(Params...)>(kernel), args, std::index_sequence_for<Params...>{});
}

template <typename... Params>
const char* launch_kernel(void (*kernel)(Params...), const unsigned* grid, const unsigned* block,
                          size_t dynamic_shared_bytes, void** args, int schedule) {
    return launch(&body_of<Params...>, reinterpret_cast<void*>(kernel), grid, block, dynamic_shared_bytes, args,
                  static_cast<Schedule>(schedule));
}

// The parameter types, in NumPy's type characters, so that Python can check each argument before a launch:
// "*f" is a float*, "i" an int, "q" a long long; a "c" after "*" marks a pointer to const.
template <typename T>
constexpr char type_char() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, float>) return 'f';
    else if constexpr (std::is_same_v<U, double>) return 'd';
    else if constexpr (std::is_same_v<U, bool>) return '?';
    else if constexpr (std::is_same_v<U, signed char> || std::is_same_v<U, char>) return 'b';
    else if constexpr (std::is_same_v<U, unsigned char>) return 'B';
    else if constexpr (std::is_same_v<U, short>) return 'h';
    else if constexpr (std::is_same_v<U, unsigned short>) return 'H';
    else if constexpr (std::is_same_v<U, int>) return 'i';
    else if constexpr (std::is_same_v<U, unsigned int>) return 'I';
    else if constexpr (std::is_same_v<U, long long> || std::is_same_v<U, long>) return 'q';
    else if constexpr (std::is_same_v<U, unsigned long long> || std::is_same_v<U, unsigned long>) return 'Q';
    else return 'V';  // anything else (a struct): raw bytes, not checked
}

template <typename P>
void append_param(std::vector<char>& out) {
    if (!out.empty()) out.push_back(' ');
    if constexpr (std::is_pointer_v<P>) {
        out.push_back('*');
        if (std::is_const_v<std::remove_pointer_t<P>>) out.push_back('c');
        out.push_back(type_char<std::remove_pointer_t<P>>());
    } else {
        out.push_back(type_char<P>());
    }
}

template <typename... Params>
const char* signature_of(void (*)(Params...)) {
    static const std::vector<char> text = [] {
        std::vector<char> out;
        (append_param<Params>(out), ...);
        out.push_back('\0');
        return out;
    }();
    return text.data();
}

// ---- __syncthreads and the atomics --------------------------------------------------------------------
inline void syncthreads() {
    Block& block = this_block();
    Fiber& fiber = *block.fibers[block.current];
    fiber.state = FiberState::at_barrier;
    yield_to_scheduler(fiber);
}

template <typename T, typename Update>
T atomic_update(T* address, Update update) {
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(address, &old, update(old), false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}

template <typename T>
T atomic_update_bits(T* address, T (*update)(T, T), T val) {  // float/double: compare-and-swap on the bits
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    Bits* bits = reinterpret_cast<Bits*>(address);
    Bits old = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
        T old_value, new_value;
        memcpy(&old_value, &old, sizeof(T));
        new_value = update(old_value, val);
        Bits desired;
        memcpy(&desired, &new_value, sizeof(T));
        if (__atomic_compare_exchange_n(bits, &old, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            return old_value;
    }
}

}  // namespace cudasim

inline void __syncthreads() { cudasim::syncthreads(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <typename T>
using cudasim_integer = std::enable_if_t<std::is_integral_v<T>, T>;

inline float atomicAdd(float* address, float val) {
    return cudasim::atomic_update_bits<float>(address, [](float a, float b) { return a + b; }, val);
}
inline double atomicAdd(double* address, double val) {
    return cudasim::atomic_update_bits<double>(address, [](double a, double b) { return a + b; }, val);
}
template <typename T>
cudasim_integer<T> atomicAdd(T* address, T val) {
    return __atomic_fetch_add(address, val, __ATOMIC_SEQ_CST);
}
template <typename T>
cudasim_integer<T> atomicSub(T* address, T val) {
    return __atomic_fetch_sub(address, val, __ATOMIC_SEQ_CST);
}
template <typename T>
cudasim_integer<T> atomicMin(T* address, T val) {
    return cudasim::atomic_update(address, [val](T old) { return val < old ? val : old; });
}
template <typename T>
cudasim_integer<T> atomicMax(T* address, T val) {
    return cudasim::atomic_update(address, [val](T old) { return old < val ? val : old; });
}
template <typename T>
T atomicExch(T* address, T val) {
    return __atomic_exchange_n(address, val, __ATOMIC_SEQ_CST);
}
template <typename T>
cudasim_integer<T> atomicCAS(T* address, T compare, T val) {
    __atomic_compare_exchange_n(address, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;  // the old value, whether or not it was replaced
}

// ---- intrinsics and math ------------------------------------------------------------------------------
template <typename T>
inline T __ldg(const T* address) {
    return *address;
}
inline float __int_as_float(int bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}
inline int __float_as_int(float value) {
    int bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}
inline double __longlong_as_double(long long bits) {
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}
inline long long __double_as_longlong(double value) {
    long long bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

// CUDA's min/max take two arguments of (possibly) different arithmetic types, like its built-in overloads.
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
    return b < a ? b : a;
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
    return a < b ? b : a;
}
// math.h gives the C functions (expf, logf, fmaxf, INFINITY...) and, through libstdc++, the overloads
// exp(float), log(float), isnan... that device code uses.
