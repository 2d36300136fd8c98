#!/usr/bin/env bash
# Issue 9's measurement: bytes communicated per update and time spent in collectives when the
# autoencoder of tools/bench/autoencoder (784-1000-500-250-30 mirrored, BCE with logits) trains
# data-parallel under mpirun on this machine (loopback TCP), for SGD+momentum and K-FAC (factor
# statistics reduced before each inverse refresh, the default, and on every update), at 2 and 4
# ranks. Writes tools/bench/mpi/RESULTS.md.
#
#   tools/bench/mpi/run.sh                       # ~10 min on 2 cores
#   STEPS=40 BATCH=128 RANKS="2 4" tools/bench/mpi/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
PY=/usr/bin/python3
STEPS=${STEPS:-40}
BATCH=${BATCH:-128}          # per rank
RANKS=${RANKS:-2 4}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
if ! command -v mpirun >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
# Open MPI in a container: as root, more ranks than cores, loopback only.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" tools/bench/autoencoder/export_autoencoder.py "$out" >/dev/null
# 8192 training images as features and as targets (an autoencoder reconstructs its input).
"$PY" - "$DATA" "$out/x.npy" <<'PYEOF'
import gzip, sys, numpy as np
with gzip.open(sys.argv[1] + "/train-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:8192].astype(np.float32) / 255
np.save(sys.argv[2], x)
PYEOF
tools/onnx-kfac --help >/dev/null   # build once before launching ranks
cli=(dotnet tools/OnnxKfac.Cli/bin/run-cpu/onnx-kfac.dll)
results="$out/results.tsv"
for np in $RANKS; do
  for opt in sgd kfac-refresh kfac-every; do
    case $opt in
      sgd) args=(--optimizer sgd --lr 10 --momentum 0.9) ;;
      kfac-refresh) args=(--optimizer kfac --lr 10 --kfac-damping 1 --kfac-kl-clip 1e-2 --kfac-reduce-factors refresh) ;;
      kfac-every) args=(--optimizer kfac --lr 10 --kfac-damping 1 --kfac-kl-clip 1e-2 --kfac-reduce-factors every) ;;
    esac
    log="$out/$opt-$np.log"
    mpirun -np "$np" "${cli[@]}" train "$out/autoencoder.onnx" --train "$out/x.npy" --train-labels "$out/x.npy" \
      --loss bce-with-logits --batch-size "$BATCH" --max-steps "$STEPS" --threads 1 --seed 1 "${args[@]}" >"$log" 2>&1
    # rank 0's summary lines (after the terminal escapes mpirun's ranks may print)
    line=$(grep -a 'collectives (rank 0)' "$log" | tail -1 || echo none)
    done_line=$(grep -aE 'done: [0-9]+ updates' "$log" | tail -1 || echo none)
    printf '%s\t%s\t%s\t%s\n' "$np" "$opt" "$line" "$done_line" >>"$results"
    echo "$np ranks, $opt: $line"
  done
done
"$PY" - "$results" "$STEPS" "$BATCH" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" >tools/bench/mpi/RESULTS.md <<'PYEOF'
import re, sys
path, steps, batch, cores, load = sys.argv[1:6]
print("# Data-parallel autoencoder: bytes and time in collectives\n")
print(f"`tools/bench/mpi/run.sh` (STEPS={steps}, BATCH={batch} per rank), {cores} cores, loopback TCP, Open MPI; "
      f"load average at the end {load}. One run each; bytes are exact (what rank 0 sent into its collectives), "
      "times are wall-clock on an oversubscribed 2-core machine (4 ranks share 2 cores).\n")
print("| ranks | optimizer | MB per update | ms in collectives per update | all-reduce calls | broadcast calls | updates/s |")
print("|---|---|---|---|---|---|---|")
for row in open(path):
    np_, opt, line, done = row.rstrip("\n").split("\t")
    mb, ms = re.search(r"per update ([\d.]+) MB, ([\d.]+) ms", line).groups()
    ar = re.search(r"AllReduce: (\d+) calls", line)
    bc = re.search(r"Broadcast: (\d+) calls", line)
    ups = re.search(r"\(([\d.]+) updates/s\)", done)
    print(f"| {np_} | {opt} | {mb} | {ms} | {ar.group(1) if ar else 0} | {bc.group(1) if bc else 0} | {ups.group(1) if ups else '?'} |")
print("\nWhat travels per update: the gradients (float32, one bucket of at most 16 MiB) and the batch's loss and "
      "count (16 bytes); K-FAC `every` adds the float64 factor statistics of every Kronecker block each update; "
      "K-FAC `refresh` (the default) adds the same bytes once per inverse refresh (the ranks' running factors "
      "averaged), and both add the inverses each rank computed, broadcast in float32 once per refresh. "
      "The trajectories of both K-FAC forms equal one process with batch K x BATCH (BENCHMARKS.md).")
PYEOF
cat tools/bench/mpi/RESULTS.md
