using System.Diagnostics;
using System.Threading.Channels;
using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama.Generation;

namespace Gear.AI.Engine;

/// <summary>The KV figures of a request's sequence when it finished.</summary>
internal sealed record KvFigures(long ResidentBytes, long FullPrecisionBytes, long Tokens);

/// <summary>
/// One request inside the <see cref="GearEngine"/>: what it asks for (set by the client), how far it got (engine thread
/// only), and the channel its updates go to. Its prompt is fed in chunks, then one chosen token per step.
/// </summary>
internal sealed class GenerationJob
{
    private readonly Channel<GenerationUpdate> _updates =
        Channel.CreateUnbounded<GenerationUpdate>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public GenerationJob(SessionStore store, IReadOnlyList<int> prompt, SamplingOptions sampling, GearOptions cache, string? conversationId,
        IReadOnlyList<int> stopTokens, int prefillChunk, int stepPrefillTokens, CancellationToken cancellationToken)
    {
        Store = store;
        Prompt = prompt;
        Sampling = sampling;
        Cache = cache;
        ConversationId = conversationId;
        StopTokens = stopTokens;
        PrefillChunk = prefillChunk;
        StepPrefillTokens = stepPrefillTokens;
        Token = cancellationToken;
    }

    public SessionStore Store { get; }

    public IReadOnlyList<int> Prompt { get; }

    public SamplingOptions Sampling { get; }

    public GearOptions Cache { get; }

    public string? ConversationId { get; }

    public IReadOnlyList<int> StopTokens { get; }

    /// <summary>Prompt tokens fed per step at most.</summary>
    public int PrefillChunk { get; }

    /// <summary>A step feeds this request's next chunk only if the step's prompt tokens stay within this (at least <see cref="PrefillChunk"/>).</summary>
    public int StepPrefillTokens { get; }

    public CancellationToken Token { get; }

    /// <summary>Its steps give each sequence the same bits whatever else runs (see <see cref="GearChatClientOptions.BatchInvariant"/>).</summary>
    public bool BatchInvariant { get; init; }

    /// <summary>Called on the engine thread once the request has its sequence (the client logs the pool's attention path).</summary>
    public Action<PagePool>? Started { get; init; }

    /// <summary>Text pieces and chosen tokens, then the closing update with the summary; faults with the request's error.</summary>
    public ChannelReader<GenerationUpdate> Updates => _updates.Reader;

    /// <summary>Completes when the engine is done with the request, however it ended (its sequence kept or freed).</summary>
    public Task Done => _done.Task;

    /// <summary>Set before the closing update is written.</summary>
    public KvFigures? Kv { get; private set; }

    // Engine thread only, from admission on.
    public KvSequence? Sequence { get; set; }
    public Sampler? Sampler { get; set; }
    public TokenStream? Stream { get; set; }
    public int CachedTokens { get; set; }
    public int Fed { get; set; }
    public int Next { get; set; }
    public PagePlan? Plan { get; set; }
    public Stopwatch Clock { get; } = new();
    public TimeSpan PrefillTime { get; set; }
    public CancellationTokenRegistration Wake { get; set; }

    /// <summary>Whether the whole prompt is in the sequence (each step then feeds the last chosen token).</summary>
    public bool Decoding => Fed == Prompt.Count;

    public void Write(GenerationUpdate update) => _updates.Writer.TryWrite(update);

    /// <summary>Ends the request: the closing update and the KV figures; the channel completes.</summary>
    public void Complete(GenerationUpdate closing, KvFigures kv)
    {
        Kv = kv;
        _updates.Writer.TryWrite(closing);
        _updates.Writer.TryComplete();
        Release();
    }

    /// <summary>Ends the request with <paramref name="error"/> (an <see cref="OperationCanceledException"/> when cancelled).</summary>
    public void Fail(Exception error)
    {
        _updates.Writer.TryComplete(error);
        Release();
    }

    private void Release()
    {
        Sampler?.Dispose();
        Sampler = null;
        Wake.Dispose();
        _done.TrySetResult();
    }
}
