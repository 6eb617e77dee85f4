using Gear.Tests.Shared;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama;
using Gear.AI.Llama.Model;
using Gear.AI.Llama.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.Bench;

internal sealed record GpuSelfTestRow(string Check, string Cache, int Bits, double Cpu, double Gpu, bool Passed, string Detail);

internal sealed record GpuAttendRow(string Cache, int Bits, int Context, string Path, double AttendMsPerLayer, double FlushMsPerLayer, double AmortizedMsPerLayer, double RatioVsFp16);

internal sealed record GpuLatencyRow(string Cache, int Bits, int Context, int Batch, string Step, double DecodeMsPerToken, double DecodeTokensPerS, double RatioVsFp16, long KvResidentBytes, long KvFp16Bytes,
    int Rounds, double[] RoundMs);

internal sealed record GpuThroughputRow(string Cache, int Bits, int Batch, double BatchRatioVsFp16, int PromptTokens, int GeneratedTokens, double GeneratedTokensPerS,
    double ThroughputRatioVsFp16, long KvResidentBytes, long PeakDeviceBytes, long BudgetBytes, double[] RunTokensPerS);

/// <summary>GPU correctness against the CPU, batch-1 decode latency, and serving throughput at equal memory.</summary>
internal static class GpuBench
{
    /// <summary>
    /// gear-tiny on CPU (float32) and CUDA (the given compute dtype): greedy continuation with the Fp16 cache
    /// equal for 32 tokens and perplexity within 1%; every compressed kind runs on CUDA too. Exit code 1 on failure.
    /// </summary>
    public static int SelfTest(string model, string textFile, string machine, string? json, ScalarType dtype, bool outOfMemoryOnly = false)
    {
        if (!cuda.is_available())
        {
            Console.Error.WriteLine("CUDA is not available");
            return 2;
        }
        string dir = ModelLocator.Resolve(model);
        using var cpu = LlamaRuntime.Load(dir);
        using var gpu = LlamaRuntime.Load(dir, new ModelLoadOptions { Device = "cuda", ComputeType = dtype });
        var ids = cpu.Tokenizer.Encode(File.ReadAllText(textFile)).Take(1024).Prepend(cpu.Tokenizer.BosId ?? 1).ToArray();
        var report = new BenchReport<GpuSelfTestRow>("gpu-selftest", cpu.ModelId, machine);
        bool ok = true;
        if (outOfMemoryOnly)
        {
            // The out-of-memory row with each decode step, the TorchSharp one first.
            ok &= OutOfMemoryCheck.Run(dir, dtype, report, launchLight: false);
            ok &= OutOfMemoryCheck.Run(dir, dtype, report);
            report.Finish(json);
            return ok ? 0 : 1;
        }

        var cpuGreedy = Greedy(cpu, ids[..64], GearOptions.Fp16, 32);
        var gpuGreedy = Greedy(gpu, ids[..64], GearOptions.Fp16, 32);
        int same = cpuGreedy.Zip(gpuGreedy).TakeWhile(p => p.First == p.Second).Count();
        ok &= same == 32;
        report.Add(new GpuSelfTestRow("greedy_32", "fp16", 16, 32, same, same == 32, $"first {same} of 32 tokens equal"));

        foreach (var options in CacheConfigs.Parse("kivi,gearl,gear", "2,4").Prepend(GearOptions.Fp16).DistinctBy(CacheConfigs.Label))
        {
            double pc = Perplexity(cpu, ids, options), pg = Perplexity(gpu, ids, options);
            bool pass = Math.Abs(pg / pc - 1) <= 0.01;
            ok &= pass;
            report.Add(new GpuSelfTestRow("perplexity_1024", CacheConfigs.Name(options), CacheConfigs.Bits(options), pc, pg, pass, $"{100 * (pg / pc - 1):+0.000;-0.000}%"));
        }
        ok &= ModelKernelChecks(dir, ids, report);
        ok &= LaunchLightChecks(dir, ids, report);
        ok &= FusedKernelChecks(report);
        ok &= OutOfMemoryCheck.Run(dir, dtype, report);
        report.Finish(json);
        Console.WriteLine(ok ? "gpu-selftest: PASS" : "gpu-selftest: FAIL");
        return ok ? 0 : 1;
    }

    /// <summary>The reference result: <paramref name="run"/> with a kernel switched off by <paramref name="use"/>, switched back on after.</summary>
    private static T WithoutKernel<T>(Action<bool> use, Func<T> run)
    {
        use(false);
        try { return run(); }
        finally { use(true); }
    }

