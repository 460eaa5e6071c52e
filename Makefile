# Set-up and the two quick-start jobs. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned in pyproject.toml; installing it first, alone, keeps pip on the local CPU wheel.
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
