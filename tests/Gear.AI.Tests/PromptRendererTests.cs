using Microsoft.Extensions.AI;
using LlamaRole = Gear.AI.Llama.Chat.ChatRole;

namespace Gear.AI.Tests;

public class PromptRendererTests
{
    [Fact]
    public void Turns_InstructionsAndToolsFirst_ThenMessagesWithCallsAndResults()
    {
        var tool = AIFunctionFactory.Create((string city) => city, "get_weather", "Weather");
        var options = new ChatOptions { Instructions = "Be brief.", Tools = [tool] };
        var turns = PromptRenderer.Turns(
        [
            new ChatMessage(ChatRole.User, "Weather in Paris?"),
            new ChatMessage(ChatRole.Assistant, [new FunctionCallContent("c1", "get_weather", new Dictionary<string, object?> { ["city"] = "Paris" })]),
            new ChatMessage(ChatRole.Tool, [new FunctionResultContent("c1", "sunny")]),
        ], options);
        Assert.Equal([LlamaRole.System, LlamaRole.System, LlamaRole.User, LlamaRole.Assistant, LlamaRole.Tool], turns.Select(t => t.Role));
        Assert.Equal("Be brief.", turns[0].Content);
        Assert.Contains("get_weather", turns[1].Content);
        Assert.Equal("{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Paris\"}}", turns[3].Content);
        Assert.Equal("sunny", turns[4].Content);
    }

    [Fact]
    public void Turns_ToolModeNone_DoesNotDescribeTools()
    {
        var tool = AIFunctionFactory.Create(() => 1, "f");
        var turns = PromptRenderer.Turns([new ChatMessage(ChatRole.User, "hi")], new ChatOptions { Tools = [tool], ToolMode = ChatToolMode.None });
        Assert.Single(turns);
    }

    [Fact]
    public void Turns_UnknownRole_ArgumentExceptionNamingIt()
    {
        var e = Assert.Throws<ArgumentException>(() => PromptRenderer.Turns([new ChatMessage(new ChatRole("narrator"), "x")], null));
        Assert.Contains("narrator", e.Message);
    }
}
