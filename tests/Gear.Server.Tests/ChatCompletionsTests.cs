using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json;
using Gear.AI;
using Gear.AI.Compression;
using OpenAI.Chat;
using Xunit.Abstractions;
using MEAI = Microsoft.Extensions.AI;

namespace Gear.Server.Tests;

/// <summary>
/// One server on loopback (gear-tiny, FP16 cache — whose greedy answers do not depend on what else runs, see
/// ConcurrencyTests — greedy by default) for the class.
/// </summary>
public sealed class GearTinyServer : IAsyncLifetime
{
    public static readonly string[] Args =
    [
        "--Gear:Model=gear-tiny", "--Gear:Cache=Fp16", "--Gear:DefaultTemperature=0", "--Gear:MaxConcurrentSequences=32",
    ];

    public LoopbackServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await LoopbackServer.StartAsync(Args);

    public async Task DisposeAsync() => await Server.DisposeAsync();

    /// <summary>The same settings as the server's client, for answers "alone".</summary>
    public static GearChatClient DirectClient() => new(new GearChatClientOptions
    {
        Model = "gear-tiny", Cache = CacheKind.Fp16, DefaultTemperature = 0,
    });
}

/// <summary>Gear.Server through the official OpenAI .NET client: completions, streams, stops, usage and errors.</summary>
public class ChatCompletionsTests(GearTinyServer fixture, ITestOutputHelper output) : IClassFixture<GearTinyServer>
{
    private LoopbackServer Server => fixture.Server;

    private static readonly string[] Prompts =
    [
        "Tell me about the moors at night.", "Tell me about a missing letter.", "Tell me about the old manor.", "Tell me about a telegram.",
    ];

    private static async Task<string> Alone(string prompt, int maxTokens, params string[] stops)
    {
        using var direct = GearTinyServer.DirectClient();
        var options = new MEAI.ChatOptions { MaxOutputTokens = maxTokens, Temperature = 0 };
        if (stops.Length > 0)
            options.StopSequences = stops;
        return (await direct.GetResponseAsync([new MEAI.ChatMessage(MEAI.ChatRole.User, prompt)], options)).Text;
    }

