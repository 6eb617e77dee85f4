using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The fused CPU decode path: the same attention terms as <see cref="Dequantize"/>,
/// <see cref="LowRankScores"/> and <see cref="LowRankOutput"/>, computed for one (batch, head) slice
/// straight from the packed codes, without materializing the dequantized history.
/// </summary>
/// <remarks>
/// Keys are quantized per channel, so within a g-token group a query's score is
/// Σ_d (q_d·scale_d)·code_td + Σ_d q_d·zero_d: the scale folds into the query once per group and
/// each token costs one pass over its packed row. Values are quantized per token, so
/// Σ_t p_t·(scale_t·code_t + zero_t) = Σ_t (p_t·scale_t)·code_t + Σ_t p_t·zero_t. Outliers replace the
/// dequantized entry exactly (a correction q_d·(value − x̂_td)); low-rank terms stay factored, as
/// (q·B)·Aᵀ and (p·A)·Bᵀ per block. Query rows are processed four at a time in registers.
/// </remarks>
internal sealed partial class CompressedStore
{
    /// <summary>Whether the fused CPU path can read this store (rows of whole 8-code words; value groups of whole words, uint8 outlier indices).</summary>
    public bool SupportsCpuKernel =>
        _headDim % 8 == 0 && (_axis == QuantAxis.PerChannel || (_groupSize % 8 == 0 && _groupSize <= 256));

