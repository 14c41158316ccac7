"""A short Locust run (a few seconds, a few users of each kind) against the session's mesh: every request of both
the HTTP and the MQTT user succeeds. Timings are reported by `make loadtest` / `make bench`, never asserted here."""

from __future__ import annotations

import csv
from pathlib import Path

from devstack.stack import Stack
from loadtests.a2a import SseParser
from loadtests.loadtest import REPORT_PREFIX, LoadSettings, Target, run_locust


def test_sse_parser_reads_crlf_frames_split_anywhere() -> None:
    stream = b'data: {"a": 1}\r\n\r\ndata: {"b": 2}\r\n\r\n: keep-alive\r\n\r\ndata: {"c": 3}\n\n'
    for cut in range(1, len(stream)):
        parser = SseParser()
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == [{"a": 1}, {"b": 2}, {"c": 3}], cut


def test_smoke_load_both_user_kinds_succeed(mesh: Stack, tmp_path: Path) -> None:
    settings = LoadSettings(users=4, spawn_rate=4, run_time="6s", report_dir=tmp_path)

    completed = run_locust(Target.of(mesh), settings, capture=True)

    output = f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    assert completed.returncode == 0, output
    assert (tmp_path / f"{REPORT_PREFIX}.html").is_file()
    with (tmp_path / f"{REPORT_PREFIX}_stats.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] != "Aggregated"]
    by_type: dict[str, int] = {}
    for row in rows:
        assert int(row["Failure Count"]) == 0, (row, output)
        by_type[row["Type"]] = by_type.get(row["Type"], 0) + int(row["Request Count"])
    assert by_type.get("MQTT", 0) > 0, rows
    assert by_type.get("POST", 0) > 0, rows
    names = {row["Name"] for row in rows}
    assert any(name.startswith("SendStreamingMessage") and "SSE" in name for name in names), names
