.DEFAULT_GOAL := help
PY ?= python3

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## editable install with test and dev extras
	$(PY) -m pip install -e '.[dev]'

serve: ## install and start the server on the default market
	bash scripts/serve.sh

test: ## install everything and run lint, types and the whole test suite (what CI runs)
	bash scripts/test.sh

quick: ## unit tests only, no slow ones
	$(PY) -m pytest -m "not slow" tests/unit

lint: ## ruff lint + format check
	$(PY) -m ruff check quoteflow tests benchmarks
	$(PY) -m ruff format --check quoteflow tests benchmarks

format: ## ruff format + autofix
	$(PY) -m ruff format quoteflow tests benchmarks
	$(PY) -m ruff check --fix quoteflow tests benchmarks

types: ## mypy strict on the package
	$(PY) -m mypy

bench: ## model benchmarks (see benchmarks/README.md)
	$(PY) -m quoteflow bench models

mutate: ## plant known bugs in a scratch copy and check the tests catch them (docs/testing.md)
	$(PY) scripts/mutate.py

strip: ## strip notebook outputs
	$(PY) scripts/strip_notebooks.py notebooks/*.ipynb

.PHONY: help install serve test quick lint format types bench mutate strip
