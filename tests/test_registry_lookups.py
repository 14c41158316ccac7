"""Routing asks the registry once per refresh, however many tasks find the cached answer stale at the same moment
(mesh_coordinator.directory.SingleFlight): at 16 tasks in flight each used to send its own query."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from devstack.stack import Stack
from mesh_coordinator.directory import RegistryClient
from mesh_coordinator.router import MeshRouter

IN_FLIGHT = 16


class CountingRegistry(RegistryClient):
    """The coordinator's registry client, counting the queries it sends."""

    queries = 0

    async def agents(self, **filters: str) -> list[dict[str, Any]]:
        self.queries += 1
        return await super().agents(**filters)


async def test_tasks_that_find_the_candidates_stale_together_share_one_query(mesh: Stack) -> None:
    async with httpx.AsyncClient(timeout=30, verify=mesh.internal_verify()) as client:
        registry = CountingRegistry(mesh.registry_url, client)
        answers = await asyncio.gather(*(registry.candidates("echo") for _ in range(IN_FLIGHT)))
    assert registry.queries == 1
    assert answers[0] and all(answer == answers[0] for answer in answers)
    assert {choice.address.agent for choice in answers[0]} == {"echo"}


async def test_a_caller_that_gives_up_leaves_the_shared_query_to_the_others(mesh: Stack) -> None:
    async with httpx.AsyncClient(timeout=30, verify=mesh.internal_verify()) as client:
        router = MeshRouter(CountingRegistry(mesh.registry_url, client), "echo")
        first = asyncio.create_task(router.online())
        others = [asyncio.create_task(router.online()) for _ in range(IN_FLIGHT - 1)]
        await asyncio.sleep(0)  # every caller is waiting on the one query
        first.cancel()
        listings = await asyncio.gather(*others)
    assert isinstance(router.registry, CountingRegistry) and router.registry.queries == 1
    assert all(any(record["address"].endswith("/echo") for record in listing) for listing in listings)
