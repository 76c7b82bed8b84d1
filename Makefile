# dockwatch: the two commands are `make demo` and `make test`; both set themselves up in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit protos bench clean system-deps

$(BIN)/python:
	@bash deploy/install-system-deps.sh venv
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

system-deps:
	@bash deploy/install-system-deps.sh test

## make demo: simulators + gateway + a local broker, movements and stock live (DEMO_SECONDS=N stops after N s)
demo: $(STAMP)
	@bash deploy/install-system-deps.sh demo || true
	$(BIN)/dockwatch demo $(if $(DEMO_SECONDS),--seconds $(DEMO_SECONDS),)

## make test: lint, type-check and the whole test suite
test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

## make protos: regenerate the committed Python code from protos/
protos: $(STAMP)
	$(BIN)/python protos/generate.py

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
