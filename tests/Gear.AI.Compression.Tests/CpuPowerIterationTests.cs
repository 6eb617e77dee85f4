using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>The managed power iteration on the CPU (small matrices) against the same steps in tensor ops with Householder QR.</summary>
public class CpuPowerIterationTests
{
    [Theory]
    [InlineData(64, 64, 2, 3)]
    [InlineData(64, 128, 4, 3)]
    [InlineData(32, 64, 8, 2)]
    [InlineData(64, 64, 1, 0)]
    public void SameApproximation_AsTheTensorOps(int n, int d, int rank, int iterations)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(7, CPU);
        var residual = randn([3, 2, n, d], generator: generator);
        using var factors = LowRankFactors.Approximate(residual, rank, iterations, seed: 99);
        Assert.Equal(new long[] { 3, 2, n, rank }, factors.A.shape);
        Assert.Equal(new long[] { 3, 2, d, rank }, factors.B.shape);

        // The reference: the documented steps with linalg.qr, on the same Ω.
        using var omegaGenerator = new Generator(99, CPU);
        var omega = randn([d, rank], dtype: ScalarType.Float32, generator: omegaGenerator);
        var rt = residual.transpose(-1, -2);
        var y = residual.matmul(omega);
        for (int i = 0; i < iterations; i++)
            y = residual.matmul(linalg.qr(rt.matmul(linalg.qr(y).Q)).Q);
        var a = linalg.qr(y).Q;
        var expected = a.matmul(rt.matmul(a).transpose(-1, -2));
        var actual = factors.Reconstruct();
        double error = (actual - expected).norm().item<float>() / expected.norm().item<float>();
        Assert.True(error < 2e-3, $"relative difference {error:E2}");                      // A and B are stored in float16
        // A's columns are orthonormal.
        var a32 = factors.A.to(ScalarType.Float32);
        var gram = a32.transpose(-1, -2).matmul(a32);
        Assert.True((gram - eye(rank)).abs().max().item<float>() < 2e-3);
    }

    [Fact]
    public void ZeroResidual_GivesZeroFactorsNotNaN()
    {
        using var residual = zeros(1, 2, 64, 64);
        using var factors = LowRankFactors.Approximate(residual, 2, 3, seed: 1);
        using var product = factors.Reconstruct();
        Assert.Equal(0f, product.abs().max().item<float>());
    }
}
