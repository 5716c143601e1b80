# The two commands of the README. Both create (or reuse) .venv and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medtransfer-installed

.PHONY: demo test lint benchmark pictures clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The study's question on the bundled digits (configs/demo.yaml): a sweep, then its table.
demo: $(STAMP)
	$(BIN)/medtransfer sweep configs/demo.yaml
	$(BIN)/medtransfer report tensorboard_logs/demo_transfer

# The README's pictures (docs/images/*.png), each made by its command on digits: three
# runs that differ only in --freeze (1, 0.5, 0), then tsne, similarity and gradcam on them.
# --deterministic: the same pictures on every run of the target (about 3 minutes on 2 cores).
PICTURES := build/pictures
FREEZES := 1.0 0.5 0.0
pictures: $(STAMP)
	rm -rf $(PICTURES)
	for freeze in $(FREEZES); do \
	  $(BIN)/python -m medtransfer run --dataset digits --net small_cnn --epochs 1+3 \
	    --image-size 32 --batch-size 8 --lr 0.0005 --deterministic --freeze $$freeze \
	    --experiment freeze-$$freeze --logdir $(PICTURES)/logs \
	    --data-dir $(PICTURES)/datasets || exit 1; \
	done
	$(BIN)/python -m medtransfer tsne $(foreach f,$(FREEZES),$(PICTURES)/logs/freeze-$(f)/*) \
	  --max-images 500 --out $(PICTURES)/out
	$(BIN)/python -m medtransfer similarity $(foreach f,$(FREEZES),$(PICTURES)/logs/freeze-$(f)/*) \
	  --out $(PICTURES)/out
	$(BIN)/python -m medtransfer gradcam $(PICTURES)/logs/freeze-0.0/* --images 12 \
	  --out $(PICTURES)/out
	mkdir -p docs/images
	cp $(PICTURES)/out/tsne.png $(PICTURES)/out/similarity.png $(PICTURES)/out/gradcam.png \
	  docs/images/

lint: $(STAMP)
	$(BIN)/ruff check medtransfer tests benchmarks

# Both cores: each pytest-xdist worker is a process of its own (tests make their own temp
# dirs and ports, so they run side by side); whole modules go to a worker, the ones that
# took longest last time first (tests/conftest.py), so a module's trained run is built once
# and both workers finish together; the ten slowest tests are listed at the end.
PYTEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=10

# Every figure of benchmarks/ (roughly half an hour on 2 quiet cores); writes benchmarks/results.md.
benchmark: $(STAMP)
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
