"""The console's view of the mesh: thin HTTP clients of the registry, the task store and the coordinator.

The coordinator is called through its A2A HTTP+JSON binding with the key the person gave, for every task read and
listing; the registry and the tasks' event logs in the task store are read through their HTTP read APIs. Nothing
here touches the broker."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from a2amesh.internal import internal_client
from a2amesh.settings import ConsoleSettings

A2A_VERSION_HEADER = {"A2A-Version": "1.0"}
MAX_KNOWN_KEYS = 256
"""Keys remembered as accepted (by digest), so one page view does not cost one coordinator call per key."""
MAX_STREAM_EVENTS = 10_000
"""Most events relayed from one coordinator stream."""


class MeshError(RuntimeError):
    """A mesh service answered with an error (or not at all); the text is shown to the person."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(MeshError):
    """The coordinator refused the key."""

    def __init__(self) -> None:
        super().__init__("the coordinator refused this API key", 401)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body)[:300]


class Mesh:
    """One shared HTTP client pool over the three services the console reads and drives."""

    def __init__(self, settings: ConsoleSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.AsyncClient(timeout=settings.request_timeout)
        self.internal = internal_client(settings, timeout=settings.request_timeout) if http is None else http
        """The registry and the task store: with the mesh's mutual TLS (the console's own certificate) when on."""
        self.coordinator = settings.coordinator_url.rstrip("/")
        self.public_coordinator = (settings.public_url or settings.coordinator_url).rstrip("/")
        self.registry = settings.registry_url.rstrip("/")
        self.taskstore = settings.taskstore_url.rstrip("/")
        self._accepted: dict[bytes, float] = {}

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.internal is not self.http:
            await self.internal.aclose()

    async def _get(self, url: str, params: dict[str, Any] | None = None, what: str = "") -> Any:
        try:
            response = await self.internal.get(url, params=params)
        except httpx.HTTPError as error:
            raise MeshError(f"{what or url} unreachable: {error}") from None
        if response.status_code == 404:
            raise MeshError(f"{what} not found", 404)
        if response.status_code != 200:
            raise MeshError(f"{what}: {_error_text(response)}", 400 if response.status_code == 400 else 502)
        return response.json()

    # -- registry --------------------------------------------------------------------------------------------
    async def agents(self) -> list[dict[str, Any]]:
        """Every agent the registry knows, online or not."""
        body = await self._get(f"{self.registry}/agents", what="registry")
        return list(body.get("agents", []))

    # -- tasks: listed through the coordinator with the person's key, event logs from the task store ------------
    async def tasks(self, key: str, params: dict[str, str]) -> dict[str, Any]:
        """One page of ListTasks through the coordinator with the person's key, so it holds only the tasks that
        key may read (the task store itself answers only reads that name an owner, docs/security.md)."""
        try:
            response = await self.http.get(
                f"{self.coordinator}/tasks", params={k: v for k, v in params.items() if v}, headers=self._headers(key)
            )
        except httpx.HTTPError as error:
            raise MeshError(f"coordinator unreachable: {error}") from None
        if response.status_code == 401:
            raise Unauthorized()
        if response.status_code != 200:
            raise MeshError(f"tasks: {_error_text(response)}", 400 if response.status_code < 500 else 502)
        return response.json()

    async def task_events(self, task_id: str) -> dict[str, Any]:
        """The task's event log, status history and the agent holding it, read with the store's `scope=all`: call
        it only for a task the person's key was already shown by the coordinator (GetTask or ListTasks with that
        key), which is where the owner check happens."""
        return await self._get(
            f"{self.taskstore}/tasks/{quote(task_id, safe='')}/events", {"scope": "all"}, f"events of task {task_id}"
        )

    async def recorded_events(self, task_id: str) -> dict[str, Any]:
        """The task's event log, or an empty one while the store has not recorded the task yet."""
        try:
            return await self.task_events(task_id)
        except MeshError as error:
            if error.status == 404:
                return {}
            raise

    async def agents_of(self, task_ids: list[str]) -> dict[str, str]:
        """Task id -> the agent holding it (from each task's event log), for a page of tasks."""

        async def one(task_id: str) -> tuple[str, str]:
            try:
                return task_id, str((await self.task_events(task_id)).get("agent") or "")
            except MeshError:
                return task_id, ""

        return dict(await asyncio.gather(*(one(task_id) for task_id in task_ids)))

    # -- coordinator (A2A HTTP+JSON) -------------------------------------------------------------------------
    def _headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", **A2A_VERSION_HEADER}

    async def key_accepted(self, key: str) -> bool:
        """Whether the coordinator takes `key` (asked at most once per key_check_ttl; never stored in clear)."""
        digest = hashlib.sha256(key.encode()).digest()
        now = time.monotonic()
        if self._accepted.get(digest, 0.0) > now:
            return True
        try:
            response = await self.http.get(
                f"{self.coordinator}/tasks", params={"pageSize": "1"}, headers=self._headers(key)
            )
        except httpx.HTTPError as error:
            raise MeshError(f"coordinator unreachable: {error}") from None
        if response.status_code == 401:
            return False
        if response.status_code != 200:
            raise MeshError(f"coordinator: {_error_text(response)}")
        if len(self._accepted) >= MAX_KNOWN_KEYS:
            self._accepted.clear()
        self._accepted[digest] = now + self.settings.key_check_ttl
        return True

    async def _post(self, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.http.post(f"{self.coordinator}{path}", json=body, headers=self._headers(key))
        except httpx.HTTPError as error:
            raise MeshError(f"coordinator unreachable: {error}") from None
        if response.status_code == 401:
            raise Unauthorized()
        if response.status_code != 200:
            raise MeshError(_error_text(response), 400 if response.status_code < 500 else 502)
        return response.json()

    async def get_task(self, key: str, task_id: str) -> dict[str, Any]:
        """GetTask through the coordinator with the person's key: it answers every task id it handed out at once
        (the store may lag a moment behind a task just started), and only tasks that key may read."""
        try:
            url = f"{self.coordinator}/tasks/{quote(task_id, safe='')}"
            response = await self.http.get(url, headers=self._headers(key))
        except httpx.HTTPError as error:
            raise MeshError(f"coordinator unreachable: {error}") from None
        if response.status_code == 401:
            raise Unauthorized()
        if response.status_code == 404:
            raise MeshError(f"task {task_id} not found", 404)
        if response.status_code != 200:
            raise MeshError(_error_text(response), 400 if response.status_code < 500 else 502)
        return response.json()

    async def cancel(self, key: str, task_id: str) -> dict[str, Any]:
        return await self._post(key, f"/tasks/{task_id}:cancel", {"id": task_id})

    async def reply(self, key: str, task: dict[str, Any], text: str) -> dict[str, Any]:
        """Answer a task waiting for input: a user message on the same task and context, not waiting for the end."""
        message = user_message([{"text": text}], task_id=task["id"], context_id=task.get("contextId", ""))
        body = {"message": message, "configuration": {"returnImmediately": True}}
        return await self._post(key, "/message:send", body)

    async def stream(self, key: str, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """SendStreamingMessage: the coordinator's SSE lines as they come (bounded in count)."""
        url = f"{self.coordinator}/message:stream"
        headers = {**self._headers(key), "Accept": "text/event-stream"}
        timeout = httpx.Timeout(self.settings.request_timeout, read=None)
        try:
            async with self.http.stream("POST", url, json=request, headers=headers, timeout=timeout) as response:
                if response.status_code == 401:
                    raise Unauthorized()
                if response.status_code != 200:
                    await response.aread()
                    raise MeshError(_error_text(response), 400 if response.status_code < 500 else 502)
                count = 0
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        count += 1
                        yield line[5:].strip().encode()
                        if count >= MAX_STREAM_EVENTS:
                            return
        except httpx.HTTPError as error:
            raise MeshError(f"coordinator stream broken: {error}") from None


def user_message(parts: list[dict[str, Any]], *, task_id: str = "", context_id: str = "") -> dict[str, Any]:
    """An A2A user message in wire JSON."""
    message: dict[str, Any] = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": parts}
    if task_id:
        message["taskId"] = task_id
    if context_id:
        message["contextId"] = context_id
    return message
