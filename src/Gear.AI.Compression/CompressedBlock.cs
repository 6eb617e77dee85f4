using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// One tensor [..., n, D] compressed by <see cref="GearCompressor"/>: X ≈ D̂ + S + L. Owns its tensors.
/// </summary>
internal sealed class CompressedBlock : IDisposable
{
    internal CompressedBlock(QuantizedTensor quantized, OutlierSet? outliers, LowRankFactors? lowRank, ScalarType originalType)
    {
        Quantized = quantized;
        Outliers = outliers;
        LowRank = lowRank;
        OriginalType = originalType;
    }

    /// <summary>D̂: the packed quantization of X − S.</summary>
    public QuantizedTensor Quantized { get; }

    /// <summary>S: exact outliers (GEAR only).</summary>
    public OutlierSet? Outliers { get; }

    /// <summary>L: low-rank factors of the remaining error (GEAR and GEAR-L).</summary>
    public LowRankFactors? LowRank { get; }

    /// <summary>Shape of the compressed tensor.</summary>
    public long[] Shape => Quantized.Shape;

    /// <summary>Dtype of the input.</summary>
    public ScalarType OriginalType { get; }

    /// <summary>Exact bytes of every tensor this block holds.</summary>
    public long ResidentBytes => Quantized.ResidentBytes + (Outliers?.ResidentBytes ?? 0) + (LowRank?.ResidentBytes ?? 0);

    /// <summary>What the same tensor takes in float16: 2 bytes per element.</summary>
    public long FullPrecisionBytes => 2 * Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Reconstructs D̂ + S + L.</summary>
    /// <param name="dtype">Result dtype; the input's dtype when null.</param>
    public Tensor Decompress(ScalarType? dtype = null)
    {
        using var scope = NewDisposeScope();
        var x = Quantized.Dequantize(ScalarType.Float32);                      // [..., n, D]
        Outliers?.ScatterInto(x);
        if (LowRank is not null)
            x = x.add(LowRank.Reconstruct(), Scalars.One);
        return x.to(dtype ?? OriginalType).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        LowRank?.Dispose();
        Outliers?.Dispose();
        Quantized.Dispose();
    }
}
