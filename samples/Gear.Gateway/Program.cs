// Gear.Gateway — one OpenAI-compatible address in front of several Gear.Server replicas (YARP). Each turn of a
// conversation goes to the replica that already holds its history in its KV cache; a new conversation goes to the
// least-loaded healthy replica; a replica that fails or stops is skipped and its conversations move (re-prefilled).
//
// Usage: dotnet run --project samples/Gear.Gateway [-- --Gateway:Replicas:0=http://127.0.0.1:5181 --Gateway:Replicas:1=...]
//   The whole topology in one command: dotnet run --project samples/Gear.AppHost (docs/scale-out.md).
var app = Gear.Gateway.GearGateway.Build(args);
await app.RunAsync();
