using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// Pages to and from tensors, with tensor ops: a block of whole pages compressed (<see cref="GearCompressor"/>) and written
/// into an arena's slots, and pages read back as the K/V attention sees (the reference every fused path is tested against,
/// the prefill path, and what a truncation returns to the buffer).
/// </summary>
internal static class PageCodec
{
    /// <summary>
    /// Compresses (or, dense, copies) the keys and values [K, Hkv, n, D] of K sequences, n = P·n_b tokens each, every sequence's
    /// tokens as one block (one launch for all K: a step's sequences that fill pages together compress together), and writes
    /// page j of sequence k into <paramref name="pages"/>[k·P + j] of layer <paramref name="layer"/>; B, when the arena has
    /// low rank, into <paramref name="blocks"/>[k].
    /// </summary>
    public static void Write(PageArena arena, int layer, IReadOnlyList<PageId> pages, IReadOnlyList<int> blocks, Tensor keys, Tensor values, long seed,
        bool fused = true)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var f = arena.Format;
        long sequences = keys.shape[0], h = f.Shape.KeyValueHeads, n = keys.shape[2], nb = f.Tokens, p = n / nb;
        if (n != p * nb || pages.Count != sequences * p || blocks.Count != sequences)
            throw new ArgumentException($"{sequences} blocks of {n} tokens fill {sequences * n / nb} pages and {sequences} blocks, got {pages.Count} and {blocks.Count}.", nameof(pages));
        // [K, Hkv, n, ...] → [K·P, Hkv, n_b, ...]: a page is n_b consecutive tokens of every head of one sequence.
        Tensor Paged(Tensor x, long perPage) =>
            x.reshape([sequences, h, p, perPage, .. x.shape[3..]]).transpose(1, 2).reshape([sequences * p, h, perPage, .. x.shape[3..]]);
        var device = f.Shape.Device;
        var slots = Slots(pages, device);
        void Put(PagePart part, Tensor source)
        {
            var target = arena.Page(part).select(0, layer);                                     // [capacity, Hkv, ...]
            if (slots.Consecutive is int first)
                target.narrow(0, first, sequences * p).copy_(source);
            else
                target.index_copy_(0, slots.Index!, source.to(target.dtype));
        }
        if (f.IsDense)
        {
            Put(PagePart.DenseKeys, Paged(keys, nb));
            Put(PagePart.DenseValues, Paged(values, nb));
            return;
        }
        var options = f.Options with { Seed = seed };
        using var k = GearCompressor.Compress(keys, QuantAxis.PerChannel, options, f.Rank, fused);
        using var v = GearCompressor.Compress(values, QuantAxis.PerToken, options, f.Rank, fused);
        long keyGroups = nb / f.KeyGroup;
        Put(PagePart.KeyCodes, Paged(k.Quantized.Codes, nb));
        Put(PagePart.KeyScale, Paged(k.Quantized.Scale, keyGroups));
        Put(PagePart.KeyZero, Paged(k.Quantized.Zero, keyGroups));
        if (k.Outliers is { } ko)
        {
            Put(PagePart.KeyOutlierValues, Paged(ko.Values, keyGroups));
            Put(PagePart.KeyOutlierIndex, Paged(ko.Indices, keyGroups));
        }
        Put(PagePart.ValueCodes, Paged(v.Quantized.Codes, nb));
        Put(PagePart.ValueScale, Paged(v.Quantized.Scale, nb));
        Put(PagePart.ValueZero, Paged(v.Quantized.Zero, nb));
        if (v.Outliers is { } vo)
        {
            Put(PagePart.ValueOutlierValues, Paged(vo.Values, nb));
            Put(PagePart.ValueOutlierIndex, Paged(vo.Indices, nb));
        }
        if (f.Rank > 0)
        {
            Put(PagePart.KeyA, Paged(k.LowRank!.A, nb));
            Put(PagePart.ValueA, Paged(v.LowRank!.A, nb));
            var blockIndex = Index(blocks, device);
            arena.Block(BlockPart.KeyB).select(0, layer).index_copy_(0, blockIndex, k.LowRank.B);   // [K, Hkv, D, r]
            arena.Block(BlockPart.ValueB).select(0, layer).index_copy_(0, blockIndex, v.LowRank.B);
        }
    }

    /// <summary>
    /// Keys and values of the pages at <paramref name="pageSlots"/> of one arena in layer <paramref name="layer"/>, as attention reads them:
    /// [pages, Hkv, n_b, D] float32 (dequantized codes, outliers, low rank A·Bᵀ of each page's block).
    /// </summary>
    public static (Tensor Keys, Tensor Values) Read(PageArena arena, int layer, IReadOnlyList<int> pageSlots)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var f = arena.Format;
        var slots = Index(pageSlots, f.Shape.Device);
        long m = pageSlots.Count, h = f.Shape.KeyValueHeads, d = f.Shape.HeadDim, nb = f.Tokens;
        Tensor Get(PagePart part) => arena.Page(part).select(0, layer).index_select(0, slots);   // [m, Hkv, ...]
        if (f.IsDense)
            return (Get(PagePart.DenseKeys).to(ScalarType.Float32).MoveToOuterDisposeScope(), Get(PagePart.DenseValues).to(ScalarType.Float32).MoveToOuterDisposeScope());
        var bits = f.Options.Bits;
        var keys = GroupQuantizer.Dequantize(Get(PagePart.KeyCodes), Get(PagePart.KeyScale), Get(PagePart.KeyZero), bits, f.KeyGroup,
            QuantAxis.PerChannel, d, ScalarType.Float32);                                                             // [m, Hkv, n_b, D]
        var values = GroupQuantizer.Dequantize(Get(PagePart.ValueCodes), Get(PagePart.ValueScale), Get(PagePart.ValueZero), bits, f.ValueGroup,
            QuantAxis.PerToken, d, ScalarType.Float32);                                                               // [m, Hkv, n_b, D]
        if (f.KeyOutlierSlots > 0)
        {
            // keys[.., group, index, c] = value: indices run along each channel's tokens of the group.
            var index = Get(PagePart.KeyOutlierIndex).to(ScalarType.Int64).transpose(-1, -2);                        // [m, Hkv, G, 2k, D]
            var value = Get(PagePart.KeyOutlierValues).to(ScalarType.Float32).transpose(-1, -2);
            keys.view(m, h, nb / f.KeyGroup, f.KeyGroup, d).scatter_(-2, index, value);
        }
        if (f.ValueOutlierSlots > 0)
        {
            var index = Get(PagePart.ValueOutlierIndex).to(ScalarType.Int64);                                        // [m, Hkv, n_b, Gv, 2k]
            var value = Get(PagePart.ValueOutlierValues).to(ScalarType.Float32);
            values.view(m, h, nb, f.ValueGroups, f.ValueGroup).scatter_(-1, index, value);
        }
        if (f.Rank > 0)
        {
            var blocks = Index([.. pageSlots.Select(arena.BlockOf)], f.Shape.Device);                                // [m]
            Tensor LowRank(PagePart a, BlockPart b) =>
                Get(a).to(ScalarType.Float32).matmul(arena.Block(b).select(0, layer).index_select(0, blocks).to(ScalarType.Float32).transpose(-1, -2));
            keys.add_(LowRank(PagePart.KeyA, BlockPart.KeyB), Scalars.One);                                          // + A·Bᵀ [m, Hkv, n_b, D]
            values.add_(LowRank(PagePart.ValueA, BlockPart.ValueB), Scalars.One);
        }
        return (keys.MoveToOuterDisposeScope(), values.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The history of <paramref name="pages"/> (a sequence's block table, any arenas) in layer <paramref name="layer"/> as
    /// keys and values [Hkv, pages·n_b, D] in <paramref name="dtype"/>; null when there are no pages.
    /// </summary>
    public static (Tensor Keys, Tensor Values)? ReadSequence(PagePool pool, int layer, IReadOnlyList<PageId> pages, ScalarType dtype)
    {
        if (pages.Count == 0)
            return null;
        using var scope = NewDisposeScope();
        var shape = pool.Shape;
        long h = shape.KeyValueHeads, d = shape.HeadDim, nb = pool.PageTokens, count = pages.Count;
        Tensor? keys = null, values = null;                                                                          // [pages, Hkv, n_b, D]
        foreach (var group in Enumerable.Range(0, pages.Count).GroupBy(i => pages[i].Arena))
        {
            var arena = pool.Arenas[group.Key];
            var (k, v) = Read(arena, layer, [.. group.Select(i => pages[i].Slot)]);
            if (group.Count() == pages.Count)
            {
                keys = k;
                values = v;
                break;
            }
            keys ??= empty([count, h, nb, d], ScalarType.Float32, shape.Device);
            values ??= empty([count, h, nb, d], ScalarType.Float32, shape.Device);
            var at = Index([.. group], shape.Device);
            keys.index_copy_(0, at, k);
            values.index_copy_(0, at, v);
        }
        Tensor Flat(Tensor x) => x.transpose(0, 1).reshape(h, count * nb, d).to(dtype);                              // [Hkv, T, D]
        return (Flat(keys!).MoveToOuterDisposeScope(), Flat(values!).MoveToOuterDisposeScope());
    }

    /// <summary>An int64 index tensor of <paramref name="values"/> on <paramref name="device"/>.</summary>
    private static Tensor Index(IReadOnlyList<int> values, Device device) =>
        TensorMemory.ToDevice(tensor(values.Select(v => (long)v).ToArray(), dtype: ScalarType.Int64), device);

    /// <summary>The slots of <paramref name="pages"/>: a first slot when they are consecutive, else an index tensor.</summary>
    private static (int? Consecutive, Tensor? Index) Slots(IReadOnlyList<PageId> pages, Device device)
    {
        bool consecutive = true;
        for (int i = 1; i < pages.Count && consecutive; i++)
            consecutive = pages[i].Slot == pages[0].Slot + i;
        return consecutive
            ? (pages[0].Slot, null)
            : (null, Index([.. pages.Select(p => p.Slot)], device));
    }
}
