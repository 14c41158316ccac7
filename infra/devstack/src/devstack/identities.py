"""Outside participants (a requester or an agent nobody here runs) joining and leaving by one command: `make identity`,
`make identity-remove` and `meshctl identity` all call `admit` and `revoke`.

Admitting issues the identity's certificate and password into the PKI folder (the layout of `make certs`), records it
so `make certs` keeps it, writes it into the broker's seed configuration, and creates it on the running broker as
its admin (`$CONTROL/dynamic-security`), which persists it in the plugin's own file. Revoking undoes each step; the
plugin disconnects the identity's connections at once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from a2amesh.replicas import acts_as
from a2amesh.settings import MqttSettings
from devstack.dynsec import DynsecError, add_identity, remove_identity
from devstack.pki import ADMIN, TESTER, ClientFiles, Identity, Pki, Role

OUTSIDE_ROLES = (Role.REQUESTER, Role.AGENT)
"""The roles an outside participant may get (the services' roles stay with the identities `make certs` issues)."""

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A name that is one topic level and one file name: no `/`, no wildcard, no leading dot."""

SERVICES = frozenset({"coordinator", "workflows", "registry", "taskstore"})
"""Services whose replicas are named `<service>-<n>` (MESH_REPLICA_ID), even where `make certs` issues none."""


class IdentityError(ValueError):
    """An identity that cannot be admitted or revoked as asked (a clear message, never a traceback)."""


@dataclass(frozen=True)
class Broker:
    """Where the running broker listens (the admin's credentials come from the PKI folder)."""

    host: str = "127.0.0.1"
    port: int = 8883

    def admin(self, pki: Pki) -> MqttSettings:
        files = pki.client(Identity(ADMIN, Role.TESTER))
        return MqttSettings(
            host=self.host,
            port=self.port,
            tls=True,
            ca_file=pki.ca_cert,
            cert_file=files.cert,
            key_file=files.key,
            username=files.username,
            password_file=files.password_file,
        )


def parse_identity(name: str, role: str, pool: str | None = None) -> Identity:
    """An outside identity from what a user typed, or IdentityError saying what is wrong."""
    if not NAME.fullmatch(name):
        raise IdentityError(f"bad name {name!r}: 1-63 letters, digits, '.', '_' or '-', first a letter or digit")
    if role not in [r.value for r in OUTSIDE_ROLES]:
        raise IdentityError(f"bad role {role!r}: one of {', '.join(r.value for r in OUTSIDE_ROLES)}")
    if pool is not None and (role != Role.AGENT.value or not NAME.fullmatch(pool)):
        raise IdentityError(f"bad pool {pool!r}: only an agent joins a pool, named like an identity")
    return Identity(name, Role(role), pool)


def admit(pki: Pki, identity: Identity, broker: Broker | None) -> ClientFiles:
    """Issue the identity's files and admit it on the broker (None: only issue them, for a broker started later).
    Idempotent for the same identity; an identity of the mesh's own, or one admitted with another role, is refused."""
    if identity.role not in OUTSIDE_ROLES:
        raise IdentityError(f"role {identity.role.value!r} is not for outside participants")
    known = {i.name: i for i in pki.outside_identities()}
    previous = known.get(identity.name)
    if previous is not None and previous != identity:
        raise IdentityError(f"{identity.name} is already admitted as {_describe(previous)}: remove it first")
    if previous is None and _is_the_meshs(pki, identity.name):
        raise IdentityError(f"{identity.name} is one of the mesh's own identities (`make certs` manages it)")
    files = pki.client(identity)
    pki.record_outside(identity)
    pki.update_seed(identity)
    if broker is not None:
        add_identity(broker.admin(pki), pki, identity)
    return files


def revoke(pki: Pki, name: str, broker: Broker | None) -> Identity:
    """Take an outside identity off the broker (its connections are closed at once), out of the seed and the list,
    and delete its key, certificate and password. Returns what was revoked."""
    identity = {i.name: i for i in pki.outside_identities()}.get(name)
    if identity is None:
        raise IdentityError(f"{name} is not an outside identity (see {pki.outside_file})")
    if broker is not None:
        remove_identity(broker.admin(pki), pki, identity)
    pki.update_seed(identity, remove=True)
    pki.record_outside(None, forget=name)
    for path in _files(pki, identity):
        path.unlink(missing_ok=True)
    return identity


def _is_the_meshs(pki: Pki, name: str) -> bool:
    """One of the mesh's own names, or a replica's of one (`coordinator-2`): the others grant a replica what they
    grant its service (a2amesh.replicas), so an outsider under such a name would get it too."""
    return acts_as(name, _mesh_names(pki) | SERVICES)


def _mesh_names(pki: Pki) -> set[str]:
    """Names the mesh's own identities use (in the seed, not outside), plus the admin's and the tester's."""
    outside = {i.username(pki.org, pki.unit) for i in pki.outside_identities()}
    prefix = f"{pki.org}/{pki.unit}/"
    names = {u.removeprefix(prefix) for u in pki.seed_usernames() - outside}
    return names | {ADMIN, TESTER, "health"}


def _files(pki: Pki, identity: Identity) -> Iterator[Path]:
    stem = pki.root / "clients" / identity.username(pki.org, pki.unit)
    for extension in (".crt", ".key", ".password"):
        yield stem.parent / (stem.name + extension)


def _describe(identity: Identity) -> str:
    return identity.role.value + (f" in pool {identity.pool}" if identity.pool else "")


__all__ = ["Broker", "DynsecError", "IdentityError", "admit", "parse_identity", "revoke"]
