namespace Gear.AI.Llama;

/// <summary>A prompt plus the tokens asked for do not fit the model's context window.</summary>
public sealed class ContextLengthExceededException : GearException
{
    /// <summary>Creates the exception with the counts involved.</summary>
    public ContextLengthExceededException(int promptTokens, int maxNewTokens, int contextLength)
        : base(Describe(promptTokens, maxNewTokens, contextLength))
    {
        PromptTokens = promptTokens;
        MaxNewTokens = maxNewTokens;
        ContextLength = contextLength;
    }

    private static string Describe(int promptTokens, int maxNewTokens, int contextLength) =>
        promptTokens >= contextLength
            ? $"The prompt alone has {promptTokens} tokens, but the model's context holds {contextLength} (max_position_embeddings) and at least one " +
              $"must be left for the answer. Shorten the prompt to at most {contextLength - 1} tokens (fewer or shorter messages, a smaller document), " +
              "or let older messages be dropped (ContextOverflowPolicy.DropOldestMessages)."
            : $"The prompt has {promptTokens} tokens and asks for up to {maxNewTokens} more, but the model's context holds {contextLength} " +
              $"(max_position_embeddings). Shorten the prompt or lower the maximum output tokens to at most {contextLength - promptTokens}.";

    /// <summary>Tokens in the prompt.</summary>
    public int PromptTokens { get; }

    /// <summary>Tokens the request may generate.</summary>
    public int MaxNewTokens { get; }

    /// <summary>The model's context length.</summary>
    public int ContextLength { get; }
}
