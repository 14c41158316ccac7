"""Read-your-writes for outcomes: every task the coordinator relayed to a final state must end up final in the task
store too. A broker that dies before persisting queued events, or a store that misses them, would otherwise leave
the record WORKING forever. A few seconds after a task ends, the coordinator checks the store and, if the store does
not have that outcome, republishes the final Task snapshot on its own event topic (the store applies it once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from a2amesh.models import StreamResponse, Task
from mesh_coordinator.directory import DependencyError, TaskStoreClient
from mesh_coordinator.live import LiveTask

log = logging.getLogger(__name__)

Record = Callable[[LiveTask, StreamResponse], Awaitable[None]]

FIRST_CHECK = 3.0
"""Seconds after a task ends before the store is first asked (its normal lag is well under a second)."""
CHECK_BACKOFF = (3.0, 6.0, 12.0, 30.0, 60.0)
"""Seconds between later checks while the store still lacks the outcome (the last value repeats)."""
MAX_ATTEMPTS = 12
MAX_WATCHED = 20_000
BATCH = 200


@dataclass
class Watch:
    """One finished task whose outcome the store has not confirmed yet."""

    live: LiveTask
    final: Task
    due: float
    attempts: int = 0


class Reconciler:
    """Confirms that the store holds the final state of every task the coordinator relayed."""

    def __init__(self, store: TaskStoreClient, record: Record) -> None:
        self.store = store
        self.record = record
        self._watched: OrderedDict[str, Watch] = OrderedDict()
        self.republished = 0

    def watch(self, live: LiveTask) -> None:
        """Call when a relay ends: a terminal outcome is checked against the store later."""
        if not live.task.status.state.is_terminal:
            return
        self._watched[live.id] = Watch(live, live.task, time.monotonic() + FIRST_CHECK)
        while len(self._watched) > MAX_WATCHED:
            task_id, _ = self._watched.popitem(last=False)
            log.warning("reconciler full: no longer checking task %s", task_id)

    @property
    def pending(self) -> int:
        return len(self._watched)

    async def run(self, stop: asyncio.Event) -> None:
        """Check what is due, about once a second, until `stop`."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            try:
                await self.check_due()
            except DependencyError as error:
                log.info("task store unavailable; outcomes will be checked later: %s", error)
            except Exception:  # the broker gone mid-republish, anything: the loop must outlive it and try again
                log.exception("reconciling outcomes failed; trying again shortly")

    async def check_due(self) -> None:
        now = time.monotonic()
        due = [watch for watch in list(self._watched.values())[: BATCH * 5] if watch.due <= now][:BATCH]
        for watch in due:
            stored = await self.store.get_task(watch.final.id, history_length=0)
            if stored is not None and stored.status.state.is_terminal:  # recorded final (whoever decided it)
                self._watched.pop(watch.final.id, None)
                continue
            watch.attempts += 1
            if watch.attempts > MAX_ATTEMPTS:
                log.error(
                    "task %s: the store never recorded its outcome %s", watch.final.id, watch.final.status.state.name
                )
                self._watched.pop(watch.final.id, None)
                continue
            log.warning(
                "task %s: the store has %s, not %s; republishing the final snapshot",
                watch.final.id,
                stored.status.state.name if stored else "nothing",
                watch.final.status.state.name,
            )
            await self.record(watch.live, StreamResponse(task=watch.final))
            self.republished += 1
            watch.due = now + CHECK_BACKOFF[min(watch.attempts - 1, len(CHECK_BACKOFF) - 1)]
