#!/usr/bin/env bash
# Publishes the onnx-kfac CLI as one NativeAOT executable for this machine's platform (no .NET
# runtime or SDK needed to run it) into artifacts/publish/RID, or into the folder given as $1.
# Beside it: ONNX Runtime's and SkiaSharp's native libraries (shared libraries, loaded at run
# time) and default/ (the embedded model and data that `train` with no model fine-tunes).
# Further arguments go to dotnet publish (e.g. -p:OnnxKfacGpu=true for ONNX Runtime's CUDA build).
# NativeAOT links with clang and zlib: installed here with apt-get when missing (as root).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
rid="$(dotnet --info | awk '/^ *RID:/ {print $2; exit}')"
out="${1:-$root/artifacts/publish/$rid}"
[ $# -gt 0 ] && shift
if ! command -v clang >/dev/null || [ ! -e /usr/include/zlib.h ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing clang and zlib1g-dev (the NativeAOT linker and zlib)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang zlib1g-dev; } >/dev/null
  else
    echo "error: NativeAOT needs clang and zlib's headers (apt-get install clang zlib1g-dev)" >&2
    exit 2
  fi
fi
rm -rf "$out"
# Built under artifacts/publish-build (bin, obj per project), apart from the ordinary builds.
# The AOT compiler's trimming and AOT warnings are errors (TreatWarningsAsErrors in Directory.Build.props).
dotnet publish "$root/tools/OnnxKfac.Cli/OnnxKfac.Cli.csproj" -c Release -r "$rid" -p:PublishAot=true -o "$out" \
  --nologo -v q -clp:ErrorsOnly -p:UseArtifactsOutput=true -p:ArtifactsPath="$root/artifacts/publish-build" "$@"
# Only what runs here: the executable's separate symbols and other platforms' copies go.
rm -f "$out"/*.dbg "$out"/*.pdb "$out"/*.dll
echo "$out/onnx-kfac ($(du -m "$out/onnx-kfac" | cut -f1) MB; the folder $(du -sm "$out" | cut -f1) MB)"
