"""The benchmark's processes on one broker: the mesh services (devstack definitions), the floor responder and the
two peers, each optionally wrapped for a what-if run (BENCH_WHATIF) or a profile (pyinstrument), and the PostgreSQL
server the task store records into in `record-postgres`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from a2amesh.runtime import STARTUP_SETTLE
from a2amesh.settings import MqttSettings
from devstack.pki import TESTER, Identity, Role
from devstack.postgres import postgres_server
from devstack.processes import ManagedProcess, free_port, http_ready
from devstack.stack import Ports, Stack
from loadtests.bench.envs import ServiceEnvs, image_optimization
from loadtests.bench.settings import BenchSettings
from loadtests.loadtest import UNLIMITED

ORG, UNIT = "acme", "default"
FLOOR_REQUEST_TOPIC = "bench/floor/request"
FLOOR_EVENT_TOPIC = "bench/floor/event"
SDK_MQTT_AGENT = "sdk-echo"
POOL = "bench-pool"
SDK_DEFAULTS = {"OTEL_INSTRUMENTATION_A2A_SDK_ENABLED": "true"}
"""The a2a-sdk peer runs as the SDK does out of the box: a2amesh.tracing turns the SDK's own span decorators off in
the mesh's processes when tracing is off, and the benchmark process (which imports a2amesh) would pass that on."""

