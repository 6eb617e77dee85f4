using Gear.AI.Compression.Caching;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

public class CompressedKvCacheLayerTests
{
    private static readonly KvCacheShape Shape = new(1, 2, 2, 64, ScalarType.Float32, CPU);

    /// <summary>Plain causal attention with K/V repeated per query group: the reference.</summary>
    private static Tensor ReferenceAttention(Tensor q, Tensor k, Tensor v)
    {
        using var scope = NewDisposeScope();
        long groups = q.shape[1] / k.shape[1], tq = q.shape[2], t = k.shape[2];
        var kr = k.repeat_interleave(groups, 1);
        var vr = v.repeat_interleave(groups, 1);
        var s = q.matmul(kr.transpose(-1, -2)) / Math.Sqrt(q.shape[3]);
        var mask = arange(t).unsqueeze(0) <= (arange(tq).unsqueeze(1) + (t - tq));
        s = s.masked_fill(mask.logical_not(), double.NegativeInfinity);
        return s.softmax(-1).matmul(vr).MoveToOuterDisposeScope();
    }

    private static (Tensor K, Tensor V) Kv(long t, int seed) =>
        (KvFixtures.KeyLike(2, 2, t, 64, seed), KvFixtures.KeyLike(2, 2, t, 64, seed + 100));

    [Theory]
    [InlineData(CacheKind.Kivi)]
    [InlineData(CacheKind.GearL)]
    [InlineData(CacheKind.Gear)]
    public void Attend_EqualsDenseAttentionOverTheDecompressedHistory(CacheKind kind)
    {
        var options = new GearOptions { Kind = kind, Bits = 2 };
        using var layer = new CompressedKvCacheLayer(Shape, options);
        var (k, v) = Kv(200, 1);     // prompt: 192 compressed as one block, 8 buffered
        using var _k = k; using var _v = v;
        using var q0 = randn(2, 6, 200, 64);
        layer.Append(k, v);
        using (layer.Attend(q0)) { }
        Assert.Equal(192, layer.CompressedLength);
        Assert.Equal(8, layer.BufferedLength);

        // Decode 70 tokens: one decode block gets compressed on the way.
        var ks = new List<Tensor> { k }; var vs = new List<Tensor> { v };
        for (int i = 0; i < 70; i++)
        {
            var (kn, vn) = Kv(1, 1000 + i);
            ks.Add(kn); vs.Add(vn);
            layer.Append(kn, vn);
            using var q = randn(2, 6, 1, 64);
            using var output = layer.Attend(q);
            if (i == 69)
            {
                // Reference: the same blocks compressed standalone, decompressed, plus the exact buffer.
                Assert.Equal(256, layer.CompressedLength);
                // The cache compresses what its float16 buffer held.
                using var all = cat(ks, 2).to(ScalarType.Float16); using var allV = cat(vs, 2).to(ScalarType.Float16);
                int decodeRank = kind == CacheKind.Kivi ? 0 : options.DecodeRank;
                using var pk = GearCompressor.Compress(all.narrow(2, 0, 192), QuantAxis.PerChannel, options, options.PromptRank);
                using var pv = GearCompressor.Compress(allV.narrow(2, 0, 192), QuantAxis.PerToken, options, options.PromptRank);
                using var dk = GearCompressor.Compress(all.narrow(2, 192, 64), QuantAxis.PerChannel, options with { Seed = options.Seed + 1 }, decodeRank);
                using var dv = GearCompressor.Compress(allV.narrow(2, 192, 64), QuantAxis.PerToken, options with { Seed = options.Seed + 1 }, decodeRank);
                using var keys = cat([pk.Decompress(ScalarType.Float32), dk.Decompress(ScalarType.Float32), all.narrow(2, 256, 14).to(ScalarType.Float32)], 2);
                using var values = cat([pv.Decompress(ScalarType.Float32), dv.Decompress(ScalarType.Float32), allV.narrow(2, 256, 14).to(ScalarType.Float32)], 2);
                using var expected = ReferenceAttention(q, keys, values);
                Assert.True(TensorAssert.RelativeError(output, expected) < 1e-5, $"relative error {TensorAssert.RelativeError(output, expected)}");
            }
        }
        foreach (var t in ks.Concat(vs)) t.Dispose();
    }

