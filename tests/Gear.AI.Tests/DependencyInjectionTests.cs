using Gear.AI.Compression;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Gear.AI.Tests;

public class DependencyInjectionTests
{
    private static string Stories => ModelLocator.Resolve("stories260K");

    [Fact]
    public void ClientOptions_CacheDefaults_AreGearOptionsDefaults()
    {
        Assert.Equal(new GearOptions(), new GearChatClientOptions().ToCacheOptions());
    }

    [Fact]
    public void AddGearChatClient_ConfigurationSection_Binds()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Gear:Model"] = Stories,
            ["Gear:Cache"] = "Kivi",
            ["Gear:Bits"] = "2",
            ["Gear:CacheBudgetBytes"] = "1234567",
            ["Gear:StatefulConversations"] = "true",
        }).Build();
        var services = new ServiceCollection();
        services.AddGearChatClient(config.GetSection(GearChatClientOptions.SectionName));
        using var provider = services.BuildServiceProvider();
        var options = provider.GetRequiredService<IOptions<GearChatClientOptions>>().Value;
        Assert.Equal(CacheKind.Kivi, options.Cache);
        Assert.Equal(2, options.Bits);
        Assert.Equal(1234567, options.CacheBudgetBytes);
        Assert.True(options.StatefulConversations);
        var client = provider.GetRequiredService<GearChatClient>();
        Assert.Equal(CacheKind.Kivi, client.Options.Cache);
        Assert.False(client.IsLoaded); // lazily loaded
    }

    [Theory]
    [InlineData("Bits", "9")]
    [InlineData("GroupSize", "0")]
    [InlineData("BufferLength", "100")]
    [InlineData("CacheBudgetBytes", "-1")]
    [InlineData("Device", "tpu")]
    public async Task BadOptions_FailAtStartup_NamingTheOption(string key, string value)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["Gear:Model"] = Stories, [$"Gear:{key}"] = value });
        builder.Services.AddGearChatClient(builder.Configuration.GetSection("Gear"));
        using var host = builder.Build();
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public async Task KeyedRegistration_Resolves_SeparateOptions()
    {
        var services = new ServiceCollection();
        services.AddKeyedGearChatClient("small", o => { o.Model = Stories; o.Bits = 2; });
        services.AddKeyedGearChatClient("exact", o => { o.Model = Stories; o.Cache = CacheKind.Fp16; });
        await using var provider = services.BuildServiceProvider();
        var small = provider.GetRequiredKeyedService<GearChatClient>("small");
        var exact = provider.GetRequiredKeyedService<GearChatClient>("exact");
        Assert.Equal(2, small.Options.Bits);
        Assert.Equal(CacheKind.Fp16, exact.Options.Cache);
        Assert.NotNull(provider.GetRequiredKeyedService<IChatClient>("small"));
        var r = await provider.GetRequiredKeyedService<IChatClient>("exact").GetResponseAsync("Once upon a time", new ChatOptions { MaxOutputTokens = 4 });
        Assert.Equal(4, r.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task BuilderPipeline_ComposesMiddleware_AndSharesOneModel()
    {
        var services = new ServiceCollection();
        services.AddGearChatClient(o => o.Model = Stories).UseFunctionInvocation().UseOpenTelemetry();
        await using var provider = services.BuildServiceProvider();
        var chat = provider.GetRequiredService<IChatClient>();
        Assert.NotNull(chat.GetService<FunctionInvokingChatClient>());
        Assert.NotNull(chat.GetService<OpenTelemetryChatClient>());
        var gear = chat.GetService<GearChatClient>()!;
        Assert.Same(provider.GetRequiredService<GearChatClient>(), gear);
        var response = await chat.GetResponseAsync("Once upon a time", new ChatOptions { MaxOutputTokens = 5 });
        Assert.Equal(5, response.Usage!.OutputTokenCount);
        Assert.True(gear.IsLoaded);
    }

    [Fact]
    public async Task HostedWarmup_LoadsBeforeFirstRequest_DisposedWithContainer()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddGearChatClient(o => o.Model = Stories).WithWarmup(builder.Services);
        GearChatClient client;
        using (var host = builder.Build())
        {
            await host.StartAsync();
            client = host.Services.GetRequiredService<GearChatClient>();
            Assert.True(client.IsLoaded);
            await host.StopAsync();
        }
        await Assert.ThrowsAsync<ObjectDisposedException>(() => client.GetResponseAsync("hi"));
    }

    [Fact]
    public async Task FunctionInvocation_ToolCallFromModel_IsInvokedAndResultRendered()
    {
        // A scripted inner client stands in for a model that answers with a JSON tool call, to show the
        // parsed FunctionCallContent flows through UseFunctionInvocation and back as a tool message.
        int calls = 0;
        var tool = AIFunctionFactory.Create((string city) => { calls++; return $"sunny in {city}"; }, "get_weather");
        var scripted = new ScriptedChatClient();
        var chat = new ChatClientBuilder(scripted).UseFunctionInvocation().Build();
        var response = await chat.GetResponseAsync("Weather in Paris?", new ChatOptions { Tools = [tool] });
        Assert.Equal(1, calls);
        Assert.Contains(scripted.SeenMessages, m => m.Role == ChatRole.Tool);
        Assert.Equal("It is sunny.", response.Text);
    }

    private sealed class ScriptedChatClient : IChatClient
    {
        public List<ChatMessage> SeenMessages { get; } = [];

        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            var list = messages.ToList();
            SeenMessages.AddRange(list);
            if (list.Any(m => m.Role == ChatRole.Tool))
                return Task.FromResult(new ChatResponse(new ChatMessage(ChatRole.Assistant, "It is sunny.")));
            var calls = ToolCalling.Parse("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", ["get_weather"])!;
            return Task.FromResult(new ChatResponse(new ChatMessage(ChatRole.Assistant, [.. calls])) { FinishReason = ChatFinishReason.ToolCalls });
        }

        public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose() { }
    }
}
