"""The benchmark's report: the machine, the targets, and every scenario's figures, as Markdown and JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

IDLE_RSS_LIMIT_MB = 80.0
MESH_SERVICES = ("broker", "redis", "registry", "taskstore", "taskstore-postgres", "coordinator", "echo", "research")
"""The services of the deployment (pool replicas are echo too; `taskstore-postgres` is the task store built and run
with PostgreSQL); the floor, the peers and the PostgreSQL server are not held to targets."""


def twin_key(path: str, beside: str) -> str:
    """The key of `path` (`binding`, `http-face`) measured on the twin stack, its rounds interleaved with the task
    store's scenario `beside` (runner.Bench.twin)."""
    return f"{path}-beside-{beside}"


def machine_info(mosquitto: str) -> dict[str, Any]:
    """What the run ran on."""
    cpu_model = "unknown"
    memory_gib = 0.0
    with contextlib.suppress(OSError, StopIteration):
        cpu_model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    with contextlib.suppress(OSError, StopIteration):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        memory_gib = round(next(int(line.split()[1]) for line in meminfo if "MemTotal" in line) / 1024 / 1024, 1)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": memory_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": mosquitto,
    }


def _by_key(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {scenario["key"]: scenario for scenario in data["scenarios"]}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with what was measured and whether it was met (None: not measured in this run)."""
    runs, skipped = _by_key(data), data.get("not_measured", {})

    pools = sorted(int(key.split("-")[1]) for key in runs if key.startswith("pool-"))
    biggest = pools[-1] if pools else None
    found = []
    binding = _ratio(_rate(runs, "binding"), _rate(runs, "floor"))
    found.append(
        _target("binding tasks/s >= 60% of the floor's", binding, 0.6, "x floor", _by_round(runs, "binding", "floor"))
    )
    http = _ratio(_rate(runs, "http-face"), _rate(runs, "sdk-http"))
    found.append(
        _target(
            "HTTP face tasks/s >= a2a-sdk in-process server's",
            http,
            1.0,
            "x a2a-sdk",
            _by_round(runs, "http-face", "sdk-http"),
        )
    )
    for key, database in (("record", "SQLite"), ("record-postgres", "PostgreSQL")):
        name = f"binding with the task store recording on {database} >= 80% of the binding's tasks/s"
        found.append(_store_target(runs, name, key, "binding", why_not=skipped.get(key)))
    name = "deployed path (HTTP face, store, registry) >= 80% of the HTTP face's tasks/s"
    found.append(_store_target(runs, name, "deployed", "http-face"))
    scaling = _ratio(_rate(runs, f"pool-{biggest}"), _rate(runs, "pool-1")) if biggest and biggest > 1 else None
    found.append(
        _target(f"{biggest or 4} replicas >= 3.5x one on the 50 ms agent", scaling, 3.5 * (biggest or 4) / 4, "x")
    )
    idle = data.get("idle_rss_mb", {})
    services = {name: mb for name, mb in idle.items() if name in MESH_SERVICES or name.startswith("pool-echo")}
    worst = max(services.items(), key=lambda item: item[1]) if services else None
    found.append(
        {
            "target": f"every service idles under {IDLE_RSS_LIMIT_MB:.0f} MB RSS",
            "measured": f"max {worst[1]:.1f} MB ({worst[0]})" if worst else "not measured",
            "met": None if worst is None else worst[1] < IDLE_RSS_LIMIT_MB,
        }
    )
    return found


def _store_target(
    runs: dict[str, dict[str, Any]], name: str, ours: str, without: str, why_not: str | None = None
) -> dict[str, Any]:
    """A task store target: `ours` against the path `without` the store, as measured on the twin stack with their
    rounds interleaved when the run did so, and beside it the ratio against the first stack's `without`, measured
    minutes earlier (the only comparison of runs without a twin)."""
    beside = twin_key(without, ours)
    reference = beside if _rate(runs, beside) else without  # a twin that completed nothing: the earlier figure
    value = _ratio(_rate(runs, ours), _rate(runs, reference))
    target = _target(
        name,
        value,
        0.8,
        "x",
        _by_round(runs, ours, reference) if reference == beside else None,
        why_not=why_not,
        by_cpu=_cpu_ratio(runs, ours, reference),
    )
    if value is not None and reference == beside and (earlier := _ratio(_rate(runs, ours), _rate(runs, without))):
        target["measured"] += f"; against the `{without}` measured earlier: {earlier:.2f}x"
    return target


def _rate(runs: dict[str, dict[str, Any]], key: str) -> float | None:
    return runs[key]["tasks_per_s"] if key in runs else None


def is_twin(key: str) -> bool:
    """Whether a scenario ran on the twin stack (its processes are not the first stack's, though named alike)."""
    return "-beside-" in key


def _by_round(runs: dict[str, dict[str, Any]], ours: str, theirs: str) -> list[float]:
    """The ratio in each round: rounds of scenarios measured together ran one after the other, so round i of
    each saw the same spell of the machine."""
    if ours not in runs or theirs not in runs:
        return []
    pairs = zip(runs[ours]["rounds_tasks_per_s"], runs[theirs]["rounds_tasks_per_s"], strict=False)
    return [ratio for a, b in pairs if (ratio := _ratio(a, b)) is not None]


def _cpu_ratio(runs: dict[str, dict[str, Any]], ours: str, theirs: str) -> float | None:
    """What the two paths' CPU per task (services and client) allows `ours` against `theirs` on a machine they
    saturate: their cost over ours. Paths measured minutes apart (without the twin) can fall in spells of a shared
    machine of different speed, which moves the ratio of tasks/s; the CPU each task costs moves far less."""
    if ours not in runs or theirs not in runs:
        return None

    def total(run: dict[str, Any]) -> float:
        return run.get("service_cpu_ms_per_task", 0.0) + run.get("client_cpu_ms_per_task", 0.0)

    return _ratio(total(runs[theirs]), total(runs[ours]))


def _target(
    name: str,
    value: float | None,
    goal: float,
    unit: str,
    rounds: list[float] | None = None,
    why_not: str | None = None,
    by_cpu: float | None = None,
) -> dict[str, Any]:
    """A target's row; `why_not`: the reason a scenario it needs could not run on this machine; `by_cpu`: the
    ratio the paths' CPU per task allows, shown beside the measured one (the target is the measured one)."""
    measured = f"{value:.2f}{unit}" if value is not None else "not measured" + (f": {why_not}" if why_not else "")
    if value is not None and rounds and len(rounds) > 1:
        measured += f" (best rounds; round by round: {', '.join(f'{r:.2f}' for r in rounds)})"
    if value is not None and by_cpu is not None:
        measured += f" (by CPU per task: {by_cpu:.2f}{unit})"
    return {"target": name, "measured": measured, "met": None if value is None else value >= goal}


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else "yes" if flag else "**no**"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    machine, settings, runs = data["machine"], data["settings"], data["scenarios"]
    floor = _by_key(data).get("floor")
    lines = [
        "# Benchmark report",
        "",
        f"Run {machine['date']}, {data['seconds']} s. Machine: {machine['nproc']} CPU ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}, Python {machine['python']}, {machine['mosquitto']}.",
        f"Settings: concurrency {settings['concurrency']} (pool {settings['pool_concurrency']}), payload "
        f"{settings['payload_bytes']} B, {settings['tasks']} tasks per scenario (pool {settings['pool_tasks']}) after "
        f"{settings['warmup']} warm-up, at most {settings['max_seconds']} s each; HTTP "
        f"{'SendStreamingMessage over SSE' if settings['http_streaming'] else 'blocking SendMessage'}; "
        f"what-if patches: {', '.join(settings['whatif']) or 'none (the code as it is)'}.",
        "",
        "## Targets",
        "",
        *_table(["target", "measured", "met"], [[t["target"], t["measured"], _met(t["met"])] for t in targets(data)]),
        "",
        "## Throughput, latency, CPU",
        "",
        "CPU ms/task: CPU seconds of the processes on the path, each with the processes it started (PostgreSQL's "
        "backends), from /proc, including work that finished after the last reply, per completed task; client: the "
        "benchmark process's own CPU (the requester is part of the binding's cost, so ratios use service + client). "
        "Other load: CPU that processes outside the run used meanwhile, in cores (the machine has "
        f"{machine['nproc']}); figures taken while it is high understate what the machine can do.",
        "",
    ]

    def total(run: dict[str, Any]) -> float:
        return round(run["service_cpu_ms_per_task"] + run["client_cpu_ms_per_task"], 3)

    def versus_floor(value: float, floor_value: float | None) -> str:
        ratio = _ratio(value, floor_value)
        return f"{ratio}x" if ratio else ""

    columns: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("scenario", lambda r: r["label"]),
        ("tasks", lambda r: r["completed"]),
        ("errors", lambda r: r["errors"]),
        ("tasks/s", lambda r: r["tasks_per_s"]),
        ("p50 ms", lambda r: r["p50_ms"]),
        ("p95 ms", lambda r: r["p95_ms"]),
        ("p99 ms", lambda r: r["p99_ms"]),
        ("service CPU ms/task", lambda r: r["service_cpu_ms_per_task"]),
        ("client CPU ms/task", lambda r: r["client_cpu_ms_per_task"]),
        ("tasks/s vs floor", lambda r: versus_floor(r["tasks_per_s"], floor["tasks_per_s"] if floor else None)),
        ("total CPU/task vs floor", lambda r: versus_floor(total(r), total(floor) if floor else None)),
        ("other load (cores)", lambda r: r.get("other_load_cores", "")),
    ]
    header = [name for name, _ in columns]
    rows = [[get(run) for _, get in columns] for run in runs]
    lines += [*_table(header, rows), "", "## Ratios against the peers", ""]
    by_key = _by_key(data)
    peer_rows = []
    for ours, peer in (("binding", "sdk-mqtt"), ("http-face", "sdk-http"), ("binding", "sdk-http")):
        if ours in by_key and peer in by_key:
            a, b = by_key[ours], by_key[peer]
            peer_rows.append(
                [
                    f"{a['label']} / {b['label']}",
                    f"{_ratio(a['tasks_per_s'], b['tasks_per_s'])}x",
                    f"{_ratio(total(a), total(b))}x",
                    f"{_ratio(a['p50_ms'], b['p50_ms'])}x",
                ]
            )
    lines += _table(["comparison", "tasks/s", "total CPU/task", "p50 latency"], peer_rows)
    lines += ["", "## Paths and messages", ""]
    lines += _table(["scenario", "path", "messages per task"], [[r["label"], r["path"], r["messages"]] for r in runs])
    lines += ["", "## CPU per process (ms per task)", ""]
    lines += _table(
        ["scenario", "per process"],
        [
            [r["label"], ", ".join(f"{n} {1000 * s / max(r['completed'], 1):.2f}" for n, s in r["cpu_s"].items())]
            for r in runs
        ],
    )
    lines += ["", "## Resident memory (MiB)", ""]
    peaks: dict[str, float] = {}
    for run in runs:
        for process, mb in run["rss_peak_mb"].items():
            name = f"{process} (twin)" if is_twin(run["key"]) else process
            peaks[name] = max(peaks.get(name, 0.0), mb)
    idle, after = data["idle_rss_mb"], data["after_load_rss_mb"]
    names = sorted(set(idle) | set(peaks), key=lambda n: (n not in MESH_SERVICES, n))
    lines += _table(
        ["process", "idle (fresh)", "peak under load", "after the run"],
        [[n, idle.get(n, ""), peaks.get(n, ""), after.get(n, "")] for n in names],
    )
    skipped = [f"- {key}: {why}" for key, why in data.get("not_measured", {}).items()]
    if skipped:
        lines += ["", "## Not measured", "", *skipped]
    errors = [f"- {r['key']}: {sample}" for r in runs for sample in r["error_samples"]]
    if errors:
        lines += ["", "## Errors (samples)", "", *errors]
    return "\n".join(lines) + "\n"


def write_report(data: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write report.md and report.json (the latest run) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {**data, "targets": targets(data)}
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    markdown = directory / "report.md"
    markdown.write_text(render_markdown(data))
    return markdown, json_path
