using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama;
using Gear.AI.Llama.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.Bench;

internal sealed record MemoryRow(string Cache, int Bits, int Context, long ResidentBytes, long Fp16Bytes, double Ratio, double BitsPerElement,
    long CodeBytes, long ScaleZeroBytes, long OutlierBytes, long LowRankBytes, long BufferBytes);

/// <summary>
/// Resident KV bytes against FP16 bytes per cache kind. With a model: a real prefill of held-out text.
/// With a shape config (7B, 32K): caches filled with synthetic K/V of the right shape — bytes do not
/// depend on values, so no weights are needed.
/// </summary>
internal static class MemoryBench
{
    public static void RunModel(LlamaRuntime runtime, string textFile, IReadOnlyList<int> contexts, IReadOnlyList<GearOptions> caches, string machine, string? json)
    {
        var ids = runtime.Tokenizer.Encode(File.ReadAllText(textFile));
        var report = new BenchReport<MemoryRow>("memory", runtime.ModelId, machine);
        foreach (int context in contexts)
        {
            if (context > runtime.Model.Config.MaxPositionEmbeddings || context > ids.Count)
                throw new ArgumentOutOfRangeException(nameof(contexts), context, "A context exceeds the model's context or the text.");
            foreach (var options in caches)
            {
                using var cache = runtime.Model.CreateCache(options);
                using var input = tensor(ids.Take(context).Select(i => (long)i).ToArray(), dtype: ScalarType.Int64).reshape(1, context);
                using (runtime.Model.Forward(input, 0, cache, lastOnly: true)) { }
                report.Add(Row(options, context, cache));
            }
        }
        report.Finish(json);
    }

    public static void RunShape(string configPath, int batch, IReadOnlyList<int> contexts, IReadOnlyList<GearOptions> caches, string device, string machine, string? json)
    {
        var config = LlamaConfig.Load(Path.GetDirectoryName(Path.GetFullPath(configPath))!) with { };
        var dev = LlamaModel.ResolveDevice(device);
        var dtype = dev.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        var report = new BenchReport<MemoryRow>("memory", Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(configPath)))!, machine);
        foreach (int context in contexts)
        {
            foreach (var options in caches)
            {
                using var cache = KvCache.Create(new KvShape(config.NumLayers, config.NumKeyValueHeads, config.HeadDim, dtype, dev), batch, options);
                FillSynthetic(cache, context, dtype, dev);
                report.Add(Row(options, context, cache));
            }
        }
        report.Finish(json);
    }

    /// <summary>
    /// Appends <paramref name="tokens"/> random K/V to every layer of every sequence, in prompt chunks of up to 1024 tokens
    /// (as a server prefills long prompts), compressing as it goes. No forward pass: bytes do not depend on values.
    /// </summary>
    internal static void FillSynthetic(KvCache cache, int tokens, ScalarType dtype, Device device, int chunk = 1024)
    {
        var s = cache.Shape;
        for (int start = 0; start < tokens; start += chunk)
        {
            using var scope = NewDisposeScope();
            int n = Math.Min(chunk, tokens - start);
            var k = randn([cache.Batch, s.KeyValueHeads, n, s.HeadDim], dtype: dtype, device: device);
            var v = randn([cache.Batch, s.KeyValueHeads, n, s.HeadDim], dtype: dtype, device: device);
            LayerSteps.Store(cache, k, v);
        }
    }

    private static MemoryRow Row(GearOptions options, int context, KvCache cache)
    {
        var stats = cache.Statistics;
        long elements = stats.FullPrecisionBytes / 2;
        return new MemoryRow(CacheConfigs.Name(options), CacheConfigs.Bits(options), context, stats.ResidentBytes, stats.FullPrecisionBytes,
            stats.Ratio, 8.0 * stats.ResidentBytes / elements, stats.CodeBytes, stats.ScaleZeroBytes, stats.OutlierBytes, stats.LowRankBytes, stats.BufferBytes);
    }
}
