// Fused decode attention over a GEAR-compressed KV cache (the CUDA side of Gear.AI.Compression).
//
// The same terms as CompressedStore's tensor path (the reference these kernels are tested against):
//   keys, quantized per channel in groups of g tokens:  q·k̂_t = Σ_d (q_d·scale_d)·code_td + Σ_d q_d·zero_d
//   values, quantized per token in groups of gv features: Σ_t p_t·(scale_t·code_t + zero_t)
//   outliers replace their dequantized entry (a correction (value − x̂)), low rank stays factored.
// Codes are packed as BitPacking writes them: 8 codes in every `bits` bytes, code i of a group at bits
// [i·b, i·b + b) of the little-endian word; these kernels read 1-, 2-, 4- and 8-bit codes.
// Compiled to PTX (see build notes in CudaKernels.cs) and launched through the driver API from C#.

#include <cuda_fp16.h>
#include <stdint.h>

#define MAX_RANK 8

__device__ __forceinline__ int code_at(const uint8_t* row, int d, int bits)
{
    int bit = d * bits;
    return (row[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
}

// Scores of one g-token group for M query rows: grid (T/g, BH), block g threads (one token each).
// q [BH, M, D] float; codes [BH, T, rowBytes]; scale, zero [BH, T/g, D] half;
// A [BH, T, r] half, B [BH, nblk, D, r] half, groupBlock [T/g] int64 (r = 0: no low rank);
// scores [BH, M, ld] float, written at columns [offset, offset + T).
template <int M>
__device__ void key_scores(const float* __restrict__ q, const uint8_t* __restrict__ codes,
                           const __half* __restrict__ scale, const __half* __restrict__ zero,
                           const __half* __restrict__ A, const __half* __restrict__ B, const long long* __restrict__ groupBlock,
                           int r, int nblk, float* __restrict__ scores, int T, int D, int bits, int g, long long ld, long long offset)
{
    extern __shared__ float sh[];
    float* qs = sh;                 // [M, D] q·scale of this group
    float* zq = qs + M * D;         // [M]    q·zero
    float* qb = zq + M;             // [M, MAX_RANK] q·B of this group's block
    const int grp = blockIdx.x, bh = blockIdx.y, tid = threadIdx.x;
    const float* qh = q + (long long)bh * M * D;
    const __half* sc = scale + ((long long)bh * (T / g) + grp) * D;
    const __half* ze = zero + ((long long)bh * (T / g) + grp) * D;
    for (int i = tid; i < M * D; i += blockDim.x)
        qs[i] = qh[i] * __half2float(sc[i % D]);
    for (int i = tid; i < M; i += blockDim.x) zq[i] = 0.f;
    for (int i = tid; i < M * MAX_RANK; i += blockDim.x) qb[i] = 0.f;
    __syncthreads();
    for (int i = tid; i < M * D; i += blockDim.x)
        atomicAdd(&zq[i / D], qh[i] * __half2float(ze[i % D]));
    if (r > 0)
    {
        const __half* Bb = B + ((long long)bh * nblk + groupBlock[grp]) * D * r;
        for (int i = tid; i < M * D * r; i += blockDim.x)
        {
            int m = i / (D * r), rest = i % (D * r), d = rest / r, rho = rest % r;
            atomicAdd(&qb[m * MAX_RANK + rho], qh[m * D + d] * __half2float(Bb[d * r + rho]));
        }
    }
    __syncthreads();
    if (tid >= g) return;
    const long long t = (long long)grp * g + tid;
    const int rowBytes = D / 8 * bits;
    const uint8_t* row = codes + ((long long)bh * T + t) * rowBytes;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0.f;
    for (int d = 0; d < D; d++)
    {
        float c = (float)code_at(row, d, bits);
#pragma unroll
        for (int m = 0; m < M; m++) acc[m] += qs[m * D + d] * c;
    }
    for (int rho = 0; rho < r; rho++)
    {
        float a = __half2float(A[((long long)bh * T + t) * r + rho]);
#pragma unroll
        for (int m = 0; m < M; m++) acc[m] += a * qb[m * MAX_RANK + rho];
    }
#pragma unroll
    for (int m = 0; m < M; m++)
        scores[((long long)bh * M + m) * ld + offset + t] = acc[m] + zq[m];
}

// Outlier corrections of the key scores: one thread per stored outlier (bh, channel c, slot k).
// values [BH, D, S] half; index [BH, D, S] of indexBytes (1, 2 or 4) bytes; slotOffset [S] int64 (block start).
__device__ void key_outliers(const float* __restrict__ q, const uint8_t* __restrict__ codes,
                             const __half* __restrict__ scale, const __half* __restrict__ zero,
                             const __half* __restrict__ values, const void* __restrict__ index, int indexBytes,
                             const long long* __restrict__ slotOffset, float* __restrict__ scores,
                             int BH, int M, int T, int D, int bits, int g, int S, long long ld, long long offset)
{
    long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long long)BH * D * S) return;
    int k = (int)(e % S), c = (int)((e / S) % D), bh = (int)(e / ((long long)S * D));
    long long idx = indexBytes == 1 ? ((const uint8_t*)index)[e] : indexBytes == 2 ? ((const int16_t*)index)[e] : ((const int32_t*)index)[e];
    long long t = slotOffset[k] + idx;
    long long gi = t / g;
    const int rowBytes = D / 8 * bits;
    float x = code_at(codes + ((long long)bh * T + t) * rowBytes, c, bits) * __half2float(scale[((long long)bh * (T / g) + gi) * D + c])
              + __half2float(zero[((long long)bh * (T / g) + gi) * D + c]);
    float delta = __half2float(values[e]) - x;
    for (int m = 0; m < M; m++)
        atomicAdd(&scores[((long long)bh * M + m) * ld + offset + t], q[((long long)bh * M + m) * D + c] * delta);
}

