# Two entry points: `make run` and `make test`. Both install into .venv first, and skip the
# install when pyproject.toml has not changed since the last one (a stamp keyed on its hash).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HASH := $(shell sha256sum pyproject.toml Makefile | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(HASH)
PYTEST_ARGS ?=
# pip warns once per package about index folders this machine's pip.conf names; keep the rest.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || [ $$? -eq 1 ]; }

.PHONY: install run test test-fast services down lint bench docs clean

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing into $(VENV) (first time: a few minutes; then skipped until pyproject.toml changes)"
	$(PIP) install --quiet --upgrade "pip>=24" setuptools wheel 2>&1 | $(QUIET_PIP)
	# torch first: the CPU build on this disk; any other torch pulls a CUDA build of several GB.
	$(PIP) install --quiet "torch==2.13.0" 2>&1 | $(QUIET_PIP)
	# DeepSpeed compiles against the installed torch, so it must not get an isolated build env.
	$(PIP) install --quiet --no-build-isolation "deepspeed==0.19.8" 2>&1 | $(QUIET_PIP)
	$(PIP) install --quiet -e ".[all]" 2>&1 | $(QUIET_PIP)
	# DeepSpeed's C++ ops (CPU Adam, shared-memory collectives), compiled into the venv now
	# rather than inside the first training job (a minute or two on 2 cores).
	$(PY) -m cluster.trainers.ds_ops
	$(PY) -c "import torch, ray, deepspeed; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: install
	$(VENV)/bin/mlaas up

down: install
	$(VENV)/bin/mlaas down

# PostgreSQL 15 for the tests that run on both databases (they start throw-away clusters
# themselves); on a machine without it, installed from Debian's packages.
PG_BIN := /usr/lib/postgresql/15/bin
services:
	@test -x $(PG_BIN)/initdb || { echo "Installing postgresql-15 (tests start their own clusters)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; }

# The whole suite on the embedded default (SQLite, file:// storage); the cluster-state tests
# again on a platform whose database is PostgreSQL and whose storage is S3 (SeaweedFS); then
# the multi-node tests (Ray nodes in namespaces of their own), with no other Ray running.
test: install services
	$(PY) -m pytest -m "not multinode and not cluster_only" $(PYTEST_ARGS)
	MLAAS_TEST_BACKEND=cluster $(PY) -m pytest -m "cluster_state or cluster_only" $(PYTEST_ARGS)
	$(PY) -m pytest -m multinode $(PYTEST_ARGS)

# The tests that need no shared platform (no `mlaas up`): the quick loop while working.
test-fast: install services
	$(PY) -m pytest -m "not needs_platform and not multinode and not cluster_only" -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check mlaas cluster serve_apps federated knowledge tests benchmarks docs
	$(VENV)/bin/mypy mlaas cluster serve_apps federated knowledge

bench: install
	$(PY) benchmarks/gateway_overhead.py

# The documentation site (docs/, nav in mkdocs.yml) into site/; --strict: any warning (a broken
# link or anchor, a page left out of the nav) fails the build.
docs: install
	$(PIP) install --quiet -e ".[docs]" 2>&1 | $(QUIET_PIP)
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build site *.egg-info
