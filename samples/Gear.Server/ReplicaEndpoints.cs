using System.Text.Json;
using Gear.AI;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Gear.Server;

/// <summary>
/// What a router in front of several servers needs of each one: <c>GET /health/live</c> (the process answers),
/// <c>GET /health/ready</c> (the model is loaded and the server is not shutting down) and <c>GET /v1/load</c> (requests
/// running and waiting, KV bytes held and free, idle conversations kept for their next turn).
/// </summary>
public static class ReplicaEndpoints
{
    /// <summary>Registers the readiness check (its tag: "ready").</summary>
    public static IServiceCollection AddReplicaHealth(this IServiceCollection services)
    {
        services.AddHealthChecks().AddCheck<ReadyCheck>("model", tags: ["ready"]);
        return services;
    }

    /// <summary>Maps the health and load endpoints.</summary>
    public static IEndpointRouteBuilder MapReplicaEndpoints(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false });
        endpoints.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = check => check.Tags.Contains("ready") });
        endpoints.MapGet("/v1/load", async (IChatClient chat, IHostApplicationLifetime lifetime, CancellationToken cancellationToken) =>
            Results.Bytes(await LoadJson(chat, lifetime, cancellationToken), "application/json"));
        return endpoints;
    }

    private static async Task<byte[]> LoadJson(IChatClient chat, IHostApplicationLifetime lifetime, CancellationToken cancellationToken)
    {
        var gear = chat.GetService<GearChatClient>();
        var load = gear?.Load;
        // The cache figures wait for the engine's next step boundary; only asked once the model is loaded.
        GearCacheStatistics? cache = gear is { IsLoaded: true } ? await Task.Run(() => gear.CacheStatistics, cancellationToken) : null;
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("model", chat.GetService<ChatClientMetadata>()?.DefaultModelId);
            w.WriteBoolean("ready", NotReady(chat, lifetime) is null);
            w.WriteBoolean("draining", lifetime.ApplicationStopping.IsCancellationRequested);
            w.WriteNumber("running_requests", load?.RunningRequests ?? 0);
            w.WriteNumber("waiting_requests", load?.WaitingRequests ?? 0);
            w.WriteNumber("max_concurrent_sequences", load?.MaxConcurrentSequences ?? 0);
            w.WriteNumber("max_queued_requests", load?.MaxQueuedRequests ?? 0);
            w.WriteNumber("idle_conversations", cache?.Sessions ?? 0);
            w.WriteNumber("kv_resident_bytes", cache?.ResidentBytes ?? 0);
            w.WriteNumber("kv_budget_bytes", cache?.BudgetBytes ?? 0);
            w.WriteNumber("kv_free_bytes", cache is null ? 0 : Math.Max(0, cache.BudgetBytes - cache.ResidentBytes));
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>Why the server is not ready, or null: ready once the model is loaded (the warm-up loads it at start), until it begins to stop.</summary>
    private static string? NotReady(IChatClient chat, IHostApplicationLifetime lifetime) =>
        lifetime.ApplicationStopping.IsCancellationRequested ? "The server is shutting down."
        : chat.GetService<GearChatClient>() is { IsLoaded: false } ? "The model is still loading."
        : null;

    private sealed class ReadyCheck(IChatClient chat, IHostApplicationLifetime lifetime) : IHealthCheck
    {
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
            Task.FromResult(NotReady(chat, lifetime) is { } why ? HealthCheckResult.Unhealthy(why) : HealthCheckResult.Healthy());
    }
}
