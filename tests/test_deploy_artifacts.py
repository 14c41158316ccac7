"""The deployment artifacts, checked two ways.

1. By their real validators, on the real files: hadolint on every Dockerfile; the compose-spec schema
   (check-jsonschema's vendored copy) and dclint on the Compose files; `kubectl kustomize` on every overlay, its
   output checked by `kubernetes-validate --strict` offline; each image's locked environment, built the way its
   Dockerfile builds it, imports its entry point. A negative control shows each validator rejects a broken file.
2. Against each other, so the three ways of running the mesh cannot drift apart: Compose, every Kubernetes overlay
   and the local dev runner (devstack's Stack, which `make dev` and the tests use) must agree on the set of services,
   their ports and the names of their settings; the values live in .env alone (k8s/base/mesh.env is its checked
   copy). Each rule is a test below, and every failure says which file to change.
3. Security the same way everywhere: every process connects to the broker with TLS as the same identity in all
   three (one the dev runner issues: Stack.identities()), with the same files of the PKI `make certs` writes at the
   same paths (Compose bind-mounts them, Kubernetes gets them as the Secrets k8s/secrets.sh makes); no broker config
   has a listener without TLS; and the broker image's own config, seed step and health check run against a real
   Mosquitto with the dynamic-security plugin. The registry's and task store's APIs are HTTPS with the mesh's
   mutual TLS in all three: the same server certificates, client certificates and CA at the same paths.

The validators are installed by `make test` (python-deps and validate-deps); a missing one fails, never skips.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import BaseModel

from a2amesh.enroll import enroll
from a2amesh.mqtt import make_client
from a2amesh.replicas import service_of
from a2amesh.settings import (
    AgentSettings,
    ConsoleSettings,
    CoordinatorSettings,
    EnrollSettings,
    InternalTlsSettings,
    MqttSettings,
    RegistrySettings,
    ServiceSettings,
    TaskStoreSettings,
)
from devstack.pki import Identity, Pki, Role
from devstack.postgres import TASKSTORE_PASSWORD_FILE
from devstack.processes import ManagedProcess, free_port
from devstack.stack import AGENT_REPLICAS, AGENTS, Ports, Stack, find_binary, find_dynsec_plugin, replica_names
from devstack.topology import TOPOLOGY, TOPOLOGY_FILE

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / ".env"
K8S_ENV_FILE = REPO / "k8s" / "base" / "mesh.env"
COMPOSE_FILE = REPO / "compose.yaml"
COMPOSE_EXTEND_FILE = REPO / "compose.extend.yaml"
# the task store on PostgreSQL as two partitions, loaded after compose.yaml (k8s/components/postgres's counterpart)
COMPOSE_POSTGRES_FILE = REPO / "compose.postgres.yaml"
POSTGRES_COMPONENT = REPO / "k8s" / "components" / "postgres"
OVERLAYS = sorted(path.parent.name for path in (REPO / "k8s" / "overlays").glob("*/kustomization.yaml"))
BROKER_DIR = REPO / "services" / "broker"
# the one Dockerfile of every Python service, told which one by build arguments (compose.yaml's build.args)
PYTHON_DOCKERFILE = REPO / "services" / "Dockerfile"
SECRETS_SCRIPT = REPO / "k8s" / "secrets.sh"
# where Compose bind-mounts every key, certificate and password from: the PKI `make certs` writes
COMPOSE_PKI = "./infra/broker-certs"
DCLINT = REPO / "infra" / "validate" / "node_modules" / ".bin" / "dclint"
DCLINT_CONFIG = REPO / "infra" / "validate" / "dclintrc.yaml"

# kubectl on these machines is 1.32; kubernetes-validate ships its schemas (1.25 to 1.37) inside the package
KUBERNETES_VERSION = "1.32.0"

# .env keys that only Compose reads; every other key is a service setting that Kubernetes gets too
COMPOSE_ONLY_PREFIXES = ("COMPOSE_", "IMAGE_", "PUBLISH_")

# service -> its field of devstack's Ports (which names the broker's port after the protocol)
DEVSTACK_PORT_OF = {
    "broker": "mqtt",
    "redis": "redis",
    "registry": "registry",
    "taskstore": "taskstore",
    "coordinator": "coordinator",
    "console": "console",
}

# the settings class each mesh service builds (a2amesh.settings); every agent builds AgentSettings
SETTINGS_OF: dict[str, type[ServiceSettings]] = {
    "registry": RegistrySettings,
    "taskstore": TaskStoreSettings,
    "coordinator": CoordinatorSettings,
    "console": ConsoleSettings,
}

# mesh services that never connect to the broker, and why (no identity, no PKI files, no a2a-mesh.dev/mqtt label)
BROKERLESS = {
    "console": "the web console is an HTTP client of the coordinator, registry and task store, as any client is",
}

# the internal APIs (a2amesh.internal): their servers, and the settings naming each one's URL
INTERNAL_APIS = {"registry": "MESH_REGISTRY_URL", "taskstore": "MESH_TASKSTORE_URL"}
# the settings that name the files of the internal APIs' mutual TLS (a2amesh.settings.InternalTlsSettings)
INTERNAL_FILES = ("CA_FILE", "CERT_FILE", "KEY_FILE", "SERVER_CERT_FILE", "SERVER_KEY_FILE")

# settings that Compose and Kubernetes give a service but the dev runner does not, and why
DEPLOYMENT_ONLY_SETTINGS = {
    "MESH_LOG_JSON": "containers log one JSON object per line for a log collector; make dev keeps readable text",
    "MESH_RATE_LIMIT_REDIS_URL": "coordinators share rate limits in Redis, so replicas may join (make dev: with "
    "COORDINATORS=2)",
    "MESH_RATE_LIMIT_REDIS_PASSWORD_FILE": "the password of the coordinators' Redis user, for those shared rate "
    "limits (make dev: with COORDINATORS=2)",
    "MESH_REPLICA_READ_WAIT": "a task another coordinator replica accepted is waited for (make dev: COORDINATORS=2)",
}

# the settings that name a broker identity, and the file settings that go with each (a2amesh.settings.MqttSettings)
IDENTITY_PREFIXES = ("MESH_MQTT__", "MESH_WORKFLOWS_MQTT__")
IDENTITY_FILES = ("CA_FILE", "CERT_FILE", "KEY_FILE", "PASSWORD_FILE")

# settings an agent's pods get on Kubernetes but not in make dev and Compose, and why
K8S_AGENT_ONLY_SETTINGS = {
    "MESH_POOL": "an agent's pods are the replicas of one pool, the agent's (make dev and Compose run it unpooled)",
}

# settings the coordinator's pods get on Kubernetes, where it always runs replicas, but not in make dev and Compose
K8S_REPLICA_ONLY_SETTINGS = {
    "MESH_REPLICA_ID": "each pod is the replica coordinator-<ordinal>, its own broker identity (its name)",
    "MESH_WORKFLOWS_ID": "each pod hosts its own workflows agent, workflows-<ordinal> (its index)",
}

# settings the task store's pods get on Kubernetes, where it runs as a StatefulSet of partitions, but not in make dev
# and Compose (one store, the defaults: partition 0 of 1)
K8S_PARTITION_ONLY_SETTINGS = {
    "MESH_REPLICA_ID": "each pod is the partition taskstore-<ordinal>, its own broker identity (its name)",
    "MESH_PARTITION": "each pod records the share of its ordinal (its index)",
    "MESH_PARTITIONS": "as many partitions as the StatefulSet has replicas",
}

# settings the task store gets where it runs on PostgreSQL (the prod overlay's k8s/components/postgres, Compose with
# compose.postgres.yaml), but not on compose.yaml's and make dev's SQLite
POSTGRES_ONLY_SETTINGS = {
    "MESH_DATABASE_PASSWORD_FILE": "the database password, a mounted file (MESH_DATABASE_URL names no password)",
}
# where the task store reads PostgreSQL's password, Compose and Kubernetes alike
DATABASE_PASSWORD_FILE = "/run/secrets/mesh/postgres/password"

# settings the registry's pods get on Kubernetes, where it always runs replicas, but not make dev's and Compose's
# first registry (Compose's second, registry-1, sets it too: test_compose_runs_a_second_registry_...)
K8S_REGISTRY_ONLY_SETTINGS = {
    "MESH_REPLICA_ID": "each pod is the replica registry-<ordinal>, its own broker identity (its name)",
}

# the fewest registry pods any overlay runs: one may stop, die or be evicted while another answers
REGISTRY_REPLICAS = 2

# services whose Kubernetes pods enroll their identities as they start: setting prefix -> the pool (or service
# replica template, devstack.pki.SERVICE_REPLICAS) whose `<name>-<ordinal>` a pod enrolls under that prefix
ENROLLED_IDENTITIES: dict[str, dict[str, str]] = {
    **{agent: {"MESH_MQTT__": agent} for agent in AGENTS},
    "coordinator": {"MESH_MQTT__": "coordinator", "MESH_WORKFLOWS_MQTT__": "workflows"},
    "taskstore": {"MESH_MQTT__": "taskstore"},
    "registry": {"MESH_MQTT__": "registry"},
}

# Compose services that are one more replica of a service, under a profile (the service they replicate)
COMPOSE_REPLICAS = {"coordinator-1": "coordinator", "registry-1": "registry"}

# workloads an overlay may add to the dev runner's services, and why
OVERLAY_ONLY_WORKLOADS = {
    "prod": {"postgres": "the task store runs on PostgreSQL in production (make dev and Compose use SQLite)"},
    "observability": {
        "otel-collector": "the trace pipeline of the overlay (Compose's observability profile runs the same collector)",
        "jaeger": "the overlay's trace backend (Compose's observability profile runs the same Jaeger)",
    },
}

# images not built from this repository: Compose and Kubernetes must run the same tag
THIRD_PARTY = {"redis"}

# the settings naming a Redis (its URL names the client's ACL user), and the file holding that user's password
REDIS_CLIENT_SETTINGS = {
    "MESH_REDIS_URL": "MESH_REDIS_PASSWORD_FILE",
    "MESH_RATE_LIMIT_REDIS_URL": "MESH_RATE_LIMIT_REDIS_PASSWORD_FILE",
}
# Redis users of topology.yaml that are no service's, and why; every other one is the user of the service so named
REDIS_NON_SERVICE_USERS = {
    "health": "the health checks of Compose and Kubernetes authenticate as it (PING only)",
    "mesh-admin": "an operator's (and the tests that flush): mounted by no service",
}
# where the Redis container reads its ACL file and its health check the health user's password
REDIS_SECRETS = "/run/secrets/redis"


# -- running the validators -------------------------------------------------------------------------------------
def tool(name: str) -> str:
    """A validator installed in the workspace environment (the dev group of uv.lock)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is missing from {path.parent}: run `make python-deps` (uv sync --locked)"
    return str(path)


def run(argv: list[str], cwd: Path = REPO, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"$ {shlex.join(result.args)}\n(exit {result.returncode})\n{result.stdout}\n{result.stderr}"


@cache
def kustomize(target: str) -> str:
    """`kubectl kustomize` of a folder relative to the repository (an overlay, or k8s/base)."""
    result = run(["kubectl", "kustomize", target])
    assert result.returncode == 0, explain(result)
    return result.stdout


def rendered(overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(kustomize(f"k8s/overlays/{overlay}")) if doc]


# -- reading the files ------------------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, read strictly: Compose and kustomize parse quotes and `#` differently, so neither is allowed."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        where = f"{path.relative_to(REPO)}:{number}"
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{where}: not a KEY=value line: {line!r}"
        assert not value.startswith(("'", '"')) and "#" not in value, f"{where}: no quotes or comments in a value"
        assert key not in values, f"{where}: {key} is set twice"
        values[key] = value
    return values


@cache
def dotenv() -> dict[str, str]:
    return read_env_file(ENV_FILE)


VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\})")


def interpolate(value: Any, where: str) -> Any:
    """Compose's interpolation of .env values into compose.yaml (only the `${NAME}` form is used here)."""
    if isinstance(value, dict):
        return {key: interpolate(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, where) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        assert name in dotenv(), f"{where}: ${{{name}}} is not set in .env"
        return dotenv()[name]

    result = VARIABLE.sub(substitute, value)
    assert "${" not in VARIABLE.sub("", value), f"{where}: use the plain ${{NAME}} form (values live in .env): {value}"
    return result


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())  # PyYAML resolves the `<<` merge keys of the x- anchors


@dataclass
class ComposeService:
    name: str
    raw: dict[str, Any]
    resolved: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        environment = self.resolved.get("environment") or {}
        assert isinstance(environment, dict), f"compose {self.name}: write environment as a mapping"
        return {key: str(value) for key, value in environment.items()}

    @property
    def container_ports(self) -> set[int]:
        ports = {int(str(entry).split("/")[0].rsplit(":", 1)[-1]) for entry in self.resolved.get("ports", [])}
        return ports | {int(entry) for entry in self.resolved.get("expose", [])}


MESH_PROFILES = ({"replicas"}, set())
"""Profiles whose services are the mesh's own, held to every rule here (no profile: what `make up` starts)."""


@cache
def compose_services(profile: str | None = None) -> dict[str, ComposeService]:
    """The mesh's Compose services (those Compose starts without a profile, and the mesh's replicas), or those of
    one profile (the observability profile's third-party services have rules of their own)."""
    services = load_yaml(COMPOSE_FILE)["services"]
    wanted = [{profile}] if profile else MESH_PROFILES
    return {
        name: ComposeService(name, spec, interpolate(spec, f"compose.yaml services.{name}"))
        for name, spec in services.items()
        if set(spec.get("profiles", [])) in wanted
    }


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")}


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}


FROM_POD = object()
"""The value of an env var the pod supplies itself (fieldRef), different in every replica."""

POD_INDEX_FIELD = "metadata.labels['apps.kubernetes.io/pod-index']"
"""A StatefulSet pod's ordinal (Kubernetes 1.28+), the number its name ends in."""

K8S_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def k8s_expand(value: str, env: dict[str, Any]) -> Any:
    """Kubernetes' expansion of `$(NAME)` in an env value: a variable defined earlier in the list, `$$` a `$`."""
    if any(match[1] and env.get(match[1]) is FROM_POD for match in K8S_REFERENCE.finditer(value)):
        return FROM_POD

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return str(env[match[1]]) if match[1] in env else match[0]

    return K8S_REFERENCE.sub(substitute, value)


def k8s_env(docs: list[dict[str, Any]], container: dict[str, Any], pod: str | None = None) -> dict[str, Any]:
    """A container's environment with every ConfigMap and Secret reference resolved against the rendered objects;
    in the pod named `pod`, its name too (else whatever the pod supplies itself is FROM_POD)."""
    config_maps, secrets = objects(docs, "ConfigMap"), objects(docs, "Secret")
    env: dict[str, Any] = {}
    for entry in container.get("env", []):
        name, source = entry["name"], entry.get("valueFrom")
        if source is None:
            env[name] = k8s_expand(entry.get("value", ""), env)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["name"] in config_maps, f"{name}: no ConfigMap {ref['name']} in the render"
            assert ref["key"] in config_maps[ref["name"]]["data"], (
                f"{name}: ConfigMap {ref['name']} has no {ref['key']}"
            )
            env[name] = config_maps[ref["name"]]["data"][ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] in secrets, f"{name}: no Secret {ref['name']} in the render"
            assert ref["key"] in secret_data(secrets[ref["name"]]), f"{name}: Secret {ref['name']} has no {ref['key']}"
            env[name] = secret_data(secrets[ref["name"]])[ref["key"]]
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if pod is not None and path == "metadata.name":
                env[name] = pod
            elif pod is not None and path == POD_INDEX_FIELD:
                env[name] = pod.rpartition("-")[2]
            else:
                env[name] = FROM_POD
        else:
            raise AssertionError(f"{name}: unexpected env source {source}")
    return env


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    named = [c for c in containers if c["name"] == workload["metadata"]["name"]]
    assert len(named) == 1, f"{workload['metadata']['name']}: one container named after the workload"
    return named[0]


