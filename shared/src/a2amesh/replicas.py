"""Names of service replicas: a service run more than once gives each replica its own broker identity and
certificate, `<service>-<n>` (MESH_REPLICA_ID), which the other services grant what they grant the service itself
(the task store trusts a coordinator replica as a recorder; the internal APIs admit it as the coordinator).
Outsiders cannot take such a name (`make identity` refuses it)."""

from __future__ import annotations

import re

_REPLICA = re.compile(r"(?P<service>.+)-[0-9]+")


def service_of(name: str) -> str:
    """The service an identity name belongs to: `coordinator` for `coordinator-2`, else the name itself."""
    match = _REPLICA.fullmatch(name)
    return match["service"] if match else name


def acts_as(name: str, services: frozenset[str] | set[str] | list[str]) -> bool:
    """Whether `name` is one of `services`, or a replica of one."""
    return name in services or service_of(name) in services
