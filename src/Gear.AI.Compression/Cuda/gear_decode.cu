// Fused decode attention over a GEAR-compressed KV cache (the CUDA side of Gear.AI.Compression).
//
// The same terms as CompressedStore's tensor path (the reference these kernels are tested against):
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

// Code (word >> shift) & mask as a float, exactly: 0x4B000000 is 2^23, whose mantissa holds the code.
__device__ __forceinline__ float code_float(unsigned word, int shift, unsigned mask)
{
    return __int_as_float(0x4B000000u | ((word >> shift) & mask)) - 8388608.f;
}

__device__ __forceinline__ float warp_sum(float value)
{
    for (int o = 16; o > 0; o >>= 1) value += __shfl_xor_sync(0xffffffff, value, o);
    return value;
}

// Element i of the queries in their own dtype (0 float32, 1 float16, 2 bfloat16), times `scale`.
__device__ __forceinline__ float load_q(const void* q, int type, long long i, float scale)
{
    float x;
    if (type == 0) x = ((const float*)q)[i];
    else if (type == 1) x = __half2float(((const __half*)q)[i]);
    else x = __uint_as_float(((unsigned)((const unsigned short*)q)[i]) << 16);
    return x * scale;
}

// Queries everywhere below: [BH, rows, D] in the caller's dtype (qType), multiplied by qScale (1/√D) on load.

