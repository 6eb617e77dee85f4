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

// Element i of an outlier index array of 1, 2 or 4 bytes per entry.
__device__ __forceinline__ long long index_at(const void* index, int bytes, long long i)
{
    return bytes == 1 ? ((const uint8_t*)index)[i] : bytes == 2 ? ((const int16_t*)index)[i] : ((const int32_t*)index)[i];
}

#define MAX_SPAN_BLOCKS 16

// Key scores of a span of `per` g-token groups: grid (ceil(T/g / per), BH), block per·g threads (one token each; g a
// power of two from 32 to 256, passed as gShift = log2 g). codes [BH, T, rowBytes]; scale, zero [BH, T/g, D] half;
// A [BH, T, r] half, B [BH, nblk, D, r] half, groupBlock [T/g] int64 (r = 0: no low rank); outlier values [BH, D, S] half
// and index [BH, D, S] (indexBytes each): per channel, each block's slots hold token indices within the block in
// ascending order; groupSlots [T/g] gives for each group its block's first slot, slot count, first token and length
// (S = 0: no outliers). scores [BH, rows, ld] float, written at columns [offset, offset + T). First the span's
// per-group terms — q·scale and the zeros one (group, channel) per thread, q·zero and q·B one warp per group — with a
// single barrier; then each thread reads its token's codes with 16-byte loads; then the corrections of the outliers
// inside the span (each channel's list entered where a uniform spread puts the span) gather in shared memory before
// the scores are written.
template <int M, int BITS>
__device__ void key_scores(const void* __restrict__ q, int qType, float qScale, int rows, const uint8_t* __restrict__ codes,
                           const __half* __restrict__ scale, const __half* __restrict__ zero,
                           const __half* __restrict__ A, const __half* __restrict__ B, const long long* __restrict__ groupBlock,
                           int r, int nblk, const __half* __restrict__ oValues, const void* __restrict__ oIndex, int indexBytes,
                           const int4* __restrict__ groupSlots, int S,
                           float* __restrict__ scores, int T, int D, int gShift, long long ld, long long offset)
{
    constexpr int PER_WORD = 32 / BITS;
    extern __shared__ float sh[];
    __shared__ int spanBlocks, blockSlot[MAX_SPAN_BLOCKS], blockSlots[MAX_SPAN_BLOCKS];
    __shared__ long long blockToken[MAX_SPAN_BLOCKS], blockLength[MAX_SPAN_BLOCKS];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5, bh = blockIdx.y;
    const int g = 1 << gShift, per = blockDim.x >> gShift, groups = T >> gShift, dShift = __ffs(D) - 1;   // D a power of two
    const int gi = tid >> gShift, g0 = blockIdx.x * per, grp = g0 + gi, ng = min(per, groups - g0);
    const long long t0 = (long long)g0 << gShift;
    const int span = (int)min((long long)per * g, T - t0);
    float* qsh = sh;                         // [M, D]      queries (times qScale; rows ≥ `rows` are zero)
    float* qs = qsh + M * D;                 // [per, M, D] q·scale / 2^(code place) of each group
    float* zq = qs + per * M * D;            // [per, M]    q·zero
    float* qb = zq + per * M;                // [per, M, r] q·B of the group's block
    float* zs = qb + per * M * r;            // [per, D]    zero points of each group (outliers only)
    float* corr = zs + per * D;              // [M, per·g]  outlier corrections of the span's scores
    const long long qh = (long long)bh * rows * D;
    for (int i = tid; i < M * D; i += blockDim.x) qsh[i] = i < rows * D ? load_q(q, qType, qh + i, qScale) : 0.f;
    if (S > 0)
        for (int i = tid; i < M * per * g; i += blockDim.x) corr[i] = 0.f;
    if (tid < 32)
    {
        // The blocks overlapping the span, from one read of the per-group table (lane l: group g0 + l): a block starts
        // at the span's first group and wherever a group's block differs from the previous group's.
        int4 info = make_int4(-1, 0, 0, 0);                              // first slot, slots, first token, length
        if (S > 0 && lane < ng) info = groupSlots[g0 + lane];
        const int previous = __shfl_up_sync(0xffffffffu, info.x, 1);
        const bool starts = S > 0 && lane < ng && (lane == 0 || info.x != previous);
        const unsigned mask = __ballot_sync(0xffffffffu, starts);
        if (starts)
        {
            const int b = __popc(mask & ((1u << lane) - 1u));
            blockSlot[b] = info.x; blockSlots[b] = info.y; blockToken[b] = info.z; blockLength[b] = info.w;
        }
        if (tid == 0) spanBlocks = __popc(mask);
    }
    // q·scale and the zero points: one (group, channel) per thread, consecutive threads on consecutive channels.
    const long long firstGroup = (long long)bh * groups + g0;
    for (int i = tid; i < ng * D; i += blockDim.x)
    {
        const int gj = i >> dShift, d = i & (D - 1);
        const float s = __half2float(scale[firstGroup * D + i]) * code_unscale<BITS>(d % PER_WORD);
        zs[i] = __half2float(zero[firstGroup * D + i]);
#pragma unroll
        for (int m = 0; m < M; m++) qs[(gj * M + m) * D + d] = m < rows ? load_q(q, qType, qh + m * D + d, qScale) * s : 0.f;
    }
    // q·zero of each group, one warp per group (lanes over channels, then a warp sum).
    for (int gj = warp; gj < ng; gj += warps)
    {
        const __half* ze = zero + (firstGroup + gj) * D;
        float zp[M];
#pragma unroll
        for (int m = 0; m < M; m++) zp[m] = 0.f;
        for (int d = lane; d < D; d += 32)
        {
            const float z = __half2float(ze[d]);
#pragma unroll
            for (int m = 0; m < M; m++)
                if (m < rows) zp[m] += load_q(q, qType, qh + m * D + d, qScale) * z;
        }
#pragma unroll
        for (int m = 0; m < M; m++)
        {
            const float sum = m < rows ? warp_sum(zp[m]) : 0.f;
            if (lane == 0) zq[gj * M + m] = sum;
        }
    }
    // q·B of each low-rank block the span meets, one warp per group that starts one (from the last warp down: the first
    // warps sum q·zero); every group reads it from the group that starts its block (a prompt's one block: the first).
    __shared__ int lead[MAX_SPAN_BLOCKS];
    if (r > 0 && tid < ng)
    {
        int first = tid;
        while (first > 0 && groupBlock[g0 + first] == groupBlock[g0 + first - 1]) first--;
        lead[tid] = first;
    }
    if (r > 0)
        for (int gj = warps - 1 - warp; gj < ng; gj += warps)
        {
            if (gj > 0 && groupBlock[g0 + gj] == groupBlock[g0 + gj - 1]) continue;
            const __half* Bb = B + ((long long)bh * nblk + groupBlock[g0 + gj]) * D * r;
            float bp[M][MAX_RANK];
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int rho = 0; rho < MAX_RANK; rho++) bp[m][rho] = 0.f;
            for (int d = lane; d < D; d += 32)
            {
                float bd[MAX_RANK];
#pragma unroll
                for (int rho = 0; rho < MAX_RANK; rho++) bd[rho] = rho < r ? __half2float(Bb[d * r + rho]) : 0.f;
#pragma unroll
                for (int m = 0; m < M; m++)
                {
                    if (m >= rows) break;
                    const float x = load_q(q, qType, qh + m * D + d, qScale);
#pragma unroll
                    for (int rho = 0; rho < MAX_RANK; rho++) bp[m][rho] += x * bd[rho];
                }
            }
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int rho = 0; rho < MAX_RANK; rho++)
                {
                    if (rho >= r) break;
                    const float sum = m < rows ? warp_sum(bp[m][rho]) : 0.f;
                    if (lane == 0) qb[(gj * M + m) * r + rho] = sum;
                }
        }
    __syncthreads();
    const int rowBytes = D / 8 * BITS;
    const long long t = t0 + tid;
    const uint8_t* row = codes + ((long long)bh * T + t) * rowBytes;
    const float* qg = qs + gi * M * D;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0.f;
    if (grp >= groups) {}
    else if ((rowBytes & 15) == 0)
    {
        // 16-byte loads: 4 words of 32/BITS consecutive channels each.
        const uint4* vec = (const uint4*)row;
        const int vectors = rowBytes >> 4;
        const unsigned magic = magic_2p23();
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
                    for (int u = 0; u < 4; u++) c[u] = scaled_code<BITS>(words[w], i + u, magic);
#pragma unroll
                    for (int m = 0; m < M; m++)
                    {
                        const float4 s4 = *(const float4*)&qg[m * D + d0 + i];
                        acc[m] = fmaf(s4.w, c[3], fmaf(s4.z, c[2], fmaf(s4.y, c[1], fmaf(s4.x, c[0], acc[m]))));
                    }
                }
            }
        }
    }
    else
        for (int d = 0; d < D; d++)
        {
            const float c = (float)code_at(row, d, BITS) / code_unscale<BITS>(d % PER_WORD);
#pragma unroll
            for (int m = 0; m < M; m++) acc[m] += qg[m * D + d] * c;
        }
    const float* qbg = r > 0 && grp < groups ? qb + lead[gi] * M * r : qb;
    if (r == 4 && grp < groups)
    {
        // The prompt's default rank: the token's row of A in one 8-byte load.
        const uint2 raw = *(const uint2*)(A + ((long long)bh * T + t) * 4);
        const float2 a01 = __half22float2(*(const __half2*)&raw.x), a23 = __half22float2(*(const __half2*)&raw.y);
#pragma unroll
        for (int m = 0; m < M; m++)
            acc[m] += a01.x * qbg[m * 4] + a01.y * qbg[m * 4 + 1] + a23.x * qbg[m * 4 + 2] + a23.y * qbg[m * 4 + 3];
    }
    else
        for (int rho = 0; rho < r && grp < groups; rho++)
        {
            const float a = __half2float(A[((long long)bh * T + t) * r + rho]);
#pragma unroll
            for (int m = 0; m < M; m++) acc[m] += a * qbg[m * r + rho];
        }
    // Outliers. A block with few slots per channel (up to 16: blocks up to ~800 tokens at 2%): every (channel, slot)
    // is a task of its own, with no dependent loads before it.
    for (int b = 0; b < spanBlocks; b++)
    {
        const int count = blockSlots[b];
        if (count > 16) continue;
        // The block's entries from one base (32-bit offsets inside it): slot k of channel c at c·S + k, token tt's
        // codes at tt·rowBytes, its place in the span at tt − shift.
        const long long first = (long long)bh * D * S + blockSlot[b];
        const uint8_t* blockCodes = codes + ((long long)bh * T + blockToken[b]) * rowBytes;
        const int shift = (int)(t0 - blockToken[b]);
        for (int task = tid; task < D * count; task += blockDim.x)
        {
            // Channel-minor (D is a power of two): a shift and a mask where task / count and task % count were divisions.
            const int c = task & (D - 1), e = c * S + (task >> dShift);
            const int tt = (int)index_at(oIndex, indexBytes, first + e), at = tt - shift;
            if (at < 0 || at >= span) continue;
            const int gj = at >> gShift;
            const float code = code_at(blockCodes + tt * rowBytes, c, BITS) * code_rescale<BITS>(c);
            const float v = __half2float(oValues[first + e]) - zs[gj * D + c];
#pragma unroll
            for (int m = 0; m < M; m++)
                if (m < rows) atomicAdd(&corr[m * per * g + at], qsh[m * D + c] * v - qs[(gj * M + m) * D + c] * code);
        }
    }
    // Longer lists: one (block, channel) list per thread, from the first index inside the span on.
    for (int task = tid; task < spanBlocks * D; task += blockDim.x)
    {
        const int b = task >> dShift, c = task & (D - 1), count = blockSlots[b];
        if (count <= 16) continue;
        const long long bs = blockToken[b], base = ((long long)bh * D + c) * S + blockSlot[b];
        const long long lo = t0 - bs, hi = t0 + span - bs;
        // First slot with index >= lo: start where a uniform spread would put it, then step to it (a few slots for
        // outliers spread over the block; any spread stays correct).
        int k = (int)min((long long)count - 1, max(0LL, lo * count / blockLength[b]));
        while (k > 0 && index_at(oIndex, indexBytes, base + k - 1) >= lo) k--;
        while (k < count && index_at(oIndex, indexBytes, base + k) < lo) k++;
        for (; k < count; k++)
        {
            const long long tt = index_at(oIndex, indexBytes, base + k);
            if (tt >= hi) break;
            // q·(value − x̂) with x̂ = code·scale + zero: q·scale and the zero are the group's, already in shared memory,
            // and the code's row was just read by its token's thread (an L1 hit).
            const int at = (int)(bs + tt - t0), gj = at >> gShift;
            const float code = code_at(codes + ((long long)bh * T + bs + tt) * rowBytes, c, BITS) * code_rescale<BITS>(c);
            const float v = __half2float(oValues[base + k]) - zs[gj * D + c];
#pragma unroll
            for (int m = 0; m < M; m++)
                if (m < rows) atomicAdd(&corr[m * per * g + at], qsh[m * D + c] * v - qs[(gj * M + m) * D + c] * code);
        }
    }
    __syncthreads();
    if (grp >= groups) return;
