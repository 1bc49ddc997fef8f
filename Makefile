# Two commands a newcomer needs: `make demo` and `make test`. Both do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
# The development tools (devtools/) are not installed with the package: they run from here.
export PYTHONPATH := $(CURDIR)
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: setup demo test lint typecheck unit checkov bench fuzz settings-docs clean

setup: $(PY_STAMP) $(NODE_STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "etg-monitor needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(PY_STAMP): $(BIN)/python requirements.txt requirements-dev.txt pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The single-tenant story, then a provider's three simulated customer tenants fanned out on the
# job queue and rolled up (--tenants 0 skips that part).
demo: setup
	$(BIN)/python -m devtools.demo --tenants 3

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(PY_STAMP)
	$(BIN)/mypy

unit: $(PY_STAMP)
	$(BIN)/pytest -m "not integration" -q

test: setup lint typecheck checkov
	$(BIN)/pytest

# checkov over infra/, from a venv of its own: it pins many libraries that could clash with the
# app's. The venv lives inside .venv, which ruff and git already leave alone. No network at scan
# time: --skip-download fetches no policies or guidelines, and the update check is off. Without
# PYTHONPATH, so neither pip nor checkov sees this checkout as an installed package.
# graph-permissions.bicep and msp-app.bicep are left out: checkov cannot parse their Microsoft
# Graph extension (the files say why). Every check it fails is fixed or skipped in the Bicep with
# a reason (infra/README.md, "checkov").
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "checkov runs here on Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(CHECKOV_VENV)

$(CHECKOV_STAMP): $(CHECKOV_VENV)/bin/python requirements-checkov.txt
	env -u PYTHONPATH $(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

checkov: $(CHECKOV_STAMP)
	env -u PYTHONPATH CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(CHECKOV_VENV)/bin/checkov --directory infra \
		--skip-download --quiet --compact --skip-path 'infra/app/graph-permissions\.bicep' \
		--skip-path 'infra/app/msp-app\.bicep'

# docs/configuration.md and the README's settings table are generated from monitors/settings.py.
settings-docs: $(PY_STAMP)
	$(BIN)/python -m devtools.settings_docs

bench: setup
	$(BIN)/python bench/run.py

# A long exploratory run of the property tests (fresh random examples each time; the examples
# per property can be raised with ETG_FUZZ_EXAMPLES), then coverage-guided fuzzing of the
# parsers with atheris, which is installed here only: the test suite does not need it.
FUZZ_RUNS ?= 500000
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -m hostile -q
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "atheris>=2.3,<4"
	mkdir -p .fuzz-corpus
	$(BIN)/python tests/fuzz/atheris_parsers.py .fuzz-corpus tests/fuzz/seeds -runs=$(FUZZ_RUNS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
