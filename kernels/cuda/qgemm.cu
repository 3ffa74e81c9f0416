// qforge's CUDA dequant-GEMM kernels: y = x W^T with W (n x k) kept in its stored layout
// (ggml Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, IQ4_XS blocks; bitsandbytes NF4 codes with one f32
// absmax per 64).
//
// Every kernel reads W through one decoder, `Raw<T>` (`load` then `unpack`), that turns one
// 32-value sub-block of a row into 32 int8 levels, the scale of each 16-value half and a min (Q4_K, Q5_K):
// w = s * q - mn.
//
// - gemv_*: m <= 8 tokens. Activations quantized to int8 in blocks of 32 (d = absmax / 127)
//   with the block's sum s = d * sum(q) kept for the min term, so every dot product is integer
//   (dp4a) with one float scale per 16 or 32 values. A persistent grid; each block quantizes
//   the m tokens into shared memory once. One token: each warp takes whole rows into
//   registers, lane j the sub-blocks j, j + 32, ... (Q4_K: eight lanes a super-block, 16-byte
//   loads), the next chunk's loads issued before the current chunk's math. Two to eight
//   tokens: each warp streams chunks of R rows into shared memory with cp.async, S - 1 chunks
//   in flight, and reads each sub-block's activations once for the R rows. Integer sums start
//   at a float bias (`BIAS`), so no int-to-float conversion is needed.
// - gemm_input + gemm_*: m > 8. Activations converted to bf16 once, into the image of the
//   GEMM's shared-memory stages; a persistent grid of 128-row x 256-token tiles, the weights
//   decoded to bf16 in shared memory by a producer warpgroup (each weight once per 256 tokens),
//   wgmma by two consumer warpgroups, mbarrier stages (details above `gemm_ws`). Built with
//   -DGEMM_MMA_SYNC instead: the mma.sync GEMM of s24-s26 (128 x 128 tiles; PTX for sm_90,
//   above `gemm`).
// - read_bw: the HBM read bandwidth the report compares with; spin: keeps the GPU busy
//   while the timed launches are queued.
//
// Compiled to PTX by scripts/cuda-ptx.sh (nvcc -arch=sm_90a -ptx: wgmma, so the module loads
// on compute capability 9.0 only) on a machine with nvcc; the PTX and this file's sha256 are
// committed beside it (a unit test checks the hash).

#include <cstdint>
#include <cuda_fp16.h>

// The GEMM for m > 8 (above): the warp-specialized wgmma one unless built with -DGEMM_MMA_SYNC.
#ifndef GEMM_MMA_SYNC
#define GEMM_WS
#endif

#define T_Q4K 0
#define T_Q6K 1
#define T_Q8_0 2
#define T_Q4_0 3
#define T_NF4 4
#define T_Q5K 5
#define T_IQ4XS 6

// Types whose weights are s * q - mn (a min per sub-block, against the activations' sums).
#define HAS_MIN(T) ((T) == T_Q4K || (T) == T_Q5K)

struct Sub {
    uint32_t q[8];  // 32 int8 levels, four per word, in value order
    float s0, s1;   // scale of values 0..15 and 16..31
    float mn;       // subtracted from each weight (Q4_K, Q5_K), else 0
};

__device__ __forceinline__ float h2f(uint32_t h) {
    return __half2float(__ushort_as_half((unsigned short)(h & 0xffff)));
}

// A load through the read-only cache from global memory (G), or a plain load (shared memory:
// the GEMV decodes rows that cp.async staged there).
template <bool G, typename V>
__device__ __forceinline__ V ld(const V* p) {
    if constexpr (G) return __ldg(p);
    else return *p;
}

// N words from a 2-byte-aligned address (Q6_K, Q8_0 and Q4_0 blocks are 2-aligned): N + 1
// aligned loads, always issued (the weight buffer and the GEMV's stages are padded), shifted
// into place by `funnel`. In shared memory the aligned address is p minus its offset, so that
// the compiler keeps the address space (shared loads, not generic ones).
template <bool G, int N>
__device__ __forceinline__ void load_words(const uint8_t* p, uint32_t (&w)[N + 1], uint32_t& sh) {
    const uint32_t* base = G ? (const uint32_t*)((uintptr_t)p & ~(uintptr_t)3)
                             : (const uint32_t*)(p - ((uintptr_t)p & 3));
    sh = (uint32_t)((uintptr_t)p & 3) * 8;
#pragma unroll
    for (int i = 0; i <= N; i++) w[i] = ld<G>(base + i);
}

template <int N>
__device__ __forceinline__ void funnel(const uint32_t (&w)[N + 1], uint32_t sh, uint32_t* out) {
#pragma unroll
    for (int i = 0; i < N; i++) out[i] = __funnelshift_r(w[i], w[i + 1], sh);
}

// The bytes of x minus those of c, each byte of c at most 0x80 and x + 0x80 - c below 0x100
// in each byte (Q6_K's and Q4_0's levels: x - 32 for x < 64, x - 8 for x < 16): __vsub4, or
// with -DVSUB_ADD (s29 variant) one add without carries and the sign bits flipped, the
// same bits (the bf16 decoders' own flip, `^ 0x80808080`, then cancels it).
__device__ __forceinline__ uint32_t sub_bytes(uint32_t x, uint32_t c) {
#ifdef VSUB_ADD
    return (x + (0x80808080u - c)) ^ 0x80808080u;
#else
    return __vsub4(x, c);
#endif
}

// NF4 codes * 127, rounded (the CPU kernels' NF4_I8), as four words of four int8.
#define NF4_T0 0xCEBDA881u
#define NF4_T1 0x00F4E9DCu
#define NF4_T2 0x2B1F140Au
#define NF4_T3 0x7F5C4738u

// ggml's kvalues_iq4nl (IQ4_XS levels) as four words of four int8.
#define IQ4_T0 0xBFAD9881u
#define IQ4_T1 0xF6EADDCFu
#define IQ4_T2 0x26190D01u
#define IQ4_T3 0x71594535u

// The eight 4-bit codes of v (nibble i: code i) to their int8 entries of the 16-entry table
// T0..T3, in nibble order: e0 the entries of codes 0..3, e1 of codes 4..7. __byte_perm picks
// with three bits, so each code looks into both halves of the table and its fourth bit picks
// one (six byte permutes for eight values; llama.cpp's get_int_from_table_16 does the same).
template <uint32_t T0, uint32_t T1, uint32_t T2, uint32_t T3>
__device__ __forceinline__ void lookup8(uint32_t v, uint32_t& e0, uint32_t& e1) {
    const uint32_t sel = v & 0x77777777u;
    const uint32_t half = 0x32103210u | ((v & 0x88888888u) >> 1);
    e0 = __byte_perm(__byte_perm(T0, T1, sel), __byte_perm(T2, T3, sel), half);
    e1 = __byte_perm(__byte_perm(T0, T1, sel >> 16), __byte_perm(T2, T3, sel >> 16), half >> 16);
}

// The stored layout of a row: a block of BB bytes holds SBB sub-blocks of 32 values; the GEMV
// streams rows through shared memory in chunks of CSB sub-blocks (about 2 KB each).
template <int SBB_, int BB_, int CSB_>
struct LayoutOf {
    static constexpr int SBB = SBB_, BB = BB_, CSB = CSB_;
};
template <int T>
struct Layout;
template <> struct Layout<T_Q4K> : LayoutOf<8, 144, 128> {};
template <> struct Layout<T_Q5K> : LayoutOf<8, 176, 64> {};
template <> struct Layout<T_Q6K> : LayoutOf<8, 210, 64> {};
template <> struct Layout<T_Q8_0> : LayoutOf<1, 34, 64> {};
template <> struct Layout<T_Q4_0> : LayoutOf<1, 18, 128> {};
template <> struct Layout<T_IQ4XS> : LayoutOf<8, 136, 128> {};
template <> struct Layout<T_NF4> : LayoutOf<1, 16, 128> {};  // codes only; one f32 absmax per 64 values apart

// The raw bytes of sub-block `sb` (values 32 sb .. 32 sb + 31) of a row: `load` only issues
// loads (no branches, so a caller's several loads are all in flight at once; G: from global
// memory, else from shared memory), `unpack` turns them into a Sub. `am` is the row's NF4
// absmax values.
template <int T>
struct Raw;

// Q4_K and Q5_K: a super-block starting with a 16-byte header (d | dmin << 16, then the
// 12 packed scale bytes), its level nibbles at QOFF (sub-blocks 2i and 2i + 1 in the low and
// high nibbles of the 32 bytes at QOFF + 32 i). `load_k4` loads the header and sub-block j's
// nibble bytes and returns the super-block; `unpack_k4` gives the low four bits of the levels
// and the scale and min (j < 4: scales[j] & 63, scales[j + 4] & 63; else the 4 + 2 bit split
// of ggml's get_scale_min_k4).
template <int T, int QOFF>
struct RawK4 {
    uint32_t dd, s0, s1, s2;
    uint4 a, c;
    int j;
    template <bool G>
    __device__ __forceinline__ const uint8_t* load_k4(const uint8_t* __restrict__ row, int sb) {
        const uint8_t* b = row + (sb >> 3) * Layout<T>::BB;
        j = sb & 7;
        const uint4 hd = ld<G>((const uint4*)b);  // one 16-byte load (super-blocks are 16-aligned)
        dd = hd.x, s0 = hd.y, s1 = hd.z, s2 = hd.w;
        const uint4* qp = (const uint4*)(b + QOFF + 32 * (j >> 1));
        a = ld<G>(qp);
        c = ld<G>(qp + 1);
        return b;
    }
    __device__ __forceinline__ void unpack_k4(Sub& o) const {
        const uint32_t w[8] = {a.x, a.y, a.z, a.w, c.x, c.y, c.z, c.w};
        const int shift = (j & 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; i++) o.q[i] = (w[i] >> shift) & 0x0f0f0f0fu;
        const int sh = 8 * (j & 3);
        const uint32_t x = (s2 >> sh) & 0xff;
        const uint32_t scale = j < 4 ? (s0 >> sh) & 63 : (x & 0xf) | (((s0 >> (sh + 6)) & 3) << 4);
        const uint32_t mn = j < 4 ? (s1 >> sh) & 63 : (x >> 4) | (((s1 >> (sh + 6)) & 3) << 4);
        o.s0 = o.s1 = h2f(dd) * (float)scale;
        o.mn = h2f(dd >> 16) * (float)mn;
    }
};

template <>
struct Raw<T_Q4K> : RawK4<T_Q4K, 16> {
    template <bool G>
    __device__ __forceinline__ void load(const uint8_t* __restrict__ row, const float* __restrict__, int sb) {
        load_k4<G>(row, sb);
    }
    __device__ __forceinline__ void unpack(Sub& o) const { unpack_k4(o); }
};

// Q5_K: Q4_K's header and nibbles plus a fifth bit per value (the 32 bytes after the header:
// bit j of byte l is value l of sub-block j).
template <>
struct Raw<T_Q5K> : RawK4<T_Q5K, 48> {
    uint4 ha, hc;
    template <bool G>
    __device__ __forceinline__ void load(const uint8_t* __restrict__ row, const float* __restrict__, int sb) {
        const uint4* hp = (const uint4*)(load_k4<G>(row, sb) + 16);
        ha = ld<G>(hp);
        hc = ld<G>(hp + 1);
    }
    __device__ __forceinline__ void unpack(Sub& o) const {
        unpack_k4(o);
        const uint32_t h[8] = {ha.x, ha.y, ha.z, ha.w, hc.x, hc.y, hc.z, hc.w};
#pragma unroll
        for (int i = 0; i < 8; i++) o.q[i] |= ((h[i] >> j) & 0x01010101u) << 4;
    }
};

