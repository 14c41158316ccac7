"""Clients of the registry (who can do what) and the task store (what happened), over their HTTP APIs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from a2amesh.binding.wire import pool_of, records_own_events, rerunnable_skills
from a2amesh.models import AgentCard, ListTasksResponse, Task, TaskState
from a2amesh.topics import AgentAddress, PoolAddress

log = logging.getLogger(__name__)

CANDIDATES_TTL = 1.0
"""Seconds a skill's candidate agents are reused; the coordinator's own in-flight counts keep the choice current."""

LAST_KNOWN_KEPT = 600.0
"""Seconds the last non-empty candidate list of a skill stands in for the registry while it cannot answer or
answers nothing (Redis restarted, the index rebuilding from the retained cards): a transient registry condition
must not turn into a client error."""

REBUILD_WAIT = 6.0
"""Seconds routing waits, at most, for a skill nothing is known of while the registry is down or empty."""

REBUILD_POLL = 0.25


class DependencyError(RuntimeError):
    """The registry or the task store could not be reached or answered nonsense."""


T = TypeVar("T")


class StatesUnsupported(DependencyError):
    """The task store answers but has no batched state read (`POST /task-states`): a store older than this
    coordinator, during a rolling upgrade."""


class SingleFlight:
    """One refresh of a cached answer at a time per key: the callers that find it stale together (every task in
    flight, the moment a TTL runs out) wait for the same registry query instead of sending one each. At 16 tasks
    in flight the coordinator's registry queries cost 10% of its CPU on the deployed path before (issue #18)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(fetch())
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(running)  # a caller that gives up does not cancel the others' refresh

    def _finished(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller still waiting gets it raised, none is left unseen


@dataclass(frozen=True)
class AgentChoice:
    """A live agent picked for a task."""

    address: AgentAddress
    skills: tuple[str, ...]
    load: float | None
    records_events: bool
    pool: str | None = None
    wants_auth: bool = False
    """The card asks for per-request authorization (a2a-authorization), so the caller's token is passed on."""
    rerunnable: frozenset[str] = frozenset()
    """The skills the card lets run again under the same task id on another pool member (RERUN_EXTENSION)."""

    @property
    def request_topic(self) -> str:
        """Where to publish a new task: the pool's topic when the agent serves one, else its own."""
        if self.pool:
            return PoolAddress(self.address.org, self.address.unit, self.pool).topic
        return self.address.request_topic


class RegistryClient:
    """Asks the registry which live agents offer a skill (least loaded first)."""

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self._candidates: dict[str, tuple[float, list[AgentChoice]]] = {}
        self._last_known: dict[str, tuple[float, list[AgentChoice]]] = {}
        self._refreshes = SingleFlight()

    async def agents(self, **filters: str) -> list[dict[str, Any]]:
        """Agent records matching the filters (skill=, tag=, status=)."""
        try:
            response = await self.client.get(f"{self.base_url}/agents", params=filters)
            response.raise_for_status()
            return list(response.json()["agents"])
        except (httpx.HTTPError, KeyError, ValueError) as error:
            raise DependencyError(f"registry unavailable: {error}") from error

    @staticmethod
    def choice_of(record: dict[str, Any]) -> AgentChoice:
        """A registry record as a routing choice."""
        card = AgentCard.from_wire(record["card"])
        return AgentChoice(
            AgentAddress.parse(record["address"]),
            tuple(record.get("skills", [])),
            record.get("load"),
            records_own_events(card),
            pool_of(card),
            bool(card.security_requirements),
            rerunnable_skills(card),
        )

    async def candidates(self, skill: str) -> list[AgentChoice]:
        """The online agents offering `skill`, least loaded first, remembered for CANDIDATES_TTL seconds: asking
        the registry on every task would double the cost of routing one.

        While the registry is unreachable or answers nothing (its index rebuilding), the last known candidates
        serve (for LAST_KNOWN_KEPT seconds); a skill never seen waits for the registry, at most REBUILD_WAIT
        seconds. DependencyError only when the registry stays unreachable and nothing is known."""
        cached = self._candidates.get(skill)
        if cached is not None and time.monotonic() - cached[0] < CANDIDATES_TTL:
            return cached[1]
        return await self._refreshes.run(skill, lambda: self._refresh(skill))

    async def _refresh(self, skill: str) -> list[AgentChoice]:
        """Ask the registry for the candidates of `skill` (see candidates)."""
        deadline = time.monotonic() + REBUILD_WAIT
        while True:
            try:
                choices = [self.choice_of(record) for record in await self.agents(skill=skill, status="online")]
                # none online: believed only if the registry does list the skill's agents (offline), or lists
                # agents at all (an index being rebuilt from the retained cards lists nothing yet)
                settled = bool(choices) or bool(await self.agents(skill=skill))
            except DependencyError:
                if (fallback := self._fallback(skill)) is not None:
                    return fallback
                if time.monotonic() >= deadline:
                    raise
            else:
                # a skill that had online agents a moment ago and has none now is asked again until REBUILD_WAIT
                # runs out: while the registry re-reads the retained cards it may list them before their status
                if settled and not choices and skill in self._last_known and time.monotonic() < deadline:
                    await asyncio.sleep(REBUILD_POLL)
                    continue
                if settled:
                    now = time.monotonic()
                    self._candidates[skill] = (now, choices)
                    if choices:
                        self._last_known[skill] = (now, choices)
                    else:
                        self._last_known.pop(skill, None)
                    return choices
                if (fallback := self._fallback(skill)) is not None:
                    return fallback
                if time.monotonic() >= deadline or await self._index_complete():
                    self._candidates[skill] = (time.monotonic(), choices)
                    return choices
            await asyncio.sleep(REBUILD_POLL)

    def _fallback(self, skill: str) -> list[AgentChoice] | None:
        """The last non-empty candidates of `skill`, if recent enough to stand in for the registry."""
        known = self._last_known.get(skill)
        if known is None or time.monotonic() - known[0] > LAST_KNOWN_KEPT:
            return None
        log.info("registry has no candidates for %r right now; routing to the last known ones", skill)
        return known[1]

    async def _index_complete(self) -> bool:
        """Whether the registry lists any agent at all: an empty index means it is rebuilding (or nothing ever
        registered), so an empty answer for one skill is not yet worth believing."""
        try:
            return bool(await self.agents())
        except DependencyError:
            return False

    async def agent(self, address: AgentAddress) -> dict[str, Any] | None:
        """One agent's record, or None."""
        try:
            response = await self.client.get(f"{self.base_url}/agents/{address}")
        except httpx.HTTPError as error:
            raise DependencyError(f"registry unavailable: {error}") from error
        return response.json() if response.status_code == 200 else None

    async def profile(self, address: AgentAddress) -> AgentChoice | None:
        """What routing needs to know of one agent, from its card (None if the registry does not know it)."""
        record = await self.agent(address)
        return self.choice_of(record) if record else None

    async def knows_skill(self, skill: str) -> bool:
        """Whether any agent, online or not, has ever offered `skill`."""
        return bool(await self.agents(skill=skill))


@dataclass(frozen=True)
class StatePage:
    """One page of the store's listing as the reconciler reads it: task id -> state (its wire name)."""

    states: dict[str, str]
    next_page_token: str


STATES_PER_REQUEST = 1000
"""Task ids per `POST /task-states` (the store's maximum, mesh_taskstore.api.MAX_STATE_IDS)."""

EVERY_TASK = {"scope": "all"}
"""The store's read scope for the coordinator's own bookkeeping and for operators: every caller's tasks."""


class TaskStoreClient:
    """Reads the durable record of tasks, each read scoped to a caller (`reader`: the store's owner=/tenant=
    parameters, or EVERY_TASK)."""

    states_path = "/task-states"
    """Where the store answers the batched state read (`states`)."""

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any | None:
        """A read; None when the store has no such task (or not one the reader may see)."""
        response = await self._send("GET", path, params=params)
        if response.status_code == 404:
            return None
        return _answer(response)

    async def get_task(
        self, task_id: str, history_length: int | None = None, reader: Mapping[str, str] = EVERY_TASK
    ) -> Task | None:
        """The recorded task, or None if the store has never seen it (or `reader` may not see it)."""
        params = {**reader, **({"historyLength": history_length} if history_length is not None else {})}
        segment = _path_segment(task_id)
        body = await self._get(f"/tasks/{segment}", params) if segment else None
        return Task.from_wire(body) if body is not None else None

    async def agent_of(self, task_id: str, reader: Mapping[str, str] = EVERY_TASK) -> AgentAddress | None:
        """The agent that ran a recorded task."""
        segment = _path_segment(task_id)
        body = await self._get(f"/tasks/{segment}/events", dict(reader)) if segment else None
        if body is None or not body.get("agent"):
            return None
        return AgentAddress.parse(body["agent"])

    async def list_tasks(self, query: dict[str, Any], reader: Mapping[str, str] = EVERY_TASK) -> ListTasksResponse:
        """One page of recorded tasks (query: the A2A ListTasks params, camelCase)."""
        return ListTasksResponse.from_wire(await self._list(query, reader))

    async def list_states(self, query: dict[str, Any], reader: Mapping[str, str] = EVERY_TASK) -> StatePage:
        """The id and state of each task on one page of recorded tasks, and the next page's token: what the
        reconciler needs of a listing, read off the JSON without a Task model per task (issue #18)."""
        body = await self._list(query, reader)
        states: dict[str, str] = {}
        for task in body.get("tasks") or ():
            status = task.get("status") if isinstance(task, dict) else None
            if isinstance(status, dict) and isinstance(task.get("id"), str) and isinstance(status.get("state"), str):
                states[task["id"]] = status["state"]
        token = body.get("nextPageToken")
        return StatePage(states, token if isinstance(token, str) else "")

    async def states(self, task_ids: Sequence[str], reader: Mapping[str, str] = EVERY_TASK) -> dict[str, TaskState]:
        """The recorded state of each of these tasks (`POST /task-states`, STATES_PER_REQUEST ids a request); a task
        the store lacks (or `reader` may not see) is left out. A state the store names that this side does not know
        is left out too: for the reconciler, not recorded final."""
        ids = list(dict.fromkeys(task_ids))
        found: dict[str, TaskState] = {}
        for start in range(0, len(ids), STATES_PER_REQUEST):
            body = await self._post(self.states_path, {"ids": ids[start : start + STATES_PER_REQUEST]}, reader)
            states = body.get("states") if isinstance(body, dict) else None
            if not isinstance(states, dict):
                raise DependencyError("task store answered a state read without states")
            for task_id, state in states.items():
                with contextlib.suppress(ValueError):
                    found[task_id] = TaskState(state)
        return found

    async def _post(self, path: str, body: Any, params: Mapping[str, str]) -> Any:
        """A read sent as a POST (its question too long for a query string). Only here do 403/404/405 mean a store
        without the route: on a GET, 404 is a task the store lacks."""
        response = await self._send("POST", path, json=body, params=dict(params))
        if response.status_code in (403, 404, 405):  # an older store: no such route, or its gate knows none
            raise StatesUnsupported(f"task store answered {response.status_code} to POST {path}")
        return _answer(response)

    async def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        """The store's response, whatever its status; DependencyError when none comes."""
        try:
            return await self.client.request(method, f"{self.base_url}{path}", **request)
        except httpx.HTTPError as error:
            raise DependencyError(f"task store unavailable: {error}") from error

    async def _list(self, query: dict[str, Any], reader: Mapping[str, str]) -> dict[str, Any]:
        body = await self._get("/tasks", {**{k: v for k, v in query.items() if v is not None}, **reader})
        return body if isinstance(body, dict) else {}


def _answer(response: httpx.Response) -> Any:
    """The JSON body of the store's answer to a read, once the caller has taken the statuses only its own request
    gives meaning to: 400 is the reader's question refused (ValueError, its text the store's error), any other
    status but 200, or a body that is not JSON, the store failing (DependencyError)."""
    if response.status_code == 400:
        raise ValueError(_error_text(response))
    if response.status_code != 200:
        raise DependencyError(f"task store answered {response.status_code}")
    try:
        return response.json()
    except ValueError as error:
        raise DependencyError(f"task store answered nonsense: {error}") from error


def _error_text(response: httpx.Response) -> str:
    """The `error` of a refusal, as the store words it ({"error": ...}), or a generic one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else "invalid request"


def _path_segment(task_id: str) -> str | None:
    """A task id as one URL path segment of the store's API, or None for an id no stored task can be read by
    (empty, or with a slash). Dots are escaped too, so ".." cannot climb out of /tasks/."""
    if not task_id or "/" in task_id:
        return None
    return quote(task_id, safe="").replace(".", "%2E")
