# The two commands a newcomer needs (see README.md):
#   make demo   - run the reference system (orderflow) against the local services and print a summary
#   make quickstart - a ten-line instrumented FastAPI service, its logs, spans and metrics
#   make test   - install everything and run the whole test suite against the local services
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SETUP_STAMP := $(VENV)/.obskit-setup
PYTHON ?= python3

.PHONY: setup services test demo quickstart lint bench

$(SETUP_STAMP): pyproject.toml $(wildcard examples/orderflow/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]' $(if $(wildcard examples/orderflow/pyproject.toml),-e 'examples/orderflow[test]')
	touch $@

setup: $(SETUP_STAMP)

services:
	scripts/system-deps.sh
	scripts/services.sh

# Two suites with their own pytest settings; each fails on "no tests ran" (exit code 5).
test: setup services
	$(VENV)/bin/pytest
	cd examples/orderflow && ../../$(VENV)/bin/pytest

quickstart: setup
	$(PY) examples/quickstart/app.py

demo: setup services
	$(VENV)/bin/orderflow demo --duration 20

lint: setup
	$(VENV)/bin/ruff check obskit tests benchmarks examples/orderflow
	$(VENV)/bin/mypy obskit

bench: setup services
	$(PIP) install -q -e '.[bench]'
	$(PY) benchmarks/bench_http.py
