#!/usr/bin/env bash
# Runs every test project of the solution (Release) and ends with one line
# "N passed, N failed[, N skipped]" summed over the test assemblies.
set -uo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# The full Fashion-MNIST (Debian's dataset-fashion-mnist) lets three data tests run on real
# files; without it they are reported as skipped. Best effort: never fails the run.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing dataset-fashion-mnist (for the data tests on real files)"
  { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 ||
    echo "could not install dataset-fashion-mnist: its three tests will be skipped"
fi
# Open MPI for the multi-rank tests (Tests/OnnxKfac.Cli.Tests/MpiTests.cs; skipped without mpirun).
if ! command -v mpirun >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing openmpi-bin and libopenmpi-dev (for the multi-rank tests)"
  { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq openmpi-bin libopenmpi-dev; } >/dev/null 2>&1 ||
    echo "could not install Open MPI: the multi-rank tests will be skipped"
fi
# OpenBLAS for K-FAC's Cholesky inverses (Tests/OnnxKfac.Toolkit.Tests/Kfac/CholeskyInverseTests.cs):
# those tests fail, not skip, without it.
if ! { [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so.0 ] || [ -e /usr/lib/aarch64-linux-gnu/libopenblas.so.0 ] || ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; } &&
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing libopenblas0-pthread (for K-FAC's Cholesky inverses)"
  { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq libopenblas0-pthread; } >/dev/null 2>&1 ||
    echo "could not install libopenblas0-pthread: the Cholesky inverse tests will fail"
fi
# clang and zlib for the NativeAOT publish test (Tests/OnnxKfac.Cli.Tests/PublishTests.cs; skipped without them).
if { ! command -v clang >/dev/null || [ ! -e /usr/include/zlib.h ]; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing clang and zlib1g-dev (for the NativeAOT publish test)"
  { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq clang zlib1g-dev; } >/dev/null 2>&1 ||
    echo "could not install clang and zlib1g-dev: the NativeAOT publish test will be skipped"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
dotnet test OnnxKfac.sln -c Release --nologo "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
read -r passed failed skipped < <(grep -E '^(Passed|Failed)!' "$log" | sed -E 's/.*Failed: *([0-9]+), Passed: *([0-9]+), Skipped: *([0-9]+).*/\2 \1 \3/' |
  awk '{p+=$1; f+=$2; s+=$3} END {print p+0, f+0, s+0}')
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; echo "dotnet test exited with $rc (build failure or crashed test host)"; fi
line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
exit "$rc"
