// The CUDA kernels of Gear.AI.Compression: decode attention straight from a page pool's compressed (or dense) pages
// (gear_attention.cuh), the compression of a block, the randomized power iteration of its low rank, and the model's
// element-wise steps.
//
// Attention computes the same terms as the tensor reference (PageCodec, the path these kernels are tested against):
//   keys, quantized per channel in groups of g tokens:  q·k̂_t = Σ_d (q_d·scale_d)·code_td + Σ_d q_d·zero_d
//   values, quantized per token in groups of gv features: Σ_t p_t·(scale_t·code_t + zero_t)
//   outliers replace their dequantized entry (a correction (value − x̂)), low rank stays factored.
// Codes are packed as BitPacking writes them: 8 codes in every `bits` bytes, code i of a group at bits
// [i·b, i·b + b) of the little-endian word; the code kernels are instantiated for 1-, 2-, 4- and 8-bit codes
// and for up to 1, 2, 4 or 8 query rows (a launch for fewer rows ignores the rest).
// Speed: codes are read with wide loads and turned into floats with the 2^23 trick (OR the code into the
// mantissa of 2^23, subtract 2^23 — exact, full-rate, where an int-to-float conversion runs at a quarter rate).
// Compiled to PTX (scripts/build_cuda_kernels.sh) and launched through the driver API from C#.

#include <cuda_fp16.h>
#include <stdint.h>

#define MAX_RANK 8