// IQ4_XS: a 136-byte (8-aligned) super-block: f16 d, 16 bits of high scale bits, 4 bytes of low
// scale nibbles, then 16 bytes of codes a sub-block (value l in the low nibble of byte l, value
// l + 16 in the high one), the levels ggml's kvalues_iq4nl and the scale d * (ls - 32).
template <>
struct Raw<T_IQ4XS> {
    uint2 hd, a, c;
    int j;
    template <bool G>
    __device__ __forceinline__ void load(const uint8_t* __restrict__ row, const float* __restrict__, int sb) {
        const uint8_t* b = row + (sb >> 3) * 136;
        j = sb & 7;
        hd = ld<G>((const uint2*)b);
        const uint2* qp = (const uint2*)(b + 8 + 16 * j);
        a = ld<G>(qp);
        c = ld<G>(qp + 1);
    }
    __device__ __forceinline__ void unpack(Sub& o) const {
        const uint32_t w[4] = {a.x, a.y, c.x, c.y};
#pragma unroll
        for (int i = 0; i < 4; i++) {  // byte t of w[i]: values 4i + t (low nibble), 4i + t + 16
            uint32_t e0, e1;
            lookup8<IQ4_T0, IQ4_T1, IQ4_T2, IQ4_T3>(w[i], e0, e1);
            o.q[i] = __byte_perm(e0, e1, 0x6420u);
            o.q[4 + i] = __byte_perm(e0, e1, 0x7531u);
        }
        const uint32_t ls = ((hd.y >> (4 * j)) & 0xf) | (((hd.x >> (16 + 2 * j)) & 3) << 4);
        o.s0 = o.s1 = h2f(hd.x) * (float)((int)ls - 32);
        o.mn = 0.f;
    }
};

template <>
struct Raw<T_Q6K> {
    uint32_t ql[9], qh[9], sh, sp, dh;
    int r;
    template <bool G>
    __device__ __forceinline__ void load(const uint8_t* __restrict__ row, const float* __restrict__, int sb) {
        const uint8_t* b = row + (sb >> 3) * 210;
        const int j = sb & 7, h = j >> 2;
        r = j & 3;
        load_words<G, 8>(b + 64 * h + (r & 1) * 32, ql, sh);
        load_words<G, 8>(b + 128 + 32 * h, qh, sh);
        sp = ld<G>((const unsigned short*)(b + 192 + 8 * h + 2 * r));
        dh = ld<G>((const unsigned short*)(b + 208));
    }
    __device__ __forceinline__ void unpack(Sub& o) const {
        uint32_t l[8], hb[8];
        funnel<8>(ql, sh, l);
        funnel<8>(qh, sh, hb);
        levels(l, hb, r, sp, dh, o);
    }
    // Sub-block r's levels from its 32 bytes of low bits l and the 32 bytes of high bits hb it
    // shares with the other three r, its two int8 scales sp and the f16 d dh.
    static __device__ __forceinline__ void levels(const uint32_t* l, const uint32_t* hb, int r, uint32_t sp,
                                                  uint32_t dh, Sub& o) {
        const int lshift = (r >> 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t lo = (l[i] >> lshift) & 0x0f0f0f0fu;
            const uint32_t hi = ((hb[i] >> (2 * r)) & 0x03030303u) << 4;
            o.q[i] = sub_bytes(lo | hi, 0x20202020u);
        }
        const float d = h2f(dh);
        o.s0 = d * (float)(int8_t)(sp & 0xff);
        o.s1 = d * (float)(int8_t)(sp >> 8);
        o.mn = 0.f;
    }
    // Sub-blocks j0 and j0 + 1 (j0 even) of the super-block at a0 + O in shared memory (a0
    // 16-aligned, O even): their 64 bytes of low bits and the 32 bytes of high bits they share
    // by 16-byte loads (8 instead of 36 word loads), shifted into place at compile time.
    template <int O>
    static __device__ __forceinline__ void pair(const uint8_t* a0, int j0, Sub (&o)[2]) {
        const int h = j0 >> 2, r0 = j0 & 3;
        uint32_t L[20], H[12];
#pragma unroll
        for (int i = 0; i < 5; i++) {
            const uint4 v = ((const uint4*)(a0 + 64 * h))[i];
            L[4 * i] = v.x, L[4 * i + 1] = v.y, L[4 * i + 2] = v.z, L[4 * i + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < 3; i++) {
            const uint4 v = ((const uint4*)(a0 + 128 + 32 * h))[i];
            H[4 * i] = v.x, H[4 * i + 1] = v.y, H[4 * i + 2] = v.z, H[4 * i + 3] = v.w;
        }
        constexpr int WO = O / 4, SH = (O % 4) * 8;
        uint32_t l[16], hb[8];
#pragma unroll
        for (int i = 0; i < 16; i++) l[i] = SH ? __funnelshift_r(L[WO + i], L[WO + i + 1], SH) : L[WO + i];
#pragma unroll
        for (int i = 0; i < 8; i++) hb[i] = SH ? __funnelshift_r(H[WO + i], H[WO + i + 1], SH) : H[WO + i];
        const uint8_t* b = a0 + O;
        const uint32_t dh = *(const unsigned short*)(b + 208);
        const unsigned short* sp = (const unsigned short*)(b + 192 + 8 * h + 2 * r0);
        levels(l, hb, r0, sp[0], dh, o[0]);
        levels(l + 8, hb, r0 + 1, sp[1], dh, o[1]);
    }
};

// A block of a 16-bit scale then N words of levels (Q8_0: 8 words of int8, Q4_0: 4 words of
// nibbles), one block per sub-block: the shared loads of Q8_0 and Q4_0.
template <int N>
struct RawScaled {
    uint32_t w[N + 1], sh, dh;
    template <bool G>
    __device__ __forceinline__ void load(const uint8_t* __restrict__ row, const float* __restrict__, int sb) {
        const uint8_t* b = row + sb * (2 + 4 * N);
        load_words<G, N>(b + 2, w, sh);
        dh = ld<G>((const unsigned short*)b);
    }
};

template <>
struct Raw<T_Q8_0> : RawScaled<8> {
    __device__ __forceinline__ void unpack(Sub& o) const {
        funnel<8>(w, sh, o.q);
        o.s0 = o.s1 = h2f(dh);
        o.mn = 0.f;
    }
};

template <>
struct Raw<T_Q4_0> : RawScaled<4> {
    __device__ __forceinline__ void unpack(Sub& o) const {
        uint32_t v[4];
        funnel<4>(w, sh, v);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            o.q[i] = sub_bytes(v[i] & 0x0f0f0f0fu, 0x08080808u);
            o.q[4 + i] = sub_bytes((v[i] >> 4) & 0x0f0f0f0fu, 0x08080808u);
        }
        o.s0 = o.s1 = h2f(dh);
        o.mn = 0.f;
    }
};

template <>
struct Raw<T_NF4> {  // byte i holds value 2i (high nibble) and 2i + 1 (low nibble)
    uint4 a;
    float amax;
    template <bool G>
    __device__ __forceinline__ void load(const uint8_t* __restrict__ row, const float* __restrict__ am, int sb) {
        a = ld<G>((const uint4*)(row + sb * 16));
        amax = ld<G>(am + (sb >> 1));
    }
    __device__ __forceinline__ void unpack(Sub& o) const {
        const uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {  // nibbles of w[i]: values 8i + 1, 8i, 8i + 3, 8i + 2, ...
            uint32_t e0, e1;
            lookup8<NF4_T0, NF4_T1, NF4_T2, NF4_T3>(w[i], e0, e1);
            o.q[2 * i] = __byte_perm(e0, e1, 0x2301u);
            o.q[2 * i + 1] = __byte_perm(e0, e1, 0x6745u);
        }
        o.s0 = o.s1 = amax * (1.0f / 127.0f);
        o.mn = 0.f;
    }
};

// Integer sums start at BIAS, the bits of 1.5 * 2^23 as a float: while |sum| < 2^22 the bits
// are that float plus the sum, so `unbias` gives the exact value with one FADD instead of a
// conversion (the sums of 32 products of int8 levels stay below 2^19).
#define BIAS 0x4B400000
__device__ __forceinline__ float unbias(int biased) { return __int_as_float(biased) - 12582912.0f; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The 4N values v times inv, rounded to int8 levels and stored at q (16-aligned) as N / 4
// 16-byte words (when `store`); returns the sum of the levels.
template <int N>
__device__ __forceinline__ int pack_levels(const float4 (&v)[N], float inv, int8_t* q, bool store = true) {
    uint32_t w[N];
    int sum = 0;
#pragma unroll
    for (int i = 0; i < N; i++) {
        const int a = __float2int_rn(v[i].x * inv), b = __float2int_rn(v[i].y * inv);
        const int c = __float2int_rn(v[i].z * inv), e = __float2int_rn(v[i].w * inv);
        sum += a + b + c + e;
        w[i] = (uint32_t)(a & 0xff) | ((uint32_t)(b & 0xff) << 8) | ((uint32_t)(c & 0xff) << 16) |
               ((uint32_t)e << 24);
    }
    if (store) {
#pragma unroll
        for (int i = 0; i < N / 4; i++) ((uint4*)q)[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
    }
    return sum;
}

// One 32-value block of activations, quantized by one thread: 8 float4 loads in flight, the
// levels stored as two 16-byte words, the scale d = absmax / 127 and the sum d * sum(q).
__device__ __forceinline__ void quantize_block(const float* __restrict__ x, int8_t* q, float* d, float* s) {
    float4 v[8];
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = __ldg((const float4*)x + i);
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++)
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v[i].x), fabsf(v[i].y)), fmaxf(fabsf(v[i].z), fabsf(v[i].w))));
    const int sum = pack_levels<8>(v, amax > 0.f ? 127.0f / amax : 0.f, q);
    *d = amax / 127.0f;
    *s = amax / 127.0f * (float)sum;
}

// ---------------------------------------------------------------------------------------
// cp.async: 16 bytes global -> shared without registers; groups committed and waited per thread.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
#ifdef CP_CA
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
#endif
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// Waits until at most `pending` (0..7) of this thread's groups are still in flight.
__device__ __forceinline__ void cp_async_wait_pending(int pending) {
    switch (pending) {
        case 0: cp_async_wait<0>(); break;
        case 1: cp_async_wait<1>(); break;
        case 2: cp_async_wait<2>(); break;
        case 3: cp_async_wait<3>(); break;
        case 4: cp_async_wait<4>(); break;
        case 5: cp_async_wait<5>(); break;
        case 6: cp_async_wait<6>(); break;
        default: cp_async_wait<7>(); break;
    }
}

// Programmatic dependent launch (sm_90). The host launches every kernel of a call with the
// programmatic-stream-serialization attribute (`Chain::Programmatic` in src/kernels/cuda.rs),
// so a kernel may start while the one before it in the stream drains. Each kernel reads and
// writes nothing the previous kernel may write (x, y, the bf16 activations) before
// `pdl_wait`, which returns once the previous kernel has finished and its writes are visible
// (at once when launched without the attribute); weights are read-only and may be loaded
// before it. `pdl_launch_dependents` lets the next kernel be launched once every block of
// this one has called it (or exited); its blocks are placed as this kernel's blocks leave.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::); }

