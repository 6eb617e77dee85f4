namespace Gear.Gateway;

/// <summary>How requests are spread over the replicas.</summary>
public enum RoutingPolicy
{
    /// <summary>A conversation's turns go to the replica that holds its history; new conversations to the least loaded.</summary>
    Affinity,

    /// <summary>Each request to the next replica in turn (YARP's RoundRobin): the baseline affinity is measured against.</summary>
    RoundRobin,
}

/// <summary>The gateway's settings (configuration section "Gateway").</summary>
public sealed class GatewayOptions
{
    /// <summary>The configuration section read by <see cref="GearGateway.Build"/>.</summary>
    public const string SectionName = "Gateway";

    /// <summary>Base addresses of the Gear.Server replicas (e.g. http://127.0.0.1:5181).</summary>
    public List<string> Replicas { get; set; } = [];

    /// <summary>Affinity (default) or RoundRobin.</summary>
    public RoutingPolicy Routing { get; set; } = RoutingPolicy.Affinity;

    /// <summary>How often each replica's <c>/health/ready</c> is probed; two failures in a row take it out (default 2 s).</summary>
    public TimeSpan HealthCheckInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How often each replica's <c>/v1/load</c> is read (default 1 s).</summary>
    public TimeSpan LoadPollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Conversations remembered for affinity (least recently used forgotten first; default 100,000).</summary>
    public int MaxConversations { get; set; } = 100_000;

    /// <summary>Longest request body read to find the conversation (default 16 MiB); larger requests get 413.</summary>
    public int MaxRequestBytes { get; set; } = 16 << 20;

    /// <summary>Every problem with these options, each naming the option; empty when valid.</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Replicas.Count == 0)
            problems.Add("Gateway:Replicas is empty: give the base address of at least one Gear.Server (e.g. --Gateway:Replicas:0=http://127.0.0.1:5181).");
        foreach (var replica in Replicas)
            if (!Uri.TryCreate(replica, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
                problems.Add($"Gateway:Replicas has '{replica}', which is not an absolute http(s) address.");
        if (Replicas.Distinct(StringComparer.OrdinalIgnoreCase).Count() != Replicas.Count)
            problems.Add("Gateway:Replicas names a replica twice.");
        if (HealthCheckInterval <= TimeSpan.Zero)
            problems.Add("Gateway:HealthCheckInterval must be positive.");
        if (LoadPollInterval <= TimeSpan.Zero)
            problems.Add("Gateway:LoadPollInterval must be positive.");
        if (MaxConversations < 1)
            problems.Add("Gateway:MaxConversations must be at least 1.");
        if (MaxRequestBytes < 1024)
            problems.Add("Gateway:MaxRequestBytes must be at least 1024.");
        return problems;
    }
}
