using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The seam between attention and a KV cache: one object per transformer layer. Attention never
/// knows which kind of cache it talks to.
/// </summary>
public interface IKvCacheLayer : IDisposable
{
    /// <summary>Tokens held.</summary>
    long Length { get; }

    /// <summary>Bytes of every tensor this layer holds (allocated, not just used).</summary>
    long ResidentBytes { get; }

    /// <summary>What the held tokens take as float16 K and V: 2 bytes × elements at the current length.</summary>
    long FullPrecisionBytes { get; }

    /// <summary>Tokens and bytes by component.</summary>
    KvCacheStatistics Statistics { get; }

    /// <summary>Appends keys and values [B, Hkv, Tnew, D] (post-RoPE). Copies its inputs; the caller keeps ownership of them.</summary>
    void Append(Tensor keys, Tensor values);

    /// <summary>
    /// Attention of <paramref name="queries"/> [B, Hq, Tq, D] (the last Tq positions) over everything held, causal:
    /// returns [B, Hq, Tq, D] in the queries' dtype. Query head i uses key/value head i / (Hq / Hkv).
    /// </summary>
    Tensor Attend(Tensor queries);

    /// <summary>
    /// Drops tokens after <paramref name="length"/> (for prefix reuse) and returns the length kept, which
    /// may be shorter when part of a compressed block would have to be kept; the caller re-feeds the rest.
    /// </summary>
    long Truncate(long length);
}
