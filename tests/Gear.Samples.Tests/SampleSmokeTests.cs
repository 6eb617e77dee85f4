using System.Text.Json;

namespace Gear.Samples.Tests;

/// <summary>Every sample runs on the bundled models with one command and does what its header says.</summary>
public class SampleSmokeTests
{
    [Fact]
    public void GearChat_GreedyRawFromBos_PrintsLlama2cStoryAndStatistics()
    {
        var (code, stdout, stderr) = SampleRunner.Run("samples", "Gear.Chat", "", "--raw", "--temperature", "0", "--max-tokens", "20", "--cache", "fp16", "");
        Assert.True(code == 0, stderr);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily.", stdout.TrimStart());
        Assert.Contains("prompt 1 tokens", stderr);
        Assert.Contains("20 generated", stderr);
        Assert.Contains("stopped at the token limit", stderr);
        Assert.Contains("(FP16; pages hold", stderr);                                       // used bytes, capacity apart
        Assert.DoesNotContain("[prompt", stdout); // statistics go to stderr only
    }

    [Fact]
    public void GearChat_Interactive_SecondTurnReportsCachedTokens()
    {
        var (code, stdout, stderr) = SampleRunner.Run("samples", "Gear.Chat", "Once upon a time\nThe dog ran.\n\n", "--temperature", "0", "--max-tokens", "8", "--cache", "gear", "--bits", "2");
        Assert.True(code == 0, stderr);
        var stats = stderr.Split('\n').Where(l => l.StartsWith("> [prompt") || l.StartsWith("[prompt")).ToArray();
        Assert.Equal(2, stats.Length);
        Assert.Contains("(0 from the cache)", stats[0]);
        Assert.DoesNotContain("(0 from the cache)", stats[1]);
        Assert.Contains("x of FP16's", stats[1]);
        Assert.False(string.IsNullOrWhiteSpace(stdout));
    }

    [Fact]
    public void GearChat_Interactive_ContextOverflow_DropsTheOldestTurnsWithANotice_OrFailsWhenAsked()
    {
        // stories260K has 512 positions: three long turns of 150 tokens each cannot all stay.
        string turns = string.Concat(Enumerable.Range(0, 4).Select(i => $"Once upon a time there was a dog number {i}.\n")) + "\n";
        var (code, _, stderr) = SampleRunner.Run("samples", "Gear.Chat", turns, "--temperature", "0", "--max-tokens", "150");
        Assert.True(code == 0, stderr);
        Assert.Contains("no longer fit the model's context", stderr);
        Assert.Equal(4, stderr.Split('\n').Count(l => l.Contains("[prompt")));

        var (failCode, _, failErr) = SampleRunner.Run("samples", "Gear.Chat", turns, "--temperature", "0", "--max-tokens", "150", "--fail-on-overflow");
        Assert.NotEqual(0, failCode);
        Assert.Contains("context", failErr);
    }

