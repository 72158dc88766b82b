# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
# The broker launcher needs only the standard library: it runs before any virtualenv exists.
KAFKA := $(PYTHON) -m devstack.broker
# uv uses the machine's interpreter; it never downloads one.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

.PHONY: venv
venv: $(VENV)/.synced ## create .venv from the lock file

.PHONY: lock
lock: $(UV) ## re-resolve uv.lock after changing pyproject.toml
	$(UV) lock --python $(PYTHON)

.PHONY: lint
lint: venv ## ruff (lint and format check)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: typecheck
typecheck: venv ## mypy --strict on worker/ and devstack/
	$(VENV)/bin/mypy

.PHONY: test
test: lint typecheck deploy-tools ## install from the lock, lint, type-check and run the whole test suite
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Offline deployment checks: pinned tools in .tools/, apart from the project's lock.
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := $(TOOLS)/bin/kustomize
VALIDATE := $(TOOLS)/validate

$(KUSTOMIZE): | $(UV)
	@command -v go >/dev/null || { echo "kustomize: needs Go >= 1.22.7 (or kustomize v5 on PATH)" >&2; exit 1; }
	GOBIN=$(abspath $(TOOLS)/bin) GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
	  go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(VALIDATE)/.installed: deploy/tools/requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VALIDATE)
	$(UV) pip install --quiet --python $(VALIDATE)/bin/python --require-hashes \
	  --requirement deploy/tools/requirements.txt
	touch $@

.PHONY: deploy-tools
deploy-tools: $(KUSTOMIZE) $(VALIDATE)/.installed ## kustomize, checkov, hadolint, kubernetes-validate into .tools/

.PHONY: k8s-generate
k8s-generate: venv ## copy deploy/prometheus/alerts.yaml and the Grafana dashboard into the kustomize base
	$(PY) deploy/k8s/generate.py

.PHONY: deploy-check
deploy-check: venv deploy-tools ## deployment checks only: manifests, Dockerfile, image install and run
	CI=true $(VENV)/bin/pytest tests/deploy $(PYTEST_ARGS)

.PHONY: bench
bench: venv ## benchmarks against a local broker and stub, about ten minutes (BENCH_FULL=1: longer)
	$(PY) -m bench

.PHONY: demo
demo: venv ## run the worker end to end on a local broker and Cognito emulator
	$(PY) -m devstack.demo

.PHONY: kafka-up
kafka-up: ## start a local Kafka broker in the background; prints its bootstrap address last
	@$(KAFKA) up

.PHONY: kafka-down
kafka-down: ## stop the local Kafka broker
	@$(KAFKA) down

.PHONY: clean
clean: kafka-down ## remove the virtualenvs, caches and local broker state
	rm -rf $(VENV) $(TOOLS) .kafka .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis dist
