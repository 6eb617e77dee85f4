namespace Gear.AI;

/// <summary>What a <see cref="GearChatClient"/> holds in KV caches right now (from <c>GetService</c>).</summary>
/// <param name="Sessions">Conversations with a resident cache.</param>
/// <param name="Tokens">Tokens held over all of them.</param>
/// <param name="ResidentBytes">Bytes of every cache tensor held.</param>
/// <param name="FullPrecisionBytes">What the same tokens would take in an FP16 cache.</param>
/// <param name="BudgetBytes">The configured budget.</param>
/// <param name="Evictions">Caches evicted so far to stay within budget.</param>
public sealed record GearCacheStatistics(int Sessions, long Tokens, long ResidentBytes, long FullPrecisionBytes, long BudgetBytes, long Evictions);
