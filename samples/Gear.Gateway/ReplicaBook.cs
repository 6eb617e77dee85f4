using System.Collections.Concurrent;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Options;
using Yarp.ReverseProxy.Model;

namespace Gear.Gateway;

/// <summary>What a replica reported of itself at <see cref="At"/> (<c>GET /v1/load</c>).</summary>
public sealed record ReplicaLoad(int Running, int Waiting, long FreeKvBytes, int IdleConversations, bool Ready, DateTimeOffset At);

/// <summary>
/// The gateway's memory of its replicas: which replica holds each conversation, the requests it has in flight to each,
/// and each replica's last reported load. The conversation table forgets the least recently used past
/// <see cref="GatewayOptions.MaxConversations"/>; a forgotten or moved conversation is only re-prefilled, never wrong.
/// </summary>
public sealed class ReplicaBook(IOptions<GatewayOptions> options) : IDisposable
{
    private readonly MemoryCache _conversations = new(new MemoryCacheOptions { SizeLimit = options.Value.MaxConversations });
    private readonly ConcurrentDictionary<string, int> _inFlight = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int> _pinned = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, ReplicaLoad> _loads = new(StringComparer.Ordinal);

    /// <summary>The replica that served the conversation's last turn, if remembered.</summary>
    public string? HolderOf(string key) => _conversations.TryGetValue(key, out string? replica) ? replica : null;

    /// <summary>Remembers that <paramref name="replica"/> now holds the conversation.</summary>
    public void Remember(string key, string replica)
    {
        string? before = HolderOf(key);
        if (before == replica)
            return;
        if (before is not null)
            Decrement(_pinned, before);
        _pinned.AddOrUpdate(replica, 1, (_, n) => n + 1);
        _conversations.Set(key, replica, new MemoryCacheEntryOptions { Size = 1, SlidingExpiration = TimeSpan.FromHours(2) }
            .RegisterPostEvictionCallback(static (_, value, reason, state) =>
            {
                if (reason != EvictionReason.Replaced && value is string r)
                    Decrement(((ReplicaBook)state!)._pinned, r);
            }, this));
    }

    private long _retried, _cutStreams;

    /// <summary>Requests sent again to another replica after theirs failed before answering.</summary>
    public long RetriedRequests => Interlocked.Read(ref _retried);

    /// <summary>Streams whose replica failed while they flowed, ended with an error event for the client to retry.</summary>
    public long StreamsEndedByError => Interlocked.Read(ref _cutStreams);

    /// <summary>Counts a request sent again to another replica (here and in <see cref="GatewayTelemetry"/>).</summary>
    internal void CountRetry()
    {
        Interlocked.Increment(ref _retried);
        GatewayTelemetry.Retries.Add(1);
    }

    /// <summary>Counts a stream ended by its replica's failure (here and in <see cref="GatewayTelemetry"/>).</summary>
    internal void CountEndedStream()
    {
        Interlocked.Increment(ref _cutStreams);
        GatewayTelemetry.StreamsEnded.Add(1);
    }

    /// <summary>A request was sent to <paramref name="replica"/>; <see cref="End"/> when it is over.</summary>
    public void Begin(string replica) => _inFlight.AddOrUpdate(replica, 1, (_, n) => n + 1);

    /// <summary>A request to <paramref name="replica"/> is over.</summary>
    public void End(string replica) => Decrement(_inFlight, replica);

    /// <summary>Stores what <paramref name="replica"/> reported.</summary>
    public void Report(string replica, ReplicaLoad load) => _loads[replica] = load;

    /// <summary>The replica's last report, if any.</summary>
    public ReplicaLoad? LoadOf(string replica) => _loads.TryGetValue(replica, out var load) ? load : null;

    /// <summary>Requests this gateway has in flight to <paramref name="replica"/>.</summary>
    public int InFlight(string replica) => _inFlight.TryGetValue(replica, out int n) ? n : 0;

    /// <summary>Conversations this gateway remembers on <paramref name="replica"/>.</summary>
    public int Pinned(string replica) => _pinned.TryGetValue(replica, out int n) ? n : 0;

    /// <summary>
    /// The least-loaded of <paramref name="candidates"/>: fewest requests in flight (this gateway's count, or the
    /// replica's own running + waiting when other clients keep it busier), then most free KV bytes, then fewest
    /// conversations pinned to it.
    /// </summary>
    public DestinationState? LeastLoaded(IReadOnlyList<DestinationState> candidates) =>
        candidates.MinBy(d =>
        {
            var load = LoadOf(d.DestinationId);
            int busy = Math.Max(InFlight(d.DestinationId), load is null ? 0 : load.Running + load.Waiting);
            return (busy, -(load?.FreeKvBytes ?? 0), Pinned(d.DestinationId), d.DestinationId);
        });

    public void Dispose() => _conversations.Dispose();

    private static void Decrement(ConcurrentDictionary<string, int> counts, string replica) =>
        counts.AddOrUpdate(replica, 0, (_, n) => Math.Max(0, n - 1));
}
