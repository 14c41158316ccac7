"""Fixtures for the registry's tests: a real registry process on the session's broker and Redis, and a card
publisher that clears what it published."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from devstack.fixtures import BrokerHandle, RedisHandle
from devstack.processes import free_port
from devstack.stack import Ports, Stack

from .helpers import REGISTRY_DB, Publisher, Registry, open_publisher, start_registry


@pytest.fixture(scope="session")
def registry(
    broker: BrokerHandle, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """One registry process for the registry's tests, on the session broker and its own Redis database."""
    redis_port = int(redis_server.url.rsplit(":", 1)[1].split("/", 1)[0])
    ports = Ports(mqtt=broker.port, redis=redis_port, registry=free_port(), taskstore=0, coordinator=0)
    # a unit of its own gives it a client id no other suite's registry uses on the shared broker
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("registry"),
        ports=ports,
        unit=f"regtest{uuid.uuid4().hex[:8]}",
        broker_of=broker.stack,
    )
    redis_url = redis_server.url.rsplit("/", 1)[0] + f"/{REGISTRY_DB}"  # the registry's ACL user
    process, url = start_registry(stack, redis_url)
    yield Registry(stack, process, url, redis_url)
    stack.stop()


@pytest.fixture
async def publisher(broker: BrokerHandle) -> AsyncIterator[Publisher]:
    """A card publisher on the session broker; every card it published is cleared after the test."""
    async with open_publisher(broker.settings) as item:
        yield item
