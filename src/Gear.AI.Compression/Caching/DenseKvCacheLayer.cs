using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The dense baseline: K and V stored as they are (float16 by default — the "FP16 cache" — or the
/// compute dtype on request), in buffers that grow geometrically so appends are amortized O(1).
/// </summary>
public sealed class DenseKvCacheLayer : IKvCacheLayer
{
    private readonly KvCacheShape _shape;
    private readonly ScalarType _storageType;
    private Tensor? _keys;   // [B, Hkv, capacity, D]
    private Tensor? _values; // [B, Hkv, capacity, D]
    private long _length;

    /// <summary>Creates an empty layer storing <paramref name="storageType"/>.</summary>
    public DenseKvCacheLayer(KvCacheShape shape, ScalarType storageType = ScalarType.Float16)
    {
        _shape = shape.Validate();
        _storageType = storageType;
    }

    /// <inheritdoc />
    public long Length => _length;

    /// <summary>Tokens the buffers hold room for.</summary>
    public long Capacity => _keys?.shape[2] ?? 0;

    /// <inheritdoc />
    public long ResidentBytes => Bytes.Of(_keys) + Bytes.Of(_values);

    /// <inheritdoc />
    public long FullPrecisionBytes => 2L * 2 * _shape.Batch * _shape.KeyValueHeads * _shape.HeadDim * _length;

    /// <inheritdoc />
    public KvCacheStatistics Statistics => new(_length, 0, _length, 0, 0, 0, 0, ResidentBytes, FullPrecisionBytes);

    /// <inheritdoc />
    public void Append(Tensor keys, Tensor values)
    {
        Attention.CheckKv(keys, values, _shape);
        long n = keys.shape[2];
        EnsureCapacity(_length + n);
        Attention.CopyTokens(_keys!, _values!, _length, keys, values);
        _length += n;
    }

    /// <summary>
    /// Allocates room for exactly <paramref name="tokens"/> tokens when the final length is known (a serving
    /// budget, a benchmark), instead of growing geometrically past it; held tokens are kept.
    /// </summary>
    public void Reserve(long tokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, _length);
        if (tokens > Capacity)
            Reallocate(tokens);
    }

    private void EnsureCapacity(long needed)
    {
        if (needed <= Capacity)
            return;
        Reallocate(Math.Max(needed, Math.Max(64, Capacity * 2)));
    }

    private void Reallocate(long capacity)
    {
        long[] size = [_shape.Batch, _shape.KeyValueHeads, capacity, _shape.HeadDim];
        var keys = empty(size, _storageType, _shape.Device).DetachFromDisposeScope();
        var values = empty(size, _storageType, _shape.Device).DetachFromDisposeScope();
        if (_length > 0)
        {
            using var oldK = _keys!.narrow(2, 0, _length);
            using var oldV = _values!.narrow(2, 0, _length);
            Attention.CopyTokens(keys, values, 0, oldK, oldV);
        }
        _keys?.Dispose();
        _values?.Dispose();
        _keys = keys;
        _values = values;
    }

    /// <inheritdoc />
    public Tensor Attend(Tensor queries)
    {
        Attention.CheckQueries(queries, _shape, _length);
        using var keys = _keys!.narrow(2, 0, _length);                         // [B, Hkv, T, D]
        using var values = _values!.narrow(2, 0, _length);                     // [B, Hkv, T, D]
        return Attention.Dense(queries, keys, values, _shape.KeyValueHeads);   // [B, Hq, Tq, D]
    }

    /// <inheritdoc />
    public long Truncate(long length)
    {
        if (length < 0)
            throw new ArgumentOutOfRangeException(nameof(length), length, "length must be 0 or more.");
        _length = Math.Min(_length, length);
        return _length;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _values?.Dispose();
        _keys?.Dispose();
        _values = _keys = null;
        _length = 0;
    }
}
