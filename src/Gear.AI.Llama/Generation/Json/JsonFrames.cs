namespace Gear.AI.Llama.Generation.Json;

/// <summary>
/// A matcher state: a stack of frames, innermost value on top. Immutable, so one byte can lead to several states (a
/// choice not yet decided) and a state can be kept while the vocabulary is searched.
/// </summary>
internal sealed record FrameStack(JsonFrame Top, FrameStack? Below)
{
    /// <summary>Feeds one byte: the states it leads to are added to <paramref name="output"/> (none: the byte is not allowed).</summary>
    public void Step(byte b, List<FrameStack> output) => Top.Step(b, Below, output);

    /// <summary>Bytes of the shortest text that completes the whole value from here.</summary>
    public int MinRemaining
    {
        get
        {
            int bytes = 0;
            for (var s = this; s is not null; s = s.Below)
                bytes = JsonLimits.Add(bytes, s.Top.MinToFinish);
            return bytes;
        }
    }

    /// <summary>Whether the text may end here: every frame from the top can close without more bytes, down to a completed root.</summary>
    public bool CanEnd
    {
        get
        {
            var frame = Top;
            var below = Below;
            while (true)
            {
                if (frame is DoneFrame)
                    return true;
                if (!frame.CanPop || below is null)
                    return false;
                frame = below.Top.AfterChild();
                below = below.Below;
            }
        }
    }

    /// <summary>Whether no byte can follow (the root value is complete and closed).</summary>
    public bool IsDone => Top is DoneFrame;

    /// <summary>
    /// The stack after the top frame's value ended: its parent told so. The parent must be a frame awaiting a child.
    /// </summary>
    public static FrameStack Pop(FrameStack? rest) =>
        rest is null ? throw new InvalidOperationException("A value ended outside any frame.") : rest with { Top = rest.Top.AfterChild() };
}

/// <summary>One level of the matcher: what the bytes of one value (or the gaps between its parts) may be.</summary>
internal abstract record JsonFrame
{
    /// <summary>Feeds one byte to this frame (with <paramref name="rest"/> below it).</summary>
    public abstract void Step(byte b, FrameStack? rest, List<FrameStack> output);

    /// <summary>Whether this frame's value may end here without another byte (a number that could also go on).</summary>
    public virtual bool CanPop => false;

    /// <summary>Bytes this frame still needs, not counting the child value it awaits.</summary>
    public abstract int MinToFinish { get; }

    /// <summary>This frame after the child value it awaited ended.</summary>
    public virtual JsonFrame AfterChild() => throw new InvalidOperationException($"{GetType().Name} awaits no child value.");

    /// <summary>For a frame that <see cref="CanPop"/>: ends it and feeds <paramref name="b"/> to its parent.</summary>
    protected static void PopAndStep(byte b, FrameStack? rest, List<FrameStack> output) => FrameStack.Pop(rest).Step(b, output);

    /// <summary>Whether <paramref name="b"/> is JSON whitespace.</summary>
    public static bool IsWhitespace(byte b) => b is (byte)' ' or (byte)'\n' or (byte)'\t' or (byte)'\r';
}

/// <summary>The whole text: one value, then nothing.</summary>
internal sealed record RootFrame(JsonNode Value) : JsonFrame
{
    public override void Step(byte b, FrameStack? rest, List<FrameStack> output) =>
        new ValueFrame(Value, 0).Step(b, new FrameStack(this, rest), output);

    public override int MinToFinish => 0;

    public override JsonFrame AfterChild() => new DoneFrame();
}

/// <summary>The root value is complete: no byte may follow.</summary>
internal sealed record DoneFrame : JsonFrame
{
    public override void Step(byte b, FrameStack? rest, List<FrameStack> output) { }

    public override bool CanPop => true;

    public override int MinToFinish => 0;
}

/// <summary>Where a value of <paramref name="Node"/> starts: a few whitespace bytes, then its first byte.</summary>
internal sealed record ValueFrame(JsonNode Node, int Spaces) : JsonFrame
{
    public override void Step(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (IsWhitespace(b))
        {
            if (Spaces < JsonLimits.Whitespace)
                output.Add(new FrameStack(this with { Spaces = Spaces + 1 }, rest));
            return;
        }
        // The node's frames replace this one: it was only the gap before the value.
        Node.Start(b, rest, output);
    }

