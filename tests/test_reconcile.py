"""Outcomes reach the record even when the events carrying them are lost: here the task store's queued events are
thrown away (its persistent session discarded, as a broker crash before its autosave would), and the coordinator's
reconciler republishes the final state of every task it relayed, whole (history and artifacts), while keeping
none of the relay it came from."""

from __future__ import annotations

import gc
import uuid
import weakref
from collections.abc import Iterator

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb

from a2amesh.models import Artifact, Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus, utc_now
from a2amesh.mqtt import EVENT_ID_PROPERTY, make_client, publish_properties
from a2amesh.topics import AgentAddress
from devstack.stack import Ports, Stack
from mesh_coordinator.directory import STATES_PER_REQUEST, DependencyError, TaskStoreClient
from mesh_coordinator.live import LiveTask
from mesh_coordinator.reconcile import Reconciler
from mesh_taskstore.api import MAX_STATE_IDS
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
        stored = [
            Task.from_wire((await http.get(f"{small_mesh.taskstore_url}/tasks/{task.id}?scope=all")).json())
            for task in tasks
        ]
    assert all(record["agent"] == f"{small_mesh.org}/{small_mesh.unit}/echo" for record in records)
    assert all(record["events"][-1]["kind"] == "task" for record in records)  # the coordinator's snapshot
    # the snapshot alone made each record, and it was whole: the request in the history, the echo as an artifact
    for i, task in enumerate(stored):
        assert [message.text() for message in task.history or []][:1] == [f"t{i}"]
        assert [part.text for artifact in task.artifacts or [] for part in artifact.parts] == [f"t{i}"]


