"""Read-your-writes for outcomes: every task the coordinator relayed to a final state must end up final in the task
store too. A broker that dies before persisting queued events, or a store that misses them, would otherwise leave
the record WORKING forever. A few seconds after a task ends, the coordinator checks the store and, if the store does
not have that outcome, republishes the final Task snapshot on its own event topic (the store applies it once).

The store is asked in pages, not per task: one listing of the tasks whose status changed since the oldest unchecked
outcome (`statusTimestampAfter`, newest first, no history or artifacts) confirms every outcome it shows at once,
including outcomes not due yet, and an outcome within a listing's whole range that it does not show is lacking
(were the store holding another final state from earlier, it keeps it: a final task takes no other state). What
no listing covered (a later check, more pages than LIST_PAGES, no timestamp) is read by id, all of a check's
outcomes in one request (`POST /task-states`: ids in, states out, a SELECT per few hundred ids in the store). A read
per task cost the coordinator a sixth of its CPU on the deployed path and the store an HTTP request per task, and
after a store outage it made the catch-up of thousands of outcomes take a minute and a half; pages and reads by id
bring ids and states only, never Task models (docs/benchmarks.md, issue #18).

While the store is away every outcome waits here (up to MAX_WATCHED), so each keeps only what a check and a
republish need: the task id, the agent, the final state and its timestamp, and the final snapshot. Never the relay
(a LiveTask holds the request, its queues and its pump). The snapshot stays whole, history and artifacts included,
because a store whose events were lost gets the task from it alone; but the Task model is kept only while the relay
holds it anyway, until KEEP_WHOLE seconds past the first check, then as compressed JSON (an echo task: about 5 KB of
models, 0.4 KB packed). A store that keeps up confirms outcomes before that, so the healthy path packs nothing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from a2amesh.models import TERMINAL_STATES, ListTasksRequest, StreamResponse, Task, TaskState
from a2amesh.topics import AgentAddress
from mesh_coordinator.directory import STATES_PER_REQUEST, DependencyError, StatesUnsupported, TaskStoreClient
from mesh_coordinator.live import LiveTask

log = logging.getLogger(__name__)

Republish = Callable[[AgentAddress, bytes | str], Awaitable[None]]
"""Publish an event (its JSON) on the coordinator's event topic for the task store, naming the agent that holds
the task (the handler's `publish_event`)."""

FIRST_CHECK = 3.0
"""Seconds after a task ends before the store is first asked (its normal lag is well under a second)."""
CHECK_BACKOFF = (3.0, 6.0, 12.0, 30.0, 60.0)
"""Seconds between later checks while the store still lacks the outcome (the last value repeats)."""
MAX_ATTEMPTS = 12
MAX_WATCHED = 20_000
"""Outcomes waiting for the store's confirmation at most; past it the oldest are no longer checked (logged)."""
KEEP_WHOLE = 2.0
"""Seconds past an outcome's first check during which it keeps the final Task model (the one its relay holds);
after that the store is late or away, and the snapshot is packed."""
PACK_LEVEL = 1
"""zlib level of a packed snapshot: the fastest, about a third of the JSON's size for a small task."""
BATCH = 1000
"""Outcomes a check takes up, at most: those due among the oldest BATCH * 5 watched. What no listing confirmed is
read by id in one request (the store's maximum, STATES_PER_REQUEST), so a check costs the same few requests however
many are due; it was 200 while each was an HTTP request of its own. It also bounds a check's republishes."""
LIST_PAGE_SIZE = 100
"""Tasks per page of the store's listing (its maximum)."""
LIST_PAGES = 20
"""Pages read per check, at most: beyond that, the outcomes a listing did not reach are read by id."""
ONE_BY_ONE = 200
"""Outcomes read one by one per check, at most, from a store without the batched read (an older one, during a
rolling upgrade); the rest wait for the next check."""
RETRY_BATCHED = 300.0
"""Seconds before the batched read is tried again on a store that lacked it (it may have been upgraded since)."""
REPUBLISH_AT_ONCE = 100
"""Republishes in flight at once (the broker's max_inflight_messages): a check may republish BATCH."""
LIST_MARGIN = timedelta(milliseconds=10)
"""How far before the oldest outcome's timestamp a listing starts: the wire keeps milliseconds, an outcome the
coordinator decided itself has microseconds."""


@dataclass(slots=True)
class Watch:
    """One finished task whose outcome the store has not confirmed yet: what a check and a republish need."""

    task_id: str
    agent: AgentAddress
    """The agent holding the task, named on the republished event (`a2a-task-agent`)."""
    state: TaskState
    stamp: datetime | None
    """The outcome's timestamp in UTC (a naive one taken as UTC, as the wire does)."""
    due: float
    final: Task | None
    """The final Task until the snapshot is packed, then None."""
    packed: bytes = b""
    """The final snapshot's event (StreamResponse JSON), zlib-compressed, once packed."""
    attempts: int = 0

    @classmethod
    def of(cls, live: LiveTask, due: float) -> Watch:
        """What to keep of a relay that ended: its id, agent and final Task, not the relay."""
        final = live.task
        stamp = final.status.timestamp
        if stamp is not None and stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return cls(final.id, live.agent, final.status.state, stamp, due, final)

    def pack(self) -> None:
        """Keep the final snapshot as compressed JSON instead of models (whole: history and artifacts too)."""
        if self.final is not None:
            self.packed = zlib.compress(StreamResponse(task=self.final).to_json().encode(), PACK_LEVEL)
            self.final = None

    def event(self) -> bytes | str:
        """The event that republishes the outcome: the final Task snapshot, as JSON."""
        return StreamResponse(task=self.final).to_json() if self.final is not None else zlib.decompress(self.packed)


class Reconciler:
    """Confirms that the store holds the final state of every task the coordinator relayed."""

    def __init__(
        self,
        store: TaskStoreClient,
        republish: Republish,
        first_check: float = FIRST_CHECK,
        keep_whole: float = KEEP_WHOLE,
    ) -> None:
        self.store = TaskStoreClient(store.base_url, store.client)
        """Reads that take the store's answer as it is: a replica's patient read (mesh_coordinator.replicas) would
        wait MESH_REPLICA_READ_WAIT for every outcome the store lacks, one after the other, while those are the
        outcomes to republish at once (the first check is already FIRST_CHECK seconds after the end)."""
        self.republish = republish
        self.first_check = first_check
        self.keep_whole = keep_whole
        self._watched: OrderedDict[str, Watch] = OrderedDict()
        self._whole: deque[tuple[float, str]] = deque()
        """(when to pack, task id) of the outcomes that may still keep their Task model, oldest first."""
        self.republished = 0
        self.listed = 0
        """Outcomes confirmed by a listing."""
        self.read = 0
        """Outcomes read by id (those no listing confirmed)."""
        self.state_reads = 0
        """Requests that read them (`POST /task-states`, up to STATES_PER_REQUEST outcomes each)."""
        self._batched_from = 0.0
        """When the store may be asked by `POST /task-states` again (after it answered that it has none)."""

    def watch(self, live: LiveTask) -> None:
        """Call when a relay ends: a terminal outcome is checked against the store later."""
        if not live.task.status.state.is_terminal:
            return
        now = time.monotonic()
        watch = Watch.of(live, now + self.first_check)
        self._watched[watch.task_id] = watch
        self._whole.append((watch.due + self.keep_whole, watch.task_id))
        while len(self._watched) > MAX_WATCHED:
            task_id, _ = self._watched.popitem(last=False)
            log.warning("reconciler full: no longer checking task %s", task_id)
        self._pack(now)

    def _pack(self, now: float) -> None:
        """Pack the snapshots of the outcomes still unconfirmed KEEP_WHOLE seconds past their first check (and the
        oldest beyond MAX_WATCHED of them, should a burst outrun the clock)."""
        while self._whole and (self._whole[0][0] <= now or len(self._whole) > MAX_WATCHED):
            _, task_id = self._whole.popleft()
            watch = self._watched.get(task_id)
            if watch is not None:
                watch.pack()

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
        """Confirm or republish the outcomes due (at most BATCH); then pack what stays whole past its time, whether
        the store answered or not."""
        try:
            await self._check_due()
        finally:
            self._pack(time.monotonic())

    async def _check_due(self) -> None:
        now = time.monotonic()
        due = [watch for watch in itertools.islice(self._watched.values(), BATCH * 5) if watch.due <= now][:BATCH]
        since = _listing_start(due)
        lacking: list[Watch] = []
        if since is not None:
            complete = await self._confirm_listed(since)
            due = [watch for watch in due if watch.task_id in self._watched]
            if complete:  # the store lacks what a whole listing over its time did not show as final
                lacking = [watch for watch in due if _listed_range(watch, since)]
                due = [watch for watch in due if not _listed_range(watch, since)]
        lacking += await self._read_lacking(due)
        await self._republish(lacking, now)

    async def _read_lacking(self, due: list[Watch]) -> list[Watch]:
        """Read the state of these outcomes by id (at most BATCH: one request of STATES_PER_REQUEST): drop those
        the store records final (any final state, whoever decided it); the others, absent or not final, are
        lacking. A store without the batched read, or one refusing an id, is read one by one (ONE_BY_ONE a check)."""
        if not due:
            return []
        if time.monotonic() >= self._batched_from:
            try:
                stored = await self.store.states([watch.task_id for watch in due])
            except StatesUnsupported as error:
                log.warning("%s; reading outcomes one by one for %.0f s", error, RETRY_BATCHED)
                self._batched_from = time.monotonic() + RETRY_BATCHED
            except ValueError as error:  # an id the store refuses to be asked about
                log.warning("the task store refused to read %d outcomes by id (%s): one by one", len(due), error)
            else:
                self.state_reads += -(-len(due) // STATES_PER_REQUEST)
                self.read += len(due)
                return self._lacking(due, stored)
        return await self._read_one_by_one(due)

    async def _read_one_by_one(self, due: list[Watch]) -> list[Watch]:
        """`_read_lacking` on a store without the batched read: a GetTask each, the first ONE_BY_ONE."""
        stored: dict[str, TaskState] = {}
        for watch in due[:ONE_BY_ONE]:
            task = await self.store.get_task(watch.task_id, history_length=0)
            self.read += 1
            if task is not None:
                stored[watch.task_id] = task.status.state
        return self._lacking(due[:ONE_BY_ONE], stored)

    def _lacking(self, read: list[Watch], stored: dict[str, TaskState]) -> list[Watch]:
        """Drop what the store records final; the rest of `read` (absent, or not final) is lacking."""
        lacking: list[Watch] = []
        for watch in read:
            state = stored.get(watch.task_id)
            if state is not None and state.is_terminal:
                self._watched.pop(watch.task_id, None)
            else:
                lacking.append(watch)
        return lacking

    async def _republish(self, lacking: list[Watch], now: float) -> None:
        """Publish the final snapshot of each outcome the store lacks (all at once: a store that was away can lack
        thousands), and check it again later."""
        again = []
        for watch in lacking:
            watch.attempts += 1
            if watch.attempts > MAX_ATTEMPTS:
                log.error("task %s: the store never recorded its outcome %s", watch.task_id, watch.state.name)
                self._watched.pop(watch.task_id, None)
                continue
            log.warning(
                "task %s: the store lacks its outcome %s; republishing the final snapshot",
                watch.task_id,
                watch.state.name,
            )
            watch.due = now + CHECK_BACKOFF[min(watch.attempts - 1, len(CHECK_BACKOFF) - 1)]
            again.append(watch)
        published: list[object] = []
        for start in range(0, len(again), REPUBLISH_AT_ONCE):
            published += await asyncio.gather(
                *(self.republish(watch.agent, watch.event()) for watch in again[start : start + REPUBLISH_AT_ONCE]),
                return_exceptions=True,
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
            page = await self.store.list_states(query)
            for task_id, state in page.states.items():
                if state in TERMINAL_STATES and self._watched.pop(task_id, None) is not None:
                    self.listed += 1
            if not page.next_page_token or not self._watched:
                return True
            query["pageToken"] = page.next_page_token
        return False


def _listed_range(watch: Watch, since: datetime) -> bool:
    """Whether a listing from `since` covers the outcome: the store would have listed it, held as final."""
    return watch.attempts == 0 and watch.stamp is not None and watch.stamp - LIST_MARGIN >= since


def _listing_start(due: list[Watch]) -> datetime | None:
    """Where a listing that could confirm the due outcomes at once starts: just before the oldest timestamp among
    those not checked yet. None when there are none (an outcome the store was already found lacking is read on
    its own: left in a listing's range, it would keep every later listing that long)."""
    stamps = [watch.stamp for watch in due if watch.attempts == 0]
    known = [stamp for stamp in stamps if stamp is not None]
    return min(known) - LIST_MARGIN if known else None
