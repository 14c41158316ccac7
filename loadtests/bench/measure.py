"""Measured scenarios: warm up, then run each closed loop while reading the CPU and memory of the processes on its
path, and wait for them to go quiet so that work finishing after the last reply is counted too."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

from a2amesh.runtime import run_on_service_loop
from loadtests.bench.drivers import Call, LoadResult, closed_loop
from loadtests.bench.procstat import RssSampler, cpu_delta, cpu_snapshot, machine_busy_seconds

ClientFactory = Callable[[], AbstractAsyncContextManager[Call]]

QUIET_CPU = 0.02
"""CPU seconds per half second under which the processes of a scenario count as idle again."""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


@dataclass
class ScenarioResult:
    """The figures of one scenario."""

    key: str
    label: str
    path: str
    messages: str
    concurrency: int
    completed: int
    errors: int
    seconds: float
    tasks_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_s: dict[str, float]
    client_cpu_s: float
    rss_peak_mb: dict[str, float]
    other_load_cores: float = 0.0
    """Cores' worth of CPU that other processes of the machine used meanwhile (a shared machine's noise)."""
    rounds_tasks_per_s: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def service_cpu_ms_per_task(self) -> float:
        return 1000 * sum(self.cpu_s.values()) / self.completed if self.completed else 0.0

    @property
    def client_cpu_ms_per_task(self) -> float:
        return 1000 * self.client_cpu_s / self.completed if self.completed else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "service_cpu_ms_per_task": round(self.service_cpu_ms_per_task, 3),
            "client_cpu_ms_per_task": round(self.client_cpu_ms_per_task, 3),
        }


async def _quiesce(pids: Mapping[str, int], limit: float = 15.0) -> None:
    """Wait (bounded) until the processes use almost no CPU: queued work (the task store's backlog) is done."""
    deadline = time.monotonic() + limit
    previous = sum(cpu_snapshot(pids).values())
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        current = sum(cpu_snapshot(pids).values())
        if current - previous < QUIET_CPU:
            return
        previous = current


def wait_quiet(pids: Mapping[str, int], limit: float, quiet_for: float = 2.0) -> bool:
    """Block until the processes stay quiet for `quiet_for` seconds (bounded by `limit`): work left over from
    before a scenario, such as a backlog a process works through once a second, is not counted in it. Whether they
    did go quiet (False: `limit` ran out first)."""

    async def wait() -> bool:
        deadline = time.monotonic() + limit
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() - quiet_since >= quiet_for:
                return True
            before = sum(cpu_snapshot(pids).values())
            await asyncio.sleep(0.5)
            if sum(cpu_snapshot(pids).values()) - before >= QUIET_CPU:
                quiet_since = time.monotonic()
        return time.monotonic() - quiet_since >= quiet_for

    return run_on_service_loop(wait())


@dataclass
class _Round:
    load: LoadResult
    cpu: dict[str, float]
    client_cpu: float
    peak: dict[str, float]
    other_cores: float


async def _round(call: Call, pids: Mapping[str, int], tasks: int, concurrency: int, max_seconds: float) -> _Round:
    """One measured closed loop, with the CPU of the path, of the client, and of everything else on the machine."""
    before, machine_before = cpu_snapshot(pids), machine_busy_seconds()
    client_before, wall_before = time.process_time(), time.perf_counter()
    with RssSampler(pids) as sampler:
        load = await closed_loop(call, tasks=tasks, concurrency=concurrency, max_seconds=max_seconds)
        client_cpu = time.process_time() - client_before
        await _quiesce(pids)
    cpu = cpu_delta(before, cpu_snapshot(pids))
    wall = time.perf_counter() - wall_before
    others = machine_busy_seconds() - machine_before - sum(cpu.values()) - (time.process_time() - client_before)
    return _Round(load, cpu, client_cpu, sampler.peak, max(others, 0.0) / wall if wall else 0.0)


@dataclass(frozen=True)
class Scenario:
    """What to measure: a client to drive, and the processes on its path."""

    key: str
    label: str
    path: str
    messages: str
    pids: Mapping[str, int]
    client: ClientFactory
    tasks: int
    concurrency: int


def measure_together(
    scenarios: Sequence[Scenario], *, max_seconds: float, warmup: int, rounds: int = 1
) -> list[ScenarioResult]:
    """Run scenarios in one event loop with their rounds interleaved (A, B, A, B...) after a warm-up each; the
    fastest round of each is kept (other load on a shared machine only ever slows a run down). Interleaving lets
    scenarios that are compared with each other see the same spells of a shared machine's speed, instead of one
    of them falling whole into a slow one."""

    async def run() -> list[list[_Round]]:
        async with contextlib.AsyncExitStack() as stack:
            calls = [await stack.enter_async_context(scenario.client()) for scenario in scenarios]
            for scenario, call in zip(scenarios, calls, strict=True):
                if warmup:
                    await closed_loop(call, tasks=warmup, concurrency=scenario.concurrency, max_seconds=max_seconds)
            measured: list[list[_Round]] = [[] for _ in scenarios]
            # every scenario's processes, not only the next one's: what one scenario's round left running (a
            # backlog) must not fall into another's
            everyone = {f"{i}/{name}": pid for i, s in enumerate(scenarios) for name, pid in s.pids.items()}
            for _ in range(max(1, rounds)):
                for scenario, call, done in zip(scenarios, calls, measured, strict=True):
                    await _quiesce(everyone, limit=5.0)
                    done.append(await _round(call, scenario.pids, scenario.tasks, scenario.concurrency, max_seconds))
            return measured

    return [
        _result(scenario, measured) for scenario, measured in zip(scenarios, run_on_service_loop(run()), strict=True)
    ]


def _result(scenario: Scenario, measured: list[_Round]) -> ScenarioResult:
    best = max(measured, key=lambda r: r.load.tasks_per_second)
    result, latencies = best.load, best.load.latencies_ms
    return ScenarioResult(
        key=scenario.key,
        label=scenario.label,
        path=scenario.path,
        messages=scenario.messages,
        concurrency=scenario.concurrency,
        completed=result.completed,
        errors=sum(r.load.errors for r in measured),
        seconds=round(result.seconds, 3),
        tasks_per_s=round(result.tasks_per_second, 1),
        p50_ms=round(percentile(latencies, 0.50), 2),
        p95_ms=round(percentile(latencies, 0.95), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        cpu_s={name: round(seconds, 3) for name, seconds in best.cpu.items()},
        client_cpu_s=round(best.client_cpu, 3),
        rss_peak_mb={name: round(max(r.peak.get(name, 0.0) for r in measured), 1) for name in scenario.pids},
        other_load_cores=round(best.other_cores, 2),
        rounds_tasks_per_s=[round(r.load.tasks_per_second, 1) for r in measured],
        error_samples=[sample for r in measured for sample in r.load.error_samples][:5],
    )
