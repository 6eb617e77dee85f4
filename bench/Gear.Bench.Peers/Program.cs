using System.Diagnostics;
using System.Text.Json;
using LLama;
using LLama.Batched;
using LLama.Common;
using LLama.Native;

// The CPU peer of `Gear.Bench serve`: LLamaSharp (llama.cpp) serving the very same requests — the prompts' token ids
// written by `Gear.Bench serve --write-prompt-ids` — greedy, one after another and then all at once in one
// BatchedExecutor (llama.cpp's continuous batch: every conversation's next token decoded in one llama_decode).
//
//   dotnet run --project bench/Gear.Bench.Peers -c Release -- MODEL.gguf PROMPTS.json [OUT.json] [f16|q8_0|q4_0] [--decode]
// --decode: the speed table's case instead — the first prompt, then max_tokens greedy steps, prefill and decode tokens/s.
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: Gear.Bench.Peers MODEL.gguf PROMPTS.json [OUT.json] [f16|q8_0|q4_0]");
    return 2;
}
string gguf = args[0];
using var file = JsonDocument.Parse(File.ReadAllText(args[1]));
int maxTokens = file.RootElement.GetProperty("max_tokens").GetInt32();
var prompts = file.RootElement.GetProperty("prompts").EnumerateArray()
    .Select(p => p.EnumerateArray().Select(t => (LLamaToken)t.GetInt32()).ToArray()).ToArray();
var kvType = (args.Length > 3 ? args[3] : "f16") switch
{
    "f16" => GGMLType.GGML_TYPE_F16,
    "q8_0" => GGMLType.GGML_TYPE_Q8_0,
    "q4_0" => GGMLType.GGML_TYPE_Q4_0,
    var other => throw new ArgumentException($"KV type '{other}' is not f16, q8_0 or q4_0."),
};

var parameters = new ModelParams(gguf)
{
    ContextSize = (uint)(prompts.Length * (prompts.Max(p => p.Length) + maxTokens) + 64),
    BatchSize = 2048,
    SeqMax = (uint)prompts.Length,
    Threads = Environment.ProcessorCount,
    BatchThreads = Environment.ProcessorCount,
    TypeK = kvType,
    TypeV = kvType,
};
using var weights = LLamaWeights.LoadFromFile(parameters);
int vocab = weights.Vocab.Count;

string kvName = args.Length > 3 ? args[3] : "f16";
if (args.Contains("--decode"))
{
    // The speed table's case: the first prompt prefilled, then maxTokens greedy steps; median of 5.
    var prefillRates = new List<double>();
    var decodeRates = new List<double>();
    for (int repeat = 0; repeat < 5; repeat++)
    {
        using var executor = new BatchedExecutor(weights, parameters);
        using var conversation = executor.Create();
        var watch = Stopwatch.StartNew();
        conversation.Prompt(prompts[0]);
        await executor.Infer();
        prefillRates.Add(prompts[0].Length / watch.Elapsed.TotalSeconds);
        watch.Restart();
        for (int step = 0; step < maxTokens; step++)
        {
            var logits = conversation.Sample();
            int best = 0;
            for (int t = 1; t < vocab; t++)
                if (logits[t] > logits[best])
                    best = t;
            conversation.Prompt((LLamaToken)best);
            await executor.Infer();
        }
        decodeRates.Add(maxTokens / watch.Elapsed.TotalSeconds);
    }
    double Median(List<double> v) => v.Order().ElementAt(v.Count / 2);
    Console.WriteLine($"LLamaSharp 0.30.0 ({kvName} KV): prompt {prompts[0].Length} tokens, then {maxTokens} greedy steps: prefill {Median(prefillRates):0.0} tokens/s, " +
                      $"decode {Median(decodeRates):0.0} tokens/s (median of 5; decode runs {string.Join(" ", decodeRates.Select(r => r.ToString("0.0")))})");
    if (args.Length > 2 && args[2].EndsWith(".json", StringComparison.Ordinal))
        File.WriteAllText(args[2], JsonSerializer.Serialize(new
        {
            command = "speed-llamasharp", model = Path.GetFileName(gguf), machine = $"CPU: {Environment.ProcessorCount} cores, {Environment.OSVersion}",
            date = DateTime.UtcNow.ToString("yyyy-MM-dd"),
            rows = new[]
            {
                new
                {
                    runtime = "LLamaSharp 0.30.0", kv = kvName, context = prompts[0].Length + maxTokens, prefill_tokens_per_s = Median(prefillRates),
                    decode_tokens_per_s = Median(decodeRates), decode_runs = decodeRates, prefill_runs = prefillRates,
                },
            },
        }, new JsonSerializerOptions { WriteIndented = true }));
    return 0;
}

