"""Redis's ACL users, as topology.yaml declares them (`redis_users`), turned into what Redis and its clients read.

Kept beside the rest of the PKI, so `make certs` writes them with it (idempotent):
- `redis/<user>.password`: each user's password, created once; each client mounts its own (MESH_REDIS_PASSWORD_FILE,
  MESH_RATE_LIMIT_REDIS_PASSWORD_FILE), the health checks `health`'s;
- `redis/users.acl`: the file Redis loads (`--aclfile`): the `default` user off, each declared user on with its
  password's SHA-256 digest (never the password) and its rules.

make dev and the tests start redis-server with that file, Compose bind-mounts it, k8s/secrets.sh makes it the Secret
`redis-users`: one list of users, written once, for all three (docs/security.md, "Redis users")."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from devstack.topology import TOPOLOGY

ACL_FILE = "redis/users.acl"
"""Where the ACL file lives, relative to the PKI folder."""

HEALTH_USER = "health"
"""The user the health checks of Compose and Kubernetes authenticate as (PING only)."""


def password_file(root: Path, user: str) -> Path:
    """The file holding a declared user's password, under the PKI folder `root`."""
    if user not in TOPOLOGY.redis_users:
        raise KeyError(f"{user!r} is no Redis user of infra/devstack/topology.yaml ({sorted(TOPOLOGY.redis_users)})")
    return root / "redis" / f"{user}.password"


def password(root: Path, user: str) -> str:
    """A user's password, created once (URL-safe, so it may also stand in a redis:// URL)."""
    path = password_file(root, user)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(path, 0o600)
    return path.read_text().strip()


def acl_text(root: Path, users: dict[str, str] | None = None) -> str:
    """The ACL file's content: `default` off, then each user on, with its password's digest and its rules."""
    declared = TOPOLOGY.redis_users if users is None else users
    lines = ["user default off"]
    for user, rules in declared.items():
        digest = hashlib.sha256(password(root, user).encode()).hexdigest()
        lines.append(f"user {user} on #{digest} {rules}")
    return "\n".join(lines) + "\n"


def write_acl(root: Path) -> Path:
    """Write (or refresh, after topology.yaml changed) `redis/users.acl` under `root`; its path."""
    path = root / ACL_FILE
    text = acl_text(root)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o600)
    return path
