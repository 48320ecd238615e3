# The two commands: `make demo` and `make test`. Both create .venv if missing and install
# the package with what they need, idempotently (a stamp file tracks setup.cfg changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.drone-installed
# The CPU wheel of PyTorch. CUDA users: install the torch build for their CUDA into .venv
# first (see README); it is then kept, as this step only runs when torch is missing.
TORCH_SPEC ?= torch==2.13.0

# `make test-compat`: the suite again, in a second venv, in the environment Gadgetron's Docker images
# run Python gadgets in: the versions of Gadgetron's conda environment (numpy 1.26.4, ismrmrd-python
# 1.14.0, xsdata 24.5, scipy 1.13.1, gadgetron-python 1.4.1), pinned by the Gadgetron image's
# constraints file. Those images have Python 3.10; the compat venv has Python 3.11, because PyPI's
# only Linux torch 2.13 wheel for Python 3.10 is the CUDA build (~4.6 GB installed with its CUDA
# packages), and the packages above, not Python, are what change the behaviour. torchsim (a
# test-only cross-check) needs numpy >= 2: it is left out (the other test requirements are read
# from setup.cfg) and its test skips.
COMPAT_PYTHON ?= python3.11
COMPAT_VENV ?= .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.drone-installed
COMPAT_CONSTRAINTS := docker/constraints-gadgetron.txt

.PHONY: test test-all test-compat demo install bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,train,gadgets,replay,serve,scanner]"
	touch $(STAMP)

$(COMPAT_PY):
	$(COMPAT_PYTHON) -m venv $(COMPAT_VENV)

$(COMPAT_STAMP): setup.cfg pyproject.toml $(COMPAT_CONSTRAINTS) | $(COMPAT_PY)
	$(COMPAT_PY) -m pip install --quiet --upgrade pip
	$(COMPAT_PY) -c "import torch" 2>/dev/null || $(COMPAT_PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(COMPAT_PY) -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
	  reqs = [r.strip() for r in c['options.extras_require']['test'].splitlines()]; \
	  print('\n'.join(r for r in reqs if r and not r.startswith('torchsim')))" > $(COMPAT_VENV)/test-requirements.txt
	$(COMPAT_PY) -m pip install --quiet -c $(COMPAT_CONSTRAINTS) -r $(COMPAT_VENV)/test-requirements.txt \
	  -e ".[train,gadgets,replay,serve,scanner]"
	touch $(COMPAT_STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m "not gpu"

test-compat: $(COMPAT_STAMP)
	$(COMPAT_PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/drone demo

bench: $(STAMP)
	$(PY) benchmarks/bench_epg.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build *.egg-info .pytest_cache

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(PY) -m ruff check --select E,F,W --line-length 120 drone_core gadgets training cli tests benchmarks
	$(PY) -m mypy drone_core training cli
