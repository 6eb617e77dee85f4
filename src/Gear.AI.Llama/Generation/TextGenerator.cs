using System.Diagnostics;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama.Model;
using Gear.AI.Llama.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Generation;

/// <summary>
/// Generation as a handful of small steps: check the context, prefill what the cache lacks, then
/// decode one token at a time, sampling on the device, streaming UTF-8-safe text and honouring stop
/// tokens, stop sequences and the token budget.
/// </summary>
public sealed class TextGenerator
{
    private readonly LlamaModel _model;
    private readonly LlamaTextTokenizer _tokenizer;

    /// <summary>Creates a generator over a model and its tokenizer.</summary>
    public TextGenerator(LlamaModel model, LlamaTextTokenizer tokenizer)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
    }

    /// <summary>
    /// Generates a continuation of <paramref name="promptIds"/>. The first <c>sequence.Length</c> prompt
    /// tokens must already be in <paramref name="sequence"/> (prefix reuse); the rest are prefilled. The
    /// sequence holds prompt and output afterwards (all but the last generated token, which was never fed back).
    /// Each step runs in its own dispose scope; nothing is held across a yield.
    /// </summary>
    /// <exception cref="ContextLengthExceededException">Prompt plus MaxNewTokens exceed the context; thrown before any work.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled (checked before every token).</exception>
    public IEnumerable<GenerationUpdate> Generate(IReadOnlyList<int> promptIds, KvSequence sequence, SamplingOptions options, IReadOnlyList<int>? extraStopTokenIds = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(promptIds);
        ArgumentNullException.ThrowIfNull(sequence);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (promptIds.Count == 0)
            throw new ArgumentException("The prompt must hold at least one token (e.g. BOS).", nameof(promptIds));
        int context = _model.Config.MaxPositionEmbeddings;
        if (promptIds.Count + options.MaxNewTokens > context)
            throw new ContextLengthExceededException(promptIds.Count, options.MaxNewTokens, context);
        int cached = (int)sequence.Length;
        if (cached >= promptIds.Count)
            throw new ArgumentException($"The sequence already holds {cached} tokens but the prompt has {promptIds.Count}; truncate it to a shorter prefix first.", nameof(sequence));
        return Run(promptIds, cached, sequence, options, extraStopTokenIds ?? [], cancellationToken);
    }

    private IEnumerable<GenerationUpdate> Run(IReadOnlyList<int> promptIds, int cached, KvSequence sequence, SamplingOptions options, IReadOnlyList<int> extraStops, CancellationToken ct)
    {
        var stream = new TokenStream(_tokenizer, promptIds[^1], options, extraStops);
        using var sampler = new Sampler(options, _model.Config.VocabSize, _model.Device, promptIds, _tokenizer, stream.StopTokenIds);

        ct.ThrowIfCancellationRequested();
        var clock = Stopwatch.StartNew();
        int next = Step(promptIds.Skip(cached).ToArray(), sequence, sampler);
        var prefill = clock.Elapsed;
        clock.Restart();
        while (true)
        {
            if (stream.Accept(next) is { } update)
                yield return update;
            if (stream.Reason is not null)
                break;
            ct.ThrowIfCancellationRequested();
            next = Step([next], sequence, sampler);
        }
        yield return stream.Finish(promptIds.Count, cached, prefill, clock.Elapsed);
    }

    /// <summary>One forward over <paramref name="ids"/> and one sampled token: one dispose scope.</summary>
    private int Step(int[] ids, KvSequence sequence, Sampler sampler)
    {
        using var scope = NewDisposeScope();
        using var step = KvBatch.Begin([new KvBatchItem(sequence, ids.Length, ids)]);
        var input = tensor(ids.Select(i => (long)i).ToArray(), dtype: ScalarType.Int64, device: _model.Device); // [T]
        var logits = _model.Forward(step, input);                                               // [1, V]
        return sampler.Next(logits);
    }
}
