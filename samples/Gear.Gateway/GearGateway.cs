using System.Text.Json;
using Microsoft.Extensions.Options;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.LoadBalancing;

namespace Gear.Gateway;

/// <summary>
/// The gateway application: YARP forwarding <c>/v1/*</c> (OpenAI's chat completions and models) to the replicas of
/// <see cref="GatewayOptions.Replicas"/>, with YARP's active health checks on each replica's <c>/health/ready</c>, the
/// <see cref="ConversationAffinityPolicy"/> (or round robin), and <see cref="ConversationRouting"/> for retries and
/// affinity. <c>GET /gateway/replicas</c> shows what the gateway knows of each replica.
/// </summary>
public static class GearGateway
{
    /// <summary>The YARP cluster of the replicas.</summary>
    public const string ClusterId = "replicas";

    /// <summary>Where the gateway listens when no address is configured.</summary>
    public const string DefaultUrl = "http://127.0.0.1:5190";

    /// <summary>The gateway's application, configured from <paramref name="args"/> and appsettings.json.</summary>
    /// <exception cref="ArgumentException">The "Gateway" section is invalid; the message names each problem.</exception>
    public static WebApplication Build(string[] args)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        if (string.IsNullOrEmpty(builder.Configuration["urls"]))
            builder.WebHost.UseUrls(DefaultUrl);                                                // loopback unless told otherwise
        var options = builder.Configuration.GetSection(GatewayOptions.SectionName).Get<GatewayOptions>() ?? new GatewayOptions();
        if (options.Problems() is { Count: > 0 } problems)
            throw new ArgumentException("The gateway's options are invalid: " + string.Join(" ", problems), GatewayOptions.SectionName);
        builder.Services.AddSingleton(Options.Create(options));
        builder.Services.AddSingleton<ReplicaBook>();
        builder.Services.AddSingleton<ILoadBalancingPolicy, ConversationAffinityPolicy>();
        builder.Services.AddHttpClient(ReplicaLoadMonitor.ClientName);
        builder.Services.AddHostedService<ReplicaLoadMonitor>();
        builder.Services.AddReverseProxy().LoadFromMemory([Route()], [Cluster(options)]);
        // Its own meter and ASP.NET Core's through OpenTelemetry, over OTLP where OTEL_EXPORTER_OTLP_ENDPOINT is set (Aspire).
        var telemetry = builder.Services.AddOpenTelemetry()
            .WithMetrics(metrics => metrics.AddMeter(GatewayTelemetry.Name).AddAspNetCoreInstrumentation())
            .WithTracing(tracing => tracing.AddAspNetCoreInstrumentation());
        if (!string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
            telemetry.UseOtlpExporter();
        // A replica shutting down lets its streams finish; the gateway waits as long for its own.
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));

        var app = builder.Build();
        app.MapGet("/gateway/replicas", Replicas);
        app.MapReverseProxy(proxy =>
        {
            proxy.UseMiddleware<ConversationRouting>();
            proxy.UseLoadBalancing();
            proxy.Use(ConversationRouting.CountInFlight);
        });
        return app;
    }

    private static RouteConfig Route() => new()
    {
        RouteId = "openai",
        ClusterId = ClusterId,
        Match = new RouteMatch { Path = "/v1/{**rest}" },
    };

    private static ClusterConfig Cluster(GatewayOptions options) => new()
    {
        ClusterId = ClusterId,
        LoadBalancingPolicy = options.Routing == RoutingPolicy.Affinity ? ConversationAffinityPolicy.PolicyName : LoadBalancingPolicies.RoundRobin,
        Destinations = options.Replicas.Select((address, i) => ($"replica-{i}", new DestinationConfig { Address = address }))
            .ToDictionary(d => d.Item1, d => d.Item2),
        HealthCheck = new HealthCheckConfig
        {
            Active = new ActiveHealthCheckConfig
            {
                Enabled = true,
                Interval = options.HealthCheckInterval,
                Timeout = TimeSpan.FromSeconds(2),
                Policy = HealthCheckConstants.ActivePolicy.ConsecutiveFailures,
                Path = "/health/ready",
            },
        },
        // Long prompts are prefilled before the first byte: allow minutes of silence, not YARP's default 100 s.
        HttpRequest = new Yarp.ReverseProxy.Forwarder.ForwarderRequestConfig { ActivityTimeout = TimeSpan.FromMinutes(10) },
    };

    private static IResult Replicas(IProxyStateLookup proxy, ReplicaBook book)
    {
        if (!proxy.TryGetCluster(ClusterId, out var cluster))
            return Results.NotFound();
        var replicas = cluster.Destinations.Values.OrderBy(d => d.DestinationId, StringComparer.Ordinal).Select(d => new
        {
            id = d.DestinationId,
            address = d.Model.Config.Address,
            health = d.Health.Active.ToString(),
            in_flight = book.InFlight(d.DestinationId),
            conversations = book.Pinned(d.DestinationId),
            load = book.LoadOf(d.DestinationId),
        });
        return Results.Json(new { retried_requests = book.RetriedRequests, streams_ended_by_error = book.StreamsEndedByError, replicas }, new JsonSerializerOptions(JsonSerializerDefaults.Web) { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower });
    }
}