    /// <summary>
    /// The model's CUDA kernels (RMSNorm, rotary embedding) against its tensor ops, in every compute dtype: gear-tiny's
    /// logits for a 292-token prompt and 8 single decode steps (Fp16 cache) with the kernels on and off. Both round to the
    /// dtype where the tensor ops round; only the float32 mean's summation order differs, which a half-precision rounding
    /// can turn into one unit in the last place. Largest logit difference ≤ 1e-4 (float32) or 2% (float16, bfloat16) of the largest logit.
    /// </summary>
    private static bool ModelKernelChecks(string dir, int[] ids, BenchReport<GpuSelfTestRow> report)
    {
        bool ok = true;
        foreach (var type in new[] { ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16 })
        {
            using var runtime = LlamaRuntime.Load(dir, new ModelLoadOptions { Device = "cuda", ComputeType = type });
            var model = runtime.Model;
            Tensor Logits()
            {
                using var cache = model.CreateCache(GearOptions.Fp16);
                using var scope = NewDisposeScope();
                var steps = new List<Tensor>();
                var prompt = tensor(ids[..292].Select(t => (long)t).ToArray(), device: model.Device).reshape(1, 292);
                steps.Add(model.Forward(prompt, 0, cache, lastOnly: true).reshape(-1));
                for (int i = 292; i < 300; i++)
                    steps.Add(model.Forward(tensor(new long[] { ids[i] }, device: model.Device).reshape(1, 1), i, cache, lastOnly: true).reshape(-1));
                return stack(steps).cpu().MoveToOuterDisposeScope();                       // [9, V]
            }
            using var fused = Logits();
            using var reference = WithoutKernel(on => model.UseCudaKernels = on, Logits);
            double relative = (fused - reference).abs().max().item<float>() / reference.abs().max().item<float>();
            long agree = fused.argmax(-1).eq(reference.argmax(-1)).sum().item<long>();
            bool pass = relative <= (type == ScalarType.Float32 ? 1e-4 : 0.02) && Gear.AI.Compression.Cuda.CudaKernels.UnavailableReason is null;
            ok &= pass;
            report.Add(new GpuSelfTestRow($"model_kernels_{type.ToString().ToLowerInvariant()}", "fp16", 16, 0, relative, pass,
                $"largest logit difference {relative:E2} of the largest logit; argmax equal at {agree} of 9 positions"));
        }
        return ok;
    }

    /// <summary>
    /// The launch-light decode step against the TorchSharp step (a second gear-tiny with it off), for float16 and bfloat16 and
    /// every cache kind: three sequences of different lengths prefilled, then 40 decode steps together (pages filled and
    /// compressed on the way), both fed the reference's greedy tokens. Every step's argmax equal (greedy equal) and logits
    /// within 2% of the largest (the residual adds happen inside the projections' float32 sums; half-precision rounding
    /// elsewhere is the tensor ops'). Fails too when the launch-light path did not run.
    /// </summary>
    private static bool LaunchLightChecks(string dir, int[] ids, BenchReport<GpuSelfTestRow> report)
    {
        bool ok = true;
        int[][] prompts = [ids[..100], ids[200..237], ids[400..464]];
        foreach (var type in new[] { ScalarType.Float16, ScalarType.BFloat16 })
        {
            using var light = LlamaRuntime.Load(dir, new ModelLoadOptions { Device = "cuda", ComputeType = type });
            using var reference = LlamaRuntime.Load(dir, new ModelLoadOptions { Device = "cuda", ComputeType = type });
            reference.Model.UseLaunchLightDecode = false;
            foreach (var options in CacheConfigs.Parse("kivi,gearl,gear", "2,4").Prepend(GearOptions.Fp16).DistinctBy(CacheConfigs.Label))
            {
                using var lightPool = light.Model.CreatePool(options);
                using var referencePool = reference.Model.CreatePool(options);
                var a = prompts.Select(_ => lightPool.CreateSequence()).ToArray();
                var b = prompts.Select(_ => referencePool.CreateSequence()).ToArray();
                double worst = 0;
                int agree = 0, steps = 40;
                try
                {
                    var feed = prompts;
                    for (int step = 0; step <= steps; step++)
                    {
                        using var scope = NewDisposeScope();
                        var x = Run(light.Model, a, feed).cpu();
                        var y = Run(reference.Model, b, feed).cpu();
                        worst = Math.Max(worst, (x - y).abs().max().item<float>() / y.abs().max().item<float>());
                        var next = y.argmax(1).data<long>().ToArray();
                        if (step > 0 && next.SequenceEqual(x.argmax(1).data<long>().ToArray()))
                            agree++;
                        feed = [.. next.Select(t => new[] { (int)t })];
                    }
                }
                finally
                {
                    foreach (var sequence in a.Concat(b))
                        sequence.Dispose();
                }
                string? unavailable = light.Model.LaunchLightUnavailableReason;
                bool pass = worst <= 0.02 && agree == steps && unavailable is null;
                ok &= pass;
                report.Add(new GpuSelfTestRow($"launch_light_{type.ToString().ToLowerInvariant()}", CacheConfigs.Name(options), CacheConfigs.Bits(options), 0, worst, pass,
                    unavailable ?? $"argmax equal at {agree} of {steps} decode steps of 3 sequences; largest logit difference {worst:E2} of the largest"));
            }
        }
        return ok;

        static Tensor Run(LlamaModel model, KvSequence[] sequences, int[][] feed)
        {
            using var batch = KvBatch.Begin([.. sequences.Select((s, i) => new KvBatchItem(s, feed[i].Length, feed[i]))]);
            return model.Forward(batch, tensor(feed.SelectMany(f => f).Select(t => (long)t).ToArray()));
        }
    }

