// Paged decode attention: the CUDA back-end of PagePool (CudaPagedAttention), included by gear_decode.cu.
//
// Storage of one layer of one arena (the host offsets each base to the layer), per part [capacity, Hkv, ...] as PageFormat
// lays it out: key codes [n_b, rowBytes], key scale and zero [n_b/g, D] half, key outliers [n_b/g, D, S] (half value,
// uint8 token within its group), key A [n_b, r] half; value codes [n_b, rowBytes], value scale and zero [n_b, G] half,
// value outliers [n_b, G, S'] (uint8 channel within the group), value A [n_b, r]; B of a block [blocks, Hkv, D, r] half;
// dense pages (the FP16 cache, and every sequence's buffer page) [n_b, D] of the dense dtype.
// A step's batch: per sequence a SeqInfo (its pages, its buffer page's slot and tokens, its first block-table entry) and
// its block table (page id = arena << 27 | slot, and the page's block). Query rows [S·Hkv, M, D]: M = G·tq rows per key/value
// head, row i the query head i / tq of the group at new token i % tq. Scores, then probabilities, [S·Hkv, M, ld]: token t
// of a sequence (its pages first, then its buffer) at column t. Partial sums of p·V [S·Hkv, slots, M, D].

#define MAX_ARENAS 4
#define PAGE_SLOT_BITS 27
#define PAGE_SLOT_MASK ((1 << PAGE_SLOT_BITS) - 1)
#define MAX_SPAN_PAGES 8

struct SeqInfo
{
    int pages, bufferSlot, recent, first;
};

struct PageEntry
{
    int page, block;
};

// One arena's parts for one layer (null where the format has none). Mirrored by CudaPagedAttention.Arena.
struct PagedArena
{
    const uint8_t* keyCodes;
    const __half* keyScale;
    const __half* keyZero;
    const __half* keyOutValues;
    const uint8_t* keyOutIndex;
    const __half* keyA;
    const __half* keyB;
    const uint8_t* valueCodes;
    const __half* valueScale;
    const __half* valueZero;
    const __half* valueOutValues;
    const uint8_t* valueOutIndex;
    const __half* valueA;
    const __half* valueB;
    const void* denseKeys;
    const void* denseValues;
    int rank, dense;
};

// Everything a launch reads of a step, by value. Mirrored by CudaPagedAttention.Batch.
struct PagedBatch
{
    PagedArena arenas[MAX_ARENAS];
    const SeqInfo* seqs;
    const PageEntry* entries;
    const void* q;
    int qType;
    float qScale;
    int Hkv, D, nb, g, gShift, gv, bits, keySlots, valueSlots, M, tq, denseType, bufferArena;
};

__device__ __forceinline__ int page_arena(int page) { return page >> PAGE_SLOT_BITS; }
__device__ __forceinline__ int page_slot(int page) { return page & PAGE_SLOT_MASK; }

// Elements at, …, at + 7 of a dense row of dtype `type` (0 float32, 1 float16, 2 bfloat16) as floats: one 16-byte load
// (two for float32). `at` a multiple of 8.
__device__ __forceinline__ void load8_dense(const void* base, int type, long long at, float (&out)[8])
{
    if (type == 0)
    {
        const float4 a = *(const float4*)((const float*)base + at), b = *(const float4*)((const float*)base + at + 4);
        out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w; out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
        return;
    }
    const uint4 raw = *(const uint4*)((const unsigned short*)base + at);
    const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int j = 0; j < 4; j++)
    {
        if (type == 1)
        {
            const float2 f = __half22float2(*(const __half2*)&words[j]);
            out[2 * j] = f.x;
            out[2 * j + 1] = f.y;
        }
        else
        {
            out[2 * j] = __uint_as_float(words[j] << 16);
            out[2 * j + 1] = __uint_as_float(words[j] & 0xFFFF0000u);
        }
    }
}

