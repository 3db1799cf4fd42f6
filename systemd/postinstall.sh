#!/bin/sh
# Package postinstall script (deb postinst, rpm %post), run as root after the files are
# unpacked, on install and on upgrade. Every step is idempotent.
#
# deb calls it with "configure <previous version>" (no previous version on a first
# install; abort-* on a failed upgrade); rpm with the number of installed instances (1 on a
# first install, 2 on an upgrade).
set -e

user=prometheus-streams
group=prometheus-streams
home=/var/lib/prometheus-streams
conf=/etc/prometheus-streams/prometheus-streams.yaml

first_install=false
case "${1:-}" in
configure) [ -n "${2:-}" ] || first_install=true ;;
1) first_install=true ;;
esac

# The system user both binaries run as (systemd units and the cron example use it).
if ! getent group "$group" >/dev/null 2>&1; then
  groupadd --system "$group"
fi
if ! getent passwd "$user" >/dev/null 2>&1; then
  shell=/usr/sbin/nologin
  [ -x "$shell" ] || shell=/sbin/nologin
  [ -x "$shell" ] || shell=/bin/false
  useradd --system --no-create-home --home-dir "$home" --shell "$shell" \
    --gid "$group" --comment "prometheus-streams" "$user"
fi

# State: the drain's embedded stream store (embedded_stream.store_dir). systemd's
# StateDirectory= would create it too; cron and hand-started runs need it to exist.
install -d -m 0750 -o "$user" -g "$group" "$home"

# The example config is readable by the service user, not by everyone: it may be edited
# to hold credentials. Only on a first install, so an admin's own choice is kept.
if [ "$first_install" = true ] && [ -f "$conf" ]; then
  chgrp "$group" "$conf"
  chmod 0640 "$conf"
fi

# Make systemd see new or changed units; nothing is enabled or started: the config must
# be edited first (see /usr/share/doc/prometheus-streams/README.md).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || true
fi

exit 0
