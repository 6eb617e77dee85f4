namespace Gear.AI.Llama.Generation;

/// <summary>
/// How tokens are chosen and when generation stops. Immutable; <see cref="Validate"/> names the
/// first option out of range.
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>Softmax temperature; 0 means greedy (argmax). Default 0.7.</summary>
    public double Temperature { get; init; } = 0.7;

    /// <summary>Keep only the k most likely tokens; 0 disables. Default 0.</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of tokens whose probability reaches p; 1 disables. Default 0.9.</summary>
    public double TopP { get; init; } = 0.9;

    /// <summary>Seed of the sampler; the same seed and prompt give the same tokens. Null: a random seed.</summary>
    public long? Seed { get; init; }

    /// <summary>Divides positive (multiplies negative) logits of tokens already in prompt or output; 1 disables.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>Subtracted once per earlier occurrence of a token in the output (OpenAI semantics).</summary>
    public double FrequencyPenalty { get; init; }

    /// <summary>Subtracted once from every token that already occurs in the output (OpenAI semantics).</summary>
    public double PresencePenalty { get; init; }

    /// <summary>Upper bound on generated tokens. Default 128.</summary>
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>
    /// Generate exactly <see cref="MaxNewTokens"/> tokens: the model's EOS and the template's end-of-turn tokens do not end
    /// generation (<see cref="StopTokenIds"/> and <see cref="StopSequences"/> still do). For benchmarks and fixed-length
    /// load tests; a chat answer runs past its end. Default false.
    /// </summary>
    public bool IgnoreEndOfSequence { get; init; }

    /// <summary>Extra token ids that end generation (the model's EOS and the template's stop tokens always do, unless <see cref="IgnoreEndOfSequence"/>).</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Strings that end generation; the output is cut right before the first one.</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>
    /// Holds the output to the JSON texts of a grammar (a JSON Schema, or any JSON object): tokens that would break it are
    /// never chosen, and generation ends when the value is complete. Null (default): free text.
    /// </summary>
    public Json.JsonGrammar? Json { get; init; }

    /// <summary>Greedy decoding.</summary>
    public static SamplingOptions Greedy { get; } = new() { Temperature = 0, TopP = 1 };

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first option out of range.</summary>
    public SamplingOptions Validate()
    {
        if (!(Temperature >= 0 && double.IsFinite(Temperature)))
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be 0 (greedy) or more.");
        if (TopK < 0)
            throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "TopK must be 0 (off) or more.");
        if (!(TopP > 0 && TopP <= 1))
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "TopP must be in (0, 1]; 1 turns it off.");
        if (!(RepetitionPenalty > 0 && double.IsFinite(RepetitionPenalty)))
            throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "RepetitionPenalty must be positive; 1 turns it off.");
        if (!(FrequencyPenalty is >= -2 and <= 2))
            throw new ArgumentOutOfRangeException(nameof(FrequencyPenalty), FrequencyPenalty, "FrequencyPenalty must be between -2 and 2.");
        if (!(PresencePenalty is >= -2 and <= 2))
            throw new ArgumentOutOfRangeException(nameof(PresencePenalty), PresencePenalty, "PresencePenalty must be between -2 and 2.");
        if (MaxNewTokens < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "MaxNewTokens must be at least 1.");
        if (Json is { } grammar && IgnoreEndOfSequence)
            throw new ArgumentException("Json and IgnoreEndOfSequence cannot be combined: constrained output ends at its end token once the value is complete.", nameof(IgnoreEndOfSequence));
        if (Json is { } g && MaxNewTokens < g.MinimumBytes)
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens,
                $"MaxNewTokens must be at least {g.MinimumBytes}: the shortest JSON text the schema allows may take that many tokens.");
        if (StopSequences.Any(string.IsNullOrEmpty))
            throw new ArgumentException("StopSequences must not contain empty strings.", nameof(StopSequences));
        return this;
    }
}
