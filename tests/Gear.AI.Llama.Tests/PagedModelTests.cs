using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Tests;

/// <summary>gear-tiny over paged caches: a ragged step equals each sequence alone; a shared document is held once.</summary>
public class PagedModelTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly int[] Book = Tokenization.LlamaTextTokenizer.Load(TestModels.GearTinyDir)
        .Encode(File.ReadAllText(Path.Combine(TestModels.RepoRoot, "bench", "data", "doyle-hound-of-the-baskervilles.txt"))).Skip(200).Take(2100).ToArray();

    /// <summary>One step of the model over <paramref name="items"/> (each sequence with its own new tokens); logits [S, V].</summary>
    private static Tensor Step(params (KvSequence Sequence, int[] Tokens)[] items)
    {
        var model = TestModels.GearTiny;
        using var step = KvBatch.Begin([.. items.Select(i => new KvBatchItem(i.Sequence, i.Tokens.Length, i.Tokens))]);
        using var tokens = tensor(items.SelectMany(i => i.Tokens).Select(t => (long)t).ToArray());
        return model.Forward(step, tokens);
    }

    /// <summary>(history, new tokens of the ragged step): final lengths 1, 63, 64, 65, 700 and 2,000, decode and prefill mixed.</summary>
    private static readonly (int History, int New)[] Mix = [(0, 1), (62, 1), (0, 64), (64, 1), (600, 100), (1999, 1)];

    public static TheoryData<CacheKind, int> Kinds() => new()
    {
        { CacheKind.Fp16, 16 }, { CacheKind.Kivi, 2 }, { CacheKind.Kivi, 4 }, { CacheKind.GearL, 2 }, { CacheKind.GearL, 4 }, { CacheKind.Gear, 2 }, { CacheKind.Gear, 4 },
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void RaggedStep_LogitsEqualEachSequenceRunAlone(CacheKind kind, int bits)
    {
        var options = kind == CacheKind.Fp16 ? GearOptions.Fp16 : new GearOptions { Kind = kind, Bits = bits };
        using var batchedPool = TestModels.GearTiny.CreatePool(options);
        using var alonePool = TestModels.GearTiny.CreatePool(options);
        var batched = new List<KvSequence>();
        var alone = new List<KvSequence>();
        try
        {
            for (int i = 0; i < Mix.Length; i++)
            {
                var (history, _) = Mix[i];
                var ids = Book.Skip(i * 13).Take(history).ToArray();                       // a different text per sequence
                batched.Add(batchedPool.CreateSequence());
                alone.Add(alonePool.CreateSequence());
                if (history > 0)
                {
                    Step((batched[i], ids)).Dispose();
                    Step((alone[i], ids)).Dispose();
                }
            }
            var inputs = Mix.Select((m, i) => Book.Skip(i * 13 + m.History).Take(m.New).ToArray()).ToArray();
            using var together = Step([.. batched.Select((s, i) => (s, inputs[i]))]);   // [6, V]
            for (int i = 0; i < Mix.Length; i++)
            {
                using var expected = Step((alone[i], inputs[i]));                          // [1, V]
                using var actual = together[i];
                double difference = (actual - expected[0]).abs().max().item<float>();
                Assert.True(difference < 1e-3, $"sequence {i} ({Mix[i].History} + {Mix[i].New}): largest logit difference {difference}");
                Assert.Equal(expected[0].argmax().item<long>(), actual.argmax().item<long>());
                Assert.Equal(Mix[i].History + Mix[i].New, batched[i].Length);
            }
        }
        finally
        {
            foreach (var s in batched.Concat(alone))
                s.Dispose();
        }
    }

    /// <summary>
    /// With <c>batchInvariant</c>, three sequences prefilled in one step (two of them flushing the same number of tokens,
    /// which compress in one call) and then decoding 70 greedy steps together (a decode page compressed per sequence) get
    /// exactly the logits — every bit — each gets alone, at every step. Without it a one-row step runs as a matrix-vector
    /// product and rounds differently from the same row among others.
    /// </summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void BatchInvariantSteps_GiveEachSequenceTheBitsItGetsAlone(CacheKind kind, int bits)
    {
        var model = TestModels.GearTiny;
        Assert.NotNull(model.BatchInvariantRowBlock);
        var options = kind == CacheKind.Fp16 ? GearOptions.Fp16 : new GearOptions { Kind = kind, Bits = bits };
        int[][] prompts = [Book[..66], Book[300..366], Book[700..830]];
        var together = Run(prompts);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = Run([prompts[i]]);
            for (int step = 0; step < alone.Count; step++)
                Assert.True(alone[step][0].SequenceEqual(together[step][i]), $"sequence {i}, step {step}: logits differ from the sequence alone");
        }

        // Each step's logits per sequence, greedy continuation fed back.
        List<float[][]> Run(int[][] inputs)
        {
            using var pool = model.CreatePool(options);
            var sequences = inputs.Select(_ => pool.CreateSequence()).ToArray();
            var steps = new List<float[][]>();
            try
            {
                var feed = inputs;
                for (int step = 0; step < 71; step++)
                {
                    using var scope = NewDisposeScope();
                    using var batch = KvBatch.Begin([.. sequences.Select((s, i) => new KvBatchItem(s, feed[i].Length, feed[i]))]);
                    var logits = model.Forward(batch, tensor(feed.SelectMany(f => f).Select(t => (long)t).ToArray()), batchInvariant: true);
                    steps.Add([.. Enumerable.Range(0, sequences.Length).Select(i => logits[i].data<float>().ToArray())]);
                    feed = [.. Enumerable.Range(0, sequences.Length).Select(i => new[] { (int)logits[i].argmax().item<long>() })];
                }
            }
            finally
            {
                foreach (var s in sequences)
                    s.Dispose();
            }
            return steps;
        }
    }

    /// <summary>
    /// The managed CPU decode step against libtorch's (a second gear-tiny with it switched off): three sequences of
    /// different lengths decoding 70 steps together (decode pages compressed on the way) give the same greedy tokens,
    /// logits within 2e-4 of the largest with the FP16 cache (float32 sums in another order) and within 5e-3 with the
    /// compressed ones (from the first compressed decode page on, a code or two round the other way).
    /// </summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void ManagedCpuDecode_MatchesTheTensorPath(CacheKind kind, int bits)
    {
        var managed = TestModels.GearTiny;
        using var reference = Model.LlamaModel.Load(TestModels.GearTinyDir);
        reference.UseManagedCpuDecode = false;
        Assert.True(managed.DecodesInManagedCode);
        Assert.False(reference.DecodesInManagedCode);
        var options = kind == CacheKind.Fp16 ? GearOptions.Fp16 : new GearOptions { Kind = kind, Bits = bits };
        using var managedPool = managed.CreatePool(options);
        using var referencePool = reference.CreatePool(options);
        int[][] prompts = [Book[..40], Book[300..363], Book[700..830]];
        var a = prompts.Select(_ => managedPool.CreateSequence()).ToArray();
        var b = prompts.Select(_ => referencePool.CreateSequence()).ToArray();
        try
        {
            var feed = prompts;
            double worst = 0;
            for (int step = 0; step < 71; step++)
            {
                using var scope = NewDisposeScope();
                var x = Run(managed, a, feed);
                var y = Run(reference, b, feed);
                double scale = y.abs().max().item<float>();
                double difference = (x - y).abs().max().item<float>() / scale;
                worst = Math.Max(worst, difference);
                Assert.True(difference < (kind == CacheKind.Fp16 ? 2e-4 : 5e-3), $"step {step}: logits differ by {difference:E2} of the largest");
                var next = y.argmax(1).data<long>().ToArray();
                Assert.Equal(next, x.argmax(1).data<long>().ToArray());
                feed = [.. next.Select(t => new[] { (int)t })];
            }
            Assert.Equal(prompts.Select(p => (long)p.Length + 70), a.Select(s => s.Length));
            output.WriteLine($"{kind} {bits}: largest difference {worst:E2} of the largest logit over 71 steps");
        }
        finally
        {
            foreach (var s in a.Concat(b))
                s.Dispose();
        }

        static Tensor Run(Model.LlamaModel model, KvSequence[] sequences, int[][] feed)
        {
            using var batch = KvBatch.Begin([.. sequences.Select((s, i) => new KvBatchItem(s, feed[i].Length, feed[i]))]);
            return model.Forward(batch, tensor(feed.SelectMany(f => f).Select(t => (long)t).ToArray()));
        }
    }

    [Theory]
    [InlineData(CacheKind.Fp16, 16)]
    [InlineData(CacheKind.Gear, 4)]
    [InlineData(CacheKind.Gear, 2)]
    public void TwoConversationsOverOneDocument_ShareItsPages_AnswerAsAlone_AndOutliveEachOther(CacheKind kind, int bits)
    {
        var options = kind == CacheKind.Fp16 ? GearOptions.Fp16 : new GearOptions { Kind = kind, Bits = bits };
        var model = TestModels.GearTiny;
        var tokenizer = Tokenization.LlamaTextTokenizer.Load(TestModels.GearTinyDir);
        var generator = new TextGenerator(model, tokenizer);
        int[] document = [1, .. Book.Take(1499)];
        int[] first = [.. document, .. tokenizer.Encode("\n\nWho wrote to Sir Henry?")];
        int[] second = [.. document, .. tokenizer.Encode("\n\nWhat did Holmes see on the moor?")];
        var greedy = SamplingOptions.Greedy with { MaxNewTokens = 12, StopTokenIds = [] };
        int[] Answer(KvSequence sequence, int[] prompt) =>
            [.. generator.Generate(prompt, sequence, greedy).Where(u => u.TokenId is not null).Select(u => u.TokenId!.Value)];

        // Each alone, in a pool of its own.
        int[] firstAlone, secondAlone;
        using (var pool = model.CreatePool(options))
        {
            using (var s = pool.CreateSequence()) firstAlone = Answer(s, first);
            pool.DropCachedPages();
            using (var s = pool.CreateSequence()) secondAlone = Answer(s, second);
        }

        using var shared = model.CreatePool(options);
        using var a = shared.CreateSequence();
        Assert.Equal(firstAlone, Answer(a, first));
        using var b = shared.FindPrefix(second, second.Length - 1);
        Assert.Equal(1472, b.Length);                                                   // the document's 23 whole pages, found by their ids
        Assert.Equal(a.Pages.Take(23), b.Pages);
        Assert.Equal(secondAlone, Answer(b, second));
        // Held once: the two together take the first's bytes plus what the second added after the shared pages.
        var together = shared.StatisticsOf([a, b]).ResidentBytes;
        var sharedPages = shared.StatisticsOf([a]).ResidentBytes + shared.StatisticsOf([b]).ResidentBytes - together;
        Assert.True(sharedPages >= 23 * (b.ResidentBytes - b.BufferBytes) / b.Pages.Count, $"shared {sharedPages:N0} bytes");

        // Evicting the first keeps the second intact: its next token is the one it would have made.
        using var probe = b.Fork();
        using var expected = Step((probe, [29]));
        a.Dispose();
        shared.DropCachedPages();
        using var actual = Step((b, [29]));
        Assert.Equal(expected.argmax().item<long>(), actual.argmax().item<long>());
        Assert.True((expected - actual).abs().max().item<float>() < 1e-4);
    }
}
