# Entry points only: the work lives in infra/bootstrap.sh and the `tickcast` CLI.
SHELL := /bin/bash
VENV := .venv
TICKCAST := $(VENV)/bin/tickcast
PYTEST_ARGS ?= -q -ra --durations=15
# Two workers (pytest-xdist), scoped by directory (tests/conftest.py): the e2e tests wait on
# streams and subprocesses much of the time, so two at once use the two cores. XDIST= runs serially.
XDIST ?= -n 2 --dist loadscope
# e.g. make up UP_ARGS="--timeout 600"
UP_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help bootstrap up down status lint test test-fast bench-stream bench-features bench-inference bench-api bench-api-abuse bench-live bench-soak bench-alerts bench-dashboard bench-cluster clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

bootstrap: ## Install what is missing (Debian packages, uv, .venv, JVM jars)
	infra/bootstrap.sh

up: bootstrap ## Start the whole platform and wait until it is healthy
	$(TICKCAST) up $(UP_ARGS)

down: ## Stop everything cleanly
	@if [ -x $(TICKCAST) ]; then $(TICKCAST) down; else echo "TickCast is not installed (no $(TICKCAST)); nothing to stop."; fi

status: ## Programs, streaming queries and Kafka lag
	$(TICKCAST) status

lint: bootstrap ## Static checks: ruff, the import contracts (import-linter), types (mypy)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

test: bootstrap lint ## Lint, then run every test (PYTEST_ARGS overrides the flags)
	$(VENV)/bin/pytest -m "not cluster" $(XDIST) $(PYTEST_ARGS)
	@# The cluster profile takes most of the machine: alone, after the rest (5: none selected by PYTEST_ARGS).
	$(VENV)/bin/pytest -m cluster $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-fast: bootstrap lint ## Lint, then the fast tier: every test not marked slow (pytest -m "not slow")
	$(VENV)/bin/pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

bench-stream: bootstrap bench/node_modules ## Ingest (capacity, latency at stepped rates) and tick -> served prediction, GET under load; same-run baselines
	$(VENV)/bin/python bench/stream.py

bench-features: bootstrap ## Feature refresh of 5,000 symbols and Feast online read latency
	$(VENV)/bin/python bench/features.py

bench-inference: bootstrap ## ONNX scoring of 5,000 symbols with both models; training time per model
	$(VENV)/bin/python bench/inference.py

bench-api: bootstrap bench/node_modules ## API latency and throughput (GET one / 5,000, WebSocket push)
	$(VENV)/bin/python bench/api.py

bench-api-abuse: bootstrap ## GET one under a WebSocket flood, 100 /history/s and 500 idle sockets from one key; 2 MB POST
	$(VENV)/bin/python bench/api_abuse.py

bench-live: bootstrap ## One live-scorer cycle for 5,000 symbols, step by step
	$(VENV)/bin/python bench/live.py

bench-dashboard: bootstrap ## Watchlist of 5,000 in Chromium: first render, update latency; bare-table and SSE-echo baselines
	$(VENV)/bin/python bench/dashboard.py

bench-soak: bootstrap ## The whole stream with maintenance running for 20 minutes: files, disk, trends
	$(VENV)/bin/python bench/soak.py

bench-alerts: bootstrap ## Alert engine: predictions/s at 5,000 symbols and 1,000 rules, prediction -> SMS provider latency
	$(VENV)/bin/python bench/alerts.py

bench-cluster: bootstrap ## The cluster profile: Kafka per partition at RF 3, the ticks query per core on spark://, up time and memory
	$(VENV)/bin/python bench/cluster.py

# The load generator of bench-api and bench-stream (autocannon, pinned by bench/package-lock.json).
bench/node_modules: bench/package.json bench/package-lock.json
	npm ci --prefix bench --no-audit --no-fund
	@touch $@

clean: down ## Stop everything and delete ./var (the default TICKCAST_HOME)
	rm -rf var
