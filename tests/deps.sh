#!/usr/bin/env bash
# The Debian packages `make test` needs besides Go: installed when this runs as root with
# apt-get, else named, with the one command that installs them, before anything is built.
#
#   prometheus-pushgateway  the Push Gateway sink is tested against the real gateway
#   prometheus              promtool checks config/prometheus/; internal/testkit/promtest runs Prometheus 2
#   chromium                the /targets page is tested in headless Chromium
#   rpm                     the .rpm is inspected with rpm and rpm2archive
#   systemd                 systemd-analyze verifies the units in systemd/
#   util-linux              flock, for the cron example's test
#   curl                    make demo
# No service of theirs need run: the tests start what they use on loopback.
set -euo pipefail

need=()
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
{ command -v promtool && command -v prometheus; } >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
{ command -v rpm && command -v rpm2archive; } >/dev/null || need+=(rpm)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v flock >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
[[ ${#need[@]} -eq 0 ]] && exit 0

install="apt-get update && apt-get install -y --no-install-recommends ${need[*]}"
if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "deps.sh: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  exit 0
fi
if command -v apt-get >/dev/null; then
  echo "make test needs Debian packages that are missing; install them with:" >&2
  echo "  sudo sh -c '$install'" >&2
else
  echo "make test needs what these Debian packages provide, missing here: ${need[*]}" >&2
  echo "  (on Debian or Ubuntu: sudo sh -c '$install')" >&2
fi
exit 1
