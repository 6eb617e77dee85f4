using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>Honest byte counting: numel × element size of tensors actually held.</summary>
internal static class Bytes
{
    /// <summary>numel × element size of <paramref name="tensor"/>, or 0 for null.</summary>
    public static long Of(Tensor? tensor) => tensor is null ? 0 : tensor.numel() * tensor.ElementSize;
}
