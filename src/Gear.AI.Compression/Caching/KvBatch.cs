using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// One forward step over a ragged batch of sequences of one pool: each appends its own number of tokens at its own
/// positions. New tokens are packed in item order, [N = Σ NewTokens, ...]. Per layer, <see cref="Attend"/> runs attention
/// for every sequence at once (causal within the new tokens, over each sequence's pages and buffer) and stores the layer's
/// new keys and values: whole n_b-token blocks are compressed into pages reserved when the step began, the rest stays
/// buffered. A step changes its sequences only when it completes: one that fails or is abandoned leaves them as they were
/// and frees what it reserved.
/// </summary>
public sealed class KvBatch : IDisposable
{
    internal sealed class Item
    {
        public required KvSequence Sequence { get; init; }
        public required int Offset { get; init; }          // first packed row
        public required int NewTokens { get; init; }
        public required IReadOnlyList<int>? TokenIds { get; init; }
        public required int Buffered { get; init; }        // b: buffered before the step
        public required int Flushed { get; init; }         // whole-page tokens written this step (from buffer + new)
        public required int Rank { get; init; }
        public PageId[] Pages { get; init; } = [];         // reserved for the flushed tokens
        public int Block { get; init; } = -1;
        public PageId? FreshBuffer { get; set; }           // in place with no buffer yet: the page the new tokens go to
        public PageId? NextBuffer { get; set; }            // crossing a page: the remainder's buffer page
        public int Remainder => Buffered + NewTokens - Flushed;
        public bool InPlace => Buffered + NewTokens <= Sequence.Pool.PageTokens;
        public PageId? BufferPage => FreshBuffer ?? Sequence.BufferPage;
    }

    private readonly Item[] _items;
    private bool _completed;
    private bool _disposed;

    private KvBatch(PagePool pool, Item[] items)
    {
        Pool = pool;
        _items = items;
        TokenCount = items.Sum(i => i.NewTokens);
    }

    /// <summary>The pool of every sequence in the step.</summary>
    public PagePool Pool { get; }

    /// <summary>New tokens over all sequences (N).</summary>
    public int TokenCount { get; }

    /// <summary>Sequences in the step.</summary>
    public int Count => _items.Length;

    internal IReadOnlyList<Item> Items => _items;

    /// <summary>Where each sequence's new tokens start in the packed rows.</summary>
    public int OffsetOf(int item) => _items[item].Offset;

    /// <summary>
    /// Starts a step: checks the items and reserves the pages its whole blocks will fill (evicting cached pages, growing
    /// the pool or reclaiming idle sequences as needed).
    /// </summary>
    /// <exception cref="CacheBudgetExceededException">The pages do not fit the pool's budget.</exception>
    public static KvBatch Begin(IReadOnlyList<KvBatchItem> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        if (items.Count == 0)
            throw new ArgumentException("A step needs at least one sequence.", nameof(items));
        var pool = items[0].Sequence?.Pool ?? throw new ArgumentException("Item 0 has no sequence.", nameof(items));
        var seen = new HashSet<KvSequence>();
        var built = new List<Item>(items.Count);
        try
        {
            int offset = 0;
            var options = pool.Options;
            int nb = pool.PageTokens;
            for (int i = 0; i < items.Count; i++)
            {
                var (sequence, n, ids) = items[i];
                if (sequence is null || sequence.Pool != pool)
                    throw new ArgumentException($"Item {i}: every sequence of a step must belong to the same pool.", nameof(items));
                if (!seen.Add(sequence))
                    throw new ArgumentException($"Item {i}: a sequence can appear only once in a step.", nameof(items));
                if (sequence.InStep)
                    throw new InvalidOperationException($"Item {i}: the sequence is already in a running step.");
                if (n < 1)
                    throw new ArgumentOutOfRangeException(nameof(items), n, $"Item {i}: a step appends at least one token.");
                if (ids is not null && ids.Count != n)
                    throw new ArgumentException($"Item {i}: {ids.Count} token ids for {n} new tokens.", nameof(items));
                int b = sequence.Buffered, flushed = (b + n) / nb * nb;
                int rank = !options.UsesLowRank || flushed == 0 ? 0 : (int)Math.Min(n > 1 ? options.PromptRank : options.DecodeRank, Math.Min(flushed, pool.Shape.HeadDim));
                var (pages, block) = flushed == 0 ? ([], -1) : pool.AllocatePages(rank, flushed / nb);
                var item = new Item
                {
                    Sequence = sequence, Offset = offset, NewTokens = n, TokenIds = ids, Buffered = b, Flushed = flushed, Rank = rank,
                    Pages = pages, Block = block,
                };
                built.Add(item);
                if (item.InPlace && sequence.BufferPage is null)
                    item.FreshBuffer = pool.AllocateBuffer();
                else if (!item.InPlace && item.Remainder > 0)
                    item.NextBuffer = pool.AllocateBuffer();
                offset += n;
            }
        }
        catch
        {
            foreach (var item in built)
                Abandon(pool, item);
            throw;
        }
        foreach (var item in built)
            item.Sequence.InStep = true;
        return new KvBatch(pool, [.. built]);
    }

