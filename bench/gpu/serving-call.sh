#!/usr/bin/env bash
# One device call that re-measures the GPU serving tables of docs/benchmarks.md, in priority order, each step bounded
# so that what finished comes back: gpu-selftest (with the out-of-memory row), static gpu-throughput (FP16 and Gear
# 2-bit), serve through GearChatClient (Gear 2-bit), the gpt-fast anchor at batch 21. About 9-10 minutes.
#
#   ../shared/device/gpu-pack.sh bench/Gear.Bench/Gear.Bench.csproj
#   run: bash bench/gpu/serving-call.sh     (carry [".gpu"]; FP16 through the client and gpu-latency go in a second call)
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
S=bench/shapes/llama-2-7b/config.json
t() { local s=$SECONDS; echo "=== $*"; timeout "$@"; echo "=== rc=$? in $((SECONDS-s)) s"; }
t 130 bash .gpu/run.sh Gear.Bench gpu-selftest --json "$OUT/gpu-selftest.json" > "$OUT/selftest.log" 2>&1
grep -v "^frame" "$OUT/selftest.log" | grep -E "out_of_memory|PASS|FAIL" | tail -4
t 170 bash .gpu/run.sh Gear.Bench gpu-throughput --shape $S --budget-gib 60 --prompt 4096 --generate 256 \
  --caches fp16,gear --bits 2 --dtype fp16 --json "$OUT/gpu-throughput-7b.json" > "$OUT/tp.log" 2>&1
tail -5 "$OUT/tp.log"
t 190 bash .gpu/run.sh Gear.Bench serve --shape $S --device cuda --clients 0 --prompt-tokens 4096 --max-tokens 256 \
  --device-budget-gib 60 --caches gear --bits 2 --json "$OUT/serve-7b-gear.json" > "$OUT/serve-gear.log" 2>&1
tail -4 "$OUT/serve-gear.log"
(cd .gpu/anchors && t 95 env CONTEXTS=4096 BATCHES=21 python3 gptfast_decode.py > "$OUT/anchor.log" 2>&1; tail -6 "$OUT/anchor.log")
