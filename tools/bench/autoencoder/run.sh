#!/usr/bin/env bash
# The autoencoder benchmarks of issue 7 (README.md here): training curves of K-FAC, SGD+momentum and
# AdamW from the same weights (section 1), OnnxKfac against PyTorch (section 3), the K-FAC step broken
# down (section 4), peak RSS (section 5). Writes tools/bench/autoencoder/RESULTS.md and the PNG plots.
#
#   tools/bench/autoencoder/run.sh                    # about 15 min on 2 cores: 11 training runs of RUN_SECONDS=20, step costs once
#   PARTS=train tools/bench/autoencoder/run.sh        # only the training curves (~5 min); PARTS=step only the step costs (~10 min)
#   RUN_SECONDS=150 STEP_REPEAT=2 PARTS=train,seeds,step tools/bench/autoencoder/run.sh   # what BENCHMARKS.md sections 1, 3 and 4 report (~75 min)
#   PARTS=step tools/bench/autoencoder/run.sh         # only the step costs (PARTS=train,step by default)
#   KEEP=/tmp/ae RUN_SECONDS=150 STEP_REPEAT=2 PARTS=kfac,step tools/bench/autoencoder/run.sh   # after a K-FAC change: its runs and the step costs again (~50 min)
#   KEEP=/tmp/ae RUN_SECONDS=150 SEEDS=42,43,44 PARTS=seeds tools/bench/autoencoder/run.sh   # the headline's configurations, three batch orders (~35 min)
#   KEEP=/tmp/ae RUN_SECONDS=150 SEEDS=42,43,44 QUAD_DAMPING=0.05 PARTS=headline tools/bench/autoencoder/run.sh   # K-FAC at λ₀ 0.05 against SGD lr 10 and 3, alternating (~25 min)
#   KEEP=/tmp/ae RUN_SECONDS=150 SEEDS=42,43,44 PARTS=pair tools/bench/autoencoder/run.sh   # section 3: K-FAC against PyTorch's K-FAC, alternating, three batch orders (~15 min)
#   KEEP=/tmp/ae tools/bench/autoencoder/run.sh       # keep the raw JSON
set -euo pipefail
cd "$(dirname "$0")/../../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
PY=/usr/bin/python3
TORCH=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY")   # the OpenBLAS tuning variables select slow kernels; PyTorch only
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
RUN_SECONDS=${RUN_SECONDS:-20}
THREADS=${THREADS:-1}               # training runs
STEP_THREADS=${STEP_THREADS:-1,2}
STEP_BATCHES=${STEP_BATCHES:-256,1024}
STEP_REPEAT=${STEP_REPEAT:-1}
STEP_WD=${STEP_WD:-1e-5,0}          # K-FAC's η in the step costs: the paper's, and 0 (per-example preconditioning)
STEPS=${STEPS:-20}
PARTS=${PARTS:-train,step}          # and seeds: the headline's configurations with the batch orders SEEDS
SEEDS=${SEEDS:-43,44}
SGD_LRS=${SGD_LRS:-1,3,10}
ADAMW_LRS=${ADAMW_LRS:-3e-4,1e-3,3e-3}
TARGETS=${TARGETS:-350,300,250,230,220,215,210}
QUAD_FRACTION=${QUAD_FRACTION:-0.25}   # the fast quadratic runs' --quadratic-fraction
INIT=${INIT:-sparse}                # the paper's sparse initialisation; INIT=default: PyTorch's nn.Linear init

if ! dpkg -s libopenblas0-pthread >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
fi
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[ -z "${KEEP:-}" ] && trap 'rm -rf "$out"' EXIT
"${TORCH[@]}" tools/bench/autoencoder/export_autoencoder.py "$out" --init "$INIT" >/dev/null
dotnet build tools/bench/autoencoder/AeBench/AeBench.csproj -c Release --nologo -v q -clp:ErrorsOnly
ae=(dotnet tools/bench/autoencoder/AeBench/bin/Release/net10.0/onnx-kfac-ae-bench.dll)
tr=("${TORCH[@]}" tools/bench/autoencoder/ae_torch.py)
m="$out/autoencoder.onnx"
common=(--model "$m" --data "$DATA" --seconds "$RUN_SECONDS" --threads "$THREADS")
load_start=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s)
commands=("tools/bench/autoencoder/run.sh  # RUN_SECONDS=$RUN_SECONDS THREADS=$THREADS STEP_REPEAT=$STEP_REPEAT STEPS=$STEPS INIT=$INIT")

