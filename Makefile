# `make demo` and `make test` each create/refresh .venv and install tfjoint with
# its pinned dependencies first, so they work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint notebook benchmark install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[app,micro,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tfjoint --out=demo_out

# The full suite: what CI runs. Lint and type checks first (seconds), then every test.
test: lint $(STAMP)
	$(BIN)/python -m pytest -q

# ruff (style, imports, the 120-character limit) and mypy (the library's types).
lint: $(STAMP)
	$(BIN)/python -m ruff check tfjoint tests benchmarks examples
	$(BIN)/python -m mypy tfjoint

# The inner loop: no conversions, CLI subprocesses, examples or notebook.
test-fast: lint $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Re-executes the tutorial in place, so the committed notebook shows its outputs.
notebook: $(STAMP)
	$(BIN)/python notebooks/execute.py notebooks/tutorial.ipynb

# Every benchmark, one after the other (about 2 hours on 2 cores); results in benchmarks/results/.
benchmark: $(STAMP)
	$(BIN)/python benchmarks/joint_vs_sequential.py --out=benchmarks/results
	$(BIN)/python benchmarks/channels.py --out=benchmarks/results
	$(BIN)/python benchmarks/allocation.py --out=benchmarks/results
	$(BIN)/python benchmarks/xla.py --out=benchmarks/results
	$(BIN)/python benchmarks/joint_step.py --out=benchmarks/results
	$(BIN)/python benchmarks/budget.py --out=benchmarks/results
	$(BIN)/python benchmarks/prepare_export_time.py --out=benchmarks/results
	$(BIN)/python benchmarks/zoo.py --out=benchmarks/results

clean:
	rm -rf $(VENV) demo_out build *.egg-info
