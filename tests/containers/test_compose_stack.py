"""The Compose stack for real: every image built with Podman from local Debian-built bases, the stack started
with podman-compose on free loopback ports under a project name of its own, and checked through the containers.

What `make container-test` runs (and `make test` with it). It installs what it needs (infra/containers/
setup-podman.sh: podman, podman-compose, runc, iptables, debootstrap from Debian's packages), builds the base
images from Debian's packages (infra/containers/build-bases.sh, cached by recipe), then builds each service image
as compose.yaml's `build:` says, with those bases as its build arguments. The stack runs from a project folder of
its own whose .env is the repository's with the bases, the published ports and the public URL changed, so it never
meets a `make up` stack or another run. It leaves no container, network or volume behind; the images stay, tagged
`container-test`, as the build cache of the next run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from a2amesh.settings import MqttSettings
from a2amesh.topics import AgentAddress
from devstack.processes import free_port
from mesh_taskstore.partition import Partition
from tests.conftest import eventually
from tests.security_helpers import connect_error

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "infra" / "containers"
PKI = REPO / "infra" / "broker-certs"
ENGINE = "podman"
COMPOSE = "podman-compose"
TAG = "container-test"
HEALTHY_WITHIN = 300
"""Seconds the whole stack may take to become healthy (the services' start periods are 5 to 20 s)."""

# cold, the base images and every service image are built in the first test's setup
pytestmark = pytest.mark.timeout(1800)


def run(argv: list[str], *, env: dict[str, str], cwd: Path = REPO, timeout: float = 900) -> str:
    """Run a command to completion (bounded) and return its output; fail with both streams when it fails."""
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"$ {' '.join(argv)}\n(exit {result.returncode})\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout


def dotenv(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def substitute(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}` interpolation, the one form compose.yaml uses."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda match: env[match[1]], value)


@pytest.fixture(scope="module")
def engine_env() -> dict[str, str]:
    """The environment every podman command runs in: this project's containers.conf, and Docker's image format
    (the OCI format has no HEALTHCHECK, which Buildah would drop)."""
    env = dict(os.environ)
    env.pop("CONTAINERS_CONF", None)
    env["CONTAINERS_CONF"] = run(["bash", str(SCRIPTS / "setup-podman.sh")], env=env).strip()
    env["BUILDAH_FORMAT"] = "docker"
    return env


@pytest.fixture(scope="module")
def settings(engine_env: dict[str, str]) -> dict[str, str]:
    """The repository's .env with the locally built bases and this run's image tag."""
    bases = dotenv_lines(run(["bash", str(SCRIPTS / "build-bases.sh")], env=engine_env, timeout=1200))
    assert set(bases) == {
        "IMAGE_PYTHON",
        "IMAGE_UV",
        "IMAGE_MOSQUITTO",
        "IMAGE_REDIS",
        "IMAGE_REDIS_TAG",
        "IMAGE_POSTGRES",
        "IMAGE_POSTGRES_TAG",
    }
    return dotenv(REPO / ".env") | bases | {"IMAGE_TAG": TAG}


def dotenv_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def images(engine_env: dict[str, str], settings: dict[str, str]) -> dict[str, str]:
    """Every image compose.yaml builds, built as its `build:` says (Dockerfile, context, arguments), by service."""
    built: dict[str, str] = {}
    for name, service in yaml.safe_load((REPO / "compose.yaml").read_text())["services"].items():
        if "build" not in service:
            continue
        build, image = service["build"], substitute(service["image"], settings)
        arguments = [f"--build-arg={key}={substitute(value, settings)}" for key, value in build.get("args", {}).items()]
        run(
            [ENGINE, "build", "--quiet", "-f", build["dockerfile"], *arguments, "-t", image, build["context"]],
            env=engine_env,
        )
        built[name] = image
    return built


@dataclass
class ComposeStack:
    project: str
    folder: Path
    env: dict[str, str]
    settings: dict[str, str]
    services: list[str]
    variant: str
    unprofiled: list[str] = field(default_factory=list)

    def compose(self, *argv: str, timeout: float = 300) -> str:
        return run([COMPOSE, "-p", self.project, *argv], env=self.env, cwd=self.folder, timeout=timeout)

    def port(self, name: str) -> int:
        return int(self.settings[f"PUBLISH_{name.upper()}_PORT"])

    def containers(self, *filters: str) -> list[str]:
        labels = [f"--filter=label=com.docker.compose.project={self.project}", *(f"--filter={f}" for f in filters)]
        return run([ENGINE, "ps", "-a", *labels, "--format", "{{.Names}}"], env=self.env).split()

    def container(self, service: str) -> str:
        (name,) = self.containers(f"label=com.docker.compose.service={service}")
        return name

    def wait_healthy(self, *services: str) -> None:
        script = [str(SCRIPTS / "wait-healthy.sh"), ENGINE, self.project, str(HEALTHY_WITHIN), *services]
        run(["bash", *script], env=self.env, timeout=HEALTHY_WITHIN + 60)

    def remove_everything(self) -> None:
        """Whatever a failed run may have left: containers, then the project's volumes and networks."""
        label = f"label=com.docker.compose.project={self.project}"
        listings = {"container": ["ps", "-a"], "volume": ["volume", "ls"], "network": ["network", "ls"]}
        for kind, listing in listings.items():
            name_field = "{{.Names}}" if kind == "container" else "{{.Name}}"
            argv = [ENGINE, *listing, f"--filter={label}", "--format", name_field]
            names = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60).stdout.split()
            if names:
                anonymous_volumes_too = ["-v"] if kind == "container" else []
                argv = [ENGINE, kind, "rm", "-f", *anonymous_volumes_too, *names]
                subprocess.run(argv, env=self.env, capture_output=True, timeout=120)


COMPOSE_VARIANTS = {"sqlite": (), "postgres": ("compose.postgres.yaml",)}
"""The files loaded between compose.yaml and compose.extend.yaml: `make up` as it is (one task store on SQLite), and
with the task store as two partitions on PostgreSQL (docs/operations.md, "Scale")."""
RUN_VARIANTS = os.environ.get("MESH_COMPOSE_VARIANTS", "sqlite").split(",")
"""The variants this run starts: `make container-test` runs both; `make test` (CI) the one `make up` runs, since
each stack takes minutes to start and stop."""


@pytest.fixture(scope="module", params=[variant for variant in COMPOSE_VARIANTS if variant in RUN_VARIANTS])
def stack(
    request: pytest.FixtureRequest,
    engine_env: dict[str, str],
    settings: dict[str, str],
    images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ComposeStack]:
    # the identities every container mounts, readable by the containers' own users, as `make up` makes them
    run([sys.executable, "-m", "devstack", "certs"], env=engine_env)
    for path in PKI.rglob("*"):
        if path.is_file() and path.name != "ca.key":
            path.chmod(path.stat().st_mode | 0o444)

    folder = tmp_path_factory.mktemp("compose")
    files = ["compose.yaml", *COMPOSE_VARIANTS[request.param], "compose.extend.yaml"]
    for name in files:
        shutil.copy(REPO / name, folder / name)
    for name in ("infra", "services"):  # the bind mounts' sources, where compose.yaml names them
        (folder / name).symlink_to(REPO / name)
    # the registry, task store and Redis are not published; coordinator-1 (profile replicas) is where the engine
    # starts profiled services too (podman-compose 1.0 knows no profiles)
    publishing = ("BROKER", "COORDINATOR", "CONSOLE", "COORDINATOR_1", "COORDINATOR_1_GRPC")
    published = {f"PUBLISH_{name}_PORT": str(free_port()) for name in publishing}
    own = settings | published | {"MESH_PUBLIC_URL": f"http://127.0.0.1:{published['PUBLISH_COORDINATOR_PORT']}"}
    own |= {"COMPOSE_FILE": ":".join(files)}
    if request.param == "postgres":  # its test reads through coordinator-1 (profile replicas), where profiles count
        own |= {"COMPOSE_PROFILES": "replicas"}
    (folder / ".env").write_text("".join(f"{key}={value}\n" for key, value in own.items()))

    # every service of the files, and whether one runs without a profile (a later file adds or changes services)
    services: dict[str, bool] = {}
    for name in files:
        for service, spec in (yaml.safe_load((REPO / name).read_text())["services"] or {}).items():
            services[service] = services.get(service, True) and not spec.get("profiles")
    # podman-compose reads COMPOSE_FILE from the environment only
    env = engine_env | {key: own[key] for key in ("COMPOSE_FILE", "COMPOSE_PROFILES") if key in own}
    project = f"a2amesh-test-{request.param}-{os.getpid()}"
    compose_stack = ComposeStack(project, folder, env, own, list(services), request.param)
    compose_stack.unprofiled = [name for name, unprofiled in services.items() if unprofiled]
    try:
        compose_stack.compose("up", "-d", timeout=600)
        compose_stack.wait_healthy()
        yield compose_stack
    finally:
        try:
            if compose_stack.containers():
                compose_stack.compose("down", "-v", timeout=300)
        finally:
            compose_stack.remove_everything()


def api_key() -> str:
    return (PKI / "coordinator-api-keys").read_text().split()[0]


async def send_readme_request(stack: ComposeStack, text: str, skill: str = "echo") -> dict:
    """README.md's first request (SendMessage to the echo skill, or another), sent to the coordinator container."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {"messageId": f"m-{time.time_ns()}", "role": "ROLE_USER", "parts": [{"text": text}]},
            "metadata": {"skill": skill},
        },
    }
    headers = {"A2A-Version": "1.0", "Authorization": f"Bearer {api_key()}"}
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.post(f"http://127.0.0.1:{stack.port('coordinator')}/", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]["task"]


async def test_the_readme_request_completes(stack: ComposeStack) -> None:
    task = await send_readme_request(stack, "hello mesh")
    assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
    assert "hello mesh" in task["artifacts"][0]["parts"][0]["text"]


async def test_the_broker_refuses_an_anonymous_client(stack: ComposeStack) -> None:
    """Over TLS that trusts the mesh's CA, but with no certificate and no credentials: refused. The control, the
    `mesh-admin` identity with its own files, gets in through the same published port."""
    anonymous = MqttSettings(host="127.0.0.1", port=stack.port("broker"), tls=True, ca_file=PKI / "ca.crt")
    assert await connect_error(anonymous, "anonymous-probe") is not None
    admin = anonymous.model_copy(
        update={
            "username": "mesh-admin",
            "password_file": PKI / "clients" / "mesh-admin.password",
            "cert_file": PKI / "clients" / "mesh-admin.crt",
            "key_file": PKI / "clients" / "mesh-admin.key",
        }
    )
    assert await connect_error(admin, "mesh-admin") is None


async def get_task(stack: ComposeStack, task_id: str, coordinator: str = "coordinator") -> dict | None:
    """GetTask through a coordinator with the README's key (the task store's port is not published)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": task_id}}
    headers = {"A2A-Version": "1.0", "Authorization": f"Bearer {api_key()}"}
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            answer = await client.post(f"http://127.0.0.1:{stack.port(coordinator)}/", json=body, headers=headers)
        except httpx.TransportError:
            return None
    return answer.json().get("result") if answer.status_code == 200 else None


async def test_a_restarted_task_store_keeps_its_tasks(stack: ComposeStack) -> None:
    """The task survives a task store restart; the coordinator is restarted after it, so its answer can only come
    from the store, not from what the coordinator remembers of the task."""
    task = await send_readme_request(stack, "remember me across a restart")

    async def recorded_completed() -> dict | None:
        found = await get_task(stack, task["id"])
        return found if found and found["status"]["state"] == "TASK_STATE_COMPLETED" else None

    before = await eventually(recorded_completed, timeout=60, what="the task COMPLETED through GetTask")
    run([ENGINE, "restart", stack.container("taskstore")], env=stack.env, timeout=120)
    stack.wait_healthy("taskstore")
    run([ENGINE, "restart", stack.container("coordinator")], env=stack.env, timeout=120)
    stack.wait_healthy("coordinator")
    after = await eventually(recorded_completed, timeout=60, what="the task still there after the restarts")
    assert after["id"] == before["id"]
    assert after["artifacts"] == before["artifacts"]


async def test_both_partitions_record_into_one_database_and_either_answers(stack: ComposeStack) -> None:
    """With compose.postgres.yaml: a task of echo (whose event topic is partition 0's, `taskstore`) and one of writer
    (partition 1's, `taskstore-1`) both end COMPLETED as read through `coordinator` (which reads `taskstore`) and
    `coordinator-1` (which reads `taskstore-1`), and PostgreSQL holds each task's events, each once."""
    if stack.variant != "postgres":
        pytest.skip("the task store runs as partitions with compose.postgres.yaml only")
    shares = {
        agent: Partition(1, 2).owns(AgentAddress("acme", "default", agent).event_topic) for agent in ("echo", "writer")
    }
    assert shares == {"echo": False, "writer": True}, f"pick agents of both partitions: {shares}"
    echo = await send_readme_request(stack, "recorded by partition 0")
    writer = await send_readme_request(stack, "Partitions\n\nEvery event is recorded once.", skill="write-report")
    for task in (echo, writer):
        for coordinator in ("coordinator", "coordinator_1"):

            async def completed(task_id: str = task["id"], reader: str = coordinator) -> dict | None:
                found = await get_task(stack, task_id, reader)
                return found if found and found["status"]["state"] == "TASK_STATE_COMPLETED" else None

            await eventually(completed, timeout=60, what=f"task {task['id']} COMPLETED through {coordinator}")
    query = (
        "SELECT task_id, count(*), count(DISTINCT event_id) FROM task_event "
        f"WHERE task_id IN ('{echo['id']}', '{writer['id']}') GROUP BY task_id"
    )
    argv = [ENGINE, "exec", stack.container("postgres"), "psql", "-U", "taskstore", "-d", "taskstore", "-tA", "-F,"]
    rows = [line.split(",") for line in run([*argv, "-c", query], env=stack.env).split()]
    assert {task_id for task_id, _, _ in rows} == {echo["id"], writer["id"]}, rows
    assert all(int(count) >= 2 and count == distinct for _, count, distinct in rows), rows


def test_down_leaves_nothing_running(stack: ComposeStack) -> None:
    # one container per service of the files (and per profiled one, where the engine ignores profiles)
    assert len(stack.unprofiled) <= len(stack.containers()) <= len(stack.services), stack.containers()
    stack.compose("down", "-v")
    assert stack.containers() == []