    public override int MinToFinish => Node.MinBytes;
}

internal enum ObjectPhase { Open, Key, AfterKey, Value, AfterValue, Comma }

/// <summary>An object: after its brace, in a key or value, or between properties (<paramref name="Index"/>: the current or last property).</summary>
internal sealed record ObjectFrame(ObjectNode Node, ObjectPhase Phase, int Index, int Spaces) : JsonFrame
{
    public override void Step(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (IsWhitespace(b) && Phase is ObjectPhase.Open or ObjectPhase.AfterKey or ObjectPhase.AfterValue or ObjectPhase.Comma)
        {
            if (Spaces < JsonLimits.Whitespace)
                output.Add(new FrameStack(this with { Spaces = Spaces + 1 }, rest));
            return;
        }
        switch (Phase)
        {
            case ObjectPhase.Open or ObjectPhase.Comma:
                if (b == '}' && Phase == ObjectPhase.Open && (Node.Free || Node.MayClose(-1)))
                    output.Add(FrameStack.Pop(rest));
                else if (b == '"')
                    StartKeys(rest, output);
                break;
            case ObjectPhase.AfterKey:
                if (b == ':')
                {
                    var value = Node.Free ? Node.Additional! : Node.Properties[Index].Value;
                    output.Add(new FrameStack(new ValueFrame(value, 0), new FrameStack(this with { Phase = ObjectPhase.Value, Spaces = 0 }, rest)));
                }
                break;
            case ObjectPhase.AfterValue:
                if (b == '}' && (Node.Free || Node.MayClose(Index)))
                    output.Add(FrameStack.Pop(rest));
                else if (b == ',' && (Node.Free || Node.Next(Index).Any()))
                    output.Add(new FrameStack(this with { Phase = ObjectPhase.Comma, Spaces = 0 }, rest));
                break;
        }
    }

    /// <summary>After the opening quote of a key: each property that may come next, or a free key.</summary>
    private void StartKeys(FrameStack? rest, List<FrameStack> output)
    {
        if (Node.Free)
        {
            output.Add(new FrameStack(new StringFrame(FreeKey, 0, 0), new FrameStack(this with { Phase = ObjectPhase.Key, Spaces = 0 }, rest)));
            return;
        }
        foreach (int j in Node.Next(Index))
            output.Add(LiteralFrame.After(Node.Properties[j].Key, 1, new FrameStack(this with { Phase = ObjectPhase.Key, Index = j, Spaces = 0 }, rest)));
    }

    private static readonly StringNode FreeKey = new(0, 64, null);

    public override JsonFrame AfterChild() => Phase switch
    {
        ObjectPhase.Key => this with { Phase = ObjectPhase.AfterKey, Spaces = 0 },
        ObjectPhase.Value => this with { Phase = ObjectPhase.AfterValue, Spaces = 0 },
        _ => base.AfterChild(),
    };

    public override int MinToFinish => Node.Free
        ? Phase switch
        {
            ObjectPhase.Open or ObjectPhase.Value or ObjectPhase.AfterValue => 1,
            ObjectPhase.Key or ObjectPhase.AfterKey => 1 + Node.Additional!.MinBytes + 1,                 // colon, value, brace
            _ => 2 + 1 + Node.Additional!.MinBytes + 1,                                               // "", colon, value, brace
        }
        : Phase switch
        {
            ObjectPhase.Open => Node.AfterProperty(-1, first: true),
            ObjectPhase.Key or ObjectPhase.AfterKey => JsonLimits.Add(1 + Node.Properties[Index].Value.MinBytes, Node.AfterProperty(Index)),
            ObjectPhase.Value or ObjectPhase.AfterValue => Node.AfterProperty(Index),
            _ => Node.Next(Index).Select(j => JsonLimits.Add(Node.PropertyBytes(j), Node.AfterProperty(j))).DefaultIfEmpty(JsonLimits.Unreachable).Min(),
        };
}

internal enum ArrayPhase { Open, Value, AfterValue, Comma }

