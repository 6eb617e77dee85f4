using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;

namespace Gear.AI;

/// <summary>
/// JSON tool calling in the Llama 3.1 style: tools are described to the model as JSON schemas, the
/// model answers a call as <c>{"name": …, "parameters": {…}}</c> (several as a JSON array or one per
/// line / separated by ';'), results come back as tool turns.
/// </summary>
internal static class ToolCalling
{
    /// <summary>The system text that describes <paramref name="tools"/> and the answer format.</summary>
    public static string DescribeTools(IEnumerable<AIFunctionDeclaration> tools, bool required)
    {
        ArgumentNullException.ThrowIfNull(tools);
        var sb = new StringBuilder();
        sb.Append("You have access to the following functions. To call a function, respond only with JSON of the form ")
          .Append("{\"name\": function name, \"parameters\": dictionary of argument name and its value}. ")
          .Append(required ? "You must call one of them. " : "Call a function only when it helps answer; otherwise answer normally. ")
          .Append("Do not use variables.\n\n");
        foreach (var tool in tools)
        {
            var schema = new Dictionary<string, object?>
            {
                ["type"] = "function",
                ["function"] = new Dictionary<string, object?> { ["name"] = tool.Name, ["description"] = tool.Description, ["parameters"] = tool.JsonSchema },
            };
            sb.Append(JsonSerializer.Serialize(schema)).Append("\n\n");
        }
        return sb.ToString().TrimEnd();
    }

    /// <summary>
    /// The JSON Schema of an answer that calls one of <paramref name="tools"/> in the format <see cref="DescribeTools"/>
    /// asks for — <c>{"name": …, "parameters": {…}}</c> with the function's own parameter schema — or, when
    /// <paramref name="allowMultiple"/>, also a JSON array of such calls. Each function's parameter schema sits under
    /// <c>$defs</c> of the answer's schema, its own references (<c>#</c>, <c>#/$defs/…</c>, <c>#/properties/…</c>, as
    /// <see cref="AIJsonUtilities"/> writes them for nested and repeated types) rewritten to point into it there.
    /// With <paramref name="answer"/> (a JSON response format's schema, or null for none), a value of that schema is an
    /// answer too: the model either calls a tool or answers in the format.
    /// </summary>
    public static string CallSchema(IReadOnlyList<AIFunctionDeclaration> tools, bool allowMultiple, JsonElement? answer = null)
    {
        ArgumentNullException.ThrowIfNull(tools);
        if (tools.Count == 0)
            throw new ArgumentException("At least one tool is needed.", nameof(tools));
        var definitions = new JsonObject();
        var calls = new List<string>();
        for (int i = 0; i < tools.Count; i++)
        {
            var tool = tools[i];
            var parameters = tool.JsonSchema.ValueKind == JsonValueKind.Object ? JsonNode.Parse(tool.JsonSchema.GetRawText())! : new JsonObject { ["type"] = "object" };
            string at = $"#/$defs/tool{i}";
            Relocate(parameters, at);
            definitions[$"tool{i}"] = parameters;
            calls.Add($$$"""{"type":"object","properties":{"name":{"const":{{{JsonSerializer.Serialize(tool.Name)}}}},"parameters":{"$ref":"{{{at}}}"}},"required":["name","parameters"],"additionalProperties":false}""");
        }
        string one = calls.Count == 1 ? calls[0] : $$"""{"anyOf":[{{string.Join(",", calls)}}]}""";
        string call = allowMultiple ? $$"""{"anyOf":[{{one}},{"type":"array","items":{{one}},"minItems":1}]}""" : one;
        if (answer is { } format)
        {
            var formatSchema = JsonNode.Parse(format.GetRawText());
            Relocate(formatSchema, "#/$defs/answer");
            definitions["answer"] = formatSchema;
            call = $$"""{"anyOf":[{{call}},{"$ref":"#/$defs/answer"}]}""";
        }
        var schema = JsonNode.Parse(call)!.AsObject();
        schema["$defs"] = definitions;
        return schema.ToJsonString();
    }

