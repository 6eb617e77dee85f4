using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// One sequence's KV history in a <see cref="PagePool"/>: a block table (the pages of its whole n_b-token blocks, in
/// order, shared with any other sequence holding the same prefix), a buffer page holding the fewer than n_b newest tokens
/// as stored (float16; private to the sequence, and written in place), and the token ids when known (for prefix reuse).
/// Grows only through a <see cref="KvBatch"/> step; can be cut back to any length (<see cref="Truncate"/>) or forked
/// (<see cref="Fork"/>) without recomputing anything.
/// </summary>
public sealed class KvSequence : IDisposable
{
    private readonly List<PageId> _pages = [];
    private List<int>? _tokens = [];
    private PageId? _buffer;          // a dense page of the pool's buffer arena; rows [0, Buffered) hold tokens
    private bool _disposed;

    internal KvSequence(PagePool pool)
    {
        Pool = pool;
        pool.Track(this);
    }

    /// <summary>The pool the sequence's pages live in.</summary>
    public PagePool Pool { get; }

    /// <summary>Tokens held.</summary>
    public long Length => (long)_pages.Count * Pool.PageTokens + Buffered;

    /// <summary>The block table: the pages of the first <c>Pages.Count · n_b</c> tokens.</summary>
    internal IReadOnlyList<PageId> Pages => _pages;

    /// <summary>Tokens in the buffer of recent tokens (fewer than n_b).</summary>
    public int Buffered { get; private set; }

    /// <summary>The token ids of every held position, or null when a step did not give them.</summary>
    public IReadOnlyList<int>? Tokens => _tokens;

    /// <summary>Bytes of the buffer page (held while tokens are buffered).</summary>
    public long BufferBytes => _buffer is { } page ? Pool.Arenas[page.Arena].PageBytes : 0;

    /// <summary>Tokens and bytes by component: this sequence's pages and blocks (shared ones included) and its buffer.</summary>
    public KvCacheStatistics Statistics => Pool.StatisticsOf([this]);

    /// <summary>Bytes this sequence's history takes (shared pages included).</summary>
    public long ResidentBytes => Statistics.ResidentBytes;

    /// <summary>What the same tokens take in an FP16 cache.</summary>
    public long FullPrecisionBytes => Pool.Shape.Fp16Bytes(Length);

    /// <summary>Whether a step is running on this sequence.</summary>
    internal bool InStep { get; set; }

    /// <summary>The buffer page, or null while nothing is buffered.</summary>
    internal PageId? BufferPage => _buffer;

