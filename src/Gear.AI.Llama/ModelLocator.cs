namespace Gear.AI.Llama;

/// <summary>
/// Turns a model name into a model directory. A name (e.g. <c>gear-tiny</c>) is looked for, in this order, in
/// <list type="number">
/// <item>the given models directory (<c>GearChatClientOptions.ModelsDirectory</c>);</item>
/// <item>each directory of the <c>GEAR_MODELS</c> environment variable (separated like PATH);</item>
/// <item><c>models/</c> next to the application (where the bundled models are copied on build);</item>
/// <item><c>models/</c> in the working directory or any directory above it, then above the application's folder (a
/// checkout of the Gear.AI repository).</item>
/// </list>
/// A path to an existing directory is taken as it is.
/// </summary>
public static class ModelLocator
{
    /// <summary>The bundled default model.</summary>
    public const string DefaultModel = "stories260K";

    /// <summary>The environment variable of extra models directories.</summary>
    public const string ModelsVariable = "GEAR_MODELS";

    /// <summary>Resolves <paramref name="nameOrPath"/> to a model directory (full path).</summary>
    /// <param name="nameOrPath">A model directory, or a model's name.</param>
    /// <param name="modelsDirectory">A directory of models searched first, or null.</param>
    /// <exception cref="ModelNotFoundException">Nothing found; the message lists every place looked in and what to set.</exception>
    public static string Resolve(string nameOrPath, string? modelsDirectory = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(nameOrPath);
        if (Directory.Exists(nameOrPath))
            return Path.GetFullPath(nameOrPath);
        var looked = new List<string>();
        foreach (var candidate in Candidates(nameOrPath, modelsDirectory))
        {
            if (looked.Contains(candidate))
                continue;
            looked.Add(candidate);
            if (Directory.Exists(candidate))
                return candidate;
        }
        throw new ModelNotFoundException(nameOrPath, looked);
    }

    private static IEnumerable<string> Candidates(string name, string? modelsDirectory)
    {
        // A name with a directory part that does not exist is a path, not a name: report it as such.
        bool isPath = name.Contains(Path.DirectorySeparatorChar) || name.Contains(Path.AltDirectorySeparatorChar) || Path.IsPathRooted(name);
        if (isPath)
        {
            yield return Path.GetFullPath(name);
            yield break;
        }
        if (!string.IsNullOrWhiteSpace(modelsDirectory))
            yield return Path.GetFullPath(Path.Combine(modelsDirectory, name));
        foreach (var dir in (Environment.GetEnvironmentVariable(ModelsVariable) ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            yield return Path.GetFullPath(Path.Combine(dir, name));
        yield return Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "models", name));
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                yield return Path.Combine(dir.FullName, "models", name);
    }
}
