using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>Helpers shared by the tests: float arrays in and out, leak checks.</summary>
internal static class TensorAssert
{
    public static float[] Floats(Tensor t) => t.to(ScalarType.Float32).contiguous().data<float>().ToArray();

    public static double RelativeError(Tensor approx, Tensor exact)
    {
        using var scope = NewDisposeScope();
        var a = approx.to(ScalarType.Float32);
        var e = exact.to(ScalarType.Float32);
        return (a - e).norm().item<float>() / e.norm().item<float>();
    }

    public static void Equal(Tensor expected, Tensor actual)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(Floats(expected), Floats(actual));
    }

    /// <summary>Live tensors on this thread; a leak check compares it before and after.</summary>
    public static long LiveTensors => DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    /// <summary>Runs <paramref name="action"/> and asserts it left no tensor alive on this thread.</summary>
    public static void NoLeaks(Action action)
    {
        action(); // warm up one-time allocations (generators, constants)
        long before = LiveTensors;
        action();
        Assert.Equal(before, LiveTensors);
    }
}