/// <summary>An array holding <paramref name="Count"/> items so far (the current one included while in it).</summary>
internal sealed record ArrayFrame(ArrayNode Node, ArrayPhase Phase, int Count, int Spaces) : JsonFrame
{
    public override void Step(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (IsWhitespace(b) && Phase != ArrayPhase.Value)
        {
            if (Spaces < JsonLimits.Whitespace)
                output.Add(new FrameStack(this with { Spaces = Spaces + 1 }, rest));
            return;
        }
        switch (Phase)
        {
            case ArrayPhase.Open:
                if (b == ']' && Node.MinItems == 0)
                    output.Add(FrameStack.Pop(rest));
                else if (b != ']' && Node.MaxItems > 0)
                    Node.Item.Start(b, new FrameStack(this with { Phase = ArrayPhase.Value, Count = 1, Spaces = 0 }, rest), output);
                break;
            case ArrayPhase.Comma:
                Node.Item.Start(b, new FrameStack(this with { Phase = ArrayPhase.Value, Count = Count + 1, Spaces = 0 }, rest), output);
                break;
            case ArrayPhase.AfterValue:
                if (b == ']' && Count >= Node.MinItems)
                    output.Add(FrameStack.Pop(rest));
                else if (b == ',' && Count < Node.MaxItems)
                    output.Add(new FrameStack(this with { Phase = ArrayPhase.Comma, Spaces = 0 }, rest));
                break;
        }
    }

    public override JsonFrame AfterChild() => Phase == ArrayPhase.Value ? this with { Phase = ArrayPhase.AfterValue, Spaces = 0 } : base.AfterChild();

    public override int MinToFinish => Phase switch
    {
        ArrayPhase.Open => Node.Closing(0),
        ArrayPhase.Value or ArrayPhase.AfterValue => Node.Closing(Count),
        _ => JsonLimits.Add(Node.Item.MinBytes, Node.Closing(Count + 1)),
    };
}

/// <summary>
/// Inside a string after its opening quote: <paramref name="Characters"/> so far; where in an escape
/// (<paramref name="Escape"/>: 0 none, 1 after the backslash, 2–5 hex digits of \u still to come, counted down from 5);
/// and where in a UTF-8 sequence (<paramref name="Pending"/> continuation bytes still to come, the next one within
/// [<paramref name="Low"/>, <paramref name="High"/>]), so the bytes always decode to the characters counted.
/// </summary>
internal sealed record StringFrame(StringNode Node, int Characters, int Escape, int Pending = 0, byte Low = 0x80, byte High = 0xBF) : JsonFrame
{
    /// <summary>Whether <paramref name="b"/> may stand for itself inside a string (no quote, backslash or control byte).</summary>
    public static bool IsPlain(byte b) => b >= 0x20 && b != '"' && b != '\\';

    /// <summary>Whether plain text of whole characters keeps this frame going, up to <see cref="CharactersLeft"/> of them (the vocabulary's fast path).</summary>
    public bool TakesPlainText => Escape == 0 && Pending == 0;

    /// <summary>Characters the string may still take.</summary>
    public long CharactersLeft => (long)Node.MaxLength - Characters;

    /// <summary>Whether the string's length is bounded (four-byte characters are refused then).</summary>
    public bool IsBounded => Bounded;

    private bool Bounded => Node.MinLength > 0 || Node.MaxLength != int.MaxValue;

