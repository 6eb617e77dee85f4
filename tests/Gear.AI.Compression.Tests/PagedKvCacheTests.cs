using Gear.AI.Compression.Caching;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>A sequence's pages against the math they stand for: attention, bytes, growth, failure and budget.</summary>
public class PagedKvCacheTests
{
    private static readonly KvShape Shape = new(1, 2, 64, ScalarType.Float32, CPU);

    private static (Tensor K, Tensor V) Kv(long t, int seed) =>
        (KvFixtures.KeyLike(1, 2, t, 64, seed)[0], KvFixtures.KeyLike(1, 2, t, 64, seed + 100)[0]);                // [Hkv, t, D]

    [Theory]
    [InlineData(CacheKind.Kivi)]
    [InlineData(CacheKind.GearL)]
    [InlineData(CacheKind.Gear)]
    public void Attend_EqualsDenseAttentionOverTheDecompressedHistory(CacheKind kind)
    {
        var options = new GearOptions { Kind = kind, Bits = 2 };
        using var pool = new PagePool(Shape, options);
        using var sequence = pool.CreateSequence();
        var (k, v) = Kv(200, 1);     // prompt: 192 tokens in 3 pages of one block, 8 buffered
        using var _k = k; using var _v = v;
        using (PagedSteps.Attend(sequence, randn(6, 200, 64), k, v)) { }
        Assert.Equal(3, sequence.Pages.Count);
        Assert.Equal(8, sequence.Buffered);

        // Decode 70 tokens: the buffer fills a decode page on the way.
        var ks = new List<Tensor> { k }; var vs = new List<Tensor> { v };
        for (int i = 0; i < 70; i++)
        {
            var (kn, vn) = Kv(1, 1000 + i);
            ks.Add(kn); vs.Add(vn);
            using var q = randn(6, 1, 64);
            using var output = PagedSteps.Attend(sequence, q, kn, vn);
            if (i < 69)
                continue;
            Assert.Equal(4, sequence.Pages.Count);
            // Reference: the same blocks compressed standalone (the pool seeds every block of a layer alike), decompressed,
            // plus the exact float16 buffer.
            using var all = cat(ks, 1).to(ScalarType.Float16); using var allV = cat(vs, 1).to(ScalarType.Float16);
            int decodeRank = kind == CacheKind.Kivi ? 0 : options.DecodeRank, promptRank = kind == CacheKind.Kivi ? 0 : options.PromptRank;
            using var pk = GearCompressor.Compress(all.narrow(1, 0, 192), QuantAxis.PerChannel, options, promptRank);
            using var pv = GearCompressor.Compress(allV.narrow(1, 0, 192), QuantAxis.PerToken, options, promptRank);
            using var dk = GearCompressor.Compress(all.narrow(1, 192, 64), QuantAxis.PerChannel, options, decodeRank);
            using var dv = GearCompressor.Compress(allV.narrow(1, 192, 64), QuantAxis.PerToken, options, decodeRank);
            using var keys = cat([pk.Decompress(ScalarType.Float32), dk.Decompress(ScalarType.Float32), all.narrow(1, 256, 14).to(ScalarType.Float32)], 1);
            using var values = cat([pv.Decompress(ScalarType.Float32), dv.Decompress(ScalarType.Float32), allV.narrow(1, 256, 14).to(ScalarType.Float32)], 1);
            using var expected = PagedSteps.Reference(q, keys, values);
            Assert.True(TensorAssert.RelativeError(output, expected) < 1e-5, $"relative error {TensorAssert.RelativeError(output, expected)}");
        }
        foreach (var t in ks.Skip(1).Concat(vs.Skip(1))) t.Dispose();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void FusedKernels_Off_CompressesPagesWithTheTensorOps(bool fused)
    {
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2 };
        using var pool = new PagePool(Shape, options, fusedKernels: fused);
        Assert.Equal(fused, pool.FusedKernels);
        using var sequence = pool.CreateSequence();
        var phases = new List<string>();
        using var listener = new Gear.Tests.Shared.PhaseListener(phases.Add);
        var (k, v) = Kv(64, 3);                                                                 // one page, compressed at once
        using var _k = k; using var _v = v;
        using (PagedSteps.Attend(sequence, randn(6, 64, 64), k, v)) { }
        Assert.Single(sequence.Pages);
        Assert.Equal(fused ? ["keys_quantize", "keys_low_rank", "values_quantize", "values_low_rank"] : ["keys_outliers", "keys_quantize", "keys_residual", "keys_low_rank",
                "values_outliers", "values_quantize", "values_residual", "values_low_rank"], phases.Where(p => !p.StartsWith("q", StringComparison.Ordinal)));
    }

