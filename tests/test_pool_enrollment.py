"""Pools without a ceiling: every replica enrolls its own broker identity as it starts (`python -m a2amesh.enroll`,
what each agent pod's init container runs), so a pool grows past the identities `make certs` issues, with no
manifest edit and no new certificate. Eight replicas of one pool, none of them issued in advance, serve tasks."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb

from devstack.pki import ENROLLER, Identity, Pki, Role
from devstack.processes import ManagedProcess, free_port
from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, collect, eventually, send_request, user_message

POOL = "wide"
REPLICAS = 8
TASKS = 48


def pool_files(pki: Pki, pool: str, folder: Path) -> Path:
    """What the pool's Secret holds for its pods: the CA and the pool's client certificate and key (no password)."""
    files = pki.client(Identity(pool, Role.AGENT, pool))  # a certificate only: this identity is never admitted
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in ((pki.ca_cert, "ca.crt"), (files.cert, "client.crt"), (files.key, "client.key")):
        shutil.copyfile(source, folder / name)
    return folder


def enroll_env(stack: Stack, replica: str, pool: str, shared: Path, out: Path) -> dict[str, str]:
    """The init container's environment: the replica's name and pool, the template, and the enroller identity."""
    enroller = stack.identity_env(Identity(ENROLLER, Role.TESTER), prefix="MESH_ENROLL_MQTT__")
    return {
        **stack.base_env(),
        **enroller,
        "MESH_AGENT_ID": replica,
        "MESH_POOL": pool,
        "MESH_ENROLL_TEMPLATE": str(stack.pki.enroll_template(pool)),
        "MESH_ENROLL_FILES_FROM": str(shared),
        "MESH_ENROLL_OUT": str(out),
    }


def enrolled_mqtt_env(stack: Stack, replica: str, out: Path) -> dict[str, str]:
    """The agent container's broker settings: the files the init step left, as the replica's own identity."""
    return {
        "MESH_MQTT__HOST": "127.0.0.1",
        "MESH_MQTT__PORT": str(stack.ports.mqtt),
        "MESH_MQTT__TLS": "true",
        "MESH_MQTT__CA_FILE": str(out / "ca.crt"),
        "MESH_MQTT__CERT_FILE": str(out / "client.crt"),
        "MESH_MQTT__KEY_FILE": str(out / "client.key"),
        "MESH_MQTT__USERNAME": f"{stack.org}/{stack.unit}/{replica}",
        "MESH_MQTT__PASSWORD_FILE": str(out / "password"),
    }


def start_replica(stack: Stack, replica: str, pool: str, shared: Path) -> None:
    """A pod's life in two steps: the init container enrolls, then the agent starts as the enrolled identity."""
    out = stack.run_dir / "enrolled" / replica
    init = ManagedProcess(
        f"{replica}-enroll",
        [sys.executable, "-m", "a2amesh.enroll"],
        stack.run_dir / "logs" / f"{replica}-enroll.log",
        env=enroll_env(stack, replica, pool, shared, out),
    )
    init.start()
    assert init.wait(60) == 0, f"{replica} did not enroll:\n{init.log_tail()}"
    env = {
        **stack.base_env(),
        **enrolled_mqtt_env(stack, replica, out),
        "MESH_AGENT_ID": replica,
        "MESH_POOL": pool,
        "MESH_HTTP_PORT": str(free_port()),
    }
    agent = ManagedProcess(
        replica,
        [sys.executable, "-m", "agent_echo"],
        stack.run_dir / "logs" / f"{replica}.log",
        stack.agent_online(replica),
        env=env,
    )
    stack.launch(agent, 60)


@pytest.fixture(scope="module")
def wide_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A mesh whose only echo agents are eight enrolled replicas of one pool (`make certs` issued none of them)."""
    stack = Stack(run_dir=tmp_path_factory.mktemp("wide"), ports=Ports.random(), agents={})
    stack.start()
    try:
        issued = {identity.username(stack.org, stack.unit) for identity in stack.identities()}
        assert not any(name.startswith(f"{stack.org}/{stack.unit}/{POOL}-") for name in issued)
        stack.pki.write_enroll_template(POOL)  # what `make certs` writes for every agent's pool
        shared = pool_files(stack.pki, POOL, stack.run_dir / "pool-secret")
        for ordinal in range(REPLICAS):
            start_replica(stack, f"{POOL}-{ordinal}", POOL, shared)
        yield stack
    finally:
        stack.stop()


async def test_eight_enrolled_replicas_of_one_pool_all_serve_tasks(wide_pool: Stack) -> None:
    async with httpx.AsyncClient(timeout=60, headers=auth_headers(wide_pool)) as http:
        card = await A2ACardResolver(http, wide_pool.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)

        async def one(index: int) -> pb.Task:
            [event] = await collect(client, send_request(user_message(f"job {index}"), skill="echo", delayMs=200))
            return event.task

        tasks = await asyncio.gather(*(one(index) for index in range(TASKS)))
        assert all(task.status.state == pb.TASK_STATE_COMPLETED for task in tasks)
        assert sorted(task.artifacts[0].parts[0].text for task in tasks) == sorted(f"job {i}" for i in range(TASKS))

        async def holders() -> list[str] | None:
            agents = []
            for task in tasks:
                response = await http.get(f"{wide_pool.taskstore_url}/tasks/{task.id}/events", params={"scope": "all"})
                if (
                    response.status_code != 200
                    or response.json()["statusHistory"][-1]["state"] != "TASK_STATE_COMPLETED"
                ):
                    return None
                agents.append(response.json()["agent"])
            return agents

        per_replica = Counter(await eventually(holders, timeout=30, what="every task recorded"))
    print(f"\ntasks per enrolled replica: {dict(per_replica)}")
    prefix = f"{wide_pool.org}/{wide_pool.unit}"
    assert set(per_replica) == {f"{prefix}/{POOL}-{ordinal}" for ordinal in range(REPLICAS)}
    assert sum(per_replica.values()) == TASKS
