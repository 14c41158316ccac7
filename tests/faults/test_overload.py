"""Overload: a burst of concurrent tasks at an echo agent that runs 2 at a time and queues 2 more. The agent answers
-32004 responder_unavailable instead of queueing without bound; the coordinator retries with backoff, then refuses
the request with a clear JSON-RPC error. Each task is completed or refused at submit, none hangs, none is lost, and
the agent's memory (VmRSS) stays bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.faults.harness import (
    COMPLETED,
    FAILED,
    REJECTED,
    Load,
    Tally,
    await_terminal,
    diagnostics,
    rss_kib,
    start_stack,
    state_of,
    stored_for_refused,
)

AGENT = "echo"
LIMITS = {"MESH_MAX_CONCURRENT": "2", "MESH_MAX_QUEUED": "2"}
BURST = 50
DELAY_MS = 500
RSS_GROWTH_LIMIT_KIB = 32 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mesh = start_stack(tmp_path_factory.mktemp("fault-overload"), {AGENT: LIMITS})
    yield mesh
    mesh.stop()


@pytest.mark.timeout(150)
async def test_a_saturated_agent_refuses_with_a_clear_error_and_stays_bounded(stack: Stack) -> None:
    agent = stack[AGENT]
    warm = await Load(stack, 4, label="warm-up", metadata={"skill": "echo", "delayMs": 10}, rate=None).run()
    assert len(warm.accepted) == 4, warm.refused
    await await_terminal(stack, warm.task_ids, timeout=15)
    rss_before = rss_kib(agent.pid)

    burst = Load(
        stack,
        BURST,
        label="burst",
        metadata={"skill": "echo", "delayMs": DELAY_MS},
        rate=None,
        concurrency=BURST,
        request_timeout=30,
    )
    await asyncio.wait_for(burst.run(), timeout=60)  # none hangs: every request is answered
    stored = await await_terminal(stack, burst.task_ids, timeout=30)
    rss_after = rss_kib(agent.pid)
    ran_anyway = {
        index: [state_of(task) for task in tasks]
        for index, tasks in (await stored_for_refused(stack, burst.refused)).items()
        if any(state_of(task) not in (FAILED, REJECTED) for task in tasks)
    }

    tally = Tally.of("overload (2 running + 2 queued, burst of 50)", [burst], stored)
    slowest = max((item.at for item in [*burst.accepted, *burst.refused]), default=0.0)
    tally.notes.update(
        {
            "burst answered within": f"{slowest:.1f}s",
            "agent VmRSS before / after": f"{rss_before} KiB / {rss_after} KiB ({rss_after - rss_before:+d} KiB)",
            "refused requests that ran anyway": len(ran_anyway),
        }
    )
    tally.report()
    context = f"{tally.render()}\n{diagnostics(stack, ['coordinator', AGENT])}"

    tally.assert_nothing_lost(stack)
    assert tally.accepted + tally.rejected_at_submit == BURST, context
    not_completed = {t: state_of(stored[t]) for t in burst.task_ids if state_of(stored[t]) != COMPLETED}
    assert not not_completed, (
        f"{len(not_completed)} accepted task(s) did not complete: a task the saturated agent refused (-32004) must "
        f"be refused at submit with a JSON-RPC error, not accepted and then ended FAILED\n{context}"
    )
    assert burst.refused, f"a burst of {BURST} at a capacity of 4 was never refused: the agent queued it\n{context}"
    unclear = [item for item in burst.refused if item.code is None or "unavailable" not in item.error.lower()]
    assert not unclear, f"refusals without a JSON-RPC 'responder unavailable' error: {unclear[:5]}\n{context}"
    assert not ran_anyway, f"requests refused at submit that ran anyway: {ran_anyway}\n{context}"
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB, context