// Scores of a span of `per` compressed pages of one (sequence, head): grid (ceil(pages / per), S·Hkv), block per·n_b threads
// (one token each). First the span's per-group terms — q·scale and the zeros one (group, channel) per thread, q·zero a warp
// per group, q·B a warp per page — with one barrier; then each thread reads its token's codes with 16-byte loads and adds
// A·(q·B); the outliers (a few per channel of each group, indices within the group) are corrections q·(value − x̂) gathered
// in shared memory before the scores are written.
template <int M, int BITS>
__device__ void paged_key_scores(const PagedBatch& b, float* __restrict__ scores, long long ld, int per)
{
    constexpr int PER_WORD = 32 / BITS;
    extern __shared__ float sh[];
    __shared__ int spanArena[MAX_SPAN_PAGES], spanSlot[MAX_SPAN_PAGES], spanBlock[MAX_SPAN_PAGES];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const int bh = blockIdx.y, s = bh / b.Hkv, h = bh - s * b.Hkv;
    const SeqInfo seq = b.seqs[s];
    const int p0 = blockIdx.x * per;
    if (p0 >= seq.pages) return;
    const int np = min(per, seq.pages - p0), nb = b.nb, D = b.D, g = b.g, kg = nb / g, ng = np * kg, S = b.keySlots, rows = b.M;
    const int dShift = __ffs(D) - 1, rowBytes = D / 8 * BITS;
    float* qsh = sh;                              // [M, D]            queries (times qScale; rows ≥ `rows` zero)
    float* qs = qsh + M * D;                      // [per·kg, M, D]    q·scale / 2^(code place) of each group
    float* zq = qs + per * kg * M * D;            // [per·kg, M]       q·zero
    float* qb = zq + per * kg * M;                // [per, M, MAX_RANK] q·B of each page's block
    float* zs = qb + per * M * MAX_RANK;          // [per·kg, D]       zero points (outliers)
    float* corr = zs + per * kg * D;              // [M, per·n_b]      outlier corrections
    const long long qh = (long long)bh * rows * D;
    for (int i = tid; i < M * D; i += blockDim.x) qsh[i] = i < rows * D ? load_q(b.q, b.qType, qh + i, b.qScale) : 0.f;
    if (S > 0)
        for (int i = tid; i < M * per * nb; i += blockDim.x) corr[i] = 0.f;
    if (tid < np)
    {
        const PageEntry e = b.entries[seq.first + p0 + tid];
        spanArena[tid] = page_arena(e.page);
        spanSlot[tid] = page_slot(e.page);
        spanBlock[tid] = e.block;
    }
    __syncthreads();
    for (int i = tid; i < ng * D; i += blockDim.x)
    {
        const int gj = i >> dShift, d = i & (D - 1), pj = gj / kg, gi = gj - pj * kg;
        const PagedArena& a = b.arenas[spanArena[pj]];
        const long long at = (((long long)spanSlot[pj] * b.Hkv + h) * kg + gi) * D + d;
        const float sc = __half2float(a.keyScale[at]) * code_unscale<BITS>(d % PER_WORD);
        zs[i] = __half2float(a.keyZero[at]);
#pragma unroll
        for (int m = 0; m < M; m++) qs[(gj * M + m) * D + d] = qsh[m * D + d] * sc;
    }
    for (int gj = warp; gj < ng; gj += warps)
    {
        const int pj = gj / kg, gi = gj - pj * kg;
        const __half* ze = b.arenas[spanArena[pj]].keyZero + (((long long)spanSlot[pj] * b.Hkv + h) * kg + gi) * D;
        float zp[M];
#pragma unroll
        for (int m = 0; m < M; m++) zp[m] = 0.f;
        for (int d = lane; d < D; d += 32)
        {
            const float z = __half2float(ze[d]);
#pragma unroll
            for (int m = 0; m < M; m++) zp[m] += qsh[m * D + d] * z;
        }
#pragma unroll
        for (int m = 0; m < M; m++)
        {
            const float sum = warp_sum(zp[m]);
            if (lane == 0) zq[gj * M + m] = sum;
        }
    }
    for (int pj = warps - 1 - warp; pj >= 0 && pj < np; pj += warps)
    {
        const PagedArena& a = b.arenas[spanArena[pj]];
        const int r = a.rank;
        if (r == 0) continue;
        const __half* Bb = a.keyB + ((long long)spanBlock[pj] * b.Hkv + h) * D * r;
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
#pragma unroll
                for (int rho = 0; rho < MAX_RANK; rho++) bp[m][rho] += qsh[m * D + d] * bd[rho];
        }
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int rho = 0; rho < MAX_RANK; rho++)
            {
                if (rho >= r) break;
                const float sum = warp_sum(bp[m][rho]);
                if (lane == 0) qb[(pj * M + m) * MAX_RANK + rho] = sum;
            }
    }
    __syncthreads();
    const int pj = tid / nb, row = tid - pj * nb;
    const bool active = pj < np;
    const int gj = active ? pj * kg + (row >> b.gShift) : 0;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0.f;
    if (active)
    {
        const PagedArena& a = b.arenas[spanArena[pj]];
        const long long head = (long long)spanSlot[pj] * b.Hkv + h;
        const uint8_t* codeRow = a.keyCodes + (head * nb + row) * rowBytes;
        const float* qg = qs + gj * M * D;
        if ((rowBytes & 15) == 0)
        {
            // 16-byte loads: 4 words of 32/BITS consecutive channels each.
            const uint4* vec = (const uint4*)codeRow;
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
                const float c = (float)code_at(codeRow, d, BITS) / code_unscale<BITS>(d % PER_WORD);
#pragma unroll
                for (int m = 0; m < M; m++) acc[m] += qg[m * D + d] * c;
            }
        const int r = a.rank;
        const float* qbp = qb + pj * M * MAX_RANK;
        for (int rho = 0; rho < r; rho++)
        {
            const float av = __half2float(a.keyA[(head * nb + row) * r + rho]);
#pragma unroll
            for (int m = 0; m < M; m++) acc[m] += av * qbp[m * MAX_RANK + rho];
        }
    }
    if (S > 0)
    {
        // One task per (group, channel, slot), channel-major so a warp reads consecutive index and value entries.
        for (int task = tid; task < ng * D * S; task += blockDim.x)
        {
            const int e = task % S, rest = task / S, d = rest & (D - 1), tg = rest >> dShift, tp = tg / kg, gi = tg - tp * kg;
            const PagedArena& a = b.arenas[spanArena[tp]];
            const long long head = (long long)spanSlot[tp] * b.Hkv + h, entry = ((head * kg + gi) * D + d) * S + e;
            const int tokenInPage = gi * g + a.keyOutIndex[entry], at = tp * nb + tokenInPage;
            const float code = code_at(a.keyCodes + (head * nb + tokenInPage) * rowBytes, d, BITS) * code_rescale<BITS>(d);
            const float v = __half2float(a.keyOutValues[entry]) - zs[tg * D + d];
#pragma unroll
            for (int m = 0; m < M; m++)
                if (m < rows) atomicAdd(&corr[m * per * nb + at], qsh[m * D + d] * v - qs[(tg * M + m) * D + d] * code);
        }
        __syncthreads();
    }
    if (!active) return;
    const long long column = (long long)p0 * nb + tid;