    [Fact]
    public async Task NonStreaming_EqualsTheClientAlone_WithUsage()
    {
        var chat = Server.OpenAI("gear-tiny");
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage(Prompts[0])],
            new ChatCompletionOptions { MaxOutputTokenCount = 20, Temperature = 0 });
        Assert.Equal(await Alone(Prompts[0], 20), completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(20, completion.Usage.OutputTokenCount);
        Assert.True(completion.Usage.InputTokenCount > 5);
        Assert.Equal(completion.Usage.InputTokenCount + completion.Usage.OutputTokenCount, completion.Usage.TotalTokenCount);
        Assert.Equal("gear-tiny", completion.Model);
    }

    [Fact]
    public async Task ThirtyTwoConcurrentStreams_EachEqualsItsAnswerAlone_UsageAtTheEnd()
    {
        var expected = new List<string>();
        foreach (var p in Prompts)
            expected.Add(await Alone(p, 24));
        var chat = Server.OpenAI("gear-tiny");
        var streams = Enumerable.Range(0, 32).Select(async i =>
        {
            var text = new StringBuilder();
            ChatTokenUsage? usage = null;
            ChatFinishReason? finish = null;
            int chunks = 0;
            await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage(Prompts[i % Prompts.Length])],
                               new ChatCompletionOptions { MaxOutputTokenCount = 24, Temperature = 0 }))
            {
                foreach (var part in update.ContentUpdate)
                    text.Append(part.Text);
                usage = update.Usage ?? usage;
                finish = update.FinishReason ?? finish;
                chunks++;
            }
            return (i, Text: text.ToString(), Usage: usage, Finish: finish, Chunks: chunks);
        }).ToArray();
        var results = await Task.WhenAll(streams);
        foreach (var r in results)
        {
            Assert.Equal(expected[r.i % Prompts.Length], r.Text);
            Assert.Equal(ChatFinishReason.Length, r.Finish);
            Assert.NotNull(r.Usage);
            Assert.Equal(24, r.Usage!.OutputTokenCount);
            Assert.True(r.Chunks > 5, $"stream {r.i} came in {r.Chunks} chunks");
        }
        output.WriteLine($"32 streams, {results.Sum(r => r.Chunks)} chunks");
    }

    [Fact]
    public async Task Stop_CutsTheText_FinishReasonStop()
    {
        string full = await Alone(Prompts[1], 40);
        string stop = full.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(3).First();
        var chat = Server.OpenAI("gear-tiny");
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 40, Temperature = 0 };
        options.StopSequences.Add(stop);
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage(Prompts[1])], options);
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
    }

    [Fact]
    public async Task Errors_AreOpenAIErrors_AndTheServerKeepsServing()
    {
        using var http = Server.Http();
        async Task<(HttpStatusCode Status, JsonElement Error)> Post(string body)
        {
            using var response = await http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
            return (response.StatusCode, json.GetProperty("error"));
        }

        var (status, error) = await Post("""{"model": "gear-tiny", "messages": [""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("not valid JSON", error.GetProperty("message").GetString());

        (status, error) = await Post("""{"model": "gear-tiny", "messages": []}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("messages", error.GetProperty("param").GetString());

        (status, error) = await Post("""{"model": "gear-tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("temperature", error.GetProperty("param").GetString());

        (status, error) = await Post("""{"model": "gear-tiny", "messages": [{"role": "user", "content": "hi"}], "ignore_eos": "yes"}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("ignore_eos", error.GetProperty("param").GetString());

        using (var fixedLength = await http.PostAsync("/v1/chat/completions", new StringContent(
                   """{"model": "gear-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "ignore_eos": true}""", Encoding.UTF8, "application/json")))
        {
            var body = JsonDocument.Parse(await fixedLength.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(5, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            Assert.Equal("length", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        }

        var unknown = await Assert.ThrowsAsync<ClientResultException>(() => Server.OpenAI("gpt-4o").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(404, unknown.Status);
        Assert.Contains("model_not_found", unknown.Message);

        var huge = await Assert.ThrowsAsync<ClientResultException>(() => Server.OpenAI("gear-tiny").CompleteChatAsync([new UserChatMessage("hi")],
            new ChatCompletionOptions { MaxOutputTokenCount = 1_000_000 }));
        Assert.Equal(400, huge.Status);
        Assert.Contains("context_length_exceeded", huge.Message);

        var hugeStream = await Assert.ThrowsAsync<ClientResultException>(async () =>
        {
            await foreach (var _ in Server.OpenAI("gear-tiny").CompleteChatStreamingAsync([new UserChatMessage("hi")],
                               new ChatCompletionOptions { MaxOutputTokenCount = 1_000_000 }))
            {
            }
        });
        Assert.Equal(400, hugeStream.Status);

        ChatCompletion ok = await Server.OpenAI("gear-tiny").CompleteChatAsync([new UserChatMessage(Prompts[2])], new ChatCompletionOptions { MaxOutputTokenCount = 8 });
        Assert.Equal(await Alone(Prompts[2], 8), ok.Content[0].Text);
    }

    [Fact]
    public async Task DisconnectMidStream_CancelsTheRequest_ServerKeepsServing()
    {
        var gear = (GearChatClient)Server.Services.GetService(typeof(GearChatClient))!;
        using var http = Server.Http();
        // Warm: one finished request leaves one idle session.
        await Server.OpenAI("gear-tiny").CompleteChatAsync([new UserChatMessage(Prompts[3])], new ChatCompletionOptions { MaxOutputTokenCount = 4 });
        int sessions = gear.CacheStatistics.Sessions;

        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("""{"model": "gear-tiny", "stream": true, "max_tokens": 1900, "messages": [{"role": "user", "content": "Tell me everything about the hound."}]}""",
                Encoding.UTF8, "application/json"),
        };
        using (var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            int events = 0;
            while (events < 3 && await reader.ReadLineAsync() is { } line)
                if (line.StartsWith("data: ", StringComparison.Ordinal))
                    events++;
        }                                                                                     // the client goes away mid-stream
        // A request that ran to its end would be kept as an idle session; a cancelled one leaves nothing behind.
        await Task.Delay(1500);
        Assert.Equal(sessions, gear.CacheStatistics.Sessions);
        ChatCompletion after = await Server.OpenAI("gear-tiny").CompleteChatAsync([new UserChatMessage(Prompts[0])], new ChatCompletionOptions { MaxOutputTokenCount = 8 });
        Assert.Equal(await Alone(Prompts[0], 8), after.Content[0].Text);
    }

    [Fact]
    public async Task JsonSchemaResponseFormat_AnswerParsesAndValidates()
    {
        var chat = Server.OpenAI("gear-tiny");
        const string schema = """{"type":"object","properties":{"city":{"type":"string","maxLength":20},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"],"additionalProperties":false}""";
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("Plan a trip.")], new ChatCompletionOptions
        {
            MaxOutputTokenCount = 80, Temperature = 1.2f,
            ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("trip", BinaryData.FromString(schema), jsonSchemaIsStrict: true),
        });
        using var answer = JsonDocument.Parse(completion.Content[0].Text);
        Assert.True(Json.Schema.JsonSchema.FromText(schema).Evaluate(answer.RootElement).IsValid, completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
    }

    [Fact]
    public async Task RequiredToolChoice_NotParallel_GivesOneCall()
    {
        var chat = Server.OpenAI("gear-tiny");
        var tool = ChatTool.CreateFunctionTool("get_weather", "Weather for a city",
            BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"""));
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("Weather?")], new ChatCompletionOptions
        {
            Tools = { tool }, ToolChoice = ChatToolChoice.CreateRequiredChoice(), AllowParallelToolCalls = false, MaxOutputTokenCount = 60,
        });
        Assert.Equal(ChatFinishReason.ToolCalls, completion.FinishReason);
        var call = Assert.Single(completion.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        using var arguments = JsonDocument.Parse(call.FunctionArguments.ToString());
        Assert.Equal(JsonValueKind.String, arguments.RootElement.GetProperty("city").ValueKind);
    }

    [Fact]
    public async Task Models_ListsTheServedModel()
    {
        using var http = Server.Http();
        var json = JsonDocument.Parse(await http.GetStringAsync("/v1/models")).RootElement;
        Assert.Equal("list", json.GetProperty("object").GetString());
        Assert.Equal("gear-tiny", json.GetProperty("data")[0].GetProperty("id").GetString());
    }
}