// p·V̂ of one chunk of `chunk` tokens (inside one block): grid (T/chunk, BH), block D threads (one channel each).
// p [BH, M, ld] float read at columns [offset, offset + T); codes [BH, T, rowBytes]; scale, zero [BH, T, G] half
// (G = D/gv groups per token); outlier values/index [BH, T, G, S] (half, uint8 index within the group; S = 0: none);
// A [BH, T, r], B [BH, nblk, D, r] half, groupBlock [T/gv] int64; partial [BH, T/chunk, M, D] float (summed by the caller).
template <int M>
__device__ void value_chunk(const float* __restrict__ p, const uint8_t* __restrict__ codes,
                            const __half* __restrict__ scale, const __half* __restrict__ zero,
                            const __half* __restrict__ values, const uint8_t* __restrict__ index, int S,
                            const __half* __restrict__ A, const __half* __restrict__ B, const long long* __restrict__ groupBlock,
                            int r, int nblk, float* __restrict__ partial,
                            int T, int D, int bits, int gv, int chunk, long long ld, long long offset)
{
    extern __shared__ float sh[];
    float* pc = sh;                  // [M, chunk] probabilities of the chunk
    float* acc = pc + M * chunk;     // [M, D]
    float* pa = acc + M * D;         // [M, MAX_RANK] p·A of the chunk
    const int ch = blockIdx.x, bh = blockIdx.y, tid = threadIdx.x, G = D / gv;
    const long long t0 = (long long)ch * chunk;
    for (int i = tid; i < M * chunk; i += blockDim.x)
        pc[i] = p[((long long)bh * M + i / chunk) * ld + offset + t0 + i % chunk];
    for (int i = tid; i < M * MAX_RANK; i += blockDim.x) pa[i] = 0.f;
    __syncthreads();
    const int rowBytes = D / 8 * bits;
    if (tid < D)
    {
        const int d = tid, k = d / gv;
        float a[M];
#pragma unroll
        for (int m = 0; m < M; m++) a[m] = 0.f;
        for (int j = 0; j < chunk; j++)
        {
            const long long t = t0 + j;
            const long long sz = ((long long)bh * T + t) * G + k;
            float x = code_at(codes + ((long long)bh * T + t) * rowBytes, d, bits) * __half2float(scale[sz]) + __half2float(zero[sz]);
#pragma unroll
            for (int m = 0; m < M; m++) a[m] += pc[m * chunk + j] * x;
        }
#pragma unroll
        for (int m = 0; m < M; m++) acc[m * D + d] = a[m];
    }
    if (r > 0)
        for (int i = tid; i < M * r; i += blockDim.x)
        {
            int m = i / r, rho = i % r;
            float s = 0.f;
            for (int j = 0; j < chunk; j++)
                s += pc[m * chunk + j] * __half2float(A[((long long)bh * T + t0 + j) * r + rho]);
            pa[m * MAX_RANK + rho] = s;
        }
    __syncthreads();
    if (S > 0)
        for (int i = tid; i < chunk * G * S; i += blockDim.x)
        {
            const int j = i / (G * S), k = (i / S) % G;
            const long long t = t0 + j;
            const long long e = (((long long)bh * T + t) * G + k) * S + i % S;
            const int c = k * gv + index[e];
            const long long sz = ((long long)bh * T + t) * G + k;
            float x = code_at(codes + ((long long)bh * T + t) * rowBytes, c, bits) * __half2float(scale[sz]) + __half2float(zero[sz]);
            float delta = __half2float(values[e]) - x;
            for (int m = 0; m < M; m++)
                atomicAdd(&acc[m * D + c], pc[m * chunk + j] * delta);
        }
    __syncthreads();
    if (tid < D)
    {
        const int d = tid;
        const __half* Bb = r > 0 ? B + ((long long)bh * nblk + groupBlock[t0 / gv]) * D * r : nullptr;
        for (int m = 0; m < M; m++)
        {
            float o = acc[m * D + d];
            for (int rho = 0; rho < r; rho++)
                o += pa[m * MAX_RANK + rho] * __half2float(Bb[d * r + rho]);
            partial[(((long long)bh * gridDim.x + ch) * M + m) * D + d] = o;
        }
    }
}

