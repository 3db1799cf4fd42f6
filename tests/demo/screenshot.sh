#!/usr/bin/env bash
# The README's picture of the drain's /targets page (docs/targets.png), from a real run:
# make demo's chain, plus a target nothing listens on so that a failed scrape shows, shot
# by headless Chromium. Loopback only; the ports are those of config/quickstart.yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-docs/targets.png}

chromium=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$chromium" ]; then
  echo "screenshot: no chromium in PATH (apt-get install chromium)" >&2
  exit 1
fi

make -s build
go build -o bin/demo-target ./tests/demo/target

tmp="$(mktemp -d)"
pids=()
cleanup() {
  status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$status" -ne 0 ]; then echo "screenshot failed; the drain's log:" >&2; cat "$tmp/drain.log" >&2; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "screenshot: $1 did not come up" >&2
  return 1
}

config="$tmp/demo.yaml"
cat config/quickstart.yaml - >"$config" <<'YAML'
  web:                       # nothing listens here: a failed scrape, as /targets shows it
    targets:
      - {name: web1, url: 'http://127.0.0.1:19101/metrics'}
YAML

bin/demo-target -listen 127.0.0.1:19100 -dir tests/testdata & pids+=($!)
bin/drain -c "$config" 2>"$tmp/drain.log" & pids+=($!)
wait_http http://127.0.0.1:19898/healthz
bin/scrape-once -c "$config" 2>/dev/null
for _ in $(seq 100); do
  n=$(curl -fsS 'http://127.0.0.1:19898/targets?format=json' | grep -o '"instance"' | wc -l)
  [ "$n" -ge 4 ] && break
  sleep 0.1
done

mkdir -p "$(dirname "$OUT")"
# --no-sandbox: Chromium refuses to run as root with its sandbox.
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,240 \
  --user-data-dir="$tmp/chromium" --screenshot="$(realpath -m "$OUT")" \
  http://127.0.0.1:19898/targets 2>"$tmp/chromium.log" || { cat "$tmp/chromium.log" >&2; exit 1; }
echo "$OUT"
