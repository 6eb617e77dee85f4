using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama.Model;

namespace Gear.AI;

/// <summary>An idle conversation's sequence, kept so its next turn prefills only what is new.</summary>
internal sealed class Session(KvSequence sequence, string? conversationId) : IDisposable
{
    public KvSequence Sequence { get; } = sequence;

    public string? ConversationId { get; } = conversationId;

    public long LastUsed { get; set; }

    public void Dispose() => Sequence.Dispose();
}

/// <summary>
/// The client's KV memory: one page pool per cache setting (pages shared by every sequence over the same prefix, found
/// through the pool's prefix index), the idle conversations' sequences, and the budget over all of it. A request starts
/// from the longest prefix of its prompt held anywhere: an idle conversation's sequence (tokens in its buffer included,
/// forked, so the idle one stays intact) or cached pages. When a pool needs room it evicts cached pages, then idle
/// conversations, least recently used first. It also holds what the engine's admission needs of its client: how many of
/// its requests run and wait, and the bytes the running ones may still take. Used on the engine thread only (but
/// <see cref="Waiting"/>, counted when a request is submitted).
/// </summary>
internal sealed class SessionStore(long budgetBytes, int maxSessions, int maxConcurrent = int.MaxValue, int maxQueued = int.MaxValue) : IDisposable
{
    /// <summary>Requests submitted and not yet admitted (changed with <see cref="Interlocked"/>).</summary>
    public int Waiting;

    /// <summary>Most requests running at once.</summary>
    public int MaxConcurrent => maxConcurrent;

    /// <summary>Most requests waiting at once.</summary>
    public int MaxQueued => maxQueued;

    /// <summary>Requests running (admitted and not yet finished).</summary>
    public int Running { get; set; }

    /// <summary>Set when a request was put back in the queue for lack of pages; cleared when a running request ends.</summary>
    public bool AdmissionPaused { get; set; }

    /// <summary>What the running requests may take at most, together (<see cref="PagePool.PlanFor"/> of prompt and output).</summary>
    public long ReservedBytes { get; set; }

    private readonly Dictionary<GearOptions, PagePool> _pools = [];
    private readonly List<Session> _sessions = [];
    private long _clock;

    public long Evictions { get; private set; }

    public long BudgetBytes => budgetBytes;

    /// <summary>The pools by cache setting (the client logs each one's attention path once).</summary>
    public IReadOnlyDictionary<GearOptions, PagePool> Pools => _pools;

    public GearCacheStatistics Statistics
    {
        get
        {
            long resident = 0, fp16 = 0;
            foreach (var pool in _pools.Values)
            {
                var stats = pool.StatisticsOf(_sessions.Where(s => s.Sequence.Pool == pool).Select(s => s.Sequence));
                resident += stats.ResidentBytes;
                fp16 += stats.FullPrecisionBytes;
            }
            return new GearCacheStatistics(_sessions.Count, _sessions.Sum(s => s.Sequence.Length), resident, fp16, budgetBytes, Evictions,
                _pools.Values.Sum(p => p.AllocatedBytes), _pools.Values.Sum(p => p.CachedPages),
                _pools.ToDictionary(p => Label(p.Key), p => p.Value.AttentionPath));
        }
    }

    /// <summary>The pool of <paramref name="options"/>, created on first use within what other pools leave of the budget.</summary>
    public PagePool PoolFor(LlamaModel model, GearOptions options)
    {
        if (!_pools.TryGetValue(options, out var pool))
        {
            pool = model.CreatePool(options, budgetBytes);
            pool.Reclaim = () => EvictOldest(pool);
            _pools[options] = pool;
        }
        // Other settings' pools give back their memory once nothing of theirs is in use.
        foreach (var (key, other) in _pools.Where(p => p.Value != pool).ToArray())
        {
            while (other.SequenceCount > 0 && _pools.Values.Sum(p => p.AllocatedBytes) > budgetBytes && EvictOldest(other)) { }
            if (other.SequenceCount == 0)
            {
                other.Dispose();
                _pools.Remove(key);
            }
        }
        pool.MaxBytes = Math.Max(1, budgetBytes - _pools.Values.Where(p => p != pool).Sum(p => p.AllocatedBytes));
        return pool;
    }

