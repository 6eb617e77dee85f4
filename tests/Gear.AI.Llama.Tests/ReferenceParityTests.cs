using System.Text.Json;
using Gear.AI.Compression;
using Gear.AI.Llama.Generation;
using Gear.AI.Llama.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Tests;

/// <summary>Logits and greedy ids against transformers (fixtures made by scripts/reference/make_reference.py).</summary>
public class ReferenceParityTests
{
    private static float[] PromptLogits(LlamaModel model, int[] ids, int[] positions)
    {
        using var cache = model.CreateCache(GearOptions.Fp16, denseStorageType: ScalarType.Float32);
        using var input = tensor(ids.Select(i => (long)i).ToArray()).reshape(1, ids.Length);
        using var logits = model.Forward(input, 0, cache);                               // [1, T, V]
        using var rows = logits[0].index_select(0, tensor(positions.Select(p => (long)p).ToArray()));
        return rows.reshape(-1).data<float>().ToArray();
    }

    private static void AssertClose(float[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
            worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        Assert.True(worst <= tolerance, $"largest logit difference {worst:E2} exceeds {tolerance:E0}");
    }

    [Fact]
    public void Stories_PromptLogits_MatchTransformers()
    {
        string dir = Path.Combine(TestModels.StoriesDir, "reference");
        using var meta = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
        var ids = meta.RootElement.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var expected = TestModels.ReadFloats(Path.Combine(dir, "prompt_logits.f32"));
        AssertClose(expected, PromptLogits(TestModels.Stories, ids, Enumerable.Range(0, ids.Length).ToArray()), 1e-4);
    }

    [Fact]
    public void GearTiny_PromptLogits_MatchTransformers_AndGreedy48Identical()
    {
        using var meta = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "gear-tiny-reference.json")));
        var root = meta.RootElement;
        var ids = root.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var positions = root.GetProperty("logits_positions").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var expected = TestModels.ReadFloats(Path.Combine(TestModels.FixturesDir, "gear-tiny-reference.f32"));
        AssertClose(expected, PromptLogits(TestModels.GearTiny, ids, positions), 2e-3);

        var expectedIds = root.GetProperty("greedy_continuation_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        using var cache = TestModels.GearTiny.CreateCache(GearOptions.Fp16, denseStorageType: ScalarType.Float32);
        var tokenizer = Tokenization.LlamaTextTokenizer.Load(TestModels.GearTinyDir);
        var generator = new TextGenerator(TestModels.GearTiny, tokenizer);
        var options = SamplingOptions.Greedy with { MaxNewTokens = expectedIds.Length, StopTokenIds = [] };
        var actual = generator.Generate(ids, cache.Sequences[0], options).Where(u => u.TokenId is not null).Select(u => u.TokenId!.Value).ToArray();
        Assert.Equal(expectedIds, actual);
    }

    [Fact]
    public void Llama3Shaped_GqaRopeScalingUntied_LogitsMatchTransformers()
    {
        string dir = Path.Combine(TestModels.FixturesDir, "llama3-tiny");
        using var model = LlamaModel.Load(dir);
        Assert.NotNull(model.Config.RopeScaling);
        Assert.False(model.Config.TieWordEmbeddings);
        Assert.Equal(4, model.Config.KeyValueGroups);
        Assert.Equal(500000.0, model.Config.RopeTheta);
        using var meta = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
        var ids = meta.RootElement.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var positions = meta.RootElement.GetProperty("logits_positions").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var expected = TestModels.ReadFloats(Path.Combine(dir, "reference.f32"));
        AssertClose(expected, PromptLogits(model, ids, positions), 1e-4);
    }
}
