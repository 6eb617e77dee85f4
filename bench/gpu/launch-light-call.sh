#!/usr/bin/env bash
# One device call for the launch-light decode step (issue 22) with its anchor, each step bounded so that what finished
# comes back: gpu-selftest (the launch-light rows, the out-of-memory row), batch-1 latency at 4K and 32K with both decode
# steps interleaved, the gpt-fast anchor (batch 1 at 4K and 32K, and batch 21), static serving throughput. About 9-10 minutes.
#
#   ../shared/device/gpu-pack.sh bench/Gear.Bench/Gear.Bench.csproj
#   run: bash bench/gpu/launch-light-call.sh     (carry [".gpu"]; serving through the client: bench/gpu/serving-call.sh)
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
S=bench/shapes/llama-2-7b/config.json
t() { local s=$SECONDS; echo "=== $*"; timeout "$@"; echo "=== rc=$? in $((SECONDS-s)) s"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
t 150 bash .gpu/run.sh Gear.Bench gpu-selftest --json "$OUT/gpu-selftest.json" > "$OUT/selftest.log" 2>&1
grep -v "^frame" "$OUT/selftest.log" | grep -E "launch_light|out_of_memory|FAIL|PASS" | cut -c1-200 | tail -20
t 130 bash .gpu/run.sh Gear.Bench gpu-latency --shape $S --contexts 4096,32768 --caches fp16,gear --bits 2 --dtype fp16 \
  --step both --rounds 3 --steps 16 --json "$OUT/gpu-latency-7b.json" > "$OUT/latency.log" 2>&1
grep -v "^frame" "$OUT/latency.log" | tail -14
(cd .gpu/anchors && t 110 env CONTEXTS=4096,32768 BATCHES=21 python3 gptfast_decode.py > "$OUT/anchor.log" 2>&1; tail -8 "$OUT/anchor.log")
t 170 bash .gpu/run.sh Gear.Bench gpu-throughput --shape $S --budget-gib 60 --prompt 4096 --generate 256 \
  --caches fp16,gear --bits 2 --dtype fp16 --json "$OUT/gpu-throughput-7b.json" > "$OUT/tp.log" 2>&1
tail -5 "$OUT/tp.log"