__device__ __forceinline__ int code_at(const uint8_t* row, int d, int bits)
{
    int bit = d * bits;
    return (row[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
}

__device__ __forceinline__ float warp_sum(float value)
{
    for (int o = 16; o > 0; o >>= 1) value += __shfl_xor_sync(0xffffffff, value, o);
    return value;
}

// Element i of a tensor of dtype `type` (0 float32, 1 float16, 2 bfloat16) as a float.
__device__ __forceinline__ float load_as_float(const void* x, int type, long long i)
{
    if (type == 0) return ((const float*)x)[i];
    if (type == 1) return __half2float(((const __half*)x)[i]);
    return __uint_as_float(((unsigned)((const unsigned short*)x)[i]) << 16);
}

// Elements at, at + stride, … (up to 8, `count` of them; the rest 0) of a tensor of dtype `type` as floats: the dtype's
// branch taken once, so the loads are all in flight together.
__device__ __forceinline__ void load8_as_float(const void* x, int type, long long at, long long stride, int count, float (&out)[8])
{
    if (type == 0)
    {
#pragma unroll
        for (int u = 0; u < 8; u++) out[u] = u < count ? ((const float*)x)[at + u * stride] : 0.f;
    }
    else if (type == 1)
    {
#pragma unroll
        for (int u = 0; u < 8; u++) out[u] = u < count ? __half2float(((const __half*)x)[at + u * stride]) : 0.f;
    }
    else
    {
#pragma unroll
        for (int u = 0; u < 8; u++) out[u] = u < count ? __uint_as_float(((unsigned)((const unsigned short*)x)[at + u * stride]) << 16) : 0.f;
    }
}

// Element i of the queries in their own dtype, times `scale`.
__device__ __forceinline__ float load_q(const void* q, int type, long long i, float scale)
{
    return load_as_float(q, type, i) * scale;
}

// x as bfloat16 bits, rounded to nearest even (NaN stays NaN).
__device__ __forceinline__ unsigned short bfloat16_bits(float x)
{
    const unsigned bits = __float_as_uint(x);
    return x != x ? (unsigned short)0x7fc0 : (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// Queries everywhere below: [BH, rows, D] in the caller's dtype (qType), multiplied by qScale (1/√D) on load.

// Code i (0 ≤ i < 32/BITS) of a packed word times 2^(BITS·(i mod 16/BITS)), as an exact float: the code is masked
// in place within its 16-bit half and ORed into the mantissa of 2^23, then 2^23 is subtracted — one LOP3 and one FADD
// per code. code_unscale gives the power of two that undoes the factor (applied once to a sum, or folded into the
// query, so every product is the one the plain code would give: scaling by a power of two is exact).
// The mask and the OR are one LOP3 written out: left to the compiler, the two constants (mask and 2^23) became two
// instructions, since a LOP3 takes one immediate — `magic` (0x4B000000, see magic_2p23) is kept in a register.
template <int BITS>
__device__ __forceinline__ float scaled_code(unsigned word, int i, unsigned magic)
{
    constexpr int PER_HALF = 16 / BITS;
    const unsigned half = i >= PER_HALF ? word >> 16 : word;
    const unsigned mask = ((1u << BITS) - 1u) << (BITS * (i % PER_HALF));
    unsigned bits;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(bits) : "r"(half), "r"(mask), "r"(magic));   // (half & mask) | magic
    return __uint_as_float(bits) - 8388608.f;
}

// 2^23's bit pattern in a register (an opaque move, so it is not folded back into an immediate).
__device__ __forceinline__ unsigned magic_2p23()
{
    unsigned m;
    asm volatile("mov.b32 %0, 0x4B000000;" : "=r"(m));
    return m;
}

template <int BITS>
__device__ __forceinline__ float code_unscale(int i)
{
    return __uint_as_float((unsigned)(127 - BITS * (i % (16 / BITS))) << 23);
}

// The inverse of code_unscale: turns a plain code into the scaled one that q·scale / 2^(code place) expects.
template <int BITS>
__device__ __forceinline__ float code_rescale(unsigned i)
{
    return __uint_as_float((127u + BITS * (i % (16 / BITS))) << 23);
}

// N bytes of packed codes (N = 1, 2, 4, 8 or 16, aligned to N) as 32-bit words.
template <int N>
__device__ __forceinline__ void load_piece(const uint8_t* __restrict__ at, unsigned* w)
{
    if constexpr (N == 16) { const uint4 x = *(const uint4*)at; w[0] = x.x; w[1] = x.y; w[2] = x.z; w[3] = x.w; }
    else if constexpr (N == 8) { const uint2 x = *(const uint2*)at; w[0] = x.x; w[1] = x.y; }
    else if constexpr (N == 4) w[0] = *(const unsigned*)at;
    else if constexpr (N == 2) w[0] = *(const unsigned short*)at;
    else w[0] = *at;
}

// One round of the recursive-halving sum over lanes o apart (then the next, HALF a compile-time constant so the
// accumulators stay in registers): the lane with bit o set keeps the upper HALF channels, its partner the lower.
template <int M, int CPT, int HALF>
__device__ __forceinline__ void halve(float (&acc)[M][CPT], int lane, int& o, int& at, int& held)
{
    if constexpr (HALF >= 1)
    {
        if (o < 32)
        {
            const bool upper = (lane & o) != 0;
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int i = 0; i < HALF; i++)
                {
                    const float send = upper ? acc[m][i] : acc[m][i + HALF], keep = upper ? acc[m][i + HALF] : acc[m][i];
                    acc[m][i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
                }
            if (upper) at += HALF;
            held = HALF;
            o <<= 1;
            halve<M, CPT, HALF / 2>(acc, lane, o, at, held);
        }
    }
}

// w[i] of up to four words held in registers, by selects rather than an indexed (local-memory) array.
template <int N>
__device__ __forceinline__ unsigned pick_word(const unsigned* w, int i)
{
    if constexpr (N == 1) return w[0];
    else if constexpr (N == 2) return i ? w[1] : w[0];
    else return (i & 2) ? ((i & 1) ? w[3] : w[2]) : ((i & 1) ? w[1] : w[0]);
}

// Sum of `value` over the thread block (blockDim.x a multiple of 32, at most 1024); every thread gets the sum.
__device__ float block_sum(float value, float* scratch)
{
    for (int o = 16; o > 0; o >>= 1) value += __shfl_down_sync(0xffffffff, value, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();                                  // scratch may still be read from the previous sum
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < warps; w++) total += scratch[w];
    return total;
}

// Maximum of `value` over the thread block, like block_sum.
__device__ float block_max(float value, float* scratch)
{
    for (int o = 16; o > 0; o >>= 1) value = fmaxf(value, __shfl_down_sync(0xffffffff, value, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    float best = -INFINITY;
    for (int w = 0; w < warps; w++) best = fmaxf(best, scratch[w]);
    return best;
}

// Orthonormal columns of y [n, r] (row-major, float32) in place: modified Gram-Schmidt applied twice ("twice is
// enough" for orthogonality in float32). A column with no component left becomes zero. gear_orthonormalize runs it a
// thread block per matrix (grid (batch), block a multiple of 32 threads) in place of linalg.qr's Q, which on CUDA makes
// one solver call per matrix of the batch; the power-iteration kernel runs it on one warp. The team: the whole thread
// block (sums through shared memory, a barrier after each update) or one warp (shuffles; a lane updates only the rows
// it summed, so nothing to wait for). In the power iteration the block's ~100 barriers a matrix cost more than the one
// warp's serial work.
struct BlockTeam
{
    using Index = long long;
    float* scratch;
    __device__ Index first() const { return threadIdx.x; }
    __device__ Index step() const { return blockDim.x; }
    __device__ float sum(float v) const { return block_sum(v, scratch); }
    __device__ void sync() const { __syncthreads(); }
};

struct WarpTeam
{
    using Index = int;
    __device__ Index first() const { return threadIdx.x & 31; }
    __device__ Index step() const { return 32; }
    __device__ float sum(float v) const { return warp_sum(v); }
    __device__ void sync() const {}
};

template <typename Team>
__device__ void orthonormal_columns(float* m, typename Team::Index n, int r, const Team& team)
{
    using Index = typename Team::Index;
    for (int j = 0; j < r; j++)
    {
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < j; k++)
            {
                float part = 0.f;
                for (Index i = team.first(); i < n; i += team.step()) part += m[i * r + k] * m[i * r + j];
                const float dot = team.sum(part);
                for (Index i = team.first(); i < n; i += team.step()) m[i * r + j] -= dot * m[i * r + k];
                team.sync();
            }
        float part = 0.f;
        for (Index i = team.first(); i < n; i += team.step()) part += m[i * r + j] * m[i * r + j];
        const float norm = sqrtf(team.sum(part));
        const float inv = norm > 1e-30f ? 1.f / norm : 0.f;
        for (Index i = team.first(); i < n; i += team.step()) m[i * r + j] *= inv;
        team.sync();
    }
}

extern "C" __global__ void gear_orthonormalize(float* y, long long n, int r)
{
    __shared__ float scratch[32];
    orthonormal_columns(y + (long long)blockIdx.x * n * r, n, r, BlockTeam{scratch});
}

// out [rows, r] = x [rows, inner] · w [inner, r] with strides: x's element (i, k) at x[i·xi + k·xk] (so one routine does
// R·Z and Rᵀ·Q from R held once), all in shared memory; one (row, column) per thread step. Ends with a barrier.
__device__ void small_matmul(const float* x, int rows, int inner, int xi, int xk, const float* w, int r, float* out)
{
    for (int e = threadIdx.x; e < rows * r; e += blockDim.x)
    {
        const int i = e / r, j = e - i * r;
        float sum = 0.f;
        for (int k = 0; k < inner; k++) sum += x[i * xi + k * xk] * w[k * r + j];
        out[e] = sum;
    }
    __syncthreads();
}

// out [rows, r] = x [rows, inner] (row-major, shared) · w [inner, r] (r ≤ RMAX): a warp per row, lanes over the
// inner index, so a warp reads consecutive words of one row (small_matmul's thread per output read one word of 16
// rows at a time, all in one bank). Ends with a barrier.
template <int RMAX>
__device__ void rows_times(const float* x, int rows, int inner, const float* w, int r, float* out)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int i = warp; i < rows; i += warps)
    {
        float part[RMAX];
#pragma unroll
        for (int rho = 0; rho < RMAX; rho++) part[rho] = 0.f;
        for (int k = lane; k < inner; k += 32)
        {
            const float xv = x[i * inner + k];
#pragma unroll
            for (int rho = 0; rho < RMAX; rho++)
                if (rho < r) part[rho] += xv * w[k * r + rho];
        }
#pragma unroll
        for (int rho = 0; rho < RMAX; rho++)
            if (rho < r)
            {
                const float sum = warp_sum(part[rho]);
                if (lane == 0) out[i * r + rho] = sum;
            }
    }
    __syncthreads();
}

// The low-rank factors of a decode block in one launch (LowRankFactors.Approximate's tensor ops: ~40 calls a tensor, a
// decode step's compression is bound by calls at batch 1): per matrix R [n, D] (float32, one thread block each, held in
// shared memory with Y [n, r] and Z [D, r]): Y = R·Ω, `iterations` rounds of Q = orth(Y), Z = orth(Rᵀ·Q), Y = R·Z, then
// A = orth(Y), B = Rᵀ·A, written as float16 A [n, r] and B [D, r]. orth is Gram-Schmidt by the first warp while the
// others wait at one barrier; Ω [D, r] float32 is shared by all matrices. Dynamic shared memory (n·D + n·r + D·r) floats.
// Instantiated for rank bounds RMAX = 2, 4 and 8: rows_times holds RMAX sums and issues every one whatever r is, so
// a rank-2 block takes the RMAX = 2 kernel (one for RMAX = 8 issued 4x the products' work).
template <int RMAX>
__device__ void power_iteration(const float* __restrict__ residual, const float* __restrict__ omega, int n, int D, int r,
                                int iterations, __half* __restrict__ A, __half* __restrict__ B)
{
    extern __shared__ float held[];
    float* R = held;                                  // [n, D]
    float* Y = R + n * D;                             // [n, r]
    float* Z = Y + n * r;                             // [D, r]
    const bool first = threadIdx.x < 32;
    const float* src = residual + (long long)blockIdx.x * n * D;
    // 8 loads in flight a thread before their stores.
    for (int base = threadIdx.x; base < n * D; base += 8 * blockDim.x)
    {
        float x[8];
#pragma unroll
        for (int u = 0; u < 8; u++) x[u] = base + u * blockDim.x < n * D ? src[base + u * blockDim.x] : 0.f;
#pragma unroll
        for (int u = 0; u < 8; u++)
            if (base + u * blockDim.x < n * D) R[base + u * blockDim.x] = x[u];
    }
    for (int i = threadIdx.x; i < D * r; i += blockDim.x) Z[i] = omega[i];
    __syncthreads();
    rows_times<RMAX>(R, n, D, Z, r, Y);                                          // Y = R·Ω
    for (int it = 0; it < iterations; it++)
    {
        if (first) orthonormal_columns(Y, n, r, WarpTeam{});                                    // Q
        __syncthreads();
        small_matmul(R, D, n, 1, D, Y, r, Z);                                    // Rᵀ·Q
        if (first) orthonormal_columns(Z, D, r, WarpTeam{});
        __syncthreads();
        rows_times<RMAX>(R, n, D, Z, r, Y);                                      // Y = R·Z
    }
    if (first) orthonormal_columns(Y, n, r, WarpTeam{});                                        // A
    __syncthreads();
    small_matmul(R, D, n, 1, D, Y, r, Z);                                        // B = Rᵀ·A
    for (int i = threadIdx.x; i < n * r; i += blockDim.x) A[(long long)blockIdx.x * n * r + i] = __float2half_rn(Y[i]);
    for (int i = threadIdx.x; i < D * r; i += blockDim.x) B[(long long)blockIdx.x * D * r + i] = __float2half_rn(Z[i]);
}

#define GEAR_POWER_ITERATION(RMAX)                                                                                             \
    extern "C" __global__ void gear_power_iteration_r##RMAX(const float* residual, const float* omega, int n, int D, int r,   \
                                                           int iterations, __half* A, __half* B)                              \
    {                                                                                                                          \
        power_iteration<RMAX>(residual, omega, n, D, r, iterations, A, B);                                                     \
    }
GEAR_POWER_ITERATION(2) GEAR_POWER_ITERATION(4) GEAR_POWER_ITERATION(8)

// Element `at` of an output in the queries' dtype (0 float32, 1 float16, 2 bfloat16, round to nearest even).
__device__ __forceinline__ void store_out(void* out, int outType, long long at, float o)
{
    if (outType == 0) ((float*)out)[at] = o;
    else if (outType == 1) ((__half*)out)[at] = __float2half_rn(o);
    else ((unsigned short*)out)[at] = bfloat16_bits(o);
}

#include "gear_attention.cuh"


// Group quantization as GroupQuantizer writes it (used by the block-compression kernels below): codes of `bits` ∈
// {1, 2, 4, 8} bits, packed 8/bits to a byte (lowest bits first) into rows of D·bits/8 bytes; per group scale =
// fp16((max − min)·(1/(2^bits − 1))) — PyTorch's CUDA division by a scalar multiplies by its float reciprocal, and the
// tensor path on the device is the reference — zero = fp16(min), code = clamp(rint((x − zero)/scale), 0, 2^bits − 1)
// with the fp16-rounded scale and zero, 0 where scale is not > 0. Thread c on channel c.

// The code of each thread's channel packed with its neighbours': the first lane of every 8/bits writes the byte.
__device__ __forceinline__ void pack_store(unsigned code, int c, int D, int bits, uint8_t* __restrict__ row)
{
    const int perByte = 8 / bits, lane = threadIdx.x & 31;
    unsigned v = code << ((lane % perByte) * bits);
    for (int o = 1; o < perByte; o <<= 1) v |= __shfl_xor_sync(0xffffffffu, v, o);
    if (c < D && lane % perByte == 0) row[c / perByte] = (uint8_t)v;
}

// A group's fp16 scale and zero from its range (the tensor path's rounding), written at `at`; returned as floats.
// `store` false: computed only (another thread of the group writes them).
__device__ __forceinline__ float2 group_scale_zero(float lo, float hi, int levels, __half* __restrict__ scale,
                                                   __half* __restrict__ zero, long long at, bool store = true)
{
    const __half s16 = __float2half_rn((hi - lo) * (1.f / levels)), z16 = __float2half_rn(lo);
    if (store)
    {
        scale[at] = s16;
        zero[at] = z16;
    }
    return make_float2(__half2float(s16), __half2float(z16));
}

__device__ __forceinline__ unsigned quantize_code(float x, float s, float z, int levels)
{
    if (!(s > 0.f)) return 0u;
    return (unsigned)fminf(fmaxf(rintf((x - z) / s), 0.f), (float)levels);
}

// ---- A block's whole compression but the low rank, in one launch: GEAR's outliers (k = 0 or 1 per side), the group
// quantization of what is left, and the residual R = x − (D̂ + S) the power iteration factors. The same arithmetic as
// GearCompressor's tensor ops (OutlierSet.Extract with k = 1: the first largest and first smallest entry of each vector,
// replaced by the mean of the others; GroupQuantizer; the dequantized block with the outliers restored exactly),
// summation order aside. x [L, n, D] in its own dtype (`type`), rows of D contiguous, slice l at x + l·ld elements (a
// narrow of the float16 buffer is read in place). Outliers: values float16 and indices uint8 (vectors of ≤ 256 entries);
// `residual` float32 [L, n, D] or null (KIVI, or GroupQuantizer's quantization alone with k = 0).

// Keys: a vector is one channel's n tokens, quantized in groups of g tokens. Grid (L), block D threads rounded up to
// warps, thread c on channel c. Outliers [L, D, 2] in ascending token order; scale, zero [L, n/g, D].
extern "C" __global__ void gear_compress_channels(const void* __restrict__ x, int type, long long ld, int n, int D, int g,
    int bits, int k, uint8_t* __restrict__ codes, __half* __restrict__ scale, __half* __restrict__ zero,
    __half* __restrict__ outlierValues, uint8_t* __restrict__ outlierIndex, float* __restrict__ residual)
{
    // Tokens are read 8 at a time (load8_as_float), so a thread has 8 loads in flight rather than one.
    const int c = threadIdx.x, l = blockIdx.x, levels = (1 << bits) - 1, rowBytes = D / 8 * bits;
    const bool active = c < D;
    const void* src = (const char*)x + (long long)l * ld * (type == 0 ? 4 : 2);
    int top = -1, bottom = -1;
    float mean = 0.f, v[8];
    if (active && k)
    {
        float sum = 0.f, hi = -INFINITY, lo = INFINITY;
        top = bottom = 0;
        for (int j0 = 0; j0 < n; j0 += 8)
        {
            load8_as_float(src, type, (long long)j0 * D + c, D, n - j0, v);
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (j0 + u < n)
                {
                    sum += v[u];
                    if (v[u] > hi) { hi = v[u]; top = j0 + u; }
                    if (v[u] < lo) { lo = v[u]; bottom = j0 + u; }
                }
        }
        mean = (sum - (hi + lo)) / (float)(n - 2);
        const int first = min(top, bottom), second = max(top, bottom);
        const long long o = ((long long)l * D + c) * 2;
        outlierValues[o] = __float2half_rn(first == top ? hi : lo);
        outlierValues[o + 1] = __float2half_rn(second == top ? hi : lo);
        outlierIndex[o] = (uint8_t)first;
        outlierIndex[o + 1] = (uint8_t)second;
    }
    for (int start = 0; start < n; start += g)
    {
        float s = 0.f, z = 0.f;
        if (active)
        {
            float lo = INFINITY, hi = -INFINITY;
            for (int j0 = start; j0 < start + g; j0 += 8)
            {
                load8_as_float(src, type, (long long)j0 * D + c, D, start + g - j0, v);
#pragma unroll
                for (int u = 0; u < 8; u++)
                    if (j0 + u < start + g)
                    {
                        const float f = j0 + u == top || j0 + u == bottom ? mean : v[u];
                        lo = fminf(lo, f);
                        hi = fmaxf(hi, f);
                    }
            }
            const float2 sz = group_scale_zero(lo, hi, levels, scale, zero, ((long long)l * (n / g) + start / g) * D + c);
            s = sz.x;
            z = sz.y;
        }
        for (int j0 = start; j0 < start + g; j0 += 8)
        {
            if (active) load8_as_float(src, type, (long long)j0 * D + c, D, start + g - j0, v);
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (j0 + u < start + g)                                              // uniform: pack_store's shuffles
                {
                    const int j = j0 + u;
                    const long long row = (long long)l * n + j;
                    const bool outlier = j == top || j == bottom;
                    const unsigned code = active ? quantize_code(outlier ? mean : v[u], s, z, levels) : 0u;
                    pack_store(code, c, D, bits, codes + row * rowBytes);
                    if (active && residual)
                        residual[row * D + c] = v[u] - (outlier ? __half2float(__float2half_rn(v[u])) : z + (float)code * s);
                }
        }
    }
}

// Values: a vector is one token's g features (g a multiple of 32 up to 256, dividing D). A warp per vector, lane holding
// features lane + 32e of its group in registers: the reductions are shuffles, with no shared memory and no barrier (a
// thread block per token, two barriers each, took 1.45x as long for a decode block at batch 68). Grid
// (ceil(n·D/g / warps), L), block of warps. Outliers [L, n, D/g, 2] as (largest, smallest); scale, zero [L, n, D/g].
#define TOKENS_HELD 8
extern "C" __global__ void gear_compress_tokens(const void* __restrict__ x, int type, long long ld, int n, int D, int g,
    int bits, int k, uint8_t* __restrict__ codes, __half* __restrict__ scale, __half* __restrict__ zero,
    __half* __restrict__ outlierValues, uint8_t* __restrict__ outlierIndex, float* __restrict__ residual)
{
    const int lane = threadIdx.x & 31, levels = (1 << bits) - 1, rowBytes = D / 8 * bits, groups = D / g, per = g / 32;
    const int vector = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);         // n·D/g < 2^31 (the caller checks)
    if (vector >= n * groups) return;                                               // the whole warp
    const int t = vector / groups, group = vector - t * groups, first = group * g;
    const long long row = (long long)blockIdx.y * n + t;
    const void* src = (const char*)x + (long long)blockIdx.y * ld * (type == 0 ? 4 : 2);
    float v[TOKENS_HELD], f[TOKENS_HELD];
#pragma unroll
    for (int e = 0; e < TOKENS_HELD; e++)
        f[e] = v[e] = e < per ? load_as_float(src, type, (long long)t * D + first + lane + 32 * e) : 0.f;
    int top = -1, bottom = -1;
    if (k)
    {
        // The sum, the extremes (shuffles), and the first index holding each (a ballot a held entry, lowest first: entry
        // e of every lane comes before entry e + 1 of any).
        float sum = v[0], hi = v[0], lo = v[0];
#pragma unroll
        for (int e = 1; e < TOKENS_HELD; e++)
            if (e < per)
            {
                sum += v[e];
                hi = fmaxf(hi, v[e]);
                lo = fminf(lo, v[e]);
            }
        for (int o = 16; o > 0; o >>= 1)
        {
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
            hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
            lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
        }
#pragma unroll
        for (int e = TOKENS_HELD - 1; e >= 0; e--)
            if (e < per)
            {
                const unsigned isTop = __ballot_sync(0xffffffffu, v[e] == hi), isBottom = __ballot_sync(0xffffffffu, v[e] == lo);
                if (isTop) top = 32 * e + __ffs(isTop) - 1;
                if (isBottom) bottom = 32 * e + __ffs(isBottom) - 1;
            }
        const float mean = (sum - (hi + lo)) / (float)(g - 2);
#pragma unroll
        for (int e = 0; e < TOKENS_HELD; e++)
            if (lane + 32 * e == top || lane + 32 * e == bottom) f[e] = mean;
        if (lane == 0)
        {
            const long long o = (row * groups + group) * 2;
            outlierValues[o] = __float2half_rn(hi);
            outlierValues[o + 1] = __float2half_rn(lo);
            outlierIndex[o] = (uint8_t)top;
            outlierIndex[o + 1] = (uint8_t)bottom;
        }
    }
    // The range of what is quantized (outliers replaced by the mean).
    float hi = f[0], lo = f[0];
#pragma unroll
    for (int e = 1; e < TOKENS_HELD; e++)
        if (e < per) { hi = fmaxf(hi, f[e]); lo = fminf(lo, f[e]); }
    for (int o = 16; o > 0; o >>= 1)
    {
        hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
        lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    }
    const float2 sz = group_scale_zero(lo, hi, levels, scale, zero, row * groups + group, lane == 0);
    const float s = sz.x, z = sz.y;
#pragma unroll
    for (int e = 0; e < TOKENS_HELD; e++)
        if (e < per)
        {
            const int c = first + lane + 32 * e;
            const unsigned code = quantize_code(f[e], s, z, levels);
            pack_store(code, c, D, bits, codes + row * rowBytes);
            if (residual)
            {
                const bool outlier = lane + 32 * e == top || lane + 32 * e == bottom;
                residual[row * D + c] = v[e] - (outlier ? __half2float(__float2half_rn(v[e])) : z + (float)code * s);
            }
        }
}

