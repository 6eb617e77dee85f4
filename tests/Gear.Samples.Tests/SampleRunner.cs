using System.Diagnostics;

namespace Gear.Samples.Tests;

/// <summary>Runs a built sample (same configuration as this test assembly) and captures its output.</summary>
internal static class SampleRunner
{
    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Gear.AI.sln")))
                    return dir.FullName;
            throw new DirectoryNotFoundException("Gear.AI.sln not found above the test output.");
        }
    }

    private static string Configuration => AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";

    public static (int ExitCode, string Stdout, string Stderr) Run(string folder, string project, string stdin, params string[] args)
    {
        string dll = Path.Combine(RepoRoot, folder, project, "bin", Configuration, "net10.0", project + ".dll");
        Assert.True(File.Exists(dll), $"{dll} not built");
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, WorkingDirectory = Path.GetTempPath() };
        info.ArgumentList.Add(dll);
        foreach (var a in args)
            info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.StandardInput.Write(stdin);
        process.StandardInput.Close();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{project} did not finish within 3 minutes");
        }
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}
