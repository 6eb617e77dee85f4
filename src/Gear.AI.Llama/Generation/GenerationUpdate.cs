namespace Gear.AI.Llama.Generation;

/// <summary>Why generation ended.</summary>
public enum StopReason
{
    /// <summary>The model produced EOS or a stop token.</summary>
    EndOfSequence,

    /// <summary>A stop sequence appeared; the text was cut before it.</summary>
    StopSequence,

    /// <summary>MaxNewTokens were generated.</summary>
    MaxTokens,
}

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

/// <summary>One step of a streamed generation: new text (possibly empty), the token, and at the end the summary.</summary>
/// <param name="Text">Text completed by this step.</param>
/// <param name="TokenId">The token generated, or null for the closing update.</param>
/// <param name="Summary">Set on the last update only.</param>
public sealed record GenerationUpdate(string Text, int? TokenId, GenerationSummary? Summary = null);
