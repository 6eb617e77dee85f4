#!/usr/bin/env bash
# One device call that re-measures serving through GearChatClient on the 7B shape (random weights), Gear 2-bit then FP16,
# with the gpt-fast anchor at its largest batch within 60 GiB (21), each step bounded so that what finished comes back.
# About 8 minutes. The static throughput, selftest and latency rows are in bench/gpu/launch-light-call.sh.
#
#   ../shared/device/gpu-pack.sh bench/Gear.Bench/Gear.Bench.csproj
#   run: bash bench/gpu/serving-call.sh     (carry [".gpu"])
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
S=bench/shapes/llama-2-7b/config.json
t() { local s=$SECONDS; echo "=== $*"; timeout "$@"; echo "=== rc=$? in $((SECONDS-s)) s"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for cache in gear fp16; do
  t 200 bash .gpu/run.sh Gear.Bench serve --shape $S --device cuda --clients 0 --prompt-tokens 4096 --max-tokens 256 \
    --device-budget-gib 60 --caches $cache --bits 2 --json "$OUT/serve-7b-$cache.json" > "$OUT/serve-$cache.log" 2>&1
  grep -v "^frame" "$OUT/serve-$cache.log" | tail -4
done
(cd .gpu/anchors && t 100 env CONTEXTS=4096 BATCHES=21 python3 gptfast_decode.py > "$OUT/anchor.log" 2>&1; tail -6 "$OUT/anchor.log")