#pragma unroll
    for (int m = 0; m < M; m++)
        if (m < rows) scores[((long long)bh * rows + m) * ld + offset + t] = acc[m] + zq[gi * M + m] + (S > 0 ? corr[m * per * g + tid] : 0.f);
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

// One round of value_pieces' loads for one lane: its piece of a token's codes, the token's scale and zero (raw half),
// probabilities, and the first two outliers of its group (uint8 channels packed in `index`, half values).
template <int M, int WORDS>
struct ValueRound
{
    unsigned w[WORDS];
    __half s, z;
    float pm[M];
    unsigned index;
    __half2 values;
};

template <int M, int PIECE>
__device__ __forceinline__ void load_round(ValueRound<M, (PIECE + 3) / 4>& x, long long t, int bh, int T, int G, int grp, int piece,
                                           int rowBytes, const uint8_t* __restrict__ codes, const __half* __restrict__ scale,
                                           const __half* __restrict__ zero, const float* __restrict__ ph, long long ld, int rows,
                                           const uint8_t* __restrict__ index, const __half* __restrict__ values, int S)
{
    const long long sz = ((long long)bh * T + t) * G + grp;
    load_piece<PIECE>(codes + ((long long)bh * T + t) * rowBytes + piece * PIECE, x.w);
    x.s = scale[sz];
    x.z = zero[sz];
#pragma unroll
    for (int m = 0; m < M; m++) x.pm[m] = m < rows ? ph[m * ld + t] : 0.f;
    if (S <= 0) return;
    if ((S & 1) == 0)
    {
        // S even (an outlier count per side, two sides): the pair is 2- and 4-byte aligned.
        x.index = *(const unsigned short*)(index + sz * S);
        x.values = *(const __half2*)(values + sz * S);
    }
    else
    {
        x.index = index[sz * S] | (S > 1 ? (unsigned)index[sz * S + 1] << 8 : 0u);
        x.values = __halves2half2(values[sz * S], S > 1 ? values[sz * S + 1] : __float2half(0.f));
    }
}