// ---- Model kernels: the Llama layer's element-wise steps in one launch each (at batch 1 a decode step is bound by host
// calls: RMSNorm was 8 tensor operations and rotary embedding of q and k ~20 with the views around it). Same arithmetic
// as the tensor ops they replace, rounding to the model's dtype (0 float32, 1 float16, 2 bfloat16) where they round.

// x rounded to the dtype and back (what a tensor operation's result in that dtype holds).
__device__ __forceinline__ float round_to(float x, int type)
{
    if (type == 0) return x;
    if (type == 1) return __half2float(__float2half_rn(x));
    return __uint_as_float((unsigned)bfloat16_bits(x) << 16);
}

// RMSNorm as transformers computes it: w · dtype(x / sqrt(mean(x²) + eps)), the mean in float32. x, out [rows, H],
// w [H], all of one dtype: grid (rows), block a multiple of 32 threads (at most 1,024).
extern "C" __global__ void gear_rms_norm(const void* __restrict__ x, const void* __restrict__ w, void* __restrict__ out, int type,
                                         int H, float eps)
{
    __shared__ float scratch[32];
    const long long row = (long long)blockIdx.x * H;
    float part = 0.f;
    for (int i = threadIdx.x; i < H; i += blockDim.x)
    {
        const float v = load_as_float(x, type, row + i);
        part = fmaf(v, v, part);
    }
    const float scale = rsqrtf(block_sum(part, scratch) / H + eps);
    for (int i = threadIdx.x; i < H; i += blockDim.x)
    {
        const float normed = round_to(__fmul_rn(load_as_float(x, type, row + i), scale), type);
        store_out(out, type, row + i, __fmul_rn(load_as_float(w, type, i), normed));
    }
}

