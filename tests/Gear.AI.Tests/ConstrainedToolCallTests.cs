using System.ComponentModel;
using System.Text.Json;
using Json.Schema;
using Microsoft.Extensions.AI;

namespace Gear.AI.Tests;

/// <summary>
/// Tool modes on gear-tiny, which knows nothing of tools: a required mode always yields a call (to the named function
/// with RequireSpecific) whose arguments fit the function's schema, invoked through <see cref="FunctionInvokingChatClient"/>;
/// one call when AllowMultipleToolCalls is false; in Auto mode an answer that starts as JSON is always a parsed call.
/// </summary>
public sealed class ConstrainedToolCallTests
{
    private sealed class Calls
    {
        public List<string> Made { get; } = [];
    }

    private static (AIFunction Weather, AIFunction Time, Calls Calls) Functions()
    {
        var calls = new Calls();
        var weather = AIFunctionFactory.Create(([Description("City")] string city, [Description("Days ahead")] int days) =>
        {
            lock (calls) calls.Made.Add($"get_weather({city}, {days})");
            return $"sunny in {city}";
        }, "get_weather", "Weather for a city");
        var time = AIFunctionFactory.Create((string timeZone) =>
        {
            lock (calls) calls.Made.Add($"get_time({timeZone})");
            return "12:00";
        }, "get_time", "The time in a time zone");
        return (weather, time, calls);
    }

    private static GearChatClient Client() =>
        new(TestClients.GearTiny, new GearChatClientOptions { Model = TestClients.GearTiny.Directory, Cache = Compression.CacheKind.Gear, Bits = 4 });

    [Theory]
    [InlineData(0f, 1)]
    [InlineData(1.0f, 2)]
    [InlineData(1.5f, 3)]
    public async Task RequireSpecific_ThroughFunctionInvocation_CallsThatFunctionWithValidArguments(float temperature, int seed)
    {
        var (weather, time, calls) = Functions();
        using var gear = Client();
        using var chat = new ChatClientBuilder(gear).UseFunctionInvocation(configure: f => f.MaximumIterationsPerRequest = 2).Build();
        var options = new ChatOptions { Tools = [weather, time], ToolMode = ChatToolMode.RequireSpecific("get_weather"), Temperature = temperature, Seed = seed, MaxOutputTokens = 96 };
        await chat.GetResponseAsync("What is the weather like?", options);
        Assert.NotEmpty(calls.Made);
        Assert.StartsWith("get_weather(", calls.Made[0]);                                       // later rounds are Auto (FunctionInvokingChatClient)
    }

    [Theory]
    [InlineData(0f, 4)]
    [InlineData(1.2f, 5)]
    public async Task RequireAny_ThroughFunctionInvocation_CallsAnOfferedFunction(float temperature, int seed)
    {
        var (weather, time, calls) = Functions();
        using var gear = Client();
        using var chat = new ChatClientBuilder(gear).UseFunctionInvocation(configure: f => f.MaximumIterationsPerRequest = 2).Build();
        await chat.GetResponseAsync("Help me.", new ChatOptions { Tools = [weather, time], ToolMode = ChatToolMode.RequireAny, Temperature = temperature, Seed = seed, MaxOutputTokens = 96 });
        Assert.NotEmpty(calls.Made);
    }

    [Theory]
    [InlineData(0.8f, 6)]
    [InlineData(1.5f, 7)]
    public async Task RequireAny_NotMultiple_GivesExactlyOneCall_WithArgumentsThatValidate(float temperature, int seed)
    {
        var (weather, time, _) = Functions();
        using var gear = Client();
        var response = await gear.GetResponseAsync("Help me.", new ChatOptions
        {
            Tools = [weather, time], ToolMode = ChatToolMode.RequireAny, AllowMultipleToolCalls = false, Temperature = temperature, Seed = seed, MaxOutputTokens = 96,
        });
        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        var function = call.Name == "get_weather" ? weather : time;
        var arguments = JsonSerializer.SerializeToElement(call.Arguments);
        Assert.True(JsonSchema.FromText(function.JsonSchema.GetRawText()).Evaluate(arguments).IsValid, $"{call.Name}: {arguments}");
        Assert.Equal(ChatFinishReason.ToolCalls, response.FinishReason);
    }

    [Fact]
    public async Task Auto_AnAnswerThatStartsAsJson_IsAlwaysAParsedCall()
    {
        var (weather, time, _) = Functions();
        using var gear = Client();
        for (int seed = 10; seed < 16; seed++)
        {
            var response = await gear.GetResponseAsync("Hello there.", new ChatOptions { Tools = [weather, time], Temperature = 1.5f, Seed = seed, MaxOutputTokens = 64 });
            bool called = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Any();
            Assert.True(called || !response.Text.TrimStart().StartsWith('{') && !response.Text.TrimStart().StartsWith('['), $"seed {seed}: '{response.Text}'");
        }
    }

    [Fact]
    public void CallSchema_AllowsAnArrayOfCalls_OnlyWhenMultipleAreAllowed()
    {
        var (weather, time, _) = Functions();
        const string two = """[{"name":"get_weather","parameters":{"city":"Oslo","days":1}},{"name":"get_time","parameters":{"timeZone":"UTC"}}]""";
        using var array = JsonDocument.Parse(two);
        Assert.True(JsonSchema.FromText(ToolCalling.CallSchema([weather, time], allowMultiple: true)).Evaluate(array.RootElement).IsValid);
        Assert.False(JsonSchema.FromText(ToolCalling.CallSchema([weather, time], allowMultiple: false)).Evaluate(array.RootElement).IsValid);
        Assert.NotNull(Gear.AI.Llama.Generation.Json.JsonGrammar.FromSchema(ToolCalling.CallSchema([weather, time], allowMultiple: true)));
    }

    [Fact]
    public async Task RequireSpecific_UnknownFunction_IsAnArgumentError()
    {
        var (weather, _, _) = Functions();
        using var gear = Client();
        var e = await Assert.ThrowsAsync<ArgumentException>(() => gear.GetResponseAsync("Hi.", new ChatOptions { Tools = [weather], ToolMode = ChatToolMode.RequireSpecific("launch") }));
        Assert.Contains("launch", e.Message);
    }
}