def k8s_pods(service: str) -> list[str | None]:
    """The pods whose view of a workload the tests check: the first two replicas of a workload whose pods enroll
    their identities and its last (an agent's at AGENT_REPLICAS, the coordinator's at its HPA's maximum), one pod of
    any other workload (all alike)."""
    if service not in ENROLLED_IDENTITIES:
        return [None]
    names = replica_names(service, AGENT_REPLICAS if service in AGENTS else most_pods(service))
    return list(dict.fromkeys([*names[:2], names[-1]]))


def most_pods(service: str) -> int:
    """The most pods of `service` any overlay runs: its HPA's maximum, or the StatefulSet's fixed `replicas` (the
    task store's partitions)."""
    counts = []
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        hpa = objects(docs, "HorizontalPodAutoscaler").get(service)
        counts.append(hpa["spec"]["maxReplicas"] if hpa else workloads(docs)[service]["spec"].get("replicas", 1))
    return max(counts)


ENROLLED = b"(the password the init container enrolls)"
"""What k8s_secret_files shows for a file an agent pod's init container writes: no Secret holds it."""


def enroll_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """A pod's init containers that enroll its identities (python -m a2amesh.enroll): an agent's one, the
    coordinator's two (its own, its workflows agent's)."""
    return [c for c in pod_spec(workload).get("initContainers", []) if c.get("command", [])[-1:] == ["a2amesh.enroll"]]


def enroll_container(workload: dict[str, Any]) -> dict[str, Any] | None:
    """An agent pod's init container that enrolls its identity, if any."""
    found = enroll_containers(workload)
    return found[0] if found else None


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (number or name) as the container's port number."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return declared["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port}")


def dockerfile(path: Path) -> dict[str, Any]:
    """The instructions the drift rules read: ENTRYPOINT/CMD, EXPOSE, the uv sync line and the HEALTHCHECK."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    def instruction(name: str) -> list[str]:
        return [line[len(name) + 1 :] for line in lines if line.upper().startswith(name + " ")]

    entry = instruction("ENTRYPOINT") or instruction("CMD")
    sync = next((line for line in instruction("RUN") if "uv sync" in line), "")
    package = re.search(r"--package\s+(\S+)", sync)
    health = " ".join(instruction("HEALTHCHECK"))
    return {
        "entrypoint": json.loads(entry[-1]) if entry else None,
        "cmd": json.loads(instruction("CMD")[-1]) if instruction("CMD") else None,
        "health": json.loads(health[health.index(" CMD ") + 5 :]) if " CMD " in health else None,
        # a literal port; services/Dockerfile's EXPOSE ${SERVICE_PORT} is read from each service's build arguments
        "expose": {int(p.split("/")[0]) for line in instruction("EXPOSE") for p in line.split() if p[0].isdigit()},
        "package": package[1] if package else None,
        "extras": re.findall(r"--extra\s+(\S+)", sync),
        "healthcheck": " ".join(instruction("HEALTHCHECK")),
    }


def service_image(service: str) -> dict[str, Any]:
    """How a Python service's image is built: services/Dockerfile's instructions, with the build arguments
    compose.yaml gives that service (the workspace member, its extras, the module `python -m` runs, its port, the
    PYTHONOPTIMIZE level it runs at)."""
    build = compose_services()[service].resolved["build"]
    args = {key: str(value) for key, value in build.get("args", {}).items()}
    return {
        **dockerfile(REPO / build["dockerfile"]),
        "dockerfile": (REPO / build["dockerfile"]).resolve(),
        "package": args.get("SERVICE_PACKAGE"),
        "module": args.get("SERVICE_MODULE"),
        "extras": args.get("SERVICE_EXTRAS", "").split(),
        "port": int(args["SERVICE_PORT"]) if "SERVICE_PORT" in args else None,
        "optimize": int(args.get("SERVICE_OPTIMIZE") or 0),
    }


# -- the dev runner's view --------------------------------------------------------------------------------------
@dataclass
class DevStack:
    stack: Stack
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def port(self, service: str) -> int:
        if service in AGENTS:
            return int(dotenv()["AGENT_PORT"])  # make dev gives each agent a free port; containers use AGENT_PORT
        return getattr(self.stack.ports, DEVSTACK_PORT_OF[service])

    def package(self, service: str) -> str | None:
        argv = self.processes[service].argv
        return argv[argv.index("-m") + 1] if "-m" in argv else None


@pytest.fixture(scope="module")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> DevStack:
    """Every process `make dev` starts, as Stack.start defines them (internal TLS on, as `make dev` runs it),
    recorded instead of started."""
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("devstack"), ports=Ports.fixed(), agents=dict(AGENTS), internal_tls=True
    )
    view = DevStack(stack)

    def record(process: ManagedProcess, timeout: float = 30.0) -> ManagedProcess:
        view.processes[process.name] = process
        return process

    stack.launch = record  # type: ignore[method-assign]
    stack.start()
    return view


# -- the PKI, and where each deployment puts its files ---------------------------------------------------------
@dataclass
class SecretsScript:
    """What k8s/secrets.sh printed: its YAML (kept off every failure message: it holds private keys) and, per
    Secret, each key's bytes."""

    output: str
    secrets: dict[str, dict[str, bytes]]


@pytest.fixture(scope="module")
def k8s_secrets(devstack: DevStack) -> SecretsScript:
    """The Secrets k8s/secrets.sh makes, from a PKI like the one `make certs` writes: the dev runner's own, in a
    temporary folder (so the test reads no real key and needs no `make certs`)."""
    stack = devstack.stack
    assert (stack.org, stack.unit) == (dotenv()["MESH_ORG"], dotenv()["MESH_UNIT"]), "the dev runner's org/unit"
    result = subprocess.run(
        ["bash", str(SECRETS_SCRIPT)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env={**os.environ, "PKI_DIR": str(stack.pki.root)},
    )
    assert result.returncode == 0, f"k8s/secrets.sh failed (exit {result.returncode}):\n{result.stderr}"
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert all(doc["kind"] == "Secret" and doc["metadata"]["namespace"] == "a2a-mesh" for doc in docs)
    secrets = {doc["metadata"]["name"]: {k: base64.b64decode(v) for k, v in doc["data"].items()} for doc in docs}
    assert len(secrets) == len(docs), "k8s/secrets.sh: each Secret once"
    return SecretsScript(result.stdout, secrets)


def compose_mounts(service: ComposeService) -> dict[str, str]:
    """target -> source of a Compose service's volumes (short `source:target[:ro]` or long syntax)."""
    mounts: dict[str, str] = {}
    for volume in service.resolved.get("volumes", []):
        if isinstance(volume, str):
            source, target, *_ = volume.split(":")
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def mount_target(volume: str | dict[str, Any]) -> str:
    """Where a Compose volume entry (short `source:target[:ro]` or long syntax) is mounted in the container."""
    return volume.split(":")[1] if isinstance(volume, str) else volume["target"]


def compose_pki_files(service: ComposeService, pki: Path) -> dict[str, bytes]:
    """The files a Compose service bind-mounts from infra/broker-certs, read from `pki` (a PKI of the same layout):
    container path -> content."""
    files: dict[str, bytes] = {}
    for target, source in compose_mounts(service).items():
        if source != COMPOSE_PKI and not source.startswith(COMPOSE_PKI + "/"):
            continue
        relative = source[len(COMPOSE_PKI) + 1 :]
        where = f"compose {service.name}: {source}"
        assert relative, f"{where}: mount single files, never the whole folder (it holds every identity and ca.key)"
        assert relative != "ca.key", f"{where}: the CA's key is never mounted"
        assert (pki / relative).is_file(), f"{where} is not a file `make certs` writes"
        files[target] = (pki / relative).read_bytes()
    return files


def k8s_secret_files(
    docs: list[dict[str, Any]],
    workload: dict[str, Any],
    script: SecretsScript,
    pod: str | None = None,
    container: dict[str, Any] | None = None,
) -> dict[str, bytes]:
    """The files a pod's main container (or `container`; in the pod named `pod`) sees from Secrets (those of
    k8s/secrets.sh, or rendered ones): container path -> content. A mount of a subPath (or subPathExpr, expanded as
    Kubernetes does with the container's environment) shows only that folder of the volume. For the main container,
    also what an enrolling init container leaves in a volume both mount: the pool's files it copies, and the
    password it enrolls (ENROLLED)."""
    volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
    rendered_secrets = {name: secret_data(doc) for name, doc in objects(docs, "Secret").items()}
    where = workload["metadata"]["name"]
    main = container is None
    container = container or main_container(workload)
    env = k8s_env(docs, container, pod)
    files: dict[str, bytes] = {}
    for init in enroll_containers(workload) if main else []:
        enroll_env = k8s_env(docs, init, pod)
        out, source = enroll_env["MESH_ENROLL_OUT"], enroll_env["MESH_ENROLL_FILES_FROM"]
        shared = k8s_secret_files(docs, workload, script, pod, init)
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] == out and "emptyDir" in volumes.get(mount["name"], {}):
                for name in ("ca.crt", "client.crt", "client.key"):
                    files[f"{out}/{name}"] = shared[f"{source}/{name}"]
                files[f"{out}/password"] = ENROLLED
    for mount in container.get("volumeMounts", []):
        source = volumes.get(mount["name"], {}).get("secret")
        if source is None:
            continue
        name = source["secretName"]
        data = script.secrets.get(name) or {k: v.encode() for k, v in rendered_secrets.get(name, {}).items()}
        assert data, f"{where}: the Secret {name} is neither rendered nor made by k8s/secrets.sh"
        items = [(item["key"], item["path"]) for item in source.get("items", [])] or [(key, key) for key in data]
        folder = mount.get("subPath") or k8s_expand(mount.get("subPathExpr", ""), env)
        assert folder is not FROM_POD, f"{where}: mount {mount['name']} depends on the pod: name one"
        for key, path in items:
            assert key in data, f"{where}: the Secret {name} has no {key} (its volume lists it)"
            if folder:
                if not path.startswith(f"{folder}/"):
                    continue
                path = path[len(folder) + 1 :]
            files[f"{mount['mountPath'].rstrip('/')}/{path}"] = data[key]
    return files


def broker_files_read() -> set[str]:
    """The mounted files the broker container reads: those its config, its command and its health check name."""
    instructions = dockerfile(BROKER_DIR / "Dockerfile")
    text = (BROKER_DIR / "mosquitto.conf").read_text() + json.dumps([instructions["cmd"], instructions["health"]])
    return set(re.findall(r"/mosquitto/(?:certs|health)/[\w.-]+", text))


def internal_files_read(env: dict[str, Any]) -> set[str]:
    """The mounted files of a mesh service's internal mutual TLS (MESH_INTERNAL__*_FILE; a client that names none
    presents its broker identity's)."""
    return {env[f"MESH_INTERNAL__{name}"] for name in INTERNAL_FILES if f"MESH_INTERNAL__{name}" in env}


def service_files_read(env: dict[str, Any]) -> set[str]:
    """The mounted files a mesh service reads: every *_FILE setting of its identities and of its internal mutual
    TLS, its API keys, its card-signing key and its Redis user's password."""
    files = {env[f"{prefix}{name}"] for prefix in IDENTITY_PREFIXES for name in IDENTITY_FILES if prefix + name in env}
    files |= internal_files_read(env)
    named = ("MESH_API_KEYS_FILE", "MESH_CARD_SIGNING_KEY_FILE", *REDIS_CLIENT_SETTINGS.values())
    return files | {env[name] for name in named if name in env}


def common_name(pem: bytes) -> str:
    certificate = x509.load_pem_x509_certificate(pem)
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]


def mesh_services(devstack: DevStack) -> list[str]:
    """The services that run our Python code (they read MESH_* settings and serve /livez, /healthz, /metrics)."""
    return [name for name in devstack.processes if devstack.package(name)]


def service_folder(service: str) -> Path:
    return REPO / "services" / ("agents/" + service if service in AGENTS else service)


def settings_names(settings: type[BaseModel], prefix: str = "MESH_") -> set[str]:
    """Every environment variable a settings class reads (nested groups use `__`, as pydantic-settings does; an
    optional group, such as the coordinator's workflows_mqtt, too)."""
    names: set[str] = set()
    for name, info in settings.model_fields.items():
        annotation = info.annotation
        models = [arg for arg in typing.get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]
        if models and type(None) in typing.get_args(annotation):
            annotation = models[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def settings_of(service: str) -> type[ServiceSettings]:
    if service in AGENTS:
        return AgentSettings
    assert service in SETTINGS_OF, f"add {service}'s settings class to SETTINGS_OF in {Path(__file__).name}"
    return SETTINGS_OF[service]


# == 1. the validators ==========================================================================================
DOCKERFILES = sorted(REPO.glob("services/**/Dockerfile"))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: str(path.relative_to(REPO)))
def test_hadolint_accepts_the_dockerfile(path: Path) -> None:
    result = run([tool("hadolint"), "--failure-threshold", "style", str(path)])
    assert result.returncode == 0, explain(result)


def test_compose_files_match_the_compose_spec(tmp_path: Path) -> None:
    # the files as written, and compose.yaml with .env's values in, as Compose will read it
    resolved = tmp_path / "compose.resolved.yaml"
    resolved.write_text(yaml.safe_dump(interpolate(load_yaml(COMPOSE_FILE), "compose.yaml")))
    resolved_postgres = tmp_path / "compose.postgres.resolved.yaml"
    resolved_postgres.write_text(yaml.safe_dump(interpolate(load_yaml(COMPOSE_POSTGRES_FILE), "compose.postgres.yaml")))
    files = [
        str(COMPOSE_FILE),
        str(COMPOSE_EXTEND_FILE),
        str(COMPOSE_POSTGRES_FILE),
        str(resolved),
        str(resolved_postgres),
    ]
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *files])
    assert result.returncode == 0, explain(result)


def test_dclint_accepts_the_compose_files() -> None:
    assert DCLINT.exists(), "dclint is not installed: run `make validate-deps` (npm ci in infra/validate)"
    files = [str(COMPOSE_FILE), str(COMPOSE_EXTEND_FILE), str(COMPOSE_POSTGRES_FILE)]
    argv = [str(DCLINT), "--config", str(DCLINT_CONFIG), "--max-warnings", "0", "--formatter", "json", *files]
    result = run(argv, cwd=DCLINT.parents[2])
    assert result.returncode == 0, explain(result)
    report = json.loads(result.stdout)
    assert sorted(entry["filePath"] for entry in report) == sorted(files), explain(result)
    assert all(not entry["messages"] for entry in report), explain(result)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_kubernetes_validate_accepts_it(overlay: str, tmp_path: Path) -> None:
    output = tmp_path / f"{overlay}.yaml"
    output.write_text(kustomize(f"k8s/overlays/{overlay}"))
    argv = [tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(output)]
    result = run(argv)
    assert result.returncode == 0, explain(result)
    passed = re.findall(r"^INFO .* passed for resource (\S+) against version", result.stdout, re.M)
    assert len(passed) == len(rendered(overlay)), explain(result)


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize(
    "kind",
    ["dockerfile", "compose-spec", "dclint", "kubernetes"],
)
def test_each_validator_rejects_a_broken_file(kind: str, tmp_path: Path) -> None:
    """Negative controls: the commands above are able to fail."""
    if kind == "dockerfile":
        bad = tmp_path / "Dockerfile"
        bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\nCMD python -m x\n")
        result = run([tool("hadolint"), "--failure-threshold", "style", str(bad)])
    elif kind == "compose-spec":
        bad = tmp_path / "compose.yaml"
        bad.write_text("services:\n  a:\n    image: x:1\n    depends_on:\n      b:\n        condition: sometimes\n")
        result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)])
    elif kind == "dclint":
        assert DCLINT.exists(), "dclint is not installed: run `make validate-deps`"
        bad = tmp_path / "compose.yaml"
        bad.write_text("name: x\nservices:\n  a:\n    image: x\n    ports:\n      - 80:80\n")
        result = run([str(DCLINT), "--config", str(DCLINT_CONFIG), "--max-warnings", "0", str(bad)])
    else:
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {a: b}}\n"
            "  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i, colour: red}]}\n"
        )
        argv = [tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(bad)]
        result = run(argv)
    assert result.returncode != 0, explain(result)


