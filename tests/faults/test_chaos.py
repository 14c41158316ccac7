"""Chaos: a bounded, paced load runs while a seeded random schedule kills and restarts, one at a time, pooled agent
replicas (SIGKILL, or SIGTERM), the broker, the task store, Redis and the coordinator. Then the tally: every
accepted task completed (failed = 0, lost = 0); requests sent while the coordinator itself was down are refused
at its door (a transport error), and nothing else is.

`make chaos` runs a longer schedule (CHAOS_SECONDS, CHAOS_SEED); `make test` runs this short one."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from devstack.stack import Stack
from tests.faults.harness import Load, Tally, await_terminal, blocking, diagnostics, start_stack

REPLICAS = ("echo-c1", "echo-c2", "echo-c3")
POOL = "echo-chaos"
SECONDS = float(os.environ.get("CHAOS_SECONDS", "50"))
"""How long the load (and the fault schedule) runs."""
SEED = int(os.environ.get("CHAOS_SEED", "13"))
RATE = 8.0
"""Tasks a second: modest, so the shared machine's load is not what is measured."""
SETTLE = (4.0, 6.0)
"""Seconds between the end of one fault and the next (random within): time for the mesh to pick tasks up again."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mesh = start_stack(tmp_path_factory.mktemp("fault-chaos"), {name: {"MESH_POOL": POOL} for name in REPLICAS})
    yield mesh
    mesh.stop()


def kill_and_start(name: str) -> Callable[[Stack], None]:
    """SIGKILL a process, leave it dead a moment, start it again and wait until it is ready."""

    def fault(stack: Stack) -> None:
        process = stack[name]
        process.kill()
        time.sleep(1.0)
        process.start()
        process.wait_ready(45)

    return fault


def stop_and_start(name: str) -> Callable[[Stack], None]:
    """SIGTERM a process (a graceful stop: drain, hand over), start it again and wait until it is ready."""

    def fault(stack: Stack) -> None:
        process = stack[name]
        process.stop(timeout=30)
        process.start()
        process.wait_ready(45)

    return fault


def faults() -> dict[str, Callable[[Stack], None]]:
    """Every fault the schedule draws from, by a name for the tally."""
    chosen: dict[str, Callable[[Stack], None]] = {}
    for replica in REPLICAS:
        chosen[f"SIGKILL {replica}"] = kill_and_start(replica)
        chosen[f"SIGTERM {replica}"] = stop_and_start(replica)
    chosen["SIGKILL broker"] = kill_and_start("broker")
    chosen["SIGKILL taskstore"] = kill_and_start("taskstore")
    chosen["restart redis"] = stop_and_start("redis")
    chosen["SIGTERM coordinator"] = stop_and_start("coordinator")
    return chosen


async def inject(stack: Stack, load_task: asyncio.Task[Load], rng: random.Random) -> list[str]:
    """Draw and inject faults, one at a time, until the load is done; the names, in order."""
    menu = faults()
    # every kind at least once when the run is long enough for it, the rest drawn at random
    kinds = ["SIGKILL broker", "SIGKILL taskstore", "restart redis", "SIGTERM coordinator"]
    order = [rng.choice(sorted(name for name in menu if "echo" in name)), *rng.sample(kinds, len(kinds))]
    done: list[str] = []
    deadline = time.monotonic() + SECONDS
    await asyncio.sleep(rng.uniform(*SETTLE) / 2)
    while not load_task.done() and time.monotonic() < deadline:
        name = order[len(done)] if len(done) < len(order) else rng.choice(sorted(menu))
        await blocking(menu[name], stack)
        done.append(name)
        await asyncio.sleep(rng.uniform(*SETTLE))
    return done


@pytest.mark.timeout(int(SECONDS) + 360)
async def test_chaos_loses_and_fails_nothing(stack: Stack) -> None:
    rng = random.Random(SEED)
    load = Load(stack, int(SECONDS * RATE), label="chaos", metadata={"skill": "echo", "delayMs": 200}, rate=RATE)
    running = load.start()
    injected = await inject(stack, running, rng)
    await asyncio.wait_for(running, timeout=SECONDS + 120)
    stored = await await_terminal(stack, load.task_ids, timeout=120)

    tally = Tally.of(f"chaos (seed {SEED}, {SECONDS:.0f}s)", [load], stored)
    door_closed = [item for item in load.refused if item.error.startswith("transport")]
    tally.notes.update(
        {
            "faults, in order": injected,
            "fault kinds": dict(
                Counter(name.split(" echo-")[0] + (" replica" if " echo-" in name else "") for name in injected)
            ),
            "refused while the coordinator was down (transport)": len(door_closed),
        }
    )
    tally.report()
    context = f"{tally.render()}\n{diagnostics(stack, ['coordinator', *REPLICAS])}"
    tally.assert_nothing_lost(stack)
    assert len(injected) >= 2, f"the schedule injected too little to prove anything\n{context}"
    assert tally.failed_with_reason == 0, context
    assert len(load.refused) == len(door_closed), f"refusals other than a closed door\n{context}"
    assert tally.completed == tally.accepted > 0, context
