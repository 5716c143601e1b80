# The two commands of the README. Both create (or reuse) .venv and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medtransfer-installed

.PHONY: demo test lint benchmark clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The study's question on the bundled digits (configs/demo.yaml): a sweep, then its table.
demo: $(STAMP)
	$(BIN)/medtransfer sweep configs/demo.yaml
	$(BIN)/medtransfer report tensorboard_logs/demo_transfer

lint: $(STAMP)
	$(BIN)/ruff check medtransfer tests benchmarks

test: lint
	$(BIN)/python -m pytest

# Every figure of benchmarks/ (roughly half an hour on 2 quiet cores); writes benchmarks/results.md.
benchmark: $(STAMP)
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
