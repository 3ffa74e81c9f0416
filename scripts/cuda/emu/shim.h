// A host emulation of the CUDA features the lean Q4_K GEMV uses (scripts/cuda/emu/run.sh):
// every thread of a block is a std::thread, warp shuffles and __syncthreads are barriers.
// Enough to run kernels/cuda/qgemm.cu's extracted device code on a CPU, not a GPU model.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__
#define __align__(n) alignas(n)
#define EMU_ASM(...) ((void)0)

using std::max;
using std::min;

struct uint4 { uint32_t x, y, z, w; };
struct int4 { int x, y, z, w; };
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return {x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }

struct Dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local Dim3 threadIdx, blockIdx;
inline Dim3 blockDim, gridDim;

// One block's barriers and the shuffles' exchange slots.
struct EmuBlock {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warp;
    uint32_t slot[1024];
};
inline EmuBlock* emu_block;

inline void __syncthreads() { emu_block->block->arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int o) {
    static_assert(sizeof(T) == 4);
    const unsigned t = threadIdx.x;
    std::memcpy(&emu_block->slot[t], &v, 4);
    emu_block->warp[t >> 5]->arrive_and_wait();
    T r;
    std::memcpy(&r, &emu_block->slot[(t & ~31u) | ((t & 31u) ^ (unsigned)o)], 4);
    emu_block->warp[t >> 5]->arrive_and_wait();
    return r;
}

template <typename T>
inline T __ldg(const T* p) { return *p; }

inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}
// dp4a.u32.s32: unsigned bytes of a, signed bytes of b.
inline int dp4a_us(uint32_t a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(uint8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}

inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
    const uint64_t v = ((uint64_t)y << 32) | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}

inline int __float2int_rn(float v) { return (int)std::nearbyint(v); }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }

inline float half_bits_to_float(uint16_t h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    const float v = e == 0 ? std::ldexp((float)m, -24) : std::ldexp(1.0f + m / 1024.0f, e - 15);
    return (h & 0x8000) ? -v : v;
}
inline float h2f(uint32_t h) { return half_bits_to_float((uint16_t)(h & 0xffff)); }

inline void pdl_wait() {}
inline void pdl_launch_dependents() {}

// Runs kernel() on a grid of `grid` blocks of `threads` threads, one block after another.
template <typename F>
inline void emu_launch(unsigned grid, unsigned threads, F kernel) {
    gridDim.x = grid;
    blockDim.x = threads;
    for (unsigned b = 0; b < grid; b++) {
        EmuBlock blk;
        blk.block = std::make_unique<std::barrier<>>(threads);
        for (unsigned w = 0; w < threads / 32; w++) blk.warp.push_back(std::make_unique<std::barrier<>>(32));
        emu_block = &blk;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < threads; t++)
            ts.emplace_back([=] {
                threadIdx.x = t;
                blockIdx.x = b;
                kernel();
            });
        for (auto& t : ts) t.join();
    }
}
