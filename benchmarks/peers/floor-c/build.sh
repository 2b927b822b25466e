#!/usr/bin/env bash
# Build the floor-c peer (gcc, no dependencies beyond libc and libm).
# Usage: benchmarks/peers/floor-c/build.sh [OUTPUT]   (default: next to floor.c)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/floor-c}"
cc="${CC:-gcc}"
command -v "$cc" >/dev/null || { echo "$cc not found: apt-get install gcc" >&2; exit 1; }
"$cc" -O2 -Wall -Wextra -o "$out" "$here/floor.c" -lm
echo "$out"
