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

__device__ __forceinline__ float warp_sum(float value)
{
    for (int o = 16; o > 0; o >>= 1) value += __shfl_xor_sync(0xffffffff, value, o);
    return value;
}

// Scores of one g-token group for M query rows: grid (T/g, BH), block g threads (one token each, a multiple of 32).
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
    float* qb = zq + M;             // [M, r] q·B of this group's block
    const int grp = blockIdx.x, bh = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warps = blockDim.x >> 5;
    const float* qh = q + (long long)bh * M * D;
    const __half* sc = scale + ((long long)bh * (T / g) + grp) * D;
    const __half* ze = zero + ((long long)bh * (T / g) + grp) * D;
    const __half* Bb = r > 0 ? B + ((long long)bh * nblk + groupBlock[grp]) * D * r : nullptr;
    for (int i = tid; i < M * D; i += blockDim.x)
        qs[i] = qh[i] * __half2float(sc[i % D]);
    // M + M·r dot products over D, one warp each.
    for (int o = tid >> 5; o < M + M * r; o += warps)
    {
        float s = 0.f;
        if (o < M)
            for (int d = lane; d < D; d += 32) s += qh[o * D + d] * __half2float(ze[d]);
        else
        {
            const int m = (o - M) / r, rho = (o - M) % r;
            for (int d = lane; d < D; d += 32) s += qh[m * D + d] * __half2float(Bb[d * r + rho]);
        }
        s = warp_sum(s);
        if (lane == 0) zq[o] = s;   // zq[m] for o < M, then qb[m·r + ρ]
    }
    __syncthreads();
    if (tid >= g) return;
    const long long t = (long long)grp * g + tid;
    const int rowBytes = D / 8 * bits, perWord = 32 / bits;
    const uint8_t* row = codes + ((long long)bh * T + t) * rowBytes;
    const unsigned mask = (1u << bits) - 1u;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0.f;
    if ((rowBytes & 3) == 0)
    {
        // 32-bit words: 32/bits consecutive channels each (codes are little-endian within and across bytes).
        const unsigned* words = (const unsigned*)row;
        for (int w = 0; w < rowBytes / 4; w++)
        {
            const unsigned word = words[w];
            const int d0 = w * perWord;
#pragma unroll 8
            for (int i = 0; i < perWord; i++)
            {
                const float c = (float)((word >> (i * bits)) & mask);
#pragma unroll
                for (int m = 0; m < M; m++) acc[m] += qs[m * D + d0 + i] * c;
            }
        }
    }
    else
        for (int d = 0; d < D; d++)
        {
            const float c = (float)code_at(row, d, bits);
#pragma unroll
            for (int m = 0; m < M; m++) acc[m] += qs[m * D + d] * c;
        }
    for (int rho = 0; rho < r; rho++)
    {
        const float a = __half2float(A[((long long)bh * T + t) * r + rho]);
#pragma unroll
        for (int m = 0; m < M; m++) acc[m] += a * qb[m * r + rho];
    }
#pragma unroll
    for (int m = 0; m < M; m++)
        scores[((long long)bh * M + m) * ld + offset + t] = acc[m] + zq[m];
}

#define OUTLIER_TILE 1024

