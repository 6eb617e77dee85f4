using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using Gear.AI.Compression;
using Gear.AI.Engine;
using Gear.AI.Llama;
using Gear.AI.Llama.Chat;
using Gear.AI.Llama.Weights;
using Gear.AI.Llama.Generation;
using Gear.AI.Llama.Generation.Json;
using Gear.AI.Llama.Model;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using AIChatRole = Microsoft.Extensions.AI.ChatRole;

namespace Gear.AI;

/// <summary>
/// An <see cref="IChatClient"/> over a local Llama model whose KV cache is GEAR-compressed. Concurrent requests decode
/// together: every client over the same model shares one engine, whose thread runs each step over all admitted requests
/// as one ragged batch. Conversations keep their compressed pages under a byte budget, so a request that continues one
/// prefills only its new tokens.
/// </summary>
public sealed class GearChatClient : IChatClient
{
    /// <summary>Provider name in <see cref="ChatClientMetadata"/>.</summary>
    public const string ProviderName = "gear";

    private readonly GearChatClientOptions _options;
    private readonly GearOptions _cacheOptions;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _disposing = new();
    private readonly SessionStore _sessions;
    private readonly object _stateLock = new();                  // guards the transcripts, conversations and logged paths
    private readonly TranscriptMemory _transcripts = new();
    private readonly HashSet<GearOptions> _loggedPaths = [];
    private readonly Dictionary<string, List<ChatTurn>> _conversations = [];
    private readonly LinkedList<string> _conversationOrder = new();
    private readonly object _engineLock = new();
    private readonly LlamaRuntime? _givenRuntime;
    private GearEngine? _engine;
    private ChatClientMetadata? _metadata;
    private int _disposed;

    /// <summary>Creates a client that loads <see cref="GearChatClientOptions.Model"/> on first use (or <see cref="LoadAsync"/>).</summary>
    /// <exception cref="ArgumentException">The options are invalid; the message names each bad option.</exception>
    public GearChatClient(GearChatClientOptions options, ILogger<GearChatClient>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Clone().Validate();
        _cacheOptions = _options.ToCacheOptions();
        _logger = logger ?? (ILogger)NullLogger.Instance;
        _sessions = new SessionStore(_options.CacheBudgetBytes, _options.MaxSessions, _options.MaxConcurrentSequences, _options.MaxQueuedRequests);
        GearTelemetry.Track(this);
    }

    /// <summary>Creates a client over an already loaded runtime (shared; not disposed by this client).</summary>
    public GearChatClient(LlamaRuntime runtime, GearChatClientOptions? options = null, ILogger<GearChatClient>? logger = null)
        : this(options ?? new GearChatClientOptions { Model = runtime?.Directory ?? "" }, logger)
    {
        _givenRuntime = runtime ?? throw new ArgumentNullException(nameof(runtime));
    }

    /// <summary>The options in force (a copy).</summary>
    public GearChatClientOptions Options => _options.Clone();

