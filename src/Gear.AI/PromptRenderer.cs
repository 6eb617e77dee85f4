using Gear.AI.Llama.Chat;
using Microsoft.Extensions.AI;
using LlamaChatRole = Gear.AI.Llama.Chat.ChatRole;
using AIChatRole = Microsoft.Extensions.AI.ChatRole;

namespace Gear.AI;

/// <summary>Turns Microsoft.Extensions.AI messages and options into the turns a chat template renders.</summary>
internal static class PromptRenderer
{
    /// <summary>
    /// System instructions first (ChatOptions.Instructions, then the tools' description, then the JSON response format's
    /// schema), then each message.
    /// </summary>
    /// <exception cref="ArgumentException">No messages, only system messages, an unknown role or non-text content.</exception>
    public static List<ChatTurn> Turns(IReadOnlyList<ChatMessage> messages, ChatOptions? options)
    {
        if (messages.Count == 0)
            throw new ArgumentException("At least one message is required.", nameof(messages));
        if (messages.All(m => m.Role == AIChatRole.System))
            throw new ArgumentException("Only system messages were given; add a user message for the model to answer.", nameof(messages));
        var turns = new List<ChatTurn>();
        if (!string.IsNullOrWhiteSpace(options?.Instructions))
            turns.Add(new ChatTurn(LlamaChatRole.System, options.Instructions));
        var tools = Tools(options);
        if (tools.Count > 0)
            turns.Add(new ChatTurn(LlamaChatRole.System, ToolCalling.DescribeTools(tools, options!.ToolMode is RequiredChatToolMode)));
        if (options?.ResponseFormat is ChatResponseFormatJson json)
            turns.Add(new ChatTurn(LlamaChatRole.System, json.Schema is { } schema
                ? $"Answer with JSON only: a value that matches this JSON schema{(json.SchemaName is { } name ? $" ({name})" : "")}: {schema.GetRawText()}"
                : "Answer with JSON only: one JSON object."));
        foreach (var message in messages)
            turns.Add(Turn(message));
        return turns;
    }

    /// <summary>The function tools the model may call (none when ToolMode is None; the one named by RequireSpecific).</summary>
    /// <exception cref="ArgumentException">RequireSpecific names a function that is not among the tools.</exception>
    public static IReadOnlyList<AIFunctionDeclaration> Tools(ChatOptions? options)
    {
        if (options?.Tools is not { Count: > 0 } tools || options.ToolMode is NoneChatToolMode)
            return [];
        var functions = tools.OfType<AIFunctionDeclaration>().ToArray();
        if (options.ToolMode is RequiredChatToolMode { RequiredFunctionName: { } name })
            return functions.Where(f => f.Name == name).ToArray() is { Length: > 0 } named ? named
                : throw new ArgumentException($"ToolMode requires the function '{name}', which is not among ChatOptions.Tools ({string.Join(", ", functions.Select(f => f.Name))}).", nameof(options));
        return functions;
    }

    private static ChatTurn Turn(ChatMessage message)
    {
        var role = message.Role == AIChatRole.System ? LlamaChatRole.System
            : message.Role == AIChatRole.User ? LlamaChatRole.User
            : message.Role == AIChatRole.Assistant ? LlamaChatRole.Assistant
            : message.Role == AIChatRole.Tool ? LlamaChatRole.Tool
            : throw new ArgumentException($"Message role '{message.Role}' is not supported; use system, user, assistant or tool.", nameof(message));
        var parts = new List<string>();
        foreach (var content in message.Contents)
        {
            parts.Add(content switch
            {
                TextContent t => t.Text,
                FunctionCallContent call => ToolCalling.RenderCall(call),
                FunctionResultContent result => ToolCalling.RenderResult(result),
                TextReasoningContent => string.Empty,
                UsageContent => string.Empty,
                _ => throw new ArgumentException($"Content of type {content.GetType().Name} is not supported: Gear.AI models read text, tool calls and tool results.", nameof(message)),
            });
        }
        return new ChatTurn(role, string.Join("\n", parts.Where(p => p.Length > 0)));
    }
}
