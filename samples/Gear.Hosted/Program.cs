// Gear.Hosted — Gear in a Generic Host: options bound from appsettings.json ("Gear" section) and
// validated at startup, the model loaded by a hosted warm-up before traffic, a background worker
// that serves a few requests, and a graceful shutdown (Ctrl+C, or when the worker is done) that
// disposes the client with the container.
//
// Usage: dotnet run --project samples/Gear.Hosted [-- --Gear:Bits=2 --Gear:Cache=Kivi]
using Gear.AI;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Services.AddGearChatClient(builder.Configuration.GetSection(GearChatClientOptions.SectionName),
        o => o.Model = ModelLocator.Resolve(o.Model))
    .UseLogging()
    .WithWarmup(builder.Services);
builder.Services.AddHostedService<StoryWorker>();
using var host = builder.Build();
await host.RunAsync();

/// <summary>Serves a few requests through the registered IChatClient, then asks the host to stop.</summary>
internal sealed class StoryWorker(IChatClient chat, IHostApplicationLifetime lifetime, ILogger<StoryWorker> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            foreach (var prompt in new[] { "Once upon a time", "The little cat" })
            {
                var response = await chat.GetResponseAsync(prompt, new ChatOptions { Seed = 3 }, stoppingToken);
                Console.WriteLine($"{prompt}{response.Text}");
                logger.LogInformation("Served {Tokens} tokens, finish {Finish}", response.Usage?.OutputTokenCount, response.FinishReason);
            }
        }
        catch (OperationCanceledException)
        {
            logger.LogInformation("Stopping: shutdown requested");
        }
        finally
        {
            lifetime.StopApplication();
        }
    }
}