// p·V̂ over spans of value chunks (gv tokens each): grid (spans, BH), block of warps; warp w of span s takes chunks
// [(s·warps + w)·chunksPerWarp, +chunksPerWarp). A lane owns CPT consecutive channels (one piece of CPT·BITS/8 bytes,
// inside one value group) of every (32·CPT/D)-th token: it loads the piece, the token's probability and its group's
// scale and zero, and accumulates CPT sums in registers (no shared memory, no barrier in the loop); at the end the
// lanes of each piece are summed with shuffles. The low-rank term and the outliers are added to the same slots
// by gear_finish (in this loop its loads stalled the code stream). Outliers (a few per group, values
// and index [BH, T, G, S], half and uint8 channel within the group; S = 0: none) are corrected from the piece already
// in registers into lane-private shared slots fix [warps, M, CPT, 32] (bank = lane: no conflicts and no atomics), added
// to the sums at the end. p [BH, rows, ld] float read at columns [offset, offset + T); codes [BH, T, rowBytes]; scale,
// zero [BH, T, G] half (G = D/gv); partial [BH, slots, rows, D] float: this store's spans at slots [slotBase, +spans).
template <int M, int BITS, int CPT>
__device__ void value_pieces(const float* __restrict__ p, int rows, const uint8_t* __restrict__ codes,
                             const __half* __restrict__ scale, const __half* __restrict__ zero,
                             const __half* __restrict__ values, const uint8_t* __restrict__ index, int S,
                             float* __restrict__ partial, int slots, int slotBase,
                             int T, int D, int gv, int chunksPerWarp, long long ld, long long offset)
{
    constexpr int PIECE = CPT * BITS / 8, WORD_CODES = 32 / BITS;
    extern __shared__ float out[];                                   // [M, D] this block's sums, then fix (outliers)
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5, bh = blockIdx.y;
    const int tpt = D / CPT, tpw = 32 / tpt, piece = lane % tpt, sub = lane / tpt, c0 = piece * CPT;
    const int G = D / gv, grp = c0 / gv, rowBytes = D / 8 * BITS, chunks = T / gv;
    float* fix = out + M * D + warp * M * CPT * 32 + lane;           // this lane's slot (m, j) at fix[(m·CPT + j)·32]
    for (int i = tid; i < M * D; i += blockDim.x) out[i] = 0.f;
    if (S > 0)
#pragma unroll
        for (int i = 0; i < M * CPT; i++) fix[i * 32] = 0.f;
    __syncthreads();
    const float* ph = p + (long long)bh * rows * ld + offset;
    float acc[M][CPT], zacc[M];
#pragma unroll
    for (int m = 0; m < M; m++)
    {
        zacc[m] = 0.f;
#pragma unroll
        for (int j = 0; j < CPT; j++) acc[m][j] = 0.f;
    }
    const int first = (blockIdx.x * warps + warp) * chunksPerWarp, last = min(first + chunksPerWarp, chunks);
    const unsigned magic = magic_2p23();
    // The warp's chunks are consecutive: one run of tokens, tpw of them per round. Each round's loads (codes, scale,
    // zero, probabilities, the first two outliers) are issued a round ahead: at the occupancy this loop's registers
    // allow, waiting on them was most of its time.
    const long long end = (long long)last * gv;
    long long t = (long long)first * gv + sub;
    ValueRound<M, (PIECE + 3) / 4> cur, next;
    if (t < end) load_round<M, PIECE>(cur, t, bh, T, G, grp, piece, rowBytes, codes, scale, zero, ph, ld, rows, index, values, S);
    for (; t < end; t += tpw)
    {
        if (t + tpw < end)
            load_round<M, PIECE>(next, t + tpw, bh, T, G, grp, piece, rowBytes, codes, scale, zero, ph, ld, rows, index, values, S);
        const float s = __half2float(cur.s), z = __half2float(cur.z);
        float ps[M];
#pragma unroll
        for (int m = 0; m < M; m++)
        {
            zacc[m] += cur.pm[m] * z;
            ps[m] = cur.pm[m] * s;
        }
#pragma unroll
        for (int j = 0; j < CPT; j++)
        {
            const float c = scaled_code<BITS>(cur.w[j / WORD_CODES], j % WORD_CODES, magic);
#pragma unroll
            for (int m = 0; m < M; m++) acc[m][j] += ps[m] * c;
        }
        if (S > 0)
        {
            // Outliers of the token's group (S = 2 at the default 2% of 64 features): the first two came with the round.
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                const int k = e < S ? grp * gv + (int)((cur.index >> (8 * e)) & 0xFFu) - c0 : -1;     // channel within the piece
                if (k < 0 || k >= CPT) continue;
                // The outlier's code from the piece already in registers.
                const unsigned word = pick_word<(PIECE + 3) / 4>(cur.w, k / WORD_CODES);
                const float code = (float)((word >> (BITS * (k % WORD_CODES))) & ((1u << BITS) - 1u));
                const float delta = (e == 0 ? __low2float(cur.values) : __high2float(cur.values)) - (code * s + z);
#pragma unroll
                for (int m = 0; m < M; m++) fix[(m * CPT + k) * 32] += cur.pm[m] * delta;
            }
            const long long sz = ((long long)bh * T + t) * G + grp;
            for (int e = 2; e < S; e++)
            {
                const int k = grp * gv + index[sz * S + e] - c0;
                if (k < 0 || k >= CPT) continue;
                const uint8_t* row = codes + ((long long)bh * T + t) * rowBytes;
                const float delta = __half2float(values[sz * S + e]) - (code_at(row, c0 + k, BITS) * s + z);
#pragma unroll
                for (int m = 0; m < M; m++) fix[(m * CPT + k) * 32] += cur.pm[m] * delta;
            }
        }
        cur = next;
    }
    // The lanes of one piece summed different tokens: add them up across the token bits of the lane index by
    // recursive halving (each round a lane keeps half its channels and sends the other half to its partner), so a
    // 64-channel piece over 16 lanes takes 32 + 16 + 8 + 4 shuffles and ends with 4 channels in every lane.