SETTLE_SECONDS = STARTUP_SETTLE + 1.0
"""Idle means past start-up: the services hand their start-up heap back STARTUP_SETTLE seconds in (a2amesh.runtime),
so they are measured a second after that, not in the middle of it."""
BENCH_SCRIPTS = "loadtests."
"""Modules under this prefix are the benchmark's own scripts (the floor, the peers); every other one is a mesh
service, run as deployed."""
POSTGRES = "postgres"
"""The PostgreSQL server's name in the figures: its postmaster, with the backends it forks counted in its CPU."""
POSTGRES_SETTINGS = {"fsync": "on"}
"""The server as deployed on durability: devstack's throwaway server turns fsync off (a test's data is thrown away),
but PostgreSQL in production syncs its commits, as the store's SQLite does."""


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could start on this machine (no binaries, no `postgres` account...): the reason."""


class BenchStack:
    """Starts and stops every process of a run; names them for the report."""

    def __init__(self, settings: BenchSettings, run: str = "run", envs: ServiceEnvs | None = None) -> None:
        """`run`: the folder under the report's for this stack's processes (a second stack, the twin, has its own);
        `envs`: the service environments of another stack, to run from them as they are (a new ServiceEnvs builds
        them again, under the other stack's running processes)."""
        self.settings = settings
        shutil.rmtree(settings.report_dir / run, ignore_errors=True)  # no broker state from an earlier run
        self.profile_dir = settings.report_dir / "profiles" / ("" if run == "run" else run)
        shutil.rmtree(self.profile_dir, ignore_errors=True)
        self.stack = Stack(
            run_dir=settings.report_dir / run, ports=Ports.random(), org=ORG, unit=UNIT, agents={}, tester=True
        )
        self.sdk_http_port = free_port()
        self.envs = envs or ServiceEnvs(settings.report_dir / "envs")
        self.postgres_pid: int | None = None
        self.coordinators: dict[str, str] = {}
        """Each running coordinator's process name (as devstack names the replicas) and where it serves the HTTP
        face: `coordinator` first, then `coordinator-1`..."""
        self._servers = contextlib.ExitStack()
        """What stops after the mesh's processes: the PostgreSQL server (its store stops first)."""

    # -- addresses ------------------------------------------------------------------------------------------------
    @property
    def mqtt(self) -> MqttSettings:
        """The benchmark's own broker credentials (the test identity: any topic, any client id)."""
        return self.stack.tester_settings()

    @property
    def coordinator_url(self) -> str:
        return self.stack.coordinator_url

    @property
    def sdk_http_url(self) -> str:
        return f"http://127.0.0.1:{self.sdk_http_port}"

    def pids(self, *names: str) -> dict[str, int]:
        """Process ids by name (running ones only; `postgres`: the PostgreSQL server's postmaster)."""
        processes = self.stack.processes
        found = {name: processes[name].pid for name in names if name in processes and processes[name].running}
        if POSTGRES in names and self.postgres_pid is not None and Path(f"/proc/{self.postgres_pid}").exists():
            found[POSTGRES] = self.postgres_pid
        return found

    def all_pids(self) -> dict[str, int]:
        return self.pids(*self.stack.processes, POSTGRES)

    # -- definitions ----------------------------------------------------------------------------------------------
    def _as_deployed(self, name: str, module: str) -> bool:
        """Whether the process runs in its service's own environment: a mesh service, neither patched nor profiled."""
        wrapped = bool(self.settings.whatif) or name in self.settings.profile
        return self.settings.service_envs and not wrapped and not module.startswith(BENCH_SCRIPTS)

    def prepare(self, name: str, module: str, extras: tuple[str, ...] = ()) -> None:
        """Build the environment `name` will run from now, ahead of its start (a second start only reuses it)."""
        if self._as_deployed(name, module):
            self.envs.python(module, extras)

    def _wrap(self, process: ManagedProcess, module: str, *args: str, extras: tuple[str, ...] = ()) -> ManagedProcess:
        """Run `python -m module args` through the what-if and profiling wrappers the settings ask for; a mesh
        service without either runs in its own environment, with its package's `extras` (see envs.py)."""
        patches = ",".join(self.settings.whatif)
        if self._as_deployed(process.name, module):
            process.argv = [self.envs.python(module, extras), "-m", module, *args]
            if optimize := image_optimization(module):
                process.env["PYTHONOPTIMIZE"] = optimize
            return process
        inner = ["loadtests.bench.whatif", patches, module, *args] if patches else [module, *args]
        if process.name in self.settings.profile:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            session = self.profile_dir / f"{process.name}.pyisession"
            process.argv = [sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(session), "-m", *inner]
        else:
            process.argv = [sys.executable, "-m", *inner]
        return process

    def _script(
        self, name: str, module: str, ready: Callable[[], bool], identity: Identity, *args: str, **env: str
    ) -> ManagedProcess:
        process = self.stack.command(name, [], env, ready, identity)
        return self._wrap(process, module, *args)

    def launch(self, process: ManagedProcess) -> ManagedProcess:
        return self.stack.launch(process, timeout=60)

    def start_core(self, coordinator_env: dict[str, str] | None = None, coordinators: int = 1) -> None:
        """Broker, Redis, registry, the echo agent and the coordinator (the task store comes later); `coordinator_env`:
        more MESH_* settings for the coordinator (a measurement's own timeouts); `coordinators`: replicas of it, as
        Kubernetes runs them (`coordinator`, `coordinator-1`, ...: their own identities, rate limits in Redis)."""
        stack = self.stack
        stack.run_dir.mkdir(parents=True, exist_ok=True)
        for process in (stack.broker(), stack.redis()):
            self.launch(process)
        self.launch(self._wrap(stack.registry(), "mesh_registry"))
        self.launch(self._wrap(stack.agent("echo", "agent_echo"), "agent_echo"))
        replicas = [stack.coordinator(replicated=coordinators > 1)]
        replicas += [stack.coordinator_replica(n, free_port(), free_port()) for n in range(1, coordinators)]
        for coordinator in replicas:
            coordinator.env.update(UNLIMITED)  # the per-key rate limit (50/s) would measure the policy, not the face
            coordinator.env.update(coordinator_env or {})
            self.launch(self._wrap(coordinator, "mesh_coordinator"))
        self.coordinators = {process.name: process.env["MESH_PUBLIC_URL"] for process in replicas}

    def start_floor(self) -> None:
        log = self.stack.run_dir / "logs" / "floor.log"

        def ready() -> bool:
            return log.is_file() and "ready" in log.read_text(errors="replace")

        tester = Identity(TESTER, Role.TESTER)  # the floor's topics are outside the mesh's ACLs
        topics = (FLOOR_REQUEST_TOPIC, FLOOR_EVENT_TOPIC)
        self.launch(self._script("floor", "loadtests.bench.floor", ready, tester, *topics))

    def start_sdk_mqtt(self) -> None:
        ready = self.stack.agent_online(SDK_MQTT_AGENT)
        identity = Identity(SDK_MQTT_AGENT, Role.AGENT)
        module = "loadtests.bench.sdk_mqtt_echo"
        self.launch(self._script("sdk-mqtt-echo", module, ready, identity, MESH_AGENT_ID=SDK_MQTT_AGENT))

    def start_sdk_http(self) -> None:
        ready = http_ready(f"{self.sdk_http_url}/.well-known/agent-card.json")
        identity = Identity(TESTER, Role.TESTER)  # it uses no broker; command() wants an identity all the same
        self.launch(
            self._script(
                "sdk-http-echo",
                "loadtests.bench.sdk_http_echo",
                ready,
                identity,
                str(self.sdk_http_port),
                **SDK_DEFAULTS,
            )
        )

    def start_pool_replica(self, index: int) -> str:
        name = f"pool-echo-{index}"
        process = self.stack.agent(
            name, "agent_echo", MESH_POOL=POOL, MESH_MAX_CONCURRENT=str(self.settings.pool_slots)
        )
        self.launch(self._wrap(process, "agent_echo"))
        return name

    def start_taskstore(
        self, name: str = "taskstore", database_url: str | None = None, extras: tuple[str, ...] = ()
    ) -> None:
        """The task store as `name`, on the stack's SQLite database or on `database_url`. Under any name it is the
        store's one broker identity and client id: a store started after another stopped takes over its session, as
        a redeployed store does, so two of them must never run at once."""
        process = self.stack.taskstore()
        if database_url is not None:
            process.env["MESH_DATABASE_URL"] = database_url
        if name != process.name:
            process = dataclasses.replace(process, name=name, log_path=process.log_path.with_name(f"{name}.log"))
        self.launch(self._wrap(process, "mesh_taskstore", extras=extras))

    def start_postgres(self) -> str:
        """A PostgreSQL server on a free loopback port (devstack.postgres, as the tests start it, with fsync on),
        until stop_all; its SQLAlchemy URL. Its folder is a top-level temporary one, which the server's account
        can reach (it runs as `postgres` when the benchmark runs as root); its log is kept with the others."""
        root = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
        logs = self.stack.run_dir / "logs"
        self._servers.callback(shutil.rmtree, root, ignore_errors=True)
        self._servers.callback(_keep_log, root / "server.log", logs / f"{POSTGRES}.log")
        try:
            url = self._servers.enter_context(postgres_server(root, POSTGRES_SETTINGS))
            self.postgres_pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
        except subprocess.CalledProcessError as error:
            program = next((Path(arg).name for arg in error.cmd if "/" in str(arg)), str(error.cmd[0]))
            output = (error.stderr or b"").decode(errors="replace").strip().splitlines()
            raise PostgresUnavailable(f"{program} failed: {output[-1] if output else error}") from error
        except (OSError, KeyError, ValueError, subprocess.SubprocessError) as error:
            raise PostgresUnavailable(f"{type(error).__name__}: {error}") from error
        return url

    def start_research(self) -> None:
        self.launch(self._wrap(self.stack.agent("research", "agent_research"), "agent_research"))

    @contextlib.contextmanager
    def held(self, *names: str) -> Iterator[None]:
        """The named processes stopped (SIGSTOP) for the block, and continued (SIGCONT) after it, whatever happens:
        what they would send meanwhile waits in them."""
        stopped: list[int] = []
        try:
            for pid in self.pids(*names).values():
                stopped.append(pid)
                os.kill(pid, signal.SIGSTOP)
            yield
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def stop(self, *names: str) -> None:
        for name in names:
            if name in self.stack.processes:
                self.stack.processes[name].stop()

    def stop_all(self) -> None:
        self.stack.stop()
        self._servers.close()
        self.postgres_pid = None
        self._render_profiles()

    def _render_profiles(self) -> None:
        """Turn each profile session into a text report beside it."""
        for session in sorted(self.profile_dir.glob("*.pyisession")) if self.profile_dir.is_dir() else []:
            text = session.with_suffix(".txt")
            subprocess.run(
                [sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", "text", "-o", str(text)],
                check=False,
                timeout=120,
            )


def _keep_log(source: Path, target: Path) -> None:
    """Copy a server's log out of a folder about to be removed."""
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def settle(seconds: float = SETTLE_SECONDS) -> None:
    """Let freshly started processes finish their start-up work before they are measured idle."""
    time.sleep(seconds)


def mosquitto_version(binary: Path | str) -> str:
    try:
        output = subprocess.run([str(binary), "-h"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    first = (output.stdout or output.stderr).splitlines()
    return first[0].strip() if first else "unknown"
