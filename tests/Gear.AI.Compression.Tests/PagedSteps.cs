using TorchSharp;
using Gear.AI.Compression.Caching;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>One-layer steps over sequences without a model: per sequence q [Hq, n, D], k and v [Hkv, n, D].</summary>
internal static class PagedSteps
{
    /// <summary>One ragged step of layer 0 (every layer of the pool gets the same K/V); each sequence's output [Hq, n, D].</summary>
    public static Tensor[] Attend(params (KvSequence Sequence, Tensor Q, Tensor K, Tensor V)[] items) => Attend(tensorWrites: false, items);

    /// <summary>
    /// The same, with <paramref name="tensorWrites"/> packing K and V as views whose rows are not contiguous: the step then
    /// writes buffers with tensor operations, as it does for device tensors, instead of the CPU's direct copies.
    /// </summary>
    public static Tensor[] Attend(bool tensorWrites, params (KvSequence Sequence, Tensor Q, Tensor K, Tensor V)[] items)
    {
        using var step = KvBatch.Begin([.. items.Select(i => new KvBatchItem(i.Sequence, (int)i.K.shape[1]))]);
        using var scope = NewDisposeScope();
        var q = cat(items.Select(i => i.Q.transpose(0, 1)).ToArray(), 0);                  // [N, Hq, D]
        var k = cat(items.Select(i => i.K.transpose(0, 1)).ToArray(), 0);                  // [N, Hkv, D]
        var v = cat(items.Select(i => i.V.transpose(0, 1)).ToArray(), 0);
        if (tensorWrites)
        {
            k = k.transpose(1, 2).contiguous().transpose(1, 2);                               // same values, stride(2) = Hkv
            v = v.transpose(1, 2).contiguous().transpose(1, 2);
        }
        var o = step.Attend(0, q, k, v);
        for (int layer = 1; layer < items[0].Sequence.Pool.Shape.Layers; layer++)
            step.Store(layer, k, v);
        step.Complete();
        var outputs = new Tensor[items.Length];
        for (int i = 0; i < items.Length; i++)
            outputs[i] = o.narrow(0, step.OffsetOf(i), items[i].K.shape[1]).transpose(0, 1).contiguous().MoveToOuterDisposeScope(); // [Hq, n, D]
        return outputs;
    }

    /// <summary>One sequence's step.</summary>
    public static Tensor Attend(KvSequence sequence, Tensor q, Tensor k, Tensor v) => Attend((sequence, q, k, v))[0];

    /// <summary>Plain causal attention of q [Hq, n, D] (the last n of T positions) over k, v [Hkv, T, D], GQA by grouping: the reference.</summary>
    public static Tensor Reference(Tensor q, Tensor k, Tensor v)
    {
        using var scope = NewDisposeScope();
        long groups = q.shape[0] / k.shape[0], n = q.shape[1], t = k.shape[1];
        var kr = k.repeat_interleave(groups, 0);
        var vr = v.repeat_interleave(groups, 0);
        using Scalar root = Math.Sqrt(q.shape[2]), shift = t - n;
        var s = q.matmul(kr.transpose(-1, -2)).div(root);
        var mask = Scalars.Arange(0, t, 1, ScalarType.Int64, CPU).unsqueeze(0).le(Scalars.Arange(0, n, 1, ScalarType.Int64, CPU).unsqueeze(1).add(shift, Scalars.One));
        s = s.masked_fill(mask.logical_not(), Scalars.NegativeInfinity);
        return s.softmax(-1).matmul(vr).MoveToOuterDisposeScope();
    }
}
