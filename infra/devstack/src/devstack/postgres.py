"""A throwaway PostgreSQL server for the tests: the machine's initdb/pg_ctl, a cluster in a temporary folder,
listening on a free loopback port (and a private socket folder), trust authentication for its own superuser (or, with
a password, SCRAM-SHA-256 over TCP, as in production).
PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` system user."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.processes import free_port

TASKSTORE_PASSWORD_FILE = "postgres/taskstore.password"
"""Compose's PostgreSQL password of the task store's role, relative to the PKI folder (see taskstore_password)."""


def taskstore_password(root: Path) -> Path:
    """The file holding the password of Compose's PostgreSQL (compose.postgres.yaml): created once by `make certs`
    under the PKI folder `root` and kept, like the Redis users' passwords. Compose mounts it into PostgreSQL
    (POSTGRES_PASSWORD_FILE, read when the data volume is first initialised) and into each task store partition
    (MESH_DATABASE_PASSWORD_FILE); URL-safe, so it may also stand in a URL."""
    path = root / TASKSTORE_PASSWORD_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(path, 0o600)
    return path


def find_pg_binary(name: str) -> str:
    """initdb / pg_ctl, on PATH or in Debian's versioned folder."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL (make test installs Debian's postgresql)")
    return found


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@contextmanager
def postgres_server(
    root: Path,
    settings: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    password: str | None = None,
) -> Iterator[str]:
    """Run a PostgreSQL cluster under `root` until the block ends; yields a SQLAlchemy URL of an empty database.
    `settings` are more server settings (`-c name=value`); `files` are written under `root` first (owned by the
    server's account, readable by it alone): certificates or an hba file the settings name as `{root}/...`. With a
    `password`, the superuser has it and connections over TCP must give it (SCRAM-SHA-256); the URL has none."""
    auth = ["-A", "trust"]
    if password is not None:
        files = {**(files or {}), "initdb.password": password.encode() + b"\n"}
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={root / 'initdb.password'}"]
    owner = "postgres" if os.geteuid() == 0 else None
    data, sockets = root / "data", root / "sockets"
    for folder in (root, data, sockets):
        folder.mkdir(parents=True, exist_ok=True)
        if owner:
            account = pwd.getpwnam(owner)
            os.chown(folder, account.pw_uid, account.pw_gid)
    for name, content in (files or {}).items():
        path = root / name
        path.write_bytes(content)
        os.chmod(path, 0o600)
        if owner:
            os.chown(path, pwd.getpwnam(owner).pw_uid, pwd.getpwnam(owner).pw_gid)
    port = free_port()
    user = owner or pwd.getpwuid(os.geteuid()).pw_name
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True, "timeout": 60}
    subprocess.run(
        _as_owner([find_pg_binary("initdb"), "-D", str(data), *auth, "-U", user, "--no-sync"], owner), **quiet
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    options += "".join(f" -c {name}={value.replace('{root}', str(root))}" for name, value in (settings or {}).items())
    pg_ctl = find_pg_binary("pg_ctl")
    subprocess.run(
        _as_owner([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"], owner),
        **quiet,
    )
    try:
        subprocess.run(
            _as_owner([find_pg_binary("createdb"), "-h", str(sockets), "-p", str(port), "-U", user, "mesh"], owner),
            **quiet,
        )
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/mesh"
    finally:
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], owner),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
