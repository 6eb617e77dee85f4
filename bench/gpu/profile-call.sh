#!/usr/bin/env bash
# One device call: gpu-selftest, then one launch-light decode step (7B shape, batch 1, 4K) under Nsight Systems (or
# Nsight Compute) per cache kind, kernel times summed by kernel.
#   ../shared/device/gpu-pack.sh bench/Gear.Bench/Gear.Bench.csproj ; run: bash bench/gpu/profile-call.sh (carry [".gpu"])
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
S=bench/shapes/llama-2-7b/config.json
t() { local s=$SECONDS; echo "=== $*"; timeout "$@"; echo "=== rc=$? in $((SECONDS-s)) s"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; command -v nsys ncu
t 100 bash .gpu/run.sh Gear.Bench gpu-selftest --json "$OUT/gpu-selftest.json" > "$OUT/selftest.log" 2>&1
grep -v "^frame" "$OUT/selftest.log" | grep -E "launch_light|out_of_memory|FAIL|PASS" | cut -c1-220 | tail -18
for cache in gear fp16; do
  args=(gpu-latency --shape $S --contexts 4096 --caches $cache --bits 2 --dtype fp16 --step launch-light --rounds 1 --steps 4)
  if command -v nsys >/dev/null; then
    GEAR_PROFILE_STEP=1 t 90 nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop -t cuda -o /tmp/step-$cache -f true \
      bash .gpu/run.sh Gear.Bench "${args[@]}" > "$OUT/nsys-$cache.log" 2>&1
    nsys stats -r cuda_gpu_kern_sum -f csv -o "$OUT/kernels-$cache" /tmp/step-$cache.nsys-rep > /dev/null 2>&1; ls "$OUT"
  elif command -v ncu >/dev/null; then
    GEAR_PROFILE_STEP=1 t 150 ncu --profile-from-start off --metrics gpu__time_duration.sum --csv \
      bash .gpu/run.sh Gear.Bench "${args[@]}" > "$OUT/ncu-$cache.csv" 2> "$OUT/ncu-$cache.log"
  fi
done
