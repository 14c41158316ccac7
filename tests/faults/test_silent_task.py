"""Long tasks that report nothing: the agent's keepalives keep the coordinator's relay alive past its stream idle
timeout (the task completes, followed by the same relay throughout); and when the coordinator does give up on a
task (an agent that sends no keepalives and stays silent), it cancels the task at the agent, so no agent works
for a task nobody follows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.conftest import eventually
from tests.faults.harness import (
    CANCELED,
    COMPLETED,
    FAILED,
    QUICK_RETRIES,
    EventObserver,
    Load,
    Tally,
    await_terminal,
    diagnostics,
    reason_of,
    start_stack,
    state_of,
)

CHATTY, MUTE = "echo-keepalive", "echo-mute"
IDLE = float(QUICK_RETRIES["MESH_STREAM_IDLE_TIMEOUT"])
SILENT_MS = int(IDLE * 3 * 1000)
"""Three idle timeouts without a single event from the task itself."""
ABANDONED_MS = 60_000
"""Far longer than the coordinator follows a silent task (it picks the relay up a few times, then gives up)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    agents = {CHATTY: {}, MUTE: {"MESH_KEEPALIVE_INTERVAL": "0"}}
    mesh = start_stack(tmp_path_factory.mktemp("fault-silent"), agents)
    yield mesh
    mesh.stop()


def relay_losses(stack: Stack, task_id: str) -> int:
    log = (stack.run_dir / "logs" / "coordinator.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if task_id in line and "relay lost" in line)


@pytest.mark.timeout(180)
async def test_keepalives_carry_a_silent_task_and_an_abandoned_task_is_canceled_at_the_agent(stack: Stack) -> None:
    async with EventObserver(stack) as observer:
        silent = Load(stack, 1, label="silent", metadata={"agent": CHATTY, "delayMs": SILENT_MS}, rate=None)
        abandoned = Load(stack, 1, label="abandoned", metadata={"agent": MUTE, "delayMs": ABANDONED_MS}, rate=None)
        await asyncio.gather(silent.run(), abandoned.run())
        assert silent.accepted and abandoned.accepted, (silent.refused, abandoned.refused)
        silent_id, abandoned_id = silent.task_ids[0], abandoned.task_ids[0]
        stored = await await_terminal(stack, [silent_id, abandoned_id], timeout=90)

        async def canceled_at_agent() -> bool:
            return any(seen.state == CANCELED for seen in observer.by_task.get(abandoned_id, []))

        try:
            agent_canceled = await eventually(canceled_at_agent, 30, "the agent's CANCELED event", poll=0.2)
        except AssertionError:
            agent_canceled = False

    tally = Tally.of("silent tasks", [silent, abandoned], stored)
    tally.notes.update(
        {
            f"{SILENT_MS} ms silent task (idle timeout {IDLE}s)": f"{state_of(stored[silent_id])}, relay lost "
            f"{relay_losses(stack, silent_id)} time(s)",
            "abandoned task": f"{state_of(stored[abandoned_id])}: {reason_of(stored[abandoned_id])!r}; "
            f"canceled at the agent: {agent_canceled}",
        }
    )
    tally.report()
    context = f"{tally.render()}\n{diagnostics(stack, ['coordinator', CHATTY, MUTE])}"
    tally.assert_nothing_lost(stack)
    assert state_of(stored[silent_id]) == COMPLETED and relay_losses(stack, silent_id) == 0, context
    assert state_of(stored[abandoned_id]) == FAILED and reason_of(stored[abandoned_id]), context
    assert agent_canceled, f"the agent still works on a task the coordinator gave up on\n{context}"
