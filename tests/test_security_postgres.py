"""The prod overlay's PostgreSQL settings, run for real: a local server started with the arguments and the
pg_hba.conf that k8s/components/postgres renders, and a server certificate of a mesh CA. Plaintext, a wrong password
and a client that trusts another CA are refused; the task store's way in (sslmode=verify-full against the mesh CA,
its role's password) works and is encrypted."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from devstack.pki import Pki
from devstack.postgres import find_pg_binary, postgres_server
from tests.security_helpers import Tally

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "pg-test-" + os.urandom(8).hex()


def prod_postgres() -> tuple[list[str], str]:
    """The postgres container's args and the pg_hba.conf of the rendered prod overlay."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / "prod")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    [statefulset] = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "postgres"]
    [hba] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("postgres-hba")]
    [container] = [c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "postgres"]
    return container["args"], hba["data"]["pg_hba.conf"]


def server_settings(args: list[str]) -> dict[str, str]:
    """`-c name=value` pairs, with the manifest's mount paths turned into files of the test's server folder."""
    settings = dict(value.split("=", 1) for flag, value in zip(args[::2], args[1::2], strict=True) if flag == "-c")
    moved = {
        "ssl_cert_file": "{root}/tls.crt",
        "ssl_key_file": "{root}/tls.key",
        "hba_file": "{root}/pg_hba.conf",
    }
    return {name: moved.get(name, value) for name, value in settings.items()}


@pytest.fixture(scope="module")
def prod_like() -> Iterator[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl renders the overlay")
    args, hba = prod_postgres()
    root = Path(tempfile.mkdtemp(prefix="pg-tls-"))
    root.chmod(0o711)  # the server runs as the postgres account when the tests run as root
    try:
        pki = Pki(root / "pki")
        pki.ensure([])  # the CA
        pki.issue("servers/postgres", server_names=("postgres", "localhost"))
        files = {
            "tls.crt": (root / "pki" / "servers" / "postgres.crt").read_bytes(),
            "tls.key": (root / "pki" / "servers" / "postgres.key").read_bytes(),
            "pg_hba.conf": hba.encode(),
        }
        with postgres_server(root / "server", server_settings(args), files) as url:
            user = url.split("://", 1)[1].split("@", 1)[0]
            port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
            owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            psql = [find_pg_binary("psql"), "-h", str(root / "server" / "sockets"), "-p", str(port), "-U", user]
            subprocess.run(
                [*owner, *psql, "-d", "mesh", "-c", f"ALTER USER \"{user}\" PASSWORD '{PASSWORD}'"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            yield {"user": user, "port": port, "ca": str(pki.ca_cert), "root": root}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def connect(server: dict[str, Any], **options: str) -> psycopg.Connection:
    params = {"host": "localhost", "port": server["port"], "user": server["user"], "dbname": "mesh"}
    return psycopg.connect(**{**params, **options}, connect_timeout=10)  # type: ignore[arg-type]


def test_the_prod_postgres_takes_only_tls_from_the_network(prod_like: dict[str, Any], tmp_path: Path) -> None:
    tally = Tally()
    other_ca = Pki(tmp_path / "other")
    other_ca.ensure([])
    other_ca.issue("servers/x", server_names=("localhost",))
    attempts = {
        "plaintext, right password": {"sslmode": "disable", "password": PASSWORD},
        "TLS, wrong password": {"sslmode": "require", "password": "wrong"},
        "TLS, no password": {"sslmode": "require"},
        "verify-full trusting another CA": {
            "sslmode": "verify-full",
            "sslrootcert": str(other_ca.ca_cert),
            "password": PASSWORD,
        },
    }
    for what, options in attempts.items():
        try:
            with connect(prod_like, **options) as connection:
                connection.execute("SELECT 1")
            tally.attack(f"postgres: {what}", "anyone", False, "connected")
        except psycopg.OperationalError as error:
            tally.attack(f"postgres: {what}", "anyone", True, str(error).splitlines()[0])
    with connect(prod_like, sslmode="verify-full", sslrootcert=prod_like["ca"], password=PASSWORD) as connection:
        row = connection.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    tally.control("postgres: the task store's sslmode=verify-full", "taskstore", row == (True,), str(row))
    print(tally.report("postgres (prod overlay settings)"))
    assert not tally.leaks and not tally.failures, tally.report("postgres")
