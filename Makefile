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
	@echo; echo "== best configuration (work/demo/search/best.yaml) =="; cat work/demo/search/best.yaml
	@echo; echo "== outputs =="
	@echo "  data, ingested, split, features: work/demo/{data,ingested,split,features}"
	@echo "  search study + plots:            work/demo/search"
	@echo "  trained model:                   work/demo/model"
	@echo "  metrics + plots:                 work/demo/evaluation (dvc metrics show)"
	@echo "  packaged model:                  work/demo/package (BentoML store: .bentoml); serve it with: make serve"

lint: setup
	$(BIN)/ruff check src tests serving components pipelines harness benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -m "not slow and not bench" -q

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

loop: setup
	$(BIN)/fusionrec loop

clean:
	rm -rf work .bentoml dist
