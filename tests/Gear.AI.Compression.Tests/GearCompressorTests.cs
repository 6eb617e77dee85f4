using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

public class GearCompressorTests
{
    private static double Error(CacheKind kind, int bits, QuantAxis axis, Tensor x)
    {
        using var block = GearCompressor.Compress(x, axis, new GearOptions { Kind = kind, Bits = bits });
        using var back = block.Decompress(ScalarType.Float32);
        return TensorAssert.RelativeError(back, x);
    }

    [Theory]
    [InlineData(QuantAxis.PerChannel)]
    [InlineData(QuantAxis.PerToken)]
    public void Compress_TwoBits_ErrorOrderedGearBelowGearLBelowKivi(QuantAxis axis)
    {
        using var x = KvFixtures.KeyLike();
        double kivi = Error(CacheKind.Kivi, 2, axis, x);
        double gearL = Error(CacheKind.GearL, 2, axis, x);
        double gear = Error(CacheKind.Gear, 2, axis, x);
        Assert.True(gear < gearL && gearL < kivi, $"expected Gear < GearL < Kivi, got {gear:F4}, {gearL:F4}, {kivi:F4}");
    }

    [Theory]
    [InlineData(CacheKind.Kivi)]
    [InlineData(CacheKind.GearL)]
    [InlineData(CacheKind.Gear)]
    public void Compress_FourBits_BelowTwoBits(CacheKind kind)
    {
        using var x = KvFixtures.KeyLike(seed: 2);
        foreach (var axis in new[] { QuantAxis.PerChannel, QuantAxis.PerToken })
            Assert.True(Error(kind, 4, axis, x) < Error(kind, 2, axis, x));
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    public void Compress_AnyFloatDtype_DecompressesToItAndLeavesInputAlone(ScalarType dtype)
    {
        using var x = KvFixtures.KeyLike(1, 2, 128, 64).to(dtype);
        using var copy = x.clone();
        using var block = GearCompressor.Compress(x, QuantAxis.PerChannel, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        using var back = block.Decompress();
        Assert.Equal(dtype, back.dtype);
        double err = TensorAssert.RelativeError(back, x);
        Assert.True(err < 0.3, $"relative error {err}"); // 2 bits: 4 levels per group
        TensorAssert.Equal(copy, x);
    }

    public static TheoryData<long, long, long, long, int, CacheKind> Shapes() => new()
    {
        { 1, 2, 128, 64, 2, CacheKind.Kivi },
        { 2, 4, 256, 64, 2, CacheKind.GearL },
        { 1, 2, 2048, 64, 2, CacheKind.Gear },
        { 2, 3, 64, 128, 4, CacheKind.Gear },
        { 1, 1, 100, 64, 3, CacheKind.GearL }, // tail quantization group along tokens, 3-bit packing
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ResidentBytes_EqualsFormula(long b, long h, long n, long d, int bits, CacheKind kind)
    {
        var options = new GearOptions { Kind = kind, Bits = bits };
        using var x = randn(b, h, n, d);
        using var keys = GearCompressor.Compress(x, QuantAxis.PerChannel, options);
        using var values = GearCompressor.Compress(x, QuantAxis.PerToken, options);

        long bh = b * h;
        long codes = bh * n * ((d + 7) / 8 * bits);                     // packed, 8 codes per `bits` bytes
        long g = 64, gv = Math.Min(64, d);
        long keyGroups = bh * ((n + g - 1) / g) * d, valueGroups = bh * n * ((d + gv - 1) / gv);
        long lowRank = options.UsesLowRank ? bh * (n + d) * options.PromptRank * 2 : 0;
        long keyOutliers = 0, valueOutliers = 0;
        if (options.UsesOutliers)
        {
            long kk = 2 * OutlierSet.CountPerSide(0.02, (int)g), kv = 2 * OutlierSet.CountPerSide(0.02, (int)gv);
            keyOutliers = bh * (n / g) * d * kk * (2 + 1);               // per group of g tokens: fp16 value + uint8 index
            valueOutliers = valueGroups * kv * (2 + 1);
        }
        Assert.Equal(codes + keyGroups * 4 + lowRank + keyOutliers, keys.ResidentBytes);
        Assert.Equal(codes + valueGroups * 4 + lowRank + valueOutliers, values.ResidentBytes);
        Assert.Equal(2 * b * h * n * d, keys.FullPrecisionBytes);
    }

    [Fact]
    public void ResidentBytes_TwoBitGearAt2048Tokens_AboutAQuarterOfFp16()
    {
        using var x = randn(1, 2, 2048, 64);
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2 };
        using var k = GearCompressor.Compress(x, QuantAxis.PerChannel, options);
        using var v = GearCompressor.Compress(x, QuantAxis.PerToken, options);
        double ratio = (double)(k.ResidentBytes + v.ResidentBytes) / (k.FullPrecisionBytes + v.FullPrecisionBytes);
        Assert.InRange(ratio, 0.2, 0.3);
    }

    [Fact]
    public void Compress_SameSeed_SameResult()
    {
        using var x = KvFixtures.KeyLike(1, 2, 128, 64);
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2, Seed = 77 };
        using var a = GearCompressor.Compress(x, QuantAxis.PerToken, options);
        using var b = GearCompressor.Compress(x, QuantAxis.PerToken, options);
        using var ra = a.Decompress();
        using var rb = b.Decompress();
        TensorAssert.Equal(ra, rb);
    }

    [Fact]
    public void Compress_LeavesNoTensorsAlive()
    {
        using var x = KvFixtures.KeyLike(1, 2, 128, 64);
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2 };
        TensorAssert.NoLeaks(() =>
        {
            using var block = GearCompressor.Compress(x, QuantAxis.PerChannel, options);
            using var back = block.Decompress();
        });
    }

    [Fact]
    public void Compress_RankLargerThanBlock_ThrowsNamingPromptRank()
    {
        using var x = randn(1, 1, 3, 64);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            GearCompressor.Compress(x, QuantAxis.PerToken, new GearOptions { Kind = CacheKind.GearL, PromptRank = 4 }));
        Assert.Equal("PromptRank", ex.ParamName);
    }

    [Fact]
    public void Compress_GearKeysNotWholeGroups_ThrowsNamingGroupSize()
    {
        // Key outliers are chosen per channel within each group of GroupSize tokens (a cache page holds whole groups).
        using var x = randn(1, 1, 100, 64);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => GearCompressor.Compress(x, QuantAxis.PerChannel, new GearOptions { Kind = CacheKind.Gear }));
        Assert.Equal("GroupSize", e.ParamName);
    }

    [Fact]
    public void Compress_Fp16Kind_Throws()
    {
        using var x = randn(1, 1, 8, 8);
        Assert.Throws<ArgumentException>(() => GearCompressor.Compress(x, QuantAxis.PerToken, GearOptions.Fp16));
    }
}