#pragma unroll
    for (int m = 0; m < M; m++)
        if (m < rows) scores[((long long)bh * rows + m) * ld + column] = acc[m] + zq[gj * M + m] + (S > 0 ? corr[m * per * nb + tid] : 0.f);
}

// Scores of dense pages (the FP16 cache) and of every sequence's buffer page (its first `recent` rows, causal among the
// step's tq new tokens): grid (most pages + 1, or 1 for the buffer alone, S·Hkv), block 256 threads. A token's row is read
// by P lanes (D/8, a power of two), 8 channels (16 bytes) each, so a warp reads 32/P tokens a load; the queries (times
// qScale) sit in shared memory chunk-major (channel 8c + j of row m at m·8C + j·C + c), so the lanes of one j read
// consecutive words.
extern "C" __global__ void __launch_bounds__(256) gear_paged_dense_scores(const PagedBatch b, float* __restrict__ scores, long long ld, int bufferOnly)
{
    __shared__ float qsh[8 * 256];
    const int bh = blockIdx.y, s = bh / b.Hkv, h = bh - s * b.Hkv, D = b.D, M = b.M, nb = b.nb;
    const SeqInfo seq = b.seqs[s];
    const int page = bufferOnly ? seq.pages : blockIdx.x;
    if (page > seq.pages) return;
    const bool buffer = page == seq.pages;
    const int n = buffer ? seq.recent : nb;
    if (n == 0) return;
    int arena, slot;
    if (buffer)
    {
        arena = b.bufferArena;
        slot = seq.bufferSlot;
    }
    else
    {
        const PageEntry e = b.entries[seq.first + page];
        arena = page_arena(e.page);
        slot = page_slot(e.page);
    }
    const void* keys = b.arenas[arena].denseKeys;
    const long long rowsStart = ((long long)slot * b.Hkv + h) * nb;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int C = D / 8, P = C, sub = lane & (P - 1), perLoad = 32 / P;
    for (int i = threadIdx.x; i < M * D; i += blockDim.x)
    {
        const int m = i / D, c = i - m * D;
        qsh[m * D + (c & 7) * C + (c >> 3)] = load_q(b.q, b.qType, (long long)(bh * M + m) * D + c, b.qScale);
    }
    __syncthreads();
#pragma unroll 2
    for (int t0 = warp * perLoad; t0 < n; t0 += warps * perLoad)
    {
        const int t = t0 + lane / P;
        const bool active = t < n;
        float kv[8];
        if (active)
            load8_dense(keys, b.denseType, (rowsStart + t) * D + sub * 8, kv);
        else
#pragma unroll
            for (int j = 0; j < 8; j++) kv[j] = 0.f;
        for (int m = 0; m < M; m++)
        {
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < 8; j++) sum += qsh[m * D + j * C + sub] * kv[j];
            for (int o = P / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            if (active && sub == 0)
                scores[((long long)bh * M + m) * ld + (long long)page * nb + t] = !buffer || t <= n - b.tq + m % b.tq ? sum : -INFINITY;
        }
    }
}

