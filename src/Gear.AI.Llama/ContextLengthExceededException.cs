namespace Gear.AI.Llama;

/// <summary>A prompt plus the tokens asked for do not fit the model's context window.</summary>
public sealed class ContextLengthExceededException : GearException
{
    /// <summary>Creates the exception with the counts involved.</summary>
    public ContextLengthExceededException(int promptTokens, int maxNewTokens, int contextLength)
        : base($"The prompt has {promptTokens} tokens and asks for up to {maxNewTokens} more, but the model's context holds {contextLength} " +
               $"(max_position_embeddings). Shorten the prompt or lower the maximum output tokens to at most {Math.Max(0, contextLength - promptTokens)}.")
    {
        PromptTokens = promptTokens;
        MaxNewTokens = maxNewTokens;
        ContextLength = contextLength;
    }

    /// <summary>Tokens in the prompt.</summary>
    public int PromptTokens { get; }

    /// <summary>Tokens the request may generate.</summary>
    public int MaxNewTokens { get; }

    /// <summary>The model's context length.</summary>
    public int ContextLength { get; }
}
