using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// GEAR compression of one KV tensor as pure functions: X ≈ D̂ + S + L.
/// </summary>
/// <remarks>
/// 1. S (GEAR only): per quantization vector (a channel's g tokens for keys, a token's g features for values) the k
///    largest and k smallest entries are kept exactly and replaced by the mean of the rest (<see cref="OutlierSet.Extract"/>).
/// 2. D̂: group-wise asymmetric quantization of X − S (<see cref="GroupQuantizer"/>).
/// 3. L (GEAR, GEAR-L): rank-r approximation of R = X − D̂ − S (<see cref="LowRankFactors"/>).
/// KIVI stops after step 2. Keys use <see cref="QuantAxis.PerChannel"/>, values <see cref="QuantAxis.PerToken"/>.
/// </remarks>
internal static class GearCompressor
{
    /// <summary>Compresses <paramref name="x"/> [..., n, D] (float32, float16 or bfloat16; not modified).</summary>
    /// <param name="x">Keys or values of one block, e.g. [B, Hkv, n, D].</param>
    /// <param name="axis">Per-channel for keys, per-token for values.</param>
    /// <param name="options">Kind, bits, group size, outlier ratio, power iterations, seed. Kind must not be <see cref="CacheKind.Fp16"/>.</param>
    /// <param name="rank">Low-rank rank; <see cref="GearOptions.PromptRank"/> when null.</param>
    /// <param name="fused">
    /// True (default): the one-pass kernels where they apply (CUDA, or managed code on the CPU); false: the tensor ops alone,
    /// the reference those kernels are compared with.
    /// </param>
    public static CompressedBlock Compress(Tensor x, QuantAxis axis, GearOptions options, int? rank = null, bool fused = true)
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
        string part = axis == QuantAxis.PerChannel ? "keys_" : "values_";
        bool wantsLowRank = options.UsesLowRank && r > 0;
        OutlierSet? outliers = null;
        QuantizedTensor? quantized = null;
        LowRankFactors? lowRank = null;
        try
        {
            Tensor? residual = null;                                           // R = X − D̂ − S [..., n, D] float32, in the scope
            if (fused && QuantizeFused(x, axis, options, g, wantsLowRank) is { } kernel)
                (quantized, outliers, residual) = kernel;
            else
            {
                var xf = x.to(ScalarType.Float32);                             // [..., n, D]
                var toQuantize = xf;
                if (options.UsesOutliers)
                {
                    if (axis == QuantAxis.PerToken && d % g != 0)
                        throw new ArgumentOutOfRangeException(nameof(options.GroupSize), options.GroupSize,
                            $"GEAR's per-token outlier vectors need GroupSize to divide head_dim ({d}); choose a divisor of {d}.");
                    if (axis == QuantAxis.PerChannel && n % g != 0)
                        throw new ArgumentOutOfRangeException(nameof(options.GroupSize), options.GroupSize,
                            $"GEAR's per-channel outlier vectors are whole groups of GroupSize ({g}) tokens; this block has {n} tokens.");
                    (outliers, toQuantize) = OutlierSet.Extract(xf, options.OutlierRatio, axis, g);
                    if (Phases.Enabled) Phases.End(part + "outliers");
                }
                quantized = GroupQuantizer.Quantize(toQuantize, options.Bits, options.GroupSize, axis, fused);
                if (Phases.Enabled) Phases.End(part + "quantize");
                if (wantsLowRank)
                {
                    var approx = quantized.Dequantize(ScalarType.Float32);     // [..., n, D]
                    outliers?.ScatterInto(approx);
                    residual = xf - approx;
                    if (Phases.Enabled) Phases.End(part + "residual");
                }
            }
            if (residual is not null)
            {
                lowRank = LowRankFactors.Approximate(residual, r, options.PowerIterations, options.Seed, fused);
                if (Phases.Enabled) Phases.End(part + "low_rank");
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

    /// <summary>
    /// Steps 1 and 2, and the residual step 3 factors when <paramref name="residual"/> is set, in one CUDA launch where it
    /// applies (one outlier a side, as groups of 64 at the default 2% have; no outliers for KIVI and GEAR-L); null
    /// elsewhere. Keys are handed to the kernel as a batch of g-token groups, so each group's channels are its vectors.
    /// The residual stays in the caller's dispose scope; the rest is detached from it.
    /// </summary>
    private static (QuantizedTensor Quantized, OutlierSet? Outliers, Tensor? Residual)? QuantizeFused(Tensor x, QuantAxis axis, GearOptions options, int g, bool residual)
    {
        long n = x.shape[^2], d = x.shape[^1];
        int k = options.UsesOutliers ? OutlierSet.CountPerSide(options.OutlierRatio, g) : 0;
        bool grouped = axis == QuantAxis.PerChannel && k > 0;
        if (grouped && n % g != 0)
            return null;
        var input = grouped ? x.reshape([.. x.shape[..^2], n / g, g, d]) : x;       // keys: [..., G, g, D]
        var parts = x.device_type == DeviceType.CPU ? CpuBlockCompression.CompressBlock(input, options.Bits, g, axis, k, residual)
            : Cuda.CudaKernels.CompressBlock(input, options.Bits, g, axis, k, residual);
        if (parts is null)
            return null;
        Phases.End(axis == QuantAxis.PerChannel ? "keys_quantize" : "values_quantize");
        var lead = x.shape[..^2];
        var codes = grouped ? parts.Codes.reshape([.. lead, n, parts.Codes.shape[^1]]) : parts.Codes;   // [..., n, rowBytes]
        var scale = grouped ? parts.Scale.reshape([.. lead, n / g, d]) : parts.Scale;                 // [..., n/g, D]
        var zero = grouped ? parts.Zero.reshape([.. lead, n / g, d]) : parts.Zero;
        var quantized = new QuantizedTensor(codes.DetachFromDisposeScope(), scale.DetachFromDisposeScope(), zero.DetachFromDisposeScope(),
            x.shape, options.Bits, g, axis);
        var outliers = k == 0 ? null
            : new OutlierSet(parts.OutlierValues!.DetachFromDisposeScope(), parts.OutlierIndex!.DetachFromDisposeScope(), axis, g, k);
        return (quantized, outliers, grouped ? parts.Residual?.reshape([.. lead, n, d]) : parts.Residual);
    }
}
