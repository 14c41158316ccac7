"""Fault: one of three pooled echo replicas is SIGKILLed in the middle of a load. The echo skill is re-runnable (its
card says so), so the tasks the victim held run again on a live replica under the same task id, and requests
left in its session are sent to a live member: every task completes, none is refused, lost = 0."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.faults.harness import (
    COMPLETED,
    FAILED,
    QUICK_RETRIES,
    EventObserver,
    Load,
    Tally,
    await_terminal,
    blocking,
    diagnostics,
    reason_of,
    start_stack,
    state_of,
)

REPLICAS = ("echo-r1", "echo-r2", "echo-r3")
POOL = "echo-pool"
VICTIM = "echo-r2"
TASKS = 300
RATE = 60.0
DELAY_MS = 250  # long enough that the victim always holds a few tasks when it dies
FIRST_REPLY_TIMEOUT = float(QUICK_RETRIES["MESH_FIRST_REPLY_TIMEOUT"])


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("fault-replica"), {r: {"MESH_POOL": POOL} for r in REPLICAS})
    yield stack
    stack.stop()


@pytest.mark.timeout(180)
async def test_a_replica_killed_mid_load_loses_no_task(pooled: Stack) -> None:
    async with EventObserver(pooled) as observer:
        load = Load(pooled, TASKS, label="replica", metadata={"skill": "echo", "delayMs": DELAY_MS}, rate=RATE)
        running = load.start()
        await load.until_answered(TASKS // 3)
        killed_at = load.elapsed()
        await blocking(pooled[VICTIM].kill)
        await asyncio.wait_for(running, timeout=90)
        stored = await await_terminal(pooled, load.task_ids, timeout=45)
        await asyncio.sleep(0.5)  # the observer has seen the last events too

    tally = Tally.of("agent replica SIGKILL", [load], stored)
    taken_by_victim = [task_id for task_id in load.task_ids if VICTIM in observer.publishers(task_id)]
    orphaned = [task_id for task_id in taken_by_victim if VICTIM not in observer.finished_by(task_id)]
    moved = [
        task_id
        for task_id in orphaned
        if state_of(stored[task_id]) == COMPLETED and observer.finished_by(task_id) & (set(REPLICAS) - {VICTIM})
    ]
    failed = [task_id for task_id in orphaned if state_of(stored[task_id]) == FAILED and reason_of(stored[task_id])]
    finishers = Counter(
        next(iter(sorted(observer.finished_by(task_id) & set(REPLICAS))), "?")
        for task_id in load.task_ids
        if state_of(stored[task_id]) == COMPLETED
    )
    # a first attempt that went to the dead replica's session is answered only after the retry (>= 2 s)
    retried = [
        item.task_id
        for item in load.accepted
        if item.latency >= FIRST_REPLY_TIMEOUT and state_of(stored[item.task_id]) == COMPLETED
    ]
    after_kill = [item for item in load.accepted if item.index / RATE > killed_at]
    failed_after_kill = [item.task_id for item in after_kill if state_of(stored[item.task_id]) == FAILED]
    tally.notes.update(
        {
            "killed at": f"{killed_at:.1f}s of a {load.duration:.1f}s load",
            "sent after the kill / of them FAILED": f"{len(after_kill)} / {len(failed_after_kill)}",
            "completed per replica": dict(sorted(finishers.items())),
            "tasks the victim took": len(taken_by_victim),
            "of them unfinished when it died": len(orphaned),
            "completed on another replica (same task id)": len(moved),
            "unanswered first attempt, completed on a live replica after the retry (same task id)": len(retried),
            "ended FAILED with the reason": len(failed),
        }
    )
    tally.report()

    tally.assert_nothing_lost(pooled)
    assert orphaned, f"the kill hit no task in flight; the test proved nothing\n{tally.render()}"
    unaccounted = sorted(set(orphaned) - set(moved) - set(failed))
    assert not unaccounted, (
        f"tasks the victim held neither completed elsewhere nor FAILED with a reason: "
        f"{[(t, state_of(stored[t]), sorted(observer.finished_by(t))) for t in unaccounted[:10]]}\n"
        f"{tally.render()}\n{diagnostics(pooled, ['coordinator', *REPLICAS])}"
    )
    assert tally.completed > 0 and set(finishers) >= set(REPLICAS) - {VICTIM}, tally.render()
    # the dead replica's tasks, and the requests that sat in its session, run on live members: nothing fails
    assert tally.failed_with_reason == 0 and tally.rejected_at_submit == 0, (
        f"a replica's death failed or refused tasks\n{tally.render()}\n{diagnostics(pooled, ['coordinator'])}"
    )
    assert set(moved) == set(orphaned), tally.render()
