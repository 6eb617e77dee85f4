namespace Gear.AI.Compression.Caching;

/// <summary>
/// What <see cref="PagePool.PlanFor"/> says a request will hold: pages and low-rank blocks by arena, and their bytes.
/// </summary>
public sealed class PagePlan
{
    internal PagePlan(PagePool pool, IReadOnlyDictionary<int, (long Pages, long Blocks)> counts, long bytes)
    {
        Pool = pool;
        Counts = counts;
        Bytes = bytes;
    }

    /// <summary>The pool planned for.</summary>
    public PagePool Pool { get; }

    /// <summary>Bytes of the planned pages and blocks.</summary>
    public long Bytes { get; }

    /// <summary>Pages planned, all arenas.</summary>
    public long Pages => Counts.Values.Sum(c => c.Pages);

    internal IReadOnlyDictionary<int, (long Pages, long Blocks)> Counts { get; }
}
