using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using Gear.AI;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;

namespace Gear.Bench;

internal sealed record ServeRow(string Cache, int Bits, string Via, int Clients, string PromptTokens, double PromptTokensMean, int MaxTokens, long GeneratedTokens,
    double? SerialTokensPerS, double ConcurrentTokensPerS, double? ConcurrentOverSerial, int PeakStreams, double AllDecodingTokensPerS,
    double TtftP50Ms, double TtftP99Ms, double ItlP50Ms, double ItlP99Ms, long CacheBudgetBytes, bool BatchInvariant, bool? GreedyEqual);

/// <summary>
/// Serving through the public API: <c>clients</c> streaming requests (prompts of the lengths in the mix, cut from held-out
/// text) sent at once to one <see cref="GearChatClient"/> — or to a running Gear.Server over HTTP — and, unless switched
/// off, the same requests one after another. Reports aggregate generated tokens/s (first request sent to last token), the
/// rate while every stream decodes together (from the last stream's first token to the first stream's last: the figure
/// a static decode batch measures), the most streams running at once, time to first token and the gaps between streamed
/// pieces (p50/p99), and whether every answer equals its serial twin.
/// </summary>
internal static class ServeBench
{
    private sealed record Outcome(string Text, long Tokens, long PromptTokens, long Sent, List<long> Times);

    public sealed record Settings(int Clients, int[] PromptMix, int MaxTokens, long BudgetBytes, bool Serial, bool IgnoreEos, bool BatchInvariant = false);

