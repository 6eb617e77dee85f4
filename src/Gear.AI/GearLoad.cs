namespace Gear.AI;

/// <summary>
/// How busy a <see cref="GearChatClient"/> is right now (<see cref="GearChatClient.Load"/>, or <c>GetService</c>); read
/// without waiting for the engine, so a load balancer can poll it often.
/// </summary>
/// <param name="RunningRequests">Requests admitted and not yet finished (prefilling or decoding).</param>
/// <param name="WaitingRequests">Requests queued for admission.</param>
/// <param name="MaxConcurrentSequences">Most requests the client runs at once.</param>
/// <param name="MaxQueuedRequests">Most requests it queues; past it a request fails with <see cref="GearBusyException"/>.</param>
public sealed record GearLoad(int RunningRequests, int WaitingRequests, int MaxConcurrentSequences, int MaxQueuedRequests);