def mesh_service_names() -> list[str]:
    """The services of our Python code (a pyproject.toml), for parametrising before any fixture exists."""
    return sorted({path.parent.name for path in REPO.glob("services/*/pyproject.toml")} | set(AGENTS))


def workspace_packages() -> list[str]:
    """The names of the workspace's own packages (the root pyproject's workspace sources)."""
    sources = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["sources"]
    return sorted(name for name, source in sources.items() if source.get("workspace"))


def uv() -> str:
    """uv itself: `uv run` tells its children where it is (UV), else the PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is not installed: run `make python-deps`"
    return found


@pytest.mark.parametrize("service", mesh_service_names())
def test_image_environment_imports_the_entry_point(service: str, tmp_path: Path) -> None:
    """Build the service's virtual environment exactly as services/Dockerfile does with the service's build
    arguments (uv sync --locked --no-dev --no-editable --package ...), then import the module its ENTRYPOINT runs:
    a dependency that only the workspace's dev environment happens to provide shows up here, not in a
    crash-looping container."""
    instructions = service_image(service)
    assert instructions["package"], f"compose {service}: no build argument SERVICE_PACKAGE"
    sync = [uv(), "sync", "--locked", "--no-dev", "--no-editable", "--package", instructions["package"]]
    sync += [arg for extra in instructions["extras"] for arg in ("--extra", extra)]
    # uv keys its cache of a local package's build on its pyproject.toml, so a wheel built before a module was added
    # could be reused: rebuild the workspace's own packages every time, as a fresh image build does
    sync += [arg for package in workspace_packages() for arg in ("--reinstall-package", package)]
    venv = tmp_path / "venv"
    result = subprocess.run(
        [*sync, "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        # the workspace's own environment must not leak into the one being built
        env={
            **{key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"},
            "UV_PROJECT_ENVIRONMENT": str(venv),
            "UV_PYTHON_DOWNLOADS": "never",
        },
    )
    assert result.returncode == 0, explain(result)
    module = instructions["module"]
    level = ["-" + "O" * instructions["optimize"]] if instructions["optimize"] else []  # as the image runs it
    result = run([str(venv / "bin" / "python"), *level, "-c", f"import {module}.__main__"], cwd=tmp_path)
    assert result.returncode == 0, f"the {service} image could not start: {explain(result)}"


@pytest.mark.parametrize(("service", "module"), [("taskstore", "mesh_taskstore"), ("coordinator", "mesh_coordinator")])
def test_the_largest_images_run_without_docstrings_as_the_bench_runs_them(service: str, module: str) -> None:
    """The store's idle memory on PostgreSQL and the coordinator's meet their target (< 80 MB) with a margin at
    PYTHONOPTIMIZE=2 (docs/benchmarks.md): each image is built at that level, and `make bench` runs the service at
    the level compose.yaml gives its image."""
    from loadtests.bench.envs import image_optimization

    assert service_image(service)["optimize"] == 2
    assert image_optimization(module) == "2"


# == 2. the artifacts meet the hardening rules ==================================================================
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened_limited_and_probed(overlay: str, devstack: DevStack) -> None:
    docs = rendered(overlay)
    mesh = set(mesh_services(devstack))
    for name, workload in workloads(docs).items():
        spec = pod_spec(workload)
        where = f"{overlay}: {workload['kind']} {name}"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: no API token"
        assert spec.get("serviceAccountName") == name, f"{where}: its own ServiceAccount"
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault"
        for container in spec["containers"]:
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, f"{where}: no privilege escalation"
            assert security.get("readOnlyRootFilesystem") is True, f"{where}: read-only root filesystem"
            assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL capabilities"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container.get("resources", {}).get(bound, {})), f"{where}: {bound}"
            assert "livenessProbe" in container and "readinessProbe" in container, f"{where}: probes"
            if name in mesh:
                assert container["readinessProbe"]["httpGet"]["path"] == "/healthz", f"{where}: ready on /healthz"
                assert container["livenessProbe"]["httpGet"]["path"] == "/livez", f"{where}: alive on /livez"
    namespace = objects(docs, "Namespace")
    assert len(namespace) == 1, f"{overlay}: one Namespace"
    labels = next(iter(namespace.values()))["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", f"{overlay}: restricted pod security"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_agent_is_a_pool_of_replica_identities_with_an_autoscaler_and_a_disruption_budget(overlay: str) -> None:
    """The broker pins each identity to one client id, so no two pods may share one: each agent is a StatefulSet
    whose pods <agent>-<ordinal> (never two of one name) take their agent id from their name, connect as the replica
    identity of that name and join the agent's pool. Its HPA scales it from 1 to at most the AGENT_REPLICAS
    identities `make certs` issues, each of which the pods' Secret volume holds. The PDB lets a drain evict a pod."""
    docs = rendered(overlay)
    autoscalers, budgets = objects(docs, "HorizontalPodAutoscaler"), objects(docs, "PodDisruptionBudget")
    for agent in AGENTS:
        workload = workloads(docs)[agent]
        where = f"{overlay}: {agent}"
        assert workload["kind"] == "StatefulSet", f"{where}: a StatefulSet, whose pods have names of their own"
        assert "replicas" not in workload["spec"], f"{where}: leave replicas to the HPA (1 until it acts)"
        assert workload["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate", where
        target = autoscalers[agent]["spec"]
        assert (target["scaleTargetRef"]["kind"], target["scaleTargetRef"]["name"]) == ("StatefulSet", agent), where
        assert (target["minReplicas"], target["maxReplicas"]) == (1, AGENT_REPLICAS), (
            f"{where}: the HPA scales from 1 to {AGENT_REPLICAS} pods (devstack.stack.AGENT_REPLICAS)"
        )
        container = main_container(workload)
        assert k8s_env(docs, container)["MESH_AGENT_ID"] is FROM_POD, f"{where}: the pod's name is its agent id"
        enroll = enroll_container(workload)
        assert enroll is not None, f"{where}: an init container enrolls the pod's identity (python -m a2amesh.enroll)"
        for pod in k8s_pods(agent):
            env, enroll_env = k8s_env(docs, container, pod), k8s_env(docs, enroll, pod)
            assert env["MESH_AGENT_ID"] == pod and env["MESH_POOL"] == agent, f"{where}: {pod} in the pool {agent}"
            assert (enroll_env["MESH_AGENT_ID"], enroll_env["MESH_POOL"]) == (pod, agent), f"{where}: enrolls {pod}"
        volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/run/secrets/mesh/mqtt"]
        assert volumes[mount["name"]].get("emptyDir", {}).get("medium") == "Memory", f"{where}: enrolled, in memory"
        assert k8s_env(docs, enroll)["MESH_ENROLL_OUT"] == mount["mountPath"], f"{where}: enrolled where it reads"
        secrets_of = {
            name: {
                volumes[m["name"]]["secret"]["secretName"] for m in c["volumeMounts"] if "secret" in volumes[m["name"]]
            }
            for name, c in (("agent", container), ("init", enroll))
        }
        assert "mesh-enroller" in secrets_of["init"], f"{where}: the init container enrolls as mesh-enroller"
        assert not secrets_of["agent"], f"{where}: the agent container mounts no Secret (the enroller's least of all)"
        selector = budgets[agent]["spec"]["selector"]["matchLabels"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items(), f"{overlay}: {agent}'s PDB selects its pods"
    scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in autoscalers.values()}
    assert scaled <= {*AGENTS, "coordinator"}, f"{overlay}: only agents and coordinators scale out (the others hold "
    "one fixed identity each)"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_coordinator_runs_replicas_each_enrolling_identities_of_its_own(overlay: str) -> None:
    """Issue #18 item 3: the coordinator is a StatefulSet kept at 2 or more pods by its HPA, whose PDB lets a drain
    evict one but never all; each pod coordinator-<i> enrolls the identities coordinator-<i> and workflows-<i> (no
    two pods share one, and none is the plain `coordinator` or `workflows` Compose runs), names them as its replica
    and workflows ids, and reaches the Redis its rate limits are shared in."""
    docs = rendered(overlay)
    workload = workloads(docs)["coordinator"]
    assert workload["kind"] == "StatefulSet", f"{overlay}: pods with names of their own, never two of one name"
    assert "replicas" not in workload["spec"], f"{overlay}: leave replicas to the HPA"
    assert workload["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate", overlay
    hpa = objects(docs, "HorizontalPodAutoscaler")["coordinator"]["spec"]
    assert (hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"]) == ("StatefulSet", "coordinator")
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"], f"{overlay}: the HPA keeps 2 or more coordinators"
    budget = objects(docs, "PodDisruptionBudget")["coordinator"]["spec"]
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items(), f"{overlay}: the PDB selects its pods"
    assert budget.get("maxUnavailable", 0) < hpa["minReplicas"] or budget.get("minAvailable", 0) >= 1, overlay
    container, enrolls = main_container(workload), enroll_containers(workload)
    assert len(enrolls) == 2, f"{overlay}: two init containers enroll (the coordinator's, its workflows agent's)"
    volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}

    def secrets_of(c: dict[str, Any]) -> set[str]:
        return {volumes[m["name"]]["secret"]["secretName"] for m in c["volumeMounts"] if "secret" in volumes[m["name"]]}

    assert all("mesh-enroller" in secrets_of(enroll) for enroll in enrolls), f"{overlay}: enrolls as mesh-enroller"
    assert "mesh-enroller" not in secrets_of(container), f"{overlay}: the coordinator never holds the enroller's key"
    seen: set[str] = set()
    for pod in replica_names("coordinator", hpa["maxReplicas"]):
        ordinal = pod.rpartition("-")[2]
        env = k8s_env(docs, container, pod)
        mine = {env["MESH_MQTT__USERNAME"], env["MESH_WORKFLOWS_MQTT__USERNAME"]}
        assert env["MESH_REPLICA_ID"] == pod and service_of(pod) == "coordinator", f"{overlay} {pod}: replica id"
        assert env["MESH_WORKFLOWS_ID"] == f"workflows-{ordinal}", f"{overlay} {pod}: its own workflows agent"
        assert mine == {f"{env['MESH_ORG']}/{env['MESH_UNIT']}/{name}" for name in (pod, f"workflows-{ordinal}")}
        enrolled = {(k8s_env(docs, e, pod)["MESH_AGENT_ID"], k8s_env(docs, e, pod)["MESH_POOL"]) for e in enrolls}
        assert enrolled == {(pod, "coordinator"), (f"workflows-{ordinal}", "workflows")}, f"{overlay} {pod}: enrolls"
        assert not mine & seen, f"{overlay}: {pod} shares an identity with another pod: {sorted(mine & seen)}"
        seen |= mine
        assert float(env["MESH_REPLICA_READ_WAIT"]) > 0, f"{overlay} {pod}: waits for other replicas' tasks"
        redis = urlsplit(env["MESH_RATE_LIMIT_REDIS_URL"])
        assert redis.scheme == "redis" and redis.hostname == "redis", f"{overlay} {pod}: rate limits in Redis"
        assert redis.port in {p["port"] for p in objects(docs, "Service")["redis"]["spec"]["ports"]}, overlay
    assert not seen & {f"{dotenv()['MESH_ORG']}/{dotenv()['MESH_UNIT']}/{n}" for n in ("coordinator", "workflows")}
    egress, ingress = redis_rules(objects(docs, "NetworkPolicy").values(), pod_labels, redis.port)
    assert egress and ingress, f"{overlay}: NetworkPolicies let the coordinators reach Redis (egress and ingress)"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_task_store_runs_one_partition_per_pod(overlay: str) -> None:
    """Issue #18 item 4 on Kubernetes: the task store is a StatefulSet of a fixed number of pods (no HPA), as many as
    MESH_PARTITIONS says; pod taskstore-<i> records partition <i> (every partition is some pod's, none two pods'),
    as the identity taskstore-<i> it enrolls; a headless Service governs it and a PDB lets a drain stop one. One
    partition on SQLite (one file, one writer), more only on PostgreSQL."""
    docs = rendered(overlay)
    workload = workloads(docs)["taskstore"]
    assert workload["kind"] == "StatefulSet", f"{overlay}: pods with names (and partitions) of their own"
    assert "taskstore" not in {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in objects(docs, "HorizontalPodAutoscaler").values()
    }
    replicas = workload["spec"].get("replicas", 1)
    container, enrolls = main_container(workload), enroll_containers(workload)
    assert int(k8s_env(docs, container)["MESH_PARTITIONS"]) == replicas, f"{overlay}: MESH_PARTITIONS != replicas"
    assert len(enrolls) == 1, f"{overlay}: an init container enrolls the pod's identity"
    partitions, identities = [], set()
    for pod in replica_names("taskstore", replicas):
        env, enrolled = k8s_env(docs, container, pod), k8s_env(docs, enrolls[0], pod)
        settings = TaskStoreSettings(partition=int(env["MESH_PARTITION"]), partitions=int(env["MESH_PARTITIONS"]))
        partitions.append(settings.partition)
        assert env["MESH_REPLICA_ID"] == pod and service_of(pod) == "taskstore", f"{overlay} {pod}: replica id"
        assert (enrolled["MESH_AGENT_ID"], enrolled["MESH_POOL"]) == (pod, "taskstore"), f"{overlay} {pod}: enrolls"
        identities.add(env["MESH_MQTT__USERNAME"])
        assert env["MESH_MQTT__USERNAME"] == f"{env['MESH_ORG']}/{env['MESH_UNIT']}/{pod}", f"{overlay} {pod}"
    assert sorted(partitions) == list(range(replicas)), f"{overlay}: each pod its own partition: {partitions}"
    assert len(identities) == replicas, f"{overlay}: each pod its own identity"
    database = k8s_env(docs, container)["MESH_DATABASE_URL"]
    assert replicas == 1 or database.startswith("postgresql"), f"{overlay}: {replicas} partitions on {database}"
    if overlay == "prod":
        assert replicas >= 2, "prod runs more than one partition"
    headless = objects(docs, "Service")[workload["spec"]["serviceName"]]["spec"]
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert headless.get("clusterIP") == "None" and headless["selector"].items() <= pod_labels.items(), overlay
    budget = objects(docs, "PodDisruptionBudget")["taskstore"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items(), f"{overlay}: the PDB selects its pods"
    assert budget.get("maxUnavailable") == 1, f"{overlay}: a drain stops one partition at a time"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_registry_runs_replicas_each_enrolling_an_identity_of_its_own(overlay: str) -> None:
    """Issue #18 item 4 on Kubernetes: the registry is a StatefulSet of 2 or more interchangeable pods, rolled one at
    a time and spread over nodes, whose PDB lets a drain evict one but never all; pod registry-<i> enrolls the
    identity registry-<i> as it starts (no two pods share one, none is the plain `registry` Compose runs), names it
    as its replica id, and never holds the enroller's key; a headless Service governs it, clients use `registry`,
    and the NetworkPolicies let every pod reach Redis and be reached by the coordinators only on its port."""
    docs = rendered(overlay)
    workload = workloads(docs)["registry"]
    assert workload["kind"] == "StatefulSet", f"{overlay}: pods with names of their own, never two of one name"
    replicas = workload["spec"].get("replicas", 1)
    assert replicas >= REGISTRY_REPLICAS, f"{overlay}: {replicas} registry pod(s): one stopping leaves none"
    assert workload["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate", overlay
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    spread = pod_spec(workload).get("topologySpreadConstraints", [])
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}, f"{overlay}: spread over nodes"
    assert all(c["labelSelector"]["matchLabels"].items() <= pod_labels.items() for c in spread), overlay
    budget = objects(docs, "PodDisruptionBudget")["registry"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items(), f"{overlay}: the PDB selects its pods"
    assert budget.get("maxUnavailable") == 1 < replicas, f"{overlay}: a drain evicts one registry at a time"
    container, enrolls = main_container(workload), enroll_containers(workload)
    assert len(enrolls) == 1, f"{overlay}: an init container enrolls the pod's identity"
    volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}

    def secrets_of(c: dict[str, Any]) -> set[str]:
        return {volumes[m["name"]]["secret"]["secretName"] for m in c["volumeMounts"] if "secret" in volumes[m["name"]]}

    assert "mesh-enroller" in secrets_of(enrolls[0]), f"{overlay}: enrolls as mesh-enroller"
    assert "mesh-enroller" not in secrets_of(container), f"{overlay}: the registry never holds the enroller's key"
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/run/secrets/mesh/mqtt"]
    assert volumes[mount["name"]].get("emptyDir", {}).get("medium") == "Memory", f"{overlay}: enrolled, in memory"
    assert k8s_env(docs, enrolls[0])["MESH_ENROLL_OUT"] == mount["mountPath"], f"{overlay}: enrolled where it reads"
    identities = set()
    for pod in replica_names("registry", replicas):
        env, enrolled = k8s_env(docs, container, pod), k8s_env(docs, enrolls[0], pod)
        assert env["MESH_REPLICA_ID"] == pod and service_of(pod) == "registry", f"{overlay} {pod}: replica id"
        assert (enrolled["MESH_AGENT_ID"], enrolled["MESH_POOL"]) == (pod, "registry"), f"{overlay} {pod}: enrolls"
        assert env["MESH_MQTT__USERNAME"] == f"{env['MESH_ORG']}/{env['MESH_UNIT']}/{pod}", f"{overlay} {pod}"
        identities.add(env["MESH_MQTT__USERNAME"])
    assert len(identities) == replicas, f"{overlay}: each pod its own identity"
    assert f"{dotenv()['MESH_ORG']}/{dotenv()['MESH_UNIT']}/registry" not in identities, "Compose's own identity"
    services = objects(docs, "Service")
    headless = services[workload["spec"]["serviceName"]]["spec"]
    assert headless.get("clusterIP") == "None" and headless["selector"].items() <= pod_labels.items(), overlay
    assert services["registry"]["spec"]["selector"].items() <= pod_labels.items(), f"{overlay}: `registry` selects all"
    port = urlsplit(dotenv()["MESH_REGISTRY_URL"]).port
    policies = list(objects(docs, "NetworkPolicy").values())
    governing = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()]
    ingress = [
        (peer.get("podSelector", {}).get("matchLabels"), {entry["port"] for entry in rule.get("ports", [])})
        for policy in governing
        for rule in policy["spec"].get("ingress", [])
        if rule.get("from")
        for peer in rule["from"]
    ]
    assert ({"app": "coordinator"}, {port}) in ingress, f"{overlay}: the coordinators reach every registry pod"
    egress_to_redis, redis_in = redis_rules(policies, pod_labels)
    assert egress_to_redis and redis_in, f"{overlay}: every registry pod reaches Redis (egress and ingress)"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_in_the_render_resolves(overlay: str, k8s_secrets: SecretsScript) -> None:
    """ConfigMaps, Secrets, claims and ServiceAccounts named by pods exist in the render (generated names carry a
    hash; a reference kustomize did not rewrite would dangle), or, for the Secrets of the PKI, among those
    k8s/secrets.sh makes; none is optional."""
    docs = rendered(overlay)
    present = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    present |= {("Secret", name) for name in k8s_secrets.secrets}
    for name, workload in workloads(docs).items():
        spec = pod_spec(workload)
        templates = {claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])}
        wanted = [("ServiceAccount", spec["serviceAccountName"], False)]
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                wanted.append(("ConfigMap", volume["configMap"]["name"], volume["configMap"].get("optional", False)))
            if "secret" in volume:
                wanted.append(("Secret", volume["secret"]["secretName"], volume["secret"].get("optional", False)))
            if "persistentVolumeClaim" in volume:
                wanted.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], False))
        for container in spec["containers"]:
            k8s_env(docs, container)  # asserts every ConfigMap/Secret key reference
            mounts = {mount["name"] for mount in container.get("volumeMounts", [])}
            declared = {volume["name"] for volume in spec.get("volumes", [])} | templates
            assert mounts <= declared, f"{overlay}: {name} mounts undeclared volumes {mounts - declared}"
        for kind, ref, optional in wanted:
            assert not (optional and kind == "Secret"), f"{overlay}: {name} would start without the Secret {ref}"
            assert optional or (kind, ref) in present, f"{overlay}: {name} refers to a missing {kind} {ref}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default(overlay: str) -> None:
    policies = objects(rendered(overlay), "NetworkPolicy")
    deny = [p for p in policies.values() if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and "egress" not in p["spec"] for p in deny)


