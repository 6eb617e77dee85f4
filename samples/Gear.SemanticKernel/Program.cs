// Gear.SemanticKernel — a Semantic Kernel Kernel whose chat service is the Gear chat client from DI:
// a prompt function with a template variable, and a plugin offered with FunctionChoiceBehavior.Auto().
// The wiring is real; note that the tiny bundled models are story/prose models and rarely (if ever)
// decide to call a tool — with an instruction-tuned Llama 3.1 checkpoint the same code calls the plugin.
//
// Usage: dotnet run --project samples/Gear.SemanticKernel [-- --model DIR]
using System.ComponentModel;
using Gear.AI;
using Gear.AI.Llama;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;

string model = args.SkipWhile(a => a != "--model").Skip(1).FirstOrDefault() ?? "stories260K";

var builder = Kernel.CreateBuilder();
builder.Services.AddGearChatClient(o => { o.Model = ModelLocator.Resolve(model); o.DefaultMaxOutputTokens = 48; })
    .UseFunctionInvocation();
builder.Services.AddSingleton<IChatCompletionService>(sp => sp.GetRequiredService<IChatClient>().AsChatCompletionService(sp));
builder.Plugins.AddFromType<StoryPlugin>("story");
var kernel = builder.Build();

// 1. A prompt function with a template variable.
var tell = kernel.CreateFunctionFromPrompt("Once upon a time, {{$hero}} went to the park.", functionName: "tell");
var story = await kernel.InvokeAsync(tell, new KernelArguments { ["hero"] = "a little dog named Max" });
Console.WriteLine($"prompt function: {story}");

// 2. The same kernel with the plugin offered to the model (it may answer in prose instead of calling it).
var settings = new PromptExecutionSettings { FunctionChoiceBehavior = FunctionChoiceBehavior.Auto() };
var answer = await kernel.InvokePromptAsync("What is the name of the hero of the story?", new KernelArguments(settings));
Console.WriteLine($"with tools offered: {answer}");
Console.Error.WriteLine($"plugin calls made by the model: {StoryPlugin.Calls}");

/// <summary>A tiny plugin the model can call.</summary>
public sealed class StoryPlugin
{
    public static int Calls;

    [KernelFunction, Description("Returns the name of the story's hero.")]
    public string GetHeroName()
    {
        Interlocked.Increment(ref Calls);
        return "Max";
    }
}
