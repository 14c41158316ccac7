# The operator's verbs. `make dev` runs the mesh as local processes; `make test` installs what it needs and tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
APT_PACKAGES := mosquitto redis-server
export UV_LINK_MODE ?= copy

.PHONY: help deps system-deps python-deps dev test lint format clean up down logs ps loadtest bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

system-deps: ## install mosquitto and redis-server through apt-get when missing
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  $$SUDO systemctl disable --now mosquitto redis-server >/dev/null 2>&1 || true; \
	fi

python-deps: ## install uv when missing, then the locked workspace
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --locked --quiet

deps: system-deps python-deps

dev: deps ## run the whole mesh as local processes (Ctrl-C stops it)
	@$(UV) run --locked python -m devstack up

lint: python-deps ## ruff
	@$(UV) run --locked ruff check .
	@$(UV) run --locked ruff format --check .

format: python-deps
	@$(UV) run --locked ruff check --fix .
	@$(UV) run --locked ruff format .

test: deps lint ## install what is missing, lint, run every test over real processes
	@$(UV) run --locked pytest

# -- containers (Docker Compose; see docs/operations.md) ---------------------------------------------------------
COMPOSE ?= docker compose
service ?=

up: ## start the stack in containers (Docker Compose)
	$(COMPOSE) up -d --build --wait $(service)

down: ## stop the containers
	$(COMPOSE) down $(service)

logs: ## follow container logs (service=x for one)
	$(COMPOSE) logs -f $(service)

ps: ## list the containers and their health
	$(COMPOSE) ps

# -- load (see docs/benchmarks.md) ---------------------------------------------------------------------------------
loadtest: deps ## headless Locust run against a local mesh; reports in reports/loadtest/
	@$(UV) run --locked python -m loadtests loadtest

bench: deps ## side-by-side benchmark (floor, binding, HTTP face, peers, pools); report in reports/bench/
	@$(UV) run --locked python -m loadtests bench

clean: ## remove local run data
	rm -rf run reports .pytest_cache
