"""Stopping a pooled replica (SIGTERM: scale-in, a rolling update): tasks it cannot finish within its drain budget
are handed to a pool peer under the same task id (the echo skill is re-runnable, its card says so), and the
requester's stream goes on there. None fails, none is refused, lost = 0, and the replica still exits 0."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.conftest import eventually
from tests.faults.harness import (
    COMPLETED,
    WORKING,
    EventObserver,
    Load,
    Tally,
    await_terminal,
    blocking,
    diagnostics,
    start_stack,
    state_of,
)

REPLICAS = ("echo-p1", "echo-p2")
POOL = "echo-drain"
TASKS = 4
LONG_MS = 14_000
"""Longer than the replica's 10 s drain budget: it cannot finish these itself."""
PATIENT = {"MESH_STREAM_IDLE_TIMEOUT": "60"}
"""The coordinator waits out the silent tasks: the hand-over, not the relay's own recovery, is under test."""


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("fault-pool-sigterm"), {r: {"MESH_POOL": POOL} for r in REPLICAS}, PATIENT
    )
    yield stack
    stack.stop()


@pytest.mark.timeout(180)
async def test_a_stopping_replica_hands_its_unfinished_tasks_to_a_peer(pooled: Stack) -> None:
    async with EventObserver(pooled) as observer:
        load = await Load(pooled, TASKS, label="drain", metadata={"skill": "echo", "delayMs": LONG_MS}, rate=None).run()
        assert len(load.accepted) == TASKS, load.refused

        async def all_working() -> bool:
            stored = await await_terminal(pooled, load.task_ids, timeout=0)
            return all(state_of(task) == WORKING for task in stored.values())

        await eventually(all_working, 20, "every task WORKING in the store", poll=0.2)
        held = {name: [t for t in load.task_ids if name in observer.publishers(t)] for name in REPLICAS}
        victim = max(REPLICAS, key=lambda name: len(held[name]))
        peer = next(name for name in REPLICAS if name != victim)
        exit_code = await blocking(pooled[victim].stop, 30)
        stored = await await_terminal(pooled, load.task_ids, timeout=60)
        await asyncio.sleep(0.5)  # the observer has seen the last events too

    tally = Tally.of("pooled replica SIGTERM", [load], stored)
    handed = [t for t in held[victim] if state_of(stored[t]) == COMPLETED and peer in observer.finished_by(t)]
    tally.notes.update(
        {
            "victim / tasks it held": f"{victim} / {len(held[victim])}",
            "completed on the peer (same task id)": len(handed),
            "victim exit code": exit_code,
        }
    )
    tally.report()
    context = f"{tally.render()}\n{diagnostics(pooled, ['coordinator', *REPLICAS])}"
    tally.assert_nothing_lost(pooled)
    assert held[victim], f"the stopped replica held no task; the test proved nothing\n{context}"
    assert tally.completed == TASKS and tally.failed_with_reason == 0 and tally.rejected_at_submit == 0, context
    assert sorted(handed) == sorted(held[victim]), context
    assert exit_code == 0, context
