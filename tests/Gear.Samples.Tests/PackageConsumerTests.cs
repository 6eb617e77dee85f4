using System.Diagnostics;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Gear.Samples.Tests;

/// <summary>
/// Gear.AI as a new user gets it: the packages packed into a local feed, a new console app in a temporary folder with
/// its own package cache for the Gear packages, the README's packages and program, built and run on gear-tiny.
/// </summary>
public class PackageConsumerTests(ITestOutputHelper output)
{
    private static readonly string Root = SampleRunner.RepoRoot;

    [Fact]
    public void ReadmeProgram_OnThePackedPackages_RunsFirstTime()
    {
        string work = Directory.CreateTempSubdirectory("gear-consumer-").FullName;
        try
        {
            string feed = Path.Combine(work, "feed"), app = Path.Combine(work, "app");
            string version = "0.0.0-ci." + Guid.NewGuid().ToString("N")[..8];
            // From the Release build the test run already made (packing must not rebuild what other test processes load).
            foreach (var project in new[] { "Gear.AI.Compression", "Gear.AI.Llama", "Gear.AI", "Gear.AI.Models" })
                Dotnet(Root, TimeSpan.FromMinutes(4), "pack", Path.Combine("src", project, project + ".csproj"), "-c", "Release", "--no-build", "-o", feed, $"-p:Version={version}");
            Directory.CreateDirectory(app);
            var packages = ReadmePackages().Select(p => p.Id.StartsWith("Gear.AI", StringComparison.Ordinal) ? (p.Id, Version: version) : p).ToList();
            Assert.Contains(packages, p => p.Id == "Gear.AI");
            WriteProject(app, string.Concat(packages.Select(p => $"    <PackageReference Include=\"{p.Id}\" Version=\"{p.Version}\" />\n")));
            WriteNuGetConfig(app, Path.Combine(work, "packages"), feed);
            File.WriteAllText(Path.Combine(app, "Program.cs"), ReadmeProgram());
            var (code, stdout, stderr) = Dotnet(app, TimeSpan.FromMinutes(6), "run", "-c", "Release");
            output.WriteLine(stdout);
            Assert.True(code == 0, stderr + stdout);
            Assert.True(stdout.Trim().Length > 20, $"no generated text: '{stdout}'");
            Assert.True(Directory.Exists(Path.Combine(work, "packages", "gear.ai", version)), "Gear.AI came from the feed into the app's own cache");
            Assert.True(File.Exists(Path.Combine(app, "bin", "Release", "net10.0", "models", "gear-tiny", "config.json")), "Gear.AI.Models copied the models next to the app");
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    [Fact]
    public void WithoutANativePackage_TheErrorSaysWhichOneToAdd()
    {
        string work = Directory.CreateTempSubdirectory("gear-consumer-nolib-").FullName;
        try
        {
            string feed = Path.Combine(work, "feed"), app = Path.Combine(work, "app"), cache = Path.Combine(work, "packages");
            string version = "0.0.0-ci." + Guid.NewGuid().ToString("N")[..8];
            foreach (var project in new[] { "Gear.AI.Compression", "Gear.AI.Llama", "Gear.AI", "Gear.AI.Models" })
                Dotnet(Root, TimeSpan.FromMinutes(4), "pack", Path.Combine("src", project, project + ".csproj"), "-c", "Release", "--no-build", "-o", feed, $"-p:Version={version}");
            Directory.CreateDirectory(app);
            var packages = ReadmePackages().Where(p => !p.Id.StartsWith("libtorch", StringComparison.Ordinal)).Select(p => p.Id.StartsWith("Gear.AI", StringComparison.Ordinal) ? (p.Id, Version: version) : p);
            WriteProject(app, string.Concat(packages.Select(p => $"    <PackageReference Include=\"{p.Id}\" Version=\"{p.Version}\" />\n")));
            WriteNuGetConfig(app, cache, feed);
            File.WriteAllText(Path.Combine(app, "Program.cs"), ReadmeProgram());
            // The app's own cache is where TorchSharp's fallback would look for libtorch: it is not there.
            var (code, stdout, stderr) = Dotnet(app, TimeSpan.FromMinutes(6), ("NUGET_PACKAGES", cache), "run", "-c", "Release");
            Assert.NotEqual(0, code);
            Assert.Contains("Add one native package to the application: libtorch-cpu-linux-x64", stderr + stdout);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    [Fact]
    public void ReadmeProgram_OnAProjectReference_WithTheLinuxStepImported_RunsFirstTime()
    {
        string work = Directory.CreateTempSubdirectory("gear-consumer-ref-").FullName;
        try
        {
            var references = string.Concat(ReadmePackages().Where(p => !p.Id.StartsWith("Gear.AI", StringComparison.Ordinal)).Select(p => $"    <PackageReference Include=\"{p.Id}\" Version=\"{p.Version}\" />\n"))
                + $"    <ProjectReference Include=\"{Path.Combine(Root, "src", "Gear.AI", "Gear.AI.csproj")}\" />\n";
            WriteProject(work, references, $"  <Import Project=\"{Path.Combine(Root, "build", "Gear.AI.TorchSharpLinux.targets")}\" />\n");
            File.WriteAllText(Path.Combine(work, "Program.cs"), ReadmeProgram());
            // The models come from the checkout here (Gear.AI.Models copies them only through its package).
            var (code, stdout, stderr) = Dotnet(work, TimeSpan.FromMinutes(6), ("GEAR_MODELS", Path.Combine(Root, "models")), "run", "-c", "Release");
            Assert.True(code == 0, stderr + stdout);
            Assert.True(stdout.Trim().Length > 20, $"no generated text: '{stdout}'");
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>Gear packages from the feed into the app's own cache; everything else from the machine's cache as it is.</summary>
    private static void WriteNuGetConfig(string app, string cache, string feed) => File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
        <?xml version="1.0" encoding="utf-8"?>
        <configuration>
          <config><add key="globalPackagesFolder" value="{cache}" /></config>
          <packageSources><add key="gear-feed" value="{feed}" /></packageSources>
          <fallbackPackageFolders><add key="machine" value="{MachinePackages}" /></fallbackPackageFolders>
        </configuration>
        """);

    private static string MachinePackages => Environment.GetEnvironmentVariable("NUGET_PACKAGES")
        ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    private static void WriteProject(string directory, string references, string imports = "") => File.WriteAllText(Path.Combine(directory, "app.csproj"), $"""
        <Project Sdk="Microsoft.NET.Sdk">
          <PropertyGroup>
            <OutputType>Exe</OutputType>
            <TargetFramework>net10.0</TargetFramework>
            <ImplicitUsings>enable</ImplicitUsings>
            <Nullable>enable</Nullable>
          </PropertyGroup>
          <ItemGroup>
        {references}  </ItemGroup>
        {imports}</Project>
        """);

    /// <summary>The <c>dotnet add package</c> lines of the README's install block: id and version (the repository's pinned one where the line gives none).</summary>
    private static List<(string Id, string Version)> ReadmePackages()
    {
        var pinned = XmlVersions();
        var install = Regex.Match(File.ReadAllText(Path.Combine(Root, "README.md")), @"<!-- package-install -->\s*```bash\n(.*?)```", RegexOptions.Singleline);
        Assert.True(install.Success, "README has no package-install block");
        return [.. Regex.Matches(install.Groups[1].Value, @"^dotnet add package (\S+)(?: --version (\S+))?", RegexOptions.Multiline)
            .Select(m => (m.Groups[1].Value, m.Groups[2].Success ? m.Groups[2].Value : pinned.GetValueOrDefault(m.Groups[1].Value, "")))];
    }

    private static Dictionary<string, string> XmlVersions() =>
        Regex.Matches(File.ReadAllText(Path.Combine(Root, "Directory.Packages.props")), "<PackageVersion Include=\"([^\"]+)\" Version=\"([^\"]+)\"")
            .ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);

    /// <summary>The README's complete program: the C# block after the package-quickstart marker.</summary>
    private static string ReadmeProgram()
    {
        string readme = File.ReadAllText(Path.Combine(Root, "README.md"));
        var m = Regex.Match(readme, @"<!-- package-quickstart -->\s*```csharp\n(.*?)```", RegexOptions.Singleline);
        Assert.True(m.Success, "README has no package-quickstart program");
        return m.Groups[1].Value;
    }

    private (int Code, string Stdout, string Stderr) Dotnet(string directory, TimeSpan timeout, params string[] args) =>
        Dotnet(directory, timeout, null, args);

    private (int Code, string Stdout, string Stderr) Dotnet(string directory, TimeSpan timeout, (string Name, string Value)? variable, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            info.ArgumentList.Add(a);
        info.Environment.Remove("GEAR_MODELS");                                           // gear-tiny comes from Gear.AI.Models
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["DOTNET_NOLOGO"] = "1";
        if (variable is { } v)
            info.Environment[v.Name] = v.Value;
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"dotnet {string.Join(' ', args)} did not finish within {timeout}");
        }
        output.WriteLine($"dotnet {string.Join(' ', args)}: exit {process.ExitCode} in {clock.Elapsed.TotalSeconds:F0} s");
        Assert.True(args[0] != "pack" || process.ExitCode == 0, stdout.Result + stderr.Result);
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}
