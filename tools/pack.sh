#!/usr/bin/env bash
# Packs the NuGet packages into artifacts/packages (git-ignored), or into the folder given as $1:
#   OnnxKfac.Graph, OnnxKfac.Toolkit (brings ONNX Runtime's CPU build), OnnxKfac.Toolkit.Gpu
#   (the same assembly, bringing ONNX Runtime's CUDA build), and the .NET tool OnnxKfac.Cli
#   (command onnx-kfac): a pointer package plus one package per RID in ONNXKFAC_TOOL_RIDS
#   (default: this machine's RID), each holding only that platform's native libraries.
# Use them: a nuget.config with the folder as a source, then
#   dotnet add package OnnxKfac.Toolkit --version 0.1.0   (or OnnxKfac.Toolkit.Gpu)
#   dotnet tool install OnnxKfac.Cli --add-source artifacts/packages --tool-path DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$root/artifacts/packages}" && cd "${1:-$root/artifacts/packages}" && pwd)"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
rids="${ONNXKFAC_TOOL_RIDS:-$(dotnet --info | awk '/^ *RID:/ {print $2; exit}')}"
rid_list="${rids// /;}"
# Each pack builds under its own artifacts/pack-*/ (bin, obj per project), so that the packs do not
# disturb the ordinary builds (tools/onnx-kfac, the tests) and a GPU pack does not restore over a CPU one.
pack() {
  local name="$1"; shift
  dotnet pack "$@" -c Release -o "$out" --nologo -v q -clp:ErrorsOnly \
    -p:UseArtifactsOutput=true -p:ArtifactsPath="$root/artifacts/pack-$name"
}
pack cpu "$root/Graph/OnnxKfac.Graph.csproj"
pack cpu "$root/Toolkit/OnnxKfac.Toolkit.csproj"
pack gpu "$root/Toolkit/OnnxKfac.Toolkit.csproj" -p:OnnxKfacGpu=true
# The RIDs as RuntimeIdentifiers too: one pack writes the pointer package and every RID's package.
pack tool "$root/tools/OnnxKfac.Cli/OnnxKfac.Cli.csproj" -p:ToolPackageRuntimeIdentifiers="$rid_list" -p:RuntimeIdentifiers="$rid_list"
ls -1 "$out"/*.nupkg