    /// <summary>Loads the model now (e.g. from a hosted warm-up) instead of on the first request.</summary>
    public Task LoadAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return Engine.LoadAsync(cancellationToken);
    }

    /// <summary>Whether the model is loaded.</summary>
    public bool IsLoaded => _givenRuntime is not null || Volatile.Read(ref _engine)?.Loaded is not null;

    private LlamaRuntime Runtime => _givenRuntime ?? Engine.LoadAsync().GetAwaiter().GetResult();

    /// <summary>
    /// The engine of this client's model, shared with every other client over the same model directory, device and chat
    /// template (or the same runtime instance).
    /// </summary>
    private GearEngine Engine
    {
        get
        {
            if (Volatile.Read(ref _engine) is { } engine)
                return engine;
            lock (_engineLock)
            {
                ThrowIfDisposed();
                if (_engine is not null)
                    return _engine;
                if (_givenRuntime is { } runtime)
                {
                    _engine = EngineRegistry.Acquire(runtime, () => new GearEngine(() => runtime, "Gear.AI engine " + runtime.ModelId, runtime));
                    return _engine;
                }
                string directory = ModelLocator.Resolve(_options.Model, _options.ModelsDirectory);
                var key = (directory, _options.Device.Trim().ToLowerInvariant(), _options.ChatTemplate, _options.FusedKernels);
                _engine = EngineRegistry.Acquire(key, () => new GearEngine(() => LoadRuntime(directory), "Gear.AI engine " + Path.GetFileName(directory)));
                return _engine;
            }
        }
    }

    private LlamaRuntime LoadRuntime(string directory)
    {
        using var activity = GearTelemetry.ActivitySource.StartActivity("gear.load");
        var clock = Stopwatch.StartNew();
        string? shard = null;
        var progress = new SynchronousProgress(p =>
        {
            if (p.Shard != shard)
            {
                shard = p.Shard;
                _logger.LogInformation("Loading {Model}: {Shard} ({Percent:F0}% of {Bytes:N0} bytes read)", Path.GetFileName(directory), p.Shard, 100 * p.Fraction, p.BytesTotal);
            }
            _options.LoadProgress?.Report(p);
        });
        var loaded = LlamaRuntime.Load(directory, new ModelLoadOptions { Device = _options.Device, Progress = progress, FusedKernels = _options.FusedKernels }, _options.ChatTemplate);
        GearTelemetry.LoadSeconds.Record(clock.Elapsed.TotalSeconds);
        activity?.SetTag("gear.model", loaded.ModelId);
        _logger.LogInformation("Loaded model {Model} on {Device} in {Seconds:F2} s ({Bytes:N0} bytes of weights)",
            loaded.ModelId, _options.Device, clock.Elapsed.TotalSeconds, loaded.Model.Weights.Bytes);
        return loaded;
    }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        await GetStreamingResponseAsync(messages, options, cancellationToken).ToChatResponseAsync(cancellationToken).ConfigureAwait(false);

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ThrowIfDisposed();
        var request = Prepare(messages.ToList(), options);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposing.Token);
        var engine = Engine;
        var runtime = _givenRuntime ?? await engine.LoadAsync(cts.Token).ConfigureAwait(false);
        var plan = Plan(request, runtime);
        var job = new GenerationJob(_sessions, plan.Ids, plan.Sampling, request.Cache, plan.ConversationId, runtime.Template.StopTokenIds(runtime.Tokenizer),
            _options.PrefillChunkTokens, _options.MaxPrefillTokensPerStep, cts.Token)
        {
            Started = pool => LogAttentionPath(pool, request.Cache),
            BatchInvariant = _options.BatchInvariant,
        };
        using var activity = GearTelemetry.ActivitySource.StartActivity("gear.chat");
        engine.Submit(job);
        try
        {
            await foreach (var update in Respond(request, plan, job, runtime, activity).ConfigureAwait(false))
            {
                // The caller's token is checked before each update too: the engine may have written the rest of the answer
                // (or all of it) before the caller cancelled, and a cancelled stream ends with OperationCanceledException,
                // not with the updates already buffered.
                cancellationToken.ThrowIfCancellationRequested();
                yield return update;
            }
        }
        finally
        {
            // A reader that stops early (or is cancelled) takes the request out of the batch; wait until the engine has
            // let go of its sequence, so the caller sees the memory as it will stay.
            cts.Cancel();
            await job.Done.ConfigureAwait(false);
        }
    }

    /// <summary>What a request asks for, checked before it queues.</summary>
    private sealed record Request(List<ChatMessage> Messages, ChatOptions? Options, GearOptions Cache, RequestProperties Properties, string? ConversationId,
        IReadOnlyList<AIFunctionDeclaration> Tools);

    private Request Prepare(List<ChatMessage> messages, ChatOptions? options)
    {
        string? conversationId = options?.ConversationId;
        if (conversationId is not null && !_options.StatefulConversations)
            throw new ArgumentException("ChatOptions.ConversationId was set but stateful conversations are off; set GearChatClientOptions.StatefulConversations = true, or send the whole conversation without an id.", nameof(options));
        if (messages.Count == 0)
            throw new ArgumentException("At least one message is required.", nameof(messages));
        var properties = RequestProperties.Read(options);
        return new Request(messages, options, properties.Cache(_cacheOptions), properties, conversationId, PromptRenderer.Tools(options));
    }

    /// <summary>What a request will feed the engine, and what the client remembers of it afterwards.</summary>
    private sealed record RequestPlan(IReadOnlyList<int> Ids, SamplingOptions Sampling, string? ConversationId, List<ChatTurn> Turns, List<ChatTurn> MessageTurns, bool Raw, int DroppedMessages);

    /// <summary>
    /// Renders the request's prompt (a continued answer of ours keeps its exact ids), applies the context policy and the
    /// token budget, and checks the cache budget: everything that can fail before the request queues.
    /// </summary>
    private RequestPlan Plan(Request request, LlamaRuntime runtime)
    {
        var options = request.Options;
        if (options?.ModelId is { } modelId && !string.Equals(modelId, runtime.ModelId, StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"ChatOptions.ModelId '{modelId}' does not match the loaded model '{runtime.ModelId}'.", nameof(options));

        string? conversationId = _options.StatefulConversations ? request.ConversationId ?? "gear_" + Guid.NewGuid().ToString("N") : null;
        List<ChatTurn> history;
        lock (_stateLock)
            history = conversationId is not null && _conversations.TryGetValue(conversationId, out var h) ? [.. h] : [];
        var newTurns = PromptRenderer.Turns(request.Messages, options);
        int preamble = newTurns.Count - request.Messages.Count; // instructions and tool descriptions come first
        var messageTurns = history.Concat(newTurns.Skip(preamble)).ToList();
        var preambleTurns = newTurns.Take(preamble).ToList();

        var sampling = Sampling(options, request.Properties);
        int context = runtime.Model.Config.MaxPositionEmbeddings;
        // "gear.raw": no chat template, just BOS and the messages' text, special-token text parsed as control tokens (a prompt
        // format built by the caller, or base-model continuation). Off by default: message text is text.
        bool raw = request.Properties.Raw;
        IReadOnlyList<int> Render(List<ChatTurn> turns)
        {
            if (raw)
                return runtime.EncodeRaw(string.Join("\n\n", turns.Select(t => t.Content)));
            // A conversation that continues an answer of ours keeps that exchange's exact ids (its cache is their prefix).
            (int[] Ids, int Turns)? known;
            lock (_stateLock)
                known = _transcripts.Find(turns);
            if (known is { } k)
                return [.. k.Ids, .. runtime.Template.RenderContinuation(turns[k.Turns..], runtime.Tokenizer)];
            return runtime.Template.Render(turns, runtime.Tokenizer);
        }
        List<ChatTurn> turns = [.. preambleTurns, .. messageTurns];
        IReadOnlyList<int> ids = Render(turns);
        int given = messageTurns.Count;
        while (ids.Count + (options?.MaxOutputTokens ?? 1) > context && _options.ContextOverflow == ContextOverflowPolicy.DropOldestMessages
               && messageTurns.Count(t => t.Role != Llama.Chat.ChatRole.System) > 1)
        {
            messageTurns.RemoveAt(messageTurns.FindIndex(t => t.Role != Llama.Chat.ChatRole.System));
            turns = [.. preambleTurns, .. messageTurns];
            ids = Render(turns);
        }
        int maxNew = options?.MaxOutputTokens ?? Math.Min(_options.DefaultMaxOutputTokens, context - ids.Count);
        if (maxNew < 1 || ids.Count + maxNew > context)
            throw new ContextLengthExceededException(ids.Count, Math.Max(1, maxNew), context);
        CheckBudget(runtime, request.Cache, ids.Count);
        sampling = sampling with { MaxNewTokens = maxNew, Json = GrammarFor(options, request.Tools) };
        try
        {
            sampling.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"Invalid ChatOptions: {e.Message}", nameof(request), e);
        }
        return new RequestPlan(ids, sampling, conversationId, turns, messageTurns, raw, given - messageTurns.Count);
    }

    /// <summary>The engine's updates as chat updates: text as it comes (held back while it may be a tool call), then usage.</summary>
    private async IAsyncEnumerable<ChatResponseUpdate> Respond(Request request, RequestPlan plan, GenerationJob job, LlamaRuntime runtime, Activity? activity)
    {
        string responseId = "gear-" + Guid.NewGuid().ToString("N");
        string messageId = "msg-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        ChatResponseUpdate Update(IList<AIContent> contents) => new(AIChatRole.Assistant, contents)
        {
            ResponseId = responseId,
            MessageId = messageId,
            ConversationId = plan.ConversationId,
            CreatedAt = created,
            ModelId = runtime.ModelId,
        };

        var text = new StringBuilder();
        var generated = new List<int>();
        bool holding = request.Tools.Count > 0;
        GenerationSummary? summary = null;
        await foreach (var step in job.Updates.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
        {
            if (step.TokenId is int id)
                generated.Add(id);
            summary ??= step.Summary;
            if (step.Text.Length == 0)
                continue;
            text.Append(step.Text);
            if (holding && ToolCalling.MayBeCall(text.ToString()))
                continue;
            string piece = holding ? text.ToString() : step.Text;
            holding = false;
            yield return Update([new TextContent(piece)]);
        }

        string reply = text.ToString();
        var calls = request.Tools.Count > 0 ? ToolCalling.Parse(reply, request.Tools.Select(t => t.Name).ToHashSet()) : null;
        if (calls is not null)
            yield return Update([.. calls]);
        else if (holding && reply.Length > 0)
            yield return Update([new TextContent(reply)]);

        var kv = job.Kv!;
        var last = Update([new UsageContent(Usage(summary!, kv, plan.DroppedMessages))]);
        last.FinishReason = calls is not null ? ChatFinishReason.ToolCalls
            : summary!.Reason == StopReason.MaxTokens ? ChatFinishReason.Length : ChatFinishReason.Stop;
        last.AdditionalProperties = new AdditionalPropertiesDictionary
        {
            ["gear.kv.compression_ratio"] = kv.FullPrecisionBytes == 0 ? 0.0 : (double)kv.ResidentBytes / kv.FullPrecisionBytes,
            ["gear.cache"] = CacheKindNames.Name(request.Cache.Kind),
        };

        if (_options.LogContent)
            _logger.LogDebug("Prompt: {Prompt}\nResponse: {Response}", runtime.Tokenizer.Decode(plan.Ids), reply);
        string remembered = calls is not null ? string.Join("\n", calls.Select(ToolCalling.RenderCall)) : reply;
        lock (_stateLock)
        {
            if (!plan.Raw && summary!.Reason != StopReason.StopSequence)
                _transcripts.Remember(plan.Turns, remembered, [.. plan.Ids, .. generated]);
            if (plan.ConversationId is not null)
                Remember(plan.ConversationId, plan.MessageTurns, remembered);
        }
        Record(activity, summary!, runtime, request.Cache);
        yield return last;
    }

    /// <summary>Logs once per cache setting how attention reads its pages (a slow path says why).</summary>
    private void LogAttentionPath(Compression.Caching.PagePool pool, GearOptions cache)
    {
        bool first;
        lock (_stateLock)
            first = _loggedPaths.Add(cache);
        if (first)
            _logger.LogInformation("KV cache {Cache} {Bits}-bit on {Device}: attention by {Path}", CacheKindNames.Name(cache.Kind), cache.Bits, pool.Shape.Device, pool.AttentionPath);
    }

    private SamplingOptions Sampling(ChatOptions? o, RequestProperties properties)
    {
        try
        {
            return new SamplingOptions
            {
                Temperature = o?.Temperature ?? _options.DefaultTemperature,
                TopP = o?.TopP ?? _options.DefaultTopP,
                TopK = o?.TopK ?? 0,
                Seed = o?.Seed,
                FrequencyPenalty = o?.FrequencyPenalty ?? 0,
                PresencePenalty = o?.PresencePenalty ?? 0,
                RepetitionPenalty = properties.RepetitionPenalty,
                StopSequences = o?.StopSequences?.ToArray() ?? [],
                IgnoreEndOfSequence = properties.IgnoreEndOfSequence,
                MaxNewTokens = Math.Max(1, o?.MaxOutputTokens ?? 1),
            }.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"Invalid ChatOptions: {e.Message}", nameof(o), e);
        }
    }

    /// <summary>
    /// What the answer is held to: a JSON response format's values (any JSON object, or the schema's; compiled once per
    /// schema text) and, with tools, tool calls — with a required tool mode the answer is a call (to the named function
    /// with RequireSpecific, to one of them with RequireAny); with Auto it is either a well-formed call whose arguments fit
    /// the function's schema or the answer itself: a value of the response format, or free text that does not start as
    /// JSON. Several calls (a JSON array) unless AllowMultipleToolCalls is false. Null for free text; also, with Auto and
    /// no response format, where a tool's schema cannot be enforced (logged; the call is then parsed as before).
    /// </summary>
    /// <exception cref="NotSupportedException">A schema uses a keyword that cannot be enforced (named in the message).</exception>
    private JsonGrammar? GrammarFor(ChatOptions? options, IReadOnlyList<AIFunctionDeclaration> tools)
    {
        var format = options?.ResponseFormat as ChatResponseFormatJson;
        if (tools.Count == 0)
            return format is null ? null : format.Schema is { } schema ? Compiled(schema.GetRawText()) : JsonGrammar.AnyObject;
        bool required = options?.ToolMode is RequiredChatToolMode;
        bool multiple = options?.AllowMultipleToolCalls != false;
        if (format is not null && !required)
            return Compiled(ToolCalling.CallSchema(tools, multiple, format.Schema ?? AnyObjectSchema));
        JsonGrammar grammar;
        try
        {
            grammar = Compiled(ToolCalling.CallSchema(tools, multiple));
        }
        catch (NotSupportedException e) when (!required)
        {
            _logger.LogWarning("Tool calls are not constrained for these tools: {Reason}", e.Message);
            return null;
        }
        return required ? grammar : grammar.OrFreeText();
    }

    private static readonly JsonElement AnyObjectSchema = JsonDocument.Parse("""{"type":"object"}""").RootElement.Clone();

    /// <summary>The grammar of a schema text, compiled once (a client asks for the same few schemas again and again).</summary>
    private JsonGrammar Compiled(string schema)
    {
        lock (_stateLock)
            if (_grammars.TryGetValue(schema, out var known))
                return known;
        var grammar = JsonGrammar.FromSchema(schema);
        lock (_stateLock)
            _grammars[schema] = grammar;
        return grammar;
    }

    private readonly Dictionary<string, JsonGrammar> _grammars = new(StringComparer.Ordinal);

    /// <summary>Rejects a request whose cache cannot fit the budget even counting only its quantization codes.</summary>
    private void CheckBudget(LlamaRuntime runtime, GearOptions cache, int tokens)
    {
        long lowerBound = runtime.Model.KvShape.Fp16Bytes(tokens) * (cache.IsCompressed ? cache.Bits : 16) / 16;
        if (lowerBound > _options.CacheBudgetBytes)
            throw new CacheBudgetExceededException(lowerBound, _options.CacheBudgetBytes);
    }

    private static UsageDetails Usage(GenerationSummary s, KvFigures kv, int droppedMessages)
    {
        var counts = new AdditionalPropertiesDictionary<long>
        {
            ["gear.kv.resident_bytes"] = kv.ResidentBytes,
            ["gear.kv.fp16_bytes"] = kv.FullPrecisionBytes,
            ["gear.kv.tokens"] = kv.Tokens,
        };
        // ContextOverflowPolicy.DropOldestMessages left this many of the oldest messages out of the prompt.
        if (droppedMessages > 0)
            counts["gear.dropped_messages"] = droppedMessages;
        return new UsageDetails
        {
            InputTokenCount = s.PromptTokens,
            OutputTokenCount = s.GeneratedTokens,
            TotalTokenCount = s.PromptTokens + s.GeneratedTokens,
            CachedInputTokenCount = s.CachedPromptTokens,
            AdditionalCounts = counts,
        };
    }

    private void Record(Activity? activity, GenerationSummary s, LlamaRuntime runtime, GearOptions cache)
    {
        var tags = new KeyValuePair<string, object?>("gear.cache", CacheKindNames.Name(cache.Kind));
        GearTelemetry.PrefillTokens.Add(s.PromptTokens - s.CachedPromptTokens, tags);
        GearTelemetry.CachedTokens.Add(s.CachedPromptTokens, tags);
        GearTelemetry.DecodeTokens.Add(s.GeneratedTokens, tags);
        GearTelemetry.DecodeTokensPerSecond.Record(s.DecodeTokensPerSecond, tags);
        activity?.SetTag("gear.model", runtime.ModelId);
        activity?.SetTag("gear.cache", CacheKindNames.Name(cache.Kind));
        activity?.SetTag("gear.prompt_tokens", s.PromptTokens);
        activity?.SetTag("gear.cached_tokens", s.CachedPromptTokens);
        activity?.SetTag("gear.output_tokens", s.GeneratedTokens);
        _logger.LogInformation("Chat: {Prompt} prompt tokens ({Cached} cached), {Output} generated at {Speed:F1} tokens/s, {Reason}",
            s.PromptTokens, s.CachedPromptTokens, s.GeneratedTokens, s.DecodeTokensPerSecond, s.Reason);
    }

    private void Remember(string conversationId, List<ChatTurn> turns, string reply)
    {
        _conversations[conversationId] = [.. turns, new ChatTurn(Llama.Chat.ChatRole.Assistant, reply)];
        _conversationOrder.Remove(conversationId);
        _conversationOrder.AddLast(conversationId);
        while (_conversationOrder.Count > 1024)
        {
            _conversations.Remove(_conversationOrder.First!.Value);
            _conversationOrder.RemoveFirst();
        }
    }

    /// <summary>Requests running and waiting now (no engine round trip).</summary>
    public GearLoad Load => new(_sessions.Running, Volatile.Read(ref _sessions.Waiting), _options.MaxConcurrentSequences, _options.MaxQueuedRequests);

    /// <summary>The cache statistics if the model is loaded and the engine answers within <paramref name="timeout"/>; else null.</summary>
    internal GearCacheStatistics? TryCacheStatistics(TimeSpan timeout)
    {
        if (Volatile.Read(ref _disposed) != 0 || !IsLoaded)
            return null;
        var statistics = Engine.Run(() => _sessions.Statistics);
        return statistics.Wait(timeout) ? statistics.Result : null;
    }

    /// <summary>Resident cache statistics.</summary>
    public GearCacheStatistics CacheStatistics
    {
        get
        {
            ThrowIfDisposed();
            return Engine.Run(() => _sessions.Statistics).GetAwaiter().GetResult();
        }
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null)
            return null;
        if (serviceType == typeof(ChatClientMetadata))
            return _metadata ??= new ChatClientMetadata(ProviderName, null, IsLoaded ? Runtime.ModelId : Path.GetFileName(_options.Model.TrimEnd('/', '\\')));
        if (serviceType.IsInstanceOfType(this))
            return this;
        if (serviceType == typeof(GearCacheStatistics))
            return CacheStatistics;
        if (serviceType == typeof(GearLoad))
            return Load;
        if (serviceType == typeof(GearChatClientOptions))
            return Options;
        if (serviceType == typeof(LlamaRuntime))
            return Runtime;
        if (serviceType == typeof(LlamaModel))
            return Runtime.Model;
        return null;
    }

    /// <summary>Tensors alive on the engine thread: flat across requests when nothing leaks.</summary>
    internal long LiveTensors => Engine.LiveTensors;

    /// <summary>Runs <paramref name="work"/> on the model's engine thread between two steps.</summary>
    internal Task<T> RunBetweenSteps<T>(Func<T> work) => Engine.Run(work);

    /// <summary>The engine this client runs on (tests: clients over one model share it).</summary>
    internal object EngineIdentity => Engine;

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        GearTelemetry.Untrack(this);
        _disposing.Cancel();
        GearEngine? engine;
        lock (_engineLock)
            engine = _engine;
        if (engine is not null)
        {
            // This client's requests leave the batch and its pages go; the engine stops when no client is left.
            engine.Run(() =>
            {
                engine.Drop(_sessions);
                _sessions.Dispose();
                return true;
            }).GetAwaiter().GetResult();
            EngineRegistry.Release(engine);
        }
        _disposing.Dispose();
    }
}

/// <summary>Progress reported on the caller's thread (the loading one), not posted to a synchronization context.</summary>
file sealed class SynchronousProgress(Action<ModelLoadProgress> report) : IProgress<ModelLoadProgress>
{
    public void Report(ModelLoadProgress value) => report(value);
}