    /// <summary>
    /// The fused CUDA decode kernels against the TorchSharp path of the same cache (float32, so only summation order
    /// differs): a prompt, then single and double decode steps across several compressed blocks, for every kind at
    /// 2 and 4 bits, GQA (3 query rows per head) and MHA shapes, prompts of one and of several outlier tiles.
    /// Relative error of every output ≤ 1e-4.
    /// </summary>
    private static bool FusedKernelChecks(BenchReport<GpuSelfTestRow> report)
    {
        bool ok = true;
        var device = new Device(DeviceType.CUDA, 0);
        foreach (var (n, r) in new[] { (64, 2), (1984, 4), (128, 64) })
        {
            // The Gram-Schmidt kernel that replaces linalg.qr on CUDA: orthonormal columns spanning the input's columns.
            using var scope = NewDisposeScope();
            var y = randn([2, 32, n, r], generator: new Generator(3, CPU)).to(device);
            var q = Gear.AI.Compression.Cuda.CudaKernels.Orthonormalize(y);
            double orthogonality = q is null ? double.NaN : (q.transpose(-1, -2).matmul(q) - eye(r, device: device)).abs().max().item<float>();
            double span = q is null ? double.NaN : ((q.matmul(q.transpose(-1, -2).matmul(y)) - y).norm() / y.norm()).item<float>();
            bool pass = orthogonality <= 1e-4 && span <= 1e-4;
            ok &= pass;
            report.Add(new GpuSelfTestRow($"orthonormalize_n{n}_r{r}", "-", 0, orthogonality, span, pass, $"max |QᵀQ − I| {orthogonality:E2}, ‖QQᵀY − Y‖/‖Y‖ {span:E2}"));
        }
        // The kernels against the tensor ops they replace, both on the device: the checks the unit tests run on the CPU
        // (tests/Shared/KernelChecks.cs, one list of cases).
        foreach (var (n, d, rank) in KernelChecks.PowerIterationCases())
            ok &= Add(KernelChecks.PowerIteration(n, d, rank, device));
        foreach (var (axis, bits, n, d, g) in KernelChecks.QuantizationCases())
            ok &= Add(KernelChecks.Quantization(axis, bits, n, d, g, device));
        foreach (var (options, axis, n, d, half) in KernelChecks.CompressionCases())
            ok &= Add(KernelChecks.Compression(options, axis, n, d, half, device));

        bool Add(KernelChecks.Result r)
        {
            bool pass = r.Passed && Gear.AI.Compression.Cuda.CudaKernels.UnavailableReason is null;
            report.Add(new GpuSelfTestRow(r.Name, r.Cache, r.Bits, r.Reference, r.Measured, pass, r.Detail));
            return pass;
        }

        var common = CacheConfigs.Parse("kivi,gearl,gear", "2,4").Where(o => o.IsCompressed).Prepend(GearOptions.Fp16).ToArray();
        // Other code widths and 32-wide groups (narrower value pieces, more key groups per span) on a GQA shape.
        var rare = CacheConfigs.Parse("gear", "1,8").Where(o => o.IsCompressed).Append(new GearOptions { Kind = CacheKind.Gear, Bits = 2, GroupSize = 32 }).ToArray();
        foreach (var (batch, heads, headDim, groups, prompt, kinds) in new[] { (2, 2, 64, 3, 300, common), (1, 4, 128, 1, 2500, common), (1, 2, 128, 4, 700, rare) })
            foreach (var options in kinds)
            {
                var shape = new KvShape(1, heads, headDim, ScalarType.Float32, device);
                using var fused = KvCache.Create(shape, batch, options);
                using var reference = KvCache.Create(shape, batch, options, null, referenceAttention: true);
                using var generator = new Generator(7, CPU);
                double worst = 0;
                int steps = 0;
                foreach (int n in new[] { prompt }.Concat(Enumerable.Range(0, 100).Select(i => 1 + i % 2)))
                {
                    using var scope = NewDisposeScope();
                    Tensor Kv() => (randn([batch, heads, n, headDim], generator: generator)
                                    + 12f * (rand([batch, heads, n, headDim], generator: generator) < 0.01f).to(ScalarType.Float32)).to(device);
                    var k = Kv();
                    var v = Kv();
                    var q = randn([batch, heads * groups, n, headDim], generator: generator).to(device);
                    var expected = LayerSteps.Attend(reference, q, k, v);
                    var actual = LayerSteps.Attend(fused, q, k, v);
                    var last = Math.Min(n, 2);                                                // prefill-sized rows take the tensor path in both
                    worst = Math.Max(worst, ((actual.narrow(2, n - last, last) - expected.narrow(2, n - last, last)).norm() / expected.narrow(2, n - last, last).norm()).item<float>());
                    steps++;
                }
                string? unavailable = Gear.AI.Compression.Cuda.CudaKernels.UnavailableReason
                                      ?? (fused.Pool.AttentionPath.StartsWith("fused", StringComparison.Ordinal) ? null : $"attention by {fused.Pool.AttentionPath}");
                bool pass = worst <= 1e-4 && unavailable is null;
                ok &= pass;
                report.Add(new GpuSelfTestRow($"fused_kernel_b{batch}_h{heads}_d{headDim}_g{groups}_gs{options.GroupSize}", CacheConfigs.Name(options), CacheConfigs.Bits(options), 0, worst, pass,
                    unavailable ?? $"{steps} steps, {fused.Sequences[0].Pages.Count} pages, worst relative error {worst:E2}"));
            }
        ok &= RaggedChecks(report, device, common);
        return ok;
    }

