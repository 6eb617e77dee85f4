using System.ComponentModel;
using System.Text.Json;
using Json.Schema;
using Microsoft.Extensions.AI;

namespace Gear.AI.Tests;

/// <summary>
/// Structured output through the client with tiny models that know nothing of JSON: whatever they would write, the
/// answer parses, validates against the schema (JsonSchema.Net) and deserializes, with MEAI's own
/// <c>GetResponseAsync&lt;T&gt;</c> in both its schema modes.
/// </summary>
public sealed class StructuredOutputTests
{
    public enum Mood { Happy, Sad, Sleepy }

    public sealed record Person(string Name, int Age, string? Nickname);

    public sealed record Pet([property: Description("The pet's name")] string Name, Mood Mood, bool Fluffy, double Weight);

    public sealed record Trip(DateTime When, Guid Id, List<string> Stops, Person Driver, int[] Legs);

    public sealed record Shelf(Dictionary<string, int> Counts, Pet? Favourite);

    private static GearChatClient Client(string model) => model == "gear-tiny"
        ? new GearChatClient(TestClients.GearTiny, new GearChatClientOptions { Model = TestClients.GearTiny.Directory, Cache = Compression.CacheKind.Gear, Bits = 2 })
        : TestClients.Create();

    public static TheoryData<string, float, int> Runs => new()
    {
        { "stories260K", 0f, 1 }, { "stories260K", 1.0f, 2 }, { "stories260K", 1.3f, 3 },
        { "gear-tiny", 0f, 4 }, { "gear-tiny", 0.8f, 5 }, { "gear-tiny", 1.5f, 6 },
    };

    [Theory]
    [MemberData(nameof(Runs))]
    public async Task GetResponseAsyncOfT_NativeSchema_GivesATypedValueThatValidates(string model, float temperature, int seed)
    {
        using var client = Client(model);
        var options = new ChatOptions { Temperature = temperature, Seed = seed, MaxOutputTokens = 160 };
        await Typed<Person>(client, "Tell me about a person.", options);
        await Typed<Pet>(client, "Describe a pet.", options);
        if (model == "gear-tiny")                                                              // stories260K's 512 tokens hold no more schema
        {
            await Typed<Trip>(client, "Plan a trip.", options);
            await Typed<Shelf>(client, "What is on the shelf?", options);
        }
    }

    private static async Task Typed<T>(GearChatClient client, string prompt, ChatOptions options) where T : class
    {
        var response = await client.GetResponseAsync<T>(prompt, options: options, useJsonSchemaResponseFormat: true);
        Assert.True(response.Result is not null, response.Text);
        using var answer = JsonDocument.Parse(response.Text);
        var schema = JsonSchema.FromText(ChatResponseFormat.ForJsonSchema<T>().Schema!.Value.GetRawText());
        Assert.True(schema.Evaluate(answer.RootElement).IsValid, $"{typeof(T).Name}: {response.Text}");
    }

    [Theory]
    [InlineData(0f, 1)]
    [InlineData(1.2f, 2)]
    public async Task GetResponseAsyncOfT_PromptOnlySchema_AnswersWithAJsonObject(float temperature, int seed)
    {
        // MEAI puts the schema in the prompt and asks for ChatResponseFormat.Json: any JSON object is guaranteed, the
        // schema's shape is up to the model.
        using var client = Client("gear-tiny");
        var response = await client.GetResponseAsync<Person>("Tell me about a person.",
            options: new ChatOptions { Temperature = temperature, Seed = seed, MaxOutputTokens = 160 }, useJsonSchemaResponseFormat: false);
        using var answer = JsonDocument.Parse(response.Text);
        Assert.Equal(JsonValueKind.Object, answer.RootElement.ValueKind);
    }

    [Theory]
    [MemberData(nameof(Runs))]
    public async Task ForJsonSchema_AnswersValidate(string model, float temperature, int seed)
    {
        using var client = Client(model);
        string[] schemas =
        [
            """{"type":"object","properties":{"title":{"type":"string","maxLength":12},"rating":{"type":"integer","minimum":1,"maximum":5},"tags":{"type":"array","items":{"type":"string","enum":["a","b","c"]},"maxItems":3}},"required":["title","rating","tags"],"additionalProperties":false}""",
            """{"type":"array","items":{"type":"number","minimum":-2,"exclusiveMaximum":2},"minItems":1,"maxItems":5}""",
            """{"anyOf":[{"type":"object","properties":{"ok":{"const":true}},"required":["ok"]},{"type":"null"}]}""",
        ];
        foreach (var text in schemas)
        {
            using var schema = JsonDocument.Parse(text);
            var format = ChatResponseFormat.ForJsonSchema(schema.RootElement.Clone(), "answer");
            var response = await client.GetResponseAsync("Answer.", new ChatOptions { ResponseFormat = format, Temperature = temperature, Seed = seed, MaxOutputTokens = 200 });
            using var answer = JsonDocument.Parse(response.Text);
            Assert.True(JsonSchema.FromText(text).Evaluate(answer.RootElement).IsValid, $"{response.Text} does not validate against {text}");
            Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        }
    }

    [Fact]
    public async Task JsonFormat_WithoutASchema_IsAnObject()
    {
        using var client = TestClients.Create();
        var response = await client.GetResponseAsync("Say something.", new ChatOptions { ResponseFormat = ChatResponseFormat.Json, Temperature = 1, Seed = 9, MaxOutputTokens = 120 });
        using var answer = JsonDocument.Parse(response.Text);
        Assert.Equal(JsonValueKind.Object, answer.RootElement.ValueKind);
    }

    [Fact]
    public async Task UnenforceableSchema_IsRefusedBeforeAnythingRuns()
    {
        using var client = TestClients.Create();
        using var schema = JsonDocument.Parse("""{"type":"string","pattern":"^[a-z]+$"}""");
        var e = await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync("Hi.",
            new ChatOptions { ResponseFormat = ChatResponseFormat.ForJsonSchema(schema.RootElement.Clone()) }));
        Assert.Contains("pattern", e.Message);
    }

    [Fact]
    public async Task TooFewOutputTokens_ForTheShortestValue_IsAnArgumentError()
    {
        using var client = TestClients.Create();
        using var schema = JsonDocument.Parse("""{"type":"object","properties":{"a_long_property_name":{"type":"string"}},"required":["a_long_property_name"]}""");
        var e = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync("Hi.",
            new ChatOptions { ResponseFormat = ChatResponseFormat.ForJsonSchema(schema.RootElement.Clone()), MaxOutputTokens = 10 }));
        Assert.Contains("at least", e.Message);
    }
}
