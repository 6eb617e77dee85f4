// Gear.Server — an OpenAI-compatible HTTP server over Gear: POST /v1/chat/completions (whole, or streamed as
// server-sent events) and GET /v1/models, on 127.0.0.1:5180 by default. Every request decodes in one shared
// engine: concurrent clients batch together. Point any OpenAI client at http://127.0.0.1:5180/v1.
//
// Usage: dotnet run --project samples/Gear.Server [-- --Gear:Model=gear-tiny --Gear:Bits=2 --Urls=http://127.0.0.1:8080]
//   curl http://127.0.0.1:5180/v1/chat/completions -H 'Content-Type: application/json' \
//     -d '{"model": "stories260K", "messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 32}'
var app = Gear.Server.GearServer.Build(args);
await app.RunAsync();
