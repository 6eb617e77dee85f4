using TorchSharp;

namespace Gear.AI.Compression;

/// <summary>
/// TorchSharp Scalars that live as long as the process. A Scalar made for one call (an implicit conversion, or one that
/// TorchSharp makes inside <c>add(Tensor)</c>, <c>tensor * 0.5</c>, …) is not kept alive during the native call, and a
/// garbage collection can free it mid-call (docs/reliability.md): pass these, or a <c>using</c> Scalar, instead. The
/// GEAR001 analyzer (analyzers/Gear.Analyzers) holds the library to that.
/// </summary>
internal static class Scalars
{
    public static readonly Scalar Zero = 0;
    public static readonly Scalar One = 1;
    public static readonly Scalar Two = 2;
    public static readonly Scalar NegativeInfinity = double.NegativeInfinity;
    public static readonly Scalar True = true;

    /// <summary><c>arange(start, stop, step)</c> with Scalars that outlive the call.</summary>
    public static torch.Tensor Arange(long start, long stop, long step, torch.ScalarType dtype, torch.Device device)
    {
        using Scalar first = start, end = stop, stride = step;
        return torch.arange(first, end, stride, dtype, device);
    }
}
