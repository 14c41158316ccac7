"""`make new-agent`: a scaffolded agent lands in one folder, is wired into the workspace, Compose and Kubernetes,
carries the skill it was given (no placeholder left), passes the project's lint and its own generated tests (in
memory and as a process), and joins a running mesh where the coordinator delivers it a task."""

from __future__ import annotations

import difflib
import os
import re
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
from devstack.scaffold import LEFTOVER, AgentName, ScaffoldError, new_agent
from devstack.stack import Stack
from devstack.topology import load_topology
from tests.conftest import collect, send_request, user_message

NAME = "word-count"
PACKAGE = "agent_word_count"
SKILL = "text.word-count"
SKILL_NAME = "Count words"
DESCRIPTION = (
    'Counts the words of a text and says "how many" in a sentence; a long description with quotes and a backslash '
    "(C:\\texts) that must reach the card and pyproject.toml unchanged, and keep every line within the lint's limit."
)
PLACEHOLDER_PHRASES = ("todo", "fixme", "describe what", "replace with", "say what it does", "placeholder")
COPY_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "run", "reports", "node_modules", "checkov-env", "__pycache__", ".*cache"
)


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the repository with the new agent scaffolded into it (the real tree is never touched)."""
    copy = tmp_path_factory.mktemp("repo") / "repo"
    shutil.copytree(REPO_ROOT, copy, ignore=COPY_IGNORED)
    new_agent(NAME, copy, skill_id=SKILL, skill_name=SKILL_NAME, description=DESCRIPTION, lock=False)
    # (no `uv lock`: it would reach the package index; tests stay on loopback)
    yield copy


def test_the_agent_is_one_folder_wired_into_workspace_compose_and_kubernetes(scaffolded: Path) -> None:
    folder = scaffolded / "services" / "agents" / NAME
    assert (folder / "src" / PACKAGE / "agent.py").is_file()
    assert not (folder / "Dockerfile").exists(), "its image builds from services/Dockerfile, the one for every service"

    project = tomllib.loads((scaffolded / "pyproject.toml").read_text())
    assert f"agent-{NAME}" in project["project"]["dependencies"]
    assert project["tool"]["uv"]["sources"][f"agent-{NAME}"] == {"workspace": True}

    assert NAME in load_topology(scaffolded).agents, "declared in topology.yaml, the one list of what runs"

    compose = yaml.safe_load((scaffolded / "compose.yaml").read_text())
    service = compose["services"][NAME]
    assert service["environment"]["MESH_AGENT_ID"] == NAME
    assert service["build"]["dockerfile"] == "services/Dockerfile"
    assert service["build"]["args"]["SERVICE_PACKAGE"] == f"agent-{NAME}"
    assert service["build"]["args"]["SERVICE_MODULE"] == PACKAGE

    rendered = subprocess.run(
        ["kubectl", "kustomize", str(scaffolded / "k8s" / "overlays" / "dev")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(rendered) if doc}
    assert ("StatefulSet", NAME) in kinds and ("ServiceAccount", NAME) in kinds


@pytest.mark.parametrize(
    "shared", ["infra/devstack/topology.yaml", "compose.yaml", "k8s/base/kustomization.yaml", "pyproject.toml"]
)
def test_the_shared_files_only_gain_the_agents_lines(scaffolded: Path, shared: str) -> None:
    """The scaffold edits shared files structurally (ruamel.yaml, tomlkit), never by rewriting text: every line of
    the file as it was stays, in order, with its comments, anchors and quotes; the new agent's lines are added."""
    before = (REPO_ROOT / shared).read_text().splitlines()
    after = (scaffolded / shared).read_text().splitlines()
    changes = [line for line in difflib.ndiff(before, after) if line[:1] in "+-?"]
    assert changes and all(line.startswith("+ ") for line in changes), "\n".join(changes)
    assert any(NAME in line for line in changes), "\n".join(changes)


def test_the_skill_given_is_on_the_card_and_in_the_project(scaffolded: Path) -> None:
    folder = scaffolded / "services" / "agents" / NAME
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["description"] == DESCRIPTION
    env = {**os.environ, "PYTHONPATH": str(folder / "src")}
    card = subprocess.run(
        [sys.executable, "-c", CARD_SCRIPT.format(package=PACKAGE)], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert card.splitlines() == [SKILL, SKILL_NAME, DESCRIPTION, DESCRIPTION]


CARD_SCRIPT = """
from a2amesh.agent import MeshAgent
from a2amesh.settings import AgentSettings
from {package} import agent

(agent_class,) = [value for value in vars(agent).values() if isinstance(value, type) and MeshAgent in value.__mro__[1:]]
card = agent_class(AgentSettings(agent_id="card-test")).card()
(skill,) = card.skills
print(skill.id, skill.name, skill.description, card.description, sep="\\n")
"""


def test_no_placeholder_survives_in_a_generated_file(scaffolded: Path) -> None:
    folder = scaffolded / "services" / "agents" / NAME
    files = [path for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts]
    assert len(files) == 6
    for path in files:
        text = path.read_text()
        assert not LEFTOVER.search(text), path  # a template placeholder (__NAME__...) left unfilled
        assert not [phrase for phrase in PLACEHOLDER_PHRASES if phrase in text.lower()], path


def test_the_generated_code_passes_the_lint_and_the_formatter(scaffolded: Path) -> None:
    folder = f"services/agents/{NAME}"
    for command in (["check", folder], ["format", "--check", folder]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=scaffolded, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


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
    assert re.search(r"\b4 passed\b", result.stdout), result.stdout[-2000:]  # in memory (3), as a process (1)


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
        assert record["skills"] == [SKILL]
        [event] = await collect(make_client(), send_request(user_message("hello mesh"), skill=SKILL))
        assert event.task.status.state == pb.TASK_STATE_COMPLETED
        assert event.task.artifacts[0].parts[0].text == "HELLO MESH"
    finally:
        assert process.stop() == 0


def test_the_skill_defaults_come_from_the_name() -> None:
    agent = AgentName("unit-converter")
    assert (agent.skill, agent.skill_title, agent.method) == ("unit-converter", "Unit converter", "unit_converter")
    assert agent.summary == "Returns the text it is sent upper-cased, with its word count."  # what the code does
    assert AgentName("x", skill_id="units.convert").skill_title == "Units convert"
    assert [AgentName("x", skill_id=id).method for id in ("handle", "import", "3d.render")] == [
        "handle_skill",
        "import_skill",
        "skill_3d_render",
    ]


def test_bad_names_and_existing_agents_are_refused(tmp_path: Path) -> None:
    for bad in ("Echo", "9lives", "a--b", "with_underscore", "x" * 31):
        with pytest.raises(ScaffoldError, match="lowercase"):
            new_agent(bad, tmp_path, lock=False)
    for bad_skill in ("Units", "units..convert", "units convert", ".x", "x" * 65):
        with pytest.raises(ScaffoldError, match="skill id"):
            new_agent("units", tmp_path, skill_id=bad_skill, lock=False)
    with pytest.raises(ScaffoldError, match="description: at most 500"):
        new_agent("units", tmp_path, description="x" * 501, lock=False)
    with pytest.raises(ScaffoldError, match="already exists"):
        new_agent("echo", REPO_ROOT, lock=False)