#define GEAR_INSTANTIATE(M)                                                                                                   \
    extern "C" __global__ void gear_key_scores_m##M(const float* q, const uint8_t* codes, const __half* scale,                \
        const __half* zero, const __half* A, const __half* B, const long long* groupBlock, int r, int nblk, float* scores,    \
        int T, int D, int bits, int g, long long ld, long long offset)                                                       \
    {                                                                                                                         \
        key_scores<M>(q, codes, scale, zero, A, B, groupBlock, r, nblk, scores, T, D, bits, g, ld, offset);                   \
    }                                                                                                                         \
    extern "C" __global__ void gear_value_chunk_m##M(const float* p, const uint8_t* codes, const __half* scale,               \
        const __half* zero, const __half* values, const uint8_t* index, int S, const __half* A, const __half* B,              \
        const long long* groupBlock, int r, int nblk, float* partial, int T, int D, int bits, int gv, int chunk,               \
        long long ld, long long offset)                                                                                       \
    {                                                                                                                         \
        value_chunk<M>(p, codes, scale, zero, values, index, S, A, B, groupBlock, r, nblk, partial, T, D, bits, gv, chunk,   \
                       ld, offset);                                                                                           \
    }

GEAR_INSTANTIATE(1)
GEAR_INSTANTIATE(2)
GEAR_INSTANTIATE(3)
GEAR_INSTANTIATE(4)
GEAR_INSTANTIATE(5)
GEAR_INSTANTIATE(6)
GEAR_INSTANTIATE(7)
GEAR_INSTANTIATE(8)

extern "C" __global__ void gear_key_outliers(const float* q, const uint8_t* codes, const __half* scale, const __half* zero,
    const __half* values, const void* index, int indexBytes, const long long* slotOffset, float* scores,
    int BH, int M, int T, int D, int bits, int g, int S, long long ld, long long offset)
{
    key_outliers(q, codes, scale, zero, values, index, indexBytes, slotOffset, scores, BH, M, T, D, bits, g, S, ld, offset);
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

// Orthonormal columns of each y [n, r] (row-major, float32) in place: modified Gram-Schmidt applied twice
// ("twice is enough" for orthogonality in float32). A column with no component left becomes zero.
// One thread block per matrix: grid (batch), block a multiple of 32 threads. Replaces linalg.qr's Q in the
// low-rank power iteration, which on CUDA runs one solver call per matrix of the batch.
extern "C" __global__ void gear_orthonormalize(float* y, long long n, int r)
{
    __shared__ float scratch[32];
    float* m = y + (long long)blockIdx.x * n * r;
    for (int j = 0; j < r; j++)
    {
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < j; k++)
            {
                float part = 0.f;
                for (long long i = threadIdx.x; i < n; i += blockDim.x) part += m[i * r + k] * m[i * r + j];
                const float dot = block_sum(part, scratch);
                for (long long i = threadIdx.x; i < n; i += blockDim.x) m[i * r + j] -= dot * m[i * r + k];
                __syncthreads();
            }
        float part = 0.f;
        for (long long i = threadIdx.x; i < n; i += blockDim.x) part += m[i * r + j] * m[i * r + j];
        const float norm = sqrtf(block_sum(part, scratch));
        const float inv = norm > 1e-30f ? 1.f / norm : 0.f;
        for (long long i = threadIdx.x; i < n; i += blockDim.x) m[i * r + j] *= inv;
        __syncthreads();
    }
}
