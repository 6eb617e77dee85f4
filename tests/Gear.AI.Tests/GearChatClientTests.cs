using Gear.AI.Compression;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;

namespace Gear.AI.Tests;

[Collection(MeasuredCollection.Name)]
public class GearChatClientTests
{
    private static readonly ChatMessage[] Story = [new(ChatRole.User, "Once upon a time")];

    private static ChatOptions Seeded(int maxTokens = 24) => new() { Seed = 7, Temperature = 0.8f, TopP = 0.95f, MaxOutputTokens = maxTokens };

    [Fact]
    public async Task GetResponseAsync_AndStreaming_SameTextForSameSeed()
    {
        using var client = TestClients.Create();
        var response = await client.GetResponseAsync(Story, Seeded());
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(Story, Seeded()))
            updates.Add(u);
        Assert.Equal(response.Text, string.Concat(updates.Select(u => u.Text)));
        Assert.False(string.IsNullOrWhiteSpace(response.Text));
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
        Assert.Single(updates.Select(u => u.MessageId).Distinct());
        Assert.All(updates, u => Assert.Equal("stories260K", u.ModelId));
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
    }

    [Fact]
    public async Task MaxOutputTokens_GivesLengthFinishAndUsage()
    {
        using var client = TestClients.Create();
        var response = await client.GetResponseAsync(Story, new ChatOptions { Temperature = 0, MaxOutputTokens = 5 });
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(5, response.Usage!.OutputTokenCount);
        Assert.Equal(5, response.Usage.InputTokenCount); // BOS + 4
        Assert.Equal(10, response.Usage.TotalTokenCount);
        Assert.True(response.Usage.AdditionalCounts!["gear.kv.resident_bytes"] > 0);
        Assert.True(response.Usage.AdditionalCounts["gear.kv.fp16_bytes"] > 0);
    }

    [Fact]
    public async Task IgnoreEos_IsParsed_AndStopSequencesStillStop()
    {
        using var client = TestClients.Create(o => o.Cache = CacheKind.Fp16);
        var fixedLength = new ChatOptions { Temperature = 0, MaxOutputTokens = 40, AdditionalProperties = new() { ["gear.ignore_eos"] = true } };
        var full = await client.GetResponseAsync(Story, fixedLength);
        Assert.Equal(ChatFinishReason.Length, full.FinishReason);
        Assert.Equal(40, full.Usage!.OutputTokenCount);

        fixedLength.StopSequences = ["Lily"];
        var cut = await client.GetResponseAsync(Story, fixedLength);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        Assert.Equal(full.Text[..full.Text.IndexOf("Lily", StringComparison.Ordinal)], cut.Text);

        fixedLength.AdditionalProperties["gear.ignore_eos"] = "yes";
        var e = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Story, fixedLength));
        Assert.Contains("gear.ignore_eos must be true or false", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StopSequences_CutExactly_StopFinish()
    {
        using var client = TestClients.Create(o => o.Cache = CacheKind.Fp16);
        var full = (await client.GetResponseAsync(Story, new ChatOptions { Temperature = 0, MaxOutputTokens = 40 })).Text;
        int at = full.IndexOf("Lily", StringComparison.Ordinal);
        Assert.True(at > 0, full);
        var cut = await client.GetResponseAsync(Story, new ChatOptions { Temperature = 0, MaxOutputTokens = 40, StopSequences = ["Lily"] });
        Assert.Equal(full[..at], cut.Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
    }

    [Fact]
    public async Task Options_NotMutatedByTheCall()
    {
        using var client = TestClients.Create();
        var options = new ChatOptions { Temperature = 0.5f, MaxOutputTokens = 6, StopSequences = ["zzz"], AdditionalProperties = new() { ["gear.bits"] = 2 } };
        var before = System.Text.Json.JsonSerializer.Serialize(options);
        await client.GetResponseAsync(Story, options);
        Assert.Equal(before, System.Text.Json.JsonSerializer.Serialize(options));
    }

    [Fact]
    public async Task SecondTurn_ReusesCache_AndMatchesAFreshClientWithFp16Greedy()
    {
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 20 };
        List<ChatMessage> conversation = [new(ChatRole.User, "Once upon a time, there was a cat.")];
        using var client = TestClients.Create(o => o.Cache = CacheKind.Fp16);
        var first = await client.GetResponseAsync(conversation, greedy);
        conversation.AddRange(first.Messages);
        conversation.Add(new ChatMessage(ChatRole.User, "The cat was happy."));
        var second = await client.GetResponseAsync(conversation, greedy);
        Assert.True(second.Usage!.CachedInputTokenCount >= first.Usage!.InputTokenCount,
            $"cached {second.Usage.CachedInputTokenCount} < first prompt {first.Usage.InputTokenCount}");

        using var fresh = TestClients.Create(o => o.Cache = CacheKind.Fp16);
        var again = await fresh.GetResponseAsync(conversation, greedy);
        Assert.Equal(0, again.Usage!.CachedInputTokenCount);
        Assert.Equal(again.Text, second.Text);
    }

    [Fact]
    public async Task CompressedCache_SecondTurnAlsoReusesItsPrefix()
    {
        List<ChatMessage> conversation = [new(ChatRole.User, string.Join(" ", Enumerable.Repeat("Once upon a time there was a big red ball.", 12)))];
        using var client = TestClients.Create(o => { o.Cache = CacheKind.Gear; o.Bits = 2; });
        var first = await client.GetResponseAsync(conversation, new ChatOptions { Temperature = 0, MaxOutputTokens = 10 });
        conversation.AddRange(first.Messages);
        conversation.Add(new ChatMessage(ChatRole.User, "Then"));
        var second = await client.GetResponseAsync(conversation, new ChatOptions { Temperature = 0, MaxOutputTokens = 10 });
        Assert.True(second.Usage!.CachedInputTokenCount >= 64, $"cached {second.Usage.CachedInputTokenCount}");
        Assert.True(client.CacheStatistics.ResidentBytes < client.CacheStatistics.FullPrecisionBytes * 2);
    }

    [Fact]
    public async Task CancelMidStream_NoLiveTensors_NextRequestSucceeds()
    {
        using var client = TestClients.Create();
        await client.GetResponseAsync(Story, Seeded(4)); // warm up lazily created tensors
        long baseline = client.LiveTensors;
        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in client.GetStreamingResponseAsync(Story, Seeded(100), cts.Token))
            {
                if (++seen == 3)
                    cts.Cancel();
            }
        });
        var stats = client.CacheStatistics;
        Assert.True(client.LiveTensors <= baseline + stats.Sessions * 64, $"live {client.LiveTensors} vs baseline {baseline}");
        var next = await client.GetResponseAsync(Story, Seeded(8));
        Assert.False(string.IsNullOrWhiteSpace(next.Text));
    }

    [Fact]
    public async Task CancelAfterTheAnswerIsBuffered_StillEndsWithOperationCanceled()
    {
        // The worker can finish the whole answer while the caller is still reading the first update; cancelling then
        // must end the stream with OperationCanceledException, not hand over the buffered rest as if nothing happened.
        using var client = TestClients.Create();
        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in client.GetStreamingResponseAsync(Story, Seeded(8), cts.Token))
            {
                if (++seen == 1)
                {
                    await Task.Delay(TimeSpan.FromSeconds(2));      // 8 tokens of the tiny model take milliseconds
                    cts.Cancel();
                }
            }
        });
        Assert.Equal(1, seen);
        var next = await client.GetResponseAsync(Story, Seeded(4));
        Assert.False(string.IsNullOrWhiteSpace(next.Text));
    }

    [Fact]
    public async Task EightConcurrentRequests_SameOutputsAsSerial()
    {
        using var client = TestClients.Create();
        var prompts = Enumerable.Range(0, 8).Select(i => new[] { new ChatMessage(ChatRole.User, $"Once upon a time there was a dog number {i}") }).ToArray();
        ChatOptions Options(int i) => new() { Seed = 100 + i, Temperature = 0.9f, MaxOutputTokens = 16 };
        var serial = new List<string>();
        for (int i = 0; i < 8; i++)
            serial.Add((await client.GetResponseAsync(prompts[i], Options(i))).Text);
        using var other = TestClients.Create();
        var concurrent = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => Task.Run(() => other.GetResponseAsync(prompts[i], Options(i)))));
        Assert.Equal(serial, concurrent.Select(r => r.Text));
    }

    [Fact]
    public async Task WrongModelId_Refused()
    {
        using var client = TestClients.Create();
        var e = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Story, new ChatOptions { ModelId = "llama-70b" }));
        Assert.Contains("stories260K", e.Message);
    }

    [Fact]
    public async Task PromptLongerThanContext_ContextLengthExceeded_ClientStillWorks()
    {
        using var client = TestClients.Create();
        var huge = new ChatMessage(ChatRole.User, string.Join(" ", Enumerable.Repeat("the big dog ran home", 200)));
        var e = await Assert.ThrowsAsync<ContextLengthExceededException>(() => client.GetResponseAsync([huge]));
        Assert.True(e.PromptTokens > 512);
        Assert.Contains("prompt alone", e.Message);                                            // not "lower the output tokens to at most 0"
        Assert.DoesNotContain("at most 0", e.Message);
        Assert.False(string.IsNullOrEmpty((await client.GetResponseAsync(Story, Seeded(4))).Text));
    }

    [Fact]
    public async Task DropOldestMessages_KeepsTheLatest()
    {
        using var client = TestClients.Create(o => o.ContextOverflow = ContextOverflowPolicy.DropOldestMessages);
        var old = new ChatMessage(ChatRole.User, string.Join(" ", Enumerable.Repeat("the big dog ran home", 150)));
        var response = await client.GetResponseAsync([old, new ChatMessage(ChatRole.Assistant, "Yes."), new ChatMessage(ChatRole.User, "Once upon a time")], new ChatOptions { MaxOutputTokens = 8 });
        Assert.True(response.Usage!.InputTokenCount < 100);
        Assert.Equal(1, response.Usage.AdditionalCounts!["gear.dropped_messages"]);                 // the long one

        var fits = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], new ChatOptions { MaxOutputTokens = 8 });
        Assert.False(fits.Usage!.AdditionalCounts!.ContainsKey("gear.dropped_messages"));
    }

    [Fact]
    public async Task CacheSettingsPerRequest_ViaAdditionalProperties()
    {
        using var client = TestClients.Create();
        var r = await client.GetResponseAsync(Story, new ChatOptions { MaxOutputTokens = 4, AdditionalProperties = new() { ["gear.cache"] = "kivi", ["gear.bits"] = 2 } });
        Assert.Equal("kivi", (r.AdditionalProperties ?? r.Messages[^1].AdditionalProperties)!["gear.cache"]);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Story, new ChatOptions { AdditionalProperties = new() { ["gear.bits"] = 12 } }));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Story, new ChatOptions { AdditionalProperties = new() { ["gear.colour"] = "red" } }));
    }

    [Fact]
    public async Task StatefulMode_ReturnsAndHonoursConversationId()
    {
        using var client = TestClients.Create(o => { o.StatefulConversations = true; o.Cache = CacheKind.Fp16; });
        var first = await client.GetResponseAsync(Story, new ChatOptions { Temperature = 0, MaxOutputTokens = 10 });
        Assert.NotNull(first.ConversationId);
        var second = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "The end.")], new ChatOptions { Temperature = 0, MaxOutputTokens = 10, ConversationId = first.ConversationId });
        Assert.Equal(first.ConversationId, second.ConversationId);
        Assert.True(second.Usage!.CachedInputTokenCount >= first.Usage!.InputTokenCount);

        using var stateless = TestClients.Create();
        await Assert.ThrowsAsync<ArgumentException>(() => stateless.GetResponseAsync(Story, new ChatOptions { ConversationId = "x" }));
    }

    [Fact]
    public async Task Budget_EvictsLeastRecentlyUsed_WithoutLosingCorrectness()
    {
        using var client = TestClients.Create(o => { o.Cache = CacheKind.Fp16; o.CacheBudgetBytes = 100_000; });
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 30 };
        var a = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time there was a frog.")], greedy);
        await client.GetResponseAsync([new ChatMessage(ChatRole.User, "One day a girl named Sue went out.")], greedy);
        await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Tom had a red car.")], greedy);
        var stats = client.CacheStatistics;
        Assert.True(stats.ResidentBytes <= 100_000, $"{stats.ResidentBytes}");
        Assert.True(stats.Evictions > 0);
        var again = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time there was a frog.")], greedy);
        Assert.Equal(a.Text, again.Text);
    }

    [Fact]
    public void GetService_ExposesMetadataModelAndStatistics()
    {
        using var client = TestClients.Create();
        var metadata = client.GetService<ChatClientMetadata>()!;
        Assert.Equal("gear", metadata.ProviderName);
        Assert.Equal("stories260K", metadata.DefaultModelId);
        Assert.Same(TestClients.Stories, client.GetService<LlamaRuntime>());
        Assert.NotNull(client.GetService<GearCacheStatistics>());
        Assert.Same(client, client.GetService<GearChatClient>());
        Assert.Null(client.GetService<ChatClientMetadata>("key"));
    }

    [Fact]
    public async Task CacheStatistics_NameHowAttentionReadsEachSetting_AndWhyWhereItIsTheTensorPath()
    {
        using var client = TestClients.Create();
        await client.GetResponseAsync(Story, new ChatOptions { Temperature = 0, MaxOutputTokens = 3 });
        // Key groups of 512 tokens are past the fused CPU kernel's 8-bit outlier indices: the tensor path, with its reason.
        await client.GetResponseAsync(Story, new ChatOptions
        {
            Temperature = 0, MaxOutputTokens = 3,
            AdditionalProperties = new() { ["gear.group_size"] = 512, ["gear.buffer_length"] = 512, ["gear.bits"] = 2 },
        });
        var paths = client.CacheStatistics.AttentionPaths!;
        Assert.StartsWith("fused CPU kernel", paths["gear 4-bit"]);
        Assert.Equal("tensor ops (key groups of 512 tokens (the kernel reads 8-bit outlier indices))", paths["gear 2-bit, group 512, buffer 512"]);
    }

    [Fact]
    public async Task UseAfterDispose_ThrowsObjectDisposed()
    {
        var client = TestClients.Create();
        client.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => client.GetResponseAsync(Story));
    }

    [Theory]
    [InlineData("system-only")]
    [InlineData("empty")]
    [InlineData("image")]
    public async Task BadMessages_ArgumentException(string kind)
    {
        using var client = TestClients.Create();
        ChatMessage[] messages = kind switch
        {
            "system-only" => [new ChatMessage(ChatRole.System, "Be nice.")],
            "empty" => [],
            _ => [new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1, 2 }, "image/png")])],
        };
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(messages));
    }
}
