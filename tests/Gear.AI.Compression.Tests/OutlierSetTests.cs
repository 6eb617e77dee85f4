using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

public class OutlierSetTests
{
    [Theory]
    [InlineData(64, 0.02, 1)]
    [InlineData(2048, 0.02, 20)]
    [InlineData(128, 0.10, 6)]
    [InlineData(100, 0.0, 0)]
    [InlineData(4, 0.5, 1)]
    public void CountPerSide_FollowsFormula(int n, double s, int expected) =>
        Assert.Equal(expected, OutlierSet.CountPerSide(s, n));

    [Theory]
    [InlineData(256, ScalarType.Byte)]
    [InlineData(257, ScalarType.Int16)]
    [InlineData(32768, ScalarType.Int16)]
    [InlineData(40000, ScalarType.Int32)]
    public void IndexType_IsSmallestThatFits(int n, ScalarType expected) => Assert.Equal(expected, OutlierSet.IndexType(n));

    [Theory]
    [InlineData(QuantAxis.PerChannel, 0.1)]   // k = 6 per side: topk
    [InlineData(QuantAxis.PerToken, 0.1)]     // k = 2
    [InlineData(QuantAxis.PerChannel, 0.02)]  // k = 1: argmax / argmin
    [InlineData(QuantAxis.PerToken, 0.02)]
    public void Extract_PicksLargestAndSmallest_AndRestoresExactly(QuantAxis axis, double ratio)
    {
        // float16-representable input so "exact" means bit-exact.
        using Scalar four = 4;
        using var r = randn(2, 3, 128, 64);
        using var x = (r * four).to(ScalarType.Float16).to(ScalarType.Float32);
        using var copy = x.clone();
        var (set, filled) = OutlierSet.Extract(x, ratio, axis, 32);
        using var _ = set;
        using var __ = filled;
        Assert.NotNull(set);
        TensorAssert.Equal(copy, x); // input untouched

        // Every stored value is the extreme of its vector: compare with topk on the same vectors.
        // Vectors: a channel's 32 tokens of a group (keys), a token's 32 features of a group (values).
        using var vectors = axis == QuantAxis.PerChannel ? x.reshape(2, 3, 4, 32, 64).transpose(-1, -2) : x.reshape(2, 3, 128, 2, 32);
        int k = set!.PerSide;
        var (top, _) = vectors.topk(k, -1, largest: true);
        var (bottom, _) = vectors.topk(k, -1, largest: false);
        using var expectedSorted = cat([top, bottom], -1).sort(-1).Values;
        using var actualSorted = set.Values.to(ScalarType.Float32).sort(-1).Values;
        TensorAssert.Equal(expectedSorted, actualSorted);

        // Per channel, each vector's token indices (within its group) ascend.
        if (axis == QuantAxis.PerChannel)
        {
            using var idx = set.Indices.to(ScalarType.Int64);
            using var steps = idx.narrow(-1, 1, idx.shape[^1] - 1) - idx.narrow(-1, 0, idx.shape[^1] - 1);
            Assert.True(steps.min().item<long>() > 0);
        }

        // The filled tensor no longer holds them; scattering them back restores x exactly.
        Assert.True(filled.abs().max().item<float>() < x.abs().max().item<float>());
        set.ScatterInto(filled);
        TensorAssert.Equal(x, filled);
    }

    [Fact]
    public void Extract_ReplacesOutliersWithInlierMean()
    {
        using var x = tensor(new float[] { 1, 2, 3, 100, -50, 4, 5, 6 }).reshape(1, 8);
        var (set, filled) = OutlierSet.Extract(x, 0.25, QuantAxis.PerToken, 8);
        using var _ = set;
        using var __ = filled;
        Assert.Equal(1, set!.PerSide);
        Assert.Equal(new float[] { 1, 2, 3, 3.5f, 3.5f, 4, 5, 6 }, TensorAssert.Floats(filled));
        Assert.Equal(ScalarType.Byte, set.Indices.dtype);
        Assert.Equal(ScalarType.Float16, set.Values.dtype);
    }
}
