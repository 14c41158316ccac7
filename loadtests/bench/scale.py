"""`python -m loadtests bench-scale` (`make bench-scale`): how the mesh grows, kept out of `make bench` for its
length. Four tables: tasks/s and memory with agent replicas (the pool scenario at 1/2/4/8), with coordinators
(1/2: loadtests.bench.coordinators), GetTask/ListTasks latency with 10^4 and 10^6 stored tasks
(the task store's database seeded in bulk, then read through the store's HTTP API), and memory per task in flight
with 1,000 and 10,000 open streams (loadtests.bench.streams)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from a2amesh.models import Message, Part, Role, Task, TaskState, TaskStatus
from devstack.stack import Ports, Stack, find_binary
from loadtests.bench.coordinators import COORDINATOR_COUNTS, coordinator_rows, render_coordinators
from loadtests.bench.measure import percentile
from loadtests.bench.procs import mosquitto_version
from loadtests.bench.procstat import rss_of
from loadtests.bench.report import machine_info
from loadtests.bench.runner import Bench
from loadtests.bench.settings import BenchSettings
from loadtests.bench.streams import STREAM_SIZES, render_streams, stream_rows

log = logging.getLogger("loadtests.bench.scale")

STORED_SIZES = (10_000, 1_000_000)
READS = 200
"""Timed reads per kind and size (after 20 untimed ones)."""
SEED_CHUNK = 20_000
SEED_SECONDS = 600.0
"""A seeding that has not finished by then stops where it is (the table says how many tasks it reached)."""
PARTS = ("replicas", "coordinators", "stored", "streams")


@dataclass(frozen=True)
class ScaleSettings:
    """What `bench-scale` measures (BENCH_SCALE_PARTS: which tables; BENCH_SCALE_REPLICAS, BENCH_SCALE_COORDINATORS,
    BENCH_SCALE_STORED, BENCH_SCALE_READS, BENCH_SCALE_STREAMS: smaller runs)."""

    parts: tuple[str, ...] = PARTS
    replicas: tuple[int, ...] = (1, 2, 4, 8)
    coordinators: tuple[int, ...] = COORDINATOR_COUNTS
    stored: tuple[int, ...] = STORED_SIZES
    reads: int = READS
    streams: tuple[int, ...] = STREAM_SIZES

    @classmethod
    def from_env(cls) -> ScaleSettings:
        env = os.environ
        numbers = lambda name, default: tuple(int(n) for n in env.get(name, default).split(",") if n.strip())  # noqa: E731
        parts = tuple(part.strip() for part in env.get("BENCH_SCALE_PARTS", ",".join(PARTS)).split(",") if part.strip())
        coordinators = numbers("BENCH_SCALE_COORDINATORS", ",".join(str(n) for n in COORDINATOR_COUNTS))
        if any(count < 1 for count in coordinators):
            raise ValueError(f"BENCH_SCALE_COORDINATORS must be counts of 1 or more, not {coordinators}")
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown BENCH_SCALE_PARTS {sorted(unknown)}; choose from {', '.join(PARTS)}")
        return cls(
            parts=parts,
            replicas=numbers("BENCH_SCALE_REPLICAS", "1,2,4,8"),
            coordinators=coordinators,
            stored=numbers("BENCH_SCALE_STORED", ",".join(str(n) for n in STORED_SIZES)),
            reads=int(env.get("BENCH_SCALE_READS", READS)),
            streams=numbers("BENCH_SCALE_STREAMS", ",".join(str(n) for n in STREAM_SIZES)),
        )


def replica_rows(settings: BenchSettings, replicas: tuple[int, ...]) -> list[dict[str, Any]]:
    """The pool scenario at each replica count: tasks/s, and the replicas' summed peak RSS."""
    bench = Bench(replace(settings, scenarios=("pool",), pool_replicas=replicas))
    bench.run()
    rows = []
    for result in bench.results:
        count = int(result.key.split("-")[1])
        rows.append(
            {
                "replicas": count,
                "tasks_per_s": result.tasks_per_s,
                "p50_ms": result.p50_ms,
                "replicas_rss_mb": round(sum(mb for name, mb in result.rss_peak_mb.items() if name != "broker"), 1),
                "broker_rss_mb": result.rss_peak_mb.get("broker", 0.0),
            }
        )
    return rows


def _task_json(task_id: str, text: str) -> str:
    message = Message(message_id=uuid.uuid4().hex, role=Role.USER, parts=[Part(text=text)], task_id=task_id)
    status = TaskStatus(state=TaskState.COMPLETED, timestamp=datetime.now(UTC))
    return Task(id=task_id, context_id=task_id, status=status, history=[message]).to_json()


