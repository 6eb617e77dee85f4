using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>The managed power iteration on the CPU beyond KernelChecks' cases: a residual with nothing in it.</summary>
public class CpuPowerIterationTests
{
    [Fact]
    public void ZeroResidual_GivesZeroFactorsNotNaN()
    {
        using var residual = zeros(1, 2, 64, 64);
        using var factors = LowRankFactors.Approximate(residual, 2, 3, seed: 1);
        using var product = factors.Reconstruct();
        Assert.Equal(0f, product.abs().max().item<float>());
    }
}