// Softmax of every row of the scores in place, each over its sequence's tokens (pages·n_b + buffered): grid (S·Hkv·M), block
// a multiple of 32 threads (at most 1,024). Entries of -inf (masked) become 0; every row has a finite entry (a query sees
// itself). Rows of up to SOFTMAX_HELD · blockDim entries stay in registers between the passes.
#define SOFTMAX_HELD 32
extern "C" __global__ void __launch_bounds__(1024) gear_paged_softmax(float* __restrict__ x, long long ld, const SeqInfo* __restrict__ seqs, int Hkv, int M, int nb)
{
    __shared__ float scratch[32];
    const SeqInfo seq = seqs[blockIdx.x / M / Hkv];
    const long long n = (long long)seq.pages * nb + seq.recent;
    float* row = x + (long long)blockIdx.x * ld;
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

// One round of paged_values' loads for one lane: its piece of a token's codes, the token's scale and zero (raw half),
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

// Token t of sequence `seq` (its page found in the block table): the lane's loads for one round.
template <int M, int PIECE>
__device__ __forceinline__ void load_round(ValueRound<M, (PIECE + 3) / 4>& x, const PagedBatch& b, const SeqInfo& seq, int h, long long t,
                                           int nbShift, int G, int grp, int piece, int rowBytes, const float* __restrict__ ph, long long ld, int rows)
{
    const int pi = (int)(t >> nbShift), row = (int)t - (pi << nbShift), S = b.valueSlots;
    const PageEntry e = b.entries[seq.first + pi];
    const PagedArena& a = b.arenas[page_arena(e.page)];
    const long long head = (long long)page_slot(e.page) * b.Hkv + h, token = (head << nbShift) + row, sz = token * G + grp;
    load_piece<PIECE>(a.valueCodes + token * rowBytes + piece * PIECE, x.w);
    x.s = a.valueScale[sz];
    x.z = a.valueZero[sz];
#pragma unroll
    for (int m = 0; m < M; m++) x.pm[m] = m < rows ? ph[m * ld + t] : 0.f;
    if (S <= 0) return;
    const uint8_t* index = a.valueOutIndex;
    const __half* values = a.valueOutValues;
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

// p·V̂ over spans of compressed pages: grid (spans, S·Hkv), block of warps; warp w of span s takes pages
// [(s·warps + w)·pagesPerWarp, +pagesPerWarp) of its sequence. A lane owns CPT consecutive channels (one piece of
// CPT·BITS/8 bytes, inside one value group) of every (32·CPT/D)-th token: it loads the piece, the token's probability and
// its group's scale and zero, and accumulates CPT sums in registers (no shared memory, no barrier in the loop); at the end
// the lanes of each piece are summed with shuffles. The low-rank term is added by gear_paged_finish. Outliers (a few per
// group) are corrected from the piece already in registers into lane-private shared slots fix [warps, M, CPT, 32] (bank =
// lane: no conflicts and no atomics), added to the sums at the end. Writes slot blockIdx.x of the partial sums.
template <int M, int BITS, int CPT>
__device__ void paged_values(const PagedBatch& b, const float* __restrict__ p, long long ld, float* __restrict__ partial, int slots, int pagesPerWarp)
{
    constexpr int PIECE = CPT * BITS / 8, WORD_CODES = 32 / BITS;
    extern __shared__ float out[];                                   // [M, D] this block's sums, then fix (outliers)
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const int bh = blockIdx.y, s = bh / b.Hkv, h = bh - s * b.Hkv, D = b.D, gv = b.gv, rows = b.M, S = b.valueSlots;
    const SeqInfo seq = b.seqs[s];
    if (blockIdx.x * warps * pagesPerWarp >= seq.pages) return;
    const int nbShift = __ffs(b.nb) - 1;
    const int tpt = D / CPT, tpw = 32 / tpt, piece = lane % tpt, sub = lane / tpt, c0 = piece * CPT;
    const int G = D / gv, grp = c0 / gv, rowBytes = D / 8 * BITS;
    float* fix = out + M * D + warp * M * CPT * 32 + lane;           // this lane's slot (m, j) at fix[(m·CPT + j)·32]
    for (int i = tid; i < M * D; i += blockDim.x) out[i] = 0.f;
    if (S > 0)
#pragma unroll
        for (int i = 0; i < M * CPT; i++) fix[i * 32] = 0.f;
    __syncthreads();
    const float* ph = p + (long long)bh * rows * ld;
    float acc[M][CPT], zacc[M];
#pragma unroll
    for (int m = 0; m < M; m++)
    {
        zacc[m] = 0.f;
#pragma unroll
        for (int j = 0; j < CPT; j++) acc[m][j] = 0.f;
    }
    const int first = (blockIdx.x * warps + warp) * pagesPerWarp, last = min(first + pagesPerWarp, seq.pages);
    const unsigned magic = magic_2p23();
    // The warp's pages are consecutive in its sequence: one run of tokens, tpw of them per round, each round's loads issued
    // a round ahead.
    const long long end = (long long)last << nbShift;
    long long t = ((long long)first << nbShift) + sub;
    ValueRound<M, (PIECE + 3) / 4> cur, next;
    if (t < end) load_round<M, PIECE>(cur, b, seq, h, t, nbShift, G, grp, piece, rowBytes, ph, ld, rows);
    for (; t < end; t += tpw)
    {
        if (t + tpw < end)
            load_round<M, PIECE>(next, b, seq, h, t + tpw, nbShift, G, grp, piece, rowBytes, ph, ld, rows);
        const float sc = __half2float(cur.s), z = __half2float(cur.z);
        float ps[M];
#pragma unroll
        for (int m = 0; m < M; m++)
        {
            zacc[m] += cur.pm[m] * z;
            ps[m] = cur.pm[m] * sc;
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
                const unsigned word = pick_word<(PIECE + 3) / 4>(cur.w, k / WORD_CODES);
                const float code = (float)((word >> (BITS * (k % WORD_CODES))) & ((1u << BITS) - 1u));
                const float delta = (e == 0 ? __low2float(cur.values) : __high2float(cur.values)) - (code * sc + z);
#pragma unroll
                for (int m = 0; m < M; m++) fix[(m * CPT + k) * 32] += cur.pm[m] * delta;
            }
            if (S > 2)
            {
                const int pi = (int)(t >> nbShift), row = (int)t - (pi << nbShift);
                const PageEntry pe = b.entries[seq.first + pi];
                const PagedArena& a = b.arenas[page_arena(pe.page)];
                const long long token = (((long long)page_slot(pe.page) * b.Hkv + h) << nbShift) + row, sz = token * G + grp;
                for (int e = 2; e < S; e++)
                {
                    const int k = grp * gv + a.valueOutIndex[sz * S + e] - c0;
                    if (k < 0 || k >= CPT) continue;
                    const float delta = __half2float(a.valueOutValues[sz * S + e]) - (code_at(a.valueCodes + token * rowBytes, c0 + k, BITS) * sc + z);
#pragma unroll
                    for (int m = 0; m < M; m++) fix[(m * CPT + k) * 32] += cur.pm[m] * delta;
                }
            }
        }
        cur = next;
    }
    // The lanes of one piece summed different tokens: add them up across the token bits of the lane index by recursive
    // halving (each round a lane keeps half its channels and sends the other half to its partner).
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
    float* dst = partial + ((long long)bh * slots + blockIdx.x) * rows * D;
    for (int i = tid; i < rows * D && i < M * D; i += blockDim.x) dst[i] = out[i];
}

// p·V over spans of dense pages (the FP16 cache): grid (spans, S·Hkv), block of warps; a span of `spanPages` pages writes
// slot blockIdx.x of the partial sums. A token's row is read by P = D/8 lanes, 8 channels (16 bytes) each, 32/P tokens a
// warp load; lanes holding the same channels are summed with shuffles at the end.
template <int M>
__device__ void paged_dense_values(const PagedBatch& b, const float* __restrict__ p, long long ld, float* __restrict__ partial, int slots, int spanPages)
{
    extern __shared__ float sums[];                                  // [M, D]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const int bh = blockIdx.y, s = bh / b.Hkv, h = bh - s * b.Hkv, D = b.D, nb = b.nb, rows = b.M;
    const SeqInfo seq = b.seqs[s];
    const int p0 = blockIdx.x * spanPages;
    if (p0 >= seq.pages) return;
    for (int i = tid; i < M * D; i += blockDim.x) sums[i] = 0.f;
    __syncthreads();
    const int P = D / 8, sub = lane & (P - 1), perLoad = 32 / P;
    const long long first = (long long)p0 * nb, end = (long long)min(p0 + spanPages, seq.pages) * nb;
    const float* ph = p + (long long)bh * rows * ld;
    float acc[M][8];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[m][j] = 0.f;
#pragma unroll 2
    for (long long t0 = first + warp * perLoad; t0 < end; t0 += warps * perLoad)
    {
        const long long t = t0 + lane / P;
        if (t < end)
        {
            const int pi = (int)(t / nb), row = (int)(t - (long long)pi * nb);
            const PageEntry e = b.entries[seq.first + pi];
            float v[8];
            load8_dense(b.arenas[page_arena(e.page)].denseValues, b.denseType, ((((long long)page_slot(e.page) * b.Hkv + h) * nb + row) * D) + sub * 8, v);
#pragma unroll
            for (int m = 0; m < M; m++)
            {
                const float pt = m < rows ? ph[m * ld + t] : 0.f;
#pragma unroll
                for (int j = 0; j < 8; j++) acc[m][j] += pt * v[j];
            }
        }
    }
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < 8; j++)
            for (int o = P; o < 32; o <<= 1) acc[m][j] += __shfl_xor_sync(0xffffffffu, acc[m][j], o);
    if (lane < P)
#pragma unroll
        for (int m = 0; m < M; m++)
            if (m < rows)
#pragma unroll
                for (int j = 0; j < 8; j++) atomicAdd(&sums[m * D + sub * 8 + j], acc[m][j]);
    __syncthreads();
    float* dst = partial + ((long long)bh * slots + blockIdx.x) * rows * D;
    for (int i = tid; i < rows * D && i < M * D; i += blockDim.x) dst[i] = sums[i];
}

