using Aspire.Hosting;
using Aspire.Hosting.Testing;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace Gear.Gateway.Tests;

/// <summary>The Aspire app host as a user runs it: two replicas and the gateway started together, a chat through the gateway.</summary>
public sealed class AppHostTests
{
    [Fact]
    public async Task AppHost_StartsReplicasAndGateway_AndAChatGoesThrough()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.Gear_AppHost>(["--Replicas=2"], timeout.Token);
        await using var app = await builder.BuildAsync(timeout.Token);
        await app.StartAsync(timeout.Token);
        await app.ResourceNotifications.WaitForResourceHealthyAsync("gateway", timeout.Token);

        using var http = app.CreateHttpClient("gateway", "gateway");
        Assert.True(http.BaseAddress!.IsLoopback, $"the gateway listens on {http.BaseAddress}");
        var state = JsonNode.Parse(await http.GetStringAsync("/gateway/replicas", timeout.Token))!;
        Assert.Equal(2, state["replicas"]!.AsArray().Count);
        Assert.All(state["replicas"]!.AsArray(), r => Assert.Equal("Healthy", r!["health"]!.GetValue<string>()));

        using var response = await http.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "gear-tiny",
            messages = new[] { new { role = "user", content = "Where is Baskerville Hall?" } },
            max_tokens = 8,
        }, timeout.Token);
        response.EnsureSuccessStatusCode();
        Assert.Matches("^replica-[01]$", response.Headers.GetValues("x-gear-replica").Single());
        var answer = JsonNode.Parse(await response.Content.ReadAsStringAsync(timeout.Token))!;
        Assert.NotEmpty(answer["choices"]![0]!["message"]!["content"]!.GetValue<string>());
    }
}
