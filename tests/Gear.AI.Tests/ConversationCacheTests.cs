using Gear.AI.Compression;
using Microsoft.Extensions.AI;
using Xunit.Abstractions;

namespace Gear.AI.Tests;

/// <summary>Conversations continued by sending their whole history: each turn prefills only what is new.</summary>
public class ConversationCacheTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(CacheKind.Gear, 2)]
    [InlineData(CacheKind.Fp16, 4)]
    public async Task SixTurns_WholeHistorySentEachTurn_ReuseAtLeast95PercentOfThePreviousTurn(CacheKind kind, int bits)
    {
        using var client = new GearChatClient(TestClients.GearTiny, new GearChatClientOptions { Model = TestClients.GearTiny.Directory, Cache = kind, Bits = bits });
        string[] questions =
        [
            "Mr. Sherlock Holmes, who was usually very late in the mornings, was seated at the breakfast table.",
            "I stood upon the hearth-rug and picked up the stick which our visitor had left behind him the night before.",
            "It was a fine, thick piece of wood, bulbous-headed, of the sort which is known as a Penang lawyer.",
            "Just under the head was a broad silver band nearly an inch across.",
            "Holmes was sitting with his back to me, and I had given him no sign of my occupation.",
            "Well, Watson, what do you make of it?",
        ];
        var history = new List<ChatMessage>();
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 40 };
        int previous = 0;
        for (int turn = 0; turn < questions.Length; turn++)
        {
            history.Add(new ChatMessage(ChatRole.User, questions[turn]));
            var response = await client.GetResponseAsync(history, options);
            var usage = response.Usage!;
            output.WriteLine($"turn {turn + 1}: {usage.InputTokenCount} prompt tokens, {usage.CachedInputTokenCount} cached, {usage.OutputTokenCount} generated");
            if (turn > 0)
                Assert.True(usage.CachedInputTokenCount >= 0.95 * previous,
                    $"turn {turn + 1}: {usage.CachedInputTokenCount} cached of the previous turn's {previous} prompt + reply tokens");
            previous = (int)(usage.InputTokenCount + usage.OutputTokenCount)!;
            history.AddRange(response.Messages);
        }
        Assert.Equal(1, client.CacheStatistics.Sessions);                                  // each turn's sequence replaced the one it continued
    }

    [Fact]
    public async Task TwoConversationsOverOneDocument_SecondReusesTheDocument()
    {
        using var client = new GearChatClient(TestClients.GearTiny, new GearChatClientOptions { Model = TestClients.GearTiny.Directory, Cache = CacheKind.Gear, Bits = 2 });
        string document = string.Join(" ", File.ReadAllText(Path.Combine(TestClients.RepoRoot, "bench", "data", "doyle-hound-of-the-baskervilles.txt")).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Skip(300).Take(900));
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 8 };
        var first = await client.GetResponseAsync([new ChatMessage(ChatRole.System, document), new ChatMessage(ChatRole.User, "Who is Mortimer?")], options);
        var second = await client.GetResponseAsync([new ChatMessage(ChatRole.System, document), new ChatMessage(ChatRole.User, "Where is Baskerville Hall?")], options);
        output.WriteLine($"first: {first.Usage!.InputTokenCount} prompt tokens; second: {second.Usage!.InputTokenCount}, {second.Usage.CachedInputTokenCount} cached");
        Assert.True(second.Usage.CachedInputTokenCount >= first.Usage.InputTokenCount - 80, $"{second.Usage.CachedInputTokenCount} cached");
    }

}
