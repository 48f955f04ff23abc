# otlp-stats: every target sets itself up; `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint unit bench clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py $(wildcard proto/*/*.proto)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with test and lint tools

run: install ## start the service with the defaults (ARGS="--window 5" to override)
	$(BIN)/otlp-stats $(ARGS)

lint: install ## ruff and mypy --strict
	$(BIN)/ruff check otlp_stats tests
	$(BIN)/ruff format --check otlp_stats tests
	$(BIN)/mypy

unit: install ## the tests alone, no lint
	$(BIN)/pytest $(ARGS)

test: install lint ## install, lint, and run every test
	$(BIN)/pytest $(ARGS)

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info

bench: install ## measure decode floor, baseline and service in one run; rewrites BENCHMARKS.md (ARGS="--duration 60")
	$(BIN)/python -m bench.run $(ARGS)
