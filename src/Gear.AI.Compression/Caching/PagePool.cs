using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// All KV history of one model and cache setting on one device, in pages of n_b tokens (<see cref="GearOptions.BufferLength"/>):
/// immutable once written and reference-counted, so sequences share them (a document or system prompt held once by every
/// conversation over it). Compressed pages live in one arena per low-rank rank (a prompt block's rank, a decode block's);
/// the FP16 cache keeps dense pages in one arena. A <see cref="PrefixIndex"/> finds the longest cached prefix of any token
/// sequence; pages nobody references stay cached until their slots are wanted. The attention back-end (fused CPU kernel,
/// fused CUDA kernels or the tensor reference) is chosen once, here. Not thread-safe: one thread runs a model's tensor work.
/// </summary>
public sealed class PagePool : IDisposable
{
    private readonly List<PageArena> _arenas = [];
    private readonly Dictionary<int, PageArena> _byRank = [];
    private readonly PrefixIndex _index = new();
    private readonly HashSet<KvSequence> _sequences = [];
    private long _maxBytes;
    private bool _disposed;

    /// <summary>Whether attention on CUDA and page compression use the one-pass kernels where they apply.</summary>
    public bool FusedKernels { get; }

    /// <summary>Creates an empty pool.</summary>
    /// <param name="shape">Layers, heads, head size, compute dtype and device of the model.</param>
    /// <param name="options">Cache kind and compression settings (validated).</param>
    /// <param name="denseStorageType">For <see cref="CacheKind.Fp16"/>: the stored dtype (float16 by default; the compute dtype for exact parity tests).</param>
    /// <param name="maxBytes">Most bytes the pool's pages and blocks may take, sequences' buffer pages included (unbounded by default).</param>
    /// <param name="fusedKernels">
    /// True (default): attention on CUDA and the compression of pages run Gear.AI's one-pass kernels where they apply;
    /// false: tensor operations (slower; the reference the kernels are tested against).
    /// </param>
    public PagePool(KvShape shape, GearOptions options, ScalarType? denseStorageType = null, long maxBytes = long.MaxValue, bool fusedKernels = true)
        : this(shape, options, denseStorageType, maxBytes, referenceAttention: false, fusedKernels)
    {
    }

