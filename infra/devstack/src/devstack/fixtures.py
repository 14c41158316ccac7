"""pytest fixtures over real processes: a Mosquitto with the project's config, a Redis, and the whole stack.
Loaded by the repository's root conftest.py, so every test suite starts its infrastructure the same way."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from a2amesh.settings import MqttSettings
from devstack.postgres import postgres_server
from devstack.processes import ManagedProcess
from devstack.stack import Ports, Stack


@dataclass
class BrokerHandle:
    """A running broker and how to reach it."""

    process: ManagedProcess
    port: int
    stack: Stack

    @property
    def settings(self) -> MqttSettings:
        """Test credentials that may use any topic and client id (the `mesh-tester` identity)."""
        return self.stack.tester_settings()


@dataclass
class RedisHandle:
    """A running redis-server and its URL."""

    process: ManagedProcess
    url: str


@pytest.fixture(scope="session")
def infra_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Stack object holding only the broker and Redis of the session (services are added by other fixtures)."""
    stack = Stack(run_dir=tmp_path_factory.mktemp("infra"), ports=Ports.random(), tester=True)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def broker(infra_stack: Stack) -> BrokerHandle:
    """A real Mosquitto with the project's broker policy, on a free loopback port, for the whole session."""
    process = infra_stack.processes.get("broker") or infra_stack.launch(infra_stack.broker())
    return BrokerHandle(process, infra_stack.ports.mqtt, infra_stack)


@pytest.fixture(scope="session")
def redis_server(infra_stack: Stack) -> RedisHandle:
    """A real redis-server on a free loopback port, for the whole session."""
    process = infra_stack.processes.get("redis") or infra_stack.launch(infra_stack.redis())
    return RedisHandle(process, infra_stack.redis_url)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (the machine's initdb/pg_ctl), as a SQLAlchemy URL. Its folder is
    a top-level temporary one: pytest's own is private to root, and the server runs as `postgres` there."""
    root = Path(tempfile.mkdtemp(prefix="mesh-postgres-"))
    try:
        with postgres_server(root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole mesh (broker, Redis, registry, task store, agents, coordinator) as local processes."""
    stack = Stack(run_dir=tmp_path_factory.mktemp("mesh"), ports=Ports.random(), tester=True)
    stack.start()
    yield stack
    stack.stop()


def logs_of(stack: Stack) -> Path:
    """Where a stack's process logs are (handy in assertion messages)."""
    return stack.run_dir / "logs"
