using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Gear.AI;

/// <summary>Loads the model while the host starts, so the first request does not pay for it.</summary>
internal sealed class GearWarmupService(IServiceProvider services, object? serviceKey, ILogger<GearWarmupService> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var client = serviceKey is null ? services.GetRequiredService<GearChatClient>() : services.GetRequiredKeyedService<GearChatClient>(serviceKey);
        logger.LogInformation("Warming up Gear model {Model}", client.Options.Model);
        await client.LoadAsync(cancellationToken).ConfigureAwait(false);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
