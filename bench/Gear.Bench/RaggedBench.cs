using System.Diagnostics;
using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.Bench;

internal sealed record RaggedRow(string Cache, int Bits, string Device, int Sequences, string Lengths, long RaggedTokens, long UniformTokens,
    double RaggedMs, double UniformMs, double RaggedOverUniform);

/// <summary>
/// One layer's decode attention for a ragged batch — sequences whose lengths spread evenly over [min, max] — against a
/// uniform batch of as many sequences holding the same total of tokens (to within a page): the cost of raggedness to the
/// attention kernels.
/// Both batches are filled with synthetic K/V in 1,024-token prompt pieces, warmed up, then timed in alternation over decode
/// steps of one token per sequence (each step cut back afterwards, so every timed step sees the same lengths); medians.
/// </summary>
internal static class RaggedBench
{
    public static void Run(string shapeConfig, string device, int sequences, int minLength, int maxLength, int steps, IReadOnlyList<GearOptions> caches,
        ScalarType dtype, string machine, string? json)
    {
        var config = LlamaConfig.Load(Path.GetDirectoryName(Path.GetFullPath(shapeConfig))!);
        var dev = Gear.AI.Llama.Model.LlamaModel.ResolveDevice(device);
        var shape = new KvShape(1, config.NumKeyValueHeads, config.HeadDim, dtype, dev);
        // Lengths a whole number of pages plus half a page, so a timed step's token never fills a page (the flush, the
        // compression of a page, is the same for both batches and would only blur the comparison of the attention).
        int nb = caches.Count > 0 ? caches[0].BufferLength : 64;
        int Shaped(long length) => (int)(length / nb * nb + nb / 2);
        var ragged = Enumerable.Range(0, sequences).Select(i => Shaped(minLength + (long)(maxLength - minLength) * i / Math.Max(1, sequences - 1))).ToArray();
        long total = ragged.Sum(l => (long)l);
        var uniform = Enumerable.Repeat(Shaped(total / sequences), sequences).ToArray();
        for (int i = 0; total - uniform.Sum(l => (long)l) >= nb; i = (i + 1) % sequences)
            uniform[i] += nb;                                                                // the same total, give or take a page
        var report = new BenchReport<RaggedRow>("ragged", Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(shapeConfig)))!, machine);
        foreach (var options in caches)
        {
            using var raggedCache = KvCache.Create(shape, sequences, options);
            using var uniformCache = KvCache.Create(shape, sequences, options);
            Fill(raggedCache, ragged, dtype, dev);
            Fill(uniformCache, uniform, dtype, dev);
            using var q = randn([sequences, config.NumHeads, config.HeadDim], dtype, dev);
            using var kv = randn([sequences, config.NumKeyValueHeads, config.HeadDim], dtype, dev);
            double Step(KvCache cache, int[] lengths)
            {
                Synchronize(dev);
                long start = Stopwatch.GetTimestamp();
                using (var step = KvBatch.Begin([.. cache.Sequences.Select(s => new KvBatchItem(s, 1))]))
                {
                    step.Attend(0, q, kv, kv).Dispose();
                    step.Complete();
                }
                Synchronize(dev);
                double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                for (int s = 0; s < lengths.Length; s++)
                    cache.Sequences[s].Truncate(lengths[s]);
                return ms;
            }
            // Warm-up (JIT tiers, allocator), then the two batches in alternation so drift hits both alike.
            for (int i = 0; i < 10; i++)
            {
                Step(raggedCache, ragged);
                Step(uniformCache, uniform);
            }
            var raggedTimes = new List<double>();
            var uniformTimes = new List<double>();
            for (int i = 0; i < steps; i++)
            {
                raggedTimes.Add(Step(raggedCache, ragged));
                uniformTimes.Add(Step(uniformCache, uniform));
            }
            double raggedMs = raggedTimes.Order().ElementAt(steps / 2), uniformMs = uniformTimes.Order().ElementAt(steps / 2);
            report.Add(new RaggedRow(CacheConfigs.Name(options), CacheConfigs.Bits(options), dev.type == DeviceType.CUDA ? "cuda" : "cpu", sequences,
                $"{ragged.Min()}-{ragged.Max()}", total, uniform.Sum(l => (long)l), raggedMs, uniformMs, raggedMs / uniformMs));
        }
        report.Finish(json);
    }

    /// <summary>Each sequence filled to its own length with random K/V, 1,024 tokens a step (a prompt piece each).</summary>
    private static void Fill(KvCache cache, int[] lengths, ScalarType dtype, Device device)
    {
        var s = cache.Shape;
        for (int done = 0; done < lengths.Max(); done += 1024)
        {
            var items = cache.Sequences.Select((q, i) => (Sequence: q, N: Math.Min(1024, lengths[i] - done))).Where(x => x.N > 0).ToArray();
            using var step = KvBatch.Begin([.. items.Select(x => new KvBatchItem(x.Sequence, x.N))]);
            using var scope = NewDisposeScope();
            var k = randn([items.Sum(x => x.N), s.KeyValueHeads, s.HeadDim], dtype, device);
            step.Store(0, k, k);
            step.Complete();
        }
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA)
            cuda.synchronize();
    }
}
