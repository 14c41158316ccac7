# The operator's verbs. `make dev` runs the mesh as local processes; `make test` installs what it needs and tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
APT_PACKAGES := mosquitto mosquitto-clients redis-server postgresql chromium chromium-driver
export UV_LINK_MODE ?= copy

.PHONY: help deps system-deps python-deps validate-deps certs identity identity-remove bridge dev new-agent test-agent test lint format clean up down logs ps container-test k8s-secrets k8s-pin-images loadtest bench bench-scale chaos asyncapi

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

system-deps: ## install mosquitto (broker and clients), redis-server, postgresql, chromium and chromium-driver (the console's browser test) through apt-get when missing
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
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

# The deployment validators the tests run (tests/test_deploy_artifacts.py, tests/test_k8s_policy.py). check-jsonschema,
# kubernetes-validate and hadolint come locked with the workspace (python-deps); checkov has an environment of its
# own (below); dclint and @asyncapi/specs (the AsyncAPI 3.0 JSON schema) come from npm, pinned by
# infra/validate/package-lock.json and installed with `npm ci` whenever that lock is newer than node_modules;
# kubectl (with kustomize built in) and Node.js come with the machine.
VALIDATE_DIR := infra/validate
CHECKOV_ENV := $(VALIDATE_DIR)/checkov-env

validate-deps: $(VALIDATE_DIR)/node_modules/.package-lock.json $(CHECKOV_ENV)/.installed ## install the deployment validators (dclint and the AsyncAPI schema via npm ci, checkov)
	@command -v kubectl >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq --no-install-recommends kubectl >/dev/null 2>&1 || true; }
	@command -v kubectl >/dev/null || { echo "validate-deps: kubectl (with kustomize) is needed to render k8s/" >&2; exit 1; }

# checkov, the policy scanner (tests/test_k8s_policy.py), in a virtual environment of its own: its dependencies
# conflict with the workspace's, so it stays out of uv.lock; infra/validate/checkov.txt pins every package by hash
$(CHECKOV_ENV)/.installed: $(VALIDATE_DIR)/checkov.txt
	@$(UV) venv --quiet --allow-existing --python 3.11 $(CHECKOV_ENV)
	@VIRTUAL_ENV=$(CURDIR)/$(CHECKOV_ENV) $(UV) pip sync --quiet --require-hashes $(VALIDATE_DIR)/checkov.txt
	@touch $@

$(VALIDATE_DIR)/node_modules/.package-lock.json: $(VALIDATE_DIR)/package-lock.json $(VALIDATE_DIR)/package.json
	@command -v npm >/dev/null || { echo "validate-deps: Node.js >= 20.19 with npm is needed for dclint" >&2; exit 1; }
	@cd $(VALIDATE_DIR) && npm ci --no-audit --no-fund --loglevel=error

certs: python-deps ## create the dev CA, broker certificate and one identity per service and agent (idempotent)
	@$(UV) run --locked python -m devstack certs

# An outside participant (a requester or agent nobody here runs) on the running broker: docs/security.md.
ROLE ?=
POOL ?=
MQTT_HOST ?= 127.0.0.1
MQTT_PORT ?= 8883

identity: python-deps ## admit an outside participant on the running broker (make identity NAME=x ROLE=requester|agent)
	@test -n "$(NAME)" -a -n "$(ROLE)" || { echo "usage: make identity NAME=x ROLE=requester|agent [POOL=p]" >&2; exit 2; }
	@$(UV) run --locked python -m devstack certs >/dev/null  # the PKI (and mesh-admin) first, as `make certs`
	@$(UV) run --locked python -m devstack identity "$(NAME)" --role "$(ROLE)" $(if $(POOL),--pool "$(POOL)") \
	  --host "$(MQTT_HOST)" --port "$(MQTT_PORT)"

identity-remove: python-deps ## revoke an outside identity at once (make identity-remove NAME=x)
	@test -n "$(NAME)" || { echo "usage: make identity-remove NAME=x" >&2; exit 2; }
	@$(UV) run --locked python -m devstack identity-remove "$(NAME)" --host "$(MQTT_HOST)" --port "$(MQTT_PORT)"

# An edge site's broker bridged to this (central) one: docs/operations.md "Past one broker".
SITE ?=
AGENTS ?=
POOLS ?=
CENTRAL ?=
BRIDGE_DIR ?= run/bridge-$(SITE)

