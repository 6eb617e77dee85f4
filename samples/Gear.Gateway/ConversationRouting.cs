using System.Text;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace Gear.Gateway;

/// <summary>
/// The gateway's step of YARP's proxy pipeline, before load balancing. It reads the request body once (to find the
/// conversation, <see cref="ConversationKey"/>) and forwards it; when a replica cannot be reached or fails before the
/// response has begun, the same request goes to another healthy replica (the client sees one slower answer); when a
/// replica fails while a streamed answer is flowing, the stream gets an OpenAI-style error event and the connection is
/// closed, so that every client sees a failure it can retry. Afterwards the conversation is remembered on the replica
/// that answered.
/// </summary>
public sealed class ConversationRouting(RequestDelegate next, ReplicaBook book, IOptions<GatewayOptions> options, ILogger<ConversationRouting> logger)
{
    private const string KeyItem = "gear.conversation";

    /// <summary>Response header naming the replica (YARP destination id) that answered.</summary>
    public const string ReplicaHeader = "x-gear-replica";

    /// <summary>The conversation key this step found for the request (null when none).</summary>
    public static string? KeyOf(HttpContext context) => context.Items.TryGetValue(KeyItem, out var key) ? key as string : null;

    /// <summary>Request header naming each gateway a request passed through (a gateway listed as its own replica is refused).</summary>
    public const string ViaHeader = "x-gear-gateway";

    private static readonly string Instance = Guid.NewGuid().ToString("N")[..12];

    /// <summary>How long a client gets to read a stream's error event before the connection is cut (a cut discards unread data).</summary>
    private static readonly TimeSpan ErrorEventGrace = TimeSpan.FromMilliseconds(200);

    public async Task InvokeAsync(HttpContext context)
    {
        var proxy = context.GetReverseProxyFeature();
        if (context.Request.Headers[ViaHeader].Contains(Instance))
        {
            await WriteError(context, StatusCodes.Status508LoopDetected,
                "The request came back to the gateway that sent it: Gateway:Replicas lists this gateway's own address.", "server_error", "gateway_loop");
            return;
        }
        context.Request.Headers.Append(ViaHeader, Instance);
        byte[]? body = null;
        if (context.Request.ContentLength is > 0 || context.Request.Headers.TransferEncoding.Count > 0)
        {
            body = await ReadBody(context, options.Value.MaxRequestBytes);
            if (body is null)
            {
                await WriteError(context, StatusCodes.Status413PayloadTooLarge,
                    $"The request body is larger than the gateway's Gateway:MaxRequestBytes ({options.Value.MaxRequestBytes:N0} bytes).", "invalid_request_error", "request_too_large");
                return;
            }
        }
        context.Items[KeyItem] = ConversationKey.Of(context.Request.Headers[ConversationKey.Header], body);

        var healthy = proxy.AvailableDestinations;
        var tried = new List<DestinationState>();
        var realLifetime = context.Features.GetRequiredFeature<IHttpRequestLifetimeFeature>();
        var lifetime = new DeferredAbort(realLifetime);
        context.Features.Set<IHttpRequestLifetimeFeature>(lifetime);
        var responseBody = new EventBoundaryStream(context.Response.Body);
        context.Response.Body = responseBody;
        context.Response.OnStarting(static state =>
        {
            var c = (HttpContext)state;
            if (c.GetReverseProxyFeature().ProxiedDestination is { } d)
                c.Response.Headers[ReplicaHeader] = d.DestinationId;
            return Task.CompletedTask;
        }, context);
        try
        {
            while (true)
            {
                var remaining = healthy.Where(d => !tried.Contains(d)).ToList();
                if (remaining.Count == 0)
                {
                    await WriteError(context, StatusCodes.Status503ServiceUnavailable, tried.Count == 0
                        ? "No replica is ready: every Gear.Server behind this gateway is down, loading or shutting down. Retry shortly."
                        : $"No replica could take the request ({tried.Count} tried). Retry shortly.", "server_error", "no_replica");
                    return;
                }
                if (tried.Count > 0)
                    book.CountRetry();
                proxy.AvailableDestinations = remaining;
                if (body is not null)
                    context.Request.Body = new MemoryStream(body, writable: false);
                context.Features.Set<IForwarderErrorFeature>(null);

                var picked = await Forward(context);
                var error = context.Features.Get<IForwarderErrorFeature>();
                if (error is null || error.Error == ForwarderError.None)
                {
                    if (picked is not null)
                        Count(context, picked.DestinationId);
                    return;
                }
                if (picked is null || lifetime.ClientGone || !ReplicaFailed(error.Error))
                {
                    lifetime.AbortIfRequested();                                               // YARP's own handling stands
                    return;
                }
                tried.Add(picked);
                if (!context.Response.HasStarted)
                {
                    logger.LogWarning("Replica {Replica} failed before answering ({Error}); trying another.", picked.DestinationId, error.Error);
                    context.Response.Clear();
                    context.Response.StatusCode = StatusCodes.Status200OK;
                    continue;
                }
                // The answer had begun: a stream cut between two events gets an error event (clients that read error events,
                // like OpenAI's Python library, raise it), then the connection is cut either way, so that a client that
                // ignores error events (OpenAI's .NET library does) still fails instead of taking a truncated answer.
                logger.LogWarning("Replica {Replica} failed while answering ({Error}).", picked.DestinationId, error.Error);
                if (context.Response.ContentType?.StartsWith("text/event-stream", StringComparison.Ordinal) == true && responseBody.AtEventBoundary)
                {
                    await responseBody.WriteAsync(Encoding.UTF8.GetBytes(
                        "data: {\"error\":{\"message\":\"The replica serving this stream failed; retry the request (the gateway sends it to another replica).\"," +
                        "\"type\":\"server_error\",\"param\":null,\"code\":\"replica_failed\"}}\n\n"), context.RequestAborted);
                    await responseBody.FlushAsync(context.RequestAborted);
                    book.CountEndedStream();
                    await Task.Delay(ErrorEventGrace, CancellationToken.None);                   // time to read it before the cut
                }
                realLifetime.Abort();
                return;
            }
        }
        finally
        {
            context.Features.Set(realLifetime);
        }
    }

