"""Taking task events off the broker: decode and validate each one, then hand it to the store off the event loop.

There is one writer, fed in the order the broker delivers (the FastStream subscriber hands messages over one at a
time), so the events of a task are applied in order and no write ever races another."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from faststream import AckPolicy
from faststream.mqtt import MQTTMessage
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from a2amesh.models import StreamResponse
from a2amesh.mqtt import EVENT_ID_PROPERTY, TASK_AGENT_PROPERTY, Envelope
from a2amesh.settings import MqttSettings
from a2amesh.subscribers import (
    envelope_of,
    is_connected,
    mqtt_broker,
    start_until_stopped,
    stop_keeping_session,
    the_message,
    traced,
)
from a2amesh.topics import EVENTS_ALL, AgentAddress, TopicError, TopicKind, parse_topic
from mesh_taskstore.apply import kind_of
from mesh_taskstore.store import Incoming, Outcome, TaskStore

log = logging.getLogger(__name__)

MAX_EVENT_ID_LENGTH = 200
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to write an event while the database is unavailable; the last value repeats."""
QUIET_BEFORE_STOP = 0.1
"""Seconds without a new message before a stopping consumer disconnects."""


def event_id_of(envelope: Envelope) -> str:
    """The publisher's event id, or (when it sent none) a hash of topic and payload, so that a redelivery of the
    same bytes still maps to the same id. Over-long ids are hashed to keep the unique index small."""
    given = envelope.user_properties.get(EVENT_ID_PROPERTY, "").strip()
    if given and len(given) <= MAX_EVENT_ID_LENGTH:
        return given
    digest = hashlib.sha256()
    if given:
        digest.update(b"id\0" + given.encode())
    else:
        digest.update(envelope.topic.encode() + b"\0" + envelope.payload)
    return "sha256:" + digest.hexdigest()


def decode(
    envelope: Envelope, received_at: datetime, trusted_recorders: frozenset[str] = frozenset()
) -> Incoming | None:
    """The event an envelope carries, or None (logged) when it is not a task event we can record.

    The agent is the one whose event topic carried it — except that a trusted recorder (the coordinator, recording
    for agents that do not record their own events) names the agent holding the task in `a2a-task-agent`."""
    try:
        parsed = parse_topic(envelope.topic)
        if parsed.kind is not TopicKind.EVENT:
            raise TopicError(f"not an event topic: {envelope.topic!r}")
        agent = str(parsed.agent)
        named = envelope.user_properties.get(TASK_AGENT_PROPERTY)
        if named and parsed.name in trusted_recorders:
            agent = str(AgentAddress.parse(named))
    except TopicError as error:
        log.warning("dropping message on %r: %s", envelope.topic, error)
        return None
    try:
        event = StreamResponse.from_json(envelope.payload)
    except ValidationError as error:
        log.warning("dropping malformed event on %s: %s", envelope.topic, _short(error))
        return None
    if not event.task_id:
        log.info("ignoring a message without taskId on %s: it belongs to no task", envelope.topic)
        return None
    return Incoming(event_id_of(envelope), agent, event, received_at)


def _short(error: ValidationError) -> str:
    first = error.errors()[0] if error.errors() else {}
    return f"{error.error_count()} error(s), first: {first.get('msg', '?')} at {first.get('loc', ())}"


