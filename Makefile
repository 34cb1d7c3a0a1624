# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install tilestream with its extras, run the main job
#   make test   - create .venv, install tilestream with its extras, run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test test-nojit lint typecheck bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=24" setuptools wheel
	$(BIN)/python -m pip install -e ".[dev,examples]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/train_glomeruli.py

test: $(STAMP)
	$(BIN)/python -m pytest tests
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest tests -m kernels -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install -e ".[dev,examples,bench]"
	$(BIN)/python -m pytest benchmarks --benchmark-columns=min,median,mean,ops,rounds

docs: $(STAMP)
	$(BIN)/python -m pip install -e ".[docs]"
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .benchmarks
