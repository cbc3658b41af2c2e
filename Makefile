# `make demo` and `make test` work on a fresh clone: they create .venv with the locked
# dependencies (constraints.txt pins torch==2.13.0, the CPU build on this disk) first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench experiments clean

# Reinstalled whenever the dependencies (pyproject.toml, constraints.txt) or these lines change.
# The `ray` extra is installed so that `make test` runs the Ray executor's tests.
$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,ray]"
	# the μP oracle of tests/test_mup.py; --no-deps: mup lists torchvision and seaborn, which only its
	# coordinate-check plots import, and torchvision would bring a torch build of its own choosing
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt "mup==1.0.0"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/hpconj sweep configs/quickstart.yaml
	$(BIN)/hpconj plot results/quickstart

test: setup
	$(BIN)/python -m pytest -q

# every experiment of experiments/ (experiments/README.md): about 12 min wall, 22 min of CPU on 2 cores
experiments: setup
	$(BIN)/python experiments/run.py

bench: setup
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/gemm_ceiling.py
	$(BIN)/python benchmarks/search.py
	$(BIN)/python benchmarks/session.py

clean:
	rm -rf $(VENV) results/quickstart