// The end of a layer's decode attention: grid (S·Hkv), block of warps. The low-rank part of p·V of the sequence's
// compressed pages (warps split its pages; a run of pages of one block has its p·A summed a token a lane, then multiplied
// by the block's B), p·V of its buffer page, and the sum of the slots of the partial sums its pages used, written as the
// output [S·Hkv, rows, D] in the queries' dtype (outType as qType). RMAX ≥ the pages' ranks: the low-rank sums held per row.
template <int M, int RMAX>
__device__ void paged_finish(const PagedBatch& b, const float* __restrict__ partial, int slots, int spanPages, const float* __restrict__ p,
                             long long ld, void* __restrict__ out, int outType)
{
    extern __shared__ float sums[];                                  // [M, D] low-rank and buffer sums
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const int bh = blockIdx.x, s = bh / b.Hkv, h = bh - s * b.Hkv, D = b.D, nb = b.nb, rows = b.M;
    const SeqInfo seq = b.seqs[s];
    for (int i = tid; i < M * D; i += blockDim.x) sums[i] = 0.f;
    __syncthreads();
    const float* ph = p + (long long)bh * rows * ld;
    const int per = (seq.pages + warps - 1) / warps, firstPage = warp * per, lastPage = min(firstPage + per, seq.pages);
    for (int pg = firstPage; pg < lastPage;)
    {
        // A run of pages of one block (one arena): p·A over its tokens, then (p·A)·Bᵀ.
        const PageEntry e = b.entries[seq.first + pg];
        const PagedArena& a = b.arenas[page_arena(e.page)];
        const int r = a.rank;
        int endPage = pg + 1;
        while (endPage < lastPage)
        {
            const PageEntry f = b.entries[seq.first + endPage];
            if (f.block != e.block || page_arena(f.page) != page_arena(e.page)) break;
            endPage++;
        }
        if (r > 0)
        {
            float pa[M][RMAX];
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int rho = 0; rho < RMAX; rho++) pa[m][rho] = 0.f;
            for (int q = pg; q < endPage; q++)
            {
                const PageEntry qe = b.entries[seq.first + q];
                const __half* Ah = a.valueA + ((long long)page_slot(qe.page) * b.Hkv + h) * nb * r;
#pragma unroll 2
                for (int row = lane; row < nb; row += 32)
                {
                    float av[RMAX];
#pragma unroll
                    for (int rho = 0; rho < RMAX; rho++) av[rho] = rho < r ? __half2float(Ah[row * r + rho]) : 0.f;
                    const long long t = (long long)q * nb + row;
#pragma unroll
                    for (int m = 0; m < M; m++)
                    {
                        const float pt = m < rows ? ph[m * ld + t] : 0.f;
#pragma unroll
                        for (int rho = 0; rho < RMAX; rho++) pa[m][rho] += pt * av[rho];
                    }
                }
            }
            const __half* Bb = a.valueB + ((long long)e.block * b.Hkv + h) * D * r;
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
        }
        pg = endPage;
    }
    // The buffer page's p·V: each warp every warps-th token, lanes over the channels (D ≤ 256).
    if (warp < seq.recent)
    {
        float acc[M][8];
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int j = 0; j < 8; j++) acc[m][j] = 0.f;
        const void* values = b.arenas[b.bufferArena].denseValues;
        const long long rowsStart = ((long long)seq.bufferSlot * b.Hkv + h) * nb, column = (long long)seq.pages * nb;
        for (int t = warp; t < seq.recent; t += warps)
        {
            float vt[8];
#pragma unroll
            for (int j = 0; j < 8; j++) vt[j] = lane + 32 * j < D ? load_as_float(values, b.denseType, (rowsStart + t) * D + lane + 32 * j) : 0.f;
#pragma unroll
            for (int m = 0; m < M; m++)
            {
                const float pt = m < rows ? ph[m * ld + column + t] : 0.f;
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
    const int used = (seq.pages + spanPages - 1) / spanPages;
    for (int i = tid; i < rows * D && i < M * D; i += blockDim.x)
    {
        const float* src = partial + (long long)bh * slots * rows * D + i;
        float o = sums[i];
        for (int k = 0; k < used; k++) o += src[(long long)k * rows * D];
        store_out(out, outType, (long long)bh * rows * D + i, o);
    }
}

#define GEAR_PAGED_KEYS(M, BITS)                                                                                               \
    extern "C" __global__ void __launch_bounds__(1024) gear_paged_key_scores_m##M##_b##BITS(const PagedBatch b, float* scores,  \
        long long ld, int per)                                                                                                 \
    {                                                                                                                          \
        paged_key_scores<M, BITS>(b, scores, ld, per);                                                                         \
    }
