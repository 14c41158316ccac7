"""The fault tests' tools: a private stack with a quick retry profile, a bounded load sent through the coordinator,
a checker that waits for the task store to hold every accepted task in a terminal state, an independent observer
of the task events on the broker, and the Tally each test prints (and asserts on: lost = 0).

Every wait here has a deadline, and all traffic goes to 127.0.0.1 (the stack's own ports)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from a2amesh.mqtt import EVENT_ID_PROPERTY, Envelope, consume
from a2amesh.topics import EVENTS_ALL, TopicError, TopicKind, parse_topic
from devstack.stack import Ports, Stack

SUBMITTED = "TASK_STATE_SUBMITTED"
WORKING = "TASK_STATE_WORKING"
COMPLETED = "TASK_STATE_COMPLETED"
FAILED = "TASK_STATE_FAILED"
CANCELED = "TASK_STATE_CANCELED"
REJECTED = "TASK_STATE_REJECTED"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELED, REJECTED})

QUICK_RETRIES = {
    "MESH_FIRST_REPLY_TIMEOUT": "2",
    "MESH_STREAM_IDLE_TIMEOUT": "4",
    "MESH_REQUEST_ATTEMPTS": "2",
    "MESH_KEEPALIVE_INTERVAL": "1",
}
"""The retry profile in fault stacks: a dead agent is noticed in seconds (and its task picked up again, or ended
FAILED with the reason); agents' keepalives come well within the shorter idle timeout."""

UNTHROTTLED = {"MESH_RATE_LIMIT": "100000", "MESH_RATE_BURST": "100000"}
"""The load generator is one client; the coordinator's per-client rate limit is not what these tests measure."""

JSONRPC_HEADERS = {"A2A-Version": "1.0", "Content-Type": "application/json"}


# -- stacks ----------------------------------------------------------------------------------------------------
def start_stack(
    run_dir: Path,
    echoes: Mapping[str, Mapping[str, str]],
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 45.0,
) -> Stack:
    """A private mesh (broker, Redis, registry, task store, coordinator) with the echo agents given
    (agent id -> its extra environment, e.g. MESH_POOL), the quick retry profile and no rate limit."""
    env = {**QUICK_RETRIES, **UNTHROTTLED, **(extra_env or {})}
    stack = Stack(run_dir=run_dir, ports=Ports.random(), agents={}, tester=True, extra_env=env)
    stack.start(timeout)
    try:
        for agent_id, agent_env in echoes.items():
            stack.launch(stack.agent(agent_id, "agent_echo", **agent_env), timeout)
    except Exception:
        stack.stop()
        raise
    return stack


def auth_headers(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.api_key}"}


