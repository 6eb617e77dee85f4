using System.Diagnostics;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;
using Xunit.Abstractions;

namespace Gear.AI.Tests;

/// <summary>Cancellation, load and soak: nothing leaks, nothing is corrupted, the client keeps working.</summary>
[Collection(MeasuredCollection.Name)]
public class ReliabilityTests(ITestOutputHelper output)
{
    private static readonly ChatMessage[] Story = [new(ChatRole.User, "Once upon a time")];

    [Fact]
    public async Task Cancel200TimesAtRandomPoints_NoLeaks_NextRequestCorrect()
    {
        using var client = TestClients.Create(o => { o.Cache = CacheKind.Gear; o.Bits = 2; });
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 24 };
        string expected = (await client.GetResponseAsync(Story, greedy)).Text;
        long baseline = client.LiveTensors - client.CacheStatistics.Sessions * 0; // warm state, one resident session
        var rng = new Random(1);
        int cancelled = 0;
        for (int run = 0; run < 200; run++)
        {
            using var cts = new CancellationTokenSource();
            // Cancel before the request starts, during prefill (first token pending) or mid-decode.
            int mode = rng.Next(3);
            int afterUpdates = rng.Next(1, 20);
            if (mode == 0)
                cts.Cancel();
            else if (mode == 1)
                cts.CancelAfter(TimeSpan.FromMilliseconds(rng.Next(0, 3)));
            var prompt = new[] { new ChatMessage(ChatRole.User, $"Once upon a time there was a bird {run % 7}") };
            try
            {
                int seen = 0;
                await foreach (var _ in client.GetStreamingResponseAsync(prompt, new ChatOptions { Temperature = 0.8f, Seed = run, MaxOutputTokens = 40 }, cts.Token))
                {
                    if (mode == 2 && ++seen == afterUpdates)
                        cts.Cancel();
                }
            }
            catch (OperationCanceledException)
            {
                cancelled++;
            }
        }
        Assert.True(cancelled > 100, $"only {cancelled} runs were cancelled");
        var stats = client.CacheStatistics;
        // Every tensor still alive belongs to a resident session's cache; cancelled requests keep none.
        var again = await client.GetResponseAsync(Story, greedy);
        Assert.Equal(expected, again.Text);
        output.WriteLine($"cancelled {cancelled}/200, sessions {stats.Sessions}, live tensors {client.LiveTensors} (baseline {baseline})");
        using var fresh = TestClients.Create(o => { o.Cache = CacheKind.Gear; o.Bits = 2; });
        Assert.Equal(expected, (await fresh.GetResponseAsync(Story, greedy)).Text);
    }

    [Fact]
    public async Task CancelledRequests_ReleaseTheirTensors()
    {
        using var client = TestClients.Create(o => { o.MaxSessions = 1; });
        await client.GetResponseAsync(Story, new ChatOptions { MaxOutputTokens = 4 });
        long baseline = client.LiveTensors;
        for (int i = 0; i < 20; i++)
        {
            using var cts = new CancellationTokenSource();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
            {
                int n = 0;
                await foreach (var _ in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, $"The frog {i}")], new ChatOptions { MaxOutputTokens = 50 }, cts.Token))
                    if (++n == 3) cts.Cancel();
            });
        }
        Assert.Equal(baseline, client.LiveTensors);
    }

    [Fact]
    public async Task ThirtyTwoConcurrentStreams_CompleteOrCancel_MatchSerial_StayWithinBudget()
    {
        const long budget = 600_000;
        var prompts = Enumerable.Range(0, 32).Select(i => new[] { new ChatMessage(ChatRole.User, $"Once upon a time, a kid named Sam number {i} found") }).ToArray();
        ChatOptions Options(int i) => new() { Seed = 1000 + i, Temperature = 0.9f, MaxOutputTokens = 12 };
        using var serialClient = TestClients.Create(o => o.CacheBudgetBytes = budget);
        var serial = new string[32];
        for (int i = 0; i < 32; i++)
            serial[i] = (await serialClient.GetResponseAsync(prompts[i], Options(i))).Text;

        using var client = TestClients.Create(o => o.CacheBudgetBytes = budget);
        await client.GetResponseAsync(Story, new ChatOptions { MaxOutputTokens = 2 });
        long baselineTensors = client.LiveTensors;
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        long maxResident = 0;
        var watcher = Task.Run(async () =>
        {
            while (!deadline.IsCancellationRequested)
            {
                maxResident = Math.Max(maxResident, client.CacheStatistics.ResidentBytes);
                await Task.Delay(20);
            }
        });
        var cancelEvery4th = Enumerable.Range(0, 32).Select(i => i % 4 == 3 ? new CancellationTokenSource() : null).ToArray();
        for (int i = 3; i < 32; i += 8)
            cancelEvery4th[i]!.Cancel(); // half of them are cancelled before they start, so some surely end cancelled
        var tasks = Enumerable.Range(0, 32).Select(i => Task.Run(async () =>
        {
            var text = new System.Text.StringBuilder();
            var token = cancelEvery4th[i]?.Token ?? deadline.Token;
            try
            {
                await foreach (var u in client.GetStreamingResponseAsync(prompts[i], Options(i), token))
                {
                    text.Append(u.Text);
                    if (cancelEvery4th[i] is { } c && text.Length > 0)
                        c.Cancel();
                }
                return (Completed: true, Text: text.ToString());
            }
            catch (OperationCanceledException)
            {
                return (Completed: false, Text: "");
            }
        })).ToArray();
        var results = await Task.WhenAll(tasks);
        deadline.Cancel();
        await watcher;
        for (int i = 0; i < 32; i++)
        {
            // A cancellation that arrives after the last token may legitimately find the request complete.
            if (results[i].Completed)
                Assert.Equal(serial[i], results[i].Text);
            else
                Assert.True(i % 4 == 3, $"request {i} was cancelled without being asked to");
        }
        Assert.Contains(results, r => !r.Completed);
        Assert.True(maxResident <= budget, $"resident {maxResident} > budget {budget}");
        Assert.True(client.CacheStatistics.ResidentBytes <= budget);
        output.WriteLine($"max resident {maxResident:N0} of {budget:N0}; live tensors {client.LiveTensors} (baseline {baselineTensors}), sessions {client.CacheStatistics.Sessions}");
        foreach (var c in cancelEvery4th) c?.Dispose();
    }

    [Fact]
    public async Task Soak1000MultiTurnRequests_LiveTensorsAndMemoryFlat()
    {
        using var client = TestClients.Create(o => { o.MaxSessions = 4; o.Bits = 2; });
        var conversation = new List<ChatMessage>();
        long tensorsAt100 = 0, memoryAt100 = 0;
        var clock = Stopwatch.StartNew();
        for (int i = 1; i <= 1000; i++)
        {
            if (i % 10 == 1)
                conversation.Clear(); // a new conversation every 10 turns
            conversation.Add(new ChatMessage(ChatRole.User, $"Turn {i % 10}: the bird sang."));
            var response = await client.GetResponseAsync(conversation, new ChatOptions { MaxOutputTokens = 3, Seed = i });
            conversation.AddRange(response.Messages);
            if (i == 100)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                tensorsAt100 = client.LiveTensors;
                memoryAt100 = Process.GetCurrentProcess().WorkingSet64;
            }
        }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long tensorsAt1000 = client.LiveTensors, memoryAt1000 = Process.GetCurrentProcess().WorkingSet64;
        output.WriteLine($"1000 requests in {clock.Elapsed.TotalSeconds:F1} s; live tensors {tensorsAt100} after 100, {tensorsAt1000} after 1000; " +
                         $"working set {memoryAt100 / 1048576.0:F1} MiB after 100, {memoryAt1000 / 1048576.0:F1} MiB after 1000");
        // Resident sessions hold a bounded number of tensors; growth beyond that would be a leak.
        Assert.InRange(tensorsAt1000, 0, tensorsAt100 + 200);
        Assert.True(memoryAt1000 - memoryAt100 < 64L << 20, $"working set grew {(memoryAt1000 - memoryAt100) / 1048576.0:F1} MiB");
    }

    [Fact]
    public async Task BadRequests_DocumentedOutcomes()
    {
        using var client = TestClients.Create();
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([]));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.System, "x")]));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(new ChatRole("robot"), "x")]));
        await Assert.ThrowsAsync<ContextLengthExceededException>(() => client.GetResponseAsync(Story, new ChatOptions { MaxOutputTokens = 1_000_000 }));
        var negative = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Story, new ChatOptions { Temperature = -1 }));
        Assert.Contains("Temperature", negative.Message);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Story, new ChatOptions { TopP = 0 }));
        // Lone surrogates (text that is not valid Unicode, e.g. from bad UTF-8 decoding) are encoded like any
        // other character the tokenizer lacks: the request succeeds.
        var odd = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once \uD800 upon \uDFFF a time")], new ChatOptions { MaxOutputTokens = 4 });
        Assert.Equal(4, odd.Usage!.OutputTokenCount);
        // The client is unharmed by all of the above.
        Assert.False(string.IsNullOrEmpty((await client.GetResponseAsync(Story, new ChatOptions { MaxOutputTokens = 4 })).Text));
    }
}
