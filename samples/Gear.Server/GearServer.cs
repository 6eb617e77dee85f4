using System.Text.Json;
using Gear.AI;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Gear.Server;

/// <summary>
/// An OpenAI-compatible HTTP front over the registered <see cref="IChatClient"/> (Gear by default):
/// <c>POST /v1/chat/completions</c>, whole or streamed as server-sent events, and <c>GET /v1/models</c>. Concurrent
/// requests decode together in the client's engine; a client that disconnects cancels its request.
/// </summary>
public static class GearServer
{
    /// <summary>Where the server listens when no address is configured.</summary>
    public const string DefaultUrl = "http://127.0.0.1:5180";

    /// <summary>
    /// The server's application: Gear registered from the "Gear" configuration section, the endpoints mapped.
    /// <paramref name="services"/> runs after Gear's registration (to replace or decorate the chat client).
    /// </summary>
    public static WebApplication Build(string[] args, Action<IServiceCollection>? services = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        // Loopback unless told otherwise (--Urls, or ASPNETCORE_URLS as .NET Aspire sets it).
        if (string.IsNullOrEmpty(builder.Configuration["urls"]))
            builder.WebHost.UseUrls(DefaultUrl);
        builder.Services.AddGearChatClient(builder.Configuration.GetSection(GearChatClientOptions.SectionName), o => o.Model = ModelLocator.Resolve(o.Model))
            .UseLogging()
            .WithWarmup(builder.Services);
        builder.Services.AddReplicaHealth();
        // Gear.AI's meter and spans, and ASP.NET Core's, through OpenTelemetry; exported over OTLP where
        // OTEL_EXPORTER_OTLP_ENDPOINT is set (as .NET Aspire sets it for the processes it starts).
        var telemetry = builder.Services.AddOpenTelemetry()
            .WithMetrics(metrics => metrics.AddMeter(GearTelemetry.Name).AddAspNetCoreInstrumentation())
            .WithTracing(tracing => tracing.AddSource(GearTelemetry.Name).AddAspNetCoreInstrumentation());
        if (!string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
            telemetry.UseOtlpExporter();
        services?.Invoke(builder.Services);
        var app = builder.Build();
        app.MapChatCompletions();
        app.MapReplicaEndpoints();
        return app;
    }

    /// <summary>Maps <c>POST /v1/chat/completions</c> and <c>GET /v1/models</c> onto the registered <see cref="IChatClient"/>.</summary>
    public static IEndpointRouteBuilder MapChatCompletions(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGet("/v1/models", (HttpContext http, IChatClient chat) =>
            Results.Bytes(ChatCompletionWriter.Models(ModelId(chat), DateTimeOffset.UtcNow.ToUnixTimeSeconds()), "application/json"));
        endpoints.MapPost("/v1/chat/completions", (HttpContext http, IChatClient chat, ILoggerFactory logs) =>
            Complete(http, chat, logs.CreateLogger(typeof(GearServer).FullName!)));
        return endpoints;
    }

    private static string ModelId(IChatClient chat) => chat.GetService<ChatClientMetadata>()?.DefaultModelId ?? "gear";

    private static async Task Complete(HttpContext http, IChatClient chat, ILogger logger)
    {
        var abort = http.RequestAborted;
        ChatCompletionRequest request;
        try
        {
            using var body = await JsonDocument.ParseAsync(http.Request.Body, cancellationToken: abort);
            request = ChatCompletionRequest.Parse(body.RootElement);
        }
        catch (JsonException e)
        {
            await Error(http, new RequestError(400, $"The request body is not valid JSON: {e.Message}"));
            return;
        }
        catch (RequestError e)
        {
            await Error(http, e);
            return;
        }
        string model = ModelId(chat);
        if (request.Model is { Length: > 0 } asked && !string.Equals(asked, model, StringComparison.OrdinalIgnoreCase))
        {
            await Error(http, new RequestError(404, $"The model '{asked}' does not exist; this server runs '{model}' (GET /v1/models).", "model", "invalid_request_error", "model_not_found"));
            return;
        }
        request.Options.ModelId = null;                                                    // checked here; the client names its own
        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (!request.Stream)
        {
            ChatResponse response;
            try
            {
                response = await chat.GetResponseAsync(request.Messages, request.Options, abort);
            }
            catch (Exception e) when (Describe(e) is { } error)
            {
                await Error(http, error);
                return;
            }
            catch (OperationCanceledException) when (abort.IsCancellationRequested)
            {
                return;                                                                        // the client left
            }
            http.Response.ContentType = "application/json";
            await http.Response.Body.WriteAsync(ChatCompletionWriter.Completion(id, created, model, response), abort);
            return;
        }
        await Stream(http, chat, request, id, created, model, logger);
    }

    /// <summary>
    /// Server-sent events in OpenAI's chunk format. The first update is awaited before the response starts, so a request
    /// refused before any work (a prompt longer than the context, a full queue) still gets its status code and error body.
    /// </summary>
    private static async Task Stream(HttpContext http, IChatClient chat, ChatCompletionRequest request, string id, long created, string model, ILogger logger)
    {
        var abort = http.RequestAborted;
        await using var updates = chat.GetStreamingResponseAsync(request.Messages, request.Options, abort).GetAsyncEnumerator(abort);
        bool any;
        try
        {
            any = await updates.MoveNextAsync();
        }
        catch (Exception e) when (Describe(e) is { } error)
        {
            await Error(http, error);
            return;
        }
        catch (OperationCanceledException) when (abort.IsCancellationRequested)
        {
            return;
        }
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        await Event(http, ChatCompletionWriter.Chunk(id, created, model, role: true, text: "", calls: null, finishReason: null));
        UsageDetails? usage = null;
        ChatFinishReason? finish = null;
        try
        {
            while (any)
            {
                var update = updates.Current;
                finish = update.FinishReason ?? finish;
                foreach (var content in update.Contents.OfType<UsageContent>())
                    usage = content.Details;
                var calls = update.Contents.OfType<FunctionCallContent>().ToList();
                if (update.Text.Length > 0 || calls.Count > 0)
                    await Event(http, ChatCompletionWriter.Chunk(id, created, model, role: false, update.Text.Length > 0 ? update.Text : null, calls, finishReason: null));
                any = await updates.MoveNextAsync();
            }
        }
        catch (OperationCanceledException) when (abort.IsCancellationRequested)
        {
            return;                                                                            // the client left: its request was cancelled
        }
        catch (Exception e)
        {
            // The status line has gone: the error becomes the stream's last event, then the connection is cut — OpenAI's
            // .NET library ignores error events and would otherwise take the truncated answer as complete.
            var error = Describe(e) ?? new RequestError(500, "The server failed while generating.", type: "server_error");
            logger.LogWarning(e, "Stream {Id} ended with an error", id);
            await Event(http, ChatCompletionWriter.Error(error.Message, error.Type, error.Param, error.Code));
            await Task.Delay(200, CancellationToken.None);                                       // time to read it: a cut discards unread data
            http.Abort();
            return;
        }
        await Event(http, ChatCompletionWriter.Chunk(id, created, model, role: false, text: null, calls: null, ChatCompletionWriter.FinishReason(finish)));
        if (request.IncludeUsage && usage is not null)
            await Event(http, ChatCompletionWriter.UsageChunk(id, created, model, usage));
        await Done(http);
    }

    /// <summary>The HTTP error for what a caller can cause or retry; null for anything else (a server fault).</summary>
    private static RequestError? Describe(Exception e) => e switch
    {
        RequestError r => r,
        ContextLengthExceededException => new RequestError(400, e.Message, "messages", code: "context_length_exceeded"),
        GearBusyException => new RequestError(429, e.Message, type: "rate_limit_error", code: "server_busy"),
        CacheBudgetExceededException => new RequestError(503, e.Message, type: "server_error", code: "cache_full"),
        DeviceOutOfMemoryException => new RequestError(503, e.Message, type: "server_error", code: "device_out_of_memory"),
        ObjectDisposedException => new RequestError(503, "The server is shutting down.", type: "server_error"),
        NotSupportedException => new RequestError(400, e.Message),
        ArgumentException a => new RequestError(400, a.Message, a.ParamName),
        _ => null,
    };

    private static async Task Error(HttpContext http, RequestError error)
    {
        http.Response.StatusCode = error.Status;
        http.Response.ContentType = "application/json";
        await http.Response.Body.WriteAsync(ChatCompletionWriter.Error(error.Message, error.Type, error.Param, error.Code));
    }

    private static async Task Event(HttpContext http, byte[] json)
    {
        await http.Response.Body.WriteAsync("data: "u8.ToArray(), http.RequestAborted);
        await http.Response.Body.WriteAsync(json, http.RequestAborted);
        await http.Response.Body.WriteAsync("\n\n"u8.ToArray(), http.RequestAborted);
        await http.Response.Body.FlushAsync(http.RequestAborted);
    }

    private static Task Done(HttpContext http) => http.Response.Body.WriteAsync("data: [DONE]\n\n"u8.ToArray(), http.RequestAborted).AsTask();
}
