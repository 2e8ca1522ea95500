# mlqueue: `make run` serves the whole system locally; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: chromium run test lint lint-deploy bench bench-csv drill soak train clean

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; sys.exit("mlqueue needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[gateway,worker,local]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.run-installed

## Redis, a trained demo model, one worker and the gateway on http://127.0.0.1:8000 (Ctrl-C stops)
run: $(VENV)/.run-installed
	$(PY) -m shared.launcher

## Unit and integration tests; starts the throwaway Redis, worker and gateway it needs
test: $(VENV)/.dev-installed chromium
	$(PY) -m pytest

$(VENV)/.deploy-lint-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[deploy-lint]"
	touch $@

## ruff and mypy, then the deploy files
lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(MAKE) --no-print-directory lint-deploy

## Dockerfiles, compose files and the CI workflow, checked statically (no Docker engine needed)
lint-deploy: $(VENV)/.deploy-lint-installed
	BIN=$(VENV)/bin .ci/lint-deploy

.PHONY: images-offline test-docker bench-scale
## Base images built from the Debian mirror, for hosts without Docker Hub (root, Docker engine)
images-offline:
	deploy/offline-bases.sh

## Build the images, run the compose stack, its end-to-end tests and container drills, then down
test-docker: $(VENV)/.dev-installed $(VENV)/.deploy-lint-installed
	BIN=$(VENV)/bin .ci/docker-stack test $(ARGS)

## Scale-out: 1, 2 and 4 worker containers of 0.4 CPU each, CSV rows/s and jobs/s per N
bench-scale: $(VENV)/.dev-installed $(VENV)/.deploy-lint-installed
	BIN=$(VENV)/bin .ci/docker-stack bench-scale $(ARGS)

## Fault drill: kill workers and Redis under load; exits non-zero if any accepted job is lost
drill: $(VENV)/.dev-installed
	$(PY) -m bench.drill $(ARGS)

## Soak: CLIENTS concurrent clients for DURATION seconds, every result checked, RSS drift reported
CLIENTS  ?= 64
DURATION ?= 60
soak: $(VENV)/.dev-installed
	$(PY) -m bench.soak --clients $(CLIENTS) --duration $(DURATION) $(ARGS)

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.dev-installed
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

## Bulk CSV benchmark: 1M rows through the live system vs. a single-process pandas pipeline
bench-csv: $(VENV)/.bench-installed
	$(PY) bench/csv_bench.py $(BENCH_ARGS)

## Print a new API key and the digest that goes into MLQUEUE_API_KEYS
key: $(VENV)/.run-installed
	$(PY) -m gateway.keys

## Train a new version of the demo model
train: $(VENV)/.run-installed
	$(PY) -m worker.train

# Debian's headless Chromium for the web page test (installed when missing; needs root or sudo).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache

## Throughput benchmark: mlqueue vs the article's sync API, naive Celery and in-process predict
bench: $(VENV)/.dev-installed
	$(PY) -m bench.bench
