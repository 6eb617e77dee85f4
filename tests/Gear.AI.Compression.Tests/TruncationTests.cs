using Gear.AI.Compression.Caching;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>Cutting a sequence back to any length: nothing before the cut lost or recomputed.</summary>
public class TruncationTests
{
    private static readonly KvShape Shape = new(1, 2, 64, ScalarType.Float32, CPU);

    private static (Tensor K, Tensor V) Kv(long t, int seed) =>
        (KvFixtures.KeyLike(1, 2, t, 64, seed)[0], KvFixtures.KeyLike(1, 2, t, 64, seed + 100)[0]);                // [Hkv, t, D]

    [Fact]
    public void Fp16_TruncatedAtEveryOffsetOfAPage_ThenContinued_EqualsACacheBuiltWithoutTheCutTokens()
    {
        using var pool = new PagePool(Shape, GearOptions.Fp16);
        using var full = pool.CreateSequence();
        var (k, v) = Kv(200, 1);
        var (kn, vn) = Kv(5, 2);
        using var _k = k; using var _v = v; using var _kn = kn; using var _vn = vn;
        using var q = randn(6, 5, 64);
        using (PagedSteps.Attend(full, randn(6, 200, 64), k, v)) { }
        for (int cut = 128; cut < 192; cut++)                                               // every offset of the third page
        {
            using var cutBack = full.Fork();
            cutBack.Truncate(cut);
            Assert.Equal(cut, cutBack.Length);
            Assert.Equal(2, cutBack.Pages.Count);
            Assert.Equal(cut - 128, cutBack.Buffered);
            using var fresh = pool.CreateSequence();
            using (PagedSteps.Attend(fresh, randn(6, cut, 64), k.narrow(1, 0, cut), v.narrow(1, 0, cut))) { }
            using var expected = PagedSteps.Attend(fresh, q, kn, vn);
            using var actual = PagedSteps.Attend(cutBack, q, kn, vn);
            TensorAssert.Equal(expected, actual);                                          // float16 pages and buffer: exactly equal
        }
        Assert.Equal(200, full.Length);                                                     // forks never change what they came from
    }

    [Theory]
    [InlineData(CacheKind.Kivi, 2)]
    [InlineData(CacheKind.GearL, 2)]
    [InlineData(CacheKind.Gear, 2)]
    [InlineData(CacheKind.Gear, 4)]
    public void Compressed_TruncatedAtEveryOffsetOfAPage_ThenContinued_AttendsTheValuesItHeld(CacheKind kind, int bits)
    {
        var options = new GearOptions { Kind = kind, Bits = bits };
        using var pool = new PagePool(Shape, options);
        using var reference = new PagePool(Shape, options, null, long.MaxValue, referenceAttention: true);
        using var full = pool.CreateSequence();
        var (k, v) = Kv(200, 3);
        var (kn, vn) = Kv(5, 4);
        using var _k = k; using var _v = v; using var _kn = kn; using var _vn = vn;
        using var q = randn(6, 5, 64);
        using (PagedSteps.Attend(full, randn(6, 200, 64), k, v)) { }
        // What attention read from the pages: the history as the tensor reference reads it.
        var (history, historyValues) = PageCodec.ReadSequence(pool, 0, full.Pages, ScalarType.Float32)!.Value;
        using var _h = history; using var _hv = historyValues;
        for (int cut = 129; cut < 192; cut += 1)
        {
            using var cutBack = full.Fork(cut);
            Assert.Equal(cut, cutBack.Length);
            using var actual = PagedSteps.Attend(cutBack, q, kn, vn);
            // Expected: plain attention over the first `cut` tokens as held (float16 of what was read for the split page), then the new ones.
            using var keys = cat([history.narrow(1, 0, 128), history.narrow(1, 128, cut - 128).to(ScalarType.Float16).to(ScalarType.Float32), kn.to(ScalarType.Float16).to(ScalarType.Float32)], 1);
            using var values = cat([historyValues.narrow(1, 0, 128), historyValues.narrow(1, 128, cut - 128).to(ScalarType.Float16).to(ScalarType.Float32), vn.to(ScalarType.Float16).to(ScalarType.Float32)], 1);
            using var expected = PagedSteps.Reference(q, keys, values);
            double error = TensorAssert.RelativeError(actual, expected);
            Assert.True(error < 1e-5, $"cut {cut}: relative error {error}");
        }
    }

    [Fact]
    public void Truncate_ReleasesThePagesAfterTheCut_AndItsSplitPage()
    {
        using var pool = new PagePool(Shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        using var sequence = pool.CreateSequence();
        var (k, v) = Kv(300, 5);
        using var _k = k; using var _v = v;
        using (PagedSteps.Attend(sequence, randn(6, 300, 64), k, v)) { }
        Assert.Equal(4 + 1, pool.PagesInUse);                                               // four pages and the buffer page
        sequence.Truncate(290);                                                             // inside the buffer: pages untouched
        Assert.Equal(4 + 1, pool.PagesInUse);
        Assert.Equal(34, sequence.Buffered);
        sequence.Truncate(100);                                                             // splits page 1: pages 1–3 go
        Assert.Equal(1 + 1, pool.PagesInUse);
        Assert.Equal(36, sequence.Buffered);
        sequence.Truncate(0);
        Assert.Equal(0, pool.PagesInUse);
        Assert.Equal(0, sequence.ResidentBytes);
    }
}
