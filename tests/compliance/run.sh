#!/bin/sh
# make compliance: Prometheus's remote-write sender compliance suite
# (github.com/prometheus/compliance, folder remotewrite/sender, at a pinned commit) run
# against the project and against Prometheus from the tools cache, in the same sitting;
# prints both counts side by side and the cases each fails. Not part of make test.
#
# The suite is fetched once per machine into the tools cache, as a Go module through
# the module proxy (go mod download). Where the proxy does not serve it, place a copy of
# the folder remotewrite/sender at that commit in $SUITE (the message says how).
set -eu

COMMIT=67b8327a2e93dc28f64d4b21bbce00b362f565d5
MODULE=github.com/prometheus/compliance/remotewrite/sender
CACHE=${PROMETHEUS_STREAMS_TOOLS:-$HOME/.cache/prometheus-streams}
SUITE=$CACHE/compliance-$COMMIT/remotewrite/sender
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
PROMETHEUS_BIN=${PROMETHEUS_BIN:-$CACHE/prometheus-$PROMETHEUS_VERSION/prometheus}
PARALLEL=${COMPLIANCE_PARALLEL:-4}
GO=${GO:-go}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

if [ ! -f "$SUITE/go.mod" ]; then
	echo "compliance: fetching $MODULE@$COMMIT through the Go module proxy" >&2
	if dir=$($GO mod download -json "$MODULE@$COMMIT" 2>/dev/null | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') && [ -n "$dir" ]; then
		mkdir -p "$SUITE"
		cp -R "$dir/." "$SUITE/"
		chmod -R u+w "$SUITE"
	else
		cat >&2 <<MSG
compliance: the Go module proxy does not serve $MODULE@$COMMIT
(GOPROXY=$($GO env GOPROXY)), and GitHub cannot be reached from here. Place the suite
in the tools cache from any copy of the repository, e.g. on a machine that reaches GitHub:
  git clone https://github.com/prometheus/compliance && cd compliance &&
  mkdir -p $CACHE/compliance-$COMMIT &&
  git archive $COMMIT remotewrite/sender | tar -x -C $CACHE/compliance-$COMMIT
MSG
		exit 1
	fi
fi
if [ ! -x "$PROMETHEUS_BIN" ]; then
	echo "compliance: no Prometheus at $PROMETHEUS_BIN (systemd/tools.sh builds it)" >&2
	exit 1
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -R "$SUITE/." "$WORK/"
chmod -R u+w "$WORK"
cp "$ROOT/tests/compliance/target.go" "$WORK/targets/prometheus_streams.go"
cat > "$WORK/register_prometheus_streams_test.go" <<GO
//go:build compliance

package main

import "github.com/prometheus/compliance/remotewrite/sender/targets"

// The project, and Prometheus from the tools cache in place of a download.
func init() {
	registeredTargets["prometheus-streams"] = targets.RunPrometheusStreams
	registeredTargets["prometheus-$PROMETHEUS_VERSION"] = targets.RunCachedPrometheus
}
GO

mkdir -p "$WORK/bin"
(cd "$ROOT" && $GO build -trimpath -o "$WORK/bin/" ./cmd/drain ./cmd/scrape-once)

echo "compliance: running the suite (parallel $PARALLEL); this takes minutes" >&2
set +e
(cd "$WORK" && \
	PROMETHEUS_STREAMS_BIN="$WORK/bin" PROMETHEUS_BIN="$PROMETHEUS_BIN" \
	PROMETHEUS_RW2_COMPLIANCE_SENDERS="prometheus-streams,prometheus-$PROMETHEUS_VERSION" \
	$GO test -tags compliance -count=1 -json -parallel "$PARALLEL" -timeout 60m . > "$WORK/results.json")
set -e
cp "$WORK/results.json" "${COMPLIANCE_RESULTS:-$ROOT/compliance-results.json}"
(cd "$ROOT" && $GO run ./tests/compliance/count "prometheus-streams" "prometheus-$PROMETHEUS_VERSION" < "$WORK/results.json")
