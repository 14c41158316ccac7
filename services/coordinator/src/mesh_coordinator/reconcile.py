"""Read-your-writes for outcomes: every task the coordinator relayed to a final state must end up final in the task
store too. A broker that dies before persisting queued events, or a store that misses them, would otherwise leave
the record WORKING forever. A few seconds after a task ends, the coordinator checks the store and, if the store does
not have that outcome, republishes the final Task snapshot on its own event topic (the store applies it once).

The store is asked in pages, not per task: one listing of the tasks whose status changed since the oldest unchecked
outcome (`statusTimestampAfter`, newest first, no history or artifacts) confirms every outcome it shows at once,
including outcomes not due yet, and an outcome within a listing's whole range that it does not show is lacking
(were the store holding another final state from earlier, it keeps it: a final task takes no other state). What
no listing covered (a later check, more pages than LIST_PAGES, no timestamp) is read task by task. A read per task
cost the coordinator a sixth of its CPU on the deployed path, and the store an HTTP request per task
(docs/benchmarks.md, issue #18)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from a2amesh.models import ListTasksRequest, StreamResponse, Task
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
"""Outcomes read one by one per check, at most (those no listing confirmed)."""
LIST_PAGE_SIZE = 100
"""Tasks per page of the store's listing (its maximum)."""
LIST_PAGES = 20
"""Pages read per check, at most: beyond that, the outcomes a listing did not reach are read one by one."""
LIST_MARGIN = timedelta(milliseconds=10)
"""How far before the oldest outcome's timestamp a listing starts: the wire keeps milliseconds, an outcome the
coordinator decided itself has microseconds."""


@dataclass
class Watch:
    """One finished task whose outcome the store has not confirmed yet."""

    live: LiveTask
    final: Task
    due: float
    attempts: int = 0


class Reconciler:
    """Confirms that the store holds the final state of every task the coordinator relayed."""

    def __init__(self, store: TaskStoreClient, record: Record, first_check: float = FIRST_CHECK) -> None:
        self.store = TaskStoreClient(store.base_url, store.client)
        """Reads that take the store's answer as it is: a replica's patient read (mesh_coordinator.replicas) would
        wait MESH_REPLICA_READ_WAIT for every outcome the store lacks, one after the other, while those are the
        outcomes to republish at once (the first check is already FIRST_CHECK seconds after the end)."""
        self.record = record
        self.first_check = first_check
        self._watched: OrderedDict[str, Watch] = OrderedDict()
        self.republished = 0
        self.listed = 0
        """Outcomes confirmed by a listing."""
        self.read = 0
        """Outcomes read one by one."""

    def watch(self, live: LiveTask) -> None:
        """Call when a relay ends: a terminal outcome is checked against the store later."""
        if not live.task.status.state.is_terminal:
            return
        self._watched[live.id] = Watch(live, live.task, time.monotonic() + self.first_check)
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
        since = _listing_start(due)
        lacking: list[Watch] = []
        if since is not None:
            complete = await self._confirm_listed(since)
            due = [watch for watch in due if watch.final.id in self._watched]
            if complete:  # the store lacks what a whole listing over its time did not show as final
                lacking = [watch for watch in due if _listed_range(watch, since)]
                due = [watch for watch in due if not _listed_range(watch, since)]
        for watch in due:
            self.read += 1
            stored = await self.store.get_task(watch.final.id, history_length=0)
            if stored is not None and stored.status.state.is_terminal:  # recorded final (whoever decided it)
                self._watched.pop(watch.final.id, None)
                continue
            lacking.append(watch)
        await self._republish(lacking, now)

    async def _republish(self, lacking: list[Watch], now: float) -> None:
        """Publish the final snapshot of each outcome the store lacks (all at once: a store that was away can lack
        thousands), and check it again later."""
        again = []
        for watch in lacking:
            watch.attempts += 1
            if watch.attempts > MAX_ATTEMPTS:
                log.error(
                    "task %s: the store never recorded its outcome %s", watch.final.id, watch.final.status.state.name
                )
                self._watched.pop(watch.final.id, None)
                continue
            log.warning(
                "task %s: the store lacks its outcome %s; republishing the final snapshot",
                watch.final.id,
                watch.final.status.state.name,
            )
            watch.due = now + CHECK_BACKOFF[min(watch.attempts - 1, len(CHECK_BACKOFF) - 1)]
            again.append(watch)
        published = await asyncio.gather(
            *(self.record(watch.live, StreamResponse(task=watch.final)) for watch in again), return_exceptions=True
        )
        self.republished += sum(1 for outcome in published if not isinstance(outcome, BaseException))
        failed = next((outcome for outcome in published if isinstance(outcome, BaseException)), None)
        if failed is not None:  # tried again at the watch's next check
            raise failed

    async def _confirm_listed(self, since: datetime) -> bool:
        """Drop every watched outcome the store lists as final among the tasks whose status changed after `since`
        (up to LIST_PAGES pages, newest first); whether the listing went to its end."""
        query = ListTasksRequest(status_timestamp_after=since, page_size=LIST_PAGE_SIZE, history_length=0).to_wire()
        for _ in range(LIST_PAGES):
            page = await self.store.list_tasks(query)
            for task in page.tasks:
                if task.status.state.is_terminal and self._watched.pop(task.id, None) is not None:
                    self.listed += 1
            if not page.next_page_token or not self._watched:
                return True
            query["pageToken"] = page.next_page_token
        return False


def _listed_range(watch: Watch, since: datetime) -> bool:
    """Whether a listing from `since` covers the outcome: the store would have listed it, held as final."""
    stamp = _stamp(watch)
    return watch.attempts == 0 and stamp is not None and stamp - LIST_MARGIN >= since


def _stamp(watch: Watch) -> datetime | None:
    """The outcome's timestamp, in UTC (a naive one is taken as UTC, as the wire does)."""
    stamp = watch.final.status.timestamp
    return stamp.replace(tzinfo=UTC) if stamp is not None and stamp.tzinfo is None else stamp


def _listing_start(due: list[Watch]) -> datetime | None:
    """Where a listing that could confirm the due outcomes at once starts: just before the oldest timestamp among
    those not checked yet. None when there are none (an outcome the store was already found lacking is read on
    its own: left in a listing's range, it would keep every later listing that long)."""
    stamps = [_stamp(watch) for watch in due if watch.attempts == 0]
    known = [stamp for stamp in stamps if stamp is not None]
    return min(known) - LIST_MARGIN if known else None
