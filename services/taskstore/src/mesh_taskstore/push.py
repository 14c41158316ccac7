"""Push-notification configs and their delivery bookkeeping (A2A §9 push notifications, delivered by the
coordinator). The store keeps each config with its task, scoped to the task's owner like every read, and a cursor
per config: the coordinator asks for what is pending (the task's events after the cursor, in order), POSTs them,
and moves the cursor on. A delivery that exhausts its retries becomes a dead letter its owner can read."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mesh_taskstore.db import PushConfig, PushDeadLetter, TaskEvent, TaskOwner
from mesh_taskstore.store import Owner, TaskStore, utc_now

PENDING_CONFIGS = 100
"""Configs with pending events handed out per poll."""
PENDING_EVENTS = 50
"""Events per config handed out per poll (the rest come with the next one)."""
MAX_CONFIGS_PER_TASK = 10


def config_wire(row: PushConfig) -> dict[str, Any]:
    """A config as A2A writes a TaskPushNotificationConfig."""
    wire: dict[str, Any] = {"taskId": row.task_id, "id": row.config_id, "url": row.url}
    if row.token:
        wire["token"] = row.token
    if row.auth_scheme:
        wire["authentication"] = {"scheme": row.auth_scheme, "credentials": row.auth_credentials}
    return wire


def _wire_time(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PushStore:
    """The push tables; synchronous like TaskStore (callers run each method in a worker thread)."""

    def __init__(self, store: TaskStore) -> None:
        self.engine = store.engine
        self.tasks = store

    def _visible(self, session: Session, task_id: str, owner: Owner | None) -> bool:
        """Whether `owner` (None: an operator) may see the task's configs: it created the task."""
        if owner is None:
            return True
        row = session.get(TaskOwner, task_id)
        return row is not None and (row.principal, row.tenant) == (owner.principal, owner.tenant)

    def put(self, task_id: str, config: dict[str, Any], owner: Owner | None) -> dict[str, Any] | None:
        """Create or replace a config (None: the task is not the owner's). New configs start after the task's
        latest stored event: they get the updates that come after them."""
        with Session(self.engine) as session:
            if not self._visible(session, task_id, owner):
                return None
            row = session.get(PushConfig, (task_id, config["id"]))
            if row is None:
                count = session.exec(select(func.count()).where(PushConfig.task_id == task_id)).one()
                if count >= MAX_CONFIGS_PER_TASK:
                    raise ValueError(f"a task has at most {MAX_CONFIGS_PER_TASK} push configs")
                latest = session.exec(select(func.max(TaskEvent.seq)).where(TaskEvent.task_id == task_id)).one()
                row = PushConfig(task_id=task_id, config_id=config["id"], url="", delivered_seq=latest or 0)
                row.created_at = utc_now()
            authentication = config.get("authentication") or {}
            row.url = str(config["url"])
            row.token = str(config.get("token") or "")
            row.auth_scheme = str(authentication.get("scheme") or "")
            row.auth_credentials = str(authentication.get("credentials") or "")
            session.add(row)
            session.commit()
            session.refresh(row)
            return config_wire(row)

    def list(self, task_id: str, owner: Owner | None) -> list[dict[str, Any]] | None:
        with Session(self.engine) as session:
            if not self._visible(session, task_id, owner):
                return None
            rows = session.exec(
                select(PushConfig).where(PushConfig.task_id == task_id).order_by(col(PushConfig.config_id))
            )
            return [config_wire(row) for row in rows.all()]

    def delete(self, task_id: str, config_id: str, owner: Owner | None) -> bool:
        with Session(self.engine) as session:
            row = session.get(PushConfig, (task_id, config_id))
            if row is None or not self._visible(session, task_id, owner):
                return False
            session.delete(row)
            session.commit()
            return True

    def pending(self) -> list[dict[str, Any]]:
        """Configs with stored events after their cursor, each with those events in order (bounded)."""
        with Session(self.engine) as session:
            newer = (
                select(TaskEvent.seq)
                .where(TaskEvent.task_id == PushConfig.task_id, col(TaskEvent.seq) > PushConfig.delivered_seq)
                .exists()
            )  # per config, by the task_id index: no scan of the whole event log on every poll
            rows = session.exec(select(PushConfig).where(newer).limit(PENDING_CONFIGS)).all()
            result = []
            for row in rows:
                events = session.exec(
                    select(TaskEvent)
                    .where(TaskEvent.task_id == row.task_id, col(TaskEvent.seq) > row.delivered_seq)
                    .order_by(col(TaskEvent.seq))
                    .limit(PENDING_EVENTS)
                ).all()
                items = [{"seq": e.seq, "eventId": e.event_id, "event": json.loads(e.payload)} for e in events]
                result.append({**config_wire(row), "events": items})
            return result

    def advance(self, task_id: str, config_id: str, seq: int) -> bool:
        """Move a config's cursor forward to `seq` (never back); False if the config is gone."""
        with Session(self.engine) as session:
            row = session.get(PushConfig, (task_id, config_id))
            if row is None:
                return False
            row.delivered_seq = max(row.delivered_seq, seq)
            session.add(row)
            session.commit()
            return True

    def dead_letter(self, letter: dict[str, Any]) -> None:
        with Session(self.engine) as session:
            session.add(
                PushDeadLetter(
                    delivery_id=str(letter["deliveryId"]),
                    task_id=str(letter["taskId"]),
                    config_id=str(letter["configId"]),
                    url=str(letter["url"]),
                    event_seq=int(letter["eventSeq"]),
                    attempts=int(letter["attempts"]),
                    error=str(letter["error"])[:1000],
                    failed_at=utc_now(),
                )
            )
            try:
                session.commit()
            except IntegrityError:  # recorded already (the coordinator retried the write)
                session.rollback()

    def dead_letters(self, owner: Owner | None, limit: int = 100) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            query = select(PushDeadLetter)
            if owner is not None:
                query = query.join(TaskOwner, col(TaskOwner.task_id) == PushDeadLetter.task_id).where(
                    TaskOwner.principal == owner.principal, TaskOwner.tenant == owner.tenant
                )
            rows = session.exec(query.order_by(col(PushDeadLetter.seq).desc()).limit(limit)).all()
            return [
                {
                    "deliveryId": r.delivery_id,
                    "taskId": r.task_id,
                    "configId": r.config_id,
                    "url": r.url,
                    "eventSeq": r.event_seq,
                    "attempts": r.attempts,
                    "error": r.error,
                    "failedAt": _wire_time(r.failed_at),
                }
                for r in rows
            ]


