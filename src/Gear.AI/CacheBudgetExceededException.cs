namespace Gear.AI;

/// <summary>A single request's KV cache would exceed the configured budget for all resident caches.</summary>
public sealed class CacheBudgetExceededException : GearException
{
    /// <summary>Creates the exception with the sizes involved.</summary>
    public CacheBudgetExceededException(long requiredBytes, long budgetBytes)
        : base($"This request's KV cache needs about {requiredBytes:N0} bytes but the cache budget is {budgetBytes:N0} bytes. " +
               "Raise GearChatClientOptions.CacheBudgetBytes, use fewer bits or a compressed cache kind, or shorten the conversation.")
    {
        RequiredBytes = requiredBytes;
        BudgetBytes = budgetBytes;
    }

    /// <summary>Bytes the request needs.</summary>
    public long RequiredBytes { get; }

    /// <summary>The configured budget.</summary>
    public long BudgetBytes { get; }
}
