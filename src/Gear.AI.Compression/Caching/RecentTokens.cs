using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// One sequence's recent tokens in a step, as attention reads them after its pages: the tokens it had buffered, then the
/// step's new ones, as stored (the buffer dtype). Either rows [0, Count) of its buffer page (the new tokens fit: they were
/// written there), or a transient copy [Hkv, Count, D] (the step crosses a page).
/// </summary>
internal readonly struct RecentTokens
{
    private RecentTokens(PageId? page, Tensor? keys, Tensor? values, int count)
    {
        Page = page;
        TransientKeys = keys;
        TransientValues = values;
        Count = count;
    }

    /// <summary>The buffer page holding them, or null for a transient copy.</summary>
    public PageId? Page { get; }

    /// <summary>The transient keys [Hkv, Count, D] when not in a page.</summary>
    public Tensor? TransientKeys { get; }

    /// <summary>The transient values [Hkv, Count, D] when not in a page.</summary>
    public Tensor? TransientValues { get; }

    /// <summary>Tokens: buffered plus new.</summary>
    public int Count { get; }

    public static RecentTokens InPage(PageId page, int count) => new(page, null, null, count);

    public static RecentTokens Transient(Tensor keys, Tensor values) => new(null, keys, values, (int)keys.shape[1]);

    /// <summary>Keys and values [Hkv, Count, D] of layer <paramref name="layer"/> (views of the page, in the caller's dispose scope).</summary>
    public (Tensor Keys, Tensor Values) Tensors(PagePool pool, int layer) => Page is { } page
        ? (pool.BufferKeys(page, layer).narrow(1, 0, Count), pool.BufferValues(page, layer).narrow(1, 0, Count))
        : (TransientKeys!, TransientValues!);
}
