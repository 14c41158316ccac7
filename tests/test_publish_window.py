"""Thousands of tasks of one agent ending at the same moment all complete: the agent's MQTT link takes their
publishes (each task's events and streamed replies, QoS 1) through its bounded publish window in turn, and no
publish fails for having waited behind the others (docs/reliability.md, "Bounded publish window").

A real Mosquitto (the suite's broker, the project's policy: TLS, ACLs, max_inflight_messages 100), the benchmark's
hold agent as a real process on the mesh's runtime, and the binding's requester: TASKS streams are opened and held
WORKING, then SIGUSR1 releases every one at once. Every stream must end COMPLETED, and every task's events on the
agent's event topic must come in order (submitted, working, artifact, completed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from a2amesh.binding.requester import RetryProfile
from a2amesh.mqtt import Envelope, MqttLink
from devstack.agent_testing import AgentUnderTest, agent_process, running, short_id
from devstack.fixtures import BrokerHandle
from loadtests.a2a import send_params, stream_state
from loadtests.bench.hold_agent import HOLD_SKILL
from tests.conftest import eventually

TASKS = 4_000
"""Tasks held, then released together: 16,000 publishes from the agent at once (two events and two streamed replies
each). Before the window, 5,000 of them ended every task FAILED in the benchmark (each publish waited behind all the
others in the MQTT client while its PUBACK timeout ran)."""
PUBLISH_TIMEOUT = 1.0
"""The agent's PUBACK timeout here (MESH_MQTT__PUBLISH_TIMEOUT; 10 s by default): far shorter than the burst takes
to get out, so a publish whose timeout counted its time in the queue would fail, as every one did before the window
when the queue took longer than 10 s."""
OPENING_AT_ONCE = 200
"""Requests sent and not yet held at any moment (the ramp is not what is tested)."""
HOLD_SECONDS = 600.0
"""How long the agent would hold a task never released (the test releases them well before)."""
PATIENT = RetryProfile(first_reply_timeout=120.0, stream_idle_timeout=180.0, attempts=1)
"""One attempt, with room for a loaded machine: a stream that does not end COMPLETED is a failure, not a retry."""
RAMP_SECONDS = 240.0
RELEASE_SECONDS = 240.0
EXPECTED_EVENTS = ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "artifact", "TASK_STATE_COMPLETED"]


def event_kind(payload: bytes) -> tuple[str, str]:
    """(task id, what the event says: its state, or `artifact`) of one task event."""
    item: dict[str, Any] = json.loads(payload)
    if "artifactUpdate" in item:
        return item["artifactUpdate"]["taskId"], "artifact"
    if "task" in item:
        return item["task"]["id"], item["task"]["status"]["state"]
    update = item["statusUpdate"]
    return update["taskId"], update["status"]["state"]


def in_order(kinds: list[str]) -> list[str]:
    """The kinds with repeats in a row folded (delivery is at least once: a retried publish may come twice)."""
    return [kind for index, kind in enumerate(kinds) if index == 0 or kinds[index - 1] != kind]


@pytest.mark.timeout(RAMP_SECONDS + RELEASE_SECONDS + 120)
async def test_thousands_of_tasks_ending_at_once_all_complete_with_their_events_in_order(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    events: dict[str, list[str]] = defaultdict(list)

    async def on_event(envelope: Envelope) -> None:
        task_id, kind = event_kind(envelope.payload)
        events[task_id].append(kind)

    env = {"MESH_MAX_CONCURRENT": str(TASKS), "MESH_MQTT__PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT)}
    async with agent_process(broker, tmp_path, "loadtests.bench.hold_agent", "hold", env) as agent:
        observer = MqttLink(broker.settings, f"acme/default/events-{short_id()}", [agent.address.event_topic], on_event)
        async with running(observer):
            outcomes = await hold_then_release(agent)
    failed = {state: count for state, count in outcomes.items() if state != "TASK_STATE_COMPLETED"}
    assert not failed and outcomes["TASK_STATE_COMPLETED"] == TASKS, (outcomes, agent.process.log_tail())
    await eventually(
        lambda: _all_completed(events), timeout=60.0, what=f"the completed event of all {TASKS} tasks observed"
    )
    out_of_order = {task: kinds for task, kinds in events.items() if in_order(kinds) != EXPECTED_EVENTS}
    assert not out_of_order, f"{len(out_of_order)} tasks' events out of order, e.g. {next(iter(out_of_order.items()))}"


async def _all_completed(events: dict[str, list[str]]) -> bool:
    return sum(1 for kinds in events.values() if kinds[-1] == "TASK_STATE_COMPLETED") >= TASKS


async def hold_then_release(agent: AgentUnderTest) -> dict[str, int]:
    """Open TASKS streams, wait until all are held WORKING, release them at once; how many ended in each state
    (or with which error)."""
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    held = settled = 0
    all_held = asyncio.Event()

    def settle(was_held: bool) -> None:
        nonlocal held, settled
        held += was_held
        settled += 1
        if settled == TASKS:  # every stream held, or ended before it was (then counted below as what it ended)
            all_held.set()

    async def one_stream() -> str:
        params = send_params("hold this", skill=HOLD_SKILL, task_id=str(uuid.uuid4()), holdSeconds=HOLD_SECONDS)
        stream = agent.requester.request(agent.address.request_topic, "SendStreamingMessage", params, profile=PATIENT)
        await opening.acquire()
        opened = True
        try:
            async for result in stream.results():
                state = stream_state(result)
                if state == "TASK_STATE_WORKING" and opened:
                    opened = False
                    opening.release()
                    settle(True)
                if state is not None and state != "TASK_STATE_WORKING" and state != "TASK_STATE_SUBMITTED":
                    return state
            return "ended without a final state"
        except Exception as error:  # counted by kind: the assertion shows what went wrong
            return type(error).__name__
        finally:
            if opened:
                opening.release()
                settle(False)

    streams = [asyncio.create_task(one_stream()) for _ in range(TASKS)]
    try:
        async with asyncio.timeout(RAMP_SECONDS):
            await all_held.wait()
        assert held == TASKS, f"only {held} of {TASKS} tasks held"
        released = time.monotonic()
        os.kill(agent.process.pid, signal.SIGUSR1)
        async with asyncio.timeout(RELEASE_SECONDS):
            states = await asyncio.gather(*streams)
        print(f"{TASKS} tasks released together ended within {time.monotonic() - released:.1f} s")
    finally:
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    outcomes: dict[str, int] = defaultdict(int)
    for state in states:
        outcomes[state] += 1
    return dict(outcomes)
