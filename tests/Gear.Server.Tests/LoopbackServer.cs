using System.ClientModel;
using System.ClientModel.Primitives;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using OpenAI;
using OpenAI.Chat;

namespace Gear.Server.Tests;

/// <summary>
/// Gear.Server on 127.0.0.1 at a free port, started for a test class and stopped with it: the real Kestrel, the real
/// sockets, the official OpenAI client.
/// </summary>
public sealed class LoopbackServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private LoopbackServer(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
    }

    /// <summary>http://127.0.0.1:port</summary>
    public Uri Address { get; }

    public IServiceProvider Services => _app.Services;

    /// <summary>Starts a server with the given configuration (e.g. "--Gear:Model=gear-tiny"); <paramref name="services"/> may replace the chat client.</summary>
    public static async Task<LoopbackServer> StartAsync(string[] args, Action<IServiceCollection>? services = null)
    {
        var app = GearServer.Build(["--Urls=http://127.0.0.1:0", "--Logging:LogLevel:Default=Warning", .. args], services);
        await app.StartAsync();
        var address = new Uri(app.Urls.Single());
        Assert.Equal("127.0.0.1", address.Host);                                              // loopback only
        return new LoopbackServer(app, address);
    }

    /// <summary>An OpenAI <see cref="ChatClient"/> for <paramref name="model"/> pointed at this server.</summary>
    public ChatClient OpenAI(string model) => new(model, new ApiKeyCredential("not-needed"), new OpenAIClientOptions
    {
        Endpoint = new Uri(Address, "/v1"),
        NetworkTimeout = TimeSpan.FromMinutes(2),
        RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
    });

    public HttpClient Http() => new() { BaseAddress = Address, Timeout = TimeSpan.FromMinutes(2) };

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
