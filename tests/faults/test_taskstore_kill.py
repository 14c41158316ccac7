"""Fault: the task store is SIGKILLed under load and started again. Afterwards it holds every event the agents
published (checked against an independent observer on the broker): no duplicate event ids, and every echo task's
status history complete (submitted -> working -> completed, no gaps); lost = 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.faults.harness import (
    COMPLETED,
    SUBMITTED,
    WORKING,
    EventObserver,
    Load,
    Tally,
    await_terminal,
    blocking,
    collapsed_states,
    diagnostics,
    start_stack,
    store_events,
)

ECHOES = ("echo-a", "echo-b")
TASKS = 300
RATE = 40.0
DELAY_MS = 30
OUTAGE = 2.0
"""Seconds the task store stays dead: its persistent session keeps collecting events meanwhile."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mesh = start_stack(tmp_path_factory.mktemp("fault-store"), {name: {} for name in ECHOES})
    yield mesh
    mesh.stop()


def restart_store(stack: Stack) -> tuple[float, float]:
    """SIGKILL, wait OUTAGE, start, wait until healthy; (when it died, when it was back) in time.monotonic()."""
    store = stack["taskstore"]
    killed = time.monotonic()
    store.kill()
    time.sleep(OUTAGE)
    store.start()
    store.wait_ready(30)
    return killed, time.monotonic()


@pytest.mark.timeout(180)
async def test_store_killed_under_load_keeps_every_event_once(stack: Stack) -> None:
    async with EventObserver(stack) as observer:
        load = Load(stack, TASKS, label="store", metadata={"skill": "echo", "delayMs": DELAY_MS}, rate=RATE)
        running = load.start()
        await load.until_answered(TASKS // 3)
        killed, back = await blocking(restart_store, stack)
        await asyncio.wait_for(running, timeout=90)
        stored = await await_terminal(stack, load.task_ids, timeout=45)
        await asyncio.sleep(1.0)  # the last events are in the store's log too, not only in the snapshots
    logs = await store_events(stack, load.task_ids)

    tally = Tally.of("task store SIGKILL + restart", [load], stored)
    duplicated: dict[str, list[str]] = {}
    gaps: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    observed = stored_count = during_outage = 0
    for task_id in load.task_ids:
        log = logs.get(task_id)
        if log is None:
            missing[task_id] = ["the whole task"]
            continue
        ids = [event["eventId"] for event in log["events"]]
        stored_count += len(ids)
        if len(ids) != len(set(ids)):
            duplicated[task_id] = sorted({i for i in ids if ids.count(i) > 1})
        states = collapsed_states(log["statusHistory"])
        if states != [SUBMITTED, WORKING, COMPLETED]:
            gaps[task_id] = states
        published = [seen for seen in observer.by_task.get(task_id, []) if seen.publisher in ECHOES]
        observed += len(published)
        during_outage += sum(1 for seen in published if killed <= seen.at <= back)
        absent = [f"{seen.kind}/{seen.state or '-'}" for seen in published if seen.event_id not in set(ids)]
        if absent:
            missing[task_id] = absent
    tally.notes.update(
        {
            "store down": f"{back - killed:.1f}s (killed after {TASKS // 3} answers, load {load.duration:.1f}s)",
            "agent events published / published while the store was down": f"{observed} / {during_outage}",
            "events in the store for these tasks": stored_count,
            "tasks with a missing event / a duplicate / a gap in the history": (
                f"{len(missing)} / {len(duplicated)} / {len(gaps)}"
            ),
        }
    )
    tally.report()

    context = f"{tally.render()}\n{diagnostics(stack, ['taskstore', 'coordinator', *ECHOES])}"
    tally.assert_nothing_lost(stack)
    assert tally.completed == tally.accepted == TASKS, context
    assert during_outage > 0, f"no event was published while the store was down; the test proved nothing\n{context}"
    assert not missing, f"events published but not in the store: {list(missing.items())[:10]}\n{context}"
    assert not duplicated, f"duplicate event ids: {list(duplicated.items())[:10]}\n{context}"
    assert not gaps, f"incomplete status histories: {list(gaps.items())[:10]}\n{context}"
