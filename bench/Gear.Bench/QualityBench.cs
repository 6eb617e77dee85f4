using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.Bench;

internal sealed record QualityRow(string Cache, int Bits, double Perplexity, double PplIncreasePct, double GreedyAgreement, int Windows, int ScoredTokens);

/// <summary>
/// Perplexity of held-out text and greedy agreement with the Fp16 cache. Per window of C tokens: prefill
/// the first P, feed the rest of the C − 64 scored tokens one at a time (so most positions attend to
/// compressed history), then generate 64 greedy tokens and compare them with Fp16's.
/// </summary>
internal static class QualityBench
{
    private const int GreedyTokens = 64;

    public static void Run(LlamaRuntime runtime, string textFile, int context, int windows, int promptTokens, IReadOnlyList<GearOptions> caches, string machine, string? json)
    {
        if (context > runtime.Model.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(context), context, $"--context exceeds the model's context ({runtime.Model.Config.MaxPositionEmbeddings}).");
        if (promptTokens < 1 || promptTokens >= context - GreedyTokens)
            throw new ArgumentOutOfRangeException(nameof(promptTokens), promptTokens, $"--prompt-tokens must be between 1 and {context - GreedyTokens - 1}.");
        var ids = runtime.Tokenizer.Encode(File.ReadAllText(textFile));
        int scored = context - GreedyTokens;
        int available = ids.Count / scored;
        if (available < windows)
            throw new ArgumentOutOfRangeException(nameof(windows), windows, $"{textFile} holds {ids.Count} tokens: {available} windows of {scored}.");
        // Windows spread evenly over the text; each starts with BOS.
        var starts = Enumerable.Range(0, windows).Select(w => (long)w * (ids.Count - scored) / Math.Max(1, windows)).ToArray();

        var report = new BenchReport<QualityRow>("quality", runtime.ModelId, machine);
        double fp16Ppl = 0;
        var fp16Greedy = new List<int[]>();
        foreach (var options in caches)
        {
            double nll = 0;
            long count = 0, agree = 0;
            for (int w = 0; w < windows; w++)
            {
                var window = new List<int> { runtime.Tokenizer.BosId ?? 1 };
                window.AddRange(ids.Skip((int)starts[w]).Take(scored - 1));
                var (windowNll, n, greedy) = RunWindow(runtime, window, promptTokens, options);
                nll += windowNll;
                count += n;
                if (!options.IsCompressed)
                    fp16Greedy.Add(greedy);
                agree += greedy.Zip(fp16Greedy[w]).Count(p => p.First == p.Second);
                Console.Error.WriteLine($"{CacheConfigs.Label(options)} window {w + 1}/{windows}: ppl {Math.Exp(windowNll / n):F3}");
            }
            double ppl = Math.Exp(nll / count);
            if (!options.IsCompressed)
                fp16Ppl = ppl;
            report.Add(new QualityRow(CacheConfigs.Name(options), CacheConfigs.Bits(options), ppl, 100 * (ppl / fp16Ppl - 1),
                (double)agree / (windows * GreedyTokens), windows, (int)count));
        }
        report.Finish(json);
    }

    /// <summary>NLL summed over positions after the prompt, its count, and 64 greedy tokens after the window.</summary>
    private static (double Nll, int Count, int[] Greedy) RunWindow(LlamaRuntime runtime, List<int> window, int promptTokens, GearOptions options)
    {
        var model = runtime.Model;
        using var cache = model.CreateCache(options);
        double nll = 0;
        int count = 0;
        Tensor Feed(IReadOnlyList<int> tokens, long position)
        {
            using var input = tensor(tokens.Select(t => (long)t).ToArray(), dtype: ScalarType.Int64).reshape(1, tokens.Count);
            using var logits = model.Forward(input, position, cache, lastOnly: true);
            return logits.reshape(-1).log_softmax(0).DetachFromDisposeScope();
        }
        var logProbs = Feed(window.Take(promptTokens).ToList(), 0);
        for (int i = promptTokens; i < window.Count; i++)
        {
            nll -= logProbs[window[i]].item<float>();
            count++;
            var next = Feed([window[i]], i);
            logProbs.Dispose();
            logProbs = next;
        }
        var greedy = new int[GreedyTokens];
        for (int g = 0; g < GreedyTokens; g++)
        {
            greedy[g] = (int)logProbs.argmax().item<long>();
            if (g == GreedyTokens - 1)
                break;
            var next = Feed([greedy[g]], window.Count + g);
            logProbs.Dispose();
            logProbs = next;
        }
        logProbs.Dispose();
        return (nll, count, greedy);
    }
}