    /// <summary>
    /// A ragged step on the device — sequences of 1, 63, 64, 65, 700 and 2,000 tokens, some decoding (the fused kernels) and
    /// some prefilling (the tensor ops) — against each sequence stepped alone with the tensor reference: outputs within 1e-4
    /// (float32, so only summation order differs), for the Fp16 cache and every kind at 2 and 4 bits.
    /// </summary>
    private static bool RaggedChecks(BenchReport<GpuSelfTestRow> report, Device device, IReadOnlyList<GearOptions> kinds)
    {
        bool ok = true;
        (int History, int New)[] mix = [(0, 1), (62, 1), (0, 64), (64, 1), (600, 100), (1999, 1)];
        var shape = new KvShape(1, 2, 128, ScalarType.Float32, device);
        foreach (var options in kinds)
        {
            using var ragged = KvCache.Create(shape, mix.Length, options);
            using var reference = KvCache.Create(shape, mix.Length, options, null, referenceAttention: true);
            using var generator = new Generator(17, CPU);
            double worst = 0;
            var steps = new List<(Tensor Q, Tensor K, Tensor V)>();
            for (int i = 0; i < mix.Length; i++)
            {
                var (history, n) = mix[i];
                Tensor Kv(int length) => (randn([2, length, 128], generator: generator) + 12f * (rand([2, length, 128], generator: generator) < 0.01f).to(ScalarType.Float32)).to(device);
                var k = Kv(history + n).DetachFromDisposeScope();
                var v = Kv(history + n).DetachFromDisposeScope();
                if (history > 0)
                    foreach (var cache in new[] { ragged, reference })
                    {
                        using var step = KvBatch.Begin([new KvBatchItem(cache.Sequences[i], history)]);
                        using var scope = NewDisposeScope();
                        step.Store(0, k.narrow(1, 0, history).transpose(0, 1), v.narrow(1, 0, history).transpose(0, 1));
                        step.Complete();
                    }
                steps.Add((randn([n, 4, 128], generator: generator).to(device).DetachFromDisposeScope(),
                           k.narrow(1, history, n).transpose(0, 1).contiguous().DetachFromDisposeScope(), v.narrow(1, history, n).transpose(0, 1).contiguous().DetachFromDisposeScope()));
                k.Dispose();
                v.Dispose();
            }
            using (var scope = NewDisposeScope())
            {
                using var step = KvBatch.Begin([.. mix.Select((m, i) => new KvBatchItem(ragged.Sequences[i], m.New))]);
                var together = step.Attend(0, cat(steps.Select(x => x.Q).ToArray(), 0), cat(steps.Select(x => x.K).ToArray(), 0), cat(steps.Select(x => x.V).ToArray(), 0));
                step.Complete();
                for (int i = 0; i < mix.Length; i++)
                {
                    using var alone = KvBatch.Begin([new KvBatchItem(reference.Sequences[i], mix[i].New)]);
                    var expected = alone.Attend(0, steps[i].Q, steps[i].K, steps[i].V);
                    alone.Complete();
                    var actual = together.narrow(0, step.OffsetOf(i), mix[i].New);
                    worst = Math.Max(worst, ((actual - expected).norm() / expected.norm()).item<float>());
                }
            }
            foreach (var (q, k, v) in steps)
            {
                q.Dispose(); k.Dispose(); v.Dispose();
            }
            string? unavailable = ragged.Pool.AttentionPath.StartsWith("fused", StringComparison.Ordinal) ? null : $"attention by {ragged.Pool.AttentionPath}";
            bool pass = worst <= 1e-4 && unavailable is null;
            ok &= pass;
            report.Add(new GpuSelfTestRow("ragged_step_1_63_64_65_700_2000", CacheConfigs.Name(options), CacheConfigs.Bits(options), 0, worst, pass,
                unavailable ?? $"largest relative error against each sequence alone (tensor reference) {worst:E2}"));
        }
        return ok;
    }