    /// <summary>Writes q·K̂ᵀ (dequantized keys, outliers, low rank) for slice <paramref name="bh"/> to scores[i·stride + t].</summary>
    /// <param name="bh">Batch·heads index of the slice.</param>
    /// <param name="q">Queries [rows, D], float32.</param>
    /// <param name="rows">Query rows.</param>
    /// <param name="scores">Where token t of this store scores for row i: scores[i·stride + t] (overwritten).</param>
    /// <param name="stride">Row stride of <paramref name="scores"/>.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public unsafe void CpuKeyScores(long bh, float* q, int rows, float* scores, long stride)
    {
        int d = (int)_headDim, g = _groupSize;
        long length = Length, groups = length / g;
        var packed = new PackedCodes(_bits);
        long rowBytes = packed.RowBytes(d);
        byte* codes = (byte*)View.Codes + bh * length * rowBytes;
        Half* scale = (Half*)View.Scale + bh * groups * d;
        Half* zero = (Half*)View.Zero + bh * groups * d;
        int tiles = (rows + 3) / 4;

        // Low rank at rank ≤ 8 joins the tile loop: one 8-wide FMA per token and row on A's row.
        int r = View.Rank;
        bool fusedLowRank = r is > 0 and <= FusedRankLimit;
        long aCount = 0;
        float[]? lowRank = r > 0 ? RentLowRank(bh, out aCount, out _) : null;
        int blocks = BlockCount;
        // scaleF/zeroF [groups, D] as floats; qs [tiles·4, D] scale-folded queries of one group (padding rows
        // zero); qb [blocks, tiles·4, 8] = q·B per block, zero beyond the rank.
        float[] scratch = ArrayPool<float>.Shared.Rent((int)(2 * groups * d) + tiles * 4 * d + tiles * 4 + (fusedLowRank ? blocks * tiles * 32 : 0));
        try
        {
            fixed (float* s = scratch)
            fixed (float* low = lowRank)
            {
                float* scaleF = s, zeroF = s + groups * d, qs = zeroF + groups * d, zq = qs + tiles * 4 * d, qb = zq + tiles * 4;
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(scale, (int)(groups * d)), new Span<float>(scaleF, (int)(groups * d)));
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(zero, (int)(groups * d)), new Span<float>(zeroF, (int)(groups * d)));
                new Span<float>(qs, tiles * 4 * d + tiles * 4 + (fusedLowRank ? blocks * tiles * 32 : 0)).Clear();
                if (fusedLowRank)
                    for (int blk = 0; blk < blocks; blk++)
                        for (int i = 0; i < rows; i++)
                            for (int c = 0; c < d; c++)
                                for (int rho = 0; rho < r; rho++)
                                    qb[(blk * tiles * 4 + i) * 8 + rho] += q[i * d + c] * low[aCount + ((long)blk * d + c) * r + rho];
                long gi = 0;
                for (int blk = 0; blk < blocks; blk++)
                    for (long blockEnd = gi + _blockLengths[blk] / g; gi < blockEnd; gi++)
                    {
                        var groupScale = new ReadOnlySpan<float>(scaleF + gi * d, d);
                        var groupZero = new ReadOnlySpan<float>(zeroF + gi * d, d);
                        for (int i = 0; i < rows; i++)
                        {
                            var qi = new ReadOnlySpan<float>(q + i * d, d);
                            TensorPrimitives.Multiply(qi, groupScale, new Span<float>(qs + i * d, d));
                            zq[i] = TensorPrimitives.Dot(qi, groupZero);
                        }
                        for (int tile = 0; tile < tiles; tile++)
                            KeyTile(Math.Min(4, rows - tile * 4), packed, codes, rowBytes, d, gi * g, (gi + 1) * g, qs + tile * 4 * d, zq + tile * 4,
                                    fusedLowRank ? low : null, r, qb + (blk * tiles + tile) * 32, scores + tile * 4 * stride, stride);
                    }
                if (View.Slots > 0)
                    KeyOutliers(bh, q, rows, scores, stride, packed, codes, rowBytes, scaleF, zeroF);
                if (r > 0 && !fusedLowRank)
                    KeyLowRank(low, low + aCount, q, rows, scores, stride);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
            if (lowRank is not null)
                ArrayPool<float>.Shared.Return(lowRank);
        }
    }

    /// <summary>Ranks up to which the low-rank term rides in the 8-wide tile loops.</summary>
    private const int FusedRankLimit = 8;

    /// <summary>
    /// Scores of tokens [t0, t1) for up to four query rows whose scale-folded queries are <paramref name="qs"/> [4, D];
    /// with <paramref name="a"/> (A [T, r], r ≤ 8, padded) also A[t]·qb[i] for the block's qb [4, 8].
    /// </summary>
    private unsafe void KeyTile(int n, PackedCodes packed, byte* codes, long rowBytes, int d, long t0, long t1, float* qs, float* zq,
                                float* a, int r, float* qb, float* scores, long stride)
    {
        switch (_bits)
        {
            case 2: KeyTile<TwoBitCodes>(n, packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
            case 4: KeyTile<FourBitCodes>(n, packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
            default: KeyTile<AnyWidthCodes>(n, packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
        }
    }

    private static unsafe void KeyTile<TWidth>(int n, PackedCodes packed, byte* codes, long rowBytes, int d, long t0, long t1, float* qs, float* zq,
                                               float* a, int r, float* qb, float* scores, long stride) where TWidth : ICodeWidth
    {
        switch (n)
        {
            case 1: KeyTile<OneRow, TWidth>(packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
            case 2: KeyTile<TwoRows, TWidth>(packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
            case 3: KeyTile<ThreeRows, TWidth>(packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
            default: KeyTile<FourRows, TWidth>(packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
        }
    }

    /// <summary>
    /// Scores of tokens [t0, t1) for the tile's query rows, whose scale-folded queries are <paramref name="qs"/> [4, D];
    /// with <paramref name="a"/> (A [T, r], r ≤ 8, padded) also A[t]·qb[i] for the block's qb [4, 8].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void KeyTile<TRows, TWidth>(PackedCodes packed, byte* codes, long rowBytes, int d, long t0, long t1, float* qs, float* zq,
                                                      float* a, int r, float* qb, float* scores, long stride)
        where TRows : IRowCount where TWidth : ICodeWidth
    {
        int chunks = d / 8;
        float* q0 = qs, q1 = qs + d, q2 = qs + 2 * d, q3 = qs + 3 * d;
        Vector256<float> b0 = Vector256.Load(qb), b1 = Vector256.Load(qb + 8), b2 = Vector256.Load(qb + 16), b3 = Vector256.Load(qb + 24);
        for (long t = t0; t < t1; t++)
        {
            byte* row = codes + t * rowBytes;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            if (a is not null)
            {
                var at = Vector256.Load(a + t * r);                                     // lanes ≥ r meet zeros in qb
                a0 = at * b0;
                if (TRows.Count > 1) a1 = at * b1;
                if (TRows.Count > 2) a2 = at * b2;
                if (TRows.Count > 3) a3 = at * b3;
            }
            for (int j = 0; j < chunks; j++)
            {
                var x = packed.Eight<TWidth>(row, j);
                a0 = Vector256.FusedMultiplyAdd(x, Vector256.Load(q0 + 8 * j), a0);
                if (TRows.Count > 1) a1 = Vector256.FusedMultiplyAdd(x, Vector256.Load(q1 + 8 * j), a1);
                if (TRows.Count > 2) a2 = Vector256.FusedMultiplyAdd(x, Vector256.Load(q2 + 8 * j), a2);
                if (TRows.Count > 3) a3 = Vector256.FusedMultiplyAdd(x, Vector256.Load(q3 + 8 * j), a3);
            }
            scores[t] = Vector256.Sum(a0) + zq[0];
            if (TRows.Count > 1) scores[stride + t] = Vector256.Sum(a1) + zq[1];
            if (TRows.Count > 2) scores[2 * stride + t] = Vector256.Sum(a2) + zq[2];
            if (TRows.Count > 3) scores[3 * stride + t] = Vector256.Sum(a3) + zq[3];
        }
    }

    /// <summary>Outliers replace their dequantized entry: scores[i, t] += q[i, c]·(value − x̂[t, c]).</summary>
    private unsafe void KeyOutliers(long bh, float* q, int rows, float* scores, long stride, PackedCodes packed, byte* codes, long rowBytes, float* scale, float* zero)
    {
        var view = View;
        void* at = (byte*)view.OutlierIndex + bh * _headDim * view.Slots * view.IndexBytes;
        switch (view.IndexBytes)
        {
            case 1: KeyOutliers((byte*)at, bh, q, rows, scores, stride, packed, codes, rowBytes, scale, zero); break;
            case 2: KeyOutliers((short*)at, bh, q, rows, scores, stride, packed, codes, rowBytes, scale, zero); break;
            default: KeyOutliers((int*)at, bh, q, rows, scores, stride, packed, codes, rowBytes, scale, zero); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe void KeyOutliers<TIndex>(TIndex* index, long bh, float* q, int rows, float* scores, long stride, PackedCodes packed, byte* codes, long rowBytes, float* scale, float* zero)
        where TIndex : unmanaged, IBinaryInteger<TIndex>
    {
        int d = (int)_headDim, g = _groupSize;
        long slots = View.Slots;
        long* offset = (long*)View.OutlierOffset;
        int groupShift = BitOperations.IsPow2(g) ? BitOperations.Log2((uint)g) : -1;
        int count = (int)(d * slots);
        float[] converted = OutlierValues(bh, count);
        int[] tokens = ArrayPool<int>.Shared.Rent(count);
        try
        {
            fixed (float* delta = converted)
            fixed (int* token = tokens)
            {
                // Pass 1, shared by all rows: each outlier's token and its correction value − x̂ (in place of the value).
                for (int c = 0, e = 0; c < d; c++)
                    for (long k = 0; k < slots; k++, e++)
                    {
                        long t = offset[k] + long.CreateTruncating(index[e]);
                        long gi = groupShift >= 0 ? t >> groupShift : t / g;
                        token[e] = (int)t;
                        delta[e] -= packed.At(codes + t * rowBytes, c) * scale[gi * d + c] + zero[gi * d + c];
                    }
                // Pass 2: scatter q·delta into each row's scores.
                for (int i = 0; i < rows; i++)
                {
                    float* si = scores + i * stride;
                    for (int c = 0, e = 0; c < d; c++)
                    {
                        float qc = q[i * d + c];
                        for (long k = 0; k < slots; k++, e++)
                            si[token[e]] += qc * delta[e];
                    }
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(converted);
            ArrayPool<int>.Shared.Return(tokens);
        }
    }

    /// <summary>This slice's <paramref name="count"/> outlier values as float32, in a pooled array.</summary>
    private unsafe float[] OutlierValues(long bh, long count)
    {
        float[] values = ArrayPool<float>.Shared.Rent((int)count);
        TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)View.OutlierValues + bh * count, (int)count), values.AsSpan(0, (int)count));
        return values;
    }

    /// <summary>scores[i, t] += A[t]·(q·B_blk(t))[i] for ranks above <see cref="FusedRankLimit"/>.</summary>
    private unsafe void KeyLowRank(float* a, float* b, float* q, int rows, float* scores, long stride)
    {
        int d = (int)_headDim, r = View.Rank;
        long t0 = 0;
        float* qb = stackalloc float[r];
        for (int blk = 0; blk < BlockCount; blk++)
        {
            long end = t0 + _blockLengths[blk];
            for (int i = 0; i < rows; i++)
            {
                var qbSpan = new Span<float>(qb, r);
                qbSpan.Clear();
                for (int c = 0; c < d; c++)
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(b + ((long)blk * d + c) * r, r), q[i * d + c], qbSpan, qbSpan);
                for (long t = t0; t < end; t++)
                    scores[i * stride + t] += TensorPrimitives.Dot(new ReadOnlySpan<float>(a + t * r, r), qbSpan);
            }
            t0 = end;
        }
    }

    /// <summary>Adds p·V̂ (dequantized values, outliers, low rank) for slice <paramref name="bh"/> to o[i·D + c].</summary>
    /// <param name="bh">Batch·heads index of the slice.</param>
    /// <param name="p">Probabilities of this store's tokens: p[i·stride + t].</param>
    /// <param name="stride">Row stride of <paramref name="p"/>.</param>
    /// <param name="rows">Query rows.</param>
    /// <param name="o">Output [rows, D], float32, accumulated into.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public unsafe void CpuValueOutput(long bh, float* p, long stride, int rows, float* o)
    {
        int d = (int)_headDim, g = _groupSize, perToken = d / g;
        long length = Length;
        var packed = new PackedCodes(_bits);
        long rowBytes = packed.RowBytes(d);
        byte* codes = (byte*)View.Codes + bh * length * rowBytes;
        Half* scale = (Half*)View.Scale + bh * length * perToken;
        Half* zero = (Half*)View.Zero + bh * length * perToken;
        int tiles = (rows + 3) / 4, n = (int)length;

        // scaleF/zeroF [T·G] as stored; ps [tiles·4, T] = p·scale of one group (padding rows zero).
        float[] scratch = ArrayPool<float>.Shared.Rent(2 * n * perToken + tiles * 4 * n);
        try
        {
            fixed (float* s = scratch)
            {
                float* scaleF = s, zeroF = s + n * perToken, ps = zeroF + n * perToken;
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(scale, n * perToken), new Span<float>(scaleF, n * perToken));
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(zero, n * perToken), new Span<float>(zeroF, n * perToken));
                new Span<float>(ps, tiles * 4 * n).Clear();
                for (int k = 0; k < perToken; k++)
                {
                    for (int i = 0; i < rows; i++)
                    {
                        float zs = 0;
                        for (int t = 0; t < n; t++)
                        {
                            float pit = p[i * stride + t];
                            ps[i * n + t] = pit * scaleF[t * perToken + k];
                            zs += pit * zeroF[t * perToken + k];
                        }
                        TensorPrimitives.Add(new ReadOnlySpan<float>(o + i * d + k * g, g), zs, new Span<float>(o + i * d + k * g, g));
                    }
                    for (int tile = 0; tile < tiles; tile++)
                        for (int j = k * g / 8; j < (k + 1) * g / 8; j++)
                            ValueTile(Math.Min(4, rows - tile * 4), packed, codes, rowBytes, n, j, ps + tile * 4 * n, o + tile * 4 * d, d);
                }
                if (View.Slots > 0)
                    ValueOutliers(bh, p, stride, rows, o, packed, codes, rowBytes, scaleF, zeroF);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
        }
        if (View.Rank > 0)
            ValueLowRank(bh, p, stride, rows, o);
    }

    private unsafe void ValueTile(int n, PackedCodes packed, byte* codes, long rowBytes, int length, int j, float* ps, float* o, int d)
    {
        switch (_bits)
        {
            case 2: ValueTile<TwoBitCodes>(n, packed, codes, rowBytes, length, j, ps, o, d); break;
            case 4: ValueTile<FourBitCodes>(n, packed, codes, rowBytes, length, j, ps, o, d); break;
            default: ValueTile<AnyWidthCodes>(n, packed, codes, rowBytes, length, j, ps, o, d); break;
        }
    }

    private static unsafe void ValueTile<TWidth>(int n, PackedCodes packed, byte* codes, long rowBytes, int length, int j, float* ps, float* o, int d)
        where TWidth : ICodeWidth
    {
        switch (n)
        {
            case 1: ValueTile<OneRow, TWidth>(packed, codes, rowBytes, length, j, ps, o, d); break;
            case 2: ValueTile<TwoRows, TWidth>(packed, codes, rowBytes, length, j, ps, o, d); break;
            case 3: ValueTile<ThreeRows, TWidth>(packed, codes, rowBytes, length, j, ps, o, d); break;
            default: ValueTile<FourRows, TWidth>(packed, codes, rowBytes, length, j, ps, o, d); break;
        }
    }

    /// <summary>o[i, 8j … 8j + 7] += Σ_t ps[i, t]·code[t, 8j …] for the tile's query rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void ValueTile<TRows, TWidth>(PackedCodes packed, byte* codes, long rowBytes, int length, int j, float* ps, float* o, int d)
        where TRows : IRowCount where TWidth : ICodeWidth
    {
        float* p0 = ps, p1 = ps + length, p2 = ps + 2 * length, p3 = ps + 3 * length;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        byte* row = codes;
        for (int t = 0; t < length; t++, row += rowBytes)
        {
            var x = packed.Eight<TWidth>(row, j);
            a0 = Vector256.FusedMultiplyAdd(x, Vector256.Create(p0[t]), a0);
            if (TRows.Count > 1) a1 = Vector256.FusedMultiplyAdd(x, Vector256.Create(p1[t]), a1);
            if (TRows.Count > 2) a2 = Vector256.FusedMultiplyAdd(x, Vector256.Create(p2[t]), a2);
            if (TRows.Count > 3) a3 = Vector256.FusedMultiplyAdd(x, Vector256.Create(p3[t]), a3);
        }
        float* oj = o + 8 * j;
        (Vector256.Load(oj) + a0).Store(oj);
        if (TRows.Count > 1) (Vector256.Load(oj + d) + a1).Store(oj + d);
        if (TRows.Count > 2) (Vector256.Load(oj + 2 * d) + a2).Store(oj + 2 * d);
        if (TRows.Count > 3) (Vector256.Load(oj + 3 * d) + a3).Store(oj + 3 * d);
    }

    /// <summary>Outliers replace their dequantized entry: o[i, c] += p[i, t]·(value − x̂[t, c]).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe void ValueOutliers(long bh, float* p, long stride, int rows, float* o, PackedCodes packed, byte* codes, long rowBytes, float* scaleF, float* zeroF)
    {
        int d = (int)_headDim, g = _groupSize, perToken = d / g;
        long length = Length, slots = View.Slots;                             // 2k per group
        long perSlice = length * perToken * slots;
        byte* index = (byte*)View.OutlierIndex + bh * perSlice;   // uint8: groups of at most 256
        float[] converted = OutlierValues(bh, perSlice);
        int[] channels = ArrayPool<int>.Shared.Rent((int)perSlice);
        try
        {
            fixed (float* delta = converted)
            fixed (int* channel = channels)
            {
                // Pass 1, shared by all rows: each outlier's channel and its correction value − x̂ (in place of the value).
                for (long t = 0, e = 0; t < length; t++)
                    for (int k = 0; k < perToken; k++)
                        for (long j = 0; j < slots; j++, e++)
                        {
                            int c = k * g + index[e];
                            channel[e] = c;
                            delta[e] -= packed.At(codes + t * rowBytes, c) * scaleF[t * perToken + k] + zeroF[t * perToken + k];
                        }
                // Pass 2: o[i, c] += p[i, t]·delta. Outliers gather in a few channels, so consecutive tokens hit
                // the same entry: four partial sums (by token) keep those additions from waiting on each other.
                long perTokenSlots = perToken * slots;
                float* partial = stackalloc float[4 * d];
                for (int i = 0; i < rows; i++)
                {
                    new Span<float>(partial, 4 * d).Clear();
                    float* pi = p + i * stride;
                    for (long t = 0, e = 0; t < length; t++)
                    {
                        float pt = pi[t];
                        float* part = partial + (t & 3) * d;
                        for (long end = e + perTokenSlots; e < end; e++)
                            part[channel[e]] += pt * delta[e];
                    }
                    var oi = new Span<float>(o + i * d, d);
                    for (int k = 0; k < 4; k++)
                        TensorPrimitives.Add(oi, new ReadOnlySpan<float>(partial + k * d, d), oi);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(converted);
            ArrayPool<int>.Shared.Return(channels);
        }
    }

    /// <summary>o[i] += Σ_blk (p·A)[i, blk]·B_blkᵀ.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe void ValueLowRank(long bh, float* p, long stride, int rows, float* o)
    {
        int d = (int)_headDim, r = View.Rank, blocks = BlockCount;
        float[] lowRank = RentLowRank(bh, out long aCount, out _);
        try
        {
            fixed (float* s = lowRank)
            {
                float* a = s, b = s + aCount;                                         // A [T, r] (padded), B [nblk, D, r]
                float* pa = stackalloc float[Math.Max(r, 8)];
                long t0 = 0;
                for (int blk = 0; blk < blocks; blk++)
                {
                    long end = t0 + _blockLengths[blk];
                    for (int i = 0; i < rows; i++)
                    {
                        float* pi = p + i * stride;
                        if (r <= FusedRankLimit)
                        {
                            Vector256<float> acc = default;                           // lanes ≥ r are ignored
                            for (long t = t0; t < end; t++)
                                acc = Vector256.FusedMultiplyAdd(Vector256.Load(a + t * r), Vector256.Create(pi[t]), acc);
                            acc.Store(pa);
                        }
                        else
                        {
                            for (int rho = 0; rho < r; rho++)
                                pa[rho] = 0;
                            for (long t = t0; t < end; t++)
                                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(a + t * r, r), pi[t], new ReadOnlySpan<float>(pa, r), new Span<float>(pa, r));
                        }
                        var paSpan = new ReadOnlySpan<float>(pa, r);
                        for (int c = 0; c < d; c++)
                            o[i * d + c] += TensorPrimitives.Dot(paSpan, new ReadOnlySpan<float>(b + ((long)blk * d + c) * r, r));
                    }
                    t0 = end;
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(lowRank);
        }
    }

    /// <summary>
    /// A pooled buffer with this slice's A [T, r] in float32 followed by 8 zeros (so 8-wide loads of A's last row
    /// stay inside and read zeros), then B [nblk, D, r]; return it to <see cref="ArrayPool{T}.Shared"/>.
    /// </summary>
    private unsafe float[] RentLowRank(long bh, out long aCount, out long bCount)
    {
        int r = View.Rank;
        long length = Length;
        long elements = length * r;
        aCount = elements + 8;
        bCount = BlockCount * _headDim * r;
        float[] scratch = ArrayPool<float>.Shared.Rent((int)(aCount + bCount));
        fixed (float* s = scratch)
        {
            float* a = s, b = s + aCount;
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)View.A + bh * elements, (int)elements), new Span<float>(a, (int)elements));
            new Span<float>(a + elements, 8).Clear();
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)View.B + bh * bCount, (int)bCount), new Span<float>(b, (int)bCount));
        }
        return scratch;
    }
}