#define GEAR_PAGED_KEYS_ROWS(M) GEAR_PAGED_KEYS(M, 1) GEAR_PAGED_KEYS(M, 2) GEAR_PAGED_KEYS(M, 4) GEAR_PAGED_KEYS(M, 8)
GEAR_PAGED_KEYS_ROWS(1) GEAR_PAGED_KEYS_ROWS(2) GEAR_PAGED_KEYS_ROWS(4) GEAR_PAGED_KEYS_ROWS(8)

#define GEAR_PAGED_VALUES(M, BITS, CPT)                                                                                        \
    extern "C" __global__ void __launch_bounds__(256, 2) gear_paged_values_m##M##_b##BITS##_c##CPT(const PagedBatch b,         \
        const float* p, long long ld, float* partial, int slots, int pagesPerWarp)                                             \
    {                                                                                                                          \
        paged_values<M, BITS, CPT>(b, p, ld, partial, slots, pagesPerWarp);                                                    \
    }

// Value kernels for every (rows M, code width BITS, channels per lane CPT) with M·CPT ≤ 64 (registers) and CPT·BITS ≤ 128
// (a 16-byte load at most); CudaKernels.PieceWidth picks the widest that fits the shape.
GEAR_PAGED_VALUES(1, 1, 8) GEAR_PAGED_VALUES(1, 1, 16) GEAR_PAGED_VALUES(1, 1, 32) GEAR_PAGED_VALUES(1, 1, 64)
GEAR_PAGED_VALUES(1, 2, 8) GEAR_PAGED_VALUES(1, 2, 16) GEAR_PAGED_VALUES(1, 2, 32) GEAR_PAGED_VALUES(1, 2, 64)
GEAR_PAGED_VALUES(1, 4, 8) GEAR_PAGED_VALUES(1, 4, 16) GEAR_PAGED_VALUES(1, 4, 32)
GEAR_PAGED_VALUES(1, 8, 8) GEAR_PAGED_VALUES(1, 8, 16)
GEAR_PAGED_VALUES(2, 1, 8) GEAR_PAGED_VALUES(2, 1, 16) GEAR_PAGED_VALUES(2, 1, 32)
GEAR_PAGED_VALUES(2, 2, 8) GEAR_PAGED_VALUES(2, 2, 16) GEAR_PAGED_VALUES(2, 2, 32)
GEAR_PAGED_VALUES(2, 4, 8) GEAR_PAGED_VALUES(2, 4, 16) GEAR_PAGED_VALUES(2, 4, 32)
GEAR_PAGED_VALUES(2, 8, 8) GEAR_PAGED_VALUES(2, 8, 16)
GEAR_PAGED_VALUES(4, 1, 8) GEAR_PAGED_VALUES(4, 1, 16)
GEAR_PAGED_VALUES(4, 2, 8) GEAR_PAGED_VALUES(4, 2, 16)
GEAR_PAGED_VALUES(4, 4, 8) GEAR_PAGED_VALUES(4, 4, 16)
GEAR_PAGED_VALUES(4, 8, 8) GEAR_PAGED_VALUES(4, 8, 16)
GEAR_PAGED_VALUES(8, 1, 8) GEAR_PAGED_VALUES(8, 2, 8) GEAR_PAGED_VALUES(8, 4, 8) GEAR_PAGED_VALUES(8, 8, 8)

