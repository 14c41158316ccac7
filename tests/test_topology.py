"""infra/devstack/topology.yaml is the one list of what the mesh runs: the agent folders, the dev runner's processes
and the PKI's broker identities (with their ACL roles) follow it. (Compose and Kubernetes are held to it in
tests/test_deploy_artifacts.py, test_the_same_services_everywhere, beside the other checks of those files.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devstack.pki import ADMIN, ENROLLER, Pki, Role
from devstack.processes import REPO_ROOT
from devstack.stack import AGENTS, Stack, discover_agents
from devstack.topology import TOPOLOGY, TOPOLOGY_FILE, TopologyError, load_topology


def test_every_agent_folder_is_declared_and_every_declared_agent_has_one() -> None:
    assert set(discover_agents()) == set(TOPOLOGY.agents), (
        f"services/agents/ and {TOPOLOGY_FILE} differ: `make new-agent` declares the agents it creates"
    )
    assert TOPOLOGY.agent_packages == AGENTS


def test_the_pki_issues_exactly_the_declared_identities_with_their_roles(tmp_path: Path) -> None:
    stack = Stack(run_dir=tmp_path, agents=dict(AGENTS))
    pki = Pki(tmp_path / "pki", stack.org, stack.unit)
    pki.ensure(stack.identities())
    declared = TOPOLOGY.broker_identities()
    usernames = {identity.username(stack.org, stack.unit) for identity in declared}
    assert pki.seed_usernames() - {ADMIN, ENROLLER} == usernames
    roles = {identity.name: identity.role for identity in stack.identities()}
    assert roles == {identity.name: identity.role for identity in declared}
    assert (
        roles["coordinator"] is Role.COORDINATOR and roles["echo"] is Role.AGENT and roles["meshctl"] is Role.OBSERVER
    )
    for identity in declared:  # each declared role is one the broker policy grants rights for
        assert identity.acls(stack.org, stack.unit), f"{identity.name}: role {identity.role} grants nothing"


def test_each_service_runs_its_declared_module_as_its_declared_identity(tmp_path: Path) -> None:
    stack = Stack(run_dir=tmp_path, agents=dict(AGENTS))
    for service in TOPOLOGY.services.values():
        if service.module is None or service.identity is None:
            continue
        process = getattr(stack, service.name)()
        assert process.argv[-2:] == ["-m", service.module]
        assert process.env["MESH_MQTT__USERNAME"] == service.identity.username(stack.org, stack.unit)


@pytest.mark.parametrize(
    ("line", "changed"),
    [
        ("  meshctl: observer\n", "  meshctl: overseer\n"),
        ("  - echo\n", "  - echo\n  - registry\n"),
    ],
)
def test_a_topology_the_mesh_cannot_run_is_refused_with_the_entry_named(
    line: str, changed: str, tmp_path: Path
) -> None:
    copy = tmp_path / TOPOLOGY_FILE
    copy.parent.mkdir(parents=True)
    shutil.copy(REPO_ROOT / TOPOLOGY_FILE, copy)
    text = (REPO_ROOT / TOPOLOGY_FILE).read_text()
    assert line in text
    copy.write_text(text.replace(line, changed))
    with pytest.raises(TopologyError, match=r"overseer|declared twice"):
        load_topology(tmp_path)
