namespace Gear.AI.Llama;

/// <summary>A model name or directory that resolves to nothing; <see cref="Looked"/> lists where it was looked for.</summary>
public sealed class ModelNotFoundException : DirectoryNotFoundException
{
    /// <summary>Creates the exception for <paramref name="model"/>.</summary>
    public ModelNotFoundException(string model, IReadOnlyList<string> looked)
        : base(Describe(model, looked))
    {
        Model = model;
        Looked = looked;
    }

    /// <summary>The name or path asked for.</summary>
    public string Model { get; }

    /// <summary>The directories tried, in order.</summary>
    public IReadOnlyList<string> Looked { get; }

    private static string Describe(string model, IReadOnlyList<string> looked)
    {
        const int shown = 8;
        string places = string.Join("", looked.Take(shown).Select(p => "\n  " + p)) + (looked.Count > shown ? $"\n  … and {looked.Count - shown} more folders above" : "");
        return $"Model '{model}' was not found. Looked in:{places}\n" +
               "Set Model to a model directory (config.json, *.safetensors, tokenizer.model or tokenizer.json), or put the model " +
               $"in a folder named after it under GearChatClientOptions.ModelsDirectory or a directory of the {ModelLocator.ModelsVariable} environment variable.";
    }
}
