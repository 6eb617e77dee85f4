using System.Diagnostics;
using Gear.AI.Compression;
using Gear.AI.Engine;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;
using Xunit.Abstractions;

namespace Gear.AI.Tests;

/// <summary>
/// Concurrent requests decode together and each answers as it would alone. Exact equality is asserted on the FP16 cache:
/// CPU GEMMs round a row differently depending on how many rows share the call (MKL computes rows in blocks of four and
/// the rest apart, and one row as a matrix-vector product), differences of ~1e-5 that leave FP16 greedy and seeded choices
/// alone but can flip a 2-bit code, after which a long compressed continuation may take another path.
/// </summary>
[Collection(MeasuredCollection.Name)]
public class ConcurrencyTests(ITestOutputHelper output)
{
    private static GearChatClient GearTiny(Action<GearChatClientOptions>? configure = null)
    {
        var options = new GearChatClientOptions { Model = TestClients.GearTiny.Directory, Cache = CacheKind.Gear, Bits = 2, DefaultTemperature = 0 };
        configure?.Invoke(options);
        return new GearChatClient(TestClients.GearTiny, options);
    }

    private static readonly string[] Subjects =
    [
        "a lighthouse keeper", "the moors at night", "a missing letter", "a dog on the heath", "the old manor",
        "a train to London", "a locked study", "a stranger's boots", "the butler's diary", "a candle in the window",
        "fog on the river", "a hidden staircase", "a broken watch", "the village doctor", "a telegram", "the last witness",
    ];

    /// <summary>Sixteen requests that differ in sampling, length, stops and (every third) cache setting.</summary>
    private static (ChatMessage[] Messages, ChatOptions Options)[] SixteenRequests() =>
        [.. Subjects.Select((subject, i) =>
        {
            var options = new ChatOptions { MaxOutputTokens = 12 + 3 * (i % 5) };
            if (i % 2 == 1)
            {
                options.Temperature = 0.9f;
                options.TopP = 0.95f;
                options.Seed = 100 + i;
            }
            else
            {
                options.Temperature = 0;
            }
            if (i % 4 == 2)
                options.StopSequences = ["."];
            if (i % 8 == 3)
                options.FrequencyPenalty = 0.5f;
            if (i % 3 == 0)
                options.AdditionalProperties = new() { ["gear.cache"] = i % 2 == 0 ? "gear" : "kivi", ["gear.bits"] = 4 };
            return (new[] { new ChatMessage(ChatRole.User, $"Tell me about {subject}.") }, options);
        })];

