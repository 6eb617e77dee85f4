namespace Gear.AI.Tests;

/// <summary>
/// Tests that measure the process or a shared engine (working set, live tensors, memory high-water marks) run alone,
/// after the others: other classes run in parallel and share the runtimes and their engines.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MeasuredCollection
{
    public const string Name = "Measured alone";
}
