// Gear.LongDocumentChat — keep a long public-domain book resident in a GEAR-compressed KV cache and
// continue it over several turns with gear-tiny (a base model trained on books: it continues prose).
// Each turn sends the whole conversation; the client finds the book already in its cache and
// prefills only the new text. Per turn it prints the cached tokens and KV bytes against FP16.
//
// Usage: dotnet run --project samples/Gear.LongDocumentChat [-- --bits 2 --cache gear --turns 3 --max-tokens 48]
using Gear.AI;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;

string Arg(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
int turns = int.Parse(Arg("--turns", "3"));
int maxTokens = int.Parse(Arg("--max-tokens", "48"));
string bookPath = Arg("--book", Path.Combine(AppContext.BaseDirectory, "data", "carroll-alice-in-wonderland.txt"));

using var client = new GearChatClient(new GearChatClientOptions
{
    Model = ModelLocator.Resolve(Arg("--model", "gear-tiny")),
    Cache = CacheKindNames.Parse(Arg("--cache", "gear")),
    Bits = int.Parse(Arg("--bits", "2")),
});
var runtime = client.GetService<LlamaRuntime>()!;

// Keep as much of the book as the context holds, leaving room for the turns.
string[] followUps = ["Alice said to the Cat,", "Then the Queen shouted,", "At last Alice woke up and", "The Hatter laughed and", "The Rabbit ran off to"];
int room = runtime.Model.Config.MaxPositionEmbeddings - turns * (maxTokens + 24) - 8;
string book = File.ReadAllText(bookPath).ReplaceLineEndings("\n");
var ids = runtime.Tokenizer.Encode(book);
string document = runtime.Tokenizer.Decode(ids.Take(room));
Console.Error.WriteLine($"{Path.GetFileName(bookPath)}: {ids.Count:N0} tokens; keeping the first {Math.Min(room, ids.Count):N0} resident ({client.Options.Cache}, {client.Options.Bits} bits).");

var conversation = new List<ChatMessage> { new(ChatRole.User, document) };
var options = new ChatOptions { MaxOutputTokens = maxTokens, Temperature = 0.7f, TopP = 0.9f, Seed = 1, AdditionalProperties = new() { ["gear.raw"] = true } };
for (int turn = 0; turn < turns; turn++)
{
    if (turn > 0)
        conversation.Add(new ChatMessage(ChatRole.User, followUps[(turn - 1) % followUps.Length]));
    Console.WriteLine($"--- turn {turn + 1}{(turn > 0 ? $": \"{conversation[^1].Text}\"" : ": continue the book")}");
    var response = await client.GetResponseAsync(conversation, options);
    Console.WriteLine(response.Text.Trim());
    conversation.AddRange(response.Messages);
    var usage = response.Usage!;
    long resident = usage.AdditionalCounts!["gear.kv.resident_bytes"], fp16 = usage.AdditionalCounts["gear.kv.fp16_bytes"];
    Console.Error.WriteLine($"[turn {turn + 1}: prompt {usage.InputTokenCount} tokens, {usage.CachedInputTokenCount} cached, generated {usage.OutputTokenCount}; " +
                            $"KV {resident / 1024.0:F0} KiB vs FP16 {fp16 / 1024.0:F0} KiB ({(double)resident / fp16:F2}x)]");
}
