"""Start, watch and stop local processes: the building blocks of the dev stack and of the tests' fixtures."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[4]


def default_signal_dispositions() -> None:
    """Run in a new child before exec: give SIGINT and SIGTERM their default handlers back.

    A child inherits ignored signals from its parent; a test suite started from a background shell job has SIGINT
    ignored, so a Python child would never see KeyboardInterrupt and a Ctrl-C test would hang or fail. Passing this
    as `preexec_fn` makes every process the tests start behave as one started from a terminal.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTEN_PORTS_FROM = 10_000
"""The low end of the ports `free_port` hands out (above the well-known and registered services tests may meet)."""
_handed_out: set[int] = set()
_choose = random.Random()


def ephemeral_ports() -> range:
    """The ports the kernel gives outgoing connections (and `bind(0)`), from /proc where it can be read."""
    try:
        low, high = (int(bound) for bound in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, and that no outgoing connection will take.

    A port from `bind(0)` lies in the kernel's ephemeral range, the range the local ends of outgoing connections
    come from too: between the moment a test picks it and the moment its service binds it, any connection a
    running service opens can take it ("address already in use", seen in CI when a coordinator started after the
    broker, Redis and the store had opened theirs). Ports below that range are only ever taken by a listener that
    names them, so they are chosen there, never twice in one process, and checked free by binding them once.
    """
    ephemeral = ephemeral_ports()
    below = range(LISTEN_PORTS_FROM, ephemeral.start)
    for _ in range(200 if len(below) >= 1000 else 0):  # a machine with a wide ephemeral range falls through
        port = _choose.choice(below)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_ready(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """A health check that passes once something accepts TCP connections on the port."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def http_ready(url: str, ca_file: str | None = None) -> Callable[[], bool]:
    """A health check that passes once `url` answers 200 (`ca_file`: the CA an https URL's server is checked with)."""

    def check() -> bool:
        verify = ssl.create_default_context(cafile=ca_file) if ca_file and url.startswith("https:") else True
        try:
            return httpx.get(url, timeout=1.0, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    return check


@dataclass
class ManagedProcess:
    """One child process with its log file and a readiness check."""

    name: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO_ROOT
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (its output goes to its log file)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        environment = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signal_dispositions,
        )
        log_file.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the readiness check passes; raise with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ready is None or self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """The process id (the process must have been started)."""
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: int) -> None:
        """Send a signal to the process."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the crash case, no chance to clean up."""
        self.signal(signal.SIGKILL)
        self.wait(5)

    def wait(self, timeout: float) -> int | None:
        """Wait for exit; the exit code, or None if it is still running."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; the exit code."""
        if self.process is None:
            return None
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            code = self.wait(timeout)
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                return self.wait(5)
            return code
        return self.process.returncode

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (gracefully) and start again, waiting until ready."""
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
