"""Taking task events and task owners off the broker: decode and validate each message, then hand it to the store
off the event loop.

There is one writer, fed in the order the broker delivers (one reader takes the messages off the connection one at
a time), so the events of a task are applied in order and no write ever races another. A task's owner (from a
coordinator's owner topic) may come before or after its first event: the owner has a row of its own, so either
order ends the same.

This is the mesh's hottest consumer (four or more events for every task), so it reads zmqtt directly
(`a2amesh.zmqtt_consumer`) instead of through a FastStream subscriber: FastStream's per-message pipeline
(middlewares, a context and a logging scope per message) cost about a quarter of the store's CPU, and nothing
here uses what it adds. zmqtt's public API gives the rest: one subscription for both filters (so owners and
events keep the broker's order), manual acknowledgement after commit, re-subscription after a reconnect, and
`detach` to stop without ending the persistent session."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

import zmqtt
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from a2amesh import tracing
from a2amesh.models import StreamResponse, TaskOwnerRecords
from a2amesh.mqtt_base import EVENT_ID_PROPERTY, TASK_AGENT_PROPERTY, Envelope
from a2amesh.replicas import acts_as
from a2amesh.settings import MqttSettings
from a2amesh.topics import (
    EVENTS_ALL,
    OWNERS_ALL,
    AgentAddress,
    ParsedTopic,
    TopicError,
    TopicKind,
    parse_topic,
)
from a2amesh.zmqtt_compat import next_messages, one_write
from a2amesh.zmqtt_consumer import consumer_client, envelope_of, is_connected, user_properties_of
from mesh_taskstore.apply import kind_of
from mesh_taskstore.incoming import no_ack
from mesh_taskstore.partition import Partition
from mesh_taskstore.store import Incoming, Outcome, Owner, OwnerClaims, TaskStore

log = logging.getLogger(__name__)

MAX_EVENT_ID_LENGTH = 200
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to write an event while the database is unavailable; the last value repeats."""
QUIET_BEFORE_STOP = 0.1
"""Seconds without a new message before a stopping consumer disconnects."""
START_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to connect and subscribe after a failure; the last value repeats."""
OWNER_PREFIX = OWNERS_ALL.removesuffix("#")
"""Owner topics start so; every other message of the subscription is on an event topic."""


def _event_id(topic: str, payload: bytes, user_properties: Mapping[str, str]) -> str:
    """The publisher's event id, or (when it sent none) a hash of topic and payload, so that a redelivery of the
    same bytes still maps to the same id. Over-long ids are hashed to keep the unique index small."""
    given = user_properties.get(EVENT_ID_PROPERTY, "").strip()
    if given and len(given) <= MAX_EVENT_ID_LENGTH:
        return given
    digest = hashlib.sha256()
    if given:
        digest.update(b"id\0" + given.encode())
    else:
        digest.update(topic.encode() + b"\0" + payload)
    return "sha256:" + digest.hexdigest()


@functools.lru_cache(maxsize=4096)
def _event_topic(topic: str) -> tuple[ParsedTopic, str]:
    """An event topic taken apart, with its agent: the mesh's events come on a few hundred topics, and parsing
    (each part checked by a regular expression) was a twentieth of the store's CPU. A topic that is not an event
    topic raises TopicError every time (an exception is never cached)."""
    parsed = parse_topic(topic)
    if parsed.kind is not TopicKind.EVENT:
        raise TopicError(f"not an event topic: {topic!r}")
    return parsed, str(parsed.agent)


def decode(
    envelope: Envelope,
    received_at: datetime,
    trusted_recorders: frozenset[str] = frozenset(),
    ack: Callable[[], Awaitable[None]] = no_ack,
) -> Incoming | None:
    """The event an envelope carries, or None (logged) when it is not a task event we can record.

    The agent is the one whose event topic carried it — except that a trusted recorder (the coordinator, recording
    for agents that do not record their own events) names the agent holding the task in `a2a-task-agent`."""
    return decode_event(envelope.topic, envelope.payload, envelope.user_properties, received_at, trusted_recorders, ack)


def decode_event(
    topic: str,
    payload: bytes,
    user_properties: Mapping[str, str],
    received_at: datetime,
    trusted_recorders: frozenset[str] = frozenset(),
    ack: Callable[[], Awaitable[None]] = no_ack,
) -> Incoming | None:
    """`decode` on a message's parts: the consumer calls it straight from zmqtt's message, without building an
    `Envelope` that would only be taken apart again (once for every event the mesh records)."""
    try:
        parsed, agent = _event_topic(topic)
        named = user_properties.get(TASK_AGENT_PROPERTY)
        if named and acts_as(parsed.name, trusted_recorders):  # or a replica of one
            agent = str(AgentAddress.parse(named))
    except TopicError as error:
        log.warning("dropping message on %r: %s", topic, error)
        return None
    try:
        event = StreamResponse.from_json(payload)
    except ValidationError as error:
        log.warning("dropping malformed event on %s: %s", topic, _short(error))
        return None
    if not event.task_id:
        log.info("ignoring a message without taskId on %s: it belongs to no task", topic)
        return None
    return Incoming(_event_id(topic, payload, user_properties), agent, event, received_at, ack, _text(payload))


def _text(payload: bytes) -> str:
    """The payload as text for the event log; "" (the model is written instead) if it is not UTF-8."""
    try:
        return payload.decode()
    except UnicodeDecodeError:
        return ""


def decode_owners(envelope: Envelope, coordinators: frozenset[str] = frozenset()) -> OwnerClaims | None:
    """The owners a coordinator's message names, or None (logged) for anything else: a topic that is not an owner
    topic of a trusted coordinator (the broker lets only coordinators publish there; this holds if it did not),
    or a payload that is not a valid list of owners."""
    try:
        parsed = parse_topic(envelope.topic)
        if parsed.kind is not TopicKind.OWNER:
            raise TopicError(f"not an owner topic: {envelope.topic!r}")
    except TopicError as error:
        log.warning("dropping message on %r: %s", envelope.topic, error)
        return None
    if not acts_as(parsed.name, coordinators):  # a coordinator or a replica of one
        log.warning("dropping task owners from %s: not a coordinator", parsed.agent)
        return None
    try:
        records = TaskOwnerRecords.from_json(envelope.payload)
    except ValidationError as error:
        log.warning("dropping malformed task owners on %s: %s", envelope.topic, _short(error))
        return None
    owners = tuple((r.task_id, Owner(r.principal, r.tenant)) for r in records.owners)
    return OwnerClaims(owners, str(parsed.agent))


def _short(error: ValidationError) -> str:
    first = error.errors()[0] if error.errors() else {}
    return f"{error.error_count()} error(s), first: {first.get('msg', '?')} at {first.get('loc', ())}"


class EventConsumer:
    """Consumes `$a2a/v1/event/#` and `$a2a/v1/owner/#` with a persistent session and records every event and
    every task owner in the store.

    A reader only decodes and queues; one writer task records the queue in order, in batches (group commit): a
    batch is what has arrived by `batch_max_wait` after its first event, at most `batch_max_events`, written in
    one transaction, and each of its events is acknowledged only once that transaction commits. The fixed cost of
    a transaction (its statements, its fsync) is then shared by every event of the batch, which is what lets the
    store keep up with the mesh, and what lets a backlog (the broker keeps up to 10,000 events for us while we are
    down) be written in seconds."""

    def __init__(
        self,
        store: TaskStore,
        settings: MqttSettings,
        client_id: str,
        *,
        batch_max_events: int = 100,
        batch_max_wait: float = 0.05,
        drain_timeout: float = 4.0,
        trusted_recorders: frozenset[str] = frozenset({"coordinator"}),
        partition: Partition | None = None,
    ) -> None:
        self.trusted_recorders = trusted_recorders
        self.partition = partition or Partition()
        """The events this replica records; the rest are other replicas' (mesh_taskstore.partition)."""
        self.store = store
        self.settings = settings
        self.client_id = client_id
        self.batch_max_events = batch_max_events
        self.batch_max_wait = batch_max_wait
        self.drain_timeout = drain_timeout
        self.client = consumer_client(settings, client_id, persistent=True)
        self._subscription: zmqtt.Subscription | None = None
        self._pending: asyncio.Queue[Incoming | OwnerClaims] = asyncio.Queue(maxsize=2 * batch_max_events)
        self._batch_full = asyncio.Event()
        self._writing = 0
        self._last_received = 0.0
        self._halt = asyncio.Event()

    def is_connected(self) -> bool:
        """Whether the consumer holds a broker connection with its subscription in place (the health check)."""
        return self._subscription is not None and is_connected(self.client)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then stop receiving, record what was received, and disconnect.

        Events are acknowledged to the broker only once written (manual PUBACK), so whatever is received but not
        written when the process stops or dies is redelivered from our persistent session on the next start (and
        recorded once: events are idempotent by id). The drain, bounded by `drain_timeout`, only spares that
        redelivery on a graceful stop. The broker never has more than its max_inflight_messages unacknowledged
        events out to us, which bounds our memory too."""
        writer = asyncio.create_task(self._write_loop())
        reader = asyncio.create_task(self._read_loop())
        try:
            await stop.wait()
            deadline = asyncio.get_running_loop().time() + self.drain_timeout
            waiting = self._pending.qsize() + self._writing
            log.info("stopping: recording the %d received events still waiting, then disconnecting", waiting)
            await self._until(self._idle, deadline)
            self._halt.set()
            await _cancelled(reader)  # receive no more; the session keeps queueing for our return
            with contextlib.suppress(Exception):
                await self._detach()
            await self._until(lambda: self._pending.empty() and not self._writing, deadline)
        finally:
            self._halt.set()
            await _cancelled(reader)
            with contextlib.suppress(Exception):
                await self._disconnect()  # a graceful stop must not end the persistent session
            await _cancelled(writer)
        unwritten = self._pending.qsize() + self._writing
        if unwritten:
            log.error("stopped with %d received events not recorded", unwritten)
        log.info("consumer stopped")

    async def _read_loop(self) -> None:
        """Connect, subscribe and hand every message to `_receive`, for ever: after a failure (the broker refusing
        the connection or the subscription, the connection lost for good), start again on a fresh client, so that
        nothing of the failed one (its subscriptions, its queue) lingers. Connection losses zmqtt recovers itself
        (it reconnects and subscribes again, `RECONNECT`), and messages in flight then come again."""
        attempt = 0
        while not self._halt.is_set():
            try:
                subscription = await self._subscribe()
                attempt = 0
                while True:  # ends by an exception: detached, or the connection lost for good
                    await self._receive(await next_messages(subscription, self.batch_max_events))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                delay = START_DELAYS[min(attempt, len(START_DELAYS) - 1)]
                attempt += 1
                log.warning("consumer connection failed (%s); starting again in %.1fs", error, delay)
                with contextlib.suppress(Exception):
                    await self._disconnect()
                self.client = consumer_client(self.settings, self.client_id, persistent=True)
                await _sleep_unless(self._halt, delay)

    async def _subscribe(self) -> zmqtt.Subscription:
        """Connect (zmqtt retries an unreachable broker for ever) and subscribe both filters in one subscription,
        so owners and events reach the writer in the order the broker sent them. The receive buffer is the size of
        a batch: beyond it, zmqtt stops reading the socket (back-pressure, not memory growth)."""
        await self.client.connect()
        subscription = self.client.subscribe(
            EVENTS_ALL,
            OWNERS_ALL,
            qos=zmqtt.QoS.AT_LEAST_ONCE,
            auto_ack=False,  # PUBACK after the write: an event the store never wrote comes again
            receive_buffer_size=self.batch_max_events,
        )
        await subscription.start()
        self._subscription = subscription
        log.info("consuming %s and %s as %s", EVENTS_ALL, OWNERS_ALL, self.client_id)
        return subscription

    async def _detach(self) -> None:
        """Receive no more, without unsubscribing: the broker keeps queueing our events in the session, and the
        acknowledgements of what was received can still go out until we disconnect."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.detach()

    async def _disconnect(self) -> None:
        await self._detach()
        await self.client.disconnect()

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

    async def _receive(self, messages: list[zmqtt.Message]) -> None:
        """Decode what one read took off the connection and queue it for the writer, in order; malformed messages
        are logged, dropped and acknowledged. A full queue makes this wait, which holds back the next messages
        (back-pressure, not memory growth)."""
        self._last_received = asyncio.get_running_loop().time()
        received_at = datetime.now(UTC)  # one read: its messages arrived together
        pending = self._pending
        for message in messages:
            if tracing.enabled:
                pairs = message.properties.user_properties if message.properties else ()
                with tracing.processing(message.topic, pairs, len(message.payload)):
                    item = self._decode_message(message, received_at)
            else:
                item = self._decode_message(message, received_at)
            if item is None:
                await message.ack()  # dropped for good (or another replica's): nothing to redeliver
            elif pending.full():
                self._batch_full.set()  # the writer need not wait out batch_max_wait for room to appear
                await pending.put(item)
            else:
                pending.put_nowait(item)  # the usual case, without a coroutine per message
        if pending.qsize() >= self.batch_max_events - 1:
            self._batch_full.set()

    def _decode_message(self, message: zmqtt.Message, received_at: datetime) -> Incoming | OwnerClaims | None:
        """What a message is to record, carrying its acknowledgement; None for nothing (dropped, or an event of
        another replica's share: it has its own copy in its own session)."""
        if message.topic.startswith(OWNER_PREFIX):
            claims = decode_owners(envelope_of(message), self.trusted_recorders)
            return None if claims is None else replace(claims, ack=message.ack)
        if not self.partition.owns(message.topic):
            return None
        named = user_properties_of(message)
        return decode_event(message.topic, message.payload, named, received_at, self.trusted_recorders, message.ack)

    async def _next_batch(self) -> list[Incoming | OwnerClaims]:
        """The next batch: the first waiting event, then whatever arrives until the batch is full or
        `batch_max_wait` has passed since (no wait when stopping: the drain writes what is there)."""
        batch = [await self._pending.get()]
        self._writing = 1  # taken off the queue: not idle while the batch forms
        if self.batch_max_wait > 0 and not self._halt.is_set() and self._pending.qsize() < self.batch_max_events - 1:
            self._batch_full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), timeout=self.batch_max_wait)
        while len(batch) < self.batch_max_events and not self._pending.empty():
            batch.append(self._pending.get_nowait())
        return batch

    async def _write_loop(self) -> None:
        while True:
            batch = await self._next_batch()
            self._writing = len(batch)
            try:
                await self._write(batch)
            except Exception:  # never let the one writer die: what it did not acknowledge comes again, recorded once
                log.exception("writing a batch of %d failed; its unacknowledged events will be redelivered", len(batch))
            finally:
                self._writing = 0

    async def _write(self, batch: list[Incoming | OwnerClaims]) -> None:
        """Record a batch, retrying while the database is unavailable (in-order delivery means waiting, not
        skipping) until it succeeds or the service stops."""
        events = [item for item in batch if isinstance(item, Incoming)]
        claims = [item for item in batch if isinstance(item, OwnerClaims)]
        attempt = 0
        while True:
            try:
                owners = [owner for claim in claims for owner in claim.owners]
                outcomes, claimed = await asyncio.to_thread(self.store.record_with_owners, events, owners)
                break
            except OperationalError as error:
                if self._halt.is_set():
                    log.error("database unavailable while stopping; %d events not recorded", len(batch))
                    return
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                log.warning("database unavailable (%s); retrying %d events in %.1fs", error.orig, len(batch), delay)
                await _sleep_unless(self._halt, delay)
        lost = 0
        try:
            async with one_write(self.client):  # one TLS write for the batch's PUBACKs, not one each
                for incoming in batch:  # in order, as MQTT requires PUBACKs to be sent
                    try:
                        await incoming.ack()
                    except Exception:  # its connection dropped: the broker redelivers it, recorded once
                        lost += 1
        except zmqtt.MQTTDisconnectedError:  # the batch's one write met a dropped connection (a broker restart)
            lost = len(batch)
        if lost:
            log.info("%d acknowledgements lost with the connection; those events will be redelivered", lost)
        for (task_id, owner), recorded in zip(owners, claimed, strict=True):
            if not recorded:
                log.error("task %s already has another owner; %s not recorded", task_id, owner.principal)
        debug = log.isEnabledFor(logging.DEBUG)
        for incoming, outcome in zip(events, outcomes, strict=True):
            if outcome is Outcome.STORED and not debug:
                continue  # the usual case: nothing to say, and its arguments are not worth computing
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


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
