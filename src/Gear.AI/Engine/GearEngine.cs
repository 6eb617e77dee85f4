using System.Collections.Concurrent;
using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama;
using Gear.AI.Llama.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Engine;

/// <summary>
/// One loaded model and the only thread that runs its tensor work, shared by every <see cref="GearChatClient"/> over that
/// model. Requests wait in arrival order and are admitted at step boundaries (within their client's
/// <see cref="GearChatClientOptions.MaxConcurrentSequences"/> and memory); every step then runs all admitted requests
/// together, one ragged batch per cache setting: a prompt chunk for those still prefilling, one token for the others.
/// A request that ends, fails or is cancelled leaves the batch at the next step; the others never notice.
/// </summary>
internal sealed class GearEngine : IDisposable
{
    private readonly BlockingCollection<Action> _inbox = new();
    private readonly Func<LlamaRuntime> _load;
    private readonly bool _ownsRuntime;
    private readonly Thread _thread;
    private readonly List<GenerationJob> _waiting = [];
    private readonly List<GenerationJob> _running = [];
    private LlamaRuntime? _runtime;
    private int _disposed;

    /// <summary>An engine that loads its runtime on first use (and disposes it), or runs <paramref name="runtime"/> (not disposed).</summary>
    public GearEngine(Func<LlamaRuntime> load, string name, LlamaRuntime? runtime = null)
    {
        _load = load;
        _runtime = runtime;
        _ownsRuntime = runtime is null;
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>The runtime once loaded (any thread may read its tokenizer and template).</summary>
    public LlamaRuntime? Loaded => Volatile.Read(ref _runtime);

    /// <summary>Loads the runtime on the engine thread if needed.</summary>
    public Task<LlamaRuntime> LoadAsync(CancellationToken cancellationToken = default) => Run(() => Runtime, cancellationToken);

    private LlamaRuntime Runtime
    {
        get
        {
            if (_runtime is null)
                Volatile.Write(ref _runtime, _load());
            return _runtime!;
        }
    }

    /// <summary>Runs <paramref name="work"/> on the engine thread between steps; skipped if <paramref name="cancellationToken"/> fires first.</summary>
    public Task<T> Run<T>(Func<T> work, CancellationToken cancellationToken = default)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        void Action()
        {
            if (cancellationToken.IsCancellationRequested)
            {
                tcs.TrySetCanceled(cancellationToken);
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
        }
        if (!TryPost(Action))
            tcs.TrySetException(new ObjectDisposedException(nameof(GearChatClient)));
        return tcs.Task;
    }

    /// <summary>Queues <paramref name="job"/>; its updates arrive on <see cref="GenerationJob.Updates"/>.</summary>
    /// <exception cref="GearBusyException">Its client already has as many requests waiting as it allows.</exception>
    public void Submit(GenerationJob job)
    {
        var store = job.Store;
        if (Interlocked.Increment(ref store.Waiting) > store.MaxQueued)
        {
            Interlocked.Decrement(ref store.Waiting);
            throw new GearBusyException(store.MaxQueued);
        }
        if (!TryPost(() => _waiting.Add(job)))
        {
            Interlocked.Decrement(ref store.Waiting);
            throw new ObjectDisposedException(nameof(GearChatClient));
        }
        // A cancelled request leaves at the next step boundary; wake the loop in case it is idle.
        job.Wake = job.Token.UnsafeRegister(static state => ((GearEngine)state!).TryPost(static () => { }), this);
    }

    /// <summary>Cancels every request of <paramref name="store"/> now (its client is closing). Engine thread only.</summary>
    public void Drop(SessionStore store)
    {
        foreach (var job in _waiting.Where(j => j.Store == store).ToArray())
        {
            _waiting.Remove(job);
            Interlocked.Decrement(ref store.Waiting);
            job.Fail(new ObjectDisposedException(nameof(GearChatClient)));
        }
        foreach (var job in _running.Where(j => j.Store == store).ToArray())
            Retire(job, new ObjectDisposedException(nameof(GearChatClient)));
    }

    /// <summary>Tensors alive that the engine thread created (flat across requests when nothing leaks).</summary>
    public long LiveTensors => Run(() => DisposeScopeManager.Statistics.ThreadTotalLiveCount).GetAwaiter().GetResult();

    private bool TryPost(Action action)
    {
        try
        {
            return _inbox.TryAdd(action);
        }
        catch (InvalidOperationException)
        {
            return false;                                                                      // completed: the engine is stopping
        }
    }

    private void Loop()
    {
        while (true)
        {
            if (_running.Count == 0 && _waiting.Count == 0)
            {
                if (!_inbox.TryTake(out var first, Timeout.Infinite))
                    break;                                                                     // completed and drained
                first();
            }
            while (_inbox.TryTake(out var action))
                action();
            if (_inbox.IsCompleted)
                break;
            RetireCancelled();
            Admit();
            if (_running.Count > 0)
                Step();
        }
    }

    private void RetireCancelled()
    {
        foreach (var job in _running.Where(j => j.Token.IsCancellationRequested).ToArray())
            Retire(job, new OperationCanceledException(job.Token));
    }

    /// <summary>
    /// Admits waiting requests in arrival order, each client's own order kept: a request waits while its client runs as
    /// many sequences as it allows, or while what its client's running requests may still need leaves too little of the
    /// budget for all of its prompt and output (a request that would run alone is always admitted).
    /// </summary>
    private void Admit()
    {
        HashSet<SessionStore>? blocked = null;
        HashSet<PagePool>? admitted = null;
        for (int i = 0; i < _waiting.Count;)
        {
            var job = _waiting[i];
            var store = job.Store;
            if (job.Token.IsCancellationRequested)
            {
                _waiting.RemoveAt(i);
                Interlocked.Decrement(ref store.Waiting);
                job.Fail(new OperationCanceledException(job.Token));
                continue;
            }
            if (blocked?.Contains(store) == true)
            {
                i++;
                continue;
            }
            bool started;
            try
            {
                // After a request was put back for lack of pages, the client's queue waits until one of its requests ends.
                started = store.Running < store.MaxConcurrent && !(store.AdmissionPaused && store.Running > 0) && TryStart(job);
            }
            catch (CacheBudgetExceededException) when (store.Running > 0)
            {
                // What the running requests hold leaves no room to start it (e.g. the idle conversation it continues is
                // pinned while it is copied): it waits for one of them to end.
                job.Sequence?.Dispose();
                job.Sequence = null;
                store.AdmissionPaused = true;
                started = false;
            }
            catch (Exception e)
            {
                _waiting.RemoveAt(i);
                Interlocked.Decrement(ref store.Waiting);
                job.Sequence?.Dispose();
                job.Fail(DeviceOutOfMemoryException.Translate(e, Runtime.Model.Device.ToString()));
                continue;
            }
            if (!started)
            {
                (blocked ??= []).Add(store);
                i++;
                continue;
            }
            _waiting.RemoveAt(i);
            Interlocked.Decrement(ref store.Waiting);
            _running.Add(job);
            (admitted ??= []).Add(job.Plan!.Pool);
        }
        // The pages the admitted requests will fill, allocated at once (growing a pool page by page reallocates it often).
        if (admitted is not null)
            foreach (var pool in admitted)
            {
                try
                {
                    pool.Reserve(_running.Where(j => j.Plan?.Pool == pool).Select(j => j.Plan!));
                }
                catch (Exception e) when (DeviceOutOfMemoryException.IsOutOfMemory(e) || e is OutOfMemoryException)
                {
                    // The device could not give it all at once: the steps grow the pool as pages come, within the budget.
                }
            }
    }

    private bool TryStart(GenerationJob job)
    {
        var runtime = Runtime;
        var store = job.Store;
        var pool = store.PoolFor(runtime.Model, job.Cache);
        if (job.BatchInvariant)
            runtime.Model.RequireBatchInvariance();
        var plan = pool.PlanFor(job.Prompt.Count, job.PrefillChunk, job.Sampling.MaxNewTokens);
        if (store.Running > 0 && store.ReservedBytes + plan.Bytes > store.BudgetBytes)
            return false;
        job.Sequence = store.Start(runtime.Model, job.Prompt, job.Cache, job.ConversationId);
        job.CachedTokens = job.Fed = (int)job.Sequence.Length;
        job.Stream = new TokenStream(runtime.Tokenizer, job.Prompt[^1], job.Sampling, job.StopTokens);
        job.Sampler = new Sampler(job.Sampling, runtime.Model.Config.VocabSize, runtime.Model.Device, job.Prompt, runtime.Tokenizer, job.Stream.StopTokenIds);
        job.Started?.Invoke(pool);
        job.Plan = plan;
        store.ReservedBytes += plan.Bytes;
        store.Running++;
        job.Clock.Start();
        return true;
    }

    /// <summary>One step: a ragged batch per page pool (cache setting) over every running request.</summary>
    private void Step()
    {
        foreach (var group in _running.GroupBy(j => j.Sequence!.Pool).ToArray())
            Step([.. group]);
    }

    private void Step(List<GenerationJob> running)
    {
        var model = Runtime.Model;
        // Every decoding request feeds its token; prefilling ones feed their next chunk, oldest first, while the step's prompt
        // tokens allow it. A chunk is never cut to fit: where a prompt's chunks begin (and so how its history is compressed)
        // is the request's own, whatever else runs.
        var jobs = new List<GenerationJob>(running.Count);
        var feeds = new List<int[]>(running.Count);
        int prefill = 0;
        foreach (var job in running)
        {
            if (job.Decoding)
            {
                jobs.Add(job);
                feeds.Add([job.Next]);
                continue;
            }
            int n = Math.Min(job.PrefillChunk, job.Prompt.Count - job.Fed);
            if (prefill + n > job.StepPrefillTokens)
                continue;
            prefill += n;
            jobs.Add(job);
            feeds.Add([.. job.Prompt.Skip(job.Fed).Take(n)]);
        }
        // Where the model runs one-token steps in managed code (the CPU), those rows and the prompt chunks go in two steps:
        // a row's bits then never depend on what else was fed beside it.
        if (model.DecodesInManagedCode && feeds.Any(f => f.Length == 1) && feeds.Any(f => f.Length > 1))
        {
            var single = Enumerable.Range(0, jobs.Count).Where(i => feeds[i].Length == 1).ToArray();
            var chunks = Enumerable.Range(0, jobs.Count).Where(i => feeds[i].Length > 1).ToArray();
            Run([.. single.Select(i => jobs[i])], [.. single.Select(i => feeds[i])]);
            Run([.. chunks.Select(i => jobs[i]).Where(j => _running.Contains(j))], [.. chunks.Where(i => _running.Contains(jobs[i])).Select(i => feeds[i])]);
            return;
        }
        Run(jobs, feeds);
    }

    /// <summary>One ragged step over <paramref name="jobs"/>, each feeding its <paramref name="feeds"/>; their tokens chosen and streamed.</summary>
    private void Run(List<GenerationJob> jobs, List<int[]> feeds)
    {
        if (jobs.Count == 0)
            return;
        var model = Runtime.Model;
        var items = new KvBatchItem[jobs.Count];
        var ids = new List<long>();
        for (int i = 0; i < jobs.Count; i++)
        {
            items[i] = new KvBatchItem(jobs[i].Sequence!, feeds[i].Length, feeds[i]);
            ids.AddRange(feeds[i].Select(t => (long)t));
        }
        int?[] chosen;
        try
        {
            using var scope = NewDisposeScope();
            using var step = KvBatch.Begin(items);
            var tokens = tensor(ids.ToArray(), dtype: ScalarType.Int64);                         // [N] on the host; Forward copies it up without a wait
            var logits = model.Forward(step, tokens, batchInvariant: jobs.Any(j => j.BatchInvariant)); // [S, V]: each sequence's last new token
            chosen = Choose(jobs, items, logits);
        }
        catch (CacheBudgetExceededException e) when (jobs.Count > 1)
        {
            // The pool could not hold this step's pages (what other sequences of the pool hold is not all set aside). The
            // latest request that has not streamed anything yet goes back to the front of the queue, its pages given back,
            // and starts again once a request of its client ends; the others go on at the next step. Failing one is the
            // last resort, when every request has streamed tokens already.
            if (jobs.LastOrDefault(j => j.Stream is { Generated: 0 }) is { } fresh)
                Requeue(fresh);
            else
                Retire(jobs[^1], e);
            return;
        }
        catch (Exception e) when (DeviceOutOfMemoryException.IsOutOfMemory(e))
        {
            // The step left its sequences as they were. The request that asked the most of this step (the largest prompt
            // chunk; among decoding ones, the latest) fails with the sizes involved; the others go on at the next step.
            var culprit = jobs[Enumerable.Range(0, jobs.Count).MaxBy(i => (items[i].NewTokens, i))];
            Retire(culprit, DeviceOutOfMemoryException.Translate(e, model.Device.ToString()));
            return;
        }
        catch (Exception e)
        {
            foreach (var job in jobs)
                Retire(job, e);
            return;
        }
        for (int i = 0; i < jobs.Count; i++)
        {
            var job = jobs[i];
            if (!job.Decoding)
            {
                job.Fed += items[i].NewTokens;
                if (!job.Decoding)
                    continue;
                job.PrefillTime = job.Clock.Elapsed;
                job.Clock.Restart();
            }
            int token = chosen[i]!.Value;
            if (job.Stream!.Accept(token) is { } update)
                job.Write(update);
            if (job.Stream.Reason is null)
                job.Next = token;
            else
                Finish(job);
        }
    }

    /// <summary>
    /// The next token of every request whose prompt is complete after this step: plain greedy rows by one argmax over the
    /// batch, the others by their own sampler (penalties, temperature, seed). Null for requests still prefilling.
    /// </summary>
    private static int?[] Choose(List<GenerationJob> jobs, KvBatchItem[] items, Tensor logits)
    {
        var chosen = new int?[jobs.Count];
        var greedy = new List<long>();
        for (int i = 0; i < jobs.Count; i++)
        {
            var job = jobs[i];
            if (!job.Decoding && job.Fed + items[i].NewTokens < job.Prompt.Count)
                continue;
            if (job.Sampler!.IsPlainGreedy)
                greedy.Add(i);
            else
                chosen[i] = job.Sampler.Next(logits[i]);
        }
        if (greedy.Count > 0)
        {
            using var rows = tensor(greedy.ToArray(), dtype: ScalarType.Int64, device: logits.device);
            using var picked = logits.index_select(0, rows);                                   // [G, V]
            var argmax = Sampler.Greedy(picked);
            for (int g = 0; g < greedy.Count; g++)
                chosen[greedy[g]] = argmax[g];
        }
        return chosen;
    }

    /// <summary>A request that ended normally: its closing update, its sequence kept for the conversation's next turn.</summary>
    private void Finish(GenerationJob job)
    {
        var sequence = job.Sequence!;
        var closing = job.Stream!.Finish(job.Prompt.Count, job.CachedTokens, job.PrefillTime, job.Clock.Elapsed);
        var kv = new KvFigures(sequence.ResidentBytes, sequence.FullPrecisionBytes, sequence.Length);
        Leave(job);
        job.Store.Keep(sequence, job.ConversationId);
        job.Complete(closing, kv);
    }

    /// <summary>A request that failed or was cancelled: its own sequence goes (what it shared stays with the others).</summary>
    private void Retire(GenerationJob job, Exception error)
    {
        Leave(job);
        job.Sequence?.Dispose();
        job.Fail(error);
    }

    private void Leave(GenerationJob job)
    {
        if (!_running.Remove(job))
            return;
        job.Store.Running--;
        job.Store.ReservedBytes -= job.Plan?.Bytes ?? 0;
        job.Store.AdmissionPaused = false;
    }

    /// <summary>Puts a running request that has not streamed anything back at the head of the queue, as if never admitted.</summary>
    private void Requeue(GenerationJob job)
    {
        Leave(job);
        job.Sequence?.Dispose();
        job.Sequence = null;
        job.Stream = null;
        job.Sampler = null;
        job.Plan = null;
        job.Fed = job.CachedTokens = 0;
        job.Clock.Reset();
        _waiting.Insert(0, job);
        Interlocked.Increment(ref job.Store.Waiting);
        job.Store.AdmissionPaused = true;
    }

    /// <summary>Fails what is still queued or running, disposes the runtime it loaded, and stops the thread.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        TryPost(() =>
        {
            foreach (var job in _waiting)
                job.Fail(new ObjectDisposedException(nameof(GearChatClient)));
            _waiting.Clear();
            foreach (var job in _running.ToArray())
                Retire(job, new ObjectDisposedException(nameof(GearChatClient)));
            if (_ownsRuntime)
                _runtime?.Dispose();
        });
        _inbox.CompleteAdding();
        if (Thread.CurrentThread != _thread)
            _thread.Join();
        _inbox.Dispose();
    }
}
