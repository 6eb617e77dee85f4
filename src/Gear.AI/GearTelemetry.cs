using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Gear.AI;

/// <summary>The ActivitySource and Meter Gear.AI reports through, both named "Gear.AI".</summary>
public static class GearTelemetry
{
    /// <summary>Name of the activity source and the meter.</summary>
    public const string Name = "Gear.AI";

    /// <summary>Spans: gear.load, gear.chat (with prefill and decode counts as tags).</summary>
    public static readonly ActivitySource ActivitySource = new(Name);

    internal static readonly Meter Meter = new(Name);

    internal static readonly Histogram<double> LoadSeconds = Meter.CreateHistogram<double>("gear.model.load.duration", "s", "Time to load a model.");
    internal static readonly Counter<long> PrefillTokens = Meter.CreateCounter<long>("gear.prefill.tokens", "{token}", "Prompt tokens run through the model.");
    internal static readonly Counter<long> CachedTokens = Meter.CreateCounter<long>("gear.prefill.cached_tokens", "{token}", "Prompt tokens served from a resident cache.");
    internal static readonly Counter<long> DecodeTokens = Meter.CreateCounter<long>("gear.decode.tokens", "{token}", "Tokens generated.");
    internal static readonly Histogram<double> DecodeTokensPerSecond = Meter.CreateHistogram<double>("gear.decode.tokens_per_second", "{token}/s", "Decode speed per request.");

    // Load and memory of every live client in the process, observed when a metrics reader collects.
    private static readonly ConcurrentDictionary<GearChatClient, byte> Clients = new();

    internal static readonly ObservableGauge<int> RunningRequests = Meter.CreateObservableGauge("gear.requests.running",
        () => Clients.Keys.Sum(c => c.Load.RunningRequests), "{request}", "Requests admitted and not yet finished.");
    internal static readonly ObservableGauge<int> WaitingRequests = Meter.CreateObservableGauge("gear.requests.waiting",
        () => Clients.Keys.Sum(c => c.Load.WaitingRequests), "{request}", "Requests queued for admission.");
    internal static readonly ObservableGauge<long> ResidentBytes = Meter.CreateObservableGauge("gear.kv.resident_bytes",
        () => Statistics().Sum(s => s.ResidentBytes), "By", "Bytes of the KV caches held for conversations.");
    internal static readonly ObservableGauge<long> BudgetBytes = Meter.CreateObservableGauge("gear.kv.budget_bytes",
        () => Statistics().Sum(s => s.BudgetBytes), "By", "Bytes the KV caches may hold (CacheBudgetBytes).");
    internal static readonly ObservableGauge<int> IdleConversations = Meter.CreateObservableGauge("gear.kv.idle_conversations",
        () => Statistics().Sum(s => s.Sessions), "{conversation}", "Idle conversations kept resident for their next turn.");

    internal static void Track(GearChatClient client) => Clients.TryAdd(client, 0);

    internal static void Untrack(GearChatClient client) => Clients.TryRemove(client, out _);

    // The engine answers between two steps; a client busy past the timeout is left out of this collection.
    private static IEnumerable<GearCacheStatistics> Statistics() =>
        Clients.Keys.Select(c => c.TryCacheStatistics(TimeSpan.FromSeconds(1))).OfType<GearCacheStatistics>();
}
