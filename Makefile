# vpcrouter — build, test, demo, bench.
#
#   make demo    run vpcrouter against a local EC2 emulator (moto): no AWS account needed
#   make test    every test (unit, plugin, integration against moto)
#   make bench   benchmarks, printed as tables
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

.PHONY: all build test demo bench venv deps clean examples

all: build

# Tools from Debian when missing: a C compiler (aws-lc), python3-venv (moto).
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup or Debian's cargo >= 1.85)"; exit 1; }
	@if ! command -v cc >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
	  echo "installing build tools with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential python3 python3-venv >/dev/null; \
	fi
	@if ! command -v nft >/dev/null; then \
	  echo "installing nftables with apt-get (health tests silence routers inside their own network namespaces)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null; \
	fi

# moto (the EC2 emulator) in a virtualenv.
venv: $(VENV)/bin/moto_server
$(VENV)/bin/moto_server: | deps
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check 'moto[server]>=5,<6'
	@test -x $@

# The binary and every plugin library, in one directory: $(BUILD_DIR).
build: deps
	$(CARGO) build --workspace --bins --lib $(CARGO_PROFILE_FLAG)
	@mkdir -p $(BUILD_DIR) && chmod 755 $(BUILD_DIR)
	@rm -f $(BUILD_DIR)/libvpcrouter_*.so
	install -m 755 $(CARGO_TARGET_DIR)/$(PROFILE)/vpcrouter $(BUILD_DIR)/vpcrouter
	install -m 644 $(addprefix $(CARGO_TARGET_DIR)/$(PROFILE)/,$(PLUGIN_LIBS)) $(BUILD_DIR)/
	@echo "built: $(BUILD_DIR)"; ls $(BUILD_DIR)

test: build venv
	$(CARGO) test --workspace --no-fail-fast $(CARGO_PROFILE_FLAG) -- --test-threads=2

# Benchmarks, release build, as root (see BENCHMARKS.md): failover latency of the health
# plugins against moto, then ICMP at 1,000 and 10,000 hosts. BENCH_ARGS go to
# bench-failover, e.g. `make bench BENCH_ARGS='--trials 5 --only tcp'`.
BENCH_BUILD_DIR ?= $(CURDIR)/target/plugins-release
bench: venv
	$(MAKE) build PROFILE=release BUILD_DIR=$(BENCH_BUILD_DIR)
	$(CARGO) build --release -p vpcrouter-tests --bin bench-failover --bin bench-icmp-scale
	VPCROUTER_BUILD_DIR=$(BENCH_BUILD_DIR) $(CARGO_TARGET_DIR)/release/bench-failover $(BENCH_ARGS)
	$(CARGO_TARGET_DIR)/release/bench-icmp-scale

demo: build venv
	$(CARGO) run -q -p vpcrouter-tests --bin vpcrouter-demo $(CARGO_PROFILE_FLAG)

clean:
	$(CARGO) clean
	rm -rf $(BUILD_DIR)
