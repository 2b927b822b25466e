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

interop: ## third-party SSE clients/servers vs quoteflow, then refresh docs/clients.md's table
	$(PY) -m pytest -m interop tests/interop \
		--deselect tests/interop/test_table.py::test_checked_in_table_matches_the_measured_results
	$(PY) -m tests.interop.table --write

bench: ## model benchmarks (see benchmarks/README.md)
	$(PY) -m quoteflow bench models

strip: ## strip notebook outputs
	$(PY) scripts/strip_notebooks.py notebooks/*.ipynb

.PHONY: help install serve test quick lint format types interop bench strip
