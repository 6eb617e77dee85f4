using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Gear.Server;

/// <summary>Chat Completions responses in OpenAI's JSON: the whole completion, its streamed chunks, usage and errors.</summary>
internal static class ChatCompletionWriter
{
    public static string FinishReason(ChatFinishReason? reason) =>
        reason == ChatFinishReason.Length ? "length"
        : reason == ChatFinishReason.ToolCalls ? "tool_calls"
        : reason == ChatFinishReason.ContentFilter ? "content_filter"
        : "stop";

    /// <summary><c>chat.completion</c>: one choice with the reply's text and tool calls, and usage.</summary>
    public static byte[] Completion(string id, long created, string model, ChatResponse response) => Json(w =>
    {
        Header(w, id, "chat.completion", created, model);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("message");
        w.WriteString("role", "assistant");
        var calls = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().ToList();
        if (response.Text.Length > 0 || calls.Count == 0)
            w.WriteString("content", response.Text);
        else
            w.WriteNull("content");
        if (calls.Count > 0)
            ToolCalls(w, calls, withIndex: false);
        w.WriteEndObject();
        w.WriteString("finish_reason", FinishReason(response.FinishReason));
        w.WriteEndObject();
        w.WriteEndArray();
        if (response.Usage is { } usage)
            Usage(w, usage);
        w.WriteEndObject();
    });

    /// <summary>
    /// A <c>chat.completion.chunk</c> with one delta: the role (first chunk), text, tool calls, or none with the finish
    /// reason (last chunk).
    /// </summary>
    public static byte[] Chunk(string id, long created, string model, bool role, string? text, IReadOnlyList<FunctionCallContent>? calls, string? finishReason) => Json(w =>
    {
        Header(w, id, "chat.completion.chunk", created, model);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("delta");
        if (role)
            w.WriteString("role", "assistant");
        if (text is not null)
            w.WriteString("content", text);
        if (calls is { Count: > 0 })
            ToolCalls(w, calls, withIndex: true);
        w.WriteEndObject();
        if (finishReason is null)
            w.WriteNull("finish_reason");
        else
            w.WriteString("finish_reason", finishReason);
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
    });

    /// <summary>The usage chunk that closes a stream when <c>stream_options.include_usage</c> asks for it (no choices).</summary>
    public static byte[] UsageChunk(string id, long created, string model, UsageDetails usage) => Json(w =>
    {
        Header(w, id, "chat.completion.chunk", created, model);
        w.WriteStartArray("choices");
        w.WriteEndArray();
        Usage(w, usage);
        w.WriteEndObject();
    });

    /// <summary>OpenAI's error body.</summary>
    public static byte[] Error(string message, string type, string? param, string? code) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteStartObject("error");
        w.WriteString("message", message);
        w.WriteString("type", type);
        if (param is null)
            w.WriteNull("param");
        else
            w.WriteString("param", param);
        if (code is null)
            w.WriteNull("code");
        else
            w.WriteString("code", code);
        w.WriteEndObject();
        w.WriteEndObject();
    });

    /// <summary><c>GET /v1/models</c>: the one model this server runs.</summary>
    public static byte[] Models(string model, long created) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        w.WriteStartObject();
        w.WriteString("id", model);
        w.WriteString("object", "model");
        w.WriteNumber("created", created);
        w.WriteString("owned_by", "gear");
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
    });

    private static void Header(Utf8JsonWriter w, string id, string type, long created, string model)
    {
        w.WriteStartObject();
        w.WriteString("id", id);
        w.WriteString("object", type);
        w.WriteNumber("created", created);
        w.WriteString("model", model);
    }

    private static void ToolCalls(Utf8JsonWriter w, IReadOnlyList<FunctionCallContent> calls, bool withIndex)
    {
        w.WriteStartArray("tool_calls");
        for (int i = 0; i < calls.Count; i++)
        {
            w.WriteStartObject();
            if (withIndex)
                w.WriteNumber("index", i);
            w.WriteString("id", calls[i].CallId);
            w.WriteString("type", "function");
            w.WriteStartObject("function");
            w.WriteString("name", calls[i].Name);
            w.WriteString("arguments", JsonSerializer.Serialize(calls[i].Arguments ?? new Dictionary<string, object?>()));
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    private static void Usage(Utf8JsonWriter w, UsageDetails usage)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", usage.InputTokenCount ?? 0);
        w.WriteNumber("completion_tokens", usage.OutputTokenCount ?? 0);
        w.WriteNumber("total_tokens", usage.TotalTokenCount ?? (usage.InputTokenCount ?? 0) + (usage.OutputTokenCount ?? 0));
        w.WriteStartObject("prompt_tokens_details");
        w.WriteNumber("cached_tokens", usage.CachedInputTokenCount ?? 0);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static byte[] Json(Action<Utf8JsonWriter> write)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream))
            write(writer);
        return stream.ToArray();
    }
}
