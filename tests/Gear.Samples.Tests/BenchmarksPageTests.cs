using System.Text.RegularExpressions;

namespace Gear.Samples.Tests;

/// <summary>
/// docs/benchmarks.md stays a page a user reads in minutes, and every result file it names is in docs/results.
/// </summary>
public partial class BenchmarksPageTests
{
    private static readonly string Docs = Path.Combine(SampleRunner.RepoRoot, "docs");
    private static readonly string[] Page = File.ReadAllLines(Path.Combine(Docs, "benchmarks.md"));

    [Fact]
    public void Page_IsShort_AndItsLinesFitOnAScreen()
    {
        Assert.InRange(Page.Length, 50, 200);
        Assert.All(Page.Select((line, i) => (line, number: i + 1)), l => Assert.True(l.line.Length <= 140,
            $"docs/benchmarks.md line {l.number} is {l.line.Length} characters (at most 140)"));
    }

    [Fact]
    public void EveryResultFileThePageNames_IsInDocsResults()
    {
        var named = Page.SelectMany(line => ResultFile().Matches(line).Select(m => m.Value))
            .Where(name => !name.StartsWith("FILE.", StringComparison.Ordinal))
            .Distinct().ToList();
        Assert.True(named.Count >= 10, $"only {named.Count} result files named");
        var results = Path.Combine(Docs, "results");
        Assert.All(named, name => Assert.True(
            File.Exists(Path.Combine(results, name)) || File.Exists(Path.Combine(results, "profiles", name)),
            $"docs/benchmarks.md names {name}, which is not in docs/results"));
    }

    [Fact]
    public void EveryFigureSection_SaysHowToMeasureIt()
    {
        var sections = string.Join('\n', Page).Split("\n## ").Skip(2).ToList(); // after the intro and the summary
        Assert.NotEmpty(sections);
        Assert.All(sections, s => Assert.True(s.Contains("dotnet run", StringComparison.Ordinal) || s.Contains(".gpu/run.sh", StringComparison.Ordinal)
            || s.Contains("bench/gpu/", StringComparison.Ordinal), $"section '{s.Split('\n')[0]}' gives no command"));
        Assert.All(sections, s => Assert.Matches(@"2026-\d\d-\d\d", s));
    }

    // A result file name as the page writes it: docs/results/NAME.json, or NAME.json in backticks; $OUT/… is the device's.
    [GeneratedRegex(@"(?<=docs/results/|`)[a-z0-9][a-z0-9_.-]*\.(?:json|log)(?=`|\s|$)")]
    private static partial Regex ResultFile();
}
