// Gear.Bench — quality, memory and speed of the GEAR KV cache against the FP16 cache (and KIVI),
// measured in the same process. Each command prints a table and, with --json FILE, writes
// {command, model, machine, date, rows}.
using System.CommandLine;
using Gear.AI.Llama;
using Gear.AI.Llama.Model;
using Gear.Bench;

Option<string> ModelOption() => new("--model") { Description = "Model directory or name under models/", DefaultValueFactory = _ => "gear-tiny" };
Option<string> TextOption() => new("--text") { Description = "Held-out text file", DefaultValueFactory = _ => DefaultText() };
Option<string> CachesOption() => new("--caches") { Description = "Cache kinds besides fp16", DefaultValueFactory = _ => "kivi,gearl,gear" };
Option<string> BitsOption() => new("--bits") { Description = "Bit widths", DefaultValueFactory = _ => "2,4" };
Option<string> DeviceOption() => new("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
Option<string?> JsonOption() => new("--json") { Description = "Write the rows as JSON to this file" };
Option<string> ContextsOption(string defaults) => new("--contexts") { Description = "Comma-separated context lengths", DefaultValueFactory = _ => defaults };

static string DefaultText()
{
    string models = ModelLocator.Resolve("gear-tiny");
    return Path.Combine(models, "..", "..", "bench", "data", "doyle-hound-of-the-baskervilles.txt");
}

static int[] Ints(string csv) => csv.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();

static LlamaRuntime Load(string model, string device) =>
    LlamaRuntime.Load(ModelLocator.Resolve(model), new ModelLoadOptions { Device = device });

var root = new RootCommand("Gear.AI benchmarks: the GEAR cache against FP16 and KIVI, same process, same prompt.");

{
    var model = ModelOption(); var text = TextOption(); var caches = CachesOption(); var bits = BitsOption(); var device = DeviceOption(); var json = JsonOption();
    var context = new Option<int>("--context") { DefaultValueFactory = _ => 2048, Description = "Window length C (scored: C − 64)" };
    var windows = new Option<int>("--windows") { DefaultValueFactory = _ => 4, Description = "Windows per cache kind" };
    var prompt = new Option<int>("--prompt-tokens") { DefaultValueFactory = _ => 512, Description = "Tokens prefilled before one-at-a-time feeding" };
    var seed = new Option<long>("--seed") { DefaultValueFactory = _ => new Gear.AI.Compression.GearOptions().Seed, Description = "Seed of the low-rank solver's random projections (its run-to-run spread)" };
    var command = new Command("quality", "Perplexity and greedy agreement per cache kind") { model, text, context, windows, prompt, caches, bits, seed, device, json };
    command.SetAction(p =>
    {
        using var runtime = Load(p.GetValue(model)!, p.GetValue(device)!);
        QualityBench.Run(runtime, p.GetValue(text)!, p.GetValue(context), p.GetValue(windows), p.GetValue(prompt),
            [.. CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!).Select(o => o with { Seed = p.GetValue(seed) })], Machine.Describe(p.GetValue(device)!), p.GetValue(json));
    });
    root.Add(command);
}
{
    var model = ModelOption(); var text = TextOption(); var caches = CachesOption(); var bits = BitsOption(); var device = DeviceOption(); var json = JsonOption();
    var contexts = ContextsOption("512,1024,2048");
    var shape = new Option<string?>("--shape") { Description = "config.json of a model shape (no weights): synthetic K/V of that shape" };
    var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 1, Description = "Sequences (shape mode)" };
    var command = new Command("memory", "Resident KV bytes vs FP16 per cache kind") { model, text, contexts, shape, batch, caches, bits, device, json };
    command.SetAction(p =>
    {
        var configs = CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!);
        string machine = Machine.Describe(p.GetValue(device)!);
        if (p.GetValue(shape) is { } shapeFile)
        {
            MemoryBench.RunShape(shapeFile, p.GetValue(batch), Ints(p.GetValue(contexts)!), configs, p.GetValue(device)!, machine, p.GetValue(json));
            return;
        }
        using var runtime = Load(p.GetValue(model)!, p.GetValue(device)!);
        MemoryBench.RunModel(runtime, p.GetValue(text)!, Ints(p.GetValue(contexts)!), configs, machine, p.GetValue(json));
    });
    root.Add(command);
}
{
    var model = ModelOption(); var text = TextOption(); var caches = CachesOption(); var bits = BitsOption(); var device = DeviceOption(); var json = JsonOption();
    var contexts = ContextsOption("256,2048");
    var decode = new Option<int>("--decode-tokens") { DefaultValueFactory = _ => 64, Description = "Decode steps timed per measurement" };
    var repeats = new Option<int>("--repeats") { DefaultValueFactory = _ => 3, Description = "Measurements per configuration (median kept)" };
    var keep = new Option<bool>("--keep-freed-host-memory") { DefaultValueFactory = _ => true, Description = "ModelLoadOptions.KeepFreedHostMemory (false: glibc's allocator as it comes)" };
    var command = new Command("speed", "Prefill and decode tokens/s per cache kind, decode ratio to Fp16") { model, text, contexts, decode, repeats, caches, bits, device, keep, json };
    command.SetAction(p =>
    {
        using var runtime = LlamaRuntime.Load(ModelLocator.Resolve(p.GetValue(model)!),
            new ModelLoadOptions { Device = p.GetValue(device)!, KeepFreedHostMemory = p.GetValue(keep) });
        SpeedBench.Run(runtime, p.GetValue(text)!, Ints(p.GetValue(contexts)!), p.GetValue(decode), p.GetValue(repeats),
            CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!), Machine.Describe(p.GetValue(device)!), p.GetValue(json));
    });
    root.Add(command);
}