    /// <summary>
    /// Decode attention of one layer (batch 1, the shape's heads, bf16 queries) after a synthetic prompt, over one
    /// buffer period of 64 steps: median Append + Attend ms, the extra ms of the step that compresses the buffer,
    /// and the mean over the period — for the Fp16 cache and each compressed kind with the fused kernels and with
    /// the TorchSharp path. Isolates the cache from the rest of the model.
    /// </summary>
    public static void Attend(string shapeConfig, IReadOnlyList<int> contexts, IReadOnlyList<GearOptions> caches, string machine, string? json)
    {
        var config = LlamaConfig.Load(Path.GetDirectoryName(Path.GetFullPath(shapeConfig))!);
        var device = torch.device("cuda");
        var report = new BenchReport<GpuAttendRow>("gpu-attend", ShapeName(shapeConfig), machine);
        var shape = new KvShape(1, config.NumKeyValueHeads, config.HeadDim, ScalarType.BFloat16, device);
        foreach (int context in contexts)
        {
            double fp16 = 0;
            foreach (var options in caches)
                foreach (bool fused in options.IsCompressed ? new[] { true, false } : [true])
                {
                    using var cache = KvCache.Create(shape, 1, options, null, referenceAttention: !fused);
                    for (int start = 0; start < context; start += 1024)
                    {
                        using var scope = NewDisposeScope();
                        int n = Math.Min(1024, context - start);
                        LayerSteps.Store(cache, randn([1, shape.KeyValueHeads, n, shape.HeadDim], ScalarType.BFloat16, device), randn([1, shape.KeyValueHeads, n, shape.HeadDim], ScalarType.BFloat16, device));
                    }
                    using var q = randn([1, config.NumHeads, 1, shape.HeadDim], ScalarType.BFloat16, device);
                    using var kv = randn([1, shape.KeyValueHeads, 1, shape.HeadDim], ScalarType.BFloat16, device);
                    // One buffer period: 63 steps that only attend, the 64th also compresses the full buffer.
                    var times = new List<double>();
                    for (int i = 0; i < 64 + 3; i++)
                    {
                        cuda.synchronize();
                        long start = Stopwatch.GetTimestamp();
                        LayerSteps.Attend(cache, q, kv, kv).Dispose();
                        cuda.synchronize();
                        if (i >= 3)
                            times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                    }
                    double attend = times.Take(63).Order().ElementAt(31), flush = Math.Max(0, times[63] - attend), amortized = times.Average();
                    if (!options.IsCompressed)
                        fp16 = amortized;
                    report.Add(new GpuAttendRow(CacheConfigs.Name(options), CacheConfigs.Bits(options), context,
                        !options.IsCompressed ? "dense" : fused ? cache.Pool.AttentionPath : "tensor-reference",
                        attend, flush, amortized, fp16 == 0 ? 0 : fp16 / amortized));
                }
        }
        report.Finish(json);
    }

    private static int[] Greedy(LlamaRuntime runtime, int[] prompt, GearOptions options, int n)
    {
        using var cache = runtime.Model.CreateCache(options);
        var result = new List<int>();
        var updates = runtime.Generator.Generate(prompt, cache.Sequences[0], Gear.AI.Llama.Generation.SamplingOptions.Greedy with { MaxNewTokens = n, StopTokenIds = [] });
        foreach (var u in updates)
            if (u.TokenId is int id)
                result.Add(id);
        return [.. result];
    }

    /// <summary>Perplexity with a 256-token prefill and the rest fed one token at a time.</summary>
    private static double Perplexity(LlamaRuntime runtime, int[] ids, GearOptions options)
    {
        var model = runtime.Model;
        using var cache = model.CreateCache(options);
        double nll = 0;
        int count = 0;
        const int prompt = 256;
        Tensor Feed(int[] tokens, long position)
        {
            using var scope = NewDisposeScope();
            var input = tensor(tokens.Select(t => (long)t).ToArray(), device: model.Device).reshape(1, tokens.Length);
            return model.Forward(input, position, cache, lastOnly: true).reshape(-1).log_softmax(0).cpu().MoveToOuterDisposeScope();
        }
        var logProbs = Feed(ids[..prompt], 0);
        for (int i = prompt; i < ids.Length; i++)
        {
            nll -= logProbs[ids[i]].item<float>();
            count++;
            logProbs.Dispose();
            if (i + 1 < ids.Length)
                logProbs = Feed([ids[i]], i);
            else
                logProbs = empty(0);
        }
        logProbs.Dispose();
        return Math.Exp(nll / count);
    }

