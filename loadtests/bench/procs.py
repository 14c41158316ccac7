"""The benchmark's processes on one broker: the mesh services (devstack definitions), the floor responder and the
two peers, each optionally wrapped for a what-if run (BENCH_WHATIF) or a profile (pyinstrument)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from a2amesh.runtime import STARTUP_SETTLE
from a2amesh.settings import MqttSettings
from devstack.pki import TESTER, Identity, Role
from devstack.processes import ManagedProcess, free_port, http_ready
from devstack.stack import Ports, Stack
from loadtests.bench.envs import ServiceEnvs
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


class BenchStack:
    """Starts and stops every process of a run; names them for the report."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        shutil.rmtree(settings.report_dir / "run", ignore_errors=True)  # no broker state from an earlier run
        shutil.rmtree(settings.report_dir / "profiles", ignore_errors=True)
        self.stack = Stack(
            run_dir=settings.report_dir / "run", ports=Ports.random(), org=ORG, unit=UNIT, agents={}, tester=True
        )
        self.sdk_http_port = free_port()
        self.profile_dir = settings.report_dir / "profiles"
        self.envs = ServiceEnvs(settings.report_dir / "envs")

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
        """Process ids by name (running ones only)."""
        processes = self.stack.processes
        return {name: processes[name].pid for name in names if name in processes and processes[name].running}

    def all_pids(self) -> dict[str, int]:
        return self.pids(*self.stack.processes)

    # -- definitions ----------------------------------------------------------------------------------------------
    def _wrap(self, process: ManagedProcess, module: str, *args: str) -> ManagedProcess:
        """Run `python -m module args` through the what-if and profiling wrappers the settings ask for; a mesh
        service without either runs in its own environment (see envs.py)."""
        patches = ",".join(self.settings.whatif)
        as_deployed = self.settings.service_envs and not patches and process.name not in self.settings.profile
        if as_deployed and not module.startswith(BENCH_SCRIPTS):
            process.argv = [self.envs.python(module), "-m", module, *args]
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

    def start_core(self, coordinator_env: dict[str, str] | None = None) -> None:
        """Broker, Redis, registry, the echo agent and the coordinator (the task store comes later); `coordinator_env`:
        more MESH_* settings for the coordinator (a measurement's own timeouts)."""
        stack = self.stack
        stack.run_dir.mkdir(parents=True, exist_ok=True)
        for process in (stack.broker(), stack.redis()):
            self.launch(process)
        self.launch(self._wrap(stack.registry(), "mesh_registry"))
        self.launch(self._wrap(stack.agent("echo", "agent_echo"), "agent_echo"))
        coordinator = stack.coordinator()
        coordinator.env.update(UNLIMITED)  # the per-key rate limit (50/s) would measure the policy, not the face
        coordinator.env.update(coordinator_env or {})
        self.launch(self._wrap(coordinator, "mesh_coordinator"))

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

    def start_taskstore(self) -> None:
        self.launch(self._wrap(self.stack.taskstore(), "mesh_taskstore"))

    def start_research(self) -> None:
        self.launch(self._wrap(self.stack.agent("research", "agent_research"), "agent_research"))

    def stop(self, *names: str) -> None:
        for name in names:
            if name in self.stack.processes:
                self.stack.processes[name].stop()

    def stop_all(self) -> None:
        self.stack.stop()
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
