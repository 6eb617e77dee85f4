using Gear.AI.Compression;
using Gear.AI.Llama;
using Gear.AI.Llama.Chat;
using Gear.AI.Llama.Weights;

namespace Gear.AI;

/// <summary>
/// Settings of a <see cref="GearChatClient"/>: which model, where it runs, its KV cache and the
/// defaults of a request. Bindable from configuration (section "Gear"); checked by <see cref="Validate"/>.
/// </summary>
public sealed class GearChatClientOptions
{
    /// <summary>The configuration section <c>AddGearChatClient(IConfiguration)</c> reads by convention.</summary>
    public const string SectionName = "Gear";

    // The cache settings' defaults are GearOptions' own, so they are written once.
    private static readonly GearOptions CacheDefaults = new();

    /// <summary>A model directory, or the name of a model under <c>models/</c> (default: the bundled stories260K).</summary>
    public string Model { get; set; } = Llama.ModelLocator.DefaultModel;

    /// <summary>"cpu" (default), "cuda" or "cuda:N".</summary>
    public string Device { get; set; } = "cpu";

    /// <summary>Prompt format; detected from tokenizer_config.json when null.</summary>
    public ChatTemplateKind? ChatTemplate { get; set; }

    /// <summary>KV cache kind (default GEAR).</summary>
    public CacheKind Cache { get; set; } = CacheDefaults.Kind;

    /// <summary>Bits per compressed KV element, 1–8 (default 4).</summary>
    public int Bits { get; set; } = CacheDefaults.Bits;

    /// <summary>Quantization group length (default 64).</summary>
    public int GroupSize { get; set; } = CacheDefaults.GroupSize;

    /// <summary>Outlier share for GEAR (default 0.02).</summary>
    public double OutlierRatio { get; set; } = CacheDefaults.OutlierRatio;

    /// <summary>Low-rank rank for prompt blocks (default 4).</summary>
    public int PromptRank { get; set; } = CacheDefaults.PromptRank;

    /// <summary>Low-rank rank for decode blocks (default 2).</summary>
    public int DecodeRank { get; set; } = CacheDefaults.DecodeRank;

    /// <summary>Streaming buffer length n_b, a multiple of GroupSize (default 64).</summary>
    public int BufferLength { get; set; } = CacheDefaults.BufferLength;

    /// <summary>Bytes all resident conversation caches may hold together; least recently used ones are evicted beyond it (default 1 GiB).</summary>
    public long CacheBudgetBytes { get; set; } = 1L << 30;

    /// <summary>Most conversations kept resident (default 16).</summary>
    public int MaxSessions { get; set; } = 16;

    /// <summary>
    /// A directory of models searched first when <see cref="Model"/> is a name (then the <c>GEAR_MODELS</c> environment
    /// variable, <c>models/</c> next to the application, and <c>models/</c> above the working directory; see
    /// <see cref="ModelLocator"/>). Null by default.
    /// </summary>
    public string? ModelsDirectory { get; set; }

    /// <summary>
    /// Receives the model load's progress (tensors and bytes read, the shard being read), on the loading thread. The load
    /// is also logged, a line per shard. Null by default.
    /// </summary>
    public IProgress<ModelLoadProgress>? LoadProgress { get; set; }

    /// <summary>Requests of this client decoding together at most; more wait, in arrival order (default 32).</summary>
    public int MaxConcurrentSequences { get; set; } = 32;

    /// <summary>Requests of this client waiting at most; one more fails at once with <see cref="GearBusyException"/> (default 1,024).</summary>
    public int MaxQueuedRequests { get; set; } = 1024;

    /// <summary>
    /// Prompt tokens a request feeds per step at most (default 256): a long prompt is prefilled in chunks between the other
    /// requests' decode steps, so it does not stall their streams.
    /// </summary>
    public int PrefillChunkTokens { get; set; } = 256;

    /// <summary>
    /// Prompt tokens one step feeds at most over all prefilling requests (default 2,048): the oldest requests' chunks go
    /// first, the others wait a step. Bounds a step's activation memory and its length (the pause the decoding streams see);
    /// decode tokens are not counted.
    /// </summary>
    public int MaxPrefillTokensPerStep { get; set; } = 2048;

