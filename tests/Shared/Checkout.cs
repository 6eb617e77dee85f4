namespace Gear.Tests.Shared;

/// <summary>The checkout the tests run from.</summary>
internal static class Checkout
{
    /// <summary>The folder with Gear.AI.sln, above the test output.</summary>
    public static string Root
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Gear.AI.sln")))
                    return dir.FullName;
            throw new DirectoryNotFoundException("Gear.AI.sln not found above the test output.");
        }
    }
}
