"""`make bench-scale` seeds the task store's database straight through SQLite: the rows it writes must read back
through the store exactly as rows the store wrote itself (else the latency it reports is of failing reads)."""

from __future__ import annotations

import time
from pathlib import Path

from a2amesh.models import TaskState
from loadtests.bench.scale import seed
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