// The warp copies bytes [src, src + len) into `dst` (16-aligned) as whole aligned 16-byte
// words (the buffers are padded past their ends); returns where src's first byte lands.
__device__ __forceinline__ const uint8_t* stage_bytes(uint8_t* dst, const uint8_t* src, int len, int lane) {
    const uintptr_t a0 = (uintptr_t)src & ~(uintptr_t)15;
    const int words = (int)(((uintptr_t)src + len + 15 - a0) >> 4);
    for (int i = lane; i < words; i += 32) cp_async16(dst + 16 * i, (const void*)(a0 + 16 * (uintptr_t)i));
    return dst + ((uintptr_t)src & 15);
}

// One sub-block's contribution to a token's dot product: the 32 weights of `s` against the
// token's 32 levels `a`, `e` (scale d, scaled sum sum_x for the min term).
template <int T>
__device__ __forceinline__ float dot_sub(const Sub& s, int4 a, int4 e, float d, float sum_x) {
    int i0 = __dp4a((int)s.q[0], a.x, BIAS);
    i0 = __dp4a((int)s.q[1], a.y, i0);
    i0 = __dp4a((int)s.q[2], a.z, i0);
    i0 = __dp4a((int)s.q[3], a.w, i0);
    int i1 = T == T_Q6K ? BIAS : i0;  // one sum of 32 unless the halves have their own scales
    i1 = __dp4a((int)s.q[4], e.x, i1);
    i1 = __dp4a((int)s.q[5], e.y, i1);
    i1 = __dp4a((int)s.q[6], e.z, i1);
    i1 = __dp4a((int)s.q[7], e.w, i1);
    const float v = T == T_Q6K ? s.s0 * unbias(i0) + s.s1 * unbias(i1) : s.s0 * unbias(i1);
    return HAS_MIN(T) ? d * v - s.mn * sum_x : d * v;
}

// The one-token GEMVs' start: the warp's first item's weight loads into `st` (read-only, so
// issued before the wait), the wait for the previous kernel (`pdl_wait`), then the token
// quantized into shared memory by the block (qx, dx, sx); false for a warp without rows.
template <typename St, typename Load>
__device__ __forceinline__ bool gemv1_start(St& st, int r, int n, Load load, const float* __restrict__ x, int nb,
                                            int8_t* qx, float* dx, float* sx) {
    if (r < n) load(st, r, 0);
    pdl_launch_dependents();
    pdl_wait();
    for (int b = threadIdx.x; b < nb; b += blockDim.x) quantize_block(x + (size_t)b * 32, qx + b * 32, dx + b, sx + b);
    __syncthreads();
    return r < n;
}

// The row/chunk loop of the one-token GEMVs. A warp's work items are (row, chunk): rows r,
// r + total, ... (total: the grid's warps), each row's `chunks` chunks in order; `st` holds the
// loads of item (r, 0) on entry. Each step takes the current item out of `st` (`take`:
// decoded, or copied), issues the next item's loads into `st` (`load(st, row, chunk)`), then
// does the current item's math (`dot(taken, chunk)`), so the loads are in flight during it;
// lane 0 writes a row's warp sum after its last chunk.
template <typename St, typename Take, typename Load, typename Dot>
__device__ __forceinline__ void gemv1_rows(St& st, int r, int n, int chunks, int total, float* __restrict__ y,
                                           Take take, Load load, Dot dot) {
    const int lane = threadIdx.x & 31;
    int c = 0;
    float acc = 0.f;
    for (;;) {
        const auto cur = take(st);
        const int r_next = c + 1 < chunks ? r : r + total, c_next = c + 1 < chunks ? c + 1 : 0;
        if (r_next < n) load(st, r_next, c_next);
        acc += dot(cur, c);
        if (c_next == 0) {  // the row is done
            const float v = warp_sum(acc);
            if (lane == 0) y[r] = v;
            acc = 0.f;
        }
        if (r_next >= n) break;
        r = r_next;
        c = c_next;
    }
}

// GEMV for one token: the weights go straight to registers. Shared memory starts with the
// token quantized (k int8 levels, k / 32 scales and sums). Work items are (row, chunk of 32 *
// CH sub-blocks), rows warp_id, warp_id + total_warps, ...; lane l loads sub-blocks l, l + 32,
// ... of the chunk, and item i + 1's loads are issued before item i's math. For one token
// this beats the staged GEMV below (scripts/cuda: Q4_K 17 us against 20 us at 4096 x 14336
// on the H200), which wins from two tokens on, where the shared-memory activations dominate.
template <int T>
__device__ __forceinline__ void gemv_regs(const uint8_t* __restrict__ w, const float* __restrict__ absmax,
                                          const float* __restrict__ x, float* __restrict__ y, int n, int k,
                                          int row_bytes) {
    extern __shared__ __align__(16) uint8_t smem[];
    int8_t* qx = (int8_t*)smem;
    const int nb = k / 32;
    float* dx = (float*)(smem + k);
    float* sx = dx + nb;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    constexpr int CH = T == T_Q6K || T == T_Q5K ? 2 : 4;  // sub-blocks per lane whose loads are issued together
    const int total = gridDim.x * warps;
    const int chunks = (nb + 32 * CH - 1) / (32 * CH);
    const int r = blockIdx.x * warps + warp;
    struct Raws {
        Raw<T> r[CH];
    };
    struct Subs {
        Sub s[CH];
    };
    auto load = [&](Raws& raw, int row_i, int chunk) {
        const uint8_t* row = w + (size_t)row_i * row_bytes;
        const float* am = absmax + (size_t)row_i * (k / 64);
#pragma unroll
        for (int i = 0; i < CH; i++)
            raw.r[i].template load<true>(row, am, min(chunk * 32 * CH + lane + 32 * i, nb - 1));
    };
    auto unpack = [](const Raws& raw) {
        Subs sub;
#pragma unroll
        for (int i = 0; i < CH; i++) raw.r[i].unpack(sub.s[i]);
        return sub;
    };
    auto dot = [&](const Subs& sub, int c) {
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < CH; i++) {
            const int sb = c * 32 * CH + lane + 32 * i;
            if (sb < nb) {
                const int4* xq = (const int4*)(qx + sb * 32);
                acc += dot_sub<T>(sub.s[i], xq[0], xq[1], dx[sb], sx[sb]);
            }
        }
        return acc;
    };
    Raws raw;
    if (!gemv1_start(raw, r, n, load, x, nb, qx, dx, sx)) return;
    gemv1_rows(raw, r, n, chunks, total, y, unpack, load, dot);
}

// GEMV for one token, Q4_K, with coalesced 16-byte loads: eight lanes share a super-block,
// lane p loading its header (one 16-byte word for the eight) and the p-th 16 bytes of its
// levels (16 values of sub-block 2 (p / 2) and the same 16 of sub-block 2 (p / 2) + 1), so
// a warp reads four super-blocks (576 bytes) in two 16-byte loads a lane. A work item is a row
// and 16 super-blocks (4096 values), four such steps whose eight loads are all in flight, and
// the next item's loads are issued before this item's math. The first item's loads are issued
// before the token is quantized, so the weights stream while the activations are prepared.
#define Q4K_ST 4  // steps of four super-blocks per work item
struct Q4kStep {
    uint4 h, q;
};
__device__ __forceinline__ void q4k_load(Q4kStep (&r)[Q4K_ST], const uint8_t* __restrict__ row, int sup0, int nsup,
                                         int lane) {
#pragma unroll
    for (int s = 0; s < Q4K_ST; s++) {
        const int sp = min(sup0 + 4 * s + (lane >> 3), nsup - 1);
        const uint8_t* b = row + (size_t)sp * 144;
        r[s].h = __ldg((const uint4*)b);
        r[s].q = __ldg((const uint4*)(b + 16) + (lane & 7));
    }
}
// Byte i of the 32-bit word v.
__device__ __forceinline__ uint32_t byte_of(uint32_t v, int i) { return (v >> (8 * i)) & 0xff; }

__device__ __forceinline__ float q4k_dot(const Q4kStep (&r)[Q4K_ST], const int8_t* qx, const float* dx,
                                         const float* sx, int sup0, int nsup, int lane) {
    const int p = lane & 7, j = p >> 1, h = p & 1;
    const int b0 = (2 * j) & 3;  // byte of sub-blocks 2j and 2j + 1 in the 12 scale bytes' words
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < Q4K_ST; s++) {
        const int sp = sup0 + 4 * s + (lane >> 3);
        if (sp < nsup) {
            const uint4 hd = r[s].h;
            uint32_t sc[2], mn[2];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const uint32_t lo = byte_of(hd.y, b0 + u), mid = byte_of(hd.z, b0 + u), hi = byte_of(hd.w, b0 + u);
                sc[u] = j < 2 ? lo & 63 : (hi & 0xf) | ((lo >> 6) << 4);
                mn[u] = j < 2 ? mid & 63 : (hi >> 4) | ((mid >> 6) << 4);
            }
            const int sb = sp * 8 + 2 * j;  // sub-block of the low nibbles; + 1 the high ones
            const int4 xa = *(const int4*)(qx + sb * 32 + 16 * h);
            const int4 xb = *(const int4*)(qx + sb * 32 + 32 + 16 * h);
            const uint4 q = r[s].q;
            int ia = __dp4a((int)(q.x & 0x0f0f0f0fu), xa.x, BIAS);
            ia = __dp4a((int)(q.y & 0x0f0f0f0fu), xa.y, ia);
            ia = __dp4a((int)(q.z & 0x0f0f0f0fu), xa.z, ia);
            ia = __dp4a((int)(q.w & 0x0f0f0f0fu), xa.w, ia);
            int ib = __dp4a((int)((q.x >> 4) & 0x0f0f0f0fu), xb.x, BIAS);
            ib = __dp4a((int)((q.y >> 4) & 0x0f0f0f0fu), xb.y, ib);
            ib = __dp4a((int)((q.z >> 4) & 0x0f0f0f0fu), xb.z, ib);
            ib = __dp4a((int)((q.w >> 4) & 0x0f0f0f0fu), xb.w, ib);
            const float v = dx[sb] * (float)sc[0] * unbias(ia) + dx[sb + 1] * (float)sc[1] * unbias(ib);
            // The min term covers whole sub-blocks: the even lane of the pair adds it.
            const float mterm = h ? 0.f : (float)mn[0] * sx[sb] + (float)mn[1] * sx[sb + 1];
            acc += h2f(hd.x) * v - h2f(hd.x >> 16) * mterm;
        }
    }
    return acc;
}

__device__ __forceinline__ void gemv1_q4k(const uint8_t* __restrict__ w, const float* __restrict__ x,
                                          float* __restrict__ y, int n, int k, int row_bytes) {
    extern __shared__ __align__(16) uint8_t smem[];
    int8_t* qx = (int8_t*)smem;
    const int nb = k / 32, nsup = k / 256;
    float* dx = (float*)(smem + k);
    float* sx = dx + nb;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int chunks = (nsup + 4 * Q4K_ST - 1) / (4 * Q4K_ST);
    const int total = gridDim.x * warps;
    const int r = blockIdx.x * warps + warp;
    struct Steps {
        Q4kStep s[Q4K_ST];
    };
    auto load = [&](Steps& st, int row_i, int chunk) {
        q4k_load(st.s, w + (size_t)row_i * row_bytes, chunk * 4 * Q4K_ST, nsup, lane);
    };
    Steps st;
    if (!gemv1_start(st, r, n, load, x, nb, qx, dx, sx)) return;
    gemv1_rows(
        st, r, n, chunks, total, y, [](const Steps& cur) { return cur; }, load,
        [&](const Steps& cur, int c) { return q4k_dot(cur.s, qx, dx, sx, c * 4 * Q4K_ST, nsup, lane); });
}

