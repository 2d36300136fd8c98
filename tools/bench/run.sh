#!/usr/bin/env bash
# Builds the benchmark (Release), runs OnnxKfac and PyTorch on every model, batch size and
# thread count, profiles the training graphs, runs the A/B experiments, and writes
# tools/bench/RESULTS.md. A full run takes about 3-5 minutes on 2 cores (longer when other jobs share the machine).
#
#   tools/bench/run.sh                      # everything, RESULTS.md rewritten
#   MODELS=mlp,transformer tools/bench/run.sh
#   KEEP=/tmp/bench tools/bench/run.sh      # keep the raw JSON in /tmp/bench
#
# Each model runs in OnnxKfac and then in PyTorch, one after the other, REPEAT times, so both
# see about the same machine load (recorded per row); RESULTS.md keeps the best median of the
# repetitions. See tools/bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# The OpenBLAS tuning variables select slow kernels for PyTorch; unset them for every child.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

MODELS=${MODELS:-fashion_mlp,mlp,transformer,cnn,resnet}
BATCHES=${BATCHES:-32,256}
THREADS=${THREADS:-1,2}
STEPS=${STEPS:-50}
WARMUP=${WARMUP:-10}
ATTEMPTS=${ATTEMPTS:-2}
REPEAT=${REPEAT:-2}
PROFILE=${PROFILE:-fashion_mlp:256:1,transformer:256:1,cnn:256:1,resnet:256:1}
EXPERIMENTS=${EXPERIMENTS:-transformer:32:1,transformer:256:1,transformer:256:2,fashion_mlp:256:2,cnn:32:1,cnn:256:1,resnet:32:1,resnet:256:1,resnet:256:2}
PY=/usr/bin/python3

# Section 0 of issue 7: PyTorch on OpenBLAS, not the netlib reference BLAS. Debian's
# python3-torch calls libblas.so.3; libopenblas0-pthread takes over that alternative.
if ! dpkg -s libopenblas0-pthread >/dev/null 2>&1; then
  echo "installing libopenblas0-pthread (PyTorch's BLAS; see tools/bench/README.md)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
fi

out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[ -z "${KEEP:-}" ] && trap 'rm -rf "$out"' EXIT
: > "$out/onnxkfac.jsonl"
: > "$out/torch.jsonl"

dotnet build tools/bench/OnnxKfac.Bench/OnnxKfac.Bench.csproj -c Release --nologo -v q -clp:ErrorsOnly
bench=(dotnet tools/bench/OnnxKfac.Bench/bin/Release/net10.0/onnx-kfac-bench.dll)
common=(--batches "$BATCHES" --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --attempts "$ATTEMPTS")

start=$(date +%s)
load_start=$(cut -d' ' -f1 /proc/loadavg)
commands=()
IFS=',' read -r -a model_list <<< "$MODELS"
for m in "${model_list[@]}"; do
  cmd1="${bench[*]} --models $m ${common[*]} --out onnxkfac-$m.jsonl"
  cmd2="unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; $PY tools/bench/torch_step.py --models $m ${common[*]} --out torch-$m.jsonl"
  commands+=("$cmd1" "$cmd2")
  for _ in $(seq "$REPEAT"); do
    "${bench[@]}" --models "$m" "${common[@]}" --out "$out/onnxkfac-$m.jsonl"
    "$PY" tools/bench/torch_step.py --models "$m" "${common[@]}" --out "$out/torch-$m.jsonl"
    cat "$out/onnxkfac-$m.jsonl" >> "$out/onnxkfac.jsonl"
    cat "$out/torch-$m.jsonl" >> "$out/torch.jsonl"
  done
done
cmd3="${bench[*]} --models none --steps $STEPS --warmup $WARMUP --attempts $ATTEMPTS --profile $PROFILE --profile-out profile.json --experiments $EXPERIMENTS --experiments-out experiments.json"
commands+=("$cmd3")
"${bench[@]}" --models none --steps "$STEPS" --warmup "$WARMUP" --attempts "$ATTEMPTS" \
  --profile "$PROFILE" --profile-out "$out/profile.json" \
  --experiments "$EXPERIMENTS" --experiments-out "$out/experiments.json"
load_end=$(cut -d' ' -f1 /proc/loadavg)
wall=$(( $(date +%s) - start ))

export META_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" META_COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Graph Toolkit tools/bench || echo '+dirty')"
export META_NPROC="$(nproc)" META_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
export META_FLAGS="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|fma)$' | tr '\n' ' ' | sed 's/ $//')"
export META_MEM="$(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}')"
export META_DOTNET="$(dotnet --version)" META_ORT="$(grep -o 'Microsoft.ML.OnnxRuntime" Version="[^"]*' Directory.Packages.props | cut -d'"' -f3)"
export META_LOAD_START="$load_start" META_LOAD_END="$load_end" META_WALL="$wall" META_STEPS="$STEPS" META_WARMUP="$WARMUP" META_ATTEMPTS="$ATTEMPTS" META_REPEAT="$REPEAT"
export META_COMMANDS="$(printf '%s\n' "tools/bench/run.sh   # runs, per model, the two commands below REPEAT=$REPEAT times (alternating); then the profile/experiments" "${commands[@]}")"
"$PY" - "$out/meta.json" <<'EOF'
import json, os, sys
e = os.environ
json.dump({"date": e["META_DATE"], "commit": e["META_COMMIT"], "nproc": e["META_NPROC"], "cpu": e["META_CPU"],
           "cpu_flags": e["META_FLAGS"], "memory": e["META_MEM"], "dotnet": e["META_DOTNET"], "ort": e["META_ORT"],
           "load_start": e["META_LOAD_START"], "load_end": e["META_LOAD_END"], "wall_s": e["META_WALL"],
           "steps": e["META_STEPS"], "warmup": e["META_WARMUP"], "attempts": e["META_ATTEMPTS"], "repeat": e["META_REPEAT"], "commands": e["META_COMMANDS"].splitlines()},
          open(sys.argv[1], "w"), indent=1)
EOF
"$PY" tools/bench/make_results.py "$out" > tools/bench/RESULTS.md
echo "wrote tools/bench/RESULTS.md (${wall}s; load $load_start -> $load_end)"
