"""Fault: the coordinator is restarted (SIGTERM, then started again) while the tasks it accepted are running on
the agents. None is lost: each one's record and outcome are in the store, a client can GetTask every one of them
through the restarted coordinator, SubscribeToTask follows a still-running one to its end, and SubscribeToTask on a
finished one is refused with UnsupportedOperation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import UnsupportedOperationError

from devstack.stack import Stack
from tests.faults.harness import (
    COMPLETED,
    TERMINAL,
    Load,
    Tally,
    auth_headers,
    await_terminal,
    blocking,
    diagnostics,
    start_stack,
    state_of,
)

ECHOES = ("echo-a", "echo-b")
ROOMY = {"MESH_MAX_CONCURRENT": "200", "MESH_MAX_QUEUED": "200"}  # every task runs at once: no -32004 here
TASKS = 150
DELAY_MS = 2_000
LONG_TASKS = 4
LONG_DELAY_MS = 30_000
"""Still running after the restart, to subscribe to."""
PATIENT = {"MESH_STREAM_IDLE_TIMEOUT": "60"}
"""No agent dies here: the coordinator must not give up on a long task that is silent while it works (echo reports
nothing between WORKING and its artifact; with the quick 4 s idle limit the relay would end it FAILED while the
agent still works on it, and the agent's later COMPLETED could no longer change the record)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mesh = start_stack(tmp_path_factory.mktemp("fault-coordinator"), dict.fromkeys(ECHOES, ROOMY), PATIENT)
    yield mesh
    mesh.stop()


def restart_coordinator(stack: Stack) -> tuple[int | None, float, float]:
    """SIGTERM, start again, wait until ready: (exit code, seconds to stop, seconds until serving again)."""
    coordinator = stack["coordinator"]
    began = time.monotonic()
    code = coordinator.stop(timeout=30)
    stopped = time.monotonic()
    coordinator.start()
    coordinator.wait_ready(30)
    return code, stopped - began, time.monotonic() - began


@pytest.mark.timeout(180)
async def test_tasks_survive_a_coordinator_restart(stack: Stack) -> None:
    slow = Load(stack, LONG_TASKS, label="long", metadata={"skill": "echo", "delayMs": LONG_DELAY_MS}, rate=None)
    load = Load(stack, TASKS, label="coordinator", metadata={"skill": "echo", "delayMs": DELAY_MS}, rate=75)
    await slow.run()
    await load.run()
    assert not load.refused and not slow.refused, (load.refused[:3], slow.refused[:3])
    code, stop_seconds, down_seconds = await blocking(restart_coordinator, stack)

    async with httpx.AsyncClient(timeout=60, headers=auth_headers(stack)) as http:
        card = await A2ACardResolver(http, stack.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)

        fetched = {}
        for task_id in [*load.task_ids, *slow.task_ids]:
            task = await client.get_task(pb.GetTaskRequest(id=task_id))
            fetched[task_id] = pb.TaskState.Name(task.status.state)

        running = [task_id for task_id in slow.task_ids if fetched[task_id] not in TERMINAL]
        long_states = {task_id: fetched[task_id] for task_id in slow.task_ids}
        assert running, (
            f"no long task still running after the restart (stop {stop_seconds:.1f}s, back after {down_seconds:.1f}s)"
            f": {long_states}"
        )
        streamed = [item async for item in client.subscribe(pb.SubscribeToTaskRequest(id=running[0]))]
        final = streamed[-1]
        final_state = final.status_update.status.state if final.HasField("status_update") else final.task.status.state

        stored = await await_terminal(stack, [*load.task_ids, *slow.task_ids], timeout=45)
        finished = next(task_id for task_id in load.task_ids if state_of(stored[task_id]) in TERMINAL)
        with pytest.raises(UnsupportedOperationError):
            _ = [item async for item in client.subscribe(pb.SubscribeToTaskRequest(id=finished))]

    tally = Tally.of("coordinator SIGTERM + restart", [slow, load], stored)
    tally.notes.update(
        {
            "coordinator exit code / stop took / back after": f"{code} / {stop_seconds:.1f}s / {down_seconds:.1f}s",
            "GetTask through the restarted coordinator": f"{len(fetched)} answered, states {_count(fetched)}",
            "SubscribeToTask on a running task": f"{len(streamed)} events, ended {pb.TaskState.Name(final_state)}",
        }
    )
    tally.report()
    context = f"{tally.render()}\n{diagnostics(stack, ['coordinator', *ECHOES])}"
    tally.assert_nothing_lost(stack)
    assert code == 0, f"the coordinator exited {code} on SIGTERM\n{context}"
    assert final_state == pb.TASK_STATE_COMPLETED, f"the subscription ended {final}\n{context}"
    # The agents never stopped: every task they accepted did its work, and the record must say so.
    not_completed = {t: state_of(stored[t]) for t in stored if state_of(stored[t]) != COMPLETED}
    assert not not_completed, f"tasks not COMPLETED in the store: {list(not_completed.items())[:10]}\n{context}"


def _count(states: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return counts
