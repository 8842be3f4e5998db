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

.PHONY: setup run test test-all lint serve bench loop clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	$(BIN)/python -m fusionrec.cli.run_demo

lint: setup
	$(BIN)/ruff check src tests serving components pipelines benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -m "not slow and not bench" -q

test-all: setup
	$(BIN)/pytest -q

serve: setup
	$(BIN)/fusionrec serve

bench: setup
	$(BIN)/python -m benchmarks.run_all

loop: setup
	$(BIN)/fusionrec loop

clean:
	rm -rf work .bentoml
