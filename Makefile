# paystream developer workflow. `make demo` and `make test` are the two commands in the README.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PAYSTREAM := $(BIN)/paystream

.PHONY: help venv stack-up stack-down stack-status lint format test test-unit test-integration test-chaos demo chaos bench clean

help:
	@echo "make demo        - the whole pipeline on the local stack (starts it), then reconcile"
	@echo "make test        - lint + unit + integration + crash-point matrix + short chaos run"
	@echo "make test-unit   - fast tests, no services"
	@echo "make chaos       - the full-length chaos run (paystream chaos)"
	@echo "make bench       - paystream vs a naive baseline and a pass-through ceiling; updates docs/performance.md"
	@echo "make stack-up / stack-down / stack-status"

# Re-install only when pyproject.toml changed.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "paystream needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

stack-up: venv
	$(PAYSTREAM) stack up

stack-down: venv
	$(PAYSTREAM) stack down

stack-status: venv
	$(PAYSTREAM) stack status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m schemas check

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-unit: venv
	$(BIN)/pytest -q tests/unit

test: venv
	$(PAYSTREAM) stack ensure
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -q --durations=15 tests

test-integration: venv
	$(PAYSTREAM) stack ensure
	$(BIN)/pytest -q tests/integration

test-chaos: venv
	$(PAYSTREAM) stack ensure
	$(BIN)/pytest -q tests/chaos

demo: venv
	$(PAYSTREAM) demo

chaos: venv
	$(PAYSTREAM) stack ensure
	$(PAYSTREAM) chaos --json reports/chaos-latest.json

bench: venv
	$(PAYSTREAM) stack ensure
	$(PAYSTREAM) bench --write-doc

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
