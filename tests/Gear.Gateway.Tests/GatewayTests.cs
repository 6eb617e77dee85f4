using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Gear.Gateway.Tests;

/// <summary>The gateway's own rules, without replicas running: conversation keys, options, and the errors a client gets.</summary>
public class GatewayTests
{
    private static string Chat(params (string Role, string Content)[] messages) =>
        JsonSerializer.Serialize(new { model = "gear-tiny", messages = messages.Select(m => new { role = m.Role, content = m.Content }) });

    [Fact]
    public void ConversationKey_SameForEveryTurn_DifferentForAnotherConversation()
    {
        string turn1 = Chat(("system", "Be brief."), ("user", "Tell me about the moor."));
        string turn3 = Chat(("system", "Be brief."), ("user", "Tell me about the moor."), ("assistant", "It is wide."), ("user", "And the hall?"),
            ("assistant", "Old."), ("user", "Who lives there?"));
        string other = Chat(("system", "Be brief."), ("user", "Tell me about the hall."));
        string otherSystem = Chat(("system", "Be long."), ("user", "Tell me about the moor."));
        string? key = ConversationKey.Of(null, Encoding.UTF8.GetBytes(turn1));
        Assert.NotNull(key);
        Assert.Equal(key, ConversationKey.Of(null, Encoding.UTF8.GetBytes(turn3)));
        Assert.NotEqual(key, ConversationKey.Of(null, Encoding.UTF8.GetBytes(other)));
        Assert.NotEqual(key, ConversationKey.Of(null, Encoding.UTF8.GetBytes(otherSystem)));
        // An explicit id wins over the messages; no messages, not JSON or no body: no key (least loaded replica).
        Assert.Equal("id:abc", ConversationKey.Of(" abc ", Encoding.UTF8.GetBytes(turn1)));
        Assert.Null(ConversationKey.Of(null, "{\"model\":\"gear-tiny\"}"u8));
        Assert.Null(ConversationKey.Of(null, "not json"u8));
        Assert.Null(ConversationKey.Of(null, default));
    }

    [Fact]
    public void Options_Invalid_NamesEachProblem()
    {
        var e = Assert.Throws<ArgumentException>(() => GearGateway.Build(["--Gateway:Replicas:0=127.0.0.1:5181", "--Gateway:LoadPollInterval=00:00:00"]));
        Assert.Contains("'127.0.0.1:5181', which is not an absolute http(s) address", e.Message);
        Assert.Contains("Gateway:LoadPollInterval must be positive", e.Message);
        e = Assert.Throws<ArgumentException>(() => GearGateway.Build([]));
        Assert.Contains("Gateway:Replicas is empty", e.Message);
    }

    [Fact]
    public async Task NoReplicaAnswers_ClientGets503WithAnOpenAIError_AfterTryingEach()
    {
        using DeadPort a = new(), b = new();
        await using var gateway = await GatewayHost.StartAsync([a.Address, b.Address], "Affinity");
        using var http = gateway.Http();
        using var response = await http.PostAsync("/v1/chat/completions", new StringContent(Chat(("user", "Hello?")), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        using var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("no_replica", error.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains("Retry", error.RootElement.GetProperty("error").GetProperty("message").GetString());
        using var state = JsonDocument.Parse(await http.GetStringAsync("/gateway/replicas"));
        Assert.Equal(1, state.RootElement.GetProperty("retried_requests").GetInt64());        // the second replica was tried too
    }

    [Fact]
    public async Task RequestLargerThanTheLimit_Gets413()
    {
        using DeadPort a = new();
        await using var gateway = await GatewayHost.StartAsync([a.Address], "Affinity");
        using var http = gateway.Http();
        string huge = Chat(("user", new string('a', 17 << 20)));
        using var response = await http.PostAsync("/v1/chat/completions", new StringContent(huge, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Contains("Gateway:MaxRequestBytes", await response.Content.ReadAsStringAsync());
    }

    /// <summary>
    /// A loopback port held by a socket that never listens, for the test's lifetime: connecting to it is refused, and no
    /// other process (another test's server, or this gateway itself) can take it meanwhile.
    /// </summary>
    private sealed class DeadPort : IDisposable
    {
        private readonly Socket _socket = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

        public DeadPort() => _socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        public Uri Address => new($"http://127.0.0.1:{((IPEndPoint)_socket.LocalEndPoint!).Port}");

        public void Dispose() => _socket.Dispose();
    }

    [Fact]
    public async Task GatewayListedAsItsOwnReplica_Gets508_NotALoop()
    {
        // A gateway configured with its own address as its replica (a typo a user can make).
        await using var looped = await GatewayHost.StartSelfListedAsync();
        using var http = looped.Http();
        using var response = await http.PostAsync("/v1/chat/completions", new StringContent(Chat(("user", "Hello?")), Encoding.UTF8, "application/json"));
        Assert.Equal((HttpStatusCode)508, response.StatusCode);
        Assert.Contains("gateway_loop", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task ReplicaDiesMidStream_TheOfficialOpenAIClientFails_InsteadOfTakingATruncatedAnswer()
    {
        // A replica that streams one piece of an answer and then drops its connection, as a crashed process would.
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        await using var replica = builder.Build();
        replica.MapGet("/health/ready", () => "Healthy");
        replica.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            http.Response.ContentType = "text/event-stream";
            await http.Response.WriteAsync("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gear-tiny\"," +
                "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"The moor\"},\"finish_reason\":null}]}\n\n");
            await http.Response.Body.FlushAsync();
            await Task.Delay(300);
            http.Abort();
        });
        await replica.StartAsync();
        await using var gateway = await GatewayHost.StartAsync([new Uri(replica.Urls.Single())], "Affinity");
        var client = new OpenAI.Chat.ChatClient("gear-tiny", new System.ClientModel.ApiKeyCredential("not-needed"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(gateway.Address, "/v1"), RetryPolicy = new System.ClientModel.Primitives.ClientRetryPolicy(0) });
        var text = new StringBuilder();
        var failure = await Record.ExceptionAsync(async () =>
        {
            await foreach (var update in client.CompleteChatStreamingAsync([new OpenAI.Chat.UserChatMessage("Tell me about the moor.")]))
                foreach (var part in update.ContentUpdate)
                    text.Append(part.Text);
        });
        Assert.Equal("The moor", text.ToString());                                            // the piece that came
        Assert.NotNull(failure);                                                              // and then an error, not a quiet end
    }
}
