"""`make new-agent`: a scaffolded agent lands in one folder, is wired into the workspace, Compose and Kubernetes,
passes its own generated tests, and joins a running mesh where the coordinator delivers it a task."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from a2a.types import a2a_pb2 as pb

from devstack.pki import Identity, Role
from devstack.processes import REPO_ROOT, free_port
from devstack.scaffold import ScaffoldError, new_agent
from devstack.stack import Stack
from tests.conftest import collect, send_request, user_message

NAME = "word-count"
PACKAGE = "agent_word_count"
COPY_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "run", "reports", "node_modules", "checkov-env", "__pycache__", ".*cache"
)


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the repository with the new agent scaffolded into it (the real tree is never touched)."""
    copy = tmp_path_factory.mktemp("repo") / "repo"
    shutil.copytree(REPO_ROOT, copy, ignore=COPY_IGNORED)
    new_agent(NAME, copy, lock=False)  # `uv lock` would reach the package index; tests stay on loopback
    yield copy


def test_the_agent_is_one_folder_wired_into_workspace_compose_and_kubernetes(scaffolded: Path) -> None:
    folder = scaffolded / "services" / "agents" / NAME
    assert (folder / "src" / PACKAGE / "agent.py").is_file() and (folder / "Dockerfile").is_file()
    assert f'-m", "{PACKAGE}"' in (folder / "Dockerfile").read_text()

    project = tomllib.loads((scaffolded / "pyproject.toml").read_text())
    assert f"agent-{NAME}" in project["project"]["dependencies"]
    assert project["tool"]["uv"]["sources"][f"agent-{NAME}"] == {"workspace": True}

    compose = yaml.safe_load((scaffolded / "compose.yaml").read_text())
    service = compose["services"][NAME]
    assert service["environment"]["MESH_AGENT_ID"] == NAME
    assert service["build"]["dockerfile"] == f"services/agents/{NAME}/Dockerfile"

    rendered = subprocess.run(
        ["kubectl", "kustomize", str(scaffolded / "k8s" / "overlays" / "dev")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(rendered) if doc}
    assert ("StatefulSet", NAME) in kinds and ("ServiceAccount", NAME) in kinds


def test_the_generated_tests_pass(scaffolded: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(scaffolded / "services" / "agents" / NAME / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"services/agents/{NAME}/tests"],
        cwd=scaffolded,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


async def test_the_agent_joins_the_mesh_and_serves_a_task_through_the_coordinator(
    scaffolded: Path, mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    source = scaffolded / "services" / "agents" / NAME / "src"
    env = {"MESH_AGENT_ID": NAME, "MESH_HTTP_PORT": str(free_port()), "PYTHONPATH": str(source)}
    process = mesh.command(
        NAME, [sys.executable, "-m", PACKAGE], env, mesh.agent_online(NAME), Identity(NAME, Role.AGENT)
    )
    mesh.launch(process)
    try:
        record = (await http.get(f"{mesh.registry_url}/agents/{mesh.org}/{mesh.unit}/{NAME}")).json()
        assert record["skills"] == [NAME]
        [event] = await collect(make_client(), send_request(user_message("hello mesh"), skill=NAME))
        assert event.task.status.state == pb.TASK_STATE_COMPLETED
        assert event.task.artifacts[0].parts[0].text == "HELLO MESH"
    finally:
        assert process.stop() == 0


def test_bad_names_and_existing_agents_are_refused(tmp_path: Path) -> None:
    for bad in ("Echo", "9lives", "a--b", "with_underscore", "x" * 31):
        with pytest.raises(ScaffoldError, match="lowercase"):
            new_agent(bad, tmp_path, lock=False)
    with pytest.raises(ScaffoldError, match="already exists"):
        new_agent("echo", REPO_ROOT, lock=False)
