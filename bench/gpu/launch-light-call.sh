#!/usr/bin/env bash
# One device call for the launch-light decode step (issue 22) and serving (issue 21) with the anchor, in priority order,
# each step bounded so that what finished comes back: gpu-selftest (launch-light rows, the out-of-memory row), static
# serving throughput, the gpt-fast anchor (batch 1 at 4K, and batch 21), serving through GearChatClient (Gear 2-bit),
# batch-1 latency at 4K and 32K with both decode steps interleaved and per-step device times. About 9-10 minutes.
#
#   ../shared/device/gpu-pack.sh bench/Gear.Bench/Gear.Bench.csproj
#   run: bash bench/gpu/launch-light-call.sh     (carry [".gpu"]; FP16 through the client: bench/gpu/serving-call.sh)
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
S=bench/shapes/llama-2-7b/config.json
t() { local s=$SECONDS; echo "=== $*"; timeout "$@"; echo "=== rc=$? in $((SECONDS-s)) s"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
t 100 bash .gpu/run.sh Gear.Bench gpu-selftest --json "$OUT/gpu-selftest.json" > "$OUT/selftest.log" 2>&1
grep -v "^frame" "$OUT/selftest.log" | grep -E "launch_light|out_of_memory|FAIL|PASS" | cut -c1-160 | tail -18
t 80 bash .gpu/run.sh Gear.Bench gpu-throughput --shape $S --budget-gib 60 --prompt 4096 --generate 256 \
  --caches fp16,gear --bits 2 --dtype fp16 --json "$OUT/gpu-throughput-7b.json" > "$OUT/tp.log" 2>&1
tail -4 "$OUT/tp.log"
(cd .gpu/anchors && t 120 env CONTEXTS=4096 BATCHES=21 python3 gptfast_decode.py > "$OUT/anchor.log" 2>&1; tail -4 "$OUT/anchor.log")
t 160 bash .gpu/run.sh Gear.Bench serve --shape $S --device cuda --clients 0 --prompt-tokens 4096 --max-tokens 256 \
  --device-budget-gib 60 --caches gear --bits 2 --json "$OUT/serve-7b-gear.json" > "$OUT/serve-gear.log" 2>&1
grep -v "^frame" "$OUT/serve-gear.log" | tail -4
GEAR_STEP_TIMES=1 t 60 bash .gpu/run.sh Gear.Bench gpu-latency --shape $S --contexts 4096,32768 --caches fp16,gear --bits 2 --dtype fp16 \
  --step both --rounds 3 --steps 16 --json "$OUT/gpu-latency-7b.json" > "$OUT/latency.log" 2>&1
grep -v "^frame" "$OUT/latency.log" | tail -12
