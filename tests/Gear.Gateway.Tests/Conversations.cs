using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Gear.Gateway.Tests;

/// <summary>One answered turn: its token counts, the replica that answered, and how many tries it took.</summary>
public sealed record TurnResult(int Conversation, int Turn, int PromptTokens, int CompletionTokens, int CachedTokens, string Replica, int Tries,
    IReadOnlyList<string> Failures);

/// <summary>
/// Multi-turn chats as a client of an OpenAI-compatible endpoint sends them: every turn carries the whole history.
/// A turn whose request fails (an HTTP error, a stream ended by an error event, a cut connection) is sent again, as the
/// gateway's documentation tells clients to; each failure is recorded.
/// </summary>
public static class Conversations
{
    private static readonly string[] Openings =
    [
        "Tell me about the old house on the moor", "What did the doctor find in the study", "Describe the hound that walked at night",
        "Who was the stranger with the black beard", "Why did Sir Henry lose his boot", "What was written in the letter",
        "Where did the convict hide from the police", "How did the baronet die in the yew alley",
    ];

    private static readonly string[] FollowUps =
    [
        "Go on, and say more about it.", "What happened next?", "Who else was there that night?", "Why was that so strange?",
    ];

    /// <summary>Runs <paramref name="count"/> conversations of <paramref name="turns"/> turns at once; returns every turn.</summary>
    /// <paramref name="streaming"/> is told the replica of each streamed answer when its first text arrives.
    public static async Task<List<TurnResult>> RunAsync(HttpClient http, string tag, int count, int turns, bool stream, int maxTokens,
        Action<TurnResult>? answered = null, Action<string>? streaming = null, CancellationToken cancellationToken = default)
    {
        var results = await Task.WhenAll(Enumerable.Range(0, count).Select(c => Task.Run(async () =>
        {
            var list = new List<TurnResult>();
            var messages = new JsonArray { Message("user", $"{tag} {c}: {Openings[c % Openings.Length]}, part {c / Openings.Length + 1}?") };
            for (int t = 0; t < turns; t++)
            {
                var (text, result) = await SendAsync(http, messages, stream, maxTokens, c, t, streaming, cancellationToken);
                list.Add(result);
                answered?.Invoke(result);
                messages.Add(Message("assistant", text));
                messages.Add(Message("user", FollowUps[(c + t) % FollowUps.Length]));
            }
            return list;
        }, cancellationToken)));
        return [.. results.SelectMany(r => r)];
    }

    /// <summary>
    /// Cached prompt tokens over what the previous turn left on its replica (its prompt and its answer), for every turn
    /// after the first: 1.0 when each turn reuses all of its conversation's history.
    /// </summary>
    public static double CachedShare(IEnumerable<TurnResult> turns)
    {
        long cached = 0, possible = 0;
        foreach (var conversation in turns.GroupBy(t => t.Conversation))
        {
            var ordered = conversation.OrderBy(t => t.Turn).ToList();
            for (int i = 1; i < ordered.Count; i++)
            {
                possible += Math.Min(ordered[i].PromptTokens, ordered[i - 1].PromptTokens + ordered[i - 1].CompletionTokens);
                cached += ordered[i].CachedTokens;
            }
        }
        return possible == 0 ? 0 : (double)cached / possible;
    }

    private static JsonObject Message(string role, string content) => new() { ["role"] = role, ["content"] = content };

    private static async Task<(string Text, TurnResult Result)> SendAsync(HttpClient http, JsonArray messages, bool stream, int maxTokens,
        int conversation, int turn, Action<string>? streaming, CancellationToken cancellationToken)
    {
        var failures = new List<string>();
        for (int tries = 1; ; tries++)
        {
            var body = new JsonObject
            {
                ["model"] = "gear-tiny", ["messages"] = messages.DeepClone(), ["max_tokens"] = maxTokens, ["stream"] = stream,
            };
            if (stream)
                body["stream_options"] = new JsonObject { ["include_usage"] = true };
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = JsonContent.Create(body) };
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
                string replica = response.Headers.TryGetValues("x-gear-replica", out var r) ? r.Single() : "?";
                if (!response.IsSuccessStatusCode)
                    throw new InvalidOperationException($"HTTP {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}");
                var (text, usage) = stream ? await ReadStream(response, () => streaming?.Invoke(replica), cancellationToken)
                    : await ReadWhole(response, cancellationToken);
                int prompt = usage["prompt_tokens"]!.GetValue<int>(), completion = usage["completion_tokens"]!.GetValue<int>();
                int cached = usage["prompt_tokens_details"]?["cached_tokens"]?.GetValue<int>() ?? 0;
                return (text, new TurnResult(conversation, turn, prompt, completion, cached, replica, tries, failures));
            }
            catch (Exception e) when (e is HttpRequestException or IOException or InvalidOperationException && !cancellationToken.IsCancellationRequested)
            {
                failures.Add(e.Message);
                if (tries == 3)
                    throw new InvalidOperationException($"conversation {conversation}, turn {turn}: failed 3 times: {string.Join(" | ", failures)}", e);
                await Task.Delay(250, cancellationToken);
            }
        }
    }

    private static async Task<(string, JsonNode)> ReadWhole(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var json = JsonNode.Parse(await response.Content.ReadAsStringAsync(cancellationToken))!;
        return (json["choices"]![0]!["message"]!["content"]!.GetValue<string>(), json["usage"]!);
    }

    /// <summary>Server-sent events: text pieces, then a finish reason, the usage and [DONE]; an error event fails the turn.</summary>
    private static async Task<(string, JsonNode)> ReadStream(HttpResponseMessage response, Action firstText, CancellationToken cancellationToken)
    {
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken));
        var text = new StringBuilder();
        JsonNode? usage = null;
        bool finished = false, done = false;
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
                continue;
            string data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                done = true;
                break;
            }
            var chunk = JsonNode.Parse(data)!;
            if (chunk["error"] is { } error)
                throw new InvalidOperationException("stream error event: " + error.ToJsonString());
            if (chunk["usage"] is JsonObject u)
                usage = u;
            if (chunk["choices"] is JsonArray { Count: > 0 } choices)
            {
                if (choices[0]!["delta"]?["content"]?.GetValue<string>() is { Length: > 0 } piece)
                {
                    if (text.Length == 0)
                        firstText();
                    text.Append(piece);
                }
                finished |= choices[0]!["finish_reason"] is JsonValue;
            }
        }
        if (!done || !finished || usage is null)
            throw new IOException("the stream ended before its finish reason, usage and [DONE]");
        return (text.ToString(), usage);
    }
}
