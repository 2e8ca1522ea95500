# mlqueue: `make run` serves the whole system locally; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: chromium redis-server run test lint lint-deploy docs bench bench-latency bench-csv drill drill-ha drill-ha-local soak train clean

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
	$(PY) -m devrun

## Unit and integration tests; starts the throwaway Redis, worker and gateway it needs
test: $(VENV)/.dev-installed chromium redis-server
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

$(VENV)/.docs-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

## The documentation site into site/ (strict: a broken link or a missing page fails the build)
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

.PHONY: images-offline test-docker bench-scale bench-cpu bench-ab bench-features
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

## Redis failover drill on the HA compose stack (master, replica, 3 sentinels): `docker kill` the
## master RUNS times under load, then a partition (`docker pause`) and a WAIT-off contrast; exits
## non-zero if any accepted job is lost. `make drill-ha-local`: the same on local processes.
RUNS ?= 10
drill-ha: $(VENV)/.dev-installed $(VENV)/.deploy-lint-installed
	BIN=$(VENV)/bin .ci/docker-stack drill-ha --runs $(RUNS) $(ARGS)

drill-ha-local: $(VENV)/.dev-installed redis-server
	$(PY) -m bench.drill_ha --runs $(RUNS) $(ARGS)

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

# Chromium for the web page tests. Installed with apt only where that needs no password (root, as
# in CI's containers, or passwordless sudo, as on CI runners); elsewhere those tests skip, saying so.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	if command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium || \
	  echo "make test: installing chromium with apt failed; the web page tests will skip"; \
	else \
	  echo "make test: no chromium and no root/apt-get to install it; the web page tests will skip" \
	    "(install Chromium to run them)"; \
	fi

# Debian's redis-server (TLS-capable; also runs Sentinel) for the HA and TLS tests (installed when
# missing; needs root or sudo). The package's own service is not needed: tests start their own.
redis-server:
	@command -v redis-server >/dev/null || \
	if command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server || \
	  echo "make test: installing redis-server with apt failed; the TLS test will skip"; \
	else \
	  echo "make test: no redis-server and no root/apt-get to install it; the TLS test will skip"; \
	fi

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache site

## CPU ms per 1-row job in the gateway, worker, Redis and client (comparable on a busy machine)
bench-cpu: $(VENV)/.dev-installed
	$(PY) -m bench.cpu_budget $(ARGS)

## What each job-API feature (Idempotency-Key, priority, callback_url, rate limits) costs per job
bench-features: $(VENV)/.dev-installed
	$(PY) -m bench.features $(ARGS)

## A/B: this checkout against commit REF, alternating rounds of the same load (jobs/s, CPU/job)
REF ?= origin/main
bench-ab: $(VENV)/.dev-installed
	$(PY) -m bench.ab --ref $(REF) $(ARGS)

## Throughput benchmark: mlqueue vs MLServer (own venv, made on first use), the article's sync API,
## naive Celery and in-process predict; BENCH_ARGS="--open-loop" adds the open-loop table
bench: $(VENV)/.dev-installed
	$(PY) -m bench.bench $(BENCH_ARGS)

## Open-loop latency: mlqueue and MLServer at 25/50/75/90 % of the capacity measured in the same run
bench-latency: $(VENV)/.dev-installed
	$(PY) -m bench.bench --systems mlqueue,mlserver --open-loop $(BENCH_ARGS)
