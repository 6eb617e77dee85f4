using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Gear.AI.Llama.Chat;
using Gear.AI.Llama.Generation;
using Gear.AI.Llama.Model;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using AIChatRole = Microsoft.Extensions.AI.ChatRole;

namespace Gear.AI;

/// <summary>
/// An <see cref="IChatClient"/> over a local Llama model whose KV cache is GEAR-compressed. Requests
/// queue and run one at a time on a worker thread; conversations keep their compressed caches under a
/// byte budget, so a request that continues one prefills only its new tokens.
/// </summary>
public sealed class GearChatClient : IChatClient
{
    /// <summary>Provider name in <see cref="ChatClientMetadata"/>.</summary>
    public const string ProviderName = "gear";

    private readonly GearChatClientOptions _options;
    private readonly GearOptions _cacheOptions;
    private readonly ILogger _logger;
    private readonly TorchWorker _worker = new("Gear.AI worker");
    private readonly CancellationTokenSource _disposing = new();
    private readonly SessionStore _sessions;
    private readonly TranscriptMemory _transcripts = new();
    private readonly HashSet<GearOptions> _loggedPaths = [];
    private readonly Dictionary<string, List<ChatTurn>> _conversations = [];
    private readonly LinkedList<string> _conversationOrder = new();
    private readonly object _loadLock = new();
    private readonly bool _ownsRuntime;
    private LlamaRuntime? _runtime;
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
        _sessions = new SessionStore(_options.CacheBudgetBytes, _options.MaxSessions);
        _ownsRuntime = true;
    }

    /// <summary>Creates a client over an already loaded runtime (shared; not disposed by this client).</summary>
    public GearChatClient(LlamaRuntime runtime, GearChatClientOptions? options = null, ILogger<GearChatClient>? logger = null)
        : this(options ?? new GearChatClientOptions { Model = runtime?.Directory ?? "" }, logger)
    {
        _runtime = runtime ?? throw new ArgumentNullException(nameof(runtime));
        _ownsRuntime = false;
    }

    /// <summary>The options in force (a copy).</summary>
    public GearChatClientOptions Options => _options.Clone();

    /// <summary>Loads the model now (e.g. from a hosted warm-up) instead of on the first request.</summary>
    public Task LoadAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return _worker.Run(() => Runtime, cancellationToken);
    }

    /// <summary>Whether the model is loaded.</summary>
    public bool IsLoaded => Volatile.Read(ref _runtime) is not null;

    private LlamaRuntime Runtime
    {
        get
        {
            var runtime = Volatile.Read(ref _runtime);
            if (runtime is not null)
                return runtime;
            lock (_loadLock)
            {
                if (_runtime is not null)
                    return _runtime;
                using var activity = GearTelemetry.ActivitySource.StartActivity("gear.load");
                var clock = Stopwatch.StartNew();
                string directory = ModelLocator.Resolve(_options.Model);
                var loaded = LlamaRuntime.Load(directory, new ModelLoadOptions { Device = _options.Device }, _options.ChatTemplate);
                GearTelemetry.LoadSeconds.Record(clock.Elapsed.TotalSeconds);
                activity?.SetTag("gear.model", loaded.ModelId);
                _logger.LogInformation("Loaded model {Model} on {Device} in {Seconds:F2} s ({Bytes:N0} bytes of weights)",
                    loaded.ModelId, _options.Device, clock.Elapsed.TotalSeconds, loaded.Model.Weights.Bytes);
                Volatile.Write(ref _runtime, loaded);
                return loaded;
            }
        }
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
        var channel = Channel.CreateUnbounded<ChatResponseUpdate>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        // Run completes the channel however it ends (even cancelled before it starts), so reading cannot hang.
        var work = _worker.Run(() => Run(request, channel.Writer, cts.Token));
        _ = work.ContinueWith(t => channel.Writer.TryComplete(t.Exception?.InnerException), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        try
        {
            // The caller's token is checked before each update too: the worker may have written the rest of the answer
            // (or all of it) before the caller cancelled, and a cancelled stream ends with OperationCanceledException,
            // not with the updates already buffered.
            await foreach (var update in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return update;
            }
        }
        finally
        {
            cts.Cancel();
            await work.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).ConfigureAwait(false);
        }
    }

    /// <summary>What a request asks for, checked before it queues.</summary>
    private sealed record Request(List<ChatMessage> Messages, ChatOptions? Options, GearOptions Cache, string? ConversationId, IReadOnlyList<AIFunctionDeclaration> Tools);

    private Request Prepare(List<ChatMessage> messages, ChatOptions? options)
    {
        if (options?.ResponseFormat is ChatResponseFormatJson)
            throw new NotSupportedException("JSON response format is not supported by GearChatClient: output is not grammar-constrained. Ask for JSON in the prompt and validate it, or use ChatResponseFormat.Text.");
        string? conversationId = options?.ConversationId;
        if (conversationId is not null && !_options.StatefulConversations)
            throw new ArgumentException("ChatOptions.ConversationId was set but stateful conversations are off; set GearChatClientOptions.StatefulConversations = true, or send the whole conversation without an id.", nameof(options));
        if (messages.Count == 0)
            throw new ArgumentException("At least one message is required.", nameof(messages));
        return new Request(messages, options, CacheOptionsFor(options), conversationId, PromptRenderer.Tools(options));
    }

    /// <summary>Per-request cache settings from AdditionalProperties ("gear.cache", "gear.bits", …).</summary>
    private GearOptions CacheOptionsFor(ChatOptions? options)
    {
        var props = options?.AdditionalProperties;
        if (props is null || !props.Keys.Any(k => k.StartsWith("gear.", StringComparison.Ordinal)))
            return _cacheOptions;
        var o = _cacheOptions;
        foreach (var (key, value) in props)
        {
            if (!key.StartsWith("gear.", StringComparison.Ordinal))
                continue;
            o = key switch
            {
                "gear.cache" => o with { Kind = CacheKindNames.Parse(AsString(key, value)) },
                "gear.bits" => o with { Bits = AsInt(key, value) },
                "gear.group_size" => o with { GroupSize = AsInt(key, value) },
                "gear.outlier_ratio" => o with { OutlierRatio = AsDouble(key, value) },
                "gear.prompt_rank" => o with { PromptRank = AsInt(key, value) },
                "gear.decode_rank" => o with { DecodeRank = AsInt(key, value) },
                "gear.buffer_length" => o with { BufferLength = AsInt(key, value) },
                "gear.repetition_penalty" or "gear.raw" => o,
                _ => throw new ArgumentException($"Unknown additional property '{key}'; Gear reads gear.cache, gear.bits, gear.group_size, gear.outlier_ratio, gear.prompt_rank, gear.decode_rank, gear.buffer_length, gear.repetition_penalty, gear.raw.", nameof(options)),
            };
        }
        try
        {
            return o.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"Invalid cache setting in ChatOptions.AdditionalProperties: {e.Message}", nameof(options), e);
        }
    }

    private static string AsString(string key, object? value) => value switch
    {
        string s => s,
        JsonElement { ValueKind: JsonValueKind.String } e => e.GetString()!,
        _ => throw new ArgumentException($"{key} must be a string.", key),
    };

    private static int AsInt(string key, object? value) => value switch
    {
        int i => i,
        long l when l is >= int.MinValue and <= int.MaxValue => (int)l,
        string s when int.TryParse(s, out int p) => p,
        JsonElement { ValueKind: JsonValueKind.Number } e when e.TryGetInt32(out int j) => j,
        _ => throw new ArgumentException($"{key} must be an integer.", key),
    };

    private static double AsDouble(string key, object? value) => value switch
    {
        double d => d,
        float f => f,
        int i => i,
        string s when double.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out double p) => p,
        JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
        _ => throw new ArgumentException($"{key} must be a number.", key),
    };

    /// <summary>The whole request, on the worker thread: render, reuse a cache, generate, stream, keep the cache.</summary>
    private bool Run(Request request, ChannelWriter<ChatResponseUpdate> writer, CancellationToken ct)
    {
        try
        {
            ct.ThrowIfCancellationRequested();
            RunCore(request, writer, ct);
            writer.Complete();
            return true;
        }
        catch (Exception e)
        {
            writer.Complete(e);
            throw;
        }
    }

    private void RunCore(Request request, ChannelWriter<ChatResponseUpdate> writer, CancellationToken ct)
    {
        var runtime = Runtime;
        var options = request.Options;
        if (options?.ModelId is { } modelId && !string.Equals(modelId, runtime.ModelId, StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"ChatOptions.ModelId '{modelId}' does not match the loaded model '{runtime.ModelId}'.", nameof(options));

        string? conversationId = _options.StatefulConversations ? request.ConversationId ?? "gear_" + Guid.NewGuid().ToString("N") : null;
        var history = conversationId is not null && _conversations.TryGetValue(conversationId, out var h) ? new List<ChatTurn>(h) : [];
        var newTurns = PromptRenderer.Turns(request.Messages, options);
        int preamble = newTurns.Count - request.Messages.Count; // instructions and tool descriptions come first
        var messageTurns = history.Concat(newTurns.Skip(preamble)).ToList();
        var preambleTurns = newTurns.Take(preamble).ToList();

        var sampling = Sampling(options);
        int context = runtime.Model.Config.MaxPositionEmbeddings;
        // "gear.raw": no chat template, just BOS and the messages' text (base-model continuation).
        bool raw = options?.AdditionalProperties?.TryGetValue("gear.raw", out var rawValue) == true && rawValue is true or "true";
        IReadOnlyList<int> Render(List<ChatTurn> turns)
        {
            if (raw)
                return runtime.EncodeRaw(string.Join("\n\n", turns.Select(t => t.Content)));
            // A conversation that continues an answer of ours keeps that exchange's exact ids (its cache is their prefix).
            if (_transcripts.Find(turns) is { } known)
                return [.. known.Ids, .. runtime.Template.RenderContinuation(turns[known.Turns..], runtime.Tokenizer)];
            return runtime.Template.Render(turns, runtime.Tokenizer);
        }
        List<ChatTurn> turns = [.. preambleTurns, .. messageTurns];
        IReadOnlyList<int> ids = Render(turns);
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
        sampling = sampling with { MaxNewTokens = maxNew };
        CheckBudget(runtime, request.Cache, ids.Count);

        using var activity = GearTelemetry.ActivitySource.StartActivity("gear.chat");
        var sequence = _sessions.Start(runtime.Model, ids, request.Cache, conversationId);
        LogAttentionPath(sequence.Pool, request.Cache);
        try
        {
            string responseId = "gear-" + Guid.NewGuid().ToString("N");
            string messageId = "msg-" + Guid.NewGuid().ToString("N");
            var created = DateTimeOffset.UtcNow;
            ChatResponseUpdate Update(IList<AIContent> contents) => new(AIChatRole.Assistant, contents)
            {
                ResponseId = responseId,
                MessageId = messageId,
                ConversationId = conversationId,
                CreatedAt = created,
                ModelId = runtime.ModelId,
            };

            var text = new StringBuilder();
            var generated = new List<int>();
            bool holding = request.Tools.Count > 0;
            GenerationSummary? summary = null;
            var stops = runtime.Template.StopTokenIds(runtime.Tokenizer);
            foreach (var step in runtime.Generator.Generate(ids, sequence, sampling, stops, ct))
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
                writer.TryWrite(Update([new TextContent(piece)]));
            }

            string reply = text.ToString();
            var calls = request.Tools.Count > 0 ? ToolCalling.Parse(reply, request.Tools.Select(t => t.Name).ToHashSet()) : null;
            if (calls is not null)
                writer.TryWrite(Update([.. calls]));
            else if (holding && reply.Length > 0)
                writer.TryWrite(Update([new TextContent(reply)]));

            var usage = Usage(summary!, sequence);
            var finish = calls is not null ? ChatFinishReason.ToolCalls
                : summary!.Reason == StopReason.MaxTokens ? ChatFinishReason.Length : ChatFinishReason.Stop;
            var last = Update([new UsageContent(usage)]);
            last.FinishReason = finish;
            last.AdditionalProperties = new AdditionalPropertiesDictionary
            {
                ["gear.kv.compression_ratio"] = sequence.FullPrecisionBytes == 0 ? 0.0 : (double)sequence.ResidentBytes / sequence.FullPrecisionBytes,
                ["gear.cache"] = CacheKindNames.Name(request.Cache.Kind),
            };
            writer.TryWrite(last);

            if (_options.LogContent)
                _logger.LogDebug("Prompt: {Prompt}\nResponse: {Response}", runtime.Tokenizer.Decode(ids), reply);
            string remembered = calls is not null ? string.Join("\n", calls.Select(ToolCalling.RenderCall)) : reply;
            if (!raw && summary!.Reason != StopReason.StopSequence)
                _transcripts.Remember(turns, remembered, [.. ids, .. generated]);
            if (conversationId is not null)
                Remember(conversationId, messageTurns, remembered);
            Record(activity, summary!, runtime, request.Cache);
            _sessions.Keep(sequence, conversationId);
        }
        catch
        {
            // Cancelled or failed: the request's own sequence goes; what it started from (an idle conversation, cached
            // pages) was shared, not changed, so nothing else is lost.
            sequence.Dispose();
            throw;
        }
    }

    /// <summary>Logs once per cache setting how attention reads its pages (a slow path says why).</summary>
    private void LogAttentionPath(Compression.Caching.PagePool pool, GearOptions cache)
    {
        if (_loggedPaths.Add(cache))
            _logger.LogInformation("KV cache {Cache} {Bits}-bit on {Device}: attention by {Path}", CacheKindNames.Name(cache.Kind), cache.Bits, pool.Shape.Device, pool.AttentionPath);
    }

    private SamplingOptions Sampling(ChatOptions? o)
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
                RepetitionPenalty = o?.AdditionalProperties?.TryGetValue("gear.repetition_penalty", out var rp) == true ? AsDouble("gear.repetition_penalty", rp) : 1.0,
                StopSequences = o?.StopSequences?.ToArray() ?? [],
                MaxNewTokens = Math.Max(1, o?.MaxOutputTokens ?? 1),
            }.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"Invalid ChatOptions: {e.Message}", nameof(o), e);
        }
    }

    /// <summary>Rejects a request whose cache cannot fit the budget even counting only its quantization codes.</summary>
    private void CheckBudget(LlamaRuntime runtime, GearOptions cache, int tokens)
    {
        var c = runtime.Model.Config;
        long elements = 2L * c.NumLayers * c.NumKeyValueHeads * c.HeadDim * tokens;
        long lowerBound = elements * (cache.IsCompressed ? cache.Bits : 16) / 8;
        if (lowerBound > _options.CacheBudgetBytes)
            throw new CacheBudgetExceededException(lowerBound, _options.CacheBudgetBytes);
    }

    private static UsageDetails Usage(GenerationSummary s, Compression.Caching.KvSequence sequence) => new()
    {
        InputTokenCount = s.PromptTokens,
        OutputTokenCount = s.GeneratedTokens,
        TotalTokenCount = s.PromptTokens + s.GeneratedTokens,
        CachedInputTokenCount = s.CachedPromptTokens,
        AdditionalCounts = new AdditionalPropertiesDictionary<long>
        {
            ["gear.kv.resident_bytes"] = sequence.ResidentBytes,
            ["gear.kv.fp16_bytes"] = sequence.FullPrecisionBytes,
            ["gear.kv.tokens"] = sequence.Length,
        },
    };

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

    /// <summary>Resident cache statistics.</summary>
    public GearCacheStatistics CacheStatistics
    {
        get
        {
            ThrowIfDisposed();
            return _worker.Run(() => _sessions.Statistics).GetAwaiter().GetResult();
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
        if (serviceType == typeof(GearChatClientOptions))
            return Options;
        if (serviceType == typeof(LlamaRuntime))
            return Runtime;
        if (serviceType == typeof(LlamaModel))
            return Runtime.Model;
        return null;
    }

    /// <summary>Tensors alive on the worker thread: flat across requests when nothing leaks.</summary>
    internal long LiveTensors => _worker.LiveTensors;

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _disposing.Cancel();
        _worker.Run(() =>
        {
            _sessions.Dispose();
            if (_ownsRuntime)
                _runtime?.Dispose();
            return true;
        }).GetAwaiter().GetResult();
        _worker.Dispose();
        _disposing.Dispose();
    }
}
