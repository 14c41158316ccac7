"""`make bench`'s `record-postgres`: the task store recording into a PostgreSQL server the benchmark starts, the
server's CPU counted with the backends it forks, and a machine without PostgreSQL told so in the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import devstack.postgres
from loadtests.bench.procs import POSTGRES, BenchStack
from loadtests.bench.procstat import tree_cpu_seconds
from loadtests.bench.report import render_markdown, targets, twin_key
from loadtests.bench.runner import POSTGRES_STORE, Bench
from loadtests.bench.settings import BenchSettings

BURN = "SELECT count(*) FROM generate_series(1, 5000000)"
"""A query that keeps one backend busy for a few tenths of a CPU second."""


def test_the_postgres_servers_cpu_counts_its_backends_running_and_ended(tmp_path: Path) -> None:
    procs = BenchStack(BenchSettings(report_dir=tmp_path, service_envs=False))
    try:
        url = procs.start_postgres()
        server = procs.pids(POSTGRES)
        assert set(server) == {POSTGRES}
        before = tree_cpu_seconds(server)[POSTGRES]
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.connect() as connection:
            assert connection.execute(sa.text(BURN)).scalar_one() == 5_000_000
            backend = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            assert backend != server[POSTGRES]  # the work ran in a forked backend, not in the postmaster
            during = tree_cpu_seconds(server)[POSTGRES]
        engine.dispose()
        procs.stack.wait_for(lambda: not Path(f"/proc/{backend}").exists(), 30, "the backend's exit")
        after = tree_cpu_seconds(server)[POSTGRES]
        assert during - before >= 0.1, (before, during)
        # the ended backend's 0.1 s and more stay counted, in the postmaster's once reaped (give or take the kernel's
        # rounding of a tick or two)
        assert after >= during - 0.02, (during, after)
    finally:
        procs.stop_all()
    assert not procs.pids(POSTGRES), "the server stops with the run"
    assert (procs.stack.run_dir / "logs" / f"{POSTGRES}.log").is_file()


def test_a_machine_without_postgresql_reports_the_scenario_not_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = devstack.postgres.find_pg_binary
    monkeypatch.setattr(devstack.postgres, "find_pg_binary", lambda name: real(f"{name}-not-installed"))
    bench = Bench(BenchSettings(report_dir=tmp_path, service_envs=False, scenarios=("record-postgres",)))
    try:
        bench.record_postgres()
    finally:
        bench.stop_all()
    assert bench.results == []
    reason = bench.not_measured["record-postgres"]
    assert "initdb-not-installed not found" in reason

    data = {"scenarios": [], "idle_rss_mb": {}, "not_measured": bench.not_measured}
    [target] = [t for t in targets(data) if "recording on PostgreSQL" in t["target"]]
    assert target["met"] is None
    assert target["measured"] == f"not measured: {reason}"


@pytest.mark.timeout(300)  # a mesh, two stores and a database server start in turn: about 40 s on a busy machine
def test_record_postgres_runs_the_binding_with_the_store_on_postgresql(tmp_path: Path) -> None:
    """The scenario at a tiny size on a real mesh: every task completes, and the CPU of the store and of the
    PostgreSQL server (which the store's writes keep busy) is in the figures, apart from the SQLite store's."""
    settings = BenchSettings(
        tasks=40, warmup=5, rounds=1, concurrency=4, report_dir=tmp_path, service_envs=False, scenarios=("record",)
    )
    bench = Bench(settings)
    procs = bench.procs
    try:
        procs.start_core()
        bench.record()
        sqlite_store = procs.pids("taskstore")["taskstore"]
        bench.record_postgres()
        assert not procs.pids("taskstore"), "the SQLite store stops before the PostgreSQL one starts"
        assert procs.pids(POSTGRES_STORE)[POSTGRES_STORE] != sqlite_store
        twin = bench.twin()
        assert set(twin.pids("broker", "echo", "coordinator")) == {"broker", "echo", "coordinator"}
        assert not twin.pids("taskstore", POSTGRES_STORE), "no task store ever runs on the twin"
    finally:
        bench.stop_all()
    assert not bench.twin().all_pids(), "the twin stops with the run"
    assert bench.not_measured == {}
    runs = {result.key: result for result in bench.results}
    on_postgres = runs["record-postgres"]
    assert (on_postgres.completed, on_postgres.errors) == (40, 0), on_postgres.error_samples
    assert set(on_postgres.cpu_s) == {"broker", "echo", POSTGRES_STORE, POSTGRES}
    # the server's own share of 40 tasks can be under one clock tick (0.0 s): that it is counted at all is checked
    # here, that a backend's work reaches it by the CPU test above
    assert on_postgres.cpu_s[POSTGRES_STORE] > 0 and on_postgres.cpu_s[POSTGRES] >= 0
    assert "taskstore" in runs["record"].cpu_s
    assert {POSTGRES_STORE, POSTGRES} <= set(bench.idle_rss)
    for beside in ("record", "record-postgres"):  # the binding on the twin, its rounds interleaved with the store's
        twin_binding = runs[twin_key("binding", beside)]
        assert (twin_binding.completed, twin_binding.errors) == (40, 0), twin_binding.error_samples
        assert set(twin_binding.cpu_s) == {"broker", "echo"}

    data = {
        "machine": {"date": "", "nproc": 2, "cpu": "", "memory_gib": 0, "kernel": "", "python": "", "mosquitto": ""},
        "settings": {**vars(settings), "report_dir": str(tmp_path), "whatif": [], "profile": []},
        "seconds": 0,
        "scenarios": [result.to_dict() for result in bench.results],
        "idle_rss_mb": bench.idle_rss,
        "after_load_rss_mb": {},
    }
    markdown = render_markdown(data)
    assert f"{POSTGRES_STORE} " in markdown and f", {POSTGRES} " in markdown  # the per-process CPU table
    assert "| broker (twin) |" in markdown  # the twin's memory apart from the first stack's processes of one name