    /// <summary>
    /// Attention of layer <paramref name="layer"/> for every sequence, then stores the layer's new keys and values.
    /// </summary>
    /// <param name="layer">The layer, 0 … L − 1 (each once per step).</param>
    /// <param name="queries">[N, Hq, D] (post-RoPE), packed by sequence.</param>
    /// <param name="keys">[N, Hkv, D] (post-RoPE).</param>
    /// <param name="values">[N, Hkv, D].</param>
    /// <returns>[N, Hq, D] in the queries' dtype.</returns>
    public Tensor Attend(int layer, Tensor queries, Tensor keys, Tensor values)
    {
        CheckLayer(layer);
        CheckPacked(queries, nameof(queries), null);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var recent = Recent(layer, keys, values);
        var output = Pool.Attention.Attend(layer, this, queries, recent);                     // [N, Hq, D]
        Write(layer, recent);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Whether <see cref="AttendOnDevice"/> can run this step for a model of <paramref name="queryHeads"/> query heads: the
    /// pool attends with the fused CUDA kernels and every sequence appends one token into its buffer page.
    /// </summary>
    internal bool AttendsOnDevice(int queryHeads) =>
        Pool.Attention is CudaPagedAttention && CudaPagedAttention.FitsDecode(this, queryHeads / Pool.Shape.KeyValueHeads);

    /// <summary>
    /// <see cref="Attend"/> for a step that <see cref="AttendsOnDevice"/>, on device buffers: the new keys and values go into
    /// the buffer pages and attention runs as kernel launches alone; only a layer in which some sequence fills its page runs
    /// tensor operations (that page's compression).
    /// </summary>
    internal void AttendOnDevice(int layer, in DeviceRows rows)
    {
        CheckLayer(layer);
        var recent = _deviceRecent ??= [.. _items.Select(i => RecentTokens.InPage(i.BufferPage!.Value, i.Buffered + i.NewTokens))];
        ((CudaPagedAttention)Pool.Attention).AttendDecode(layer, this, recent, rows);
        if (!_items.Any(i => i.Flushed > 0))
            return;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Write(layer, recent);
    }

    private RecentTokens[]? _deviceRecent;

    /// <summary>
    /// Stores the layer's new keys and values [N, Hkv, D] without attention (filling a cache whose outputs are not
    /// wanted: memory measurements, benchmarks of later steps).
    /// </summary>
    public void Store(int layer, Tensor keys, Tensor values)
    {
        CheckLayer(layer);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Write(layer, Recent(layer, keys, values));
    }

    private void CheckLayer(int layer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_completed)
            throw new InvalidOperationException("The step has completed.");
        if ((uint)layer >= (uint)Pool.Shape.Layers)
            throw new ArgumentOutOfRangeException(nameof(layer), layer, $"layer must be in [0, {Pool.Shape.Layers}).");
    }

