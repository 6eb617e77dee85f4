namespace Gear.AI.Llama;

/// <summary>A checkpoint, config or tokenizer file could not be loaded; the message names the file and the problem.</summary>
public sealed class ModelLoadException : GearException
{
    /// <summary>Creates the exception for <paramref name="path"/>.</summary>
    public ModelLoadException(string path, string problem, Exception? innerException = null)
        : base($"{path}: {problem}", innerException)
    {
        FilePath = path;
        Problem = problem;
    }

    /// <summary>The file that failed to load.</summary>
    public string FilePath { get; }

    /// <summary>What was wrong with it.</summary>
    public string Problem { get; }
}
