#!/usr/bin/env bash
# GPU smoke test. With an NVIDIA GPU: builds the CLI against Microsoft.ML.OnnxRuntime.Gpu
# (-p:OnnxKfacGpu=true; needs CUDA 13 and cuDNN 9), runs 50 updates of the embedded default
# on CUDA and the same 50 on the CPU, with AdamW and then with K-FAC (both update rules: its
# training graph, inverse and preconditioning programs and the Jacobian-vector-product pass
# all run on the device), and compares the loss curves. Without a GPU it says so and exits 0.
# Exit 1: the build, a run or the comparison failed.
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

compare() {   # compare NAME: the CPU and CUDA reports of one optimizer
losses "$out/$1-cuda.json" > "$out/$1-cuda.txt"
losses "$out/$1-cpu.json" > "$out/$1-cpu.txt"
# Update 1 runs the same weights on both devices: its loss must agree closely. Later updates
# drift apart by float32 rounding differences (reductions in another order), so they get a
# looser bound.
paste "$out/$1-cpu.txt" "$out/$1-cuda.txt" | awk -v steps="$steps" -v name="$1" '
  function abs(x) { return x < 0 ? -x : x }
  {
    n++; d = abs($1 - $2) / (abs($1) > 1e-6 ? abs($1) : 1e-6)
    if (d > worst) worst = d
    if (n == 1 && d > 1e-4) { printf "%s update 1: cpu loss %s, cuda loss %s (relative difference %.2e > 1e-4)\n", name, $1, $2, d; bad = 1 }
    if (d > 5e-2)           { printf "%s update %d: cpu loss %s, cuda loss %s (relative difference %.2e > 5e-2)\n", name, n, $1, $2, d; bad = 1 }
  }
  END {
    if (n != steps) { printf "%s: expected %d losses from each device, compared %d\n", name, steps, n; exit 1 }
    printf "%s: cpu vs cuda over %d updates: largest relative loss difference %.2e\n", name, n, worst
    if (bad) exit 1
  }'
}

# The per-update losses of a report, one per line (the "loss" values inside "step_losses").
losses() {
  awk '/"step_losses": \[/ { on = 1; next }
       on && /^  \]/      { on = 0 }
       on && /"loss":/    { v = $2; gsub(/[",]/, "", v); print v }' "$1"
}

run() {   # run NAME FLAGS...: the same updates on CUDA and on the CPU (same GPU build), timed
  local name=$1; shift
  for device in cuda cpu; do
    echo "== $name on $device: $steps updates of the embedded default"
    local t0=$(date +%s.%N)
    ONNXKFAC_GPU=1 tools/onnx-kfac "${common[@]}" --device "$device" --report "$out/$name-$device.json" "$@"
    echo "   $name on $device: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s wall"
  done
  compare "$name"
}

run adamw
run kfac --optimizer kfac --lr 0.003 --kfac-damping 0.01 --kfac-inverse-every 10
run kfac-quadratic --optimizer kfac --kfac-update quadratic --kfac-damping 1 --batch-size 256
echo "GPU smoke tests passed"
