using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>The managed block compression on the CPU against the tensor ops it replaces (OutlierSet, GroupQuantizer).</summary>
public class CpuBlockCompressionTests
{
    public static TheoryData<QuantAxis, int, int, bool, ScalarType> Cases()
    {
        var data = new TheoryData<QuantAxis, int, int, bool, ScalarType>();
        foreach (var axis in new[] { QuantAxis.PerChannel, QuantAxis.PerToken })
            foreach (int bits in new[] { 1, 2, 4, 8 })
                foreach (bool outliers in new[] { true, false })
                    foreach (var type in new[] { ScalarType.Float32, ScalarType.Float16 })
                        data.Add(axis, bits, axis == QuantAxis.PerToken && bits == 2 ? 32 : 64, outliers, type);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SameCodesScalesOutliersAndResidual_AsTheTensorOps(QuantAxis axis, int bits, int g, bool outliers, ScalarType type)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(42 + (ulong)bits, CPU);
        // Heavy tails, as keys have: a few channels and tokens far out.
        using Scalar one = 1, four = 4, eight = 8;
        var spread = rand([1, 1, 1, 64], generator: generator).pow(eight).mul_(four).add_(one, one);
        var x = (randn([2, 2, 128, 64], generator: generator) * spread).to(type);
        int k = outliers ? 1 : 0;
        bool grouped = axis == QuantAxis.PerChannel && k > 0;
        var input = grouped ? x.reshape(2, 2, 2, 64, 64) : x;
        var parts = CpuBlockCompression.CompressBlock(input, bits, g, axis, k, residual: true)!;
        Assert.NotNull(parts);

        // The tensor ops, as GearCompressor runs them without a kernel.
        var xf = x.to(ScalarType.Float32);
        OutlierSet? set = null;
        var toQuantize = xf;
        if (outliers)
            (set, toQuantize) = OutlierSet.Extract(xf, 2.0 / g, axis, g);
        using var quantized = GroupQuantizer.Quantize(toQuantize, bits, g, axis);
        var approx = quantized.Dequantize(ScalarType.Float32);
        set?.ScatterInto(approx);
        var residual = xf - approx;

        var codes = grouped ? parts.Codes.reshape(quantized.Codes.shape) : parts.Codes;
        var scale = grouped ? parts.Scale.reshape(quantized.Scale.shape) : parts.Scale;
        var zero = grouped ? parts.Zero.reshape(quantized.Zero.shape) : parts.Zero;
        Assert.Equal(0, codes.ne(quantized.Codes).sum().item<long>());
        Assert.Equal(0, scale.ne(quantized.Scale).sum().item<long>());
        Assert.Equal(0, zero.ne(quantized.Zero).sum().item<long>());
        if (set is not null)
        {
            Assert.Equal(0, parts.OutlierValues!.reshape(set.Values.shape).ne(set.Values).sum().item<long>());
            Assert.Equal(0, parts.OutlierIndex!.reshape(set.Indices.shape).ne(set.Indices.to(ScalarType.Byte)).sum().item<long>());
            set.Dispose();
        }
        var r = grouped ? parts.Residual!.reshape(residual.shape) : parts.Residual!;
        Assert.True((r - residual).abs().max().item<float>() <= 1e-5f * residual.abs().max().item<float>() + 1e-6f);
    }

    [Fact]
    public void NotTheLayout_ReturnsNull()
    {
        using var x = randn(2, 64, 60);                                                        // D not a multiple of 8
        Assert.Null(CpuBlockCompression.CompressBlock(x, 2, 64, QuantAxis.PerChannel, 1, residual: false));
        using var y = randn(2, 64, 64);
        Assert.Null(CpuBlockCompression.CompressBlock(y, 3, 64, QuantAxis.PerChannel, 0, residual: false)); // 3 bits
    }

    [Fact]
    public void CompressionPhases_ReachASubscribedProfiler()
    {
        var seen = new List<string>();
        using var listener = new Gear.Tests.Shared.PhaseListener(seen.Add);
        using var x = randn(1, 2, 64, 64);
        using var block = GearCompressor.Compress(x, QuantAxis.PerChannel, new GearOptions { Kind = CacheKind.Gear, Bits = 2 }, rank: 2, fused: false);
        Assert.Equal(["keys_outliers", "keys_quantize", "keys_residual", "keys_low_rank"], seen);
    }
}
