#!/usr/bin/env bash
# The whole chain on one machine with nothing else installed: the drain with its embedded
# NATS Streaming server and its own exposition endpoint, and scrape-once scraping local
# targets (captured exporter expositions, and the drain's own /metrics). Prints the
# federated series a Prometheus would see, then stops everything it started. Loopback
# only; the ports are those of config/quickstart.yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=config/quickstart.yaml

make -s build
go build -o bin/demo-target ./tests/demo/target

log="$(mktemp)"
pids=()
cleanup() {
  status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$status" -ne 0 ]; then echo "demo failed; the drain's log:" >&2; cat "$log" >&2; fi
  rm -f "$log"
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: $1 did not come up" >&2; return 1
}

bin/demo-target -listen 127.0.0.1:19100 -dir tests/testdata & pids+=($!)
bin/drain -c "$CONFIG" 2>"$log" & pids+=($!)
wait_http http://127.0.0.1:19898/healthz

bin/scrape-once -c "$CONFIG"

for _ in $(seq 100); do
  n=$(curl -fsS http://127.0.0.1:19899/metrics | grep -c '^streams_scrape_up{' || true)
  [ "$n" -ge 3 ] && break
  sleep 0.1
done
echo
echo "== scrape health of each target, as Prometheus sees it on http://127.0.0.1:19899/metrics =="
curl -fsS http://127.0.0.1:19899/metrics | grep -E '^streams_scrape_(up|samples)'
echo
echo "== a few federated series =="
curl -fsS http://127.0.0.1:19899/metrics | grep -E '^(node_load1|node_memory_MemTotal_bytes|prometheus_build_info)\{'
echo
echo "== series per target =="
curl -fsS http://127.0.0.1:19899/metrics | grep -v '^#' | grep -oE 'instance="[^"]*"' | sort | uniq -c
