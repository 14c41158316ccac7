"""Push-notification configs and their delivery bookkeeping (A2A §9 push notifications, delivered by the
coordinator). The store keeps each config with its task, scoped to the task's owner like every read, and a cursor
per config: the coordinator claims what is pending (the task's events after the cursor, in order), POSTs them,
and moves the cursor on. A delivery that exhausts its retries becomes a dead letter its owner can read.

With several coordinator replicas each config is delivered by one at a time: a claim takes a lease on the config
(holder: the replica, until an expiry), which the holder renews while it delivers and gives up once the cursor
reaches the task's latest event, or when it stops; a replica that dies loses its leases as they expire, and another
claims them and carries on from the cursor. Only the lease's holder moves the cursor, so a replica that lost its
lease (paused past the expiry) cannot move it under the one that took over.

Configs do not outlive their use: once a task has ended and every update went out, its configs (with their cursors
and leases) are deleted MESH_PUSH_RETENTION seconds after the end (`sweep`, run by the service every minute). Dead
letters stay for their owner to read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from a2amesh.models import TaskState
from mesh_taskstore.db import PushConfig, PushDeadLetter, PushLease, TaskEvent, TaskOwner, TaskRecord, utc
from mesh_taskstore.store import Owner, TaskStore, storable, utc_now

log = logging.getLogger(__name__)

PENDING_CONFIGS = 100
"""Configs with pending events handed out per poll."""
PENDING_EVENTS = 50
"""Events per config handed out per poll (the rest come with the next one)."""
MAX_CONFIGS_PER_TASK = 10
MAX_LEASE_SECONDS = 300.0
MAX_HOLDER_LENGTH = 200
LEASES = PushLease.__table__  # type: ignore[attr-defined]
SWEEP_INTERVAL = 60.0
"""Seconds between two sweeps of finished tasks' configs."""
SWEEP_BATCH = 1_000
SWEEP_BATCHES = 20
"""Configs deleted per transaction, and transactions per sweep at most (the rest go in the next sweep)."""
TERMINAL_STATES = tuple(state.value for state in TaskState if state.is_terminal)


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

    def claim(self, holder: str, seconds: float, renew: Sequence[tuple[str, str]] = ()) -> list[dict[str, Any]]:
        """Configs with stored events after their cursor whose lease is free, expired or `holder`'s, each now leased
        to `holder` for `seconds`, with those events in order (bounded). `renew`: configs `holder` is delivering
        right now, whose leases it keeps (whether they are handed out again or not)."""
        now = utc_now()
        until = now + timedelta(seconds=seconds)
        for task_id, config_id in renew:
            self._take(task_id, config_id, holder, now, until)
        with Session(self.engine) as session:
            newer = (
                select(TaskEvent.seq)
                .where(TaskEvent.task_id == PushConfig.task_id, col(TaskEvent.seq) > PushConfig.delivered_seq)
                .exists()
            )  # per config, by the task_id index: no scan of the whole event log on every poll
            taken = (
                select(PushLease.task_id)
                .where(
                    PushLease.task_id == PushConfig.task_id,
                    PushLease.config_id == PushConfig.config_id,
                    PushLease.holder != holder,
                    col(PushLease.expires_at) > now,
                )
                .exists()
            )
            rows = session.exec(select(PushConfig).where(newer, ~taken).limit(PENDING_CONFIGS)).all()
        result = []
        for row in rows:
            if not self._take(row.task_id, row.config_id, holder, now, until):
                continue  # another replica claimed it a moment ago
            with Session(self.engine) as session:
                # the cursor as it stands now the lease is ours: the last holder may have moved it since the read
                current = session.get(PushConfig, (row.task_id, row.config_id))
                events = (
                    session.exec(
                        select(TaskEvent)
                        .where(TaskEvent.task_id == row.task_id, col(TaskEvent.seq) > current.delivered_seq)
                        .order_by(col(TaskEvent.seq))
                        .limit(PENDING_EVENTS)
                    ).all()
                    if current is not None
                    else []
                )
            if not events:
                self._give_up(row.task_id, row.config_id, holder)
                continue
            items = [{"seq": e.seq, "eventId": e.event_id, "event": json.loads(e.payload)} for e in events]
            result.append({**config_wire(row), "events": items})
        return result

    def _give_up(self, task_id: str, config_id: str, holder: str) -> None:
        """Drop `holder`'s lease on a config with nothing left to deliver: the next update goes to whoever claims."""
        key = (LEASES.c.task_id == task_id) & (LEASES.c.config_id == config_id) & (LEASES.c.holder == holder)
        with self.engine.begin() as connection:
            connection.execute(sa.delete(LEASES).where(key))

    def _take(self, task_id: str, config_id: str, holder: str, now: datetime, until: datetime) -> bool:
        """Lease one config to `holder` until `until`, if it is free, expired or already `holder`'s. One short
        transaction whose first statement writes, so two replicas claiming at once cannot both win: the conditional
        UPDATE (re-checked under the row lock), else the INSERT, which the primary key lets only one make."""
        key = (LEASES.c.task_id == task_id) & (LEASES.c.config_id == config_id)
        free = (LEASES.c.holder == holder) | (LEASES.c.expires_at <= now)
        try:
            with self.engine.begin() as connection:
                update = sa.update(LEASES).where(key, free).values(holder=holder, expires_at=until)
                if connection.execute(update).rowcount:
                    return True
                if connection.execute(sa.select(LEASES.c.holder).where(key)).first() is not None:
                    return False  # held by another replica, not expired
                values = {"task_id": task_id, "config_id": config_id, "holder": holder, "expires_at": until}
                connection.execute(sa.insert(LEASES).values(**values))
                return True
        except IntegrityError:
            return False  # inserted by another replica at the same moment

    def advance(self, task_id: str, config_id: str, seq: int, holder: str | None = None) -> bool | None:
        """Move a config's cursor forward to `seq` (never back); False if the config is gone, None if `holder` no
        longer holds its lease (another replica took it over). Once the cursor reaches the task's latest event the
        lease is given up, so the next update goes to whichever replica claims it first."""
        with Session(self.engine) as session:
            row = session.get(PushConfig, (task_id, config_id))
            if row is None:
                return False
            lease = session.get(PushLease, (task_id, config_id)) if holder is not None else None
            if lease is not None and lease.holder != holder and utc(lease.expires_at) > utc_now():
                return None
            row.delivered_seq = max(row.delivered_seq, seq)
            session.add(row)
            if lease is not None and lease.holder == holder:
                latest = session.exec(select(func.max(TaskEvent.seq)).where(TaskEvent.task_id == task_id)).one()
                if latest is None or row.delivered_seq >= latest:
                    session.delete(lease)
            session.commit()
            return True

    def release(self, holder: str) -> int:
        """Give up every lease `holder` has (it is stopping): the other replicas claim them at once."""
        with self.engine.begin() as connection:
            return int(connection.execute(sa.delete(LEASES).where(LEASES.c.holder == holder)).rowcount)

    def sweep(self, retention: float) -> int:
        """Delete the configs (cursors and leases with them) of tasks that ended more than `retention` seconds ago
        and whose every update went out; how many. Bounded: SWEEP_BATCHES transactions of SWEEP_BATCH configs."""
        cutoff = utc_now() - timedelta(seconds=retention)
        undelivered = (
            select(TaskEvent.seq)
            .where(TaskEvent.task_id == PushConfig.task_id, col(TaskEvent.seq) > PushConfig.delivered_seq)
            .exists()
        )
        done = (
            select(PushConfig.task_id, PushConfig.config_id)
            .join(TaskRecord, col(TaskRecord.task_id) == PushConfig.task_id)
            .where(col(TaskRecord.state).in_(TERMINAL_STATES), col(TaskRecord.updated_at) < cutoff, ~undelivered)
            .limit(SWEEP_BATCH)
        )
        deleted = 0
        for _ in range(SWEEP_BATCHES):
            with Session(self.engine) as session:
                keys = list(session.exec(done).all())
                for task_id, config_id in keys:
                    for model in (PushLease, PushConfig):
                        row = session.get(model, (task_id, config_id))
                        if row is not None:
                            session.delete(row)
                session.commit()
            deleted += len(keys)
            if len(keys) < SWEEP_BATCH:
                break
        return deleted

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


