"""`python -m a2amesh.enroll`: an agent replica gets its own broker identity as its pod starts (the Kubernetes init
container of every agent StatefulSet), so a pool grows past any number of identities issued in advance.

The replica's name is its pod's (`<pool>-<ordinal>`). The enroller identity creates, on the running broker, a client
of that name pinned to it as client id, with a fresh random password and the role of the pool's template (written by
`make certs` from the same rights as every agent's: its own request, card and event topics, its pool's share group,
replies). A replica re-enrolling (a restarted pod) replaces its role and password: the old password stops working.
The password lands in `enroll_out` (a memory-backed emptyDir the agent container mounts); the enroller's own
credentials are mounted in the init container only (docs/security.md, "Pools without a ceiling")."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from a2amesh.dynsec import DynsecError, run_commands
from a2amesh.settings import EnrollSettings
from a2amesh.topics import check_id

log = logging.getLogger("a2amesh.enroll")

PLACEHOLDER = "{replica}"
POOL_FILES = ("ca.crt", "client.crt", "client.key")
"""What a replica shares with its pool: the CA, and the pool's client certificate (the certificate proves membership
of the mesh; the password and the pinned client id say which identity it is: docs/security.md)."""


class EnrollError(ValueError):
    """A replica that may not enroll as asked."""


def replica_entries(template: dict[str, Any], replica: str, password: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dynsec role and client of `replica` from its pool's template."""
    pool = str(template["pool"])
    check_id(replica, "replica name")
    if not re.fullmatch(rf"{re.escape(pool)}-[0-9]+", replica):
        raise EnrollError(f"{replica!r} is not a replica of pool {pool!r} (expected {pool}-<ordinal>)")
    filled = json.loads(json.dumps(template).replace(PLACEHOLDER, replica))
    role = {"rolename": filled["rolename"], "acls": filled["acls"]}
    client = {
        "username": filled["username"],
        "clientid": filled["clientid"],
        "password": password,
        "roles": [{"rolename": filled["rolename"]}],
    }
    return role, client


def enroll(settings: EnrollSettings) -> Path:
    """Create (or replace) this replica's identity on the broker; the path of its password file."""
    template = json.loads(settings.enroll_template.read_text())
    if settings.pool != template["pool"]:
        raise EnrollError(f"MESH_POOL={settings.pool!r}, but the template is pool {template['pool']!r}")
    password = secrets.token_urlsafe(24)
    role, client = replica_entries(template, settings.agent_id, password)
    commands = [
        {"command": "deleteClient", "username": client["username"]},
        {"command": "deleteRole", "rolename": role["rolename"]},
        {"command": "createRole", **role},
        {"command": "createClient", **client},
    ]
    enroller = settings.enroll_mqtt
    # its own client id per replica: replicas starting together must not take over each other's connection
    run_commands(enroller, commands, ("not found",), client_id=f"{enroller.username}-{settings.agent_id}")
    settings.enroll_out.mkdir(parents=True, exist_ok=True)
    if settings.enroll_files_from is not None:
        for name in POOL_FILES:
            shutil.copyfile(settings.enroll_files_from / name, settings.enroll_out / name)
            os.chmod(settings.enroll_out / name, 0o600)
    password_file = settings.enroll_out / "password"
    password_file.write_text(password + "\n")
    os.chmod(password_file, 0o600)
    return password_file


def main() -> None:
    settings = EnrollSettings()  # type: ignore[call-arg]  # required fields come from the environment
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        path = enroll(settings)
    except (EnrollError, DynsecError, OSError, KeyError, json.JSONDecodeError) as error:
        print(f"enroll: {settings.agent_id} not enrolled: {error}", file=sys.stderr)
        sys.exit(1)
    log.info("enrolled %s/%s/%s in pool %s (%s)", settings.org, settings.unit, settings.agent_id, settings.pool, path)


if __name__ == "__main__":
    main()
