using System.Net;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Gear.Server.Tests;

/// <summary>What a router reads of one replica: readiness, liveness and load, as the requests on it come and go.</summary>
public class ReplicaEndpointsTests(GearTinyServer fixture) : IClassFixture<GearTinyServer>
{
    [Fact]
    public async Task Health_ReadyOnceLoaded_LiveAlways()
    {
        using var http = fixture.Server.Http();
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health/live")).StatusCode);
        var ready = await http.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("Healthy", await ready.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Load_CountsRequestsRunning_AndTheCacheHeld()
    {
        using var http = fixture.Server.Http();
        using var idle = JsonDocument.Parse(await http.GetStringAsync("/v1/load"));
        Assert.True(idle.RootElement.GetProperty("ready").GetBoolean());
        Assert.Equal("gear-tiny", idle.RootElement.GetProperty("model").GetString());
        Assert.Equal(32, idle.RootElement.GetProperty("max_concurrent_sequences").GetInt32());
        long budget = idle.RootElement.GetProperty("kv_budget_bytes").GetInt64();
        Assert.True(budget > 0);

        // Three long answers: while they stream, the load shows them running.
        using var stop = new CancellationTokenSource();
        var chat = fixture.Server.OpenAI("gear-tiny");
        var options = new OpenAI.Chat.ChatCompletionOptions { MaxOutputTokenCount = 400 };
        var running = Enumerable.Range(0, 3).Select(i => Task.Run(async () =>
        {
            await foreach (var _ in chat.CompleteChatStreamingAsync([new OpenAI.Chat.UserChatMessage($"Replica load {i}: tell me a long story.")], options, stop.Token))
            {
            }
        })).ToList();
        int seen = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (seen < 3 && DateTime.UtcNow < deadline && running.Any(t => !t.IsCompleted))
        {
            using var busy = JsonDocument.Parse(await http.GetStringAsync("/v1/load"));
            seen = Math.Max(seen, busy.RootElement.GetProperty("running_requests").GetInt32() + busy.RootElement.GetProperty("waiting_requests").GetInt32());
            await Task.Delay(20);
        }
        await Task.WhenAll(running);
        Assert.True(seen >= 3, $"the load showed at most {seen} requests while three ran");

        using var after = JsonDocument.Parse(await http.GetStringAsync("/v1/load"));
        Assert.Equal(0, after.RootElement.GetProperty("running_requests").GetInt32());
        Assert.True(after.RootElement.GetProperty("idle_conversations").GetInt32() >= 1);
        long resident = after.RootElement.GetProperty("kv_resident_bytes").GetInt64();
        Assert.True(resident > 0);
        Assert.Equal(budget - resident, after.RootElement.GetProperty("kv_free_bytes").GetInt64());
    }

    [Fact]
    public async Task Ready_TurnsUnhealthy_WhenTheServerBeginsToStop()
    {
        await using var server = await LoopbackServer.StartAsync(GearTinyServer.Args);
        using var http = server.Http();
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health/ready")).StatusCode);
        // Drain: the lifetime's stopping signal fires before Kestrel closes; a router polling /health/ready sees 503 in between.
        var lifetime = server.Services.GetRequiredService<IHostApplicationLifetime>();
        var check = server.Services.GetRequiredService<Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckService>();
        lifetime.StopApplication();
        var report = await check.CheckHealthAsync(c => c.Tags.Contains("ready"));
        Assert.Equal(Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Unhealthy, report.Status);
        Assert.Contains("shutting down", report.Entries.Single().Value.Description);
    }
}
