"""Outcomes reach the record even when the events carrying them are lost: here the task store's queued events are
thrown away (its persistent session discarded, as a broker crash before its autosave would), and the coordinator's
reconciler republishes the final state of every task it relayed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb

from a2amesh.mqtt import make_client
from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, collect, eventually, send_request, user_message

TASKS = 6


@pytest.fixture(scope="module")
def small_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("reconcile"), ports=Ports.random(), agents={"echo": "agent_echo"}, tester=True
    )
    stack.start()
    yield stack
    stack.stop()


async def test_outcomes_lost_on_the_way_to_the_store_are_republished(small_mesh: Stack) -> None:
    store = small_mesh["taskstore"]
    store.stop()  # its session on the broker queues the events meanwhile
    async with httpx.AsyncClient(timeout=30, headers=auth_headers(small_mesh)) as http:
        card = await A2ACardResolver(http, small_mesh.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        tasks = [
            (await collect(client, send_request(user_message(f"t{i}"), skill="echo")))[0].task for i in range(TASKS)
        ]
        assert all(task.status.state == pb.TASK_STATE_COMPLETED for task in tasks)

        # lose the queue: a clean start under the store's client id discards its session and what it held
        async with make_client(small_mesh.tester_settings(), f"{small_mesh.org}/{small_mesh.unit}/taskstore"):
            pass
        store.start()
        store.wait_ready()

        async def recorded() -> list[dict] | None:
            bodies = []
            for task in tasks:
                response = await http.get(f"{small_mesh.taskstore_url}/tasks/{task.id}/events?scope=all")
                if (
                    response.status_code != 200
                    or response.json()["statusHistory"][-1]["state"] != "TASK_STATE_COMPLETED"
                ):
                    return None
                bodies.append(response.json())
            return bodies

        records = await eventually(recorded, timeout=30, what="every outcome recorded after the loss")
    assert all(record["agent"] == f"{small_mesh.org}/{small_mesh.unit}/echo" for record in records)
    assert all(record["events"][-1]["kind"] == "task" for record in records)  # the coordinator's snapshot
