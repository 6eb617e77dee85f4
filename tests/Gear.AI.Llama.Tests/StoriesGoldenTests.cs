using Gear.AI.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Tests;

/// <summary>stories260K against llama2.c's run.c (golden) and transformers (reference).</summary>
public class StoriesGoldenTests
{
    private static string Golden(string file) => Path.Combine(TestModels.StoriesDir, "golden", file);

    [Fact]
    public void Forward_Bos_LogitsMatchLlama2c()
    {
        var model = TestModels.Stories;
        using var cache = model.CreateCache(GearOptions.Fp16, denseStorageType: ScalarType.Float32);
        using var tokens = tensor(new long[] { 1 }).reshape(1, 1);
        using var logits = model.Forward(tokens, 0, cache);
        var expected = TestModels.ReadFloats(Golden("golden_logits_pos0_bos.f32"));
        var actual = logits.reshape(-1).data<float>().ToArray();
        Assert.Equal(expected.Length, actual.Length);
        Assert.All(Enumerable.Range(0, expected.Length), i => Assert.True(Math.Abs(expected[i] - actual[i]) < 1e-4, $"logit {i}: {expected[i]} vs {actual[i]}"));
    }

    [Fact]
    public void GreedyFromBos_ReproducesLlama2cIds()
    {
        var expected = File.ReadAllText(Golden("golden_greedy_ids_64.txt")).Replace("ids:", "")
            .Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
        var model = TestModels.Stories;
        using var cache = model.CreateCache(GearOptions.Fp16, denseStorageType: ScalarType.Float32);
        var ids = new List<int>();
        long token = 1;
        for (int pos = 0; pos < expected.Length; pos++)
        {
            using var input = tensor(new[] { token }).reshape(1, 1);
            using var logits = model.Forward(input, pos, cache);
            token = logits.reshape(-1).argmax().item<long>();
            ids.Add((int)token);
        }
        Assert.Equal(expected, ids);
    }
}
