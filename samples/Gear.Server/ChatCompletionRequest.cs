using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Gear.Server;

/// <summary>A request the server refuses before any work: the HTTP status and OpenAI's error fields.</summary>
internal sealed class RequestError(int status, string message, string? param = null, string type = "invalid_request_error", string? code = null)
    : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string Type { get; } = type;
    public string? Code { get; } = code;
}

/// <summary>
/// The body of <c>POST /v1/chat/completions</c> (OpenAI's Chat Completions API) as Microsoft.Extensions.AI types: the
/// messages (text, tool calls of earlier turns and their results) and the <see cref="ChatOptions"/> that map. Fields
/// this server does not use are ignored, as OpenAI-compatible servers do; values it cannot honour are refused.
/// </summary>
internal sealed record ChatCompletionRequest(string? Model, List<ChatMessage> Messages, ChatOptions Options, bool Stream, bool IncludeUsage)
{
    /// <exception cref="RequestError">The body is not a valid request; the error names the field.</exception>
    public static ChatCompletionRequest Parse(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw new RequestError(400, "The request body must be a JSON object.");
        var options = new ChatOptions();
        string? model = OptionalString(root, "model");
        if (model is not null)
            options.ModelId = model;
        var messages = ParseMessages(root);

        if ((Number(root, "max_completion_tokens") ?? Number(root, "max_tokens")) is { } max)
        {
            string field = root.TryGetProperty("max_completion_tokens", out _) ? "max_completion_tokens" : "max_tokens";
            if (max < 1 || max != Math.Floor(max) || max > int.MaxValue)
                throw new RequestError(400, $"{field} must be a positive integer, got {max}.", field);
            options.MaxOutputTokens = (int)max;
        }
        if (Number(root, "temperature") is { } temperature)
            options.Temperature = (float)InRange(temperature, 0, 2, "temperature");
        if (Number(root, "top_p") is { } topP)
        {
            if (!(topP > 0 && topP <= 1))
                throw new RequestError(400, $"top_p must be in (0, 1], got {topP}.", "top_p");
            options.TopP = (float)topP;
        }
        if (Number(root, "frequency_penalty") is { } frequency)
            options.FrequencyPenalty = (float)InRange(frequency, -2, 2, "frequency_penalty");
        if (Number(root, "presence_penalty") is { } presence)
            options.PresencePenalty = (float)InRange(presence, -2, 2, "presence_penalty");
        if (Number(root, "seed") is { } seed)
        {
            if (seed != Math.Floor(seed) || Math.Abs(seed) > long.MaxValue)
                throw new RequestError(400, "seed must be an integer.", "seed");
            options.Seed = (long)seed;
        }
        // vLLM's extension for fixed-length load tests: EOS and end of turn do not end the answer.
        if (root.TryGetProperty("ignore_eos", out var ignoreEos) && ignoreEos.ValueKind != JsonValueKind.Null)
        {
            if (ignoreEos.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                throw new RequestError(400, "ignore_eos must be a boolean.", "ignore_eos");
            (options.AdditionalProperties ??= [])["gear.ignore_eos"] = ignoreEos.GetBoolean();
        }
        if (Number(root, "n") is { } n && n != 1)
            throw new RequestError(400, $"n must be 1 (this server returns one choice), got {n}.", "n");
        if (Stops(root) is { } stops)
            options.StopSequences = stops;
        if (Tools(root) is { Count: > 0 } tools)
            options.Tools = tools;
        ToolChoice(root, options);
        ResponseFormat(root, options);
        if (root.TryGetProperty("parallel_tool_calls", out var parallel) && parallel.ValueKind is JsonValueKind.True or JsonValueKind.False)
            options.AllowMultipleToolCalls = parallel.GetBoolean();

        bool stream = root.TryGetProperty("stream", out var s) && s.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False or JsonValueKind.Null => false,
            _ => throw new RequestError(400, "stream must be a boolean.", "stream"),
        };
        bool includeUsage = root.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object
            && so.TryGetProperty("include_usage", out var iu) && iu.ValueKind == JsonValueKind.True;
        return new ChatCompletionRequest(model, messages, options, stream, includeUsage);
    }