// Rotary embedding of the queries and keys straight from the fused projection: qkv [B, T, (Hq + 2·Hkv)·D] → q [B, Hq, T, D]
// and k [B, Hkv, T, D] (contiguous), x·cos + rotate_half(x)·sin with cos, sin [T, D], each product and the sum rounded to
// the dtype as the tensor ops round them. Grid (B·T, Hq + Hkv), block D/2 threads (thread j: channels j and j + D/2).
extern "C" __global__ void gear_rope_qk(const void* __restrict__ qkv, const void* __restrict__ cos, const void* __restrict__ sin,
                                        void* __restrict__ q, void* __restrict__ k, int type, int T, int Hq, int Hkv, int D)
{
    const int bt = blockIdx.x, head = blockIdx.y, j = threadIdx.x, half = D / 2;
    const int b = bt / T, t = bt - b * T;
    const long long in = (long long)bt * (Hq + 2 * Hkv) * D + (long long)head * D;
    const bool isQuery = head < Hq;
    const int h = isQuery ? head : head - Hq, heads = isQuery ? Hq : Hkv;
    void* dst = isQuery ? q : k;
    const long long o = (((long long)b * heads + h) * T + t) * D;
    const float x1 = load_as_float(qkv, type, in + j), x2 = load_as_float(qkv, type, in + j + half);
    const float c1 = load_as_float(cos, type, (long long)t * D + j), c2 = load_as_float(cos, type, (long long)t * D + j + half);
    const float s1 = load_as_float(sin, type, (long long)t * D + j), s2 = load_as_float(sin, type, (long long)t * D + j + half);
    store_out(dst, type, o + j, __fadd_rn(round_to(__fmul_rn(x1, c1), type), round_to(__fmul_rn(-x2, s1), type)));
    store_out(dst, type, o + j + half, __fadd_rn(round_to(__fmul_rn(x2, c2), type), round_to(__fmul_rn(x1, s2), type)));
}

