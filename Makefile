# One entry point for people and CI. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COMPOSE ?= docker compose
API_HOST ?= 0.0.0.0
API_PORT ?= 8000
# `make run LLM=local` also serves a small real model with llama.cpp (no Docker, no Ollama).
LLM ?=
LOCAL_LLM_PORT ?= 8080
PYTEST_ARGS ?=
# `make bench BENCH_ARGS=--quick`: a one-minute smoke run that writes nothing.
BENCH_ARGS ?=


.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# The first install takes a minute or so: pip shows its progress then; later updates are quiet.
$(STAMP): requirements-dev.lock
	@if test -x $(BIN)/python; then \
	  echo "Updating $(VENV) from requirements-dev.lock..."; quiet=--quiet; \
	else \
	  echo "Creating $(VENV) and installing the locked dependencies (once; about a minute)..."; \
	  $(PYTHON) -m venv $(VENV) || exit 1; quiet=; \
	fi; \
	$(BIN)/python -m pip install $$quiet --disable-pip-version-check --require-hashes --no-deps \
	  -r requirements-dev.lock
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the locked dependencies

project_init: install ## Bootstrap the local environment (seed name for `install`)
	@test -f .env || cp .env.example .env

lock: install ## Re-pin requirements*.lock from pyproject.toml (with hashes)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes -q -o requirements-dev.lock

prestart: install ## Create the database if missing and apply migrations
	$(BIN)/python scripts/prestart.py

alembic_upgrade: install ## Apply migrations
	$(BIN)/python -m alembic upgrade head

alembic_migrate: install ## Generate a migration: make alembic_migrate msg="describe change"
	@test -n "$(msg)" || (echo 'usage: make alembic_migrate msg="describe change"' && exit 2)
	$(BIN)/python -m alembic revision --autogenerate -m "$(msg)"

dev_admin_key: install ## In DEV, create an admin key in .env when there is none (printed once)
	@$(BIN)/python -m scripts.dev_admin_key

run: prestart dev_admin_key ## Run the service: migrations, then the API and a worker (LLM=local: + a small model)
	API_HOST=$(API_HOST) API_PORT=$(API_PORT) BIN=$(BIN) LOCAL_LLM_PORT=$(LOCAL_LLM_PORT) \
	WITH_LOCAL_LLM=$(if $(filter local,$(LLM)),1,0) scripts/run_local.sh

run_api: prestart dev_admin_key ## Run the API alone
	$(BIN)/python -m uvicorn --factory api.main:create_app --host $(API_HOST) --port $(API_PORT) --no-access-log

run_worker: install ## Run one worker
	$(BIN)/python -m worker

run_dev: prestart dev_admin_key ## Run the API with auto-reload
	$(BIN)/python -m uvicorn --factory api.main:create_app --host $(API_HOST) --port $(API_PORT) --reload --no-access-log

test: install ## Run the whole test suite against the local PostgreSQL and Redis
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run_test: test ## Seed name for `test`

bench: install ## Benchmark API and worker beside a floor app (minutes; never in `make test`): docs/benchmarks.md
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install ## Format check, lint and strict type check
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: install ## Apply formatting and safe lint fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

routes_doc: install ## Regenerate docs/routes.md from the running app (needs PostgreSQL and Redis)
	$(BIN)/python -m scripts.routes_doc

db_up: ## Start PostgreSQL and Redis in Docker
	$(COMPOSE) up -d --wait postgres redis

db_down: ## Stop PostgreSQL and Redis
	$(COMPOSE) stop postgres redis

llm_up: ## Start Ollama in Docker and pull OLLAMA_DEFAULT_MODEL
	$(COMPOSE) up -d --wait ollama
	$(COMPOSE) run --rm ollama-pull

llm_down: ## Stop Ollama
	$(COMPOSE) stop ollama

llm_local: install ## Serve SmolLM2-135M with llama.cpp on LOCAL_LLM_PORT and register it on the API
	$(BIN)/python scripts/local_llm.py serve --port $(LOCAL_LLM_PORT) \
	  --register-api http://127.0.0.1:$(API_PORT)

obs_up: ## Start Jaeger (traces at http://localhost:16686)
	$(COMPOSE) --profile obs up -d jaeger

obs_down: ## Stop Jaeger
	$(COMPOSE) --profile obs stop jaeger

stack_up: ## Start the whole stack in Docker (api, worker, postgres, redis, ollama) and pull the model
	$(COMPOSE) up -d --build
	$(COMPOSE) run --rm ollama-pull

stack_down: ## Stop the whole stack
	$(COMPOSE) --profile obs down

.PHONY: help install project_init lock prestart dev_admin_key alembic_upgrade alembic_migrate run run_api \
	run_worker run_dev test run_test lint format db_up db_down llm_up llm_down llm_local obs_up obs_down \
	stack_up stack_down routes_doc mutation bench

mutation: install ## Mutation testing of the core with mutmut (minutes; see docs/testing.md), then the kill rate
	rm -rf mutants
	$(BIN)/mutmut run --max-children $$(nproc) || true
	$(BIN)/python -m tests.support.mutation_report
