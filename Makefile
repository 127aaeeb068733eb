# vpcrouter — build, test, demo, bench.
#
#   make demo    run vpcrouter against a local EC2 emulator (moto): no AWS account needed
#   make test    every test (unit, plugin, integration against moto)
#   make lint    cargo fmt --check, clippy -D warnings, and the layout rules (tools/layout-check)
#   make bench   benchmarks, printed as tables
#   make fuzz    property tests of spec parsing with 1,000,000 inputs each
#
# Everything needed is installed by the targets themselves: Debian packages (apt-get),
# moto into a virtualenv (pip), Rust crates (cargo).

SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target
VENV ?= $(CURDIR)/.venv
PROFILE ?= debug
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)
BUILD_DIR ?= $(CURDIR)/target/plugins
# The bundled plugins: every plugins/*/Cargo.toml whose [lib] is a vpcrouter_* cdylib.
PLUGIN_LIBS := $(shell grep -l cdylib plugins/*/Cargo.toml | xargs grep -h '^name = "vpcrouter_' | sed 's/.*"\(.*\)"/lib\1.so/')
export VPCROUTER_BUILD_DIR := $(BUILD_DIR)
export VPCROUTER_MOTO_SERVER := $(VENV)/bin/moto_server

.PHONY: all build test lint demo bench fuzz venv deps clean examples install install-files uninstall deb deb-package

all: build

# Tools from Debian when missing: a C compiler (aws-lc), python3-venv (moto),
# systemd-analyze and dpkg-deb (packaging tests), protoc (etcd client), etcd (cluster tests),
# prometheus (promtool and the server of the metrics tests), Chromium, Node.js and playwright-core
# (npm ci in tests/browser: the status page's browser test).
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup or Debian's cargo >= 1.85)"; exit 1; }
	@if ! command -v cc >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null \
	    || ! command -v systemd-analyze >/dev/null || ! command -v dpkg-deb >/dev/null; then \
	  echo "installing build tools with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    build-essential python3 python3-venv systemd dpkg >/dev/null; \
	fi
	@if ! command -v protoc >/dev/null || ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then \
	  echo "installing protobuf-compiler (builds the etcd client) and etcd with apt-get (cluster mode and the etcd watcher)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler etcd-server etcd-client >/dev/null; \
	fi
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  echo "installing prometheus with apt-get (promtool and a server for the metrics tests; the packaged service is left stopped)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
	fi
	@if ! command -v nft >/dev/null; then \
	  echo "installing nftables with apt-get (health tests silence routers inside their own network namespaces)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium with apt-get (the status page's test drives it headless through Playwright)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "installing nodejs and npm with apt-get (Playwright, for the status page's test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || { \
	  echo "Node.js $$(node --version) is too old for Playwright (the status page's test): install Node.js 20 or later (Debian 13's nodejs, or NodeSource's)"; exit 1; }
	@if [ ! -d tests/browser/node_modules/playwright-core ]; then \
	  echo "installing playwright-core into tests/browser/node_modules (npm ci, from tests/browser/package-lock.json)"; \
	  npm ci --prefix tests/browser --no-audit --no-fund >/dev/null; \
	fi

# moto (the EC2 emulator) in a virtualenv, with fixes where it differs from real EC2
# (tests/moto/fixes.py says which).
venv: $(VENV)/.vpcrouter-moto-fixes
$(VENV)/bin/moto_server: | deps
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check 'moto[server]>=5,<6'
	@test -x $@
$(VENV)/.vpcrouter-moto-fixes: $(VENV)/bin/moto_server tests/moto/fixes.py
	$(VENV)/bin/python tests/moto/fixes.py
	@touch $@

# The binary and every plugin library, in one directory: $(BUILD_DIR).
# Always `--workspace`: features are resolved over the whole workspace, so this build, the
# demo's narrower one (BUILD_TARGETS) and `cargo test --workspace` share every compiled
# crate; `cargo run -p vpcrouter-tests` would resolve other features and compile the SDK again.
BUILD_TARGETS ?= --bins --lib
build: deps
	$(CARGO) build --workspace $(BUILD_TARGETS) $(CARGO_PROFILE_FLAG)
	@mkdir -p $(BUILD_DIR) && chmod 755 $(BUILD_DIR)
	@rm -f $(BUILD_DIR)/libvpcrouter_*.so
	install -m 755 $(CARGO_TARGET_DIR)/$(PROFILE)/vpcrouter $(BUILD_DIR)/vpcrouter
	install -m 644 $(addprefix $(CARGO_TARGET_DIR)/$(PROFILE)/,$(PLUGIN_LIBS)) $(BUILD_DIR)/
	@echo "built: $(BUILD_DIR)"; ls $(BUILD_DIR)

test: build venv
	$(CARGO) test --workspace --no-fail-fast $(CARGO_PROFILE_FLAG) -- --test-threads=2

# Formatting, lints and the layout rules (tools/layout-check: no import circle between a
# crate's top-level modules, short functions, documented fields, a small host crate).
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 tools/layout-check

# Benchmarks, release build, as root (see BENCHMARKS.md): failover latency of the health
# plugins against moto, then ICMP at 1,000, 2,500 and 10,000 hosts, the planner (bench-planner,
# of the vpcrouter-planner crate, which has no AWS SDK), EC2 calls,
# cluster mode (takeover, failover vs single mode, idle etcd load), and failover through a
# model of EC2's latency and throttling (bench-failover-ec2, with an HA NAT deployment per zone), the
# same end to end with the real tcp plugin at 0.2 s on routers whose packets are dropped in a network
# namespace (bench-failover-e2e: 40 routes, p99 against 0.5 s + 40 × moto's serial time per write),
# and prefix-list routes against one route per CIDR through the same model (bench-prefix-lists),
# and new clients of the status server while 100 and 500 slow clients hold connections
# (bench-slow-clients). BENCH_ARGS go to bench-failover, e.g. `make bench BENCH_ARGS='--trials 5 --only tcp'`.
BENCH_BUILD_DIR ?= $(CURDIR)/target/plugins-release
# `make build` builds every binary of the workspace, the bench programs included (those of
# vpcrouter-tests and vpcrouter-planner), in one cargo invocation: a separate
# `-p vpcrouter-tests` build would unify features differently and compile the SDK a second time.
bench: venv deps
	$(MAKE) build PROFILE=release BUILD_DIR=$(BENCH_BUILD_DIR)
	VPCROUTER_BUILD_DIR=$(BENCH_BUILD_DIR) $(CARGO_TARGET_DIR)/release/bench-failover $(BENCH_ARGS)
	$(CARGO_TARGET_DIR)/release/bench-icmp-scale
	$(CARGO_TARGET_DIR)/release/bench-planner
	VPCROUTER_BUILD_DIR=$(BENCH_BUILD_DIR) $(CARGO_TARGET_DIR)/release/bench-ec2
	VPCROUTER_BUILD_DIR=$(BENCH_BUILD_DIR) $(CARGO_TARGET_DIR)/release/bench-cluster
	VPCROUTER_BUILD_DIR=$(BENCH_BUILD_DIR) $(CARGO_TARGET_DIR)/release/bench-failover-ec2 --hook
	VPCROUTER_BUILD_DIR=$(BENCH_BUILD_DIR) $(CARGO_TARGET_DIR)/release/bench-failover-e2e
	VPCROUTER_BUILD_DIR=$(BENCH_BUILD_DIR) $(CARGO_TARGET_DIR)/release/bench-prefix-lists
	VPCROUTER_BUILD_DIR=$(BENCH_BUILD_DIR) $(CARGO_TARGET_DIR)/release/bench-slow-clients

# Property tests of route spec parsing and validation, 1,000,000 generated inputs per
# property (release build); prints inputs and time per property.
FUZZ_CASES ?= 1000000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p vpcrouter-plugin-api --test spec_props -- --nocapture --test-threads=2

# The demo needs the binary, the plugins and the demo program only: the benches and test
# programs are left to `make test` (which reuses all of this build). moto's venv is made
# while cargo compiles.
DEMO_TARGETS := --lib --bin vpcrouter --bin vpcrouter-demo
demo:
	$(MAKE) -j2 build venv BUILD_TARGETS='$(DEMO_TARGETS)'
	$(CARGO_TARGET_DIR)/$(PROFILE)/vpcrouter-demo $(DEMO_ARGS)

# Install layout (PREFIX and DESTDIR respected). `install-files` installs what
# `make build` produced without building (used by the packaging tests).
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
BINDIR := $(PREFIX)/bin
PLUGINDIR := $(PREFIX)/lib/vpcrouter
UNITDIR := $(PREFIX)/lib/systemd/system
MANDIR := $(PREFIX)/share/man/man1
DOCDIR := $(PREFIX)/share/doc/vpcrouter
# Alert rules, their promtool unit tests and the Grafana dashboard (packaging/prometheus/).
PROMETHEUS_FILES := vpcrouter-alerts.yml vpcrouter-alerts.test.yml grafana-dashboard.json
INSTALLED := $(BINDIR)/vpcrouter $(addprefix $(PLUGINDIR)/,$(PLUGIN_LIBS)) $(MANDIR)/vpcrouter.1 \
  $(PREFIX)/share/bash-completion/completions/vpcrouter $(PREFIX)/share/zsh/site-functions/_vpcrouter \
  $(PREFIX)/share/fish/vendor_completions.d/vpcrouter.fish $(UNITDIR)/vpcrouter.service \
  $(DOCDIR)/route_spec.example.json $(DOCDIR)/vpcrouter.default $(DOCDIR)/iam-policy.json \
  $(DOCDIR)/iam-policy-scoped.json $(DOCDIR)/iam-policy-assume-role.json $(DOCDIR)/iam-role-trust-policy.json \
  $(addprefix $(DOCDIR)/prometheus/,$(PROMETHEUS_FILES))
SUBST := sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'

install: build install-files

install-files:
	install -D -m 755 $(BUILD_DIR)/vpcrouter $(DESTDIR)$(BINDIR)/vpcrouter
	install -d -m 755 $(DESTDIR)$(PLUGINDIR)
	install -m 644 $(addprefix $(BUILD_DIR)/,$(PLUGIN_LIBS)) $(DESTDIR)$(PLUGINDIR)/
	install -d -m 755 $(DESTDIR)$(MANDIR) $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(DOCDIR)/prometheus
	$(BUILD_DIR)/vpcrouter --generate man > $(DESTDIR)$(MANDIR)/vpcrouter.1
	$(BUILD_DIR)/vpcrouter --generate bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/vpcrouter
	$(BUILD_DIR)/vpcrouter --generate zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_vpcrouter
	$(BUILD_DIR)/vpcrouter --generate fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/vpcrouter.fish
	$(SUBST) packaging/vpcrouter.service > $(DESTDIR)$(UNITDIR)/vpcrouter.service
	$(SUBST) packaging/vpcrouter.default > $(DESTDIR)$(DOCDIR)/vpcrouter.default
	install -m 644 packaging/route_spec.example.json packaging/iam-policy.json packaging/iam-policy-scoped.json \
	  packaging/iam-policy-assume-role.json packaging/iam-role-trust-policy.json $(DESTDIR)$(DOCDIR)/
	install -m 644 $(addprefix packaging/prometheus/,$(PROMETHEUS_FILES)) $(DESTDIR)$(DOCDIR)/prometheus/
	cd $(DESTDIR)$(PREFIX) && chmod 644 share/man/man1/vpcrouter.1 share/bash-completion/completions/vpcrouter \
	  share/zsh/site-functions/_vpcrouter share/fish/vendor_completions.d/vpcrouter.fish lib/systemd/system/vpcrouter.service \
	  share/doc/vpcrouter/vpcrouter.default

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(DOCDIR)/prometheus $(DESTDIR)$(DOCDIR) 2>/dev/null

# A Debian package with the same layout under /usr (config in /etc).
DEB_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB := $(CURDIR)/target/vpcrouter_$(DEB_VERSION)_$(DEB_ARCH).deb

deb: build deb-package

deb-package:
	rm -rf $(CURDIR)/target/deb && mkdir -p $(CURDIR)/target/deb/DEBIAN
	$(MAKE) -s install-files DESTDIR=$(CURDIR)/target/deb PREFIX=/usr
	strip --strip-unneeded $(CURDIR)/target/deb/usr/bin/vpcrouter $(CURDIR)/target/deb/usr/lib/vpcrouter/*.so
	install -D -m 644 packaging/route_spec.example.json $(CURDIR)/target/deb/etc/vpcrouter/route_spec.json
	install -D -m 644 $(CURDIR)/target/deb/usr/share/doc/vpcrouter/vpcrouter.default $(CURDIR)/target/deb/etc/default/vpcrouter
	printf '%s\n' /etc/vpcrouter/route_spec.json /etc/default/vpcrouter > $(CURDIR)/target/deb/DEBIAN/conffiles
	printf 'Package: vpcrouter\nVersion: %s\nArchitecture: %s\nMaintainer: vpcrouter developers <vpcrouter@localhost>\nSection: net\nPriority: optional\nDepends: libc6\nDescription: keeps AWS VPC route tables pointing at healthy EC2 router instances\n Successor of vpc-router with dynamically loaded watcher and health plugins.\n' \
	  $(DEB_VERSION) $(DEB_ARCH) > $(CURDIR)/target/deb/DEBIAN/control
	dpkg-deb --root-owner-group -Zgzip --build $(CURDIR)/target/deb $(DEB) >/dev/null
	@echo "built: $(DEB)"

clean:
	$(CARGO) clean
	rm -rf $(BUILD_DIR)