    private static List<ChatMessage> ParseMessages(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var array) || array.ValueKind != JsonValueKind.Array || array.GetArrayLength() == 0)
            throw new RequestError(400, "messages must be a non-empty array.", "messages");
        var messages = new List<ChatMessage>();
        int index = 0;
        foreach (var m in array.EnumerateArray())
        {
            string field = $"messages[{index++}]";
            if (m.ValueKind != JsonValueKind.Object)
                throw new RequestError(400, $"{field} must be an object.", field);
            string role = OptionalString(m, "role") ?? throw new RequestError(400, $"{field}.role is required.", field + ".role");
            string? text = Content(m, field);
            switch (role)
            {
                case "system" or "developer":
                    messages.Add(new ChatMessage(ChatRole.System, text ?? ""));
                    break;
                case "user":
                    messages.Add(new ChatMessage(ChatRole.User, text ?? throw new RequestError(400, $"{field}.content is required.", field + ".content")));
                    break;
                case "assistant":
                    var contents = new List<AIContent>();
                    if (!string.IsNullOrEmpty(text))
                        contents.Add(new TextContent(text));
                    contents.AddRange(ToolCalls(m, field));
                    messages.Add(new ChatMessage(ChatRole.Assistant, contents));
                    break;
                case "tool":
                    string callId = OptionalString(m, "tool_call_id") ?? throw new RequestError(400, $"{field}.tool_call_id is required for a tool message.", field + ".tool_call_id");
                    messages.Add(new ChatMessage(ChatRole.Tool, [new FunctionResultContent(callId, text ?? "")]));
                    break;
                default:
                    throw new RequestError(400, $"{field}.role '{role}' is not one of system, developer, user, assistant, tool.", field + ".role");
            }
        }
        return messages;
    }

    /// <summary>A message's text: a string, or the text parts of an array (other parts are refused: this model reads text).</summary>
    private static string? Content(JsonElement m, string field)
    {
        if (!m.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null)
            return null;
        if (content.ValueKind == JsonValueKind.String)
            return content.GetString();
        if (content.ValueKind != JsonValueKind.Array)
            throw new RequestError(400, $"{field}.content must be a string or an array of parts.", field + ".content");
        var text = new System.Text.StringBuilder();
        foreach (var part in content.EnumerateArray())
        {
            if (OptionalString(part, "type") != "text" || OptionalString(part, "text") is not { } t)
                throw new RequestError(400, $"{field}.content: only text parts are supported.", field + ".content");
            text.Append(t);
        }
        return text.ToString();
    }

    private static IEnumerable<AIContent> ToolCalls(JsonElement m, string field)
    {
        if (!m.TryGetProperty("tool_calls", out var calls) || calls.ValueKind == JsonValueKind.Null)
            yield break;
        if (calls.ValueKind != JsonValueKind.Array)
            throw new RequestError(400, $"{field}.tool_calls must be an array.", field + ".tool_calls");
        foreach (var call in calls.EnumerateArray())
        {
            if (!call.TryGetProperty("function", out var function) || OptionalString(function, "name") is not { } name)
                throw new RequestError(400, $"{field}.tool_calls: each call needs function.name.", field + ".tool_calls");
            string arguments = OptionalString(function, "arguments") ?? "{}";
            Dictionary<string, object?>? parsed;
            try
            {
                parsed = JsonSerializer.Deserialize<Dictionary<string, object?>>(arguments);
            }
            catch (JsonException)
            {
                throw new RequestError(400, $"{field}.tool_calls: function.arguments of '{name}' is not a JSON object.", field + ".tool_calls");
            }
            yield return new FunctionCallContent(OptionalString(call, "id") ?? "call_" + Guid.NewGuid().ToString("N"), name, parsed);
        }
    }

    private static List<AITool>? Tools(JsonElement root)
    {
        if (!root.TryGetProperty("tools", out var tools) || tools.ValueKind == JsonValueKind.Null)
            return null;
        if (tools.ValueKind != JsonValueKind.Array)
            throw new RequestError(400, "tools must be an array.", "tools");
        var list = new List<AITool>();
        foreach (var tool in tools.EnumerateArray())
        {
            if (OptionalString(tool, "type") != "function" || !tool.TryGetProperty("function", out var f) || OptionalString(f, "name") is not { } name)
                throw new RequestError(400, "tools: each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}.", "tools");
            var schema = f.TryGetProperty("parameters", out var p) && p.ValueKind == JsonValueKind.Object
                ? p.Clone()
                : JsonDocument.Parse("""{"type":"object","properties":{}}""").RootElement.Clone();
            list.Add(AIFunctionFactory.CreateDeclaration(name, OptionalString(f, "description"), schema));
        }
        return list;
    }

    private static void ToolChoice(JsonElement root, ChatOptions options)
    {
        if (!root.TryGetProperty("tool_choice", out var choice) || choice.ValueKind == JsonValueKind.Null)
            return;
        switch (choice.ValueKind == JsonValueKind.String ? choice.GetString() : "function")
        {
            case "auto":
                options.ToolMode = ChatToolMode.Auto;
                break;
            case "none":
                options.ToolMode = ChatToolMode.None;
                options.Tools = null;
                break;
            case "required":
                options.ToolMode = ChatToolMode.RequireAny;
                break;
            case "function" when choice.TryGetProperty("function", out var f) && OptionalString(f, "name") is { } name:
                options.ToolMode = ChatToolMode.RequireSpecific(name);
                break;
            default:
                throw new RequestError(400, "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}.", "tool_choice");
        }
    }

    private static void ResponseFormat(JsonElement root, ChatOptions options)
    {
        if (!root.TryGetProperty("response_format", out var format) || format.ValueKind == JsonValueKind.Null)
            return;
        options.ResponseFormat = OptionalString(format, "type") switch
        {
            "text" => ChatResponseFormat.Text,
            "json_object" => ChatResponseFormat.Json,
            "json_schema" when format.TryGetProperty("json_schema", out var js) && js.TryGetProperty("schema", out var schema) =>
                ChatResponseFormat.ForJsonSchema(schema.Clone(), OptionalString(js, "name"), OptionalString(js, "description")),
            _ => throw new RequestError(400, "response_format.type must be text, json_object or json_schema (with json_schema.schema).", "response_format"),
        };
    }

    private static string[]? Stops(JsonElement root)
    {
        if (!root.TryGetProperty("stop", out var stop) || stop.ValueKind == JsonValueKind.Null)
            return null;
        string[] stops = stop.ValueKind switch
        {
            JsonValueKind.String => [stop.GetString()!],
            JsonValueKind.Array when stop.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String) => [.. stop.EnumerateArray().Select(e => e.GetString()!)],
            _ => throw new RequestError(400, "stop must be a string or an array of strings.", "stop"),
        };
        if (stops.Length > 4 || stops.Any(string.IsNullOrEmpty))
            throw new RequestError(400, "stop takes at most 4 non-empty strings.", "stop");
        return stops;
    }

    private static double InRange(double value, double min, double max, string field) =>
        value >= min && value <= max ? value : throw new RequestError(400, $"{field} must be between {min} and {max}, got {value}.", field);

    private static double? Number(JsonElement e, string name) =>
        !e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.Number ? v.GetDouble()
        : throw new RequestError(400, $"{name} must be a number.", name);

    private static string? OptionalString(JsonElement e, string name) =>
        e.ValueKind != JsonValueKind.Object || !e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : throw new RequestError(400, $"{name} must be a string.", name);
}
