using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>K/V-like tensors: a low-rank signal, noise, a few large channels and sparse spikes.</summary>
internal static class KvFixtures
{
    /// <summary>[B, H, n, D] float32 with planted structure; deterministic for a seed.</summary>
    public static Tensor KeyLike(long b = 2, long h = 2, long n = 256, long d = 64, int seed = 1)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator((ulong)seed);
        var left = randn([b, h, n, 4], generator: g);
        var right = randn([b, h, 4, d], generator: g);
        using Scalar noise = 0.3f, rare = 0.01f, spike = 20f;
        var x = left.matmul(right).add(randn([b, h, n, d], generator: g), noise);   // low rank + noise
        var channelScale = ones(d);
        channelScale[3] = 8f;                                                     // outlier channels (keys)
        channelScale[17] = 5f;
        x = x * channelScale;
        var spikes = rand([b, h, n, d], generator: g).lt(rare).to(ScalarType.Float32)
                     .mul(randn([b, h, n, d], generator: g)).mul(spike);             // sparse outliers
        return x.add(spikes, Scalars.One).MoveToOuterDisposeScope();
    }
}