    [Fact]
    public async Task SixteenConcurrentRequests_EachEqualsItselfAlone()
    {
        var requests = SixteenRequests();
        var alone = new List<ChatResponse>();
        foreach (var (messages, options) in requests)
        {
            using var fresh = GearTiny(o => o.Cache = CacheKind.Fp16);
            alone.Add(await fresh.GetResponseAsync(messages, options.Clone()));
        }

        using var client = GearTiny(o => o.Cache = CacheKind.Fp16);
        long budget = client.Options.CacheBudgetBytes, maxAllocated = 0;
        using var sampling = new CancellationTokenSource();
        var watcher = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                maxAllocated = Math.Max(maxAllocated, client.CacheStatistics.AllocatedBytes);
                await Task.Delay(5);
            }
        });
        var together = await Task.WhenAll(requests.Select(r => client.GetResponseAsync(r.Messages, r.Options.Clone())));
        sampling.Cancel();
        await watcher;

        for (int i = 0; i < requests.Length; i++)
        {
            Assert.Equal(alone[i].Usage!.InputTokenCount, together[i].Usage!.InputTokenCount);
            Assert.True(together[i].Usage!.OutputTokenCount <= requests[i].Options.MaxOutputTokens);
            if (requests[i].Options.AdditionalProperties is not null)
            {
                // A compressed sub-batch: it ran beside the FP16 one, in a pool of its own.
                Assert.NotEmpty(together[i].Text);
                Assert.NotNull(together[i].FinishReason);
                continue;
            }
            Assert.Equal(alone[i].Text, together[i].Text);
            Assert.Equal(alone[i].FinishReason, together[i].FinishReason);
            Assert.Equal(alone[i].Usage!.OutputTokenCount, together[i].Usage!.OutputTokenCount);
        }
        Assert.Contains(together, r => r.FinishReason == ChatFinishReason.Length);
        Assert.Contains(together, r => r.FinishReason == ChatFinishReason.Stop);
        Assert.True(maxAllocated <= budget, $"pools held {maxAllocated:N0} bytes, budget {budget:N0}");
        output.WriteLine($"16 requests together; pools held at most {maxAllocated:N0} bytes");
    }

    [Fact]
    public async Task EightConcurrentGreedyRequests_EqualTheSameInARow()
    {
        var prompts = Subjects.Take(8).Select(s => new[] { new ChatMessage(ChatRole.User, $"Tell me about {s}.") }).ToArray();
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 32 };
        var one = new List<string>();
        using (var serial = GearTiny(o => o.Cache = CacheKind.Fp16))
        {
            foreach (var p in prompts)
                one.Add((await serial.GetResponseAsync(p, greedy.Clone())).Text);
        }
        using var client = GearTiny(o => o.Cache = CacheKind.Fp16);
        var all = await Task.WhenAll(prompts.Select(p => client.GetResponseAsync(p, greedy.Clone())));
        Assert.Equal(one, all.Select(r => r.Text));
    }

    /// <summary>
    /// <see cref="GearChatClientOptions.BatchInvariant"/>: every answer's bits are its answer alone, for the compressed
    /// caches too — 8 greedy Gear 2-bit answers of 128 tokens (the serve bench's case, which differs without the option),
    /// and the sixteen requests of mixed sampling and cache settings, sent while the eight decode (prompt chunks beside
    /// decode rows) — whether they run together or one after another.
    /// </summary>
    [Fact]
    public async Task BatchInvariant_CompressedCaches_EveryAnswerEqualsItselfAlone()
    {
        string book = File.ReadAllText(Path.Combine(TestClients.RepoRoot, "bench", "data", "doyle-hound-of-the-baskervilles.txt"));
        var prompts = Enumerable.Range(0, 8).Select(i => new[] { new ChatMessage(ChatRole.User, book.Substring(5_000 + 997 * i, 300) + "\n\nWhat happens next?") }).ToArray();
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 128, AdditionalProperties = new() { ["gear.ignore_eos"] = true } };
        var requests = prompts.Select(p => (Messages: p, Options: greedy)).Concat(SixteenRequests()).ToArray();
        var alone = new List<ChatResponse>();
        foreach (var (messages, options) in requests)
        {
            using var fresh = GearTiny(o => o.BatchInvariant = true);
            alone.Add(await fresh.GetResponseAsync(messages, options.Clone()));
        }
        // One after another on one client: a request shares only the chat template's opening with the one before, which
        // it prefills afresh rather than cut out of that one's compressed page.
        using var serialClient = GearTiny(o => { o.BatchInvariant = true; o.MaxSessions = 1; });
        foreach (var (r, i) in requests.Select((r, i) => (r, i)))
        {
            var serial = await serialClient.GetResponseAsync(r.Messages, r.Options.Clone());
            Assert.True(alone[i].Text == serial.Text, $"request {i} after request {i - 1} on one client:\n{serial.Text}\nalone\n{alone[i].Text}");
        }

        // Together: the sixteen arrive while the eight decode, so their prompt chunks are fed beside the eight's tokens.
        using var client = GearTiny(o => o.BatchInvariant = true);
        var streaming = new TaskCompletionSource();
        async Task<ChatResponse> Streamed((ChatMessage[] Messages, ChatOptions Options) r)
        {
            var updates = new List<ChatResponseUpdate>();
            await foreach (var update in client.GetStreamingResponseAsync(r.Messages, r.Options.Clone()))
            {
                updates.Add(update);
                if (update.Text.Length > 0)
                    streaming.TrySetResult();
            }
            return updates.ToChatResponse();
        }
        var first = requests.Take(8).Select(r => Task.Run(() => Streamed(r))).ToArray();
        await streaming.Task;
        var rest = requests.Skip(8).Select(r => client.GetResponseAsync(r.Messages, r.Options.Clone())).ToArray();
        var together = await Task.WhenAll(first.Concat(rest));
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.True(alone[i].Text == together[i].Text, $"request {i}: together\n{together[i].Text}\nalone\n{alone[i].Text}");
            Assert.Equal(alone[i].Usage!.OutputTokenCount, together[i].Usage!.OutputTokenCount);
        }
    }

    [Fact]
    public async Task PrefillTokensPerStep_Bounded_LongPromptsTakeTurns_AnswersUnchanged()
    {
        // Prompts of several chunks each; a step feeds one chunk in all, so the requests' prefills take turns.
        var prompts = Subjects.Take(4).Select(s => new[] { new ChatMessage(ChatRole.User, string.Join(" ", Enumerable.Repeat($"Tell me about {s}.", 12))) }).ToArray();
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 16 };
        var one = new List<string>();
        using (var serial = GearTiny(o => o.Cache = CacheKind.Fp16))
        {
            foreach (var p in prompts)
                one.Add((await serial.GetResponseAsync(p, greedy.Clone())).Text);
        }
        using var client = GearTiny(o => { o.Cache = CacheKind.Fp16; o.PrefillChunkTokens = 32; o.MaxPrefillTokensPerStep = 32; });
        var all = await Task.WhenAll(prompts.Select(p => client.GetResponseAsync(p, greedy.Clone())));
        Assert.All(all, r => Assert.True(r.Usage!.InputTokenCount > 64, $"{r.Usage.InputTokenCount} prompt tokens"));
        Assert.Equal(one, all.Select(r => r.Text));

        var e = Assert.ThrowsAny<Exception>(() => GearTiny(o => { o.PrefillChunkTokens = 256; o.MaxPrefillTokensPerStep = 128; }));
        Assert.Contains("MaxPrefillTokensPerStep (128) must be at least PrefillChunkTokens (256)", e.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Two models on two engine threads while another thread collects garbage and runs finalizers without pause: the
    /// TorchSharp scalar race (a Scalar made for one call and freed by its finalizer during the call; docs/reliability.md)
    /// would fail requests here. The library makes no such scalars (the GEAR001 analyzer).
    /// </summary>
    [Fact]
    public async Task TwoModels_UnderConstantGarbageCollection_EveryAnswerAsAlone()
    {
        ChatMessage[] story = [new(ChatRole.User, "Once upon a time")];
        ChatMessage[] question = [new(ChatRole.User, "Tell me about a lighthouse keeper.")];
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 24 };
        using var stories = TestClients.Create(o => o.Cache = CacheKind.Gear);
        using var tiny = GearTiny(o => o.Cache = CacheKind.Gear);
        string expectedStory = (await stories.GetResponseAsync(story, greedy.Clone())).Text;
        string expectedAnswer = (await tiny.GetResponseAsync(question, greedy.Clone())).Text;

        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(12));
        long collections = 0;
        var collector = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                _ = new byte[1 << 16];
                GC.Collect();
                GC.WaitForPendingFinalizers();
                collections++;
            }
        });
        async Task<int> Loop(GearChatClient client, ChatMessage[] prompt, string expected)
        {
            int n = 0;
            while (!stop.IsCancellationRequested)
            {
                var text = (await client.GetResponseAsync(prompt, greedy.Clone())).Text;
                Assert.Equal(expected, text);
                n++;
            }
            return n;
        }
        var counts = await Task.WhenAll(Loop(stories, story, expectedStory), Loop(stories, story, expectedStory), Loop(tiny, question, expectedAnswer));
        await collector;
        output.WriteLine($"{counts.Sum()} requests ({string.Join(", ", counts)}) under {collections} forced collections");
        Assert.All(counts, c => Assert.True(c > 0));
    }

    [Fact]
    public async Task CancelOneThirdOf300_RestCorrect_NothingLeaks()
    {
        var prompts = Subjects.Take(6).Select(s => new[] { new ChatMessage(ChatRole.User, $"Tell me about {s}.") }).ToArray();
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 10 };
        var expected = new List<string>();
        foreach (var p in prompts)
        {
            using var fresh = GearTiny(o => o.Cache = CacheKind.Fp16);
            expected.Add((await fresh.GetResponseAsync(p, greedy.Clone())).Text);
        }

        using var client = GearTiny(o => { o.Cache = CacheKind.Fp16; o.MaxSessions = 4; });
        await client.GetResponseAsync(prompts[0], greedy.Clone());
        long baseline = client.LiveTensors, baselineAllocated = client.CacheStatistics.AllocatedBytes;
        var rng = new Random(7);
        var runs = Enumerable.Range(0, 300).Select(async i =>
        {
            var cts = new CancellationTokenSource();
            bool cancel = i % 3 == 0;
            if (cancel)
                cts.CancelAfter(rng.Next(0, 40));
            try
            {
                var text = new System.Text.StringBuilder();
                await foreach (var update in client.GetStreamingResponseAsync(prompts[i % prompts.Length], greedy.Clone(), cts.Token))
                    text.Append(update.Text);
                return (i, Text: text.ToString(), Cancelled: false);
            }
            catch (OperationCanceledException) when (cancel)
            {
                return (i, Text: "", Cancelled: true);
            }
            finally
            {
                cts.Dispose();
            }
        }).ToArray();
        var results = await Task.WhenAll(runs);
        foreach (var (i, text, cancelled) in results.Where(r => !r.Cancelled))
            Assert.Equal(expected[i % prompts.Length], text);
        int cancelledCount = results.Count(r => r.Cancelled);
        Assert.True(cancelledCount > 30, $"only {cancelledCount} requests were cancelled in flight");

        var stats = client.CacheStatistics;
        Assert.True(stats.Sessions <= 4);
        // What is alive is what the idle sessions and cached pages hold: no running or cancelled request left anything.
        Assert.Equal(expected[0], (await client.GetResponseAsync(prompts[0], greedy.Clone())).Text);
        output.WriteLine($"{cancelledCount} cancelled, {300 - cancelledCount} completed; live tensors {client.LiveTensors} (baseline {baseline}); " +
                         $"allocated {client.CacheStatistics.AllocatedBytes:N0} (baseline {baselineAllocated:N0})");
        Assert.Equal(baseline, client.LiveTensors);
    }

    [Fact]
    public async Task TwoClientsOverOneModel_ShareOneEngine_TwoModelsEachWork()
    {
        using var a = GearTiny(o => o.Cache = CacheKind.Fp16);
        using var b = GearTiny(o => { o.Cache = CacheKind.Fp16; o.MaxSessions = 2; });
        using var stories = TestClients.Create(o => o.Cache = CacheKind.Fp16);
        Assert.Same(a.EngineIdentity, b.EngineIdentity);
        Assert.NotSame(a.EngineIdentity, stories.EngineIdentity);

        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 16 };
        var question = new[] { new ChatMessage(ChatRole.User, "Tell me about the moors at night.") };
        string aAlone = (await a.GetResponseAsync(question, greedy.Clone())).Text;
        string bAlone = (await b.GetResponseAsync(question, greedy.Clone())).Text;
        string storyAlone = (await stories.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], greedy.Clone())).Text;
        var all = await Task.WhenAll(Enumerable.Range(0, 12).Select(i => (i % 3) switch
        {
            0 => a.GetResponseAsync(question, greedy.Clone()),
            1 => b.GetResponseAsync(question, greedy.Clone()),
            _ => stories.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], greedy.Clone()),
        }));
        for (int i = 0; i < all.Length; i++)
            Assert.Equal((i % 3) switch { 0 => aAlone, 1 => bAlone, _ => storyAlone }, all[i].Text);
    }

    [Fact]
    public async Task OptionsClients_OverTheSameModel_ShareOneEngine_LastOneStopsIt()
    {
        int before = EngineRegistry.Count;
        var options = new GearChatClientOptions { Model = "stories260K", DefaultTemperature = 0 };
        using (var a = new GearChatClient(options))
        using (var b = new GearChatClient(options))
        {
            Assert.Same(a.EngineIdentity, b.EngineIdentity);
            Assert.Equal(before + 1, EngineRegistry.Count);
            var r = await Task.WhenAll(a.GetResponseAsync("Once upon a time"), b.GetResponseAsync("Once upon a time"));
            Assert.Equal(r[0].Text, r[1].Text);
        }
        Assert.Equal(before, EngineRegistry.Count);
    }

    [Fact]
    public async Task FullQueue_FailsWithBusy_OthersComplete()
    {
        using var client = GearTiny(o => { o.MaxConcurrentSequences = 1; o.MaxQueuedRequests = 1; });
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 24 };
        var question = new[] { new ChatMessage(ChatRole.User, "Tell me about a telegram.") };
        var first = client.GetResponseAsync(question, greedy.Clone());
        // The first runs (or waits for its place): fill the one waiting place, then one more is refused.
        var tasks = new List<Task<ChatResponse>> { first };
        GearBusyException? busy = null;
        for (int i = 0; i < 4 && busy is null; i++)
        {
            var t = client.GetResponseAsync(question, greedy.Clone());
            await Task.WhenAny(t, Task.Delay(20));
            if (t.IsFaulted && t.Exception!.InnerException is GearBusyException e)
                busy = e;
            else
                tasks.Add(t);
        }
        Assert.NotNull(busy);
        Assert.Contains("MaxQueuedRequests", busy!.Message);
        var done = await Task.WhenAll(tasks);
        Assert.All(done, r => Assert.Equal(done[0].Text, r.Text));
    }

    [Fact]
    public async Task LongPrompt_PrefilledInChunks_DoesNotStallAnotherStream()
    {
        using var client = GearTiny(o => o.PrefillChunkTokens = 128);
        var document = string.Join(" ", Enumerable.Repeat("The hound was seen again on the moor that night, and the fog lay thick.", 80));
        var longRequest = new[] { new ChatMessage(ChatRole.User, document + "\n\nWhat was seen?") };
        var shortRequest = new[] { new ChatMessage(ChatRole.User, "Tell me about a broken watch.") };
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 8 };
        await client.GetResponseAsync(shortRequest, greedy.Clone());                      // warm up

        var clock = Stopwatch.StartNew();
        double longFirst = 0, shortFirst = 0;
        async Task FirstToken(ChatMessage[] messages, Action<double> seen)
        {
            await foreach (var update in client.GetStreamingResponseAsync(messages, greedy.Clone()))
            {
                if (update.Text.Length > 0)
                {
                    seen(clock.Elapsed.TotalMilliseconds);
                    break;
                }
            }
        }
        var longTask = FirstToken(longRequest, t => longFirst = t);
        var shortTask = FirstToken(shortRequest, t => shortFirst = t);
        await Task.WhenAll(longTask, shortTask);
        output.WriteLine($"first text: short request {shortFirst:F0} ms, long request {longFirst:F0} ms");
        Assert.True(shortFirst < longFirst, $"the short request's first text came at {shortFirst:F0} ms, after the long prompt's ({longFirst:F0} ms)");
    }
}