{
    var model = ModelOption(); var json = JsonOption();
    var tokens = new Option<int>("--tokens") { DefaultValueFactory = _ => 256, Description = "Tokens generated per run (and mask steps timed)" };
    var repeats = new Option<int>("--repeats") { DefaultValueFactory = _ => 5, Description = "Interleaved runs per output kind (the median is reported)" };
    var llama3 = new Option<string?>("--llama3-tokenizer") { Description = "A directory with Llama 3's tokenizer.json: also time the mask on its 128K vocabulary" };
    var command = new Command("constrained", "Decode tokens/s with and without a JSON schema, and the allowed-token mask's CPU time per step") { model, tokens, repeats, llama3, json };
    command.SetAction(p =>
    {
        using var runtime = LlamaRuntime.Load(ModelLocator.Resolve(p.GetValue(model)!));
        ConstrainedBench.Run(runtime, p.GetValue(llama3), p.GetValue(tokens), p.GetValue(repeats), Machine.Describe("cpu"), p.GetValue(json));
    });
    root.Add(command);
}
{
    var model = ModelOption(); var text = TextOption(); var json = JsonOption();
    var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "fp16", Description = "GPU compute dtype: bf16, fp16, fp32" };
    var oomOnly = new Option<bool>("--out-of-memory-only") { Description = "Only the out-of-memory row, with the TorchSharp decode step and with the launch-light one" };
    var command = new Command("gpu-selftest", "CUDA against CPU on gear-tiny: greedy 32 tokens equal (Fp16 cache), perplexity within 1% for every cache kind; exit 1 on failure") { model, text, dtype, oomOnly, json };
    command.SetAction(p => GpuBench.SelfTest(p.GetValue(model)!, p.GetValue(text)!, Machine.Describe("cuda"), p.GetValue(json), DTypeNames.Parse(p.GetValue(dtype)!), p.GetValue(oomOnly)));
    root.Add(command);
}
{
    var shape = new Option<string>("--shape") { Required = true, Description = "config.json of the model shape (random weights)" };
    var contexts = ContextsOption("4096,16384,32768"); var caches = CachesOption(); var bits = BitsOption(); var json = JsonOption();
    var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 1 };
    var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 16, Description = "Timed decode steps" };
    var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "bf16" };
    var rounds = new Option<int>("--rounds") { DefaultValueFactory = _ => 5, Description = "Interleaved timing rounds per cache kind (the median is reported)" };
    var step = new Option<string>("--step") { DefaultValueFactory = _ => "launch-light", Description = "Decode step: launch-light, tensor (TorchSharp ops), or both (interleaved)" };
    var command = new Command("gpu-latency", "Decode ms/token per cache kind at long contexts (synthetic K/V, random weights)") { shape, contexts, batch, steps, rounds, caches, bits, dtype, step, json };
    command.SetAction(p => GpuBench.Latency(p.GetValue(shape)!, Ints(p.GetValue(contexts)!), p.GetValue(batch), p.GetValue(steps), Math.Max(1, p.GetValue(rounds)),
        CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!), DTypeNames.Parse(p.GetValue(dtype)!), Machine.Describe("cuda"), p.GetValue(json),
        p.GetValue(step) switch
        {
            "launch-light" => [true],
            "tensor" => [false],
            "both" => [true, false],
            var other => throw new ArgumentException($"--step {other}: use launch-light, tensor or both."),
        }));
    root.Add(command);
}
{
    var shape = new Option<string>("--shape") { Required = true, Description = "config.json of the model shape (heads and head size)" };
    var contexts = new Option<string>("--contexts") { DefaultValueFactory = _ => "4096,32768" };
    var caches = CachesOption(); var bits = BitsOption(); var json = JsonOption();
    var command = new Command("gpu-attend", "One layer's decode attention on CUDA per cache kind: the fused kernels against the TorchSharp path and the Fp16 cache") { shape, contexts, caches, bits, json };
    command.SetAction(p => GpuBench.Attend(p.GetValue(shape)!, Ints(p.GetValue(contexts)!), CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!),
        Machine.Describe("cuda"), p.GetValue(json)));
    root.Add(command);
}
{
    var shape = new Option<string>("--shape") { Required = true, Description = "config.json of the model shape (random weights)" };
    var caches = CachesOption(); var bits = BitsOption(); var json = JsonOption();
    var budget = new Option<double>("--budget-gib") { DefaultValueFactory = _ => 60, Description = "GPU memory budget for weights, caches and activations" };
    var prompt = new Option<int>("--prompt") { DefaultValueFactory = _ => 4096 };
    var generate = new Option<int>("--generate") { DefaultValueFactory = _ => 256 };
    var maxBatch = new Option<int>("--max-batch") { DefaultValueFactory = _ => 256 };
    var noFp16 = new Option<bool>("--only") { Description = "Measure exactly the listed kinds (no Fp16 baseline), e.g. to read one kind's peak memory alone" };
    var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "bf16" };
    var chunk = new Option<int>("--prefill-chunk")
    {
        DefaultValueFactory = _ => GpuBench.DefaultPrefillChunk,
        Description = "Prompt tokens appended at a time (each piece compressed as a prompt block), in the batch-sizing probe and the run alike",
    };
    chunk.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 1) r.AddError("--prefill-chunk must be at least 1."); });
    var inProcess = new Option<bool>("--in-process")
    {
        Description = "Run every kind in this process (by default each kind runs in a process of its own, so none pays for another's garbage or allocator state)",
    };
    var command = new Command("gpu-throughput", "Largest batch within a memory budget and generated tokens/s per cache kind") { shape, budget, prompt, generate, maxBatch, caches, bits, noFp16, dtype, chunk, inProcess, json };
    command.SetAction(p => GpuBench.Throughput(p.GetValue(shape)!, (long)(p.GetValue(budget) * (1L << 30)), p.GetValue(prompt), p.GetValue(generate), p.GetValue(maxBatch),
        CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!, withFp16: !p.GetValue(noFp16)), DTypeNames.Parse(p.GetValue(dtype)!), Machine.Describe("cuda"), p.GetValue(json),
        p.GetValue(chunk), isolate: !p.GetValue(inProcess)));
    root.Add(command);
}

