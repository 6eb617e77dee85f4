namespace Gear.AI.Llama.Generation;

/// <summary>Counts and timings of one generation.</summary>
/// <param name="Reason">Why it ended.</param>
/// <param name="PromptTokens">Tokens in the prompt.</param>
/// <param name="CachedPromptTokens">Prompt tokens the cache already held (not prefilled again).</param>
/// <param name="GeneratedTokens">Tokens generated.</param>
/// <param name="PrefillTime">Time to run the new prompt tokens.</param>
/// <param name="DecodeTime">Time to generate the rest.</param>
public sealed record GenerationSummary(StopReason Reason, int PromptTokens, int CachedPromptTokens, int GeneratedTokens, TimeSpan PrefillTime, TimeSpan DecodeTime)
{
    /// <summary>Generated tokens per second of decode time.</summary>
    public double DecodeTokensPerSecond => DecodeTime.TotalSeconds > 0 ? Math.Max(0, GeneratedTokens - 1) / DecodeTime.TotalSeconds : 0;

    /// <summary>Prefilled tokens per second.</summary>
    public double PrefillTokensPerSecond => PrefillTime.TotalSeconds > 0 ? (PromptTokens - CachedPromptTokens) / PrefillTime.TotalSeconds : 0;
}
