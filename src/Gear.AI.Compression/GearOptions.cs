namespace Gear.AI.Compression;

/// <summary>
/// Settings of a compressed KV cache and of <see cref="GearCompressor"/>. Immutable; every value is
/// checked by <see cref="Validate"/> (called by every consumer), which names the option and its range.
/// </summary>
/// <remarks>Defaults follow the GEAR paper and DESIGN.md: 2% outliers, rank 4 for a prompt block and
/// 2 for a decode block, three power iterations, groups and streaming buffer of 64 tokens.</remarks>
public sealed record GearOptions
{
    /// <summary>Default number of bits per quantized element.</summary>
    public const int DefaultBits = 4;

    /// <summary>Which cache variant to build (default <see cref="CacheKind.Gear"/>).</summary>
    public CacheKind Kind { get; init; } = CacheKind.Gear;

    /// <summary>Bits per quantization code, 1 to 8 (default 4). Codes take values 0 … 2^bits − 1.</summary>
    public int Bits { get; init; } = DefaultBits;

    /// <summary>Quantization group length (tokens for keys, features for values; values use min(GroupSize, head_dim)). Default 64.</summary>
    public int GroupSize { get; init; } = 64;

    /// <summary>Share s of each quantization vector kept exactly as outliers (s/2 largest, s/2 smallest); 0 to 0.5, default 0.02. Used by <see cref="CacheKind.Gear"/> only.</summary>
    public double OutlierRatio { get; init; } = 0.02;

    /// <summary>Rank of the low-rank residual for a prompt (multi-token) block. Default 4.</summary>
    public int PromptRank { get; init; } = 4;

    /// <summary>Rank of the low-rank residual for a decode block (a full streaming buffer). Default 2.</summary>
    public int DecodeRank { get; init; } = 2;

    /// <summary>Power iterations of the randomized low-rank solver, 0 to 20. Default 3.</summary>
    public int PowerIterations { get; init; } = 3;

    /// <summary>Streaming buffer length n_b: newest tokens kept in float16 until a whole block of this many is compressed. A positive multiple of <see cref="GroupSize"/>; default 64.</summary>
    public int BufferLength { get; init; } = 64;

    /// <summary>Seed of the random projections of the low-rank solver, so results repeat exactly.</summary>
    public long Seed { get; init; } = 1234;

    /// <summary>True when this kind stores a low-rank residual.</summary>
    public bool UsesLowRank => Kind is CacheKind.GearL or CacheKind.Gear;

    /// <summary>True when this kind stores sparse outliers.</summary>
    public bool UsesOutliers => Kind is CacheKind.Gear;

    /// <summary>True when this kind quantizes at all (everything but <see cref="CacheKind.Fp16"/>).</summary>
    public bool IsCompressed => Kind is not CacheKind.Fp16;

    /// <summary>The dense baseline.</summary>
    public static GearOptions Fp16 { get; } = new() { Kind = CacheKind.Fp16 };

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first option outside its range.</summary>
    /// <returns>This instance, for chaining.</returns>
    public GearOptions Validate()
    {
        if (!Enum.IsDefined(Kind))
            throw new ArgumentOutOfRangeException(nameof(Kind), Kind, "Kind must be one of Fp16, Kivi, GearL, Gear.");
        if (Bits is < 1 or > 8)
            throw new ArgumentOutOfRangeException(nameof(Bits), Bits, "Bits must be between 1 and 8 (2 and 4 are the usual choices).");
        if (GroupSize < 1)
            throw new ArgumentOutOfRangeException(nameof(GroupSize), GroupSize, "GroupSize must be at least 1 (64 is the default).");
        if (!(OutlierRatio >= 0 && OutlierRatio <= 0.5))
            throw new ArgumentOutOfRangeException(nameof(OutlierRatio), OutlierRatio, "OutlierRatio must be between 0 and 0.5 (0.02 is the default).");
        if (PromptRank < 0)
            throw new ArgumentOutOfRangeException(nameof(PromptRank), PromptRank, "PromptRank must be 0 or more (4 is the default).");
        if (DecodeRank < 0)
            throw new ArgumentOutOfRangeException(nameof(DecodeRank), DecodeRank, "DecodeRank must be 0 or more (2 is the default).");
        if (PowerIterations is < 0 or > 20)
            throw new ArgumentOutOfRangeException(nameof(PowerIterations), PowerIterations, "PowerIterations must be between 0 and 20 (3 is the default).");
        if (BufferLength < 1 || BufferLength % GroupSize != 0)
            throw new ArgumentOutOfRangeException(nameof(BufferLength), BufferLength, $"BufferLength must be a positive multiple of GroupSize ({GroupSize}).");
        return this;
    }

    /// <summary>Checks that <paramref name="rank"/> fits a block of <paramref name="tokens"/> × <paramref name="headDim"/>.</summary>
    internal static void ValidateRank(int rank, long tokens, long headDim, string optionName)
    {
        long limit = Math.Min(tokens, headDim);
        if (rank < 0 || rank > limit)
            throw new ArgumentOutOfRangeException(optionName, rank,
                $"{optionName} must be between 0 and min(tokens, head_dim) = {limit} for a block of {tokens} tokens × {headDim} features.");
    }
}
