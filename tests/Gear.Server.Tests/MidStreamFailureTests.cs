using System.Runtime.CompilerServices;
using Microsoft.Extensions.DependencyInjection;
using MEAI = Microsoft.Extensions.AI;

namespace Gear.Server.Tests;

/// <summary>A failure after a stream has begun reaches the client as a failure, not as a shorter answer.</summary>
public class MidStreamFailureTests
{
    /// <summary>Streams one piece of text, then fails as a device running out of memory mid-answer would.</summary>
    private sealed class FailingChatClient : MEAI.IChatClient
    {
        public Task<MEAI.ChatResponse> GetResponseAsync(IEnumerable<MEAI.ChatMessage> messages, MEAI.ChatOptions? options = null, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public async IAsyncEnumerable<MEAI.ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<MEAI.ChatMessage> messages, MEAI.ChatOptions? options = null,
            [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            yield return new MEAI.ChatResponseUpdate(MEAI.ChatRole.Assistant, "The moor");
            await Task.Delay(100, cancellationToken);
            throw new InvalidOperationException("the engine failed");
        }

        public object? GetService(Type serviceType, object? serviceKey = null) =>
            serviceType == typeof(MEAI.ChatClientMetadata) ? new MEAI.ChatClientMetadata("failing", null, "gear-tiny") : null;

        public void Dispose()
        {
        }
    }

    [Fact]
    public async Task FailureMidStream_RawClientReadsTheErrorEvent_OfficialClientThrows()
    {
        await using var server = await LoopbackServer.StartAsync([], services => services.AddSingleton<MEAI.IChatClient>(new FailingChatClient()));

        // A client that reads server-sent events sees the error event before the connection closes.
        using (var http = server.Http())
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent("""{"model": "gear-tiny", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}""",
                    System.Text.Encoding.UTF8, "application/json"),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var events = new List<string>();
            try
            {
                while (await reader.ReadLineAsync() is { } line)
                    if (line.StartsWith("data: ", StringComparison.Ordinal))
                        events.Add(line);
            }
            catch (IOException)
            {
                // the connection was cut after the error event
            }
            Assert.Contains(events, e => e.Contains("The moor", StringComparison.Ordinal));
            Assert.Contains(events, e => e.Contains("\"error\"", StringComparison.Ordinal) && e.Contains("server_error", StringComparison.Ordinal));
            Assert.DoesNotContain("data: [DONE]", events);
        }

        // The official .NET client, which ignores error events, fails on the closed connection instead of ending quietly.
        var chat = server.OpenAI("gear-tiny");
        var text = new System.Text.StringBuilder();
        var failure = await Record.ExceptionAsync(async () =>
        {
            await foreach (var update in chat.CompleteChatStreamingAsync([new OpenAI.Chat.UserChatMessage("Hi")]))
                foreach (var part in update.ContentUpdate)
                    text.Append(part.Text);
        });
        Assert.Equal("The moor", text.ToString());
        Assert.NotNull(failure);
    }
}
