using Gear.AI.Compression;
using Gear.AI.Llama.Generation;
using Gear.AI.Llama.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Tests;

public class GenerationTests
{
    private static readonly LlamaTextTokenizer Tokenizer = LlamaTextTokenizer.Load(TestModels.StoriesDir);
    private static TextGenerator Generator => new(TestModels.Stories, Tokenizer);
    private static readonly int[] Prompt = [1, .. Tokenizer.Encode("Once upon a time")];

    private static (string Text, int[] Ids, GenerationSummary Summary) Run(SamplingOptions options, int[]? prompt = null)
    {
        using var cache = TestModels.Stories.CreateCache(GearOptions.Fp16);
        var updates = Generator.Generate(prompt ?? Prompt, cache.Sequences[0], options).ToList();
        return (string.Concat(updates.Select(u => u.Text)), updates.Where(u => u.TokenId is not null).Select(u => u.TokenId!.Value).ToArray(), updates[^1].Summary!);
    }

    [Fact]
    public void Generate_SameSeed_SameText_DifferentSeed_DifferentText()
    {
        var options = new SamplingOptions { Temperature = 1.0, TopP = 0.95, Seed = 42, MaxNewTokens = 40 };
        var a = Run(options);
        var b = Run(options);
        var c = Run(options with { Seed = 43 });
        Assert.Equal(a.Ids, b.Ids);
        Assert.NotEqual(a.Ids, c.Ids);
    }

    [Fact]
    public void Generate_MaxTokens_StopsWithMaxTokensReason()
    {
        var (_, ids, summary) = Run(SamplingOptions.Greedy with { MaxNewTokens = 7 });
        Assert.Equal(7, ids.Length);
        Assert.Equal(StopReason.MaxTokens, summary.Reason);
        Assert.Equal(Prompt.Length, summary.PromptTokens);
    }

    [Fact]
    public void Generate_StopSequence_CutsExactlyBeforeIt()
    {
        var full = Run(SamplingOptions.Greedy with { MaxNewTokens = 40 }).Text;
        int at = full.IndexOf("Lily", StringComparison.Ordinal);
        Assert.True(at > 0, full);
        var (text, _, summary) = Run(SamplingOptions.Greedy with { MaxNewTokens = 40, StopSequences = ["Lily"] });
        Assert.Equal(full[..at], text);
        Assert.Equal(StopReason.StopSequence, summary.Reason);
    }

    [Fact]
    public void Generate_StopToken_EndsGeneration()
    {
        var full = Run(SamplingOptions.Greedy with { MaxNewTokens = 10 }).Ids;
        var (_, ids, summary) = Run(SamplingOptions.Greedy with { MaxNewTokens = 10, StopTokenIds = [full[3]] });
        Assert.Equal(full[..3], ids); // the stop token itself is not output
        Assert.Equal(StopReason.EndOfSequence, summary.Reason);
    }

    [Fact]
    public void TokenStream_IgnoreEndOfSequence_PassesEosAndEndOfTurn_KeepsExplicitStopTokens()
    {
        int eos = Tokenizer.EosId!.Value, endOfTurn = 13, stop = 29;
        var plain = new TokenStream(Tokenizer, Prompt[^1], SamplingOptions.Greedy with { MaxNewTokens = 5 }, [endOfTurn]);
        Assert.Null(plain.Accept(eos));
        Assert.Equal(StopReason.EndOfSequence, plain.Reason);

        var options = SamplingOptions.Greedy with { MaxNewTokens = 5, IgnoreEndOfSequence = true, StopTokenIds = [stop] };
        var fixedLength = new TokenStream(Tokenizer, Prompt[^1], options, [endOfTurn]);
        Assert.Equal(eos, fixedLength.Accept(eos)!.TokenId);
        Assert.Equal(endOfTurn, fixedLength.Accept(endOfTurn)!.TokenId);
        Assert.Null(fixedLength.Reason);
        Assert.Null(fixedLength.Accept(stop));
        Assert.Equal(StopReason.EndOfSequence, fixedLength.Reason);

        var full = new TokenStream(Tokenizer, Prompt[^1], SamplingOptions.Greedy with { MaxNewTokens = 3, IgnoreEndOfSequence = true });
        for (int i = 0; i < 3; i++)
            full.Accept(eos);
        Assert.Equal(StopReason.MaxTokens, full.Reason);
    }

    [Fact]
    public void Generate_TopK1_EqualsGreedy()
    {
        var greedy = Run(SamplingOptions.Greedy with { MaxNewTokens = 20 }).Ids;
        var topK = Run(new SamplingOptions { Temperature = 1.5, TopK = 1, TopP = 1, Seed = 5, MaxNewTokens = 20 }).Ids;
        Assert.Equal(greedy, topK);
    }

