# apiguard — build, generate, test, benchmark, demo.
# Everything here runs as root on Linux (BPF, network namespaces); `make build`
# and `go test` need no clang: the bpf2go outputs are committed.

GO      ?= go
CLANG   ?= clang-19
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
# the commit's date, not the clock's: the same commit builds the same binary
DATE    ?= $(shell git log -1 --format=%cI 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
BIN     := bin/apiguard

# make install: where things go (DESTDIR stages them, as packagers do).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
SHAREDIR   ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
STATEDIR   ?= /var/lib/apiguard
# systemd reads units from /usr/local/lib/systemd/system too; a package's go to /lib
UNITDIR    ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
# nfpm builds the .deb; pinned here so every machine builds the same package
NFPM_VERSION := v2.48.0
# helm renders and lints the chart in deploy/helm (go test ./deploy/); built
# from the Go module proxy into bin/ by make deps (a few minutes, once)
HELM_VERSION := v4.3.2
# a Debian version from git describe: v1.2.3 -> 1.2.3, v1.2.3-4-gabc -> 1.2.3+4+gabc
# (after 1.2.3), no tag -> 0.0.0+gitCOMMIT
DEB_VERSION  ?= $(shell echo '$(VERSION)' | sed -E '/^v?[0-9]+[.]/!s/^/0.0.0+git/; s/^v//; s/-/+/g')
# packages whose bpf2go outputs are committed
GEN_PKGS := ./loader ./test/bench/trafgen ./test/bench/guardbench
GEN_DIRS := loader/ test/bench/trafgen/ test/bench/guardbench/
# Debian packages the tests and the demo use; `make deps` installs the missing ones.
# prometheus brings promtool: metrics and alert rules are checked with it.
# nginx writes the access log the API-signal end-to-end test follows; curl
# sends a report as docs/control-api.md shows. strace and systemd-analyze
# (systemd) check the systemd unit's SystemCallFilter against what the daemon
# calls; setpriv and prlimit (util-linux, always there) give it the unit's
# privileges.
DEB_PKGS := iproute2 ethtool nftables prometheus nginx curl strace systemd
DEB_TOOLS := ip ethtool nft promtool nginx curl strace systemd-analyze

.PHONY: all build install uninstall deb generate check-generate test fuzz bench bench-check bench-events bench-live bench-apply bench-crowdsec bench-apisignals bench-generator bench-banbook bench-synflood lint deps demo clean

all: build

# Static, without cgo: the daemon drops the capabilities it needs only to start
# on every thread at once, which Go allows only without cgo (userspace/privs).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/apiguard

# The binary, the systemd unit (pointing at BINDIR), /etc/apiguard/policy.yaml
# and /etc/default/apiguard (never overwritten: they are the operator's), the
# state directory, man pages generated from the commands, shell completions.
# Then: systemctl daemon-reload && systemctl start apiguard (deploy/README.md).
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/apiguard
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/apiguard|$(BINDIR)/apiguard|g' deploy/systemd/apiguard.service >$(DESTDIR)$(UNITDIR)/apiguard.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/apiguard.service
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/apiguard $(DESTDIR)$(SYSCONFDIR)/default
	test -e $(DESTDIR)$(SYSCONFDIR)/apiguard/policy.yaml || install -m 0644 policies/default.yaml $(DESTDIR)$(SYSCONFDIR)/apiguard/policy.yaml
	test -e $(DESTDIR)$(SYSCONFDIR)/default/apiguard || install -m 0600 deploy/systemd/apiguard.default $(DESTDIR)$(SYSCONFDIR)/default/apiguard
	install -d -m 0700 $(DESTDIR)$(STATEDIR)
	install -d -m 0755 $(DESTDIR)$(MANDIR)/man1
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null) $(BIN) man $(DESTDIR)$(MANDIR)/man1
	install -d -m 0755 $(DESTDIR)$(SHAREDIR)/bash-completion/completions $(DESTDIR)$(SHAREDIR)/zsh/vendor-completions $(DESTDIR)$(SHAREDIR)/fish/vendor_completions.d
	$(BIN) completion bash >$(DESTDIR)$(SHAREDIR)/bash-completion/completions/apiguard
	$(BIN) completion zsh >$(DESTDIR)$(SHAREDIR)/zsh/vendor-completions/_apiguard
	$(BIN) completion fish >$(DESTDIR)$(SHAREDIR)/fish/vendor_completions.d/apiguard.fish
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# Removes what install put in place but the operator's configuration, the
# state and the pinned datapath (`apiguard detach` removes that, before this).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/apiguard $(DESTDIR)$(UNITDIR)/apiguard.service
	rm -f $(DESTDIR)$(MANDIR)/man1/apiguard.1 $(DESTDIR)$(MANDIR)/man1/apiguard-*.1
	rm -f $(DESTDIR)$(SHAREDIR)/bash-completion/completions/apiguard $(DESTDIR)$(SHAREDIR)/zsh/vendor-completions/_apiguard $(DESTDIR)$(SHAREDIR)/fish/vendor_completions.d/apiguard.fish
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# A Debian package of what `make install` puts under /usr, built by nfpm at a
# pinned version (deploy/deb/nfpm.yaml): bin/apiguard_VERSION_amd64.deb.
deb:
	rm -rf bin/deb-root
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/bin/deb-root PREFIX=/usr
	gzip -9n bin/deb-root/usr/share/man/man1/*.1
	GOBIN=$(CURDIR)/bin $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	DEB_VERSION='$(DEB_VERSION)' bin/nfpm package --config deploy/deb/nfpm.yaml --packager deb --target bin/

# Rebuild the BPF object and its Go bindings with the pinned compiler.
generate:
	@command -v $(CLANG) >/dev/null || { echo "make generate needs $(CLANG) (apt-get install clang-19 llvm-19 libbpf-dev)"; exit 1; }
	$(GO) generate $(GEN_PKGS)

# Fails when the committed bpf2go outputs differ from a fresh generation.
check-generate: generate
	@git diff --exit-code --stat -- $(GEN_DIRS) || { echo "bpf2go outputs are stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- $(GEN_DIRS))" || { git status --porcelain -- $(GEN_DIRS); echo "untracked bpf2go outputs"; exit 1; }

deps:
	@[ -x bin/helm ] || command -v helm >/dev/null || { echo "building helm $(HELM_VERSION) into bin/"; GOBIN=$(CURDIR)/bin $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION); }
	@missing=""; for t in $(DEB_TOOLS); do command -v $$t >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing tools ($(DEB_TOOLS)); run as root or install $(DEB_PKGS)"; exit 1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PKGS) >/dev/null; \
	fi
	@if ! command -v crowdsec >/dev/null || ! command -v cscli >/dev/null; then \
		if [ "$$(id -u)" != 0 ]; then echo "crowdsec is missing (its tests skip; under CI=true they fail): run make deps as root"; exit 0; fi; \
		mkdir -p /etc/crowdsec; \
		[ -e /etc/crowdsec/online_api_credentials.yaml ] || echo "# no central API: offline machine" >/etc/crowdsec/online_api_credentials.yaml; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq crowdsec >/dev/null || dpkg --configure -a; \
	fi

# The namespace lab: a guarded API server, two legitimate clients and six
# attacks, each without (monitor mode) and with apiguard; about a minute, as
# root. It removes its namespaces, pins and processes, also on Ctrl-C.
demo: deps build
	$(GO) build -o bin/apiguard-demo ./test/lab/cmd/demo
	./bin/apiguard-demo --apiguard $(BIN) --policy policies/default.yaml

# Packages run one at a time: the kernel tests measure rates and share the CPUs.
# Then every benchmark runs once (bench-check), so none can break unnoticed.
test: deps
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory bench-check

# Every benchmark of the repository once, with the smallest sensible work:
# each go benchmark at one iteration, the live and apply benchmarks with one
# short run. It checks that they run and finish, not what they measure.
bench-check:
	$(GO) test -p 1 -count=1 -timeout 30m -run '^$$' -bench . -benchtime 1x ./...
	$(GO) run ./test/bench/live --runs 1 --duration 500ms >/dev/null
	$(GO) run ./test/bench/apply --entries 2000 --runs 1 >/dev/null

# The ban book: adding one ban to a book of 1k, 20k and 100k bans, the old
# bans.json rewrite against the journal (with and without an fdatasync), and
# a compaction of 100k bans under a writer.
bench-banbook:
	$(GO) test -run '^$$' -bench 'BanBook$$' -benchtime 20x -count 1 ./userspace/daemon/
	$(GO) test -run '^$$' -bench 'BanBookCompact100k' -benchtime 3x -count 1 ./userspace/daemon/

# The differential fuzzer (test/difffuzz: the kernel's verdicts against a model
# written from the docs) for as long as asked, as root: make fuzz FUZZTIME=30m.
# `make test` runs it over 20,000 frames. A failure prints its seed; replay with
# go test ./test/difffuzz/ -difffuzz.seed SEED
FUZZTIME ?= 5m
fuzz:
	$(GO) test -run '^TestDifferential$$' -count 1 -timeout 0 -v ./test/difffuzz/ -difffuzz.duration $(FUZZTIME)

# A startup pull of 100k CrowdSec decisions (loopback LAPI) into the kernel's bans;
# a real LAPI's decision to the first dropped packet.
bench-crowdsec:
	$(GO) test -run '^$$' -bench 'CrowdSecStartup100k' -benchtime 5x -count 1 ./userspace/daemon/
	$(GO) test -run '^$$' -bench 'RealLAPIAddToDrop' -benchtime 20x -count 1 ./userspace/crowdsec/

# Per-packet cost in isolation, against a trivial XDP program in the same run.
bench:
	$(GO) test -run '^$$' -bench 'Datapath|Calibration|Conntrack|Proven|SourceProof|Fragments|SynProxy' -benchtime 10000000x -count 1 ./loader/
	$(GO) test -run '^$$' -bench 'Apply100k' -benchtime 5x -count 1 ./loader/
	$(GO) test -run '^$$' -bench 'AliasBomb' -benchtime 20x -count 1 ./userspace/policy/
	$(GO) test -run '^$$' -bench 'Scrape100k' -benchtime 20x -count 1 ./userspace/metrics/

# The SYN proxy in the lab: fresh clients' first connections through the
# largest spoofed SYN flood the generator makes, synProxy off and auto, IPv4
# and IPv6, beside a baseline without a flood (docs/synproxy.md, "Lab"). As root.
bench-synflood:
	$(GO) test -run '^$$' -bench 'FreshClientsUnderSYNFlood' -benchtime 1x -count 1 -v ./loader/

# Applying 100k deny CIDRs to a running daemon: time and peak RSS.
bench-apply:
	$(GO) run ./test/bench/apply

# The event pipeline (ring buffer -> reader -> detector) and the daemon's CPU
# under random-source floods (docs/benchmarks.md).
bench-events:
	$(GO) test -run '^$$' -bench 'DecodeDetect' -benchtime 3000000x -count 1 ./userspace/detect/
	$(GO) test -run '^$$' -bench 'RingDrain|RingToDetector' -benchtime 2000000x -count 1 ./userspace/events/
	$(GO) test -run '^$$' -bench 'DaemonUnderRandomSourceFlood' -benchtime 10x -count 1 ./test/e2e/

# API-layer signals: access log lines parsed per second on one core, the whole
# pipeline with the probe detectors off and on, the matcher on hostile input,
# and the time from an offending request (through nginx) to the first dropped packet.
bench-apisignals: deps
	$(GO) test -run '^$$' -bench 'Combined|JSONLines|ParseTime|SourcePipeline' -benchtime 2000000x -cpu 1 -count 1 ./userspace/applog/
	$(GO) test -run '^$$' -bench 'Inspect|Hostile' -benchtime 3000x -cpu 1 -count 1 ./userspace/attack/
	$(GO) test -run '^$$' -bench 'OffendingRequestToDrop' -benchtime 20x -count 1 ./test/e2e/

# The live path against nftables and XDP_DROP (about 4 minutes; root, 2+ CPUs),
# with the fastest generator the kernel allows (GENERATOR=af-packet for the
# skb path).
GENERATOR ?= best
LIVE_OUT := $(if $(filter best,$(GENERATOR)),docs/bench-live-latest.md,docs/bench-live-$(GENERATOR).md)
bench-live: deps
	$(GO) run ./test/bench/live --runs 3 --duration 2s --generator $(GENERATOR) --out $(LIVE_OUT)

# Each generator's rate from one core, counted at a receiver on the other CPU.
bench-generator:
	$(GO) test -run '^$$' -bench 'Generator' -benchtime 3x -count 1 ./test/bench/trafgen/

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
