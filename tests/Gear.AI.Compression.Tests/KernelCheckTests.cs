using Gear.Tests.Shared;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>The kernel checks gpu-selftest runs on CUDA, here on the CPU's one-pass code (one list of cases for both).</summary>
public class KernelCheckTests
{
    public static TheoryData<GearOptions, QuantAxis, int, int, bool> Compression()
    {
        var data = new TheoryData<GearOptions, QuantAxis, int, int, bool>();
        foreach (var (options, axis, n, d, half) in KernelChecks.CompressionCases())
            data.Add(options, axis, n, d, half);
        return data;
    }

    public static TheoryData<int, int, int> PowerIteration()
    {
        var data = new TheoryData<int, int, int>();
        foreach (var (n, d, rank) in KernelChecks.PowerIterationCases())
            data.Add(n, d, rank);
        return data;
    }

    public static TheoryData<QuantAxis, int, int, int, int> Quantization()
    {
        var data = new TheoryData<QuantAxis, int, int, int, int>();
        foreach (var (axis, bits, n, d, g) in KernelChecks.QuantizationCases())
            data.Add(axis, bits, n, d, g);
        return data;
    }

    [Theory]
    [MemberData(nameof(Compression))]
    public void BlockCompression_OnePassEqualsTheTensorOps(GearOptions options, QuantAxis axis, int n, int d, bool half) =>
        Check(KernelChecks.Compression(options, axis, n, d, half, CPU));

    [Theory]
    [MemberData(nameof(PowerIteration))]
    public void PowerIteration_OnePassEqualsTheTensorOps(int n, int d, int rank) => Check(KernelChecks.PowerIteration(n, d, rank, CPU));

    [Theory]
    [MemberData(nameof(Quantization))]
    public void Quantization_EqualsTheTensorOps(QuantAxis axis, int bits, int n, int d, int g) => Check(KernelChecks.Quantization(axis, bits, n, d, g, CPU));

    private static void Check(KernelChecks.Result result) => Assert.True(result.Passed, $"{result.Name} ({result.Cache} {result.Bits}): {result.Detail}");
}
