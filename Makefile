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

.PHONY: run test unit lint typecheck bench kafka-up kafka-down clean-venv

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(BIN)/.installed
	$(BIN)/eventray run $(CONFIG) $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
