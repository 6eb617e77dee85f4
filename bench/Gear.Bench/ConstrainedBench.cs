using System.Diagnostics;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Gear.AI.Llama.Generation;
using Gear.AI.Llama.Generation.Json;
using Gear.AI.Llama.Tokenization;

namespace Gear.Bench;

internal sealed record ConstrainedRow(string Vocabulary, int VocabSize, string Output, int Tokens, double DecodeTokensPerS, double RatioVsFree,
    double MaskUsMedian, double MaskUsP99, double[] RunTokensPerS);

/// <summary>
/// What JSON-constrained output costs: greedy decode tokens/s on a model with and without a schema (the same number of
/// tokens; free text ignores EOS so it runs as long), runs interleaved; and the CPU time of the allowed-token mask per
/// step, on the model's vocabulary (replaying its output) and on the real Llama 3 vocabulary (128K tokens, a seeded
/// random walk through each schema's texts).
/// </summary>
internal static class ConstrainedBench
{
    public static readonly (string Name, string Schema)[] Schemas =
    [
        ("object with a free string", """{"type":"object","properties":{"story":{"type":"string"}},"required":["story"]}"""),
        ("array of bounded records", """{"type":"array","items":{"type":"object","properties":{"name":{"type":"string","maxLength":16},"age":{"type":"integer","minimum":0,"maximum":120},"pet":{"type":["string","null"],"enum":["cat","dog",null]}},"required":["name","age","pet"]},"minItems":3}"""),
    ];

    public static void Run(LlamaRuntime runtime, string? llama3Directory, int tokens, int repeats, string machine, string? json)
    {
        var report = new BenchReport<ConstrainedRow>("constrained", runtime.ModelId, machine);
        var model = runtime.Model;
        var tokenizer = runtime.Tokenizer;
        var prompt = tokenizer.Encode("Once upon a time, a boat sailed").Prepend(tokenizer.BosId ?? 1).ToArray();
        var generator = new TextGenerator(model, tokenizer);
        var free = SamplingOptions.Greedy with { MaxNewTokens = tokens, IgnoreEndOfSequence = true };
        var runs = new List<(string Name, SamplingOptions Options)> { ("free text", free) };
        runs.AddRange(Schemas.Select(s => (s.Name, SamplingOptions.Greedy with { MaxNewTokens = tokens, Json = JsonGrammar.FromSchema(s.Schema) })));
        var rates = runs.Select(_ => new List<double>()).ToArray();
        var outputs = new int[runs.Count][];
        using var pool = model.CreatePool(GearOptions.Fp16);
        Generate(runs[0].Options);                                                            // warm-up
        for (int r = 0; r < repeats; r++)
            for (int i = 0; i < runs.Count; i++)
            {
                var (ids, rate) = Generate(runs[i].Options);
                rates[i].Add(rate);
                outputs[i] = ids;
            }
        double freeRate = Median(rates[0]);
        var eos = new TokenStream(tokenizer, prompt[^1], SamplingOptions.Greedy).StopTokenIds;
        for (int i = 0; i < runs.Count; i++)
        {
            var (median, p99) = i == 0 ? (0.0, 0.0) : MaskTimes(runs[i].Options.Json!, TokenVocabulary.Of(tokenizer), eos, model.Config.VocabSize, tokens, outputs[i]);
            report.Add(new ConstrainedRow($"{runtime.ModelId} ({TokenVocabulary.Of(tokenizer).Sorted.Length:N0} tokens)", model.Config.VocabSize, runs[i].Name,
                outputs[i].Length, Median(rates[i]), Median(rates[i]) / freeRate, median, p99, [.. rates[i].Select(x => Math.Round(x, 1))]));
        }
        if (llama3Directory is not null)
        {
            var llama3 = LlamaTextTokenizer.Load(llama3Directory);
            var vocabulary = TokenVocabulary.Of(llama3);
            int size = vocabulary.Size;
            foreach (var (name, schema) in Schemas)
            {
                var (median, p99) = MaskTimes(JsonGrammar.FromSchema(schema), vocabulary, [llama3.EosId ?? 0], size, tokens, null);
                report.Add(new ConstrainedRow($"Llama 3 ({vocabulary.Sorted.Length:N0} tokens)", size, name, tokens, 0, 0, median, p99, []));
            }
        }
        report.Finish(json);

        (int[] Ids, double Rate) Generate(SamplingOptions options)
        {
            using var sequence = pool.CreateSequence();
            var ids = new List<int>();
            GenerationSummary? summary = null;
            foreach (var update in generator.Generate(prompt, sequence, options))
            {
                if (update.TokenId is int id)
                    ids.Add(id);
                summary = update.Summary ?? summary;
            }
            return ([.. ids], summary!.DecodeTokensPerSecond);
        }
    }

    /// <summary>
    /// Microseconds of <see cref="JsonConstraint.Allowed"/> per step (median, 99th percentile): replaying
    /// <paramref name="output"/>, or a random walk over allowed tokens (seed 1) when it is null.
    /// </summary>
    private static (double Median, double P99) MaskTimes(JsonGrammar grammar, TokenVocabulary vocabulary, IEnumerable<int> ends, int vocabSize, int tokens, int[]? output)
    {
        var times = new List<double>();
        var random = new Random(1);
        var endSet = ends.ToHashSet();
        for (int round = 0; round < 3; round++)
        {
            var constraint = new JsonConstraint(grammar, vocabulary, endSet, vocabSize, tokens);
            for (int step = 0; step < tokens; step++)
            {
                var clock = Stopwatch.StartNew();
                var allowed = constraint.Allowed();
                times.Add(clock.Elapsed.TotalMicroseconds);
                int next;
                if (output is not null)
                {
                    if (step >= output.Length)
                        break;
                    next = output[step];
                }
                else
                {
                    var choices = Enumerable.Range(0, allowed.Length).Where(i => allowed[i]).ToArray();
                    next = choices[random.Next(choices.Length)];
                }
                if (endSet.Contains(next))
                    break;
                constraint.Accept(next);
            }
        }
        var sorted = times.Order().ToArray();
        return (sorted[sorted.Length / 2], sorted[(int)(sorted.Length * 0.99)]);
    }

    private static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);
}