def seed(database: Path, count: int, deadline: float) -> int:
    """Add tasks to the store's database until it holds `count` (or the deadline passes), straight through
    SQLite in large transactions: the store's own write path would take minutes for a million. Returns how many
    it holds."""
    template = _task_json("@ID@", "x" * 200)
    connection = sqlite3.connect(database)
    try:
        held = connection.execute("SELECT count(*) FROM task_record").fetchone()[0]
        base = datetime(2026, 1, 1, tzinfo=UTC)
        while held < count and time.monotonic() < deadline:
            rows = []
            for index in range(held, min(count, held + SEED_CHUNK)):
                task_id = f"seed-{index:08d}"
                at = (base + timedelta(seconds=index)).strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy writes it
                snapshot = template.replace("@ID@", task_id)
                rows.append((task_id, task_id, "TASK_STATE_COMPLETED", "acme/default/echo", at, at, at, snapshot))
            connection.executemany(
                "INSERT INTO task_record (task_id, context_id, state, agent, created_at, updated_at, "
                "status_timestamp, snapshot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.commit()
            held += len(rows)
        return held
    finally:
        connection.close()


async def _latencies(url: str, paths: list[str], verify: Any) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=60, verify=verify) as client:
        for path in paths[:20]:
            (await client.get(path)).raise_for_status()
        timings = []
        for path in paths[20:]:
            started = time.perf_counter()
            (await client.get(path)).raise_for_status()
            timings.append(1000 * (time.perf_counter() - started))
        return timings


def stored_rows(run_dir: Path, sizes: tuple[int, ...], reads: int) -> list[dict[str, Any]]:
    """GetTask and ListTasks (first page of 50, newest first, with the total) at each stored size."""
    stack = Stack(run_dir=run_dir, ports=Ports.random(), org="acme", unit="default", agents={}, tester=True)
    rows: list[dict[str, Any]] = []
    try:
        stack.launch(stack.broker())
        stack.launch(stack.taskstore(), timeout=60)
        database = run_dir / "taskstore.db"
        deadline = time.monotonic() + SEED_SECONDS
        for size in sizes:
            started = time.monotonic()
            held = seed(database, size, deadline)
            seeded_s = time.monotonic() - started
            ids = [f"seed-{(i * 7919) % held:08d}" for i in range(reads + 20)]
            url, verify = stack.taskstore_url, stack.internal_verify()
            gets = asyncio.run(_latencies(url, [f"/tasks/{i}?scope=all" for i in ids], verify))  # an operator's read
            lists = asyncio.run(_latencies(url, ["/tasks?pageSize=50&scope=all"] * (reads + 20), verify))
            rss = rss_of({"taskstore": stack.processes["taskstore"].pid}).get("taskstore", 0.0)
            rows.append(
                {
                    "stored": held,
                    "seed_s": round(seeded_s, 1),
                    "get_p50_ms": round(percentile(gets, 0.5), 2),
                    "get_p99_ms": round(percentile(gets, 0.99), 2),
                    "list_p50_ms": round(percentile(lists, 0.5), 2),
                    "list_p99_ms": round(percentile(lists, 0.99), 2),
                    "taskstore_rss_mb": round(rss, 1),
                }
            )
            log.info("stored %d: %s", held, rows[-1])
    finally:
        stack.stop()
    return rows


def render(data: dict[str, Any]) -> str:
    machine = data["machine"]
    about = f"{machine['nproc']} x {machine['cpu']}, {machine['memory_gib']} GiB, Python {machine['python']}"
    lines = ["# Scaling figures", "", f"Run of {machine['date']} on {about}, {machine['mosquitto']}.", ""]
    if "replicas" in data:
        lines += ["## Agent replicas (pool scenario: one task at a time per replica, 50 ms of work)", ""]
        lines += ["| replicas | tasks/s | p50 ms | replicas' peak RSS MB (sum) | broker peak RSS MB |"]
        lines += ["|---|---|---|---|---|"]
        lines += [
            f"| {r['replicas']} | {r['tasks_per_s']} | {r['p50_ms']} | {r['replicas_rss_mb']} | {r['broker_rss_mb']} |"
            for r in data["replicas"]
        ]
        lines += [""]
    if "coordinators" in data:
        lines += render_coordinators(data["coordinators"])
    if "stored" in data:
        lines += ["## Stored tasks (task store on SQLite, read through its HTTP API)", ""]
        lines += [
            "| stored tasks | seeding s | GetTask p50 / p99 ms | ListTasks (50 + total) p50 / p99 ms | store RSS MB |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['stored']:,} | {r['seed_s']} | {r['get_p50_ms']} / {r['get_p99_ms']} | "
            f"{r['list_p50_ms']} / {r['list_p99_ms']} | {r['taskstore_rss_mb']} |"
            for r in data["stored"]
        ]
        lines += [""]
    if "streams" in data:
        lines += render_streams(data["streams"])
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    bench = BenchSettings.from_env()
    scale = ScaleSettings.from_env()
    out = bench.report_dir / "scale"
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"machine": machine_info(mosquitto_version(find_binary("mosquitto")))}
    if "replicas" in scale.parts:
        data["replicas"] = replica_rows(replace(bench, report_dir=out / "pool"), scale.replicas)
    if "coordinators" in scale.parts:
        data["coordinators"] = coordinator_rows(replace(bench, report_dir=out / "coordinators"), scale.coordinators)
    if "stored" in scale.parts:
        data["stored"] = stored_rows(out / "stored", scale.stored, scale.reads)
    if "streams" in scale.parts:
        data["streams"] = stream_rows(replace(bench, report_dir=out / "streams"), scale.streams)
    (out / "scale.json").write_text(json.dumps(data, indent=2))
    markdown = render(data)
    (out / "scale.md").write_text(markdown)
    print(markdown)
    return 0