    /// <summary>
    /// Batch-1 (or B) decode time per token at each context, caches filled with synthetic K/V; random weights.
    /// At batch 1 a step is bound by host calls and the host's jitter moves single runs by ±20%, so every cache kind
    /// is filled once and then timed in <paramref name="rounds"/> interleaved rounds (each kind once per round); the
    /// median round is reported, and the ratio is of medians.
    /// </summary>
    public static void Latency(string shapeConfig, IReadOnlyList<int> contexts, int batch, int steps, int rounds, IReadOnlyList<GearOptions> caches, ScalarType dtype, string machine, string? json,
        IReadOnlyList<bool>? launchLight = null)
    {
        var config = LlamaConfig.Load(Path.GetDirectoryName(Path.GetFullPath(shapeConfig))!);
        var device = torch.device("cuda");
        using var model = LlamaModel.FromWeights(config, LlamaWeights.Random(config, device, dtype), device, dtype);
        var report = new BenchReport<GpuLatencyRow>("gpu-latency", ShapeName(shapeConfig), machine);
        WarmUp(model, dtype, device);
        launchLight ??= [true];
        foreach (int context in contexts)
        {
            var filled = new List<KvCache>();
            try
            {
                foreach (var options in caches)
                {
                    var cache = model.CreateCache(options, batch);
                    filled.Add(cache);
                    // Every round's steps of every decode path end at the context.
                    MemoryBench.FillSynthetic(cache, context - launchLight.Count * rounds * (steps + 2), dtype, device);
                }
                // Rounds interleave the kinds and the decode paths, so drift on the machine touches them alike.
                var times = launchLight.Select(_ => filled.Select(_ => new List<double>()).ToArray()).ToArray();
                for (int round = 0; round < rounds; round++)
                    for (int p = 0; p < launchLight.Count; p++)
                        for (int i = 0; i < filled.Count; i++)
                        {
                            model.UseLaunchLightDecode = launchLight[p];
                            times[p][i].Add(Decode(model, filled[i], batch, steps, profile: true));
                        }
                model.UseLaunchLightDecode = true;
                for (int p = 0; p < launchLight.Count; p++)
                {
                    string step = launchLight[p] ? model.LaunchLightUnavailableReason is null ? "launch-light" : "tensor (launch-light unavailable)" : "tensor";
                    double fp16Ms = 0;
                    for (int i = 0; i < filled.Count; i++)
                    {
                        double ms = times[p][i].Order().ElementAt(rounds / 2);
                        if (!caches[i].IsCompressed)
                            fp16Ms = ms;
                        report.Add(new GpuLatencyRow(CacheConfigs.Name(caches[i]), CacheConfigs.Bits(caches[i]), context, batch, step, ms, 1000.0 * batch / ms,
                            fp16Ms / ms, filled[i].ResidentBytes, filled[i].FullPrecisionBytes, rounds, [.. times[p][i].Select(t => Math.Round(t, 3))]));
                    }
                }
            }
            finally
            {
                foreach (var cache in filled)
                    cache.Dispose();
            }
        }
        if (model.LaunchLightUnavailableReason is { } why)
            Console.Error.WriteLine($"gpu-latency: the launch-light step did not run: {why}");
        report.Finish(json);
    }

    /// <summary>
    /// Serving throughput at equal memory: for each cache kind the largest batch whose weights, caches
    /// (prompt + generated tokens) and activations fit the budget, then generated tokens/s at that batch.
    /// Per-sequence cache bytes are measured on a real cache of one sequence, not estimated. The Fp16 baseline runs
    /// first and again last (host jitter moves a run by several percent); its rate is the mean of the two.
    /// </summary>
    public static void Throughput(string shapeConfig, long budgetBytes, int prompt, int generate, int maxBatch, IReadOnlyList<GearOptions> caches, ScalarType dtype, string machine, string? json,
        int prefillChunk = DefaultPrefillChunk, bool isolate = true)
    {
        var runs = caches.ToList();
        if (runs.Any(o => !o.IsCompressed) && runs.Any(o => o.IsCompressed))
            runs.Add(runs.First(o => !o.IsCompressed));
        var report = new BenchReport<GpuThroughputRow>("gpu-throughput", ShapeName(shapeConfig), machine);
        var measured = new Dictionary<GearOptions, (int Batch, List<double> Rates, long Resident, long Peak)>();
        void Record(GearOptions options, int batch, double rate, long resident, long peak)
        {
            // A repeated kind keeps its first run's batch, bytes and peak.
            if (!measured.TryGetValue(options, out var entry))
                measured[options] = entry = (batch, [], resident, peak);
            entry.Rates.Add(rate);
        }
        if (isolate && runs.Count > 1)
            foreach (var options in runs)
            {
                var (batch, rate, resident, peak) = ThroughputInChild(shapeConfig, budgetBytes, prompt, generate, maxBatch, options, dtype, prefillChunk);
                Record(options, batch, rate, resident, peak);
            }
        else
            MeasureThroughput(shapeConfig, budgetBytes, prompt, generate, maxBatch, runs, dtype, prefillChunk, Record);
        var baseline = measured.FirstOrDefault(m => !m.Key.IsCompressed).Value;
        double fp16Rate = baseline.Rates?.Average() ?? 0;
        foreach (var (options, (batch, rates, resident, peak)) in measured)
        {
            double rate = rates.Average();
            report.Add(new GpuThroughputRow(CacheConfigs.Name(options), CacheConfigs.Bits(options), batch, baseline.Batch == 0 ? 0 : (double)batch / baseline.Batch,
                prompt, generate, rate, fp16Rate == 0 ? 0 : rate / fp16Rate, resident, peak, budgetBytes, [.. rates.Select(r => Math.Round(r, 2))]));
        }
        report.Finish(json);
    }

