using System.Text.Encodings.Web;
using System.Text.Json;

namespace Gear.AI.Llama.Generation.Json;

/// <summary>
/// The JSON texts a generation may produce, compiled from a JSON Schema (or "any JSON object"): immutable, shared by
/// every request that uses it. <see cref="SamplingOptions.Json"/> puts it to work: each step, only tokens that keep the
/// output a prefix of a valid text that can still end within the token budget are allowed.
/// </summary>
/// <remarks>
/// Objects with declared properties are written with those properties alone, in their declared order (optional ones may
/// be left out); numbers without an exponent, integers without bounds within ±999,999,999; strings of the formats
/// date, date-time and uuid exactly; at most <c>8</c> whitespace bytes in each gap. Every text produced validates
/// against the schema. Keywords whose meaning cannot be enforced this way are refused by name.
/// </remarks>
public sealed class JsonGrammar
{
    private JsonGrammar(JsonNode root, string description, bool onlyOnceStarted = false)
    {
        Root = root;
        Description = description;
        OnlyOnceStarted = onlyOnceStarted;
    }

    internal JsonNode Root { get; }

    /// <summary>
    /// Whether the output may instead be free text: the grammar holds only once the output (after whitespace) starts with
    /// '{' or '[' (a tool call the model chose to make); any other start leaves the rest unconstrained.
    /// </summary>
    public bool OnlyOnceStarted { get; }

    /// <summary>This grammar for output that may be free text instead (see <see cref="OnlyOnceStarted"/>).</summary>
    public JsonGrammar OrFreeText() => new(Root, Description + ", or free text", onlyOnceStarted: true);

    /// <summary>What the grammar accepts, for messages and logs.</summary>
    public string Description { get; }

    /// <summary>Bytes of the shortest valid text: a generation needs at least this many tokens (none where it may be free text).</summary>
    public int MinimumBytes => OnlyOnceStarted ? 0 : Root.MinBytes;

    /// <summary>Any JSON object (<c>ChatResponseFormat.Json</c> without a schema).</summary>
    public static JsonGrammar AnyObject { get; } = Build(new ObjectNode([], new AnyNode()), "any JSON object");

    /// <summary>Compiles <paramref name="schema"/>.</summary>
    /// <exception cref="NotSupportedException">The schema uses a keyword or value that cannot be enforced; the message names it.</exception>
    /// <exception cref="ArgumentException">The schema is not a JSON Schema (not an object or boolean), or a $ref does not resolve.</exception>
    public static JsonGrammar FromSchema(JsonElement schema)
    {
        if (schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True))
            throw new ArgumentException($"A JSON Schema is an object (or true); got {schema.ValueKind}.", nameof(schema));
        var compiler = new Compiler(schema);
        var root = compiler.Compile(schema, "#");
        compiler.ResolveReferences();
        // An answer is a value: where the schema also allows null at the top (a nullable reference type), null is left out.
        if (root is ChoiceNode choice && choice.Options.Any(IsNull) && choice.Options.Any(o => !IsNull(o)))
            root = new ChoiceNode([.. choice.Options.Where(o => !IsNull(o))]);
        return Build(root, "JSON matching the schema");

