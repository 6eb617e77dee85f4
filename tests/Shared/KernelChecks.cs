using Gear.AI.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.Tests.Shared;

/// <summary>
/// The one-pass kernels against the tensor operations they replace, defined once: the unit tests run these checks on
/// the CPU (the managed kernels) and <c>gpu-selftest</c> runs them on CUDA (the PTX kernels).
/// </summary>
internal static class KernelChecks
{
    /// <summary>One check's outcome: <paramref name="Reference"/> and <paramref name="Measured"/> are the figures compared.</summary>
    public sealed record Result(string Name, string Cache, int Bits, double Reference, double Measured, bool Passed, string Detail);

    /// <summary>Block compression: every kind at 1, 2, 4 and 8 bits, keys and values, value groups of 32, 64 and 128.</summary>
    public static IEnumerable<(GearOptions Options, QuantAxis Axis, int N, int D, bool Half)> CompressionCases() =>
        from kind in new[] { CacheKind.Kivi, CacheKind.GearL, CacheKind.Gear }
        from bits in new[] { 1, 2, 4, 8 }
        from axis in new[] { QuantAxis.PerChannel, QuantAxis.PerToken }
        from groupSize in axis == QuantAxis.PerToken ? new[] { 32, 64, 128 } : [64]
        from shape in new[] { (N: 64, D: 128, Half: true), (N: 128, D: 64, Half: false), (N: 192, D: 96, Half: true) }
        where axis != QuantAxis.PerToken || shape.D % groupSize == 0
        select (new GearOptions { Kind = kind, Bits = bits, GroupSize = groupSize, BufferLength = Math.Max(64, groupSize) }, axis, shape.N, shape.D, shape.Half);

    /// <summary>
    /// Outliers, quantization and residual in one pass against the tensor ops, on a float16 narrow of a longer buffer
    /// (read in place) or a float32 block, with 12σ spikes and a constant slice: outlier values and indices, scales and
    /// zeros equal; code bytes equal but where an outlier's filler (the mean of the others, summed in another order)
    /// lands on a rounding boundary (at most 0.01%); the decompressed block within 1e-3 of the reference's.
    /// </summary>
    public static Result Compression(GearOptions options, QuantAxis axis, int n, int d, bool half, Device device)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(13, CPU);
        using Scalar spike = 12f, share = 0.01f, constant = 0.5f, one = 1f;
        var spikes = (rand([2, 3, n + 40, d], generator: generator) < share).to(ScalarType.Float32).mul_(spike);
        var full = randn([2, 3, n + 40, d], generator: generator).add_(spikes, one);
        full[1, 2].fill_(constant);                                                           // constant vectors: scale 0, tied extremes
        var x = (half ? full.to(ScalarType.Float16) : full).to(device).narrow(2, 0, n);         // [2, 3, n, D], not contiguous
        int rank = Math.Min(options.DecodeRank, n);
        using var fused = GearCompressor.Compress(x, axis, options, rank);
        using var reference = GearCompressor.Compress(x, axis, options, rank, fused: false);
        long codes = fused.Quantized.Codes.ne(reference.Quantized.Codes).sum().item<long>();
        long groups = fused.Quantized.Scale.ne(reference.Quantized.Scale).sum().item<long>() + fused.Quantized.Zero.ne(reference.Quantized.Zero).sum().item<long>();
        long outliers = fused.Outliers is null != reference.Outliers is null ? -1
            : fused.Outliers is null ? 0
            : fused.Outliers.Indices.ne(reference.Outliers!.Indices).sum().item<long>() + fused.Outliers.Values.ne(reference.Outliers.Values).sum().item<long>();
        var expected = reference.Decompress(ScalarType.Float32);
        double difference = ((fused.Decompress(ScalarType.Float32) - expected).norm() / expected.norm()).item<float>();
        bool pass = groups == 0 && outliers == 0 && codes <= fused.Quantized.Codes.numel() / 10_000 && difference <= 1e-3;
        return new Result($"compress_{axis}_n{n}_d{d}_g{options.GroupSize}_{(half ? "f16" : "f32")}", CacheKindNames.Name(options.Kind), options.Bits, 0,
            difference, pass, $"{codes} code bytes, {groups} scales/zeros, {outliers} outlier entries differ; decompressed ‖Δ‖/‖X̂‖ {difference:E2}");
    }

    /// <summary>Power iteration: decode-block shapes at ranks 1 to 8.</summary>
    public static IEnumerable<(int N, int D, int Rank)> PowerIterationCases() =>
        [(64, 128, 1), (64, 128, 2), (64, 128, 3), (64, 128, 4), (48, 96, 6), (64, 64, 8), (32, 256, 4)];

    /// <summary>The one-pass power iteration against the tensor ops (same Ω): the same rank-r approximation, compared as A·Bᵀ.</summary>
    public static Result PowerIteration(int n, int d, int rank, Device device)
    {
        using var scope = NewDisposeScope();
        var residual = randn([2, 3, n, d], generator: new Generator(5, CPU)).to(device);
        using var fused = LowRankFactors.Approximate(residual, rank, 3, 7);
        using var reference = LowRankFactors.Approximate(residual, rank, 3, 7, fused: false);
        var lf = fused.Reconstruct();
        var lr = reference.Reconstruct();
        double difference = ((lf - lr).norm() / lr.norm()).item<float>();
        double errorFused = ((residual - lf).norm() / residual.norm()).item<float>(), errorReference = ((residual - lr).norm() / residual.norm()).item<float>();
        return new Result($"power_iteration_n{n}_d{d}_r{rank}", "-", 0, errorReference, errorFused, difference <= 1e-2,
            $"‖L − L_ref‖/‖L_ref‖ {difference:E2}; approximation error {errorFused:F4} (tensor ops {errorReference:F4})");
    }

    /// <summary>Group quantization alone: keys and values at 1, 2, 4 and 8 bits, groups of 32 and 64.</summary>
    public static IEnumerable<(QuantAxis Axis, int Bits, int N, int D, int G)> QuantizationCases() =>
        from axis in new[] { QuantAxis.PerChannel, QuantAxis.PerToken }
        from bits in new[] { 1, 2, 4, 8 }
        from shape in new[] { (N: 128, D: 128, G: 64), (N: 64, D: 64, G: 32), (N: 192, D: 96, G: 32) }
        select (axis, bits, shape.N, shape.D, shape.G);

    /// <summary>The quantization kernel against the tensor ops: codes, scales and zeros equal.</summary>
    public static Result Quantization(QuantAxis axis, int bits, int n, int d, int g, Device device)
    {
        using var scope = NewDisposeScope();
        using Scalar three = 3f;
        var x = (randn([2, 3, n, d], generator: new Generator(11, CPU)) * three).to(device);
        x[0, 0].zero_();                                                                      // constant groups: scale 0, code 0
        using var fused = GroupQuantizer.Quantize(x, bits, g, axis);
        using var reference = GroupQuantizer.Quantize(x, bits, g, axis, fused: false);
        long codes = fused.Codes.ne(reference.Codes).sum().item<long>();
        long groups = fused.Scale.ne(reference.Scale).sum().item<long>() + fused.Zero.ne(reference.Zero).sum().item<long>();
        return new Result($"quantize_{axis}_n{n}_d{d}_g{g}", "-", bits, 0, codes + groups, codes == 0 && groups == 0,
            $"{codes} code bytes and {groups} scales/zeros differ from the tensor ops");
    }
}
