"""ListTasks that reads a caller's own writes: the task store records a task's events and owner moments after the
send returned (group commit, owners over MQTT), so a store-only list could miss the task the caller just sent.
The coordinator remembers the tasks it accepted lately (bounded: MESH_LIST_RECENT_SECONDS and RECENT_KEPT) and
merges the ones the store has not been seen listing yet into the caller's pages, from its own fresher copy.

One listing is pinned to the moment its first page was read (t0): the tasks this coordinator held unconfirmed
then ("held") are listed from memory, ahead of the store's rows and newest first, and never from the store, so a
task is on one page only, whatever the store records meanwhile. The page token says where the held part and the
store's keyset cursor stand; a listing with nothing held uses the store's own token, unchanged. Held tasks are
this replica's: another replica lists from the store alone (docs/operations.md, "Coordinator replicas")."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from a2amesh.models import (
    LIST_TASKS_DEFAULT_PAGE_SIZE,
    LIST_TASKS_MAX_PAGE_SIZE,
    ListTasksRequest,
    ListTasksResponse,
    Task,
)
from mesh_coordinator.auth import Principal
from mesh_coordinator.live import RECENT_TASKS_KEPT, LiveTask
from mesh_coordinator.owners import Owner

RECENT_KEPT = RECENT_TASKS_KEPT
"""Accepted tasks remembered for listing at most (the newest), like the relays the hub keeps."""
TOKEN_PREFIX = "m."
"""Marks a token of a listing with held tasks; the store's own tokens are plain base64url (no dot)."""

Fetch = Callable[[dict[str, Any]], Awaitable[ListTasksResponse]]


@dataclass(slots=True)
class Accepted:
    """A task this coordinator accepted, as ListTasks needs it."""

    live: LiveTask
    owner: Owner
    accepted_at: int
    """Wall-clock microseconds (page tokens carry it, and any replica may read them)."""
    confirmed_at: int | None = None
    """When a store page first listed it for its owner; until then it is listed from memory."""

    def held_at(self, t0: int) -> bool:
        return self.accepted_at <= t0 and (self.confirmed_at is None or self.confirmed_at > t0)


@dataclass(frozen=True)
class Mark:
    """Where a listing stands: its t0, the last held task listed (None: none yet), whether every held task is
    listed, and the store's page token ("" from its first page). Times in microseconds since the epoch."""

    t0: int
    after: tuple[int, str] | None
    store: str
    held_done: bool = False

    def encode(self) -> str:
        """`m.<t0>.<accepted>.<task id>.<store token>`: the store's token is base64url and task ids the mesh mints
        are UUIDs, so no part holds a dot."""
        accepted, task_id = ("d", "") if self.held_done else (self.after or ("", ""))
        return f"{TOKEN_PREFIX}{self.t0}.{accepted}.{task_id}.{self.store}"

    @classmethod
    def decode(cls, token: str) -> Mark:
        """ValueError for a token this class did not make."""
        try:
            t0, accepted, task_id, store = token.removeprefix(TOKEN_PREFIX).split(".")
            after = (int(accepted), task_id) if accepted not in ("", "d") else None
            return cls(int(t0), after, store, held_done=accepted == "d")
        except ValueError as error:
            raise ValueError("invalid pageToken") from error


