using Gear.AI.Compression.Caching;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>The fused CPU decode kernel against the tensor path it replaces (the reference).</summary>
public class CpuKernelTests
{
    /// <summary>Feeds the same K/V and queries to a kernel layer and a reference layer and compares every output.</summary>
    private static void AssertKernelMatchesReference(GearOptions options, KvCacheShape shape, long prompt, int steps, int queriesPerStep, int seed)
    {
        using var kernel = new CompressedKvCacheLayer(shape, options, layerIndex: 3);
        using var reference = new CompressedKvCacheLayer(shape, options, layerIndex: 3) { UseFusedKernels = false };
        using var g = new Generator((ulong)seed);
        long b = shape.Batch, h = shape.KeyValueHeads, d = shape.HeadDim, hq = 3 * h;
        int used = 0;
        void Step(long n)
        {
            using var scope = NewDisposeScope();
            var k = KvFixtures.KeyLike(b, h, n, d, seed + used);
            var v = KvFixtures.KeyLike(b, h, n, d, seed + 1000 + used);
            var q = randn([b, hq, Math.Min(n, queriesPerStep), d], generator: g);
            kernel.Append(k, v);
            reference.Append(k, v);
            var expected = reference.Attend(q);
            var actual = kernel.Attend(q);
            double error = TensorAssert.RelativeError(actual, expected);
            Assert.True(error < 2e-5, $"step {used} (length {kernel.Length}): relative error {error}");
            used++;
        }
        Step(prompt);
        for (int i = 0; i < steps; i++)
            Step(1 + i % 2);                                                   // single tokens and short appends
        Assert.True(kernel.BlockCount >= 2, "the run should cover several compressed blocks");
        Assert.Equal(reference.ResidentBytes, kernel.ResidentBytes);
    }

    [Theory]
    [InlineData(CacheKind.Kivi, 2)]
    [InlineData(CacheKind.Kivi, 4)]
    [InlineData(CacheKind.GearL, 2)]
    [InlineData(CacheKind.Gear, 1)]
    [InlineData(CacheKind.Gear, 2)]
    [InlineData(CacheKind.Gear, 3)]
    [InlineData(CacheKind.Gear, 4)]
    [InlineData(CacheKind.Gear, 6)]
    [InlineData(CacheKind.Gear, 8)]
    public void Kernel_EqualsTensorPath_OverPromptAndDecodeBlocks(CacheKind kind, int bits)
    {
        var shape = new KvCacheShape(1, 2, 2, 64, ScalarType.Float32, CPU);
        AssertKernelMatchesReference(new GearOptions { Kind = kind, Bits = bits }, shape, prompt: 150, steps: 90, queriesPerStep: 1, seed: bits);
    }

    [Fact]
    public void Kernel_EqualsTensorPath_WithMaskedMultiTokenQueries_SmallGroupsAndHeads()
    {
        // Several queries per step exercise the causal mask in the buffer; g = 16 tokens and D = 32 give
        // per-token groups of 16 features (2 per token) and uint8 outlier indices across many blocks.
        var shape = new KvCacheShape(1, 1, 2, 32, ScalarType.Float32, CPU);
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2, GroupSize = 16, BufferLength = 32, PromptRank = 3, DecodeRank = 1 };
        AssertKernelMatchesReference(options, shape, prompt: 70, steps: 60, queriesPerStep: 5, seed: 21);
    }

    [Fact]
    public void Kernel_AfterTruncate_EqualsTensorPath()
    {
        var shape = new KvCacheShape(1, 1, 2, 64, ScalarType.Float32, CPU);
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2 };
        using var kernel = new CompressedKvCacheLayer(shape, options);
        using var reference = new CompressedKvCacheLayer(shape, options) { UseFusedKernels = false };
        foreach (var layer in new[] { kernel, reference })
        {
            using var scope = NewDisposeScope();
            layer.Append(KvFixtures.KeyLike(1, 2, 300, 64, 5), KvFixtures.KeyLike(1, 2, 300, 64, 6));
            layer.Flush();
            layer.Truncate(200);                                               // back to the first 192-token block
            layer.Append(KvFixtures.KeyLike(1, 2, 1, 64, 7), KvFixtures.KeyLike(1, 2, 1, 64, 8));
        }
        using var q = randn(1, 6, 1, 64);
        using var expected = reference.Attend(q);
        using var actual = kernel.Attend(q);
        Assert.True(TensorAssert.RelativeError(actual, expected) < 2e-5);
    }
}