    /// <summary>
    /// One kind's run in a process of its own (this executable, <c>gpu-throughput --only --in-process</c>): each kind starts
    /// from a fresh managed heap, CUDA caching allocator and NVML high-water mark. In one process, the Gear run after the
    /// Fp16 one had a single step of 180–365 ms (37 ms otherwise): a blocking garbage collection of up to 390 ms
    /// (<see cref="GC.GetTotalPauseDuration"/>) of what the Fp16 run left, 1.5–3% of Gear's rate. A server runs one kind,
    /// not both in turn.
    /// </summary>
    private static (int Batch, double Rate, long Resident, long Peak) ThroughputInChild(string shapeConfig, long budgetBytes, int prompt, int generate, int maxBatch, GearOptions options, ScalarType dtype, int prefillChunk)
    {
        string json = Path.Combine(Path.GetTempPath(), $"gear-throughput-{Environment.ProcessId}-{Guid.NewGuid():N}.json");
        var start = SelfStart();
        foreach (var arg in new[]
                 {
                     "gpu-throughput", "--shape", Path.GetFullPath(shapeConfig), "--budget-gib", (budgetBytes / (double)(1L << 30)).ToString("R", CultureInfo.InvariantCulture),
                     "--prompt", $"{prompt}", "--generate", $"{generate}", "--max-batch", $"{maxBatch}", "--caches", CacheConfigs.Name(options),
                     "--bits", $"{CacheConfigs.Bits(options)}", "--only", "--in-process", "--dtype", DTypeNames.Name(dtype), "--prefill-chunk", $"{prefillChunk}", "--json", json,
                 })
            start.ArgumentList.Add(arg);
        Console.Error.WriteLine($"gpu-throughput: {CacheConfigs.Label(options)} in a process of its own");
        using var child = Process.Start(start)!;
        child.OutputDataReceived += (_, e) => { if (e.Data is not null) Console.Error.WriteLine(e.Data); };  // its table: stdout is this run's
        child.BeginOutputReadLine();
        child.WaitForExit();
        try
        {
            if (child.ExitCode != 0 || !File.Exists(json))
                throw new InvalidOperationException($"The {CacheConfigs.Label(options)} throughput run failed (exit code {child.ExitCode}); its output is above. --in-process runs every kind in this process.");
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var row = doc.RootElement.GetProperty("rows")[0];
            return (row.GetProperty("batch").GetInt32(), row.GetProperty("generated_tokens_per_s").GetDouble(),
                row.GetProperty("kv_resident_bytes").GetInt64(), row.GetProperty("peak_device_bytes").GetInt64());
        }
        finally
        {
            File.Delete(json);
        }
    }

    /// <summary>How to start this bench again: its apphost, or the dotnet host with this assembly (<c>dotnet Gear.Bench.dll</c>).</summary>
    private static ProcessStartInfo SelfStart()
    {
        string host = Environment.ProcessPath ?? throw new InvalidOperationException("The bench's own executable path is unknown; pass --in-process.");
        var start = new ProcessStartInfo(host) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(host).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
            start.ArgumentList.Add(typeof(GpuBench).Assembly.Location);
        return start;
    }

    private static void MeasureThroughput(string shapeConfig, long budgetBytes, int prompt, int generate, int maxBatch, List<GearOptions> runs, ScalarType dtype, int prefillChunk,
        Action<GearOptions, int, double, long, long> record)
    {
        var config = LlamaConfig.Load(Path.GetDirectoryName(Path.GetFullPath(shapeConfig))!);
        var device = torch.device("cuda");
        using var model = LlamaModel.FromWeights(config, LlamaWeights.Random(config, device, dtype), device, dtype);
        long weights = model.Weights.Bytes;
        WarmUp(model, dtype, device);
        foreach (var options in runs)
        {
            long perSequence;
            int batch;
            KvCache cache;
            using (var probe = model.CreateCache(options, 1))
            {
                // As the run below fills it: the prompt in pieces, then the decode steps' tokens one at a time (decode blocks).
                MemoryBench.FillSynthetic(probe, prompt - 2, dtype, device, prefillChunk);
                MemoryBench.FillSynthetic(probe, generate + 2, dtype, device, chunk: 1);
                perSequence = probe.ResidentBytes;
                // Activations and transient dequantized K/V of one layer for the batch: reserve a quarter of what is left.
                long room = (long)((budgetBytes - weights) * 0.75);
                batch = (int)Math.Clamp(room / perSequence, 1, maxBatch);
                cuda.synchronize();
                cache = model.CreateCache(options, batch);
                // Every kind gets the pages its sequences will hold at their peak, as the engine sets aside for a request of
                // known prompt and output (growth would hold up to half again as much).
                cache.Pool.Reserve(Enumerable.Repeat(cache.Pool.PlanFor(prompt - 2, prefillChunk, generate + 2), batch));
            }
            using var _ = cache;
            MemoryBench.FillSynthetic(cache, prompt - 2, dtype, device, prefillChunk); // two warm-up steps, then the generated tokens
            double ms = Decode(model, cache, batch, generate, profile: true);
            // NVML's figure is the process's high-water mark so far (in one process, a later kind's includes the earlier ones').
            record(options, batch, 1000.0 * batch / ms, cache.ResidentBytes, DeviceMemory.UsedBytes());
        }
    }

