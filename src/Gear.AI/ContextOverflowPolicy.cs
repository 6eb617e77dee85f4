namespace Gear.AI;

/// <summary>What to do when a conversation no longer fits the model's context.</summary>
public enum ContextOverflowPolicy
{
    /// <summary>Fail before any work with <see cref="Llama.ContextLengthExceededException"/> giving the counts (default).</summary>
    Fail,

    /// <summary>Drop the oldest non-system messages until the prompt fits (the latest message is always kept).</summary>
    DropOldestMessages,
}