async def blocking(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking stack operation (kill, start, wait_ready) off the event loop, so the load keeps flowing."""
    return await asyncio.to_thread(function, *args)


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def log_lines(stack: Stack, name: str, pattern: str = r"ERROR|Traceback|WARNING", limit: int = 25) -> str:
    """The last lines of a process's log matching `pattern` (diagnostics for assertion messages)."""
    path = stack.run_dir / "logs" / f"{name}.log"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"[{name}] (no log)"
    matching = [line for line in lines if re.search(pattern, line)][-limit:]
    return f"[{name}] {len(matching)} matching line(s) of {path}:\n" + "\n".join(matching)


def diagnostics(stack: Stack, names: Iterable[str] | None = None) -> str:
    return "\n".join(log_lines(stack, name) for name in (names or stack.processes))


# -- load ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Accepted:
    """A task the coordinator accepted: it answered SendMessage with a Task."""

    index: int
    task_id: str
    context_id: str
    state: str
    at: float
    """Seconds after the load started."""
    latency: float
    """Seconds the coordinator took to answer (a first attempt nobody answered shows here)."""


@dataclass(frozen=True)
class Refused:
    """A request the coordinator did not accept: a JSON-RPC error, an HTTP error, or no connection."""

    index: int
    context_id: str
    error: str
    code: int | None
    at: float
    latency: float


class Load:
    """A bounded load: `total` SendMessage requests with `configuration.returnImmediately` (so the load never waits
    on a task) through the coordinator's JSON-RPC endpoint, at most `rate` a second and `concurrency` at once.

    Each request carries its own contextId, so a refused request can later be looked up in the store."""

    def __init__(
        self,
        stack: Stack,
        total: int,
        *,
        label: str = "load",
        metadata: Mapping[str, Any] | None = None,
        rate: float | None = 40.0,
        concurrency: int = 32,
        request_timeout: float = 20.0,
    ) -> None:
        self.stack = stack
        self.total = total
        self.label = label
        self.metadata = dict(metadata or {"skill": "echo", "delayMs": 30})
        self.rate = rate
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.accepted: list[Accepted] = []
        self.refused: list[Refused] = []
        self.started = 0.0
        self.duration = 0.0

    @property
    def answered(self) -> int:
        return len(self.accepted) + len(self.refused)

    @property
    def task_ids(self) -> list[str]:
        return [item.task_id for item in self.accepted]

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self) -> Load:
        """Send everything; returns once every request has been answered (or given up on, as a refusal)."""
        self.started = time.monotonic()
        limit = asyncio.Semaphore(self.concurrency)
        headers = {**auth_headers(self.stack), **JSONRPC_HEADERS}
        # idle connections go before the server's keep-alive timeout (uvicorn: 5 s) can close one under a request
        pool = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency, keepalive_expiry=2.0
        )
        async with httpx.AsyncClient(timeout=self.request_timeout, headers=headers, limits=pool) as client:

            async def one(index: int) -> None:
                if self.rate:
                    await asyncio.sleep(max(0.0, self.started + index / self.rate - time.monotonic()))
                async with limit:
                    await self._send(client, index)

            await asyncio.gather(*(one(index) for index in range(self.total)))
        self.duration = self.elapsed()
        return self

    def start(self) -> asyncio.Task[Load]:
        """Run in the background (inject the fault meanwhile)."""
        return asyncio.create_task(self.run(), name=f"load-{self.label}")

    async def until_answered(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` requests have been answered."""
        deadline = time.monotonic() + timeout
        while self.answered < min(count, self.total):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: only {self.answered} of {count} requests answered in {timeout}s")
            await asyncio.sleep(0.02)

    async def _send(self, client: httpx.AsyncClient, index: int) -> None:
        context_id = str(uuid.uuid4())
        message = {
            "messageId": uuid.uuid4().hex,
            "contextId": context_id,
            "role": "ROLE_USER",
            "parts": [{"text": f"{self.label} {index}"}],
        }
        params = {"message": message, "metadata": self.metadata, "configuration": {"returnImmediately": True}}
        body = {"jsonrpc": "2.0", "id": f"{self.label}-{index}", "method": "SendMessage", "params": params}

        sent = time.monotonic()

        def refuse(error: str, code: int | None = None) -> None:
            self.refused.append(Refused(index, context_id, error, code, self.elapsed(), time.monotonic() - sent))

        try:
            response = await client.post(f"{self.stack.coordinator_url}/", json=body)
        except httpx.HTTPError as error:
            refuse(f"transport: {type(error).__name__}: {error}".rstrip(": "))
            return
        if response.status_code != 200:
            refuse(f"HTTP {response.status_code}: {response.text[:200]}", response.status_code)
            return
        try:
            reply = response.json()
        except ValueError:
            refuse(f"not JSON: {response.text[:200]}")
            return
        if reply.get("error") is not None:
            error = reply["error"]
            data = error.get("data")
            detail = f" (data: {json.dumps(data)[:300]})" if data else ""
            refuse(f"{error.get('code')}: {error.get('message')}{detail}", error.get("code"))
            return
        result = reply.get("result") or {}
        task = result.get("task", result)
        if not isinstance(task, dict) or not task.get("id"):
            refuse(f"no task in the result: {json.dumps(result)[:200]}")
            return
        state = task.get("status", {}).get("state", "")
        latency = time.monotonic() - sent
        self.accepted.append(
            Accepted(index, task["id"], task.get("contextId", context_id), state, self.elapsed(), latency)
        )


# -- the store -------------------------------------------------------------------------------------------------
def state_of(task: Mapping[str, Any] | None) -> str | None:
    return None if task is None else task.get("status", {}).get("state")


def reason_of(task: Mapping[str, Any] | None) -> str:
    """The text of a task's status message (why it FAILED), or ""."""
    message = (task or {}).get("status", {}).get("message") or {}
    return " ".join(part.get("text", "") for part in message.get("parts", []) if part.get("text")).strip()


async def await_terminal(
    stack: Stack, task_ids: Iterable[str], *, timeout: float = 45.0, concurrency: int = 16, poll: float = 0.5
) -> dict[str, dict[str, Any] | None]:
    """Poll the store (GET /tasks/{id}) until every task is terminal there or `timeout` passes.
    The last snapshot of each task; None for a task the store never had."""
    latest: dict[str, dict[str, Any] | None] = dict.fromkeys(task_ids)
    pending = set(latest)
    deadline = time.monotonic() + timeout
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=5.0) as client:

        async def fetch(task_id: str) -> None:
            async with limit:
                try:
                    response = await client.get(f"{stack.taskstore_url}/tasks/{task_id}?scope=all")
                except httpx.HTTPError:
                    return  # the store is down or busy: ask again next round
            if response.status_code == 200:
                task = response.json()
                latest[task_id] = task
                if state_of(task) in TERMINAL:
                    pending.discard(task_id)

        while True:
            await asyncio.gather(*(fetch(task_id) for task_id in list(pending)))
            if not pending or time.monotonic() >= deadline:
                return latest
            await asyncio.sleep(poll)


async def store_events(stack: Stack, task_ids: Iterable[str], concurrency: int = 16) -> dict[str, dict[str, Any]]:
    """Each task's event log and status history as the store serves them (GET /tasks/{id}/events)."""
    found: dict[str, dict[str, Any]] = {}
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def fetch(task_id: str) -> None:
            async with limit:
                response = await client.get(f"{stack.taskstore_url}/tasks/{task_id}/events?scope=all")
            if response.status_code == 200:
                found[task_id] = response.json()

        await asyncio.gather(*(fetch(task_id) for task_id in task_ids))
    return found


async def stored_for_refused(stack: Stack, refused: Iterable[Refused]) -> dict[int, list[dict[str, Any]]]:
    """Tasks the store holds for requests the coordinator refused (looked up by each request's contextId):
    a refusal should mean nothing ran."""
    found: dict[int, list[dict[str, Any]]] = {}
    async with httpx.AsyncClient(timeout=10.0) as client:
        for item in refused:
            response = await client.get(
                f"{stack.taskstore_url}/tasks", params={"scope": "all", "contextId": item.context_id}
            )
            tasks = response.json().get("tasks", []) if response.status_code == 200 else []
            if tasks:
                found[item.index] = tasks
    return found


def collapsed_states(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """A status history as its sequence of states, repeats collapsed (WORKING, WORKING "echoing..." -> WORKING)."""
    states: list[str] = []
    for status in history:
        state = status.get("state", "")
        if not states or states[-1] != state:
            states.append(state)
    return states


# -- the registry ----------------------------------------------------------------------------------------------
async def registry_agents(stack: Stack) -> dict[str, dict[str, Any]]:
    """The registry's records by agent id ({} while it cannot answer)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        try:
            response = await client.get(f"{stack.registry_url}/agents")
        except httpx.HTTPError:
            return {}
    if response.status_code != 200:
        return {}
    return {record["agentId"]: record for record in response.json().get("agents", [])}


# -- an independent witness of the events ----------------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    """One task event as published on the broker."""

    event_id: str
    publisher: str
    """The id of the component whose event topic carried it (an agent, or the coordinator)."""
    kind: str
    state: str | None
    at: float
    """time.monotonic() when the observer received it."""


class EventObserver:
    """Subscribes to `$a2a/v1/event/#` with the tester identity for the duration of a test: what the publishers
    actually sent, to compare the store against (which events exist, who published which)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.by_task: dict[str, list[Seen]] = defaultdict(list)
        self.connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventObserver:
        client_id = f"fault-observer-{uuid.uuid4().hex[:8]}"
        self._task = asyncio.create_task(
            consume(
                self.stack.tester_settings(),
                client_id,
                [EVENTS_ALL],
                self._handle,
                self._stop,
                connected=self.connected,
            )
        )
        await asyncio.wait_for(self.connected.wait(), timeout=15)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=10)

    async def _handle(self, envelope: Envelope) -> None:
        try:
            parsed = parse_topic(envelope.topic)
            body = json.loads(envelope.payload)
        except (TopicError, ValueError):
            return
        if parsed.kind is not TopicKind.EVENT or not isinstance(body, dict):
            return
        kind = next((name for name in ("task", "statusUpdate", "artifactUpdate", "message") if name in body), None)
        if kind is None:
            return
        item = body[kind]
        task_id = item.get("id") if kind == "task" else item.get("taskId")
        state = item.get("status", {}).get("state") if kind in ("task", "statusUpdate") else None
        if task_id:
            event_id = envelope.user_properties.get(EVENT_ID_PROPERTY, "")
            self.by_task[task_id].append(Seen(event_id, parsed.name, kind, state, time.monotonic()))

    def publishers(self, task_id: str) -> set[str]:
        return {seen.publisher for seen in self.by_task.get(task_id, [])}

    def finished_by(self, task_id: str) -> set[str]:
        """The publishers that reported a terminal state for the task."""
        return {seen.publisher for seen in self.by_task.get(task_id, []) if seen.state in TERMINAL}