        static bool IsNull(JsonNode node) => node is LiteralNode { Texts: [var text] } && text.AsSpan().SequenceEqual("null"u8);
    }

    /// <summary>Compiles the schema text <paramref name="schema"/>.</summary>
    public static JsonGrammar FromSchema(string schema)
    {
        ArgumentNullException.ThrowIfNull(schema);
        using var document = JsonDocument.Parse(schema);
        return FromSchema(document.RootElement.Clone());
    }

    private static JsonGrammar Build(JsonNode root, string description)
    {
        // Shortest texts by fixpoint: every node starts unreachable; recursive definitions settle on their base cases.
        var nodes = new List<JsonNode>();
        var seen = new HashSet<JsonNode>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<JsonNode>([root]);
        while (pending.Count > 0)
        {
            var node = pending.Pop();
            if (!seen.Add(node))
                continue;
            nodes.Add(node);
            foreach (var child in node.Children)
                pending.Push(child);
        }
        for (bool changed = true; changed;)
        {
            changed = false;
            for (int i = nodes.Count - 1; i >= 0; i--)
            {
                int bytes = nodes[i].ComputeMinBytes();
                if (bytes < nodes[i].MinBytes)
                {
                    nodes[i].MinBytes = bytes;
                    changed = true;
                }
            }
        }
        if (root.MinBytes >= JsonLimits.Unreachable)
            throw new NotSupportedException("The schema admits no finite JSON value (a required property or item refers back to itself, or an enum is empty).");
        return new JsonGrammar(root, description);
    }

    /// <summary>Schema → nodes; $refs become <see cref="RefNode"/>s resolved once everything is compiled.</summary>
    private sealed class Compiler(JsonElement document)
    {
        private readonly Dictionary<string, JsonNode> _byPointer = [];
        private readonly List<RefNode> _references = [];

        private static readonly HashSet<string> Annotations =
        [
            "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly",
            "$defs", "definitions",
        ];

        private static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

        public JsonNode Compile(JsonElement schema, string pointer)
        {
            if (_byPointer.TryGetValue(pointer, out var known))
                return known;
            var node = CompileNew(schema, pointer);
            _byPointer[pointer] = node;
            return node;
        }

        public void ResolveReferences()
        {
            for (int i = 0; i < _references.Count; i++)                                         // resolving may compile more
            {
                var reference = _references[i];
                reference.Target = Resolve(reference.Reference);
            }
        }

        private JsonNode Resolve(string reference)
        {
            if (!reference.StartsWith('#'))
                throw new NotSupportedException($"$ref '{reference}': only references within the schema (#/…) are supported.");
            var target = document;
            foreach (var raw in reference.TrimStart('#').Split('/', StringSplitOptions.RemoveEmptyEntries))
            {
                string part = Uri.UnescapeDataString(raw).Replace("~1", "/").Replace("~0", "~");
                bool found = target.ValueKind == JsonValueKind.Object ? target.TryGetProperty(part, out target)
                    : target.ValueKind == JsonValueKind.Array && int.TryParse(part, out int index) && index < target.GetArrayLength() && (target = target[index]).ValueKind != JsonValueKind.Undefined;
                if (!found)
                    throw new ArgumentException($"$ref '{reference}' does not resolve within the schema.");
            }
            string pointer = "#" + reference.TrimStart('#');
            return Compile(target, pointer == "#/" ? "#" : pointer);
        }

        private JsonNode CompileNew(JsonElement schema, string at)
        {
            if (schema.ValueKind == JsonValueKind.True)
                return new AnyNode();
            if (schema.ValueKind == JsonValueKind.False)
                throw new NotSupportedException($"{at}: the schema 'false' admits no value.");
            if (schema.ValueKind != JsonValueKind.Object)
                throw new ArgumentException($"{at}: a schema must be an object or a boolean, got {schema.ValueKind}.");
            if (schema.TryGetProperty("$ref", out var reference))
            {
                var node = new RefNode(reference.GetString() ?? throw new ArgumentException($"{at}: $ref must be a string."));
                _references.Add(node);
                return node;
            }
            foreach (var keyword in schema.EnumerateObject())
                if (!Annotations.Contains(keyword.Name) && !Enforced.Contains(keyword.Name))
                    throw new NotSupportedException($"{at}: the JSON Schema keyword '{keyword.Name}' is not supported for constrained output " +
                                                    $"(supported: {string.Join(", ", Enforced.Order(StringComparer.Ordinal))}).");
            if (schema.TryGetProperty("const", out var constant))
                return new LiteralNode([Literal(constant)]);
            if (schema.TryGetProperty("enum", out var values))
            {
                if (values.ValueKind != JsonValueKind.Array)
                    throw new ArgumentException($"{at}: enum must be an array.");
                return new LiteralNode(values.EnumerateArray().Select(Literal));
            }
            if (schema.TryGetProperty("anyOf", out var anyOf))
                return Choice(anyOf, at + "/anyOf", exclusive: false);
            if (schema.TryGetProperty("oneOf", out var oneOf))
                return Choice(oneOf, at + "/oneOf", exclusive: true);
            if (schema.TryGetProperty("allOf", out var allOf))
            {
                if (allOf.ValueKind != JsonValueKind.Array || allOf.GetArrayLength() != 1)
                    throw new NotSupportedException($"{at}: allOf is supported with one schema only.");
                return Compile(allOf[0], at + "/allOf/0");
            }
            var types = Types(schema, at);
            bool nullable = schema.TryGetProperty("nullable", out var n) && n.ValueKind == JsonValueKind.True;
            if (nullable && !types.Contains("null"))
                types.Add("null");
            var options = types.Select(t => Typed(schema, t, at)).ToList();
            return options.Count == 1 ? options[0] : new ChoiceNode(options);
        }

        private static readonly HashSet<string> Enforced =
        [
            "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minLength", "maxLength",
            "format", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf",
            "$ref", "nullable", "multipleOf",
        ];

        private static List<string> Types(JsonElement schema, string at)
        {
            if (schema.TryGetProperty("type", out var type))
            {
                var names = type.ValueKind == JsonValueKind.String ? [type.GetString()!]
                    : type.ValueKind == JsonValueKind.Array ? type.EnumerateArray().Select(t => t.GetString() ?? "").ToList()
                    : throw new ArgumentException($"{at}: type must be a string or an array of strings.");
                foreach (var name in names)
                    if (name is not ("object" or "array" or "string" or "integer" or "number" or "boolean" or "null"))
                        throw new ArgumentException($"{at}: '{name}' is not a JSON Schema type.");
                return names.Distinct().ToList();
            }
            // No type: what the keywords imply, else any value.
            if (schema.TryGetProperty("properties", out _) || schema.TryGetProperty("additionalProperties", out _))
                return ["object"];
            if (schema.TryGetProperty("items", out _))
                return ["array"];
            return ["any"];
        }

        private JsonNode Typed(JsonElement schema, string type, string at) => type switch
        {
            "object" => Object(schema, at),
            "array" => Array(schema, at),
            "string" => String(schema, at),
            "integer" => Number(schema, at, integer: true),
            "number" => Number(schema, at, integer: false),
            "boolean" => new LiteralNode(["true", "false"]),
            "null" => new LiteralNode(["null"]),
            _ => new AnyNode(),
        };

        private JsonNode Object(JsonElement schema, string at)
        {
            var required = schema.TryGetProperty("required", out var r) && r.ValueKind == JsonValueKind.Array
                ? r.EnumerateArray().Select(e => e.GetString()!).ToHashSet(StringComparer.Ordinal)
                : [];
            var properties = new List<JsonProperty>();
            if (schema.TryGetProperty("properties", out var declared))
                foreach (var property in declared.EnumerateObject())
                    properties.Add(new JsonProperty(property.Name, JsonSerializer.SerializeToUtf8Bytes(property.Name, Compact),
                        Compile(property.Value, $"{at}/properties/{property.Name}"), required.Contains(property.Name)));
            foreach (var name in required)
                if (!properties.Any(p => p.Name == name))
                    throw new NotSupportedException($"{at}: required property '{name}' has no schema under properties.");
            JsonNode? additional = new AnyNode();
            if (schema.TryGetProperty("additionalProperties", out var extra))
                additional = extra.ValueKind == JsonValueKind.False ? null : Compile(extra, at + "/additionalProperties");
            return new ObjectNode(properties, additional);
        }

        private JsonNode Array(JsonElement schema, string at)
        {
            var item = schema.TryGetProperty("items", out var items) ? Compile(items, at + "/items") : new AnyNode();
            int min = Count(schema, "minItems", 0, at), max = Count(schema, "maxItems", int.MaxValue, at);
            if (min > max)
                throw new ArgumentException($"{at}: minItems {min} is above maxItems {max}.");
            return new ArrayNode(item, min, max);
        }

        private static JsonNode String(JsonElement schema, string at)
        {
            int min = Count(schema, "minLength", 0, at), max = Count(schema, "maxLength", int.MaxValue, at);
            if (min > max)
                throw new ArgumentException($"{at}: minLength {min} is above maxLength {max}.");
            StringFormat? format = null;
            if (schema.TryGetProperty("format", out var f))
            {
                string name = f.GetString() ?? "";
                format = StringFormat.Named(name)
                    ?? throw new NotSupportedException($"{at}: string format '{name}' is not supported for constrained output (supported: {string.Join(", ", StringFormat.Supported)}).");
                if (format.Length < min || format.Length > max)
                    throw new NotSupportedException($"{at}: format '{name}' strings have {format.Length} characters, outside minLength/maxLength.");
            }
            return new StringNode(min, max, format);
        }

        private static JsonNode Number(JsonElement schema, string at, bool integer)
        {
            if (schema.TryGetProperty("multipleOf", out var step) && !(integer && step.TryGetDecimal(out var s) && s == 1))
                throw new NotSupportedException($"{at}: multipleOf is not supported for constrained output (except 1 on integers).");
            decimal? min = Bound(schema, "minimum", at), max = Bound(schema, "maximum", at);
            bool minExclusive = false, maxExclusive = false;
            if (schema.TryGetProperty("exclusiveMinimum", out var em))
            {
                if (em.ValueKind is JsonValueKind.True or JsonValueKind.False)
                    minExclusive = em.ValueKind == JsonValueKind.True;                          // draft 4: a flag on minimum
                else if (Bound(schema, "exclusiveMinimum", at) is { } value && (min is null || value >= min))
                    (min, minExclusive) = (value, true);
            }
            if (schema.TryGetProperty("exclusiveMaximum", out var ex))
            {
                if (ex.ValueKind is JsonValueKind.True or JsonValueKind.False)
                    maxExclusive = ex.ValueKind == JsonValueKind.True;
                else if (Bound(schema, "exclusiveMaximum", at) is { } value && (max is null || value <= max))
                    (max, maxExclusive) = (value, true);
            }
            var node = new NumberNode(integer, min, minExclusive, max, maxExclusive);
            if (min is { } lo && max is { } hi && (lo > hi || NumberFrame.Initial(node).ShortestCompletion() >= JsonLimits.Unreachable))
                throw new ArgumentException($"{at}: no {(integer ? "integer" : "number")} lies within the bounds [{lo}, {hi}].");
            return node;
        }

        private static decimal? Bound(JsonElement schema, string name, string at)
        {
            if (!schema.TryGetProperty(name, out var value))
                return null;
            if (value.ValueKind != JsonValueKind.Number || !value.TryGetDecimal(out var d))
                throw new ArgumentException($"{at}: {name} must be a number.");
            return d;
        }

        private static int Count(JsonElement schema, string name, int absent, string at)
        {
            if (!schema.TryGetProperty(name, out var value))
                return absent;
            if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int count) || count < 0)
                throw new ArgumentException($"{at}: {name} must be a non-negative integer.");
            return count;
        }

        private JsonNode Choice(JsonElement options, string at, bool exclusive)
        {
            if (options.ValueKind != JsonValueKind.Array || options.GetArrayLength() == 0)
                throw new ArgumentException($"{at} must be a non-empty array of schemas.");
            var nodes = options.EnumerateArray().Select((o, i) => Compile(o, $"{at}/{i}")).ToList();
            if (exclusive)
            {
                // oneOf is enforced where its options start with different bytes (string or null, object or array, …).
                var starts = options.EnumerateArray().Select(o => FirstBytes(o)).ToList();
                for (int i = 0; i < starts.Count; i++)
                    for (int j = i + 1; j < starts.Count; j++)
                        if (starts[i] is null || starts[j] is null || starts[i]!.Overlaps(starts[j]!))
                            throw new NotSupportedException($"{at}: oneOf is supported only where its options are of different JSON types (a text could match two of them).");
            }
            return nodes.Count == 1 ? nodes[0] : new ChoiceNode(nodes);
        }

        /// <summary>The first bytes a schema's values can start with, by its type, or null when unknown.</summary>
        private static HashSet<char>? FirstBytes(JsonElement schema)
        {
            if (schema.ValueKind != JsonValueKind.Object || !schema.TryGetProperty("type", out var type))
                return null;
            var names = type.ValueKind == JsonValueKind.String ? [type.GetString()!] : type.EnumerateArray().Select(t => t.GetString()!).ToList();
            var bytes = new HashSet<char>();
            foreach (var name in names)
                foreach (char c in name switch
                         {
                             "object" => "{", "array" => "[", "string" => "\"", "boolean" => "tf", "null" => "n",
                             "integer" or "number" => "-0123456789", _ => "",
                         })
                    if (!bytes.Add(c))
                        return null;
            return bytes;
        }

        private static byte[] Literal(JsonElement value) => JsonSerializer.SerializeToUtf8Bytes(value, Compact);
    }

    /// <inheritdoc />
    public override string ToString() => Description;
}