// The lean Q4_K one-token GEMV (variant, -DM1_Q4K_LEAN; s29): four lanes a super-block, lane
// l owning the 32 level bytes of sub-blocks 2j, 2j + 1 (j = l & 3; low nibbles the even
// sub-block, high nibbles the odd one) of super-block l / 4 of a step of eight: three 16-byte
// loads (the header and the two halves of its bytes), 16 dp4a, and its two scales and mins
// taken from the header once per 64 weights, with lane constants for the j < 2 / j >= 2
// split. The high nibbles are multiplied in place (dp4a.u32.s32 on q & 0xF0F0F0F0): the token
// holds the odd sub-blocks' scales divided by 16 (exact). The token in shared memory: k int8
// levels, then a float4 a pair of sub-blocks {dx[2p], sx[2p], dx[2p + 1] / 16, sx[2p + 1]}
// (the same k + k / 4 bytes as the other GEMVs' layout; the levels swizzled, `q4kl_piece`),
// quantized by all the block's threads. An item is a row and 16 super-blocks (two steps); two
// items' registers are used in turn (no copies): an item's math, then the loads of the item
// two ahead into its registers, and the L2 prefetch (a 128-byte line a lane) of the item
// Q4KL_PF further. Both items' loads and the first prefetches are issued before the wait for
// the previous kernel. Checked on the CPU by scripts/cuda/emu/run.sh.
#ifdef M1_Q4K_LEAN
#define Q4KL_ST 2  // steps of eight super-blocks an item
struct Q4klItem {
    uint4 h[Q4KL_ST], a[Q4KL_ST], b[Q4KL_ST];
};

// dp4a of unsigned bytes a (the high nibbles in place) and signed bytes b.
__device__ __forceinline__ int dp4a_us(uint32_t a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

#ifndef Q4KL_SWIZZLE
#define Q4KL_SWIZZLE 1
#endif
// Where piece i (16 levels) of the token's 64-level chunk c (sub-blocks 2c, 2c + 1) is in
// shared memory: with Q4KL_SWIZZLE at piece i ^ ((c / 2) & 3) of the chunk, so that the
// eight lanes of a quarter warp (chunks c .. c + 7, one piece each) read eight different
// 16-byte bank groups (unswizzled: four lanes on each of two, a 4-way conflict).
__device__ __forceinline__ int q4kl_piece(int c, int i) { return 64 * c + 16 * (Q4KL_SWIZZLE ? i ^ ((c >> 1) & 3) : i); }

// The token quantized for the lean Q4_K GEMV by every thread of the block, two threads a
// block of 32 (16 values each; absmax and level sum exchanged by one shuffle each).
__device__ __forceinline__ void q4kl_quantize(const float* __restrict__ x, int8_t* qx, float* ds, int nb) {
    const int lane = threadIdx.x & 31;
    for (int t0 = threadIdx.x - lane; t0 < 2 * nb; t0 += blockDim.x) {  // whole warps: the shuffles
        const int t = t0 + lane;
        const bool on = t < 2 * nb;
        float4 v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = on ? __ldg((const float4*)(x + 16 * t) + i) : make_float4(0.f, 0.f, 0.f, 0.f);
        float amax = 0.f;
#pragma unroll
        for (int i = 0; i < 4; i++)
            amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v[i].x), fabsf(v[i].y)), fmaxf(fabsf(v[i].z), fabsf(v[i].w))));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        int sum = pack_levels<4>(v, amax > 0.f ? 127.0f / amax : 0.f, qx + (on ? q4kl_piece(t >> 2, t & 3) : 0), on);
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        const int sb = t >> 1;
        if (on && !(t & 1)) {
            const float d = amax / 127.0f;
            *(float2*)(ds + 4 * (sb >> 1) + 2 * (sb & 1)) = make_float2(sb & 1 ? d * 0.0625f : d, d * (float)sum);
        }
    }
}

// The lane's constants: its pair j of sub-blocks (lane & 3), its super-block in a step
// (lane / 4), the offsets of its token chunks' four pieces in a chunk (`q4kl_piece` of the
// lane's chunk: every chunk it reads has the lane's swizzle), the byte permute of its scale
// bytes and the masks of the j < 2 / j >= 2 split (see `q4kl_dot`).
struct Q4klLane {
    int j, sp;
    int xo[4];
    uint32_t sel, m_lo, m_hi, m_w;
    __device__ __forceinline__ explicit Q4klLane(int lane) : j(lane & 3), sp(lane >> 2) {
#pragma unroll
        for (int i = 0; i < 4; i++) xo[i] = q4kl_piece(lane, i) - 64 * lane;
        sel = lane & 1 ? 0x7632u : 0x5410u;
        m_lo = j < 2 ? 0x3f3f3f3fu : 0u;
        m_hi = j < 2 ? 0u : 0x30303030u;
        m_w = j < 2 ? 0u : 0x0f0f0f0fu;
    }
};

// A weight load: through the read-only cache (__ldg), or with -DQ4KL_LD_HINT not kept in the
// L1 and with the L2's 256-byte prefetch hint (the weights are read once).
__device__ __forceinline__ uint4 q4kl_ld(const uint8_t* p) {
#ifdef Q4KL_LD_HINT
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
#else
    return __ldg((const uint4*)p);
#endif
}

// How rows split into items: Q4KL_ROW, a row is one item (k = 4096: no checks); Q4KL_FULL,
// whole steps (k a multiple of 2048: a step is there or not for the whole warp); Q4KL_PART,
// per lane.
enum { Q4KL_ROW, Q4KL_FULL, Q4KL_PART };

// Whether step s of item (., chunk) holds the lane's super-block.
template <int M>
__device__ __forceinline__ bool q4kl_on(int chunk, int s, int nsup, const Q4klLane& ln) {
    return M == Q4KL_ROW || 16 * chunk + 8 * s + (M == Q4KL_FULL ? 0 : ln.sp) < nsup;
}

// The lane's loads of item (., chunk) whose super-block headers start at `ph` (the lane's
// super-block of the item's first step): header, then its 32 level bytes at ph + 16 + 32 j.
template <int M>
__device__ __forceinline__ void q4kl_load(Q4klItem& it, const uint8_t* __restrict__ ph, int chunk, int nsup,
                                          const Q4klLane& ln) {
    const uint8_t* pq = ph + 16 + 32 * ln.j;
#pragma unroll
    for (int s = 0; s < Q4KL_ST; s++) {
        if (!q4kl_on<M>(chunk, s, nsup, ln)) break;
        it.h[s] = q4kl_ld(ph + 1152 * s);
        it.a[s] = q4kl_ld(pq + 1152 * s);
        it.b[s] = q4kl_ld(pq + 1152 * s + 16);
    }
}

// Adds item (., chunk)'s products to acc: per step, the 16 dp4a of the lane's 64 weights,
// its two scales and mins from the header (bytes j', j' + 1 of scales 0-3 / 4-7 / 8-11,
// j' = 2j & 3, by one byte permute each; j < 2: the low six bits, else ggml's 4 + 2 bit split,
// chosen by the lane's masks), then d * (scaled sums) - dmin * (mins against the token's sums).
template <int M>
__device__ __forceinline__ float q4kl_dot(const Q4klItem& it, const int8_t* qx, const float4* ds, int chunk,
                                          int nsup, const Q4klLane& ln, float acc) {
#pragma unroll
    for (int s = 0; s < Q4KL_ST; s++) {
        if (!q4kl_on<M>(chunk, s, nsup, ln)) break;
        const int sp = 16 * chunk + 8 * s + ln.sp;
        // The token's chunk c = 4 sp + j (sub-blocks 2c, 2c + 1) is 64 chunk + 32 s + lane, so
        // its pieces' offsets in the chunk are the lane's (lane constants, `xo`).
        const int8_t* xs = qx + 64 * (4 * sp + ln.j);
        const int4 x0 = *(const int4*)(xs + ln.xo[0]), x1 = *(const int4*)(xs + ln.xo[1]);
        const int4 x2 = *(const int4*)(xs + ln.xo[2]), x3 = *(const int4*)(xs + ln.xo[3]);
        const float4 g = ds[4 * sp + ln.j];
        const uint4 a = it.a[s], b = it.b[s], hd = it.h[s];
        int ia = __dp4a((int)(a.x & 0x0f0f0f0fu), x0.x, BIAS);
        ia = __dp4a((int)(a.y & 0x0f0f0f0fu), x0.y, ia);
        ia = __dp4a((int)(a.z & 0x0f0f0f0fu), x0.z, ia);
        ia = __dp4a((int)(a.w & 0x0f0f0f0fu), x0.w, ia);
        ia = __dp4a((int)(b.x & 0x0f0f0f0fu), x1.x, ia);
        ia = __dp4a((int)(b.y & 0x0f0f0f0fu), x1.y, ia);
        ia = __dp4a((int)(b.z & 0x0f0f0f0fu), x1.z, ia);
        ia = __dp4a((int)(b.w & 0x0f0f0f0fu), x1.w, ia);
        int ib = dp4a_us(a.x & 0xf0f0f0f0u, x2.x, BIAS);
        ib = dp4a_us(a.y & 0xf0f0f0f0u, x2.y, ib);
        ib = dp4a_us(a.z & 0xf0f0f0f0u, x2.z, ib);
        ib = dp4a_us(a.w & 0xf0f0f0f0u, x2.w, ib);
        ib = dp4a_us(b.x & 0xf0f0f0f0u, x3.x, ib);
        ib = dp4a_us(b.y & 0xf0f0f0f0u, x3.y, ib);
        ib = dp4a_us(b.z & 0xf0f0f0f0u, x3.z, ib);
        ib = dp4a_us(b.w & 0xf0f0f0f0u, x3.w, ib);
        // Bytes: the two scales, then the two mins.
        const uint32_t yz = __byte_perm(hd.y, hd.z, ln.sel), ww = __byte_perm(hd.w, hd.w >> 4, ln.sel);
        const uint32_t sm = (yz & ln.m_lo) | ((yz >> 2) & ln.m_hi) | (ww & ln.m_w);
        const float v = (float)(sm & 0xff) * g.x * unbias(ia) + (float)((sm >> 8) & 0xff) * g.z * unbias(ib);
        const float mt = (float)((sm >> 16) & 0xff) * g.y + (float)(sm >> 24) * g.w;
        acc = fmaf(h2f(hd.x), v, acc);
        acc = fmaf(-h2f(hd.x >> 16), mt, acc);
    }
    return acc;
}

#ifndef Q4KL_PF
#define Q4KL_PF 2  // items a warp has the L2 prefetch ahead of its loads (0: none)
#endif

// A warp's sequence of items (row, chunk): rows first, first + total, ..., each row's chunks
// in order; `ph` the lane's header address of the item (row start + 2304 chunk + 144 lane / 4).
struct Q4klCursor {
    int r, c;
    const uint8_t* ph;
    __device__ __forceinline__ void next(int chunks, int total, long long row_step) {
        if (++c < chunks) {
            ph += 2304;
        } else {
            c = 0;
            r += total;
            ph += row_step;
        }
    }
    // The item's bytes into the L2 (lane l: its l-th 128-byte line), while the row exists.
    __device__ __forceinline__ void prefetch(int n, int nsup, const Q4klLane& ln, int lane) const {
        if (Q4KL_PF > 0 && r < n) {
            const uintptr_t a = (uintptr_t)(ph - 144 * ln.sp), line = (a & ~(uintptr_t)127) + 128 * lane;
            if (line < a + 144 * min(16, nsup - 16 * c)) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(line));
        }
    }
};

