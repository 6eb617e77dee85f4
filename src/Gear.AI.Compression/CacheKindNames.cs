namespace Gear.AI.Compression;

/// <summary>The command-line and configuration names of <see cref="CacheKind"/>: fp16, kivi, gearl, gear.</summary>
public static class CacheKindNames
{
    /// <summary>All names, in baseline-first order.</summary>
    public static IReadOnlyList<string> All { get; } = ["fp16", "kivi", "gearl", "gear"];

    /// <summary>The name of <paramref name="kind"/>.</summary>
    public static string Name(CacheKind kind) => kind switch
    {
        CacheKind.Fp16 => "fp16",
        CacheKind.Kivi => "kivi",
        CacheKind.GearL => "gearl",
        CacheKind.Gear => "gear",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown cache kind."),
    };

    /// <summary>Parses a name (case-insensitive; "gear-l" accepted).</summary>
    /// <exception cref="ArgumentException">The name is not one of fp16, kivi, gearl, gear.</exception>
    public static CacheKind Parse(string name) => name?.Trim().ToLowerInvariant() switch
    {
        "fp16" or "dense" => CacheKind.Fp16,
        "kivi" => CacheKind.Kivi,
        "gearl" or "gear-l" or "gear_l" => CacheKind.GearL,
        "gear" => CacheKind.Gear,
        _ => throw new ArgumentException($"Cache kind '{name}' is not known; use one of {string.Join(", ", All)}.", nameof(name)),
    };
}