bridge: python-deps ## admit an edge site's bridge centrally, write its broker's folder (make bridge SITE=x AGENTS=a,b CENTRAL=host:port)
	@test -n "$(SITE)" -a -n "$(AGENTS)" -a -n "$(CENTRAL)" || { echo "usage: make bridge SITE=x AGENTS=a,b CENTRAL=host:port [POOLS=p]" >&2; exit 2; }
	@$(UV) run --locked python -m devstack certs >/dev/null
	@$(UV) run --locked python -m devstack bridge "$(SITE)" --agents "$(AGENTS)" --pools "$(POOLS)" --central "$(CENTRAL)" \
	  --out "$(BRIDGE_DIR)" --mount /mosquitto/bridge --host "$(MQTT_HOST)" --port "$(MQTT_PORT)"

dev: deps ## run the whole mesh as local processes (Ctrl-C stops it; COORDINATORS=2 runs two coordinators)
	@$(UV) run --locked python -m devstack up --coordinators $(or $(COORDINATORS),1)

# SKILL, SKILL_NAME and DESCRIPTION are optional; read from the environment (make exports command-line variables),
# so quotes and spaces in them reach the scaffold unchanged.
new-agent: python-deps ## scaffold services/agents/NAME and wire it in (NAME=x [SKILL=x.y SKILL_NAME=.. DESCRIPTION=..])
	@test -n "$(NAME)" || { echo "usage: make new-agent NAME=my-agent [SKILL=id SKILL_NAME=name DESCRIPTION=text]" >&2; exit 2; }
	@$(UV) run --locked python -m devstack new-agent "$(NAME)" \
	  --skill "$${SKILL:-}" --skill-name "$${SKILL_NAME:-}" --description "$${DESCRIPTION:-}"

test-agent: python-deps ## one agent's tests, in seconds: in memory, then its process on a real broker (NAME=x)
	@test -n "$(NAME)" && test -d "services/agents/$(NAME)/tests" || { echo "usage: make test-agent NAME=<a folder of services/agents with tests>" >&2; exit 2; }
	@$(UV) run --locked pytest -q "services/agents/$(NAME)"

lint: python-deps ## ruff
	@$(UV) run --locked ruff check .
	@$(UV) run --locked ruff format --check .

format: python-deps
	@$(UV) run --locked ruff check --fix .
	@$(UV) run --locked ruff format .

asyncapi: python-deps ## regenerate docs/asyncapi.yaml and docs/asyncapi.md from the code (tests/test_asyncapi.py holds them so)
	@$(UV) run --locked python -m devstack.asyncapi docs

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
	@MESH_COMPOSE_VARIANTS=sqlite,postgres $(UV) run --locked pytest tests/containers

# -- Kubernetes (see docs/operations.md) ---------------------------------------------------------------------------
k8s-secrets: certs ## create or update the Kubernetes Secrets (TLS, identities, API keys) from infra/broker-certs
	@set -o pipefail; bash k8s/secrets.sh | kubectl apply --server-side -f -

k8s-pin-images: ## at release, pin the prod overlay's images by digest (IMAGES="a2a-mesh/coordinator=REPO@sha256:... ...")
	@test -n "$(IMAGES)" || { echo 'usage: make k8s-pin-images IMAGES="NAME=REPOSITORY@sha256:DIGEST ..." (docs/operations.md)' >&2; exit 2; }
	@bash k8s/pin-images.sh $(IMAGES)

# -- load (see docs/benchmarks.md) ---------------------------------------------------------------------------------
loadtest: deps ## headless Locust run against a local mesh; reports in reports/loadtest/
	@$(UV) run --locked python -m loadtests loadtest

bench: deps ## side-by-side benchmark (floor, binding, HTTP face, peers, pools); report in reports/bench/
	@$(UV) run --locked python -m loadtests bench

bench-scale: deps ## scaling figures: agent replicas 1-8, coordinators 1-2, stored tasks 10^4 and 10^6, open streams 10^3 and 10^4 (~15 min); reports/bench/scale/
	@$(UV) run --locked python -m loadtests bench-scale

CHAOS_SECONDS ?= 180
CHAOS_SEED ?= 13
chaos: deps certs ## load under a seeded kill/restart schedule (CHAOS_SECONDS, CHAOS_SEED); prints the tally
	@CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_SEED=$(CHAOS_SEED) $(UV) run --locked pytest tests/faults/test_chaos.py -s

clean: ## remove local run data
	rm -rf run reports .pytest_cache
