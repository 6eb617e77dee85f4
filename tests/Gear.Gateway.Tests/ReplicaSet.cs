using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Gear.Gateway.Tests;

/// <summary>
/// Gear.Server replicas as real processes on 127.0.0.1 (each on a port of its own, each with its own engine and KV
/// cache), started for a test and killed with it; each also stops by itself after 15 minutes (coreutils timeout).
/// </summary>
public sealed partial class ReplicaSet : IAsyncDisposable
{
    private static readonly TimeSpan Lifetime = TimeSpan.FromMinutes(15);
    private readonly List<Replica> _replicas = [];

    /// <summary>The replicas' base addresses, in start order.</summary>
    public IReadOnlyList<Uri> Addresses => [.. _replicas.Select(r => r.Address)];

    /// <summary>Starts <paramref name="count"/> replicas of gear-tiny (greedy by default) and waits until each is ready.</summary>
    public static async Task<ReplicaSet> StartAsync(int count, params string[] args)
    {
        var set = new ReplicaSet();
        try
        {
            var started = await Task.WhenAll(Enumerable.Range(0, count).Select(_ => Replica.StartAsync(args)));
            set._replicas.AddRange(started);
            return set;
        }
        catch
        {
            await set.DisposeAsync();
            throw;
        }
    }

    private readonly List<System.Net.Sockets.Socket> _held = [];

    /// <summary>
    /// Kills replica <paramref name="index"/> at once (SIGKILL: no draining), as a crashed machine would stop, and keeps
    /// its port bound (never listening) so that no other test's server takes the address the gateway still probes.
    /// </summary>
    public void Kill(int index)
    {
        _replicas[index].Dispose();
        var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        try
        {
            socket.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, _replicas[index].Address.Port));
            lock (_held)
                _held.Add(socket);
        }
        catch (System.Net.Sockets.SocketException)
        {
            socket.Dispose();                                                                  // taken already: nothing to hold
        }
    }

    public ValueTask DisposeAsync()
    {
        foreach (var replica in _replicas)
            replica.Dispose();
        lock (_held)
            foreach (var socket in _held)
                socket.Dispose();
        return ValueTask.CompletedTask;
    }

    private sealed partial class Replica(Process process, Uri address) : IDisposable
    {
        public Uri Address { get; } = address;

        public static async Task<Replica> StartAsync(string[] args)
        {
            string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
            string dll = Path.Combine(Gear.Tests.Shared.Checkout.Root, "samples", "Gear.Server", "bin", configuration, "net10.0", "Gear.Server.dll");
            Assert.True(File.Exists(dll), $"{dll} not built");
            bool bounded = File.Exists("/usr/bin/timeout");
            var info = new ProcessStartInfo(bounded ? "/usr/bin/timeout" : "dotnet")
            {
                RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath(),
            };
            if (bounded)
            {
                info.ArgumentList.Add("--signal=KILL");
                info.ArgumentList.Add(((int)Lifetime.TotalSeconds).ToString());
                info.ArgumentList.Add("dotnet");
            }
            foreach (var a in (string[])[dll, "--Urls=http://127.0.0.1:0", "--Gear:Model=gear-tiny", "--Gear:DefaultTemperature=0",
                         "--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:Microsoft.Hosting.Lifetime=Information", .. args])
                info.ArgumentList.Add(a);
            var process = Process.Start(info)!;
            var listening = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
            var output = new System.Text.StringBuilder();
            process.OutputDataReceived += (_, e) =>
            {
                lock (output)
                    output.AppendLine(e.Data);
                if (e.Data is { } line && Listening().Match(line) is { Success: true } m)
                    listening.TrySetResult(new Uri(m.Groups[1].Value));
            };
            process.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var replica = new Replica(process, new Uri("http://127.0.0.1"));
            try
            {
                var address = await listening.Task.WaitAsync(TimeSpan.FromMinutes(2));
                Assert.Equal("127.0.0.1", address.Host);                                       // loopback only
                using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(10) };
                var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
                while (!(await http.GetAsync("/health/ready")).IsSuccessStatusCode)
                {
                    Assert.True(DateTime.UtcNow < deadline, "the replica did not become ready within 2 minutes");
                    await Task.Delay(200);
                }
                return new Replica(process, address);
            }
            catch (Exception e)
            {
                replica.Dispose();
                string log;
                lock (output)
                    log = output.ToString();
                throw new InvalidOperationException($"A replica did not start: {e.Message}\n{log}", e);
            }
        }

        [GeneratedRegex(@"Now listening on: (http://\S+)")]
        private static partial Regex Listening();

        public void Dispose()
        {
            try
            {
                if (!process.HasExited)
                    process.Kill(entireProcessTree: true);
                process.WaitForExit(10_000);
            }
            catch (InvalidOperationException)
            {
            }
        }
    }
}
