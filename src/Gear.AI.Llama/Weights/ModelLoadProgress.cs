namespace Gear.AI.Llama.Weights;

/// <summary>Progress of a model load.</summary>
/// <param name="TensorsLoaded">Tensors done so far.</param>
/// <param name="TensorsTotal">Tensors to load.</param>
/// <param name="BytesLoaded">Checkpoint bytes read so far.</param>
/// <param name="BytesTotal">Checkpoint bytes to read.</param>
/// <param name="CurrentTensor">Name of the tensor just loaded.</param>
/// <param name="Shard">File name of the safetensors shard it came from.</param>
public sealed record ModelLoadProgress(int TensorsLoaded, int TensorsTotal, long BytesLoaded, long BytesTotal, string CurrentTensor, string Shard)
{
    /// <summary>Share of the checkpoint's bytes read, 0 to 1.</summary>
    public double Fraction => BytesTotal == 0 ? 1 : (double)BytesLoaded / BytesTotal;
}
