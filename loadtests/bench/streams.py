"""Open streams (`make bench-scale`, BENCH_SCALE_PARTS=streams for this part alone): what each task in flight costs
in memory, at 1,000 and 10,000 of them at once.

Each size runs on a fresh mesh (broker, Redis, registry, coordinator, task store on SQLite, and the hold agent of
loadtests.bench.hold_agent). The benchmark opens N SendStreamingMessage streams through the coordinator's HTTP face
(SSE, one TCP connection each, as N separate clients would), each to the `hold` skill, which keeps its task WORKING,
at a bounded pace (OPENING_PER_SECOND, at most OPENING_AT_ONCE opening at a time). Once every stream has seen its
task held (or the ramp's time is up) it samples the RSS of the coordinator, the agent, the broker and the task store
for PLATEAU_SECONDS (more than one keepalive period of the agent), releases every task at once (SIGUSR1 to the
agent), and waits for each stream to end COMPLETED. Memory per in-flight task is (peak RSS while held - idle RSS
before) / tasks held, per process. A size whose streams were not all held is reported as not reached, with what
was held and the errors seen, never as measured.

Held streams cost CPU even while nothing happens: each task's keepalive every KEEPALIVE_INTERVAL, relayed by the
coordinator, beside the streams still opening. On a busy 2-core machine the coordinator's relays lapsed at about
5,600 with the mesh's defaults (10 s keepalives, 30 s stream idle timeout), so this measurement runs the hold agent
and the coordinator with timeouts that fit a starved CPU (KEEPALIVE_INTERVAL, STREAM_IDLE_TIMEOUT,
FIRST_REPLY_TIMEOUT), and opens the streams at a pace rather than as fast as the coordinator takes them.

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
OPENING_PER_SECOND = 40.0
"""Streams opened per second at most (10,000 in about 250 s). Opening as fast as the coordinator accepted (30-60 a
second on the shared machine) left the streams already held without the CPU their keepalives needed."""
KEEPALIVE_INTERVAL = 30.0
"""The hold agent's keepalive period here (the mesh's default is 10 s): 10,000 held tasks are 333 keepalives a
second for the coordinator to read instead of 1,000."""
STREAM_IDLE_TIMEOUT = 120.0
"""The coordinator's longest silence in a stream here (default 30 s): four keepalive periods, so a relay lapses
only if four keepalives in a row are late, not one round delayed by a starved CPU."""
FIRST_REPLY_TIMEOUT = 60.0
"""The coordinator's wait for an agent's first reply here (default 15 s), for the same reason."""
STREAMS_PER_CLIENT = 250
"""Streams per httpx client: its connection pool looks through every connection it holds on each request."""
RAMP_SLACK = 2.0
"""The ramp may take this many times its paced length (at least RAMP_MIN_SECONDS); what is held by then is measured
and the size reported as not reached."""
RAMP_MIN_SECONDS = 30.0
PLATEAU_SECONDS = 12.0
SAMPLE_INTERVAL = 0.5
RELEASE_SECONDS = 180.0
HOLD_SECONDS = 600.0
"""How long the agent holds a task if it is never released (the measurement releases them well before)."""
STREAM_READ_TIMEOUT = 120.0
"""Longest silence on a held stream (the coordinator sends an SSE ping after 15 s without an event)."""


@dataclass
class StreamCount:
    """What the streams of one size did."""

    opened: int = 0
    held: int = 0
    ended_unheld: int = 0
    """Streams that ended (an error, most likely) before their task was held."""
    not_opened: int = 0
    """Streams whose turn to open came after the ramp's time was up (not opened: the plateau is measured without
    streams still arriving)."""
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
    opening_per_second: float = OPENING_PER_SECOND
    ramp_cap_s: float | None = None
    """At most this long for the ramp, whatever the size (the suite's check of a size not reached)."""

    def ramp_s(self, size: int) -> float:
        """How long `size` streams may take to be held."""
        allowed = max(RAMP_MIN_SECONDS, RAMP_SLACK * size / self.opening_per_second)
        return allowed if self.ramp_cap_s is None else min(allowed, self.ramp_cap_s)


async def hold_streams(
    url: str, api_key: str, size: int, hold_pid: int, pids: dict[str, int], timing: StreamTiming
) -> tuple[StreamCount, dict[str, Any]]:
    """Hold `size` streams open, sample memory at the plateau, release them, and wait for them to end."""
    count = StreamCount()
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    all_held = asyncio.Event()
    ramp_over = asyncio.Event()
    headers = {**A2A_HEADERS, "Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"}
    timeout = httpx.Timeout(60.0, read=STREAM_READ_TIMEOUT)
    per_client = min(size, STREAMS_PER_CLIENT)
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=0)
    clients = [httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) for _ in range(-(-size // per_client))]
    figures: dict[str, Any] = {}

    async def stream(index: int) -> None:
        held = asyncio.Event()
        await asyncio.sleep(max(0.0, started + index / timing.opening_per_second - time.monotonic()))  # the pace
        await opening.acquire()
        if ramp_over.is_set():
            opening.release()
            count.not_opened += 1
            return
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
    ramp_seconds = timing.ramp_s(size)
    streams = [asyncio.create_task(stream(index)) for index in range(size)]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_held.wait(), timeout=ramp_seconds)
        ramp_over.set()
        figures["ramp_s"] = round(time.monotonic() - started, 1)
        log.info("%d of %d streams held after %.1f s (%d errors)", count.held, size, figures["ramp_s"], count.errors)
        figures["plateau_rss_mb"] = await _peak_rss(pids, timing.plateau_s)
        figures["held"] = count.held  # those still opening when the ramp ended may be held by the plateau's end
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
    env = {
        "MESH_AGENT_ID": HOLD_AGENT,
        "MESH_MAX_CONCURRENT": str(size),
        "MESH_HTTP_PORT": "0",
        "MESH_KEEPALIVE_INTERVAL": str(KEEPALIVE_INTERVAL),
    }
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
        procs.start_core(
            {"MESH_STREAM_IDLE_TIMEOUT": str(STREAM_IDLE_TIMEOUT), "MESH_FIRST_REPLY_TIMEOUT": str(FIRST_REPLY_TIMEOUT)}
        )
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
    if held < size:  # the memory figures are of what was held; the size itself was not reached
        row["not_reached"] = (
            f"{held:,} of {size:,} streams held within the ramp's {timing.ramp_s(size):.0f} s; "
            f"{count.ended_unheld:,} ended before they were held, {count.not_opened:,} not opened by then"
            + (f" (first error: {count.error_samples[0]})" if count.error_samples else "")
        )
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
    notes = []
    for row in rows:
        if "not_reached" in row:
            notes.append(f"- {row['streams']:,} not reached: {row['not_reached']}")
        if "not_measured" in row:
            lines.append(f"| {row['streams']:,} | not measured: {row['not_measured']} |" + " |" * (len(MEASURED) + 2))
            continue
        cells = [
            f"{row['idle_rss_mb'].get(name, 0.0)} → {row['plateau_rss_mb'].get(name, 0.0)} "
            f"({row['kb_per_task'].get(name)})"
            for name in MEASURED
        ]
        lines.append(
            f"| {row['streams']:,}{' (not reached)' if 'not_reached' in row else ''} | "
            f"{row['held']:,} / {row['completed']:,} / {row['errors']} | {row['ramp_s']} | "
            + " | ".join(cells)
            + f" | {row['kb_per_task_total']} |"
        )
    return [*lines, "", *notes, *([""] if notes else [])]
