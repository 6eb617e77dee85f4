using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The storage of one <see cref="PageFormat"/>: for each part a tensor [layers, capacity, Hkv, ...] holding every page's
/// slot in every layer (a page id means the same slot in all layers), the low-rank blocks' B factors likewise, free
/// lists and reference counts. Grows by whole reallocations (ids stay valid; <see cref="Version"/> changes, so callers
/// re-read addresses); <see cref="Reserve"/> allocates up front where the size is known (a serving budget).
/// </summary>
internal sealed class PageArena : IDisposable
{
    private readonly (PagePart Part, long[] Shape, ScalarType Type)[] _pageParts;
    private readonly (BlockPart Part, long[] Shape, ScalarType Type)[] _blockParts;
    private readonly Tensor?[] _pages = new Tensor?[Enum.GetValues<PagePart>().Length];   // [L, capacity, Hkv, ...]
    private readonly Tensor?[] _blocks = new Tensor?[Enum.GetValues<BlockPart>().Length]; // [L, blockCapacity, Hkv, D, r]
    private readonly Stack<int> _freePages = new();
    private readonly Stack<int> _freeBlocks = new();
    private int[] _pageRefs = [];
    private int[] _blockOf = [];      // block slot of each page, -1 without low rank
    private int[] _blockRefs = [];    // pages (alive or cached) that belong to each block

