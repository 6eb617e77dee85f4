using Gear.AI.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Tests;

/// <summary>Every cache kind behind the same model: lossless settings equal Fp16, repeatable outputs.</summary>
public class CacheKindTests
{
    private static readonly long[] Text = Tokenization.LlamaTextTokenizer.Load(TestModels.GearTinyDir)
        .Encode(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "..", "..", "models", "README.md"))).Take(200).Select(i => (long)i).Prepend(1).ToArray();

    /// <summary>Prefill the first 100 tokens, then feed the rest one at a time; logits of every position.</summary>
    private static Tensor Logits(GearOptions options)
    {
        var model = TestModels.GearTiny;
        using var cache = model.CreateCache(options);
        var rows = new List<Tensor>();
        using (var prompt = tensor(Text[..100]).reshape(1, 100))
            rows.Add(model.Forward(prompt, 0, cache)[0]);
        for (int i = 100; i < Text.Length; i++)
        {
            using var step = tensor(new[] { Text[i] }).reshape(1, 1);
            rows.Add(model.Forward(step, i, cache)[0]);
        }
        var all = cat(rows, 0);
        foreach (var r in rows) r.Dispose();
        return all;
    }

    [Fact]
    public void BufferLongerThanText_LogitsEqualFp16()
    {
        using var fp16 = Logits(GearOptions.Fp16);
        using var gear = Logits(new GearOptions { Kind = CacheKind.Gear, Bits = 2, BufferLength = 256 });
        double worst = (fp16 - gear).abs().max().item<float>();
        // Same float16 K/V; only the float32 summation order differs (SDPA vs explicit softmax), the same
        // order of difference as between transformers and this runtime (2e-3 on gear-tiny).
        Assert.True(worst < 5e-3, $"largest logit difference {worst}");
    }

    [Fact]
    public void EightBitsFullRank_LogitsEqualFp16WithinTolerance()
    {
        using var fp16 = Logits(GearOptions.Fp16);
        using var gear = Logits(new GearOptions { Kind = CacheKind.Gear, Bits = 8, PromptRank = 64, DecodeRank = 64 });
        double worst = (fp16 - gear).abs().max().item<float>();
        Assert.True(worst < 2e-2, $"largest logit difference {worst}");
        using var kivi2 = Logits(new GearOptions { Kind = CacheKind.Kivi, Bits = 2 });
        double kivi = (fp16 - kivi2).abs().max().item<float>();
        Assert.True(kivi > worst * 5, $"2-bit KIVI ({kivi}) should differ far more than lossless GEAR ({worst})");
    }

    [Theory]
    [InlineData(CacheKind.Kivi)]
    [InlineData(CacheKind.GearL)]
    [InlineData(CacheKind.Gear)]
    public void SameInput_SameLogitsEveryRun(CacheKind kind)
    {
        var options = new GearOptions { Kind = kind, Bits = 2 };
        using var a = Logits(options);
        using var b = Logits(options);
        Assert.True(a.equal(b).all().item<bool>());
    }
}
