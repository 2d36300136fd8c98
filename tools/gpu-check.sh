#!/usr/bin/env bash
# GPU smoke test. With an NVIDIA GPU: builds the CLI against Microsoft.ML.OnnxRuntime.Gpu
# (-p:OnnxKfacGpu=true; needs CUDA 13 and cuDNN 9), runs 50 updates of the embedded default
# on CUDA and the same 50 on the CPU, and compares the two loss curves. Without one it says
# so and exits 0. Exit 1: the build, a run or the comparison failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "no NVIDIA GPU found: GPU smoke tests were not run"
  exit 0
fi
nvidia-smi -L

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
steps=50
common=(train --max-steps "$steps" --quiet --threads 1)

echo "== CUDA: $steps updates of the embedded default"
ONNXKFAC_GPU=1 tools/onnx-kfac "${common[@]}" --device cuda --report "$out/cuda.json"
echo "== CPU (same GPU build): the same $steps updates"
ONNXKFAC_GPU=1 tools/onnx-kfac "${common[@]}" --device cpu --report "$out/cpu.json"

# The per-update losses of a report, one per line (the "loss" values inside "step_losses").
losses() {
  awk '/"step_losses": \[/ { on = 1; next }
       on && /^  \]/      { on = 0 }
       on && /"loss":/    { v = $2; gsub(/[",]/, "", v); print v }' "$1"
}
losses "$out/cuda.json" > "$out/cuda.txt"
losses "$out/cpu.json" > "$out/cpu.txt"

# Update 1 runs the same weights on both devices: its loss must agree closely. Later updates
# drift apart by float32 rounding differences (reductions in another order), so they get a
# looser bound.
paste "$out/cpu.txt" "$out/cuda.txt" | awk -v steps="$steps" '
  function abs(x) { return x < 0 ? -x : x }
  {
    n++; d = abs($1 - $2) / (abs($1) > 1e-6 ? abs($1) : 1e-6)
    if (d > worst) worst = d
    if (n == 1 && d > 1e-4) { printf "update 1: cpu loss %s, cuda loss %s (relative difference %.2e > 1e-4)\n", $1, $2, d; bad = 1 }
    if (d > 5e-2)           { printf "update %d: cpu loss %s, cuda loss %s (relative difference %.2e > 5e-2)\n", n, $1, $2, d; bad = 1 }
  }
  END {
    if (n != steps) { printf "expected %d losses from each device, compared %d\n", steps, n; exit 1 }
    printf "cpu vs cuda over %d updates: largest relative loss difference %.2e\n", n, worst
    if (bad) exit 1
  }'
echo "GPU smoke tests passed"
