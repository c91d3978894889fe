# The two sacred commands: `make run` and `make test`. Both bootstrap .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint typecheck clean bench install

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
