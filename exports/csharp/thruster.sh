#!/bin/sh
# Compile the Thruster console game with Mono's mcs (once per version of its sources, into a cache outside
# the repository) and run it with mono; every argument goes to the game (--port=N --instance=I --instances=N
# --agents=K).
#   sh exports/csharp/thruster.sh --port=5555
set -e
here=$(cd "$(dirname "$0")" && pwd)
sources="$here/AgentKitBridge.cs $here/Thruster/Thruster.cs"
version=$(cat $sources | sha256sum | cut -c1-16)
out="${AGENTKIT_CSHARP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentkit/csharp}/$version"
if [ ! -f "$out/thruster.exe" ]; then
  command -v mcs >/dev/null || { echo "thruster.sh: mcs not found: install Mono (make engines, or apt-get install mono-mcs mono-runtime)" >&2; exit 2; }
  mkdir -p "$out"
  tmp="$out/.build-$$.exe"
  mcs -nologo -out:"$tmp" $sources
  mv "$tmp" "$out/thruster.exe"   # atomic: instances started together never run half a file
fi
exec mono "$out/thruster.exe" "$@"
