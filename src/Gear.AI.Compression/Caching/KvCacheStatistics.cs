namespace Gear.AI.Compression.Caching;

/// <summary>
/// Where a cache's bytes go. All figures are numel × element size of tensors actually held.
/// </summary>
/// <param name="Tokens">Tokens held.</param>
/// <param name="CompressedTokens">Tokens in compressed blocks.</param>
/// <param name="BufferedTokens">Tokens in the full-precision streaming buffer (or the dense cache).</param>
/// <param name="CodeBytes">Packed quantization codes.</param>
/// <param name="ScaleZeroBytes">Per-group float16 scales and zero points.</param>
/// <param name="OutlierBytes">Sparse outlier values and indices (and their block offsets).</param>
/// <param name="LowRankBytes">Low-rank factors A and B (and the group-to-block map).</param>
/// <param name="BufferBytes">Full-precision buffer (allocated), or the dense cache's storage.</param>
/// <param name="FullPrecisionBytes">What the same K/V take in float16 at the current length.</param>
public sealed record KvCacheStatistics(
    long Tokens, long CompressedTokens, long BufferedTokens,
    long CodeBytes, long ScaleZeroBytes, long OutlierBytes, long LowRankBytes, long BufferBytes,
    long FullPrecisionBytes)
{
    /// <summary>Sum of every component.</summary>
    public long ResidentBytes => CodeBytes + ScaleZeroBytes + OutlierBytes + LowRankBytes + BufferBytes;

    /// <summary>Resident bytes over float16 bytes (0 when empty).</summary>
    public double Ratio => FullPrecisionBytes == 0 ? 0 : (double)ResidentBytes / FullPrecisionBytes;

    /// <summary>Empty statistics.</summary>
    public static KvCacheStatistics Empty { get; } = new(0, 0, 0, 0, 0, 0, 0, 0, 0);

    /// <summary>Component-wise sum (tokens of layers are not added: they are the same tokens).</summary>
    public static KvCacheStatistics operator +(KvCacheStatistics a, KvCacheStatistics b) => new(
        Math.Max(a.Tokens, b.Tokens), Math.Max(a.CompressedTokens, b.CompressedTokens), Math.Max(a.BufferedTokens, b.BufferedTokens),
        a.CodeBytes + b.CodeBytes, a.ScaleZeroBytes + b.ScaleZeroBytes, a.OutlierBytes + b.OutlierBytes,
        a.LowRankBytes + b.LowRankBytes, a.BufferBytes + b.BufferBytes, a.FullPrecisionBytes + b.FullPrecisionBytes);
}
