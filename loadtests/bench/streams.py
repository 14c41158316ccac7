"""Open streams (`make bench-scale`, BENCH_SCALE_PARTS=streams for this part alone): what each task in flight costs
in memory, at 1,000 and 10,000 of them at once.

Each size runs on a fresh mesh (broker, Redis, registry, coordinator, task store on SQLite, and the hold agent of
loadtests.bench.hold_agent). The benchmark opens N SendStreamingMessage streams through the coordinator's HTTP face
(SSE, one TCP connection each, as N separate clients would), each to the `hold` skill, which keeps its task WORKING.
Once every stream has seen its task held (or the ramp's time is up) it samples the RSS of the coordinator, the
agent, the broker and the task store for PLATEAU_SECONDS (more than one keepalive period of the agent), releases
every task at once (SIGUSR1 to the agent), and waits for each stream to end COMPLETED. Memory per in-flight task is
(peak RSS while held - idle RSS before) / tasks held, per process.

10,000 HTTP streams need 10,000 sockets in this process and 10,000 in the coordinator: the soft limit of open files
is raised to the hard one here (children inherit it), and a size the hard limit cannot hold is skipped with the
reason in the report rather than measured half-way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from devstack.pki import Identity, Role
from loadtests.a2a import (
    A2A_HEADERS,
    COMPLETED,
    RpcError,
    ends_stream,
    rpc,
    send_params,
    stream_state,
)
from loadtests.bench.drivers import stream_results
from loadtests.bench.hold_agent import HOLD_SKILL
from loadtests.bench.procs import SETTLE_SECONDS, BenchStack, settle
from loadtests.bench.procstat import rss_of
from loadtests.bench.settings import BenchSettings

log = logging.getLogger("loadtests.bench.streams")

STREAM_SIZES = (1_000, 10_000)
HOLD_AGENT = "hold"
MEASURED = ("coordinator", HOLD_AGENT, "broker", "taskstore")
"""The processes whose memory grows with tasks in flight (the registry and Redis are not on a task's path once the
coordinator knows the agent, and are left out of the table)."""
WORKING = "TASK_STATE_WORKING"
FD_HEADROOM = 512
"""Descriptors each process keeps beyond one per stream (logs, the broker link, the store, the event loop)."""
OPENING_AT_ONCE = 64
"""Streams opened and not yet held at any moment: a bounded ramp, so the coordinator's accept backlog and the
agent's queue are never what limits the count."""
STREAMS_PER_CLIENT = 250
"""Streams per httpx client: its connection pool looks through every connection it holds on each request."""
RAMP_SECONDS_PER_1000 = 60.0
"""Time allowed to get each thousand streams held (at least RAMP_MIN_SECONDS); what is held by then is measured."""
RAMP_MIN_SECONDS = 30.0
PLATEAU_SECONDS = 12.0
SAMPLE_INTERVAL = 0.5
RELEASE_SECONDS = 180.0
HOLD_SECONDS = 600.0
"""How long the agent holds a task if it is never released (the measurement releases them well before)."""
STREAM_READ_TIMEOUT = 120.0
"""Longest silence on a held stream (the agent re-sends its status every 10 s)."""


@dataclass
class StreamCount:
    """What the streams of one size did."""

    opened: int = 0
    held: int = 0
    ended_unheld: int = 0
    """Streams that ended (an error, most likely) before their task was held."""
    completed: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(error).__name__}: {error}"[:300])


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (its children inherit it); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def unmeasurable(size: int, open_files: int) -> str | None:
    """Why `size` HTTP streams cannot be held here, or None."""
    if open_files != resource.RLIM_INFINITY and size + FD_HEADROOM > open_files:
        return (
            f"needs {size + FD_HEADROOM} open files in this process and in the coordinator (one socket per stream); "
            f"the limit here is {open_files} (raise the hard limit: ulimit -Hn)"
        )
    return None