    /// <summary>
    /// Rewrites every local <c>$ref</c> of a schema (a string starting with '#') to the same place under
    /// <paramref name="at"/>; instance data (const, enum, default, examples) is left alone.
    /// </summary>
    private static void Relocate(JsonNode? schema, string at)
    {
        switch (schema)
        {
            case JsonObject o:
                foreach (var (key, value) in o.ToArray())
                {
                    if (key == "$ref" && value is JsonValue v && v.TryGetValue<string>(out var reference) && reference.StartsWith('#'))
                        o[key] = at + reference[1..];
                    else if (key is not ("const" or "enum" or "default" or "examples"))
                        Relocate(value, at);
                }
                break;
            case JsonArray a:
                foreach (var item in a)
                    Relocate(item, at);
                break;
        }
    }

    /// <summary>How an assistant's earlier call is shown to the model.</summary>
    public static string RenderCall(FunctionCallContent call)
    {
        ArgumentNullException.ThrowIfNull(call);
        return JsonSerializer.Serialize(new Dictionary<string, object?> { ["name"] = call.Name, ["parameters"] = call.Arguments ?? new Dictionary<string, object?>() });
    }

    /// <summary>How a tool's result is shown to the model.</summary>
    public static string RenderResult(FunctionResultContent result)
    {
        ArgumentNullException.ThrowIfNull(result);
        return result.Result switch
        {
            null => "null",
            string s => s,
            JsonElement e => e.GetRawText(),
            var other => JsonSerializer.Serialize(other),
        };
    }

    /// <summary>Whether streamed text could still turn out to be a tool call (so it must be held back).</summary>
    public static bool MayBeCall(string textSoFar)
    {
        var t = textSoFar.TrimStart();
        return t.Length == 0 || t[0] is '{' or '[';
    }

    /// <summary>
    /// Parses model output as one or more tool calls. Returns null when the text is not entirely
    /// tool calls (malformed JSON, unknown shape or a tool that was not offered), so it is kept as text.
    /// </summary>
    public static IReadOnlyList<FunctionCallContent>? Parse(string text, IReadOnlyCollection<string> toolNames)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(toolNames);
        string trimmed = text.Trim();
        if (trimmed.Length == 0 || trimmed[0] is not ('{' or '['))
            return null;
        var elements = new List<JsonElement>();
        try
        {
            if (trimmed[0] == '[')
            {
                using var doc = JsonDocument.Parse(trimmed);
                elements.AddRange(doc.RootElement.EnumerateArray().Select(e => e.Clone()));
            }
            else
            {
                foreach (var part in SplitObjects(trimmed))
                {
                    using var doc = JsonDocument.Parse(part);
                    elements.Add(doc.RootElement.Clone());
                }
            }
        }
        catch (JsonException)
        {
            return null;
        }
        var calls = new List<FunctionCallContent>();
        foreach (var e in elements)
        {
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String)
                return null;
            if (!toolNames.Contains(name.GetString()!))
                return null;
            JsonElement args = default;
            bool hasArgs = e.TryGetProperty("parameters", out args) || e.TryGetProperty("arguments", out args);
            if (hasArgs && args.ValueKind == JsonValueKind.String)
            {
                try
                {
                    using var inner = JsonDocument.Parse(args.GetString()!);
                    args = inner.RootElement.Clone();
                }
                catch (JsonException)
                {
                    return null;
                }
            }
            if (hasArgs && args.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
                return null;
            var arguments = new Dictionary<string, object?>();
            if (hasArgs && args.ValueKind == JsonValueKind.Object)
                foreach (var p in args.EnumerateObject())
                    arguments[p.Name] = p.Value.Clone();
            calls.Add(new FunctionCallContent("call_" + Guid.NewGuid().ToString("N")[..12], name.GetString()!, arguments));
        }
        return calls.Count > 0 ? calls : null;
    }

    /// <summary>Splits top-level JSON objects written back to back (separated by whitespace, ';' or ',').</summary>
    private static IEnumerable<string> SplitObjects(string text)
    {
        int depth = 0, start = -1;
        bool inString = false, escaped = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (inString)
            {
                if (escaped) escaped = false;
                else if (c == '\\') escaped = true;
                else if (c == '"') inString = false;
                continue;
            }
            if (c == '"') { inString = true; continue; }
            if (c == '{') { if (depth++ == 0) start = i; continue; }
            if (c == '}')
            {
                if (--depth == 0) yield return text[start..(i + 1)];
                if (depth < 0) throw new JsonException("unbalanced braces");
                continue;
            }
            if (depth == 0 && !char.IsWhiteSpace(c) && c is not (';' or ','))
                throw new JsonException($"unexpected '{c}' between tool calls");
        }
        if (depth != 0)
            throw new JsonException("unterminated object");
    }
}
