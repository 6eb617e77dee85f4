using Gear.AI.Compression;
using Gear.AI.Llama;
using Gear.AI.Llama.Weights;
using Microsoft.Extensions.AI;

namespace Gear.AI.Tests;

/// <summary>Model names resolve through a documented search; a miss says where it looked and what to set; loads report progress.</summary>
public class ModelResolutionTests
{
    [Fact]
    public void Name_ResolvesIn_ModelsDirectory_ThenGearModels_ThenTheRepository()
    {
        string root = Directory.CreateTempSubdirectory("gear-models-").FullName;
        string other = Directory.CreateTempSubdirectory("gear-models-env-").FullName;
        string name = "probe-" + Guid.NewGuid().ToString("N")[..8];
        string? saved = Environment.GetEnvironmentVariable(ModelLocator.ModelsVariable);
        try
        {
            Directory.CreateDirectory(Path.Combine(other, name));
            Environment.SetEnvironmentVariable(ModelLocator.ModelsVariable, string.Join(Path.PathSeparator, "/nonexistent-gear", other));
            Assert.Equal(Path.Combine(other, name), ModelLocator.Resolve(name, root));                 // not in root: GEAR_MODELS
            Directory.CreateDirectory(Path.Combine(root, name));
            Assert.Equal(Path.Combine(root, name), ModelLocator.Resolve(name, root));                  // the models directory first
            Assert.EndsWith(Path.Combine("models", "gear-tiny"), ModelLocator.Resolve("gear-tiny"));   // the checkout's models/
        }
        finally
        {
            Environment.SetEnvironmentVariable(ModelLocator.ModelsVariable, saved);
            Directory.Delete(root, true);
            Directory.Delete(other, true);
        }
    }

    [Fact]
    public void Miss_SaysWhereItLookedAndWhatToSet()
    {
        string root = Directory.CreateTempSubdirectory("gear-models-").FullName;
        try
        {
            var e = Assert.Throws<ModelNotFoundException>(() => ModelLocator.Resolve("no-such-model", root));
            Assert.Equal(Path.Combine(root, "no-such-model"), e.Looked[0]);
            Assert.Contains(Path.Combine(AppContext.BaseDirectory, "models", "no-such-model"), e.Looked);
            Assert.Contains("ModelsDirectory", e.Message, StringComparison.Ordinal);
            Assert.Contains("GEAR_MODELS", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain("--model", e.Message, StringComparison.Ordinal);

            var path = Assert.Throws<ModelNotFoundException>(() => ModelLocator.Resolve(Path.Combine(root, "missing", "model")));
            Assert.Equal([Path.Combine(root, "missing", "model")], path.Looked);

            using var client = new GearChatClient(new GearChatClientOptions { Model = "no-such-model", ModelsDirectory = root });
            Assert.Throws<ModelNotFoundException>(() => client.GetResponseAsync("hi").GetAwaiter().GetResult());
        }
        finally
        {
            Directory.Delete(root, true);
        }
    }

    [Fact]
    public async Task Load_ReportsProgressPerTensor_ThroughEveryShard()
    {
        var reports = new List<ModelLoadProgress>();
        string models = Path.GetDirectoryName(ModelLocator.Resolve("gear-tiny"))!;
        using var client = new GearChatClient(new GearChatClientOptions
        {
            Model = "gear-tiny", ModelsDirectory = models, Cache = CacheKind.Fp16, Device = "cpu",
            LoadProgress = new Collect(reports), ChatTemplate = Llama.Chat.ChatTemplateKind.Plain,
        });
        await client.LoadAsync();
        Assert.NotEmpty(reports);
        Assert.Equal(1.0, reports[^1].Fraction);
        Assert.Equal(reports[^1].TensorsTotal, reports[^1].TensorsLoaded);
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.Second.BytesLoaded > p.First.BytesLoaded));
        var shards = Directory.GetFiles(Path.Combine(models, "gear-tiny"), "*.safetensors").Select(Path.GetFileName).Order().ToArray();
        Assert.Equal(shards, reports.Select(r => r.Shard).Distinct().Order().ToArray());
    }

    private sealed class Collect(List<ModelLoadProgress> into) : IProgress<ModelLoadProgress>
    {
        public void Report(ModelLoadProgress value) => into.Add(value);
    }
}
