using Microsoft.AspNetCore.Builder;
using Xunit.Abstractions;

namespace Gear.Gateway.Tests;

/// <summary>
/// Three gear-tiny replicas (Gear.Server processes) behind the gateway on loopback: 24 conversations of 5 turns at once,
/// every turn sending the whole history. Bounded: 12 tokens an answer, each phase under a few minutes.
/// </summary>
public sealed class ScaleOutTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Replicas = 3, Count = 24, Turns = 5, MaxTokens = 12;
    private ReplicaSet _replicas = null!;

    public async Task InitializeAsync() => _replicas = await ReplicaSet.StartAsync(Replicas);

    public async Task DisposeAsync() => await _replicas.DisposeAsync();

    [Fact]
    public async Task AffinityRouting_ReusesNearlyAllHistory_FarMoreThanRoundRobin()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        var roundRobin = await RunThroughGateway("RoundRobin", "Round robin", timeout.Token);
        var routes = new Dictionary<string, long>();
        List<TurnResult> affinity;
        using (var meters = new System.Diagnostics.Metrics.MeterListener())
        {
            meters.InstrumentPublished = (instrument, l) => { if (instrument.Meter.Name == GatewayTelemetry.Name) l.EnableMeasurementEvents(instrument); };
            meters.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            {
                if (instrument.Name != "gear.gateway.requests")
                    return;
                foreach (var tag in tags)
                    if (tag.Key == "gear.route")
                        lock (routes)
                            routes[(string)tag.Value!] = routes.GetValueOrDefault((string)tag.Value!) + value;
            });
            meters.Start();
            affinity = await RunThroughGateway("Affinity", "Affinity", timeout.Token);
        }
        double a = Conversations.CachedShare(affinity), r = Conversations.CachedShare(roundRobin);
        output.WriteLine($"cached prompt tokens of what was possible: affinity {a:P1}, round robin {r:P1} ({Count} conversations x {Turns} turns, {Replicas} replicas)");
        foreach (var (name, turns) in new[] { ("affinity", affinity), ("round robin", roundRobin) })
            output.WriteLine($"  {name}: turns per replica {string.Join(", ", turns.GroupBy(t => t.Replica).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}"))}; "
                + $"conversations on one replica throughout: {turns.GroupBy(t => t.Conversation).Count(g => g.Select(t => t.Replica).Distinct().Count() == 1)}");

        Assert.All(affinity.Concat(roundRobin), t => Assert.Equal(1, t.Tries));
        // The gateway's own metric tells the same story: each conversation new once, then on its replica.
        lock (routes)
        {
            output.WriteLine("gear.gateway.requests by route: " + string.Join(", ", routes.Select(r => $"{r.Key} {r.Value}")));
            Assert.Equal(Count, routes.GetValueOrDefault("new"));
            Assert.Equal(Count * (Turns - 1), routes.GetValueOrDefault("affinity"));
            Assert.Equal(0, routes.GetValueOrDefault("moved"));
        }
        Assert.True(a >= 0.9, $"affinity routing reused {a:P1} of the possible prompt tokens (at least 90% expected)");
        Assert.True(r < 0.7, $"round robin reused {r:P1}: the comparison does not measure routing");
        // Every conversation stays on one replica, and the 24 are spread over all three.
        Assert.All(affinity.GroupBy(t => t.Conversation), g => Assert.Single(g.Select(t => t.Replica).Distinct()));
        Assert.Equal(Replicas, affinity.Select(t => t.Replica).Distinct().Count());

        // The official OpenAI client through the gateway, whole and streamed.
        await using var gateway = await GatewayHost.StartAsync(_replicas.Addresses, "Affinity");
        var client = new OpenAI.Chat.ChatClient("gear-tiny", new System.ClientModel.ApiKeyCredential("not-needed"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(gateway.Address, "/v1") });
        var options = new OpenAI.Chat.ChatCompletionOptions { MaxOutputTokenCount = 8 };
        var whole = await client.CompleteChatAsync([new OpenAI.Chat.UserChatMessage("Where is Baskerville Hall?")], options, timeout.Token);
        Assert.NotEmpty(whole.Value.Content[0].Text);
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in client.CompleteChatStreamingAsync([new OpenAI.Chat.UserChatMessage("Where is Baskerville Hall?")], options, timeout.Token))
            foreach (var part in update.ContentUpdate)
                streamed.Append(part.Text);
        Assert.Equal(whole.Value.Content[0].Text, streamed.ToString());                   // greedy: the same answer, from the replica that holds it
    }

    [Fact]
    public async Task ReplicaKilledMidway_EveryConversationCompletes_OnlyDocumentedRetries_AndItsConversationsMove()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        await using var gateway = await GatewayHost.StartAsync(_replicas.Addresses, "Affinity");
        using var http = gateway.Http();
        int answered = 0;
        string? killed = null;
        // Once a third of all turns are answered, stop the replica whose stream has just begun to flow.
        var turns = await Conversations.RunAsync(http, "Failover", Count, Turns, stream: true, maxTokens: 32,
            answered: _ => Interlocked.Increment(ref answered),
            streaming: replica =>
            {
                if (Volatile.Read(ref answered) >= Count * Turns / 3 && Interlocked.CompareExchange(ref killed, replica, null) is null)
                    _replicas.Kill(int.Parse(replica["replica-".Length..]));
            }, cancellationToken: timeout.Token);
        string state = await http.GetStringAsync("/gateway/replicas", timeout.Token);
        output.WriteLine(state);
        using var book = System.Text.Json.JsonDocument.Parse(state);
        long resent = book.RootElement.GetProperty("retried_requests").GetInt64();
        long ended = book.RootElement.GetProperty("streams_ended_by_error").GetInt64();

        Assert.NotNull(killed);
        var retried = turns.Where(t => t.Tries > 1).ToList();
        output.WriteLine($"killed {killed} after {Count * Turns / 3} of {Count * Turns} turns; {retried.Count} turns needed a retry by the client, "
            + $"{resent} requests re-sent by the gateway, {ended} streams ended by an error event: "
            + string.Join("; ", retried.SelectMany(t => t.Failures).Distinct()));
        // Every conversation finished all its turns; a turn failed at most once (the documented retry) and only a turn that
        // was on the killed replica when it stopped: at most one per conversation it held.
        Assert.Equal(Count * Turns, turns.Count);
        Assert.All(retried, t => Assert.Equal(2, t.Tries));
        Assert.All(retried.SelectMany(t => t.Failures), f => Assert.Matches("replica_failed|ended before|prematurely|HTTP 50|reset|refused", f));
        // The stream cut by the kill reached its client as a failure to retry; requests sent to the stopped replica before
        // the health checks noticed were re-sent by the gateway without the client seeing anything.
        Assert.NotEmpty(retried);
        Assert.True(resent >= 1, "the gateway re-sent no request to another replica");
        var moved = turns.GroupBy(t => t.Conversation).Where(g => g.Any(t => t.Replica == killed)).ToList();
        Assert.True(retried.Count <= moved.Count, $"{retried.Count} retries for {moved.Count} conversations on the killed replica");
        // Its conversations live on the others afterwards: later turns elsewhere, and once re-prefilled there, cached there.
        foreach (var conversation in moved)
        {
            var after = conversation.OrderBy(t => t.Turn).SkipWhile(t => t.Replica == killed).ToList();
            Assert.All(after, t => Assert.NotEqual(killed, t.Replica));
            Assert.All(after.Skip(1), t => Assert.Equal(after[0].Replica, t.Replica));
            Assert.All(after.Skip(1), t => Assert.True(t.CachedTokens > 0, $"conversation {t.Conversation} turn {t.Turn}: nothing cached on {t.Replica}"));
        }
        output.WriteLine($"{moved.Count} conversations moved off {killed}; all {Count} completed {Turns} turns");
    }

    private async Task<List<TurnResult>> RunThroughGateway(string routing, string tag, CancellationToken cancellationToken)
    {
        await using var gateway = await GatewayHost.StartAsync(_replicas.Addresses, routing);
        using var http = gateway.Http();
        return await Conversations.RunAsync(http, tag, Count, Turns, stream: false, MaxTokens, cancellationToken: cancellationToken);
    }
}

