# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# uv comes from PATH when present, else it is bootstrapped with pip into .tools/.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: setup demo test test-fast lint system-deps

setup: $(VENV)/.synced system-deps

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

# The recipe is part of what the venv is: a change here (e.g. a flag) syncs again.
$(VENV)/.synced: pyproject.toml uv.lock Makefile | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $@

# Debian packages the tests and the demo need: Chromium for the dashboard test, PostgreSQL
# for the production-shaped Dagster instance. Installed only when missing.
system-deps:
	@bash .ci/system-deps.sh

demo: setup
	$(VENV)/bin/energy-assets demo

# Five pytest workers on the 2-core machine, each stealing tests from the others when it runs
# dry: most end-to-end tests wait on processes they started (daemon ticks, sensor intervals,
# the desk's timeouts), so five keep both cores busy, and stealing ends the run with no worker
# left alone on a long file (README.md: figures).
# Their temporary files (Dagster's SQLite instances, DuckDB files, journals) go to the RAM
# disk where there is one: Dagster's SQLite event log commits each event with an fsync, and on
# this machine's disk that made the Dagster-heavy tests 3x slower (README.md: figures).
TEST_TMPDIR := $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm || echo $${TMPDIR:-/tmp})
PYTEST := TMPDIR=$(TEST_TMPDIR) $(VENV)/bin/pytest -n 5 --dist worksteal

# The README's test command, and exactly what CI runs (.ci/run): lint, then the whole suite.
test: lint
	$(PYTEST)

# For development: the suite without the end-to-end tests marked `slow`.
test-fast: setup
	$(PYTEST) -m "not slow"

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
