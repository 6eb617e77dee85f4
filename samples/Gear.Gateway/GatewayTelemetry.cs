using System.Diagnostics.Metrics;

namespace Gear.Gateway;

/// <summary>The gateway's meter, "Gear.Gateway": how requests were routed, re-sent and cut (exported with OpenTelemetry).</summary>
public static class GatewayTelemetry
{
    /// <summary>The meter's name.</summary>
    public const string Name = "Gear.Gateway";

    private static readonly Meter Meter = new(Name);

    /// <summary>
    /// Answered requests, tagged <c>gear.route</c> — "affinity" (to the replica holding the conversation), "new" (a new
    /// conversation, to the least loaded), "moved" (its replica was gone: re-prefilled elsewhere), "none" (no
    /// conversation, e.g. /v1/models) — and <c>gear.replica</c>.
    /// </summary>
    public static readonly Counter<long> Requests = Meter.CreateCounter<long>("gear.gateway.requests", "{request}", "Requests answered, by route.");

    /// <summary>Requests sent again to another replica after theirs failed before answering.</summary>
    public static readonly Counter<long> Retries = Meter.CreateCounter<long>("gear.gateway.retries", "{request}", "Requests re-sent to another replica.");

    /// <summary>Streams whose replica failed while they flowed, ended with an error event.</summary>
    public static readonly Counter<long> StreamsEnded = Meter.CreateCounter<long>("gear.gateway.streams_ended", "{stream}", "Streams ended by a replica failure.");
}