// Scores of one g-token group for up to M query rows: grid (T/g, BH), block g threads (one token each, a multiple of 32).
// codes [BH, T, rowBytes]; scale, zero [BH, T/g, D] half; A [BH, T, r] half, B [BH, nblk, D, r] half,
// groupBlock [T/g] int64 (r = 0: no low rank); scores [BH, rows, ld] float, written at columns [offset, offset + T).
template <int M, int BITS>
__device__ void key_scores(const void* __restrict__ q, int qType, float qScale, int rows, const uint8_t* __restrict__ codes,
                           const __half* __restrict__ scale, const __half* __restrict__ zero,
                           const __half* __restrict__ A, const __half* __restrict__ B, const long long* __restrict__ groupBlock,
                           int r, int nblk, float* __restrict__ scores, int T, int D, int g, long long ld, long long offset)
{
    constexpr int PER_WORD = 32 / BITS;
    constexpr unsigned MASK = BITS == 32 ? 0xffffffffu : (1u << BITS) - 1u;
    extern __shared__ float sh[];
    float* qs = sh;                 // [M, D] q·scale of this group (rows ≥ `rows` are zero)
    float* zq = qs + M * D;         // [M]    q·zero
    float* qb = zq + M;             // [M, r] q·B of this group's block
    const int grp = blockIdx.x, bh = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warps = blockDim.x >> 5;
    const long long qh = (long long)bh * rows * D;
    const __half* sc = scale + ((long long)bh * (T / g) + grp) * D;
    const __half* ze = zero + ((long long)bh * (T / g) + grp) * D;
    const __half* Bb = r > 0 ? B + ((long long)bh * nblk + groupBlock[grp]) * D * r : nullptr;
    for (int i = tid; i < M * D; i += blockDim.x)
        qs[i] = i < rows * D ? load_q(q, qType, qh + i, qScale) * __half2float(sc[i % D]) : 0.f;
    // M + M·r dot products over D, one warp each.
    for (int o = tid >> 5; o < M + M * r; o += warps)
    {
        float s = 0.f;
        const int m = o < M ? o : (o - M) / r, rho = o < M ? 0 : (o - M) % r;
        if (m < rows)
            for (int d = lane; d < D; d += 32)
                s += load_q(q, qType, qh + m * D + d, qScale) * __half2float(o < M ? ze[d] : Bb[d * r + rho]);
        s = warp_sum(s);
        if (lane == 0) zq[o] = s;   // zq[m] for o < M, then qb[m·r + ρ]
    }
    __syncthreads();
    if (tid >= g) return;
    const long long t = (long long)grp * g + tid;
    const int rowBytes = D / 8 * BITS;
    const uint8_t* row = codes + ((long long)bh * T + t) * rowBytes;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0.f;
    if ((rowBytes & 15) == 0)
    {
        // 16-byte loads: 4 words of 32/BITS consecutive channels each.
        const uint4* vec = (const uint4*)row;
        const int vectors = rowBytes >> 4;
#pragma unroll 2
        for (int v = 0; v < vectors; v++)
        {
            const uint4 x = vec[v];
            const unsigned words[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
            for (int w = 0; w < 4; w++)
            {
                const int d0 = (v * 4 + w) * PER_WORD;
#pragma unroll
                for (int i = 0; i < PER_WORD; i += 4)
                {
                    float c[4];
#pragma unroll
                    for (int u = 0; u < 4; u++) c[u] = code_float(words[w], (i + u) * BITS, MASK);
#pragma unroll
                    for (int m = 0; m < M; m++)
                    {
                        const float4 s4 = *(const float4*)&qs[m * D + d0 + i];
                        acc[m] += s4.x * c[0] + s4.y * c[1] + s4.z * c[2] + s4.w * c[3];
                    }
                }
            }
        }
    }
    else
        for (int d = 0; d < D; d++)
        {
            const float c = (float)code_at(row, d, BITS);
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
        if (m < rows) scores[((long long)bh * rows + m) * ld + offset + t] = acc[m] + zq[m];
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
__device__ void key_outliers(const void* __restrict__ q, int qType, float qScale, int rows, const uint8_t* __restrict__ codes,
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
            if (m < rows)
                atomicAdd(&acc[m * OUTLIER_TILE + (t - tileStart)], load_q(q, qType, ((long long)bh * rows + m) * D + c, qScale) * delta);
    }
    __syncthreads();
    for (int i = tid; i < rows * tileLength && i < M * tileLength; i += blockDim.x)
    {
        const int m = i / tileLength, j = i % tileLength;
        scores[((long long)bh * rows + m) * ld + offset + tileStart + j] += acc[m * OUTLIER_TILE + j];
    }
}

// p·V̂ of one chunk of `chunk` tokens (inside one block): grid (T/chunk, BH), block ≥ D threads (one channel each).
// p [BH, rows, ld] float read at columns [offset, offset + T); codes [BH, T, rowBytes]; scale, zero [BH, T, G] half
// (G = D/gv groups per token); outlier values/index [BH, T, G, S] (half, uint8 index within the group; S = 0: none);
// A [BH, T, r], B [BH, nblk, D, r] half, groupBlock [T/gv] int64; partial [BH, slots, rows, D] float, this store's chunks
// at slots [slotBase, slotBase + T/chunk) (the caller sums over slots).
template <int M, int BITS>
__device__ void value_chunks(const float* __restrict__ p, int rows, const uint8_t* __restrict__ codes,
                            const __half* __restrict__ scale, const __half* __restrict__ zero,
                            const __half* __restrict__ values, const uint8_t* __restrict__ index, int S,
                            const __half* __restrict__ A, const __half* __restrict__ B, const long long* __restrict__ groupBlock,
                            int r, int nblk, float* __restrict__ partial, int slots, int slotBase,
                            int T, int D, int gv, int chunk, long long ld, long long offset)
{
    extern __shared__ float sh[];
    const int ch = blockIdx.x, bh = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warps = blockDim.x >> 5, G = D / gv;
    float* ps = sh;                        // [M, chunk, G] p·scale
    float* pz = ps + M * chunk * G;        // [M, G] Σ p·zero, then [M, r] p·A
    float* acc = pz + M * G + M * r;       // [M, D]
    const long long t0 = (long long)ch * chunk;
    const float* ph = p + (long long)bh * rows * ld + offset + t0;
    const long long sz0 = ((long long)bh * T + t0) * G;
    for (int i = tid; i < M * chunk * G; i += blockDim.x)
    {
        const int m = i / (chunk * G), j = (i / G) % chunk, k = i % G;
        ps[i] = m < rows ? ph[m * ld + j] * __half2float(scale[sz0 + (long long)j * G + k]) : 0.f;
    }
    // M·G zero sums and M·r low-rank sums over the chunk's tokens, one warp each.
    for (int o = tid >> 5; o < M * G + M * r; o += warps)
    {
        float s = 0.f;
        if (o < M * G)
        {
            const int m = o / G, k = o % G;
            if (m < rows)
                for (int j = lane; j < chunk; j += 32) s += ph[m * ld + j] * __half2float(zero[sz0 + (long long)j * G + k]);
        }
        else
        {
            const int m = (o - M * G) / r, rho = (o - M * G) % r;
            if (m < rows)
                for (int j = lane; j < chunk; j += 32) s += ph[m * ld + j] * __half2float(A[((long long)bh * T + t0 + j) * r + rho]);
        }
        s = warp_sum(s);
        if (lane == 0) pz[o] = s;
    }
    __syncthreads();
    const int rowBytes = D / 8 * BITS;
    if (tid < D)
    {
        const int d = tid, k = d / gv;
        float a[M];
#pragma unroll
        for (int m = 0; m < M; m++) a[m] = 0.f;
        const uint8_t* row = codes + ((long long)bh * T + t0) * rowBytes;
        for (int j = 0; j < chunk; j++, row += rowBytes)
        {
            const float c = (float)code_at(row, d, BITS);
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
            const float x = code_at(codes + ((long long)bh * T + t) * rowBytes, c, BITS) * __half2float(scale[sz]) + __half2float(zero[sz]);
            const float delta = __half2float(values[e]) - x;
            for (int m = 0; m < rows && m < M; m++)
                atomicAdd(&acc[m * D + c], ph[m * ld + j] * delta);
        }
    __syncthreads();
    if (tid < D)
    {
        const int d = tid;
        const float* pa = pz + M * G;
        const __half* Bb = r > 0 ? B + ((long long)bh * nblk + groupBlock[t0 / gv]) * D * r : nullptr;
        for (int m = 0; m < rows && m < M; m++)
        {
            float o = acc[m * D + d];
            for (int rho = 0; rho < r; rho++)
                o += pa[m * r + rho] * __half2float(Bb[d * r + rho]);
            partial[(((long long)bh * slots + slotBase + ch) * rows + m) * D + d] = o;
        }
    }
}

#define GEAR_CODES(M, BITS)                                                                                                    \
    extern "C" __global__ void gear_key_scores_m##M##_b##BITS(const void* q, int qType, float qScale, int rows,               \
        const uint8_t* codes, const __half* scale, const __half* zero, const __half* A, const __half* B,                      \
        const long long* groupBlock, int r, int nblk, float* scores, int T, int D, int g, long long ld, long long offset)       \
    {                                                                                                                          \
        key_scores<M, BITS>(q, qType, qScale, rows, codes, scale, zero, A, B, groupBlock, r, nblk, scores, T, D, g, ld, offset); \
    }                                                                                                                          \
    extern "C" __global__ void gear_value_chunks_m##M##_b##BITS(const float* p, int rows, const uint8_t* codes,                \
        const __half* scale, const __half* zero, const __half* values, const uint8_t* index, int S, const __half* A,           \
        const __half* B, const long long* groupBlock, int r, int nblk, float* partial, int slots, int slotBase, int T, int D,    \
        int gv, int chunk, long long ld, long long offset)                                                                     \
    {                                                                                                                          \
        value_chunks<M, BITS>(p, rows, codes, scale, zero, values, index, S, A, B, groupBlock, r, nblk, partial, slots,        \
                              slotBase, T, D, gv, chunk, ld, offset);                                                          \
    }

#define GEAR_ROWS(M)                                                                                                           \
    GEAR_CODES(M, 1) GEAR_CODES(M, 2) GEAR_CODES(M, 4) GEAR_CODES(M, 8)                                                        \
    extern "C" __global__ void gear_key_outliers_m##M(const void* q, int qType, float qScale, int rows, const uint8_t* codes, \
        const __half* scale, const __half* zero, const __half* values, const void* index, int indexBytes,                      \
        const long long* slotOffset, float* scores, int T, int D, int bits, int g, int S, long long ld, long long offset)       \
    {                                                                                                                          \
        key_outliers<M>(q, qType, qScale, rows, codes, scale, zero, values, index, indexBytes, slotOffset, scores,             \
                        T, D, bits, g, S, ld, offset);                                                                         \
    }

