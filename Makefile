# HubbleCLIP. `make demo` and `make test` work on a fresh machine from a clean clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-slow demo bench bench-gpu lint chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned, from this machine's wheel store: no resolver may pull another build
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu" tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow" tests

demo: $(STAMP)
	$(BIN)/hubbleclip demo --data ./demo-data

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# On an H100/H200 box: every GPU check in one run (benchmarks/gpu_checks.sh says what it needs).
bench-gpu:
	bash benchmarks/gpu_checks.sh

chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m "chaos" tests

lint: $(STAMP)
	$(BIN)/ruff check flows tasks schemas storage tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache demo-data
