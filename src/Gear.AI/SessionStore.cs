using Gear.AI.Compression;
using Gear.AI.Compression.Caching;

namespace Gear.AI;

/// <summary>A conversation's resident cache and the token ids it holds.</summary>
internal sealed class Session : IDisposable
{
    public Session(KvCache cache, string? conversationId)
    {
        Cache = cache;
        ConversationId = conversationId;
    }

    public KvCache Cache { get; }

    /// <summary>Ids whose K/V the cache holds, in order (Cache.Length of them).</summary>
    public List<int> Tokens { get; } = [];

    public string? ConversationId { get; }

    /// <summary>Prompt tokens of the last request served from this session.</summary>
    public int PromptLength { get; set; }

    public long LastUsed { get; set; }

    public void Dispose() => Cache.Dispose();
}

/// <summary>
/// Resident conversation caches under a byte budget with least-recently-used eviction. A request
/// takes the session sharing the longest token prefix with its prompt (or its conversation's), and
/// gives it back when done. Not thread-safe: the client serializes requests.
/// </summary>
internal sealed class SessionStore(long budgetBytes, int maxSessions) : IDisposable
{
    private readonly List<Session> _sessions = [];
    private long _clock;

    public long Evictions { get; private set; }

    public GearCacheStatistics Statistics => new(
        _sessions.Count, _sessions.Sum(s => s.Cache.Length), _sessions.Sum(s => s.Cache.ResidentBytes),
        _sessions.Sum(s => s.Cache.FullPrecisionBytes), budgetBytes, Evictions);

    /// <summary>Shorter shared prefixes than this (unless the whole session is a prefix) are not worth cutting another conversation's cache for.</summary>
    public const int MinimumSharedPrefix = 64;

    /// <summary>
    /// Removes and returns the session to continue: by conversation id, else the one with the same cache
    /// settings sharing the longest prefix — when that prefix covers the session's last prompt (a continuation:
    /// the reply may re-tokenize differently) or is at least <see cref="MinimumSharedPrefix"/> tokens.
    /// </summary>
    public (Session? Session, int SharedPrefix) Take(IReadOnlyList<int> prompt, GearOptions options, string? conversationId)
    {
        Session? best = null;
        int bestShared = 0;
        foreach (var s in _sessions)
        {
            if (s.Cache.Options != options)
                continue;
            if (conversationId is not null && s.ConversationId != conversationId)
                continue;
            int shared = SharedPrefix(s.Tokens, prompt);
            bool worthIt = conversationId is not null || shared >= Math.Min(s.Tokens.Count, Math.Max(1, s.PromptLength)) || shared >= MinimumSharedPrefix;
            if (worthIt && (shared > bestShared || best is null))
            {
                best = s;
                bestShared = shared;
            }
        }
        if (best is not null)
            _sessions.Remove(best);
        return (best, bestShared);
    }

    /// <summary>Keeps <paramref name="session"/> resident, then evicts least recently used sessions beyond the limits.</summary>
    public void Return(Session session)
    {
        session.LastUsed = ++_clock;
        _sessions.Add(session);
        Trim();
    }

    /// <summary>Evicts until total bytes fit <paramref name="extraBytes"/> more within the budget.</summary>
    public void MakeRoom(long extraBytes) => Trim(extraBytes);

    private void Trim(long extraBytes = 0)
    {
        while (_sessions.Count > 0 && (_sessions.Count > maxSessions || _sessions.Sum(s => s.Cache.ResidentBytes) + extraBytes > budgetBytes))
        {
            var oldest = _sessions.MinBy(s => s.LastUsed)!;
            _sessions.Remove(oldest);
            oldest.Dispose();
            Evictions++;
        }
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
    }
}
