// Gear.Chat — the console chat sample: a local Llama model with a GEAR-compressed KV cache, through
// GearChatClient (Microsoft.Extensions.AI). Text goes to stdout as it is generated; one statistics line
// per reply goes to stderr.
using System.CommandLine;
using Spectre.Console;
using Gear.AI;
using Gear.AI.Compression;
using Gear.AI.Llama;

var model = new Option<string>("--model") { Description = "Model directory or a name under models/", DefaultValueFactory = _ => ModelLocator.DefaultModel };
var raw = new Option<bool>("--raw") { Description = "Feed the prompt as BOS + text, without the chat template" };
var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate per reply", DefaultValueFactory = _ => 128 };
var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 = greedy", DefaultValueFactory = _ => 0.7f };
var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 0.9f };
var seed = new Option<long?>("--seed") { Description = "Sampler seed (repeatable output)" };
var cache = new Option<string>("--cache") { Description = "KV cache: fp16, kivi, gearl, gear", DefaultValueFactory = _ => "gear" };
cache.AcceptOnlyFromAmong([.. CacheKindNames.All]);
var bits = new Option<int>("--bits") { Description = "Bits per compressed KV element (1-8)", DefaultValueFactory = _ => 4 };
var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
var failOnOverflow = new Option<bool>("--fail-on-overflow") { Description = "Stop with an error when the conversation outgrows the context (by default the oldest turns are dropped, with a notice)" };
var prompt = new Argument<string?>("PROMPT") { Description = "Prompt; without it, an interactive chat starts", Arity = ArgumentArity.ZeroOrOne };

var root = new RootCommand("Chat with a local Llama model whose KV cache is GEAR-compressed.")
{
    model, raw, maxTokens, temperature, topP, seed, cache, bits, device, failOnOverflow, prompt,
};
root.SetAction(async (parse, ct) =>
{
    try
    {
        var options = new GearChatClientOptions
        {
            Model = ModelLocator.Resolve(parse.GetValue(model)!),
            Device = parse.GetValue(device)!,
            Cache = CacheKindNames.Parse(parse.GetValue(cache)!),
            Bits = parse.GetValue(bits),
            ContextOverflow = parse.GetValue(failOnOverflow) ? ContextOverflowPolicy.Fail : ContextOverflowPolicy.DropOldestMessages,
        }.Validate();
        var loading = new LoadBar();
        options.LoadProgress = loading;
        using var client = new GearChatClient(options);
        await loading.LoadAsync(client, options.Model, ct);
        var chat = new ConsoleChat(client, new Microsoft.Extensions.AI.ChatOptions
        {
            MaxOutputTokens = parse.GetValue(maxTokens),
            Temperature = parse.GetValue(temperature),
            TopP = parse.GetValue(topP),
            Seed = parse.GetValue(seed),
            AdditionalProperties = parse.GetValue(raw) ? new() { ["gear.raw"] = true } : null,
        });
        string? text = parse.GetValue(prompt);
        return text is null ? await chat.InteractiveAsync(Console.In, ct) : await chat.OnceAsync(text, ct);
    }
    catch (Exception e) when (e is GearException or ArgumentException or DirectoryNotFoundException or NotSupportedException)
    {
        Console.Error.WriteLine($"error: {e.Message}");
        return 2;
    }
});
// Ctrl+C is the chat's own: it stops the reply being written and keeps the conversation (at the prompt it quits).
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });

/// <summary>
/// A model of more than 100 MB loads under a progress bar on a terminal (stderr); smaller ones, or output to a file,
/// load silently. The client reports progress here; the bar shows it while <see cref="LoadAsync"/> runs.
/// </summary>
internal sealed class LoadBar : IProgress<Gear.AI.Llama.Weights.ModelLoadProgress>
{
    private ProgressTask? _task;

    public void Report(Gear.AI.Llama.Weights.ModelLoadProgress value)
    {
        if (_task is { } task)
            task.Value = value.Fraction;
    }

    public async Task LoadAsync(GearChatClient client, string model, CancellationToken ct)
    {
        long bytes = Directory.Exists(model) ? Directory.EnumerateFiles(model, "*.safetensors").Sum(f => new FileInfo(f).Length) : 0;
        if (Console.IsErrorRedirected || bytes < 100L << 20)
        {
            await client.LoadAsync(ct);
            return;
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        await console.Progress().AutoClear(true).StartAsync(async context =>
        {
            _task = context.AddTask($"Loading {Path.GetFileName(model)} ({bytes >> 20:N0} MiB)", maxValue: 1.0);
            await client.LoadAsync(ct);
            _task.Value = 1.0;
        });
    }
}
