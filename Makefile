# prefetch-advisor. On a fresh Debian 12/13 machine, as root:
#   make run    # the main job (installs what it needs)
#   make test   # every test, the real-containerd ones included (what CI runs)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv testbed-deps test test-unit test-e2e run proto bench clean testbed-up testbed-down notebooks figures

help:
	@echo "make run          main job (builds data with the advisor)"
	@echo "make test         all tests (installs venv + testbed first; needs root)"
	@echo "make venv         .venv with the project and dev extras"
	@echo "make testbed-deps runc, containerd >= 1.7, crictl, busybox (testbed/install.sh)"
	@echo "make testbed-up / testbed-down   a long-running testbed for manual crictl use"
	@echo "make notebooks    Jupyter Lab on notebooks/ (analysis of the corpus in data/)"
	@echo "make figures      re-run the notebooks and save their key figures in docs/figures/"
	@echo "make proto | bench | clean"

# Re-run pip only when the dependency list changes.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON): apt-get install python3 python3-venv"; exit 1; }
	@if ! [ -x $(VENV)/bin/pip ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v dpkg-query >/dev/null && \
	     ! dpkg-query -W -f='$${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv; fi; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,notebooks]'
	@touch $@

venv: $(STAMP)

# install.sh is idempotent and checks everything in well under a second once done, so it always
# runs: a stamp could not notice a deleted binary.
testbed-deps:
	testbed/install.sh

# Every test: tests/ (unit and e2e) and the notebooks, each executed top to bottom by nbmake.
test: venv testbed-deps
	$(VENV)/bin/pytest -ra --strict-markers --durations=15 -p no:cacheprovider --nbmake tests notebooks $(PYTEST_ARGS)

test-unit: venv
	$(VENV)/bin/pytest -ra -m 'not e2e' $(PYTEST_ARGS)

test-e2e: venv testbed-deps
	$(VENV)/bin/pytest -ra -m e2e $(PYTEST_ARGS)

# The main job: learn every service's list from data/ into out/lists, then the held-out evaluation.
run: venv
	$(VENV)/bin/prefetch-advisor build data --store out/lists
	$(VENV)/bin/prefetch-advisor evaluate data

notebooks: venv
	$(VENV)/bin/jupyter lab --allow-root --notebook-dir=notebooks

# The notebooks write their key figure only when asked (and only for a recorded corpus).
figures: venv
	PREFETCH_ADVISOR_FIGURES=$(CURDIR)/docs/figures $(VENV)/bin/pytest -q -p no:cacheprovider --nbmake notebooks

# Regenerates protobuf code (recipe owned by agent/nri). Message code only, no gRPC stubs.
# NRI/ttrpc: paths relative to the repo root keep the descriptor names unique.
proto: venv
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. agent/nri/proto/nri.proto agent/nri/proto/ttrpc.proto
	$(PY) -m grpc_tools.protoc -I agent/cri/proto --python_out=agent/cri agent/cri/proto/cri.proto

# Every bench/*.py that is a script (has a __main__ guard); helpers like tracer_common.py are not.
bench: venv testbed-deps
	@set -e; found=0; for b in bench/*.py; do grep -q '__main__' "$$b" || continue; found=1; \
	  echo "== $$b"; PYTHONPATH=. $(PY) "$$b"; done; [ $$found = 1 ] || echo "no benchmarks in bench/"

testbed-up: venv testbed-deps
	$(PY) -m testbed up

testbed-down: venv
	$(PY) -m testbed down

clean:
	-[ -x $(PY) ] && $(PY) -m testbed down
	rm -rf .cache/images .pytest_cache out build
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

# Regenerates the trace corpus in data/ (images, recording with the agent, data card); ~20 min, as root.
# Not part of `make test`; tests/e2e/test_corpus_record.py runs a small version of it.
CORPUS_ARGS ?=
.PHONY: corpus
corpus: venv testbed-deps
	$(PY) -m corpus record --out data $(CORPUS_ARGS)