    /// <summary>
    /// A new sequence holding the longest prefix of <paramref name="prompt"/> (at most all but its last token, which the
    /// request must feed to get logits) that an idle conversation or the prefix index holds; the caller owns it.
    /// </summary>
    public KvSequence Start(LlamaModel model, IReadOnlyList<int> prompt, GearOptions options, string? conversationId)
    {
        var pool = PoolFor(model, options);
        int limit = prompt.Count - 1;
        Session? best = null;
        int bestShared = 0;
        foreach (var s in _sessions)
        {
            if (s.Sequence.Pool != pool || (conversationId is not null && s.ConversationId != conversationId) || s.Sequence.Tokens is not { } tokens)
                continue;
            int shared = Math.Min(limit, SharedPrefix(tokens, prompt));
            if (!WorthForking(s.Sequence, shared))
                continue;
            if (shared > bestShared)
            {
                best = s;
                bestShared = shared;
            }
        }
        var indexed = pool.FindPrefix(prompt, limit);
        if (best is null || indexed.Length >= bestShared)
            return indexed;
        indexed.Dispose();
        best.LastUsed = ++_clock;
        return best.Sequence.Fork(bestShared);
    }

    /// <summary>
    /// Whether a new request should start from <paramref name="source"/>'s first <paramref name="shared"/> tokens. Not
    /// when that is less than a page cut out of a compressed page: the cut gives those tokens back as the compressed page
    /// holds them (e.g. a 2-bit BOS, the attention sink, where a fresh prefill attends to the exact one) to save prefilling
    /// fewer than a page of tokens — a chat template's opening shared by unrelated prompts.
    /// </summary>
    private static bool WorthForking(KvSequence source, int shared) =>
        shared > 0 && (!source.Pool.Options.IsCompressed || shared >= source.Pool.PageTokens || shared >= source.Length - source.Buffered);

    /// <summary>
    /// Keeps <paramref name="sequence"/> as an idle conversation; idle ones whose tokens it continues are dropped (their
    /// pages are its pages), then the least recently used beyond <c>maxSessions</c>.
    /// </summary>
    public void Keep(KvSequence sequence, string? conversationId)
    {
        if (sequence.Tokens is { } tokens)
        {
            foreach (var s in _sessions.Where(s => s.Sequence.Pool == sequence.Pool && s.ConversationId == conversationId && s.Sequence.Tokens is { } t
                                                   && t.Count <= tokens.Count && SharedPrefix(t, tokens) == t.Count).ToArray())
            {
                _sessions.Remove(s);
                s.Dispose();
            }
        }
        _sessions.Add(new Session(sequence, conversationId) { LastUsed = ++_clock });
        while (_sessions.Count > maxSessions)
            EvictOldest(null);
    }

    /// <summary>Evicts the least recently used idle conversation (of <paramref name="pool"/> when given); false when there is none.</summary>
    private bool EvictOldest(PagePool? pool)
    {
        var oldest = _sessions.Where(s => pool is null || s.Sequence.Pool == pool).MinBy(s => s.LastUsed);
        if (oldest is null)
            return false;
        _sessions.Remove(oldest);
        oldest.Dispose();
        Evictions++;
        return true;
    }

    /// <summary>A cache setting in words: "gear 2-bit", with the settings that differ from the defaults ("…, group 32").</summary>
    internal static string Label(GearOptions options)
    {
        if (!options.IsCompressed)
            return "fp16";
        var defaults = new GearOptions();
        var label = new System.Text.StringBuilder($"{CacheKindNames.Name(options.Kind)} {options.Bits}-bit");
        void Differs<T>(T value, T standard, string name) where T : IEquatable<T>
        {
            if (!value.Equals(standard))
                label.Append($", {name} {value}");
        }
        Differs(options.GroupSize, defaults.GroupSize, "group");
        Differs(options.BufferLength, defaults.BufferLength, "buffer");
        Differs(options.OutlierRatio, defaults.OutlierRatio, "outliers");
        Differs(options.PromptRank, defaults.PromptRank, "prompt rank");
        Differs(options.DecodeRank, defaults.DecodeRank, "decode rank");
        Differs(options.PowerIterations, defaults.PowerIterations, "power iterations");
        Differs(options.Seed, defaults.Seed, "seed");
        return label.ToString();
    }

    public static int SharedPrefix(IReadOnlyList<int> a, IReadOnlyList<int> b)
    {
        int n = Math.Min(a.Count, b.Count), i = 0;
        while (i < n && a[i] == b[i])
            i++;
        return i;
    }

    public void Dispose()
    {
        foreach (var s in _sessions)
            s.Dispose();
        _sessions.Clear();
        foreach (var pool in _pools.Values)
            pool.Dispose();
        _pools.Clear();
    }
}
