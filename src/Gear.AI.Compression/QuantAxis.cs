namespace Gear.AI.Compression;

/// <summary>
/// Which way quantization groups run over a [..., tokens, features] tensor.
/// </summary>
public enum QuantAxis
{
    /// <summary>Per-channel (keys): each group is one feature channel over up to <c>GroupSize</c> consecutive tokens.</summary>
    PerChannel,

    /// <summary>Per-token (values): each group is one token over up to <c>GroupSize</c> consecutive features.</summary>
    PerToken,
}
