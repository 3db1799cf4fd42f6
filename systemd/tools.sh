#!/usr/bin/env bash
# Build tools the packaging and the tests need, from the Go module proxy, once per machine.
#
#   systemd/tools.sh nfpm        print the path of nfpm, building it first if missing
#   systemd/tools.sh prometheus  print the path of Prometheus 3 (remote-write 2.0 receiver
#                                for internal/testkit/promtest), building it first if missing
#   systemd/tools.sh --check T   print the path of tool T if it is built, else exit 69
#                                without building (for tests: they must not build for 10 min)
#
# Each tool is built with `go install` into a version-keyed cache outside the clone
# (${XDG_CACHE_HOME:-$HOME/.cache}/prometheus-streams/<tool>-<version>/), so every clone,
# CI run and test on the machine shares one build. Only the path goes to stdout; go's
# output goes to stderr.
set -euo pipefail

NFPM_VERSION=v2.45.2        # pinned: newer releases do not install with this machine's Go
PROMETHEUS_VERSION=v0.316.0 # Prometheus 3.x's Go module version; the one in go.mod

check=false
if [ "${1:-}" = --check ]; then
  check=true
  shift
fi

cache="${XDG_CACHE_HOME:-${HOME:?set HOME or XDG_CACHE_HOME}/.cache}/prometheus-streams"

# build NAME VERSION PACKAGE: print the path of $cache/NAME-VERSION/NAME, building it
# with `go install PACKAGE@VERSION` first if missing.
build() {
  local name=$1 version=$2 pkg=$3
  local dir="$cache/$name-$version"
  local bin="$dir/$name"
  if [ ! -x "$bin" ] && $check; then
    echo "tools.sh: $name $version is not built: run systemd/tools.sh $name" >&2
    exit 69
  fi
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null || { echo "tools.sh: go not found in PATH" >&2; exit 1; }
    mkdir -p "$dir"
    # Build into a temp dir beside the cache and rename: a build killed half-way never
    # leaves a broken binary at the path, and two concurrent builds do not collide.
    tmp=$(mktemp -d "$dir/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "tools.sh: building $name $version into $dir (once per machine)" >&2
    local start
    start=$(date +%s)
    # GOFLAGS='': a caller's -mod=... or -buildvcs settings must not affect the tool build.
    GOBIN="$tmp" GOFLAGS='' go install "$pkg@$version" >&2
    mv -f "$tmp/$name" "$bin"
    echo "tools.sh: $name built in $(($(date +%s) - start))s" >&2
  fi
  echo "$bin"
}

case "${1:-}" in
nfpm)
  build nfpm "$NFPM_VERSION" github.com/goreleaser/nfpm/v2/cmd/nfpm
  ;;
prometheus)
  # About 10 minutes on a 2-core machine the first time.
  build prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/prometheus
  ;;
*)
  echo "usage: $0 [--check] nfpm|prometheus" >&2
  exit 64
  ;;
esac
