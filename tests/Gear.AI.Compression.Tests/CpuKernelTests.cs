using Gear.AI.Compression.Caching;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>The fused CPU decode kernel over pages against the tensor reference it replaces.</summary>
public class CpuKernelTests
{
    /// <summary>Feeds the same K/V and queries to a kernel pool and a reference pool and compares every output.</summary>
    private static void AssertKernelMatchesReference(GearOptions options, KvShape shape, long prompt, int steps, int queriesPerStep, int seed)
    {
        using var kernelPool = new PagePool(shape, options);
        using var referencePool = new PagePool(shape, options, null, long.MaxValue, referenceAttention: true);
        Assert.StartsWith("fused CPU", kernelPool.AttentionPath);
        using var kernel = kernelPool.CreateSequence();
        using var reference = referencePool.CreateSequence();
        using var g = new Generator((ulong)seed);
        long h = shape.KeyValueHeads, d = shape.HeadDim, hq = 3 * h;
        int used = 0;
        void Step(long n)
        {
            using var scope = NewDisposeScope();
            var k = KvFixtures.KeyLike(1, h, n, d, seed + used)[0];
            var v = KvFixtures.KeyLike(1, h, n, d, seed + 1000 + used)[0];
            var q = randn([hq, n, d], generator: g);
            var expected = PagedSteps.Attend(reference, q, k, v);
            var actual = PagedSteps.Attend(kernel, q, k, v);
            long rows = Math.Min(n, queriesPerStep);                                       // the fused path's rows; longer appends are the reference in both
            double error = TensorAssert.RelativeError(actual.narrow(1, n - rows, rows), expected.narrow(1, n - rows, rows));
            Assert.True(error < 2e-5, $"step {used} (length {kernel.Length}): relative error {error}");
            used++;
        }
        Step(prompt);
        for (int i = 0; i < steps; i++)
            Step(1 + i % queriesPerStep);                                                   // single tokens and short appends
        Assert.True(kernel.Pages.Count >= 2, "the run should cover several pages");
        Assert.Equal(reference.ResidentBytes, kernel.ResidentBytes);
    }

    [Theory]
    [InlineData(CacheKind.Fp16, 16)]
    [InlineData(CacheKind.Kivi, 2)]
    [InlineData(CacheKind.Kivi, 4)]
    [InlineData(CacheKind.GearL, 2)]
    [InlineData(CacheKind.Gear, 1)]
    [InlineData(CacheKind.Gear, 2)]
    [InlineData(CacheKind.Gear, 3)]
    [InlineData(CacheKind.Gear, 4)]
    [InlineData(CacheKind.Gear, 6)]
    [InlineData(CacheKind.Gear, 8)]
    public void Kernel_EqualsTensorPath_OverPromptAndDecodePages(CacheKind kind, int bits)
    {
        var shape = new KvShape(1, 2, 64, ScalarType.Float32, CPU);
        var options = kind == CacheKind.Fp16 ? GearOptions.Fp16 : new GearOptions { Kind = kind, Bits = bits };
        AssertKernelMatchesReference(options, shape, prompt: 150, steps: 90, queriesPerStep: 2, seed: bits);
    }

    [Fact]
    public void Kernel_EqualsTensorPath_WithMaskedMultiTokenQueries_SmallGroupsAndHeads()
    {
        // Several queries per step exercise the causal mask among the new tokens; g = 16 tokens and D = 32 give
        // per-token groups of 16 features (2 per token), two key groups a page and many pages.
        var shape = new KvShape(1, 2, 32, ScalarType.Float32, CPU);
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2, GroupSize = 16, BufferLength = 32, PromptRank = 3, DecodeRank = 1 };
        AssertKernelMatchesReference(options, shape, prompt: 70, steps: 60, queriesPerStep: 5, seed: 21);
    }

    [Fact]
    public void Kernel_AfterTruncate_EqualsTensorPath()
    {
        var shape = new KvShape(1, 2, 64, ScalarType.Float32, CPU);
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2 };
        using var kernelPool = new PagePool(shape, options);
        using var referencePool = new PagePool(shape, options, null, long.MaxValue, referenceAttention: true);
        using var kernel = kernelPool.CreateSequence();
        using var reference = referencePool.CreateSequence();
        using var k = KvFixtures.KeyLike(1, 2, 300, 64, 5)[0];
        using var v = KvFixtures.KeyLike(1, 2, 300, 64, 6)[0];
        using var q = randn(6, 300, 64);
        foreach (var sequence in new[] { kernel, reference })
        {
            using (PagedSteps.Attend(sequence, q, k, v)) { }
            sequence.Truncate(200);                                                         // splits the fourth page
        }
        using var q1 = randn(6, 1, 64);
        using var k1 = KvFixtures.KeyLike(1, 2, 1, 64, 7)[0];
        using var expected = PagedSteps.Attend(reference, q1, k1, k1);
        using var actual = PagedSteps.Attend(kernel, q1, k1, k1);
        Assert.True(TensorAssert.RelativeError(actual, expected) < 2e-5);
    }
}
