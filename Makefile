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

# The full suite: what CI runs. Lint and type checks first (seconds), then every test but the benchmark smoke runs,
# on two workers (most of a test's time is single-threaded conversion and tracing), a file at a time: a module's
# fixtures (trained models) are built once, not again on a worker that steals half its tests.
test: lint $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not benchmark"

# ruff (style, imports, the 120-character limit) and mypy (the library's types).
lint: $(STAMP)
	$(BIN)/python -m ruff check tfjoint tests benchmarks examples
	$(BIN)/python -m mypy tfjoint

# The inner loop: no conversions (a conversion in a fast test fails it), CLI subprocesses, examples or notebook.
test-fast: lint $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not benchmark"

# Re-executes the tutorial in place, so the committed notebook shows its outputs.
notebook: $(STAMP)
	$(BIN)/python notebooks/execute.py notebooks/tutorial.ipynb

# Every benchmark, one after the other (several hours on 2 cores); results in benchmarks/results/. First the
# benchmarks' smoke runs and the latency tests, which `make test` leaves out.
benchmark: $(STAMP)
	$(BIN)/python -m pytest -q -m benchmark
	$(BIN)/python benchmarks/joint_vs_sequential.py --out=benchmarks/results
	$(BIN)/python benchmarks/channels.py --out=benchmarks/results
	$(BIN)/python benchmarks/allocation.py --out=benchmarks/results
	$(BIN)/python benchmarks/xla.py --out=benchmarks/results
	$(BIN)/python benchmarks/joint_step.py --out=benchmarks/results
	$(BIN)/python benchmarks/budget.py --out=benchmarks/results
	$(BIN)/python benchmarks/prepare_export_time.py --out=benchmarks/results
	$(BIN)/python benchmarks/zoo.py --out=benchmarks/results
	$(BIN)/python benchmarks/transformers.py --out=benchmarks/results
	$(BIN)/python benchmarks/weight_sharing.py --out=benchmarks/results
	$(BIN)/python benchmarks/what_you_keep.py --out=benchmarks/results

clean:
	rm -rf $(VENV) demo_out build *.egg-info
