using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// GEAR compression of one KV tensor as pure functions: X ≈ D̂ + S + L.
/// </summary>
/// <remarks>
/// 1. S (GEAR only): per quantization vector the k largest and k smallest entries are kept exactly
///    and replaced by the mean of the rest (<see cref="OutlierSet.Extract"/>).
/// 2. D̂: group-wise asymmetric quantization of X − S (<see cref="GroupQuantizer"/>).
/// 3. L (GEAR, GEAR-L): rank-r approximation of R = X − D̂ − S (<see cref="LowRankFactors"/>).
/// KIVI stops after step 2. Keys use <see cref="QuantAxis.PerChannel"/>, values <see cref="QuantAxis.PerToken"/>.
/// </remarks>
public static class GearCompressor
{
    /// <summary>Compresses <paramref name="x"/> [..., n, D] (float32, float16 or bfloat16; not modified).</summary>
    /// <param name="x">Keys or values of one block, e.g. [B, Hkv, n, D].</param>
    /// <param name="axis">Per-channel for keys, per-token for values.</param>
    /// <param name="options">Kind, bits, group size, outlier ratio, power iterations, seed. Kind must not be <see cref="CacheKind.Fp16"/>.</param>
    /// <param name="rank">Low-rank rank; <see cref="GearOptions.PromptRank"/> when null.</param>
    public static CompressedBlock Compress(Tensor x, QuantAxis axis, GearOptions options, int? rank = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (!options.IsCompressed)
            throw new ArgumentException("CacheKind.Fp16 does not compress; choose Kivi, GearL or Gear.", nameof(options));
        if (x.dim() < 2 || !x.is_floating_point())
            throw new ArgumentException($"Expected a floating-point tensor [..., tokens, features], got {x.dtype} [{string.Join(", ", x.shape)}].", nameof(x));
        long n = x.shape[^2], d = x.shape[^1];
        int r = rank ?? options.PromptRank;
        if (options.UsesLowRank)
            GearOptions.ValidateRank(r, n, d, rank is null ? nameof(GearOptions.PromptRank) : nameof(rank));
        int g = GroupQuantizer.EffectiveGroupSize(options.GroupSize, axis, d);

        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);                                     // [..., n, D]
        OutlierSet? outliers = null;
        var toQuantize = xf;
        if (options.UsesOutliers)
        {
            if (axis == QuantAxis.PerToken && d % g != 0)
                throw new ArgumentOutOfRangeException(nameof(options.GroupSize), options.GroupSize,
                    $"GEAR's per-token outlier vectors need GroupSize to divide head_dim ({d}); choose a divisor of {d}.");
            (outliers, toQuantize) = OutlierSet.Extract(xf, options.OutlierRatio, axis, g);
            Cuda.CudaKernels.PhaseMarker?.Invoke(axis == QuantAxis.PerChannel ? "keys_outliers" : "values_outliers");
        }
        QuantizedTensor? quantized = null;
        LowRankFactors? lowRank = null;
        try
        {
            quantized = GroupQuantizer.Quantize(toQuantize, options.Bits, options.GroupSize, axis);
            Cuda.CudaKernels.PhaseMarker?.Invoke(axis == QuantAxis.PerChannel ? "keys_quantize" : "values_quantize");
            if (options.UsesLowRank && r > 0)
            {
                var approx = quantized.Dequantize(ScalarType.Float32);         // [..., n, D]
                outliers?.ScatterInto(approx);
                Cuda.CudaKernels.PhaseMarker?.Invoke(axis == QuantAxis.PerChannel ? "keys_residual" : "values_residual");
                lowRank = LowRankFactors.Approximate(xf - approx, r, options.PowerIterations, options.Seed);
                Cuda.CudaKernels.PhaseMarker?.Invoke(axis == QuantAxis.PerChannel ? "keys_low_rank" : "values_low_rank");
            }
            return new CompressedBlock(quantized, outliers, lowRank, x.dtype);
        }
        catch
        {
            lowRank?.Dispose();
            quantized?.Dispose();
            outliers?.Dispose();
            throw;
        }
    }
}