    [Fact]
    public void Attend_LosslessSettings_EqualDenseAttention()
    {
        // 8 bits plus a full-rank residual reproduce K/V to float16 precision.
        using var pool = new PagePool(Shape, new GearOptions { Kind = CacheKind.Gear, Bits = 8, PromptRank = 64, DecodeRank = 64 });
        using var sequence = pool.CreateSequence();
        var (k, v) = Kv(130, 3);
        using var _k = k; using var _v = v;
        using var g = new Generator(11);
        using var q = randn([6, 130, 64], generator: g);
        using var first = PagedSteps.Attend(sequence, q, k, v);
        using var expectedFirst = PagedSteps.Reference(q, k, v);
        Assert.True(TensorAssert.RelativeError(first, expectedFirst) < 1e-3, $"{TensorAssert.RelativeError(first, expectedFirst)}");
        Assert.Equal(2, sequence.Pages.Count);

        using var q2 = randn([6, 1, 64], generator: g);
        var (k2, v2) = Kv(1, 4);
        using var _k2 = k2; using var _v2 = v2;
        using var second = PagedSteps.Attend(sequence, q2, k2, v2);
        using var allK = cat([k, k2], 1); using var allV = cat([v, v2], 1);
        using var expected = PagedSteps.Reference(q2, allK, allV);
        Assert.True(TensorAssert.RelativeError(second, expected) < 1e-3, $"{TensorAssert.RelativeError(second, expected)}");
    }

