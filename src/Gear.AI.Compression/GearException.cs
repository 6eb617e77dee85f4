namespace Gear.AI;

/// <summary>Base of every error Gear.AI raises for a condition a user can cause or fix.</summary>
public class GearException : Exception
{
    /// <summary>Creates the exception with a message that says what was wrong and what to do.</summary>
    public GearException(string message) : base(message) { }

    /// <summary>Creates the exception wrapping the underlying cause.</summary>
    public GearException(string message, Exception? innerException) : base(message, innerException) { }
}
