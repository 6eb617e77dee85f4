using System.Diagnostics;
using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.Bench;

internal sealed record GpuProfileRow(string Cache, int Bits, int Batch, int Context, string Phase, double MsPerLayer, double MsPerStep, long HeldBytes, long ResidentBytes);

/// <summary>
/// Where one layer's decode attention spends its time at a serving batch: each phase of the fused CUDA path timed
/// with a device synchronization after it (so phases do not overlap), the whole call without synchronizations,
/// one buffer compression, and the Fp16 cache's attention at the same batch. Also the device memory a filled
/// layer holds against the bytes it counts.
/// </summary>
internal static class GpuProfile
{
    public static void Run(string shapeConfig, int batch, int context, IReadOnlyList<GearOptions> caches, ScalarType dtype, string machine, string? json)
    {
        var config = LlamaConfig.Load(Path.GetDirectoryName(Path.GetFullPath(shapeConfig))!);
        var device = torch.device("cuda");
        var shape = new KvShape(1, config.NumKeyValueHeads, config.HeadDim, dtype, device);
        var report = new BenchReport<GpuProfileRow>("gpu-profile", Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(shapeConfig)))!, machine);
        int layers = config.NumLayers;
        foreach (var options in caches)
        {
            cuda.synchronize();
            long before = DeviceMemory.UsedBytes();
            using var layer = KvCache.Create(shape, batch, options);
            int filled = context - 32;                                   // leaves 32 tokens in the buffer: no flush while timing
            for (int start = 0; start < filled; start += 256)
            {
                using var scope = NewDisposeScope();
                int n = Math.Min(256, filled - start);
                LayerSteps.Store(layer, randn([batch, shape.KeyValueHeads, n, shape.HeadDim], dtype, device), randn([batch, shape.KeyValueHeads, n, shape.HeadDim], dtype, device));
            }
            using var q = randn([batch, config.NumHeads, 1, shape.HeadDim], dtype, device);
            using var kv = randn([batch, shape.KeyValueHeads, 1, shape.HeadDim], dtype, device);
            // Attention of one new token per sequence; timed calls cut the sequences back first, so the length stays put.
            long length = layer.Length;
            void Attend()
            {
                layer.Truncate(length);
                LayerSteps.Attend(layer, q, kv, kv).Dispose();
            }
            cuda.synchronize();
            long held = DeviceMemory.UsedBytes() - before;
            string name = CacheConfigs.Name(options);
            int bits = CacheConfigs.Bits(options);
            void Add(string phase, double ms) =>
                report.Add(new GpuProfileRow(name, bits, batch, context, phase, ms, ms * layers, held, layer.ResidentBytes));

            // The whole call, no synchronization inside.
            for (int i = 0; i < 3; i++)
                Attend();
            var whole = new List<double>();
            for (int i = 0; i < 10; i++)
            {
                cuda.synchronize();
                long start = Stopwatch.GetTimestamp();
                Attend();
                cuda.synchronize();
                whole.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
            Add("attend", Median(whole));

            if (options.IsCompressed)
            {
                // Each phase of `run`, timed through the library's phase events (a synchronization after each), median of `times`.
                void Phases(string prefix, int times, Action prepare, Action run)
                {
                    var phases = new Dictionary<string, List<double>>();
                    long last = 0;
                    using (new Gear.Tests.Shared.PhaseListener(phase =>
                    {
                        cuda.synchronize();
                        long now = Stopwatch.GetTimestamp();
                        if (!phases.TryGetValue(phase, out var list))
                            phases[phase] = list = [];
                        list.Add(Stopwatch.GetElapsedTime(last, now).TotalMilliseconds);
                        last = Stopwatch.GetTimestamp();
                    }))
                    {
                        for (int i = 0; i < times; i++)
                        {
                            prepare();
                            cuda.synchronize();
                            last = Stopwatch.GetTimestamp();
                            run();
                        }
                    }
                    foreach (var (phase, list) in phases)
                        Add(prefix + phase, Median(list));
                }

                Phases("", 10, () => layer.Truncate(length), () => LayerSteps.Attend(layer, q, kv, kv).Dispose());

                // Steps that fill a page, as decode makes them (one token at a time: the decode rank): the first (cold: a new
                // arena for the decode rank, the process's first use of those kernels) and the median of the next five,
                // less the median step that does not.
                void FillBuffer()
                {
                    while (layer.Sequences[0].Buffered < options.BufferLength - 1)
                        LayerSteps.Store(layer, kv, kv);
                }
                void Flush() => LayerSteps.Store(layer, kv, kv);
                var flushes = new List<double>();
                for (int i = 0; i < 6; i++)
                {
                    FillBuffer();
                    cuda.synchronize();
                    long flushStart = Stopwatch.GetTimestamp();
                    Flush();
                    cuda.synchronize();
                    flushes.Add(Stopwatch.GetElapsedTime(flushStart).TotalMilliseconds);
                }
                Add("flush_first", flushes[0]);
                Add("flush", Median(flushes[1..]));

                // The same compressions phase by phase (a synchronization after each: they sum to more than `flush`).
                Phases("flush:", 5, FillBuffer, Flush);
            }
        }
        report.Finish(json);
    }

    private static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);
}
