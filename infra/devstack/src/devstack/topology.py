"""The mesh's topology as infra/devstack/topology.yaml declares it: its services, its agents, the broker
identities (with their ACL roles) and Redis's ACL users. The dev runner and the PKI take their lists from here;
tests/test_topology.py holds Compose, Kubernetes and the agent folders to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.pki import Identity, Role
from devstack.processes import REPO_ROOT

TOPOLOGY_FILE = Path("infra/devstack/topology.yaml")
"""Where the topology is declared, relative to the repository root."""


class TopologyError(ValueError):
    """topology.yaml says something the mesh cannot run (a clear message naming the entry)."""


@dataclass(frozen=True)
class Service:
    """One of the mesh's own processes besides the agents."""

    name: str
    module: str | None = None
    """What `python -m` runs (None: a third-party program, e.g. the broker or Redis)."""
    identity: Identity | None = None
    """The broker user it connects as (None: it has no broker connection of its own)."""


@dataclass(frozen=True)
class Topology:
    services: dict[str, Service]
    identities: tuple[Identity, ...]
    """Broker users that are no process of their own (the coordinator's hosted agent, meshctl, the health probe)."""
    agents: tuple[str, ...]
    redis_users: dict[str, str] = field(default_factory=dict)
    """Redis's ACL users: name -> its rules (Redis ACL syntax; devstack.redis_users adds `on` and the password)."""

    @property
    def agent_packages(self) -> dict[str, str]:
        """Agent id -> the package that runs it (services/agents/<name>/src/agent_<name>)."""
        return {name: agent_package(name) for name in self.agents}

    def service_identities(self) -> dict[str, Identity]:
        """The services' broker identities, by the module that runs each."""
        return {s.module: s.identity for s in self.services.values() if s.module and s.identity is not None}

    def broker_identities(self, agents: list[str] | tuple[str, ...] | None = None) -> list[Identity]:
        """Every broker user of the mesh the PKI issues: services, the other declared users, and each agent's
        (`agents`: a subset that runs, e.g. MESH_DEV_AGENTS; default all)."""
        running = self.agents if agents is None else agents
        return [
            *self.service_identities().values(),
            *self.identities,
            *(Identity(name, Role.AGENT) for name in running),
        ]

    def process_names(self) -> set[str]:
        """What runs: a make dev process, a Compose service and a Kubernetes workload each."""
        return set(self.services) | set(self.agents)


def agent_package(name: str) -> str:
    return "agent_" + name.replace("-", "_")


def _role(value: Any, where: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(role.value for role in Role)
        raise TopologyError(f"{where}: role {value!r} is no broker ACL role ({known})") from None


def load_topology(root: Path = REPO_ROOT) -> Topology:
    """Read and check `root`'s topology.yaml."""
    path = root / TOPOLOGY_FILE
    data = yaml.safe_load(path.read_text()) or {}
    services: dict[str, Service] = {}
    for name, entry in (data.get("services") or {}).items():
        entry = entry or {}
        identity = None
        if entry.get("identity"):
            identity = Identity(entry["identity"], _role(entry.get("role"), f"{path}: services.{name}"))
        services[name] = Service(name, entry.get("module"), identity)
    identities = tuple(
        Identity(name, _role(role, f"{path}: identities.{name}"))
        for name, role in (data.get("identities") or {}).items()
    )
    agents = tuple(data.get("agents") or ())
    clash = set(agents) & (set(services) | {identity.name for identity in identities})
    if clash:
        raise TopologyError(f"{path}: {sorted(clash)} declared twice (an agent and a service or identity)")
    redis_users = {str(name): str(rules) for name, rules in (data.get("redis_users") or {}).items()}
    for name, rules in redis_users.items():
        if name == "default" or not name.replace("-", "").isalnum():
            raise TopologyError(f"{path}: redis_users.{name}: a user name of letters, digits and '-', not default")
        if any(word in {"on", "off", "nopass"} or word.startswith((">", "#")) for word in rules.split()):
            raise TopologyError(f"{path}: redis_users.{name}: rules only; `make certs` adds `on` and the password")
    return Topology(services, identities, agents, redis_users)


TOPOLOGY = load_topology()
"""The repository's topology."""