    /// <summary>
    /// Prompt tokens appended (and compressed, each piece a prompt block) at a time, in the probe that sizes the batch and
    /// in the run alike: the block layout decides the bytes (outliers per block, low-rank blocks), so the two must match.
    /// (Until this revision the probe took the whole prompt and generated tokens in 1,024-token pieces: the batch was
    /// sized on ~4% fewer bytes than the run held.) <c>--prefill-chunk</c> sets it.
    /// </summary>
    public const int DefaultPrefillChunk = 256;

    /// <summary>Decodes <paramref name="steps"/> tokens for the whole batch; returns ms per step.</summary>
    private static double Decode(LlamaModel model, KvCache cache, int batch, int steps, bool profile = false)
    {
        long position = cache.Length;
        var next = zeros([batch, 1], dtype: ScalarType.Int64, device: model.Device).DetachFromDisposeScope();
        // Two warm-up steps, then timed steps; the argmax stays on the device, as in serving.
        var clock = new Stopwatch();
        using var timeline = StepTimes ? new AI.Compression.Cuda.CudaDriver.Timeline() : null;
        var hostMs = new List<double>();
        var gcPauseMs = new List<double>();
        for (int i = 0; i < steps + 2; i++)
        {
            if (i == 2)
            {
                cuda.synchronize();
                clock.Start();
            }
            if (i >= 2)
            {
                timeline?.Mark();
                hostMs.Add(clock.Elapsed.TotalMilliseconds);
                gcPauseMs.Add(GC.GetTotalPauseDuration().TotalMilliseconds);
            }
            // GEAR_PROFILE_STEP=1: the first timed step is the region a profiler run with collection off captures
            // (e.g. ncu --profile-from-start off), so one decode step's kernels can be listed with their times.
            bool profiled = i == 2 + ProfileAt && profile && ProfileStep;
            if (profiled)
                AI.Compression.Cuda.CudaDriver.Profiler(true);
            using var scope = NewDisposeScope();
            var logits = model.Forward(next, position++, cache, lastOnly: true);                 // [B, 1, V]
            var chosen = logits.argmax(-1).DetachFromDisposeScope();                             // [B, 1]
            next.Dispose();
            next = chosen;
            if (profiled)
            {
                cuda.synchronize();
                AI.Compression.Cuda.CudaDriver.Profiler(false);
            }
        }
        timeline?.Mark();
        cuda.synchronize();
        next.Dispose();
        if (timeline is not null)
            ReportSteps(batch, cache.Length, timeline.Intervals(), hostMs, timeline.Pending, gcPauseMs);
        return clock.Elapsed.TotalMilliseconds / steps;
    }

    /// <summary>
    /// GEAR_STEP_TIMES=1: each timed step's device time (between events recorded on the stream as the host queued the
    /// steps) and the host's queueing time, to stderr: the median, the slowest steps, and what the steps above the
    /// median add to the mean.
    /// </summary>
    private static void ReportSteps(int batch, long length, double[] device, List<double> host, List<int> pending, List<double> gcPause)
    {
        var sorted = device.Order().ToArray();
        double median = sorted[sorted.Length / 2], mean = device.Average();
        var hostSteps = host.Zip(host.Skip(1), (a, b) => b - a).ToArray();
        Console.Error.WriteLine($"steps batch={batch} length={length}: device median {median:F3} ms, mean {mean:F3}, " +
            $"excess over median {mean - median:F3} ms/step; host median {hostSteps.Order().ElementAt(hostSteps.Length / 2):F3} ms; " +
            $"steps queued ahead: median {pending.Order().ElementAt(pending.Count / 2)}, max {pending.Max()}");
        foreach (var i in Enumerable.Range(0, device.Length).OrderByDescending(i => device[i]).Take(10).Order())
            Console.Error.WriteLine($"  step {i}: device {device[i]:F3} ms, host {(i < hostSteps.Length ? hostSteps[i] : double.NaN):F3} ms, queued ahead {pending[i]}, GC pause {(i + 1 < gcPause.Count ? gcPause[i + 1] - gcPause[i] : double.NaN):F3} ms");
    }

    private static readonly bool StepTimes = Environment.GetEnvironmentVariable("GEAR_STEP_TIMES") == "1";

    private static readonly bool ProfileStep = Environment.GetEnvironmentVariable("GEAR_PROFILE_STEP") == "1";

    /// <summary>GEAR_PROFILE_AT=n: the profiled step is the n-th timed one (0, the default: the first), e.g. one that compresses a block.</summary>
    private static readonly int ProfileAt = int.TryParse(Environment.GetEnvironmentVariable("GEAR_PROFILE_AT"), out int at) ? at : 0;

    /// <summary>A few decode steps on a short cache of every path, so the first measured row does not pay for CUDA/cuBLAS start-up.</summary>
    private static void WarmUp(LlamaModel model, ScalarType dtype, Device device)
    {
        foreach (var options in new[] { GearOptions.Fp16, new GearOptions { Kind = CacheKind.Gear, Bits = 2 } })
        {
            using var cache = model.CreateCache(options, 1);
            MemoryBench.FillSynthetic(cache, 256, dtype, device);
            Decode(model, cache, 1, 4);
        }
    }

    private static string ShapeName(string shapeConfig) => Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(shapeConfig)))!;
}