template <int M>
__device__ __forceinline__ void gemv1_q4k_lean_body(const uint8_t* __restrict__ w, const float* __restrict__ x,
                                                    float* __restrict__ y, int n, int k, int row_bytes) {
    extern __shared__ __align__(16) uint8_t smem[];
    int8_t* qx = (int8_t*)smem;
    const int nb = k / 32, nsup = k / 256;
    const float4* ds = (const float4*)(smem + k);
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const Q4klLane ln(lane);
    const int chunks = M == Q4KL_ROW ? 1 : (nsup + 15) / 16;
    const int total = gridDim.x * warps;
    // From a row's last chunk to the first chunk of the warp's next row.
    const long long row_step = (long long)total * row_bytes - 2304ll * (chunks - 1);
    const int r0 = blockIdx.x * warps + (threadIdx.x >> 5);
    Q4klCursor cur{r0, 0, w + (size_t)r0 * row_bytes + 144 * ln.sp};
    // Two items in registers (a, b) and the L2 prefetch Q4KL_PF items further, all issued
    // before the wait (weights only).
    Q4klItem a, b;
    Q4klCursor nx = cur, pf = cur;
    if (nx.r < n) q4kl_load<M>(a, nx.ph, nx.c, nsup, ln);
    nx.next(chunks, total, row_step);
    if (nx.r < n) q4kl_load<M>(b, nx.ph, nx.c, nsup, ln);
    nx.next(chunks, total, row_step);
#pragma unroll
    for (int i = 0; i < Q4KL_PF + 2; i++) {
        if (i >= 2) pf.prefetch(n, nsup, ln, lane);
        pf.next(chunks, total, row_step);
    }
    pdl_launch_dependents();
    pdl_wait();
    q4kl_quantize(x, qx, (float*)ds, nb);
    __syncthreads();
    if (cur.r >= n) return;
    float acc = 0.f;
    // One item: `it`'s math, then the item two ahead loaded into `it` and the one Q4KL_PF
    // further prefetched; lane 0 writes a finished row's warp sum. False once the warp has
    // no items left.
    auto step = [&](Q4klItem& it) {
        acc = q4kl_dot<M>(it, qx, ds, cur.c, nsup, ln, acc);
        if (nx.r < n) q4kl_load<M>(it, nx.ph, nx.c, nsup, ln);
        nx.next(chunks, total, row_step);
        pf.prefetch(n, nsup, ln, lane);
        pf.next(chunks, total, row_step);
        const int r = cur.r;
        cur.next(chunks, total, row_step);
        if (cur.c == 0) {
            const float v = warp_sum(acc);
            if (lane == 0) y[r] = v;
            acc = 0.f;
        }
        return cur.r < n;
    };
    while (step(a) && step(b)) {
    }
}

__device__ __forceinline__ void gemv1_q4k_lean(const uint8_t* __restrict__ w, const float* __restrict__ x,
                                               float* __restrict__ y, int n, int k, int row_bytes) {
    const int nsup = k / 256;
    if (nsup == 16) gemv1_q4k_lean_body<Q4KL_ROW>(w, x, y, n, k, row_bytes);
    else if (nsup % 8 == 0) gemv1_q4k_lean_body<Q4KL_FULL>(w, x, y, n, k, row_bytes);
    else gemv1_q4k_lean_body<Q4KL_PART>(w, x, y, n, k, row_bytes);
}
#endif  // M1_Q4K_LEAN

// Most stages (chunks in flight per warp) the GEMV keeps.
#ifndef MAX_STAGES
#define MAX_STAGES 4
#endif

// GEMV, m <= 8, R rows per work item. Dynamic shared memory: the m tokens quantized (m * k
// int8 levels, m * k / 32 scales and sums), then `budget` bytes per warp of stages.
//
// A warp's work items are (R rows, a chunk of CSB sub-blocks) over a contiguous range of
// rows; the raw stored bytes of item j + S - 1 are copied into shared memory (cp.async,
// 16-byte words, no registers held) while item j is decoded there, so every warp keeps S - 1
// chunks of weights in flight. Lane l decodes sub-blocks l, l + 32, ... of the chunk; the
// activations of a sub-block are read from shared memory once for the R rows.
template <int T, int M, int R>
__device__ __forceinline__ void gemv(const uint8_t* __restrict__ w, const float* __restrict__ absmax,
                                     const float* __restrict__ x, float* __restrict__ y, int n, int k,
                                     int row_bytes, int budget) {
    using L = Layout<T>;
    constexpr int CB = L::CSB / L::SBB * L::BB;                       // bytes of a whole chunk
    constexpr int ROWB = (CB + 15) / 16 * 16 + 32;                     // + alignment and over-read
    constexpr int AMB = T == T_NF4 ? L::CSB / 2 * 4 + 32 : 0;          // NF4 absmax of a chunk
    constexpr int STAGE = R * (ROWB + AMB);
    constexpr int PER = L::CSB / 32;                                   // sub-blocks per lane
    extern __shared__ __align__(16) uint8_t smem[];
    const int nb = k / 32;
    int8_t* qx = (int8_t*)smem;
    float* dx = (float*)(smem + M * k);
    float* sx = dx + M * nb;
    const int xbytes = (M * k + 8 * M * nb + 15) & ~15;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int stages = min(MAX_STAGES, budget / STAGE);
    uint32_t dyn;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
    if (stages < 2 || (budget & 15) || (uint32_t)(xbytes + warps * budget) > dyn) __trap();
    uint8_t* stage0 = smem + xbytes + warp * budget;

    const int chunks = (nb + L::CSB - 1) / L::CSB;
    const int groups = (n + R - 1) / R;
    const int total = gridDim.x * warps, gw = blockIdx.x * warps + warp;
    // Warp gw takes the row groups [g_lo, g_hi) (contiguous rows: measured a little faster
    // than rows strided over the grid).
    const int g_lo = (int)((long long)groups * gw / total), g_hi = (int)((long long)groups * (gw + 1) / total);
    const int items = (g_hi - g_lo) * chunks;
    const uint8_t* amb = (const uint8_t*)absmax;
    // Copies item j into its stage; every call commits one group (empty past the last item),
    // so "item j landed" is always "at most S - 1 groups pending".
    auto issue = [&](int j) {
        if (j < items) {
            const int g = g_lo + j / chunks, sb0 = j % chunks * L::CSB;
            const int nsb = min(L::CSB, nb - sb0);
            uint8_t* st = stage0 + j % stages * STAGE;
#pragma unroll
            for (int r = 0; r < R; r++) {
                const size_t row = (size_t)min(g * R + r, n - 1);
                stage_bytes(st + r * (ROWB + AMB), w + row * row_bytes + sb0 / L::SBB * L::BB,
                            nsb / L::SBB * L::BB, lane);
                if (T == T_NF4)
                    stage_bytes(st + r * (ROWB + AMB) + ROWB, amb + (row * (k / 64) + sb0 / 2) * 4, nsb / 2 * 4,
                                lane);
            }
        }
        cp_async_commit();
    };
    // Quantize the m tokens (one block per thread) first: their loads would otherwise queue
    // behind the weight chunks (measured slower).
    pdl_launch_dependents();
    pdl_wait();
    for (int b = threadIdx.x; b < M * nb; b += blockDim.x) quantize_block(x + (size_t)b * 32, qx + b * 32, dx + b, sx + b);
    for (int j = 0; j < stages - 1; j++) issue(j);
    __syncthreads();

    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < M; t++) acc[r][t] = 0.f;
    for (int j = 0; j < items; j++) {
        issue(j + stages - 1);  // into the stage item j - 1 used
        cp_async_wait_pending(stages - 1);
        __syncwarp();
        const int g = g_lo + j / chunks, c = j % chunks, sb0 = c * L::CSB;
        const int nsb = min(L::CSB, nb - sb0);
        const uint8_t* st = stage0 + j % stages * STAGE;
        const uint8_t* rp[R];
        const float* ap[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const size_t row = (size_t)min(g * R + r, n - 1);
            rp[r] = st + r * (ROWB + AMB) + ((row * row_bytes + sb0 / L::SBB * L::BB) & 15);
            ap[r] = (const float*)(st + r * (ROWB + AMB) + ROWB + (((row * (k / 64) + sb0 / 2) * 4) & 15));
        }
#pragma unroll
        for (int i = 0; i < PER; i++) {
            const int sl = lane + 32 * i;
            if (sl < nsb) {
                const int sb = sb0 + sl;
                int4 xa[M], xe[M];  // read once for the R rows
#pragma unroll
                for (int t = 0; t < M; t++) {
                    const int4* xq = (const int4*)(qx + t * k + sb * 32);
                    xa[t] = xq[0];
                    xe[t] = xq[1];
                }
#pragma unroll
                for (int r = 0; r < R; r++) {
                    Raw<T> raw;
                    raw.template load<false>(rp[r], ap[r], sl);
                    Sub s;
                    raw.unpack(s);
#pragma unroll
                    for (int t = 0; t < M; t++)
                        acc[r][t] += dot_sub<T>(s, xa[t], xe[t], dx[t * nb + sb], sx[t * nb + sb]);
                }
            }
        }
        __syncwarp();  // every lane is done with this stage before it is refilled
        if (c == chunks - 1) {  // the rows are done
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int t = 0; t < M; t++) {
                    const float v = warp_sum(acc[r][t]);
                    if (lane == 0 && g * R + r < n) y[(size_t)t * n + g * R + r] = v;
                    acc[r][t] = 0.f;
                }
        }
    }
    cp_async_wait<0>();
}

// Rows per GEMV work item: one for a single token, GEMV_R_MULTI above (the activations are
// read from shared memory once for those rows).
#ifndef GEMV_R_MULTI
#define GEMV_R_MULTI 4
#endif
#define GEMV_R(M) ((M) == 1 ? 1 : GEMV_R_MULTI)

// Every GEMV takes the same arguments; the one-token kernel leaves `budget` (the staged
// kernels' bytes of shared memory a warp) unused.
#define GEMV(NAME, T, M)                                                                              \
    extern "C" __global__ void __launch_bounds__(256, 1) NAME(const uint8_t* w, const float* absmax,      \
                                                           const float* x, float* y, int n, int k,     \
                                                           int row_bytes, int budget) {                \
        gemv<T, M, GEMV_R(M)>(w, absmax, x, y, n, k, row_bytes, budget);                              \
    }
// The one-token GEMV of type T: the coalesced kernels where a type has one (M1_REGS: the
// register GEMV for every type, to compare).
template <int T>
__device__ __forceinline__ void gemv_one(const uint8_t* __restrict__ w, const float* __restrict__ absmax,
                                         const float* __restrict__ x, float* __restrict__ y, int n, int k,
                                         int row_bytes) {
#ifndef M1_REGS
    if constexpr (T == T_Q4K) {
#ifdef M1_Q4K_LEAN
        gemv1_q4k_lean(w, x, y, n, k, row_bytes);
#else
        gemv1_q4k(w, x, y, n, k, row_bytes);
#endif
        return;
    }
#endif
    gemv_regs<T>(w, absmax, x, y, n, k, row_bytes);
}
#ifndef M1_BLOCKS
#define M1_BLOCKS 2  // resident blocks a multiprocessor the one-token GEMV is compiled for
#endif
#define GEMV_ONE(NAME, T)                                                                             \
    extern "C" __global__ void __launch_bounds__(256, M1_BLOCKS) NAME(                                      \
        const uint8_t* w, const float* absmax, const float* x, float* y, int n, int k, int row_bytes, int) { \
        gemv_one<T>(w, absmax, x, y, n, k, row_bytes);                                                \
    }
