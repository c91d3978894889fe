# The two sacred commands: `make run` and `make test`. Both bootstrap .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint typecheck clean bench install fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP) $@

run: $(STAMP)
	$(BIN)/python -m workers.kernels >/dev/null  # numba cache: workers then boot in ms
	$(BIN)/pacs serve $(ARGS)

test: $(TEST_STAMP)
	$(BIN)/python -m workers.kernels
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check appliance workers metrics tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench ingest $(ARGS)

# `make fuzz FUZZ_SECONDS=60`: each atheris harness in tests/fuzz for that long (atheris is a
# dev-only tool, installed here on demand); crashes land in tests/fuzz/crashes/<target>/.
FUZZ_SECONDS ?= 60
fuzz: $(TEST_STAMP)
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install -q atheris
	$(BIN)/python -m workers.kernels
	PYTHON=$(BIN)/python tests/fuzz/run.sh $(FUZZ_SECONDS)

# `sudo make install`: the appliance in its own venv under PREFIX, the systemd units, sysusers
# and tmpfiles snippets and /etc/pacs-appliance/pacs-appliance.toml (kept if present) under
# DESTDIR (default /; on a live system it also creates the user and reloads systemd).
PREFIX ?= /opt/pacs-appliance
install:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q .
	$(PREFIX)/bin/pacs install-systemd --units systemd --exec $(PREFIX)/bin/pacs --prefix $(or $(DESTDIR),/)

clean:
	rm -rf $(VENV) data .pytest_cache