    [Fact]
    public void GearChat_Interactive_CtrlC_StopsTheReply_AndTheChatGoesOn()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
            return;                                                                         // SIGINT is how a terminal sends Ctrl+C here
        using var chat = SampleRunner.Start("samples", "Gear.Chat", "--temperature", "0", "--max-tokens", "500");
        int Statistics() => chat.Stderr.Split('\n').Count(l => l.Contains("[prompt"));
        // On a loaded machine a reply can end before the signal lands: then the next one is interrupted.
        bool stopped = false;
        for (int attempt = 0; attempt < 3 && !stopped; attempt++)
        {
            int before = Statistics(), written = chat.Stdout.Length;
            chat.Input.WriteLine("Once upon a time");
            chat.Input.Flush();
            Assert.True(SpinWait.SpinUntil(() => chat.Stdout.Length > written + 1, TimeSpan.FromMinutes(2)), "the reply never started");
            chat.Interrupt();
            stopped = chat.WaitForError("(stopped)", TimeSpan.FromSeconds(30)) && Statistics() == before;
            if (!stopped)
                Assert.True(SpinWait.SpinUntil(() => Statistics() > before, TimeSpan.FromMinutes(2)), chat.Stderr);
        }
        Assert.True(stopped, chat.Stderr);
        int finished = Statistics();
        chat.Input.WriteLine("The dog ran.");
        chat.Input.WriteLine();
        chat.Input.Close();
        Assert.True(chat.WaitForExit(TimeSpan.FromMinutes(2)), chat.Stderr);
        Assert.Equal(0, chat.ExitCode);
        Assert.Equal(finished + 1, Statistics());                                           // the chat went on: one more reply
    }

    [Fact]
    public void GearChat_BadOption_ExitsNonZeroWithMessage()
    {
        var (code, _, stderr) = SampleRunner.Run("samples", "Gear.Chat", "", "--bits", "12", "hi");
        Assert.NotEqual(0, code);
        Assert.Contains("Bits", stderr);
    }

    [Fact]
    public void LongDocumentChat_KeepsBookResident_SecondTurnCached()
    {
        var (code, stdout, stderr) = SampleRunner.Run("samples", "Gear.LongDocumentChat", "", "--turns", "2", "--max-tokens", "8");
        Assert.True(code == 0, stderr);
        Assert.Contains("--- turn 2", stdout);
        var turn2 = stderr.Split('\n').Single(l => l.StartsWith("[turn 2"));
        int cached = int.Parse(turn2.Split(" cached")[0].Split(' ')[^1]);
        Assert.True(cached > 1500, turn2);
        Assert.Contains("vs FP16", turn2);
    }

    [Fact]
    public void SemanticKernel_PromptFunctionAndToolWiringRun()
    {
        var (code, stdout, stderr) = SampleRunner.Run("samples", "Gear.SemanticKernel", "");
        Assert.True(code == 0, stderr);
        Assert.Contains("prompt function:", stdout);
        Assert.Contains("with tools offered:", stdout);
    }

    [Fact]
    public void Agent_MultiTurnSession_ReusesCache()
    {
        var (code, stdout, stderr) = SampleRunner.Run("samples", "Gear.Agent", "");
        Assert.True(code == 0, stderr);
        Assert.Equal(3, stdout.Split('\n').Count(l => l.StartsWith("Storyteller:")));
        var stats = stderr.Split('\n').Where(l => l.StartsWith("[prompt")).ToArray();
        Assert.Equal(3, stats.Length);
        Assert.DoesNotContain("(0 cached)", stats[2]);
    }

    [Fact]
    public void Hosted_WarmsUpServesAndShutsDownGracefully()
    {
        var (code, stdout, stderr) = SampleRunner.Run("samples", "Gear.Hosted", "", "--Gear:Bits=2");
        string all = stdout + stderr;
        Assert.True(code == 0, all);
        Assert.Contains("Warming up Gear model", all);
        Assert.Contains("Once upon a time", stdout);
        Assert.Contains("Application is shutting down", all);
    }

    [Fact]
    public void Hosted_InvalidConfiguration_FailsAtStartupNamingTheOption()
    {
        var (code, stdout, stderr) = SampleRunner.Run("samples", "Gear.Hosted", "", "--Gear:GroupSize=0");
        Assert.NotEqual(0, code);
        Assert.Contains("GroupSize", stdout + stderr);
    }

    [Fact]
    public void Bench_Memory_WritesJsonRowsWithRatios()
    {
        string json = Path.Combine(Path.GetTempPath(), $"gear-memory-{Guid.NewGuid():N}.json");
        var (code, stdout, stderr) = SampleRunner.Run("bench", "Gear.Bench", "", "memory", "--contexts", "256", "--bits", "2", "--json", json);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        File.Delete(json);
        Assert.Equal("memory", doc.RootElement.GetProperty("command").GetString());
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToArray();
        Assert.Equal(["fp16", "kivi", "gearl", "gear"], rows.Select(r => r.GetProperty("cache").GetString()));
        Assert.All(rows.Skip(1), r => Assert.True(r.GetProperty("ratio").GetDouble() < 0.5));
        Assert.Contains("| cache", stdout);
    }

    [Fact]
    public void Bench_GpuThroughput_RunsEachKindInAProcessOfItsOwn()
    {
        // Each kind runs in a child started from this bench with arguments the parent writes. On a machine without CUDA
        // the child stops at the device: it must have parsed those arguments and reached the measurement, and the parent
        // must say which kind failed. (On a GPU machine the gear-tiny shape simply runs.)
        string shape = Path.Combine(SampleRunner.RepoRoot, "models", "gear-tiny", "config.json");
        var (code, _, stderr) = SampleRunner.Run("bench", "Gear.Bench", "", "gpu-throughput", "--shape", shape, "--budget-gib", "1",
            "--prompt", "64", "--generate", "4", "--caches", "gear", "--bits", "2", "--dtype", "fp16");
        Assert.Contains("fp16 in a process of its own", stderr);
        if (code == 0)
            return;
        Assert.DoesNotContain("Unrecognized", stderr);
        Assert.Contains("did not initialise", stderr);                 // the child got past its arguments to the device
        Assert.Contains("The fp16 throughput run failed", stderr);
    }

    [Fact]
    public void Bench_Serve_ConcurrentRequestsThroughTheClient_WritesRows()
    {
        string json = Path.Combine(Path.GetTempPath(), $"gear-serve-{Guid.NewGuid():N}.json");
        var (code, stdout, stderr) = SampleRunner.Run("bench", "Gear.Bench", "", "serve", "--model", "stories260K", "--clients", "3",
            "--prompt-tokens", "16,40", "--max-tokens", "12", "--caches", "kivi", "--bits", "4", "--json", json);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        File.Delete(json);
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToArray();
        Assert.Equal(["fp16", "kivi"], rows.Select(r => r.GetProperty("cache").GetString()));
        Assert.All(rows, r =>
        {
            Assert.Equal("client", r.GetProperty("via").GetString());
            Assert.True(r.GetProperty("generated_tokens").GetInt64() > 0);
            Assert.True(r.GetProperty("concurrent_tokens_per_s").GetDouble() > 0);
            Assert.True(r.GetProperty("ttft_p50_ms").GetDouble() > 0);
        });
        Assert.True(rows[0].GetProperty("greedy_equal").GetBoolean());                     // FP16: the same answers either way
        Assert.Contains("| cache", stdout);
    }
}
