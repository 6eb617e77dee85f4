using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama;
using Gear.AI.Llama.Chat;
using Gear.AI.Llama.Generation;

/// <summary>One-shot and interactive chat on a console, keeping the compressed cache between turns.</summary>
internal sealed class ConsoleChat(LlamaRuntime runtime, GearOptions cacheOptions, SamplingOptions sampling, bool raw)
{
    private readonly List<ChatTurn> _turns = [];
    private readonly List<int> _cachedIds = [];

    public int Once(string prompt)
    {
        using var cache = runtime.Model.CreateCache(cacheOptions);
        var ids = raw ? runtime.EncodeRaw(prompt) : runtime.Template.Render([new ChatTurn(ChatRole.User, prompt)], runtime.Tokenizer);
        using var cts = CancelOnCtrlC();
        Reply(ids, cache, cts.Token);
        return 0;
    }

    public int Interactive()
    {
        using var cache = runtime.Model.CreateCache(cacheOptions);
        Console.Error.WriteLine($"Gear.Chat — {runtime.ModelId}, {CacheKindNames.Name(cacheOptions.Kind)} cache" +
                                (cacheOptions.IsCompressed ? $" at {cacheOptions.Bits} bits" : "") + ". Empty line or Ctrl+D quits.");
        while (true)
        {
            Console.Error.Write("> ");
            string? line = Console.ReadLine();
            if (string.IsNullOrWhiteSpace(line))
                return 0;
            _turns.Add(new ChatTurn(ChatRole.User, line));
            var ids = runtime.Template.Render(_turns, runtime.Tokenizer);
            // Reuse the longest prefix the cache already holds; compressed blocks are kept whole.
            int common = 0;
            while (common < Math.Min(ids.Count - 1, _cachedIds.Count) && ids[common] == _cachedIds[common])
                common++;
            int kept = (int)cache.Truncate(common);
            _cachedIds.RemoveRange(kept, _cachedIds.Count - kept);
            using var cts = CancelOnCtrlC();
            try
            {
                string reply = Reply(ids, cache, cts.Token);
                _turns.Add(new ChatTurn(ChatRole.Assistant, reply));
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("\n(cancelled)");
                _turns.RemoveAt(_turns.Count - 1);
                cache.Truncate(0);
                _cachedIds.Clear();
            }
        }
    }

    private string Reply(IReadOnlyList<int> ids, KvCache cache, CancellationToken ct)
    {
        var text = new System.Text.StringBuilder();
        var generated = new List<int>();
        GenerationSummary? summary = null;
        foreach (var update in runtime.Generator.Generate(ids, cache, sampling, runtime.Template.StopTokenIds(runtime.Tokenizer), ct))
        {
            Console.Out.Write(update.Text);
            Console.Out.Flush();
            text.Append(update.Text);
            if (update.TokenId is int id)
                generated.Add(id);
            summary ??= update.Summary;
        }
        Console.Out.WriteLine();
        // The cache now holds the prompt and every generated token but the last.
        _cachedIds.Clear();
        _cachedIds.AddRange(ids.Concat(generated).Take((int)cache.Length));
        var s = summary!;
        Console.Error.WriteLine(
            $"[prompt {s.PromptTokens} tokens ({s.CachedPromptTokens} cached), generated {s.GeneratedTokens}, " +
            $"prefill {s.PrefillTokensPerSecond:F1} tok/s, decode {s.DecodeTokensPerSecond:F1} tok/s, " +
            $"KV {Format(cache.ResidentBytes)} vs FP16 {Format(cache.FullPrecisionBytes)} ({Ratio(cache)}), {s.Reason}]");
        return text.ToString();
    }

    private static string Ratio(KvCache cache) =>
        cache.FullPrecisionBytes == 0 ? "-" : $"{(double)cache.ResidentBytes / cache.FullPrecisionBytes:F2}x";

    private static string Format(long bytes) => bytes switch
    {
        >= 1 << 30 => $"{bytes / (double)(1 << 30):F2} GiB",
        >= 1 << 20 => $"{bytes / (double)(1 << 20):F2} MiB",
        >= 1 << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };

    private static CancellationTokenSource CancelOnCtrlC()
    {
        var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            try { cts.Cancel(); } catch (ObjectDisposedException) { }
        };
        return cts;
    }
}
