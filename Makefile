# reimage: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit test-faults test-fuzz bench bench-smoke lint format services clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install reimage with its dev tools

demo: install ## run the demo batch against the simulator (embedded defaults)
	$(BIN)/reimage demo

services: ## start local Redis and PostgreSQL when they are down (tests need both)
	bash .ci/services

test: install services ## lint, type-check, the whole test suite (faults included), a bench smoke run
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q --durations=30
	$(BIN)/reimage bench --smoke

test-faults: install services ## only the fault scenarios (own Redis and PostgreSQL, killed and restarted)
	$(BIN)/pytest -q tests/faults

test-fuzz: install services ## schemathesis over every operation and role with a random seed (printed) and more examples
	REIMAGE_FUZZ_SEED=$${REIMAGE_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	REIMAGE_FUZZ_EXAMPLES=$${REIMAGE_FUZZ_EXAMPLES:-60} \
	$(BIN)/pytest -q -s tests/integration/test_openapi.py

bench: install services ## the benchmark: full stack vs the lower bound and the SDK peer (minutes)
	$(BIN)/reimage bench

bench-smoke: install services ## a ~10-second run of the benchmark
	$(BIN)/reimage bench --smoke

test-unit: install ## fast tests without services
	$(BIN)/pytest -q tests/unit

lint: install ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) .reimage-demo reimage.db reimage.db-wal reimage.db-shm