    [Fact]
    public void Decode_ManySteps_BytesGrowByWholePagesNotPerToken()
    {
        using var pool = new PagePool(Shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        using var sequence = pool.CreateSequence();
        var pagedBytes = new List<long>();
        using var q = randn(6, 1, 64);
        for (int i = 0; i < 200; i++)
        {
            var (k, v) = Kv(1, i);
            using var _k = k; using var _v = v;
            using (PagedSteps.Attend(sequence, q, k, v)) { }
            var s = sequence.Statistics;
            pagedBytes.Add(s.ResidentBytes - s.BufferBytes);
            Assert.True(sequence.Buffered < 64);
            Assert.Equal(sequence.Buffered == 0 ? 0 : 2L * 2 * 64 * 64 * 2, s.BufferBytes); // a page's worth of float16 K and V, or none
        }
        var changes = pagedBytes.Select((b, i) => (b, i)).Where(x => x.i > 0 && x.b != pagedBytes[x.i - 1]).Select(x => x.i + 1).ToArray();
        Assert.Equal([64, 128, 192], changes);
        Assert.Equal(3, sequence.Pages.Count);
    }

    /// <summary>Bytes of a Gear 2-bit sequence of whole pages: every tensor counted, against the formula.</summary>
    private static KvCacheStatistics FilledStatistics(int headDim, int tokens, int chunk)
    {
        var shape = new KvShape(1, 2, headDim, ScalarType.Float32, CPU);
        using var pool = new PagePool(shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        using var sequence = pool.CreateSequence();
        for (int start = 0; start < tokens; start += chunk)
        {
            using var k = randn(2, chunk, headDim);
            using var step = KvBatch.Begin([new KvBatchItem(sequence, chunk)]);
            using var packed = k.transpose(0, 1);
            step.Store(0, packed, packed);
            step.Complete();
        }
        return sequence.Statistics;
    }

    [Theory]
    [InlineData(CacheKind.Fp16, 300, 128, 100)]
    [InlineData(CacheKind.Kivi, 300, 128, 100)]
    [InlineData(CacheKind.GearL, 4096 / 16, 64, 70)]
    [InlineData(CacheKind.Gear, 300, 128, 100)]
    [InlineData(CacheKind.Gear, 256, 256, 64)]
    [InlineData(CacheKind.Gear, 70, 30, 5)]        // pieces that overflow a partly filled buffer page
    [InlineData(CacheKind.Gear, 1, 256, 1)]
    public void PlanFor_IsThePeakOfWhatTheSequenceHolds(CacheKind kind, int prompt, int chunk, int generated)
    {
        var shape = new KvShape(2, 2, 64, ScalarType.Float32, CPU);
        using var pool = new PagePool(shape, new GearOptions { Kind = kind, Bits = 2 });
        var plan = pool.PlanFor(prompt, chunk, generated);
        using var sequence = pool.CreateSequence();
        long peak = 0;
        void Append(int n)
        {
            using var k = randn(2, n, 64);
            using var packed = k.transpose(0, 1);
            using var step = KvBatch.Begin([new KvBatchItem(sequence, n)]);
            peak = Math.Max(peak, pool.UsedBytes);                                        // the step's pages are taken at its start
            for (int layer = 0; layer < shape.Layers; layer++)
                step.Store(layer, packed, packed);
            step.Complete();
            peak = Math.Max(peak, pool.UsedBytes);
        }
        for (int at = 0; at < prompt; at += chunk)
            Append(Math.Min(chunk, prompt - at));
        for (int i = 0; i < generated; i++)
            Append(1);
        long bufferPage = pool.PlanFor(0, 1, 0).Bytes;                                      // no tokens: a buffer page alone
        Assert.InRange(plan.Bytes, peak, peak + bufferPage);                               // exact but for a buffer page held at the peak or not
    }

    [Fact]
    public void Reserve_GrowsOnceToThePlans_WithinTheBudget()
    {
        var shape = new KvShape(2, 2, 64, ScalarType.Float32, CPU);
        using var pool = new PagePool(shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        var plans = Enumerable.Range(0, 5).Select(_ => pool.PlanFor(1024, 256, 128)).ToArray();
        pool.Reserve(plans);
        long reserved = pool.AllocatedBytes;
        Assert.Equal(plans.Sum(p => p.Bytes), reserved);
        pool.Reserve(plans);                                                               // already there: nothing more
        Assert.Equal(reserved, pool.AllocatedBytes);

        using var small = new PagePool(shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 }, maxBytes: plans[0].Bytes * 2);
        small.Reserve([.. Enumerable.Range(0, 5).Select(_ => small.PlanFor(1024, 256, 128))]);
        Assert.Equal(0, small.AllocatedBytes);                                             // past the budget: left to growth as pages come
        Assert.Throws<ArgumentException>(() => small.Reserve(plans));                      // another pool's plans
    }

    [Fact]
    public void ResidentBytes_EqualFormula_At2048TokensHeadDim64_AtMost027OfFp16()
    {
        var s = FilledStatistics(64, 2048, 2048);
        long h = 2, n = 2048, d = 64, pages = n / 64;
        Assert.Equal(2 * h * n * d * 2 / 8, s.CodeBytes);                                   // 2-bit codes, K and V
        Assert.Equal(h * pages * d * 4 + h * n * (d / 64) * 4, s.ScaleZeroBytes);            // fp16 scale + zero per group
        Assert.Equal(h * pages * d * 2 * 3 + h * n * 2 * 3, s.OutlierBytes);                // 1 a side per vector: fp16 + uint8
        Assert.Equal(2 * h * n * 4 * 2 + 2 * h * d * 4 * 2, s.LowRankBytes);                // A of every page, B of the one block
        Assert.Equal(0, s.BufferBytes);                                                     // 32 whole pages: no buffer is held
        Assert.Equal(2L * 2 * h * n * d, s.FullPrecisionBytes);
        Assert.InRange(s.Ratio, 0.25, 0.27);
    }

    [Fact]
    public void ResidentBytes_At4096TokensHeadDim128InPromptChunksOf1024_AtMost024OfFp16()
    {
        var s = FilledStatistics(128, 4096, 1024);
        Assert.Equal(2L * 2 * 2 * 4096 * 128, s.FullPrecisionBytes);
        Assert.Equal(4 * (2L * 2 * 128 * 4 * 2), s.LowRankBytes - 2L * 2 * 4096 * 4 * 2); // B of 4 blocks beside every page's A
        Assert.InRange(s.Ratio, 0.22, 0.24);
    }

    [Fact]
    public void AttendSteps_Many_LeaveNoTensorsAlive()
    {
        using var k = randn(2, 1, 64);
        using var q = randn(6, 1, 64);
        using var pool = new PagePool(Shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        using var sequence = pool.CreateSequence();
        for (int i = 0; i < 64; i++)
            using (PagedSteps.Attend(sequence, q, k, k)) { }
        long before = TensorAssert.LiveTensors;
        for (int i = 0; i < 64; i++)
            using (PagedSteps.Attend(sequence, q, k, k)) { }
        // One more page: arenas grow by whole reallocations, not a tensor per page; the count stays flat.
        Assert.Equal(before, TensorAssert.LiveTensors);
    }

    [Fact]
    public void Step_FailingOrAbandoned_LeavesTheSequenceAsItWas()
    {
        var shape = new KvShape(2, 2, 64, ScalarType.Float32, CPU);
        using var pool = new PagePool(shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        using var sequence = pool.CreateSequence();
        var (k, v) = Kv(100, 5);
        using var _k = k; using var _v = v;
        using (PagedSteps.Attend(sequence, randn(6, 100, 64), k, v)) { }
        Assert.Equal(100, sequence.Length);
        int pagesInUse = pool.PagesInUse;
        var (k2, v2) = Kv(60, 6);                                                           // would flush a page: 36 + 60 = 96
        using var _k2 = k2; using var _v2 = v2;
        using (var step = KvBatch.Begin([new KvBatchItem(sequence, 60)]))
        {
            Assert.Equal(pagesInUse + 2, pool.PagesInUse);                                   // reserved: the flushed page and the next buffer page
            using var packedK = k2.transpose(0, 1);
            using var packedV = v2.transpose(0, 1);
            using (step.Attend(0, randn(60, 6, 64), packedK, packedV)) { }                  // layer 0 done, layer 1 never runs
            Assert.Throws<ArgumentException>(() => step.Attend(1, randn(60, 5, 64), packedK, packedV));
        }
        Assert.Equal(100, sequence.Length);
        Assert.Equal(pagesInUse, pool.PagesInUse);
        // The sequence goes on as if the step had never begun.
        using var again = pool.CreateSequence();
        using (PagedSteps.Attend(again, randn(6, 100, 64), k, v)) { }
        using var q = randn(6, 1, 64);
        var (k3, v3) = Kv(1, 7);
        using var _k3 = k3; using var _v3 = v3;
        using var expected = PagedSteps.Attend(again, q, k3, v3);
        using var actual = PagedSteps.Attend(sequence, q, k3, v3);
        TensorAssert.Equal(expected, actual);
    }

    [Fact]
    public void Step_SequenceTwice_OrSequenceOfAnotherPool_Throws()
    {
        using var pool = new PagePool(Shape, GearOptions.Fp16);
        using var other = new PagePool(Shape, GearOptions.Fp16);
        using var a = pool.CreateSequence();
        using var b = other.CreateSequence();
        Assert.Throws<ArgumentException>(() => KvBatch.Begin([new KvBatchItem(a, 1), new KvBatchItem(a, 2)]));
        Assert.Throws<ArgumentException>(() => KvBatch.Begin([new KvBatchItem(a, 1), new KvBatchItem(b, 1)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => KvBatch.Begin([new KvBatchItem(a, 0)]));
        Assert.Equal(0, a.Length);
    }

    [Fact]
    public void Budget_Full_ReclaimsThenThrowsNamingTheBytes()
    {
        using var pool = new PagePool(Shape, GearOptions.Fp16, maxBytes: 3 * 2L * 2 * 64 * 64 * 2);   // three pages
        using var first = pool.CreateSequence();
        var idle = new List<KvSequence>();
        int reclaimed = 0;
        pool.Reclaim = () =>
        {
            if (idle.Count == 0)
                return false;
            idle[0].Dispose();
            idle.RemoveAt(0);
            reclaimed++;
            return true;
        };
        var (k, v) = Kv(192, 8);
        using var _k = k; using var _v = v;
        var second = pool.CreateSequence();
        idle.Add(second);
        using (PagedSteps.Attend(second, randn(6, 128, 64), k.narrow(1, 0, 128), v.narrow(1, 0, 128))) { }   // two pages
        using (PagedSteps.Attend(first, randn(6, 128, 64), k.narrow(1, 0, 128), v.narrow(1, 0, 128))) { }   // reclaims the idle one
        Assert.Equal(1, reclaimed);
        var e = Assert.Throws<CacheBudgetExceededException>(() => PagedSteps.Attend(first, randn(6, 128, 64), k.narrow(1, 0, 128), v.narrow(1, 0, 128)));
        Assert.Contains("budget", e.Message);
        Assert.Equal(pool.MaxBytes, e.BudgetBytes);
        Assert.Equal(128, first.Length);                                                     // the failed step changed nothing
    }
}
