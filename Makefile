# mailnode — make targets. `make demo` and `make test` do their own set-up
# (the `deps` target) on a fresh Debian machine.
SHELL := /bin/bash
GO ?= go
BIN := bin/mailnode
BENCH_BIN := bin/mailnode-bench
export GOFLAGS ?= -mod=mod

DEB_PACKAGES := postfix swaks dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd \
	unbound dns-root-data bind9-utils iproute2 python3-dkim python3-yaml opendkim opendkim-tools redis-server \
	rspamd spamd spamc postgrey ansible ansible-lint ssl-cert openssl procps \
	gcc libc6-dev libssl-dev \
	debhelper fakeroot lintian systemd \
	chromium clamav-daemon dovecot-sieve dovecot-managesieved \
	postfix-mta-sts-resolver python3-authres

.PHONY: all build build-bench deb test-deb deps test test-unit test-race test-e2e test-ansible fuzz bench bench-go bench-render bench-policy \
	bench-milter bench-greylist bench-greylist-scale bench-memory bench-e2e soak demo demo-stop vet fmt clean

all: build

# mailnode links OpenSSL's libcrypto (cgo) for RSA signing. Go's own linker
# lays the binary out so that a daemon touches ~17 MiB of it and the libraries;
# the external linker cgo picks by default, ~27 MiB (same code, more pages of
# the file resident). test/harness and the Ansible test build the same way.
# VERSION, when set (the Debian package sets it), is what --version prints.
VERSION ?=
BUILDFLAGS := -ldflags='-linkmode=internal$(if $(VERSION), -X main.version=$(VERSION))'

build:
	$(GO) build $(BUILDFLAGS) -o $(BIN) ./cmd/mailnode

# The load generators, baselines and peer launchers of `make bench` are a
# program of their own (cmd/mailnode-bench): the shipped binary holds only
# the product. `make test` builds it too, so that it never rots.
build-bench:
	$(GO) build $(BUILDFLAGS) -o $(BENCH_BIN) ./cmd/mailnode-bench

# The Debian package, bin/mailnode_<version>_<arch>.deb, built by
# dpkg-buildpackage from debian/ in a copy of the work tree under bin/deb/
# (dpkg-buildpackage writes next to the source tree, and the tree must
# stay clean). Go comes from PATH; the module and build caches are the
# ones `go env` names, so the build needs no network when they are warm.
DEB_BUILD := bin/deb
deb:
	@rm -rf $(DEB_BUILD) bin/mailnode_*.deb && mkdir -p $(DEB_BUILD)/mailnode
	git ls-files -z -co --exclude-standard | \
	  tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C $(DEB_BUILD)/mailnode
	cd $(DEB_BUILD)/mailnode && PATH="$$(dirname "$$(command -v $(GO))"):$$PATH" \
	  GOCACHE="$$($(GO) env GOCACHE)" GOMODCACHE="$$($(GO) env GOMODCACHE)" \
	  dpkg-buildpackage -b -us -uc
	cp $(DEB_BUILD)/mailnode_*.deb bin/
	@ls bin/mailnode_*.deb

# Builds the package, runs lintian, checks the units with systemd-analyze,
# then installs, runs, removes and purges it on this machine (root).
test-deb: deb
	packaging/test-deb.sh bin/mailnode_*.deb

# deps installs what is missing: Debian packages (as root), the vmail
# system user that owns virtual mailboxes, and the Go modules.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "missing Debian packages; run as root:"; \
	    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$$missing"; exit 1; \
	  fi; \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@if ! id vmail >/dev/null 2>&1; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing system user vmail; run as root: useradd --system --home-dir /var/vmail --shell /usr/sbin/nologin vmail"; exit 1; fi; \
	  useradd --system --home-dir /var/vmail --shell /usr/sbin/nologin vmail; \
	fi
	$(GO) mod download

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

test: deps vet build build-bench test-unit fuzz test-e2e test-ansible test-deb

# Unit tests: every package but the end-to-end ones under test/ (the
# tests, the harness, the e2e benchmark, the demo), which need root and a
# network namespace. The test machinery under test/ (loadgen, procstat, ...)
# has unit tests of its own and runs here.
UNIT_PKGS = $$($(GO) list ./... | grep -v -e '/test$$' -e '/test/harness' -e '/test/e2ebench' -e '/test/cmd/')

test-unit:
	$(GO) test -count=1 $(UNIT_PKGS)

# The unit packages under Go's race detector: policyd and milterd share
# state between a goroutine per connection, the commit thread, the sweeper
# and reloads. Not part of `make test`: the detector runs them several
# times slower (2 minutes on two cores, 5 with nothing built yet).
test-race:
	$(GO) test -race -count=1 -timeout 30m $(UNIT_PKGS)

# End-to-end tests start real Postfix, Dovecot and the daemons inside a
# network namespace they create (nothing leaves the machine); needs root.
test-e2e: build
	$(GO) test -count=1 -timeout 30m ./test/...

# A soak run, not part of `make test`: a steady mixed load (the three
# legitimate flows, refused outside -> outside mail, spam) through a real
# node in a network namespace for $(SOAK); policyd's and milterd's RSS,
# descriptors and goroutines must end within a margin of their warm-up
# level, and every accepted message must arrive exactly once. Needs root.
SOAK ?= 3m
soak: build
	SOAK=$(SOAK) $(GO) test -count=1 -timeout 60m -run '^TestSoak$$' -v ./test

# The Ansible role applied for real in a private network namespace, twice
# (the second run must change nothing), then an SMTP smoke test.
test-ansible: build
	ansible/tests/run.sh