#pragma unroll
    for (int m = 0; m < M; m++)
    {
#pragma unroll
        for (int j = 0; j < CPT; j++) acc[m][j] = acc[m][j] * code_unscale<BITS>(j % WORD_CODES) + (S > 0 ? fix[(m * CPT + j) * 32] : 0.f);
        for (int o = tpt; o < 32; o <<= 1) zacc[m] += __shfl_xor_sync(0xffffffffu, zacc[m], o);
    }
    int o = tpt, held = CPT, at = c0;                   // acc[m][0, held) are channels at + [0, held)
    halve<M, CPT, CPT / 2>(acc, lane, o, at, held);
    int copies = 0;                                      // lane bits whose partners now hold the same single sum
    for (; o < 32; o <<= 1)
    {
#pragma unroll
        for (int m = 0; m < M; m++) acc[m][0] += __shfl_xor_sync(0xffffffffu, acc[m][0], o);
        copies |= o;
    }
    if ((lane & copies) == 0)
#pragma unroll
        for (int m = 0; m < M; m++)
            if (m < rows)
#pragma unroll
                for (int j = 0; j < CPT; j++)
                    if (j < held) atomicAdd(&out[m * D + at + j], acc[m][j] + zacc[m]);
    __syncthreads();
    float* dst = partial + ((long long)bh * slots + slotBase + blockIdx.x) * rows * D;
    for (int i = tid; i < rows * D && i < M * D; i += blockDim.x) dst[i] = out[i];
}


