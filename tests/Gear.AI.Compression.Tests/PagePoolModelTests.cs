using Gear.AI.Compression.Caching;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>
/// Random appends, ragged steps, truncations, forks, prefix lookups, evictions and disposals against a plain model of
/// the pool (each live sequence's token list): no page leaked or freed while referenced, reference counts and bytes as
/// the formula says, and (FP16) every sequence attends exactly as one rebuilt from its tokens.
/// </summary>
public class PagePoolModelTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int Tokens = 8, Dim = 8, MaxPosition = 400;

    private static readonly KvShape Shape = new(1, 1, Dim, ScalarType.Float32, CPU);

    /// <summary>K/V of token <paramref name="id"/> at <paramref name="position"/>: a function of both, as a model's are of the prefix.</summary>
    private static readonly Tensor Table = randn([16 + MaxPosition, Dim], generator: new torch.Generator(5));

    private static Tensor Kv(IReadOnlyList<int> ids, long start)
    {
        using var scope = NewDisposeScope();
        var id = tensor(ids.Select(i => (long)i).ToArray());
        using Scalar sixteen = 16, half = 0.5f;
        var position = Scalars.Arange(start, start + ids.Count, 1, ScalarType.Int64, CPU).add(sixteen, Scalars.One);
        return Table.index_select(0, id).add(Table.index_select(0, position), half).unsqueeze(1).MoveToOuterDisposeScope(); // [n, 1, D]
    }

    private static Tensor Step(params (KvSequence Sequence, int[] Ids)[] items)
    {
        using var scope = NewDisposeScope();
        using var step = KvBatch.Begin([.. items.Select(i => new KvBatchItem(i.Sequence, i.Ids.Length, i.Ids))]);
        var kv = cat(items.Select(i => Kv(i.Ids, i.Sequence.Length)).ToArray(), 0);      // [N, 1, D]
        var o = step.Attend(0, kv, kv, kv);
        step.Complete();
        return o.MoveToOuterDisposeScope();
    }

    [Theory]
    [InlineData(CacheKind.Fp16, 1)]
    [InlineData(CacheKind.Fp16, 2)]
    [InlineData(CacheKind.Kivi, 3)]
    [InlineData(CacheKind.Gear, 4)]
    public void RandomOperations_KeepThePoolConsistentWithItsModel(CacheKind kind, int seed)
    {
        var options = new GearOptions { Kind = kind, Bits = 4, GroupSize = Tokens, BufferLength = Tokens, PromptRank = 2, DecodeRank = 1 };
        using var pool = new PagePool(Shape, options);
        var random = new Random(seed);
        var live = new List<(KvSequence Sequence, List<int> Ids)>();
        int[] Ids(int n) => [.. Enumerable.Range(0, n).Select(_ => random.Next(3))];        // a small alphabet: prefixes repeat
        int reused = 0, cachedPeak = 0, sharedPeak = 0;
        try
        {
            for (int op = 0; op < 400; op++)
            {
                int choice = random.Next(100);
                if (live.Count == 0 || choice < 10)
                {
                    // A new sequence: empty, or from the longest cached prefix of a prompt (often one that was held before).
                    var prompt = live.Count > 0 && random.Next(2) == 0 ? [.. live[random.Next(live.Count)].Ids, .. Ids(5)] : Ids(random.Next(1, 40));
                    var found = pool.FindPrefix(prompt);
                    Assert.Equal(found.Length, found.Pages.Count * Tokens);
                    Assert.Equal(prompt.Take((int)found.Length), found.Tokens!);
                    reused += (int)found.Length;
                    live.Add((found, [.. prompt.Take((int)found.Length)]));
                }
                else if (choice < 55)
                {
                    // One step over one or two sequences (ragged), each appending its own count.
                    var picked = live.OrderBy(_ => random.Next()).Take(random.Next(1, 3)).ToArray();
                    var items = picked.Select(p => (p.Sequence, Ids(new[] { 1, 1, 1, 3, 9, 20 }[random.Next(6)]))).ToArray();
                    if (picked.Any(p => p.Ids.Count + 20 >= MaxPosition))
                        continue;
                    Step(items).Dispose();
                    for (int i = 0; i < picked.Length; i++)
                        picked[i].Ids.AddRange(items[i].Item2);
                }
                else if (choice < 68)
                {
                    var (sequence, ids) = live[random.Next(live.Count)];
                    int length = random.Next(ids.Count + 1);
                    sequence.Truncate(length);
                    ids.RemoveRange(length, ids.Count - length);
                }
                else if (choice < 80)
                {
                    var (sequence, ids) = live[random.Next(live.Count)];
                    int length = random.Next(ids.Count + 1);
                    live.Add((sequence.Fork(length), [.. ids.Take(length)]));
                }
                else if (choice < 95)
                {
                    int i = random.Next(live.Count);
                    live[i].Sequence.Dispose();
                    live.RemoveAt(i);
                }
                else
                {
                    pool.DropCachedPages();
                }
                AssertConsistent(pool, live);
                cachedPeak = Math.Max(cachedPeak, pool.CachedPages);
                sharedPeak = Math.Max(sharedPeak, live.Sum(l => l.Sequence.Pages.Count) - live.SelectMany(l => l.Sequence.Pages).Distinct().Count());
                if (kind == CacheKind.Fp16 && op % 20 == 0 && live.Count > 0)
                    AssertAttendsAsRebuilt(pool, live[random.Next(live.Count)], random);
            }
        }
        finally
        {
            foreach (var (sequence, _) in live)
                sequence.Dispose();
        }
        output.WriteLine($"{reused} tokens found by prefix; at most {cachedPeak} pages cached and {sharedPeak} page references shared at once");
        Assert.True(reused > 0 && cachedPeak > 0 && sharedPeak > 0, "the run should exercise prefix reuse, caching and sharing");
        Assert.Equal(0, pool.SequenceCount);
        pool.DropCachedPages();
        Assert.Equal(0, pool.PagesInUse);
        Assert.Equal(0, pool.CachedPages);
        Assert.Equal(0, pool.UsedBytes);
    }

    private static void AssertConsistent(PagePool pool, List<(KvSequence Sequence, List<int> Ids)> live)
    {
        var references = new Dictionary<PageId, int>();
        int buffers = 0;
        foreach (var (sequence, ids) in live)
        {
            Assert.Equal(ids.Count, sequence.Length);
            Assert.Equal(ids, sequence.Tokens!);
            Assert.Equal(sequence.Length / Tokens, sequence.Pages.Count);
            Assert.Equal(sequence.Length % Tokens, sequence.Buffered);
            Assert.Equal(sequence.Buffered > 0, sequence.BufferPage is not null);
            foreach (var page in sequence.Pages)
                references[page] = references.GetValueOrDefault(page) + 1;
            if (sequence.BufferPage is { } buffer)
            {
                buffers++;
                references[buffer] = references.GetValueOrDefault(buffer) + 1;
            }
        }
        // Every referenced page counts exactly its holders; nothing else is in use (no leak, nothing freed while held).
        foreach (var (page, count) in references)
            Assert.Equal(count, pool.Arenas[page.Arena].References(page.Slot));
        Assert.Equal(references.Count, pool.PagesInUse);
        Assert.Equal(references.Count + pool.CachedPages, pool.Arenas.Sum(a => a.UsedPages));
        // Bytes: distinct pages and blocks once, buffers each.
        var stats = pool.StatisticsOf(live.Select(l => l.Sequence));
        long pageBytes = references.Keys.Where(p => live.All(l => l.Sequence.BufferPage != p)).Sum(p => pool.Arenas[p.Arena].PageBytes);
        long blockBytes = references.Keys.Where(p => pool.Arenas[p.Arena].BlockOf(p.Slot) >= 0).Select(p => (p.Arena, pool.Arenas[p.Arena].BlockOf(p.Slot)))
            .Distinct().Sum(b => pool.Arenas[b.Arena].BlockBytes);
        long bufferBytes = live.Sum(l => l.Sequence.BufferBytes);
        Assert.Equal(pageBytes + blockBytes + bufferBytes, stats.ResidentBytes);
        Assert.Equal(Shape.Fp16Bytes(live.Sum(l => (long)l.Ids.Count)), stats.FullPrecisionBytes);
        Assert.Equal(pool.Arenas.Sum(a => (long)a.UsedPages * a.PageBytes + (long)a.UsedBlocks * a.BlockBytes), pool.UsedBytes);
    }

    private static void AssertAttendsAsRebuilt(PagePool pool, (KvSequence Sequence, List<int> Ids) entry, Random random)
    {
        if (entry.Ids.Count + 2 >= MaxPosition)
            return;
        int[] next = [random.Next(3), random.Next(3)];
        using var rebuilt = pool.CreateSequence();
        if (entry.Ids.Count > 0)
            Step((rebuilt, [.. entry.Ids])).Dispose();
        using var probe = entry.Sequence.Fork();
        using var expected = Step((rebuilt, next));
        using var actual = Step((probe, next));
        TensorAssert.Equal(expected, actual);
    }
}