class RecentTasks:
    """The tasks this coordinator accepted lately, oldest first, forgotten after `window` seconds or past `cap`."""

    def __init__(self, window: float, cap: int = RECENT_KEPT) -> None:
        self.window = int(window * 1_000_000)
        self.cap = cap
        self._entries: OrderedDict[str, Accepted] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def accepted(self, live: LiveTask, owner: Owner) -> None:
        """Remember a new task (its relay just started) for its owner's listings."""
        now = _now()
        self._entries[live.id] = Accepted(live, owner, now)
        self._entries.move_to_end(live.id)
        self._forget(now)

    def _forget(self, now: int) -> None:
        oldest = now - self.window
        while self._entries and (
            len(self._entries) > self.cap or next(iter(self._entries.values())).accepted_at < oldest
        ):
            self._entries.popitem(last=False)

    def _held(self, t0: int, principal: Principal) -> list[Accepted]:
        """The tasks a listing pinned at t0 shows from memory: accepted by then within the window, not confirmed by
        then, and the caller's (an operator's: everyone's)."""
        self._forget(_now())
        oldest = t0 - self.window
        owner = None if principal.is_operator else Owner.of(principal)
        return [
            entry
            for entry in self._entries.values()
            if entry.accepted_at > oldest and entry.held_at(t0) and (owner is None or entry.owner == owner)
        ]

    def _confirm(self, tasks: list[Task], principal: Principal) -> None:
        """The store listed these for their owner: its events and owner record are in, so later listings read it
        there. An operator's read proves nothing about the owner record, so it confirms nothing."""
        if principal.is_operator:
            return
        now = _now()
        for task in tasks:
            entry = self._entries.get(task.id)
            if entry is not None and entry.confirmed_at is None:
                entry.confirmed_at = now

    async def page(
        self, request: ListTasksRequest, query: dict[str, Any], principal: Principal, fetch: Fetch
    ) -> ListTasksResponse:
        """One page of the caller's tasks: `fetch` reads the store (query: its ListTasks params); the tasks held in
        memory come first, newest first, each on one page only."""
        size = request.page_size if request.page_size is not None else LIST_TASKS_DEFAULT_PAGE_SIZE
        if not 1 <= size <= LIST_TASKS_MAX_PAGE_SIZE:
            raise ValueError(f"pageSize must be between 1 and {LIST_TASKS_MAX_PAGE_SIZE}")
        token = request.page_token or ""
        if token.startswith(TOKEN_PREFIX):
            mark = Mark.decode(token)
        elif token:  # the store's own token: a listing that held nothing
            return await self._stored_only(query, principal, fetch)
        else:
            mark = Mark(_now(), None, "")
        held = self._held(mark.t0, principal)
        if not held and not token:
            return await self._stored_only(query, principal, fetch)
        agents = set(query.get("agent") or ())
        matching = sorted(
            (entry for entry in held if _matches(entry, request, agents)),
            key=lambda entry: (entry.accepted_at, entry.live.id),
            reverse=True,
        )
        remaining = [] if mark.held_done else [e for e in matching if _after(e, mark.after)]
        shown = remaining[:size]
        room = size - len(shown)
        # one read of the store covers this page's rows and the held tasks it may list too (to count them once)
        store_query = {**query, "pageToken": mark.store or None}
        window = await fetch({**store_query, "pageSize": max(1, min(LIST_TASKS_MAX_PAGE_SIZE, room + len(matching)))})
        self._confirm(window.tasks, principal)
        held_ids = {entry.live.id for entry in held}
        fresh = [(index, task) for index, task in enumerate(window.tasks) if task.id not in held_ids]
        tasks = [_view(entry.live.task, request) for entry in shown] + [task for _, task in fresh[:room]]
        if len(remaining) > len(shown):  # the held part goes on: the store's rows have not started
            last = shown[-1]
            token = Mark(mark.t0, (last.accepted_at, last.live.id), mark.store).encode()
        elif not room:
            more = bool(fresh) or bool(window.next_page_token)
            token = Mark(mark.t0, None, mark.store, held_done=True).encode() if more else ""
        else:
            following = window.next_page_token
            if len(fresh) > room:  # the page ends inside the window: the store's cursor after the last row shown
                cut = fresh[room - 1][0] + 1
                following = (await fetch({**store_query, "pageSize": cut})).next_page_token
            token = Mark(mark.t0, None, following, held_done=True).encode() if following else ""
        in_store = sum(1 for task in window.tasks if task.id in held_ids)
        total = window.total_size - in_store + len(matching)
        return ListTasksResponse(tasks=tasks, next_page_token=token, page_size=size, total_size=max(total, len(tasks)))

    async def _stored_only(self, query: dict[str, Any], principal: Principal, fetch: Fetch) -> ListTasksResponse:
        page = await fetch(query)
        self._confirm(page.tasks, principal)
        return page


def _after(entry: Accepted, mark: tuple[int, str] | None) -> bool:
    """Whether a held task comes after the last one listed, in the listing's order (accepted desc, id desc)."""
    return mark is None or (entry.accepted_at, entry.live.id) < mark


def _matches(entry: Accepted, request: ListTasksRequest, agents: set[str]) -> bool:
    """The ListTasks filters, applied to the coordinator's copy of a task as the store applies them to its own."""
    task = entry.live.task
    if request.context_id and task.context_id != request.context_id:
        return False
    if request.status is not None and task.status.state != request.status:
        return False
    if request.status_timestamp_after is not None:
        stamp = task.status.timestamp
        if stamp is None or _utc(stamp) <= _utc(request.status_timestamp_after):
            return False
    return not agents or str(entry.live.agent) in agents


def _now() -> int:
    return time.time_ns() // 1000


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _view(task: Task, request: ListTasksRequest) -> Task:
    """A task as a ListTasks page shows it: its last historyLength messages, artifacts only when asked for."""
    task = task.with_history(request.history_length)
    return task if request.include_artifacts else task.model_copy(update={"artifacts": None})
