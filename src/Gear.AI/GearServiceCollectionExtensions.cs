using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Gear.AI;

/// <summary>Registers <see cref="GearChatClient"/> as the application's <see cref="IChatClient"/>.</summary>
public static class GearServiceCollectionExtensions
{
    /// <summary>
    /// Adds a singleton <see cref="GearChatClient"/> (model loaded once, on first use, disposed with the
    /// container) and returns the <see cref="ChatClientBuilder"/> so middleware chains:
    /// <c>.UseFunctionInvocation().UseOpenTelemetry().UseLogging()</c>. Options are validated at startup.
    /// </summary>
    public static ChatClientBuilder AddGearChatClient(this IServiceCollection services, Action<GearChatClientOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<GearChatClientOptions>().Configure(configure).ValidateOnStart();
        return AddCore(services, serviceKey: null);
    }

    /// <summary>As <see cref="AddGearChatClient(IServiceCollection, Action{GearChatClientOptions})"/>, bound to a configuration section (conventionally "Gear").</summary>
    public static ChatClientBuilder AddGearChatClient(this IServiceCollection services, IConfiguration section, Action<GearChatClientOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(section);
        var builder = services.AddOptions<GearChatClientOptions>().Bind(section);
        if (configure is not null)
            builder.Configure(configure);
        builder.ValidateOnStart();
        return AddCore(services, serviceKey: null);
    }

    /// <summary>A keyed <see cref="GearChatClient"/> and <see cref="IChatClient"/> with its own named options.</summary>
    public static ChatClientBuilder AddKeyedGearChatClient(this IServiceCollection services, object serviceKey, Action<GearChatClientOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(serviceKey);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<GearChatClientOptions>(OptionsName(serviceKey)).Configure(configure).ValidateOnStart();
        return AddCore(services, serviceKey);
    }

    /// <summary>Loads the model while the host starts (a hosted warm-up) instead of on the first request.</summary>
    public static ChatClientBuilder WithWarmup(this ChatClientBuilder builder, IServiceCollection services, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(services);
        services.AddSingleton<IHostedService>(sp => new GearWarmupService(sp, serviceKey, Logger<GearWarmupService>(sp)));
        return builder;
    }

    private static ILogger<T> Logger<T>(IServiceProvider sp) =>
        sp.GetService<ILogger<T>>() ?? new Logger<T>(sp.GetService<ILoggerFactory>() ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);

    private static string OptionsName(object? key) => key is null ? Options.DefaultName : "Gear:" + key;

    private static ChatClientBuilder AddCore(IServiceCollection services, object? serviceKey)
    {
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<GearChatClientOptions>, GearChatClientOptionsValidator>());
        GearChatClient Create(IServiceProvider sp) => new(
            sp.GetRequiredService<IOptionsMonitor<GearChatClientOptions>>().Get(OptionsName(serviceKey)),
            Logger<GearChatClient>(sp));
        if (serviceKey is null)
        {
            services.AddSingleton(Create);
            return services.AddChatClient(sp => sp.GetRequiredService<GearChatClient>());
        }
        services.AddKeyedSingleton(serviceKey, (sp, _) => Create(sp));
        return services.AddKeyedChatClient(serviceKey, sp => sp.GetRequiredKeyedService<GearChatClient>(serviceKey));
    }
}
