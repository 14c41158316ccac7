"""`make bench-scale` seeds the task store's database straight through SQLite: the rows it writes must read back
through the store exactly as rows the store wrote itself (else the latency it reports is of failing reads). Its
open-streams measurement runs at a tiny size here."""

from __future__ import annotations

import time
from pathlib import Path

from a2amesh.models import TaskState
from loadtests.bench.coordinators import coordinator_rows, render_coordinators
from loadtests.bench.scale import seed
from loadtests.bench.settings import BenchSettings
from loadtests.bench.streams import MEASURED, StreamTiming, raise_open_files_limit, render_streams, stream_row
from mesh_taskstore.db import create_tables, make_engine
from mesh_taskstore.store import TaskQuery, TaskStore


def test_seeded_tasks_read_back_through_the_store(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{database}")
    create_tables(engine)
    try:
        assert seed(database, 1500, time.monotonic() + 60) == 1500
        assert seed(database, 1500, time.monotonic() + 60) == 1500  # already there: nothing added
        store = TaskStore(engine)
        stored = store.get("seed-00000007")
        assert stored is not None
        assert stored.task.id == "seed-00000007"
        assert stored.task.status.state is TaskState.COMPLETED
        page = store.list_tasks(TaskQuery(page_size=5))
        assert page.total_size == 1500
        assert [task.id for task in page.tasks] == [f"seed-{n:08d}" for n in range(1499, 1494, -1)]  # newest first
    finally:
        engine.dispose()


def test_open_streams_are_held_measured_and_released(tmp_path: Path) -> None:
    """The open-streams measurement at a tiny size, on a real mesh: every stream's task is held WORKING by the
    agent until the benchmark releases it, then completes; memory is read before and while held for each process."""
    settings = BenchSettings(report_dir=tmp_path, service_envs=False)
    timing = StreamTiming(plateau_s=1.0, release_s=60.0, settle_s=0.0)
    row = stream_row(settings, 20, raise_open_files_limit(), timing)
    assert (row["held"], row["completed"], row["errors"]) == (20, 20, 0), row["error_samples"]
    assert row["ended_while_held"] == 0, "a task ended before it was released"
    for name in MEASURED:
        assert row["idle_rss_mb"][name] > 0 and row["plateau_rss_mb"][name] > 0, name
        assert row["kb_per_task"][name] is not None, name
    table = "\n".join(render_streams([row]))
    assert "| 20 | 20 / 20 / 0 |" in table


def test_a_size_not_held_within_the_ramp_is_reported_not_reached(tmp_path: Path) -> None:
    """Streams opened at 2 a second with 4 s for the ramp: not all 20 are held in time. The row measures what was
    held, says the size was not reached and why, and opens no stream after the ramp."""
    settings = BenchSettings(report_dir=tmp_path, service_envs=False)
    timing = StreamTiming(plateau_s=1.0, release_s=60.0, settle_s=0.0, opening_per_second=2.0, ramp_cap_s=4.0)
    row = stream_row(settings, 20, raise_open_files_limit(), timing)
    assert 0 < row["held"] < 20, row
    assert "not_reached" in row and f"{row['held']} of 20 streams held" in row["not_reached"], row
    assert row["completed"] == row["held"] and row["errors"] == 0, row["error_samples"]  # the held ones all end
    table = "\n".join(render_streams([row]))
    assert "| 20 (not reached) |" in table and "- 20 not reached:" in table


def test_a_size_the_open_files_limit_cannot_hold_is_reported_not_measured(tmp_path: Path) -> None:
    settings = BenchSettings(report_dir=tmp_path, service_envs=False)
    row = stream_row(settings, 10_000, 4096)
    assert "not_measured" in row and "4096" in row["not_measured"]
    assert "not measured" in "\n".join(render_streams([row]))


def test_the_coordinators_table_sends_tasks_to_every_replica_in_turn(tmp_path: Path) -> None:
    """The coordinators table at a tiny size, on real stacks: one coordinator, then two replicas of it, each task
    sent to the next; every task completes and both replicas did work for them (their CPU is in the figures)."""
    settings = BenchSettings(tasks=40, warmup=4, rounds=1, concurrency=4, report_dir=tmp_path, service_envs=False)
    one, two = coordinator_rows(settings, (1, 2))
    for row in (one, two):
        assert (row["completed"], row["errors"]) == (40, 0), row["error_samples"]
        assert all(mb > 0 for mb in row["coordinators_idle_rss_mb"].values()), row
        assert set(row["coordinators_peak_rss_mb"]) == set(row["coordinator_cpu_ms_per_task"]), row
    assert set(one["coordinator_cpu_ms_per_task"]) == {"coordinator"}
    shares = two["coordinator_cpu_ms_per_task"]
    assert set(shares) == {"coordinator", "coordinator-1"}
    assert all(ms > 0 for ms in shares.values()), shares  # the second replica served tasks too
    table = "\n".join(render_coordinators([one, two]))
    assert "| 2 | " in table and "coordinator-1 " in table
