# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installs are locked (uv.lock, every transitive dependency pinned with hashes): a new machine gets exactly what CI
# tested. uv itself is pinned and installed into .tools/ with pip; it never downloads a Python of its own.
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
UV_SYNC := $(UV) sync --locked --python $(PYTHON) --extra dev
# One auth mode for every process we start (tests, CLI, `ray start`, CI): Ray token auth unless you set
# RAY_AUTH_MODE=disabled yourself; see ARCHITECTURE.md section 7.
export RAY_AUTH_MODE ?= token
CONFIG ?= configs/orders.yaml
ARGS ?=
PYTEST_ARGS ?=

.PHONY: bench-schemas bench-joins bench-es bench-cqrs bench-sagas run test unit lint typecheck bench soak demo kafka-up kafka-down clean-venv lock test-latest

$(UV):
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --locked: the lock must match pyproject.toml (after editing dependencies, `make lock`), and nothing is resolved anew.
$(BIN)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV_SYNC)
	@touch $@

# Refresh uv.lock on purpose: the newest versions pyproject.toml allows. Review the diff, run `make test`, commit.
lock: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The unit tests against the newest allowed versions, ignoring the lock, in a venv of their own: drift is seen here
# before `make lock` brings it in. Not part of CI.
LATEST_VENV := .venv-latest
test-latest: | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LATEST_VENV)
	$(UV) pip install --quiet --python $(LATEST_VENV)/bin/python --upgrade -e '.[dev]'
	$(LATEST_VENV)/bin/python -m pytest tests/unit -p no:cacheprovider $(PYTEST_ARGS)

# The key of `mask: hash` (HMAC-SHA256): $$EVENTRAY_MASK_KEY when exported, else a random key made once for this
# checkout (mode 0600), so hashes stay joinable from run to run here and a guessed e-mail cannot be hashed elsewhere.
MASK_KEY_FILE := .eventray/mask.key
$(MASK_KEY_FILE):
	@mkdir -p $(dir $@) && (umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_hex(32))' > $@)

run: $(BIN)/.installed $(MASK_KEY_FILE)
	EVENTRAY_MASK_KEY="$${EVENTRAY_MASK_KEY:-$$(cat $(MASK_KEY_FILE))}" $(BIN)/eventray run $(CONFIG) $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The autoscaling demo: a burst, scale-out and scale-in, a live table, out/demo/autoscale.png (about 150 s).
demo: $(BIN)/.installed $(MASK_KEY_FILE)
	EVENTRAY_MASK_KEY="$${EVENTRAY_MASK_KEY:-$$(cat $(MASK_KEY_FILE))}" $(BIN)/eventray demo autoscale $(ARGS)

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
	rm -rf $(VENV) $(LATEST_VENV) $(TOOLS)

# `make bench` (not part of `make test`): eventray side by side with the systems users would pick instead, see
# benchmarks/RESULTS.md. Full mode (1,000,000 events, with latency) by default; BENCH_ARGS=--quick runs in under
# 3 minutes. Installs the benchmark-only extra (pinned peer versions) first.
BENCH_ARGS ?=

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml uv.lock
	$(UV_SYNC) --extra bench
	@touch $@

bench: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Joins: eventray's temporal join against Quix join_asof and a hand-written aiokafka loop (benchmarks/JOINS.md)
bench-joins: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.joins $(BENCH_ARGS)

# Event sourcing: commands end to end on Kafka (commands/s, command -> reply latency per checkpoint interval) and
# rebuilds from the Parquet archive against the eventsourcing library on SQLite (benchmarks/EVENT_SOURCING.md)
bench-es: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.event_sourcing $(BENCH_ARGS)

# `make bench-cqrs`: queries of a projection (point, batch) against Faust's table_route view, and command ->
# visible latency over 10,000 read-your-writes pairs (benchmarks/CQRS.md)
bench-cqrs: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.cqrs $(BENCH_ARGS)

# `make bench-schemas`: Avro in the Confluent wire format, three writer versions from the dev schema registry, against
# today's schemaless Avro decoder (benchmarks/SCHEMA_REGISTRY.md)
bench-schemas: $(BIN)/.installed
	$(BIN)/python -m benchmarks.schema_registry $(BENCH_ARGS)

# `make bench-sagas`: the order saga end to end, sagas/s and completion p50/p99 with failing participants against
# the same orders with none failing (benchmarks/SAGAS.md)
bench-sagas: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.sagas $(BENCH_ARGS)

# `make soak` (not part of `make test` or CI): an hour of the orders pipeline, Kafka in and out, exactly once, at
# half its measured throughput with a kill a minute; RSS per actor, recovery times, checkpoint and marker sizes,
# verified with --verify (benchmarks/SOAK.md). SOAK_ARGS="--duration-s 120 --kill-every-s 20" is a short trial.
SOAK_ARGS ?=
soak: $(BIN)/.bench-installed $(MASK_KEY_FILE)
	EVENTRAY_MASK_KEY="$${EVENTRAY_MASK_KEY:-$$(cat $(MASK_KEY_FILE))}" $(BIN)/python -m benchmarks.soak $(SOAK_ARGS)