    public override void Step(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (Pending > 0)
        {
            if (b >= Low && b <= High)
                output.Add(new FrameStack(this with { Pending = Pending - 1, Low = 0x80, High = 0xBF }, rest));
            return;
        }
        if (Escape == 1)
        {
            if (b == 'u')
                output.Add(new FrameStack(this with { Escape = 5 }, rest));
            else if (b is (byte)'"' or (byte)'\\' or (byte)'/' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t')
                output.Add(new FrameStack(this with { Escape = 0, Characters = Characters + 1 }, rest));
            return;
        }
        if (Escape > 1)
        {
            if (Uri.IsHexDigit((char)b))
                output.Add(new FrameStack(this with { Escape = Escape == 2 ? 0 : Escape - 1, Characters = Escape == 2 ? Characters + 1 : Characters }, rest));
            return;
        }
        if (b == '"')
        {
            if (Characters >= Node.MinLength)
                output.Add(FrameStack.Pop(rest));
            return;
        }
        if (Characters >= Node.MaxLength)
            return;
        if (b == '\\')
        {
            output.Add(new FrameStack(this with { Escape = 1 }, rest));
            return;
        }
        if (b < 0x20)
            return;
        // UTF-8: a lead byte opens a sequence of 1–3 continuation bytes; overlong forms and surrogates are refused where
        // their second byte shows it. Four-byte characters (two UTF-16 units) only in strings whose length is free.
        var next = b switch
        {
            < 0x80 => this,
            >= 0xC2 and <= 0xDF => this with { Pending = 1 },
            0xE0 => this with { Pending = 2, Low = 0xA0 },
            0xED => this with { Pending = 2, High = 0x9F },
            >= 0xE1 and <= 0xEF => this with { Pending = 2 },
            _ when Bounded => null,
            0xF0 => this with { Pending = 3, Low = 0x90 },
            >= 0xF1 and <= 0xF3 => this with { Pending = 3 },
            0xF4 => this with { Pending = 3, High = 0x8F },
            _ => null,
        };
        if (next is not null)
            output.Add(new FrameStack(next with { Characters = Characters + 1 }, rest));
    }

    public override int MinToFinish => Pending + (Escape switch
    {
        0 => Math.Max(0, Node.MinLength - Characters) + 1,
        1 => 1 + Math.Max(0, Node.MinLength - Characters - 1) + 1,
        _ => Escape - 1 + Math.Max(0, Node.MinLength - Characters - 1) + 1,
    });
}

/// <summary>A string of a fixed format after its opening quote: at <paramref name="Position"/>, the alternatives still alive.</summary>
internal sealed record FormatFrame(StringFormat Format, int Position, ulong Alive) : JsonFrame
{
    public override void Step(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (Position == Format.Length)
        {
            if (b == '"')
                output.Add(FrameStack.Pop(rest));
            return;
        }
        ulong alive = Format.Allowing(Position, Alive, b);
        if (alive != 0)
            output.Add(new FrameStack(new FormatFrame(Format, Position + 1, Position + 1 < Format.Length && Format.StartsSegment(Position + 1) ? Format.AllAlternatives(Position + 1) : alive), rest));
    }

    public override int MinToFinish => Format.Length - Position + 1;
}

/// <summary>A fixed text being matched (a key with its quotes, an enum value, true/false/null): the bytes from <paramref name="Position"/> on.</summary>
internal sealed record LiteralFrame(byte[] Text, int Position) : JsonFrame
{
    /// <summary>The stack after <paramref name="position"/> bytes of <paramref name="text"/>: its frame, or the parent told the value ended.</summary>
    public static FrameStack After(byte[] text, int position, FrameStack? rest) =>
        position == text.Length ? FrameStack.Pop(rest) : new FrameStack(new LiteralFrame(text, position), rest);

    public override void Step(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (Text[Position] == b)
            output.Add(After(Text, Position + 1, rest));
    }

    public override int MinToFinish => Text.Length - Position;
}

/// <summary>
/// A number: its sign, integer and fraction digits so far (no exponent), kept within the node's bounds — a byte is
/// allowed only if some completion of the digits lies in range.
/// </summary>
internal sealed record NumberFrame(NumberNode Node, bool Negative, int IntegerDigits, decimal IntegerPart, bool Dot, int FractionDigits, decimal Fraction) : JsonFrame
{
    public static NumberFrame Initial(NumberNode node) => new(node, false, 0, 0, false, 0, 0);

    /// <summary>The value written so far (digits after the point included).</summary>
    private decimal Value => (Negative ? -1 : 1) * (IntegerPart + Fraction);

    public override bool CanPop => IntegerDigits > 0 && (!Dot || FractionDigits > 0) && (!Node.Integer || !Dot) && Node.InRange(Value);

    /// <summary>This frame after <paramref name="b"/>, or null when the byte is not allowed.</summary>
    public NumberFrame? Advance(byte b)
    {
        NumberFrame next;
        if (b == '-')
        {
            if (Negative || IntegerDigits > 0)
                return null;
            next = this with { Negative = true };
        }
        else if (b == '.')
        {
            if (Node.Integer || Dot || IntegerDigits == 0)
                return null;
            next = this with { Dot = true };
        }
        else if (b is >= (byte)'0' and <= (byte)'9')
        {
            int digit = b - '0';
            if (Dot)
            {
                if (FractionDigits >= JsonLimits.FractionDigits)
                    return null;
                next = this with { FractionDigits = FractionDigits + 1, Fraction = Fraction + digit * Pow10(-(FractionDigits + 1)) };
            }
            else
            {
                if (IntegerDigits >= Node.Digits || (IntegerDigits == 1 && IntegerPart == 0))
                    return null;                                                              // no leading zeros
                next = this with { IntegerDigits = IntegerDigits + 1, IntegerPart = IntegerPart * 10 + digit };
            }
        }
        else
        {
            return null;
        }
        return next.Feasible() ? next : null;
    }

