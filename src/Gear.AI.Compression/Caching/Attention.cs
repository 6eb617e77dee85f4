using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>Shared pieces of cache attention: GQA grouping of query heads and the causal mask.</summary>
internal static class Attention
{
    /// <summary>
    /// [B, Hq, Tq, D] → [B, Hkv, G·Tq, D]: the G query heads of key/value head j (heads j·G … j·G + G − 1)
    /// become rows of one matrix, so K/V are never repeated.
    /// </summary>
    public static Tensor GroupQueries(Tensor queries, long kvHeads)
    {
        long b = queries.shape[0], hq = queries.shape[1], tq = queries.shape[2], d = queries.shape[3];
        if (hq % kvHeads != 0)
            throw new ArgumentException($"Query heads ({hq}) must be a multiple of key/value heads ({kvHeads}).", nameof(queries));
        return queries.reshape(b, kvHeads, hq / kvHeads * tq, d);
    }

    /// <summary>Inverse of <see cref="GroupQueries"/>.</summary>
    public static Tensor UngroupQueries(Tensor grouped, long queryHeads, long tq)
    {
        long b = grouped.shape[0], d = grouped.shape[3];
        return grouped.reshape(b, queryHeads, tq, d);
    }

    /// <summary>
    /// Boolean mask [G·Tq, T] (true = may attend) for Tq queries that are the last Tq of T keys:
    /// query i sees keys 0 … T − Tq + i. Null when Tq is 1 (a decode step sees everything).
    /// </summary>
    public static Tensor? CausalMask(long tq, long t, long groups, Device device)
    {
        if (tq == 1)
            return null;
        using var scope = NewDisposeScope();
        using Scalar queryEnd = t, keyEnd = t, queryStart = t - tq;
        var q = arange(queryStart, queryEnd, Scalars.One, device: device).unsqueeze(1);   // [Tq, 1]: positions T − Tq … T − 1
        var k = arange(Scalars.Zero, keyEnd, Scalars.One, device: device).unsqueeze(0);    // [1, T]
        var mask = k <= q;                                                     // [Tq, T]
        return mask.repeat(groups, 1).MoveToOuterDisposeScope();               // [G·Tq, T]
    }

    /// <summary>Query rows (G·Tq) up to which CUDA attention uses explicit matmuls instead of SDPA.</summary>
    private const long DecodeRows = 16;

    /// <summary>
    /// Causal attention of <paramref name="queries"/> [B, Hq, Tq, D] (the last Tq of T positions) over full-precision
    /// <paramref name="keys"/> and <paramref name="values"/> [B, Hkv, T, D] of any float dtype; returns [B, Hq, Tq, D]
    /// in the queries' dtype. libtorch's fused SDPA, except decode-sized attention on CUDA.
    /// </summary>
    public static Tensor Dense(Tensor queries, Tensor keys, Tensor values, long kvHeads)
    {
        using var scope = NewDisposeScope();
        long hq = queries.shape[1], tq = queries.shape[2], t = keys.shape[2], d = queries.shape[3];
        var k = keys.to(queries.dtype);                                        // [B, Hkv, T, D]
        var v = values.to(queries.dtype);                                      // [B, Hkv, T, D]
        if (queries.device_type != DeviceType.CUDA && tq > 1)
            return Prefill(queries, k, v, kvHeads).MoveToOuterDisposeScope();
        var q = GroupQueries(queries, kvHeads);                                // [B, Hkv, G·Tq, D]
        var mask = CausalMask(tq, t, hq / kvHeads, queries.device);            // [G·Tq, T]
        Tensor o;                                                              // [B, Hkv, G·Tq, D]
        if (queries.device_type == DeviceType.CUDA && q.shape[2] <= DecodeRows)
        {
            // Decode on CUDA: plain matmul–softmax–matmul (what transformers' eager attention does). libtorch's
            // SDPA dispatch measured ~35 ms per call whenever the key length changes (every decode step), the
            // same at 4K and 32K tokens, which would make the FP16 baseline look slower than it is.
            using Scalar scale = 1.0 / Math.Sqrt(d);
            var scores = q.matmul(k.transpose(-1, -2)).mul_(scale);
            if (mask is not null)
                scores = scores.masked_fill(mask.logical_not(), Scalars.NegativeInfinity);
            o = scores.softmax(-1, ScalarType.Float32).to(q.dtype).matmul(v);
        }
        else
        {
            o = nn.functional.scaled_dot_product_attention(q, k, v, mask);
        }
        return UngroupQueries(o, hq, tq).MoveToOuterDisposeScope();            // [B, Hq, Tq, D]
    }

    /// <summary>
    /// A prompt chunk's attention on the CPU: each key/value head shared by its query heads (expanded, not grouped into
    /// rows), so the causal mask is one [Tq, T] for every head — none at all for a chunk that is the whole history
    /// (libtorch's flash kernel then skips the masked blocks instead of reading a mask of G·Tq·T floats per layer).
    /// </summary>
    private static Tensor Prefill(Tensor queries, Tensor keys, Tensor values, long kvHeads)
    {
        long b = queries.shape[0], hq = queries.shape[1], tq = queries.shape[2], t = keys.shape[2], d = queries.shape[3];
        long groups = hq / kvHeads;
        var k = keys.unsqueeze(2).expand(b, kvHeads, groups, t, d).reshape(b, hq, t, d);   // [B, Hq, T, D]
        var v = values.unsqueeze(2).expand(b, kvHeads, groups, t, d).reshape(b, hq, t, d); // [B, Hq, T, D]
        if (tq == t)
            return nn.functional.scaled_dot_product_attention(queries, k, v, null, 0.0, true);  // [B, Hq, Tq, D]
        var mask = CausalMask(tq, t, 1, queries.device);                                    // [Tq, T]
        return nn.functional.scaled_dot_product_attention(queries, k, v, mask);             // [B, Hq, Tq, D]
    }
}