#define GEAR_KEYS(M, BITS)                                                                                                     \
    extern "C" __global__ void gear_key_scores_m##M##_b##BITS(const void* q, int qType, float qScale, int rows,               \
        const uint8_t* codes, const __half* scale, const __half* zero, const __half* A, const __half* B,                      \
        const long long* groupBlock, int r, int nblk, const __half* oValues, const void* oIndex, int indexBytes,               \
        const int4* groupSlots, int S, float* scores, int T, int D, int gShift, long long ld, long long offset)                 \
    {                                                                                                                          \
        key_scores<M, BITS>(q, qType, qScale, rows, codes, scale, zero, A, B, groupBlock, r, nblk, oValues, oIndex,            \
                            indexBytes, groupSlots, S, scores, T, D, gShift, ld, offset);                                           \
    }

#define GEAR_VALUES(M, BITS, CPT)                                                                                              \
    extern "C" __global__ void __launch_bounds__(256, 2) gear_values_m##M##_b##BITS##_c##CPT(const float* p, int rows,         \
        const uint8_t* codes,                                                                                                  \
        const __half* scale, const __half* zero, const __half* values, const uint8_t* index, int S, float* partial, int slots,  \
        int slotBase, int T, int D, int gv, int chunksPerWarp, long long ld, long long offset)                                 \
    {                                                                                                                          \
        value_pieces<M, BITS, CPT>(p, rows, codes, scale, zero, values, index, S, partial, slots, slotBase, T, D, gv,          \
                                   chunksPerWarp, ld, offset);                                                                 \
    }

#define GEAR_KEYS_ROWS(M) GEAR_KEYS(M, 1) GEAR_KEYS(M, 2) GEAR_KEYS(M, 4) GEAR_KEYS(M, 8)
GEAR_KEYS_ROWS(1)
GEAR_KEYS_ROWS(2)
GEAR_KEYS_ROWS(4)
GEAR_KEYS_ROWS(8)


