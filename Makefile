# Two commands a newcomer needs: `make run` and `make test`. Both install what they use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the suite drives as real peers (the age tool, a browser) and GNU time,
# which bench/seal.py runs each tool under (its smoke test runs in the suite).
DEBIAN_TEST_PACKAGES := age chromium nodejs npm time

# The suite runs in one pytest-xdist worker per core (each test makes its own databases and
# directories), a test file's tests all on one worker and in order: tests/web/test_journeys.py
# is one story told test by test. `make test PYTEST_ARGS=-n0` runs it in one process.
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: run test lint venv system-deps browser-deps

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && \
		$(PYTHON) -m venv $(VENV); }

$(VENV)/.installed-server: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[server]'
	@touch $@

$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	@touch $@ $(VENV)/.installed-server

venv: $(VENV)/.installed-all

run: $(VENV)/.installed-server
	$(BIN)/porchlight server run

system-deps:
	@missing=""; for p in $(DEBIAN_TEST_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi

browser-deps: system-deps
	@[ -f .cache/npm/node_modules/axe-core/axe.min.js ] || \
		npm install --silent --no-audit --no-fund --prefix .cache/npm axe-core@4

lint: $(VENV)/.installed-all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: system-deps browser-deps $(VENV)/.installed-all lint
	$(BIN)/pytest $(PYTEST_ARGS)
