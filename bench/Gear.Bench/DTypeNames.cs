using TorchSharp;

namespace Gear.Bench;

/// <summary>The model dtypes the GPU commands take (<c>--dtype</c>), both ways: a child run gets its parent's back as text.</summary>
internal static class DTypeNames
{
    public static torch.ScalarType Parse(string name) => name switch
    {
        "bf16" or "bfloat16" => torch.ScalarType.BFloat16,
        "fp16" or "float16" => torch.ScalarType.Float16,
        "fp32" or "float32" => torch.ScalarType.Float32,
        _ => throw new ArgumentException($"--dtype '{name}' is not bf16, fp16 or fp32."),
    };

    public static string Name(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.BFloat16 => "bf16",
        torch.ScalarType.Float16 => "fp16",
        torch.ScalarType.Float32 => "fp32",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Not a dtype the GPU commands take."),
    };
}