    /// <summary>
    /// The keys and values attention reads for each sequence after its pages: its buffered tokens then its new ones, as
    /// stored. New tokens go straight into the sequence's buffer page where they fit (rows after the buffered ones, which
    /// a failed step leaves unused), else into a transient copy.
    /// </summary>
    private RecentTokens[] Recent(int layer, Tensor keys, Tensor values)
    {
        var s = Pool.Shape;
        CheckPacked(keys, nameof(keys), s.KeyValueHeads);
        CheckPacked(values, nameof(values), s.KeyValueHeads);
        var recent = new RecentTokens[_items.Length];
        var rows = TensorMemory.PackedRows.Of(keys, values);                                  // CPU: written without tensor ops
        if (rows is null)
            WriteInPlace(layer, keys, values);
        for (int i = 0; i < _items.Length; i++)
        {
            var item = _items[i];
            int total = item.Buffered + item.NewTokens;
            if (item.InPlace)
            {
                var page = item.BufferPage!.Value;
                if (rows is { } packed)
                    Pool.WriteBufferRows(page, layer, item.Buffered, packed, item.Offset, item.NewTokens);
                recent[i] = RecentTokens.InPage(page, total);
                continue;
            }
            var k = keys.narrow(0, item.Offset, item.NewTokens).transpose(0, 1).to(Pool.BufferType);   // [Hkv, n, D]
            var v = values.narrow(0, item.Offset, item.NewTokens).transpose(0, 1).to(Pool.BufferType);
            if (item.Buffered > 0)
            {
                var page = item.Sequence.BufferPage!.Value;
                recent[i] = RecentTokens.Transient(cat([Pool.BufferKeys(page, layer).narrow(1, 0, item.Buffered), k], 1),
                                                   cat([Pool.BufferValues(page, layer).narrow(1, 0, item.Buffered), v], 1));
            }
            else
            {
                recent[i] = RecentTokens.Transient(k.contiguous(), v.contiguous());
            }
        }
        return recent;
    }

    /// <summary>
    /// Device tensors: every in-place sequence's new keys and values go into its buffer page with one indexed write per
    /// layer (rows picked by slot and position), not two copies per sequence.
    /// </summary>
    private void WriteInPlace(int layer, Tensor keys, Tensor values)
    {
        if (_inPlace is null)
        {
            var source = new List<long>();
            var slots = new List<long>();
            var positions = new List<long>();
            foreach (var item in _items.Where(i => i.InPlace))
                for (int t = 0; t < item.NewTokens; t++)
                {
                    source.Add(item.Offset + t);
                    slots.Add(item.BufferPage!.Value.Slot);
                    positions.Add(item.Buffered + t);
                }
            var device = keys.device;
            bool packedInOrder = source.Count == TokenCount;                                   // every row, in order: no gather
            _inPlace = source.Count == 0 ? new InPlaceRows(null, null, null, 0)
                : new InPlaceRows(packedInOrder ? null : ToDevice(source), ToDevice(slots), ToDevice(positions),
                    _items.First(i => i.InPlace).BufferPage!.Value.Arena);

            // Pinned and non-blocking: a pageable copy would wait for every kernel queued before it (the host could never
            // run ahead of the device; on an H100 that was 15% of the Gear step).
            Tensor ToDevice(List<long> values)
            {
                using var host = tensor(values.ToArray(), dtype: ScalarType.Int64);
                return TensorMemory.ToDevice(host, device).DetachFromDisposeScope();
            }
        }
        if (_inPlace.Slots is not { } slotIndex)
            return;
        var arena = Pool.Arenas[_inPlace.Arena];
        var k = _inPlace.Source is { } src ? keys.index_select(0, src) : keys;              // [n, Hkv, D]
        var v = _inPlace.Source is { } src2 ? values.index_select(0, src2) : values;
        TensorIndex[] at = [TensorIndex.Tensor(slotIndex), TensorIndex.Colon, TensorIndex.Tensor(_inPlace.Positions!)];
        arena.Page(PagePart.DenseKeys)[layer].index_put_(k.to(Pool.BufferType), at);       // [capacity, Hkv, n_b, D] at (slot, :, row)
        arena.Page(PagePart.DenseValues)[layer].index_put_(v.to(Pool.BufferType), at);
    }

    /// <summary>Where the in-place rows go, built once per step on the device (every layer writes the same places).</summary>
    private sealed record InPlaceRows(Tensor? Source, Tensor? Slots, Tensor? Positions, int Arena);

