using Gear.AI.Llama.Tokenization;

namespace Gear.AI.Llama.Generation;

/// <summary>
/// What one sequence's chosen tokens become, one at a time: UTF-8-safe text, cut at stop sequences, ended by stop tokens
/// and the token budget. The same rules whether the sequence decodes alone (<see cref="TextGenerator"/>) or in a batch
/// with others. Host-side only: no tensors.
/// </summary>
public sealed class TokenStream
{
    private readonly HashSet<int> _stops;
    private readonly StreamingDetokenizer _detokenizer;
    private readonly StopSequenceFilter _filter;
    private readonly int _maxNewTokens;

    /// <summary>Starts the stream of a prompt ending in <paramref name="lastPromptToken"/>.</summary>
    /// <param name="tokenizer">The model's tokenizer (its EOS stops, unless <see cref="SamplingOptions.IgnoreEndOfSequence"/>).</param>
    /// <param name="lastPromptToken">The prompt's last token (the detokenizer's context for the first piece).</param>
    /// <param name="options">Stop tokens, stop sequences, the token budget.</param>
    /// <param name="extraStopTokenIds">End-of-turn tokens (e.g. the chat template's), ignored with <see cref="SamplingOptions.IgnoreEndOfSequence"/>.</param>
    public TokenStream(LlamaTextTokenizer tokenizer, int lastPromptToken, SamplingOptions options, IReadOnlyList<int>? extraStopTokenIds = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        _stops = [.. options.StopTokenIds];
        if (!options.IgnoreEndOfSequence)
        {
            _stops.UnionWith(extraStopTokenIds ?? []);
            if (tokenizer.EosId is int eos)
                _stops.Add(eos);
        }
        _detokenizer = new StreamingDetokenizer(tokenizer, lastPromptToken);
        _filter = new StopSequenceFilter(options.StopSequences);
        _maxNewTokens = options.MaxNewTokens;
    }

    /// <summary>The tokens that end this stream: the options' stop tokens, and unless EOS is ignored, the extra ones and the model's EOS.</summary>
    public IReadOnlyCollection<int> StopTokenIds => _stops;

    /// <summary>Tokens accepted so far (a stop token counts: the model produced it).</summary>
    public int Generated { get; private set; }

    /// <summary>Why the stream ended, or null while it goes on.</summary>
    public StopReason? Reason { get; private set; }

    /// <summary>
    /// Accepts the next chosen token. Returns the update to emit (null for a stop token, which emits nothing); afterwards
    /// <see cref="Reason"/> says whether the stream ended.
    /// </summary>
    /// <exception cref="InvalidOperationException">The stream has already ended.</exception>
    public GenerationUpdate? Accept(int token)
    {
        if (Reason is not null)
            throw new InvalidOperationException("The stream has ended.");
        Generated++;
        if (_stops.Contains(token))
        {
            Reason = StopReason.EndOfSequence;
            return null;
        }
        string text = _filter.Push(_detokenizer.Push(token));
        if (_filter.Stopped)
            Reason = StopReason.StopSequence;
        else if (Generated >= _maxNewTokens)
            Reason = StopReason.MaxTokens;
        return new GenerationUpdate(text, token);
    }

    /// <summary>The closing update: text held back for UTF-8 or a possible stop sequence (none after a stop sequence), and the summary.</summary>
    /// <exception cref="InvalidOperationException">The stream has not ended.</exception>
    public GenerationUpdate Finish(int promptTokens, int cachedPromptTokens, TimeSpan prefill, TimeSpan decode)
    {
        var reason = Reason ?? throw new InvalidOperationException("The stream has not ended.");
        string tail = reason == StopReason.StopSequence ? string.Empty : _filter.Push(_detokenizer.Flush()) + _filter.Flush();
        return new GenerationUpdate(tail, null, new GenerationSummary(reason, promptTokens, cachedPromptTokens, Generated, prefill, decode));
    }
}