#define GEAR_PAGED_DENSE_VALUES(M)                                                                                             \
    extern "C" __global__ void __launch_bounds__(256) gear_paged_dense_values_m##M(const PagedBatch b, const float* p,         \
        long long ld, float* partial, int slots, int spanPages)                                                                \
    {                                                                                                                          \
        paged_dense_values<M>(b, p, ld, partial, slots, spanPages);                                                            \
    }
GEAR_PAGED_DENSE_VALUES(1) GEAR_PAGED_DENSE_VALUES(2) GEAR_PAGED_DENSE_VALUES(4) GEAR_PAGED_DENSE_VALUES(8)

#define GEAR_PAGED_FINISH(M, R)                                                                                                \
    extern "C" __global__ void __launch_bounds__(M <= 2 ? 1024 : 256) gear_paged_finish_m##M##_r##R(const PagedBatch b,        \
        const float* partial, int slots, int spanPages, const float* p, long long ld, void* out, int outType)                  \
    {                                                                                                                          \
        paged_finish<M, R>(b, partial, slots, spanPages, p, ld, out, outType);                                                 \
    }
#define GEAR_PAGED_FINISH_ROWS(M) GEAR_PAGED_FINISH(M, 2) GEAR_PAGED_FINISH(M, 4) GEAR_PAGED_FINISH(M, 8)
GEAR_PAGED_FINISH_ROWS(1) GEAR_PAGED_FINISH_ROWS(2) GEAR_PAGED_FINISH_ROWS(4) GEAR_PAGED_FINISH_ROWS(8)