    private InPlaceRows? _inPlace;

    /// <summary>
    /// Writes each sequence's whole pages (its flushed tokens compressed as one block) and the remainder's new buffer page,
    /// for one layer. Sequences flushing as many tokens at the same rank compress in one call.
    /// </summary>
    private void Write(int layer, RecentTokens[] recent)
    {
        // One projection seed per layer: a block's low rank does not depend on which sequence or step it came from.
        long seed = Pool.Options.Seed + 7919L * layer;
        foreach (var group in Enumerable.Range(0, _items.Length).Where(i => _items[i].Flushed > 0)
                     .GroupBy(i => (_items[i].Flushed, _items[i].Pages[0].Arena)))
        {
            var members = group.ToArray();
            int flushed = group.Key.Flushed;
            var parts = members.Select(i => recent[i].Tensors(Pool, layer)).ToArray();
            var keys = stack(parts.Select(p => p.Keys.narrow(1, 0, flushed)).ToArray(), 0);                // [K, Hkv, f, D]
            var values = stack(parts.Select(p => p.Values.narrow(1, 0, flushed)).ToArray(), 0);
            PageCodec.Write(Pool.Arenas[group.Key.Arena], layer, [.. members.SelectMany(i => _items[i].Pages)], [.. members.Select(i => _items[i].Block)],
                keys, values, seed, Pool.FusedKernels);
        }
        for (int i = 0; i < _items.Length; i++)
        {
            var item = _items[i];
            if (item.NextBuffer is not { } next)
                continue;
            var (k, v) = recent[i].Tensors(Pool, layer);
            Pool.BufferKeys(next, layer).narrow(1, 0, item.Remainder).copy_(k.narrow(1, item.Flushed, item.Remainder));
            Pool.BufferValues(next, layer).narrow(1, 0, item.Remainder).copy_(v.narrow(1, item.Flushed, item.Remainder));
        }
    }

    private void CheckPacked(Tensor x, string name, int? heads)
    {
        ArgumentNullException.ThrowIfNull(x, name);
        var s = Pool.Shape;
        // size(i), not shape: shape marshals a new array (a microsecond each), and this runs three times per layer per step.
        if (x.dim() != 3 || x.size(0) != TokenCount || x.size(2) != s.HeadDim || (heads is { } h && x.size(1) != h) || x.size(1) % s.KeyValueHeads != 0)
            throw new ArgumentException($"{name} must be [{TokenCount}, {(heads is { } hh ? hh.ToString() : "k·" + s.KeyValueHeads)}, {s.HeadDim}], got [{string.Join(", ", x.shape)}].", name);
    }

    /// <summary>Makes the step's changes part of its sequences: new pages join the tables, buffers and lengths move on.</summary>
    public void Complete()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_completed)
            return;
        _completed = true;
        foreach (var item in _items)
        {
            var sequence = item.Sequence;
            sequence.InStep = false;
            // In place: the new tokens went into the buffer page, which goes once they filled it (its tokens are in a page now).
            var buffer = item.InPlace ? (item.Remainder > 0 ? item.BufferPage : null) : item.NextBuffer;
            if (item.InPlace && item.Remainder == 0 && item.FreshBuffer is { } filled)
                Pool.Release(filled);
            sequence.Commit(item.Pages, buffer, item.Remainder, item.TokenIds);
            item.FreshBuffer = item.NextBuffer = null;
        }
    }

    /// <summary>Ends the step; one that did not complete leaves its sequences as they were and frees what it reserved.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _inPlace?.Source?.Dispose();
        _inPlace?.Slots?.Dispose();
        _inPlace?.Positions?.Dispose();
        _inPlace = null;
        if (_completed)
            return;
        foreach (var item in _items)
        {
            item.Sequence.InStep = false;
            Abandon(Pool, item);
        }
    }

    private static void Abandon(PagePool pool, Item item)
    {
        foreach (var page in item.Pages)
            pool.Release(page);                                                               // the last page frees the block
        if (item.FreshBuffer is { } fresh)
            pool.Release(fresh);
        if (item.NextBuffer is { } next)
            pool.Release(next);
        item.FreshBuffer = item.NextBuffer = null;
    }
}
