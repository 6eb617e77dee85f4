using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using Gear.AI;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;

namespace Gear.Bench;

internal sealed record ServeRow(string Cache, int Bits, string Via, int Clients, string PromptTokens, int MaxTokens, long GeneratedTokens,
    double SerialTokensPerS, double ConcurrentTokensPerS, double ConcurrentOverSerial, double TtftP50Ms, double TtftP99Ms, double ItlP50Ms, double ItlP99Ms,
    bool? GreedyEqual);

/// <summary>
/// Serving through the public API: <c>clients</c> greedy streaming requests (prompts of the lengths in the mix, cut from
/// held-out text) sent at once to one <see cref="GearChatClient"/> — or to a running Gear.Server over HTTP — against the
/// same requests one after another. Aggregate generated tokens/s of both, time to first token and the gaps between
/// streamed tokens (p50/p99) of the concurrent run, and whether every answer equals its serial twin.
/// </summary>
internal static class ServeBench
{
    private sealed record Outcome(string Text, long Tokens, double FirstMs, List<double> GapsMs);

    public static void Run(LlamaRuntime runtime, string textFile, int clients, int[] promptMix, int maxTokens, long budgetBytes, IReadOnlyList<GearOptions> caches,
        string? url, string machine, string? json)
    {
        var book = runtime.Tokenizer.Encode(File.ReadAllText(textFile));
        var prompts = Enumerable.Range(0, clients).Select(i =>
        {
            int length = promptMix[i % promptMix.Length];
            return runtime.Tokenizer.Decode(book.Skip(i * 211 % Math.Max(1, book.Count - length)).Take(length).ToArray()) + "\n\nWhat happens next?";
        }).ToArray();
        var report = new BenchReport<ServeRow>("serve", runtime.ModelId, machine);
        if (url is not null)
        {
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(30) };
            // One server for both phases: each phase's prompts start differently, so neither reuses the other's cached prefix
            // (and the answers cannot be compared).
            Measure(report, "server", 0, "http", prompts, promptMix, maxTokens, p => Http(http, "(1) " + p, maxTokens), p => Http(http, "(2) " + p, maxTokens), compare: false);
        }
        else
        {
            foreach (var cache in caches)
            {
                var options = new GearChatClientOptions
                {
                    Model = runtime.Directory, Cache = cache.Kind, Bits = cache.Bits, CacheBudgetBytes = budgetBytes, DefaultTemperature = 0,
                    MaxConcurrentSequences = clients, MaxSessions = 1,
                };
                // Each phase on a client of its own: no prefix of one phase is cached for the other.
                Func<string, Task<Outcome>> Through(GearChatClient client) => p => Stream(client, p, maxTokens);
                using (var warm = new GearChatClient(runtime, options))
                    Stream(warm, prompts[0], 8).GetAwaiter().GetResult();
                using var serialClient = new GearChatClient(runtime, options);
                using var concurrentClient = new GearChatClient(runtime, options);
                Measure(report, CacheConfigs.Name(cache), CacheConfigs.Bits(cache), "client", prompts, promptMix, maxTokens, Through(serialClient), Through(concurrentClient), compare: true);
            }
        }
        report.Finish(json);
    }

    private static void Measure(BenchReport<ServeRow> report, string cache, int bits, string via, string[] prompts, int[] promptMix, int maxTokens,
        Func<string, Task<Outcome>> serialRun, Func<string, Task<Outcome>> concurrentRun, bool compare)
    {
        var clock = Stopwatch.StartNew();
        var serial = new List<Outcome>();
        foreach (var p in prompts)
            serial.Add(serialRun(p).GetAwaiter().GetResult());
        double serialSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        var concurrent = Task.WhenAll(prompts.Select(p => Task.Run(() => concurrentRun(p)))).GetAwaiter().GetResult();
        double concurrentSeconds = clock.Elapsed.TotalSeconds;
        long tokens = concurrent.Sum(o => o.Tokens);
        double serialRate = serial.Sum(o => o.Tokens) / serialSeconds, concurrentRate = tokens / concurrentSeconds;
        var firsts = concurrent.Select(o => o.FirstMs).Order().ToArray();
        var gaps = concurrent.SelectMany(o => o.GapsMs).Order().ToArray();
        report.Add(new ServeRow(cache, bits, via, prompts.Length, string.Join("/", promptMix.Distinct()), maxTokens, tokens, serialRate, concurrentRate,
            concurrentRate / serialRate, Percentile(firsts, 0.5), Percentile(firsts, 0.99), Percentile(gaps, 0.5), Percentile(gaps, 0.99),
            compare ? serial.Zip(concurrent).All(p => p.First.Text == p.Second.Text) : null));
    }

    private static async Task<Outcome> Stream(GearChatClient client, string prompt, int maxTokens)
    {
        var clock = Stopwatch.StartNew();
        var text = new System.Text.StringBuilder();
        var gaps = new List<double>();
        double first = -1, last = 0;
        long tokens = 0;
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, prompt)], new ChatOptions { MaxOutputTokens = maxTokens, Temperature = 0 }))
        {
            double now = clock.Elapsed.TotalMilliseconds;
            if (update.Text.Length > 0)
            {
                if (first < 0)
                    first = now;
                else
                    gaps.Add(now - last);
                last = now;
                text.Append(update.Text);
            }
            foreach (var usage in update.Contents.OfType<UsageContent>())
                tokens = usage.Details.OutputTokenCount ?? 0;
        }
        return new Outcome(text.ToString(), tokens, first, gaps);
    }

    /// <summary>One streamed request to Gear.Server's <c>/v1/chat/completions</c>, read as server-sent events.</summary>
    private static async Task<Outcome> Http(HttpClient http, string prompt, int maxTokens)
    {
        var body = new
        {
            messages = new[] { new { role = "user", content = prompt } },
            max_tokens = maxTokens, temperature = 0, stream = true, stream_options = new { include_usage = true },
        };
        var clock = Stopwatch.StartNew();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = JsonContent.Create(body) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var text = new System.Text.StringBuilder();
        var gaps = new List<double>();
        double first = -1, last = 0;
        long tokens = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]")
                continue;
            using var chunk = JsonDocument.Parse(line[6..]);
            var root = chunk.RootElement;
            if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                tokens = usage.GetProperty("completion_tokens").GetInt64();
            foreach (var choice in root.GetProperty("choices").EnumerateArray())
            {
                if (!choice.GetProperty("delta").TryGetProperty("content", out var content) || content.GetString() is not { Length: > 0 } piece)
                    continue;
                double now = clock.Elapsed.TotalMilliseconds;
                if (first < 0)
                    first = now;
                else
                    gaps.Add(now - last);
                last = now;
                text.Append(piece);
            }
        }
        return new Outcome(text.ToString(), tokens, first, gaps);
    }

    private static double Percentile(double[] sorted, double q) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
}
