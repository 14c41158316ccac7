# The operator's verbs. `make dev` runs the mesh as local processes; `make test` installs what it needs and tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
APT_PACKAGES := mosquitto mosquitto-clients redis-server postgresql
export UV_LINK_MODE ?= copy

.PHONY: help deps system-deps python-deps validate-deps certs dev new-agent test lint format clean up down logs ps container-test k8s-secrets loadtest bench

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

system-deps: ## install mosquitto (broker and clients), redis-server and postgresql through apt-get when missing
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  $$SUDO systemctl disable --now mosquitto redis-server postgresql >/dev/null 2>&1 || true; \
	fi

python-deps: ## install uv when missing, then the locked workspace
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --locked --quiet

deps: system-deps python-deps

# The deployment validators the tests run (tests/test_deploy_artifacts.py). check-jsonschema, kubernetes-validate
# and hadolint come locked with the workspace (python-deps); dclint comes from npm, pinned by
# infra/validate/package-lock.json and installed with `npm ci` whenever that lock is newer than node_modules;
# kubectl (with kustomize built in) and Node.js come with the machine.
VALIDATE_DIR := infra/validate

validate-deps: $(VALIDATE_DIR)/node_modules/.package-lock.json ## install the deployment validators (dclint via npm ci)
	@command -v kubectl >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq --no-install-recommends kubectl >/dev/null 2>&1 || true; }
	@command -v kubectl >/dev/null || { echo "validate-deps: kubectl (with kustomize) is needed to render k8s/" >&2; exit 1; }

$(VALIDATE_DIR)/node_modules/.package-lock.json: $(VALIDATE_DIR)/package-lock.json $(VALIDATE_DIR)/package.json
	@command -v npm >/dev/null || { echo "validate-deps: Node.js >= 20.19 with npm is needed for dclint" >&2; exit 1; }
	@cd $(VALIDATE_DIR) && npm ci --no-audit --no-fund --loglevel=error

certs: python-deps ## create the dev CA, broker certificate and one identity per service and agent (idempotent)
	@$(UV) run --locked python -m devstack certs

dev: deps ## run the whole mesh as local processes (Ctrl-C stops it)
	@$(UV) run --locked python -m devstack up

new-agent: python-deps ## scaffold services/agents/NAME and wire it in everywhere (make new-agent NAME=my-agent)
	@test -n "$(NAME)" || { echo "usage: make new-agent NAME=my-agent" >&2; exit 2; }
	@$(UV) run --locked python -m devstack new-agent "$(NAME)"

lint: python-deps ## ruff
	@$(UV) run --locked ruff check .
	@$(UV) run --locked ruff format --check .

format: python-deps
	@$(UV) run --locked ruff check --fix .
	@$(UV) run --locked ruff format .

test: deps validate-deps lint certs ## install what is missing, lint, run every test over real processes
	@$(UV) run --locked pytest

# -- containers (Docker Compose or Podman; see docs/operations.md) ------------------------------------------------
# COMPOSE="podman-compose" (or "podman compose") runs the same stack with Podman. Compose reads .env from here; its
# COMPOSE_FILE (compose.extend.yaml after compose.yaml) is exported too, for podman-compose, which reads it only from
# the environment. The project name is given explicitly, since podman-compose 1.0 ignores compose.yaml's `name:`.
COMPOSE ?= docker compose
COMPOSE_PROJECT ?= a2a-mesh
UP_TIMEOUT ?= 300
service ?=
export COMPOSE_FILE ?= $(shell sed -n 's/^COMPOSE_FILE=//p' .env)
# the engine that runs the containers, for the health wait: docker, or podman for podman-compose / podman compose
ENGINE := $(if $(findstring podman,$(firstword $(COMPOSE))),podman,docker)
# Buildah's own (OCI) image format has no HEALTHCHECK: build Docker's, as Docker does
export BUILDAH_FORMAT ?= docker

up: certs ## build and start the stack in containers, waiting until every one is healthy (service=x for one)
	@# containers run as their own users and read their identity's files through bind mounts: make the files
	@# readable (infra/broker-certs itself stays 0700, so no other user of this machine can reach them; ca.key stays 0600)
	@find infra/broker-certs -type f ! -name ca.key ! -perm -004 -exec chmod a+r {} +
	$(COMPOSE) -p $(COMPOSE_PROJECT) up -d --build $(service)
	@# the engine may not wait by itself (podman-compose has no --wait): poll every container's health, bounded
	@bash infra/containers/wait-healthy.sh $(ENGINE) $(COMPOSE_PROJECT) $(UP_TIMEOUT) $(service)

down: ## stop and remove the containers (service=x for one); the volumes, and so the data, stay
	$(COMPOSE) -p $(COMPOSE_PROJECT) down $(service)

logs: ## follow container logs (service=x for one)
	$(COMPOSE) -p $(COMPOSE_PROJECT) logs -f $(service)

ps: ## list the containers and their health
	$(COMPOSE) -p $(COMPOSE_PROJECT) ps

# Podman from Debian's packages, base images built locally from Debian's packages (debootstrap; cached by recipe),
# every image built and the stack run and checked on free ports: tests/containers/test_compose_stack.py
container-test: python-deps certs ## build every image with Podman and test the Compose stack (no registry needed)
	@$(UV) run --locked pytest tests/containers

# -- Kubernetes (see docs/operations.md) ---------------------------------------------------------------------------
k8s-secrets: certs ## create or update the Kubernetes Secrets (TLS, identities, API keys) from infra/broker-certs
	@set -o pipefail; bash k8s/secrets.sh | kubectl apply --server-side -f -

# -- load (see docs/benchmarks.md) ---------------------------------------------------------------------------------
loadtest: deps ## headless Locust run against a local mesh; reports in reports/loadtest/
	@$(UV) run --locked python -m loadtests loadtest

bench: deps ## side-by-side benchmark (floor, binding, HTTP face, peers, pools); report in reports/bench/
	@$(UV) run --locked python -m loadtests bench

clean: ## remove local run data
	rm -rf run reports .pytest_cache
