using System.Collections.Concurrent;
using TorchSharp;

namespace Gear.AI;

/// <summary>
/// The one thread a client runs tensor work on: requests queue here in arrival order. Keeping all
/// TorchSharp work on one thread also makes its per-thread dispose statistics a global leak count.
/// </summary>
internal sealed class TorchWorker : IDisposable
{
    private readonly BlockingCollection<Action> _queue = new();
    private readonly Thread _thread;

    public TorchWorker(string name)
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>Queues <paramref name="work"/>; skipped (cancelled) if <paramref name="ct"/> fires before it starts.</summary>
    public Task<T> Run<T>(Func<T> work, CancellationToken ct = default)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            _queue.Add(() =>
            {
                if (ct.IsCancellationRequested)
                {
                    tcs.TrySetCanceled(ct);
                    return;
                }
                try
                {
                    tcs.TrySetResult(work());
                }
                catch (OperationCanceledException e)
                {
                    tcs.TrySetCanceled(e.CancellationToken);
                }
                catch (Exception e)
                {
                    tcs.TrySetException(e);
                }
            }, CancellationToken.None);
        }
        catch (InvalidOperationException)
        {
            tcs.TrySetException(new ObjectDisposedException(nameof(GearChatClient)));
        }
        return tcs.Task;
    }

    /// <summary>Tensors alive on the worker thread (created there and not yet disposed).</summary>
    public long LiveTensors => Run(() => DisposeScopeManager.Statistics.ThreadTotalLiveCount).GetAwaiter().GetResult();

    private void Loop()
    {
        foreach (var work in _queue.GetConsumingEnumerable())
            work();
    }

    public void Dispose()
    {
        _queue.CompleteAdding();
        if (Thread.CurrentThread != _thread)
            _thread.Join();
        _queue.Dispose();
    }
}
