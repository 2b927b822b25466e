.DEFAULT_GOAL := help
# The project's environment: an active virtualenv, else .venv/ (made by `make install`,
# scripts/serve.sh or scripts/test.sh; see scripts/_venv.sh).
PY ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,.venv/bin/python)

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## make or update .venv with the test and dev extras (skipped when up to date)
	@bash -c 'source scripts/_venv.sh && quoteflow_env dev'

serve: ## install and start the server on the default market
	bash scripts/serve.sh

test: ## install everything and run lint, types and the whole test suite (what CI runs)
	bash scripts/test.sh

quick: install ## unit tests only, no slow ones
	$(PY) -m pytest -m "not slow" tests/unit

lint: install ## ruff lint + format check
	$(PY) -m ruff check quoteflow tests benchmarks
	$(PY) -m ruff format --check quoteflow tests benchmarks

format: install ## ruff format + autofix
	$(PY) -m ruff format quoteflow tests benchmarks
	$(PY) -m ruff check --fix quoteflow tests benchmarks

types: install ## mypy strict on the package
	$(PY) -m mypy

interop: install ## third-party SSE clients/servers vs quoteflow, then refresh docs/clients.md's table
	$(PY) -m pytest -m interop tests/interop \
		--deselect tests/interop/test_table.py::test_checked_in_table_matches_the_measured_results
	$(PY) -m tests.interop.table --write

bench: install ## model benchmarks (see benchmarks/README.md)
	$(PY) -m quoteflow bench models

mutate: install ## plant known bugs in a scratch copy and check the tests catch them (docs/testing.md)
	$(PY) scripts/mutate.py

strip: install ## strip notebook outputs
	$(PY) scripts/strip_notebooks.py notebooks/*.ipynb

.PHONY: help install serve test quick lint format types interop bench mutate strip
