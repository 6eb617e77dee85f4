namespace Gear.AI;

/// <summary>What a <see cref="GearChatClient"/> holds in KV caches right now (from <c>GetService</c>).</summary>
/// <param name="Sessions">Idle conversations kept for their next turn.</param>
/// <param name="Tokens">Tokens they hold.</param>
/// <param name="ResidentBytes">Bytes of their pages, blocks and buffers (pages they share counted once).</param>
/// <param name="FullPrecisionBytes">What the same tokens would take in an FP16 cache.</param>
/// <param name="BudgetBytes">The configured budget.</param>
/// <param name="Evictions">Idle conversations evicted so far to stay within budget.</param>
/// <param name="AllocatedBytes">Bytes of every page-pool tensor allocated (pages in use, cached for prefix reuse, and free).</param>
/// <param name="CachedPages">Pages no conversation holds that stay cached for prefix reuse until their room is wanted.</param>
/// <param name="AttentionPaths">How attention reads each cache setting's pages (e.g. "gear 2-bit" → "fused CPU kernel …"), with the
/// reason where it is the slower tensor path.</param>
public sealed record GearCacheStatistics(int Sessions, long Tokens, long ResidentBytes, long FullPrecisionBytes, long BudgetBytes, long Evictions,
    long AllocatedBytes = 0, int CachedPages = 0, IReadOnlyDictionary<string, string>? AttentionPaths = null);
