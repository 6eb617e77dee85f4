using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The inner loops of the fused CPU attention over packed codes, for up to four query rows at a time held in registers.
/// Keys are quantized per channel, so within a group a query's score is Σ_d (q_d·scale_d)·code_td + Σ_d q_d·zero_d: the
/// scale folds into the query once per group and each token costs one pass over its packed row. Values are quantized per
/// token, so Σ_t p_t·(scale_t·code_t + zero_t) = Σ_t (p_t·scale_t)·code_t + Σ_t p_t·zero_t.
/// </summary>
internal static unsafe class CpuTiles
{
    /// <summary>
    /// Scores of tokens [t0, t1) of <paramref name="codes"/> for the <paramref name="n"/> (≤ 4) query rows whose
    /// scale-folded queries are <paramref name="qs"/> [4, D] and q·zero <paramref name="zq"/> [4], written to
    /// scores[i·stride + t]; with <paramref name="a"/> (A [T, r] float32, r ≤ 8, 8 floats of padding after the last row)
    /// also A[t]·qb[i] for the block's qb [4, 8] (zero beyond the rank, so the 8-wide loads of A's rows may run into the next row).
    /// </summary>
    public static void KeyTile(int bits, int n, PackedCodes packed, byte* codes, long rowBytes, int d, long t0, long t1, float* qs, float* zq,
                               float* a, int r, float* qb, float* scores, long stride)
    {
        switch (bits)
        {
            case 2: KeyTile<TwoBitCodes>(n, packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
            case 4: KeyTile<FourBitCodes>(n, packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
            default: KeyTile<AnyWidthCodes>(n, packed, codes, rowBytes, d, t0, t1, qs, zq, a, r, qb, scores, stride); break;
        }
    }

    private static void KeyTile<TWidth>(int n, PackedCodes packed, byte* codes, long rowBytes, int d, long t0, long t1, float* qs, float* zq,
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KeyTile<TRows, TWidth>(PackedCodes packed, byte* codes, long rowBytes, int d, long t0, long t1, float* qs, float* zq,
                                               float* a, int r, float* qb, float* scores, long stride)
        where TRows : IRowCount where TWidth : ICodeWidth
    {
        int chunks = d / 8;
        float* q0 = qs, q1 = qs + d, q2 = qs + 2 * d, q3 = qs + 3 * d;
        Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
        if (a is not null)
        {
            b0 = Vector256.Load(qb); b1 = Vector256.Load(qb + 8); b2 = Vector256.Load(qb + 16); b3 = Vector256.Load(qb + 24);
        }
        for (long t = t0; t < t1; t++)
        {
            byte* row = codes + t * rowBytes;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            if (a is not null)
            {
                var at = Vector256.Load(a + t * r);                                        // lanes ≥ r meet zeros in qb
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

    /// <summary>Ranks up to which the low-rank term rides in the 8-wide loops.</summary>
    public const int RankStride = 8;

    /// <summary>o[i, 8j … 8j + 7] += Σ_t ps[i, t]·code[t, 8j …] over <paramref name="length"/> rows of codes, for <paramref name="n"/> (≤ 4) rows.</summary>
    public static void ValueTile(int bits, int n, PackedCodes packed, byte* codes, long rowBytes, int length, int j, float* ps, float* o, int d)
    {
        switch (bits)
        {
            case 2: ValueTile<TwoBitCodes>(n, packed, codes, rowBytes, length, j, ps, o, d); break;
            case 4: ValueTile<FourBitCodes>(n, packed, codes, rowBytes, length, j, ps, o, d); break;
            default: ValueTile<AnyWidthCodes>(n, packed, codes, rowBytes, length, j, ps, o, d); break;
        }
    }

    private static void ValueTile<TWidth>(int n, PackedCodes packed, byte* codes, long rowBytes, int length, int j, float* ps, float* o, int d)
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ValueTile<TRows, TWidth>(PackedCodes packed, byte* codes, long rowBytes, int length, int j, float* ps, float* o, int d)
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

    /// <summary>
    /// Scores of float32 rows [t0, t1) of <paramref name="keys"/> ([T, D]) for the <paramref name="n"/> (≤ 4) query rows
    /// <paramref name="q"/> [4, D], written to scores[i·stride + t].
    /// </summary>
    public static void FloatKeyTile(int n, float* keys, int d, long t0, long t1, float* q, float* scores, long stride)
    {
        switch (n)
        {
            case 1: FloatKeyTile<OneRow>(keys, d, t0, t1, q, scores, stride); break;
            case 2: FloatKeyTile<TwoRows>(keys, d, t0, t1, q, scores, stride); break;
            case 3: FloatKeyTile<ThreeRows>(keys, d, t0, t1, q, scores, stride); break;
            default: FloatKeyTile<FourRows>(keys, d, t0, t1, q, scores, stride); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FloatKeyTile<TRows>(float* keys, int d, long t0, long t1, float* q, float* scores, long stride) where TRows : IRowCount
    {
        int chunks = d / 8;
        float* q0 = q, q1 = q + d, q2 = q + 2 * d, q3 = q + 3 * d;
        for (long t = t0; t < t1; t++)
        {
            float* row = keys + t * d;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int j = 0; j < chunks; j++)
            {
                var x = Vector256.Load(row + 8 * j);
                a0 = Vector256.FusedMultiplyAdd(x, Vector256.Load(q0 + 8 * j), a0);
                if (TRows.Count > 1) a1 = Vector256.FusedMultiplyAdd(x, Vector256.Load(q1 + 8 * j), a1);
                if (TRows.Count > 2) a2 = Vector256.FusedMultiplyAdd(x, Vector256.Load(q2 + 8 * j), a2);
                if (TRows.Count > 3) a3 = Vector256.FusedMultiplyAdd(x, Vector256.Load(q3 + 8 * j), a3);
            }
            scores[t] = Vector256.Sum(a0);
            if (TRows.Count > 1) scores[stride + t] = Vector256.Sum(a1);
            if (TRows.Count > 2) scores[2 * stride + t] = Vector256.Sum(a2);
            if (TRows.Count > 3) scores[3 * stride + t] = Vector256.Sum(a3);
        }
    }

    /// <summary>o[i, :] += Σ_t p[i·stride + t]·values[t, :] over <paramref name="length"/> float32 rows [T, D], for <paramref name="n"/> (≤ 4) rows.</summary>
    public static void FloatValueTile(int n, float* values, int d, int length, float* p, long stride, float* o)
    {
        switch (n)
        {
            case 1: FloatValueTile<OneRow>(values, d, length, p, stride, o); break;
            case 2: FloatValueTile<TwoRows>(values, d, length, p, stride, o); break;
            case 3: FloatValueTile<ThreeRows>(values, d, length, p, stride, o); break;
            default: FloatValueTile<FourRows>(values, d, length, p, stride, o); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FloatValueTile<TRows>(float* values, int d, int length, float* p, long stride, float* o) where TRows : IRowCount
    {
        float* p0 = p, p1 = p + stride, p2 = p + 2 * stride, p3 = p + 3 * stride;
        for (int j = 0; j < d; j += 8)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            float* column = values + j;
            for (int t = 0; t < length; t++, column += d)
            {
                var x = Vector256.Load(column);
                a0 = Vector256.FusedMultiplyAdd(x, Vector256.Create(p0[t]), a0);
                if (TRows.Count > 1) a1 = Vector256.FusedMultiplyAdd(x, Vector256.Create(p1[t]), a1);
                if (TRows.Count > 2) a2 = Vector256.FusedMultiplyAdd(x, Vector256.Create(p2[t]), a2);
                if (TRows.Count > 3) a3 = Vector256.FusedMultiplyAdd(x, Vector256.Create(p3[t]), a3);
            }
            (Vector256.Load(o + j) + a0).Store(o + j);
            if (TRows.Count > 1) (Vector256.Load(o + d + j) + a1).Store(o + d + j);
            if (TRows.Count > 2) (Vector256.Load(o + 2 * d + j) + a2).Store(o + 2 * d + j);
            if (TRows.Count > 3) (Vector256.Load(o + 3 * d + j) + a3).Store(o + 3 * d + j);
        }
    }
}
