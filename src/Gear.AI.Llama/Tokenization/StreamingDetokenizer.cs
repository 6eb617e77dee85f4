namespace Gear.AI.Llama.Tokenization;

/// <summary>
/// Turns generated ids into text pieces as they arrive, never splitting a character: bytes of a
/// multi-byte UTF-8 character that spans tokens are held back until the character is complete.
/// </summary>
/// <remarks>
/// Each step decodes an anchor token (the last prompt token) plus everything generated, and emits
/// what is new since the last step. The anchor keeps the leading space that SentencePiece would drop
/// at the start of a decoded sequence.
/// </remarks>
internal sealed class StreamingDetokenizer
{
    private readonly LlamaTextTokenizer _tokenizer;
    private readonly List<int> _ids = [];
    private readonly int _prefixLength;
    private int _emitted;

    /// <summary>Starts a stream after <paramref name="anchor"/> (the last prompt token), or from nothing.</summary>
    public StreamingDetokenizer(LlamaTextTokenizer tokenizer, int? anchor = null)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        if (anchor is int a && !tokenizer.IsSpecial(a))
        {
            _ids.Add(a);
            _prefixLength = tokenizer.Decode(_ids).Length;
        }
    }

    /// <summary>Adds one id and returns the new complete text (possibly empty).</summary>
    public string Push(int id)
    {
        _ids.Add(id);
        string full = _tokenizer.Decode(_ids);
        string generated = full.Length >= _prefixLength ? full[_prefixLength..] : string.Empty;
        // Hold back an incomplete character (decoders render a partial UTF-8 sequence as U+FFFD).
        int end = generated.Length;
        while (end > _emitted && generated[end - 1] == '\uFFFD')
            end--;
        if (end > 0 && char.IsHighSurrogate(generated[end - 1]))
            end--;
        if (end <= _emitted)
            return string.Empty;
        string piece = generated[_emitted..end];
        _emitted = end;
        return piece;
    }

    /// <summary>Emits whatever is still held back (e.g. a truly invalid byte sequence at the end).</summary>
    public string Flush()
    {
        string full = _tokenizer.Decode(_ids);
        string generated = full.Length >= _prefixLength ? full[_prefixLength..] : string.Empty;
        if (generated.Length <= _emitted)
            return string.Empty;
        string piece = generated[_emitted..];
        _emitted = generated.Length;
        return piece;
    }
}
