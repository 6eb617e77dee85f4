using Gear.AI.Compression;

namespace Gear.Bench;

/// <summary>The cache configurations a command compares: Fp16 first (the baseline), then each kind at each bit width.</summary>
internal static class CacheConfigs
{
    public static IReadOnlyList<GearOptions> Parse(string caches, string bits, bool withFp16 = true)
    {
        var kinds = caches.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(CacheKindNames.Parse).Distinct().ToList();
        var widths = bits.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToList();
        var result = new List<GearOptions>();
        if (withFp16 || kinds.Contains(CacheKind.Fp16))
            result.Add(GearOptions.Fp16);
        foreach (var kind in kinds.Where(k => k != CacheKind.Fp16))
            foreach (int b in widths)
                result.Add(new GearOptions { Kind = kind, Bits = b }.Validate());
        return result;
    }

    public static string Name(GearOptions o) => CacheKindNames.Name(o.Kind);

    public static int Bits(GearOptions o) => o.IsCompressed ? o.Bits : 16;

    public static string Label(GearOptions o) => o.IsCompressed ? $"{Name(o)}-{o.Bits}" : "fp16";
}