    /// <summary>
    /// Errors where the replica, not the client or a timeout, failed: it could not be reached, or broke the connection
    /// while receiving the request or sending the answer. (A timed-out request is not sent again: it would load a second
    /// replica with the same slow work.)
    /// </summary>
    private static bool ReplicaFailed(ForwarderError error) =>
        error is ForwarderError.Request or ForwarderError.RequestBodyDestination or ForwarderError.ResponseBodyDestination;

    /// <summary>Counts the answered request by how it was routed, and remembers where its conversation now lives.</summary>
    private void Count(HttpContext context, string replica)
    {
        string route = "none";
        if (KeyOf(context) is { } key)
        {
            string? before = book.HolderOf(key);
            route = before is null ? "new" : before == replica ? "affinity" : "moved";
            if (context.Response.StatusCode < 500)
                book.Remember(key, replica);
        }
        GatewayTelemetry.Requests.Add(1, new KeyValuePair<string, object?>("gear.route", route), new KeyValuePair<string, object?>("gear.replica", replica));
    }

    /// <summary>One attempt: YARP's load balancing picks a replica among those left, and YARP forwards to it.</summary>
    private async Task<DestinationState?> Forward(HttpContext context)
    {
        var proxy = context.GetReverseProxyFeature();
        proxy.ProxiedDestination = null;
        await next(context);
        return proxy.ProxiedDestination;
    }

    /// <summary>The step after load balancing: the request counts against its replica while it is in flight.</summary>
    public static async Task CountInFlight(HttpContext context, Func<Task> next)
    {
        var book = context.RequestServices.GetRequiredService<ReplicaBook>();
        var chosen = context.GetReverseProxyFeature().AvailableDestinations is [var one] ? one.DestinationId : null;
        if (chosen is not null)
            book.Begin(chosen);
        try
        {
            await next();
        }
        finally
        {
            if (chosen is not null)
                book.End(chosen);
        }
    }

    private static async Task<byte[]?> ReadBody(HttpContext context, int limit)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int n;
        while ((n = await context.Request.Body.ReadAsync(chunk, context.RequestAborted)) > 0)
        {
            if (buffer.Length + n > limit)
                return null;
            buffer.Write(chunk, 0, n);
        }
        return buffer.ToArray();
    }

    private static async Task WriteError(HttpContext context, int status, string message, string type, string code)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        var json = System.Text.Json.JsonSerializer.Serialize(new { error = new { message, type, param = (string?)null, code } });
        await context.Response.WriteAsync(json, context.RequestAborted);
    }

    /// <summary>Holds back YARP's abort of a response it cannot finish, so the step can end a stream with an error event.</summary>
    private sealed class DeferredAbort(IHttpRequestLifetimeFeature inner) : IHttpRequestLifetimeFeature
    {
        private bool _requested;

        public CancellationToken RequestAborted { get => inner.RequestAborted; set => inner.RequestAborted = value; }

        public bool ClientGone => inner.RequestAborted.IsCancellationRequested;

        public void Abort() => _requested = true;

        public void AbortIfRequested()
        {
            if (_requested)
                inner.Abort();
        }
    }
}