// A step's new keys and values into each sequence's buffer page, where attention then reads them: k, v [S·tq, Hkv, D]
// packed by sequence (dtype kvType) → rows recent − tq … recent − 1 of the sequence's buffer slot in the buffer arena's
// dense pages, in the dense dtype (rounded to nearest, as a tensor copy rounds). Grid (S·tq, Hkv), block D threads (up to 1,024).
extern "C" __global__ void gear_paged_append(const PagedBatch b, const void* __restrict__ k, const void* __restrict__ v, int kvType)
{
    const int row = blockIdx.x, h = blockIdx.y, s = row / b.tq, t = row - s * b.tq;
    const SeqInfo seq = b.seqs[s];
    const PagedArena& arena = b.arenas[b.bufferArena];
    const long long dst = (((long long)seq.bufferSlot * b.Hkv + h) * b.nb + seq.recent - b.tq + t) * b.D;
    const long long src = ((long long)row * b.Hkv + h) * b.D;
    for (int j = threadIdx.x; j < b.D; j += blockDim.x)
    {
        store_out((void*)arena.denseKeys, b.denseType, dst + j, load_as_float(k, kvType, src + j));
        store_out((void*)arena.denseValues, b.denseType, dst + j, load_as_float(v, kvType, src + j));
    }
}
