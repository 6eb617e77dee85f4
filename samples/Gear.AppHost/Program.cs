// Gear.AppHost — the scale-out topology in one command, through .NET Aspire: N Gear.Server replicas and the Gear.Gateway
// in front of them, on loopback, each replica ready before the gateway starts; the Aspire dashboard shows their logs,
// traces and Gear.AI's metrics (requests running and waiting, KV bytes).
//
// Usage: dotnet run --project samples/Gear.AppHost [-- --Replicas=3 --Model=gear-tiny --Gpus=0,1,2,3]
//   --Gpus: replica i runs on CUDA with CUDA_VISIBLE_DEVICES set to the i-th entry (round robin over the list).
// Then point any OpenAI client at the gateway's address (shown in the dashboard; http://127.0.0.1:5190/v1 by default).
using Microsoft.Extensions.Configuration;

var builder = DistributedApplication.CreateBuilder(args);
int replicas = builder.Configuration.GetValue("Replicas", 3);
string model = builder.Configuration["Model"] ?? "gear-tiny";
string[] gpus = (builder.Configuration["Gpus"] ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
if (replicas < 1)
    throw new ArgumentException($"--Replicas must be at least 1 (was {replicas}).");

var gateway = builder.AddProject<Projects.Gear_Gateway>("gateway")
    .WithHttpEndpoint(port: builder.Configuration.GetValue("GatewayPort", 5190), name: "gateway")
    .WithHttpHealthCheck("/gateway/replicas", endpointName: "gateway");
for (int i = 0; i < replicas; i++)
{
    var replica = builder.AddProject<Projects.Gear_Server>($"replica-{i}")
        .WithHttpEndpoint(name: "http")
        .WithEnvironment("Gear__Model", model)
        .WithHttpHealthCheck("/health/ready");
    if (gpus.Length > 0)
        replica.WithEnvironment("CUDA_VISIBLE_DEVICES", gpus[i % gpus.Length]).WithEnvironment("Gear__Device", "cuda");
    gateway.WithEnvironment($"Gateway__Replicas__{i}", replica.GetEndpoint("http")).WaitFor(replica);
}
builder.Build().Run();
