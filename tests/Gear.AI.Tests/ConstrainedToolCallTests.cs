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

        /// <summary>Notes <paramref name="call"/> and answers <paramref name="result"/> (tools run on any thread).</summary>
        public string Record(string call, string result)
        {
            lock (Made)
                Made.Add(call);
            return result;
        }
    }

    private static (AIFunction Weather, AIFunction Time, Calls Calls) Functions()
    {
        var calls = new Calls();
        var weather = AIFunctionFactory.Create(([Description("City")] string city, [Description("Days ahead")] int days) =>
            calls.Record($"get_weather({city}, {days})", $"sunny in {city}"), "get_weather", "Weather for a city");
        var time = AIFunctionFactory.Create((string timeZone) => calls.Record($"get_time({timeZone})", "12:00"), "get_time", "The time in a time zone");
        return (weather, time, calls);
    }

    private static GearChatClient Client() =>
        new(TestClients.GearTiny, new GearChatClientOptions { Model = TestClients.GearTiny.Directory, Cache = Compression.CacheKind.Gear, Bits = 4 });

    /// <summary>Whether <paramref name="json"/> validates against <paramref name="schema"/> (JsonSchema.Net).</summary>
    private static bool Validates(string schema, string json)
    {
        using var value = JsonDocument.Parse(json);
        return JsonSchema.FromText(schema).Evaluate(value.RootElement).IsValid;
    }

    /// <summary>Whether a call's arguments validate against its function's parameter schema.</summary>
    private static bool ArgumentsFit(AIFunction function, FunctionCallContent call) =>
        Validates(function.JsonSchema.GetRawText(), JsonSerializer.Serialize(call.Arguments));

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
        Assert.True(ArgumentsFit(call.Name == "get_weather" ? weather : time, call), $"{call.Name}: {JsonSerializer.Serialize(call.Arguments)}");
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
        Assert.True(Validates(ToolCalling.CallSchema([weather, time], allowMultiple: true), two));
        Assert.False(Validates(ToolCalling.CallSchema([weather, time], allowMultiple: false), two));
        Assert.NotNull(Gear.AI.Llama.Generation.Json.JsonGrammar.FromSchema(ToolCalling.CallSchema([weather, time], allowMultiple: true)));
    }

    public sealed record Point(double X, double Y);

    public sealed record Shape(string Name, Point[] Corners, Shape? Inner);

    /// <summary>Tools whose parameter schemas refer to themselves: a type used twice ("#/properties/…") and a recursive one ("#").</summary>
    private static (AIFunction Route, AIFunction Draw, Calls Calls) ReferringFunctions()
    {
        var calls = new Calls();
        var route = AIFunctionFactory.Create((Point from, Point to) => calls.Record($"route({from}, {to})", "12 km"), "route", "Distance between two points");
        var draw = AIFunctionFactory.Create((Shape shape) => calls.Record($"draw({shape.Name})", "drawn"), "draw", "Draws a shape");
        return (route, draw, calls);
    }

    [Fact]
    public void CallSchema_KeepsEachToolsReferences_PointingIntoItsOwnSchema()
    {
        var (route, draw, _) = ReferringFunctions();
        Assert.Contains("\"$ref\"", route.JsonSchema.GetRawText() + draw.JsonSchema.GetRawText());
        string text = ToolCalling.CallSchema([route, draw], allowMultiple: false);
        bool Valid(string json) => Validates(text, json);
        Assert.True(Valid("""{"name":"route","parameters":{"from":{"x":1,"y":2},"to":{"x":3,"y":4}}}"""));
        Assert.False(Valid("""{"name":"route","parameters":{"from":{"x":1,"y":2},"to":{"x":"far","y":4}}}"""));   // "to" refers to "from"'s type
        Assert.True(Valid("""{"name":"draw","parameters":{"shape":{"name":"a","corners":[],"inner":{"name":"b","corners":[{"x":0,"y":0}],"inner":null}}}}"""));
        Assert.False(Valid("""{"name":"draw","parameters":{"shape":{"name":"a","corners":[],"inner":{"name":7,"corners":[],"inner":null}}}}"""));
        Assert.NotNull(Gear.AI.Llama.Generation.Json.JsonGrammar.FromSchema(text));
    }

    [Theory]
    [InlineData("route", 0f, 8)]
    [InlineData("draw", 1.0f, 9)]
    public async Task RequireSpecific_ToolWithReferences_IsInvokedWithArgumentsThatValidate(string name, float temperature, int seed)
    {
        var (route, draw, calls) = ReferringFunctions();
        using var gear = Client();
        var response = await gear.GetResponseAsync("Go.", new ChatOptions
        {
            Tools = [route, draw], ToolMode = ChatToolMode.RequireSpecific(name), AllowMultipleToolCalls = false, Temperature = temperature, Seed = seed, MaxOutputTokens = 160,
        });
        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Equal(name, call.Name);
        var function = name == "route" ? route : draw;
        Assert.True(ArgumentsFit(function, call), $"{call.Name}: {JsonSerializer.Serialize(call.Arguments)}");
        await function.InvokeAsync(new AIFunctionArguments(call.Arguments));                   // the arguments bind to the C# types
        Assert.StartsWith(name + "(", Assert.Single(calls.Made));
    }

    private const string Verdict = """{"type":"object","properties":{"verdict":{"enum":["yes","no"]},"score":{"type":"integer","minimum":0,"maximum":9}},"required":["verdict","score"],"additionalProperties":false}""";

    [Fact]
    public void CallSchema_WithAnAnswerFormat_TakesACallOrAnAnswer()
    {
        var (weather, time, _) = Functions();
        using var format = JsonDocument.Parse(Verdict);
        string text = ToolCalling.CallSchema([weather, time], allowMultiple: false, format.RootElement);
        bool Valid(string json) => Validates(text, json);
        Assert.True(Valid("""{"name":"get_time","parameters":{"timeZone":"UTC"}}"""));
        Assert.True(Valid("""{"verdict":"yes","score":3}"""));
        Assert.False(Valid("""{"verdict":"maybe","score":3}"""));
        Assert.False(Valid("""{"name":"get_time","parameters":{"zone":1}}"""));
        Assert.NotNull(Gear.AI.Llama.Generation.Json.JsonGrammar.FromSchema(text));
    }

    [Theory]
    [InlineData(0f, 10)]
    [InlineData(1.0f, 11)]
    [InlineData(1.5f, 12)]
    [InlineData(1.5f, 13)]
    public async Task JsonSchemaFormatWithTools_Auto_AnswersWithACallOrAValidAnswer(float temperature, int seed)
    {
        var (weather, time, _) = Functions();
        using var gear = Client();
        using var format = JsonDocument.Parse(Verdict);
        var response = await gear.GetResponseAsync("Is it sunny?", new ChatOptions
        {
            Tools = [weather, time], ResponseFormat = ChatResponseFormat.ForJsonSchema(format.RootElement.Clone(), "verdict"),
            Temperature = temperature, Seed = seed, MaxOutputTokens = 96,
        });
        var calls = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().ToArray();
        if (calls.Length > 0)
        {
            foreach (var call in calls)
            {
                Assert.Contains(call.Name, new[] { "get_weather", "get_time" });
                Assert.True(ArgumentsFit(call.Name == "get_weather" ? weather : time, call), call.Name);
            }
            Assert.Equal("", response.Text);
        }
        else
        {
            Assert.True(Validates(Verdict, response.Text), response.Text);
        }
    }

    [Fact]
    public async Task JsonFormatWithTools_RequireAny_AlwaysCalls()
    {
        var (weather, time, _) = Functions();
        using var gear = Client();
        var response = await gear.GetResponseAsync("Is it sunny?", new ChatOptions
        {
            Tools = [weather, time], ToolMode = ChatToolMode.RequireAny, ResponseFormat = ChatResponseFormat.Json, Temperature = 1.2f, Seed = 14, MaxOutputTokens = 96,
        });
        Assert.NotEmpty(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
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
