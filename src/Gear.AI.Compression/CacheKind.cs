namespace Gear.AI.Compression;

/// <summary>The KV-cache variants Gear.AI offers, from the dense baseline to full GEAR.</summary>
public enum CacheKind
{
    /// <summary>Dense baseline: keys and values stored in float16 (the "FP16 cache" of every comparison).</summary>
    Fp16,

    /// <summary>KIVI baseline: group-wise low-bit quantization plus a full-precision streaming buffer.</summary>
    Kivi,

    /// <summary>GEAR-L: quantization plus a low-rank approximation of the quantization error.</summary>
    GearL,

    /// <summary>GEAR: quantization plus sparse outliers plus a low-rank approximation of the error.</summary>
    Gear,
}