kl=(--optimizer kfac-kl --lr "${KL_LR:-0.3}" --damping "${KL_DAMPING:-0.05}" --kl-clip "${KL_CLIP:-1e-2}" --batch 256)
kfac_runs() {
  # K-FAC: the paper's quadratic rule with LM damping from λ₀ = 150 on its per-image-summed loss, which is
  # 150/784 ≈ 0.19 on the mean-reduced loss these runs train (README.md), and the KL-clip rule.
  "${ae[@]}" train "${common[@]}" --optimizer kfac-quad --damping "${QUAD_DAMPING:-0.19}" --batch 256 --out "$out/train-kfac-quad-256.json"
  "${ae[@]}" train "${common[@]}" "${kl[@]}" --out "$out/train-kfac-kl-256.json"
  # The cheaper K-FAC updates of section 4: statistics on an eighth of the batch, η = 0 (per-example preconditioning).
  # The quadratic rule's Fisher products on a quarter of the batch (QUAD_FRACTION; 1: the whole batch).
  kfac_seed_run 42
  kl_pair 42
}
kl_pair() {   # $1: the seed. Section 3 at equal hyper-parameters: the fast KL-clip K-FAC (f 1/8, η 0), then the same
  # settings in the straightforward PyTorch K-FAC (its statistics slice the factors' rows; its sampled backward
  # still runs over the whole batch and its preconditioning is dense).
  "${ae[@]}" train "${common[@]}" --seed "$1" "${kl[@]}" --fraction 0.125 --weight-decay 0 --out "$out/train-kfac-kl-256-fast$(sfx "$1").json"
  "${tr[@]}" train "${common[@]}" --seed "$1" "${kl[@]}" --fraction 0.125 --weight-decay 0 --out "$out/train-torch-kfac-kl-256-fast$(sfx "$1").json"
}
sfx() { [ "$1" = 42 ] || echo "-s$1"; }   # seed 42 (the default batch order) writes the plain file names the plots read
kfac_seed_run() {   # $1: the seed. The fast quadratic K-FAC of section 1 (λ₀ QUAD_DAMPING, f 1/8, η 0, QUAD_FRACTION)
  local d=${QUAD_DAMPING:-0.19} tag=""
  [ "$d" = 0.19 ] || tag="-l$d"   # another λ₀: its own files beside the paper's
  "${ae[@]}" train "${common[@]}" --seed "$1" --optimizer kfac-quad --damping "$d" --batch 256 --fraction 0.125 --weight-decay 0 --quadratic-fraction "$QUAD_FRACTION" --out "$out/train-kfac-quad-256-fast$tag$(sfx "$1").json"
}
plots() {
  mapfile -t seed42 < <(ls "$out"/train-*.json | grep -Ev -- '-s[0-9]+\.json$')   # the plots: one line per configuration (seed 42)
  "${ae[@]}" plot --out tools/bench/autoencoder "${seed42[@]}"
}
IFS=',' read -r -a seeds <<< "$SEEDS"
if [[ ,$PARTS, == *,train,* ]]; then
  kfac_runs
  "${tr[@]}" train "${common[@]}" "${kl[@]}" --out "$out/train-torch-kfac-kl-256.json"
  IFS=',' read -r -a lrs <<< "$SGD_LRS"
  for lr in "${lrs[@]}"; do "${ae[@]}" train "${common[@]}" --optimizer sgd --lr "$lr" --batch 256 --out "$out/train-sgd-$lr.json"; done
  "${tr[@]}" train "${common[@]}" --optimizer sgd --lr "${lrs[1]}" --batch 256 --out "$out/train-torch-sgd-${lrs[1]}.json"
  IFS=',' read -r -a lrs <<< "$ADAMW_LRS"
  for lr in "${lrs[@]}"; do "${ae[@]}" train "${common[@]}" --optimizer adamw --lr "$lr" --batch 256 --out "$out/train-adamw-$lr.json"; done
  plots
  commands+=("onnx-kfac-ae-bench train --model autoencoder.onnx --optimizer kfac-quad|kfac-kl|sgd|adamw --lr X --batch N --seconds $RUN_SECONDS --threads $THREADS --out F.json" \
             "ae_torch.py train --model autoencoder.onnx --optimizer kfac-kl|sgd --lr X --batch 256 [--fraction 0.125 --weight-decay 0] --seconds $RUN_SECONDS --threads $THREADS --out F.json")
fi
if [[ ,$PARTS, == *,seeds,* ]]; then
  # The headline's configurations again with other batch orders (SEEDS), for the spread of section 1:
  # K-FAC quadratic with the cheaper updates, the best SGD learning rates and the best AdamW.
  for s in "${seeds[@]}"; do
    kfac_seed_run "$s"
    for lr in 3 10; do "${ae[@]}" train "${common[@]}" --seed "$s" --optimizer sgd --lr "$lr" --batch 256 --out "$out/train-sgd-$lr$(sfx "$s").json"; done
    "${ae[@]}" train "${common[@]}" --seed "$s" --optimizer adamw --lr 1e-3 --batch 256 --out "$out/train-adamw-1e-3$(sfx "$s").json"
  done
  plots
  commands+=("onnx-kfac-ae-bench train ... --seed S (S in $SEEDS: K-FAC quadratic f 1/8 η 0 F-products $QUAD_FRACTION, SGD lr 3 and 10, AdamW 1e-3)")
