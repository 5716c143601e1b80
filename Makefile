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

# A real experiment on the bundled digits dataset: small_cnn, 1+4 epochs at 32x32.
demo: $(STAMP)
	$(BIN)/medtransfer run --dataset digits --net small_cnn --epochs 1+4 --image-size 32 \
		--batch-size 64 --lr 1e-3 --experiment demo

lint: $(STAMP)
	$(BIN)/ruff check medtransfer tests benchmarks

test: lint
	$(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean-venv:
	rm -rf $(VENV)
