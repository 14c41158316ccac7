"""CPU time and resident memory of processes, read from /proc (Linux; no psutil)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after "pid (comm) " (state first), or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _processes() -> dict[int, tuple[int, int]]:
    """Every process now: its parent, and the CPU clock ticks of it and of its children it has waited for (utime,
    stime, cutime, cstime: a child's time moves into its parent's when the parent reaps it)."""
    found: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            found[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return found


def tree_cpu_seconds(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds of each named process and of every process it started, living or ended: PostgreSQL's server
    works in the backends its postmaster forks (one per connection), which a reading of the postmaster alone would
    leave out. One scan of /proc for all of them."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    totals: dict[str, float] = {}
    for name, root in roots.items():
        ticks, pending, seen = 0, [root], set()
        while pending:  # bounded: each process at most once
            pid = pending.pop()
            if pid in seen or pid not in processes:
                continue
            seen.add(pid)
            ticks += processes[pid][1]
            pending.extend(children.get(pid, ()))
        totals[name] = ticks / CLOCK_TICKS  # summed in whole ticks: equal totals read as equal seconds
    return totals


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) in MiB (0.0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle or waiting on I/O) since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds of each named process, with the processes it started (tree_cpu_seconds)."""
    return tree_cpu_seconds(pids)


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two snapshots."""
    return {name: max(after.get(name, 0.0) - seconds, 0.0) for name, seconds in before.items()}


class RssSampler:
    """Samples the RSS of processes in a background thread and keeps each one's peak."""

    def __init__(self, pids: Mapping[str, int], interval: float = 0.25) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.peak: dict[str, float] = dict.fromkeys(self.pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_mb(pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


def rss_of(pids: Mapping[str, int], names: Iterable[str] | None = None) -> dict[str, float]:
    """Current RSS (MiB) of the named processes (all of them by default)."""
    return {name: rss_mb(pid) for name, pid in pids.items() if names is None or name in names}
