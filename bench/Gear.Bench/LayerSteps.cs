using Gear.AI.Compression.Caching;
using static TorchSharp.torch;

namespace Gear.Bench;

/// <summary>
/// Steps of a cache's sequences without a model, for benchmarks of the cache alone: every sequence of <paramref name="cache"/>
/// appends the same number of tokens; tensors are [B, H, n, D] as one batch row per sequence.
/// </summary>
internal static class LayerSteps
{
    /// <summary>Attention of <paramref name="q"/> [B, Hq, n, D] over a one-layer cache after storing <paramref name="k"/>, <paramref name="v"/> [B, Hkv, n, D]; [B, Hq, n, D].</summary>
    public static Tensor Attend(KvCache cache, Tensor q, Tensor k, Tensor v)
    {
        long b = q.shape[0], n = q.shape[2];
        using var step = KvBatch.Begin([.. cache.Sequences.Select(s => new KvBatchItem(s, (int)n))]);
        using var scope = NewDisposeScope();
        var o = step.Attend(0, Packed(q), Packed(k), Packed(v));                              // [B·n, Hq, D]
        step.Complete();
        return o.view(b, n, q.shape[1], q.shape[3]).permute(0, 2, 1, 3).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Stores <paramref name="k"/>, <paramref name="v"/> [B, Hkv, n, D] in every layer of <paramref name="cache"/> (no attention).</summary>
    public static void Store(KvCache cache, Tensor k, Tensor v)
    {
        long n = k.shape[2];
        using var step = KvBatch.Begin([.. cache.Sequences.Select(s => new KvBatchItem(s, (int)n))]);
        using var scope = NewDisposeScope();
        var pk = Packed(k);
        var pv = Packed(v);
        for (int layer = 0; layer < cache.Shape.Layers; layer++)
            step.Store(layer, pk, pv);
        step.Complete();
    }

    /// <summary>[B, H, n, D] → [B·n, H, D], sequence by sequence.</summary>
    public static Tensor Packed(Tensor x) => x.permute(0, 2, 1, 3).reshape(-1, x.shape[1], x.shape[3]);
}
