#!/usr/bin/env bash
# Build the seed-go peer offline, in GOPATH mode, against Debian's Gin
# (apt-get install golang-go golang-github-gin-gonic-gin-dev). No module downloads.
# Usage: benchmarks/peers/seed-go/build.sh [OUTPUT]   (default: next to main.go)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/seed-go}"
command -v go >/dev/null || { echo "go not found: apt-get install golang-go" >&2; exit 1; }
gocode=/usr/share/gocode
[ -d "$gocode/src/github.com/gin-gonic/gin" ] \
    || { echo "gin not found: apt-get install golang-github-gin-gonic-gin-dev" >&2; exit 1; }
gopath="$(mktemp -d)"
trap 'rm -rf "$gopath"' EXIT
cd "$here"
GO111MODULE=off GOPATH="$gopath:$gocode" GOPROXY=off GOFLAGS= \
    go build -trimpath -o "$out" .
echo "$out"