// Value kernels for every (rows M, code width BITS, channels per lane CPT) with M·CPT ≤ 64 (registers) and
// CPT·BITS ≤ 128 (a 16-byte load at most); CudaKernels.PieceWidth picks the widest that fits the shape.
GEAR_VALUES(1, 1, 8) GEAR_VALUES(1, 1, 16) GEAR_VALUES(1, 1, 32) GEAR_VALUES(1, 1, 64)
GEAR_VALUES(1, 2, 8) GEAR_VALUES(1, 2, 16) GEAR_VALUES(1, 2, 32) GEAR_VALUES(1, 2, 64)
GEAR_VALUES(1, 4, 8) GEAR_VALUES(1, 4, 16) GEAR_VALUES(1, 4, 32)
GEAR_VALUES(1, 8, 8) GEAR_VALUES(1, 8, 16)
GEAR_VALUES(2, 1, 8) GEAR_VALUES(2, 1, 16) GEAR_VALUES(2, 1, 32)
GEAR_VALUES(2, 2, 8) GEAR_VALUES(2, 2, 16) GEAR_VALUES(2, 2, 32)
GEAR_VALUES(2, 4, 8) GEAR_VALUES(2, 4, 16) GEAR_VALUES(2, 4, 32)
GEAR_VALUES(2, 8, 8) GEAR_VALUES(2, 8, 16)
GEAR_VALUES(4, 1, 8) GEAR_VALUES(4, 1, 16)
GEAR_VALUES(4, 2, 8) GEAR_VALUES(4, 2, 16)
GEAR_VALUES(4, 4, 8) GEAR_VALUES(4, 4, 16)
GEAR_VALUES(4, 8, 8) GEAR_VALUES(4, 8, 16)
GEAR_VALUES(8, 1, 8) GEAR_VALUES(8, 2, 8) GEAR_VALUES(8, 4, 8) GEAR_VALUES(8, 8, 8)

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

// Softmax of every row of x [rows, n] (float32) in place: grid (rows), block a multiple of 32 threads (at most 1,024).
// Entries of -inf (masked) become 0; every row has at least one finite entry (a query sees itself).
// Rows of up to SOFTMAX_HELD · blockDim entries stay in registers between the passes: one read and one write of memory
// (the three-pass loop below reads a row three times and writes it twice).
#define SOFTMAX_HELD 32
extern "C" __global__ void __launch_bounds__(1024) gear_softmax_rows(float* __restrict__ x, long long n)
{
    __shared__ float scratch[32];
    float* row = x + (long long)blockIdx.x * n;
    if (n <= (long long)SOFTMAX_HELD * blockDim.x)
    {
        float* mine = row + threadIdx.x;
        const int stride = blockDim.x, left = (int)n - threadIdx.x;      // entries k·stride < left are this thread's
        float v[SOFTMAX_HELD], top = -INFINITY;
#pragma unroll
        for (int k = 0; k < SOFTMAX_HELD; k++)
        {
            v[k] = k * stride < left ? mine[k * stride] : -INFINITY;
            top = fmaxf(top, v[k]);
        }
        top = block_max(top, scratch);
        float total = 0.f;
#pragma unroll
        for (int k = 0; k < SOFTMAX_HELD; k++)
        {
            v[k] = expf(v[k] - top);
            total += v[k];
        }
        const float scale = 1.f / block_sum(total, scratch);
#pragma unroll
        for (int k = 0; k < SOFTMAX_HELD; k++)
            if (k * stride < left) mine[k * stride] = v[k] * scale;
        return;
    }
    float best = -INFINITY;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) best = fmaxf(best, row[i]);
    best = block_max(best, scratch);
    float sum = 0.f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x)
    {
        const float e = expf(row[i] - best);
        row[i] = e;
        sum += e;
    }
    const float inv = 1.f / block_sum(sum, scratch);
    for (long long i = threadIdx.x; i < n; i += blockDim.x) row[i] *= inv;
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