// First slot k in [0, S) with slotOffset[k] >= value (slot offsets are block starts, non-decreasing).
__device__ int lower_bound(const long long* __restrict__ slotOffset, int S, long long value)
{
    int lo = 0, hi = S;
    while (lo < hi)
    {
        int mid = (lo + hi) >> 1;
        if (slotOffset[mid] < value) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// Outlier corrections of the key scores for one tile of OUTLIER_TILE tokens: grid (ceil(T / tile), BH).
// The slots of the blocks overlapping the tile are found by binary search in slotOffset; corrections gather in
// shared memory (fast atomics there) and each tile then adds its own columns of the scores: no global atomics.
// values [BH, D, S] half; index [BH, D, S] of indexBytes (1, 2 or 4) bytes, token within the block.
template <int M>
__device__ void key_outliers(const float* __restrict__ q, const uint8_t* __restrict__ codes,
                             const __half* __restrict__ scale, const __half* __restrict__ zero,
                             const __half* __restrict__ values, const void* __restrict__ index, int indexBytes,
                             const long long* __restrict__ slotOffset, float* __restrict__ scores,
                             int T, int D, int bits, int g, int S, long long ld, long long offset)
{
    extern __shared__ float acc[];                    // [M, OUTLIER_TILE]
    __shared__ int range[2];
    const int bh = blockIdx.y, tid = threadIdx.x;
    const long long tileStart = (long long)blockIdx.x * OUTLIER_TILE;
    const int tileLength = (int)min((long long)OUTLIER_TILE, T - tileStart);
    for (int i = tid; i < M * OUTLIER_TILE; i += blockDim.x) acc[i] = 0.f;
    if (tid == 0)
    {
        // Blocks overlapping [tileStart, tileStart + tileLength): the one holding tileStart, up to the tile's end.
        int last = lower_bound(slotOffset, S, tileStart + 1) - 1;      // last slot whose block starts at or before tileStart
        range[0] = last < 0 ? 0 : lower_bound(slotOffset, S, slotOffset[last]);
        range[1] = lower_bound(slotOffset, S, tileStart + tileLength);
    }
    __syncthreads();
    const int first = range[0], count = range[1] - range[0];
    const int rowBytes = D / 8 * bits;
    for (long long i = tid; i < (long long)D * count; i += blockDim.x)
    {
        const int c = (int)(i / count), k = first + (int)(i % count);
        const long long e = ((long long)bh * D + c) * S + k;
        const long long idx = indexBytes == 1 ? ((const uint8_t*)index)[e] : indexBytes == 2 ? ((const int16_t*)index)[e] : ((const int32_t*)index)[e];
        const long long t = slotOffset[k] + idx;
        if (t < tileStart || t >= tileStart + tileLength) continue;
        const long long sz = ((long long)bh * (T / g) + t / g) * D + c;
        const float x = code_at(codes + ((long long)bh * T + t) * rowBytes, c, bits) * __half2float(scale[sz]) + __half2float(zero[sz]);
        const float delta = __half2float(values[e]) - x;
#pragma unroll
        for (int m = 0; m < M; m++)
            atomicAdd(&acc[m * OUTLIER_TILE + (t - tileStart)], q[((long long)bh * M + m) * D + c] * delta);
    }
    __syncthreads();
    for (int i = tid; i < M * tileLength; i += blockDim.x)
    {
        const int m = i / tileLength, j = i % tileLength;
        scores[((long long)bh * M + m) * ld + offset + tileStart + j] += acc[m * OUTLIER_TILE + j];
    }
}

// p·V̂ of one chunk of `chunk` tokens (inside one block): grid (T/chunk, BH), block ≥ D threads (one channel each).
// p [BH, M, ld] float read at columns [offset, offset + T); codes [BH, T, rowBytes]; scale, zero [BH, T, G] half
// (G = D/gv groups per token); outlier values/index [BH, T, G, S] (half, uint8 index within the group; S = 0: none);
// A [BH, T, r], B [BH, nblk, D, r] half, groupBlock [T/gv] int64; partial [BH, slots, M, D] float, this store's chunks
// at slots [slotBase, slotBase + T/chunk) (the caller sums over slots).
template <int M>
__device__ void value_chunk(const float* __restrict__ p, const uint8_t* __restrict__ codes,
                            const __half* __restrict__ scale, const __half* __restrict__ zero,
                            const __half* __restrict__ values, const uint8_t* __restrict__ index, int S,
                            const __half* __restrict__ A, const __half* __restrict__ B, const long long* __restrict__ groupBlock,
                            int r, int nblk, float* __restrict__ partial, int slots, int slotBase,
                            int T, int D, int bits, int gv, int chunk, long long ld, long long offset)
{
    extern __shared__ float sh[];
    const int ch = blockIdx.x, bh = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warps = blockDim.x >> 5, G = D / gv;
    float* ps = sh;                        // [M, chunk, G] p·scale
    float* pz = ps + M * chunk * G;        // [M, G] Σ p·zero, then [M, r] p·A
    float* acc = pz + M * G + M * r;       // [M, D]
    const long long t0 = (long long)ch * chunk;
    const float* ph = p + (long long)bh * M * ld + offset + t0;
    const long long sz0 = ((long long)bh * T + t0) * G;
    for (int i = tid; i < M * chunk * G; i += blockDim.x)
    {
        const int m = i / (chunk * G), j = (i / G) % chunk, k = i % G;
        ps[i] = ph[m * ld + j] * __half2float(scale[sz0 + (long long)j * G + k]);
    }
    // M·G zero sums and M·r low-rank sums over the chunk's tokens, one warp each.
    for (int o = tid >> 5; o < M * G + M * r; o += warps)
    {
        float s = 0.f;
        if (o < M * G)
        {
            const int m = o / G, k = o % G;
            for (int j = lane; j < chunk; j += 32) s += ph[m * ld + j] * __half2float(zero[sz0 + (long long)j * G + k]);
        }
        else
        {
            const int m = (o - M * G) / r, rho = (o - M * G) % r;
            for (int j = lane; j < chunk; j += 32) s += ph[m * ld + j] * __half2float(A[((long long)bh * T + t0 + j) * r + rho]);
        }
        s = warp_sum(s);
        if (lane == 0) pz[o] = s;
    }
    __syncthreads();
    const int rowBytes = D / 8 * bits;
    if (tid < D)
    {
        const int d = tid, k = d / gv;
        float a[M];
#pragma unroll
        for (int m = 0; m < M; m++) a[m] = 0.f;
        const uint8_t* row = codes + ((long long)bh * T + t0) * rowBytes;
        for (int j = 0; j < chunk; j++, row += rowBytes)
        {
            const float c = (float)code_at(row, d, bits);
#pragma unroll
            for (int m = 0; m < M; m++) a[m] += ps[(m * chunk + j) * G + k] * c;
        }
#pragma unroll
        for (int m = 0; m < M; m++) acc[m * D + d] = a[m] + pz[m * G + k];
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
            const float x = code_at(codes + ((long long)bh * T + t) * rowBytes, c, bits) * __half2float(scale[sz]) + __half2float(zero[sz]);
            const float delta = __half2float(values[e]) - x;
            for (int m = 0; m < M; m++)
                atomicAdd(&acc[m * D + c], ph[m * ld + j] * delta);
        }
    __syncthreads();
    if (tid < D)
    {
        const int d = tid;
        const float* pa = pz + M * G;
        const __half* Bb = r > 0 ? B + ((long long)bh * nblk + groupBlock[t0 / gv]) * D * r : nullptr;
        for (int m = 0; m < M; m++)
        {
            float o = acc[m * D + d];
            for (int rho = 0; rho < r; rho++)
                o += pa[m * r + rho] * __half2float(Bb[d * r + rho]);
            partial[(((long long)bh * slots + slotBase + ch) * M + m) * D + d] = o;
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
        const long long* groupBlock, int r, int nblk, float* partial, int slots, int slotBase, int T, int D, int bits, int gv, \
        int chunk, long long ld, long long offset)                                                                            \
    {                                                                                                                         \
        value_chunk<M>(p, codes, scale, zero, values, index, S, A, B, groupBlock, r, nblk, partial, slots, slotBase, T, D,  \
                       bits, gv, chunk, ld, offset);                                                                          \
    }                                                                                                                         \
    extern "C" __global__ void gear_key_outliers_m##M(const float* q, const uint8_t* codes, const __half* scale,              \
        const __half* zero, const __half* values, const void* index, int indexBytes, const long long* slotOffset,             \
        float* scores, int T, int D, int bits, int g, int S, long long ld, long long offset)                                 \
    {                                                                                                                         \
        key_outliers<M>(q, codes, scale, zero, values, index, indexBytes, slotOffset, scores, T, D, bits, g, S, ld, offset); \
    }

GEAR_INSTANTIATE(1)
GEAR_INSTANTIATE(2)
GEAR_INSTANTIATE(3)
GEAR_INSTANTIATE(4)
GEAR_INSTANTIATE(5)
GEAR_INSTANTIATE(6)
GEAR_INSTANTIATE(7)
GEAR_INSTANTIATE(8)

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

// The float16 buffer's part of decode attention, as two small kernels so the whole step stays a handful of calls.
// Scores: grid (n, BH), one warp per buffered token. q [BH, M, D] float (already scaled), keys [BH, capacity, D] half;
// query row m is token m % tq of the tq newest, so it sees buffered tokens t <= n - tq + m % tq (causal).
extern "C" __global__ void gear_dense_scores(const float* __restrict__ q, const __half* __restrict__ keys, long long capacity,
    int n, int M, int D, int tq, float* __restrict__ scores, long long ld, long long offset)
{
    const int t = blockIdx.x, bh = blockIdx.y, lane = threadIdx.x;
    const __half* k = keys + ((long long)bh * capacity + t) * D;
    for (int m = 0; m < M; m++)
    {
        float s = 0.f;
        for (int d = lane; d < D; d += 32) s += q[((long long)bh * M + m) * D + d] * __half2float(k[d]);
        s = warp_sum(s);
        if (lane == 0)
            scores[((long long)bh * M + m) * ld + offset + t] = t <= n - tq + m % tq ? s : -INFINITY;
    }
}

// Values: grid (BH), block >= D threads (one channel each): partial[bh, slot, m, d] = Σ_t p[bh, m, offset + t]·V[bh, t, d].
extern "C" __global__ void gear_dense_values(const float* __restrict__ p, const __half* __restrict__ values, long long capacity,
    int n, int M, int D, float* __restrict__ partial, int slots, int slot, long long ld, long long offset)
{
    const int bh = blockIdx.x, d = threadIdx.x;
    if (d >= D) return;
    for (int m = 0; m < M; m++)
    {
        const float* pm = p + ((long long)bh * M + m) * ld + offset;
        float o = 0.f;
        for (int t = 0; t < n; t++) o += pm[t] * __half2float(values[((long long)bh * capacity + t) * D + d]);
        partial[(((long long)bh * slots + slot) * M + m) * D + d] = o;
    }
}
