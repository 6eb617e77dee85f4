using System.Text.Json;
using Microsoft.Extensions.Options;
using Yarp.ReverseProxy;

namespace Gear.Gateway;

/// <summary>Reads every replica's <c>GET /v1/load</c> each <see cref="GatewayOptions.LoadPollInterval"/> into the <see cref="ReplicaBook"/>.</summary>
public sealed class ReplicaLoadMonitor(IProxyStateLookup proxy, ReplicaBook book, IHttpClientFactory http, IOptions<GatewayOptions> options,
    ILogger<ReplicaLoadMonitor> logger) : BackgroundService
{
    /// <summary>The name of the HttpClient the monitor uses.</summary>
    public const string ClientName = "gear-replica-load";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.LoadPollInterval);
        do
        {
            if (!proxy.TryGetCluster(GearGateway.ClusterId, out var cluster))
                continue;
            await Task.WhenAll(cluster.Destinations.Values.Select(async d =>
            {
                try
                {
                    using var client = http.CreateClient(ClientName);
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                    timeout.CancelAfter(TimeSpan.FromSeconds(2));
                    var address = new Uri(new Uri(d.Model.Config.Address.TrimEnd('/') + "/"), "v1/load");
                    using var json = JsonDocument.Parse(await client.GetStringAsync(address, timeout.Token));
                    var r = json.RootElement;
                    book.Report(d.DestinationId, new ReplicaLoad(r.GetProperty("running_requests").GetInt32(), r.GetProperty("waiting_requests").GetInt32(),
                        r.GetProperty("kv_free_bytes").GetInt64(), r.GetProperty("idle_conversations").GetInt32(), r.GetProperty("ready").GetBoolean(),
                        DateTimeOffset.UtcNow));
                }
                catch (Exception e) when (e is HttpRequestException or OperationCanceledException or JsonException or KeyNotFoundException or InvalidOperationException
                    && !stoppingToken.IsCancellationRequested)
                {
                    logger.LogDebug("No load from replica {Replica}: {Message}", d.DestinationId, e.Message);
                }
            }));
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }
}
