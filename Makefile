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
DEBIAN_PACKAGES := prometheus prometheus-alertmanager iproute2 iputils-ping gcc libc6-dev
PYTEST_ARGS ?=

# The simulated host and the tests find the real xenperf and the stub through these.
export XENSIM_XENPERF := $(abspath $(XENPERF))
export XENSIM_STUB_DIR := $(abspath $(STUB_DIR))

.PHONY: test demo bench soak deps lint typecheck check-configs clean

test: deps lint typecheck check-configs
	$(BIN)/pytest $(PYTEST_ARGS)

deps: debian-packages $(VENV)/.installed $(XENPERF) $(STUB)

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

$(STUB): xensim/stub/libxenctrl.c xensim/stub/libxenctrl.map
	mkdir -p $(STUB_DIR)
	gcc -O2 -Wall -Wextra -Werror -shared -fPIC \
	    -Wl,-soname,libxenctrl.so.4.17 -Wl,--version-script=xensim/stub/libxenctrl.map \
	    -o $@ xensim/stub/libxenctrl.c

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

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
