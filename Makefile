# Two commands on a fresh Debian machine: `make run` and `make test`.
# Both install what is missing (apt-get), build, and go.
SHELL := /bin/bash

DEB_PACKAGES   := libdpdk-dev dpdk-dev dpdk clang libclang-dev pkg-config \
                  qemu-system-x86 cpio busybox-static tcpdump ethtool iproute2 \
                  openvswitch-common python3-venv
BENCH_PACKAGES := openvswitch-switch-dpdk fonts-dejavu-core
SUDO           := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
CARGO          ?= cargo
HUGEPAGES      ?= 1024
CONFIG         ?= configs/default.toml
PREFIX         ?= /usr/local
SYSTEMD_DIR    ?= /etc/systemd/system
CONFIG_DIR     ?= /etc/vswitch
FUZZ_SECONDS   ?= 60

.PHONY: all deps deps-bench build test lint run bench hugepages clean install fuzz

all: build

# Installs the Debian packages of $(1) that are not installed yet; a no-op
# when all are.
define install_missing
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# The OpenFlow controller the scenario tests run: os-ken 1.4.1, the last
# release that ships its simple_switch_13 app.
VENV := target/venv

deps:
	$(call install_missing,$(DEB_PACKAGES))
	@ls $(VENV)/lib/python3*/site-packages/os_ken/app/simple_switch_13.py >/dev/null 2>&1 || \
	  { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q 'os-ken==1.4.1'; }

deps-bench: deps
	$(call install_missing,$(BENCH_PACKAGES))

build: deps
	$(CARGO) build --workspace --all-targets --release

lint: deps
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

# Tests that start DPDK or QEMU busy-poll a core: one test at a time.
# The last line sums every test binary's result.
test: deps lint
	@mkdir -p target
	@set -o pipefail; \
	$(CARGO) test --workspace --release --no-fail-fast --lib --bins --tests -- --test-threads=1 2>&1 | tee target/test.log; \
	status=$$?; \
	awk '/^test result:/ {p += $$4; f += $$6} END {printf "total: %d passed, %d failed\n", p, f}' target/test.log; \
	exit $$status

run: build
	$(SUDO) target/release/vswitchd --config $(CONFIG)

# The standard comparison (two VMs; 64/512/1518/9000 B at 1 and 1k flows,
# tso64k at 1 flow; five switch setups, and packed rings for three of them
# at 1 flow; 3 repeats; about 13 minutes); BENCH_ARGS=--matrix for everything.
bench: deps-bench build hugepages
	$(SUDO) target/release/vswitch-bench compare --hugepages on --output bench/results $(BENCH_ARGS)

# Reserves and mounts 2 MB hugepages (benchmarks; tests need none).
hugepages:
	@[ "$$(cat /proc/sys/vm/nr_hugepages)" -ge $(HUGEPAGES) ] || \
	  echo $(HUGEPAGES) | $(SUDO) tee /proc/sys/vm/nr_hugepages >/dev/null
	@mountpoint -q /dev/hugepages || { $(SUDO) mkdir -p /dev/hugepages && \
	  $(SUDO) mount -t hugetlbfs nodev /dev/hugepages; }
	@grep -E 'HugePages_(Total|Free)' /proc/meminfo

# Installs what `make build` built: the binaries in $(PREFIX)/bin, the
# systemd unit (restarts the switch whenever it exits), and configs/default.toml
# as $(CONFIG_DIR)/vswitchd.toml unless that file exists. DESTDIR stages.
install:
	@for b in vswitchd vswitchctl; do [ -x target/release/$$b ] || { echo "target/release/$$b missing: run make build first"; exit 1; }; done
	install -D -m 0755 target/release/vswitchd $(DESTDIR)$(PREFIX)/bin/vswitchd
	install -D -m 0755 target/release/vswitchctl $(DESTDIR)$(PREFIX)/bin/vswitchctl
	install -d -m 0755 $(DESTDIR)$(SYSTEMD_DIR)
	sed -e 's|/usr/local/bin/vswitchd|$(PREFIX)/bin/vswitchd|' \
	    -e 's|/etc/vswitch/vswitchd.toml|$(CONFIG_DIR)/vswitchd.toml|' \
	    contrib/vswitchd.service > $(DESTDIR)$(SYSTEMD_DIR)/vswitchd.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_DIR)/vswitchd.service
	@if [ -e $(DESTDIR)$(CONFIG_DIR)/vswitchd.toml ]; then \
	  echo "keeping $(DESTDIR)$(CONFIG_DIR)/vswitchd.toml"; \
	else \
	  install -D -m 0644 configs/default.toml $(DESTDIR)$(CONFIG_DIR)/vswitchd.toml && \
	  echo "installed $(DESTDIR)$(CONFIG_DIR)/vswitchd.toml"; \
	fi
	@echo "then: systemctl daemon-reload && systemctl enable --now vswitchd"

# cargo-fuzz targets (nightly toolchain; installs cargo-fuzz if missing),
# each for FUZZ_SECONDS; the stable property tests stay in `make test`.
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

clean:
	$(CARGO) clean
