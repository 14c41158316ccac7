"""`make bench-scale`'s coordinators table: the HTTP face's tasks/s, CPU and memory with one coordinator and with
two replicas of it (issue #18 item 3), each on a stack of its own. The benchmark sends its tasks to the replicas in
turn, as a load balancer in front of them would; both reach the one echo agent through the one broker."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

from loadtests.a2a import filler_text
from loadtests.bench.drivers import Call, http_client
from loadtests.bench.envs import ServiceEnvs
from loadtests.bench.measure import Scenario, measure_together
from loadtests.bench.procs import BenchStack, settle
from loadtests.bench.procstat import rss_of
from loadtests.bench.settings import BenchSettings

log = logging.getLogger("loadtests.bench.coordinators")

COORDINATOR_COUNTS = (1, 2)
PATH = ("echo", "broker", "registry", "redis")
"""The processes on the HTTP face's path besides the coordinators (no task store, as in `make bench`'s http-face)."""


@contextlib.asynccontextmanager
async def round_robin(
    urls: list[str], text: str, concurrency: int, api_key: str, *, streaming: bool
) -> AsyncIterator[Call]:
    """One call that sends each task to the next coordinator in turn (an HTTP client of each)."""
    async with contextlib.AsyncExitStack() as stack:
        calls = [
            await stack.enter_async_context(
                http_client(url, text, concurrency, streaming=streaming, api_key=api_key, skill="echo")
            )
            for url in urls
        ]
        turn = itertools.cycle(calls)

        async def call() -> None:
            await next(turn)()

        yield call


def coordinator_rows(settings: BenchSettings, counts: tuple[int, ...] = COORDINATOR_COUNTS) -> list[dict[str, Any]]:
    """At each count: tasks/s and p50 through the replicas in turn, each coordinator's and Redis's share of the CPU
    per task (replicas share their rate limits through Redis; one coordinator keeps them in memory), and each
    coordinator's idle and peak memory."""
    text = filler_text(settings.payload_bytes)
    envs = ServiceEnvs(settings.report_dir / "envs")  # built once, for every count's stack
    rows = []
    for count in counts:
        procs = BenchStack(settings, run=f"run-{count}", envs=envs)
        try:
            procs.start_core(coordinators=count)
            settle()
            names, urls, key = list(procs.coordinators), list(procs.coordinators.values()), procs.stack.api_key
            idle = rss_of(procs.pids(*names))
            scenario = Scenario(
                f"coordinators-{count}",
                f"HTTP face through {count} coordinator(s) in turn -> echo agent",
                path="bench (HTTP, replicas in turn) -> coordinators -> registry lookup -> broker -> echo",
                messages="as http-face",
                pids=procs.pids(*names, *PATH),
                client=lambda urls=urls, key=key: round_robin(
                    urls, text, settings.concurrency, key, streaming=settings.http_streaming
                ),
                tasks=settings.tasks,
                concurrency=settings.concurrency,
            )
            [result] = measure_together(
                [scenario], max_seconds=settings.max_seconds, warmup=settings.warmup, rounds=settings.rounds
            )
        finally:
            procs.stop_all()
        per_task = {name: round(1000 * seconds / max(result.completed, 1), 2) for name, seconds in result.cpu_s.items()}
        rows.append(
            {
                "coordinators": count,
                "tasks_per_s": result.tasks_per_s,
                "p50_ms": result.p50_ms,
                "completed": result.completed,
                "errors": result.errors,
                "error_samples": result.error_samples,
                "coordinator_cpu_ms_per_task": {name: per_task.get(name, 0.0) for name in names},
                "redis_cpu_ms_per_task": per_task.get("redis", 0.0),
                "service_cpu_ms_per_task": round(result.service_cpu_ms_per_task, 2),
                "coordinators_idle_rss_mb": {name: round(idle.get(name, 0.0), 1) for name in names},
                "coordinators_peak_rss_mb": {name: result.rss_peak_mb.get(name, 0.0) for name in names},
            }
        )
        log.info("coordinators %d: %s", count, rows[-1])
    return rows


def render_coordinators(rows: list[dict[str, Any]]) -> list[str]:
    """The table (docs/benchmarks.md reads it)."""
    lines = [
        "## Coordinators (HTTP face as in `make bench`, the replicas in turn; no task store)",
        "",
        "| coordinators | tasks/s | p50 ms | errors | CPU ms/task: each coordinator | Redis | all services |"
        " idle / peak RSS MB: each coordinator |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shares = ", ".join(f"{name} {ms}" for name, ms in r["coordinator_cpu_ms_per_task"].items())
        idle, peak = r["coordinators_idle_rss_mb"], r["coordinators_peak_rss_mb"]
        memory = ", ".join(f"{name} {idle[name]} / {peak[name]}" for name in idle)
        lines.append(
            f"| {r['coordinators']} | {r['tasks_per_s']} | {r['p50_ms']} | {r['errors']} | {shares} | "
            f"{r['redis_cpu_ms_per_task']} | {r['service_cpu_ms_per_task']} | {memory} |"
        )
    return [*lines, ""]
