"""The registry through outages, on a private broker and Redis (so stopping them disturbs no other test):
Redis restarts, broker restarts, registry restarts, and SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from a2amesh.models import AgentCard
from devstack.processes import free_port
from devstack.stack import Ports, Stack
from mesh_registry.index import AgentIndex, AgentRecord

from .helpers import Registry, card, eventually, new_address, open_publisher, skill, start_registry


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A private broker and Redis; the test starts the registry itself."""
    ports = Ports(mqtt=free_port(), redis=free_port(), registry=free_port(), taskstore=0, coordinator=0)
    private = Stack(run_dir=tmp_path, ports=ports, tester=True)
    try:
        private.launch(private.broker())
        private.launch(private.redis())
        yield private
    finally:
        private.stop()


async def launch_registry(stack: Stack) -> Registry:
    process, url = await asyncio.to_thread(start_registry, stack, stack.redis_url)
    return Registry(stack, process, url, stack.redis_url)


async def health(registry: Registry) -> tuple[int, dict]:
    response = await registry.get("/healthz")
    return response.status_code, response.json()


async def wait_health(registry: Registry, code: int, body: dict, within: float = 15.0) -> None:
    async def probe() -> bool:
        return await health(registry) == (code, body)

    await eventually(probe, within, f"/healthz {code} {body}")


async def test_redis_restart_rebuilds_the_index(stack: Stack) -> None:
    registry = await launch_registry(stack)
    stays, leaves, arrives = new_address("stays"), new_address("leaves"), new_address("arrives")
    mqtt = stack.tester_settings()
    async with open_publisher(mqtt) as publisher:
        await publisher.publish(stays, card("Stays", [skill("keep", "k")]), load=0.3)
        await publisher.publish(leaves, card("Leaves", [skill("go")]))
        await registry.wait_record(stays)
        await registry.wait_record(leaves)

        await asyncio.to_thread(stack["redis"].stop)
        await wait_health(registry, 503, {"status": "unavailable", "down": ["redis"]})
        lookup = await registry.get("/agents", skill="keep")
        assert lookup.status_code == 503 and "index unavailable" in lookup.json()["error"]

        # changes while Redis is away must not be lost
        await publisher.publish(arrives, card("Arrives", [skill("keep")]))
        await publisher.clear(leaves)
        await asyncio.sleep(0.5)

        await asyncio.to_thread(stack["redis"].start)
        await asyncio.to_thread(stack["redis"].wait_ready, 15)
        await wait_health(registry, 200, {"status": "ok"})

        assert (await registry.wait_record(stays, within=15))["load"] == 0.3
        await registry.wait_record(arrives, within=15)
        await registry.wait_gone(leaves)

        async def both_found() -> bool:
            agents = (await registry.get("/agents", skill="keep")).json()["agents"]
            return [item["address"] for item in agents] == [str(arrives), str(stays)]

        await eventually(both_found, 10, "skill lookup rebuilt")
        await registry.wait_log("index incomplete")

    assert await asyncio.to_thread(registry.process.stop) == 0, registry.process.log_tail()
    assert "registry stopped" in registry.process.log_tail()


async def test_broker_restart(stack: Stack) -> None:
    registry = await launch_registry(stack)
    address = new_address("steady")
    mqtt = stack.tester_settings()
    async with open_publisher(mqtt) as publisher:
        await publisher.publish(address, card("Steady", [skill("s")]))
        await registry.wait_record(address)
        publisher.topics.clear()  # keep the card through the restart

    await asyncio.to_thread(stack["broker"].stop)
    await wait_health(registry, 503, {"status": "unavailable", "down": ["mqtt"]})
    assert await registry.record(address) is not None  # the index still answers while the broker is away

    await asyncio.to_thread(stack["broker"].start)
    await asyncio.to_thread(stack["broker"].wait_ready, 15)
    await wait_health(registry, 200, {"status": "ok"})
    async with open_publisher(mqtt) as publisher:
        await publisher.publish(address, card("Steady", [skill("s")]), status="offline")
        await registry.wait_record(address, lambda record: record["status"] == "offline")


async def test_registry_restart_drops_cards_cleared_while_away(stack: Stack) -> None:
    registry = await launch_registry(stack)
    kept, cleared = new_address("kept"), new_address("cleared")
    mqtt = stack.tester_settings()
    async with open_publisher(mqtt) as publisher:
        await publisher.publish(kept, card("Kept", [skill("s")]))
        await publisher.publish(cleared, card("Cleared", [skill("s")]))
        await registry.wait_record(kept)
        await registry.wait_record(cleared)

        assert await asyncio.to_thread(registry.process.stop) == 0
        await publisher.clear(cleared)
        # and a record no card backs at all, as a persistent Redis could hold from an older life
        redis = Redis.from_url(stack.redis_url, decode_responses=True)
        try:
            ghost = AgentRecord.of(new_address("ghost"), AgentCard.from_wire(card("Ghost", [skill("s")])))
            await AgentIndex(redis).put(ghost)
        finally:
            await redis.aclose()

        await asyncio.to_thread(registry.process.start)
        await asyncio.to_thread(registry.process.wait_ready, 30)

        await registry.wait_record(kept)
        await registry.wait_gone(cleared)
        assert await registry.record(ghost.address) is None
