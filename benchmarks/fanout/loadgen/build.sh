#!/usr/bin/env bash
# Build the fan-out load generator (standard library only; offline, GOPATH mode).
# Usage: benchmarks/fanout/loadgen/build.sh [OUTPUT]   (default: next to main.go)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/loadgen}"
command -v go >/dev/null || { echo "go not found: apt-get install golang-go" >&2; exit 1; }
gopath="$(mktemp -d)"
trap 'rm -rf "$gopath"' EXIT
cd "$here"
GO111MODULE=off GOPATH="$gopath" GOPROXY=off GOFLAGS= go build -trimpath -o "$out" .
echo "$out"