    [Fact]
    public void Attend_LosslessSettings_EqualDenseAttention()
    {
        // 8 bits plus a full-rank residual reproduce K/V to float16 precision.
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 8, PromptRank = 64, DecodeRank = 64 };
        using var layer = new CompressedKvCacheLayer(Shape, options);
        var (k, v) = Kv(130, 3);
        using var _k = k; using var _v = v;
        using var g = new Generator(11);
        using var q = randn([2, 6, 130, 64], generator: g);
        layer.Append(k, v);
        using var first = layer.Attend(q);
        using var expectedFirst = ReferenceAttention(q, k, v);
        Assert.True(TensorAssert.RelativeError(first, expectedFirst) < 1e-3, $"{TensorAssert.RelativeError(first, expectedFirst)}");
        Assert.Equal(128, layer.CompressedLength);

        using var q2 = randn([2, 6, 1, 64], generator: g);
        var (k2, v2) = Kv(1, 4);
        using var _k2 = k2; using var _v2 = v2;
        layer.Append(k2, v2);
        using var second = layer.Attend(q2);
        using var allK = cat([k, k2], 2); using var allV = cat([v, v2], 2);
        using var expected = ReferenceAttention(q2, allK, allV);
        Assert.True(TensorAssert.RelativeError(second, expected) < 1e-3, $"{TensorAssert.RelativeError(second, expected)}");
    }

    [Fact]
    public void Append_ManyDecodeSteps_BytesGrowInBlocksNotPerToken()
    {
        using var layer = new CompressedKvCacheLayer(Shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        var compressedBytes = new List<long>();
        for (int i = 0; i < 200; i++)
        {
            var (k, v) = Kv(1, i);
            using var _k = k; using var _v = v;
            layer.Append(k, v);
            using var q = randn(2, 6, 1, 64);
            using (layer.Attend(q)) { }
            var s = layer.Statistics;
            compressedBytes.Add(s.ResidentBytes - s.BufferBytes);
            Assert.True(layer.BufferedLength < 64);
            Assert.True(s.BufferBytes <= 2L * 2 * 2 * 64 * 64 * 2); // buffer: at most one block, float16, K and V, batch 2
            Assert.True(s.BufferBytes >= 2L * 2 * 2 * layer.BufferedLength * 64 * 2);
        }
        // Compressed bytes change only when a block of 64 is flushed: at tokens 64, 128, 192.
        var changes = compressedBytes.Select((b, i) => (b, i)).Where(x => x.i > 0 && x.b != compressedBytes[x.i - 1]).Select(x => x.i + 1).ToArray();
        Assert.Equal([64, 128, 192], changes);
        Assert.Equal(3, layer.BlockCount);
    }

    [Fact]
    public void ResidentBytes_EqualsFormula_At2048Tokens()
    {
        var options = new GearOptions { Kind = CacheKind.Gear, Bits = 2 };
        using var layer = new CompressedKvCacheLayer(new KvCacheShape(1, 1, 2, 64, ScalarType.Float32, CPU), options);
        using var k = randn(1, 2, 2048, 64);
        layer.Append(k, k);
        layer.Flush();
        var s = layer.Statistics;
        long bh = 2, n = 2048, d = 64;
        Assert.Equal(2 * bh * n * d * 2 / 8, s.CodeBytes);                                 // 2-bit codes, K and V
        Assert.Equal(bh * (n / 64) * d * 4 + bh * n * (d / 64) * 4, s.ScaleZeroBytes);    // fp16 scale + zero per group
        Assert.Equal(2 * (bh * (n + d) * 4 * 2) + 8 * (n / 64) * 2, s.LowRankBytes);       // A, B (fp16) + group→block map (int64)
        long keyOutliers = bh * d * 40 * (2 + 2) + 40 * 8 + (n / 64) * 16;                 // 2·20 per channel: fp16 + int16, + slot offsets, + per-group slot table (4 int32)
        long valueOutliers = bh * n * 2 * (2 + 1);                                          // 2 per token-group: fp16 + uint8
        Assert.Equal(keyOutliers + valueOutliers, s.OutlierBytes);
        Assert.Equal(0, s.BufferBytes); // 2048 = 32 whole blocks: no buffer is held
        Assert.Equal(2L * 2 * bh * n * d, s.FullPrecisionBytes);
        Assert.InRange(s.Ratio, 0.25, 0.27);
    }

    [Fact]
    public void Truncate_InsideCompressedHistory_KeepsWholeBlocks()
    {
        using var layer = new CompressedKvCacheLayer(Shape, new GearOptions { Kind = CacheKind.Gear, Bits = 4 });
        var (k, v) = Kv(150, 9);
        using var _k = k; using var _v = v;
        layer.Append(k, v);
        layer.Flush();
        Assert.Equal(128, layer.CompressedLength);
        Assert.Equal(140, layer.Truncate(140)); // inside the buffer: exact
        Assert.Equal(0, layer.Truncate(100));   // inside the only block: drop it, caller re-feeds
        Assert.Equal(0, layer.Length);
        Assert.Equal(0, layer.Statistics.CodeBytes);
    }

    [Fact]
    public void AppendAttend_ManySteps_LeaveNoTensorsAlive()
    {
        using var k = randn(2, 2, 1, 64);
        using var q = randn(2, 6, 1, 64);
        using var layer = new CompressedKvCacheLayer(Shape, new GearOptions { Kind = CacheKind.Gear, Bits = 2 });
        for (int i = 0; i < 64; i++) { layer.Append(k, k); using (layer.Attend(q)) { } }
        long before = TensorAssert.LiveTensors;
        for (int i = 0; i < 64; i++) { layer.Append(k, k); using (layer.Attend(q)) { } }
        long after = TensorAssert.LiveTensors;
        // One more block: stores are replaced, not accumulated; the count stays flat.
        Assert.Equal(before, after);
    }

    [Fact]
    public void DenseLayer_GrowsGeometrically_AndMatchesReference()
    {
        using var layer = new DenseKvCacheLayer(Shape);
        var capacities = new HashSet<long>();
        for (int i = 0; i < 300; i++)
        {
            using var k = randn(2, 2, 1, 64);
            layer.Append(k, k);
            capacities.Add(layer.Capacity);
        }
        Assert.Equal([64, 128, 256, 512], capacities.Order());
        Assert.Equal(2L * 2 * 2 * 300 * 64 * 2, layer.FullPrecisionBytes);
        Assert.Equal(2L * 2 * 2 * 512 * 64 * 2, layer.ResidentBytes);
    }

    [Fact]
    public void DenseLayer_Reserve_HoldsExactlyTheRoomAsked_AndKeepsTokens()
    {
        using var layer = new DenseKvCacheLayer(Shape);
        var (k, v) = Kv(100, 9);
        using var _k = k; using var _v = v;
        layer.Append(k, v);
        layer.Reserve(300);
        Assert.Equal(300, layer.Capacity);
        Assert.Equal(2L * 2 * 2 * 300 * 64 * 2, layer.ResidentBytes);
        var (k2, v2) = Kv(200, 10);
        using var _k2 = k2; using var _v2 = v2;
        layer.Append(k2, v2);
        Assert.Equal(300, layer.Capacity);                                       // no growth past the reservation
        using var q = randn(2, 6, 1, 64);
        using var allK = cat([k, k2], 2); using var allV = cat([v, v2], 2);
        using var expected = ReferenceAttention(q, allK.to(ScalarType.Float16).to(ScalarType.Float32), allV.to(ScalarType.Float16).to(ScalarType.Float32));
        using var actual = layer.Attend(q);
        Assert.True(TensorAssert.RelativeError(actual, expected) < 1e-4);
        Assert.Throws<ArgumentOutOfRangeException>(() => layer.Reserve(10));
    }
}