{
    var shape = new Option<string>("--shape") { Required = true, Description = "config.json of the model shape (heads and head size)" };
    var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 64 };
    var context = new Option<int>("--context") { DefaultValueFactory = _ => 4096 };
    var caches = CachesOption(); var bits = BitsOption(); var json = JsonOption();
    var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "fp16" };
    var command = new Command("gpu-profile", "One layer's decode attention at a serving batch, phase by phase, against the Fp16 cache") { shape, batch, context, caches, bits, dtype, json };
    command.SetAction(p => GpuProfile.Run(p.GetValue(shape)!, p.GetValue(batch), p.GetValue(context), CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!),
        DTypeNames.Parse(p.GetValue(dtype)!), Machine.Describe("cuda"), p.GetValue(json)));
    root.Add(command);
}
{
    var shape = new Option<string>("--shape") { Required = true, Description = "config.json of the model shape (heads and head size)" };
    var device = DeviceOption();
    var sequences = new Option<int>("--sequences") { DefaultValueFactory = _ => 64 };
    var min = new Option<int>("--min-length") { DefaultValueFactory = _ => 1024 };
    var max = new Option<int>("--max-length") { DefaultValueFactory = _ => 8192 };
    var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 20, Description = "Timed decode steps (the median is reported)" };
    var caches = CachesOption(); var bits = BitsOption(); var json = JsonOption();
    var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "fp16" };
    var command = new Command("ragged", "One layer's decode attention for sequences of spread lengths against a uniform batch of the same total tokens")
        { shape, device, sequences, min, max, steps, caches, bits, dtype, json };
    command.SetAction(p => RaggedBench.Run(p.GetValue(shape)!, p.GetValue(device)!, p.GetValue(sequences), p.GetValue(min), p.GetValue(max), p.GetValue(steps),
        CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!), DTypeNames.Parse(p.GetValue(dtype)!), Machine.Describe(p.GetValue(device)!), p.GetValue(json)));
    root.Add(command);
}
{
    var model = ModelOption(); var text = TextOption(); var caches = CachesOption(); var bits = BitsOption(); var device = DeviceOption(); var json = JsonOption();
    var sequences = new Option<int>("--sequences") { DefaultValueFactory = _ => 8 };
    var min = new Option<int>("--min-length") { DefaultValueFactory = _ => 256 };
    var max = new Option<int>("--max-length") { DefaultValueFactory = _ => 1984 };
    var decode = new Option<int>("--decode-tokens") { DefaultValueFactory = _ => 64 };
    var repeats = new Option<int>("--repeats") { DefaultValueFactory = _ => 3, Description = "Timed rounds (median kept) after one warm-up round" };
    var command = new Command("batch-decode", "Decode tokens/s of sequences of spread lengths stepped together (a ragged batch) against the same sequences one after another")
        { model, text, sequences, min, max, decode, repeats, caches, bits, device, json };
    command.SetAction(p =>
    {
        using var runtime = Load(p.GetValue(model)!, p.GetValue(device)!);
        BatchDecodeBench.Run(runtime, p.GetValue(text)!, p.GetValue(sequences), p.GetValue(min), p.GetValue(max), p.GetValue(decode), p.GetValue(repeats),
            CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!), Machine.Describe(p.GetValue(device)!), p.GetValue(json));
    });
    root.Add(command);
}

