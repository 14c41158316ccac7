"""Graceful shutdown: an agent SIGTERMed while a task runs finishes it when it can within its 10 s grace, or ends
it FAILED with the reason when it cannot; either way it exits 0 and leaves its retained card offline/agent. Then
every service of the stack exits 0 on SIGTERM, and a task still running at that moment is finished and recorded.
First, a service that cannot bind its HTTP port stops in order and exits 1: no hang, no crash."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from collections.abc import Iterator

import pytest

from devstack.processes import ManagedProcess, free_port
from devstack.stack import Stack
from tests.conftest import eventually
from tests.faults.harness import (
    COMPLETED,
    FAILED,
    TERMINAL,
    WORKING,
    Load,
    Tally,
    await_terminal,
    blocking,
    diagnostics,
    reason_of,
    registry_agents,
    start_stack,
    state_of,
)

FINISHER, QUITTER, LAST = "echo-a", "echo-b", "echo-c"
SHORT_MS = 3_000
"""Shorter than the agent's 10 s shutdown grace: finished."""
LONG_MS = 40_000
"""Longer than the grace: ended FAILED with the reason."""
PATIENT = {"MESH_STREAM_IDLE_TIMEOUT": "60"}
"""The coordinator must not end the silent long task itself before the agent does (see test_coordinator_restart)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mesh = start_stack(tmp_path_factory.mktemp("fault-sigterm"), {n: {} for n in (FINISHER, QUITTER, LAST)}, PATIENT)
    yield mesh
    mesh.stop()


@pytest.mark.timeout(120)
async def test_a_service_whose_port_is_taken_stops_in_order_and_exits_1(stack: Stack) -> None:
    """uvicorn ends a process with sys.exit(1) when its port is taken. A coordinator once kept running headless
    after that, and another died of SIGSEGV in the event loop's teardown; each service must log why and exit 1.
    The coordinator's gRPC port is bound before anything runs, so a taken one ends it at once with the reason."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = str(taken.getsockname()[1])
        coordinator = stack.coordinator_replica(1, int(port), free_port())
        agent = stack.agent("echo-portless", "agent_echo", MESH_HTTP_PORT=port)
        grpc_less = stack.coordinator_replica(2, free_port(), int(port))
        doomed: list[ManagedProcess] = [coordinator, agent, grpc_less]
        try:
            for process in doomed:
                process.start()
            codes = await asyncio.gather(*(blocking(process.wait, 45) for process in doomed))
        finally:
            for process in doomed:
                process.kill()
    logs = "\n".join(f"== {process.name}\n{process.log_tail()}" for process in doomed)
    assert codes == [1, 1, 1], logs
    for process in (coordinator, agent):
        assert f"HTTP server on port {port} stopped unexpectedly" in process.log_tail(400), logs
    assert f"gRPC cannot listen on 127.0.0.1:{port}" in grpc_less.log_tail(400), logs


async def started_task(stack: Stack, agent: str, delay_ms: int) -> tuple[Load, str]:
    """A task pinned to `agent`, once the store shows it WORKING."""
    load = await Load(stack, 1, label=f"to-{agent}", metadata={"agent": agent, "delayMs": delay_ms}, rate=None).run()
    assert load.accepted, load.refused
    task_id = load.task_ids[0]

    async def working() -> bool:
        stored = await await_terminal(stack, [task_id], timeout=0)
        return state_of(stored[task_id]) == WORKING

    await eventually(working, 15, f"task on {agent} WORKING in the store", poll=0.2)
    return load, task_id


def stop(stack: Stack, name: str) -> tuple[int | None, float]:
    """SIGTERM one process (SIGKILL only past 30 s); its exit code and how long it took."""
    began = time.monotonic()
    code = stack[name].stop(timeout=30)
    return code, time.monotonic() - began


@pytest.mark.timeout(180)
async def test_sigterm_finishes_or_fails_work_publishes_offline_and_exits_0(stack: Stack) -> None:
    short_load, short_task = await started_task(stack, FINISHER, SHORT_MS)
    long_load, long_task = await started_task(stack, QUITTER, LONG_MS)
    (short_code, short_took), (long_code, long_took) = await asyncio.gather(
        blocking(stop, stack, FINISHER), blocking(stop, stack, QUITTER)
    )
    stored = await await_terminal(stack, [short_task, long_task], timeout=20)

    async def both_offline() -> dict[str, tuple[str, str]] | None:
        records = await registry_agents(stack)
        seen = {name: (records[name]["status"], records[name]["statusSource"]) for name in (FINISHER, QUITTER)}
        return seen if all(value == ("offline", "agent") for value in seen.values()) else None

    try:
        presence = await eventually(both_offline, 10, "both agents offline/agent in the registry", poll=0.2)
    except AssertionError as error:
        presence = str(error)

    # the whole stack, with one more task in flight on the last agent
    last_load, last_task = await started_task(stack, LAST, SHORT_MS)
    codes = await blocking(stack.stop)
    final = _stored_after_stop(stack, last_task)

    tally = Tally.of("SIGTERM", [short_load, long_load, last_load], {**stored, last_task: final})
    tally.notes.update(
        {
            f"{FINISHER} ({SHORT_MS} ms task)": f"exit {short_code} after {short_took:.1f}s, task "
            f"{state_of(stored[short_task])}",
            f"{QUITTER} ({LONG_MS} ms task)": f"exit {long_code} after {long_took:.1f}s, task "
            f"{state_of(stored[long_task])}: {reason_of(stored[long_task])!r}",
            "registry presence after the stop": presence,
            "whole-stack stop exit codes": codes,
            f"task in flight on {LAST} at the stack stop": f"{state_of(final)} in the database",
        }
    )
    tally.report()
    context = f"{tally.render()}\n{diagnostics(stack)}"
    tally.assert_nothing_lost()
    assert short_code == 0 and long_code == 0, context
    assert state_of(stored[short_task]) == COMPLETED, context
    assert state_of(stored[long_task]) == FAILED and reason_of(stored[long_task]), context
    assert isinstance(presence, dict), context
    assert all(code == 0 for code in codes.values()), f"non-zero exits on SIGTERM: {codes}\n{context}"
    assert state_of(final) in TERMINAL, context


def _stored_after_stop(stack: Stack, task_id: str) -> dict | None:
    """The task as the (stopped) task store left it in its database."""
    with sqlite3.connect(stack.run_dir / "taskstore.db") as db:
        row = db.execute("select snapshot from task_record where task_id = ?", (task_id,)).fetchone()
    return json.loads(row[0]) if row else None
