using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>What a model's KV cache holds per token: one per model and device.</summary>
/// <param name="Layers">Transformer layers.</param>
/// <param name="KeyValueHeads">Key/value heads (Hkv).</param>
/// <param name="HeadDim">Per-head width (D).</param>
/// <param name="ComputeType">dtype attention computes in (float32 on CPU, bfloat16/float16 on CUDA).</param>
/// <param name="Device">Where the cache lives.</param>
public sealed record KvShape(int Layers, int KeyValueHeads, int HeadDim, ScalarType ComputeType, Device Device)
{
    /// <summary>Checks every dimension is positive.</summary>
    public KvShape Validate()
    {
        if (Layers < 1) throw new ArgumentOutOfRangeException(nameof(Layers), Layers, "Layers must be at least 1.");
        if (KeyValueHeads < 1) throw new ArgumentOutOfRangeException(nameof(KeyValueHeads), KeyValueHeads, "KeyValueHeads must be at least 1.");
        if (HeadDim < 1) throw new ArgumentOutOfRangeException(nameof(HeadDim), HeadDim, "HeadDim must be at least 1.");
        ArgumentNullException.ThrowIfNull(Device);
        return this;
    }

    /// <summary>What the K and V of <paramref name="tokens"/> tokens take in float16, all layers: the "FP16 cache" bytes.</summary>
    public long Fp16Bytes(long tokens) => 2L * 2 * Layers * KeyValueHeads * HeadDim * tokens;
}
