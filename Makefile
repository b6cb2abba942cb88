# The README's two commands: `make demo` (the main job) and `make test` (every check).
# Each target installs what it needs on a fresh Debian machine and costs seconds when ready.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := .cache
XEN_ROOT := $(CACHE)/xen/root
XENPERF := $(XEN_ROOT)/usr/lib/xen-4.17/bin/xenperf
STUB_DIR := build/stub
STUB := $(STUB_DIR)/libxenctrl.so.4.17
STUB_XENSTORE := $(STUB_DIR)/libxenstore.so.4
DEBIAN_PACKAGES := prometheus prometheus-alertmanager iproute2 iputils-ping gcc libc6-dev
PYTEST_ARGS ?=

# The simulated host and the tests find the real xenperf and the stub through these.
export XENSIM_XENPERF := $(abspath $(XENPERF))
export XENSIM_STUB_DIR := $(abspath $(STUB_DIR))

.PHONY: test test-fast demo bench soak deps lint typecheck check-configs clean eval

test: deps lab-deps lint typecheck check-configs
	$(BIN)/pytest $(PYTEST_ARGS)

# The daily lane: lint, types and every test that needs neither root nor a running Prometheus or
# Alertmanager, nor is marked slow (about two minutes, no root, no Debian packages installed).
# `make test` stays the whole contract; CI runs that.
test-fast: $(VENV)/.installed $(XENPERF) $(STUB) $(STUB_XENSTORE) lint typecheck
	JUDICATOR_LANE=fast $(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

deps: debian-packages $(VENV)/.installed $(XENPERF) $(STUB) $(STUB_XENSTORE)

# The published experiment end to end (docs/demo.md); SCENARIO=udp-flood|cpu-hog|memory|disk
# for the other abuse classes. Report, PNG and logs go to demo-output/.
demo: deps
	$(BIN)/python -m xensim.demo $(if $(SCENARIO),--scenario $(SCENARIO))

.PHONY: debian-packages
debian-packages:
	@tools/ensure-debian-packages $(DEBIAN_PACKAGES)

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,demo]'
	touch $@

$(XENPERF):
	tools/fetch-xenperf $(CACHE)/xen

$(STUB): xensim/stub/libxenctrl.c xensim/stub/simstate.c xensim/stub/simstate.h \
	    xensim/stub/libxenctrl.map
	mkdir -p $(STUB_DIR)
	gcc -O2 -Wall -Wextra -Werror -shared -fPIC \
	    -Wl,-soname,libxenctrl.so.4.17 -Wl,--version-script=xensim/stub/libxenctrl.map \
	    -o $@ xensim/stub/libxenctrl.c xensim/stub/simstate.c

$(STUB_XENSTORE): xensim/stub/libxenstore.c xensim/stub/simstate.c xensim/stub/simstate.h \
	    xensim/stub/libxenstore.map
	mkdir -p $(STUB_DIR)
	gcc -O2 -Wall -Wextra -Werror -shared -fPIC \
	    -Wl,-soname,libxenstore.so.4 -Wl,--version-script=xensim/stub/libxenstore.map \
	    -o $@ xensim/stub/libxenstore.c xensim/stub/simstate.c

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two runs: mypy takes every suffix-less script in tools/ for a module named __main__.
typecheck: $(VENV)/.installed
	$(BIN)/mypy
	$(BIN)/mypy --strict --warn-unreachable tools/compile-policies

check-configs: debian-packages $(VENV)/.installed
	PATH=$(abspath $(BIN)):$$PATH tools/check-configs

# Every benchmark (bench/__main__.py), each table printed, figures in bench/results/*.json.
# Needs root (simulated hosts); about 8-10 minutes here.
bench: deps
	$(BIN)/python -m bench

# The long reliability runs (docs/reliability.md): kill -9 after every step, 10,000 scrapes,
# 20 million fuzzing runs. Needs root; about 15 minutes here.
soak: deps
	JUDICATOR_SOAK=1 $(BIN)/pytest -m soak tests/reliability $(PYTEST_ARGS)
	JUDICATOR_SOAK=1 $(BIN)/pytest tests/remediator/test_remediator_stateful.py $(PYTEST_ARGS)