/// <summary>The gateway in this process on 127.0.0.1 at a free port.</summary>
public sealed class GatewayHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private GatewayHost(WebApplication app) => _app = app;

    public Uri Address => new(_app.Urls.Single());

    public static async Task<GatewayHost> StartAsync(IReadOnlyList<Uri> replicas, string routing)
    {
        var app = GearGateway.Build(["--Urls=http://127.0.0.1:0", "--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:Yarp=Error",
            $"--Gateway:Routing={routing}",
            "--Gateway:HealthCheckInterval=00:00:01", .. replicas.Select((r, i) => $"--Gateway:Replicas:{i}={r}")]);
        await app.StartAsync();
        var host = new GatewayHost(app);
        Assert.Equal("127.0.0.1", host.Address.Host);                                          // loopback only
        return host;
    }

    /// <summary>A gateway whose only replica is its own address (a port chosen free just before; retried if taken).</summary>
    public static async Task<GatewayHost> StartSelfListedAsync()
    {
        for (int attempt = 1; ; attempt++)
        {
            var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
            probe.Start();
            int port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            var app = GearGateway.Build([$"--Urls=http://127.0.0.1:{port}", "--Logging:LogLevel:Default=Error", $"--Gateway:Replicas:0=http://127.0.0.1:{port}"]);
            try
            {
                await app.StartAsync();
                return new GatewayHost(app);
            }
            catch (IOException) when (attempt < 3)
            {
                await app.DisposeAsync();
            }
        }
    }

    public HttpClient Http() => new() { BaseAddress = Address, Timeout = TimeSpan.FromMinutes(3) };

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
