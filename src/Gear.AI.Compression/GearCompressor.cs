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
        if (UseCudaKernel && CompressFused(x, axis, options, r, g) is { } fused)
            return fused;
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

    /// <summary>Whether CUDA blocks are compressed by <see cref="Cuda.CudaKernels.CompressBlock"/>; off for the reference in gpu-selftest.</summary>
    internal static bool UseCudaKernel { get; set; } = true;

    /// <summary>
    /// Steps 1 and 2 and the residual of step 3 in one CUDA launch where it applies (one outlier a side, as decode
    /// blocks and value groups at the default 2% have; no outliers for KIVI and GEAR-L), then the power iteration; null
    /// elsewhere. Called inside the caller's dispose scope.
    /// </summary>
    private static CompressedBlock? CompressFused(Tensor x, QuantAxis axis, GearOptions options, int rank, int g)
    {
        long n = x.shape[^2];
        int length = axis == QuantAxis.PerChannel ? (int)Math.Min(n, int.MaxValue) : g;
        int k = options.UsesOutliers ? OutlierSet.CountPerSide(options.OutlierRatio, length) : 0;
        bool residual = options.UsesLowRank && rank > 0;
        if (Cuda.CudaKernels.CompressBlock(x, options.Bits, g, axis, k, residual) is not { } parts)
            return null;
        Cuda.CudaKernels.PhaseMarker?.Invoke(axis == QuantAxis.PerChannel ? "keys_quantize" : "values_quantize");
        var quantized = new QuantizedTensor(parts.Codes.DetachFromDisposeScope(), parts.Scale.DetachFromDisposeScope(),
            parts.Zero.DetachFromDisposeScope(), x.shape, options.Bits, g, axis);
        var outliers = k == 0 ? null
            : new OutlierSet(parts.OutlierValues!.DetachFromDisposeScope(), parts.OutlierIndex!.DetachFromDisposeScope(), axis, length, k);
        LowRankFactors? lowRank = null;
        try
        {
            if (residual)
            {
                lowRank = LowRankFactors.Approximate(parts.Residual!, rank, options.PowerIterations, options.Seed);
                Cuda.CudaKernels.PhaseMarker?.Invoke(axis == QuantAxis.PerChannel ? "keys_low_rank" : "values_low_rank");
            }
            return new CompressedBlock(quantized, outliers, lowRank, x.dtype);
        }
        catch
        {
            lowRank?.Dispose();
            quantized.Dispose();
            outliers?.Dispose();
            throw;
        }
    }
}
