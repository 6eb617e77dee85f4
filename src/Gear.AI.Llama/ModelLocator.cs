namespace Gear.AI.Llama;

/// <summary>Finds the models bundled in the repository's <c>models/</c> folder.</summary>
public static class ModelLocator
{
    /// <summary>The bundled default model.</summary>
    public const string DefaultModel = "stories260K";

    /// <summary>
    /// Resolves <paramref name="nameOrPath"/>: an existing directory is returned as is; otherwise
    /// <c>models/&lt;name&gt;</c> is searched for walking up from <paramref name="startDirectory"/>
    /// (the app's base directory by default) to the file-system root, then up from the working directory.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">Neither exists; the message lists what was tried.</exception>
    public static string Resolve(string nameOrPath, string? startDirectory = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(nameOrPath);
        if (Directory.Exists(nameOrPath))
            return Path.GetFullPath(nameOrPath);
        // The app's own folder first (run from the repository), then the working directory (a published app).
        foreach (var start in new[] { startDirectory ?? AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", nameOrPath);
                if (Directory.Exists(candidate))
                    return candidate;
            }
        }
        throw new DirectoryNotFoundException(
            $"Model '{nameOrPath}' not found: it is not a directory and no models/{nameOrPath} exists above {startDirectory ?? AppContext.BaseDirectory}. Pass --model with a Hugging Face model directory.");
    }
}
