"""The HTTP read API: tasks as A2A wire JSON (GetTask / ListTasks shapes), many tasks' states by id, each task's
event log, and health.

Query parameters are validated here and turned into 400 {"error": ...}; the store only ever sees clean values.
Database calls run in worker threads so a slow query never stalls the consumer sharing this event loop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a2amesh.models import LIST_TASKS_DEFAULT_PAGE_SIZE, LIST_TASKS_MAX_PAGE_SIZE, TaskState
from a2amesh.observability import ServiceMetrics, health_routes
from mesh_taskstore.apply import trim
from mesh_taskstore.db import utc
from mesh_taskstore.push import push_routes
from mesh_taskstore.store import (
    Cursor,
    Owner,
    TaskQuery,
    TaskStore,
    status_history,
    storable,
)

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """A query parameter we cannot accept; its text is the error the client sees."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int_param(request: Request, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadRequest(f"{name} must be {bounds}")
    return value


def _bool_param(request: Request, name: str, default: bool) -> bool:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f"{name} must be true or false")


def _text_param(request: Request, name: str) -> str | None:
    """A text parameter the database is asked about (see `storable`); BadRequest for one it could not be."""
    text = request.query_params.get(name)
    if text and not storable(text):
        raise BadRequest(f"{name} must be text without NUL characters")
    return text


def _state_param(request: Request) -> TaskState | None:
    text = request.query_params.get("status")
    if not text or text == "TASK_STATE_UNSPECIFIED":
        return None
    try:
        return TaskState(text)
    except ValueError:
        names = ", ".join(state.value for state in TaskState)
        raise BadRequest(f"status must be one of {names}") from None


def _timestamp_param(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name)
    if not text:
        return None
    # An unencoded "+01:00" offset arrives as " 01:00" (a query string's "+" is a space); accept that too.
    for candidate in (text, text.replace(" ", "+")):
        try:
            return utc(datetime.fromisoformat(candidate))
        except (ValueError, OverflowError):  # OverflowError: an offset that moves the time out of range
            continue
    raise BadRequest(f"{name} must be an ISO-8601 timestamp")


def _wire_time(value: datetime) -> str:
    """A timestamp as A2A writes one: UTC, milliseconds, `Z`."""
    return utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


ALL_TASKS = "all"
"""`scope=all`: an operator's read of every caller's tasks (the coordinator serving an admin, meshctl)."""


def read_scope(request: Request) -> Owner | None:
    """Whose tasks a read may see: `owner=<principal>` (and `tenant=`), or every task with `scope=all`. A read
    that says neither is refused, so no client reads across callers by forgetting a filter."""
    principal = _text_param(request, "owner")
    if principal:
        return Owner(principal, _text_param(request, "tenant") or "")
    if request.query_params.get("scope") == ALL_TASKS:
        return None
    raise BadRequest("a read must name its owner (owner=, tenant=) or ask for every task (scope=all)")


def list_query(request: Request) -> TaskQuery:
    """The ListTasks parameters of a request; BadRequest for any invalid one."""
    token = request.query_params.get("pageToken") or None
    try:
        cursor = Cursor.decode(token) if token else None
    except ValueError as error:
        raise BadRequest(str(error)) from None
    agents = tuple(agent for agent in request.query_params.getlist("agent") if agent)
    if not all(storable(agent) for agent in agents):
        raise BadRequest("agent must be text without NUL characters")
    return TaskQuery(
        context_id=_text_param(request, "contextId") or None,
        agents=agents,
        state=_state_param(request),
        status_after=_timestamp_param(request, "statusTimestampAfter"),
        page_size=_int_param(request, "pageSize", minimum=1, maximum=LIST_TASKS_MAX_PAGE_SIZE)
        or LIST_TASKS_DEFAULT_PAGE_SIZE,
        cursor=cursor,
        history_length=_int_param(request, "historyLength", minimum=0),
        include_artifacts=_bool_param(request, "includeArtifacts", default=False),
        owner=read_scope(request),
    )


MAX_STATE_IDS = 1000
"""Task ids one `POST /task-states` may ask about, at most (the coordinator's reconciler asks for up to this many)."""
MAX_STATES_BODY = 1_048_576
"""Bytes of a `POST /task-states` body, at most: room for MAX_STATE_IDS ids of about a kilobyte each."""


