#!/usr/bin/env bash
# The whole chain on one machine: a NATS Streaming server, a Push Gateway, the drain, and
# scrape-once scraping two local targets (the gateway's and the drain's own /metrics).
# Prints the federated series Prometheus would see, then stops everything it started.
# Loopback only. Needs: Go, and Debian's prometheus-pushgateway.
set -euo pipefail
cd "$(dirname "$0")/../.."

NSS_VERSION=v0.25.6
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/prometheus-streams/nats-streaming-server-$NSS_VERSION"
NSS="$CACHE/nats-streaming-server"
PGW="${PUSHGATEWAY_BIN:-/usr/bin/prometheus-pushgateway}"
NATS_PORT="${DEMO_NATS_PORT:-14222}"
PGW_PORT="${DEMO_PGW_PORT:-19091}"
MON_PORT="${DEMO_MONITOR_PORT:-19898}"

if [ ! -x "$NSS" ]; then
  echo "demo: building nats-streaming-server $NSS_VERSION once into $CACHE"
  mkdir -p "$CACHE"
  GOBIN="$CACHE" go install "github.com/nats-io/nats-streaming-server@$NSS_VERSION"
fi
[ -x "$PGW" ] || { echo "demo: $PGW missing: apt-get install prometheus-pushgateway" >&2; exit 1; }
make -s build

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: $1 did not come up" >&2; return 1
}

"$NSS" -a 127.0.0.1 -p "$NATS_PORT" -cid demo -m 0 >"$work/nss.log" 2>&1 & pids+=($!)
"$PGW" --web.listen-address="127.0.0.1:$PGW_PORT" --persistence.file= >"$work/pgw.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$PGW_PORT/-/ready"

cat >"$work/demo.yaml" <<YAML
verbose: true
identity: demo-edge
scrape_interval: 10s
max_age: 60s
poller_stream:   {cluster_id: demo, urls: 'nats://127.0.0.1:$NATS_PORT', topic: prometheus}
receiver_stream: {cluster_id: demo, urls: 'nats://127.0.0.1:$NATS_PORT', topic: prometheus, client_id: demo_drain}
push_gateway:    {url: 'http://127.0.0.1:$PGW_PORT'}
monitor:         {listen: '127.0.0.1:$MON_PORT'}
jobs:
  pushgateway:
    targets: [{name: pushgateway, url: 'http://127.0.0.1:$PGW_PORT/metrics'}]
  drain:
    labels: {role: central}
    targets: [{name: drain, url: 'http://127.0.0.1:$MON_PORT/metrics'}]
YAML

bin/drain -c "$work/demo.yaml" 2>"$work/drain.log" & pids+=($!)
wait_http "http://127.0.0.1:$MON_PORT/healthz"

bin/scrape-once -c "$work/demo.yaml"

for _ in $(seq 100); do
  n=$(curl -fsS "http://127.0.0.1:$PGW_PORT/metrics" | grep -c '^streams_scrape_up{' || true)
  [ "$n" -ge 2 ] && break
  sleep 0.1
done
echo
echo "== what Prometheus sees on the Push Gateway (scrape health of each target) =="
curl -fsS "http://127.0.0.1:$PGW_PORT/metrics" | grep -E '^streams_scrape_'
echo
echo "== series per federated target =="
curl -fsS "http://127.0.0.1:$PGW_PORT/metrics" | grep -v '^#' | grep -oE 'instance="[^"]*",job="[^"]*"' | sort | uniq -c
echo
echo "== the drain's own view =="
curl -fsS "http://127.0.0.1:$MON_PORT/metrics" | grep -E '^prometheus_streams_drain_(messages_received|scrapes_delivered)_total'
