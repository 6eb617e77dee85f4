namespace Gear.AI.Llama.Generation.Json;

/// <summary>
/// One kind of JSON value a grammar accepts, compiled from a JSON Schema: it starts the frames that match its bytes and
/// knows the length of its shortest valid text (<see cref="MinBytes"/>, found by <see cref="JsonGrammar"/> once every
/// node exists, so recursive schemas get their finite base case).
/// </summary>
internal abstract class JsonNode
{
    /// <summary>Bytes of the shortest text of this value (a large number where there is none, a required cycle).</summary>
    public int MinBytes { get; set; } = JsonLimits.Unreachable;

    /// <summary>MinBytes computed from the children's current values (the fixpoint's step).</summary>
    public abstract int ComputeMinBytes();

    /// <summary>The nodes this one refers to (for the fixpoint and for checks).</summary>
    public abstract IEnumerable<JsonNode> Children { get; }

    /// <summary>Starts this value with its first byte <paramref name="b"/>: pushes its frames on <paramref name="rest"/> into <paramref name="output"/>.</summary>
    public abstract void Start(byte b, FrameStack? rest, List<FrameStack> output);
}

/// <summary>Bounds that keep generation finite and values usable.</summary>
internal static class JsonLimits
{
    /// <summary>Stands for "no finite text" in byte counts; sums of a few stay far from overflow.</summary>
    public const int Unreachable = 1 << 24;

    /// <summary>Whitespace bytes allowed in one gap between tokens of the JSON text.</summary>
    public const int Whitespace = 8;

    /// <summary>Integer digits of a number without bounds: values fit a 32-bit integer when the type is integer.</summary>
    public const int IntegerDigits = 9;

    /// <summary>Integer digits of a non-integer number without bounds.</summary>
    public const int NumberDigits = 15;

    /// <summary>Digits after the decimal point.</summary>
    public const int FractionDigits = 8;

    public static int Add(int a, int b) => Math.Min(Unreachable, a + b);
}

/// <summary>Any JSON value (objects with any keys, arrays, strings, numbers, true, false, null).</summary>
internal sealed class AnyNode : JsonNode
{
    private readonly ObjectNode _object;
    private readonly ArrayNode _array;
    private readonly StringNode _string = new(0, int.MaxValue, null);
    private readonly NumberNode _number = new(integer: false, null, false, null, false);
    private readonly LiteralNode _literals = new(["true", "false", "null"]);

    public AnyNode()
    {
        _object = new ObjectNode([], this);
        _array = new ArrayNode(this, 0, int.MaxValue);
    }

    public override IEnumerable<JsonNode> Children => [_object, _array, _string, _number, _literals];

    public override int ComputeMinBytes() => 1;                                             // "0"

    public override void Start(byte b, FrameStack? rest, List<FrameStack> output)
    {
        switch (b)
        {
            case (byte)'{': _object.Start(b, rest, output); break;
            case (byte)'[': _array.Start(b, rest, output); break;
            case (byte)'"': _string.Start(b, rest, output); break;
            case (byte)'-' or (>= (byte)'0' and <= (byte)'9'): _number.Start(b, rest, output); break;
            default: _literals.Start(b, rest, output); break;
        }
    }
}

/// <summary>One property of an object: its key as JSON text (quotes included), its value, whether it must appear.</summary>
internal sealed record JsonProperty(string Name, byte[] Key, JsonNode Value, bool Required);

/// <summary>
/// An object. With declared properties: those alone, in their declared order, optional ones skippable, each at most once.
/// Without: any keys, each value of <see cref="Additional"/>.
/// </summary>
internal sealed class ObjectNode(IReadOnlyList<JsonProperty> properties, JsonNode? additional) : JsonNode
{
    public IReadOnlyList<JsonProperty> Properties { get; } = properties;

    /// <summary>The values of free keys, where no properties are declared.</summary>
    public JsonNode? Additional { get; } = properties.Count == 0 ? additional : null;

    public bool Free => Properties.Count == 0 && Additional is not null;

    public override IEnumerable<JsonNode> Children => [.. Properties.Select(p => p.Value), .. Additional is null ? [] : new[] { Additional }];

    public override int ComputeMinBytes() => 1 + AfterProperty(-1, first: true);

    /// <summary>Bytes of one property: key, colon, value.</summary>
    public int PropertyBytes(int i) => JsonLimits.Add(Properties[i].Key.Length + 1, Properties[i].Value.MinBytes);

    /// <summary>
    /// Bytes to close the object after property <paramref name="i"/> (−1: none yet): every later required property with its
    /// comma (none before the first when <paramref name="first"/>), then the brace.
    /// </summary>
    public int AfterProperty(int i, bool first = false)
    {
        int bytes = 1;
        for (int j = i + 1; j < Properties.Count; j++)
            if (Properties[j].Required)
            {
                bytes = JsonLimits.Add(bytes, PropertyBytes(j) + (first ? 0 : 1));
                first = false;
            }
        return bytes;
    }

    /// <summary>The properties that may come after property <paramref name="i"/>: each one up to and including the next required.</summary>
    public IEnumerable<int> Next(int i)
    {
        for (int j = i + 1; j < Properties.Count; j++)
        {
            yield return j;
            if (Properties[j].Required)
                yield break;
        }
    }

    /// <summary>Whether the object may close after property <paramref name="i"/> (no required property after it).</summary>
    public bool MayClose(int i) => !Properties.Skip(i + 1).Any(p => p.Required);

    public override void Start(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (b == '{')
            output.Add(new FrameStack(new ObjectFrame(this, ObjectPhase.Open, -1, 0), rest));
    }
}

