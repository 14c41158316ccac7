"""Fault: Redis (the registry's index, a cache of the broker's retained cards, without persistence) is restarted
while tasks flow. The registry notices the empty index and re-reads the retained cards; every agent is listed
online again. Meanwhile the coordinator routes on the last known agents, so nothing is refused and nothing fails:
accepted = completed, refused at submit = 0, lost = 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.conftest import eventually
from tests.faults.harness import (
    Load,
    Tally,
    await_terminal,
    blocking,
    diagnostics,
    registry_agents,
    start_stack,
)

ECHOES = ("echo-a", "echo-b")
TASKS = 100
METADATA = {"skill": "echo", "delayMs": 30}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mesh = start_stack(tmp_path_factory.mktemp("fault-redis"), {name: {} for name in ECHOES})
    yield mesh
    mesh.stop()


def restart_redis(stack: Stack) -> int | None:
    """SIGTERM Redis, start it again (empty: it keeps no data), wait until it answers; its exit code."""
    redis = stack["redis"]
    code = redis.stop()
    redis.start()
    redis.wait_ready(30)
    return code


@pytest.mark.timeout(180)
async def test_registry_rebuilds_after_redis_restart_and_routing_resumes(stack: Stack) -> None:
    online_before = {name for name, record in (await registry_agents(stack)).items() if record["status"] == "online"}
    assert set(ECHOES) <= online_before, online_before

    before = await Load(stack, TASKS, label="before-redis", metadata=METADATA, rate=50).run()

    during = Load(stack, TASKS, label="during-redis", metadata=METADATA, rate=25)
    running = during.start()
    await during.until_answered(TASKS // 4)
    restarted = time.monotonic()
    exit_code = await blocking(restart_redis, stack)
    await asyncio.wait_for(running, timeout=60)

    async def all_online_again() -> set[str]:
        records = await registry_agents(stack)
        online = {name for name, record in records.items() if record["status"] == "online"}
        return online if online >= online_before else set()

    await eventually(all_online_again, 30, "every agent listed online again", poll=0.2)
    rebuilt_in = time.monotonic() - restarted

    after = await Load(stack, TASKS, label="after-redis", metadata=METADATA, rate=50).run()
    loads = [before, during, after]
    stored = await await_terminal(stack, [task_id for load in loads for task_id in load.task_ids], timeout=45)

    tally = Tally.of("Redis restart", loads, stored)
    tally.notes.update(
        {
            "redis exit code on SIGTERM": exit_code,
            "index rebuilt (every agent online) after": f"{rebuilt_in:.1f}s",
            "accepted before / during / after": f"{len(before.accepted)} / {len(during.accepted)} / "
            f"{len(after.accepted)}",
            "agents online after": sorted(await registry_agents(stack)),
        }
    )
    tally.report()
    context = f"{tally.render()}\n{diagnostics(stack, ['registry', 'coordinator'])}"
    tally.assert_nothing_lost(stack)
    assert len(before.accepted) == TASKS and not before.refused, context
    # a registry rebuilding its index is a transient server condition: never a refusal, never a failed task
    assert tally.rejected_at_submit == 0 and tally.failed_with_reason == 0, f"routing faltered\n{context}"
    after_tally = Tally.of("after", [after], stored)
    assert after_tally.completed == TASKS, f"routing did not resume fully: {after_tally.figures()}\n{context}"
