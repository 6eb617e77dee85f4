namespace Gear.AI.Llama.Generation.Json;

/// <summary>
/// One generation held to a <see cref="JsonGrammar"/>: before each token, the tokens that keep the output a prefix of a
/// valid text that can still be completed within the tokens left (counting a byte as a token at most, which every
/// byte-fallback or byte-level vocabulary allows); after each, the matcher's state. Once the text can end, the end
/// tokens are allowed; once nothing can follow, only they are.
/// </summary>
internal sealed class JsonConstraint
{
    private readonly TokenVocabulary _vocabulary;
    private readonly int[] _endTokens;
    private readonly int _vocabSize;
    private List<FrameStack> _states;
    private int _remaining;
    private bool _undecided;                                        // OnlyOnceStarted: nothing but whitespace so far
    private bool _free;                                             // OnlyOnceStarted: the output became free text
    private readonly List<List<FrameStack>> _levels = [];           // [depth]: states after that many bytes of a token

    /// <param name="grammar">The texts allowed.</param>
    /// <param name="vocabulary">The tokenizer's tokens as bytes.</param>
    /// <param name="endTokens">Tokens that end the generation (allowed once the text can end).</param>
    /// <param name="vocabSize">Rows of the model's logits.</param>
    /// <param name="maxTokens">Tokens the generation may take.</param>
    public JsonConstraint(JsonGrammar grammar, TokenVocabulary vocabulary, IEnumerable<int> endTokens, int vocabSize, int maxTokens)
    {
        ArgumentNullException.ThrowIfNull(grammar);
        _vocabulary = vocabulary;
        _endTokens = [.. endTokens.Where(t => t >= 0 && t < vocabSize)];
        if (_endTokens.Length == 0)
            throw new ArgumentException("Constrained output needs a token that ends the generation (the model's EOS or the template's end of turn).", nameof(endTokens));
        _vocabSize = vocabSize;
        _remaining = maxTokens;
        if (grammar.MinimumBytes > maxTokens)
            throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens,
                $"The shortest JSON text the schema allows takes {grammar.MinimumBytes} bytes, which may need as many tokens; allow at least that many output tokens.");
        _states = [new FrameStack(new RootFrame(grammar.Root), null)];
        _undecided = grammar.OnlyOnceStarted;
    }

    /// <summary>Whether the text so far is a complete value (the end tokens are allowed).</summary>
    public bool CanEnd => _states.Any(s => s.CanEnd);

    /// <summary>[V]: which tokens may come next.</summary>
    public bool[] Allowed()
    {
        var allowed = new bool[_vocabSize];
        if (_free)
        {
            System.Array.Fill(allowed, true);
            return allowed;
        }
        if (CanEnd || _undecided)
            foreach (int end in _endTokens)
                allowed[end] = true;
        int budget = _remaining - 1;                                                             // tokens after this one
        var sorted = _vocabulary.Sorted;
        var shared = _vocabulary.Shared;
        if (_states.All(s => s.Top is StringFrame { TakesPlainText: true }))
        {
            // Inside a string, plain text of whole characters only makes it longer: a token of c such characters is allowed
            // where the string takes c more and the rest still fits the budget (its minimum length counts down by c).
            var plain = _vocabulary.PlainCharacters;
            foreach (var state in _states)
            {
                var top = (StringFrame)state.Top;
                int now = state.MinRemaining, short_ = Math.Max(0, top.Node.MinLength - top.Characters);
                long left = top.CharactersLeft;
                bool bounded = top.IsBounded;
                for (int id = Math.Min(plain.Length, _vocabSize) - 1; id >= 0; id--)
                {
                    int c = plain[id];
                    if (c == 0 || allowed[id] || !_vocabulary.Plain[id] || (c < 0 && bounded) || c > left)
                        continue;
                    if (now - Math.Min(Math.Max(c, 0), short_) <= budget)
                        allowed[id] = true;
                }
            }
            sorted = _vocabulary.NotPlain;
            shared = _vocabulary.NotPlainShared;
        }
        Search(sorted, shared, budget, allowed);
        if (_undecided)
        {
            // Free text may start with any token whose first byte past whitespace does not open a value.
            var bytes = _vocabulary.Bytes;
            for (int id = Math.Min(bytes.Length, _vocabSize) - 1; id >= 0; id--)
                if (bytes[id] is { } token && StartsFreeText(token))
                    allowed[id] = true;
            for (int id = bytes.Length; id < _vocabSize; id++)
                allowed[id] = true;
        }
        return allowed;
    }

    /// <summary>Whether a token's first byte past whitespace is there and opens no JSON value of a call.</summary>
    private static bool StartsFreeText(byte[] token)
    {
        foreach (byte b in token)
            if (!JsonFrame.IsWhitespace(b))
                return b is not ((byte)'{' or (byte)'[');
        return false;
    }

    /// <summary>
    /// Walks the tokens in byte order, advancing the states once per shared prefix; a prefix that no state accepts skips
    /// every token that starts with it.
    /// </summary>
    private void Search(int[] order, int[] shared, int budget, bool[] allowed)
    {
        var bytes = _vocabulary.Bytes;
        Level(0).Clear();
        Level(0).AddRange(_states);
        int valid = 0, dead = int.MaxValue;
        for (int k = 0; k < order.Length; k++)
        {
            int id = order[k];
            int common = k == 0 ? 0 : shared[k];
            if (common >= dead)
                continue;
            dead = int.MaxValue;
            valid = Math.Min(valid, common);
            var token = bytes[id]!;
            for (int d = valid; d < token.Length; d++)
            {
                var next = Level(d + 1);
                next.Clear();
                foreach (var state in _levels[d])
                    state.Step(token[d], next);
                valid = d + 1;
                if (next.Count == 0)
                {
                    dead = d + 1;
                    break;
                }
            }
            if (dead == int.MaxValue && id < _vocabSize)
                foreach (var state in _levels[token.Length])
                    if (state.MinRemaining <= budget)
                    {
                        allowed[id] = true;
                        break;
                    }
        }
    }

    private List<FrameStack> Level(int depth)
    {
        while (_levels.Count <= depth)
            _levels.Add([]);
        return _levels[depth];
    }

    /// <summary>Moves the state past the chosen token.</summary>
    /// <exception cref="InvalidOperationException">The token was not allowed.</exception>
    public void Accept(int id)
    {
        _remaining--;
        if (_free)
            return;
        if (_undecided && (uint)id < (uint)_vocabulary.Size && _vocabulary.Bytes[id] is { } first && StartsFreeText(first))
        {
            _free = true;
            return;
        }
        if (_undecided && ((uint)id >= (uint)_vocabulary.Size || _vocabulary.Bytes[id] is null) && !_endTokens.Contains(id))
        {
            _free = true;                                                                       // a control token: not a call
            return;
        }
        if (_endTokens.Contains(id))
        {
            _states = [];
            return;
        }
        var states = _states;
        foreach (byte b in (uint)id < (uint)_vocabulary.Size ? _vocabulary.Bytes[id] ?? [] : [])
        {
            var next = new List<FrameStack>();
            foreach (var state in states)
                state.Step(b, next);
            states = next;
        }
        if (states.Count == 0 || _vocabulary.Bytes.ElementAtOrDefault(id) is null)
            throw new InvalidOperationException($"Token {id} does not continue the constrained JSON output.");
        _states = states;
        if (_undecided && !_vocabulary.Bytes[id]!.All(JsonFrame.IsWhitespace))
            _undecided = false;                                                                  // a call has started
    }
}
