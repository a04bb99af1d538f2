# Two commands do all set-up on a machine with python3 (3.11+) and make:
#   make run    serve on the embedded SQLite default (http://127.0.0.1:8000/docs); the issuer,
#               which other services are given, is AUTH_ISSUER (http://localhost:8000)
#   make test   run the whole test suite (SQLite, and PostgreSQL when one is reachable)
# While developing, `make check` is the quick loop: the unit tests and the app in-process on
# SQLite, over every core, without coverage (docs/contributing/testing.md).
# Both create or refresh the virtual environment in .venv: `make run` from the runtime lock
# only, `make test` (and lint, format, lock, bench) from the development lock on top of it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=
# Branch coverage with the floor in pyproject.toml; `make test COVERAGE= PYTEST_ARGS=tests/x.py`
# runs a part of the suite without it.
COVERAGE ?= --cov
# Material for MkDocs prints a banner about its successor on every build.
export NO_MKDOCS_2_WARNING := 1
# make check: how many pytest-xdist workers (auto: one per core).
CHECK_WORKERS ?= auto

.PHONY: run test check lint docs format migrate openapi lock bench bench-quick bench-micro clean

# The locks are complete (every transitive pin, with hashes), so pip installs them with
# --no-deps and resolves nothing: a newer release of a dependency wanted with an extra
# (pytest-cov's coverage[toml]) cannot make an older pip reject a lock. `pip check` then proves
# each set is consistent. Running needs requirements.lock only (as the Docker image does); the
# package is built as the Docker build builds it, with the hatchling its pyproject pins.
$(RUN_STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "auth-service needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --require-hashes -r requirements.lock
	$(PIP_INSTALL) -e .
	$(BIN)/python -m pip check --disable-pip-version-check
	touch $@

# Everything else (the tools, the verifier and what it needs), added to the runtime set: the
# development lock pins the same versions, so `make run` after `make test` installs nothing.
$(DEV_STAMP): $(RUN_STAMP) requirements-dev.lock verifier/pyproject.toml
	$(PIP_INSTALL) --require-hashes -r requirements-dev.lock
	$(PIP_INSTALL) --no-build-isolation -e verifier
	$(BIN)/python -m pip check --disable-pip-version-check
	touch $@

run: $(RUN_STAMP)
	$(BIN)/auth-service serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(COVERAGE) $(PYTEST_ARGS)

check: $(DEV_STAMP)
	PYTHONDONTWRITEBYTECODE= TEST_DATABASES=sqlite $(BIN)/python -m pytest -m "not served" --ignore=tests/served \
		-n $(CHECK_WORKERS) --dist worksteal -q $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/mkdocs build --strict --quiet

# The documentation site (mkdocs.yml), built strictly into site/: open site/index.html as a
# file, or serve the folder for search too; nothing is fetched from elsewhere.
docs: $(DEV_STAMP)
	$(BIN)/mkdocs build --strict

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: $(RUN_STAMP)
	$(BIN)/auth-service migrate

openapi: $(RUN_STAMP)
	$(BIN)/auth-service openapi > openapi.json

# Re-pin every dependency (with hashes) after editing pyproject.toml.
lock: $(DEV_STAMP)
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --extra dev pyproject.toml -o requirements-dev.lock

# The hot paths against ceilings measured in the same run (bench/README.md); installs wrk and
# hey when missing. bench-quick: a few seconds per figure, while developing.
bench: $(DEV_STAMP)
	bench/ensure-tools
	$(BIN)/python bench/run.py

bench-quick: $(DEV_STAMP)
	bench/ensure-tools
	$(BIN)/python bench/run.py --quick --no-readme

bench-micro: $(DEV_STAMP)
	$(BIN)/python bench/micro.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache build dist site