    /// <summary>
    /// Each answer's bits do not depend on what else runs beside it (default false): a request streams exactly what it
    /// streams alone, greedy or seeded, however many others share its steps. The model's matrix products then pad a step's
    /// rows to the count the machine's kernels work in (<see cref="Llama.Model.LlamaModel.BatchInvariantRowBlock"/>, 4 on
    /// the CPUs measured); a request decoding alone pays for it (on gear-tiny, see docs/benchmarks.md), a full batch does
    /// not. CPU only: on CUDA a request fails with <see cref="NotSupportedException"/>. Without it, answers beside others
    /// can differ from their answers alone after some tokens (rows are rounded differently at different batch sizes),
    /// more often for compressed caches, whose 2-bit codes amplify a last-bit difference.
    /// </summary>
    public bool BatchInvariant { get; set; }

    /// <summary>
    /// Gear.AI's one-pass kernels where they apply (default true): paged attention, page compression and the model's
    /// element-wise steps on CUDA, page compression in one pass on the CPU. False runs tensor operations instead — slower;
    /// for troubleshooting a kernel problem, or comparing with the reference path.
    /// </summary>
    public bool FusedKernels { get; set; } = true;

    /// <summary>When true, responses carry a ConversationId and requests that pass it send only new messages (default false: stateless, prefix reuse).</summary>
    public bool StatefulConversations { get; set; }

    /// <summary>Output-token cap when a request sets none (default 128; never more than the context leaves).</summary>
    public int DefaultMaxOutputTokens { get; set; } = 128;

    /// <summary>Temperature when a request sets none (default 0.7).</summary>
    public double DefaultTemperature { get; set; } = 0.7;

    /// <summary>Top-p when a request sets none (default 0.9).</summary>
    public double DefaultTopP { get; set; } = 0.9;

    /// <summary>What to do when a conversation outgrows the context (default: fail).</summary>
    public ContextOverflowPolicy ContextOverflow { get; set; } = ContextOverflowPolicy.Fail;

    /// <summary>Log prompt and response text at Debug level (default false: only counts are logged).</summary>
    public bool LogContent { get; set; }

    /// <summary>The cache settings as a validated <see cref="GearOptions"/>.</summary>
    public GearOptions ToCacheOptions() => new GearOptions
    {
        Kind = Cache,
        Bits = Bits,
        GroupSize = GroupSize,
        OutlierRatio = OutlierRatio,
        PromptRank = PromptRank,
        DecodeRank = DecodeRank,
        BufferLength = BufferLength,
    }.Validate();

    /// <summary>Every problem with these options, each naming the option; empty when valid.</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(Model))
            problems.Add("Model must name a model directory or a model under models/.");
        if (Device is null || !(Device == "cpu" || Device == "cuda" || Device.StartsWith("cuda:", StringComparison.Ordinal)))
            problems.Add($"Device '{Device}' must be 'cpu', 'cuda' or 'cuda:N'.");
        try
        {
            ToCacheOptions();
        }
        catch (ArgumentOutOfRangeException e)
        {
            problems.Add($"{e.ParamName}: {e.Message.Split(" (Parameter")[0]}");
        }
        if (CacheBudgetBytes <= 0)
            problems.Add("CacheBudgetBytes must be positive.");
        if (MaxSessions < 1)
            problems.Add("MaxSessions must be at least 1.");
        if (MaxConcurrentSequences < 1)
            problems.Add("MaxConcurrentSequences must be at least 1.");
        if (MaxQueuedRequests < 1)
            problems.Add("MaxQueuedRequests must be at least 1 (a request waits in the queue until its step begins).");
        if (PrefillChunkTokens < 1)
            problems.Add("PrefillChunkTokens must be at least 1.");
        if (MaxPrefillTokensPerStep < PrefillChunkTokens)
            problems.Add($"MaxPrefillTokensPerStep ({MaxPrefillTokensPerStep}) must be at least PrefillChunkTokens ({PrefillChunkTokens}).");
        if (DefaultMaxOutputTokens < 1)
            problems.Add("DefaultMaxOutputTokens must be at least 1.");
        if (!(DefaultTemperature >= 0))
            problems.Add("DefaultTemperature must be 0 or more.");
        if (!(DefaultTopP > 0 && DefaultTopP <= 1))
            problems.Add("DefaultTopP must be in (0, 1].");
        if (!Enum.IsDefined(ContextOverflow))
            problems.Add($"ContextOverflow '{ContextOverflow}' is not Fail or DropOldestMessages.");
        return problems;
    }

    /// <summary>Throws <see cref="ArgumentException"/> listing every problem (each names its option).</summary>
    public GearChatClientOptions Validate()
    {
        var problems = Problems();
        if (problems.Count > 0)
            throw new ArgumentException("Invalid GearChatClientOptions: " + string.Join(" ", problems));
        return this;
    }

    /// <summary>A copy (options are never mutated once a client holds them).</summary>
    public GearChatClientOptions Clone() => (GearChatClientOptions)MemberwiseClone();
}