    public PageArena(int index, PageFormat format)
    {
        Index = index;
        Format = format;
        _pageParts = [.. format.Parts()];
        _blockParts = [.. format.BlockParts()];
        long layers = format.Shape.Layers;
        PageBytes = layers * _pageParts.Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b) * ElementSize(p.Type));
        BlockBytes = layers * _blockParts.Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b) * ElementSize(p.Type));
    }

    public int Index { get; }

    public PageFormat Format { get; }

    /// <summary>Bytes of one page, all layers and parts.</summary>
    public long PageBytes { get; }

    /// <summary>Bytes of one low-rank block (B of keys and values), all layers; 0 without low rank.</summary>
    public long BlockBytes { get; }

    /// <summary>Bytes of one page by statistics component, all layers.</summary>
    public long PartBytes(KvComponent component) => Format.Shape.Layers *
        _pageParts.Where(p => PageFormat.ComponentOf(p.Part) == component).Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b) * ElementSize(p.Type));

    public int Capacity { get; private set; }

    public int BlockCapacity { get; private set; }

    /// <summary>Changes whenever storage is reallocated (addresses read before are stale).</summary>
    public int Version { get; private set; }

    /// <summary>Bytes of every tensor held.</summary>
    public long AllocatedBytes => _pages.Sum(Bytes.Of) + _blocks.Sum(Bytes.Of);

    public int FreePages => _freePages.Count;

    public int UsedPages => Capacity - _freePages.Count;

    public int UsedBlocks => BlockCapacity - _freeBlocks.Count;

    public bool HasLowRank => _blockParts.Length > 0;

    /// <summary>The storage of <paramref name="part"/>: [layers, capacity, Hkv, ...].</summary>
    public Tensor Page(PagePart part) => _pages[(int)part] ?? throw new InvalidOperationException($"{part} is not held by {Format}.");

    /// <summary>Whether this format holds <paramref name="part"/>.</summary>
    public bool Holds(PagePart part) => Array.Exists(_pageParts, p => p.Part == part);

    /// <summary>The storage of <paramref name="part"/>: [layers, blockCapacity, Hkv, D, r].</summary>
    public Tensor Block(BlockPart part) => _blocks[(int)part] ?? throw new InvalidOperationException($"{part} is not held by {Format}.");

    public int References(int slot) => _pageRefs[slot];

    public int BlockOf(int slot) => _blockOf[slot];

    /// <summary>Takes a free page slot (growing when none is free); its count starts at 1.</summary>
    public int AllocatePage(int block)
    {
        if (_freePages.Count == 0)
            Reserve(Math.Max(Capacity + 1, Math.Max(16, Capacity * 3 / 2)), BlockCapacity);
        int slot = _freePages.Pop();
        _pageRefs[slot] = 1;
        _blockOf[slot] = block;
        if (block >= 0)
            _blockRefs[block]++;
        return slot;
    }

    /// <summary>Takes a free block slot (growing when none is free); it lives while pages belong to it.</summary>
    public int AllocateBlock()
    {
        if (_freeBlocks.Count == 0)
            Reserve(Capacity, Math.Max(BlockCapacity + 1, Math.Max(8, BlockCapacity * 3 / 2)));
        int block = _freeBlocks.Pop();
        _blockRefs[block] = 0;
        return block;
    }

    public void Retain(int slot) => _pageRefs[slot]++;

    /// <summary>Drops one reference; returns the count left.</summary>
    public int Release(int slot)
    {
        if (_pageRefs[slot] <= 0)
            throw new InvalidOperationException($"Page {Index}:{slot} released more often than retained.");
        return --_pageRefs[slot];
    }

    /// <summary>Returns a page with no references to the free list, and its block once no page belongs to it.</summary>
    public void Free(int slot)
    {
        if (_pageRefs[slot] != 0)
            throw new InvalidOperationException($"Page {Index}:{slot} is still referenced {_pageRefs[slot]} times.");
        int block = _blockOf[slot];
        _blockOf[slot] = -1;
        _freePages.Push(slot);
        if (block >= 0 && --_blockRefs[block] == 0)
            _freeBlocks.Push(block);
    }

    /// <summary>Grows storage to at least <paramref name="pages"/> pages and <paramref name="blocks"/> blocks (never shrinks).</summary>
    public void Reserve(int pages, int blocks)
    {
        pages = Math.Max(pages, Capacity);
        blocks = HasLowRank ? Math.Max(blocks, BlockCapacity) : 0;
        if (pages == Capacity && blocks == BlockCapacity)
            return;
        var shape = Format.Shape;
        using var _ = no_grad();
        if (pages > Capacity)
        {
            foreach (var (part, size, type) in _pageParts)
                _pages[(int)part] = Grown(_pages[(int)part], [shape.Layers, pages, .. size], type, Capacity);
            Array.Resize(ref _pageRefs, pages);
            Array.Resize(ref _blockOf, pages);
            for (int slot = pages - 1; slot >= Capacity; slot--)
            {
                _blockOf[slot] = -1;
                _freePages.Push(slot);
            }
            Capacity = pages;
        }
        if (blocks > BlockCapacity)
        {
            foreach (var (part, size, type) in _blockParts)
                _blocks[(int)part] = Grown(_blocks[(int)part], [shape.Layers, blocks, .. size], type, BlockCapacity);
            Array.Resize(ref _blockRefs, blocks);
            for (int block = blocks - 1; block >= BlockCapacity; block--)
                _freeBlocks.Push(block);
            BlockCapacity = blocks;
        }
        Version++;
    }

    /// <summary>New storage of <paramref name="size"/> holding the first <paramref name="kept"/> entries (dim 1) of <paramref name="old"/>.</summary>
    private Tensor Grown(Tensor? old, long[] size, ScalarType type, int kept)
    {
        var grown = empty(size, type, Format.Shape.Device).DetachFromDisposeScope();
        if (old is not null)
        {
            if (kept > 0)
            {
                using var target = grown.narrow(1, 0, kept);
                target.copy_(old);
            }
            old.Dispose();
        }
        return grown;
    }

    private static long ElementSize(ScalarType type) => type switch
    {
        ScalarType.Byte or ScalarType.Int8 or ScalarType.Bool => 1,
        ScalarType.Int16 or ScalarType.Float16 or ScalarType.BFloat16 => 2,
        ScalarType.Int32 or ScalarType.Float32 => 4,
        _ => 8,
    };

    public void Dispose()
    {
        for (int i = _blocks.Length - 1; i >= 0; i--)
        {
            _blocks[i]?.Dispose();
            _blocks[i] = null;
        }
        for (int i = _pages.Length - 1; i >= 0; i--)
        {
            _pages[i]?.Dispose();
            _pages[i] = null;
        }
    }
}
