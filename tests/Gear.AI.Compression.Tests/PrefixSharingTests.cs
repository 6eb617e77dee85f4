using Gear.AI.Compression.Caching;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>Pages shared by sequences over the same prefix: held once, found by token ids, evicted last-in first.</summary>
public class PrefixSharingTests
{
    private static readonly KvShape Shape = new(2, 2, 64, ScalarType.Float32, CPU);

    /// <summary>A step of <paramref name="ids"/> with K/V that depend only on each token's id and position (as a model's do).</summary>
    private static Tensor Feed(KvSequence sequence, IReadOnlyList<int> ids)
    {
        int n = ids.Count;
        long start = sequence.Length;
        using var scope = NewDisposeScope();
        var rows = new List<Tensor>();
        for (int i = 0; i < n; i++)
            rows.Add(KvFixtures.KeyLike(1, 2, 1, 64, ids[i] * 7919 + (int)(start + i))[0]);    // [Hkv, 1, D]
        var k = cat(rows, 1);                                                                 // [Hkv, n, D]
        var q = cat([k, k, k], 0);                                                            // [6, n, D]
        using var step = KvBatch.Begin([new KvBatchItem(sequence, n, ids)]);
        var packedK = k.transpose(0, 1);
        var o = step.Attend(0, q.transpose(0, 1), packedK, packedK);
        step.Store(1, packedK, packedK);
        step.Complete();
        return o.MoveToOuterDisposeScope();
    }

    private static int[] Tokens(int n, int seed) => [.. Enumerable.Range(0, n).Select(i => (i * 31 + seed * 17) % 500)];