    public static void Run(LlamaRuntime runtime, string textFile, Settings settings, IReadOnlyList<GearOptions> caches, string? url, string machine, string? json,
        string? promptIdsFile = null)
    {
        var book = runtime.Tokenizer.Encode(File.ReadAllText(textFile));
        const string question = "\n\nWhat happens next?";
        // The chat template and the question take a few tokens: the bodies are cut so the rendered prompts have the mix's lengths.
        int overhead = runtime.Template.Render([new Gear.AI.Llama.Chat.ChatTurn(Gear.AI.Llama.Chat.ChatRole.User, question)], runtime.Tokenizer).Count;
        string[] Prompts(int clients) => [.. Enumerable.Range(0, clients).Select(i =>
        {
            int length = Math.Max(1, settings.PromptMix[i % settings.PromptMix.Length] - overhead);
            return runtime.Tokenizer.Decode(book.Skip(i * 211 % Math.Max(1, book.Count - length)).Take(length).ToArray()) + question;
        })];
        if (promptIdsFile is not null)
        {
            // The rendered prompts as token ids, for a peer runtime to serve the very same requests (bench/Gear.Bench.Peers).
            int clientCount = settings.Clients > 0 ? settings.Clients : 8;
            var ids = Prompts(clientCount).Select(p => runtime.Template.Render([new Gear.AI.Llama.Chat.ChatTurn(Gear.AI.Llama.Chat.ChatRole.User, p)], runtime.Tokenizer)).ToArray();
            File.WriteAllText(promptIdsFile, JsonSerializer.Serialize(new { model = runtime.ModelId, max_tokens = settings.MaxTokens, prompts = ids }));
            Console.WriteLine($"wrote {ids.Length} prompts ({ids.Average(p => p.Count):0.##} tokens on average) to {promptIdsFile}");
        }
        var report = new BenchReport<ServeRow>("serve", runtime.ModelId, machine);
        if (url is not null)
        {
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(30) };
            // One server for both phases: each phase's prompts start differently, so neither reuses the other's cached prefix
            // (and the answers cannot be compared).
            var prompts = Prompts(settings.Clients);
            Measure(report, "server", 0, "http", prompts, settings, 0, p => Http(http, "(1) " + p, settings), p => Http(http, "(2) " + p, settings), compare: false);
        }
        else
        {
            foreach (var cache in caches)
            {
                var options = new GearChatClientOptions
                {
                    Model = runtime.Directory, Cache = cache.Kind, Bits = cache.Bits, CacheBudgetBytes = settings.BudgetBytes, DefaultTemperature = 0,
                    MaxSessions = 1, BatchInvariant = settings.BatchInvariant,
                };
                int clients = settings.Clients > 0 ? settings.Clients : Admissible(runtime, options, cache, settings);
                options.MaxConcurrentSequences = clients;
                var prompts = Prompts(clients);
                // Each phase on a client of its own: no prefix of one phase is cached for the other.
                Func<string, Task<Outcome>> Through(GearChatClient client) => p => Stream(client, p, settings);
                // Warm-up until the JIT has settled: on a 2-core machine the first few hundred steps run tier-0 code of the
                // managed step (TensorPrimitives' generic loops among it) and wait on the background JIT, which made the first
                // measured phase — serial FP16 — up to 3 × slower than the same phase run again.
                using (var warm = new GearChatClient(runtime, options))
                {
                    Stream(warm, prompts[0], settings with { MaxTokens = 128 }).GetAwaiter().GetResult();
                    Task.WhenAll(prompts.Take(4).Select(p => Stream(warm, p, settings with { MaxTokens = 64 }))).GetAwaiter().GetResult();
                }
                using var serialClient = new GearChatClient(runtime, options);
                using var concurrentClient = new GearChatClient(runtime, options);
                Measure(report, CacheConfigs.Name(cache), CacheConfigs.Bits(cache), "client", prompts, settings, settings.BudgetBytes, Through(serialClient), Through(concurrentClient),
                    compare: settings.Serial);
            }
        }
        report.Finish(json);
    }

    /// <summary>How many requests of the run the engine admits at once within the budget: the memory it sets aside for each.</summary>
    private static int Admissible(LlamaRuntime runtime, GearChatClientOptions options, GearOptions cache, Settings settings)
    {
        using var pool = runtime.Model.CreatePool(cache, settings.BudgetBytes);
        long need = settings.PromptMix.Max(p => pool.PlanFor(p, options.PrefillChunkTokens, settings.MaxTokens).Bytes);
        return (int)Math.Max(1, settings.BudgetBytes / need);
    }

    private static void Measure(BenchReport<ServeRow> report, string cache, int bits, string via, string[] prompts, Settings settings, long budget,
        Func<string, Task<Outcome>> serialRun, Func<string, Task<Outcome>> concurrentRun, bool compare)
    {
        List<Outcome>? serial = null;
        double? serialRate = null;
        if (settings.Serial)
        {
            long start = Stopwatch.GetTimestamp();
            serial = [];
            foreach (var p in prompts)
                serial.Add(serialRun(p).GetAwaiter().GetResult());
            serialRate = serial.Sum(o => o.Tokens) / Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        long t0 = Stopwatch.GetTimestamp();
        var concurrent = Task.WhenAll(prompts.Select(p => Task.Run(() => concurrentRun(p)))).GetAwaiter().GetResult();
        double concurrentSeconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        long tokens = concurrent.Sum(o => o.Tokens);
        double concurrentRate = tokens / concurrentSeconds;
        double Ms(long from, long to) => Stopwatch.GetElapsedTime(from, to).TotalMilliseconds;
        var firsts = concurrent.Where(o => o.Times.Count > 0).Select(o => Ms(o.Sent, o.Times[0])).Order().ToArray();
        var gaps = concurrent.SelectMany(o => o.Times.Zip(o.Times.Skip(1), Ms)).Order().ToArray();
        // While every stream decodes: from the last stream's first piece to the first stream's last.
        var live = concurrent.Where(o => o.Times.Count > 1).ToArray();
        long from = live.Length == 0 ? 0 : live.Max(o => o.Times[0]), to = live.Length == 0 ? 0 : live.Min(o => o.Times[^1]);
        double window = to > from ? Stopwatch.GetElapsedTime(from, to).TotalSeconds : 0;
        double allDecoding = window == 0 ? 0 : live.Sum(o => o.Times.Count(t => t > from && t <= to)) / window;
        // The most streams between their first and last piece at one moment.
        var edges = live.SelectMany(o => new[] { (o.Times[0], 1), (o.Times[^1], -1) }).OrderBy(e => e.Item1).ThenBy(e => e.Item2);
        int peak = 0, running = 0;
        foreach (var (_, delta) in edges)
            peak = Math.Max(peak, running += delta);
        report.Add(new ServeRow(cache, bits, via, prompts.Length, string.Join("/", settings.PromptMix.Distinct()), concurrent.Average(o => (double)o.PromptTokens),
            settings.MaxTokens, tokens, serialRate, concurrentRate, serialRate is { } sr ? concurrentRate / sr : null, peak, allDecoding,
            Percentile(firsts, 0.5), Percentile(firsts, 0.99), Percentile(gaps, 0.5), Percentile(gaps, 0.99), budget, settings.BatchInvariant,
            compare && serial is not null ? serial.Zip(concurrent).All(p => p.First.Text == p.Second.Text) : null));
    }

    private static async Task<Outcome> Stream(GearChatClient client, string prompt, Settings settings)
    {
        long sent = Stopwatch.GetTimestamp();
        var text = new System.Text.StringBuilder();
        var times = new List<long>();
        long tokens = 0, promptTokens = 0;
        var options = new ChatOptions { MaxOutputTokens = settings.MaxTokens, Temperature = 0 };
        if (settings.IgnoreEos)
            options.AdditionalProperties = new() { ["gear.ignore_eos"] = true };
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, prompt)], options))
        {
            if (update.Text.Length > 0)
            {
                times.Add(Stopwatch.GetTimestamp());
                text.Append(update.Text);
            }
            foreach (var usage in update.Contents.OfType<UsageContent>())
                (tokens, promptTokens) = (usage.Details.OutputTokenCount ?? 0, usage.Details.InputTokenCount ?? 0);
        }
        return new Outcome(text.ToString(), tokens, promptTokens, sent, times);
    }

    /// <summary>One streamed request to Gear.Server's <c>/v1/chat/completions</c>, read as server-sent events.</summary>
    private static async Task<Outcome> Http(HttpClient http, string prompt, Settings settings)
    {
        var body = new Dictionary<string, object>
        {
            ["messages"] = new[] { new { role = "user", content = prompt } },
            ["max_tokens"] = settings.MaxTokens, ["temperature"] = 0, ["stream"] = true, ["stream_options"] = new { include_usage = true },
        };
        if (settings.IgnoreEos)
            body["ignore_eos"] = true;
        long sent = Stopwatch.GetTimestamp();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = JsonContent.Create(body) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var text = new System.Text.StringBuilder();
        var times = new List<long>();
        long tokens = 0, promptTokens = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]")
                continue;
            using var chunk = JsonDocument.Parse(line[6..]);
            var root = chunk.RootElement;
            if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                (tokens, promptTokens) = (usage.GetProperty("completion_tokens").GetInt64(), usage.GetProperty("prompt_tokens").GetInt64());
            foreach (var choice in root.GetProperty("choices").EnumerateArray())
            {
                if (!choice.GetProperty("delta").TryGetProperty("content", out var content) || content.GetString() is not { Length: > 0 } piece)
                    continue;
                times.Add(Stopwatch.GetTimestamp());
                text.Append(piece);
            }
        }
        return new Outcome(text.ToString(), tokens, promptTokens, sent, times);
    }

    private static double Percentile(double[] sorted, double q) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
}
