using Gear.AI.Compression.Caching;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>A step over sequences of different lengths, some prefilling and some decoding, against each run alone.</summary>
public class RaggedBatchTests
{
    private static readonly KvShape Shape = new(2, 2, 64, ScalarType.Float32, CPU);

    /// <summary>(history before the step, tokens the step appends): final lengths 1, 63, 64, 65, 700 and 2,000.</summary>
    private static readonly (int History, int New)[] Mix = [(0, 1), (62, 1), (0, 64), (64, 1), (600, 100), (1999, 1)];

    public static TheoryData<CacheKind, int> Kinds() => new()
    {
        { CacheKind.Fp16, 16 }, { CacheKind.Kivi, 2 }, { CacheKind.Kivi, 4 }, { CacheKind.GearL, 2 }, { CacheKind.GearL, 4 }, { CacheKind.Gear, 2 }, { CacheKind.Gear, 4 },
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void RaggedStep_EqualsEachSequenceAlone(CacheKind kind, int bits) => RaggedStepEqualsAlone(kind, bits, tensorWrites: false);

    /// <summary>The device path's buffer writes (one indexed write per layer for every in-place sequence) against the CPU's.</summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void RaggedStep_WithTensorWrites_EqualsEachSequenceAlone(CacheKind kind, int bits) => RaggedStepEqualsAlone(kind, bits, tensorWrites: true);

    private static void RaggedStepEqualsAlone(CacheKind kind, int bits, bool tensorWrites)
    {
        var options = kind == CacheKind.Fp16 ? GearOptions.Fp16 : new GearOptions { Kind = kind, Bits = bits };
        using var batched = new PagePool(Shape, options);
        using var single = new PagePool(Shape, options);
        var together = new List<KvSequence>();
        var alone = new List<KvSequence>();
        var steps = new List<(Tensor Q, Tensor K, Tensor V)>();
        try
        {
            for (int i = 0; i < Mix.Length; i++)
            {
                var (history, n) = Mix[i];
                using var k = KvFixtures.KeyLike(1, 2, history + n, 64, 10 + i)[0];
                using var v = KvFixtures.KeyLike(1, 2, history + n, 64, 50 + i)[0];
                together.Add(batched.CreateSequence());
                alone.Add(single.CreateSequence());
                if (history > 0)
                    foreach (var s in new[] { together[i], alone[i] })
                        using (PagedSteps.Attend(s, randn(6, history, 64), k.narrow(1, 0, history), v.narrow(1, 0, history))) { }
                steps.Add((randn(6, n, 64), k.narrow(1, history, n).clone(), v.narrow(1, history, n).clone()));
            }
            var outputs = PagedSteps.Attend(tensorWrites, [.. together.Select((s, i) => (s, steps[i].Q, steps[i].K, steps[i].V))]);
            for (int i = 0; i < Mix.Length; i++)
            {
                using var expected = PagedSteps.Attend(alone[i], steps[i].Q, steps[i].K, steps[i].V);
                double error = TensorAssert.RelativeError(outputs[i], expected);
                Assert.True(error < 1e-6, $"sequence {i} ({Mix[i].History} + {Mix[i].New}): relative error {error}");
                Assert.Equal(alone[i].Length, together[i].Length);
                Assert.Equal(alone[i].ResidentBytes, together[i].ResidentBytes);
                outputs[i].Dispose();
            }
            // One more decode step for all: it reads what the first one wrote into the buffers.
            var next = Mix.Select((_, i) => (Q: randn(6, 1, 64), K: randn(2, 1, 64), V: randn(2, 1, 64))).ToArray();
            var second = PagedSteps.Attend(tensorWrites, [.. together.Select((s, i) => (s, next[i].Q, next[i].K, next[i].V))]);
            for (int i = 0; i < Mix.Length; i++)
            {
                using var expected = PagedSteps.Attend(alone[i], next[i].Q, next[i].K, next[i].V);
                double error = TensorAssert.RelativeError(second[i], expected);
                Assert.True(error < 1e-6, $"sequence {i}, second step: relative error {error}");
                second[i].Dispose();
                next[i].Q.Dispose(); next[i].K.Dispose(); next[i].V.Dispose();
            }
        }
        finally
        {
            foreach (var s in together.Concat(alone))
                s.Dispose();
            foreach (var (q, k, v) in steps)
            {
                q.Dispose(); k.Dispose(); v.Dispose();
            }
        }
    }
}
