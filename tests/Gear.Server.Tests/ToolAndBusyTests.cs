using System.ClientModel;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using OpenAI.Chat;
using MEAI = Microsoft.Extensions.AI;

namespace Gear.Server.Tests;

/// <summary>
/// The protocol of tool calls, checked over a callback chat client (the server maps whatever IChatClient is registered;
/// Gear's own tool-call parsing is tested in Gear.AI.Tests), and a full queue over Gear.
/// </summary>
public class ToolAndBusyTests
{
    /// <summary>A chat client whose answers come from a callback (the Microsoft.Extensions.AI testing habit).</summary>
    private sealed class CallbackChatClient(Func<IList<MEAI.ChatMessage>, MEAI.ChatOptions?, MEAI.ChatResponse> respond) : MEAI.IChatClient
    {
        public Task<MEAI.ChatResponse> GetResponseAsync(IEnumerable<MEAI.ChatMessage> messages, MEAI.ChatOptions? options = null, CancellationToken cancellationToken = default) =>
            Task.FromResult(respond([.. messages], options));

        public async IAsyncEnumerable<MEAI.ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<MEAI.ChatMessage> messages, MEAI.ChatOptions? options = null,
            [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            foreach (var update in respond([.. messages], options).ToChatResponseUpdates())
            {
                await Task.Yield();
                yield return update;
            }
        }

        public object? GetService(Type serviceType, object? serviceKey = null) =>
            serviceType == typeof(MEAI.ChatClientMetadata) ? new MEAI.ChatClientMetadata("callback", null, "weather-model") : null;

        public void Dispose()
        {
        }
    }

    private static readonly BinaryData WeatherParameters = BinaryData.FromString("""
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        """);

    /// <summary>Calls get_weather for the city in the user's message; answers with the tool's result once it has one.</summary>
    private static MEAI.ChatResponse Weather(IList<MEAI.ChatMessage> messages, MEAI.ChatOptions? options)
    {
        var result = messages.SelectMany(m => m.Contents).OfType<MEAI.FunctionResultContent>().LastOrDefault();
        if (result is not null)
            return new MEAI.ChatResponse(new MEAI.ChatMessage(MEAI.ChatRole.Assistant, $"The weather: {result.Result} (call {result.CallId})"))
            {
                FinishReason = MEAI.ChatFinishReason.Stop,
                Usage = new MEAI.UsageDetails { InputTokenCount = 30, OutputTokenCount = 6, TotalTokenCount = 36 },
            };
        var tool = Assert.Single(options!.Tools!);
        Assert.Equal("get_weather", tool.Name);
        var schema = ((MEAI.AIFunctionDeclaration)tool).JsonSchema;
        Assert.Equal("string", schema.GetProperty("properties").GetProperty("city").GetProperty("type").GetString());
        return new MEAI.ChatResponse(new MEAI.ChatMessage(MEAI.ChatRole.Assistant,
            [new MEAI.FunctionCallContent("call_7", "get_weather", new Dictionary<string, object?> { ["city"] = "Paris" })]))
        {
            FinishReason = MEAI.ChatFinishReason.ToolCalls,
            Usage = new MEAI.UsageDetails { InputTokenCount = 20, OutputTokenCount = 9, TotalTokenCount = 29 },
        };
    }

    [Fact]
    public async Task ToolCalls_RoundTrip_WholeAndStreamed()
    {
        await using var server = await LoopbackServer.StartAsync([], services => services.AddSingleton<MEAI.IChatClient>(new CallbackChatClient(Weather)));
        var chat = server.OpenAI("weather-model");
        var options = new ChatCompletionOptions();
        options.Tools.Add(ChatTool.CreateFunctionTool("get_weather", "The weather in a city", WeatherParameters));
        List<ChatMessage> messages = [new UserChatMessage("What is the weather in Paris?")];

        ChatCompletion first = await chat.CompleteChatAsync(messages, options);
        Assert.Equal(ChatFinishReason.ToolCalls, first.FinishReason);
        var call = Assert.Single(first.ToolCalls);
        Assert.Equal("call_7", call.Id);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal("Paris", JsonDocument.Parse(call.FunctionArguments).RootElement.GetProperty("city").GetString());

        messages.Add(new AssistantChatMessage(first));
        messages.Add(new ToolChatMessage(call.Id, "sunny, 21 °C"));
        ChatCompletion second = await chat.CompleteChatAsync(messages, options);
        Assert.Equal("The weather: sunny, 21 °C (call call_7)", second.Content[0].Text);
        Assert.Equal(36, second.Usage.TotalTokenCount);

        string? id = null, name = null;
        var arguments = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("What is the weather in Paris?")], options))
        {
            foreach (var tool in update.ToolCallUpdates)
            {
                id ??= tool.ToolCallId;
                name ??= tool.FunctionName;
                arguments.Append(tool.FunctionArgumentsUpdate?.ToString());
            }
            finish = update.FinishReason ?? finish;
        }
        Assert.Equal(("call_7", "get_weather"), (id, name));
        Assert.Equal("Paris", JsonDocument.Parse(arguments.ToString()).RootElement.GetProperty("city").GetString());
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
    }

    [Fact]
    public async Task FullQueue_429_OthersComplete()
    {
        await using var server = await LoopbackServer.StartAsync(
            ["--Gear:Model=gear-tiny", "--Gear:Bits=2", "--Gear:DefaultTemperature=0", "--Gear:MaxConcurrentSequences=1", "--Gear:MaxQueuedRequests=1"]);
        var chat = server.OpenAI("gear-tiny");
        var requests = Enumerable.Range(0, 8).Select(async _ =>
        {
            try
            {
                ChatCompletion c = await chat.CompleteChatAsync([new UserChatMessage("Tell me about a dog on the heath.")], new ChatCompletionOptions { MaxOutputTokenCount = 48 });
                return (Status: 200, Text: c.Content[0].Text);
            }
            catch (ClientResultException e)
            {
                Assert.Contains("server_busy", e.Message);
                return (Status: e.Status, Text: "");
            }
        }).ToArray();
        var results = await Task.WhenAll(requests);
        Assert.Contains(results, r => r.Status == 429);
        var served = results.Where(r => r.Status == 200).ToList();
        Assert.NotEmpty(served);
        Assert.All(served, r => Assert.Equal(served[0].Text, r.Text));
    }
}
