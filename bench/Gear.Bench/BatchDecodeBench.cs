using System.Diagnostics;
using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama;
using static TorchSharp.torch;

namespace Gear.Bench;

internal sealed record BatchDecodeRow(string Cache, int Bits, int Sequences, string Lengths, int DecodeTokens, double SerialTokensPerS, double BatchedTokensPerS,
    double BatchedOverSerial, bool GreedyEqual);

/// <summary>
/// Decode of several sequences of different lengths (a ragged batch: one step for all of them per token) against the same
/// sequences decoded one after another, through the model, from the same prefilled histories (forked, so both start from
/// identical pages). Greedy, so the two must produce the same tokens; tokens/s of each, median of the repeats.
/// </summary>
internal static class BatchDecodeBench
{
    public static void Run(LlamaRuntime runtime, string textFile, int sequences, int minLength, int maxLength, int decodeTokens, int repeats,
        IReadOnlyList<GearOptions> caches, string machine, string? json)
    {
        var model = runtime.Model;
        var text = runtime.Tokenizer.Encode(File.ReadAllText(textFile));
        var lengths = Enumerable.Range(0, sequences).Select(i => minLength + (maxLength - minLength) * i / Math.Max(1, sequences - 1)).ToArray();
        if (lengths.Max() + decodeTokens > model.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, $"The longest sequence and its decode tokens must fit the context ({model.Config.MaxPositionEmbeddings}).");
        var report = new BenchReport<BatchDecodeRow>("batch-decode", runtime.ModelId, machine);
        foreach (var options in caches)
        {
            using var pool = model.CreatePool(options);
            var prompts = lengths.Select((n, i) => text.Skip(i * 97).Take(n).ToArray()).ToArray();
            var histories = prompts.Select(p => pool.CreateSequence()).ToArray();
            var first = new long[sequences];
            for (int i = 0; i < sequences; i++)
                first[i] = Step(model, [(histories[i], prompts[i])])[0];
            var serialRates = new List<double>();
            var batchedRates = new List<double>();
            bool equal = true;
            for (int r = 0; r < repeats + 1; r++)                                               // the first round warms up
            {
                var serial = new List<long>[sequences];
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < sequences; i++)
                {
                    using var s = histories[i].Fork();
                    serial[i] = Decode(model, [s], [first[i]], decodeTokens)[0];
                }
                double serialSeconds = clock.Elapsed.TotalSeconds;
                var forks = histories.Select(h => h.Fork()).ToArray();
                clock.Restart();
                var batched = Decode(model, forks, first, decodeTokens);
                double batchedSeconds = clock.Elapsed.TotalSeconds;
                foreach (var f in forks)
                    f.Dispose();
                equal &= Enumerable.Range(0, sequences).All(i => serial[i].SequenceEqual(batched[i]));
                if (r == 0)
                    continue;
                serialRates.Add(sequences * decodeTokens / serialSeconds);
                batchedRates.Add(sequences * decodeTokens / batchedSeconds);
            }
            foreach (var h in histories)
                h.Dispose();
            double serialRate = Median(serialRates), batchedRate = Median(batchedRates);
            report.Add(new BatchDecodeRow(CacheConfigs.Name(options), CacheConfigs.Bits(options), sequences, $"{lengths.Min()}-{lengths.Max()}", decodeTokens,
                serialRate, batchedRate, batchedRate / serialRate, equal));
        }
        report.Finish(json);
    }

    /// <summary>Greedy decode of <paramref name="count"/> tokens for every sequence at once (one step each token); the tokens of each.</summary>
    private static List<long>[] Decode(Gear.AI.Llama.Model.LlamaModel model, KvSequence[] sequences, long[] next, int count)
    {
        var tokens = sequences.Select(_ => new List<long>()).ToArray();
        var current = next.ToArray();
        for (int t = 0; t < count; t++)
        {
            for (int i = 0; i < sequences.Length; i++)
                tokens[i].Add(current[i]);
            current = Step(model, [.. sequences.Select((s, i) => (s, new[] { (int)current[i] }))]);
        }
        return tokens;
    }

    /// <summary>One step of the model over the sequences, each with its own new tokens; each one's greedy next token.</summary>
    private static long[] Step(Gear.AI.Llama.Model.LlamaModel model, (KvSequence Sequence, int[] Tokens)[] items)
    {
        using var step = KvBatch.Begin([.. items.Select(x => new KvBatchItem(x.Sequence, x.Tokens.Length, x.Tokens))]);
        using var scope = NewDisposeScope();
        var ids = tensor(items.SelectMany(x => x.Tokens).Select(t => (long)t).ToArray(), device: model.Device);
        var logits = model.Forward(step, ids);                                                    // [S, V]
        return logits.argmax(-1).cpu().data<long>().ToArray();
    }

    private static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);
}