// The rest of the launch-light decode step (LlamaModel.CudaDecode): the token embeddings, rotary embedding with the angles
// computed in the kernel, and SiLU·up; rounding as the tensor ops they replace round.

// x [S, H] = table[ids[s]] (one dtype; a copy). Grid (S), block up to 1,024 threads.
extern "C" __global__ void gear_embed(const long long* __restrict__ ids, const void* __restrict__ table, void* __restrict__ x, int type, int H)
{
    const long long from = ids[blockIdx.x] * H, to = (long long)blockIdx.x * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        store_out(x, type, to + i, load_as_float(table, type, from + i));
}

// One new token per sequence: qkv [S, (Hq + 2·Hkv)·D] → q [S, Hq, D], k and v [S, Hkv, D] (contiguous), q and k rotated at
// positions[s] as RotaryEmbedding.Tables and gear_rope_qk compute it: angle = float(position)·invFreq[j] in float32, cos
// and sin rounded to the dtype, x·cos + rotate_half(x)·sin with each product and the sum rounded. Grid (S, Hq + 2·Hkv),
// block D/2 threads (thread j: channels j and j + D/2); the last Hkv heads are v, copied.
extern "C" __global__ void gear_rope_decode(const void* __restrict__ qkv, const long long* __restrict__ positions, const float* __restrict__ invFreq,
                                            void* __restrict__ q, void* __restrict__ k, void* __restrict__ v, int type, int Hq, int Hkv, int D)
{
    const int s = blockIdx.x, head = blockIdx.y, j = threadIdx.x, half = D / 2;
    const long long in = (long long)s * (Hq + 2 * Hkv) * D + (long long)head * D;
    const float x1 = load_as_float(qkv, type, in + j), x2 = load_as_float(qkv, type, in + j + half);
    if (head >= Hq + Hkv)
    {
        const long long o = ((long long)s * Hkv + head - Hq - Hkv) * D;
        store_out(v, type, o + j, x1);
        store_out(v, type, o + j + half, x2);
        return;
    }
    const float angle = __fmul_rn((float)positions[s], invFreq[j]);
    const float c = round_to(cosf(angle), type), sn = round_to(sinf(angle), type);
    const bool isQuery = head < Hq;
    void* dst = isQuery ? q : k;
    const long long o = ((long long)s * (isQuery ? Hq : Hkv) + (isQuery ? head : head - Hq)) * D;
    store_out(dst, type, o + j, __fadd_rn(round_to(__fmul_rn(x1, c), type), round_to(__fmul_rn(-x2, sn), type)));
    store_out(dst, type, o + j + half, __fadd_rn(round_to(__fmul_rn(x2, c), type), round_to(__fmul_rn(x1, sn), type)));
}

// out [S, I] = dtype(silu(gate)) · up, rounded as F.silu(gate) * up rounds, from gateUp [S, 2·I] (gate first). Grid
// (ceil(I / 256), S), block 256 threads.
extern "C" __global__ void gear_silu_mul(const void* __restrict__ gateUp, void* __restrict__ out, int type, int I)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= I) return;
    const long long row = blockIdx.y;
    const float gate = load_as_float(gateUp, type, row * 2 * I + i), up = load_as_float(gateUp, type, row * 2 * I + I + i);
    const float silu = round_to(gate / (1.f + expf(-gate)), type);
    store_out(out, type, row * I + i, __fmul_rn(silu, up));
}

// x += y over n elements of one dtype, rounded as a tensor add rounds (the residual adds). Grid (ceil(n / 256)), block 256.
extern "C" __global__ void gear_add(void* __restrict__ x, const void* __restrict__ y, int type, long long n)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        store_out(x, type, i, __fadd_rn(load_as_float(x, type, i), load_as_float(y, type, i)));
}