async def state_ids(request: Request) -> list[str]:
    """The task ids of a `POST /task-states` body, `{"ids": [...]}`; BadRequest for anything else, for more than
    MAX_STATE_IDS ids, and for a body over MAX_STATES_BODY bytes (read no further than that)."""
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_STATES_BODY:
            raise BadRequest(f"the body must be at most {MAX_STATES_BODY} bytes")
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than the parser goes
        parsed = None
    ids = parsed.get("ids") if isinstance(parsed, dict) else None
    if not isinstance(ids, list) or not all(isinstance(task_id, str) for task_id in ids):
        raise BadRequest('the body must be {"ids": [<task id>, ...]}')
    if len(ids) > MAX_STATE_IDS:
        raise BadRequest(f"at most {MAX_STATE_IDS} ids per request (got {len(ids)})")
    if not all(storable(task_id) for task_id in ids):
        raise BadRequest("a task id must be UTF-8 text without NUL characters")
    return ids


def build_app(store: TaskStore, mqtt_connected: Callable[[], bool], metrics: ServiceMetrics | None = None) -> Starlette:
    """The Starlette app over `store`; `mqtt_connected` tells the health check whether events are flowing in."""

    async def healthz(_request: Request) -> JSONResponse:
        try:
            await asyncio.to_thread(store.ping)
            database = True
        except Exception as error:
            log.warning("health check: database unavailable: %s", error)
            database = False
        connected = mqtt_connected()
        if database and connected:
            return JSONResponse({"status": "ok"})
        body = {
            "status": "unavailable",
            "database": "ok" if database else "down",
            "mqtt": "connected" if connected else "disconnected",
        }
        return JSONResponse(body, status_code=503)

    async def get_task(request: Request) -> JSONResponse:
        try:
            history_length = _int_param(request, "historyLength", minimum=0)
            owner = read_scope(request)
        except BadRequest as error:
            return _error(400, str(error))
        task_id = request.path_params["task_id"]
        stored = await asyncio.to_thread(store.get, task_id, owner) if storable(task_id) else None
        if stored is None:
            return _error(404, "task not found")
        return JSONResponse(trim(stored.task, history_length).to_wire())

    async def task_events(request: Request) -> JSONResponse:
        task_id = request.path_params["task_id"]
        try:
            owner = read_scope(request)
        except BadRequest as error:
            return _error(400, str(error))
        stored = await asyncio.to_thread(store.get, task_id, owner) if storable(task_id) else None
        if stored is None:
            return _error(404, "task not found")
        rows = await asyncio.to_thread(store.events, task_id)
        events: list[dict[str, Any]] = [
            {
                "eventId": row.event_id,
                "seq": row.seq,
                "kind": row.kind,
                "receivedAt": _wire_time(row.received_at),
                "applied": row.applied,
                "event": json.loads(row.payload),
            }
            for row in rows
        ]
        history = [status.to_wire() for status in status_history(rows)]
        return JSONResponse({"taskId": task_id, "agent": stored.agent, "events": events, "statusHistory": history})

    async def task_states(request: Request) -> JSONResponse:
        """The state of many tasks at once, by id (`{"states": {id: state}}`; ids the reader may not see or the
        store lacks are left out): the coordinator's reconciler checks its outcomes with it, a request per check
        rather than one per task."""
        try:
            owner = read_scope(request)
            ids = await state_ids(request)
        except BadRequest as error:
            return _error(400, str(error))
        states = await asyncio.to_thread(store.states, ids, owner)
        return JSONResponse({"states": states})

    async def list_tasks(request: Request) -> JSONResponse:
        try:
            query = list_query(request)
        except BadRequest as error:
            return _error(400, str(error))
        page = await asyncio.to_thread(store.list_tasks, query)
        # ListTasksResponse's wire shape (every field present), built around the snapshots' own JSON
        response = {
            "tasks": page.wire,
            "nextPageToken": page.next_page_token,
            "pageSize": query.page_size,
            "totalSize": page.total_size,
        }
        return JSONResponse(response)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/tasks", list_tasks, methods=["GET"]),
            Route("/tasks/{task_id}/events", task_events, methods=["GET"]),
            Route("/tasks/{task_id}", get_task, methods=["GET"]),
            Route("/task-states", task_states, methods=["POST"]),
            *push_routes(store, read_scope),
            *health_routes(metrics or ServiceMetrics("taskstore")),
        ]
    )