#define GEMV_ALL(NAME, T)                                                                             \
    GEMV_ONE(NAME##_m1, T)                                                                            \
    GEMV(NAME##_m2, T, 2)                                                                             \
    GEMV(NAME##_m3, T, 3)                                                                             \
    GEMV(NAME##_m4, T, 4)                                                                             \
    GEMV(NAME##_m5, T, 5)                                                                             \
    GEMV(NAME##_m6, T, 6)                                                                             \
    GEMV(NAME##_m7, T, 7)                                                                             \
    GEMV(NAME##_m8, T, 8)

GEMV_ALL(gemv_q4_k, T_Q4K)
GEMV_ALL(gemv_q6_k, T_Q6K)
GEMV_ALL(gemv_q8_0, T_Q8_0)
GEMV_ALL(gemv_q4_0, T_Q4_0)
GEMV_ALL(gemv_nf4, T_NF4)
GEMV_ALL(gemv_q5_k, T_Q5K)
GEMV_ALL(gemv_iq4_xs, T_IQ4XS)

// ---------------------------------------------------------------------------------------
// m > 8 with -DGEMM_MMA_SYNC (the default GEMM is `gemm_ws`, below): `gemm_input` converts
// the activations to bf16 once (a block of threads per token), then `gemm_<type>` takes BM tokens x BN weight rows per block, BK values of k per step, k
// split in GEMM_SPLITK halves. Each step the block decodes its BN x BK weights into bf16 in
// shared memory (each weight once per BM tokens, through the `Raw<T>` decoders: w = s * q - mn
// in f32, then rounded) and 8 consumer warps (2 along tokens x 4 along rows, each BM / 2
// tokens x 32 rows) multiply with mma.sync m16n8k16 bf16 into f32 sums, fragments by ldmatrix.
// No per-32 scaling: the scales are in the bf16 weights. Weights and activations are
// double-buffered, one barrier a step: while the consumers multiply stage s, GEMM_PRODUCERS
// producer warps decode stage s + 1's weights (loaded into registers during step s - 1) and
// copy its activations (cp.async).
//
// (The int8 GEMM of s20-s23, activations quantized to int8 blocks of 32 and the mma sums
// scaled per 32 values into f32, measured slower on every type in the same H200 run
// (docs/cuda.md, s24); it is in the history, commit d600298, as -DGEMM_INT8.)
#ifndef BM
#define BM 128   // tokens per block tile
#endif
#ifndef BN
#define BN 128   // weight rows per block tile (the mma.sync consumers need 128)
#endif
#define MI (BM / 32)  // mma tiles of 16 tokens per warp
#define BK 128   // values of k per step (4 sub-blocks)
#ifndef GEMM_SPLITK
#define GEMM_SPLITK 2  // blocks along k (1 or 2: two partial sums add up the same in either order)
#endif
#ifndef GEMM_PRODUCERS
#define GEMM_PRODUCERS 8  // producer warps (1, 2, 4 or 8)
#endif
#if BN != 128
#error "the mma.sync consumers take 128 weight rows a tile (BN)"
#endif
#define GEMM_THREADS (256 + 32 * GEMM_PRODUCERS)
#define BSTR (2 * BK + 16)  // shared row stride in bytes (ldmatrix rows 4 banks apart)
#define GEMM_STAGE(R) ((R) * BSTR)
#define PIECE_STRIDE 16
__device__ __forceinline__ int stage_off(int row, int byte) { return row * BSTR + byte; }
#define GEMM_SMEM (2 * GEMM_STAGE(BN + BM))  // two stages of weights and activations

// bf16 pair {lo, hi} (lo in the low half: the lower k) from two floats, rounded to nearest.
__device__ __forceinline__ uint32_t bf16x2(float lo, float hi) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

#ifdef GEMM_WS
#define WS_TN 256  // tokens a tile (the wgmma N)
#define WS_BK 64   // values of k a stage: one 128-byte row of bf16, the 128-byte swizzle's width
// Where piece i (values 8 i .. 8 i + 7) of token t lands in xb, in 16-byte pieces: xb holds, for
// each tile of WS_TN tokens and each WS_BK values of k, the image of the GEMM's token stage
// (WS_TN rows of 128 bytes, the 128-byte swizzle: piece c of row r at c ^ (r % 8)), so one bulk
// copy fills a stage.
__device__ __forceinline__ size_t xb_piece(size_t t, int i, int k) {
    const int r = (int)(t % WS_TN), c = i & 7;
    return ((t / WS_TN * (k / WS_BK) + (i >> 3)) * WS_TN + r) * 8 + (c ^ (r & 7));
}
#else
// Token t's piece i in xb: row-major, m x k.
__device__ __forceinline__ size_t xb_piece(size_t t, int i, int k) { return t * (k / 8) + i; }
#endif

// The activations as bf16, the GEMM's input; block t takes token t, eight values a thread at
// a time (one 16-byte store, at xb_piece).
extern "C" __global__ void gemm_input(const float* __restrict__ x, uint4* __restrict__ xb, int k) {
    const size_t t = blockIdx.x;
    const float4* xt = (const float4*)(x + t * k);
    pdl_launch_dependents();
    pdl_wait();  // the previous call's GEMM may still read xb
    for (int i = threadIdx.x; i < k / 8; i += blockDim.x) {
        const float4 a = __ldg(xt + 2 * i), b = __ldg(xt + 2 * i + 1);
        xb[xb_piece(t, i, k)] = make_uint4(bf16x2(a.x, a.y), bf16x2(a.z, a.w), bf16x2(b.x, b.y), bf16x2(b.z, b.w));
    }
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Four 8 x 8 matrices of 16-bit values from shared memory: lanes 8 j .. 8 j + 7 give the row
// addresses of matrix j, r[j] is matrix j's fragment (lane l: row l / 4, values 2 (l % 4), + 1).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint8_t* p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// Level i of the four int8 levels u ^ 0x80808080 (so 128 + level, unsigned), as a float: the
// byte under the exponent of 2^23, minus 2^23 + 128 (exact; no int-to-float conversion).
__device__ __forceinline__ float level_of(uint32_t u, int i) {
    return __int_as_float(__byte_perm(u, 0x4B000000u, 0x7540 + i)) - 8388736.0f;
}

// Values 8 h .. 8 h + 7 of sub-block s (words q[2 h], q[2 h + 1]) as bf16 weights s0 or s1
// times level minus mn (f32, then rounded), in value order: one 16-byte piece.
__device__ __forceinline__ uint4 bf16_piece(const Sub& s, int h) {
    const float sc = h < 2 ? s.s0 : s.s1;
    uint32_t o[4];
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const uint32_t u = s.q[2 * h + p] ^ 0x80808080u;
        o[2 * p] = bf16x2(fmaf(sc, level_of(u, 0), -s.mn), fmaf(sc, level_of(u, 1), -s.mn));
        o[2 * p + 1] = bf16x2(fmaf(sc, level_of(u, 2), -s.mn), fmaf(sc, level_of(u, 3), -s.mn));
    }
    return make_uint4(o[0], o[1], o[2], o[3]);
}

// Sub-block s as 32 bf16 weights (bf16_piece) at dst (16-aligned): four 16-byte pieces
// `stride` bytes apart.
__device__ __forceinline__ void store_bf16(uint8_t* dst, int stride, const Sub& s) {
#pragma unroll
    for (int h = 0; h < 4; h++) *(uint4*)(dst + h * stride) = bf16_piece(s, h);
}

// What one of ND decoding threads (index p) does each step: sub-block uj = p % 4 (of the
// step's four) of tile rows p / 4 + (ND / 4) u, u < U; `load` issues the raw loads of the step
// at k0 into registers, `decode` stores them as bf16 into a weight stage.
template <int T, int ND>
struct GemmWeights {
    static constexpr int U = BN * (BK / 32) / ND;
    Raw<T> raw[U];
    const uint8_t* wrow[U];
    const float* arow[U];
    int uj, r0;
    __device__ __forceinline__ GemmWeights(const uint8_t* __restrict__ w, const float* __restrict__ absmax, int n0,
                                           int n, int k, int row_bytes, int p) {
        uj = p & 3;
        r0 = p >> 2;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int r = min(n0 + r0 + ND / 4 * u, n - 1);
            wrow[u] = w + (size_t)r * row_bytes;
            arow[u] = absmax + (size_t)r * (k / 64);
        }
    }
    __device__ __forceinline__ void load(int k0) {
#pragma unroll
        for (int u = 0; u < U; u++) raw[u].template load<true>(wrow[u], arow[u], k0 / 32 + uj);
    }
    __device__ __forceinline__ void decode(uint8_t* stage) const {
#pragma unroll
        for (int u = 0; u < U; u++) {
            Sub s;
            raw[u].unpack(s);
            store_bf16(stage + stage_off(r0 + ND / 4 * u, uj * 64), PIECE_STRIDE, s);
        }
    }
};

// The GEMM's barrier once a step: all its threads, from the producers' and the consumers'
// loops (bar.sync counts warps, wherever in the code they arrive).
__device__ __forceinline__ void gemm_barrier() {
    asm volatile("bar.sync 1, %0;\n" ::"n"(GEMM_THREADS) : "memory");
}

// Split k (GEMM_SPLITK > 1): block z takes the values [kbeg, kend) and adds its sums into y,
// which the host zeroed; with two splits the sum is the same in either order.
__device__ __forceinline__ void gemm_k_range(int k, int& kbeg, int& kend) {
    const int ksteps = k / BK, per = (ksteps + GEMM_SPLITK - 1) / GEMM_SPLITK;
    kbeg = min(ksteps, (int)blockIdx.z * per) * BK;
    kend = min(ksteps, ((int)blockIdx.z + 1) * per) * BK;
}

// A consumer warp's outputs: acc[i][q] is the mma tile of tokens t0 + 16 i + g (elements 0,
// 1) and t0 + 16 i + g + 8 (2, 3), rows r0 + 8 q + 2 t4 (+ 1 for elements 1, 3), written, or
// added into y with k split.
template <int I, int Q>
__device__ __forceinline__ void gemm_store(const float (&acc)[I][Q][4], float* __restrict__ y, int m, int n, int t0,
                                           int r0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int i = 0; i < I; i++)
#pragma unroll
        for (int q = 0; q < Q; q++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int t = t0 + 16 * i + g + (e >> 1) * 8, r = r0 + 8 * q + 2 * t4 + (e & 1);
                if (t < m && r < n) {
                    if (GEMM_SPLITK > 1) atomicAdd(y + (size_t)t * n + r, acc[i][q][e]);
                    else y[(size_t)t * n + r] = acc[i][q][e];
                }
            }
}

#ifdef GEMM_WS
#define WG_R8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                 "+f"(d[i + 6]), "+f"(d[i + 7])
// d = A B^T + (acc ? d : 0) for 64 rows of A x 256 rows of B x 16 values of k, both operands
// k-major in shared memory; d[4 j + e] is row 16 w + lane / 4 + 8 (e / 2) of A, row 8 j + 2
// (lane % 4) + e % 2 of B (w: the warp in the warpgroup).
__device__ __forceinline__ void wgmma_k16_n256(float* d, uint64_t da, uint64_t db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,"
        "%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,"
        "%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,"
        "%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,"
        "%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,"
        "%119,%120,%121,%122,%123,%124,%125,%126,%127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : WG_R8(0), WG_R8(8), WG_R8(16), WG_R8(24), WG_R8(32), WG_R8(40), WG_R8(48), WG_R8(56), WG_R8(64),
          WG_R8(72), WG_R8(80), WG_R8(88), WG_R8(96), WG_R8(104), WG_R8(112), WG_R8(120)
        : "l"(da), "l"(db), "r"(acc)
        : "memory");
}

// Keeps the compiler from moving accesses of the N accumulators across the asynchronous wgmma.
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float* d) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
#endif

// The GEMM (above). Dynamic shared memory: two stages of BN weight rows, then two of BM token
// rows, BK bf16 values (BSTR bytes) a row. Before step 0 the producers fill stage 0. Step s:
// the producers copy step s + 1's activations into stage (s + 1) % 2 (cp.async), decode its
// weights (loaded during step s - 1) there and issue step s + 2's loads, while the consumers
// multiply stage s % 2; then the producers wait for their copies and all meet at the barrier
// (so stage (s + 1) % 2 is complete, and stage s % 2 is free for step s + 2).
template <int T>
__device__ __forceinline__ void gemm(const uint8_t* __restrict__ w, const float* __restrict__ absmax,
                                     const uint8_t* __restrict__ xb, float* __restrict__ y, int m, int n, int k,
                                     int row_bytes) {
    constexpr int ND = 32 * GEMM_PRODUCERS;  // decoding threads
    extern __shared__ __align__(16) uint8_t smem[];
    uint8_t* const ws = smem;
    uint8_t* const xs = smem + 2 * GEMM_STAGE(BN);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const bool producer = tid >= 256;
    const int p = tid - 256;  // index among the producer threads
    // Token tiles vary fastest in launch order, so the blocks that share a weight tile run
    // together and read it from HBM once.
    const int tile = blockIdx.x + gridDim.x * blockIdx.y;
    const int m0 = tile % gridDim.y * BM, n0 = tile / gridDim.y * BN;
    int kbeg, kend;
    gemm_k_range(k, kbeg, kend);
    const int steps = (kend - kbeg) / BK;
    pdl_launch_dependents();

    // The two roles run separate loops that meet at barrier 1 once a step (the same count), so
    // the consumers' sums are not live in the producers' code and the raw loads not in the
    // consumers'.
    if (producer) {
        GemmWeights<T, ND> wt(w, absmax, n0, n, k, row_bytes, p);
        // Activation copies: 16-byte pieces c = p + ND u of a step's BM rows of 2 BK bytes
        // (tokens past m read token m - 1; their outputs are not written).
        constexpr int PR = 2 * BK / 16, XC = BM * PR / ND;
        auto copy_x = [&](int k0, uint8_t* stage) {
#pragma unroll
            for (int u = 0; u < XC; u++) {
                const int c = p + ND * u;
                const int r = c / PR, pc = c % PR;
                const int t = min(m0 + r, m - 1);
                cp_async16(stage + stage_off(r, pc * 16), xb + ((size_t)t * k + k0) * 2 + pc * 16);
            }
            cp_async_commit();
        };
        if (steps > 0) wt.load(kbeg);
        pdl_wait();  // the activations are the previous kernel's output
        if (steps > 0) {
            copy_x(kbeg, xs);
            wt.decode(ws);
            if (steps > 1) wt.load(kbeg + BK);
            cp_async_wait<0>();
        }
        gemm_barrier();
        for (int s = 0; s < steps; s++) {
            const int nxt = (s + 1) & 1;
            if (s + 1 < steps) {
                copy_x(kbeg + (s + 1) * BK, xs + nxt * GEMM_STAGE(BM));
                wt.decode(ws + nxt * GEMM_STAGE(BN));
                if (s + 2 < steps) wt.load(kbeg + (s + 2) * BK);
                cp_async_wait<0>();
                }
            gemm_barrier();
        }
        return;
    }
    pdl_wait();  // before the outputs are written
    gemm_barrier();  // stage 0 is filled
    float acc[MI][4][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int q = 0; q < 4; q++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][q][e] = 0.f;
    // Consumer warp: tokens wm .. wm + BM / 2 - 1, rows wn .. wn + 31 of the tile. ldmatrix
    // rows: A (tokens) lane l gives row l % 16 of the 16, k offset 8 (l / 16); B (weight rows)
    // n offset l % 8 + 8 (l / 16), k offset 8 (l / 8 % 2).
    const int wm = (warp & 1) * (BM / 2), wn = (warp >> 1) * 32;
    const int a_off = (wm + (lane & 15)) * BSTR + 16 * (lane >> 4);
    const int b_off = (wn + (lane & 7) + 8 * (lane >> 4)) * BSTR + 16 * ((lane >> 3) & 1);
    for (int s = 0; s < steps; s++) {
        const uint8_t* const wsb = ws + (s & 1) * GEMM_STAGE(BN);
        const uint8_t* const xsb = xs + (s & 1) * GEMM_STAGE(BM);
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t a[MI][4], b[4][2];
#pragma unroll
            for (int i = 0; i < MI; i++) ldmatrix_x4(a[i], xsb + a_off + 16 * i * BSTR + 2 * kk);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                uint32_t r[4];
                ldmatrix_x4(r, wsb + b_off + 16 * h * BSTR + 2 * kk);
                b[2 * h][0] = r[0];
                b[2 * h][1] = r[1];
                b[2 * h + 1][0] = r[2];
                b[2 * h + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int q = 0; q < 4; q++) mma_bf16(acc[i][q], a[i], b[q]);
        }
        gemm_barrier();
    }
    gemm_store(acc, y, m, n, m0 + wm, n0 + wn);
}

#ifdef GEMM_WS
// The default GEMM (GEMM_WS, PTX for sm_90a): warp-specialized, wgmma. A tile is WS_TR
// weight rows x WS_TN tokens; k goes in units of WS_BK values through WS_STAGES shared-memory
// stages, each with a full and an empty mbarrier. The producer warpgroup decodes a unit's
// WS_TR x WS_BK weights (thread p: row p, two sub-blocks, both loaded first: `ws_pair`) to bf16 in
// the 128-byte swizzled layout, while one of its threads has the bulk copy engine fill the
// unit's tokens (the tile's first tokens up to m, rounded up to 8) from xb, which gemm_input
// wrote in the same layout (xb_piece). The raw weight bytes are staged a 256-value window of
// the tile's rows at a time (each warp its 32 rows, coalesced cp.async of whole aligned
// 16-byte words, one window ahead of the decoding: WsRaw) and decoded from shared memory. Two
// consumer warpgroups (64 weight rows each) issue wgmma m64n256k16 from the stages into 128
// f32 sums a thread and free a stage once its wgmmas are done. The grid is persistent: block
// b takes units [U b / G, U (b + 1) / G) of the U = tiles x k / WS_BK (tile-major, tokens
// fastest), G at most the tile count, so at most two blocks add into an output (y zeroed by
// the host; 0 + a + b = 0 + b + a).
#define WS_TR 128  // weight rows a tile: two consumer warpgroups of 64 (the wgmma M)
#ifndef WS_STAGES
#define WS_STAGES 3
#endif
#define WS_WBYTES (WS_TR * 2 * WS_BK)  // a stage's weights
#define WS_XBYTES (WS_TN * 2 * WS_BK)  // a stage's tokens
#define WS_THREADS 384                 // a producer warpgroup, then two consumer warpgroups
#define WS_RSTR_MAX 304                // WsRaw<T>::RSTR of the widest type (Q8_0)
// stages, the two raw windows, barriers, alignment
#define WS_SMEM (WS_STAGES * (WS_WBYTES + WS_XBYTES + 16) + 2 * WS_TR * WS_RSTR_MAX + 1024)

// A row's staged window: the stored bytes of 256 values (8 sub-blocks) from an aligned
// 16-byte word on, RSTR bytes a row (the first byte up to 15 in, load_words' extra word).
template <int T>
struct WsRaw {
    static constexpr int RB = Layout<T>::BB * 8 / Layout<T>::SBB;  // bytes of 256 values
    static constexpr int RSTR = (RB + 15 + 4 + 15) / 16 * 16;
    static_assert(RSTR <= WS_RSTR_MAX, "WS_RSTR_MAX");
};

__device__ __forceinline__ void mbar_init(uint32_t b, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(b), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(b) : "memory");
}
// An arrival that also expects `bytes` of bulk copies on b.
__device__ __forceinline__ void mbar_expect_tx(uint32_t b, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(b), "r"(bytes) : "memory");
}
// Waits until the phase of b with this parity has completed.
__device__ __forceinline__ void mbar_wait(uint32_t b, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(b), "r"(parity)
            : "memory");
    } while (!done);
}
// `bytes` from global memory at src to shared memory at dst by the bulk copy engine, counted
// on mbarrier b.
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes, uint32_t b) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(b)
                 : "memory");
}
// A wgmma descriptor of k-major rows of 128 bytes in the 128-byte swizzle (8-row groups 1024
// bytes apart, from a 1024-aligned stage; a k16 step within the row adds 32 bytes to a).
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t a) {
    return (uint64_t)((a & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

// A block's units (above) for m tokens, n rows, k values.
struct WsUnits {
    int ks, tt, u0, u1;
    __device__ __forceinline__ WsUnits(int m, int n, int k) {
        ks = k / WS_BK;
        tt = (m + WS_TN - 1) / WS_TN;
        const long long units = (long long)((n + WS_TR - 1) / WS_TR) * tt * ks;
        u0 = (int)(units * blockIdx.x / gridDim.x);
        u1 = (int)(units * (blockIdx.x + 1) / gridDim.x);
    }
};

// A producer thread's two sub-blocks j0, j0 + 1 (j0 even) of its row's staged window at rowp:
// both loaded before either is unpacked (the loads in flight together, the ones they share
// issued once; Q6_K's by 16-byte loads).
template <int T>
__device__ __forceinline__ void ws_pair(const uint8_t* rowp, const float* am, int j0, Sub (&s)[2]) {
    if constexpr (T == T_Q6K) {
        const uint8_t* a0 = rowp - ((uintptr_t)rowp & 15);
        switch ((uintptr_t)rowp & 15) {  // Q6_K blocks are 2-aligned
            case 0: Raw<T_Q6K>::pair<0>(a0, j0, s); break;
            case 2: Raw<T_Q6K>::pair<2>(a0, j0, s); break;
            case 4: Raw<T_Q6K>::pair<4>(a0, j0, s); break;
            case 6: Raw<T_Q6K>::pair<6>(a0, j0, s); break;
            case 8: Raw<T_Q6K>::pair<8>(a0, j0, s); break;
            case 10: Raw<T_Q6K>::pair<10>(a0, j0, s); break;
            case 12: Raw<T_Q6K>::pair<12>(a0, j0, s); break;
            default: Raw<T_Q6K>::pair<14>(a0, j0, s); break;
        }
    } else {
        Raw<T> r[2];
#pragma unroll
        for (int h = 0; h < 2; h++) r[h].template load<false>(rowp, am, j0 + h);
#pragma unroll
        for (int h = 0; h < 2; h++) r[h].unpack(s[h]);
    }
}

template <int T>
__device__ __forceinline__ void gemm_ws(const uint8_t* __restrict__ w, const float* __restrict__ absmax,
                                        const uint8_t* __restrict__ xb, float* __restrict__ y, int m, int n, int k,
                                        int row_bytes) {
    extern __shared__ __align__(16) uint8_t smem_raw[];
    const uint32_t raw = (uint32_t)__cvta_generic_to_shared(smem_raw);
    const uint32_t base = (raw + 1023) & ~1023u;
    uint8_t* const ws = smem_raw + (base - raw);  // WS_STAGES weight stages, then the token stages
    const uint32_t ws_a = base, xs_a = base + WS_STAGES * WS_WBYTES;
    const uint32_t full = xs_a + WS_STAGES * WS_XBYTES, empty = full + 8 * WS_STAGES;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const WsUnits U(m, n, k);
    if (tid == 0) {
        for (int s = 0; s < WS_STAGES; s++) {
            mbar_init(full + 8 * s, 128 + 1);  // the producers' arrivals and the copy's
            mbar_init(empty + 8 * s, 8);       // the consumer warps'
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    pdl_launch_dependents();
    const int its = U.u1 - U.u0;

    if (warp < 4) {  // producers: thread p decodes row p of the tile, sub-blocks 2 kst, 2 kst + 1
        const int p = tid, pw = p >> 5;
        constexpr int RSTR = WsRaw<T>::RSTR, W = RSTR / 16;
        uint8_t* const rawb = ws + WS_STAGES * (WS_WBYTES + WS_XBYTES);  // two windows of WS_TR rows
        // Row `rr` of weight tile trow and the first byte of its window of k step kst
        // (sub-blocks 8 (kst / 4) ..); `window` of unit it.
        auto window_at = [&](int trow, int kst, int rr, const uint8_t*& src, const float*& am) {
            const int row = min(trow * WS_TR + rr, n - 1), sb0 = (kst >> 2) * 8;
            src = w + (size_t)row * row_bytes + sb0 / Layout<T>::SBB * Layout<T>::BB;
            am = absmax + (size_t)row * (k / 64) + sb0 / 2;
        };
        auto window = [&](int it, int rr, const uint8_t*& src, const float*& am) {
            const int u = U.u0 + it, tile = u / U.ks, kst = u - tile * U.ks;
            window_at(tile / U.tt, kst, rr, src, am);
        };
        // The end of unit it's window (the next unit with another window, or its).
        auto window_end = [&](int it) {
            const int u = U.u0 + it, tile = u / U.ks, kst = u - tile * U.ks;
            return min(its, tile * U.ks + min(U.ks, (kst | 3) + 1) - U.u0);
        };
        // The warp copies its 32 rows' windows of unit it into raw window b: word i of the
        // warp's 32 x W (row i / W, word i % W), one cp.async group.
        auto stage = [&](int it, int b) {
            for (int i = lane; i < 32 * W; i += 32) {
                const int rr = 32 * pw + i / W;
                const uint8_t* src;
                const float* am;
                window(it, rr, src, am);
                cp_async16(rawb + (b * WS_TR + rr) * RSTR + 16 * (i % W),
                           (const void*)(((uintptr_t)src & ~(uintptr_t)15) + 16 * (i % W)));
            }
            cp_async_commit();
        };
#ifdef WS_CURSOR
        // (s29 variant) The unit's weight tile, token tile (tile = trow * tt + tcol) and k step
        // carried from unit to unit (`advance`) instead of divided out of the unit's index.
        int c_kst = U.u0 % U.ks, c_tcol = U.u0 / U.ks % U.tt, c_trow = U.u0 / U.ks / U.tt;
        auto advance = [&] {
            if (++c_kst == U.ks) {
                c_kst = 0;
                if (++c_tcol == U.tt) {
                    c_tcol = 0;
                    c_trow++;
                }
            }
        };
#endif
        auto unit = [&](int it, int b) {
            const int st = it % WS_STAGES;
#ifdef WS_CURSOR
            const int kst = c_kst;
            auto tcol = [&] { return c_tcol; };
            auto win = [&](const uint8_t*& src, const float*& am) { window_at(c_trow, kst, p, src, am); };
            advance();
#else
            const int u = U.u0 + it, tile = u / U.ks, kst = u - tile * U.ks;
            auto tcol = [&] { return tile % U.tt; };
            auto win = [&](const uint8_t*& src, const float*& am) { window(it, p, src, am); };
#endif
            mbar_wait(empty + 8 * st, ((it / WS_STAGES) & 1) ^ 1);
            if (p == 0) {  // the tile's tokens up to m, whole groups of 8
                const int rows = min(WS_TN, (m - tcol() * WS_TN + 7) & ~7);
                mbar_expect_tx(full + 8 * st, rows * 128);
                bulk_load(xs_a + st * WS_XBYTES, xb + ((size_t)tcol() * U.ks + kst) * WS_XBYTES, rows * 128,
                          full + 8 * st);
            }
            const uint8_t* src;
            const float* am;
            win(src, am);
            const uint8_t* const rowp = rawb + (b * WS_TR + p) * RSTR + ((uintptr_t)src & 15);
            uint8_t* const out = ws + st * WS_WBYTES + p * 128;
            Sub s[2];
            ws_pair<T>(rowp, am, (2 * kst) & 7, s);
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int q = 0; q < 4; q++) *(uint4*)(out + (((4 * h + q) ^ (p & 7)) << 4)) = bf16_piece(s[h], q);
            // the stores are read by wgmma (the async proxy)
            asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
            mbar_arrive(full + 8 * st);
        };
        int it = 0, b = 0, end = window_end(0);
        if (its > 0) stage(0, 0);
        if (end < its) stage(end, 1);
        pdl_wait();  // the tokens are the previous kernel's output
        while (it < its) {
            const int nend = end < its ? window_end(end) : its;
            if (end < its) cp_async_wait<1>();
            else cp_async_wait<0>();
            __syncwarp();
            for (; it < end; it++) unit(it, b);
            __syncwarp();  // window b is free
            if (nend < its && end < its) stage(nend, b);
            b ^= 1;
            end = nend;
        }
        return;
    }
    // Consumers: warpgroup g takes weight rows 64 g .. 64 g + 63 of the tile, all WS_TN tokens.
    static_assert(WS_TN == 256, "the consumers issue wgmma n256");
    const int g = (warp >> 2) - 1;
    float d[WS_TN / 2];
#pragma unroll
    for (int i = 0; i < WS_TN / 2; i++) d[i] = 0.f;
    pdl_wait();  // before the outputs are written
    int it = 0;
    for (int u = U.u0; u < U.u1;) {
        const int tile = u / U.ks, end = min(U.u1, (tile + 1) * U.ks);
        int pending = -1;  // the stage whose wgmmas may still run
        for (; u < end; u++, it++) {
            const int st = it % WS_STAGES;
            mbar_wait(full + 8 * st, (it / WS_STAGES) & 1);
            const uint32_t wa = ws_a + st * WS_WBYTES + g * 64 * 128, xa = xs_a + st * WS_XBYTES;
            asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
            for (int kk = 0; kk < WS_BK / 16; kk++)
                wgmma_k16_n256(d, wgmma_desc_sw128(wa + 32 * kk), wgmma_desc_sw128(xa + 32 * kk),
                                 pending >= 0 || kk > 0);
            asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
            if (pending >= 0 && lane == 0) mbar_arrive(empty + 8 * pending);
            pending = st;
        }
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        wgmma_fence_operands<WS_TN / 2>(d);
        if (lane == 0) mbar_arrive(empty + 8 * pending);
        // d[4 j + e]: weight row r0 + 8 (e / 2), token t0 + 8 j + e % 2
        const int r0 = tile / U.tt * WS_TR + 64 * g + 16 * (warp & 3) + (lane >> 2);
        const int t0 = tile % U.tt * WS_TN + 2 * (lane & 3);
#pragma unroll
        for (int j = 0; j < WS_TN / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = r0 + 8 * (e >> 1), t = t0 + 8 * j + (e & 1);
                if (t < m && r < n) atomicAdd(y + (size_t)t * n + r, d[4 * j + e]);
            }
    }
}

// The GEMM's launch shape for the host (src/kernels/cuda.rs reads it from the module):
// tokens and weight rows a tile, dynamic shared memory bytes, threads, and 2: the host
// zeroes y (blocks add into it). `gemm_persistent`: one block a multiprocessor, at most one a
// tile (WsUnits).
extern "C" __constant__ int gemm_config[5] = {WS_TN, WS_TR, WS_SMEM, WS_THREADS, 2};
extern "C" __constant__ int gemm_persistent = 1;
#define GEMM_KERNEL_THREADS WS_THREADS
#define GEMM_KERNEL gemm_ws
#else
// The GEMM's launch shape for the host (src/kernels/cuda.rs reads it from the module):
// tokens and weight rows per block, dynamic shared memory bytes, threads, splits of k (blocks
// along z; above 1 the host zeroes y first).
extern "C" __constant__ int gemm_config[5] = {BM, BN, GEMM_SMEM, GEMM_THREADS, GEMM_SPLITK};
#define GEMM_KERNEL_THREADS GEMM_THREADS
#define GEMM_KERNEL gemm
#endif

#define GEMM(NAME, T)                                                                                 \
    extern "C" __global__ void __launch_bounds__(GEMM_KERNEL_THREADS, 1) NAME(                        \
        const uint8_t* w, const float* absmax, const uint8_t* xb, float* y, int m, int n, int k,       \
        int row_bytes) {                                                                              \
        GEMM_KERNEL<T>(w, absmax, xb, y, m, n, k, row_bytes);                                         \
    }
GEMM(gemm_q4_k, T_Q4K)
GEMM(gemm_q6_k, T_Q6K)
GEMM(gemm_q8_0, T_Q8_0)
GEMM(gemm_q4_0, T_Q4_0)
GEMM(gemm_nf4, T_NF4)
GEMM(gemm_q5_k, T_Q5K)
GEMM(gemm_iq4_xs, T_IQ4XS)

// ---------------------------------------------------------------------------------------
// The stored blocks dequantized to bf16 rows (n x k, row-major) in global memory: the first
// half of a "dequant + cuBLAS" pipeline (scripts/cuda/dequant_peer.py times it next to
// cuBLAS). One thread a 32-value sub-block (the GEMM's decoders and bf16 rounding), consecutive
// threads consecutive sub-blocks of a row.
template <int T>
__device__ __forceinline__ void dequant(const uint8_t* __restrict__ w, const float* __restrict__ absmax,
                                        uint8_t* __restrict__ out, int n, int k, int row_bytes) {
    pdl_launch_dependents();
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int per_row = k / 32;
    if (i >= (size_t)n * per_row) return;
    const int r = (int)(i / per_row), sb = (int)(i % per_row);
    Raw<T> raw;
    raw.template load<true>(w + (size_t)r * row_bytes, absmax + (size_t)r * (k / 64), sb);
    Sub s;
    raw.unpack(s);
    pdl_wait();  // the previous kernel may still read out
    store_bf16(out + ((size_t)r * k + 32 * sb) * 2, 16, s);
}

#define DEQUANT(NAME, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(256) NAME(const uint8_t* w, const float* absmax,         \
                                                           uint8_t* out, int n, int k, int row_bytes) { \
        dequant<T>(w, absmax, out, n, k, row_bytes);                                                  \
    }
DEQUANT(dequant_q4_k, T_Q4K)
DEQUANT(dequant_q6_k, T_Q6K)
DEQUANT(dequant_q8_0, T_Q8_0)
DEQUANT(dequant_q4_0, T_Q4_0)
DEQUANT(dequant_nf4, T_NF4)
DEQUANT(dequant_q5_k, T_Q5K)
DEQUANT(dequant_iq4_xs, T_IQ4XS)

// ---------------------------------------------------------------------------------------
// Reads `words` 16-byte words (grid-stride, four loads in flight per thread); writes only
// when the XOR of everything read equals `never`, so the loads cannot be removed.
extern "C" __global__ void read_bw(const uint4* __restrict__ p, unsigned long long words, uint32_t never,
                                   uint32_t* __restrict__ sink) {
    pdl_launch_dependents();  // (a chain of reads with programmatic dependent launch, small_read.py)
    uint32_t acc = 0;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < words; i += 4 * stride) {
        const uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride),
                    d = __ldcs(p + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < words; i += stride) {
        const uint4 a = __ldcs(p + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    pdl_wait();
    if (acc == never) sink[0] = acc;
}

// Spins for `ns` nanoseconds (one thread), so that the launches queued behind it run back to
// back and the events around them time the GPU, not the launch path.
extern "C" __global__ void spin(unsigned long long ns) {
    unsigned long long t0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    for (;;) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (t - t0 >= ns) break;
        __nanosleep(1000);
    }
}