async def test_one_listing_confirms_the_outcomes_the_store_holds(small_mesh: Stack) -> None:
    """The reconciler reads the store in pages: outcomes the store holds are confirmed by one listing, not one
    read each, and the outcome the listing lacks is republished without a read of its own."""
    async with httpx.AsyncClient(timeout=30, headers=auth_headers(small_mesh)) as http:
        card = await A2ACardResolver(http, small_mesh.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        sent = [
            (await collect(client, send_request(user_message(f"r{i}"), skill="echo")))[0].task for i in range(TASKS)
        ]

        async def stored() -> list[Task] | None:
            tasks = []
            for task in sent:
                response = await http.get(f"{small_mesh.taskstore_url}/tasks/{task.id}?scope=all")
                if response.status_code != 200 or response.json()["status"]["state"] != "TASK_STATE_COMPLETED":
                    return None
                tasks.append(Task.from_wire(response.json()))
            return tasks

        finals = await eventually(stored, timeout=30, what="every outcome recorded")

    republished: list[StreamResponse] = []

    async def republish(_agent: AgentAddress, event: bytes | str) -> None:
        republished.append(StreamResponse.from_json(event))

    lost = Task(id=str(uuid.uuid4()), context_id="c", status=TaskStatus(state=TaskState.COMPLETED, timestamp=utc_now()))
    echo = AgentAddress(small_mesh.org, small_mesh.unit, "echo")
    async with httpx.AsyncClient(timeout=30) as store_http:
        store = TaskStoreClient(small_mesh.taskstore_url, store_http)
        query = {"pageSize": 100, "historyLength": 0}
        states = (await store.list_states(query)).states  # what the reconciler reads of a page: ids and states
        assert states == {task.id: task.status.state.value for task in (await store.list_tasks(query)).tasks}
        assert {task.id for task in finals} <= states.keys()
        reconciler = Reconciler(store, republish, first_check=0.0)
        for task in [*finals, lost]:
            reconciler.watch(LiveTask(task, echo, not_recorded, mirror=False))
        await reconciler.check_due()

    assert reconciler.listed == TASKS  # confirmed by the listing
    assert reconciler.read == 0  # nothing read by id
    assert [item.task.id for item in republished if item.task is not None] == [lost.id]
    assert reconciler.pending == 1  # the lost one, checked again later


async def test_outcomes_no_listing_covers_are_read_by_id_in_one_request(small_mesh: Stack) -> None:
    """Outcomes no listing can confirm (here: without a timestamp, as after a first republish) are read by id, all
    of a check's in one request: those the store holds final are confirmed, the rest republished, whether the store
    lacks the task or holds it unfinished (its final events lost)."""
    async with httpx.AsyncClient(timeout=30, headers=auth_headers(small_mesh)) as http:
        card = await A2ACardResolver(http, small_mesh.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        sent = [
            (await collect(client, send_request(user_message(f"b{i}"), skill="echo")))[0].task for i in range(TASKS)
        ]
        echo = AgentAddress(small_mesh.org, small_mesh.unit, "echo")
        unfinished = Task(id=str(uuid.uuid4()), context_id="c", status=TaskStatus(state=TaskState.WORKING))
        async with make_client(small_mesh.tester_settings(), f"reconcile-{uuid.uuid4().hex[:8]}") as mqtt:
            await mqtt.publish(
                echo.event_topic,
                StreamResponse(task=unfinished).to_json(),
                qos=1,
                properties=publish_properties(user=[(EVENT_ID_PROPERTY, str(uuid.uuid4()))]),
            )

        async def recorded() -> bool:
            for task, state in [*((task, "TASK_STATE_COMPLETED") for task in sent), (unfinished, "TASK_STATE_WORKING")]:
                response = await http.get(f"{small_mesh.taskstore_url}/tasks/{task.id}?scope=all")
                if response.status_code != 200 or response.json()["status"]["state"] != state:
                    return False
            return True

        await eventually(recorded, timeout=30, what="every task recorded")

    republished: list[str] = []

    async def republish(_agent: AgentAddress, event: bytes | str) -> None:
        task = StreamResponse.from_json(event).task
        republished.append(task.id if task is not None else "")

    def undated(task_id: str) -> Task:
        return Task(id=task_id, context_id="c", status=TaskStatus(state=TaskState.COMPLETED))

    lost = str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=30) as store_http:
        reconciler = Reconciler(TaskStoreClient(small_mesh.taskstore_url, store_http), republish, first_check=0.0)
        for task_id in [*(task.id for task in sent), unfinished.id, lost]:
            reconciler.watch(LiveTask(undated(task_id), echo, not_recorded, mirror=False))
        await reconciler.check_due()
        many = [*(f"none-{i}" for i in range(1500)), sent[0].id]  # more than one request takes: two
        assert await reconciler.store.states(many) == {sent[0].id: TaskState.COMPLETED}

    assert reconciler.listed == 0  # nothing a listing could cover
    assert (reconciler.read, reconciler.state_reads) == (TASKS + 2, 1)  # every outcome, in one request
    assert sorted(republished) == sorted([unfinished.id, lost])
    assert reconciler.pending == 2  # checked again later

    republished.clear()  # a store without the batched read (an older one, mid-upgrade): read one by one, as before
    async with httpx.AsyncClient(timeout=30) as store_http:
        reconciler = Reconciler(TaskStoreClient(small_mesh.taskstore_url, store_http), republish, first_check=0.0)
        reconciler.store.states_path = "/no-such-route"  # the real store answers 404, as one without the route does
        for task_id in [*(task.id for task in sent), unfinished.id, lost]:
            reconciler.watch(LiveTask(undated(task_id), echo, not_recorded, mirror=False))
        await reconciler.check_due()
    assert (reconciler.read, reconciler.state_reads) == (TASKS + 2, 0)
    assert sorted(republished) == sorted([unfinished.id, lost])
    assert reconciler.pending == 2


def test_the_coordinator_asks_no_more_ids_at_once_than_the_store_answers() -> None:
    assert STATES_PER_REQUEST <= MAX_STATE_IDS


async def test_an_outcome_waiting_for_the_store_keeps_its_whole_snapshot_but_not_its_relay(small_mesh: Stack) -> None:
    """While the store is away, outcomes wait in the reconciler (up to 20,000 of them): each without its relay (the
    LiveTask, with its request and queues, is let go) and its snapshot packed, yet what it republishes once the
    store is back is the whole final Task, history and artifacts included: a store that lost the events has only
    that to make the record from."""
    context = "c"
    lost = Task(
        id=str(uuid.uuid4()),
        context_id=context,
        history=[Message(message_id="m1", role=Role.USER, parts=[Part(text="kept whole")], context_id=context)],
        artifacts=[Artifact(artifact_id="a1", name="echo", parts=[Part(text="kept whole")])],
        status=TaskStatus(state=TaskState.COMPLETED, timestamp=utc_now()),
    )
    lost = lost.model_copy(update={"history": [lost.history[0].model_copy(update={"task_id": lost.id})]})
    echo = AgentAddress(small_mesh.org, small_mesh.unit, "echo")
    republished: list[tuple[AgentAddress, StreamResponse]] = []

    async def republish(agent: AgentAddress, event: bytes | str) -> None:
        republished.append((agent, StreamResponse.from_json(event)))

    store = small_mesh["taskstore"]
    store.stop()
    try:
        async with httpx.AsyncClient(timeout=30) as store_http:
            reconciler = Reconciler(
                TaskStoreClient(small_mesh.taskstore_url, store_http), republish, first_check=0.0, keep_whole=0.0
            )
            live = LiveTask(lost, echo, not_recorded, mirror=False)
            relay = weakref.ref(live)
            reconciler.watch(live)
            del live
            with pytest.raises(DependencyError):
                await reconciler.check_due()  # the store is away: nothing confirmed, nothing dropped
            with pytest.raises(DependencyError):
                await reconciler.store.states([lost.id])  # its read by id says so too
            gc.collect()
            assert relay() is None, "the reconciler still holds the relay"
            assert reconciler.pending == 1

            store.start()
            store.wait_ready()
            await reconciler.check_due()
    finally:
        if not store.running:
            store.start()
            store.wait_ready()

    assert [(agent, item.task.to_wire() if item.task else None) for agent, item in republished] == [
        (echo, lost.to_wire())
    ]
    assert reconciler.pending == 1  # checked again later, until the store shows it


async def not_recorded(_live: LiveTask, _item: StreamResponse) -> None:
    """A relay's recording, for relays that are never started here."""
    raise AssertionError("a relay that never ran recorded an event")