# -- the tally -------------------------------------------------------------------------------------------------
_NOISE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}|\d+(\.\d+)?")


def shape(text: str) -> str:
    """A message with its ids and numbers blanked, so equal causes count together."""
    return _NOISE.sub("#", text)[:160]


@dataclass
class Tally:
    """What became of a load: accepted, completed, failed with a reason, canceled, rejected (by the agent, or at
    submit by the coordinator), and lost — accepted but not terminal in the store, or FAILED without a reason."""

    name: str
    accepted: int = 0
    completed: int = 0
    failed_with_reason: int = 0
    canceled: int = 0
    rejected_by_agent: int = 0
    rejected_at_submit: int = 0
    lost_tasks: list[tuple[str, str]] = field(default_factory=list)
    failure_reasons: Counter[str] = field(default_factory=Counter)
    submit_errors: Counter[str] = field(default_factory=Counter)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return len(self.lost_tasks)

    @classmethod
    def of(cls, name: str, loads: Sequence[Load], stored: Mapping[str, Mapping[str, Any] | None]) -> Tally:
        tally = cls(name)
        for load in loads:
            tally.rejected_at_submit += len(load.refused)
            tally.submit_errors.update(shape(item.error) for item in load.refused)
            for item in load.accepted:
                tally.accepted += 1
                task = stored.get(item.task_id)
                state = state_of(task)
                if state == COMPLETED:
                    tally.completed += 1
                elif state == FAILED:
                    reason = reason_of(task)
                    if reason:
                        tally.failed_with_reason += 1
                        tally.failure_reasons[shape(reason)] += 1
                    else:
                        tally.lost_tasks.append((item.task_id, "FAILED without a reason"))
                elif state == CANCELED:
                    tally.canceled += 1
                elif state == REJECTED:
                    tally.rejected_by_agent += 1
                else:
                    tally.lost_tasks.append((item.task_id, f"{state or 'not in the store'} in the store"))
        return tally

    def figures(self) -> str:
        return (
            f"accepted={self.accepted} completed={self.completed} failed_with_reason={self.failed_with_reason} "
            f"canceled={self.canceled} rejected_by_agent={self.rejected_by_agent} "
            f"rejected_at_submit={self.rejected_at_submit} lost={self.lost}"
        )

    def render(self) -> str:
        lines = [f"TALLY {self.name}: {self.figures()}"]
        for reason, count in self.failure_reasons.most_common(5):
            lines.append(f"  failed x{count}: {reason}")
        for error, count in self.submit_errors.most_common(5):
            lines.append(f"  refused x{count}: {error}")
        for key, value in self.notes.items():
            lines.append(f"  {key}: {value}")
        for task_id, why in self.lost_tasks[:10]:
            lines.append(f"  LOST {task_id}: {why}")
        return "\n".join(lines)

    def report(self) -> None:
        print("\n" + self.render(), flush=True)

    def assert_nothing_lost(self, stack: Stack | None = None) -> None:
        """lost = 0, and (the same thing, said separately) every FAILED task has its reason."""
        context = f"\n{self.render()}" + (f"\n{diagnostics(stack)}" if stack is not None and self.lost else "")
        without_reason = [task_id for task_id, why in self.lost_tasks if why == "FAILED without a reason"]
        assert not without_reason, f"{len(without_reason)} FAILED task(s) without a reason{context}"
        assert self.lost == 0, f"{self.lost} accepted task(s) not terminal in the store{context}"
