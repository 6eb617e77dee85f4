using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>The tensors a page holds per layer (each [Hkv, ...] for one page; arenas stack them as [layers, pages, Hkv, ...]).</summary>
internal enum PagePart
{
    KeyCodes, KeyScale, KeyZero, KeyOutlierValues, KeyOutlierIndex, KeyA,
    ValueCodes, ValueScale, ValueZero, ValueOutlierValues, ValueOutlierIndex, ValueA,
    DenseKeys, DenseValues,
}

/// <summary>The tensors a low-rank block holds per layer (B of keys and of values, [Hkv, D, r] for one block).</summary>
internal enum BlockPart { KeyB, ValueB }

/// <summary>
/// The layout of one arena's pages: a page is <see cref="Tokens"/> (n_b) tokens of every KV head of one layer.
/// Compressed pages hold the packed codes, per-group float16 scales and zero points, the outliers of each quantization
/// vector (keys: a channel's g tokens; values: a token's g features) and the page's rows of the low-rank factor A at
/// <see cref="Rank"/>; the factor B belongs to the block that was factorized (a prompt block spans many pages) and lives
/// in the arena's block storage. Dense pages hold K and V as they are (float16 for the FP16 cache).
/// </summary>
internal sealed record PageFormat
{
    private PageFormat(KvShape shape, GearOptions options, int rank, ScalarType? denseType)
    {
        Shape = shape;
        Options = options;
        Rank = rank;
        DenseType = denseType;
        Tokens = options.BufferLength;
        KeyGroup = options.GroupSize;
        ValueGroup = GroupQuantizer.EffectiveGroupSize(options.GroupSize, QuantAxis.PerToken, shape.HeadDim);
        int kk = options.UsesOutliers ? OutlierSet.CountPerSide(options.OutlierRatio, KeyGroup) : 0;
        int kv = options.UsesOutliers ? OutlierSet.CountPerSide(options.OutlierRatio, ValueGroup) : 0;
        KeyOutlierSlots = 2 * kk;
        ValueOutlierSlots = 2 * kv;
        RowBytes = BitPacking.PackedLength(shape.HeadDim, options.Bits);
    }

    /// <summary>A dense format storing <paramref name="storageType"/> (float16 for the FP16 cache).</summary>
    public static PageFormat Dense(KvShape shape, GearOptions options, ScalarType storageType) => new(shape, options, 0, storageType);

    /// <summary>A compressed format whose pages carry low-rank rows of <paramref name="rank"/> (0: none).</summary>
    public static PageFormat Compressed(KvShape shape, GearOptions options, int rank) => new(shape, options, rank, null);

    public KvShape Shape { get; }
    public GearOptions Options { get; }

    /// <summary>Low-rank rank of the pages' blocks (0: no low rank).</summary>
    public int Rank { get; }

    /// <summary>The stored dtype of a dense format; null for compressed pages.</summary>
    public ScalarType? DenseType { get; }

    public bool IsDense => DenseType is not null;

    /// <summary>n_b: tokens per page.</summary>
    public int Tokens { get; }

    /// <summary>Tokens per key quantization group (a page holds Tokens / KeyGroup of them).</summary>
    public int KeyGroup { get; }

    /// <summary>Features per value quantization group.</summary>
    public int ValueGroup { get; }

    /// <summary>Outliers per key vector (a channel's KeyGroup tokens): 2k, both sides.</summary>
    public int KeyOutlierSlots { get; }

    /// <summary>Outliers per value vector (a token's ValueGroup features): 2k.</summary>
    public int ValueOutlierSlots { get; }

    /// <summary>Bytes of one token's packed codes of one head.</summary>
    public long RowBytes { get; }

    /// <summary>Value groups per token (the last one may be short).</summary>
    public long ValueGroups => (Shape.HeadDim + ValueGroup - 1) / ValueGroup;

    /// <summary>The tensors of one page of one layer: part, shape [Hkv, ...], dtype.</summary>
    public IEnumerable<(PagePart Part, long[] Shape, ScalarType Type)> Parts()
    {
        long h = Shape.KeyValueHeads, d = Shape.HeadDim, n = Tokens, kg = n / KeyGroup;
        if (DenseType is { } dense)
        {
            yield return (PagePart.DenseKeys, [h, n, d], dense);
            yield return (PagePart.DenseValues, [h, n, d], dense);
            yield break;
        }
        yield return (PagePart.KeyCodes, [h, n, RowBytes], ScalarType.Byte);
        yield return (PagePart.KeyScale, [h, kg, d], ScalarType.Float16);
        yield return (PagePart.KeyZero, [h, kg, d], ScalarType.Float16);
        if (KeyOutlierSlots > 0)
        {
            yield return (PagePart.KeyOutlierValues, [h, kg, d, KeyOutlierSlots], ScalarType.Float16);
            yield return (PagePart.KeyOutlierIndex, [h, kg, d, KeyOutlierSlots], OutlierSet.IndexType(KeyGroup));
        }
        if (Rank > 0)
            yield return (PagePart.KeyA, [h, n, Rank], ScalarType.Float16);
        yield return (PagePart.ValueCodes, [h, n, RowBytes], ScalarType.Byte);
        yield return (PagePart.ValueScale, [h, n, ValueGroups], ScalarType.Float16);
        yield return (PagePart.ValueZero, [h, n, ValueGroups], ScalarType.Float16);
        if (ValueOutlierSlots > 0)
        {
            yield return (PagePart.ValueOutlierValues, [h, n, ValueGroups, ValueOutlierSlots], ScalarType.Float16);
            yield return (PagePart.ValueOutlierIndex, [h, n, ValueGroups, ValueOutlierSlots], OutlierSet.IndexType(ValueGroup));
        }
        if (Rank > 0)
            yield return (PagePart.ValueA, [h, n, Rank], ScalarType.Float16);
    }

    /// <summary>The tensors of one low-rank block of one layer (none without low rank).</summary>
    public IEnumerable<(BlockPart Part, long[] Shape, ScalarType Type)> BlockParts()
    {
        if (Rank == 0 || IsDense)
            yield break;
        yield return (BlockPart.KeyB, [Shape.KeyValueHeads, Shape.HeadDim, Rank], ScalarType.Float16);
        yield return (BlockPart.ValueB, [Shape.KeyValueHeads, Shape.HeadDim, Rank], ScalarType.Float16);
    }

    /// <summary>Which <see cref="KvCacheStatistics"/> component a part's bytes belong to.</summary>
    public static KvComponent ComponentOf(PagePart part) => part switch
    {
        PagePart.KeyCodes or PagePart.ValueCodes => KvComponent.Codes,
        PagePart.KeyScale or PagePart.KeyZero or PagePart.ValueScale or PagePart.ValueZero => KvComponent.ScaleZero,
        PagePart.KeyOutlierValues or PagePart.KeyOutlierIndex or PagePart.ValueOutlierValues or PagePart.ValueOutlierIndex => KvComponent.Outliers,
        PagePart.KeyA or PagePart.ValueA => KvComponent.LowRank,
        _ => KvComponent.Dense,
    };
}

/// <summary>The components <see cref="KvCacheStatistics"/> counts bytes by.</summary>
internal enum KvComponent { Codes, ScaleZero, Outliers, LowRank, Dense }