    [Theory]
    [InlineData(CacheKind.Fp16)]
    [InlineData(CacheKind.Gear)]
    public void TwoConversationsOverOneDocument_HoldItsPagesOnce_AndEvictingOneKeepsTheOther(CacheKind kind)
    {
        using var pool = new PagePool(Shape, new GearOptions { Kind = kind, Bits = 2 });
        var document = Tokens(1500, 1);
        int[] a = [.. document, .. Tokens(20, 2)], b = [.. document, .. Tokens(25, 3)];
        using var first = pool.CreateSequence();
        using (Feed(first, a)) { }
        var alone = pool.StatisticsOf([first]);

        var second = pool.FindPrefix(b, b.Length - 1);
        Assert.Equal(1472, second.Length);                                                   // 23 whole pages of the document
        Assert.Equal(first.Pages.Take(23), second.Pages);
        using (Feed(second, b[1472..])) { }
        var both = pool.StatisticsOf([first, second]);
        var secondOnly = pool.StatisticsOf([second]);
        // The shared pages (and their block) are counted once: together the two take the first's bytes plus the second's buffer.
        Assert.Equal(alone.ResidentBytes + second.BufferBytes, both.ResidentBytes);
        using (var separate = new PagePool(Shape, new GearOptions { Kind = kind, Bits = 2 }))
        using (var copy = separate.CreateSequence())
        {
            using (Feed(copy, b)) { }
            Assert.Equal(secondOnly.ResidentBytes, copy.ResidentBytes);
        }

        // Evicting the first conversation keeps the second intact: it goes on exactly as a copy that never shared.
        Tensor before;
        using (var copyOfSecond = second.Fork())
            before = Feed(copyOfSecond, [7]);
        first.Dispose();
        pool.DropCachedPages();
        using var after = Feed(second, [7]);
        TensorAssert.Equal(before, after);
        before.Dispose();
        second.Dispose();
        pool.DropCachedPages();
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void PagesNobodyHolds_StayCached_UntilRoomIsWanted()
    {
        using var pool = new PagePool(Shape, GearOptions.Fp16);
        var ids = Tokens(300, 4);
        using (var s = pool.CreateSequence())
            using (Feed(s, ids)) { }
        Assert.Equal(0, pool.PagesInUse);
        Assert.Equal(4, pool.CachedPages);
        using var again = pool.FindPrefix(ids);
        Assert.Equal(256, again.Length);
        Assert.Equal(4, pool.PagesInUse);
        Assert.Equal(0, pool.CachedPages);
        using var other = pool.FindPrefix(Tokens(300, 5));
        Assert.Equal(0, other.Length);
    }

    [Fact]
    public void Fork_SharesPagesAndCopiesTheBuffer_AndDoesNotChangeItsSource()
    {
        using var pool = new PagePool(Shape, new GearOptions { Kind = CacheKind.Gear, Bits = 4 });
        using var source = pool.CreateSequence();
        using (Feed(source, Tokens(150, 6))) { }
        using var fork = source.Fork();
        Assert.Equal(source.Pages, fork.Pages);
        Assert.Equal(source.Buffered, fork.Buffered);
        Assert.Equal(2 + 2, pool.PagesInUse);                                               // two shared pages, a buffer page each
        using var a = Feed(source, [1, 2, 3]);
        using var b = Feed(fork, [1, 2, 3]);
        TensorAssert.Equal(a, b);
        Assert.Equal(153, source.Length);
        Assert.Equal(153, fork.Length);
    }

    /// <summary>
    /// A full pool whose only idle sequence is the one being forked: making room for the fork's buffer evicts it, and the
    /// fork still gets its tokens (it holds the page it copies from while it copies).
    /// </summary>
    [Theory]
    [InlineData(CacheKind.Fp16, 100)]
    [InlineData(CacheKind.Gear, 100)]
    public void Fork_WhenMakingRoomEvictsItsSource_KeepsTheTokens(CacheKind kind, int keep)
    {
        var options = kind == CacheKind.Fp16 ? GearOptions.Fp16 : new GearOptions { Kind = kind, Bits = 4 };
        using var reference = new PagePool(Shape, options);
        using var expectedSource = reference.CreateSequence();
        using (Feed(expectedSource, Tokens(150, 7))) { }
        using var expectedFork = expectedSource.Fork(keep);
        using var expected = Feed(expectedFork, [1, 2, 3]);

        using var probe = new PagePool(Shape, options);
        var held = probe.CreateSequence();
        using (Feed(held, Tokens(150, 7))) { }
        long full = probe.UsedBytes;                                                        // the source, no room for more
        held.Dispose();

        using var pool = new PagePool(Shape, options, maxBytes: full);
        var source = pool.CreateSequence();
        using (Feed(source, Tokens(150, 7))) { }
        bool evicted = false;
        pool.Reclaim = () =>
        {
            if (evicted)
                return false;
            evicted = true;
            source.Dispose();
            return true;
        };
        using var fork = source.Fork(keep);
        Assert.True(evicted, "making room for the fork's buffer evicted its source");
        Assert.Equal(keep, fork.Length);
        using var actual = Feed(fork, [1, 2, 3]);
        TensorAssert.Equal(expected, actual);
    }

    /// <summary>
    /// The same when the rest lies in the source's buffer: evicting the source frees nothing the fork does not hold, so the
    /// pool is full — a clear budget error, and nothing left held.
    /// </summary>
    [Fact]
    public void Fork_OfTheBuffer_InAFullPool_FailsClearly_AndHoldsNothing()
    {
        using var probe = new PagePool(Shape, GearOptions.Fp16);
        var held = probe.CreateSequence();
        using (Feed(held, Tokens(150, 7))) { }
        long full = probe.UsedBytes;
        held.Dispose();

        using var pool = new PagePool(Shape, GearOptions.Fp16, maxBytes: full);
        var source = pool.CreateSequence();
        using (Feed(source, Tokens(150, 7))) { }
        bool evicted = false;
        pool.Reclaim = () =>
        {
            if (evicted)
                return false;
            evicted = true;
            source.Dispose();
            return true;
        };
        Assert.Throws<CacheBudgetExceededException>(() => source.Fork(140));
        Assert.True(evicted);
        Assert.Equal(0, pool.PagesInUse);
    }
}
