# fusionrec: `make run` (set up + whole pipeline on the demo data) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export BENTOML_HOME := $(CURDIR)/.bentoml
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test test-all lint serve bench loop clean wheel

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	dvc repro
	@echo; echo "== evaluation (work/demo/evaluation/comparison.md) =="; cat work/demo/evaluation/comparison.md
	@echo; echo "== headline (dvc metrics show) =="; dvc metrics show
	@echo; echo "== trained: params.yaml's train section + the search's overlay (work/demo/search/best_overlay.yaml) =="; cat work/demo/search/best_overlay.yaml
	@echo; echo "== outputs =="
	@echo "  data, ingested, split, features: work/demo/{data,ingested,split,features}"
	@echo "  search overlay, study + plots:   work/demo/search (best_overlay.yaml, study/)"
	@echo "  trained model:                   work/demo/model (per-epoch curve: work/demo/train)"
	@echo "  metrics + plots:                 work/demo/evaluation (dvc metrics show, dvc plots show)"
	@echo "  packaged model:                  work/demo/package (BentoML store: .bentoml); serve it with: make serve"

lint: setup
	$(BIN)/ruff check src tests serving components pipelines harness benchmarks tools
	$(BIN)/mypy

# Test files are spread over TEST_WORKERS processes (pytest-xdist), a file's tests kept together so its
# module fixtures (a trained model, a pipeline run) are built once; TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -m "not slow and not bench" -q -n $(TEST_WORKERS) --dist loadfile

test-all: setup
	$(BIN)/pytest -q

# The wheel every image installs (components/Dockerfile builds the same in its first stage).
wheel: setup
	rm -rf dist build && $(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation --wheel-dir dist .

serve: setup
	$(BIN)/fusionrec serve

# Benchmarks write JSON + markdown to benchmarks/reports/ (minutes to an hour; ml100k-mm needed for most).
BENCHMARKS := ingest featurize baselines quality search serving loop monitor
bench: setup
	for b in $(BENCHMARKS); do $(BIN)/python -m benchmarks.$$b || exit 1; done

# The closed-loop demo: params.yaml with the demo's declared settings (harness/demo_loop.yaml) laid over it.
LOOP_OVERLAY ?= harness/demo_loop.yaml
loop: setup
	$(BIN)/fusionrec loop --params params.yaml --overlay $(LOOP_OVERLAY)

clean:
	rm -rf work .bentoml dist