    /// <summary>
    /// Cuts the sequence back to its first <paramref name="length"/> tokens: pages after the cut are released; a page the
    /// cut splits is released too, and its tokens before the cut come back into the buffer as the values attention read
    /// from it. Nothing before the cut is recomputed.
    /// </summary>
    /// <exception cref="CacheBudgetExceededException">A split page's tokens need a buffer page and the pool is full.</exception>
    public void Truncate(long length)
    {
        ThrowIfUnusable();
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length >= Length)
            return;
        int nb = Pool.PageTokens;
        long paged = (long)_pages.Count * nb;
        _tokens?.RemoveRange((int)length, _tokens.Count - (int)length);
        if (length >= paged)
        {
            Buffered = (int)(length - paged);
            if (Buffered == 0)
                ReplaceBuffer(null);
            return;
        }
        int keep = (int)(length / nb), split = (int)(length % nb);
        PageId? buffer = split > 0 ? ReadPage(_pages[keep], split) : null;
        for (int i = _pages.Count - 1; i >= keep; i--)
        {
            Pool.Release(_pages[i]);
            _pages.RemoveAt(i);
        }
        ReplaceBuffer(buffer);
        Buffered = split;
    }

    /// <summary>
    /// A new sequence holding the first <paramref name="length"/> tokens of this one (all of them by default): its pages
    /// are shared, not copied; buffered tokens (and those of a page the cut splits) are copied.
    /// </summary>
    public KvSequence Fork(long? length = null)
    {
        ThrowIfUnusable();
        var fork = Pool.CreateSequence();
        try
        {
            long keep = Math.Min(length ?? Length, Length);
            ArgumentOutOfRangeException.ThrowIfNegative(keep, nameof(length));
            int nb = Pool.PageTokens, whole = (int)Math.Min(_pages.Count, keep / nb);
            for (int i = 0; i < whole; i++)
            {
                Pool.Retain(_pages[i]);
                fork._pages.Add(_pages[i]);
            }
            fork._tokens = _tokens?.Take((int)keep).ToList();
            int rest = (int)(keep - (long)whole * nb);
            if (rest > 0)
            {
                // The rest lies in a page of this sequence (cut inside it) or in its buffer: copied into the fork's buffer.
                // Held while the fork's buffer is allocated: making room may evict this very sequence (an idle conversation).
                var source = whole < _pages.Count ? _pages[whole] : _buffer!.Value;
                Pool.Retain(source);
                try
                {
                    fork._buffer = whole < _pages.Count ? ReadPage(source, rest) : CopyBuffer(source, rest);
                }
                finally
                {
                    Pool.Release(source);
                }
                fork.Buffered = rest;
            }
            return fork;
        }
        catch
        {
            fork.Dispose();
            throw;
        }
    }

    /// <summary>Appends a cached page found by the pool's prefix index (already retained for this sequence).</summary>
    internal void AdoptPage(PageId page, ReadOnlySpan<int> tokens)
    {
        if (Buffered != 0)
            throw new InvalidOperationException("Pages can only be adopted while nothing is buffered.");
        _pages.Add(page);
        _tokens?.AddRange(tokens);
    }

    /// <summary>Ends a step: the step's new pages join the table, the buffer page becomes <paramref name="buffer"/>.</summary>
    internal void Commit(IReadOnlyList<PageId> pages, PageId? buffer, int buffered, IReadOnlyList<int>? tokens)
    {
        int before = _pages.Count;
        _pages.AddRange(pages);
        if (buffer != _buffer)
            ReplaceBuffer(buffer);
        Buffered = buffered;
        if (_tokens is not null && tokens is not null)
        {
            _tokens.AddRange(tokens);
            int nb = Pool.PageTokens;
            var ids = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_tokens);
            for (int i = before; i < _pages.Count; i++)
                Pool.Register(_pages[i], i == 0 ? null : _pages[i - 1], ids.Slice(i * nb, nb));
        }
        else
        {
            _tokens = null;
        }
    }

    private void ReplaceBuffer(PageId? buffer)
    {
        if (_buffer is { } old)
            Pool.Release(old);
        _buffer = buffer;
    }

    /// <summary>A new buffer page holding the first <paramref name="rows"/> tokens of <paramref name="page"/>, all layers, as attention read them.</summary>
    private PageId ReadPage(PageId page, int rows)
    {
        var buffer = Pool.AllocateBuffer();
        var s = Pool.Shape;
        using var _ = no_grad();
        for (int layer = 0; layer < s.Layers; layer++)
        {
            using var scope = NewDisposeScope();
            var (k, v) = PageCodec.Read(Pool.Arenas[page.Arena], layer, [page.Slot]);             // [1, Hkv, n_b, D] float32
            Pool.BufferKeys(buffer, layer).narrow(1, 0, rows).copy_(k[0].narrow(1, 0, rows));
            Pool.BufferValues(buffer, layer).narrow(1, 0, rows).copy_(v[0].narrow(1, 0, rows));
        }
        return buffer;
    }

    /// <summary>A new buffer page holding the first <paramref name="rows"/> tokens of the buffer page <paramref name="source"/>.</summary>
    private PageId CopyBuffer(PageId source, int rows)
    {
        var buffer = Pool.AllocateBuffer();
        using var _ = no_grad();
        for (int layer = 0; layer < Pool.Shape.Layers; layer++)
        {
            using var scope = NewDisposeScope();
            Pool.BufferKeys(buffer, layer).narrow(1, 0, rows).copy_(Pool.BufferKeys(source, layer).narrow(1, 0, rows));
            Pool.BufferValues(buffer, layer).narrow(1, 0, rows).copy_(Pool.BufferValues(source, layer).narrow(1, 0, rows));
        }
        return buffer;
    }

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (InStep)
            throw new InvalidOperationException("The sequence is in a step; truncate or fork it after the step completes.");
    }

    /// <summary>Releases the sequence's pages (last first, so a cached chain is evicted from its end) and its buffer.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        ReplaceBuffer(null);
        for (int i = _pages.Count - 1; i >= 0; i--)
            Pool.Release(_pages[i]);
        _pages.Clear();
        Buffered = 0;
        Pool.Untrack(this);
    }
}