// Warm-up: one short answer.
await Serve([prompts[0]], 8);

var serialWatch = Stopwatch.StartNew();
var serial = new List<int[]>();
foreach (var p in prompts)
    serial.AddRange(await Serve([p], maxTokens));
double serialRate = serial.Sum(a => a.Length) / serialWatch.Elapsed.TotalSeconds;

var concurrentWatch = Stopwatch.StartNew();
var concurrent = await Serve(prompts, maxTokens);
double concurrentRate = concurrent.Sum(a => a.Length) / concurrentWatch.Elapsed.TotalSeconds;
bool equal = serial.Zip(concurrent).All(p => p.First.SequenceEqual(p.Second));


Console.WriteLine($"LLamaSharp 0.30.0 ({kvName} KV): {prompts.Length} requests of {prompts.Average(p => p.Length):0.##} prompt tokens, {maxTokens} tokens each: " +
                  $"serial {serialRate:0.00} tokens/s, concurrent {concurrentRate:0.00} tokens/s ({concurrentRate / serialRate:0.0000}×), greedy equal {equal}");
if (args.Length > 2)
{
    var result = new
    {
        command = "serve-llamasharp", model = Path.GetFileName(gguf), machine = $"CPU: {Environment.ProcessorCount} cores, {Environment.OSVersion}",
        date = DateTime.UtcNow.ToString("yyyy-MM-dd"),
        rows = new[]
        {
            new
            {
                runtime = "LLamaSharp 0.30.0", kv = kvName, clients = prompts.Length, prompt_tokens_mean = prompts.Average(p => p.Length), max_tokens = maxTokens,
                generated_tokens = concurrent.Sum(a => a.Length), serial_tokens_per_s = serialRate, concurrent_tokens_per_s = concurrentRate,
                concurrent_over_serial = concurrentRate / serialRate, greedy_equal = equal,
            },
        },
    };
    File.WriteAllText(args[2], JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));
}
return 0;

// Greedy answers of exactly `tokens` tokens (the end-of-sequence token ignored, as Gear.Bench's shape runs do) to every
// prompt at once: one executor, one conversation per prompt, one llama_decode per step for all of them.
async Task<List<int[]>> Serve(LLamaToken[][] batch, int tokens)
{
    using var executor = new BatchedExecutor(weights, parameters);
    var conversations = batch.Select(p =>
    {
        var c = executor.Create();
        c.Prompt(p);
        return c;
    }).ToList();
    var answers = batch.Select(_ => new List<int>()).ToList();
    for (int step = 0; step < tokens; step++)
    {
        await executor.Infer();
        for (int i = 0; i < conversations.Count; i++)
        {
            var logits = conversations[i].Sample();
            int best = 0;
            for (int t = 1; t < vocab; t++)
                if (logits[t] > logits[best])
                    best = t;
            answers[i].Add(best);
            if (step + 1 < tokens)
                conversations[i].Prompt((LLamaToken)best);
        }
    }
    foreach (var c in conversations)
        c.Dispose();
    return [.. answers.Select(a => a.ToArray())];
}
