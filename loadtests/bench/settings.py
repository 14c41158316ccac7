"""The benchmark's knobs, from BENCH_* environment variables (documented in docs/benchmarks.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import REPO_ROOT

SCENARIOS = ("floor", "binding", "sdk-mqtt", "http-face", "sdk-http", "pool", "record", "deployed", "record-postgres")
"""Every scenario, in the order they run. The task store's come last, the PostgreSQL one after those on SQLite: the
store stays running from its first scenario on, and one on PostgreSQL takes the SQLite one's place (runner.py)."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(env.get(name, default))


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return float(env.get(name, default))


def _list(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, default).split(",") if item.strip())


@dataclass(frozen=True)
class BenchSettings:
    """How big each scenario is, and what runs."""

    tasks: int = 1500
    """Tasks measured per throughput scenario (after the warm-up)."""
    max_seconds: float = 10.0
    """A scenario stops after this long even if its tasks are not all done."""
    warmup: int = 100
    rounds: int = 5
    """Measured runs per scenario after the warm-up; the fastest is reported (noise on a shared machine only slows).
    Five, not three: the binding's rounds once ran at 637, 784 and 701 tasks/s on the quiet machine; more rounds
    bring each scenario's fastest nearer its undisturbed pace (a full run takes about 8.5 minutes instead of 6)."""
    concurrency: int = 16
    """Tasks in flight at once, the same for every throughput scenario."""
    payload_bytes: int = 256
    http_streaming: bool = True
    """HTTP scenarios use SendStreamingMessage over SSE (like the MQTT ones); False: blocking SendMessage."""
    pool_tasks: int = 1000
    pool_concurrency: int = 32
    pool_delay_ms: int = 50
    pool_replicas: tuple[int, ...] = (1, 2, 4)
    pool_slots: int = 1
    """MESH_MAX_CONCURRENT of each pool replica (the runtime's default is 8). One task at a time per replica makes
    replica capacity what the pool scenario measures: with 8, a single replica already absorbs the whole closed-loop
    concurrency and the scenario measures the machine's cores instead."""
    scenarios: tuple[str, ...] = SCENARIOS
    report_dir: Path = REPO_ROOT / "reports" / "bench"
    whatif: tuple[str, ...] = ()
    """Patch modules (each with install()) applied to every Python process of the run (BENCH_WHATIF, comma-separated
    module names): measures a proposed fix before it is made."""
    profile: tuple[str, ...] = ()
    """Services to run under pyinstrument (their profiles land in <report_dir>/profiles/)."""
    service_envs: bool = True
    """Run each mesh service in its own environment, as its image does (BENCH_SERVICE_ENVS=0: the workspace's)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BenchSettings:
        env = os.environ if env is None else env
        scenarios = _list(env, "BENCH_SCENARIOS", ",".join(SCENARIOS))
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown BENCH_SCENARIOS {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
        return cls(
            tasks=_int(env, "BENCH_TASKS", cls.tasks),
            max_seconds=_float(env, "BENCH_MAX_SECONDS", cls.max_seconds),
            warmup=_int(env, "BENCH_WARMUP", cls.warmup),
            rounds=_int(env, "BENCH_ROUNDS", cls.rounds),
            concurrency=_int(env, "BENCH_CONCURRENCY", cls.concurrency),
            payload_bytes=_int(env, "BENCH_PAYLOAD_BYTES", cls.payload_bytes),
            http_streaming=env.get("BENCH_HTTP_STREAMING", "1") != "0",
            pool_tasks=_int(env, "BENCH_POOL_TASKS", cls.pool_tasks),
            pool_concurrency=_int(env, "BENCH_POOL_CONCURRENCY", cls.pool_concurrency),
            pool_delay_ms=_int(env, "BENCH_POOL_DELAY_MS", cls.pool_delay_ms),
            pool_replicas=tuple(sorted({int(n) for n in _list(env, "BENCH_POOL_REPLICAS", "1,2,4")})),
            pool_slots=_int(env, "BENCH_POOL_SLOTS", cls.pool_slots),
            scenarios=tuple(name for name in SCENARIOS if name in scenarios),
            report_dir=Path(env.get("BENCH_REPORT_DIR", str(cls.report_dir))).resolve(),
            whatif=_list(env, "BENCH_WHATIF", ""),
            profile=_list(env, "BENCH_PROFILE", ""),
            service_envs=env.get("BENCH_SERVICE_ENVS", "1") != "0",
        )
