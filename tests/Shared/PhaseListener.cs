using System.Diagnostics;

namespace Gear.Tests.Shared;

/// <summary>
/// Calls <c>onPhase</c> with the name of each phase the library reports through its "Gear.AI.Phases" diagnostic listener
/// (decode attention and block compression), on this thread only, while the subscription lasts (gpu-profile times the
/// phases with it; the unit tests check which ran).
/// </summary>
internal sealed class PhaseListener : IObserver<DiagnosticListener>, IObserver<KeyValuePair<string, object?>>, IDisposable
{
    private readonly Action<string> _onPhase;
    private readonly int _thread = Environment.CurrentManagedThreadId;
    private readonly List<IDisposable> _subscriptions = [];

    public PhaseListener(Action<string> onPhase)
    {
        _onPhase = onPhase;
        _subscriptions.Add(DiagnosticListener.AllListeners.Subscribe(this));
    }

    public void OnNext(DiagnosticListener listener)
    {
        if (listener.Name == Gear.AI.Compression.Phases.ListenerName)
            lock (_subscriptions)
                _subscriptions.Add(listener.Subscribe(this));
    }

    public void OnNext(KeyValuePair<string, object?> phase)
    {
        if (Environment.CurrentManagedThreadId == _thread)
            _onPhase(phase.Key);
    }

    public void OnCompleted()
    {
    }

    public void OnError(Exception error)
    {
    }

    public void Dispose()
    {
        lock (_subscriptions)
            foreach (var subscription in _subscriptions)
                subscription.Dispose();
    }
}
