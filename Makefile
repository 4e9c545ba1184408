# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One auth mode for every process we start (tests, CLI, `ray start`, CI): see DESIGN section 7.
export RAY_AUTH_MODE ?= disabled
CONFIG ?= configs/orders.yaml
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test unit lint typecheck bench demo kafka-up kafka-down clean-venv

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(BIN)/.installed
	$(BIN)/eventray run $(CONFIG) $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The autoscaling demo: a burst, scale-out and scale-in, a live table, out/demo/autoscale.png (about 150 s).
demo: $(BIN)/.installed
	$(BIN)/eventray demo autoscale $(ARGS)

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check cluster actors pipelines tests

typecheck: $(BIN)/.installed
	$(BIN)/mypy

kafka-up: $(BIN)/.installed
	$(BIN)/eventray kafka up

kafka-down: $(BIN)/.installed
	$(BIN)/eventray kafka down

clean-venv:
	rm -rf $(VENV)

# `make bench` (not part of `make test`): eventray side by side with the systems users would pick instead, see
# benchmarks/RESULTS.md. Full mode (1,000,000 events, with latency) by default; BENCH_ARGS=--quick runs in under
# 3 minutes. Installs the benchmark-only extra (pinned peer versions) first.
BENCH_ARGS ?=

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)
