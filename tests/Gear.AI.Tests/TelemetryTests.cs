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
}
