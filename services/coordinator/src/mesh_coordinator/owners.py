"""Who owns a task: the principal (and tenant) that created it through the coordinator. Every read, cancel and
follow-up is scoped to the owner; another caller is told the task does not exist (TaskNotFound, never
"forbidden", which would confirm the id). Operators (scope admin) see all. Workflow children belong to their
parent's owner.

The owner is kept here for tasks this coordinator started (bounded, newest kept) and recorded in the task store,
which scopes its own reads to it, so ownership survives a restart and holds across replicas."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from a2a.utils import errors as sdk_errors

from mesh_coordinator.auth import Principal, current_principal
from mesh_coordinator.directory import EVERY_TASK, DependencyError, TaskStoreClient

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000
CLAIM_ATTEMPTS = 5
CLAIM_RETRY_SECONDS = 2.0


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


class TaskOwners:
    """Task id -> Owner, in memory for tasks started here and in the task store for all."""

    def __init__(self, store: TaskStoreClient, limit: int = MAX_REMEMBERED) -> None:
        self.store = store
        self.limit = limit
        self._owners: OrderedDict[str, Owner] = OrderedDict()
        self._pending: set[asyncio.Task[None]] = set()

    def known(self, task_id: str) -> Owner | None:
        return self._owners.get(task_id)

    async def claim(self, task_id: str, owner: Owner) -> None:
        """Record `owner` for a new task: here at once, in the store before the task is published if it answers,
        else retried in the background (until it lands, only an operator can read the task from the store)."""
        self._owners[task_id] = owner
        self._owners.move_to_end(task_id)
        while len(self._owners) > self.limit:
            self._owners.popitem(last=False)
        try:
            await self.store.claim(task_id, owner.principal, owner.tenant)
        except DependencyError as error:
            log.warning("owner of task %s not recorded yet (%s); retrying", task_id, error)
            retry = asyncio.create_task(self._retry(task_id, owner))
            self._pending.add(retry)
            retry.add_done_callback(self._pending.discard)

    async def _retry(self, task_id: str, owner: Owner) -> None:
        for _attempt in range(CLAIM_ATTEMPTS):
            await asyncio.sleep(CLAIM_RETRY_SECONDS)
            try:
                await self.store.claim(task_id, owner.principal, owner.tenant)
                return
            except DependencyError:
                continue
        log.error("owner of task %s never recorded: only operators can read it from the store", task_id)

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

    def adopt(self, parent_id: str, child_id: str) -> asyncio.Task[None] | None:
        """A workflow's child belongs to its parent's owner."""
        owner = self.known(parent_id)
        if owner is None:
            return None
        child = asyncio.create_task(self.claim(child_id, owner))
        self._pending.add(child)
        child.add_done_callback(self._pending.discard)
        return child
