#!/usr/bin/env bash
# Build the prometheus-streams .deb or .rpm (make deb / make rpm).
#
#   systemd/package.sh deb|rpm      make build, then dist/prometheus-streams_<version>_<arch>.deb|.rpm
#   systemd/package.sh version      print the package version for this checkout
#
# The binaries come from `make build` (bin/), stamped with the same version and commit the
# package carries. nfpm is built once per machine from the Go module proxy (systemd/tools.sh).
#
# Environment:
#   VERSION     a git describe string to make the version of
#               (default: git describe --tags --always --dirty)
#   COMMIT      as the Makefile (default: git rev-parse --short HEAD)
#   GOARCH      architecture to build and package (default: go env GOARCH)
#   MAINTAINER  the package's maintainer, "Name <email>"
#   DIST        output directory (default: dist)
set -euo pipefail
cd "$(dirname "$0")/.."

# pkg_version RAW: a git describe string as a version dpkg and rpm both accept and order
# as intended (both treat ~ as "before" and accept + and . ; rpm refuses -):
#   v1.2.3                      1.2.3
#   v1.2.3-rc.1                 1.2.3~rc.1                (a pre-release sorts before 1.2.3)
#   v1.2.3-4-gabc1234           1.2.3+git4.gabc1234       (after 1.2.3, before 1.2.4)
#   abc1234 (no tag yet)        0.0.0~git<commits>.gabc1234
#   ...-dirty                   ....dirty (or +dirty on a bare tag)
pkg_version() {
  local raw=$1 dirty='' tag='' n='' hash='' v
  if [[ $raw == *-dirty ]]; then
    dirty=1
    raw=${raw%-dirty}
  fi
  if [[ $raw =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
    tag=${BASH_REMATCH[1]} n=${BASH_REMATCH[2]} hash=${BASH_REMATCH[3]}
  elif [[ $raw =~ ^[0-9a-f]{4,40}$ ]]; then
    hash=$raw
    n=$(git rev-list --count HEAD 2>/dev/null || true)
  else
    tag=$raw
  fi
  tag=${tag#v}
  if [[ -n $tag && ! $tag =~ ^[0-9] ]]; then
    echo "package.sh: tag '$tag' does not start with a digit (want v1.2.3)" >&2
    return 1
  fi
  if [[ -n $tag ]]; then
    v=${tag//-/\~} # semver pre-release: 1.2.3-rc.1 -> 1.2.3~rc.1
    if [[ -n $hash ]]; then
      v+="+git$n.g$hash"
    fi
  else
    v="0.0.0~git${n}${n:+.}g$hash"
  fi
  if [[ -n $dirty ]]; then
    if [[ $v == *+* || $v == *~* ]]; then v+=".dirty"; else v+="+dirty"; fi
  fi
  if [[ ! $v =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
    echo "package.sh: cannot make a package version of '$1' (got '$v')" >&2
    return 1
  fi
  echo "$v"
}

raw_version() {
  if [[ -n ${VERSION:-} ]]; then
    echo "$VERSION"
  else
    git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev
  fi
}

format=${1:-}
case "$format" in
version)
  if [[ $# -gt 1 ]]; then pkg_version "$2"; else pkg_version "$(raw_version)"; fi
  exit 0
  ;;
deb | rpm) ;;
*)
  echo "usage: $0 deb|rpm|version [GIT_DESCRIBE]" >&2
  exit 64
  ;;
esac

raw=$(raw_version)
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
version=$(pkg_version "$raw")
arch=${GOARCH:-$(go env GOARCH)}
dist=${DIST:-dist}

# Every file the package ships must exist: nfpm's own error does not say which is missing
# in terms of this repository.
missing=()
for f in systemd/nfpm.yaml systemd/postinstall.sh systemd/scrape-once.service \
  systemd/scrape-once.timer systemd/scrape-once@.service systemd/scrape-once@.timer \
  systemd/drain.service systemd/scrape-once.cron config/prometheus-streams.yaml README.md \
  config/prometheus/prometheus.yml config/prometheus/prometheus-streams.rules.yml \
  config/grafana/prometheus-streams-drain.json config/grafana/prometheus-streams-fleet.json; do
  [[ -f $f ]] || missing+=("$f")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "package.sh: missing ${missing[*]}" >&2
  exit 1
fi

nfpm=$(systemd/tools.sh nfpm)

# Static binaries for the target architecture, stamped with the package's version: one
# version string in dpkg -l, rpm -q, --version and build_info.
CGO_ENABLED=0 GOARCH=$arch make --no-print-directory build VERSION="$version" COMMIT="$commit" >&2

# nfpm's architecture: GOARCH, with GOARM for 32-bit arm. nfpm names it per format
# (amd64 is x86_64 in an rpm); so does the file name.
nfpm_arch=$arch
[[ $arch != arm ]] || nfpm_arch=arm${GOARM:-7}
case "$format/$nfpm_arch" in
rpm/amd64) file_arch=x86_64 ;;
rpm/arm64) file_arch=aarch64 ;;
rpm/386 | deb/386) file_arch=i386 ;;
rpm/arm7) file_arch=armv7hl ;;
deb/arm7 | deb/arm6) file_arch=armhf ;;
*) file_arch=$nfpm_arch ;;
esac
mkdir -p "$dist"
out="$dist/prometheus-streams_${version}_${file_arch}.$format"
rm -f "$out"
VERSION="$version" ARCH="$nfpm_arch" \
  MAINTAINER="${MAINTAINER:-prometheus-streams developers}" \
  "$nfpm" package --config systemd/nfpm.yaml --packager "$format" --target "$out" >&2
echo "$out"
