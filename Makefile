# Set-up and the two quick-start jobs. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pyproject.toml asks for torch>=2.5. Installing this exact CPU build first, alone, keeps a fresh machine off
# PyPI's multi-GB CUDA build (the local wheel is found through pip's find-links); .ci/run checks it.
TORCH := torch==2.13.0

.PHONY: setup demo test lint clean

$(BIN)/pyramidal: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev,baselines,onnx,web]"
	@touch $@

setup: $(BIN)/pyramidal

demo: setup
	$(BIN)/pyramidal demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
