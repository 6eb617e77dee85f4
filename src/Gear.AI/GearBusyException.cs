namespace Gear.AI;

/// <summary>
/// A request could not even wait: the client already has <see cref="QueueLimit"/> requests waiting for a place in the
/// running batch. Nothing was started; retry later (an HTTP front returns 429/503), or raise
/// <see cref="GearChatClientOptions.MaxQueuedRequests"/> or <see cref="GearChatClientOptions.MaxConcurrentSequences"/>.
/// </summary>
public sealed class GearBusyException : GearException
{
    /// <summary>Creates the exception for a queue of <paramref name="queueLimit"/> waiting requests.</summary>
    public GearBusyException(int queueLimit)
        : base($"Gear is busy: {queueLimit} requests are already waiting for a place in the running batch. Retry later, " +
               "or raise GearChatClientOptions.MaxQueuedRequests or MaxConcurrentSequences.")
    {
        QueueLimit = queueLimit;
    }

    /// <summary>How many requests may wait.</summary>
    public int QueueLimit { get; }
}
