# Two entry points: `make run` and `make test`. Both install into .venv first, and skip the
# install when pyproject.toml has not changed since the last one (a stamp keyed on its hash).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HASH := $(shell sha256sum pyproject.toml Makefile | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(HASH)
PYTEST_ARGS ?=

.PHONY: install run test down lint bench clean

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24" setuptools wheel
	# torch first: the CPU build on this disk; any other torch pulls a CUDA build of several GB.
	$(PIP) install --quiet "torch==2.13.0"
	# DeepSpeed compiles against the installed torch, so it must not get an isolated build env.
	$(PIP) install --quiet --no-build-isolation "deepspeed==0.19.8"
	$(PIP) install --quiet -e ".[all]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: install
	$(VENV)/bin/mlaas up

down: install
	$(VENV)/bin/mlaas down

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check mlaas cluster serve_apps federated knowledge tests benchmarks

bench: install
	$(PY) benchmarks/gateway_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
