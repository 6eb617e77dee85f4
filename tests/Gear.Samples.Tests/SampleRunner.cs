using System.Diagnostics;

namespace Gear.Samples.Tests;

/// <summary>Runs a built sample (same configuration as this test assembly) and captures its output.</summary>
internal static class SampleRunner
{
    public static string RepoRoot => Gear.Tests.Shared.Checkout.Root;

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

    /// <summary>Starts a built sample to be driven while it runs (stdin written, output read as it comes).</summary>
    public static RunningSample Start(string folder, string project, params string[] args)
    {
        string dll = Path.Combine(RepoRoot, folder, project, "bin", Configuration, "net10.0", project + ".dll");
        Assert.True(File.Exists(dll), $"{dll} not built");
        // A test run started in the background (nohup, CI) ignores SIGINT, and children inherit that: the sample gets the
        // default disposition back so that Ctrl+C reaches it as it would from a terminal.
        var info = new ProcessStartInfo(OperatingSystem.IsLinux() ? "env" : "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, WorkingDirectory = Path.GetTempPath(),
        };
        if (OperatingSystem.IsLinux())
        {
            info.ArgumentList.Add("--default-signal=INT");
            info.ArgumentList.Add("dotnet");
        }
        info.ArgumentList.Add(dll);
        foreach (var a in args)
            info.ArgumentList.Add(a);
        return new RunningSample(Process.Start(info)!);
    }
}

/// <summary>A sample process under test: its output collected as it comes; killed if still running when disposed.</summary>
internal sealed class RunningSample : IDisposable
{
    private readonly Process _process;
    private readonly System.Text.StringBuilder _stdout = new(), _stderr = new();
    private readonly Task _stdoutRead;

    public RunningSample(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => { lock (_stdout) _stdout.Append(e.Data).Append('\n'); };
        _process.ErrorDataReceived += (_, e) => { lock (_stderr) _stderr.Append(e.Data).Append('\n'); };
        _process.BeginErrorReadLine();
        // Replies are written a piece at a time with no line end until they finish: stdout is read by characters.
        _stdoutRead = Task.Run(async () =>
        {
            var buffer = new char[256];
            int n;
            while ((n = await _process.StandardOutput.ReadAsync(buffer)) > 0)
                lock (_stdout)
                    _stdout.Append(buffer, 0, n);
        });
    }

    public StreamWriter Input => _process.StandardInput;

    public string Stdout { get { lock (_stdout) return _stdout.ToString(); } }

    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

    public int ExitCode => _process.ExitCode;

    public bool WaitForOutput(TimeSpan timeout) => SpinWait.SpinUntil(() => Stdout.Trim().Length > 0, timeout);

    public bool WaitForError(string text, TimeSpan timeout) => SpinWait.SpinUntil(() => Stderr.Contains(text, StringComparison.Ordinal), timeout);

    /// <summary>Waits for the process to end and for its output to be read to the end.</summary>
    public bool WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
            return false;
        _process.WaitForExit();                                                            // drains the redirected stderr
        return _stdoutRead.Wait(timeout);
    }

    /// <summary>Ctrl+C as a terminal sends it: SIGINT to the process.</summary>
    public void Interrupt()
    {
        if (kill(_process.Id, 2) != 0)
            throw new InvalidOperationException($"kill(SIGINT) failed: errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);

    public void Dispose()
    {
        if (!_process.HasExited)
            _process.Kill(entireProcessTree: true);
        _process.Dispose();
    }
}
