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