async def sweep_finished(store: TaskStore, retention: float, stop: asyncio.Event) -> None:
    """Every SWEEP_INTERVAL until `stop`: delete the configs of tasks finished `retention` seconds ago (0: never).
    A failed sweep (the database away) is logged and tried again at the next one."""
    if retention <= 0:
        return
    push = PushStore(store)
    while not stop.is_set():
        try:
            deleted = await asyncio.to_thread(push.sweep, retention)
            if deleted:
                log.info("deleted %d push configs of tasks finished over %gs ago", deleted, retention)
        except Exception as error:
            log.warning("push config sweep failed: %s", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL)


def checked_holder(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_HOLDER_LENGTH or not storable(value):
        raise ValueError(f"holder must be a replica id of 1 to {MAX_HOLDER_LENGTH} characters, without NUL")
    return value


def claim_body(body: Any) -> tuple[str, float, list[tuple[str, str]]]:
    """A claim's holder, lease seconds and the configs to renew, checked."""
    seconds = float(body["leaseSeconds"])
    if not 0 < seconds <= MAX_LEASE_SECONDS:
        raise ValueError(f"leaseSeconds must be above 0 and at most {MAX_LEASE_SECONDS:g}")
    renew = [(str(item["taskId"]), str(item["id"])) for item in body.get("renew", [])[:PENDING_CONFIGS]]
    if not all(storable(task_id) and storable(config_id) for task_id, config_id in renew):
        raise ValueError("a config to renew must have ids without NUL characters")
    return checked_holder(body["holder"]), seconds, renew


LETTER_TEXTS = ("deliveryId", "taskId", "configId", "url", "error")
"""The text fields of a dead letter the store keeps (`PushStore.dead_letter`)."""


def stored_ids(params: Mapping[str, str]) -> bool:
    """Whether a push config's path (its task's id and its own) can name one the store holds (see `storable`)."""
    return storable(params["task_id"]) and storable(params["config_id"])


def _config_texts(body: dict[str, Any]) -> list[str]:
    """The text a push config stores besides its ids (`storable` must hold for each)."""
    authentication = body.get("authentication")
    fields = [body.get("url"), body.get("token")]
    if isinstance(authentication, dict):
        fields += [authentication.get("scheme"), authentication.get("credentials")]
    return [field for field in fields if isinstance(field, str)]


def push_routes(store: TaskStore, read_scope: Any) -> list[Route]:
    """The push API: configs under /tasks/{id}/push-configs (owner-scoped like every read: owner=, tenant= or
    scope=all), the delivery workers' claims (leases), cursors and release, and the dead letters."""
    push = PushStore(store)

    def scope(request: Request) -> Owner | None:
        return read_scope(request)

    async def put_config(request: Request) -> JSONResponse:
        try:
            owner = scope(request)
            body = await request.json()
            if not isinstance(body, dict) or not body.get("url"):
                raise ValueError("body must be a push config with a url")
            if not isinstance(body.get("authentication") or {}, dict):
                raise ValueError("a push config's authentication must be an object")
            task_id, body["id"] = request.path_params["task_id"], request.path_params["config_id"]
            if not storable(body["id"]):
                raise ValueError("a push config id must be UTF-8 text without NUL characters")
            if not all(storable(text) for text in _config_texts(body)):
                raise ValueError("a push config's url, token and authentication must be text without NUL characters")
            saved = await asyncio.to_thread(push.put, task_id, body, owner) if storable(task_id) else None
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
        task_id = request.path_params["task_id"]
        configs = await asyncio.to_thread(push.list, task_id, owner) if storable(task_id) else None
        if configs is None:
            return JSONResponse({"error": "task not found"}, status_code=404)
        return JSONResponse({"configs": configs})

    async def delete_config(request: Request) -> Response:
        try:
            owner = scope(request)
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        params = request.path_params
        if not stored_ids(params) or not await asyncio.to_thread(
            push.delete, params["task_id"], params["config_id"], owner
        ):
            return JSONResponse({"error": "push config not found"}, status_code=404)
        return Response(status_code=204)

    async def claim(request: Request) -> JSONResponse:
        try:
            holder, seconds, renew = claim_body(await request.json())
        except (ValueError, KeyError, TypeError) as error:
            return JSONResponse({"error": f"invalid claim: {error}"}, status_code=400)
        return JSONResponse({"pending": await asyncio.to_thread(push.claim, holder, seconds, renew)})

    async def release(request: Request) -> JSONResponse:
        try:
            holder = checked_holder((await request.json())["holder"])
        except (ValueError, KeyError, TypeError) as error:
            return JSONResponse({"error": f"invalid release: {error}"}, status_code=400)
        return JSONResponse({"released": await asyncio.to_thread(push.release, holder)})

    async def advance(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            seq = int(body["seq"])
            holder = checked_holder(body["holder"]) if body.get("holder") is not None else None
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'body must be {"seq": <int>, "holder": <replica>}'}, status_code=400)
        params = request.path_params
        if not stored_ids(params):
            return JSONResponse({"error": "push config not found"}, status_code=404)
        moved = await asyncio.to_thread(push.advance, params["task_id"], params["config_id"], seq, holder)
        if moved is None:
            return JSONResponse({"error": "the lease is another replica's"}, status_code=409)
        if not moved:
            return JSONResponse({"error": "push config not found"}, status_code=404)
        return JSONResponse({"seq": seq})

    async def add_dead_letter(request: Request) -> JSONResponse:
        try:
            letter = await request.json()
            if not isinstance(letter, dict) or not all(storable(str(letter.get(key, ""))) for key in LETTER_TEXTS):
                raise ValueError("a dead letter must be an object whose texts have no NUL characters")
            await asyncio.to_thread(push.dead_letter, letter)
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
        Route("/push/claims", claim, methods=["POST"]),
        Route("/push/release", release, methods=["POST"]),
        Route("/push/dead-letters", add_dead_letter, methods=["POST"]),
        Route("/push/dead-letters", dead_letters, methods=["GET"]),
    ]
