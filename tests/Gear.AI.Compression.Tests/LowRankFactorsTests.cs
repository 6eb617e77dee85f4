using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

public class LowRankFactorsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(8)]
    public void Approximate_PlantedRankR_IsRecovered(int rank)
    {
        using var g = new Generator(3);
        using var planted = randn([2, 3, 200, rank], generator: g).matmul(randn([2, 3, rank, 64], generator: g));
        using var factors = LowRankFactors.Approximate(planted, rank, 3, seed: 11);
        Assert.Equal(new long[] { 2, 3, 200, rank }, factors.A.shape);
        Assert.Equal(new long[] { 2, 3, 64, rank }, factors.B.shape);
        Assert.Equal(ScalarType.Float16, factors.A.dtype);
        using var back = factors.Reconstruct();
        Assert.True(TensorAssert.RelativeError(back, planted) < 2e-3, "planted rank-r matrix not recovered to fp16 precision");
    }

    [Fact]
    public void Approximate_EachBatchAndHeadHasItsOwnFactors()
    {
        // Different planted subspaces per (batch, head): batch-0 factors reused elsewhere would fail.
        using var g = new Generator(5);
        using var planted = randn([3, 2, 64, 2], generator: g).matmul(randn([3, 2, 2, 32], generator: g));
        using var factors = LowRankFactors.Approximate(planted, 2, 3, seed: 1);
        using var back = factors.Reconstruct();
        for (int b = 0; b < 3; b++)
            Assert.True(TensorAssert.RelativeError(back[b], planted[b]) < 2e-3);
    }

    [Fact]
    public void Approximate_ASequencesFactors_DoNotDependOnTheRestOfTheBatch()
    {
        // Serving batches sequences together: one conversation must compress the same alone as next to others.
        using var g = new Generator(8);
        using var batch = randn([3, 2, 64, 32], generator: g);
        using var alone = LowRankFactors.Approximate(batch[1].unsqueeze(0), 2, 3, seed: 4);
        using var together = LowRankFactors.Approximate(batch, 2, 3, seed: 4);
        using var a = together.A[1].unsqueeze(0);
        using var b = together.B[1].unsqueeze(0);
        Assert.True(TensorAssert.RelativeError(a, alone.A) < 1e-3);
        Assert.True(TensorAssert.RelativeError(b, alone.B) < 1e-3);
    }

    [Fact]
    public void Approximate_SameSeed_SameFactors_MoreIterationsNoWorse()
    {
        using var x = randn(1, 2, 128, 64);
        using var a = LowRankFactors.Approximate(x, 4, 3, seed: 9);
        using var b = LowRankFactors.Approximate(x, 4, 3, seed: 9);
        TensorAssert.Equal(a.A, b.A);
        TensorAssert.Equal(a.B, b.B);

        using var zero = LowRankFactors.Approximate(x, 4, 0, seed: 9);
        using var ra = a.Reconstruct();
        using var rz = zero.Reconstruct();
        Assert.True(TensorAssert.RelativeError(ra, x) <= TensorAssert.RelativeError(rz, x) + 1e-4);
    }

    [Fact]
    public void Approximate_RankLargerThanMatrix_Throws()
    {
        using var x = randn(1, 1, 8, 64);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => LowRankFactors.Approximate(x, 9, 3, 0));
        Assert.Equal("rank", ex.ParamName);
        Assert.Contains("min(tokens, head_dim) = 8", ex.Message);
    }
}
