namespace Gear.AI;

/// <summary>A KV cache would need more memory than its budget allows, even after evicting everything idle.</summary>
public sealed class CacheBudgetExceededException : GearException
{
    /// <summary>Creates the exception with the sizes involved.</summary>
    public CacheBudgetExceededException(long requiredBytes, long budgetBytes)
        : this(requiredBytes, budgetBytes,
               $"This request's KV cache needs about {requiredBytes:N0} bytes but the cache budget is {budgetBytes:N0} bytes. " +
               "Raise GearChatClientOptions.CacheBudgetBytes, use fewer bits or a compressed cache kind, or shorten the conversation.")
    {
    }

    /// <summary>Creates the exception with the sizes involved and a message of the caller's.</summary>
    public CacheBudgetExceededException(long requiredBytes, long budgetBytes, string message) : base(message)
    {
        RequiredBytes = requiredBytes;
        BudgetBytes = budgetBytes;
    }

    /// <summary>Bytes the request needs (or the allocation that did not fit asked for).</summary>
    public long RequiredBytes { get; }

    /// <summary>The configured budget.</summary>
    public long BudgetBytes { get; }
}
