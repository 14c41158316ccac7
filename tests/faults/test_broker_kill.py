"""Fault: the broker is SIGKILLed under load and started again (same run directory, so the same identities and
its persisted sessions). Every task accepted before, during or after the outage completes: relays that lost the
connection pick their task up again once it is back; lost = 0, failed = 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from devstack.stack import Stack
from tests.faults.harness import Load, Tally, await_terminal, blocking, diagnostics, start_stack

ECHOES = ("echo-a", "echo-b")
TASKS = 300
RATE = 50.0
DELAY_MS = 30
OUTAGE = 1.0
"""Seconds the broker stays dead before it is started again."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mesh = start_stack(tmp_path_factory.mktemp("fault-broker"), {name: {} for name in ECHOES})
    yield mesh
    mesh.stop()


def restart_broker(stack: Stack) -> float:
    """SIGKILL, wait OUTAGE, start, wait until it accepts connections; the seconds it was down."""
    broker = stack["broker"]
    killed = time.monotonic()
    broker.kill()
    time.sleep(OUTAGE)
    broker.start()
    broker.wait_ready(30)
    return time.monotonic() - killed


@pytest.mark.timeout(180)
async def test_broker_killed_under_load_loses_no_accepted_task(stack: Stack) -> None:
    load = Load(stack, TASKS, label="broker", metadata={"skill": "echo", "delayMs": DELAY_MS}, rate=RATE)
    running = load.start()
    await load.until_answered(TASKS // 3)
    killed_at = load.elapsed()
    down_for = await blocking(restart_broker, stack)
    await asyncio.wait_for(running, timeout=120)
    stored = await await_terminal(stack, load.task_ids, timeout=60)

    tally = Tally.of("broker SIGKILL + restart", [load], stored)
    before = sum(1 for item in load.accepted if item.at < killed_at)
    tally.notes.update(
        {
            "killed at": f"{killed_at:.1f}s of a {load.duration:.1f}s load; down {down_for:.1f}s",
            "accepted before the kill / after": f"{before} / {tally.accepted - before}",
        }
    )
    tally.report()
    tally.assert_nothing_lost(stack)
    # relays that lost the broker pick their tasks up again (re-attach, or re-send under the same task id)
    assert tally.failed_with_reason == 0 and tally.rejected_at_submit == 0, (
        f"the broker's death failed or refused tasks\n{tally.render()}\n{diagnostics(stack, ['coordinator'])}"
    )
    assert tally.accepted - before > 0, (
        f"nothing was accepted after the restart\n{tally.render()}\n{diagnostics(stack)}"
    )

    async def unhealthy() -> list[str]:
        down = []
        async with httpx.AsyncClient(timeout=2) as client:
            for name, url in (
                ("taskstore", stack.taskstore_url),
                ("registry", stack.registry_url),
                ("coordinator", stack.coordinator_url),
            ):
                try:
                    response = await client.get(f"{url}/healthz")
                    if response.status_code != 200:
                        down.append(f"{name}: {response.status_code} {response.text[:120]}")
                except httpx.HTTPError as error:
                    down.append(f"{name}: {error!r}")
        return down

    still_down = await unhealthy()
    deadline = time.monotonic() + 20
    while still_down and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        still_down = await unhealthy()
    assert not still_down, f"services not healthy after the broker came back: {still_down}\n{diagnostics(stack)}"

    probe = await Load(stack, 30, label="after-broker", metadata={"skill": "echo", "delayMs": DELAY_MS}).run()
    probed = await await_terminal(stack, probe.task_ids, timeout=30)
    after = Tally.of("after the broker restart", [probe], probed)
    after.report()
    assert after.completed == after.accepted == probe.total, f"{after.render()}\n{diagnostics(stack)}"
