using Gear.AI;
using Gear.AI.Compression;
using Gear.AI.Llama;
using Gear.AI.Llama.Model;
using Microsoft.Extensions.AI;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.Bench;

/// <summary>
/// The GPU running out of memory in the middle of a request, through <see cref="GearChatClient"/>: two requests stream
/// while the device is filled to within a few MiB (from the engine thread, between two steps), then a request with a
/// 1,900-token prompt in one chunk arrives. It must fail with a <see cref="DeviceOutOfMemoryException"/> that names the
/// bytes asked for and free; the two must finish with the answers they gave without it; once the memory is back the same
/// request must succeed; the engine thread's live tensors must be back to their count (taken after the same requests
/// ran once without pressure, so the pool's storage for them exists).
/// </summary>
internal static class OutOfMemoryCheck
{
    private const long Margin = 4L << 20;

    /// <param name="launchLight">Whether decode steps run launch-light (false: every step through TorchSharp, the reference).</param>
    public static bool Run(string modelDirectory, ScalarType dtype, BenchReport<GpuSelfTestRow> report, bool launchLight = true)
    {
        using var runtime = LlamaRuntime.Load(modelDirectory, new ModelLoadOptions { Device = "cuda", ComputeType = dtype });
        runtime.Model.UseLaunchLightDecode = launchLight;
        var options = new GearChatClientOptions
        {
            Model = modelDirectory, Cache = CacheKind.Gear, Bits = 2, DefaultTemperature = 0, MaxSessions = 2,
            PrefillChunkTokens = 2048, MaxPrefillTokensPerStep = 2048, StatefulConversations = true,   // each request its own conversation: no prefix shared
        };
        using var client = new GearChatClient(runtime, options);
        string[] pair = ["Once upon a time there was a little boat.", "Lily and Tom went to the park."];
        string large = Long("The sun was warm and the children played by the river all day long. ");
        string other = Long("The old dog slept under the big tree while the birds sang in the garden. ");
        string Long(string sentence)
        {
            var body = new System.Text.StringBuilder();
            while (runtime.Tokenizer.Encode(body.ToString()).Count < 1_900)
                body.Append(sentence);
            return body.ToString();
        }

        var expected = Task.WhenAll(pair.Select((p, i) => Answer(client, p, $"calm-{i}", 96, null))).GetAwaiter().GetResult();
        // A prompt as large once before (another text: nothing of it can be reused): its prompt blocks, of another low rank,
        // make the pool's second arena, which stays.
        Answer(client, other, "calm-large", 8, null).GetAwaiter().GetResult();
        long tensorsBefore = client.LiveTensors;

        // The pair again; once both stream, the device is filled and the large request sent.
        using var streaming = new CountdownEvent(pair.Length);
        var running = pair.Select((p, i) => Task.Run(() => Answer(client, p, $"pressed-{i}", 96, streaming))).ToArray();
        streaming.Wait();
        var (ballast, filledWith) = client.RunBetweenSteps(Fill).GetAwaiter().GetResult();
        Exception? failure = null;
        try
        {
            Answer(client, large, "large", 8, null).GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            failure = e;
        }
        var pressed = Task.WhenAll(running).GetAwaiter().GetResult();
        client.RunBetweenSteps(() =>
        {
            foreach (var t in ballast)
                t.Dispose();
            return 0;
        }).GetAwaiter().GetResult();
        string after;
        try
        {
            after = Answer(client, large, "large-again", 8, null).GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            after = $"failed: {e.GetType().Name}: {e.Message}";
        }
        long tensorsAfter = client.LiveTensors;

        var oom = failure as DeviceOutOfMemoryException;
        bool named = oom is { RequestedBytes: > 0, FreeBytes: >= 0 };
        bool othersEqual = pressed.SequenceEqual(expected);
        bool recovered = !after.StartsWith("failed:", StringComparison.Ordinal);
        bool pass = named && othersEqual && recovered && tensorsAfter == tensorsBefore;
        report.Add(new GpuSelfTestRow(launchLight ? "out_of_memory_mid_request" : "out_of_memory_mid_request_tensor_step", "gear", 2, tensorsBefore, tensorsAfter, pass,
            $"large request: {(failure is null ? "no failure" : $"{failure.GetType().Name}: {failure.Message}")} | the 2 beside it equal to their calm run: {othersEqual} | " +
            $"same request with the memory back: {(recovered ? "answered" : after)} | live tensors {tensorsBefore} → {tensorsAfter} | device filled: {filledWith}"));
        Console.WriteLine($"out_of_memory_mid_request: {(pass ? "pass" : "FAIL")} — {failure?.Message}");
        return pass;
    }

    /// <summary>Greedy answer (the end-of-sequence token ignored); signals <paramref name="streaming"/> at its 8th piece.</summary>
    private static async Task<string> Answer(GearChatClient client, string prompt, string conversation, int tokens, CountdownEvent? streaming)
    {
        var options = new ChatOptions
        {
            MaxOutputTokens = tokens, Temperature = 0, ConversationId = conversation,
            AdditionalProperties = new() { ["gear.ignore_eos"] = true },
        };
        var text = new System.Text.StringBuilder();
        int pieces = 0;
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, prompt)], options))
        {
            text.Append(update.Text);
            if (update.Text.Length > 0 && ++pieces == 8)
                streaming?.Signal();
        }
        return text.ToString();
    }

    /// <summary>
    /// Takes the device's memory through the caching allocator (64 MiB pieces, then 2 MiB ones, until it refuses), then
    /// gives back <see cref="Margin"/>: enough for the streaming pair's steps, far too little for a 1,900-token chunk.
    /// </summary>
    private static (List<Tensor> Ballast, string Description) Fill()
    {
        var ballast = new List<Tensor>();
        string refusal = "";
        foreach (long piece in new[] { 64L << 20, 2L << 20 })
        {
            while (true)
            {
                try
                {
                    ballast.Add(empty(piece, dtype: ScalarType.Byte, device: CUDA));
                }
                catch (Exception e) when (DeviceOutOfMemoryException.IsOutOfMemory(e))
                {
                    refusal = e.Message.Split('\n')[0];
                    break;
                }
            }
        }
        long held = ballast.Sum(t => t.NumberOfElements);
        for (long given = 0; given < Margin && ballast.Count > 0;)
        {
            given += ballast[^1].NumberOfElements;
            ballast[^1].Dispose();
            ballast.RemoveAt(ballast.Count - 1);
        }
        return (ballast, $"{held / (double)(1L << 30):0.00} GiB taken, {Margin >> 20} MiB given back; the allocator's refusal: {refusal}");
    }
}
