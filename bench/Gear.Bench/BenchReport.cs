using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Gear.Bench;

/// <summary>One benchmark command's output: {command, model, machine, date, rows}, written as JSON and shown as a table.</summary>
internal sealed class BenchReport<TRow>(string command, string model, string machine)
{
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public List<TRow> Rows { get; } = [];

    public void Add(TRow row)
    {
        Rows.Add(row);
        Console.Error.WriteLine($"  {JsonSerializer.Serialize(row, Json).ReplaceLineEndings(" ")}");
    }

    public void Finish(string? jsonPath)
    {
        PrintTable();
        if (jsonPath is null)
            return;
        var doc = new { command, model, machine, date = DateTime.UtcNow.ToString("yyyy-MM-dd"), rows = Rows };
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        File.WriteAllText(jsonPath, JsonSerializer.Serialize(doc, Json));
        Console.Error.WriteLine($"wrote {jsonPath}");
    }

    private void PrintTable()
    {
        var props = typeof(TRow).GetProperties();
        var names = props.Select(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name)).ToArray();
        var cells = Rows.Select(r => props.Select(p => Format(p.GetValue(r))).ToArray()).ToList();
        var widths = names.Select((n, i) => Math.Max(n.Length, cells.Count == 0 ? 0 : cells.Max(c => c[i].Length))).ToArray();
        Console.WriteLine($"{command} — {model} — {machine}");
        Console.WriteLine("| " + string.Join(" | ", names.Select((n, i) => n.PadRight(widths[i]))) + " |");
        Console.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
        foreach (var row in cells)
            Console.WriteLine("| " + string.Join(" | ", row.Select((c, i) => c.PadLeft(widths[i]))) + " |");
    }

    private static string Format(object? value) => value switch
    {
        null => "",
        double d => d >= 1000 ? d.ToString("F0") : d >= 10 ? d.ToString("F2") : d.ToString("F4"),
        System.Collections.IEnumerable items and not string => string.Join(" ", items.Cast<object?>().Select(Format)),
        _ => value.ToString() ?? "",
    };
}

/// <summary>What machine a result comes from.</summary>
internal static class Machine
{
    public static string Describe(string device)
    {
        string cpu = "unknown CPU";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException) { }
        string host = $"{cpu}, {Environment.ProcessorCount} cores, {Environment.OSVersion.VersionString}";
        if (!device.StartsWith("cuda", StringComparison.Ordinal))
            return $"CPU: {host}";
        return $"GPU: {GpuName()}; host {host}";
    }

    public static string GpuName()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("nvidia-smi", "--query-gpu=name,driver_version --format=csv,noheader") { RedirectStandardOutput = true })!;
            string output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return output.Split('\n')[0].Replace(", ", ", driver ");
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return "unknown GPU";
        }
    }
}