clean:
	rm -rf build $(VENV) $(CACHE)

# The evaluation (docs/evaluation.md): every scenario of xeneval/scenarios/ on the simulated host
# with the shipped policies, then the evasion search (promtool). SCENARIOS='ping-flood udp-*'
# for a subset, EVAL_ARGS=--fast for the quick ones. Needs root; the corpus takes about 55
# minutes here. Report in eval-output/ (eval.json, eval.png).
eval: deps
	$(BIN)/python -m xeneval $(EVAL_ARGS) $(SCENARIOS)

# Learned thresholds on a synthetic week (docs/policies.md#learned-thresholds): a history
# backfilled into Prometheus with promtool, `judicator-policy learn` on its first 7 days and
# `judicator-policy backtest` of its last. No root; about 2 minutes. Output in learn-output/.
.PHONY: learn-demo
learn-demo: deps
	$(BIN)/python -m xensim.learndemo --out learn-output

# --- The Xen lab (docs/lab.md): Debian's real Xen 4.17 + PV Dom0 + PV guests under QEMU ----
# Software emulation (QEMU TCG) on the build machine; every target tears the VM down itself.
# lab-deps: Debian packages (~80 MB) and the perf-counter hypervisor, built once (~3-9 min);
# seconds when cached. The images are rebuilt only when the project's sources changed.
LAB := $(BIN)/python -m xenlab
.PHONY: lab-deps lab-up lab-down lab-fixtures lab-demo lab-test

lab-deps: deps
	$(LAB) deps
	$(LAB) images

# Boot Xen + Dom0 + 3 guests and leave them running (`make lab-down` stops them).
lab-up: lab-deps
	$(LAB) up

lab-down:
	$(LAB) down

# Capture the real fixtures (tests/fixtures/*/real-*, tests/fixtures/sysfs/real): boots the
# perf-counter hypervisor, then Debian's stock one (its xenperf ENOSYS); ~10 min.
lab-fixtures: lab-deps
	$(LAB) fixtures --out tests/fixtures

# The published experiment on the real hypervisor; report in lab-output/ (docs/lab.md).
lab-demo: lab-deps
	$(LAB) demo --out lab-output

# The lab's tests alone (they are part of `make test` too; ~5 min on a quiet machine).
lab-test: lab-deps
	$(BIN)/pytest tests/lab $(PYTEST_ARGS)

# --- The KVM lab (docs/kvm-lab.md): real KVM guests nested in a KVM host under QEMU ----------
# L1 = Debian's kernel (the Xen lab's fetch) under QEMU TCG with AMD SVM, kvm_amd; L2 = the
# host's Debian qemu-system-x86 -enable-kvm inside it. Every target tears the VM down itself.
KVMLAB := $(BIN)/python -m kvmlab
.PHONY: kvmlab-deps kvmlab-up kvmlab-down kvmlab-test kvmlab-demo

# Host packages, Debian's kernel (shared with the Xen lab, fetched once) and the two images
# (seconds when up to date).
kvmlab-deps: deps
	$(KVMLAB) deps

# Boot L1 + two KVM guests and leave them running (`make kvmlab-down` stops them); ~2 min.
kvmlab-up: kvmlab-deps
	$(KVMLAB) up

kvmlab-down:
	$(KVMLAB) down

# The KVM lab's tests alone (one boot; ~4-6 min on a quiet machine).
kvmlab-test: kvmlab-deps
	$(BIN)/pytest tests/kvmlab $(PYTEST_ARGS)

# The published experiment on real KVM guests (docs/kvm.md#the-experiment-on-kvm): l2a floods
# l2b, the shipped policies with the lab's thresholds fire, the remediator shapes l2a's tap.
# Report, figure and logs in kvmlab-output/; ~8 min.
kvmlab-demo: kvmlab-deps
	$(KVMLAB) demo --out kvmlab-output
