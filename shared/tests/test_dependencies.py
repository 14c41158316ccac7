"""The shared package's dependencies match its code: on its own (no extras) it is the message package — models,
topics, the MQTT binding, settings, metrics — and brings neither an HTTP server nor the a2a-sdk; `a2amesh[http]`
adds what serves health and metrics; and every dependency a workspace package declares is imported by its code."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = sorted(
    path.parent for path in [*REPO.glob("*/pyproject.toml"), *REPO.glob("*/*/pyproject.toml")] if path.parent != REPO
) + sorted(path.parent for path in REPO.glob("services/agents/*/pyproject.toml"))
RUNTIME_ONLY = {"httptools", "uvloop", "psycopg"}
"""Dependencies used without an import of ours: uvicorn's HTTP parser and event loop, SQLAlchemy's Postgres driver."""


def build_environment(tmp_path: Path, package: str, extras: list[str]) -> Path:
    """A virtual environment holding one workspace package with its locked dependencies, as a Dockerfile builds it."""
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is not installed"
    venv = tmp_path / "venv"
    argv = [uv, "sync", "--locked", "--no-dev", "--no-editable", "--package", package, "--quiet"]
    argv += [arg for extra in extras for arg in ("--extra", extra)]
    environment = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    environment |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    result = subprocess.run(argv, cwd=REPO, env=environment, capture_output=True, text=True, timeout=110, check=False)
    assert result.returncode == 0, result.stderr
    return venv / "bin" / "python"


def importable(python: Path, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", probe], capture_output=True, timeout=60, check=False).returncode == 0


def test_the_bare_message_package_brings_no_http_server_and_no_sdk(tmp_path: Path) -> None:
    python = build_environment(tmp_path, "a2amesh", [])
    imports = "import a2amesh.binding, a2amesh.mqtt, a2amesh.models, a2amesh.topics, a2amesh.observability"
    result = subprocess.run([str(python), "-c", imports], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for heavy in ("uvicorn", "starlette", "a2a", "sse_starlette", "faststream", "httpx"):
        assert not importable(python, heavy), f"a2amesh without extras pulls {heavy}"


def test_the_http_extra_serves_health_and_metrics(tmp_path: Path) -> None:
    python = build_environment(tmp_path, "a2amesh", ["http"])
    imports = "import a2amesh.agent, a2amesh.runtime; from a2amesh.observability import health_routes"
    result = subprocess.run([str(python), "-c", imports], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert not importable(python, "a2a"), "a2amesh[http] pulls the a2a-sdk"


def imported_modules(folder: Path) -> set[str]:
    """The top-level modules a package's source imports."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def requirement_name(requirement: str) -> str:
    name = requirement.split(";")[0]
    for mark in "[<>=!~ ":
        name = name.split(mark)[0]
    return name.strip().lower().replace("_", "-")


@pytest.mark.parametrize("folder", PACKAGES, ids=lambda folder: str(folder.relative_to(REPO)))
def test_every_declared_dependency_is_imported(folder: Path) -> None:
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    declared = [*project.get("dependencies", [])]
    for requirements in project.get("optional-dependencies", {}).values():
        declared += requirements
    modules_of: dict[str, set[str]] = {}
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            modules_of.setdefault(distribution.lower().replace("_", "-"), set()).add(module)
    workspace = {tomllib.loads((p / "pyproject.toml").read_text())["project"]["name"] for p in PACKAGES}
    imported = imported_modules(folder)
    unused = [
        name
        for name in map(requirement_name, declared)
        if name not in workspace | RUNTIME_ONLY and not modules_of.get(name, set()) & imported
    ]
    assert not unused, f"{folder.relative_to(REPO)} declares dependencies its code never imports: {unused}"


COORDINATOR_START = """
import base64, os, sys, tempfile
from pathlib import Path
from a2amesh.settings import CoordinatorSettings
import mesh_coordinator.__main__
from mesh_coordinator.agent_tokens import AgentTokens
from mesh_coordinator.app import card_finisher
from mesh_coordinator.cards import ED25519_PKCS8_PREFIX
from a2a.types import a2a_pb2 as pb

key_file = Path(tempfile.mkdtemp()) / "card-signing.key"
der = base64.b64encode(ED25519_PKCS8_PREFIX + os.urandom(32)).decode()
key_file.write_text(f"-----BEGIN PRIVATE KEY-----\\n{der}\\n-----END PRIVATE KEY-----\\n")
settings = CoordinatorSettings(card_signing_key_file=key_file)
finisher = card_finisher(settings, "http://127.0.0.1:1")  # what build_app and the handler make at start
tokens = AgentTokens(key_file, "http://127.0.0.1:1")
print(*sorted({name.split(".")[0] for name in sys.modules}))
print("mesh_coordinator.listing" in sys.modules)
signed = finisher.finish(pb.AgentCard(name="coordinator"))
assert signed.signatures and tokens.bearer("aud", None) is None and tokens.kid == finisher.key.kid
print("nacl" in sys.modules)
"""


def test_the_coordinator_loads_at_start_only_what_an_idle_coordinator_uses() -> None:
    """What the coordinator loads on first use stays out of its start-up (its idle memory target, docs/benchmarks.md):
    PyNaCl until the first card is signed, PyJWT and `cryptography` without a JWT issuer or an EC key, redis-py without
    shared rate limits, the ListTasks merge until the first send."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MESH_")}
    result = subprocess.run(
        [sys.executable, "-c", COORDINATOR_START], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    started, listing_loaded, signing_loaded = result.stdout.splitlines()
    assert not {"nacl", "jwt", "cryptography", "redis"} & set(started.split()), started
    assert listing_loaded == "False"
    assert signing_loaded == "True", "the first card signed loads PyNaCl"
