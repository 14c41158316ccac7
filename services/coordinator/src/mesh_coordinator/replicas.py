"""What a coordinator needs when it is one of several replicas behind one load balancer.

A task one replica accepted is in the task store only once the store has recorded its first event, a few
milliseconds after the caller got the task's id; a caller whose next call (GetTask, SubscribeToTask, CancelTask, a
follow-up) lands on another replica within that moment would be told the task does not exist. `PatientTaskStore`
asks the store again, briefly, before a task id the mesh could have minted counts as unknown there (bounded:
MESH_REPLICA_READ_WAIT seconds, off for a single coordinator). The rest of what replicas share is elsewhere: the
task store (every task and its owner), Redis (rate limits: mesh_coordinator.ratelimit) and MQTT (a foreign live
task is followed with SubscribeToTask at its agent, and canceled there)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import httpx

from a2amesh.binding.wire import is_valid_task_id
from a2amesh.models import Task
from a2amesh.topics import AgentAddress
from mesh_coordinator.directory import EVERY_TASK, TaskStoreClient

RETRY_INTERVAL = 0.1
"""Seconds between the store's answers while a task may still be on its way there."""


class PatientTaskStore(TaskStoreClient):
    """A task store client that waits up to `wait` seconds for a task id it does not know yet."""

    def __init__(self, base_url: str, client: httpx.AsyncClient, wait: float) -> None:
        super().__init__(base_url, client)
        self.wait = wait

    async def get_task(
        self, task_id: str, history_length: int | None = None, reader: Mapping[str, str] = EVERY_TASK
    ) -> Task | None:
        task = await super().get_task(task_id, history_length, reader)
        deadline = time.monotonic() + self.wait
        while task is None and self._may_arrive(task_id) and time.monotonic() < deadline:
            await asyncio.sleep(RETRY_INTERVAL)
            task = await super().get_task(task_id, history_length, reader)
        return task

    async def agent_of(self, task_id: str, reader: Mapping[str, str] = EVERY_TASK) -> AgentAddress | None:
        agent = await super().agent_of(task_id, reader)
        deadline = time.monotonic() + self.wait
        while agent is None and self._may_arrive(task_id) and time.monotonic() < deadline:
            await asyncio.sleep(RETRY_INTERVAL)
            agent = await super().agent_of(task_id, reader)
        return agent

    def _may_arrive(self, task_id: str) -> bool:
        """Only an id of the form the mesh mints (a UUID) can be another replica's new task: an id that cannot is
        unknown at once."""
        return self.wait > 0 and is_valid_task_id(task_id)