# == 3. Compose, Kubernetes and the dev runner agree ============================================================
def test_the_same_services_everywhere(devstack: DevStack) -> None:
    """topology.yaml's processes = make dev's = Compose's services = every overlay's workloads (plus what an overlay
    documents)."""
    expected = TOPOLOGY.process_names()
    assert set(devstack.processes) == expected, (
        f"make dev and {TOPOLOGY_FILE} differ: only in make dev {sorted(set(devstack.processes) - expected)}, "
        f"only declared {sorted(expected - set(devstack.processes))}"
    )
    compose = set(compose_services()) - set(COMPOSE_REPLICAS)
    assert compose == expected, (
        f"compose.yaml and {TOPOLOGY_FILE} differ: only in compose {sorted(compose - expected)}, "
        f"only declared {sorted(expected - compose)}"
    )
    for overlay in OVERLAYS:
        k8s = set(workloads(rendered(overlay)))
        extra = set(OVERLAY_ONLY_WORKLOADS.get(overlay, {}))
        assert k8s == expected | extra, (
            f"k8s/overlays/{overlay} and {TOPOLOGY_FILE} differ: only in k8s {sorted(k8s - expected - extra)}, "
            f"missing from k8s {sorted(expected | extra - k8s)}"
        )


def test_every_service_of_ours_builds_from_the_one_dockerfile_running_what_make_dev_runs(devstack: DevStack) -> None:
    """One Dockerfile for every Python service (services/Dockerfile), the broker's its own: each service's build
    arguments name its workspace member and the module make dev runs, which the ENTRYPOINT runs."""
    assert set(DOCKERFILES) == {PYTHON_DOCKERFILE, BROKER_DIR / "Dockerfile"}, "one Dockerfile for Python services"
    entrypoint = dockerfile(PYTHON_DOCKERFILE)["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and entrypoint[2].startswith('exec python -m "$SERVICE_MODULE"')
    assert "/healthz" in dockerfile(PYTHON_DOCKERFILE)["healthcheck"], "services/Dockerfile: HEALTHCHECK on /healthz"
    for service in mesh_services(devstack):
        folder = service_folder(service)
        instructions = service_image(service)
        assert instructions["dockerfile"] == PYTHON_DOCKERFILE, f"compose {service}: build from services/Dockerfile"
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"]
        assert instructions["package"] == project, f"compose {service}: SERVICE_PACKAGE={project}"
        assert instructions["module"] == devstack.package(service), (
            f"compose {service}: SERVICE_MODULE must be what make dev runs: {devstack.package(service)}"
        )


def test_the_same_images_everywhere() -> None:
    tag, prefix = dotenv()["IMAGE_TAG"], dotenv()["IMAGE_PREFIX"]
    compose = compose_services()
    for name, service in compose.items():
        image = service.resolved["image"]
        name = COMPOSE_REPLICAS.get(name, name)
        if name in THIRD_PARTY:
            assert "build" not in service.raw, f"compose {name}: a third-party image"
            continue
        assert image == f"{prefix}/{name}:{tag}", f"compose {name}: image ${{IMAGE_PREFIX}}/{name}:${{IMAGE_TAG}}"
        build = service.resolved["build"]
        assert build["context"] == ".", f"compose {name}: the repository root is every image's build context"
        own = BROKER_DIR / "Dockerfile" if name == "broker" else PYTHON_DOCKERFILE
        assert (REPO / build["dockerfile"]).resolve() == own, f"compose {name}: built from {own.relative_to(REPO)}"
    for overlay in OVERLAYS:
        for name, workload in workloads(rendered(overlay)).items():
            image = main_container(workload)["image"]
            if name in compose and name in THIRD_PARTY:
                assert image == compose[name].resolved["image"], f"{overlay}: {name} runs Compose's {image}"
            elif name in compose:
                assert image.endswith(f"{prefix}/{name}:{tag}"), f"{overlay}: {name} image at .env's IMAGE_TAG"


def test_the_same_ports_everywhere(devstack: DevStack) -> None:
    """Each service's port: make dev's fixed port (AGENT_PORT for agents) = .env's = Compose's container port and
    MESH_HTTP_PORT = the Dockerfile's EXPOSE = the Kubernetes container port, Service port and probe port."""
    env = dotenv()
    mesh = set(mesh_services(devstack))
    for service in devstack.processes:
        port = devstack.port(service)
        where = f"{service} (port {port})"
        if service in mesh:
            if service not in AGENTS:
                assert devstack.processes[service].env["MESH_HTTP_PORT"] == str(port), f"make dev {where}"
                assert env[f"{service.upper()}_PORT"] == str(port), f".env {service.upper()}_PORT, {where}"
            assert compose_services()[service].env["MESH_HTTP_PORT"] == str(port), f"compose MESH_HTTP_PORT, {where}"
        if service in mesh:
            assert service_image(service)["port"] == port, f"compose build argument SERVICE_PORT (EXPOSE), {where}"
        elif service not in THIRD_PARTY:
            assert port in dockerfile(service_folder(service) / "Dockerfile")["expose"], f"Dockerfile EXPOSE, {where}"
        assert port in compose_services()[service].container_ports, f"compose ports/expose, {where}"
        for overlay in OVERLAYS:
            docs = rendered(overlay)
            container = main_container(workloads(docs)[service])
            declared = {p["containerPort"] for p in container.get("ports", [])}
            assert port in declared, f"{overlay}: containerPort, {where}"
            for probe in ("readinessProbe", "livenessProbe"):
                action = container[probe].get("httpGet") or container[probe].get("tcpSocket")
                if action:
                    assert container_port(container, action["port"]) == port, f"{overlay}: {probe}, {where}"
            services = objects(docs, "Service")
            assert service in services, f"{overlay}: a Service named {service}"
            targets = {
                p["port"]: container_port(container, p.get("targetPort", p["port"]))
                for p in services[service]["spec"]["ports"]
            }
            assert targets.get(port) == port, f"{overlay}: Service {service} port {port} -> container {port}"
            if service in mesh:
                assert k8s_env(docs, container)["MESH_HTTP_PORT"] == str(port), f"{overlay}: MESH_HTTP_PORT, {where}"
    broker_port = devstack.port("broker")
    assert env["MESH_MQTT__PORT"] == str(broker_port), ".env MESH_MQTT__PORT is the broker's port"
    listener = re.search(r"^listener\s+(\d+)", (BROKER_DIR / "mosquitto.conf").read_text(), re.M)
    assert listener and int(listener[1]) == broker_port, "services/broker/mosquitto.conf listens on the broker's port"
    assert env["REDIS_PORT"] == str(devstack.port("redis")), ".env REDIS_PORT is make dev's Redis port"


def test_services_find_each_other_by_the_same_names(devstack: DevStack) -> None:
    """The addresses in .env name services that exist, at their ports, in Compose and in Kubernetes alike."""
    env = dotenv()
    addresses = {
        "MESH_MQTT__HOST": ("broker", env["MESH_MQTT__HOST"], int(env["MESH_MQTT__PORT"])),
        "MESH_REDIS_URL": ("redis", urlsplit(env["MESH_REDIS_URL"]).hostname, urlsplit(env["MESH_REDIS_URL"]).port),
    }
    for key, service in (("MESH_REGISTRY_URL", "registry"), ("MESH_TASKSTORE_URL", "taskstore")):
        url = urlsplit(env[key])
        addresses[key] = (service, url.hostname, url.port)
    for key, (service, host, port) in addresses.items():
        assert host == service, f".env {key}: the host is the service's name, {service}"
        assert port == devstack.port(service), f".env {key}: {service}'s port is {devstack.port(service)}"
        assert service in compose_services(), f".env {key}: no Compose service {service}"
        for overlay in OVERLAYS:
            ports = {p["port"] for p in objects(rendered(overlay), "Service")[service]["spec"]["ports"]}
            assert port in ports, f"{overlay}: Service {service} serves {port} ({key})"


def test_the_same_setting_names_everywhere(devstack: DevStack) -> None:
    """For each service: Compose and every overlay set the same MESH_* names; those include every name make dev
    sets, plus only the documented deployment-only ones; each is a field of the service's settings class."""
    for service in mesh_services(devstack):
        known = settings_names(settings_of(service))
        local = {name for name in devstack.processes[service].env if name.startswith("MESH_")}
        compose = {name for name in compose_services()[service].env if name.startswith("MESH_")}
        unknown = compose - known
        assert not unknown, f"compose {service}: {sorted(unknown)} are not {settings_of(service).__name__} fields"
        assert local <= compose, f"compose {service} lacks what make dev sets: {sorted(local - compose)}"
        extra = compose - local
        assert extra <= set(DEPLOYMENT_ONLY_SETTINGS), (
            f"compose {service} sets {sorted(extra - set(DEPLOYMENT_ONLY_SETTINGS))}, which make dev does not "
            f"(set them in infra/devstack too, or document them in DEPLOYMENT_ONLY_SETTINGS)"
        )
        for overlay in OVERLAYS:
            docs = rendered(overlay)
            k8s = {n for n in k8s_env(docs, main_container(workloads(docs)[service])) if n.startswith("MESH_")}
            if service in AGENTS:
                assert set(K8S_AGENT_ONLY_SETTINGS) <= k8s, f"{overlay} {service}: {sorted(K8S_AGENT_ONLY_SETTINGS)}"
                k8s -= set(K8S_AGENT_ONLY_SETTINGS)
            if service == "coordinator":
                assert set(K8S_REPLICA_ONLY_SETTINGS) <= k8s, f"{overlay}: {sorted(K8S_REPLICA_ONLY_SETTINGS)}"
                k8s -= set(K8S_REPLICA_ONLY_SETTINGS)
            if service == "taskstore":
                assert set(K8S_PARTITION_ONLY_SETTINGS) <= k8s, f"{overlay}: {sorted(K8S_PARTITION_ONLY_SETTINGS)}"
                k8s -= set(K8S_PARTITION_ONLY_SETTINGS)
                if "postgres" in workloads(docs):
                    on_postgres = set(compose_with_postgres()[service].env)
                    assert set(POSTGRES_ONLY_SETTINGS) <= k8s & on_postgres, f"{overlay}, compose.postgres.yaml"
                    k8s -= set(POSTGRES_ONLY_SETTINGS)
            if service == "registry":
                assert set(K8S_REGISTRY_ONLY_SETTINGS) <= k8s, f"{overlay}: {sorted(K8S_REGISTRY_ONLY_SETTINGS)}"
                k8s -= set(K8S_REGISTRY_ONLY_SETTINGS)
            assert k8s == compose, (
                f"{overlay}: {service}'s settings differ from compose.yaml's: only in k8s {sorted(k8s - compose)}, "
                f"only in compose {sorted(compose - k8s)}"
            )


def test_dev_overlay_and_compose_give_the_same_values(devstack: DevStack) -> None:
    """With .env as the one source, the dev overlay and Compose hand every service the same values (except what a
    pod supplies itself, such as an agent replica's id and identity, and an agent's pool)."""
    docs = rendered("dev")
    for service in mesh_services(devstack):
        compose = compose_services()[service].env
        k8s = k8s_env(docs, main_container(workloads(docs)[service]))
        for name, value in k8s.items():
            only_k8s = {
                *K8S_AGENT_ONLY_SETTINGS,
                *K8S_REPLICA_ONLY_SETTINGS,
                *K8S_PARTITION_ONLY_SETTINGS,
                *K8S_REGISTRY_ONLY_SETTINGS,
            }
            if name.startswith("MESH_") and value is not FROM_POD and name not in only_k8s:
                assert value == compose[name], f"{service} {name}: k8s dev {value!r} != compose {compose[name]!r}"


def test_kubernetes_settings_are_the_values_of_dotenv() -> None:
    """k8s/base/mesh.env (kustomize cannot read ../../.env) holds exactly .env's service settings."""
    expected = {key: value for key, value in dotenv().items() if not key.startswith(COMPOSE_ONLY_PREFIXES)}
    actual = read_env_file(K8S_ENV_FILE)
    wrong = sorted(f"{key}={value}" for key, value in expected.items() if actual.get(key) != value)
    stray = sorted(set(actual) - set(expected))
    assert not wrong and not stray, (
        f"k8s/base/mesh.env must hold these lines of .env: {wrong}; and not these keys: {stray}"
    )
    config = objects(rendered("dev"), "ConfigMap")
    [mesh_config] = [doc for name, doc in config.items() if name.startswith("mesh-config-")]
    assert mesh_config["data"] == expected, "the dev overlay's mesh-config is .env's service settings, unchanged"


def test_compose_uses_only_dotenv_values() -> None:
    """Every ${NAME} in the Compose files is set in .env (interpolate() asserts it), and every service setting of
    .env is used by some service in Compose."""
    texts = (COMPOSE_FILE.read_text(), COMPOSE_EXTEND_FILE.read_text(), COMPOSE_POSTGRES_FILE.read_text())
    used = set(VARIABLE.findall("".join(texts)))
    compose_services()
    settings = {key for key in dotenv() if not key.startswith(COMPOSE_ONLY_PREFIXES)}
    assert settings <= used, f".env keys no Compose service reads: {sorted(settings - used)}"


def test_the_broker_runs_the_same_policy_and_mounts_everywhere() -> None:
    """Every file of services/broker/conf.d is in the broker-policy ConfigMap, unchanged; Compose mounts that folder
    and Kubernetes the ConfigMap at the same path; the data volume (which also holds the dynamic-security plugin's
    own, writable file) is mounted at the same path in both. (Its TLS files: the security tests at the end.)"""
    policy_files = {path.name: path.read_text() for path in sorted((BROKER_DIR / "conf.d").iterdir()) if path.is_file()}
    mounts = compose_mounts(compose_services()["broker"])
    assert mounts.get("/mosquitto/config/conf.d") == "./services/broker/conf.d"
    assert mounts.get("/mosquitto/data") == "broker-data", "compose broker: its data on the volume broker-data"
    config = (BROKER_DIR / "mosquitto.conf").read_text()
    plugin_file = re.search(r"^plugin_opt_config_file\s+(\S+)", config, re.M)
    assert plugin_file and plugin_file[1].startswith("/mosquitto/data/"), (
        "services/broker/mosquitto.conf: the plugin writes its file back, so it lives on the data volume"
    )
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        broker = workloads(docs)["broker"]
        assert broker["kind"] == "StatefulSet" and broker["spec"]["volumeClaimTemplates"], f"{overlay}: broker PVC"
        volumes = {volume["name"]: volume for volume in pod_spec(broker)["volumes"]}
        claims = {claim["metadata"]["name"] for claim in broker["spec"]["volumeClaimTemplates"]}
        k8s_mounts = {m["mountPath"]: m["name"] for m in main_container(broker)["volumeMounts"]}
        config_name = volumes[k8s_mounts["/mosquitto/config/conf.d"]]["configMap"]["name"]
        assert objects(docs, "ConfigMap")[config_name]["data"] == policy_files, (
            f"{overlay}: list every file of services/broker/conf.d in services/broker/kustomization.yaml"
        )
        assert k8s_mounts.get("/mosquitto/data") in claims, f"{overlay}: the broker's data on its volume claim"


def secret_key_at(workload: dict[str, Any], path: str) -> tuple[str, str] | None:
    """The (Secret, key) a workload's main container reads at the file `path`, through a Secret volume's item."""
    spec = workload["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in main_container(workload).get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")  # a volume claim template's mount: none
        for item in (secret or {}).get("items", []):
            if f"{mount['mountPath'].rstrip('/')}/{item['path']}" == path:
                return secret["secretName"], item["key"]
    return None


def test_postgres_credentials_agree_with_the_database_url() -> None:
    """The prod overlay's task store connects as postgres.env's user to its database, with its password: the URL
    (in no Secret, not secret) names the user and database and no password; the password is a file, the Secret
    postgres-credentials' POSTGRES_PASSWORD, the key PostgreSQL itself reads (POSTGRES_PASSWORD_FILE), never an
    environment variable of the task store."""
    docs = rendered("prod")
    [secret] = [doc for name, doc in objects(docs, "Secret").items() if name.startswith("postgres-credentials")]
    data = secret_data(secret)
    assert set(data) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}, "only PostgreSQL's own credentials"
    taskstore_workload = workloads(docs)["taskstore"]
    taskstore = k8s_env(docs, main_container(taskstore_workload))
    url = urlsplit(taskstore["MESH_DATABASE_URL"])
    postgres = objects(docs, "Service")["postgres"]["spec"]["ports"][0]["port"]
    assert url.scheme == "postgresql+psycopg", "the task store speaks psycopg 3 (its image installs the extra)"
    assert (url.username, url.password, url.path.lstrip("/")) == (data["POSTGRES_USER"], None, data["POSTGRES_DB"]), (
        "k8s/components/postgres: MESH_DATABASE_URL repeats postgres.env's user and database, and no password"
    )
    assert (url.hostname, url.port) == ("postgres", postgres)
    assert taskstore["MESH_DATABASE_PASSWORD_FILE"] == DATABASE_PASSWORD_FILE
    password_key = (secret["metadata"]["name"], "POSTGRES_PASSWORD")
    assert secret_key_at(taskstore_workload, DATABASE_PASSWORD_FILE) == password_key, "the Secret's password, a file"
    server_workload = workloads(docs)["postgres"]
    server = k8s_env(docs, main_container(server_workload))
    assert secret_key_at(server_workload, server["POSTGRES_PASSWORD_FILE"]) == password_key, (
        "PostgreSQL's password is the one the task store reads"
    )
    leaked = [
        entry["name"]
        for entry in main_container(taskstore_workload)["env"]
        if "secretKeyRef" in entry.get("valueFrom", {})
    ]
    assert not leaked, f"the task store reads {leaked} from a Secret into its environment: mount it as a file"
    assert "postgres" in service_image("taskstore")["extras"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_ports_are_the_services_ports(overlay: str, devstack: DevStack) -> None:
    """A NetworkPolicy rule about app=X names only ports X listens on, so a port change cannot leave it stale."""
    docs = rendered(overlay)
    ports = {
        name: {p["containerPort"] for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
        for name, w in workloads(docs).items()
    }
    mqtt_clients = {name for name, w in workloads(docs).items() if "a2a-mesh.dev/mqtt" in labels_of(w)}
    speakers = set(mesh_services(devstack)) - set(BROKERLESS)
    assert mqtt_clients == speakers, f"{overlay}: every mesh service but BROKERLESS ones, and only they, speak MQTT"
    for name, policy in objects(docs, "NetworkPolicy").items():
        selected = policy["spec"]["podSelector"].get("matchLabels", {})
        targets = selected_workloads(docs, selected)
        for rule in policy["spec"].get("ingress", []):
            allowed = set().union(*(ports[t] for t in targets)) if targets else set()
            for port in rule.get("ports", []):
                assert port["port"] in allowed, f"{overlay}: NetworkPolicy {name} admits {port['port']}, not served"
        for rule in policy["spec"].get("egress", []):
            peers = rule.get("to", [])
            if not peers or any("namespaceSelector" in peer or "ipBlock" in peer for peer in peers):
                continue  # outside the namespace (cluster DNS)
            peers = [peer["podSelector"].get("matchLabels", {}) for peer in peers]
            reachable = set().union(*(ports[t] for peer in peers for t in selected_workloads(docs, peer)))
            for port in rule.get("ports", []):
                assert port["port"] in reachable, (
                    f"{overlay}: NetworkPolicy {name} lets out to {port['port']}, unserved"
                )


PUSH_WEBHOOKS = REPO / "k8s" / "components" / "push-webhooks"
# what push webhooks may never reach through the component: private, shared, link-local and loopback ranges
CLOSED_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"}


def coordinator_egress_out_of_cluster(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The egress rules of NetworkPolicies selecting the coordinators that name addresses (ipBlock peers)."""
    return [
        rule
        for policy in objects(docs, "NetworkPolicy").values()
        if policy["spec"]["podSelector"].get("matchLabels", {}).get("app") == "coordinator"
        for rule in policy["spec"].get("egress", [])
        if any("ipBlock" in peer for peer in rule.get("to", []))
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_push_webhook_egress_is_an_opt_in_component(overlay: str, tmp_path: Path) -> None:
    """No overlay lets the coordinators out of the cluster by default; the component push-webhooks, added to an
    overlay, lets them (and nothing else) out to public addresses on 443 and 80, every private, shared, link-local
    and loopback range excepted, and changes nothing else."""
    docs = rendered(overlay)
    assert not coordinator_egress_out_of_cluster(docs), f"{overlay}: coordinators reach outside addresses by default"
    folder = tmp_path / f"{overlay}-with-push-webhooks"
    folder.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "k8s" / "overlays" / overlay, folder)],  # kustomize wants relative
        "components": [os.path.relpath(PUSH_WEBHOOKS, folder)],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    with_push = [doc for doc in yaml.safe_load_all(kustomize(str(folder))) if doc]
    [rule] = coordinator_egress_out_of_cluster(with_push)
    [peer] = rule["to"]
    assert peer["ipBlock"]["cidr"] == "0.0.0.0/0" and set(peer["ipBlock"]["except"]) >= CLOSED_RANGES, peer
    assert sorted((port["protocol"], port["port"]) for port in rule["ports"]) == [("TCP", 80), ("TCP", 443)], rule
    for policy in objects(with_push, "NetworkPolicy").values():
        if rule in policy["spec"].get("egress", []):
            policy["spec"]["egress"].remove(rule)
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    assert {(doc["kind"], doc["metadata"]["name"]): doc for doc in with_push} == by_name, (
        f"{overlay}: push-webhooks changes more than the coordinators' egress"
    )


def labels_of(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selected_workloads(docs: list[dict[str, Any]], match: dict[str, str]) -> list[str]:
    return [name for name, w in workloads(docs).items() if match.items() <= labels_of(w).items()]


# == 4. security: TLS and the same identities everywhere ========================================================
def test_the_secrets_script_makes_valid_secrets_of_the_pki(
    devstack: DevStack, k8s_secrets: SecretsScript, tmp_path: Path
) -> None:
    """k8s/secrets.sh makes exactly the Secrets the workloads mount from the PKI (none of the render's own), each
    accepted by kubernetes-validate; none holds the CA's key."""
    mounted = {
        volume["secret"]["secretName"]
        for overlay in OVERLAYS
        for workload in workloads(rendered(overlay)).values()
        for volume in pod_spec(workload).get("volumes", [])
        if "secret" in volume
    }
    in_render = {name for overlay in OVERLAYS for name in objects(rendered(overlay), "Secret")}
    assert set(k8s_secrets.secrets) == mounted - in_render, (
        f"k8s/secrets.sh makes {sorted(k8s_secrets.secrets)}; the workloads mount {sorted(mounted - in_render)}"
    )
    output = tmp_path / "secrets.yaml"
    output.write_text(k8s_secrets.output)
    argv = [tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(output)]
    result = run(argv)
    assert result.returncode == 0, f"kubernetes-validate refused k8s/secrets.sh's output:\n{result.stderr}"
    assert len(re.findall(r"^INFO .* passed for resource", result.stdout, re.M)) == len(k8s_secrets.secrets)
    ca_key = (devstack.stack.pki.root / "ca.key").read_bytes()
    for name, data in k8s_secrets.secrets.items():
        assert all(ca_key.strip() not in content for content in data.values()), f"{name} holds the CA's key"


def test_every_process_connects_with_tls_as_the_same_identity_everywhere(
    devstack: DevStack, k8s_secrets: SecretsScript
) -> None:
    """Each service and agent, and the coordinator's workflows agent, connects over TLS to the broker's port as the
    same identity in make dev, Compose and every overlay; that identity is one the dev runner issues
    (Stack.identities()); the certificate mounted for it names it, its key matches, its password is the identity's;
    and a process mounts no other identity's files."""
    stack = devstack.stack
    pki = stack.pki
    issued = {identity.username(stack.org, stack.unit): identity for identity in stack.identities()}
    for service in mesh_services(devstack):
        local = devstack.processes[service].env
        compose = compose_services()[service].env
        prefixes = [prefix for prefix in IDENTITY_PREFIXES if f"{prefix}USERNAME" in local]
        if service in BROKERLESS:
            assert not prefixes, f"make dev {service}: {BROKERLESS[service]}; yet it has a broker identity"
            mounted = set(compose_pki_files(compose_services()[service], pki.root))
            assert mounted <= internal_files_read(compose), f"compose {service} mounts PKI files beyond internal TLS"
            continue
        assert "MESH_MQTT__" in prefixes, f"make dev {service}: no broker identity"
        files = compose_pki_files(compose_services()[service], pki.root)
        overlays = {overlay: rendered(overlay) for overlay in OVERLAYS}
        for prefix in prefixes:
            username = local[f"{prefix}USERNAME"]
            where = f"{service} {prefix}*"
            assert username in issued, f"make dev {where}: {username} is no identity Stack.identities() issues"
            assert local[f"{prefix}TLS"] == "true" and local[f"{prefix}PORT"] == str(stack.ports.mqtt), where
            settings = {name: compose[prefix + name] for name in ("USERNAME", "TLS", "HOST", "PORT")}
            assert settings == {
                "USERNAME": username,
                "TLS": "true",
                "HOST": dotenv()["MESH_MQTT__HOST"],
                "PORT": str(stack.ports.mqtt),
            }, f"compose {where}: {settings}"
            for overlay, docs in overlays.items():
                for pod in k8s_pods(service):
                    check_k8s_identity(stack, issued, docs, service, prefix, pod, {**settings}, f"{overlay} {where}")
            identity = pki.client(issued[username])
            cert, key = files[compose[f"{prefix}CERT_FILE"]], files[compose[f"{prefix}KEY_FILE"]]
            assert common_name(cert) == username, f"compose {where}: the certificate mounted is not {username}'s"
            assert (cert, key) == (identity.cert.read_bytes(), identity.key.read_bytes()), f"compose {where}: pair"
            assert files[compose[f"{prefix}PASSWORD_FILE"]] == identity.password_file.read_bytes(), where
            assert files[compose[f"{prefix}CA_FILE"]] == pki.ca_cert.read_bytes(), f"compose {where}: the CA"
        mine = {local[f"{prefix}USERNAME"] for prefix in prefixes}
        server = compose.get("MESH_INTERNAL__SERVER_CERT_FILE")  # its API's server certificate: test_internal_apis_*
        certificates = [content for path, content in files.items() if path != server]
        names = {common_name(content) for content in certificates if content.startswith(b"-----BEGIN CERT")}
        assert names - {common_name(pki.ca_cert.read_bytes())} <= mine, f"compose {service} mounts {names - mine}"
    # the broker's health check connects as `health`, whose role may read $SYS/broker/uptime and nothing else
    health = compose_pki_files(compose_services()["broker"], pki.root)["/mosquitto/health/client.crt"]
    assert common_name(health) == "health" and issued["health"].role is Role.HEALTH
    acls = issued["health"].acls(stack.org, stack.unit)
    assert [(acl["acltype"], acl["topic"]) for acl in acls] == [("subscribePattern", "$SYS/broker/uptime")]


def test_compose_runs_a_second_coordinator_as_an_identity_of_its_own(devstack: DevStack) -> None:
    """Compose's coordinator-1 (profile replicas) is the coordinator with other identities, coordinator-1 and
    workflows-1, which `make certs` issues (their own certificates, keys and passwords mounted, nothing of the first
    coordinator's), the replica ids make dev's second coordinator has, and ports of its own on the host; both
    coordinators share rate limits in Redis."""
    stack, services = devstack.stack, compose_services()
    first, second = services["coordinator"], services["coordinator-1"]
    assert second.raw.get("profiles") == ["replicas"], "only with --profile replicas"
    assert second.resolved["image"] == first.resolved["image"] and second.raw["build"] == first.raw["build"]
    issued = {identity.username(stack.org, stack.unit): identity for identity in stack.identities()}
    expected = {"MESH_MQTT__": "coordinator-1", "MESH_WORKFLOWS_MQTT__": "workflows-1"}
    for prefix, name in expected.items():
        username = second.env[f"{prefix}USERNAME"]
        assert username == f"{stack.org}/{stack.unit}/{name}" and username in issued, f"{prefix}: {username}"
    assert (second.env["MESH_REPLICA_ID"], second.env["MESH_WORKFLOWS_ID"]) == ("coordinator-1", "workflows-1")
    assert service_of(second.env["MESH_REPLICA_ID"]) == "coordinator", "a replica name the task store trusts"
    files = compose_pki_files(second, stack.pki.root)
    for prefix, name in expected.items():
        identity = stack.pki.client(issued[f"{stack.org}/{stack.unit}/{name}"])
        assert common_name(files[second.env[f"{prefix}CERT_FILE"]]) == identity.username
        assert files[second.env[f"{prefix}KEY_FILE"]] == identity.key.read_bytes(), f"{prefix}: its own key"
        assert files[second.env[f"{prefix}PASSWORD_FILE"]] == identity.password_file.read_bytes(), prefix
    theirs = compose_pki_files(first, stack.pki.root)
    own_files = {second.env[f"{prefix}{name}"] for prefix in expected for name in IDENTITY_FILES[1:]}
    assert all(files[path] != theirs[path] for path in own_files), "coordinator-1 mounts the first's credentials"
    identity_settings = {f"{prefix}{name}" for prefix in expected for name in ("USERNAME",)}
    # it reads the second registry (test_compose_runs_a_second_registry_as_an_identity_of_its_own), the first reads
    # the first
    registry = urlsplit(second.env["MESH_REGISTRY_URL"])
    assert (registry.scheme, registry.hostname, registry.port) == (
        "https",
        "registry-1",
        int(dotenv()["REGISTRY_PORT"]),
    )
    assert set(second.raw["depends_on"]) - set(first.raw["depends_on"]) == {"registry-1"}, "waits for its registry"
    same = set(first.env) - identity_settings - {"MESH_REGISTRY_URL"}
    assert {key: second.env.get(key) for key in same} == {key: first.env[key] for key in same}, "other settings"
    assert set(second.env) - set(first.env) == {"MESH_REPLICA_ID", "MESH_WORKFLOWS_ID"}
    shared = urlsplit(first.env["MESH_RATE_LIMIT_REDIS_URL"])
    assert (shared.hostname, shared.username) == ("redis", "coordinator"), "rate limits shared in Redis, own user"
    host_ports = [str(entry).rsplit(":", 1)[0] for s in (first, second) for entry in s.resolved["ports"]]
    assert len(host_ports) == len(set(host_ports)) == 4, f"each coordinator on host ports of its own: {host_ports}"


def test_compose_runs_a_second_registry_as_an_identity_of_its_own(devstack: DevStack) -> None:
    """Compose's registry-1 (profile replicas) is the registry as the broker identity registry-1, which `make certs`
    issues (its own certificate, key and password mounted, nothing of the first's but the shared Redis user), named
    as its replica id, serving HTTPS with a server certificate that names the host coordinator-1 reaches it by; it
    indexes into the same Redis as the first, so both answer alike."""
    stack, services = devstack.stack, compose_services()
    first, second = services["registry"], services["registry-1"]
    assert second.raw.get("profiles") == ["replicas"], "only with --profile replicas"
    assert "profiles" not in first.raw, "the first registry runs without a profile"
    assert second.resolved["image"] == first.resolved["image"] and second.raw["build"] == first.raw["build"]
    issued = {identity.username(stack.org, stack.unit): identity for identity in stack.identities()}
    username = second.env["MESH_MQTT__USERNAME"]
    assert username == f"{stack.org}/{stack.unit}/registry-1" and issued[username].role is Role.REGISTRY, username
    assert second.env["MESH_REPLICA_ID"] == "registry-1" and service_of("registry-1") == "registry"
    files, theirs = compose_pki_files(second, stack.pki.root), compose_pki_files(first, stack.pki.root)
    identity = stack.pki.client(issued[username])
    assert common_name(files[second.env["MESH_MQTT__CERT_FILE"]]) == identity.username
    assert files[second.env["MESH_MQTT__KEY_FILE"]] == identity.key.read_bytes(), "its own key"
    assert files[second.env["MESH_MQTT__PASSWORD_FILE"]] == identity.password_file.read_bytes(), "its own password"
    own = ("MESH_MQTT__KEY_FILE", "MESH_MQTT__PASSWORD_FILE", "MESH_INTERNAL__SERVER_KEY_FILE")
    assert all(files[second.env[key]] != theirs[first.env[key]] for key in own), "registry-1 mounts the first's keys"
    assert second.env["MESH_REDIS_URL"] == first.env["MESH_REDIS_URL"], "one Redis index for both"
    different = {"MESH_MQTT__USERNAME", "MESH_REPLICA_ID"}
    assert set(second.env) - set(first.env) == {"MESH_REPLICA_ID"}
    assert {k: v for k, v in second.env.items() if k not in different} == {
        k: v for k, v in first.env.items() if k not in different
    }, "every other setting as the first's"
    server = x509.load_pem_x509_certificate(files[second.env["MESH_INTERNAL__SERVER_CERT_FILE"]])
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    reader = urlsplit(services["coordinator-1"].env["MESH_REGISTRY_URL"]).hostname
    assert reader in names.get_values_for_type(x509.DNSName), f"servers/registry-1 does not name {reader}"
    assert second.container_ports == first.container_ports and not second.resolved.get("ports"), "not published"


def compose_with_postgres() -> dict[str, ComposeService]:
    """The mesh's services as Compose runs them with compose.postgres.yaml loaded after compose.yaml: each service
    of the second file merged into the first's as Compose merges them (mappings key by key, the later file winning;
    the second file changes no list of the first's), every profile included."""

    def merge(base: Any, override: Any, key: str = "") -> Any:
        if isinstance(base, dict) and isinstance(override, dict):
            return {**base, **{name: merge(base.get(name), value, name) for name, value in override.items()}}
        if key == "volumes" and isinstance(base, list):  # merged by their target, the later file's winning
            return list({mount_target(mount): mount for mount in [*base, *override]}.values())
        assert base is None or not isinstance(base, list), f"compose.postgres.yaml replaces a list: {override}"
        return override

    first, second = load_yaml(COMPOSE_FILE)["services"], load_yaml(COMPOSE_POSTGRES_FILE)["services"]
    merged = {name: merge(first.get(name), second.get(name)) if name in second else first[name] for name in first}
    merged |= {name: spec for name, spec in second.items() if name not in first}
    return {name: ComposeService(name, spec, interpolate(spec, f"compose {name}")) for name, spec in merged.items()}


def test_compose_postgres_runs_the_task_store_as_partitions_of_one_database(devstack: DevStack) -> None:
    """Issue #18 item 4 in Compose: with compose.postgres.yaml, the task store runs as k8s/components/postgres runs
    it, two partitions writing one PostgreSQL: `taskstore` and `taskstore-1` are partitions 0 and 1 of the same
    MESH_PARTITIONS (the prod overlay's count of pods and its MESH_PARTITIONS), each its own broker identity of
    role taskstore (the files of its own identity mounted, nothing of the other's), with the prod overlay's database
    URL; no profile stops one of the two; coordinator-1 reads the second, by a name its server certificate has.
    Without the file (`make up`), the one task store stays on SQLite with no partitions."""
    stack, services = devstack.stack, compose_with_postgres()
    partitioned = {name: service for name, service in services.items() if service_of(name) == "taskstore"}
    assert set(partitioned) == {"taskstore", "taskstore-1"}, sorted(partitioned)
    assert not any("profiles" in service.raw for service in (*partitioned.values(), services["postgres"])), (
        "a partition without its store records nothing: both run, with the database, whenever the file is loaded"
    )
    prod = rendered("prod")
    k8s_store = workloads(prod)["taskstore"]
    k8s_partitions = k8s_env(prod, main_container(k8s_store))["MESH_PARTITIONS"]
    counts = {service.env["MESH_PARTITIONS"] for service in partitioned.values()}
    assert counts == {str(len(partitioned))} == {k8s_partitions} == {str(k8s_store["spec"]["replicas"])}, counts
    assert sorted(int(service.env["MESH_PARTITION"]) for service in partitioned.values()) == list(range(2))
    k8s_store_env = k8s_env(prod, main_container(k8s_store))
    issued = {identity.username(stack.org, stack.unit): identity for identity in stack.identities()}
    usernames, keys = set(), set()
    for name, service in partitioned.items():
        env = service.env
        assert env["MESH_DATABASE_URL"] == k8s_store_env["MESH_DATABASE_URL"], f"{name}: the prod overlay's database"
        assert env["MESH_DATABASE_PASSWORD_FILE"] == k8s_store_env["MESH_DATABASE_PASSWORD_FILE"], name
        assert (
            compose_pki_files(service, stack.pki.root)[env["MESH_DATABASE_PASSWORD_FILE"]]
            == (stack.pki.root / TASKSTORE_PASSWORD_FILE).read_bytes()
        ), f"{name}: the PostgreSQL password of make certs"
        settings = TaskStoreSettings.model_validate(
            {
                "database_url": env["MESH_DATABASE_URL"],
                "partitions": env["MESH_PARTITIONS"],
                "partition": env["MESH_PARTITION"],
            }
        )
        assert settings.partition < settings.partitions, name
        username = env["MESH_MQTT__USERNAME"]
        assert (
            username
            == f"{stack.org}/{stack.unit}/{env.get('MESH_REPLICA_ID', name)}"
            == f"{stack.org}/{stack.unit}/{name}"
        )
        assert issued[username].role is Role.TASKSTORE, f"{name}: make certs issues {username} as a task store"
        files = compose_pki_files(service, stack.pki.root)
        identity = stack.pki.client(issued[username])
        assert common_name(files[env["MESH_MQTT__CERT_FILE"]]) == identity.username, f"{name}: its own certificate"
        assert files[env["MESH_MQTT__KEY_FILE"]] == identity.key.read_bytes(), f"{name}: its own key"
        assert files[env["MESH_MQTT__PASSWORD_FILE"]] == identity.password_file.read_bytes(), f"{name}: password"
        assert service.raw["depends_on"]["postgres"]["condition"] == "service_healthy", f"{name} waits for it"
        usernames.add(username)
        keys.add(files[env["MESH_MQTT__KEY_FILE"]])
    assert len(usernames) == len(keys) == len(partitioned), "each partition its own identity and session"
    first, second = partitioned["taskstore"], partitioned["taskstore-1"]
    own = {"MESH_MQTT__USERNAME", "MESH_PARTITION", "MESH_REPLICA_ID"}
    assert set(second.env) - set(first.env) == {"MESH_REPLICA_ID"}
    assert {k: v for k, v in second.env.items() if k not in own} == {k: v for k, v in first.env.items() if k not in own}
    assert second.resolved["image"] == first.resolved["image"] and second.resolved["build"] == first.resolved["build"]
    assert second.container_ports == first.container_ports and not second.resolved.get("ports"), "not published"
    server = x509.load_pem_x509_certificate(
        compose_pki_files(second, stack.pki.root)[second.env["MESH_INTERNAL__SERVER_CERT_FILE"]]
    )
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    reader = urlsplit(services["coordinator-1"].env["MESH_TASKSTORE_URL"]).hostname
    assert reader == "taskstore-1" and reader in names.get_values_for_type(x509.DNSName), reader
    assert set(services["coordinator-1"].raw["depends_on"]) >= {"taskstore", "taskstore-1"}
    # without the file, compose.yaml's one task store on SQLite, as before
    alone = compose_services()["taskstore"].env
    assert alone["MESH_DATABASE_URL"].startswith("sqlite:") and "MESH_PARTITIONS" not in alone
    assert "taskstore-1" not in compose_services() and "postgres" not in compose_services()


def test_compose_postgres_runs_the_prod_overlays_postgresql(devstack: DevStack) -> None:
    """Compose's PostgreSQL is the prod overlay's: the same image (.env's IMAGE_POSTGRES), user and database, TLS
    settings and pg_hba.conf, the server certificate `make certs` issues for `postgres`, never published. Its password
    is a file, as on Kubernetes: `make certs`' postgres/taskstore.password, the file the task store reads, in no
    environment variable."""
    docs = rendered("prod")
    k8s = main_container(workloads(docs)["postgres"])
    services = compose_with_postgres()
    service = services["postgres"]
    assert service.resolved["image"] == k8s["image"], "the same PostgreSQL image (.env IMAGE_POSTGRES:..._TAG)"
    credentials = read_env_file(POSTGRES_COMPONENT / "postgres.env")
    assert {k: service.env[k] for k in ("POSTGRES_USER", "POSTGRES_DB")} == {
        k: credentials[k] for k in ("POSTGRES_USER", "POSTGRES_DB")
    }, "k8s/components/postgres/postgres.env's user and database"
    assert "POSTGRES_PASSWORD" not in service.env, "the password belongs in a file (POSTGRES_PASSWORD_FILE)"
    pki = devstack.stack.pki.root
    password = compose_pki_files(service, pki)[service.env["POSTGRES_PASSWORD_FILE"]]
    assert password == (pki / TASKSTORE_PASSWORD_FILE).read_bytes(), "make certs' postgres/taskstore.password"
    for name in ("taskstore", "taskstore-1"):
        store = services[name]
        assert compose_pki_files(store, pki)[store.env["MESH_DATABASE_PASSWORD_FILE"]] == password, name
    settings = {arg for arg in service.resolved["command"] if arg != "-c"} - {"postgres"}
    k8s_settings = {arg for arg in k8s["args"] if arg != "-c"}
    same = {arg.split("=")[0] for arg in settings & k8s_settings}
    assert same >= {"ssl", "ssl_min_protocol_version", "hba_file"}, sorted(settings ^ k8s_settings)
    assert {arg.split("=")[0] for arg in settings ^ k8s_settings} <= {"ssl_key_file", "unix_socket_directories"}, (
        "only where the key is read (copied into memory first) and the socket lives may differ"
    )
    mounts = compose_mounts(service)
    hba = next(doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("postgres-hba"))
    hba_target = next(arg.split("=", 1)[1] for arg in settings if arg.startswith("hba_file="))
    ours = (REPO / mounts[hba_target]).read_text().splitlines()
    assert [line for line in ours if line and not line.startswith("#")] == hba["data"]["pg_hba.conf"].splitlines()
    assert mounts["/run/secrets/postgres-tls/tls.crt"] == f"{COMPOSE_PKI}/servers/postgres.crt"
    assert mounts["/run/secrets/postgres-tls/tls.key"] == f"{COMPOSE_PKI}/servers/postgres.key"
    assert not service.resolved.get("ports"), "reachable on the Compose network only"
    assert service.raw["read_only"] and service.raw["cap_drop"] == ["ALL"] and service.raw["user"] != "0"


def pool_identity(
    stack: Stack, issued: dict[str, Identity], pod: str | None, prefix: str, service: str | None = None
) -> Identity | None:
    """The identity whose certificate a pod that enrolls holds under `prefix`: its pool's (an agent's plain
    identity, the plain `coordinator` or `workflows`; None: the process's own identity everywhere). The pod enrolls
    its own username and password as it starts."""
    service = service or (pod.rpartition("-")[0] if pod else None)
    pool = ENROLLED_IDENTITIES.get(service or "", {}).get(prefix)
    if pod is None or pool is None:
        return None
    return issued.get(Identity(pool, Role.AGENT).username(stack.org, stack.unit))


def check_k8s_identity(
    stack: Stack,
    issued: dict[str, Identity],
    docs: list[dict[str, Any]],
    service: str,
    prefix: str,
    pod: str | None,
    settings: dict[str, str],
    where: str,
) -> None:
    """A pod's broker identity under `prefix`: Compose's `settings`, except that an agent's pod <agent>-<i> is the
    identity <agent>-<i> of the pool <agent>, which it enrolls as it starts from the pool's template (`make certs`
    writes it)."""
    workload = workloads(docs)[service]
    env = k8s_env(docs, main_container(workload), pod)
    if pod is not None:
        where = f"{where} (pod {pod})"
    pool = pool_identity(stack, issued, pod, prefix, service)
    expected_pool = ENROLLED_IDENTITIES.get(service, {}).get(prefix)
    if pod is not None and expected_pool is not None:
        replica = f"{expected_pool}-{pod.rpartition('-')[2]}"
        username = Identity(replica, Role.AGENT).username(stack.org, stack.unit)
        assert pool is not None and pool.name == expected_pool, f"{where}: {replica} is no replica of {expected_pool}"
        template = json.loads(stack.pki.enroll_template(expected_pool).read_text())
        assert template["pool"] == expected_pool, f"{where}: `make certs` writes no role template for {expected_pool}"
        assert template["rolename"] == f"id:{template['username']}", f"{where}: a role of its own"
        if service in AGENTS:
            assert env["MESH_POOL"] == service, f"{where}: MESH_POOL is its identity's pool"
        settings["USERNAME"] = username
    assert {name: env[prefix + name] for name in settings} == settings, where


def test_every_process_reads_the_same_pki_files_at_the_same_paths(
    devstack: DevStack, k8s_secrets: SecretsScript
) -> None:
    """Every file a process reads from the PKI (its identity's *_FILE settings and its internal mutual TLS's, the
    coordinator's API keys; the broker's TLS files, dynamic-security seed and health identity) is mounted at that
    path in Compose and in every overlay, with the same content: the PKI of `make certs`, never a second copy (an
    agent's pod holds its pool's certificate and key there, and the password it enrolled as it started). Compose
    mounts nothing else."""
    stack = devstack.stack
    pki = stack.pki.root
    issued = {identity.username(stack.org, stack.unit): identity for identity in stack.identities()}
    for service in [*mesh_services(devstack), "broker"]:
        compose = compose_pki_files(compose_services()[service], pki)
        needed = broker_files_read() if service == "broker" else service_files_read(compose_services()[service].env)
        assert needed, f"{service} reads no file of the PKI"
        assert set(compose) == needed, (
            f"compose {service}: mount exactly the PKI files it reads: missing {sorted(needed - set(compose))}, "
            f"unused {sorted(set(compose) - needed)}"
        )
        for overlay, pod in [(overlay, pod) for overlay in OVERLAYS for pod in k8s_pods(service)]:
            docs = rendered(overlay)
            where = f"{overlay} {service}" + (f" (pod {pod})" if pod else "")
            k8s = k8s_secret_files(docs, workloads(docs)[service], k8s_secrets, pod)
            expected = dict(compose)
            if service != "broker":
                env = k8s_env(docs, main_container(workloads(docs)[service]), pod)
                assert service_files_read(env) == needed, f"{where}: other file settings than Compose's"
                for prefix in IDENTITY_PREFIXES:
                    pool = pool_identity(stack, issued, pod, prefix, service)
                    if pool is None:
                        continue
                    files = stack.pki.client(pool)  # the pool's certificate, and the password it enrolls
                    for name, source in (("CERT", files.cert), ("KEY", files.key)):
                        expected[env[f"{prefix}{name}_FILE"]] = source.read_bytes()
                    expected[env[f"{prefix}PASSWORD_FILE"]] = ENROLLED
            if service in AGENTS:  # the pool's certificate only, never a password issued in advance
                names = {common_name(content) for content in k8s.values() if content.startswith(b"-----BEGIN CERT")}
                assert names == {
                    common_name(compose[env["MESH_MQTT__CA_FILE"]]),
                    compose_services()[service].env["MESH_MQTT__USERNAME"],
                }, f"{where}: mounts the certificates of {sorted(names)}"
            for path in sorted(needed):
                assert path in k8s, f"{where}: nothing mounted at {path}"
                assert digest(k8s[path]) == digest(expected[path]), f"{where}: {path} is not the identity's file"
    broker_cert = x509.load_pem_x509_certificate((pki / "broker.crt").read_bytes())
    names = broker_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    host = dotenv()["MESH_MQTT__HOST"]
    assert host in names.get_values_for_type(x509.DNSName), f"the broker's certificate does not name {host}"


def internal_client_certificate(env: dict[str, Any], files: dict[str, bytes]) -> bytes:
    """The certificate a client presents to the internal APIs: its own (MESH_INTERNAL__CERT_FILE) or, naming none,
    its broker identity's (a2amesh.internal.client_ssl_context)."""
    return files[env.get("MESH_INTERNAL__CERT_FILE") or env["MESH_MQTT__CERT_FILE"]]


def test_internal_apis_are_mutual_tls_everywhere(devstack: DevStack, k8s_secrets: SecretsScript) -> None:
    """In make dev, Compose and every overlay: the registry and the task store serve their APIs over HTTPS with
    their server certificate of `make certs` (naming the host their URL names) and the mesh CA; every service that
    calls them does so at an https:// URL with internal TLS on, presenting a mesh certificate of the identity the
    servers admit (the coordinator its broker one, the console its own); Kubernetes probes them over HTTPS."""
    stack = devstack.stack
    pki = stack.pki.root
    admitted = {f"{stack.org}/{stack.unit}/{name}" for name in [*InternalTlsSettings().readers, "console"]}
    overlays = {overlay: rendered(overlay) for overlay in OVERLAYS}
    for service in mesh_services(devstack):
        local = devstack.processes[service].env
        compose_env = compose_services()[service].env
        views: dict[str, tuple[dict[str, Any], dict[str, bytes]]] = {
            "compose": (compose_env, compose_pki_files(compose_services()[service], pki))
        }
        for overlay, docs in overlays.items():
            workload = workloads(docs)[service]
            pod = k8s_pods(service)[0]
            files = k8s_secret_files(docs, workload, k8s_secrets, pod)
            views[overlay] = (k8s_env(docs, main_container(workload), pod), files)
        if service in INTERNAL_APIS:
            assert local.get("MESH_INTERNAL__ENABLED") == "true", f"make dev {service}: internal TLS off"
            host = urlsplit(dotenv()[INTERNAL_APIS[service]]).hostname
            for where, (env, files) in views.items():
                where = f"{where} {service}"
                assert env.get("MESH_INTERNAL__ENABLED") == "true", f"{where}: its API is not mutual TLS"
                cert = files[env["MESH_INTERNAL__SERVER_CERT_FILE"]]
                assert cert == (pki / "servers" / f"{service}.crt").read_bytes(), f"{where}: not servers/{service}"
                assert files[env["MESH_INTERNAL__SERVER_KEY_FILE"]] == (pki / "servers" / f"{service}.key").read_bytes()
                assert files[env["MESH_INTERNAL__CA_FILE"]] == stack.pki.ca_cert.read_bytes(), f"{where}: the CA"
                names = x509.load_pem_x509_certificate(cert).extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                )
                assert host in names.value.get_values_for_type(x509.DNSName), f"{where}: certificate lacks {host}"
        callers = [key for key in INTERNAL_APIS.values() if key in local]
        if not callers:
            continue
        assert local.get("MESH_INTERNAL__ENABLED") == "true", f"make dev {service}: calls the APIs without TLS"
        for where, (env, files) in views.items():
            where = f"{where} {service}"
            for key in callers:
                assert urlsplit(env[key]).scheme == "https", f"{where}: {key} is not https://"
            assert env.get("MESH_INTERNAL__ENABLED") == "true", f"{where}: calls the internal APIs without TLS"
            name = common_name(internal_client_certificate(env, files))
            assert name in admitted, f"{where}: presents {name}, which the internal APIs do not admit"
            if "MESH_INTERNAL__CA_FILE" in env:
                assert files[env["MESH_INTERNAL__CA_FILE"]] == stack.pki.ca_cert.read_bytes(), f"{where}: the CA"
    for overlay, docs in overlays.items():
        for service in INTERNAL_APIS:
            container = main_container(workloads(docs)[service])
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                scheme = container[probe]["httpGet"].get("scheme")
                assert scheme == "HTTPS", f"{overlay} {service}: {probe} over {scheme or 'HTTP'}"
            annotations = workloads(docs)[service]["spec"]["template"]["metadata"]["annotations"]
            assert annotations.get("prometheus.io/scheme") == "https", f"{overlay} {service}: scraped over HTTP"


class HealthServer:
    """A stand-in for a service's /healthz, over HTTPS with a server certificate or over plain HTTP, on loopback,
    for running the health checks the deployments define against (their only job is that request)."""

    def __init__(self, cert: Path | None = None, key: Path | None = None) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/healthz" else 404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if cert is not None and key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert), str(key))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HealthServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_the_service_health_checks_speak_https_to_the_internal_apis(devstack: DevStack) -> None:
    """Compose's health check and the image's HEALTHCHECK, run for real: over HTTPS, verifying the server against
    the mesh CA and presenting no client certificate, where the service serves its API with mutual TLS (/healthz is
    open without one: a2amesh.internal.PUBLIC_PATHS); over HTTP elsewhere; failing when nothing answers, or when
    the server's certificate is not the mesh CA's."""
    pki = devstack.stack.pki.root
    compose_test = compose_services()["registry"].resolved["healthcheck"]["test"]
    assert compose_test[0] == "CMD-SHELL" and len(compose_test) == 2, "compose: one shell command"
    assert compose_services()["taskstore"].resolved["healthcheck"]["test"] == compose_test
    image = dockerfile(PYTHON_DOCKERFILE)["health"]
    checks = {"compose healthcheck": ["sh", "-c", compose_test[1]], "Dockerfile HEALTHCHECK": image}
    server_env = {
        name: value for name, value in compose_services()["registry"].env.items() if name.startswith("MESH_INTERNAL__")
    }
    local = {  # the container's paths, pointed at the dev runner's PKI
        "MESH_INTERNAL__CA_FILE": str(pki / "ca.crt"),
        "MESH_INTERNAL__SERVER_CERT_FILE": str(pki / "servers" / "registry.crt"),
        "MESH_INTERNAL__SERVER_KEY_FILE": str(pki / "servers" / "registry.key"),
    }
    assert set(local) <= set(server_env), f"compose registry: sets {sorted(server_env)}"
    plain_env = {"PATH": os.environ["PATH"], "SERVICE_PORT": "1"}  # the image's build argument, as its ENV
    tls_env = {**plain_env, **server_env, **local}
    foreign = devstack.stack.run_dir / "foreign-ca"
    Pki(foreign).ensure([])
    Pki(foreign).issue("servers/registry", server_names=("registry", "localhost"))

    def run_check(argv: list[str], env: dict[str, str], port: int) -> int:
        argv = [sys.executable if part == "python" else part for part in argv]
        if argv[0] == "sh":
            argv[2] = argv[2].replace("python -c", f"{shlex.quote(sys.executable)} -c", 1)
        result = subprocess.run(argv, env={**env, "MESH_HTTP_PORT": str(port)}, capture_output=True, timeout=30)
        return result.returncode

    for where, argv in checks.items():
        with HealthServer(pki / "servers" / "registry.crt", pki / "servers" / "registry.key") as server:
            assert run_check(argv, tls_env, server.port) == 0, f"{where}: fails against the registry's HTTPS"
            assert run_check(argv, plain_env, server.port) != 0, f"{where}: plain HTTP passed against HTTPS"
        with HealthServer(foreign / "servers" / "registry.crt", foreign / "servers" / "registry.key") as server:
            assert run_check(argv, tls_env, server.port) != 0, f"{where}: trusts a certificate of another CA"
        with HealthServer() as server:
            assert run_check(argv, plain_env, server.port) == 0, f"{where}: fails against a plain HTTP service"
        assert run_check(argv, tls_env, free_port()) != 0, f"{where}: passes with nothing listening"


# -- Redis: one ACL user per client, declared once (topology.yaml redis_users) -------------------------------------
def redis_clients(env: dict[str, Any]) -> dict[str, str]:
    """A process's Redis URL settings that are set (URL setting -> its password file setting)."""
    return {url: password for url, password in REDIS_CLIENT_SETTINGS.items() if env.get(url)}


def compose_redis_clients() -> list[str]:
    return [name for name, service in compose_services().items() if redis_clients(service.env)]


def test_every_redis_client_connects_as_its_own_acl_user_everywhere(
    devstack: DevStack, k8s_secrets: SecretsScript
) -> None:
    """Every process that talks to Redis (the registry, each coordinator replica) names in its URL the ACL user of
    its own service, declared in topology.yaml, and no password: the password is the user's file of `make certs`
    (redis/<user>.password), mounted in Compose and from the Secret redis-<user> on Kubernetes, read through its
    *_PASSWORD_FILE setting; make dev hands the same settings over. Every declared user is some service's, or
    documented in REDIS_NON_SERVICE_USERS."""
    stack = devstack.stack
    pki = stack.pki.root
    declared = set(TOPOLOGY.redis_users)
    assert not set(REDIS_NON_SERVICE_USERS) - declared, "REDIS_NON_SERVICE_USERS names users topology.yaml lacks"
    users: dict[str, str] = {}

    def check(where: str, service: str, env: dict[str, Any], files: dict[str, bytes] | None) -> None:
        for url_setting, password_setting in redis_clients(env).items():
            url = urlsplit(env[url_setting])
            user = url.username
            assert url.password is None, f"{where} {url_setting}: a password in the URL (it belongs in its file)"
            assert user == service_of(service), f"{where} {url_setting}: Redis user {user}, not {service_of(service)}"
            assert user in declared, f"{where} {url_setting}: {user} is no redis_users entry of {TOPOLOGY_FILE}"
            assert password_setting in env, f"{where}: {url_setting} without {password_setting}"
            expected = (pki / "redis" / f"{user}.password").read_bytes()
            if files is None:  # make dev: the PKI's own file
                assert Path(env[password_setting]) == pki / "redis" / f"{user}.password", f"{where} {password_setting}"
            else:
                assert files.get(env[password_setting]) == expected, f"{where}: {password_setting} is not {user}'s"
            users[service] = user

    for service in mesh_services(devstack):
        check(f"make dev {service}", service, devstack.processes[service].env, None)
    for service in compose_redis_clients():
        compose = compose_services()[service]
        check(f"compose {service}", service, compose.env, compose_pki_files(compose, pki))
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        for name, workload in workloads(docs).items():
            for pod in k8s_pods(name) if name in AGENTS or name in mesh_services(devstack) else [None]:
                env = k8s_env(docs, main_container(workload), pod)
                if redis_clients(env):
                    files = k8s_secret_files(docs, workload, k8s_secrets, pod)
                    check(f"{overlay} {name}" + (f" (pod {pod})" if pod else ""), name, env, files)
    assert {"registry", "coordinator", "coordinator-1"} <= set(users), f"Redis clients found: {sorted(users)}"
    unused = declared - set(users.values()) - set(REDIS_NON_SERVICE_USERS)
    assert not unused, f"{TOPOLOGY_FILE}: Redis users no service connects as: {sorted(unused)}"


def acl_users(text: str) -> dict[str, list[str]]:
    """An ACL file's users: name -> its rules (the words after the name)."""
    users: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if words and not line.startswith("#"):
            assert words[0] == "user" and len(words) >= 3, f"not an ACL file line: {line}"
            users[words[1]] = words[2:]
    return users


def aclfile_argument(argv: list[str], where: str) -> str:
    assert "--aclfile" in argv, f"{where}: Redis runs without --aclfile (its default user would let anyone in)"
    return argv[argv.index("--aclfile") + 1]


def test_redis_runs_with_the_acl_file_of_make_certs_everywhere(devstack: DevStack, k8s_secrets: SecretsScript) -> None:
    """make dev, Compose and every overlay start Redis with the one ACL file `make certs` writes from topology.yaml
    (redis/users.acl): the default user off, each declared user on with the SHA-256 digest of its password file
    (never the password) and the rules topology.yaml gives it."""
    pki = devstack.stack.pki.root
    acl = (pki / "redis" / "users.acl").read_bytes()
    users = acl_users(acl.decode())
    assert users.pop("default") == ["off"], "users.acl: the default user is off"
    assert set(users) == set(TOPOLOGY.redis_users), f"users.acl holds {sorted(users)}"
    for user, rules in users.items():
        password = (pki / "redis" / f"{user}.password").read_text().strip()
        digest_rule = "#" + hashlib.sha256(password.encode()).hexdigest()
        assert rules[:2] == ["on", digest_rule], f"users.acl {user}: on, with its password's digest"
        assert rules[2:] == TOPOLOGY.redis_users[user].split(), f"users.acl {user}: the rules of {TOPOLOGY_FILE}"
        assert password.encode() not in acl and "nopass" not in rules, f"users.acl {user}: a password in clear"
    local = devstack.processes["redis"].argv
    assert Path(aclfile_argument(local, "make dev")) == pki / "redis" / "users.acl", "make dev: the PKI's users.acl"
    compose = compose_services()["redis"]
    mounted = compose_pki_files(compose, pki)
    command = compose.resolved["command"]
    assert mounted.get(aclfile_argument(command, "compose redis")) == acl, "compose redis: the PKI's users.acl"
    assert set(mounted) == {f"{REDIS_SECRETS}/users.acl", f"{REDIS_SECRETS}/health.password"}, "compose redis mounts"
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        workload = workloads(docs)["redis"]
        container = main_container(workload)
        files = k8s_secret_files(docs, workload, k8s_secrets)
        argv = [*container.get("command", []), *container.get("args", [])]
        assert files.get(aclfile_argument(argv, f"{overlay} redis")) == acl, f"{overlay} redis: the PKI's users.acl"


def test_the_redis_health_checks_authenticate(devstack: DevStack, tmp_path: Path) -> None:
    """Compose's health check and the Kubernetes readiness probe, run for real against a redis-server started with
    the ACL file of `make certs` (default user off): they pass as `health` with its mounted password, and fail with
    a wrong password or with nothing listening."""
    pki = devstack.stack.pki.root
    compose = compose_services()["redis"]
    test = compose.resolved["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and len(test) == 2, "compose redis: one shell command"
    checks = {"compose healthcheck": test[1]}
    for overlay in OVERLAYS:
        probe = main_container(workloads(rendered(overlay))["redis"])["readinessProbe"]["exec"]["command"]
        assert probe[:2] == ["sh", "-c"] and len(probe) == 3, f"{overlay} redis: one shell command"
        checks[f"{overlay} readinessProbe"] = probe[2]
    assert all(f"{REDIS_SECRETS}/health.password" in command for command in checks.values()), checks
    local = Stack(run_dir=tmp_path / "run", ports=Ports.random(), pki_dir=pki)
    server, port = local.redis(), local.ports.redis  # as make dev starts it: the PKI's users.acl
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.mkdir()
    wrong.mkdir()
    (right / "health.password").write_bytes((pki / "redis" / "health.password").read_bytes())
    (wrong / "health.password").write_text("guess\n")

    def run_check(command: str, folder: Path, redis_port: int) -> int:
        assert f"-p {dotenv()['REDIS_PORT']} " in command, f"the check names Redis's port: {command}"
        local = command.replace(REDIS_SECRETS, str(folder)).replace(
            f"-p {dotenv()['REDIS_PORT']} ", f"-p {redis_port} "
        )
        result = subprocess.run(["sh", "-c", local], capture_output=True, timeout=30, check=False)
        return result.returncode

    server.start()
    try:
        server.wait_ready(30)
        for where, command in checks.items():
            assert run_check(command, right, port) == 0, f"{where}: fails as health against Redis with its ACL file"
            assert run_check(command, wrong, port) != 0, f"{where}: passes with a wrong password (does it log in?)"
            assert run_check(command, right, free_port()) != 0, f"{where}: passes with nothing listening"
    finally:
        server.stop()


# -- broker configs: TLS only ----------------------------------------------------------------------------------
def mosquitto_directives(text: str) -> list[tuple[str, str]]:
    """A Mosquitto config as (option, value) pairs, in order."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            found.append((key, value.strip()))
    return found


def broker_configs(devstack: DevStack) -> dict[str, list[tuple[str, str]]]:
    """Every broker config the mesh runs, top-level file and shared policy together."""
    policy = [
        d for path in sorted((BROKER_DIR / "conf.d").glob("*.conf")) for d in mosquitto_directives(path.read_text())
    ]
    written = devstack.stack.run_dir / "mosquitto.conf"
    assert written.is_file(), "the dev runner wrote no broker config"
    return {
        "services/broker/mosquitto.conf (Compose, Kubernetes)": [
            *mosquitto_directives((BROKER_DIR / "mosquitto.conf").read_text()),
            *policy,
        ],
        "make dev (devstack Stack.broker)": [*mosquitto_directives(written.read_text()), *policy],
        "infra/bridge/mosquitto-edge.conf (an edge site's broker)": [
            *mosquitto_directives((REPO / "infra" / "bridge" / "mosquitto-edge.conf").read_text()),
            *policy,
        ],
    }


def listeners(directives: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Each `listener` with the options that follow it (until the next)."""
    found: list[dict[str, str]] = []
    for key, value in directives:
        if key == "listener":
            found.append({"listener": value})
        elif found:
            found[-1][key] = value
    return found


def test_no_broker_config_has_a_plaintext_listener(devstack: DevStack) -> None:
    """Every listener of every broker config has TLS (a CA, a certificate and a key); no default listener (`port`);
    the shared policy declares none; anonymous access is off; access control is the dynamic-security plugin alone,
    its file on the writable data directory."""
    for path in sorted((BROKER_DIR / "conf.d").glob("*.conf")):
        keys = {key for key, _ in mosquitto_directives(path.read_text())}
        assert not keys & {"listener", "port"}, f"{path.relative_to(REPO)}: listeners belong to each deployment"
    for name, directives in broker_configs(devstack).items():
        keys = [key for key, _ in directives]
        settings = dict(directives)
        assert "port" not in keys and "bind_address" not in keys, f"{name}: a default listener, without TLS"
        assert listeners(directives), f"{name}: no listener"
        for listener in listeners(directives):
            tls = {"certfile", "keyfile"} <= set(listener) and ({"cafile", "capath"} & set(listener))
            assert tls, f"{name}: listener {listener['listener']} has no TLS: {listener}"
        assert [value for key, value in directives if key == "allow_anonymous"] == ["false"], f"{name}: anonymous"
        assert not {"password_file", "acl_file", "psk_file"} & set(keys), f"{name}: access is the plugin's alone"
        plugins = [value for key, value in directives if key in ("plugin", "auth_plugin")]
        assert len(plugins) == 1 and plugins[0].endswith("/mosquitto_dynamic_security.so"), f"{name}: {plugins}"
        assert settings["plugin_opt_config_file"].startswith(settings["persistence_location"]), (
            f"{name}: the plugin writes its file back: keep it in the data directory"
        )


@pytest.mark.parametrize(
    "config", ["services/broker/mosquitto.conf (Compose, Kubernetes)", "make dev (devstack Stack.broker)"]
)
def test_every_listener_requires_a_client_certificate(config: str, devstack: DevStack) -> None:
    for listener in listeners(broker_configs(devstack)[config]):
        assert listener.get("require_certificate") == "true", f"{config}: listener {listener['listener']}"
    container = listeners(broker_configs(devstack)["services/broker/mosquitto.conf (Compose, Kubernetes)"])
    assert [listener["listener"].split()[0] for listener in container] == [dotenv()["MESH_MQTT__PORT"]]


# -- the broker image, run for real ----------------------------------------------------------------------------
def health_commands() -> dict[str, str]:
    """The broker's health check as the image, Compose and Kubernetes each run it (`sh -c <command>`)."""
    docs = rendered("dev")
    probe = main_container(workloads(docs)["broker"])["readinessProbe"]["exec"]["command"]
    image = dockerfile(BROKER_DIR / "Dockerfile")["health"]
    test = compose_services()["broker"].resolved["healthcheck"]["test"]
    compose = ["sh", "-c", *test[1:]] if test[0] == "CMD-SHELL" else test[1:]  # CMD-SHELL runs /bin/sh -c <command>
    commands = {"Dockerfile HEALTHCHECK": image, "compose healthcheck": compose, "k8s readinessProbe": probe}
    for where, argv in commands.items():
        assert argv[:2] == ["sh", "-c"] and len(argv) == 3, f"{where}: sh -c <command>"
    return {where: argv[2] for where, argv in commands.items()}


def test_the_broker_health_check_is_the_same_everywhere() -> None:
    commands = health_commands()
    assert len(set(commands.values())) == 1, f"the broker's health checks differ: {commands}"


async def connect_once(settings: MqttSettings) -> None:
    """Connect as the identity (its username is also its pinned client id), then leave."""
    async with make_client(settings, str(settings.username)):
        pass


def enroll_pod(env: dict[str, Any], port: int, inside: Callable[[str], Path]) -> None:
    """What an agent pod's init container does (a2amesh.enroll), with its environment and its files."""
    mqtt = "MESH_ENROLL_MQTT__"
    enroller = MqttSettings(
        host="127.0.0.1",
        port=port,
        tls=env[f"{mqtt}TLS"] == "true",
        ca_file=inside(env[f"{mqtt}CA_FILE"]),
        cert_file=inside(env[f"{mqtt}CERT_FILE"]),
        key_file=inside(env[f"{mqtt}KEY_FILE"]),
        username=env[f"{mqtt}USERNAME"],
        password_file=inside(env[f"{mqtt}PASSWORD_FILE"]),
    )
    settings = EnrollSettings(
        org=env["MESH_ORG"],
        unit=env["MESH_UNIT"],
        agent_id=env["MESH_AGENT_ID"],
        pool=env["MESH_POOL"],
        enroll_template=inside(env["MESH_ENROLL_TEMPLATE"]),
        enroll_mqtt=enroller,
        enroll_out=inside(env["MESH_ENROLL_OUT"]),
        enroll_files_from=inside(env["MESH_ENROLL_FILES_FROM"]),
    )
    enroll(settings)


def sh(command: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout, check=False)


def test_the_broker_image_runs_tls_only_with_the_plugin_seeded_from_the_pki(
    devstack: DevStack, k8s_secrets: SecretsScript, tmp_path: Path
) -> None:
    """The image's config and command, run by the machine's Mosquitto over the files Kubernetes would mount (the
    Secrets of k8s/secrets.sh; Compose mounts the same, see above): the command seeds the plugin's file into the
    data directory once; the health check passes; every service and agent (each replica pod of it), with the
    settings and files its pod gets, is admitted as its identity; plaintext, a client without a certificate and the
    health identity reading anything but the uptime are refused."""
    mosquitto_sub = shutil.which("mosquitto_sub")
    assert mosquitto_sub, "mosquitto_sub is missing: install Debian's mosquitto-clients"
    root, port = tmp_path / "container", free_port()

    def local(text: str) -> str:
        """A container path or command, pointed at the stand-in for the container's filesystem."""
        return (
            text.replace("/mosquitto/", f"{root}/mosquitto/")
            .replace("/usr/lib/mosquitto_dynamic_security.so", find_dynsec_plugin())
            .replace("/usr/sbin/mosquitto", find_binary("mosquitto"))
            .replace("8883 0.0.0.0", f"{port} 127.0.0.1")
            .replace("-p 8883", f"-p {port}")
        )

    def inside(path: str, service: str = "broker", pod: str | None = None) -> Path:
        """A path in the service's (or its pod's) container (each its own filesystem; the broker's is `root`)."""
        return (root if service == "broker" else tmp_path / (pod or service)) / path.lstrip("/")

    docs = rendered("dev")
    for service in ["broker", *mesh_services(devstack)]:
        workload = workloads(docs)[service]
        for pod in k8s_pods(service):
            mounted = k8s_secret_files(docs, workload, k8s_secrets, pod)
            mounted = {path: content for path, content in mounted.items() if content != ENROLLED}
            for init in enroll_containers(workload):  # the init containers' Secrets too; passwords are theirs
                mounted |= k8s_secret_files(docs, workload, k8s_secrets, pod, init)
            for path, content in mounted.items():
                inside(path, service, pod).parent.mkdir(parents=True, exist_ok=True)
                inside(path, service, pod).write_bytes(content)
    (root / "mosquitto" / "data").mkdir(parents=True)
    shutil.copytree(BROKER_DIR / "conf.d", root / "mosquitto" / "config" / "conf.d")
    config = root / "mosquitto" / "config" / "mosquitto.conf"
    config.write_text(f"user {getpass.getuser()}\n" + local((BROKER_DIR / "mosquitto.conf").read_text()))
    [_, _, command] = dockerfile(BROKER_DIR / "Dockerfile")["cmd"]
    health = local(health_commands()["Dockerfile HEALTHCHECK"])
    seed = root / "mosquitto" / "data" / "dynamic-security.json"

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            broker = subprocess.Popen(["sh", "-c", local(command)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and broker.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return broker
            time.sleep(0.05)
        broker.kill()
        raise AssertionError(f"the broker did not start:\n{log.read_text()}")

    def stop(broker: subprocess.Popen[bytes]) -> None:
        broker.terminate()
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()

    broker = start(tmp_path / "first.log")
    try:
        assert "seeded" in (tmp_path / "first.log").read_text(), "the image's command did not seed the plugin's file"
        assert seed.read_bytes() == k8s_secrets.secrets["broker-certs"]["dynamic-security.json"]
        assert seed.stat().st_mode & 0o777 == 0o600, "the seeded copy holds password hashes: 0600"
        result = sh(health)
        assert result.returncode == 0, (
            f"the health check failed:\n{result.stderr}\n{(tmp_path / 'first.log').read_text()}"
        )
        refused = {
            "plaintext": f"{mosquitto_sub} -h 127.0.0.1 -p {port} -t '$SYS/broker/uptime' -C 1 -W 3",
            "no client certificate": re.sub(r"--cert \S+ --key \S+ ", "", health),
            "health reading other topics": health.replace("-t '$SYS/broker/uptime'", "-t '$SYS/#' -t '$a2a/#'"),
        }
        for what, attempt in refused.items():
            assert attempt != health, f"{what}: the attempt did not change the command"
            assert sh(attempt).returncode != 0, f"{what}: the broker let it through"
        for service, pod in [(name, pod) for name in mesh_services(devstack) for pod in k8s_pods(name)]:
            for init in enroll_containers(workloads(docs)[service]):  # the pod enrolls its identities first
                enroll_pod(k8s_env(docs, init, pod), port, lambda path, s=service, p=pod: inside(path, s, p))
            env = k8s_env(docs, main_container(workloads(docs)[service]), pod)
            for prefix in [prefix for prefix in IDENTITY_PREFIXES if f"{prefix}USERNAME" in env]:
                settings = MqttSettings(
                    host="127.0.0.1",
                    port=port,
                    tls=env[f"{prefix}TLS"] == "true",
                    ca_file=inside(env[f"{prefix}CA_FILE"], service, pod),
                    cert_file=inside(env[f"{prefix}CERT_FILE"], service, pod),
                    key_file=inside(env[f"{prefix}KEY_FILE"], service, pod),
                    username=env[f"{prefix}USERNAME"],
                    password_file=inside(env[f"{prefix}PASSWORD_FILE"], service, pod),
                )
                try:
                    asyncio.run(connect_once(settings))
                except Exception as error:
                    who = pod or service
                    raise AssertionError(f"{who} {prefix}*: the broker refused {settings.username}") from error
    finally:
        stop(broker)
    broker = start(tmp_path / "second.log")
    try:
        assert "seeded" not in (tmp_path / "second.log").read_text(), "a restart must keep the broker's own copy"
        assert sh(health).returncode == 0
    finally:
        stop(broker)


def redis_rules(
    policies: Iterable[dict[str, Any]], pod_labels: dict[str, str], port: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The NetworkPolicy rules that let pods with `pod_labels` reach Redis: their egress rules to Redis and Redis's
    ingress rules from them (only those naming `port`, when given)."""
    policies = list(policies)

    def on_port(rule: dict[str, Any]) -> bool:
        return port is None or any(entry["port"] == port for entry in rule.get("ports", []))

    egress = [
        rule
        for policy in policies
        if policy["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()
        for rule in policy["spec"].get("egress", [])
        if any(peer.get("podSelector", {}).get("matchLabels") == {"app": "redis"} for peer in rule.get("to", []))
        and on_port(rule)
    ]
    ingress = [
        rule
        for policy in policies
        if policy["spec"]["podSelector"].get("matchLabels") == {"app": "redis"}
        for rule in policy["spec"].get("ingress", [])
        if any(
            peer.get("podSelector", {}).get("matchLabels", {}).items() <= pod_labels.items()
            for peer in rule.get("from", [])
        )
        and on_port(rule)
    ]
    return egress, ingress