    public override void Step(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (Advance(b) is { } next)
            output.Add(new FrameStack(next, rest));
        else if (CanPop)
            PopAndStep(b, rest, output);
    }

    public override int MinToFinish => ShortestCompletion();

    /// <summary>
    /// Bytes of a shortest continuation that ends a number in range: breadth first over the bytes a number can take, each
    /// level kept to the first <see cref="Frontier"/> states (digits tried in order), so the figure is the length of a real
    /// completion and shrinks by at least one along it. Remembered per state on the node.
    /// </summary>
    public int ShortestCompletion()
    {
        if (Node.Completions.Count > MaxRemembered)
            Node.Completions.Clear();
        return Node.Completions.GetOrAdd(this, Search);
    }

    private const int MaxRemembered = 100_000;

    private static int Search(NumberFrame frame)
    {
        var level = new List<NumberFrame> { frame };
        for (int depth = 0; depth <= frame.Node.Digits + JsonLimits.FractionDigits + 2 && level.Count > 0; depth++)
        {
            if (level.Any(f => f.CanPop))
                return depth;
            var next = new HashSet<NumberFrame>();
            foreach (var state in level)
                foreach (byte b in "0123456789.-"u8)
                    if (next.Count < Frontier && state.Advance(b) is { } f)
                        next.Add(f);
            level = [.. next];
        }
        return JsonLimits.Unreachable;
    }

    private const int Frontier = 256;

    /// <summary>Whether some completion of these digits (more digits, a fraction) lies within the node's bounds.</summary>
    private bool Feasible()
    {
        if (Node.Minimum is null && Node.Maximum is null)
            return true;
        // Completions of the magnitude: [low, high] over the digits still allowed.
        decimal fractionRoom = Node.Integer ? 0 : Pow10(-(Dot ? FractionDigits : 0)) - Pow10(-JsonLimits.FractionDigits);
        if (IntegerDigits == 0)
        {
            decimal top = Pow10(Node.Digits) - 1 + fractionRoom;
            return Intersects(0, top);
        }
        if (Dot || IntegerPart == 0)
            return Intersects(IntegerPart + Fraction, IntegerPart + Fraction + fractionRoom);
        // Integer digits may still grow: each further digit count is a span of its own.
        for (int extra = 0; IntegerDigits + extra <= Node.Digits; extra++)
        {
            decimal scale = Pow10(extra), low = IntegerPart * scale;
            if (Intersects(low, low + scale - 1 + (Node.Integer ? 0 : 1 - Pow10(-JsonLimits.FractionDigits))))
                return true;
        }
        return false;
    }

    /// <summary>Whether values of magnitude in [low, high] (with this sign) meet the bounds, on the grid numbers can take.</summary>
    private bool Intersects(decimal low, decimal high)
    {
        decimal a = Negative ? -high : low, b = Negative ? -low : high;
        decimal step = Node.Integer ? 1 : Pow10(-JsonLimits.FractionDigits);
        if (Node.Minimum is { } min)
            a = Math.Max(a, Node.MinimumExclusive ? Ceiling(min, step) == min ? min + step : Ceiling(min, step) : Ceiling(min, step));
        if (Node.Maximum is { } max)
            b = Math.Min(b, Node.MaximumExclusive ? Floor(max, step) == max ? max - step : Floor(max, step) : Floor(max, step));
        return a <= b;
    }

    private static decimal Ceiling(decimal x, decimal step) => decimal.Ceiling(x / step) * step;

    private static decimal Floor(decimal x, decimal step) => decimal.Floor(x / step) * step;

    private static decimal Pow10(int exponent)
    {
        decimal p = 1;
        for (int i = 0; i < Math.Abs(exponent); i++)
            p = exponent > 0 ? p * 10 : p / 10;
        return p;
    }
}