    [Fact]
    public void Generate_RepetitionPenalty_ChangesGreedyOutput()
    {
        var plain = Run(SamplingOptions.Greedy with { MaxNewTokens = 40 }).Ids;
        var penalized = Run(SamplingOptions.Greedy with { MaxNewTokens = 40, RepetitionPenalty = 1.5, FrequencyPenalty = 0.5, PresencePenalty = 0.5 }).Ids;
        Assert.NotEqual(plain, penalized);
        Assert.True(penalized.Distinct().Count() >= plain.Distinct().Count());
    }

    [Fact]
    public void Generate_PromptLongerThanContext_FailsBeforeWork()
    {
        var prompt = Enumerable.Repeat(Prompt[1], 600).Prepend(1).ToArray();
        using var cache = TestModels.Stories.CreateCache(GearOptions.Fp16);
        var e = Assert.Throws<ContextLengthExceededException>(() => Generator.Generate(prompt, cache.Sequences[0], SamplingOptions.Greedy));
        Assert.Equal(601, e.PromptTokens);
        Assert.Equal(512, e.ContextLength);
        Assert.Contains("601", e.Message);
        Assert.Equal(0, cache.Length);
    }

    [Fact]
    public void Generate_Cancelled_ThrowsAndLeavesNoTensors()
    {
        using var cts = new CancellationTokenSource();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using (var cache = TestModels.Stories.CreateCache(new GearOptions { Kind = CacheKind.Gear, Bits = 2 }))
        {
            int n = 0;
            Assert.Throws<OperationCanceledException>(() =>
            {
                foreach (var _ in Generator.Generate(Prompt, cache.Sequences[0], SamplingOptions.Greedy with { MaxNewTokens = 100 }, null, cts.Token))
                {
                    if (++n == 5)
                        cts.Cancel();
                }
            });
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void Generate_ReusedPrefix_SameTokensAsFresh()
    {
        var fresh = Run(SamplingOptions.Greedy with { MaxNewTokens = 10 }).Ids;
        using var cache = TestModels.Stories.CreateCache(GearOptions.Fp16);
        using (var input = tensor(Prompt[..3].Select(i => (long)i).ToArray()).reshape(1, 3))
        using (TestModels.Stories.Forward(input, 0, cache)) { }
        var updates = Generator.Generate(Prompt, cache.Sequences[0], SamplingOptions.Greedy with { MaxNewTokens = 10 }).ToList();
        Assert.Equal(3, updates[^1].Summary!.CachedPromptTokens);
        Assert.Equal(fresh, updates.Where(u => u.TokenId is not null).Select(u => u.TokenId!.Value));
    }

    public static TheoryData<SamplingOptions, string> BadOptions() => new()
    {
        { new SamplingOptions { Temperature = -1 }, "Temperature" },
        { new SamplingOptions { TopP = 0 }, "TopP" },
        { new SamplingOptions { TopK = -1 }, "TopK" },
        { new SamplingOptions { MaxNewTokens = 0 }, "MaxNewTokens" },
        { new SamplingOptions { RepetitionPenalty = 0 }, "RepetitionPenalty" },
        { new SamplingOptions { FrequencyPenalty = 3 }, "FrequencyPenalty" },
        { new SamplingOptions { PresencePenalty = -3 }, "PresencePenalty" },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void SamplingOptions_OutOfRange_NamesOption(SamplingOptions options, string name) =>
        Assert.Equal(name, Assert.Throws<ArgumentOutOfRangeException>(() => options.Validate()).ParamName);

    [Fact]
    public void Forward_Batch_RowsEqualSingleSequenceRuns()
    {
        var model = TestModels.Stories;
        long[][] rows = [[1, 403, 407, 261], [1, 378, 432, 383]];
        using var batchCache = model.CreateCache(GearOptions.Fp16, batch: 2, denseStorageType: ScalarType.Float32);
        using var batch = tensor(rows.SelectMany(r => r).ToArray()).reshape(2, 4);
        using var batched = model.Forward(batch, 0, batchCache);
        for (int i = 0; i < 2; i++)
        {
            using var cache = model.CreateCache(GearOptions.Fp16, denseStorageType: ScalarType.Float32);
            using var single = tensor(rows[i]).reshape(1, 4);
            using var logits = model.Forward(single, 0, cache);
            Assert.True(logits[0].allclose(batched[i], rtol: 1e-4, atol: 1e-5));
        }
    }
}