class EventConsumer:
    """Consumes `$a2a/v1/event/#` with a persistent session and records every event in the store.

    A FastStream subscriber only decodes and queues; one writer task records the queue in order, in batches of up
    to `batch_size` per transaction. Batching is what lets a backlog (the broker keeps up to 10,000 events for us
    while we are down) be written in seconds, and what lets a stop drain everything already received."""

    def __init__(
        self,
        store: TaskStore,
        settings: MqttSettings,
        client_id: str,
        *,
        batch_size: int = 500,
        drain_timeout: float = 4.0,
        trusted_recorders: frozenset[str] = frozenset({"coordinator"}),
    ) -> None:
        self.trusted_recorders = trusted_recorders
        self.store = store
        self.batch_size = batch_size
        self.drain_timeout = drain_timeout
        self.broker = mqtt_broker(settings, client_id, persistent=True, graceful_timeout=1.0)
        self.broker.subscriber(
            EVENTS_ALL,
            qos=1,
            ack_policy=AckPolicy.MANUAL,  # PUBACK after the write: an event the store never wrote comes again
            decoder=the_message,
            title="taskstore.events",
            description="Every agent's task events, recorded in order and acknowledged once written.",
        )(traced(self.handle))
        self._pending: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=2 * batch_size)
        self._writing = 0
        self._last_received = 0.0
        self._halt = asyncio.Event()

    def is_connected(self) -> bool:
        """Whether the consumer holds a broker connection (the health check reads it)."""
        return is_connected(self.broker)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then stop receiving, record what was received, and disconnect.

        Events are acknowledged to the broker only once written (manual PUBACK), so whatever is received but not
        written when the process stops or dies is redelivered from our persistent session on the next start (and
        recorded once: events are idempotent by id). The drain, bounded by `drain_timeout`, only spares that
        redelivery on a graceful stop. The broker never has more than its max_inflight_messages unacknowledged
        events out to us, which bounds our memory too."""
        writer = asyncio.create_task(self._write_loop())
        starting = asyncio.create_task(start_until_stopped(self.broker, self._halt))  # until the broker answers
        try:
            await stop.wait()
            deadline = asyncio.get_running_loop().time() + self.drain_timeout
            waiting = self._pending.qsize() + self._writing
            log.info("stopping: recording the %d received events still waiting, then disconnecting", waiting)
            await self._until(self._idle, deadline)
            self._halt.set()
            with contextlib.suppress(Exception):  # receive no more; the session keeps queueing for our return
                await stop_keeping_session(self.broker)
            await self._until(lambda: self._pending.empty() and not self._writing, deadline)
        finally:
            self._halt.set()
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            with contextlib.suppress(Exception):
                await stop_keeping_session(self.broker)  # a graceful stop must not end the persistent session
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        unwritten = self._pending.qsize() + self._writing
        if unwritten:
            log.error("stopped with %d received events not recorded", unwritten)
        log.info("consumer stopped")

    def _idle(self) -> bool:
        """Nothing received is waiting (not in our queue, not in a write) and nothing has arrived for a moment, so
        a backlog still streaming in from the broker is not cut off in a lull."""
        quiet = asyncio.get_running_loop().time() - self._last_received >= QUIET_BEFORE_STOP
        return quiet and self._pending.empty() and not self._writing

    @staticmethod
    async def _until(condition: Callable[[], bool], deadline: float) -> None:
        """Poll: the queue and the writer have no event to wait on for both at once."""
        loop = asyncio.get_running_loop()
        while not condition() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def handle(self, message: MQTTMessage) -> None:
        """Decode one message and queue it for the writer; malformed ones are logged and dropped. A full queue
        makes this wait, which holds back the next messages (back-pressure, not memory growth)."""
        self._last_received = asyncio.get_running_loop().time()
        incoming = decode(envelope_of(message), datetime.now(UTC), self.trusted_recorders)
        if incoming is None:
            await message.ack()  # dropped for good: nothing to redeliver
            return
        await self._pending.put(replace(incoming, ack=message.ack))

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._pending.get()]
            while len(batch) < self.batch_size and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            self._writing = len(batch)
            try:
                await self._write(batch)
            finally:
                self._writing = 0

    async def _write(self, batch: list[Incoming]) -> None:
        """Record a batch, retrying while the database is unavailable (in-order delivery means waiting, not
        skipping) until it succeeds or the service stops."""
        attempt = 0
        while True:
            try:
                outcomes = await asyncio.to_thread(self.store.record_many, batch)
                break
            except OperationalError as error:
                if self._halt.is_set():
                    log.error("database unavailable while stopping; %d events not recorded", len(batch))
                    return
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                log.warning("database unavailable (%s); retrying %d events in %.1fs", error.orig, len(batch), delay)
                await _sleep_unless(self._halt, delay)
        try:
            for incoming in batch:  # in order, as MQTT requires PUBACKs to be sent
                await incoming.ack()
        except Exception as error:  # the connection dropped: the broker redelivers the rest, recorded once
            log.info("acknowledgements lost with the connection (%s); those events will be redelivered", error)
        for incoming, outcome in zip(batch, outcomes, strict=True):
            level = logging.DEBUG if outcome is Outcome.STORED else logging.INFO
            log.log(
                level,
                "event %s (%s) for task %s from %s: %s",
                incoming.event_id,
                kind_of(incoming.event).value,
                incoming.task_id,
                incoming.agent,
                outcome.value,
            )


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