{
    var model = ModelOption(); var text = TextOption(); var caches = CachesOption(); var bits = BitsOption(); var device = DeviceOption(); var json = JsonOption();
    var clients = new Option<int>("--clients") { DefaultValueFactory = _ => 8, Description = "Concurrent requests (and the same requests one after another); 0: as many as the engine admits at once within the budget" };
    var mix = new Option<string>("--prompt-tokens") { DefaultValueFactory = _ => "64,256,1024", Description = "Prompt lengths in tokens (template included), given to the requests in turn" };
    var maxTokens = new Option<int>("--max-tokens") { DefaultValueFactory = _ => 128 };
    var budget = new Option<long>("--budget-mib") { DefaultValueFactory = _ => 1024, Description = "CacheBudgetBytes of every client, in MiB (the same for every cache kind)" };
    var url = new Option<string?>("--url") { Description = "A running Gear.Server (e.g. http://127.0.0.1:5180): requests go over HTTP to the cache kind it runs" };
    var shape = new Option<string?>("--shape") { Description = "config.json of a model shape: random weights on --device instead of --model, EOS ignored (fixed lengths), no serial phase" };
    var deviceBudget = new Option<double?>("--device-budget-gib")
    {
        Description = "Shape mode: GPU memory for weights, caches and activations, as gpu-throughput sizes it (the caches get three quarters of what the weights leave); overrides --budget-mib",
    };
    var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "fp16", Description = "Compute dtype of the shape's random weights" };
    var noSerial = new Option<bool>("--no-serial") { Description = "Skip the one-after-another phase (always skipped in shape mode)" };
    var promptIds = new Option<string?>("--write-prompt-ids") { Description = "Also write the rendered prompts' token ids to this JSON file (for bench/Gear.Bench.Peers)" };
    var invariant = new Option<bool>("--batch-invariant") { Description = "GearChatClientOptions.BatchInvariant: each answer's bits independent of the batch (CPU)" };
    var command = new Command("serve", "Concurrent streaming requests through GearChatClient (or Gear.Server) against the same requests one after another: tokens/s, time to first token, inter-token latency")
        { model, text, clients, mix, maxTokens, budget, caches, bits, url, shape, deviceBudget, dtype, noSerial, invariant, promptIds, device, json };
    command.SetAction(p =>
    {
        int[] prompts = [.. p.GetValue(mix)!.Split(',').Select(int.Parse)];
        string? shapeFile = p.GetValue(shape);
        using var runtime = shapeFile is null
            ? Load(p.GetValue(model)!, p.GetValue(device)!)
            : ShapeRuntime.Load(shapeFile, prompts.Max() + p.GetValue(maxTokens), p.GetValue(device)!, DTypeNames.Parse(p.GetValue(dtype)!));
        long budgetBytes = p.GetValue(budget) << 20;
        if (shapeFile is not null && p.GetValue(deviceBudget) is { } gib)
            budgetBytes = (long)((gib * (1L << 30) - runtime.Model.Weights.Bytes) * 0.75);
        var settings = new ServeBench.Settings(p.GetValue(clients), prompts, p.GetValue(maxTokens), budgetBytes, Serial: shapeFile is null && !p.GetValue(noSerial), IgnoreEos: shapeFile is not null,
            BatchInvariant: p.GetValue(invariant));
        ServeBench.Run(runtime, p.GetValue(text)!, settings, CacheConfigs.Parse(p.GetValue(caches)!, p.GetValue(bits)!, withFp16: shapeFile is null),
            p.GetValue(url), Machine.Describe(p.GetValue(device)!), p.GetValue(json), p.GetValue(promptIds));
    });
    root.Add(command);
}

return root.Parse(args).Invoke();