// The float16 buffer's scores (its values are summed by gear_finish): grid (ceil(n / 64), BH), block 256 threads, 64
// tokens a block. A token's row is read by P lanes (D/8 rounded up to a power of two), 8 channels (16 bytes) each, so a
// warp reads 32/P tokens a load and a token's sum is log2 P shuffles (a warp a token, with 2-byte loads and a 5-round sum
// per token, issued ~4x the instructions for the same bytes). The queries (times qScale) sit in shared memory chunk-major
// (channel 8c + j of row m at m·8C + j·C + c, C = ceil(D/8) chunks), so the lanes of one j read consecutive words.
// D ≤ 256, rows M ≤ 8. q [BH, M, D] (qType), keys [BH, capacity, D] half; query row m is token m % tq of the tq newest,
// so it sees buffered tokens t <= n - tq + m % tq (causal).
extern "C" __global__ void gear_dense_scores(const void* __restrict__ q, int qType, float qScale, const __half* __restrict__ keys,
    long long capacity, int n, int M, int D, int tq, float* __restrict__ scores, long long ld, long long offset)
{
    __shared__ float qsh[8 * 256];
    const int bh = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int C = (D + 7) / 8, P = C <= 1 ? 1 : C <= 2 ? 2 : C <= 4 ? 4 : C <= 8 ? 8 : C <= 16 ? 16 : 32;
    const int sub = lane & (P - 1), perLoad = 32 / P;
    const int first = blockIdx.x * 64, last = min(first + 64, n);
    for (int i = threadIdx.x; i < M * 8 * C; i += blockDim.x)
    {
        const int m = i / (8 * C), c = i - m * 8 * C;                             // channel c of row m (0 past D)
        qsh[m * 8 * C + (c & 7) * C + (c >> 3)] = c < D ? load_q(q, qType, (long long)(bh * M + m) * D + c, qScale) : 0.f;
    }
    __syncthreads();
#pragma unroll 2
    for (int t0 = first + warp * perLoad; t0 < last; t0 += warps * perLoad)
    {
        const int t = t0 + lane / P;
        const bool active = t < last && sub < C;
        float kv[8];
        const __half* k = keys + ((long long)bh * capacity + t) * D + sub * 8;
        if (active && D % 8 == 0)
        {
            const uint4 raw = *reinterpret_cast<const uint4*>(k);
            const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
            for (int j = 0; j < 4; j++)
            {
                const float2 f = __half22float2(h[j]);
                kv[2 * j] = f.x;
                kv[2 * j + 1] = f.y;
            }
        }
        else
#pragma unroll
            for (int j = 0; j < 8; j++) kv[j] = active && sub * 8 + j < D ? __half2float(k[j]) : 0.f;
        for (int m = 0; m < M; m++)
        {
            float s = 0.f;
#pragma unroll
            for (int j = 0; j < 8; j++) s += qsh[m * 8 * C + j * C + (sub < C ? sub : 0)] * kv[j];
            for (int o = P / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (active && sub == 0)
                scores[((long long)bh * M + m) * ld + offset + t] = t <= n - tq + m % tq ? s : -INFINITY;
        }
    }
}

// Element `at` of an output in the queries' dtype (0 float32, 1 float16, 2 bfloat16, round to nearest even).
__device__ __forceinline__ void store_out(void* out, int outType, long long at, float o)
{
    if (outType == 0) ((float*)out)[at] = o;
    else if (outType == 1) ((__half*)out)[at] = __float2half_rn(o);
    else ((unsigned short*)out)[at] = bfloat16_bits(o);
}

// The low-rank factors of one store for gear_finish: A [BH, T, r], B [BH, nblk, D, r] half, groupBlock [T/gv] int64,
// the store's tokens at columns [offset, offset + T) of the probabilities. Mirrored by CudaKernels.LowRankStore.
struct LowRankStore
{
    const __half* A;
    const __half* B;
    const long long* groupBlock;
    int r, nblk, T, gv;
    long long offset;
};

// Adds the low-rank part of p·V of one store, Σ_blocks (p·A_block)·B_blockᵀ, into sums [M, D] (shared): each warp sums
// p·A over a run of chunks while they stay in one block and multiplies by that block's B. RMAX ≥ r: the sums held (and
// issued) per row.
template <int M, int RMAX>
__device__ void low_rank_runs(const LowRankStore st, const float* __restrict__ p, long long ld, int rows, int D, float* sums)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5, bh = blockIdx.x, r = st.r;
    const int chunks = st.T / st.gv, per = (chunks + warps - 1) / warps, first = warp * per, last = min(first + per, chunks);
    const float* ph = p + (long long)bh * rows * ld + st.offset;
    const __half* Ah = st.A + (long long)bh * st.T * r;
    float pa[M][RMAX];
    long long current = -1;
    auto flush = [&]()
    {
        const __half* Bb = st.B + ((long long)bh * st.nblk + current) * D * r;
#pragma unroll
        for (int m = 0; m < M; m++)
        {
#pragma unroll
            for (int rho = 0; rho < RMAX; rho++)
                if (rho < r) pa[m][rho] = warp_sum(pa[m][rho]);
            if (m < rows)
                for (int c = lane; c < D; c += 32)
                {
                    float o = 0.f;
#pragma unroll
                    for (int rho = 0; rho < RMAX; rho++)
                        if (rho < r) o += pa[m][rho] * __half2float(Bb[c * r + rho]);
                    atomicAdd(&sums[m * D + c], o);
                }
        }
    };
    // Runs of chunks in one block: the run's end found 32 chunks at a time (a ballot over the lanes), then its tokens
    // one per lane, unrolled so several loads are in flight (this loop waits on memory, not arithmetic).
    for (int ch = first; ch < last;)
    {
        const long long block = st.groupBlock[ch];
        int end = ch + 1;
        for (;;)
        {
            const int c = end + lane;
            const unsigned differs = __ballot_sync(0xffffffffu, c < last && st.groupBlock[c] != block);
            if (differs != 0) { end += __ffs(differs) - 1; break; }
            end += 32;
            if (end >= last) { end = last; break; }
        }
        current = block;
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int rho = 0; rho < RMAX; rho++) pa[m][rho] = 0.f;
        const long long stop = (long long)end * st.gv;
#pragma unroll 4
        for (long long t = (long long)ch * st.gv + lane; t < stop; t += 32)
        {
            float a[RMAX < 2 ? 2 : RMAX];
            if (RMAX >= 2 && (r & 1) == 0)
#pragma unroll
                for (int rho = 0; rho < RMAX; rho += 2)
                {
                    const float2 two = rho < r ? __half22float2(*(const __half2*)(Ah + t * r + rho)) : make_float2(0.f, 0.f);
                    a[rho] = two.x; a[rho + 1] = two.y;                      // pairs: one 4-byte load (r even)
                }
            else
#pragma unroll
                for (int rho = 0; rho < RMAX; rho++) a[rho] = rho < r ? __half2float(Ah[t * r + rho]) : 0.f;
#pragma unroll
            for (int m = 0; m < M; m++)
            {
                const float pt = m < rows ? ph[m * ld + t] : 0.f;
#pragma unroll
                for (int rho = 0; rho < RMAX; rho++) pa[m][rho] += pt * a[rho];
            }
        }
        flush();
        ch = end;
    }
}

