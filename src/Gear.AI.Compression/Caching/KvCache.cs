using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// A batch of sequences of equal length in a pool of their own: what a static batch (a benchmark, a test, one
/// standalone generation) needs. Serving shares one <see cref="PagePool"/> between many <see cref="KvSequence"/>s instead.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly KvSequence[] _sequences;

    private KvCache(PagePool pool, KvSequence[] sequences)
    {
        Pool = pool;
        _sequences = sequences;
    }

    /// <summary>The pool holding the sequences' pages.</summary>
    public PagePool Pool { get; }

    /// <summary>The sequences, one per batch row.</summary>
    public IReadOnlyList<KvSequence> Sequences => _sequences;

    /// <summary>What the cache holds per token.</summary>
    public KvShape Shape => Pool.Shape;

    /// <summary>Cache kind and compression settings.</summary>
    public GearOptions Options => Pool.Options;

    /// <summary>Sequences (batch rows).</summary>
    public int Batch => _sequences.Length;

    /// <summary>Tokens held per sequence (the first sequence's length; forward passes keep them equal).</summary>
    public long Length => _sequences[0].Length;

    /// <summary>Bytes of every page, block and buffer the sequences hold (shared pages once).</summary>
    public long ResidentBytes => Statistics.ResidentBytes;

    /// <summary>What the same tokens take in an FP16 cache.</summary>
    public long FullPrecisionBytes => Statistics.FullPrecisionBytes;

    /// <summary>Tokens and bytes by component over all sequences.</summary>
    public KvCacheStatistics Statistics => Pool.StatisticsOf(_sequences);

    /// <summary>Creates <paramref name="batch"/> empty sequences in a new pool.</summary>
    /// <param name="shape">Layers, heads, head size, compute dtype and device.</param>
    /// <param name="batch">Sequences.</param>
    /// <param name="options">Kind and compression settings (validated).</param>
    /// <param name="denseStorageType">For <see cref="CacheKind.Fp16"/>: the stored dtype (float16 by default; the compute dtype for exact parity tests).</param>
    public static KvCache Create(KvShape shape, int batch, GearOptions options, ScalarType? denseStorageType = null) =>
        Create(shape, batch, options, denseStorageType, referenceAttention: false);

    /// <summary>As <see cref="Create(KvShape, int, GearOptions, ScalarType?)"/>, with the tensor reference for attention when <paramref name="referenceAttention"/>.</summary>
    internal static KvCache Create(KvShape shape, int batch, GearOptions options, ScalarType? denseStorageType, bool referenceAttention,
        bool fusedKernels = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        var pool = new PagePool(shape, options, denseStorageType, long.MaxValue, referenceAttention, fusedKernels);
        var sequences = new KvSequence[batch];
        for (int i = 0; i < batch; i++)
            sequences[i] = pool.CreateSequence();
        return new KvCache(pool, sequences);
    }

    /// <summary>Cuts every sequence back to <paramref name="length"/> tokens (nothing before the cut is recomputed).</summary>
    public void Truncate(long length)
    {
        foreach (var sequence in _sequences)
            sequence.Truncate(length);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        for (int i = _sequences.Length - 1; i >= 0; i--)
            _sequences[i].Dispose();
        Pool.Dispose();
    }
}