def push_routes(store: TaskStore, read_scope: Any) -> list[Route]:
    """The push API: configs under /tasks/{id}/push-configs (owner-scoped like every read: owner=, tenant= or
    scope=all), the delivery worker's /push/pending and cursor, and the dead letters."""
    push = PushStore(store)

    def scope(request: Request) -> Owner | None:
        return read_scope(request)

    async def put_config(request: Request) -> JSONResponse:
        try:
            owner = scope(request)
            body = await request.json()
            if not isinstance(body, dict) or not body.get("url"):
                raise ValueError("body must be a push config with a url")
            body["id"] = request.path_params["config_id"]
            saved = await asyncio.to_thread(push.put, request.path_params["task_id"], body, owner)
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        if saved is None:
            return JSONResponse({"error": "task not found"}, status_code=404)
        return JSONResponse(saved)

    async def list_configs(request: Request) -> JSONResponse:
        try:
            owner = scope(request)
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        configs = await asyncio.to_thread(push.list, request.path_params["task_id"], owner)
        if configs is None:
            return JSONResponse({"error": "task not found"}, status_code=404)
        return JSONResponse({"configs": configs})

    async def delete_config(request: Request) -> Response:
        try:
            owner = scope(request)
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        params = request.path_params
        if not await asyncio.to_thread(push.delete, params["task_id"], params["config_id"], owner):
            return JSONResponse({"error": "push config not found"}, status_code=404)
        return Response(status_code=204)

    async def pending(_request: Request) -> JSONResponse:
        return JSONResponse({"pending": await asyncio.to_thread(push.pending)})

    async def advance(request: Request) -> JSONResponse:
        try:
            seq = int((await request.json())["seq"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'body must be {"seq": <int>}'}, status_code=400)
        params = request.path_params
        if not await asyncio.to_thread(push.advance, params["task_id"], params["config_id"], seq):
            return JSONResponse({"error": "push config not found"}, status_code=404)
        return JSONResponse({"seq": seq})

    async def add_dead_letter(request: Request) -> JSONResponse:
        try:
            await asyncio.to_thread(push.dead_letter, await request.json())
        except (ValueError, KeyError, TypeError) as error:
            return JSONResponse({"error": f"invalid dead letter: {error}"}, status_code=400)
        return JSONResponse({"recorded": True})

    async def dead_letters(request: Request) -> JSONResponse:
        try:
            owner = scope(request)
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse({"deadLetters": await asyncio.to_thread(push.dead_letters, owner)})

    return [
        Route("/tasks/{task_id}/push-configs", list_configs, methods=["GET"]),
        Route("/tasks/{task_id}/push-configs/{config_id}", put_config, methods=["PUT"]),
        Route("/tasks/{task_id}/push-configs/{config_id}", delete_config, methods=["DELETE"]),
        Route("/tasks/{task_id}/push-configs/{config_id}/delivered", advance, methods=["PUT"]),
        Route("/push/pending", pending, methods=["GET"]),
        Route("/push/dead-letters", add_dead_letter, methods=["POST"]),
        Route("/push/dead-letters", dead_letters, methods=["GET"]),
    ]
