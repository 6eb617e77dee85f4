using Gear.AI.Llama.Weights;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Model;

/// <summary>Where and how to load a model.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>"cpu" (default), "cuda" or "cuda:N".</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Compute dtype; null picks float32 on CPU and bfloat16 on CUDA.</summary>
    public ScalarType? ComputeType { get; init; }

    /// <summary>Receives progress while tensors load.</summary>
    public IProgress<ModelLoadProgress>? Progress { get; init; }

    /// <summary>
    /// On the CPU under Linux (glibc), keep the memory freed tensors give back inside the process instead of returning it
    /// to the system between prompt chunks (default true): glibc's mmap threshold goes to its 32 MiB maximum and the heap
    /// is not trimmed, which made prefill about 1.6 × faster on a 2-core machine (docs/benchmarks.md). It sets the C
    /// allocator of the whole process, which then holds on to its peak heap; false leaves the allocator as it is.
    /// </summary>
    public bool KeepFreedHostMemory { get; init; } = true;

    /// <summary>
    /// Run Gear.AI's one-pass kernels where they apply (default true): on CUDA the paged attention, the page compression and
    /// the model's RMSNorm, rotary embedding and launch-light decode step; on every device the compression of a page in
    /// one pass. False runs tensor operations instead — slower; the reference the kernels are tested against, and a way
    /// around a kernel problem on an unusual GPU.
    /// </summary>
    public bool FusedKernels { get; init; } = true;
}
