#!/usr/bin/env bash
# Build tools the packaging needs, from the Go module proxy, once per machine.
#
#   systemd/tools.sh nfpm    print the path of nfpm, building it first if missing
#
# Each tool is built with `go install` into a version-keyed cache outside the clone
# (${XDG_CACHE_HOME:-$HOME/.cache}/prometheus-streams/<tool>-<version>/), so every clone,
# CI run and test on the machine shares one build. Only the path goes to stdout; go's
# output goes to stderr.
set -euo pipefail

NFPM_VERSION=v2.45.2 # pinned: newer releases do not install with this machine's Go

cache="${XDG_CACHE_HOME:-${HOME:?set HOME or XDG_CACHE_HOME}/.cache}/prometheus-streams"

case "${1:-}" in
nfpm)
  dir="$cache/nfpm-$NFPM_VERSION"
  bin="$dir/nfpm"
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null || { echo "tools.sh: go not found in PATH" >&2; exit 1; }
    mkdir -p "$dir"
    # Build into a temp dir beside the cache and rename: a build killed half-way never
    # leaves a broken binary at the path, and two concurrent builds do not collide.
    tmp=$(mktemp -d "$dir/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "tools.sh: building nfpm $NFPM_VERSION into $dir (once per machine)" >&2
    start=$(date +%s)
    # GOFLAGS='': a caller's -mod=... or -buildvcs settings must not affect the tool build.
    GOBIN="$tmp" GOFLAGS='' go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" >&2
    mv -f "$tmp/nfpm" "$bin"
    echo "tools.sh: nfpm built in $(($(date +%s) - start))s" >&2
  fi
  echo "$bin"
  ;;
*)
  echo "usage: $0 nfpm" >&2
  exit 64
  ;;
esac