fi
if [[ ,$PARTS, == *,headline,* ]]; then
  # Section 1's headline side by side: the fast quadratic K-FAC (QUAD_DAMPING, QUAD_FRACTION) and the best
  # SGD at each target (lr 10 from 230 down, lr 3 above), alternating, for each of SEEDS (the machine's
  # speed drifts over tens of minutes).
  for s in "${seeds[@]}"; do
    kfac_seed_run "$s"
    for lr in 10 3; do "${ae[@]}" train "${common[@]}" --seed "$s" --optimizer sgd --lr "$lr" --batch 256 --out "$out/train-sgd-$lr$(sfx "$s").json"; done
  done
  plots
  commands+=("onnx-kfac-ae-bench train ... --seed S (PARTS=headline, S in $SEEDS: K-FAC quadratic λ₀ ${QUAD_DAMPING:-0.19} f 1/8 η 0 F-products $QUAD_FRACTION, then SGD lr 10 and 3)")
fi
if [[ ,$PARTS, == *,pair,* ]]; then
  # Section 3's K-FAC pair for each of SEEDS, OnnxKfac and PyTorch alternating.
  for s in "${seeds[@]}"; do kl_pair "$s"; done
  commands+=("onnx-kfac-ae-bench train ... --seed S, then ae_torch.py train ... --seed S (PARTS=pair, S in $SEEDS: K-FAC KL clip f 1/8 η 0)")
fi
if [[ ,$PARTS, == *,kfac,* ]]; then
  # After a change to K-FAC: its training runs of train and seeds again (OnnxKfac's, and PyTorch's K-FAC at
  # the fast settings beside them, for section 3's ratio); the SGD and AdamW runs already in KEEP stay.
  kfac_runs
  for s in "${seeds[@]}"; do kfac_seed_run "$s"; done
  plots
  commands+=("onnx-kfac-ae-bench train --model autoencoder.onnx --optimizer kfac-quad|kfac-kl ... (PARTS=kfac: the K-FAC runs of train and seeds again)")
fi
if [[ ,$PARTS, == *,step,* ]]; then
  IFS=',' read -r -a bs <<< "$STEP_BATCHES"
  IFS=',' read -r -a ts <<< "$STEP_THREADS"
  IFS=',' read -r -a wds <<< "$STEP_WD"
  for _ in $(seq "$STEP_REPEAT"); do
    for b in "${bs[@]}"; do for t in "${ts[@]}"; do for wd in "${wds[@]}"; do
      "${ae[@]}" step --model "$m" --matmul "$out/matmul1000.onnx" --data "$DATA" --batch "$b" --threads "$t" --steps "$STEPS" --fraction 0.125 --weight-decay "$wd" --out "$out/step.jsonl" >/dev/null
      "${tr[@]}" step --model "$m" --data "$DATA" --batch "$b" --threads "$t" --steps "$STEPS" --fraction 0.125 --weight-decay "$wd" --out "$out/torch-step.jsonl" >/dev/null
    done; done; done
  done
  commands+=("onnx-kfac-ae-bench step --model autoencoder.onnx --matmul matmul1000.onnx --batch B --threads T --steps $STEPS --fraction 0.125 --weight-decay η --out step.jsonl" \
             "ae_torch.py step --model autoencoder.onnx --batch B --threads T --steps $STEPS --fraction 0.125 --weight-decay η --out torch-step.jsonl")
fi
export META_COMMANDS="$(printf '%s\n' "${commands[@]}")" META_LOAD_START="$load_start" META_LOAD_END="$(cut -d' ' -f1 /proc/loadavg)"
export META_WALL=$(( $(date +%s) - start )) META_TARGETS="$TARGETS" META_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
export META_COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Graph Toolkit tools/bench || echo '+dirty')"
export META_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" META_NPROC="$(nproc)"
export META_ISA="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16)$' | tr '\n' ' ' | sed 's/ $//')"
export META_BLAS="$("${TORCH[@]}" -c 'import torch; print(",".join(sorted({l.split()[-1] for l in open("/proc/self/maps") if "openblas" in l or "libblas" in l})))')"
"$PY" - "$out/meta.json" <<'EOF2'
import json, os, sys
e = os.environ
# A KEEP directory filled by several runs (PARTS=train,step then PARTS=seeds) keeps every run's commands.
earlier = json.load(open(sys.argv[1])).get("commands", []) if os.path.exists(sys.argv[1]) else []
commands = list(dict.fromkeys(earlier + e["META_COMMANDS"].splitlines()))
json.dump({"date": e["META_DATE"], "commit": e["META_COMMIT"], "cpu": e["META_CPU"], "nproc": e["META_NPROC"], "isa": e["META_ISA"],
           "torch_blas": e["META_BLAS"], "load_start": e["META_LOAD_START"], "load_end": e["META_LOAD_END"], "wall_s": e["META_WALL"],
           "targets": [float(t) for t in e["META_TARGETS"].split(",")], "commands": commands}, open(sys.argv[1], "w"))
EOF2
"$PY" tools/bench/autoencoder/summarize.py "$out" > tools/bench/autoencoder/RESULTS.md
echo "wrote tools/bench/autoencoder/RESULTS.md ($(( $(date +%s) - start )) s)"
