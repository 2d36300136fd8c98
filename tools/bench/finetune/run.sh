#!/usr/bin/env bash
# The CNN fine-tune benchmark of issue 7 §2 (README.md here): a small CNN that PyTorch pretrained on
# Fashion-MNIST classes 0-4 is fine-tuned on all ten classes by `tools/onnx-kfac train` with K-FAC, SGD with
# momentum and AdamW from the same weights; test accuracy against training seconds and against updates.
# Writes tools/bench/finetune/RESULTS.md and the PNG plots next to it.
#
#   tools/bench/finetune/run.sh                 # ~20 min on a loaded 2-core machine: the grid, then 2 more seeds of each best config
#   REPEAT_SEEDS= tools/bench/finetune/run.sh   # the grid only (one run per configuration)
#   KEEP=/tmp/ft tools/bench/finetune/run.sh    # keep the model, the data, every report and log
set -euo pipefail
cd "$(dirname "$0")/../../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
PY=/usr/bin/python3
TORCH=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY")   # the OpenBLAS tuning variables select slow kernels; PyTorch only
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-2}
SUBSET=${SUBSET:-12800}             # fine-tuning images (all ten classes): 200 updates per epoch at batch 64
EPOCHS=${EPOCHS:-3}
BATCH=${BATCH:-64}
VALIDATE_EVERY=${VALIDATE_EVERY:-25}   # test-set accuracy every N updates (the validation set is the test set)
THREADS=${THREADS:-1}
SGD_LRS=${SGD_LRS:-0.01,0.03,0.1}
ADAMW_LRS=${ADAMW_LRS:-3e-4,1e-3,3e-3}
# K-FAC configurations, "name|flags" separated by ';': the defaults (KL clip, lr 0.003, λ 0.01, T_inv 20) and cheaper inverses.
KFAC_CONFIGS=${KFAC_CONFIGS:-"defaults|;T_inv 50|--kfac-inverse-every 50"}
REPEAT_SEEDS=${REPEAT_SEEDS-43,44}   # extra seeds of each optimizer's best configuration (empty: none)
TARGETS=${TARGETS:-0.80,0.85,0.87}

if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out/runs"
[ -z "${KEEP:-}" ] && trap 'rm -rf "$out"' EXIT
start=$(date +%s)
load_start=$(cut -d' ' -f1 /proc/loadavg)

"${TORCH[@]}" tools/bench/finetune/pretrain_cnn.py "$out" --data "$DATA" --epochs "$PRETRAIN_EPOCHS" --train-subset "$SUBSET"
tools/onnx-kfac --help >/dev/null   # builds the CLI before the first timed run
dotnet build tools/bench/autoencoder/AeBench/AeBench.csproj -c Release --nologo -v q -clp:ErrorsOnly

common=("$out/cnn.onnx" --train "$out/finetune-images-idx3-ubyte.gz" --train-labels "$out/finetune-labels-idx1-ubyte.gz"
        --val "$DATA/t10k-images-idx3-ubyte.gz" --val-labels "$DATA/t10k-labels-idx1-ubyte.gz"
        --test "$DATA/t10k-images-idx3-ubyte.gz" --test-labels "$DATA/t10k-labels-idx1-ubyte.gz" --scale 255
        --batch-size "$BATCH" --epochs "$EPOCHS" --validate-every "$VALIDATE_EVERY" --no-keep-best --threads "$THREADS" --quiet)

# run NAME FAMILY LABEL SEED FLAGS...: one fine-tune; the report, the log and the load average before and after.
run() {
  local name=$1 family=$2 label=$3 seed=$4; shift 4
  local before after t0 t1
  before=$(cut -d' ' -f1-3 /proc/loadavg); t0=$(date +%s.%N)
  tools/onnx-kfac train "${common[@]}" --seed "$seed" --report "$out/runs/$name.json" "$@" > "$out/runs/$name.log" 2>&1
  t1=$(date +%s.%N); after=$(cut -d' ' -f1-3 /proc/loadavg)
  printf '%s\n' "$@" > "$out/runs/$name.flags"
  "$PY" - "$out/runs/$name.meta.json" "$name" "$family" "$label" "$seed" "$before" "$after" "$t0" "$t1" <<'EOF'
import json, sys
p, name, family, label, seed, before, after, t0, t1 = sys.argv[1:]
json.dump({"name": name, "family": family, "label": label, "seed": int(seed), "load_before": before, "load_after": after,
           "process_seconds": float(t1) - float(t0)}, open(p, "w"))
EOF
  echo "$name (seed $seed): $(grep -E '^test after' "$out/runs/$name.log" | sed 's/  */ /g'); load $before -> $after"
}

IFS=';' read -r -a kcfgs <<< "$KFAC_CONFIGS"
for c in "${kcfgs[@]}"; do
  label=${c%%|*}; read -r -a flags <<< "${c#*|}"
  run "kfac-${label// /_}" kfac "K-FAC $label" 42 --optimizer kfac "${flags[@]}"
done
IFS=',' read -r -a lrs <<< "$SGD_LRS"
for lr in "${lrs[@]}"; do run "sgd-lr$lr" sgd "SGD+mom 0.9 lr $lr" 42 --optimizer sgd --momentum 0.9 --lr "$lr"; done
IFS=',' read -r -a lrs <<< "$ADAMW_LRS"
for lr in "${lrs[@]}"; do run "adamw-lr$lr" adamw "AdamW lr $lr" 42 --optimizer adamw --lr "$lr"; done

# More seeds of each optimizer's best configuration (highest final test accuracy at seed 42).
if [ -n "$REPEAT_SEEDS" ]; then
  IFS=',' read -r -a seeds <<< "$REPEAT_SEEDS"
  for best in $("$PY" tools/bench/finetune/summarize.py "$out" --best); do
    mapfile -t flags < "$out/runs/$best.flags"
    read -r family label < <("$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["family"], m["label"])' "$out/runs/$best.meta.json")
    for s in "${seeds[@]}"; do run "$best-s$s" "$family" "$label" "$s" "${flags[@]}"; done
  done
fi

export META_LOAD_START="$load_start" META_LOAD_END="$(cut -d' ' -f1 /proc/loadavg)" META_WALL=$(( $(date +%s) - start ))
export META_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" META_TARGETS="$TARGETS"
export META_COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Graph Toolkit tools/OnnxKfac.Cli tools/bench/finetune || echo '+dirty')"
export META_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" META_NPROC="$(nproc)"
export META_ISA="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|amx_tile)$' | tr '\n' ' ' | sed 's/ $//')"
export META_COMMAND="EPOCHS=$EPOCHS BATCH=$BATCH SUBSET=$SUBSET VALIDATE_EVERY=$VALIDATE_EVERY THREADS=$THREADS tools/bench/finetune/run.sh"
export META_CLI="tools/onnx-kfac train cnn.onnx --train finetune-images-idx3-ubyte.gz --train-labels finetune-labels-idx1-ubyte.gz --val t10k-images-idx3-ubyte.gz --val-labels t10k-labels-idx1-ubyte.gz --test (same) --scale 255 --batch-size $BATCH --epochs $EPOCHS --validate-every $VALIDATE_EVERY --no-keep-best --threads $THREADS --seed S --report R.json --optimizer ..."
"$PY" tools/bench/finetune/summarize.py "$out" --plots tools/bench/finetune > tools/bench/finetune/RESULTS.md
dotnet tools/bench/autoencoder/AeBench/bin/Release/net10.0/onnx-kfac-ae-bench.dll curves "$out/plots.json"
echo "wrote tools/bench/finetune/RESULTS.md ($(( $(date +%s) - start )) s)"
