"""Task store and registry replicas (docs/operations.md, "Scale"): two task stores sharing the events over one
PostgreSQL record every event exactly once, with no gaps, though one is killed mid-run; two registries over one
Redis both answer, with the same cards and presence."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from a2amesh.models import Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from a2amesh.mqtt import EVENT_ID_PROPERTY, make_client, publish_properties
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from devstack.processes import free_port
from devstack.stack import Ports, Stack
from mesh_taskstore.partition import Partition
from tests.conftest import eventually

TASKS = 40
AGENTS = 8


def events_of(task_id: str) -> list[StreamResponse]:
    """A task's life as an agent publishes it: the task, working, completed."""
    message = Message(message_id=uuid.uuid4().hex, role=Role.USER, parts=[Part(text="hi")], task_id=task_id)
    statuses = [
        StreamResponse(
            status_update=TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))
        )
        for state in (TaskState.WORKING, TaskState.COMPLETED)
    ]
    first = Task(id=task_id, context_id="c", status=TaskStatus(state=TaskState.SUBMITTED), history=[message])
    return [StreamResponse(task=first), *statuses]


async def test_two_stores_record_every_event_once_though_one_is_killed(
    broker: BrokerHandle, postgres_url: str, tmp_path: Path
) -> None:
    """Store 1 is killed halfway: store 0 goes on with its own share and leaves store 1's alone (which waits on the
    broker); store 1, back, records its share. Every task's events are then recorded once each, in order."""
    ports = Ports(mqtt=broker.port, redis=0, registry=0, taskstore=0, coordinator=0)
    org = f"rep-{uuid.uuid4().hex[:8]}"
    stack = Stack(run_dir=tmp_path, ports=ports, org=org, broker_of=broker.stack, database_url=postgres_url)
    stores = [
        stack.launch(stack.replica("taskstore", n, free_port(), MESH_PARTITIONS="2", MESH_PARTITION=str(n)))
        for n in (0, 1)
    ]
    urls = [f"http://127.0.0.1:{store.env['MESH_HTTP_PORT']}" for store in stores]
    agents = [AgentAddress(stack.org, stack.unit, f"agent-{n}") for n in range(AGENTS)]
    second_share = [Partition(1, 2).owns(agent.event_topic) for agent in agents]
    assert any(second_share) and not all(second_share), "both stores must own some of the agents"
    # the last task goes to store 0's share: once it is recorded, store 0 has seen every event published before it
    order = [agents[i % AGENTS] for i in range(TASKS)]
    order.append(next(agent for agent, theirs in zip(agents, second_share, strict=True) if not theirs))
    published: dict[str, list[str]] = {}  # task id -> its event ids, in order
    while_down: list[str] = []  # tasks of store 1's share published while it was dead
    try:
        async with (
            make_client(broker.settings, f"rep-pub-{uuid.uuid4().hex[:6]}") as client,
            httpx.AsyncClient(timeout=10) as http,
        ):

            async def recorded(task_id: str, url: str = urls[0]) -> list[str] | None:
                response = await http.get(f"{url}/tasks/{task_id}/events?scope=all")
                if response.status_code != 200:
                    return None
                ids = [event["eventId"] for event in response.json()["events"]]
                return ids if len(ids) >= 3 else None

            for index, agent in enumerate(order):
                if index == TASKS // 2:
                    await asyncio.to_thread(stores[1].kill)  # mid-run: its share waits in its session on the broker
                task_id = str(uuid.uuid4())
                published[task_id] = []
                if index >= TASKS // 2 and Partition(1, 2).owns(agent.event_topic):
                    while_down.append(task_id)
                for event in events_of(task_id):
                    event_id = uuid.uuid4().hex
                    published[task_id].append(event_id)
                    properties = publish_properties(user=[(EVENT_ID_PROPERTY, event_id)])
                    await client.publish(agent.event_topic, event.to_json(), qos=1, properties=properties)
            last = list(published)[-1]
            await eventually(lambda: recorded(last), timeout=30, what="store 0 caught up")
            for task_id in while_down:  # not store 0's to record, though it received them
                assert (await http.get(f"{urls[0]}/tasks/{task_id}?scope=all")).status_code == 404

            await asyncio.to_thread(stores[1].start)
            await asyncio.to_thread(stores[1].wait_ready, 30)
            for number, (task_id, event_ids) in enumerate(published.items()):
                url = urls[number % 2]  # either replica answers for every task: one database
                ids = await eventually(lambda t=task_id, u=url: recorded(t, u), timeout=30, what="task recorded")
                assert ids == event_ids  # each once, none missing, in the order published
                task = (await http.get(f"{url}/tasks/{task_id}?scope=all")).json()
                assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    finally:
        for store in stores:
            store.stop()


@pytest.fixture(scope="module")
def two_registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A mesh with a second registry (registry-1) on the same Redis; the URL of the second."""
    stack = Stack(run_dir=tmp_path_factory.mktemp("registries"), ports=Ports.random(), agents={"echo": "agent_echo"})
    stack.start()
    port = free_port()
    stack.launch(stack.replica("registry", 1, port))
    yield stack, f"http://127.0.0.1:{port}"
    stack.stop()


async def test_two_registries_answer_alike_for_cards_and_presence(two_registries: tuple[Stack, str]) -> None:
    stack, second = two_registries
    urls = [stack.registry_url, second]
    async with httpx.AsyncClient(timeout=10) as http:

        async def views(agent: str) -> list[dict]:
            answers = [await http.get(f"{url}/agents/{stack.org}/{stack.unit}/{agent}") for url in urls]
            return [a.json() if a.status_code == 200 else {} for a in answers]

        async def same_and(status: str, agent: str) -> list[dict] | None:
            first, other = await views(agent)
            wanted = first.get("status") == status and first.get("card")
            return [first, other] if wanted and first == other else None

        echo = await eventually(lambda: same_and("online", "echo"), what="both registries list echo online")
        assert echo[0]["card"]["name"] == echo[1]["card"]["name"]

        late = stack.launch(stack.agent("echo-late", "agent_echo"))
        await eventually(lambda: same_and("online", "echo-late"), what="a new agent on both")
        late.stop()
        await eventually(lambda: same_and("offline", "echo-late"), what="its departure on both")

        listed = [(await http.get(f"{url}/agents", params={"skill": "echo"})).json()["agents"] for url in urls]
        assert [r["address"] for r in listed[0]] == [r["address"] for r in listed[1]]
