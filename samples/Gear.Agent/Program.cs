// Gear.Agent — a Microsoft Agent Framework ChatClientAgent over the Gear chat client, with a
// multi-turn session: the agent keeps the history, Gear keeps the compressed KV cache, so each turn
// prefills only what is new (see "cached" in the statistics).
//
// Usage: dotnet run --project samples/Gear.Agent [-- --model DIR]
using Gear.AI;
using Gear.AI.Llama;
using Microsoft.Agents.AI;
using Microsoft.Extensions.AI;

string model = args.SkipWhile(a => a != "--model").Skip(1).FirstOrDefault() ?? "stories260K";
using var gear = new GearChatClient(new GearChatClientOptions { Model = ModelLocator.Resolve(model), DefaultMaxOutputTokens = 40 });

AIAgent agent = gear.AsAIAgent(instructions: "Once upon a time", name: "Storyteller");
var session = await agent.CreateSessionAsync();
string[] turns = ["There was a little girl named Lily.", "One day, she found a big red ball.", "Then her friend Tom came to play."];
foreach (var turn in turns)
{
    var response = await agent.RunAsync(turn, session);
    Console.WriteLine($"user: {turn}");
    Console.WriteLine($"{agent.Name}: {response.Text.Trim()}");
    var usage = response.Usage;
    Console.Error.WriteLine($"[prompt {usage?.InputTokenCount} tokens ({usage?.CachedInputTokenCount ?? 0} cached), generated {usage?.OutputTokenCount}]");
}