// The end of a layer's decode attention: grid (BH), block of warps. The low-rank part of p·V of up to two stores
// (low_rank_runs), the sum over slots of the partial sums [BH, slots, rows, D] and p·V of the float16 buffer's first n
// tokens (values [BH, capacity, D] half, at columns [bufferOffset, bufferOffset + n) of p), written as the output
// [BH, rows, D] in the queries' dtype (outType as qType). p [BH, rows, ld] float. Instantiated for rank bounds RMAX of
// 2, 4 and 8 (the larger of the two stores' ranks): the low-rank sums are held for RMAX ranks, and a bound of 8
// for ranks 4 and 2 held and issued twice to four times what they use.
template <int M, int RMAX>
__device__ void finish(const float* __restrict__ partial, int slots, int rows, int D, void* __restrict__ out, int outType,
                       const float* __restrict__ p, long long ld, const LowRankStore s0, const LowRankStore s1, int storeCount,
                       const __half* __restrict__ bufferValues, long long capacity, int n, long long bufferOffset)
{
    extern __shared__ float sums[];                                  // [M, D] low-rank and buffer sums
    const int tid = threadIdx.x, bh = blockIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    for (int i = tid; i < M * D; i += blockDim.x) sums[i] = 0.f;
    __syncthreads();
    if (storeCount > 0) low_rank_runs<M, RMAX>(s0, p, ld, rows, D, sums);
    if (storeCount > 1) low_rank_runs<M, RMAX>(s1, p, ld, rows, D, sums);
    // The buffer's p·V: each warp every warps-th token, lanes over the channels (D ≤ 256), summed in registers and
    // added to the sums once (one thread per output walking all n tokens had n dependent rounds of loads).
    if (warp < n)
    {
        float acc[M][8];
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int j = 0; j < 8; j++) acc[m][j] = 0.f;
        const float* pb = p + (long long)bh * rows * ld + bufferOffset;
#pragma unroll 2
        for (int t = warp; t < n; t += warps)
        {
            const __half* v = bufferValues + ((long long)bh * capacity + t) * D;
            float vt[8];
#pragma unroll
            for (int j = 0; j < 8; j++) vt[j] = lane + 32 * j < D ? __half2float(v[lane + 32 * j]) : 0.f;
#pragma unroll
            for (int m = 0; m < M; m++)
            {
                const float pt = m < rows ? pb[m * ld + t] : 0.f;
#pragma unroll
                for (int j = 0; j < 8; j++) acc[m][j] += pt * vt[j];
            }
        }
#pragma unroll
        for (int m = 0; m < M; m++)
            if (m < rows)
#pragma unroll
                for (int j = 0; j < 8; j++)
                    if (lane + 32 * j < D) atomicAdd(&sums[m * D + lane + 32 * j], acc[m][j]);
    }
    __syncthreads();
    for (int i = tid; i < rows * D && i < M * D; i += blockDim.x)
    {
        const float* src = partial + (long long)bh * slots * rows * D + i;
        float o = sums[i];
        for (int s = 0; s < slots; s++) o += src[(long long)s * rows * D];
        store_out(out, outType, (long long)bh * rows * D + i, o);
    }
}

#define GEAR_FINISH(M, R)                                                                                                      \
    extern "C" __global__ void __launch_bounds__(M <= 2 ? 1024 : 256) gear_finish_m##M##_r##R(const float* partial, int slots,\
        int rows, int D, void* out, int outType,                                                                               \
        const float* p, long long ld, LowRankStore s0, LowRankStore s1, int storeCount, const __half* bufferValues,            \
        long long capacity, int n, long long bufferOffset)                                                                     \
    {                                                                                                                          \
        finish<M, R>(partial, slots, rows, D, out, outType, p, ld, s0, s1, storeCount, bufferValues, capacity, n, bufferOffset);\
    }
#define GEAR_FINISH_ROWS(M) GEAR_FINISH(M, 2) GEAR_FINISH(M, 4) GEAR_FINISH(M, 8)
GEAR_FINISH_ROWS(1) GEAR_FINISH_ROWS(2) GEAR_FINISH_ROWS(4) GEAR_FINISH_ROWS(8)

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
