using System.Diagnostics;
using Gear.AI.Compression;
using Gear.AI.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.Bench;

internal sealed record SpeedRow(string Cache, int Bits, int Context, double PrefillTokensPerS, double DecodeTokensPerS, double DecodeRatioVsFp16);

/// <summary>
/// Prefill and decode throughput per cache kind, with the decode ratio to Fp16 measured in the same
/// run. Context c: a prompt of c − d held-out tokens, then d greedy decode steps, so the last steps
/// attend to c tokens. Each configuration is measured <c>repeats</c> times, alternating kinds, and the
/// median kept.
/// </summary>
internal static class SpeedBench
{
    public static void Run(LlamaRuntime runtime, string textFile, IReadOnlyList<int> contexts, int decodeTokens, int repeats, IReadOnlyList<GearOptions> caches, string machine, string? json)
    {
        var ids = runtime.Tokenizer.Encode(File.ReadAllText(textFile));
        var report = new BenchReport<SpeedRow>("speed", runtime.ModelId, machine);
        foreach (var options in caches)                                        // warm-up: JIT and allocator, every kind
            Measure(runtime, ids, Math.Min(128, contexts.Min()), Math.Min(8, decodeTokens), options);
        foreach (int context in contexts)
        {
            if (context > runtime.Model.Config.MaxPositionEmbeddings || context - decodeTokens < 1)
                throw new ArgumentOutOfRangeException(nameof(contexts), context, $"Each context must exceed --decode-tokens ({decodeTokens}) and fit the model.");
            var samples = caches.ToDictionary(c => c, _ => new List<(double Prefill, double Decode)>());
            for (int r = 0; r < repeats; r++)
                foreach (var options in caches)
                    samples[options].Add(Measure(runtime, ids, context, decodeTokens, options));
            double fp16Decode = Median(samples[caches[0]].Select(s => s.Decode));
            foreach (var options in caches)
            {
                double prefill = Median(samples[options].Select(s => s.Prefill)), decode = Median(samples[options].Select(s => s.Decode));
                report.Add(new SpeedRow(CacheConfigs.Name(options), CacheConfigs.Bits(options), context, prefill, decode, decode / fp16Decode));
            }
        }
        report.Finish(json);
    }

    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    private static (double Prefill, double Decode) Measure(LlamaRuntime runtime, IReadOnlyList<int> ids, int context, int decodeTokens, GearOptions options)
    {
        var model = runtime.Model;
        int prompt = context - decodeTokens;
        using var cache = model.CreateCache(options);
        var clock = Stopwatch.StartNew();
        long next;
        using (var scope = NewDisposeScope())
        {
            var input = tensor(ids.Take(prompt).Select(i => (long)i).ToArray(), dtype: ScalarType.Int64, device: model.Device).reshape(1, prompt);
            next = model.Forward(input, 0, cache, lastOnly: true).argmax().item<long>();
        }
        double prefill = prompt / clock.Elapsed.TotalSeconds;
        clock.Restart();
        for (int i = 0; i < decodeTokens; i++)
        {
            using var scope = NewDisposeScope();
            var input = tensor(new[] { next }, dtype: ScalarType.Int64, device: model.Device).reshape(1, 1);
            next = model.Forward(input, prompt + i, cache, lastOnly: true).argmax().item<long>();
        }
        return (prefill, decodeTokens / clock.Elapsed.TotalSeconds);
    }
}
