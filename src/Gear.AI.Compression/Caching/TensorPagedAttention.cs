using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// Attention with tensor ops: each sequence's pages read back as keys and values (<see cref="PageCodec"/>), its recent
/// tokens after them, and plain causal attention over the lot. The reference the fused kernels are tested against.
/// </summary>
internal sealed class TensorPagedAttention(PagePool pool, string? reason = null) : PagedAttention(pool)
{
    public override string Description => reason is null ? "tensor ops" : $"tensor ops ({reason})";

    public override Tensor Attend(int layer, KvBatch batch, Tensor queries, IReadOnlyList<RecentTokens> recent)
    {
        using var scope = NewDisposeScope();
        var outputs = new Tensor[batch.Count];
        for (int i = 0; i < batch.Count; i++)
            outputs[i] = AttendOne(Pool, layer, batch.Items[i], queries, recent[i]);
        return (outputs.Length == 1 ? outputs[0] : cat(outputs, 0)).MoveToOuterDisposeScope();
    }

    /// <summary>One sequence's attention: [n, Hq, D] for its rows of <paramref name="queries"/>.</summary>
    public static Tensor AttendOne(PagePool pool, int layer, KvBatch.Item item, Tensor queries, RecentTokens recent)
    {
        using var scope = NewDisposeScope();
        var dtype = queries.dtype;
        var q = queries.narrow(0, item.Offset, item.NewTokens).transpose(0, 1).unsqueeze(0);       // [1, Hq, n, D]
        var (recentKeys, recentValues) = recent.Tensors(pool, layer);
        var keys = recentKeys.to(dtype);                                                           // [Hkv, R, D]
        var values = recentValues.to(dtype);
        if (PageCodec.ReadSequence(pool, layer, item.Sequence.Pages, dtype) is { } history)
        {
            keys = cat([history.Keys, keys], 1);                                                   // [Hkv, T, D]
            values = cat([history.Values, values], 1);
        }
        var o = Attention.Dense(q, keys.unsqueeze(0), values.unsqueeze(0), pool.Shape.KeyValueHeads); // [1, Hq, n, D]
        return o[0].transpose(0, 1).MoveToOuterDisposeScope();                                     // [n, Hq, D]
    }
}
