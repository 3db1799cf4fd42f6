# prometheus-streams
GO        ?= go
# The package's version (systemd/package.sh version: git describe as dpkg and rpm order
# it), so that --version, build_info and the package name one version alike.
ifndef VERSION
VERSION   := $(shell systemd/package.sh version 2>/dev/null || echo 0.0.0~dev)
endif
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
PKG       := github.com/prometheus-streams/prometheus-streams
LDFLAGS   := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)
BINARIES  := scrape-once drain
BENCHTIME ?= 1s

.PHONY: all build test deps tools dashboards screenshot lint vet fmt bench bench-scale fuzz demo deb rpm clean compliance

all: build

build: $(addprefix bin/,$(BINARIES))

bin/%: FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

# The whole suite, race detector on; fuzz targets run their seed corpus. First the Debian
# packages the tests use: installed when run as root with apt-get, else make stops here,
# before building anything, with the command that installs them (tests/deps.sh).
test: deps
	@$(MAKE) --no-print-directory lint tools
	$(GO) test -race -count=1 -timeout 10m ./...

deps:
	@tests/deps.sh

# The tools the tests run that Debian does not package: nfpm, and Prometheus 3 (internal/testkit/promtest's
# remote-write 2.0 receiver). Built once per machine into ~/.cache/prometheus-streams/ (see
# systemd/tools.sh; Prometheus takes about 10 min the first time), then only looked up.
tools:
	@systemd/tools.sh nfpm >/dev/null
	@systemd/tools.sh prometheus >/dev/null

lint: vet fmt

# Prometheus's remote-write sender compliance suite, against the project (a drain with an
# embedded stream, scrape-once every second) and Prometheus $(COMPLIANCE_PROMETHEUS) from
# the tools cache, in the same sitting: both counts side by side, then each one's failed
# cases (tests/compliance/run.sh). Not part of make test: it takes minutes.
COMPLIANCE_PROMETHEUS ?= v0.316.0
compliance:
	PROMETHEUS_VERSION=$(COMPLIANCE_PROMETHEUS) GO=$(GO) tests/compliance/run.sh

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Benchmarks: envelope codec, compression choice, validation, a whole scrape-once run, and
# the drain into a real Push Gateway beside the gateway's own ingest rate. Then the edge's
# rows (bench/edge, about a minute): the real scrape-once binary over 100 loopback targets
# against a bare fetch of them and a Prometheus agent scraping them, and the bytes it
# stores; flags in EDGE_FLAGS, e.g. EDGE_FLAGS='-out bench/results/edge.md'.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./wire/envelope/ ./edge/scrape/ ./wire/exposition/ ./edge/
	$(GO) test -run '^$$' -bench 'DrainIntoGateway' -benchtime 300x ./sink/pushgateway/
	$(GO) test -run '^$$' -bench 'DrainMemory' -benchtime 1x ./sink/pushgateway/
	$(GO) test -run '^$$' -bench . -benchtime 3x ./sink/endpoint/
	$(GO) test -run '^$$' -bench 'Transport' -benchtime 3x ./drain/
	$(GO) test -run '^$$' -bench 'OtherShard' -benchtime 20000x ./drain/
	$(GO) test -run '^$$' -bench 'ConsistencyCheck' -benchtime 1x ./sink/pushgateway/
	GO=$(GO) $(GO) run ./bench/edge $(EDGE_FLAGS)

# Load harness: how many targets per 60 s interval the drain sustains, per sink, and how
# fast it catches up after a remote-write receiver's outage, on this machine, as a
# markdown report (see bench/scale). Pass flags in SCALE_FLAGS, e.g. SCALE_FLAGS='-quick'
# (a trial of minutes), SCALE_FLAGS='-out report.md -max-duration 55m', or
# SCALE_FLAGS='-catchup-only' (the catch-up alone, about 17 minutes).
bench-scale:
	$(GO) run ./bench/scale $(SCALE_FLAGS)

# Fuzz the envelope decoder and the edge's validation for a while (make test runs only
# the seed corpus).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./wire/envelope/
	$(GO) test -run '^$$' -fuzz FuzzProcess -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./edge/scrape/

# The Grafana dashboards in config/grafana/, generated from tools/dashboards (a test checks
# that the committed JSON is what the code generates).
dashboards:
	$(GO) run ./tools/dashboards -out config/grafana

# The README's picture of the drain's /targets page, docs/targets.png: make demo's chain
# with a failing target, shot by headless Chromium.
screenshot:
	tests/demo/screenshot.sh

# The whole chain on one machine, then stop: see README.
demo:
	tests/demo/run.sh

# Debian and RPM packages in dist/: binaries from make build, systemd units, the example
# config (never overwritten on upgrade), user prometheus-streams. nfpm is built once per
# machine from the Go module proxy (systemd/tools.sh).
deb rpm:
	systemd/package.sh $@

clean:
	rm -rf bin dist
