using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// A [..., tokens, features] tensor quantized group-wise at b bits: packed codes plus a float16
/// scale and zero point per group. Owns its tensors.
/// </summary>
internal sealed class QuantizedTensor : IDisposable
{
    internal QuantizedTensor(Tensor codes, Tensor scale, Tensor zero, long[] shape, int bits, int groupSize, QuantAxis axis)
    {
        Codes = codes;
        Scale = scale;
        Zero = zero;
        Shape = shape;
        Bits = bits;
        GroupSize = groupSize;
        Axis = axis;
    }

    /// <summary>Packed codes, uint8 [..., tokens, ceil(features/8)·bits] (see <see cref="BitPacking"/>).</summary>
    public Tensor Codes { get; }

    /// <summary>Per-group scale, float16: [..., ceil(tokens/g), features] per-channel or [..., tokens, ceil(features/g)] per-token.</summary>
    public Tensor Scale { get; }

    /// <summary>Per-group zero point (the group minimum), float16, shaped like <see cref="Scale"/>.</summary>
    public Tensor Zero { get; }

    /// <summary>Shape of the original tensor.</summary>
    public long[] Shape { get; }

    /// <summary>Bits per code.</summary>
    public int Bits { get; }

    /// <summary>Effective group length along <see cref="Axis"/>.</summary>
    public int GroupSize { get; }

    /// <summary>Direction the groups run.</summary>
    public QuantAxis Axis { get; }

    /// <summary>Exact bytes of the tensors held (codes, scales, zero points).</summary>
    public long ResidentBytes => Bytes.Of(Codes) + Bytes.Of(Scale) + Bytes.Of(Zero);

    /// <summary>Reconstructs the tensor: code · scale + zero.</summary>
    /// <param name="dtype">Result dtype (default float32).</param>
    public Tensor Dequantize(ScalarType dtype = ScalarType.Float32) =>
        GroupQuantizer.Dequantize(Codes, Scale, Zero, Bits, GroupSize, Axis, Shape[^1], dtype);

    /// <inheritdoc />
    public void Dispose()
    {
        Zero.Dispose();
        Scale.Dispose();
        Codes.Dispose();
    }
}
