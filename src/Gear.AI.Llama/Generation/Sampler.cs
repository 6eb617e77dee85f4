using Gear.AI.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Generation;

/// <summary>
/// Picks the next token from logits on the logits' device; only the chosen id crosses to the host.
/// Keeps the token counts the penalties need. One sampler per sequence.
/// </summary>
public sealed class Sampler : IDisposable
{
    private readonly SamplingOptions _options;
    private readonly Random? _random;       // draws one uniform number per sampled token (inverse-CDF sampling)
    private readonly Tensor? _seen;       // [V] bool: in prompt or output (repetition penalty)
    private readonly Tensor? _counts;     // [V] float32: occurrences in the output (frequency/presence)
    private readonly Json.JsonConstraint? _json;

    /// <summary>Creates a sampler for a vocabulary of <paramref name="vocabSize"/> on <paramref name="device"/>.</summary>
    /// <param name="options">How to choose.</param>
    /// <param name="vocabSize">Rows of the logits.</param>
    /// <param name="device">Where the logits are.</param>
    /// <param name="promptIds">The prompt (repetition penalty).</param>
    /// <param name="tokenizer">The model's tokenizer: needed with <see cref="SamplingOptions.Json"/> (the tokens' bytes).</param>
    /// <param name="endTokenIds">Tokens that end generation: needed with <see cref="SamplingOptions.Json"/> (see <see cref="TokenStream.StopTokenIds"/>).</param>
    public Sampler(SamplingOptions options, int vocabSize, Device device, IEnumerable<int>? promptIds = null,
                   Tokenization.LlamaTextTokenizer? tokenizer = null, IEnumerable<int>? endTokenIds = null)
    {
        _options = (options ?? throw new ArgumentNullException(nameof(options))).Validate();
        if (options.Json is { } grammar)
            _json = new Json.JsonConstraint(grammar,
                Json.TokenVocabulary.Of(tokenizer ?? throw new ArgumentException("Constrained output (SamplingOptions.Json) needs the tokenizer.", nameof(tokenizer))),
                endTokenIds ?? throw new ArgumentException("Constrained output (SamplingOptions.Json) needs the end tokens.", nameof(endTokenIds)),
                vocabSize, options.MaxNewTokens);
        if (options.Temperature > 0)
            _random = options.Seed is long seed ? new Random(unchecked((int)(seed ^ (seed >> 32)))) : new Random();
        if (options.RepetitionPenalty != 1.0)
        {
            _seen = zeros(vocabSize, ScalarType.Bool, device).DetachFromDisposeScope();
            if (promptIds is not null)
            {
                using var ids = tensor(promptIds.Select(i => (long)i).ToArray(), device: device);
                if (ids.numel() > 0)
                    _seen.index_fill_(0, ids, Scalars.True);
            }
        }
        if (options.FrequencyPenalty != 0 || options.PresencePenalty != 0)
            _counts = zeros(vocabSize, ScalarType.Float32, device).DetachFromDisposeScope();
    }

    /// <summary>Whether the choice is the plain argmax (greedy, no penalties): rows of such samplers can share one argmax (<see cref="Greedy"/>).</summary>
    public bool IsPlainGreedy => _options.Temperature == 0 && _seen is null && _counts is null && _json is null;

    /// <summary>The argmax of every row of <paramref name="logits"/> [S, V], read back in one transfer.</summary>
    public static int[] Greedy(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        using var scope = NewDisposeScope();
        var ids = logits.argmax(-1).to(ScalarType.Int32).cpu();                                // [S]
        return ids.data<int>().ToArray();
    }

    /// <summary>Chooses a token from <paramref name="logits"/> [V] (float32) and records it.</summary>
    public int Next(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        int id;
        if (_json is not null && _options.Temperature == 0 && _seen is null && _counts is null)
            id = GreedyAllowed(logits, _json.Allowed());
        else
        using (var scope = NewDisposeScope())
        {
            var l = logits.reshape(-1).to(ScalarType.Float32);                                 // [V]
            if (_json is not null)
            {
                // Tokens that would break the JSON text never win, whatever the penalties or temperature.
                var allowed = Compression.Caching.TensorMemory.ToDevice(tensor(_json.Allowed()), l.device);   // [V] bool
                l = l.masked_fill(allowed.logical_not(), Scalars.NegativeInfinity);
            }
            if (_seen is not null)
            {
                using Scalar p = (float)_options.RepetitionPenalty;
                l = where(_seen, where(l > Scalars.Zero, l.div(p), l.mul(p)), l);
            }
            if (_counts is not null)
            {
                using Scalar frequency = (float)_options.FrequencyPenalty, presence = (float)_options.PresencePenalty;
                l = l - _counts.mul(frequency) - (_counts > Scalars.Zero).to(ScalarType.Float32).mul(presence);
            }
            id = _options.Temperature == 0 ? (int)l.argmax().item<long>() : Sample(l);
        }
        _json?.Accept(id);
        Record(id);
        return id;
    }

    /// <summary>The most likely allowed token, found on the host (one read of the logits, no tensor operations per step).</summary>
    private static unsafe int GreedyAllowed(Tensor logits, bool[] allowed)
    {
        using var scope = NewDisposeScope();
        var host = logits.reshape(-1).to(ScalarType.Float32, CPU).contiguous();              // [V]
        var values = new ReadOnlySpan<float>(Compression.Caching.TensorMemory.Pointer<float>(host), (int)host.shape[0]);
        int best = -1;
        for (int i = 0; i < values.Length && i < allowed.Length; i++)
            if (allowed[i] && (best < 0 || values[i] > values[best]))
                best = i;
        return best >= 0 ? best : throw new InvalidOperationException("No token can continue the constrained JSON output.");
    }

    private int Sample(Tensor logits)
    {
        using Scalar temperature = (float)_options.Temperature;
        var l = logits.div(temperature);                                                         // [V]
        if (_options.TopK > 0 && _options.TopK < l.shape[0])
        {
            var kth = l.topk(_options.TopK).values[-1];
            l = l.masked_fill(l < kth, Scalars.NegativeInfinity);
        }
        if (_options.TopP < 1)
        {
            var (sorted, order) = l.sort(descending: true);                                    // [V]
            var probs = sorted.softmax(-1);
            var before = probs.cumsum(-1) - probs;                                              // mass of strictly more likely tokens
            using Scalar topP = (float)_options.TopP;
            var dropSorted = before >= topP;
            var drop = zeros_like(dropSorted).scatter(0, order, dropSorted);                    // back to vocabulary order
            l = l.masked_fill(drop, Scalars.NegativeInfinity);
        }
        // Inverse-CDF sampling with one uniform number drawn on the host: the same seed gives the same
        // token on every device, and only that number and the chosen id cross between host and device.
        var cdf = l.softmax(-1, ScalarType.Float64).cumsum(-1);                                 // [V]
        using Scalar u = _random!.NextDouble() * cdf[-1].item<double>();
        long id = (cdf <= u).sum().item<long>();
        return (int)Math.Min(id, l.shape[0] - 1);
    }

    private void Record(int id)
    {
        if (_seen is not null)
            _seen[id] = true;
        if (_counts is not null)
        {
            using var count = _counts[id];
            count.add_(Scalars.One, Scalars.One);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _counts?.Dispose();
        _seen?.Dispose();
    }
}
