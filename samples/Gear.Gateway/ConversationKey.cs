using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Gear.Gateway;

/// <summary>
/// What ties the turns of one conversation together when every turn sends the whole history: the client's
/// <c>X-Conversation-Id</c> header when it sends one, else a hash of the model and the messages up to and including the
/// first user message (they open every later turn of the same conversation unchanged).
/// </summary>
public static class ConversationKey
{
    /// <summary>The header a client may send to name its conversation.</summary>
    public const string Header = "X-Conversation-Id";

    /// <summary>The key of a chat-completions request, or null when it has none (no messages, not JSON, another endpoint).</summary>
    public static string? Of(string? conversationId, ReadOnlySpan<byte> body)
    {
        if (!string.IsNullOrWhiteSpace(conversationId))
            return "id:" + conversationId.Trim();
        if (body.IsEmpty)
            return null;
        try
        {
            var reader = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref reader);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
                return null;
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            if (root.TryGetProperty("model", out var model))
                Append(hash, model.ToString());
            bool any = false;
            foreach (var message in messages.EnumerateArray())
            {
                if (message.ValueKind != JsonValueKind.Object)
                    return null;
                string role = message.TryGetProperty("role", out var r) ? r.ToString() : "";
                Append(hash, role);
                Append(hash, message.TryGetProperty("content", out var content) ? content.GetRawText() : "");
                any = true;
                if (role == "user")
                    break;
            }
            return any ? "h:" + Convert.ToBase64String(hash.GetHashAndReset(), 0, 16) : null;
        }
        catch (JsonException)
        {
            return null;                                                                       // the replica answers 400
        }
    }

    private static void Append(IncrementalHash hash, string text)
    {
        hash.AppendData(Encoding.UTF8.GetBytes(text));
        hash.AppendData([0]);
    }
}