    /// <summary>A pool whose attention is the tensor reference when <paramref name="referenceAttention"/> (what the fused paths are tested against).</summary>
    internal PagePool(KvShape shape, GearOptions options, ScalarType? denseStorageType, long maxBytes, bool referenceAttention, bool fusedKernels = true)
    {
        FusedKernels = fusedKernels;
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(options);
        Shape = shape.Validate();
        Options = options.Validate();
        if (options.UsesOutliers && shape.HeadDim % GroupQuantizer.EffectiveGroupSize(options.GroupSize, QuantAxis.PerToken, shape.HeadDim) != 0)
            throw new ArgumentOutOfRangeException(nameof(options), options.GroupSize, $"GroupSize must divide head_dim ({shape.HeadDim}) for GEAR's per-token outliers.");
        if (denseStorageType is { } t && t is not (ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32))
            throw new ArgumentOutOfRangeException(nameof(denseStorageType), t, "The dense cache stores Float16 (the FP16 cache), BFloat16 or Float32.");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBytes);
        BufferType = options.IsCompressed ? ScalarType.Float16 : denseStorageType ?? ScalarType.Float16;
        _maxBytes = maxBytes;
        Attention = referenceAttention ? new TensorPagedAttention(this, "the reference, by request") : PagedAttention.Choose(this);
    }

    /// <summary>What the pool holds per token.</summary>
    public KvShape Shape { get; }

    /// <summary>Cache kind and compression settings.</summary>
    public GearOptions Options { get; }

    /// <summary>n_b: tokens per page.</summary>
    public int PageTokens => Options.BufferLength;

    /// <summary>dtype of the sequences' buffers of recent tokens (float16; the dense storage type for the FP16 cache).</summary>
    public ScalarType BufferType { get; }

    /// <summary>Most bytes the pool's pages and blocks may take (lowering it below what is allocated stops growth; nothing shrinks).</summary>
    public long MaxBytes
    {
        get => _maxBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(value);
            _maxBytes = value;
        }
    }

    /// <summary>How attention reads the pages: which back-end, and why where it is the slow one.</summary>
    public string AttentionPath => Attention.Description;

    /// <summary>
    /// Called when pages are needed and the pool is at <see cref="MaxBytes"/> with nothing cached left to evict: the owner
    /// disposes an idle sequence and returns true, or returns false when it has none (the allocation then fails).
    /// </summary>
    public Func<bool>? Reclaim { get; set; }

    internal PagedAttention Attention { get; }

    internal PrefixIndex Index => _index;

    internal IReadOnlyList<PageArena> Arenas => _arenas;

    /// <summary>Bytes of every page and block tensor allocated (pages in use, cached or free; sequences' buffer pages included).</summary>
    public long AllocatedBytes => _arenas.Sum(a => a.AllocatedBytes);

    /// <summary>Bytes of the pages and blocks in use or cached (each once, however many sequences share them), buffers included.</summary>
    public long UsedBytes => _arenas.Sum(a => (long)a.UsedPages * a.PageBytes + (long)a.UsedBlocks * a.BlockBytes);

    /// <summary>Pages referenced by at least one sequence or step (sequences' buffer pages included).</summary>
    public int PagesInUse => _arenas.Sum(a => a.UsedPages) - _index.ParkedCount;

    /// <summary>Pages nobody references that stay cached for prefix reuse (evicted first when space is needed).</summary>
    public int CachedPages => _index.ParkedCount;

    /// <summary>Live sequences of this pool.</summary>
    public int SequenceCount => _sequences.Count;

    /// <summary>A new empty sequence.</summary>
    public KvSequence CreateSequence()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new KvSequence(this);
    }

    /// <summary>
    /// A new sequence holding the longest run of cached whole pages that starts <paramref name="tokens"/> (at most
    /// <paramref name="maxTokens"/> tokens), shared with whoever made them: no copy, nothing recomputed.
    /// </summary>
    public KvSequence FindPrefix(IReadOnlyList<int> tokens, int maxTokens = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        var sequence = CreateSequence();
        int n = PageTokens;
        PageId? parent = null;
        var ids = tokens as int[] ?? [.. tokens];
        for (int at = 0; at + n <= Math.Min(ids.Length, maxTokens); at += n)
        {
            if (!_index.TryFind(parent, ids.AsSpan(at, n), out var page))
                break;
            Retain(page);
            sequence.AdoptPage(page, ids.AsSpan(at, n));
            parent = page;
        }
        return sequence;
    }

    /// <summary>Evicts every cached page nobody references (their slots become free).</summary>
    public void DropCachedPages()
    {
        while (_index.OldestParked() is { } page)
            Evict(page);
    }

    /// <summary>Grows storage up front to hold <paramref name="pages"/> pages of the prompt-rank arena (serving with a known budget).</summary>
    public void Reserve(int pages)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pages);
        var arena = ArenaFor(Options.UsesLowRank ? Options.PromptRank : 0);
        arena.Reserve(pages, arena.HasLowRank ? pages : 0);
    }

    /// <summary>
    /// The pages and low-rank blocks, by arena, that a new sequence holds at most once its prompt was appended
    /// <paramref name="prefillChunk"/> tokens at a time and <paramref name="generatedTokens"/> more were appended one by
    /// one (each appended piece that completes pages is one block, as <see cref="KvBatch.Begin"/> lays them out), and its
    /// buffer page. What a scheduler sets aside before admitting a request (a cached prefix only lowers it).
    /// </summary>
    public PagePlan PlanFor(int promptTokens, int prefillChunk, int generatedTokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(promptTokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(prefillChunk);
        ArgumentOutOfRangeException.ThrowIfNegative(generatedTokens);
        var counts = new Dictionary<int, (long Pages, long Blocks)>();
        int nb = PageTokens, buffered = 0, bufferPages = 1;
        void Add(int key, long pages, long blocks)
        {
            var (p, b) = counts.GetValueOrDefault(key);
            counts[key] = (p + pages, b + blocks);
        }
        for (int at = 0; at < promptTokens; at += prefillChunk)
        {
            int n = Math.Min(prefillChunk, promptTokens - at), flushed = (buffered + n) / nb * nb, remainder = buffered + n - flushed;
            // A piece that overflows a partly filled buffer page starts the next one before the old one is given back.
            if (buffered > 0 && buffered + n > nb && remainder > 0)
                bufferPages = 2;
            buffered = remainder;
            if (flushed == 0)
                continue;
            int rank = !Options.UsesLowRank ? 0 : Math.Min(n > 1 ? Options.PromptRank : Options.DecodeRank, Math.Min(flushed, Shape.HeadDim));
            Add(rank, flushed / nb, rank > 0 ? 1 : 0);
        }
        // Decode appends one token at a time: a whole page, a block of its own, every n_b tokens.
        int decodePages = (buffered + generatedTokens) / nb;
        if (decodePages > 0)
        {
            int rank = !Options.UsesLowRank ? 0 : Math.Min(Options.DecodeRank, Math.Min(nb, Shape.HeadDim));
            Add(rank, decodePages, rank > 0 ? decodePages : 0);
        }
        Add(Options.IsCompressed ? BufferArenaKey : 0, bufferPages, 0);
        long bytes = counts.Sum(c => c.Value.Pages * ArenaFor(c.Key).PageBytes + c.Value.Blocks * ArenaFor(c.Key).BlockBytes);
        return new PagePlan(this, counts, bytes);
    }

    /// <summary>
    /// Grows storage up front so that every arena holds at least the pages and blocks of <paramref name="plans"/> (the
    /// plans of every running request), within <see cref="MaxBytes"/>: one reallocation for a wave of admitted requests
    /// instead of many as their pages arrive.
    /// </summary>
    public void Reserve(IEnumerable<PagePlan> plans)
    {
        ArgumentNullException.ThrowIfNull(plans);
        var totals = new Dictionary<int, (long Pages, long Blocks)>();
        foreach (var plan in plans)
        {
            if (plan.Pool != this)
                throw new ArgumentException("A plan belongs to another pool.", nameof(plans));
            foreach (var (key, (pages, blocks)) in plan.Counts)
            {
                var (p, b) = totals.GetValueOrDefault(key);
                totals[key] = (p + pages, b + blocks);
            }
        }
        long extra = totals.Sum(t => Math.Max(0, t.Value.Pages - ArenaFor(t.Key).Capacity) * ArenaFor(t.Key).PageBytes
                                     + Math.Max(0, t.Value.Blocks - ArenaFor(t.Key).BlockCapacity) * ArenaFor(t.Key).BlockBytes);
        if (extra == 0 || AllocatedBytes + extra > MaxBytes)
            return;
        foreach (var (key, (pages, blocks)) in totals)
            ArenaFor(key).Reserve((int)Math.Min(int.MaxValue, pages), (int)Math.Min(int.MaxValue, blocks));
    }

    /// <summary>Bytes of the pages, blocks and buffers of <paramref name="sequences"/>, each shared page and block counted once.</summary>
    public KvCacheStatistics StatisticsOf(IEnumerable<KvSequence> sequences)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        var pages = new HashSet<int>();
        var blocks = new HashSet<(int, int)>();
        long tokens = 0, paged = 0, buffered = 0, bufferBytes = 0, full = 0;
        long codes = 0, scales = 0, outliers = 0, lowRank = 0, dense = 0;
        foreach (var s in sequences)
        {
            if (s.Pool != this)
                throw new ArgumentException("A sequence belongs to another pool.", nameof(sequences));
            tokens += s.Length;
            paged += (long)s.Pages.Count * PageTokens;
            buffered += s.Buffered;
            bufferBytes += s.BufferBytes;
            full += Shape.Fp16Bytes(s.Length);
            foreach (var page in s.Pages)
            {
                if (!pages.Add(page.Value))
                    continue;
                var arena = _arenas[page.Arena];
                codes += arena.PartBytes(KvComponent.Codes);
                scales += arena.PartBytes(KvComponent.ScaleZero);
                outliers += arena.PartBytes(KvComponent.Outliers);
                lowRank += arena.PartBytes(KvComponent.LowRank);
                dense += arena.PartBytes(KvComponent.Dense);
                int block = arena.BlockOf(page.Slot);
                if (block >= 0 && blocks.Add((page.Arena, block)))
                    lowRank += arena.BlockBytes;
            }
        }
        return Options.IsCompressed
            ? new KvCacheStatistics(tokens, paged, buffered, codes, scales, outliers, lowRank, bufferBytes, full)
            : new KvCacheStatistics(tokens, 0, tokens, 0, 0, 0, 0, dense + bufferBytes, full);
    }

    /// <summary>Key of the arena of buffer pages among the ranks (the FP16 cache keeps them in its page arena).</summary>
    private const int BufferArenaKey = -1;

    /// <summary>The arena of pages with low-rank rank <paramref name="rank"/> (the dense arena for the FP16 cache).</summary>
    internal PageArena ArenaFor(int rank)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!Options.IsCompressed)
            rank = 0;
        if (_byRank.TryGetValue(rank, out var arena))
            return arena;
        var format = Options.IsCompressed && rank != BufferArenaKey ? PageFormat.Compressed(Shape, Options, rank) : PageFormat.Dense(Shape, Options, BufferType);
        arena = new PageArena(_arenas.Count, format);
        _arenas.Add(arena);
        _byRank[rank] = arena;
        return arena;
    }

    /// <summary>A buffer page for a sequence's recent tokens (dense, the buffer dtype), referenced once by the caller.</summary>
    /// <exception cref="CacheBudgetExceededException">The page does not fit the budget even with nothing idle left.</exception>
    internal PageId AllocateBuffer()
    {
        var arena = ArenaFor(BufferArenaKey);
        MakeRoom(arena, 1, 0);
        return new PageId(arena.Index, arena.AllocatePage(-1));
    }

    /// <summary>Layer <paramref name="layer"/>'s keys of a buffer (or dense) page: a view [Hkv, n_b, D].</summary>
    internal Tensor BufferKeys(PageId page, int layer) => _arenas[page.Arena].Page(PagePart.DenseKeys)[layer, page.Slot];

    /// <summary>Layer <paramref name="layer"/>'s values of a buffer (or dense) page: a view [Hkv, n_b, D].</summary>
    internal Tensor BufferValues(PageId page, int layer) => _arenas[page.Arena].Page(PagePart.DenseValues)[layer, page.Slot];

    /// <summary>
    /// Writes tokens [from, from + count) of CPU packed rows (keys and values [N, Hkv, D]) into rows [at, at + count) of
    /// layer <paramref name="layer"/> of a buffer page, converting to the buffer dtype: no tensor operations.
    /// </summary>
    internal unsafe void WriteBufferRows(PageId page, int layer, int at, TensorMemory.PackedRows rows, int from, int count)
    {
        var arena = _arenas[page.Arena];
        int h = Shape.KeyValueHeads, d = Shape.HeadDim, nb = PageTokens, size = BufferType == ScalarType.Float16 ? 2 : 4;
        long start = ((long)layer * arena.Capacity + page.Slot) * h * nb * d;                // [L, capacity, Hkv, n_b, D]
        byte* keys = (byte*)TensorMemory.Address(arena.Page(PagePart.DenseKeys)) + start * size;
        byte* values = (byte*)TensorMemory.Address(arena.Page(PagePart.DenseValues)) + start * size;
        for (int head = 0; head < h; head++)
            for (int t = 0; t < count; t++)
            {
                long row = ((long)head * nb + at + t) * d * size;
                Convert(rows.Key(from + t, head), rows.Type, keys + row, d);
                Convert(rows.Value(from + t, head), rows.Type, values + row, d);
            }

        void Convert(byte* source, ScalarType type, byte* target, int n)
        {
            if (type == BufferType)
                Buffer.MemoryCopy(source, target, n * size, n * size);
            else if (type == ScalarType.Float32 && BufferType == ScalarType.Float16)
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(new ReadOnlySpan<float>(source, n), new Span<Half>(target, n));
            else
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(source, n), new Span<float>(target, n));
        }
    }

    /// <summary>
    /// <paramref name="count"/> new pages of one block in the arena of <paramref name="rank"/> (a fresh block when it has low
    /// rank), each referenced once by the caller. Makes room first: free slots, then cached pages evicted, then growth
    /// within <see cref="MaxBytes"/>, then <see cref="Reclaim"/>.
    /// </summary>
    /// <exception cref="CacheBudgetExceededException">The pages do not fit the budget even with nothing idle left.</exception>
    internal (PageId[] Pages, int Block) AllocatePages(int rank, int count)
    {
        var arena = ArenaFor(rank);
        MakeRoom(arena, count, arena.HasLowRank ? 1 : 0);
        int block = arena.HasLowRank ? arena.AllocateBlock() : -1;
        var pages = new PageId[count];
        for (int i = 0; i < count; i++)
            pages[i] = new PageId(arena.Index, arena.AllocatePage(block));
        return (pages, block);
    }

    private void MakeRoom(PageArena arena, int pages, int blocks)
    {
        while (arena.FreePages < pages || (blocks > 0 && arena.BlockCapacity - arena.UsedBlocks < blocks))
        {
            if (arena.FreePages < pages && _index.OldestParked(arena.Index) is { } cached)
            {
                Evict(cached);
                continue;
            }
            int addPages = Math.Max(0, pages - arena.FreePages), addBlocks = Math.Max(0, blocks - (arena.BlockCapacity - arena.UsedBlocks));
            long minimum = addPages * arena.PageBytes + addBlocks * arena.BlockBytes;
            int growPages = addPages == 0 ? 0 : Math.Max(addPages, Math.Max(16, arena.Capacity / 2));
            int growBlocks = addBlocks == 0 ? 0 : Math.Max(addBlocks, Math.Max(8, arena.BlockCapacity / 2));
            long room = MaxBytes - _arenas.Sum(a => a.AllocatedBytes);
            if (growPages * arena.PageBytes + growBlocks * arena.BlockBytes > room)
            {
                growPages = addPages;
                growBlocks = addBlocks;
            }
            if (minimum > room)
            {
                if (Reclaim?.Invoke() == true)
                    continue;
                throw Full(minimum);
            }
            arena.Reserve(arena.Capacity + growPages, arena.BlockCapacity + growBlocks);
        }
    }

    private CacheBudgetExceededException Full(long bytes) => new(bytes, MaxBytes,
        $"The KV cache needs {bytes:N0} more bytes but its pool already holds {AllocatedBytes:N0} of its {MaxBytes:N0}-byte budget " +
        $"({PagesInUse:N0} pages in use by {SequenceCount} sequences, nothing idle left to evict). Raise the cache budget " +
        "(GearChatClientOptions.CacheBudgetBytes), use fewer bits or a compressed cache kind, or end other conversations.");

    internal void Retain(PageId page)
    {
        var arena = _arenas[page.Arena];
        if (arena.References(page.Slot) == 0)
            _index.Unpark(page);
        arena.Retain(page.Slot);
    }

    /// <summary>Drops a reference; a page nobody references stays cached when indexed, else its slot is freed.</summary>
    internal void Release(PageId page)
    {
        var arena = _arenas[page.Arena];
        if (arena.Release(page.Slot) > 0)
            return;
        if (_index.Contains(page))
            _index.Park(page);
        else
            arena.Free(page.Slot);
    }

    /// <summary>Evicts a cached page and whatever is indexed below it.</summary>
    private void Evict(PageId page)
    {
        foreach (var freed in _index.Remove(page))
            _arenas[freed.Arena].Free(freed.Slot);
    }

    /// <summary>Indexes pages a sequence just wrote, when their tokens are known.</summary>
    internal void Register(PageId page, PageId? parent, ReadOnlySpan<int> tokens) => _index.Register(page, parent, tokens);

    internal void Track(KvSequence sequence) => _sequences.Add(sequence);

    internal void Untrack(KvSequence sequence) => _sequences.Remove(sequence);

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
            return;
        foreach (var sequence in _sequences.ToArray())
            sequence.Dispose();
        _disposed = true;
        Attention.Dispose();
        for (int i = _arenas.Count - 1; i >= 0; i--)
            _arenas[i].Dispose();
        _arenas.Clear();
        _byRank.Clear();
    }
}
