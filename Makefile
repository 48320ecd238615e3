# The two commands: `make demo` and `make test`. Both create .venv if missing and install
# the package with what they need, idempotently (a stamp file tracks setup.cfg changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.drone-installed
# The CPU wheel of PyTorch. CUDA users: install the torch build for their CUDA into .venv
# first (see README); it is then kept, as this step only runs when torch is missing.
TORCH_SPEC ?= torch==2.13.0

.PHONY: test test-all demo install bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,train,gadgets,replay,serve]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m "not gpu"

demo: $(STAMP)
	$(VENV)/bin/drone demo

bench: $(STAMP)
	$(PY) benchmarks/bench_epg.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(PY) -m ruff check --select E,F,W --line-length 120 drone_core gadgets training cli tests benchmarks
	$(PY) -m mypy drone_core training cli
