"""`python -m loadtests loadtest`: a bounded, headless Locust run with CSV and HTML reports.

Without MESH_COORDINATOR_URL it starts the whole mesh as local processes on free loopback ports (devstack) and stops
it afterwards; with it, it loads that mesh (its broker, TLS files and credentials from MESH_MQTT__*)."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from devstack.pki import TESTER, Identity, Role
from devstack.processes import REPO_ROOT
from devstack.stack import Ports, Stack

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
UNLIMITED = {"MESH_RATE_LIMIT": "1000000", "MESH_RATE_BURST": "1000000"}
"""The coordinator's per-key rate limit (50/s by default) would cap a load test at the policy, not at the mesh:
a mesh this module starts lifts it (set MESH_RATE_LIMIT / MESH_RATE_BURST to test the limiter itself)."""
REPORT_PREFIX = "loadtest"


@dataclass(frozen=True)
class Target:
    """The mesh under load: its HTTP face, its broker, and how MQTT users authenticate there."""

    coordinator_url: str
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    org: str = "acme"
    unit: str = "default"
    mqtt_env: Mapping[str, str] = field(default_factory=dict)
    """MESH_MQTT__* for the Locust process (TLS files, credentials), on top of the environment."""
    api_key: str | None = None
    """The coordinator's API key (None: LOCUST_API_KEY / MESH_API_KEY from the environment)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Target | None:
        """The mesh named by MESH_COORDINATOR_URL (+ MESH_MQTT__*, MESH_ORG/UNIT), or None."""
        env = os.environ if env is None else env
        url = env.get("MESH_COORDINATOR_URL")
        if not url:
            return None
        return cls(
            url,
            env.get("MESH_MQTT__HOST", "127.0.0.1"),
            int(env.get("MESH_MQTT__PORT", "1883")),
            env.get("MESH_ORG", "acme"),
            env.get("MESH_UNIT", "default"),
        )

    @classmethod
    def of(cls, stack: Stack) -> Target:
        """A devstack mesh; MQTT users connect as its test identity (the stack must be made with tester=True)."""
        tester = stack.identity_env(Identity(TESTER, Role.TESTER))
        return cls(stack.coordinator_url, "127.0.0.1", stack.ports.mqtt, stack.org, stack.unit, tester, stack.api_key)


@dataclass(frozen=True)
class LoadSettings:
    """How many users, for how long, and where the reports go."""

    users: int = 20
    spawn_rate: float = 10.0
    run_time: str = "30s"
    report_dir: Path = REPO_ROOT / "reports" / "loadtest"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LoadSettings:
        env = os.environ if env is None else env
        return cls(
            users=int(env.get("LOCUST_USERS", cls.users)),
            spawn_rate=float(env.get("LOCUST_SPAWN_RATE", cls.spawn_rate)),
            run_time=env.get("LOCUST_RUN_TIME", cls.run_time),
            report_dir=Path(env.get("LOCUST_REPORT_DIR", str(cls.report_dir))).resolve(),
        )

    @property
    def seconds(self) -> int:
        return parse_duration(self.run_time)


def parse_duration(text: str) -> int:
    """Seconds in a Locust run time such as `30s`, `2m`, `1h30m` or a plain number of seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", text)
    if not parts or not any(parts.groups()):
        raise ValueError(f"not a run time: {text!r} (use e.g. 30s, 2m, 1h30m)")
    hours, minutes, seconds = (int(group or 0) for group in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def check_loopback(host: str) -> None:
    """Load goes to this machine only, unless LOCUST_ALLOW_REMOTE=1 says otherwise on purpose."""
    if os.environ.get("LOCUST_ALLOW_REMOTE") == "1":
        return
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    if not all(ipaddress.ip_address(address).is_loopback for address in addresses):
        raise SystemExit(f"refusing to load {host} ({', '.join(sorted(addresses))}): not loopback")


def locust_command(target: Target, settings: LoadSettings, out_dir: Path) -> list[str]:
    prefix = out_dir / REPORT_PREFIX
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(settings.users), "--spawn-rate", str(settings.spawn_rate), "--run-time", settings.run_time,
        "--stop-timeout", "10", "--host", target.coordinator_url,
        "--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary",
        "--mqtt-host", target.mqtt_host, "--mqtt-port", str(target.mqtt_port),
        "--mesh-org", target.org, "--mesh-unit", target.unit,
        *(["--api-key", target.api_key] if target.api_key else []),
    ]  # fmt: skip


def run_locust(target: Target, settings: LoadSettings, *, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run Locust headless against `target`; reports land in settings.report_dir (loadtest_stats.csv, ...)."""
    check_loopback(urlparse(target.coordinator_url).hostname or "")
    check_loopback(target.mqtt_host)
    settings.report_dir.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PYTHONPATH")
    return subprocess.run(
        locust_command(target, settings, settings.report_dir),
        cwd=REPO_ROOT,
        env={**os.environ, **target.mqtt_env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), path]))},
        capture_output=capture,
        text=True,
        timeout=settings.seconds + 120,
        check=False,
    )


def main() -> int:
    settings = LoadSettings.from_env()
    target = Target.from_env()
    stack: Stack | None = None
    if target is None:
        run_dir = settings.report_dir / "mesh"  # the mesh's logs stay beside the report
        shutil.rmtree(run_dir, ignore_errors=True)
        limits = {name: os.environ.get(name, value) for name, value in UNLIMITED.items()}
        stack = Stack(run_dir=run_dir, ports=Ports.random(), tester=True, extra_env=limits)
        print(f"starting a local mesh in {run_dir} ...", flush=True)
        stack.start()
        target = Target.of(stack)
    try:
        print(f"locust: {settings.users} users for {settings.run_time} against {target.coordinator_url} and "
              f"mqtt://{target.mqtt_host}:{target.mqtt_port}", flush=True)  # fmt: skip
        completed = run_locust(target, settings)
    finally:
        if stack is not None:
            stack.stop()
    print(f"reports: {settings.report_dir}/{REPORT_PREFIX}.html and {REPORT_PREFIX}_stats.csv", flush=True)
    return completed.returncode
