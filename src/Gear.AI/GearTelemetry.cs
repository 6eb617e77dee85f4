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
}
