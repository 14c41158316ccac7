"""Who owns a task: the principal (and tenant) that created it through the coordinator. Every read, cancel and
follow-up is scoped to the owner; another caller is told the task does not exist (TaskNotFound, never
"forbidden", which would confirm the id). Operators (scope admin) see all. Workflow children belong to their
parent's owner.

Recording an owner costs the send path nothing it waits for: the coordinator keeps the owner in memory (bounded,
newest kept), which answers every check of a task it accepted, and queues it for `OwnerRecorder`, which publishes
the queued owners in batches on its owner topic (QoS 1, only coordinators may publish there). The task store
records them in the consumer that records events, whichever comes first, so ownership survives a restart and holds
across replicas (docs/security.md, "Task owners")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Protocol

from a2a.utils import errors as sdk_errors

from a2amesh.models import MAX_OWNERS_PER_MESSAGE, TaskOwnerRecord, TaskOwnerRecords
from mesh_coordinator.auth import Principal, current_principal
from mesh_coordinator.directory import EVERY_TASK, DependencyError, TaskStoreClient

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000
MAX_QUEUED = 100_000
"""Owners waiting to be published while the broker is away; beyond that the oldest are dropped (logged): their
tasks stay readable through this coordinator, and by operators from the store."""
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to publish a batch while the broker is unreachable; the last value repeats."""
DRAIN_SECONDS = 5.0
"""On stop, how long the recorder keeps publishing what is queued."""


@dataclass(frozen=True)
class Owner:
    principal: str
    tenant: str = ""

    @classmethod
    def of(cls, principal: Principal) -> Owner:
        return cls(principal.id, principal.tenant)


class ScopeError(sdk_errors.InvalidRequestError):
    """The credential is valid but lacks the scope the method needs."""


def caller(scope: str) -> Principal:
    """The current caller, which must hold `scope` (send, read, cancel)."""
    principal = current_principal.get()
    if principal is None:  # only reachable if the guard were bypassed: refuse rather than serve unscoped
        raise ScopeError(message="no authenticated caller")
    if not principal.may(scope):
        raise ScopeError(message=f"this credential lacks the '{scope}' scope")
    return principal


def reader_of(principal: Principal) -> dict[str, str]:
    """The task store's read scope for `principal`: its own tasks, or every task for an operator."""
    if principal.is_operator:
        return dict(EVERY_TASK)
    return {"owner": principal.id, "tenant": principal.tenant}


class Publisher(Protocol):
    """The coordinator's broker link (a2amesh.mqtt), as far as the recorder uses it."""

    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, wait: float = 10.0) -> None: ...


class OwnerRecorder:
    """Publishes the owners of new tasks in batches, off the send path: `record` only queues; `run` publishes
    whatever has gathered (up to MAX_OWNERS_PER_MESSAGE a message), so a burst of tasks costs a few messages.

    It publishes as soon as it has something, never lingering for a fuller batch: an owner still queued when the
    coordinator dies is lost (its task then readable by operators only), and holding batches back 50 ms to save
    messages lost the owners of the tasks a replica accepted just before a SIGKILL (tests/test_coordinator_replicas)."""

    def __init__(self, link: Publisher, topic: str, limit: int = MAX_QUEUED) -> None:
        self.link = link
        self.topic = topic
        self._queue: deque[TaskOwnerRecord] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.published = 0
        self.messages = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def record(self, task_id: str, owner: Owner) -> None:
        self._queue.append(TaskOwnerRecord(task_id=task_id, principal=owner.principal, tenant=owner.tenant))
        if len(self._queue) > self._limit:
            lost = self._queue.popleft()
            self.dropped += 1
            log.error("owner queue full: the owner of task %s is not recorded in the store", lost.task_id)
        self._ready.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop`, then for up to DRAIN_SECONDS what is still queued."""
        failures = 0
        # `stop` wakes the idle wait below: one waiter for the recorder's life, not two tasks per batch
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _done: self._ready.set())
        try:
            while not stop.is_set():
                if not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                if await self.flush_once():
                    failures = 0
                    continue
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            stopping.cancel()
        await self.drain(DRAIN_SECONDS)
        log.info("published %d task owners in %d messages", self.published, self.messages)

    async def drain(self, seconds: float) -> None:
        """Publish what is queued, for at most `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._queue and loop.time() < deadline:
            if not await self.flush_once(wait=max(deadline - loop.time(), 0.01)):
                break
        if self._queue:
            log.error("stopping with %d task owners not published", len(self._queue))

    async def flush_once(self, wait: float = 10.0) -> bool:
        """Publish one batch from the head of the queue; False (the batch kept, in order) if the broker failed."""
        batch = [self._queue[i] for i in range(min(len(self._queue), MAX_OWNERS_PER_MESSAGE))]
        payload = TaskOwnerRecords(owners=batch).to_json()
        try:
            await self.link.publish(self.topic, payload, qos=1, wait=wait)
        except Exception as error:  # the broker away: kept, tried again (records are idempotent in the store)
            log.warning("publishing %d task owners failed (%s); retrying", len(batch), error)
            return False
        for _ in batch:  # records may have been added behind the batch meanwhile, never in front of it
            self._queue.popleft()
        self.published += len(batch)
        self.messages += 1
        return True


class TaskOwners:
    """Task id -> Owner: in memory for the tasks this coordinator accepted, in the task store for all."""

    def __init__(self, store: TaskStoreClient, recorder: OwnerRecorder, limit: int = MAX_REMEMBERED) -> None:
        self.store = store
        self.recorder = recorder
        self.limit = limit
        self._owners: OrderedDict[str, Owner] = OrderedDict()

    def known(self, task_id: str) -> Owner | None:
        return self._owners.get(task_id)

    def claim(self, task_id: str, owner: Owner) -> None:
        """Record `owner` for a new task: here at once (every check of it is answered from here), in the store by
        the recorder, in the background."""
        self._owners[task_id] = owner
        self._owners.move_to_end(task_id)
        while len(self._owners) > self.limit:
            self._owners.popitem(last=False)
        self.recorder.record(task_id, owner)

    async def check(self, task_id: str, principal: Principal) -> None:
        """TaskNotFound unless `principal` may see the task: an operator, or its owner (known here, else by the
        store's scoped read)."""
        if principal.is_operator:
            return
        owner = self.known(task_id)
        if owner is not None:
            if owner != Owner.of(principal):
                raise sdk_errors.TaskNotFoundError(message=f"Task {task_id} not found")
            return
        try:
            task = await self.store.get_task(task_id, history_length=0, reader=reader_of(principal))
        except DependencyError as error:
            raise sdk_errors.InternalError(message=str(error)) from None
        if task is None:
            raise sdk_errors.TaskNotFoundError(message=f"Task {task_id} not found")

    def reader_for(self, task_id: str, principal: Principal) -> dict[str, str]:
        """The store scope to read one task with, once `check` passed: a task this coordinator knows the caller
        owns is read unscoped, so a read right after the send does not wait for the owner record to land."""
        if self.known(task_id) == Owner.of(principal):
            return dict(EVERY_TASK)
        return reader_of(principal)

    def adopt(self, parent_id: str, child_id: str) -> None:
        """A workflow's child belongs to its parent's owner."""
        owner = self.known(parent_id)
        if owner is not None:
            self.claim(child_id, owner)
