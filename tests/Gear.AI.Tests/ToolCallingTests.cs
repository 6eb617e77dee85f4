using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Gear.AI.Tests;

public class ToolCallingTests
{
    private static readonly string[] Tools = ["get_weather", "get_time"];

    [Fact]
    public void Parse_SingleCall_ReturnsFunctionCallWithArguments()
    {
        var calls = ToolCalling.Parse("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 2}}", Tools);
        var call = Assert.Single(calls!);
        Assert.Equal("get_weather", call.Name);
        Assert.StartsWith("call_", call.CallId);
        Assert.Equal("Paris", ((JsonElement)call.Arguments!["city"]!).GetString());
        Assert.Equal(2, ((JsonElement)call.Arguments!["days"]!).GetInt32());
    }

    [Theory]
    [InlineData("[{\"name\": \"get_weather\", \"parameters\": {}}, {\"name\": \"get_time\", \"parameters\": {\"tz\": \"UTC\"}}]")]
    [InlineData("{\"name\": \"get_weather\", \"parameters\": {}}; {\"name\": \"get_time\", \"parameters\": {\"tz\": \"UTC\"}}")]
    [InlineData("{\"name\": \"get_weather\", \"parameters\": {}}\n{\"name\": \"get_time\", \"arguments\": \"{\\\"tz\\\": \\\"UTC\\\"}\"}")]
    public void Parse_MultipleCalls_AllReturnedInOrder(string text)
    {
        var calls = ToolCalling.Parse(text, Tools)!;
        Assert.Equal(["get_weather", "get_time"], calls.Select(c => c.Name));
        Assert.Equal("UTC", ((JsonElement)calls[1].Arguments!["tz"]!).GetString());
        Assert.NotEqual(calls[0].CallId, calls[1].CallId);
    }

    [Theory]
    [InlineData("The weather is nice.")]
    [InlineData("{\"name\": \"get_weather\", \"parameters\": {\"city\": ")]
    [InlineData("{\"name\": \"launch_rockets\", \"parameters\": {}}")]
    [InlineData("{\"parameters\": {}}")]
    [InlineData("{\"name\": \"get_weather\", \"parameters\": [1, 2]}")]
    [InlineData("{\"name\": \"get_weather\"} and then some prose")]
    [InlineData("")]
    public void Parse_NotEntirelyValidCalls_ReturnsNullSoTextIsKept(string text) =>
        Assert.Null(ToolCalling.Parse(text, Tools));

    [Fact]
    public void DescribeTools_ListsEachSchemaAndTheFormat()
    {
        var tool = AIFunctionFactory.Create((string city) => $"sunny in {city}", "get_weather", "Weather for a city");
        string text = ToolCalling.DescribeTools([tool], required: false);
        Assert.Contains("\"name\": function name", text);
        Assert.Contains("\"get_weather\"", text);
        Assert.Contains("\"city\"", text);
    }

    [Fact]
    public void RenderCallAndResult_RoundTripThroughTheParser()
    {
        var call = new FunctionCallContent("c1", "get_time", new Dictionary<string, object?> { ["tz"] = "UTC" });
        var parsed = ToolCalling.Parse(ToolCalling.RenderCall(call), Tools)!;
        Assert.Equal("get_time", Assert.Single(parsed).Name);
        Assert.Equal("{\"t\":1}", ToolCalling.RenderResult(new FunctionResultContent("c1", JsonDocument.Parse("{\"t\":1}").RootElement)));
        Assert.Equal("12:00", ToolCalling.RenderResult(new FunctionResultContent("c1", "12:00")));
    }
}
