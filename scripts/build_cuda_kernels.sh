#!/usr/bin/env bash
# Rebuilds the PTX of the CUDA kernels shipped in Gear.AI.Compression, and records the hashes of the sources it came
# from (a CI test checks the two belong together).
# Needs nvcc (CUDA 11.8 or later). PTX ISA 7.8 / compute_70 loads on R520+ drivers and every GPU since Volta;
# the driver compiles it for the card at first load.
#   Debian 12: apt-get install nvidia-cuda-toolkit (non-free), then this script (it uses clang-14 as host compiler
#   when no supported g++ is present).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)/src/Gear.AI.Compression/Cuda"
host=()
if ! nvcc --version >/dev/null 2>&1; then echo "nvcc not found" >&2; exit 1; fi
if command -v clang-14 >/dev/null && ! command -v g++-11 >/dev/null; then host=(-ccbin clang-14); fi
# nvcc numbers its virtual registers differently from run to run under address-space randomization (same machine code
# after ptxas, different text); without it the PTX is the same for the same source.
norandom=()
if command -v setarch >/dev/null && setarch "$(uname -m)" -R true 2>/dev/null; then norandom=(setarch "$(uname -m)" -R); fi
"${norandom[@]}" nvcc "${host[@]}" -std=c++17 -ptx -arch=compute_70 -O3 -o gear_decode.ptx gear_decode.cu
sha256sum gear_decode.cu gear_attention.cuh > gear_decode.ptx.sha256
echo "wrote $(pwd)/gear_decode.ptx ($(grep -c '^.visible .entry' gear_decode.ptx) kernels)"