async def _one_stream(client: httpx.AsyncClient, headers: dict[str, str], held: asyncio.Event) -> str | None:
    """Open one stream to the hold skill; set `held` at its first WORKING status; its final state."""
    body = rpc("SendStreamingMessage", send_params("hold this", skill=HOLD_SKILL, holdSeconds=HOLD_SECONDS))
    async with contextlib.aclosing(stream_results(client, body, headers)) as results:
        async for result in results:
            if stream_state(result) == WORKING:
                held.set()
            if ends_stream(result):
                return stream_state(result)
    raise RpcError("stream closed before the task ended")


@dataclass(frozen=True)
class StreamTiming:
    """How long each phase may last (smaller in the suite's run at a tiny size)."""

    plateau_s: float = PLATEAU_SECONDS
    release_s: float = RELEASE_SECONDS
    settle_s: float = SETTLE_SECONDS


async def hold_streams(
    url: str, api_key: str, size: int, hold_pid: int, pids: dict[str, int], timing: StreamTiming
) -> tuple[StreamCount, dict[str, Any]]:
    """Hold `size` streams open, sample memory at the plateau, release them, and wait for them to end."""
    count = StreamCount()
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    all_held = asyncio.Event()
    headers = {**A2A_HEADERS, "Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"}
    timeout = httpx.Timeout(60.0, read=STREAM_READ_TIMEOUT)
    per_client = min(size, STREAMS_PER_CLIENT)
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=0)
    clients = [httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) for _ in range(-(-size // per_client))]
    figures: dict[str, Any] = {}

    async def stream(index: int) -> None:
        held = asyncio.Event()
        await opening.acquire()
        count.opened += 1
        runner = asyncio.create_task(_one_stream(clients[index // per_client], headers, held))
        waiter = asyncio.create_task(held.wait())
        try:
            await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opening.release()
            waiter.cancel()
            if held.is_set():
                count.held += 1
            else:
                count.ended_unheld += 1
            if count.held + count.ended_unheld >= size:
                all_held.set()
        try:
            state = await runner
        except Exception as error:  # counted and sampled; the measurement goes on
            count.failed(error)
        else:
            if state == COMPLETED:
                count.completed += 1
            else:
                count.failed(RpcError(f"task ended {state}"))

    started = time.monotonic()
    ramp_seconds = max(RAMP_MIN_SECONDS, RAMP_SECONDS_PER_1000 * size / 1000)
    streams = [asyncio.create_task(stream(index)) for index in range(size)]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_held.wait(), timeout=ramp_seconds)
        figures["ramp_s"] = round(time.monotonic() - started, 1)
        figures["held"] = count.held
        log.info("%d of %d streams held after %.1f s (%d errors)", count.held, size, figures["ramp_s"], count.errors)
        figures["plateau_rss_mb"] = await _peak_rss(pids, timing.plateau_s)
        figures["ended_while_held"] = count.completed + count.errors - count.ended_unheld  # should be none
        os.kill(hold_pid, signal.SIGUSR1)
        released = time.monotonic()
        _, pending = await asyncio.wait(streams, timeout=timing.release_s)
        figures["release_s"] = round(time.monotonic() - released, 1)
        for task in pending:
            task.cancel()
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
    return count, figures


async def _peak_rss(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's highest RSS (MiB) over `seconds`, sampled every SAMPLE_INTERVAL."""
    peak: dict[str, float] = dict.fromkeys(pids, 0.0)
    deadline = time.monotonic() + seconds
    while True:
        for name, megabytes in rss_of(pids).items():
            peak[name] = max(peak[name], megabytes)
        if time.monotonic() >= deadline:
            return {name: round(mb, 1) for name, mb in peak.items()}
        await asyncio.sleep(SAMPLE_INTERVAL)


def start_hold_agent(procs: BenchStack, size: int) -> int:
    """The hold agent, admitted as an agent of the mesh, taking `size` tasks at once; its pid."""
    stack = procs.stack
    env = {"MESH_AGENT_ID": HOLD_AGENT, "MESH_MAX_CONCURRENT": str(size), "MESH_HTTP_PORT": "0"}
    process = stack.command(
        HOLD_AGENT,
        [sys.executable, "-m", "loadtests.bench.hold_agent"],
        env,
        stack.agent_online(HOLD_AGENT),
        Identity(HOLD_AGENT, Role.AGENT),
    )
    return procs.launch(process).pid


def stream_row(
    settings: BenchSettings, size: int, open_files: int, timing: StreamTiming | None = None
) -> dict[str, Any]:
    """One size, on a mesh of its own: memory before, while `size` tasks are held, and after they end."""
    reason = unmeasurable(size, open_files)
    if reason is not None:
        log.warning("open streams %d: not measured: %s", size, reason)
        return {"streams": size, "not_measured": reason}
    timing = timing or StreamTiming()
    procs = BenchStack(replace(settings, report_dir=settings.report_dir / f"streams-{size}"))
    try:
        procs.start_core()
        procs.start_taskstore()
        hold_pid = start_hold_agent(procs, size)
        procs.stop("echo")  # not on this path
        pids = procs.pids(*MEASURED)
        settle(timing.settle_s)
        before = {name: round(mb, 1) for name, mb in rss_of(pids).items()}
        count, figures = asyncio.run(
            hold_streams(procs.coordinator_url, procs.stack.api_key, size, hold_pid, pids, timing)
        )
        settle(timing.settle_s)
        after = {name: round(mb, 1) for name, mb in rss_of(pids).items()}
    finally:
        procs.stop_all()
    plateau, held = figures.get("plateau_rss_mb", {}), figures.get("held", 0)
    per_task_kb = {
        name: round((plateau.get(name, 0.0) - before[name]) * 1024 / held, 1) if held else None for name in before
    }
    row = {
        "streams": size,
        "held": held,
        "completed": count.completed,
        "errors": count.errors,
        "error_samples": count.error_samples,
        "ramp_s": figures.get("ramp_s"),
        "release_s": figures.get("release_s"),
        "ended_while_held": figures.get("ended_while_held"),
        "idle_rss_mb": before,
        "plateau_rss_mb": plateau,
        "after_rss_mb": after,
        "kb_per_task": per_task_kb,
        "kb_per_task_total": round(sum(kb for kb in per_task_kb.values() if kb is not None), 1) if held else None,
    }
    log.info("open streams %d: %s", size, row)
    return row


def stream_rows(settings: BenchSettings, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    open_files = raise_open_files_limit()
    return [stream_row(settings, size, open_files) for size in sizes]


def render_streams(rows: list[dict[str, Any]]) -> list[str]:
    """The open streams table (Markdown lines)."""
    lines = [
        "## Open streams (SendStreamingMessage through the HTTP face, each task held WORKING by the agent)",
        "",
        "| tasks in flight | held / completed / errors | ramp s | "
        + " | ".join(f"{name} MB idle → held (KB/task)" for name in MEASURED)
        + " | KB per task (sum) |",
        "|---|---|---|" + "---|" * len(MEASURED) + "---|",
    ]
    for row in rows:
        if "not_measured" in row:
            lines.append(f"| {row['streams']:,} | not measured: {row['not_measured']} |" + " |" * (len(MEASURED) + 2))
            continue
        cells = [
            f"{row['idle_rss_mb'].get(name, 0.0)} → {row['plateau_rss_mb'].get(name, 0.0)} "
            f"({row['kb_per_task'].get(name)})"
            for name in MEASURED
        ]
        lines.append(
            f"| {row['streams']:,} | {row['held']:,} / {row['completed']:,} / {row['errors']} | {row['ramp_s']} | "
            + " | ".join(cells)
            + f" | {row['kb_per_task_total']} |"
        )
    return [*lines, ""]
