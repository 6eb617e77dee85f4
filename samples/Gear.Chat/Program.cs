// Gear.Chat — the console chat sample: a local Llama model with a GEAR-compressed KV cache.
// Text goes to stdout as it is generated; statistics go to stderr.
using System.CommandLine;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Gear.AI.Llama.Chat;
using Gear.AI.Llama.Generation;
using Gear.AI.Llama.Model;

var model = new Option<string>("--model") { Description = "Model directory or a name under models/ (default: stories260K)", DefaultValueFactory = _ => ModelLocator.DefaultModel };
var raw = new Option<bool>("--raw") { Description = "Feed the prompt as BOS + text, without the chat template" };
var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate per reply", DefaultValueFactory = _ => 128 };
var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 = greedy", DefaultValueFactory = _ => 0.7 };
var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 0.9 };
var seed = new Option<long?>("--seed") { Description = "Sampler seed (repeatable output)" };
var cache = new Option<string>("--cache") { Description = "KV cache: fp16, kivi, gearl, gear", DefaultValueFactory = _ => "gear" };
cache.AcceptOnlyFromAmong([.. CacheKindNames.All]);
var bits = new Option<int>("--bits") { Description = "Bits per quantized KV element (1-8)", DefaultValueFactory = _ => 4 };
var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
var prompt = new Argument<string?>("PROMPT") { Description = "Prompt; without it, an interactive chat starts", Arity = ArgumentArity.ZeroOrOne };

var root = new RootCommand("Chat with a local Llama model whose KV cache is GEAR-compressed.")
{
    model, raw, maxTokens, temperature, topP, seed, cache, bits, device, prompt,
};
root.SetAction(parse =>
{
    try
    {
        var cacheOptions = new GearOptions { Kind = CacheKindNames.Parse(parse.GetValue(cache)!), Bits = parse.GetValue(bits) }.Validate();
        var sampling = new SamplingOptions
        {
            Temperature = parse.GetValue(temperature),
            TopP = parse.GetValue(topP),
            Seed = parse.GetValue(seed),
            MaxNewTokens = parse.GetValue(maxTokens),
        }.Validate();
        string directory = ModelLocator.Resolve(parse.GetValue(model)!);
        using var runtime = LlamaRuntime.Load(directory, new ModelLoadOptions { Device = parse.GetValue(device)! });
        var chat = new ConsoleChat(runtime, cacheOptions, sampling, parse.GetValue(raw));
        string? text = parse.GetValue(prompt);
        return text is null ? chat.Interactive() : chat.Once(text);
    }
    catch (Exception e) when (e is Gear.AI.GearException or ArgumentException or DirectoryNotFoundException)
    {
        Console.Error.WriteLine($"error: {e.Message}");
        return 2;
    }
});
return root.Parse(args).Invoke();
