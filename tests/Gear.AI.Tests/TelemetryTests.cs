using System.Diagnostics;
using System.Diagnostics.Metrics;
using Gear.AI.Compression;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace Gear.AI.Tests;

public class TelemetryTests
{
    private sealed class CapturingLogger : ILogger<GearChatClient>
    {
        public List<string> Lines { get; } = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add(formatter(state, exception));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Logging_NeverPromptTextUnlessAskedFor(bool logContent)
    {
        var logger = new CapturingLogger();
        using var client = new GearChatClient(TestClients.Stories, new GearChatClientOptions { Model = TestClients.Stories.Directory, LogContent = logContent }, logger);
        await client.GetResponseAsync("Once upon a time a secret zebra", new ChatOptions { MaxOutputTokens = 3 });
        Assert.Contains(logger.Lines, l => l.Contains("prompt tokens"));
        Assert.Equal(logContent, logger.Lines.Any(l => l.Contains("secret zebra")));
    }

    [Fact]
    public async Task ActivityAndMeter_ReportChatAndTokenCounts()
    {
        var activities = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == GearTelemetry.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { lock (activities) activities.Add(a); },
        };
        ActivitySource.AddActivityListener(listener);
        long decoded = 0;
        using var meters = new MeterListener();
        meters.InstrumentPublished = (instrument, l) => { if (instrument.Meter.Name == GearTelemetry.Name) l.EnableMeasurementEvents(instrument); };
        meters.SetMeasurementEventCallback<long>((instrument, value, _, _) => { if (instrument.Name == "gear.decode.tokens") Interlocked.Add(ref decoded, value); });
        meters.Start();

        using var client = TestClients.Create(o => o.Cache = CacheKind.Kivi);
        await client.GetResponseAsync("Once upon a time", new ChatOptions { MaxOutputTokens = 5 });
        // Other tests may run in parallel: look for this request's span among all recorded.
        lock (activities)
            Assert.Contains(activities, a => a.OperationName == "gear.chat" && (string?)a.GetTagItem("gear.cache") == "kivi" && (int?)a.GetTagItem("gear.output_tokens") == 5);
        Assert.True(decoded >= 5);
    }

    [Fact]
    public async Task Load_AndItsGauges_CountRunningAndWaitingRequests()
    {
        // gear-tiny decodes a few hundred tokens a second here: each request runs long enough to be seen.
        using var client = new GearChatClient(TestClients.GearTiny, new GearChatClientOptions { Model = TestClients.GearTiny.Directory, MaxConcurrentSequences = 1 });
        Assert.Equal(new GearLoad(0, 0, 1, client.Options.MaxQueuedRequests), client.Load);
        var requests = Enumerable.Range(0, 3).Select(i => client.GetResponseAsync($"Load {i}: once upon a time",
            new ChatOptions { MaxOutputTokens = 300, AdditionalProperties = new() { ["gear.ignore_eos"] = true } })).ToList();
        // One admitted at a time, two queued: seen while the first decodes.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        GearLoad? both = null;
        while (both is null && DateTime.UtcNow < deadline && requests.Any(r => !r.IsCompleted))
        {
            var load = client.Load;
            if (load is { RunningRequests: 1, WaitingRequests: 2 })
                both = load;
            await Task.Delay(1);
        }
        Assert.NotNull(both);
        Assert.Equal(1, client.GetService<GearLoad>()!.MaxConcurrentSequences);

        // The gauges add every live client's load; this client's share is visible while its requests run.
        var gauges = new Dictionary<string, long>();
        using (var meters = new MeterListener())
        {
            meters.InstrumentPublished = (instrument, l) => { if (instrument.Meter.Name == GearTelemetry.Name) l.EnableMeasurementEvents(instrument); };
            meters.SetMeasurementEventCallback<int>((instrument, value, _, _) => { lock (gauges) gauges[instrument.Name] = value; });
            meters.SetMeasurementEventCallback<long>((instrument, value, _, _) => { lock (gauges) gauges[instrument.Name] = value; });
            meters.Start();
            meters.RecordObservableInstruments();
        }
        bool stillRunning = requests.Any(r => !r.IsCompleted);
        await Task.WhenAll(requests);
        Assert.Equal(new GearLoad(0, 0, 1, client.Options.MaxQueuedRequests), client.Load);
        lock (gauges)
        {
            Assert.True(gauges.ContainsKey("gear.requests.running") && gauges.ContainsKey("gear.requests.waiting"), string.Join(", ", gauges.Keys));
            if (stillRunning)
                Assert.True(gauges["gear.requests.running"] + gauges["gear.requests.waiting"] >= 1);
            Assert.True(gauges["gear.kv.budget_bytes"] >= client.Options.CacheBudgetBytes);
            Assert.True(gauges.ContainsKey("gear.kv.resident_bytes") && gauges.ContainsKey("gear.kv.idle_conversations"));
        }
    }
}
