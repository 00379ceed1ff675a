# kinema: `make demo` generates a video from the shipped model; `make test` runs the test suite.
# Both create .venv and install the pinned CPU torch wheel *before* kinema, so pip never pulls CUDA.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0
PROMPT ?= a red circle moving right

.PHONY: demo test test-slow eval bench train clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.kinema: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.kinema-dev: $(VENV)/.kinema
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.kinema-bench: $(VENV)/.kinema
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $@

demo: $(VENV)/.kinema
	$(BIN)/kinema generate "$(PROMPT)" -o outputs/demo.mp4 --gif outputs/demo.gif

test: $(VENV)/.kinema-dev
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.kinema-dev
	$(BIN)/python -m pytest -q -m slow

eval: $(VENV)/.kinema
	$(BIN)/kinema eval shapes --seeds 4 --json outputs/eval_shapes.json

bench: $(VENV)/.kinema-bench
	$(BIN)/python benchmarks/cpu_bf16.py
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/dit_compression.py

train: $(VENV)/.kinema
	$(BIN)/kinema train configs/shapes.yaml --resume

clean:
	rm -rf $(VENV) outputs
