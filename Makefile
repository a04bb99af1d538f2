# Two commands do all set-up on a machine with python3 (3.11+) and make:
#   make run    serve on the embedded SQLite default (http://127.0.0.1:8000/docs)
#   make test   run the whole test suite (SQLite, and PostgreSQL when one is reachable)
# Both create or refresh the virtual environment in .venv from the lock file.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=
# Branch coverage with the floor in pyproject.toml; `make test COVERAGE= PYTEST_ARGS=tests/x.py`
# runs a part of the suite without it.
COVERAGE ?= --cov

.PHONY: run test lint format migrate openapi lock bench bench-quick bench-micro clean

# The lock is complete (every transitive pin, with hashes), so pip installs it with --no-deps
# and resolves nothing: a newer release of a dependency wanted with an extra (pytest-cov's
# coverage[toml]) cannot make an older pip reject the lock. `pip check` then proves the set
# is consistent.
$(STAMP): requirements-dev.lock pyproject.toml verifier/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "auth-service needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e verifier
	$(BIN)/python -m pip check --disable-pip-version-check
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/auth-service serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: $(STAMP)
	$(BIN)/python -m pytest $(COVERAGE) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: $(STAMP)
	$(BIN)/auth-service migrate

openapi: $(STAMP)
	$(BIN)/auth-service openapi > openapi.json

# Re-pin every dependency (with hashes) after editing pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --extra dev pyproject.toml -o requirements-dev.lock

# The hot paths against ceilings measured in the same run (bench/README.md); installs wrk and
# hey when missing. bench-quick: a few seconds per figure, while developing.
bench: $(STAMP)
	bench/ensure-tools
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	bench/ensure-tools
	$(BIN)/python bench/run.py --quick --no-readme

bench-micro: $(STAMP)
	$(BIN)/python bench/micro.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache build dist
