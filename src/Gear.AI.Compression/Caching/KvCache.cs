using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The per-sequence-batch KV cache: one <see cref="IKvCacheLayer"/> per transformer layer, of the
/// kind <see cref="GearOptions.Kind"/> names. Owns its layers.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly IKvCacheLayer[] _layers;

    private KvCache(KvCacheShape shape, GearOptions options, IKvCacheLayer[] layers)
    {
        Shape = shape;
        Options = options;
        _layers = layers;
    }

    /// <summary>What the cache holds.</summary>
    public KvCacheShape Shape { get; }

    /// <summary>Cache kind and compression settings.</summary>
    public GearOptions Options { get; }

    /// <summary>Per-layer caches.</summary>
    public IReadOnlyList<IKvCacheLayer> Layers => _layers;

    /// <summary>Tokens held (every layer holds the same).</summary>
    public long Length => _layers[0].Length;

    /// <summary>Bytes of every tensor held, all layers.</summary>
    public long ResidentBytes => _layers.Sum(l => l.ResidentBytes);

    /// <summary>Float16 bytes of the same K/V at the current length, all layers.</summary>
    public long FullPrecisionBytes => _layers.Sum(l => l.FullPrecisionBytes);

    /// <summary>Tokens and bytes by component, summed over layers.</summary>
    public KvCacheStatistics Statistics => _layers.Aggregate(KvCacheStatistics.Empty, (sum, l) => sum + l.Statistics);

    /// <summary>Creates an empty cache.</summary>
    /// <param name="shape">Layers, batch, heads, head size, compute dtype and device.</param>
    /// <param name="options">Kind and compression settings (validated).</param>
    /// <param name="denseStorageType">For <see cref="CacheKind.Fp16"/>: the stored dtype (float16 by default; the compute dtype for exact parity tests).</param>
    public static KvCache Create(KvCacheShape shape, GearOptions options, ScalarType? denseStorageType = null)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(options);
        shape.Validate();
        options.Validate();
        var layers = new IKvCacheLayer[shape.Layers];
        for (int i = 0; i < layers.Length; i++)
        {
            layers[i] = options.Kind == CacheKind.Fp16
                ? new DenseKvCacheLayer(shape, denseStorageType ?? ScalarType.Float16)
                : new CompressedKvCacheLayer(shape, options, i);
        }
        return new KvCache(shape, options, layers);
    }

    /// <summary>Drops tokens after <paramref name="length"/>; returns the length every layer kept (see <see cref="IKvCacheLayer.Truncate"/>).</summary>
    public long Truncate(long length)
    {
        long kept = _layers.Min(l => l.Truncate(length));
        foreach (var layer in _layers)
            layer.Truncate(kept);
        return kept;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        for (int i = _layers.Length - 1; i >= 0; i--)
            _layers[i].Dispose();
    }
}