GEAR_ROWS(1)
GEAR_ROWS(2)
GEAR_ROWS(4)
GEAR_ROWS(8)

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
// Scores: grid (n, BH), one warp per buffered token. q [BH, M, D] (qType, times qScale), keys [BH, capacity, D] half;
// query row m is token m % tq of the tq newest, so it sees buffered tokens t <= n - tq + m % tq (causal).
extern "C" __global__ void gear_dense_scores(const void* __restrict__ q, int qType, float qScale, const __half* __restrict__ keys,
    long long capacity, int n, int M, int D, int tq, float* __restrict__ scores, long long ld, long long offset)
{
    const int t = blockIdx.x, bh = blockIdx.y, lane = threadIdx.x;
    const __half* k = keys + ((long long)bh * capacity + t) * D;
    for (int m = 0; m < M; m++)
    {
        float s = 0.f;
        for (int d = lane; d < D; d += 32) s += load_q(q, qType, ((long long)bh * M + m) * D + d, qScale) * __half2float(k[d]);
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

// The attention output: out[bh, m, d] = Σ_slot partial[bh, slot, m, d], stored in the queries' dtype (outType as qType).
// Grid (BH), block ≥ 32 threads; [BH, M, D] is the [B, Hq, Tq, D] layout of the output.
extern "C" __global__ void gear_sum_slots(const float* __restrict__ partial, int slots, int M, int D, void* __restrict__ out, int outType)
{
    const int bh = blockIdx.x;
    for (int i = threadIdx.x; i < M * D; i += blockDim.x)
    {
        const float* src = partial + (long long)bh * slots * M * D + i;
        float o = 0.f;
        for (int s = 0; s < slots; s++) o += src[(long long)s * M * D];
        const long long at = (long long)bh * M * D + i;
        if (outType == 0) ((float*)out)[at] = o;
        else if (outType == 1) ((__half*)out)[at] = __float2half_rn(o);
        else
        {
            // float → bfloat16, round to nearest even (NaN stays NaN).
            unsigned bits = __float_as_uint(o);
            unsigned short h = (o != o) ? (unsigned short)0x7fc0 : (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
            ((unsigned short*)out)[at] = h;
        }
    }
}