# A count, not a duration: Go 1.26's fuzz coordinator can fail a target with a
# bare "context deadline exceeded" when a -fuzztime duration ends while a
# worker is mid-input (golang/go#75804, fixed in Go 1.27); a count of inputs
# has no deadline to race. A real finding still fails and is written under
# testdata/fuzz/. Longer runs: FUZZTIME=500000x make fuzz.
FUZZTIME ?= 100000x
fuzz:
	@grep -rl --include='*_test.go' '^func Fuzz' . | while read f; do \
	  pkg=./$$(dirname $$f); \
	  for fn in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
	    echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Benchmarks: Go testing.B everywhere, then the load tools side by side
# with their peers (OpenDKIM, postgrey), then the end-to-end throughput of
# bare Postfix vs mailnode vs OpenDKIM+postgrey. Figures are only
# comparable on an otherwise idle machine; each tool prints the load average.
bench: build build-bench bench-go bench-render bench-policy bench-milter bench-greylist bench-greylist-scale bench-memory bench-e2e

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $(UNIT_PKGS)

# render-config on 10,000 domains and 100,000 mailboxes: wall time and peak RSS,
# into a new staging tree on disk, again with nothing changed, and into tmpfs
# (the same work without the file system). The first figure depends on the
# file system's past: ext4 without a journal (as on these machines) avoids
# reusing recently freed inodes and checks each one on every create (the
# kernel's recently_deleted()), so where many files were deleted, as by an
# earlier run of this target, creating 10,000 files costs seconds of system
# time. On a fresh machine it does not.
bench-render: build build-bench
	@T=$$(mktemp -d) && $(BENCH_BIN) inventory -domains 10000 -mailboxes 100000 >$$T/inv.yaml && \
	  echo "load average: $$(cut -d' ' -f1-3 /proc/loadavg)" && \
	  /usr/bin/time -f "render-config 10k domains / 100k mailboxes, new tree on disk: %e s wall, %U s user, %S s sys, peak RSS %M KiB" \
	    $(BIN) render-config -i $$T/inv.yaml --out $$T/out >/dev/null && \
	  /usr/bin/time -f "render-config 10k domains / 100k mailboxes, nothing changed:   %e s wall, %U s user, %S s sys, peak RSS %M KiB" \
	    $(BIN) render-config -i $$T/inv.yaml --out $$T/out >/dev/null && \
	  S=$$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d) && \
	  /usr/bin/time -f "render-config 10k domains / 100k mailboxes, new tree on tmpfs: %e s wall, %U s user, %S s sys, peak RSS %M KiB" \
	    $(BIN) render-config -i $$T/inv.yaml --out $$S/out >/dev/null; rm -rf $$T $$S

bench-policy: build build-bench
	test/bench-policy.sh $(BIN) $(BENCH_BIN)

bench-milter: build build-bench
	$(BENCH_BIN) milter --mailnode $(BIN)

bench-greylist: build build-bench
	$(BENCH_BIN) greylist --mailnode $(BIN)

# Greylisting with millions of stored triplets (issue #24): postgrey, bbolt
# and Redis prefilled with 1 M, then bbolt and Redis with 10 M, new/known
# decisions at 8 connections, unpaced and then paced at each rate of the
# ladder (p99 from each request's due time: --ladder); then 10 M entries,
# 70 % of them expired, while bbolt's sweeper and Redis's expiry delete
# them (--sweep). The state files go to BENCH_DIR (about 2.5 GiB for bbolt
# at 10 M, removed after each run; Redis holds about 2.3 GiB in memory).
# About 25 minutes.
BENCH_DIR ?= /tmp
bench-greylist-scale: build build-bench
	$(BENCH_BIN) greylist-scale --mailnode $(BIN) --dir $(BENCH_DIR) --prefill 1000000
	$(BENCH_BIN) greylist-scale --mailnode $(BIN) --dir $(BENCH_DIR) --prefill 10000000 --server bbolt,redis --ladder 1000,2000,5000,10000,20000,30000
	$(BENCH_BIN) greylist-scale --mailnode $(BIN) --dir $(BENCH_DIR) --prefill 10000000 --server bbolt,redis --expired 0.7 --sweep 3m30s

# policyd's and milterd's resident memory with generated inventories of
# 1,000, 10,000 and 100,000 mailboxes (one domain per 10 mailboxes): at
# start, the peak during a SIGHUP reload (VmHWM) and after the 1st and
# 10th reload, for reloads of the same file, of one more mailbox each time
# and of one more domain each time. About six minutes.
bench-memory: build build-bench
	$(BENCH_BIN) memory --mailnode $(BIN)

# End-to-end throughput: bare Postfix vs Postfix with do-nothing sidecars (the floor
# any policy service and milter cost) vs Postfix+mailnode vs Postfix+OpenDKIM+postgrey
# vs Postfix+rspamd (with a private redis-server),
# smtp-source -> Postfix -> smtp-sink inside a network namespace it creates
# (root; nothing leaves the machine). About 5 minutes on 2 cores.
#   BENCH_E2E_FLAGS=-quick           smoke run (about a minute)
#   BENCH_E2E_FLAGS="-stacks bare,floor"   only some of the stacks
BENCH_E2E_FLAGS ?= -runs 3 -wait-load 1.5 -wait-max 10m
bench-e2e: build build-bench
	MAILNODE_BENCH_BIN=$(CURDIR)/$(BENCH_BIN) $(GO) run ./test/e2ebench $(BENCH_E2E_FLAGS)

demo: deps build
	$(GO) run ./test/cmd/demo up --dir .demo

demo-stop:
	$(GO) run ./test/cmd/demo down --dir .demo

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin .demo
