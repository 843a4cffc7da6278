# The two commands a newcomer needs (see README.md):
#   make demo   - run the reference system (orderflow) against the local services and print a summary
#   make quickstart - a ten-line instrumented FastAPI service, its logs, spans and metrics
#   make test   - install everything and run the whole test suite against the local services
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SETUP_STAMP := $(VENV)/.obskit-setup
DEMO_STAMP := $(VENV)/.obskit-demo-setup
PYTHON ?= python3

.PHONY: setup demo-setup services test-deps test demo quickstart lint bench

# Everything: obskit with every integration, orderflow, and the test tools (pytest, selenium,
# schemathesis, mypy, ruff).
$(SETUP_STAMP): pyproject.toml $(wildcard examples/orderflow/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]' $(if $(wildcard examples/orderflow/pyproject.toml),-e 'examples/orderflow[test]')
	touch $@

# The demo's runtime only: orderflow and obskit with the extras orderflow's dependencies name.
# No test tools, no browser.
$(DEMO_STAMP): pyproject.toml examples/orderflow/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e . -e examples/orderflow
	touch $@

setup: $(SETUP_STAMP)

demo-setup: $(DEMO_STAMP)

# PostgreSQL, Redis and RabbitMQ: what the demo and the tests talk to.
services:
	scripts/services.sh

# The Debian packages only the tests use (chromium, promtool, amtool, docker-compose).
test-deps:
	scripts/system-deps.sh

# Two suites with their own pytest settings; each fails on "no tests ran" (exit code 5), and
# OBSKIT_NO_SKIPS=1 makes a skipped test fail (obskit.testing.pytest_plugin): a test whose
# service or tool is missing must not pass by not running.
test: setup test-deps services
	OBSKIT_NO_SKIPS=1 $(VENV)/bin/pytest
	cd examples/orderflow && OBSKIT_NO_SKIPS=1 ../../$(VENV)/bin/pytest

quickstart: setup
	$(PY) examples/quickstart/app.py

demo: demo-setup services
	$(VENV)/bin/orderflow demo --duration 20

lint: setup
	$(VENV)/bin/ruff check obskit tests benchmarks examples/orderflow loadtest
	$(VENV)/bin/mypy obskit

bench: setup services
	scripts/system-deps.sh bench
	$(PIP) install -q -e '.[bench]'
	$(PY) benchmarks/bench_http.py

# The core suite (tests/) on the oldest versions obskit supports: every dependency at the floor of
# its pyproject.toml range (constraints/floor.txt, see docs/compatibility.md), in a venv of its
# own, rebuilt when the ranges change. `make test` runs the same suite on the newest versions.
FLOOR_VENV ?= .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.obskit-floor-setup

.PHONY: test-floor

$(FLOOR_STAMP): pyproject.toml constraints/floor.txt $(wildcard examples/orderflow/pyproject.toml)
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/pip install -q -c constraints/floor.txt -e '.[test]' $(if $(wildcard examples/orderflow/pyproject.toml),-e examples/orderflow)
	$(FLOOR_VENV)/bin/pip check
	touch $@

# tests/bundle reads orderflow's metric names, hence orderflow (without its test extra) above.
test-floor: $(FLOOR_STAMP) test-deps services
	OBSKIT_NO_SKIPS=1 $(FLOOR_VENV)/bin/pytest tests
