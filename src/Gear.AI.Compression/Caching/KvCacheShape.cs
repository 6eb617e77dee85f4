using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>What a KV cache holds: one per model and batch.</summary>
/// <param name="Layers">Transformer layers.</param>
/// <param name="Batch">Sequences in the batch (B).</param>
/// <param name="KeyValueHeads">Key/value heads (Hkv).</param>
/// <param name="HeadDim">Per-head width (D).</param>
/// <param name="ComputeType">dtype attention computes in (float32 on CPU, bfloat16/float16 on CUDA).</param>
/// <param name="Device">Where the cache lives.</param>
public sealed record KvCacheShape(int Layers, int Batch, int KeyValueHeads, int HeadDim, ScalarType ComputeType, Device Device)
{
    /// <summary>Checks every dimension is positive.</summary>
    public KvCacheShape Validate()
    {
        if (Layers < 1) throw new ArgumentOutOfRangeException(nameof(Layers), Layers, "Layers must be at least 1.");
        if (Batch < 1) throw new ArgumentOutOfRangeException(nameof(Batch), Batch, "Batch must be at least 1.");
        if (KeyValueHeads < 1) throw new ArgumentOutOfRangeException(nameof(KeyValueHeads), KeyValueHeads, "KeyValueHeads must be at least 1.");
        if (HeadDim < 1) throw new ArgumentOutOfRangeException(nameof(HeadDim), HeadDim, "HeadDim must be at least 1.");
        return this;
    }
}
