using Microsoft.Extensions.Options;

namespace Gear.AI;

/// <summary>Validates <see cref="GearChatClientOptions"/> at startup; each failure names its option.</summary>
internal sealed class GearChatClientOptionsValidator : IValidateOptions<GearChatClientOptions>
{
    public ValidateOptionsResult Validate(string? name, GearChatClientOptions options)
    {
        var problems = options.Problems();
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
