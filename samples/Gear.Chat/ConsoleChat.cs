using System.Diagnostics;
using Gear.AI;
using Microsoft.Extensions.AI;

/// <summary>One-shot and interactive chat on a console; the client keeps the compressed cache between turns.</summary>
internal sealed class ConsoleChat(GearChatClient client, ChatOptions options)
{
    private readonly List<ChatMessage> _conversation = [];

    public async Task<int> OnceAsync(string prompt, CancellationToken ct)
    {
        await ReplyAsync([new ChatMessage(ChatRole.User, prompt)], ct);
        return 0;
    }

    public async Task<int> InteractiveAsync(TextReader input, CancellationToken ct)
    {
        var o = client.Options;
        Console.Error.WriteLine($"Gear.Chat — {Path.GetFileName(o.Model)}, {o.Cache} cache" + (o.Cache == Gear.AI.Compression.CacheKind.Fp16 ? "" : $" at {o.Bits} bits") +
                                ". Empty line or Ctrl+D quits; Ctrl+C stops a reply; ↑/↓ recall earlier lines.");
        // On a terminal the line can be edited and earlier lines recalled; piped input is read as it comes.
        var editor = ReferenceEquals(input, Console.In) && !Console.IsInputRedirected
            ? new LineEditor(() => Console.ReadKey(intercept: true), Console.Error.Write)
            : null;
        while (!ct.IsCancellationRequested)
        {
            string? line;
            if (editor is not null)
                line = editor.ReadLine("> ");
            else
            {
                Console.Error.Write("> ");
                line = await input.ReadLineAsync(ct);
            }
            if (string.IsNullOrWhiteSpace(line))
                return 0;
            _conversation.Add(new ChatMessage(ChatRole.User, line));
            using var stop = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; stop.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try
            {
                var (reply, dropped) = await ReplyAsync(_conversation, stop.Token);
                if (dropped > 0)
                {
                    // The client left the oldest messages out to fit the context: the conversation here does the same.
                    Console.Error.WriteLine($"(the oldest {dropped} message{(dropped == 1 ? "" : "s")} no longer fit the model's context and {(dropped == 1 ? "was" : "were")} left out)");
                    for (int i = 0; i < dropped; i++)
                        _conversation.RemoveAt(_conversation.FindIndex(m => m.Role != ChatRole.System));
                }
                _conversation.Add(reply);
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("\n(stopped)");
                _conversation.RemoveAt(_conversation.Count - 1);
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        }
        return 0;
    }

    private async Task<(ChatMessage Reply, int DroppedMessages)> ReplyAsync(IReadOnlyList<ChatMessage> messages, CancellationToken ct)
    {
        var updates = new List<ChatResponseUpdate>();
        var clock = Stopwatch.StartNew();
        TimeSpan? first = null;
        await foreach (var update in client.GetStreamingResponseAsync(messages, options, ct))
        {
            if (update.Text.Length > 0)
            {
                first ??= clock.Elapsed;
                Console.Out.Write(update.Text);
                Console.Out.Flush();
            }
            updates.Add(update);
        }
        Console.Out.WriteLine();
        var response = updates.ToChatResponse();
        var usage = response.Usage!;
        long resident = usage.AdditionalCounts?.GetValueOrDefault("gear.kv.resident_bytes") ?? 0;
        long fp16 = usage.AdditionalCounts?.GetValueOrDefault("gear.kv.fp16_bytes") ?? 0;
        long tokens = usage.AdditionalCounts?.GetValueOrDefault("gear.kv.tokens") ?? 0;
        int dropped = (int)(usage.AdditionalCounts?.GetValueOrDefault("gear.dropped_messages") ?? 0);
        double decodeSeconds = (clock.Elapsed - (first ?? clock.Elapsed)).TotalSeconds;
        double speed = decodeSeconds > 0 ? Math.Max(0, (usage.OutputTokenCount ?? 0) - 1) / decodeSeconds : 0;
        // The FP16 cache holds whole 64-token pages: what its tokens use, and the room left in its last page, apart.
        string kv = client.Options.Cache == Gear.AI.Compression.CacheKind.Fp16
            ? $"KV cache {tokens} tokens in {Format(fp16)} (FP16; pages hold {Format(resident)})"
            : $"KV cache {tokens} tokens in {Format(resident)}, {(fp16 == 0 ? 0 : (double)resident / fp16):F2}x of FP16's {Format(fp16)}";
        Console.Error.WriteLine(
            $"[prompt {usage.InputTokenCount} tokens ({usage.CachedInputTokenCount ?? 0} from the cache), {usage.OutputTokenCount} generated at " +
            $"{speed:F1} tokens/s, first token after {first?.TotalMilliseconds ?? 0:F0} ms; {kv}; {Finish(response.FinishReason)}]");
        return (response.Messages.LastOrDefault() ?? new ChatMessage(ChatRole.Assistant, ""), dropped);
    }

    private static string Finish(ChatFinishReason? reason) =>
        reason == ChatFinishReason.Stop ? "the model finished its answer"
        : reason == ChatFinishReason.Length ? "stopped at the token limit (--max-tokens)"
        : reason == ChatFinishReason.ToolCalls ? "the model called a tool"
        : "stopped";

    private static string Format(long bytes) => bytes switch
    {
        >= 1 << 30 => $"{bytes / (double)(1 << 30):F2} GiB",
        >= 1 << 20 => $"{bytes / (double)(1 << 20):F2} MiB",
        >= 1 << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };
}