/// <summary>An array of items of one kind, with bounds on their count.</summary>
internal sealed class ArrayNode(JsonNode item, int minItems, int maxItems) : JsonNode
{
    public JsonNode Item { get; } = item;
    public int MinItems { get; } = minItems;
    public int MaxItems { get; } = maxItems;

    public override IEnumerable<JsonNode> Children => [Item];

    public override int ComputeMinBytes() => 1 + Closing(0);

    /// <summary>Bytes to close the array holding <paramref name="count"/> items (the missing ones with their commas).</summary>
    public int Closing(int count)
    {
        int missing = Math.Max(0, MinItems - count);
        if (missing == 0)
            return 1;
        long bytes = (long)missing * Item.MinBytes + missing - (count == 0 ? 1 : 0) + 1;
        return (int)Math.Min(JsonLimits.Unreachable, bytes);
    }

    public override void Start(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (b == '[')
            output.Add(new FrameStack(new ArrayFrame(this, ArrayPhase.Open, 0, 0), rest));
    }
}

/// <summary>A string with bounds on its length in characters (code points; an escape is one), or of a fixed format.</summary>
internal sealed class StringNode(int minLength, int maxLength, StringFormat? format) : JsonNode
{
    public int MinLength { get; } = minLength;
    public int MaxLength { get; } = maxLength;
    public StringFormat? Format { get; } = format;

    public override IEnumerable<JsonNode> Children => [];

    public override int ComputeMinBytes() => 2 + (Format?.Length ?? MinLength);

    public override void Start(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (b != '"')
            return;
        JsonFrame frame = Format is { } f ? new FormatFrame(f, 0, f.AllAlternatives(0)) : new StringFrame(this, 0, 0);
        output.Add(new FrameStack(frame, rest));
    }
}

/// <summary>One of a fixed set of texts (true, false, null, an enum's values, a const), as compact JSON bytes.</summary>
internal sealed class LiteralNode : JsonNode
{
    public LiteralNode(IEnumerable<string> texts) => Texts = [.. texts.Select(System.Text.Encoding.UTF8.GetBytes).DistinctBy(Convert.ToHexString)];

    public LiteralNode(IEnumerable<byte[]> texts) => Texts = [.. texts.DistinctBy(Convert.ToHexString)];

    public IReadOnlyList<byte[]> Texts { get; }

    public override IEnumerable<JsonNode> Children => [];

    public override int ComputeMinBytes() => Texts.Count == 0 ? JsonLimits.Unreachable : Texts.Min(t => t.Length);

    public override void Start(byte b, FrameStack? rest, List<FrameStack> output)
    {
        foreach (var text in Texts)
            if (text[0] == b)
                output.Add(LiteralFrame.After(text, 1, rest));
    }
}

/// <summary>A number (no exponent), an integer when <c>integer</c>, with optional inclusive or exclusive bounds.</summary>
internal sealed class NumberNode(bool integer, decimal? minimum, bool minimumExclusive, decimal? maximum, bool maximumExclusive) : JsonNode
{
    public bool Integer { get; } = integer;
    public decimal? Minimum { get; } = minimum;
    public bool MinimumExclusive { get; } = minimumExclusive;
    public decimal? Maximum { get; } = maximum;
    public bool MaximumExclusive { get; } = maximumExclusive;

    /// <summary>Integer digits at most: enough for the bounds, else the defaults of <see cref="JsonLimits"/>.</summary>
    public int Digits { get; } = minimum is null || maximum is null
        ? (integer ? JsonLimits.IntegerDigits : JsonLimits.NumberDigits)
        : Math.Max(1, Math.Max(decimal.Truncate(Math.Abs(minimum.Value)).ToString(System.Globalization.CultureInfo.InvariantCulture).Length,
                               decimal.Truncate(Math.Abs(maximum.Value)).ToString(System.Globalization.CultureInfo.InvariantCulture).Length));

    public bool InRange(decimal value) =>
        (Minimum is not { } min || (MinimumExclusive ? value > min : value >= min))
        && (Maximum is not { } max || (MaximumExclusive ? value < max : value <= max));

    /// <summary>Shortest completions already found, by state (bounded numbers search for them).</summary>
    internal System.Collections.Concurrent.ConcurrentDictionary<NumberFrame, int> Completions { get; } = new();

    public override IEnumerable<JsonNode> Children => [];

    public override int ComputeMinBytes() => NumberFrame.Initial(this).ShortestCompletion();

    public override void Start(byte b, FrameStack? rest, List<FrameStack> output)
    {
        if (NumberFrame.Initial(this).Advance(b) is { } frame)
            output.Add(new FrameStack(frame, rest));
    }
}

/// <summary>Any one of several values (anyOf, oneOf of distinct kinds, a list of types, nullable).</summary>
internal sealed class ChoiceNode(IReadOnlyList<JsonNode> options) : JsonNode
{
    public IReadOnlyList<JsonNode> Options { get; } = options;

    public override IEnumerable<JsonNode> Children => Options;

    public override int ComputeMinBytes() => Options.Count == 0 ? JsonLimits.Unreachable : Options.Min(o => o.MinBytes);

    public override void Start(byte b, FrameStack? rest, List<FrameStack> output)
    {
        foreach (var option in Options)
            option.Start(b, rest, output);
    }
}

/// <summary>A reference ($ref) to a node made later (definitions may refer to themselves).</summary>
internal sealed class RefNode(string reference) : JsonNode
{
    public string Reference { get; } = reference;

    public JsonNode? Target { get; set; }

    private JsonNode Resolved => Target ?? throw new InvalidOperationException($"Unresolved $ref '{Reference}'.");

    public override IEnumerable<JsonNode> Children => [Resolved];

    public override int ComputeMinBytes() => Resolved.MinBytes;

    public override void Start(byte b, FrameStack? rest, List<FrameStack> output) => Resolved.Start(b, rest, output);
}
